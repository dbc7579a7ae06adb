// SPDX-License-Identifier: MIT
/*
 * The transmission phase: requests in, replies out.
 *
 * Each connection has one thread that reads and parses its requests.  It
 * reads as much as the socket holds into the connection's input buffer,
 * so that a pipelined client's requests arrive by the dozen per read(2),
 * and answers them into an output batch sent with one sendmsg(2) before
 * it waits for more.  What happens to a request then depends on whether
 * serving it can block:
 *
 *   memory backend  served on the connection thread: a read is a pointer
 *                   into the export for the reply's iovec, a write one
 *                   memcpy; handing that to another thread would cost more
 *                   (two wake-ups, a cache line per field) than doing it.
 *   file backend    pread, pwrite, fdatasync block on the disk: the request
 *                   goes to the worker pool with its data in mempool
 *                   elements, and the connection thread reads on, so
 *                   requests stay pipelined.  Workers reply as they finish,
 *                   without ever waiting on the socket (nbd_conn_reply).
 *
 * Replies may leave in any order ("The server MAY process commands out of
 * order, and MAY reply out of order"), so a read may see a later write of
 * an overlapping request in flight at the same time: the protocol leaves
 * the order of such requests to the server.
 *
 * Any byte sequence is safe here: a request's offset and length are
 * checked by nbd_request_check() before any byte is touched, payloads are
 * read only into a buffer of the size checked, and a request with a bad
 * magic ends the connection (the stream can no longer be parsed).
 */
#include <errno.h>
#include <string.h>

#include "nbd.h"

#define DIV_ROUND_UP(a, b) (((a) + (b)-1) / (b))

/* ---------------------------------------------------------------- output */

/* Make room for hdr bytes of headers and niov iovecs in the batch. */
static int out_reserve(struct nbd_conn *c, size_t hdr, int niov)
{
	if (c->olen + hdr <= sizeof(c->obuf) && c->niov + niov <= NBD_OIOV_MAX)
		return 0;
	return nbd_conn_flush(c);
}

static bool in_obuf(const struct nbd_conn *c, const void *p)
{
	return (const uint8_t *)p >= c->obuf &&
	       (const uint8_t *)p < c->obuf + sizeof(c->obuf);
}

static uint8_t *out_hdr(struct nbd_conn *c, size_t n)
{
	uint8_t *p = c->obuf + c->olen;
	struct iovec *last = c->niov ? &c->oiov[c->niov - 1] : NULL;

	if (last && in_obuf(c, last->iov_base) &&
	    (uint8_t *)last->iov_base + last->iov_len == p)
		last->iov_len += n;
	else
		c->oiov[c->niov++] = (struct iovec){ p, n };
	c->olen += n;
	return p;
}

static void out_data(struct nbd_conn *c, const void *p, size_t n)
{
	struct iovec *last = c->niov ? &c->oiov[c->niov - 1] : NULL;

	if (!n)
		return;
	/* Adjacent reads of the export go out as one iovec. */
	if (last && !in_obuf(c, last->iov_base) &&
	    (const uint8_t *)last->iov_base + last->iov_len ==
		    (const uint8_t *)p)
		last->iov_len += n;
	else
		c->oiov[c->niov++] = (struct iovec){ (void *)p, n };
}

/* The message of an error chunk for what the backend reports (what
 * nbd_request_check() refuses comes with its own). */
static const char *error_message(uint32_t err)
{
	switch (err) {
	case NBD_EPERM:
		return "operation not permitted";
	case NBD_EINVAL:
		return "invalid request";
	case NBD_ENOSPC:
		return "no space left on the export's storage";
	case NBD_ENOMEM:
		return "out of memory";
	case NBD_ENOTSUP:
		return "cannot write zeroes fast here";
	case NBD_ESHUTDOWN:
		return "the server is shutting down";
	default:
		return "input/output error";
	}
}

/* A reply without data; an error with msg, or error_message()'s if NULL.
 * Messages are constants shorter than 64 bytes. */
static int reply_status(struct nbd_conn *c, const struct nbd_request *r,
			uint32_t err, const char *msg)
{
	int ret;

	/* Errors go as structured chunks where negotiated, as the protocol
	 * prefers, since they carry a message for the user. */
	if (err && c->structured) {
		if (!msg)
			msg = error_message(err);
		ret = out_reserve(c, 26 + 64, 1);
		if (ret < 0)
			return ret;
		nbd_error_chunk(out_hdr(c, 26 + strlen(msg)), r->cookie, err,
				msg);
		return 0;
	}
	ret = out_reserve(c, NBD_SIMPLE_REPLY_SIZE, 1);
	if (ret < 0)
		return ret;
	nbd_simple_reply(out_hdr(c, NBD_SIMPLE_REPLY_SIZE), r->cookie, err);
	return 0;
}

