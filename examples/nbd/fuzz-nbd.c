// SPDX-License-Identifier: MIT
/*
 * libFuzzer target: the handshake and the request parser of ioflusher-nbd,
 * fed bytes without a socket (struct nbd_io reads the fuzzer's input).
 *
 * The first byte chooses the backend (memory or a file on a memfd) and the
 * mode (handshake first, or the kernel's: requests straight away), the
 * second how many bytes each read returns, so that short reads split
 * headers and payloads everywhere.  Requests run inline (no workers), so a
 * run is deterministic.  After each input: the bytes past the end of the
 * export are still zero, and the file has not grown, i.e. nothing was
 * written outside the export.  Crashes and overflows are ASan's to find.
 *
 * And the replies are read as a client reads them (struct oracle): each
 * starts with its magic and answers, once, an option or a request the
 * input sent, with a length that keeps the stream in step; a read is
 * answered with all its bytes, and every request the input holds whole
 * is answered.  So that requests can be told apart whatever cookies the
 * input gives them, each request's cookie is made its number before the
 * server reads it.
 *
 *   make fuzz-nbd            (a longer run; see Makefile.am)
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nbd.h"

#define MEM_SIZE ((1u << 20) + 1000) /* not a multiple of anything */
#define FILE_SIZE ((256u << 10) + 123)

struct input {
	const uint8_t *p;
	size_t left;
	size_t step;
};

/* ---------------------------------------------------------------- oracle */

#define COOKIE_TAG 0xf022000000000000ull /* | the request's number */

struct oreq {
	uint16_t type, flags;
	uint64_t off;
	uint32_t len;
	bool whole; /* header and payload all in the input */
	bool done, failed;
	unsigned int content; /* content chunks of a structured read */
	uint64_t got; /* the bytes they cover */
};

enum ostep {
	S_GREETING, /* 18 bytes */
	S_OPT_MAGIC, /* 8: an option reply, or EXPORT_NAME's */
	S_OPT_REPLY, /* 20 */
	S_EXPORT_NAME, /* 10 */
	S_MAGIC, /* 4: a transmission reply */
	S_SIMPLE, /* 16 */
	S_CHUNK, /* 20 */
	S_CHUNK_DATA, /* 28: with the offset */
	S_CHUNK_HOLE, /* 32: offset and size */
	S_CHUNK_ERROR, /* 26: error and message length */
	S_END, /* after NBD_OPT_ABORT's reply: nothing more */
};

struct oracle {
	const struct nbd_export *exp;
	/* From the input: the options the server reads whole, in order; how
	 * many of them it must answer (not a refused EXPORT_NAME); the one
	 * that enters transmission, or -1; then the requests. */
	uint32_t opts[NBD_MAX_OPTIONS];
	int nopts, nanswered, enter;
	bool no_zeroes;
	struct oreq *reqs;
	size_t nreqs, cap;

	/* The server's bytes, as read so far. */
	enum ostep step;
	int k; /* the option being answered */
	bool structured;
	uint8_t h[32]; /* the header being read */
	size_t have, need;
	uint64_t skip; /* payload bytes passed over */
	bool zeroes; /* ... which must be zero */
	struct oreq *cur; /* the chunk's request */
	uint16_t cflags;
	uint32_t clen;
};

static struct oracle ora;

static void fail(const char *fmt, ...) IOFLUSHER_PRINTF(1, 2);
static void fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("fuzz-nbd: the replies: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	abort();
}

static bool name_is(const struct nbd_export *exp, const uint8_t *p, size_t n)
{
	return n == 0 ||
	       (strlen(exp->name) == n && memcmp(exp->name, p, n) == 0);
}

/* NBD_OPT_GO's data as the protocol lays it out, naming our export; no
 * longer than this server reads. */
