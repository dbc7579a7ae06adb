// SPDX-License-Identifier: MIT
/*
 * The NBD wire format and the fixed newstyle handshake.
 *
 * Everything a client sends is untrusted: every length is checked against
 * what was received and against this server's limits before it is used,
 * and the handshake never allocates: the data of the options it parses
 * (GO, INFO, EXPORT_NAME) lands in a bounded buffer on the stack, longer
 * ones are skipped and answered NBD_REP_ERR_TOO_BIG; the data of any other
 * option is skipped unread.
 * The rules followed are those of doc/proto.md in NetworkBlockDevice/nbd;
 * the comments quote the decisions it leaves to the server.
 */
#include <errno.h>
#include <string.h>

#include "nbd.h"

uint16_t nbd_export_tflags(const struct nbd_export *exp, bool structured)
{
	uint16_t f = exp->tflags;

	/* "MUST leave this flag clear if structured replies have not been
	 * negotiated". */
	if (structured)
		f |= NBD_FLAG_SEND_DF;
	return f;
}

size_t nbd_simple_reply(uint8_t *p, uint64_t cookie, uint32_t err)
{
	put_be32(p, NBD_SIMPLE_REPLY_MAGIC);
	put_be32(p + 4, err);
	put_be64(p + 8, cookie);
	return NBD_SIMPLE_REPLY_SIZE;
}

size_t nbd_chunk_header(uint8_t *p, uint16_t flags, uint16_t type,
			uint64_t cookie, uint32_t len)
{
	put_be32(p, NBD_STRUCTURED_REPLY_MAGIC);
	put_be16(p + 4, flags);
	put_be16(p + 6, type);
	put_be64(p + 8, cookie);
	put_be32(p + 16, len);
	return NBD_CHUNK_HEADER_SIZE;
}

/* An NBD_REPLY_TYPE_ERROR chunk, final; msg is short and constant. */
size_t nbd_error_chunk(uint8_t *p, uint64_t cookie, uint32_t err,
		       const char *msg)
{
	size_t m = strlen(msg);

	nbd_chunk_header(p, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, cookie,
			 (uint32_t)(6 + m));
	put_be32(p + 20, err);
	put_be16(p + 24, (uint16_t)m);
	memcpy(p + 26, msg, m);
	return 26 + m;
}

void nbd_request_decode(const uint8_t *p, struct nbd_request *r)
{
	r->magic = get_be32(p);
	r->flags = get_be16(p + 4);
	r->type = get_be16(p + 6);
	r->cookie = get_be64(p + 8);
	r->offset = get_be64(p + 16);
	r->len = get_be32(p + 24);
}

/* The error, and its message for an error chunk. */
static int refuse(const char **msg, const char *why, int err)
{
	*msg = why;
	return err;
}

