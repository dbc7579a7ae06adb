// SPDX-License-Identifier: MIT
/*
 * Buffers, threads and connections.
 *
 * Every thread of the daemon is started with ioflusher_thread_create(),
 * which refuses to run one that does not carry the io-flusher flag: a
 * thread of the IO path without it may enter reclaim, wait for writeback
 * of the very device this daemon serves, and deadlock (ioflusher(7)).
 *
 * Memory for the IO path is taken once, at start-up, from mempools sized
 * from the queue depth: a connection's buffers (one element each, input
 * and output), and for the file backend the requests handed to workers
 * and their data in NBD_DATA_ELEM pieces.  A request that finds the pools
 * empty waits for one in flight to finish: back-pressure, not malloc.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "nbd.h"

/* ---------------------------------------------------------------- socket io */

static ssize_t sock_recv(void *opaque, void *buf, size_t len)
{
	int fd = (int)(intptr_t)opaque;
	ssize_t r;

	do
		r = read(fd, buf, len);
	while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : r;
}

static int sock_sendv(void *opaque, struct iovec *iov, int n)
{
	int fd = (int)(intptr_t)opaque, first = 0;
	struct msghdr m = { 0 };
	ssize_t r;

	while (first < n) {
		if (iov[first].iov_len == 0) {
			first++;
			continue;
		}
		m.msg_iov = iov + first;
		m.msg_iovlen =
			(size_t)(n - first < IOV_MAX ? n - first : IOV_MAX);
		/* MSG_NOSIGNAL: a client gone is an error here, not SIGPIPE. */
		r = sendmsg(fd, &m, MSG_NOSIGNAL);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		while (first < n && (size_t)r >= iov[first].iov_len) {
			r -= (ssize_t)iov[first].iov_len;
			first++;
		}
		if (first < n) {
			iov[first].iov_base =
				(uint8_t *)iov[first].iov_base + r;
			iov[first].iov_len -= (size_t)r;
		}
	}
	return 0;
}

/* ---------------------------------------------------------------- conn */

void nbd_conn_init(struct nbd_conn *c, struct nbd_server *srv,
		   const struct nbd_io *io)
{
	c->srv = srv;
	c->io = *io;
	c->fd = -1;
	c->id = 0;
	c->handshake = true;
	c->structured = false;
	c->no_zeroes = false;
	c->inflight = 0;
	atomic_init(&c->send_failed, false);
	c->next = NULL;
	c->ipos = c->ilen = c->olen = 0;
	c->niov = 0;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->idle, NULL);
	pthread_mutex_init(&c->send_lock, NULL);
}

void nbd_conn_destroy(struct nbd_conn *c)
{
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->idle);
	pthread_mutex_destroy(&c->send_lock);
}

int nbd_conn_send(struct nbd_conn *c, struct iovec *iov, int n)
{
	int r = -EPIPE;

	pthread_mutex_lock(&c->send_lock);
	if (!atomic_load_explicit(&c->send_failed, memory_order_relaxed)) {
		r = c->io.sendv(c->io.opaque, iov, n);
		if (r < 0)
			atomic_store(&c->send_failed, true);
	}
	pthread_mutex_unlock(&c->send_lock);
	return r;
}

int nbd_conn_flush(struct nbd_conn *c)
{
	int r;

	if (!c->niov)
		return 0;
	r = nbd_conn_send(c, c->oiov, c->niov);
	c->niov = 0;
	c->olen = 0;
	return r;
}

int nbd_conn_fill(struct nbd_conn *c, size_t n)
{
	ssize_t got;
	int r;

	if (n > NBD_IBUF_SIZE)
		return -EINVAL;
	if (c->ilen - c->ipos >= n)
		return 0;
	if (c->ipos == c->ilen) {
		c->ipos = c->ilen = 0;
	} else if (c->ipos + n > NBD_IBUF_SIZE) {
		memmove(c->ibuf, c->ibuf + c->ipos, c->ilen - c->ipos);
		c->ilen -= c->ipos;
		c->ipos = 0;
	}
	while (c->ilen - c->ipos < n) {
		/* About to wait for the client: what it waits for goes first. */
		r = nbd_conn_flush(c);
		if (r < 0)
			return r;
		got = c->io.recv(c->io.opaque, c->ibuf + c->ilen,
				 NBD_IBUF_SIZE - c->ilen);
		if (got < 0)
			return (int)got;
		if (got == 0)
			return -ECONNRESET;
		c->ilen += (size_t)got;
	}
	return 0;
}