static bool go_valid(const struct nbd_export *exp, const uint8_t *d,
		     uint32_t len)
{
	uint32_t namelen;

	if (len < 6 || len > NBD_OPT_DATA_MAX)
		return false;
	namelen = get_be32(d);
	if (namelen > len - 6)
		return false;
	return 4 + namelen + 2 + 2 * (uint64_t)get_be16(d + 4 + namelen) ==
		       len &&
	       name_is(exp, d + 4, namelen);
}

static struct oreq *new_req(struct oracle *o)
{
	if (o->nreqs == o->cap) {
		o->cap = o->cap ? 2 * o->cap : 256;
		o->reqs = realloc(o->reqs, o->cap * sizeof(*o->reqs));
		if (!o->reqs)
			abort();
	}
	return &o->reqs[o->nreqs++];
}

/* The options of the handshake in buf: where transmission starts, or
 * len if it does not. */
static size_t parse_options(struct oracle *o, const uint8_t *buf, size_t len)
{
	size_t pos = 4;
	uint32_t cflags;

	if (len < 4)
		return len;
	cflags = get_be32(buf);
	/* An unknown client flag: the server drops the connection. */
	if (cflags &
	    ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))
		return len;
	o->no_zeroes = cflags & NBD_FLAG_C_NO_ZEROES;
	while (o->nopts < NBD_MAX_OPTIONS && len - pos >= 16 &&
	       get_be64(buf + pos) == NBD_OPT_MAGIC) {
		uint32_t opt = get_be32(buf + pos + 8);
		uint32_t olen = get_be32(buf + pos + 12);
		const uint8_t *d = buf + pos + 16;

		if (olen > len - pos - 16)
			break; /* cut short: never answered */
		pos += 16 + (size_t)olen;
		o->opts[o->nopts++] = opt;
		o->nanswered = o->nopts;
		if (opt == NBD_OPT_ABORT)
			break;
		if (opt == NBD_OPT_EXPORT_NAME) {
			/* It has no error reply: the server hangs up. */
			if (olen > NBD_OPT_DATA_MAX ||
			    !name_is(o->exp, d, olen)) {
				o->nanswered--;
				break;
			}
			o->enter = o->nopts - 1;
			return pos;
		}
		if (opt == NBD_OPT_GO && go_valid(o->exp, d, olen)) {
			o->enter = o->nopts - 1;
			return pos;
		}
	}
	return len;
}

/* What the input asks for; buf is what the server will read, whose
 * request cookies become the requests' numbers here. */
static void oracle_prepare(struct oracle *o, const struct nbd_export *exp,
			   uint8_t *buf, size_t len, bool handshake)
{
	size_t pos = 0;

	o->exp = exp;
	o->nopts = o->nanswered = 0;
	o->enter = -1;
	o->no_zeroes = false;
	o->nreqs = 0;
	o->step = handshake ? S_GREETING : S_MAGIC;
	o->k = 0;
	o->structured = false;
	o->have = 0;
	o->need = handshake ? 18 : 4;
	o->skip = 0;
	o->zeroes = false;
	if (handshake)
		pos = parse_options(o, buf, len);
	/* Requests up to one with a bad magic (a hang-up), NBD_CMD_DISC, or
	 * the end of the input. */
	while (len - pos >= NBD_REQUEST_SIZE &&
	       get_be32(buf + pos) == NBD_REQUEST_MAGIC) {
		struct nbd_request r;
		struct oreq *q;

		nbd_request_decode(buf + pos, &r);
		if (r.type == NBD_CMD_DISC)
			break;
		q = new_req(o);
		*q = (struct oreq){ .type = r.type,
				    .flags = r.flags,
				    .off = r.offset,
				    .len = r.len,
				    .whole = true };
		put_be64(buf + pos + 8, COOKIE_TAG | (o->nreqs - 1));
		pos += NBD_REQUEST_SIZE;
		/* A write's payload follows, however the server judges it. */
		if (r.type == NBD_CMD_WRITE) {
			if (r.len > len - pos) {
				q->whole = false;
				break;
			}
			pos += r.len;
		}
	}
}