int nbd_request_check(const struct nbd_export *exp, bool structured,
		      const struct nbd_request *r, const char **msg)
{
	uint16_t tflags = nbd_export_tflags(exp, structured);
	uint16_t allowed = 0;
	bool writes = false;

	switch (r->type) {
	case NBD_CMD_READ:
		if (tflags & NBD_FLAG_SEND_DF)
			allowed |= NBD_CMD_FLAG_DF;
		break;
	case NBD_CMD_WRITE:
	case NBD_CMD_TRIM:
		writes = true;
		break;
	case NBD_CMD_WRITE_ZEROES:
		writes = true;
		allowed |= NBD_CMD_FLAG_NO_HOLE;
		if (tflags & NBD_FLAG_SEND_FAST_ZERO)
			allowed |= NBD_CMD_FLAG_FAST_ZERO;
		break;
	case NBD_CMD_FLUSH:
		break;
	default:
		/* "The server SHOULD return EINVAL if it receives an unknown
		 * command" (NBD_CMD_CACHE and BLOCK_STATUS are not offered). */
		return refuse(msg, "unknown command", NBD_EINVAL);
	}
	/* "SHOULD return EPERM if it receives a write or trim request on a
	 * read-only export". */
	if (writes && exp->readonly)
		return refuse(msg, "the export is read-only", NBD_EPERM);
	/* FUA "is valid for all commands, provided NBD_FLAG_SEND_FUA has
	 * been negotiated"; any other flag must be documented for the
	 * command, else EINVAL. */
	if (tflags & NBD_FLAG_SEND_FUA)
		allowed |= NBD_CMD_FLAG_FUA;
	if (r->flags & ~allowed)
		return refuse(msg, "flag not valid for this command",
			      NBD_EINVAL);
	if (r->type == NBD_CMD_FLUSH && (r->offset || r->len))
		return refuse(msg, "flush with an offset or a length",
			      NBD_EINVAL);
	if (r->type == NBD_CMD_FLUSH)
		return 0;
	/* "The server SHOULD report an NBD_EINVAL error if the client's
	 * request ... is larger than the advertised maximum block size";
	 * NBD_EOVERFLOW is only for a DF read this server could not send
	 * unfragmented, and it can send any read it accepts in one chunk.
	 * Trim and write zeroes carry no payload, and a client may ask for
	 * more than the maximum payload with them; they are served at any
	 * length, since they take no buffer (the kernel's client sends
	 * trims of up to 4 GiB; ioflusher-nbd(8), PROTOCOL). */
	if ((r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE) &&
	    r->len > NBD_MAX_PAYLOAD)
		return refuse(msg, "request longer than the maximum block size",
			      NBD_EINVAL);
	/* Beyond the end: EINVAL for a read or trim, ENOSPC for what
	 * writes, as the protocol's error values ask.  Written this way
	 * round, offset + len cannot overflow. */
	if (r->offset > exp->size || r->len > exp->size - r->offset) {
		bool read_or_trim = r->type == NBD_CMD_READ ||
				    r->type == NBD_CMD_TRIM;

		return refuse(msg, "request beyond the end of the export",
			      read_or_trim ? NBD_EINVAL : NBD_ENOSPC);
	}
	return 0;
}

/* ---------------------------------------------------------------- handshake */

static int send_reply(struct nbd_conn *c, uint32_t opt, uint32_t type,
		      const void *data, size_t len)
{
	uint8_t h[20];
	struct iovec iov[2] = {
		{ h, sizeof(h) },
		{ (void *)data, len },
	};

	put_be64(h, NBD_REP_MAGIC);
	put_be32(h + 8, opt);
	put_be32(h + 12, type);
	put_be32(h + 16, (uint32_t)len);
	return nbd_conn_send(c, iov, len ? 2 : 1);
}

static int send_error(struct nbd_conn *c, uint32_t opt, uint32_t type,
		      const char *msg)
{
	return send_reply(c, opt, type, msg, strlen(msg));
}

/* The empty name is the default export: this server's only one. */
static bool name_matches(const struct nbd_export *exp, const uint8_t *name,
			 size_t len)
{
	return len == 0 ||
	       (strlen(exp->name) == len && memcmp(exp->name, name, len) == 0);
}

static int send_info_export(struct nbd_conn *c, uint32_t opt)
{
	uint8_t d[12];

	put_be16(d, NBD_INFO_EXPORT);
	put_be64(d + 2, c->srv->exp->size);
	put_be16(d + 10, nbd_export_tflags(c->srv->exp, c->structured));
	return send_reply(c, opt, NBD_REP_INFO, d, sizeof(d));
}

static int send_info_block_size(struct nbd_conn *c, uint32_t opt)
{
	uint8_t d[14];

	/* Minimum 1: any offset and length are served (a read-modify-write
	 * is the backend's business), so clients need not align. */
	put_be16(d, NBD_INFO_BLOCK_SIZE);
	put_be32(d + 2, 1);
	put_be32(d + 6, NBD_PREFERRED_BLOCK);
	put_be32(d + 10, NBD_MAX_PAYLOAD);
	return send_reply(c, opt, NBD_REP_INFO, d, sizeof(d));
}

static int send_info_name(struct nbd_conn *c, uint32_t opt)
{
	uint8_t d[2 + NBD_NAME_MAX];
	size_t n = strlen(c->srv->exp->name);

	put_be16(d, NBD_INFO_NAME);
	memcpy(d + 2, c->srv->exp->name, n);
	return send_reply(c, opt, NBD_REP_INFO, d, 2 + n);
}