static size_t take_buffered(struct nbd_conn *c, void *dst, size_t n)
{
	size_t k = c->ilen - c->ipos;

	if (k > n)
		k = n;
	memcpy(dst, c->ibuf + c->ipos, k);
	c->ipos += k;
	return k;
}

int nbd_conn_read(struct nbd_conn *c, void *dst, size_t n)
{
	uint8_t *p = dst;
	ssize_t got;
	size_t k;
	int r;

	k = take_buffered(c, p, n);
	p += k;
	n -= k;
	if (!n)
		return 0;
	if (n <= NBD_IBUF_SIZE / 2) {
		/* Small: through the buffer, which picks up what follows. */
		r = nbd_conn_fill(c, n);
		if (r < 0)
			return r;
		take_buffered(c, p, n);
		return 0;
	}
	r = nbd_conn_flush(c);
	if (r < 0)
		return r;
	while (n) {
		got = c->io.recv(c->io.opaque, p, n);
		if (got < 0)
			return (int)got;
		if (got == 0)
			return -ECONNRESET;
		p += got;
		n -= (size_t)got;
	}
	return 0;
}

int nbd_conn_readv(struct nbd_conn *c, const struct iovec *iov, int n,
		   size_t len)
{
	for (int i = 0; i < n && len; i++) {
		size_t k = iov[i].iov_len < len ? iov[i].iov_len : len;
		int r = nbd_conn_read(c, iov[i].iov_base, k);

		if (r < 0)
			return r;
		len -= k;
	}
	return 0;
}

int nbd_conn_skip(struct nbd_conn *c, uint64_t n)
{
	while (n) {
		size_t k = c->ilen - c->ipos;
		int r;

		if (k == 0) {
			r = nbd_conn_fill(c, n < NBD_IBUF_SIZE ? (size_t)n :
								 NBD_IBUF_SIZE);
			if (r < 0)
				return r;
			k = c->ilen - c->ipos;
		}
		if (k > n)
			k = (size_t)n;
		c->ipos += k;
		n -= k;
	}
	return 0;
}

void nbd_conn_get(struct nbd_conn *c)
{
	pthread_mutex_lock(&c->lock);
	c->inflight++;
	pthread_mutex_unlock(&c->lock);
}

void nbd_conn_put(struct nbd_conn *c)
{
	pthread_mutex_lock(&c->lock);
	if (--c->inflight == 0)
		pthread_cond_broadcast(&c->idle);
	pthread_mutex_unlock(&c->lock);
}

void nbd_conn_wait_idle(struct nbd_conn *c)
{
	pthread_mutex_lock(&c->lock);
	while (c->inflight)
		pthread_cond_wait(&c->idle, &c->lock);
	pthread_mutex_unlock(&c->lock);
}

/* ---------------------------------------------------------------- threads */

int nbd_thread_start(struct nbd_server *srv, pthread_t *t,
		     const pthread_attr_t *attr, const char *name,
		     void *(*fn)(void *), void *arg)
{
	int r = ioflusher_thread_create(t, attr, fn, arg);

	/* Best effort: where the flag cannot be had the thread runs
	 * without it, and the report and audit said so at start-up. */
	if (r < 0 && srv->best_effort)
		r = -pthread_create(t, attr, fn, arg);
	/* Named by the creator, so that an audit right after sees it; a
	 * detached thread (name NULL) may be gone already: it names itself. */
	if (r == 0 && name)
		pthread_setname_np(*t, name);
	return r;
}