static struct oreq *req_of(struct oracle *o, uint64_t cookie)
{
	uint64_t i = cookie ^ COOKIE_TAG;

	if (i >= o->nreqs)
		fail("cookie %#llx, of no request sent",
		     (unsigned long long)cookie);
	if (o->reqs[i].done)
		fail("request %llu answered again", (unsigned long long)i);
	return &o->reqs[i];
}

static bool nbd_error(uint32_t e)
{
	return e == NBD_EPERM || e == NBD_EIO || e == NBD_ENOMEM ||
	       e == NBD_EINVAL || e == NBD_ENOSPC || e == NBD_EOVERFLOW ||
	       e == NBD_ENOTSUP || e == NBD_ESHUTDOWN;
}

/* A new header of need bytes. */
static void expect(struct oracle *o, enum ostep step, size_t need)
{
	o->step = step;
	o->need = need;
	o->have = 0;
}

/* The header read so far goes on to need bytes. */
static void extend(struct oracle *o, enum ostep step, size_t need)
{
	o->step = step;
	o->need = need;
}

/* The next reply's header. */
static void next_reply(struct oracle *o)
{
	if (o->step == S_END)
		return;
	if (o->step <= S_EXPORT_NAME)
		expect(o, S_OPT_MAGIC, 8);
	else
		expect(o, S_MAGIC, 4);
}

static void option_reply(struct oracle *o)
{
	uint32_t opt = get_be32(o->h + 8), type = get_be32(o->h + 12);
	bool final = type == NBD_REP_ACK || (type & 0x80000000u);
	bool entering = o->k == o->enter;

	if (o->k >= o->nanswered)
		fail("a reply to option %u, not sent or not whole", opt);
	if (opt != o->opts[o->k])
		fail("a reply to option %u where %u was sent", opt,
		     o->opts[o->k]);
	if ((type == NBD_REP_SERVER && opt != NBD_OPT_LIST) ||
	    (type == NBD_REP_INFO && opt != NBD_OPT_INFO &&
	     opt != NBD_OPT_GO) ||
	    (!final && type != NBD_REP_SERVER && type != NBD_REP_INFO))
		fail("reply type %#x to option %u", type, opt);
	o->skip = get_be32(o->h + 16);
	next_reply(o);
	if (!final)
		return;
	/* GO's ACK enters transmission: where the protocol says it does. */
	if (entering != (opt == NBD_OPT_GO && type == NBD_REP_ACK))
		fail("option %d (GO %s) %s", o->k,
		     entering ? "valid" : "not valid",
		     entering ? "refused" : "entered transmission");
	if (opt == NBD_OPT_STRUCTURED_REPLY && type == NBD_REP_ACK)
		o->structured = true;
	o->k++;
	if (entering)
		expect(o, S_MAGIC, 4);
	else if (opt == NBD_OPT_ABORT)
		o->step = S_END;
}

/* A chunk's payload beyond what was read of it, and the request done. */
static void chunk_end(struct oracle *o, uint64_t payload_read)
{
	struct oreq *q = o->cur;

	o->skip = o->clen - payload_read;
	if (o->cflags & NBD_REPLY_FLAG_DONE) {
		if (q->type == NBD_CMD_READ && !q->failed && q->got != q->len)
			fail("a read of %u bytes answered with %llu", q->len,
			     (unsigned long long)q->got);
		q->done = true;
	}
	next_reply(o);
}

/* A content chunk of [off, off + n). */
static void content(struct oracle *o, uint64_t off, uint64_t n)
{
	struct oreq *q = o->cur;

	if (q->type != NBD_CMD_READ)
		fail("a content chunk for command %u", q->type);
	if (n == 0 || off < q->off || n > q->len || off - q->off > q->len - n)
		fail("a chunk of %llu bytes at %llu for a read of %u at %llu",
		     (unsigned long long)n, (unsigned long long)off, q->len,
		     (unsigned long long)q->off);
	if (++q->content > 1 && (q->flags & NBD_CMD_FLAG_DF))
		fail("a DF read in more than one content chunk");
	q->got += n;
}