/* ---------------------------------------------------------------- memory */

static int read_memory(struct nbd_conn *c, const struct nbd_request *r)
{
	struct nbd_export *exp = c->srv->exp;
	const uint8_t *data = exp->map + r->offset;
	uint64_t off = r->offset, end = r->offset + r->len;
	int ret, chunks = 0;

	if (!c->structured) {
		ret = out_reserve(c, NBD_SIMPLE_REPLY_SIZE, 2);
		if (ret < 0)
			return ret;
		nbd_simple_reply(out_hdr(c, NBD_SIMPLE_REPLY_SIZE), r->cookie,
				 0);
		out_data(c, data, r->len);
		return 0;
	}
	ret = out_reserve(c, NBD_READ_CHUNKS_MAX * 32, 2 * NBD_READ_CHUNKS_MAX);
	if (ret < 0)
		return ret;
	if (r->len == 0) {
		nbd_chunk_header(out_hdr(c, NBD_CHUNK_HEADER_SIZE),
				 NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE,
				 r->cookie, 0);
		return 0;
	}
	/* Holes go as NBD_REPLY_TYPE_OFFSET_HOLE, which costs 32 bytes on
	 * the wire whatever their size; the chunk count is bounded, the rest
	 * of a fragmented range going as one data chunk. */
	while (off < end) {
		uint64_t n = end - off;
		bool hole = false;
		uint16_t done;
		uint8_t *p;

		if (!(r->flags & NBD_CMD_FLAG_DF) &&
		    chunks < NBD_READ_CHUNKS_MAX - 1)
			n = nbd_memory_extent(exp, off, n, &hole);
		done = off + n == end ? NBD_REPLY_FLAG_DONE : 0;
		if (hole) {
			p = out_hdr(c, NBD_CHUNK_HEADER_SIZE + 12);
			nbd_chunk_header(p, done, NBD_REPLY_TYPE_OFFSET_HOLE,
					 r->cookie, 12);
			put_be64(p + 20, off);
			put_be32(p + 28, (uint32_t)n);
		} else {
			p = out_hdr(c, NBD_CHUNK_HEADER_SIZE + 8);
			nbd_chunk_header(p, done, NBD_REPLY_TYPE_OFFSET_DATA,
					 r->cookie, (uint32_t)(8 + n));
			put_be64(p + 20, off);
			out_data(c, exp->map + off, n);
		}
		off += n;
		chunks++;
	}
	return 0;
}

/*
 * The bitmap's invariant is: a clear bit means the grain's bytes are zero.
 * So bits are set only once the data has landed.  A write zeroes from
 * another connection clears bits, then gives the pages back (memory_zero):
 * were bits set before the copy, such a zero could clear them and drop the
 * pages between the two, and the copy would then leave data in a grain
 * read as a hole, to reappear with the next write to that grain.
 */
static int write_memory(struct nbd_conn *c, const struct nbd_request *r)
{
	struct nbd_export *exp = c->srv->exp;
	int ret;

	if (r->len <= NBD_INLINE_PAYLOAD) {
		ret = nbd_conn_fill(c, r->len);
		if (ret < 0)
			return ret;
		memcpy(exp->map + r->offset, c->ibuf + c->ipos, r->len);
		c->ipos += r->len;
		nbd_memory_mark(exp, r->offset, r->len);
	} else {
		/* Straight from the socket into the export: one copy.  A
		 * payload cut short leaves the range torn, as a disk does,
		 * and what landed must read back: marked on failure too. */
		ret = nbd_conn_read(c, exp->map + r->offset, r->len);
		nbd_memory_mark(exp, r->offset, r->len);
		if (ret < 0)
			return ret;
	}
	return reply_status(c, r, 0, NULL);
}

static int serve_memory(struct nbd_conn *c, const struct nbd_request *r)
{
	struct nbd_export *exp = c->srv->exp;
	int ret = 0;

	switch (r->type) {
	case NBD_CMD_READ:
		return read_memory(c, r);
	case NBD_CMD_WRITE:
		return write_memory(c, r);
	case NBD_CMD_FLUSH:
		/* Nothing is volatile beyond the export itself. */
		break;
	case NBD_CMD_TRIM:
		ret = nbd_backend_trim(exp, -1, r->offset, r->len, false);
		break;
	case NBD_CMD_WRITE_ZEROES:
		ret = nbd_backend_zero(exp, -1, r->offset, r->len, r->flags);
		break;
	}
	return reply_status(c, r, ret < 0 ? (uint32_t)-ret : 0, NULL);
}