void nbd_work_queue(struct nbd_server *srv, struct nbd_work *w)
{
	w->next = NULL;
	pthread_mutex_lock(&srv->lock);
	*srv->qtail = w;
	srv->qtail = &w->next;
	pthread_cond_signal(&srv->cond);
	pthread_mutex_unlock(&srv->lock);
}

static void *worker_main(void *arg)
{
	struct nbd_server *srv = arg;
	struct nbd_work *w;

	for (;;) {
		pthread_mutex_lock(&srv->lock);
		while (!srv->qhead && !srv->quit)
			pthread_cond_wait(&srv->cond, &srv->lock);
		w = srv->qhead;
		if (w) {
			srv->qhead = w->next;
			if (!srv->qhead)
				srv->qtail = &srv->qhead;
		}
		pthread_mutex_unlock(&srv->lock);
		/* Quitting drains the queue first: every request accepted
		 * gets its reply. */
		if (!w)
			return NULL;
		nbd_work_run(w);
	}
}

static void *conn_main(void *arg)
{
	struct nbd_conn *c = arg;
	struct nbd_server *srv = c->srv;
	char name[32];
	int r = 1;

	snprintf(name, sizeof(name), "nbd-conn-%u", c->id);
	name[15] = 0;
	pthread_setname_np(pthread_self(), name);
	if (c->handshake)
		r = nbd_handshake(c);
	if (r == 1)
		r = nbd_serve(c);
	if (r < 0 && r != -ECONNRESET && r != -EPIPE)
		srv->log("connection %u: %s\n", c->id,
			 r == -EPROTO ? "protocol violation, disconnected" :
					strerror(-r));
	close(c->fd);

	pthread_mutex_lock(&srv->lock);
	for (struct nbd_conn **pp = &srv->conns; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	pthread_mutex_unlock(&srv->lock);
	nbd_conn_destroy(c);
	ioflusher_mempool_free_elem(srv->conn_pool, c);
	/* Counted out last: once nconns is 0 the main thread frees the
	 * pool the connection came from (nbd_server_fini), and this thread,
	 * detached, must no longer touch it. */
	pthread_mutex_lock(&srv->lock);
	srv->nconns--;
	pthread_cond_broadcast(&srv->conns_cond);
	pthread_mutex_unlock(&srv->lock);
	return NULL;
}

int nbd_server_add(struct nbd_server *srv, int fd, bool handshake)
{
	struct nbd_io io = { sock_recv, sock_sendv, (void *)(intptr_t)fd };
	struct nbd_conn *c;
	pthread_attr_t attr;
	pthread_t t;
	int r;

	c = ioflusher_mempool_alloc(srv->conn_pool, IOFLUSHER_MEMPOOL_NOWAIT);
	if (!c)
		return -EMFILE;
	nbd_conn_init(c, srv, &io);
	c->fd = fd;
	c->handshake = handshake;

	pthread_mutex_lock(&srv->lock);
	if (srv->stopping) {
		pthread_mutex_unlock(&srv->lock);
		r = -ESHUTDOWN;
		goto fail;
	}
	c->id = ++srv->next_id;
	c->next = srv->conns;
	srv->conns = c;
	srv->nconns++;
	pthread_mutex_unlock(&srv->lock);

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	/* The IO path is shallow; a small stack is a small locked stack. */
	pthread_attr_setstacksize(&attr, 256 << 10);
	r = nbd_thread_start(srv, &t, &attr, NULL, conn_main, c);
	pthread_attr_destroy(&attr);
	if (r == 0)
		return 0;

	pthread_mutex_lock(&srv->lock);
	srv->conns = c->next;
	srv->nconns--;
	pthread_mutex_unlock(&srv->lock);
fail:
	nbd_conn_destroy(c);
	ioflusher_mempool_free_elem(srv->conn_pool, c);
	return r;
}

/* Connections end by themselves once they read end of stream: SHUT_RD
 * lets them read what is queued, answer it, and leave; SHUT_RDWR also
 * breaks a send blocked on a client that stopped reading.  The kernel's
 * connection is left to end with the NBD_CMD_DISC that NBD_DISCONNECT
 * makes it send, after the requests it has queued: cutting it short would
 * fail them with EIO under a mounted filesystem. */
void nbd_server_shutdown(struct nbd_server *srv, bool hard)
{
	pthread_mutex_lock(&srv->lock);
	srv->stopping = true;
	for (struct nbd_conn *c = srv->conns; c; c = c->next)
		if (hard || c->handshake)
			shutdown(c->fd, hard ? SHUT_RDWR : SHUT_RD);
	pthread_mutex_unlock(&srv->lock);
}

void nbd_server_wait_idle(struct nbd_server *srv, int timeout_ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += timeout_ms / 1000;
	ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&srv->lock);
	while (srv->nconns &&
	       pthread_cond_timedwait(&srv->conns_cond, &srv->lock, &ts) == 0)
		;
	pthread_mutex_unlock(&srv->lock);
}