static void chunk(struct oracle *o)
{
	uint16_t type = get_be16(o->h + 6);

	o->cflags = get_be16(o->h + 4);
	o->cur = req_of(o, get_be64(o->h + 8));
	o->clen = get_be32(o->h + 16);
	if (o->cflags & ~NBD_REPLY_FLAG_DONE)
		fail("chunk flags %#x", o->cflags);
	switch (type) {
	case NBD_REPLY_TYPE_NONE:
		if (o->clen || !(o->cflags & NBD_REPLY_FLAG_DONE))
			fail("a NONE chunk of %u bytes, flags %#x", o->clen,
			     o->cflags);
		chunk_end(o, 0);
		return;
	case NBD_REPLY_TYPE_OFFSET_DATA:
		if (o->clen < 9)
			fail("a data chunk of %u bytes", o->clen);
		extend(o, S_CHUNK_DATA, 28);
		return;
	case NBD_REPLY_TYPE_OFFSET_HOLE:
		if (o->clen != 12)
			fail("a hole chunk of %u bytes", o->clen);
		extend(o, S_CHUNK_HOLE, 32);
		return;
	case NBD_REPLY_TYPE_ERROR:
		if (o->clen < 6)
			fail("an error chunk of %u bytes", o->clen);
		extend(o, S_CHUNK_ERROR, 26);
		return;
	default:
		fail("chunk type %#x", type);
	}
}

/* h holds what the step needs. */
static void oracle_header(struct oracle *o)
{
	const uint8_t *h = o->h;
	struct oreq *q;
	uint32_t err;

	switch (o->step) {
	case S_GREETING:
		if (get_be64(h) != NBD_MAGIC ||
		    get_be64(h + 8) != NBD_OPT_MAGIC ||
		    !(get_be16(h + 16) & NBD_FLAG_FIXED_NEWSTYLE))
			fail("a bad greeting");
		next_reply(o);
		return;
	case S_OPT_MAGIC:
		if (get_be64(h) == NBD_REP_MAGIC) {
			extend(o, S_OPT_REPLY, 20);
			return;
		}
		/* EXPORT_NAME's reply starts with the export's size. */
		if (o->k != o->enter || o->opts[o->k] != NBD_OPT_EXPORT_NAME ||
		    get_be64(h) != o->exp->size)
			fail("%#llx where an option reply starts",
			     (unsigned long long)get_be64(h));
		extend(o, S_EXPORT_NAME, 10);
		return;
	case S_OPT_REPLY:
		option_reply(o);
		return;
	case S_EXPORT_NAME:
		if (!(get_be16(h + 8) & NBD_FLAG_HAS_FLAGS))
			fail("transmission flags %#x", get_be16(h + 8));
		o->k++;
		o->skip = o->no_zeroes ? 0 : 124;
		o->zeroes = !o->no_zeroes;
		expect(o, S_MAGIC, 4);
		return;
	case S_MAGIC:
		if (get_be32(h) == NBD_SIMPLE_REPLY_MAGIC)
			extend(o, S_SIMPLE, 16);
		else if (get_be32(h) == NBD_STRUCTURED_REPLY_MAGIC &&
			 o->structured)
			extend(o, S_CHUNK, 20);
		else
			fail("%#x where a reply starts", get_be32(h));
		return;
	case S_SIMPLE:
		err = get_be32(h + 4);
		q = req_of(o, get_be64(h + 8));
		if (err && !nbd_error(err))
			fail("error %u", err);
		/* A read's data needs the request to be parsed: not for a
		 * client that asked for structured replies. */
		if (q->type == NBD_CMD_READ && o->structured)
			fail("a simple reply to a read, structured replies on");
		if (q->type == NBD_CMD_READ && !err)
			o->skip = q->len;
		q->done = true;
		next_reply(o);
		return;
	case S_CHUNK:
		chunk(o);
		return;
	case S_CHUNK_DATA:
		content(o, get_be64(h + 20), o->clen - 8);
		chunk_end(o, 8);
		return;
	case S_CHUNK_HOLE:
		content(o, get_be64(h + 20), get_be32(h + 28));
		chunk_end(o, 12);
		return;
	case S_CHUNK_ERROR:
		err = get_be32(h + 20);
		if (!nbd_error(err) || get_be16(h + 24) > o->clen - 6)
			fail("an error chunk: error %u, message of %u in %u",
			     err, get_be16(h + 24), o->clen);
		o->cur->failed = true;
		chunk_end(o, 6);
		return;
	case S_END:
		break;
	}
	abort();
}