/*
 * NBD_OPT_INFO and NBD_OPT_GO: 32-bit name length, name, 16-bit count of
 * information requests, 16 bits each.  1 when GO succeeded.
 */
static int opt_info_go(struct nbd_conn *c, uint32_t opt, const uint8_t *d,
		       uint32_t len)
{
	bool sent_name = false;
	uint32_t namelen;
	uint16_t nreq;
	int r;

	if (len < 6)
		return send_error(c, opt, NBD_REP_ERR_INVALID,
				  "option too short");
	namelen = get_be32(d);
	if (namelen > len - 6)
		return send_error(c, opt, NBD_REP_ERR_INVALID,
				  "export name longer than the option");
	nreq = get_be16(d + 4 + namelen);
	if ((uint64_t)4 + namelen + 2 + 2 * (uint64_t)nreq != len)
		return send_error(c, opt, NBD_REP_ERR_INVALID,
				  "option length does not match its requests");
	if (!name_matches(c->srv->exp, d + 4, namelen))
		return send_error(c, opt, NBD_REP_ERR_UNKNOWN,
				  "no export of that name");
	r = send_info_export(c, opt);
	/* "A particular information type SHOULD only appear once": a client
	 * that asks twice (which it "MUST NOT") still gets it once. */
	for (uint16_t i = 0; r == 0 && i < nreq && !sent_name; i++) {
		if (get_be16(d + 4 + namelen + 2 + 2 * i) == NBD_INFO_NAME) {
			r = send_info_name(c, opt);
			sent_name = true;
		}
	}
	/* Sent whether asked or not ("the server MAY send it"): with a
	 * minimum of 1 it constrains no client, and tells all the maximum. */
	if (r == 0)
		r = send_info_block_size(c, opt);
	if (r == 0)
		r = send_reply(c, opt, NBD_REP_ACK, NULL, 0);
	if (r < 0)
		return r;
	return opt == NBD_OPT_GO;
}

static int opt_export_name(struct nbd_conn *c, const uint8_t *d, uint32_t len)
{
	static const uint8_t zeroes[124];
	uint8_t h[10];
	struct iovec iov[2] = {
		{ h, sizeof(h) },
		{ (void *)zeroes, sizeof(zeroes) },
	};

	/* "If the chosen export does not exist ... the server MUST terminate
	 * the session": this option has no error reply. */
	if (!name_matches(c->srv->exp, d, len))
		return -ENOENT;
	put_be64(h, c->srv->exp->size);
	put_be16(h + 8, nbd_export_tflags(c->srv->exp, c->structured));
	return nbd_conn_send(c, iov, c->no_zeroes ? 1 : 2) < 0 ? -EPIPE : 1;
}