/* ---------------------------------------------------------------- server */

int nbd_server_init(struct nbd_server *srv)
{
	unsigned int flags = srv->best_effort ? IOFLUSHER_MEMPOOL_UNLOCKED_OK :
						0;
	int r;

	pthread_mutex_init(&srv->lock, NULL);
	pthread_cond_init(&srv->cond, NULL);
	pthread_cond_init(&srv->conns_cond, NULL);
	srv->qhead = NULL;
	srv->qtail = &srv->qhead;
	/* No per-thread caches: an element parked in an idle thread's cache
	 * is one a waiting connection cannot have. */
	r = ioflusher_mempool_new(srv->ctx, srv->max_conns,
				  sizeof(struct nbd_conn), 64, 0, flags,
				  &srv->conn_pool);
	if (r < 0)
		return r;
	if (srv->exp->kind != NBD_BACKEND_FILE)
		return 0;
	/* Requests in flight at once, and their data: one element each for
	 * the queue depth's requests of up to NBD_DATA_ELEM bytes, plus
	 * enough that one request of the maximum size always fits. */
	r = ioflusher_mempool_new(srv->ctx, srv->queue_depth,
				  sizeof(struct nbd_work), 64, 0, flags,
				  &srv->work_pool);
	if (r < 0)
		return r;
	return ioflusher_mempool_new(srv->ctx,
				     srv->queue_depth + NBD_DATA_ELEMS_MAX,
				     NBD_DATA_ELEM, 4096, 0, flags,
				     &srv->data_pool);
}

int nbd_server_start_workers(struct nbd_server *srv)
{
	int r;

	if (!srv->nthreads)
		return 0;
	/* Allocated before the IO starts, and never again. */
	srv->workers = calloc(srv->nthreads, sizeof(*srv->workers));
	if (!srv->workers)
		return -ENOMEM;
	for (unsigned int i = 0; i < srv->nthreads; i++) {
		char name[32];

		snprintf(name, sizeof(name), "nbd-worker-%u", i);
		name[15] = 0; /* the kernel's TASK_COMM_LEN */
		r = nbd_thread_start(srv, &srv->workers[i], NULL, name,
				     worker_main, srv);
		if (r < 0)
			return r;
		srv->nworkers++;
	}
	return 0;
}

void nbd_server_fini(struct nbd_server *srv)
{
	pthread_mutex_lock(&srv->lock);
	srv->stopping = true;
	srv->quit = true;
	pthread_cond_broadcast(&srv->cond);
	pthread_mutex_unlock(&srv->lock);
	for (unsigned int i = 0; i < srv->nworkers; i++)
		pthread_join(srv->workers[i], NULL);
	free(srv->workers);
	srv->workers = NULL;
	srv->nworkers = 0;
	ioflusher_mempool_free(srv->data_pool);
	ioflusher_mempool_free(srv->work_pool);
	ioflusher_mempool_free(srv->conn_pool);
	srv->data_pool = srv->work_pool = srv->conn_pool = NULL;
}