/* Bytes the server sent, in order. */
static void oracle_bytes(struct oracle *o, const uint8_t *p, size_t n)
{
	while (n) {
		size_t take;

		if (o->skip) {
			take = o->skip < n ? (size_t)o->skip : n;
			if (o->zeroes) {
				for (size_t i = 0; i < take; i++)
					if (p[i])
						fail("EXPORT_NAME's zeroes");
			} else {
				/* Touched, so that ASan checks the iovec. */
				const volatile uint8_t *v = p;

				for (size_t i = 0; i < take; i += 512)
					(void)v[i];
				(void)v[take - 1];
			}
			o->skip -= take;
			if (!o->skip)
				o->zeroes = false;
		} else {
			if (o->step == S_END)
				fail("bytes after NBD_OPT_ABORT's reply");
			take = o->need - o->have < n ? o->need - o->have : n;
			memcpy(o->h + o->have, p, take);
			o->have += take;
			if (o->have == o->need)
				oracle_header(o);
		}
		p += take;
		n -= take;
	}
}

/* The connection is over: nothing cut short, nothing left unanswered. */
static void oracle_finish(struct oracle *o)
{
	if (o->skip || o->have)
		fail("the stream ends inside a reply");
	if (o->step == S_GREETING)
		fail("no greeting");
	if (o->step == S_END)
		return;
	if (o->step <= S_EXPORT_NAME) {
		if (o->k != o->nanswered || o->enter >= 0)
			fail("%d of %d options answered, transmission %s", o->k,
			     o->nanswered, o->enter >= 0 ? "due" : "not due");
		return;
	}
	for (size_t i = 0; i < o->nreqs; i++)
		if (o->reqs[i].whole && !o->reqs[i].done)
			fail("request %zu (command %u) never answered", i,
			     o->reqs[i].type);
}

static ssize_t in_recv(void *opaque, void *buf, size_t len, bool nowait)
{
	struct input *in = opaque;
	size_t n = len < in->left ? len : in->left;

	/* Now and then nothing yet, as from a socket the client has not
	 * written to: the poll of --poll gives up and waits. */
	if (nowait && (in->left & 1))
		return -EAGAIN;
	if (n > in->step)
		n = in->step;
	memcpy(buf, in->p, n);
	in->p += n;
	in->left -= n;
	return (ssize_t)n;
}

/* Everything goes out at once, into the oracle, and as nbd_io says, iov is
 * left sent. */
static int out_sendv(void *opaque, struct iovec *iov, int n, bool nowait)
{
	(void)opaque;
	(void)nowait;
	for (int i = 0; i < n; i++) {
		oracle_bytes(&ora, iov[i].iov_base, iov[i].iov_len);
		iov[i].iov_len = 0;
	}
	return 0;
}

/* The hard disconnect: the client's bytes end here. */
static void in_shutdown(void *opaque)
{
	struct input *in = opaque;

	in->left = 0;
}

static void quiet(const char *fmt, ...)
{
	(void)fmt;
}