/* ---------------------------------------------------------------- workers */

static struct nbd_work *work_alloc(struct nbd_conn *c)
{
	struct nbd_server *srv = c->srv;
	struct nbd_work *w;

	w = ioflusher_mempool_alloc(srv->work_pool, IOFLUSHER_MEMPOOL_NOWAIT);
	if (w)
		return w;
	/* Everything in flight is answered by workers, who free as they go;
	 * the batch is sent first, since it may be what they wait behind. */
	if (nbd_conn_flush(c) < 0)
		return NULL;
	return ioflusher_mempool_alloc(srv->work_pool, 0);
}

static int data_alloc(struct nbd_conn *c, struct nbd_work *w, uint32_t len,
		      unsigned int n)
{
	struct nbd_server *srv = c->srv;
	int ret;

	/* All or none (ioflusher_mempool_alloc_bulk(3)): two requests each
	 * holding part of what the other needs cannot wait for each other. */
	ret = ioflusher_mempool_alloc_bulk(srv->data_pool, w->elem, n, 0);
	if (ret == -EAGAIN) {
		ret = nbd_conn_flush(c);
		if (ret < 0)
			return ret;
		ret = ioflusher_mempool_alloc_bulk(srv->data_pool, w->elem, n,
						   IOFLUSHER_MEMPOOL_FOREVER);
	}
	if (ret < 0)
		return ret;
	w->nelem = n;
	for (unsigned int i = 0; i < n; i++) {
		size_t part = len - (size_t)i * NBD_DATA_ELEM;

		w->iov[i].iov_base = w->elem[i];
		w->iov[i].iov_len = part < NBD_DATA_ELEM ? part : NBD_DATA_ELEM;
	}
	return 0;
}

static void work_free(struct nbd_work *w)
{
	struct nbd_server *srv = w->conn->srv;

	if (w->nelem)
		ioflusher_mempool_free_bulk(srv->data_pool, w->elem, w->nelem);
	ioflusher_mempool_free_elem(srv->work_pool, w);
}

void nbd_work_done(struct nbd_work *w)
{
	struct nbd_conn *c = w->conn;
	unsigned int n = w->nres;

	work_free(w);
	nbd_conn_release(c, n);
}

static int serve_file(struct nbd_conn *c, const struct nbd_request *r)
{
	bool data = r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE;
	unsigned int n = data ? DIV_ROUND_UP(r->len, NBD_DATA_ELEM) : 0;
	struct nbd_work *w;
	int ret;

	/* The connection's share first, then the pools: a connection never
	 * queues in a pool for more than its share (nbd_conn_reserve). */
	ret = nbd_conn_reserve(c, n);
	if (ret < 0)
		return ret;
	w = work_alloc(c);
	if (!w) {
		ret = -EPIPE;
		goto unreserve;
	}
	w->conn = c;
	w->req = *r;
	w->nelem = 0;
	w->nres = n;
	if (n) {
		ret = data_alloc(c, w, r->len, n);
		if (ret < 0)
			goto fail;
	}
	if (r->type == NBD_CMD_WRITE) {
		/* Into buffers others may be waiting for: a client that stops
		 * sending midway is cut off after --send-timeout, as one that
		 * stops reading its replies is.  Not the kernel. */
		if (c->handshake)
			c->stall_ns =
				(uint64_t)c->srv->send_timeout * 1000000000u;
		ret = nbd_conn_readv(c, w->iov, (int)w->nelem, r->len);
		c->stall_ns = 0;
		if (ret < 0)
			goto fail;
	}
	if (c->srv->nthreads)
		nbd_work_queue(c->srv, w);
	else
		nbd_work_run(w, c->srv->exp->fd);
	return 0;
fail:
	work_free(w);
unreserve:
	nbd_conn_release(c, n);
	return ret;
}

/* The reply of a served request, in w->riov: a header, and the data of a
 * successful read. */