static int opt_list(struct nbd_conn *c, uint32_t len)
{
	uint8_t d[4 + NBD_NAME_MAX];
	size_t n = strlen(c->srv->exp->name);
	int r;

	if (len)
		return send_error(c, NBD_OPT_LIST, NBD_REP_ERR_INVALID,
				  "NBD_OPT_LIST takes no data");
	put_be32(d, (uint32_t)n);
	memcpy(d + 4, c->srv->exp->name, n);
	r = send_reply(c, NBD_OPT_LIST, NBD_REP_SERVER, d, 4 + n);
	if (r == 0)
		r = send_reply(c, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
	return r;
}

/* An option whose data this server does not read (none, or unknown to
 * it); the data, of any length, has been skipped already. */
static int option_without_data(struct nbd_conn *c, uint32_t opt, uint32_t len)
{
	switch (opt) {
	case NBD_OPT_LIST:
		return opt_list(c, len);
	case NBD_OPT_STRUCTURED_REPLY:
		if (len)
			return send_error(
				c, opt, NBD_REP_ERR_INVALID,
				"NBD_OPT_STRUCTURED_REPLY takes no data");
		c->structured = true;
		return send_reply(c, opt, NBD_REP_ACK, NULL, 0);
	case NBD_OPT_ABORT:
		/* "The server MUST reply with NBD_REP_ACK", and "SHOULD
		 * ignore any data sent by the client"; the client may already
		 * be gone, which is fine. */
		send_reply(c, opt, NBD_REP_ACK, NULL, 0);
		return -ECONNABORTED;
	case NBD_OPT_STARTTLS:
		return send_error(c, opt, NBD_REP_ERR_POLICY,
				  "this server does not offer TLS");
	default:
		/* Including the metadata contexts: NBD_CMD_BLOCK_STATUS is not
		 * served, and "unknown" is the answer that says so. */
		return send_error(c, opt, NBD_REP_ERR_UNSUP,
				  "unsupported option");
	}
}

/* The options whose data is parsed, into a bounded buffer. */
static bool option_has_data(uint32_t opt)
{
	return opt == NBD_OPT_EXPORT_NAME || opt == NBD_OPT_GO ||
	       opt == NBD_OPT_INFO;
}

/* One option: 1 to enter transmission, 0 to go on, -errno to hang up. */
static int option(struct nbd_conn *c)
{
	uint8_t h[16], d[NBD_OPT_DATA_MAX];
	uint32_t opt, len;
	int r;

	r = nbd_conn_read(c, h, sizeof(h));
	if (r < 0)
		return r;
	if (get_be64(h) != NBD_OPT_MAGIC)
		return -EPROTO;
	opt = get_be32(h + 8);
	len = get_be32(h + 12);
	/* "If the server is in the process of being shut down it ... SHOULD
	 * error further options received (other than an NBD_OPT_ABORT) with
	 * NBD_REP_ERR_SHUTDOWN"; NBD_OPT_EXPORT_NAME has no error reply, and
	 * ends the connection. */
	if (atomic_load_explicit(&c->srv->stopping, memory_order_relaxed)) {
		r = nbd_conn_skip(c, len);
		if (r < 0)
			return r;
		if (opt == NBD_OPT_ABORT)
			return option_without_data(c, opt, len);
		if (opt == NBD_OPT_EXPORT_NAME)
			return -ESHUTDOWN;
		return send_error(c, opt, NBD_REP_ERR_SHUTDOWN,
				  "the server is shutting down");
	}
	/* Classified before the length is judged: an unknown option gets
	 * NBD_REP_ERR_UNSUP whatever its size, since "the presence of the
	 * option length in every option allows the server to skip any
	 * options ... that it does not understand".  Skipping keeps the
	 * stream in step, so the client may go on. */
	if (!option_has_data(opt)) {
		r = nbd_conn_skip(c, len);
		if (r < 0)
			return r;
		return option_without_data(c, opt, len);
	}
	if (len > sizeof(d)) {
		r = nbd_conn_skip(c, len);
		if (r < 0)
			return r;
		if (opt == NBD_OPT_EXPORT_NAME)
			return -ENAMETOOLONG;
		return send_error(c, opt, NBD_REP_ERR_TOO_BIG,
				  "option data too long");
	}
	r = nbd_conn_read(c, d, len);
	if (r < 0)
		return r;
	if (opt == NBD_OPT_EXPORT_NAME)
		return opt_export_name(c, d, len);
	return opt_info_go(c, opt, d, len);
}

int nbd_handshake(struct nbd_conn *c)
{
	uint8_t h[18], cf[4];
	uint32_t cflags;
	struct iovec iov = { h, sizeof(h) };
	int r;

	put_be64(h, NBD_MAGIC);
	put_be64(h + 8, NBD_OPT_MAGIC);
	put_be16(h + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	r = nbd_conn_send(c, &iov, 1);
	if (r < 0)
		return r;
	r = nbd_conn_read(c, cf, sizeof(cf));
	if (r < 0)
		return r;
	cflags = get_be32(cf);
	/* "the server MUST drop the TCP connection if the client sets an
	 * unknown flag". */
	if (cflags &
	    ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))
		return -EPROTO;
	c->no_zeroes = cflags & NBD_FLAG_C_NO_ZEROES;

	/* A client that sends options for ever is a denial of service, the
	 * one case where the server "MAY initiate a hard disconnect". */
	for (int i = 0; i < NBD_MAX_OPTIONS; i++) {
		r = option(c);
		if (r != 0)
			return r == -ECONNABORTED ? 0 : r;
	}
	return -EMLINK; /* not a violation of the protocol: too many */
}