static struct nbd_export mem_exp, file_exp;
static struct nbd_server mem_srv, file_srv;
static struct nbd_conn *conn;

static void init_server(struct nbd_server *srv, struct nbd_export *exp)
{
	srv->exp = exp;
	srv->nthreads = 0;
	srv->queue_depth = 4;
	srv->max_conns = 1;
	srv->poll_us = 1; /* both ways of waiting: see in_recv() */
	srv->best_effort = true;
	srv->log = quiet;
	if (ioflusher_ctx_new(&srv->ctx) < 0 || nbd_server_init(srv) < 0)
		abort();
}

static void init(void)
{
	int fd;

	mem_exp.name = "fuzz";
	if (nbd_export_memory(&mem_exp, MEM_SIZE) < 0)
		abort();
	fd = memfd_create("fuzz-nbd", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, FILE_SIZE) < 0)
		abort();
	file_exp.name = "";
	file_exp.kind = NBD_BACKEND_FILE;
	file_exp.fd = fd;
	file_exp.wzero_fd = -1;
	file_exp.path = "fuzz-nbd";
	file_exp.log = quiet;
	file_exp.size = FILE_SIZE;
	file_exp.tflags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH |
			  NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM |
			  NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO |
			  NBD_FLAG_CAN_MULTI_CONN;
	init_server(&mem_srv, &mem_exp);
	init_server(&file_srv, &file_exp);
	conn = aligned_alloc(64, (sizeof(*conn) + 63) / 64 * 64);
	if (!conn)
		abort();
}

static void check_export(void)
{
	const uint8_t *p = mem_exp.map + MEM_SIZE;
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t tail = mem_exp.map_len - page - MEM_SIZE;
	/* The bitmap's bits, in its first page (all of it here). */
	uint64_t nbits = (MEM_SIZE + mem_exp.grain - 1) / mem_exp.grain;
	struct stat st;

	for (size_t i = 0; i < tail; i++)
		if (p[i])
			abort(); /* a write past the end of the memory export */
	/* Nor a grain marked past it: the bits after the last grain's, in
	 * its word and in the rest of the bitmap's page. */
	if (nbits % 64 && mem_exp.bitmap[nbits / 64] >> (nbits % 64))
		abort();
	for (size_t w = (nbits + 63) / 64; w < page / sizeof(uint64_t); w++)
		if (mem_exp.bitmap[w])
			abort();
	if (fstat(file_exp.fd, &st) < 0 || st.st_size != FILE_SIZE)
		abort(); /* a write past the end of the file export */
	/* Trim and zero keep the size (FALLOC_FL_KEEP_SIZE): one past the
	 * end would show as blocks beyond it instead. */
	if ((uint64_t)st.st_blocks * 512 > (FILE_SIZE + page - 1) / page * page)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	uint8_t *copy;
	struct input in;
	struct nbd_io io = { in_recv, out_sendv, in_shutdown, &in };
	struct nbd_server *srv;
	int r = 1;

	if (!ready) {
		init();
		ready = true;
	}
	if (size < 2)
		return 0;
	srv = data[0] & 1 ? &file_srv : &mem_srv;
	/* A copy, whose cookies the oracle rewrites; of the input's size,
	 * so that ASan sees a read past its end. */
	copy = malloc(size - 2 + !(size - 2));
	if (!copy)
		abort();
	memcpy(copy, data + 2, size - 2);
	in.step = data[1] ? data[1] : NBD_IBUF_SIZE;
	in.p = copy;
	in.left = size - 2;

	nbd_conn_init(conn, srv, &io);
	conn->handshake = !(data[0] & 2);
	oracle_prepare(&ora, srv->exp, copy, size - 2, conn->handshake);
	if (conn->handshake)
		r = nbd_handshake(conn);
	if (r == 1)
		nbd_serve(conn);
	nbd_conn_destroy(conn);
	oracle_finish(&ora);
	free(copy);
	check_export();
	return 0;
}