static void work_reply(struct nbd_work *w, int ret)
{
	struct nbd_conn *c = w->conn;
	const struct nbd_request *r = &w->req;
	uint8_t *h = w->hdr;
	size_t hlen;

	if (ret < 0 && c->structured) {
		hlen = nbd_error_chunk(h, r->cookie, (uint32_t)-ret,
				       error_message((uint32_t)-ret));
	} else if (r->type == NBD_CMD_READ && ret == 0 && c->structured) {
		if (r->len == 0) {
			hlen = nbd_chunk_header(h, NBD_REPLY_FLAG_DONE,
						NBD_REPLY_TYPE_NONE, r->cookie,
						0);
		} else {
			nbd_chunk_header(h, NBD_REPLY_FLAG_DONE,
					 NBD_REPLY_TYPE_OFFSET_DATA, r->cookie,
					 8 + r->len);
			put_be64(h + 20, r->offset);
			hlen = 28;
		}
	} else {
		hlen = nbd_simple_reply(h, r->cookie, (uint32_t)-ret);
	}
	w->riov[0] = (struct iovec){ h, hlen };
	w->nriov = 1;
	if (r->type == NBD_CMD_READ && ret == 0) {
		memcpy(w->riov + 1, w->iov, w->nelem * sizeof(*w->iov));
		w->nriov += (int)w->nelem;
	}
}

/* On a worker: serve, reply, release.  The connection outlives this: its
 * thread waits until every request it reserved is released before it
 * closes. */
void nbd_work_run(struct nbd_work *w, int fd)
{
	struct nbd_conn *c = w->conn;
	struct nbd_export *exp = c->srv->exp;
	const struct nbd_request *r = &w->req;
	bool fua = r->flags & NBD_CMD_FLAG_FUA;
	int ret = 0;

	switch (r->type) {
	case NBD_CMD_READ:
		ret = nbd_backend_preadv(exp, fd, w->iov, (int)w->nelem,
					 r->offset, r->len);
		break;
	case NBD_CMD_WRITE:
		ret = nbd_backend_pwritev(exp, fd, w->iov, (int)w->nelem,
					  r->offset, r->len, fua);
		break;
	case NBD_CMD_FLUSH:
		ret = nbd_backend_flush(exp, fd);
		break;
	case NBD_CMD_TRIM:
		ret = nbd_backend_trim(exp, fd, r->offset, r->len, fua);
		break;
	case NBD_CMD_WRITE_ZEROES:
		ret = nbd_backend_zero(exp, fd, r->offset, r->len, r->flags);
		break;
	}
	work_reply(w, ret);
	nbd_conn_reply(c, w);
}

/* ---------------------------------------------------------------- loop */

static int handle(struct nbd_conn *c, const struct nbd_request *r)
{
	const char *msg;
	int err, ret;

	err = nbd_request_check(c->srv->exp, c->structured, r, &msg);
	/* Stopping (nbd_server_stop): refused, and the client will leave.
	 * Not the kernel, which stops by itself, after its queued requests. */
	if (c->handshake &&
	    atomic_load_explicit(&c->srv->stopping, memory_order_relaxed)) {
		err = NBD_ESHUTDOWN;
		msg = "the server is shutting down";
	}
	if (err) {
		/* A write's payload follows whatever we think of it: read
		 * past it, so that the next request is parsed in step. */
		if (r->type == NBD_CMD_WRITE) {
			ret = nbd_conn_skip(c, r->len);
			if (ret < 0)
				return ret;
		}
		return reply_status(c, r, (uint32_t)err, msg);
	}
	if (c->srv->exp->kind == NBD_BACKEND_MEMORY)
		return serve_memory(c, r);
	return serve_file(c, r);
}

int nbd_serve(struct nbd_conn *c)
{
	struct nbd_request r;
	int ret;

	for (;;) {
		ret = nbd_conn_fill(c, NBD_REQUEST_SIZE);
		if (ret < 0)
			break;
		nbd_request_decode(c->ibuf + c->ipos, &r);
		c->ipos += NBD_REQUEST_SIZE;
		c->lean = (r.type == NBD_CMD_WRITE || r.type == NBD_CMD_READ) &&
			  r.len > NBD_INLINE_PAYLOAD;
		if (r.magic != NBD_REQUEST_MAGIC) {
			ret = -EPROTO;
			break;
		}
		/* "The server MUST handle all outstanding requests" first:
		 * the caller waits for the workers, then closes. */
		if (r.type == NBD_CMD_DISC) {
			ret = 0;
			break;
		}
		ret = handle(c, &r);
		if (ret < 0)
			break;
	}
	nbd_conn_wait_idle(c);
	if (nbd_conn_flush(c) < 0 && ret == 0)
		ret = -EPIPE;
	return ret;
}
