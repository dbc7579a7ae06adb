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
 * Those waits are bounded: one connection holds at most half the pools,
 * and what it holds is freed once its replies are sent, or once
 * --send-timeout gives up on a client that does not read them.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "nbd.h"

/* ---------------------------------------------------------------- lists */

static void work_list_init(struct nbd_work_list *l)
{
	l->head = NULL;
	l->tail = &l->head;
}

static void work_list_push(struct nbd_work_list *l, struct nbd_work *w)
{
	w->next = NULL;
	*l->tail = w;
	l->tail = &w->next;
}

static void work_list_push_front(struct nbd_work_list *l, struct nbd_work *w)
{
	w->next = l->head;
	if (!w->next)
		l->tail = &w->next;
	l->head = w;
}

static struct nbd_work *work_list_pop(struct nbd_work_list *l)
{
	struct nbd_work *w = l->head;

	if (w) {
		l->head = w->next;
		if (!l->head)
			l->tail = &l->head;
	}
	return w;
}

/* ---------------------------------------------------------------- socket io */

static ssize_t sock_recv(void *opaque, void *buf, size_t len, bool nowait)
{
	int fd = (int)(intptr_t)opaque;
	ssize_t r;

	do
		r = recv(fd, buf, len, nowait ? MSG_DONTWAIT : 0);
	while (r < 0 && errno == EINTR);
	if (r < 0 && errno == EWOULDBLOCK)
		return -EAGAIN;
	return r < 0 ? -errno : r;
}

uint64_t nbd_now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/*
 * The socket is full: wait until it takes more, for at most the socket's
 * SO_SNDTIMEO (--send-timeout, set by nbd_server_add(); none in kernel
 * mode) since it last took a byte, *since.  Timed here rather than by
 * SO_SNDTIMEO in a blocking sendmsg(2), which returns what it sent when
 * its time is up however early that was, and then waits its whole time
 * again: a client cut off after up to twice --send-timeout.
 */
static int wait_writable(int fd, int64_t *timeout_ns, uint64_t *since)
{
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	uint64_t now = nbd_now_ns();
	int left = -1, r;

	if (*timeout_ns == -2) {
		struct timeval tv;
		socklen_t len = sizeof(tv);

		*timeout_ns = -1;
		if (getsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, &len) == 0 &&
		    (tv.tv_sec || tv.tv_usec))
			*timeout_ns = (int64_t)tv.tv_sec * 1000000000 +
				      (int64_t)tv.tv_usec * 1000;
	}
	if (!*since)
		*since = now;
	if (*timeout_ns >= 0) {
		if (now - *since >= (uint64_t)*timeout_ns)
			return -ETIMEDOUT;
		left = (int)((*timeout_ns - (int64_t)(now - *since)) / 1000000 +
			     1);
	}
	r = poll(&p, 1, left);
	if (r < 0)
		return errno == EINTR ? 0 : -errno;
	return 0;
}

/* Without nowait, a reply is given up only when no byte of it went out
 * for --send-timeout, however slow the link (wait_writable()). */
static int sock_sendv(void *opaque, struct iovec *iov, int n, bool nowait)
{
	int fd = (int)(intptr_t)opaque, first = 0;
	int64_t timeout_ns = -2; /* not read yet */
	struct msghdr m = { 0 };
	uint64_t since = 0;
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
		r = sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (nowait)
				return -EAGAIN;
			r = wait_writable(fd, &timeout_ns, &since);
			if (r < 0)
				return (int)r;
			continue;
		}
		if (r < 0)
			return -errno;
		since = 0; /* it took bytes: the time runs from the next wait */
		while (first < n && (size_t)r >= iov[first].iov_len) {
			r -= (ssize_t)iov[first].iov_len;
			iov[first].iov_len = 0;
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

static void sock_shutdown(void *opaque)
{
	shutdown((int)(intptr_t)opaque, SHUT_RDWR);
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
	c->spin = true;
	c->lean = false;
	c->handshake_deadline = 0;
	c->stall_ns = 0;
	c->inflight = 0;
	c->elems = 0;
	work_list_init(&c->backlog);
	c->sender_quit = false;
	c->has_sender = false;
	atomic_init(&c->send_failed, false);
	c->next = NULL;
	c->ipos = c->ilen = c->olen = 0;
	c->niov = 0;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->idle, NULL);
	pthread_cond_init(&c->backlog_cond, NULL);
	pthread_mutex_init(&c->send_lock, NULL);
}

void nbd_conn_destroy(struct nbd_conn *c)
{
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->idle);
	pthread_cond_destroy(&c->backlog_cond);
	pthread_mutex_destroy(&c->send_lock);
}

/*
 * The first failure to send ends the connection.  A reply cut short leaves
 * the client unable to parse what follows ("the server MUST immediately
 * initiate a hard disconnect"), and a reply lost leaves it waiting: so the
 * socket is shut down both ways, which also ends the read(2) the
 * connection thread is blocked in, and it leaves instead of taking
 * requests it could not answer.  Called with send_lock held.
 */
static void conn_fail(struct nbd_conn *c, int err)
{
	struct nbd_server *srv = c->srv;

	if (atomic_exchange(&c->send_failed, true))
		return;
	if (err == -ETIMEDOUT)
		srv->log("connection %u: a reply made no progress for %u s "
			 "(--send-timeout): disconnected\n",
			 c->id, srv->send_timeout);
	else if (err != -EPIPE && err != -ECONNRESET)
		srv->log("connection %u: send: %s: disconnected\n", c->id,
			 strerror(-err));
	if (c->io.shutdown)
		c->io.shutdown(c->io.opaque);
	/* A connection thread waiting for room gives up. */
	pthread_mutex_lock(&c->lock);
	pthread_cond_broadcast(&c->idle);
	pthread_mutex_unlock(&c->lock);
}

static struct nbd_work *backlog_pop(struct nbd_conn *c)
{
	struct nbd_work *w;

	pthread_mutex_lock(&c->lock);
	w = work_list_pop(&c->backlog);
	pthread_mutex_unlock(&c->lock);
	return w;
}

/* Called with c->lock held. */
static void backlog_add(struct nbd_conn *c, struct nbd_work *w, bool first)
{
	if (first)
		work_list_push_front(&c->backlog, w);
	else
		work_list_push(&c->backlog, w);
	pthread_cond_signal(&c->backlog_cond);
}

/* Send the backlog, in order, waiting as the send timeout allows; with
 * send_lock held, so that no other bytes go between. */
static void drain_backlog(struct nbd_conn *c)
{
	struct nbd_work *w;
	int r;

	while ((w = backlog_pop(c))) {
		if (!atomic_load(&c->send_failed)) {
			r = c->io.sendv(c->io.opaque, w->riov, w->nriov, false);
			if (r < 0)
				conn_fail(c, r);
		}
		nbd_work_done(w);
	}
}

int nbd_conn_send(struct nbd_conn *c, struct iovec *iov, int n)
{
	int r = -EPIPE;

	pthread_mutex_lock(&c->send_lock);
	/* A reply a worker left half sent goes on first: the bytes of two
	 * replies must never mix. */
	drain_backlog(c);
	if (!atomic_load(&c->send_failed)) {
		r = c->io.sendv(c->io.opaque, iov, n, false);
		if (r < 0)
			conn_fail(c, r);
	}
	pthread_mutex_unlock(&c->send_lock);
	return r;
}

/*
 * A worker must never wait on a client: with every worker blocked on a
 * client that stopped reading, every connection would stall.  So it sends
 * its reply only if send_lock is free, nothing is queued before it, and
 * the socket takes the reply at once; what is left (all of it, or the
 * rest of a reply half sent, which must then go out before anything else)
 * is queued for the connection's sender thread.
 */
void nbd_conn_reply(struct nbd_conn *c, struct nbd_work *w)
{
	bool queued = false;
	int r;

	if (!c->has_sender) {
		/* Served inline, on the connection thread itself. */
		nbd_conn_send(c, w->riov, w->nriov);
		nbd_work_done(w);
		return;
	}
	if (atomic_load(&c->send_failed)) {
		nbd_work_done(w);
		return;
	}
	if (pthread_mutex_trylock(&c->send_lock)) {
		pthread_mutex_lock(&c->lock);
		backlog_add(c, w, false);
		pthread_mutex_unlock(&c->lock);
		return;
	}
	pthread_mutex_lock(&c->lock);
	if (c->backlog.head) {
		backlog_add(c, w, false);
		queued = true;
	}
	pthread_mutex_unlock(&c->lock);
	if (!queued) {
		r = c->io.sendv(c->io.opaque, w->riov, w->nriov, true);
		if (r == -EAGAIN) {
			pthread_mutex_lock(&c->lock);
			backlog_add(c, w, true);
			pthread_mutex_unlock(&c->lock);
			queued = true;
		} else if (r < 0) {
			conn_fail(c, r);
		}
	}
	pthread_mutex_unlock(&c->send_lock);
	if (!queued)
		nbd_work_done(w);
}

/* At a thread's start, before its IO path runs: NBD_STACK_USED of its
 * stack faulted in, and locked where mlockall() left MCL_FUTURE out, the
 * thread's stack being a mapping made after it
 * (ioflusher_memlock_prefault_stack(3)). */
void nbd_stack_reserve(struct nbd_server *srv)
{
	static atomic_bool said;
	int r = ioflusher_memlock_prefault_stack(NBD_STACK_USED);

	/* Once, not for every connection. */
	if (r != 0 && !atomic_exchange(&said, true))
		srv->log("thread stacks: %s\n",
			 r < 0 ? strerror(-r) :
				 "pre-faulted, not locked (RLIMIT_MEMLOCK): "
				 "raise it or keep CAP_IPC_LOCK");
}

static void *sender_main(void *arg)
{
	struct nbd_conn *c = arg;

	nbd_stack_reserve(c->srv);

	pthread_mutex_lock(&c->lock);
	for (;;) {
		while (!c->backlog.head && !c->sender_quit)
			pthread_cond_wait(&c->backlog_cond, &c->lock);
		if (!c->backlog.head)
			break;
		pthread_mutex_unlock(&c->lock);
		pthread_mutex_lock(&c->send_lock);
		drain_backlog(c);
		pthread_mutex_unlock(&c->send_lock);
		pthread_mutex_lock(&c->lock);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

int nbd_conn_start_sender(struct nbd_conn *c)
{
	char name[32];
	int r;

	snprintf(name, sizeof(name), "nbd-send-%u", c->id);
	name[15] = 0;
	/* sendmsg and the log: a shallow stack, a small locked stack. */
	r = nbd_thread_start(c->srv, &c->sender, NBD_SMALL_STACK, false, name,
			     sender_main, c);
	if (r == 0)
		c->has_sender = true;
	return r;
}

/* Once the connection is idle: nothing is in the backlog any more. */
void nbd_conn_stop_sender(struct nbd_conn *c)
{
	if (!c->has_sender)
		return;
	pthread_mutex_lock(&c->lock);
	c->sender_quit = true;
	pthread_cond_signal(&c->backlog_cond);
	pthread_mutex_unlock(&c->lock);
	pthread_join(c->sender, NULL);
	c->has_sender = false;
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

/*
 * A read of the handshake: each waits no longer than what is left of the
 * --handshake-timeout, so that a client that sends nothing, or a byte now
 * and then, gives its connection back; until then it holds one of
 * --max-connections, and enough of them would lock every client out.
 */
static ssize_t handshake_recv(struct nbd_conn *c, void *buf, size_t len)
{
	uint64_t now = nbd_now_ns(), left;
	struct timeval tv;
	ssize_t got;

	if (now >= c->handshake_deadline)
		return -ETIMEDOUT;
	left = c->handshake_deadline - now;
	tv.tv_sec = (time_t)(left / 1000000000u);
	tv.tv_usec = (suseconds_t)(left % 1000000000u / 1000u);
	if (!tv.tv_sec && !tv.tv_usec)
		tv.tv_usec = 1;
	if (setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
		return -errno;
	got = c->io.recv(c->io.opaque, buf, len, false);
	return got == -EAGAIN ? -ETIMEDOUT : got;
}

/* A read that gives up after c->stall_ns without a byte: -ETIME. */
static ssize_t stall_recv(struct nbd_conn *c, void *buf, size_t len)
{
	struct pollfd p = { .fd = c->fd, .events = POLLIN };
	int ms = (int)(c->stall_ns / 1000000u), r;
	ssize_t got;

	for (;;) {
		got = c->io.recv(c->io.opaque, buf, len, true);
		if (got != -EAGAIN)
			return got;
		r = poll(&p, 1, ms);
		if (r == 0)
			return -ETIME;
		if (r < 0 && errno != EINTR)
			return -errno;
	}
}

/*
 * Wait for the client's next bytes.  A thread that sleeps in recv(2) is
 * woken, when the request comes, through the scheduler of another CPU:
 * an inter-processor interrupt, and on a virtual machine the exit of an
 * idle vCPU, tens of microseconds that are most of a request's round
 * trip at queue depth 1.  With --poll, spin up to poll_us on a recv that
 * does not wait before sleeping.  Adaptive, as the kernel's halt polling
 * is: a spin that finds nothing stops the spinning, and a sleep that ends
 * within poll_us starts it again, so a client idle for long costs one
 * spin, not one per request.  And only while the server has no more
 * connections than half its CPUs (one at least): with more, the clients
 * keep the CPUs busy and a spin takes the time one of them needs
 * (nbdcopy's 4 connections on 2 CPUs: a third more CPU per IO and less
 * throughput with spinning).
 */
static ssize_t conn_recv(struct nbd_conn *c, void *buf, size_t len)
{
	uint64_t poll_ns = (uint64_t)c->srv->poll_us * 1000, start;
	ssize_t got;

	if (c->handshake_deadline)
		return handshake_recv(c, buf, len);
	if (c->stall_ns)
		return stall_recv(c, buf, len);
	if (!poll_ns)
		return c->io.recv(c->io.opaque, buf, len, false);
	start = nbd_now_ns();
	if (c->spin &&
	    atomic_load_explicit(&c->srv->serving, memory_order_relaxed) <=
		    c->srv->max_spinners) {
		do {
			got = c->io.recv(c->io.opaque, buf, len, true);
		} while (got == -EAGAIN && nbd_now_ns() - start < poll_ns);
		if (got != -EAGAIN)
			return got;
		c->spin = false;
	}
	got = c->io.recv(c->io.opaque, buf, len, false);
	if (!c->spin && nbd_now_ns() - start < poll_ns)
		c->spin = true;
	return got;
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
		/* What is missing, and at least NBD_RECV_MAX: pipelined
		 * requests with it, but not much of a large write's payload,
		 * which would be copied again instead of read in place; none
		 * of it while large requests come (lean). */
		size_t want = n - (c->ilen - c->ipos);

		if (want < NBD_RECV_MAX && !c->lean)
			want = NBD_RECV_MAX;
		if (want > NBD_IBUF_SIZE - c->ilen)
			want = NBD_IBUF_SIZE - c->ilen;
		/* About to wait for the client: what it waits for goes first. */
		r = nbd_conn_flush(c);
		if (r < 0)
			return r;
		got = conn_recv(c, c->ibuf + c->ilen, want);
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
	if (n <= NBD_INLINE_PAYLOAD) {
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
		got = conn_recv(c, p, n);
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

static bool conn_full(const struct nbd_conn *c, unsigned int nelem)
{
	return c->inflight >= c->srv->conn_max_inflight ||
	       c->elems + nelem > c->srv->conn_max_elems;
}

/*
 * One connection holds at most half of the request and data pools, so
 * that a client that stops reading its replies leaves the other half to
 * the others.  The connection thread then waits for its own replies here,
 * never in the pools behind other connections; those replies go out
 * without it (workers, the sender thread), so the wait ends when the
 * client reads, or when --send-timeout gives up on it.
 */
int nbd_conn_reserve(struct nbd_conn *c, unsigned int nelem)
{
	int r;

	pthread_mutex_lock(&c->lock);
	if (conn_full(c, nelem)) {
		pthread_mutex_unlock(&c->lock);
		/* Before waiting: what the client may be waiting for. */
		r = nbd_conn_flush(c);
		if (r < 0)
			return r;
		pthread_mutex_lock(&c->lock);
		while (conn_full(c, nelem) && !atomic_load(&c->send_failed))
			pthread_cond_wait(&c->idle, &c->lock);
	}
	r = atomic_load(&c->send_failed) ? -EPIPE : 0;
	if (r == 0) {
		c->inflight++;
		c->elems += nelem;
	}
	pthread_mutex_unlock(&c->lock);
	return r;
}

void nbd_conn_release(struct nbd_conn *c, unsigned int nelem)
{
	pthread_mutex_lock(&c->lock);
	c->inflight--;
	c->elems -= nelem;
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

int nbd_thread_start(struct nbd_server *srv, pthread_t *t, size_t stack,
		     bool detached, const char *name, void *(*fn)(void *),
		     void *arg)
{
	pthread_attr_t attr;
	int r;

	r = -pthread_attr_init(&attr);
	if (r < 0)
		return r;
	r = -pthread_attr_setstacksize(&attr, stack);
	if (r == 0 && detached)
		r = -pthread_attr_setdetachstate(&attr,
						 PTHREAD_CREATE_DETACHED);
	if (r < 0) {
		pthread_attr_destroy(&attr);
		return r;
	}
	r = ioflusher_thread_create(t, &attr, fn, arg);
	/* Best effort: where the flag cannot be had the thread runs
	 * without it, and the report and audit said so at start-up. */
	if (r < 0 && srv->best_effort)
		r = -pthread_create(t, &attr, fn, arg);
	pthread_attr_destroy(&attr);
	/* Named by the creator, so that an audit right after sees it; a
	 * detached thread (name NULL) may be gone already: it names itself. */
	if (r == 0 && name)
		pthread_setname_np(*t, name);
	return r;
}

void nbd_work_queue(struct nbd_server *srv, struct nbd_work *w)
{
	pthread_mutex_lock(&srv->lock);
	work_list_push(&srv->queue, w);
	pthread_cond_signal(&srv->cond);
	pthread_mutex_unlock(&srv->lock);
}

static void *worker_main(void *arg)
{
	struct nbd_worker *wk = arg;
	struct nbd_server *srv = wk->srv;
	struct nbd_work *w;

	nbd_stack_reserve(srv);
	for (;;) {
		pthread_mutex_lock(&srv->lock);
		while (!srv->queue.head && !srv->quit)
			pthread_cond_wait(&srv->cond, &srv->lock);
		w = work_list_pop(&srv->queue);
		pthread_mutex_unlock(&srv->lock);
		/* Quitting drains the queue first: every request accepted
		 * gets its reply. */
		if (!w)
			return NULL;
		nbd_work_run(w, wk->fd);
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
	nbd_stack_reserve(srv);
	if (c->handshake) {
		static const struct timeval none;

		if (srv->handshake_timeout)
			c->handshake_deadline =
				nbd_now_ns() +
				(uint64_t)srv->handshake_timeout * 1000000000u;
		r = nbd_handshake(c);
		if (c->handshake_deadline) {
			c->handshake_deadline = 0;
			if (r == 1 && setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO,
						 &none, sizeof(none)) < 0)
				r = -errno;
		}
	}
	/* Workers' replies that do not fit in the socket at once are sent
	 * by a thread of the connection's own (nbd_conn_reply). */
	if (r == 1 && srv->nthreads && nbd_conn_start_sender(c) < 0) {
		srv->log("connection %u: no sender thread: disconnected\n",
			 c->id);
		r = 0;
	}
	if (r == 1) {
		atomic_fetch_add(&srv->serving, 1);
		r = nbd_serve(c);
		atomic_fetch_sub(&srv->serving, 1);
	}
	nbd_conn_stop_sender(c);
	if (r < 0 && r != -ECONNRESET && r != -EPIPE && r != -ESHUTDOWN &&
	    !atomic_load(&c->send_failed))
		srv->log("connection %u: %s\n", c->id,
			 r == -EPROTO	 ? "protocol violation, disconnected" :
			 r == -ETIMEDOUT ? "handshake not done within "
					   "--handshake-timeout: disconnected" :
			 r == -ETIME  ? "a write's data stopped arriving for "
					"--send-timeout, its buffers held: "
					"disconnected" :
			 r == -ENOENT ? "NBD_OPT_EXPORT_NAME asked for another "
					"export: disconnected, as that option "
					"has no error reply" :
			 r == -ENAMETOOLONG ? "NBD_OPT_EXPORT_NAME with a name "
					      "longer than any export's: "
					      "disconnected" :
			 r == -EMLINK	    ? "more than 1024 options in the "
					      "handshake, a denial of service: "
					      "disconnected" :
					      strerror(-r));

	/* Out of the list before the descriptor is closed: the number may
	 * be reused at once by a new connection, and nbd_server_shutdown()
	 * must not shut that one down through this one's entry. */
	pthread_mutex_lock(&srv->lock);
	for (struct nbd_conn **pp = &srv->conns; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	pthread_mutex_unlock(&srv->lock);
	close(c->fd);
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
	struct nbd_io io = { sock_recv, sock_sendv, sock_shutdown,
			     (void *)(intptr_t)fd };
	struct timeval tv = { .tv_sec = srv->send_timeout };
	struct sockaddr_storage sa;
	socklen_t salen = sizeof(sa);
	int sndbuf = NBD_UNIX_SNDBUF;
	struct nbd_conn *c;
	pthread_t t;
	int r;

	/* A client that takes none of a reply for --send-timeout seconds is
	 * disconnected.  Not the kernel: it reads as long as it runs, and
	 * cutting it off would fail the IO of a mounted filesystem. */
	if (handshake && srv->send_timeout &&
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
		return -errno;
	/* Unix sockets only: on TCP a set SO_SNDBUF turns off the
	 * kernel's tuning of the buffer.  Best effort: the default works,
	 * only slower. */
	if (getsockname(fd, (struct sockaddr *)&sa, &salen) == 0 &&
	    sa.ss_family == AF_UNIX)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	c = ioflusher_mempool_alloc(srv->conn_pool, IOFLUSHER_MEMPOOL_NOWAIT);
	if (!c)
		return -EMFILE;
	nbd_conn_init(c, srv, &io);
	c->fd = fd;
	c->handshake = handshake;

	pthread_mutex_lock(&srv->lock);
	if (atomic_load(&srv->stopping)) {
		pthread_mutex_unlock(&srv->lock);
		r = -ESHUTDOWN;
		goto fail;
	}
	c->id = ++srv->next_id;
	c->next = srv->conns;
	srv->conns = c;
	srv->nconns++;
	pthread_mutex_unlock(&srv->lock);

	/* The IO path is shallow; a small stack is a small locked stack. */
	r = nbd_thread_start(srv, &t, NBD_STACK, true, NULL, conn_main, c);
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

/*
 * "On a server shutdown, the server SHOULD wait for inflight requests to be
 * serviced prior to initiating a hard disconnect ... The error value
 * issued in respect of ... any subsequently received requests SHOULD be
 * NBD_ESHUTDOWN", and options get NBD_REP_ERR_SHUTDOWN: a client told so
 * MUST disconnect.  So the stop only sets a flag that the connection
 * threads read with each request and option (handle(), option()); requests
 * already taken are served and answered.  Sockets are left as they are:
 * the SHUT_RD of old dropped requests in transit, and made the client's
 * next send fail instead of telling it why.  The kernel's connection is
 * served as before, until the NBD_CMD_DISC that NBD_DISCONNECT makes it
 * send after its queued requests: refusing those would fail them with EIO
 * under a mounted filesystem.  A client that sends nothing more is cut
 * off by nbd_server_shutdown() after main's grace period.
 */
void nbd_server_stop(struct nbd_server *srv)
{
	pthread_mutex_lock(&srv->lock);
	atomic_store(&srv->stopping, true);
	pthread_mutex_unlock(&srv->lock);
}

/* Also breaks a send blocked on a client that stopped reading. */
void nbd_server_shutdown(struct nbd_server *srv)
{
	pthread_mutex_lock(&srv->lock);
	atomic_store(&srv->stopping, true);
	for (struct nbd_conn *c = srv->conns; c; c = c->next)
		shutdown(c->fd, SHUT_RDWR);
	pthread_mutex_unlock(&srv->lock);
}

unsigned int nbd_server_wait_idle(struct nbd_server *srv, int timeout_ms)
{
	struct timespec ts;
	unsigned int left;

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
	left = srv->nconns;
	pthread_mutex_unlock(&srv->lock);
	return left;
}

/* ---------------------------------------------------------------- server */

/* The CPUs this process may run on: its affinity, which a cpuset or
 * taskset narrows, not the machine's count. */
static unsigned int usable_cpus(void)
{
	cpu_set_t set;
	long n;

	if (sched_getaffinity(0, sizeof(set), &set) == 0)
		return (unsigned int)CPU_COUNT(&set);
	n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (unsigned int)n : 1;
}

int nbd_server_init(struct nbd_server *srv)
{
	unsigned int flags = srv->best_effort ? IOFLUSHER_MEMPOOL_UNLOCKED_OK :
						0;
	unsigned int data_elems;
	int r;

	pthread_mutex_init(&srv->lock, NULL);
	pthread_cond_init(&srv->cond, NULL);
	pthread_cond_init(&srv->conns_cond, NULL);
	work_list_init(&srv->queue);
	atomic_init(&srv->serving, 0);
	srv->max_spinners = usable_cpus() / 2;
	if (srv->max_spinners < 1)
		srv->max_spinners = 1;
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
	 * the queue depth's requests of up to NBD_DATA_ELEM bytes, plus two
	 * requests of the maximum size.  A connection may hold half of each
	 * pool: half the data is at least one request of the maximum size,
	 * so a connection always can make one, and so can another while the
	 * first holds its half. */
	data_elems = srv->queue_depth + 2 * NBD_DATA_ELEMS_MAX;
	srv->conn_max_inflight = (srv->queue_depth + 1) / 2;
	srv->conn_max_elems = data_elems / 2;
	r = ioflusher_mempool_new(srv->ctx, srv->queue_depth,
				  sizeof(struct nbd_work), 64, 0, flags,
				  &srv->work_pool);
	if (r < 0)
		return r;
	return ioflusher_mempool_new(srv->ctx, data_elems, NBD_DATA_ELEM, 4096,
				     0, flags, &srv->data_pool);
}

/* Before the capabilities are dropped: each worker's descriptor of a file
 * export is opened again through /proc/self/fd, a new open(2) with its
 * permission checks, which what was dropped may have passed. */
int nbd_server_open_workers(struct nbd_server *srv)
{
	if (!srv->nthreads)
		return 0;
	/* Allocated before the IO starts, and never again. */
	srv->workers = calloc(srv->nthreads, sizeof(*srv->workers));
	if (!srv->workers)
		return -ENOMEM;
	for (unsigned int i = 0; i < srv->nthreads; i++) {
		struct nbd_worker *wk = &srv->workers[i];

		wk->srv = srv;
		wk->fd = -1;
	}
	if (srv->exp->kind != NBD_BACKEND_FILE)
		return 0;
	for (unsigned int i = 0; i < srv->nthreads; i++) {
		struct nbd_worker *wk = &srv->workers[i];

		wk->fd = nbd_export_reopen(srv->exp);
		if (wk->fd < 0) {
			int r = wk->fd;

			wk->fd = -1;
			return r;
		}
	}
	return 0;
}

int nbd_server_start_workers(struct nbd_server *srv)
{
	int r = 0;

	if (!srv->workers)
		return 0;
	for (unsigned int i = 0; r == 0 && i < srv->nthreads; i++) {
		struct nbd_worker *wk = &srv->workers[i];
		char name[32];

		snprintf(name, sizeof(name), "nbd-worker-%u", i);
		name[15] = 0; /* the kernel's TASK_COMM_LEN */
		r = nbd_thread_start(srv, &wk->thread, NBD_STACK, false, name,
				     worker_main, wk);
		if (r == 0)
			srv->nworkers++;
	}
	return r;
}

void nbd_server_fini(struct nbd_server *srv)
{
	pthread_mutex_lock(&srv->lock);
	atomic_store(&srv->stopping, true);
	srv->quit = true;
	pthread_cond_broadcast(&srv->cond);
	pthread_mutex_unlock(&srv->lock);
	for (unsigned int i = 0; i < srv->nworkers; i++)
		pthread_join(srv->workers[i].thread, NULL);
	/* Opened, started or not. */
	for (unsigned int i = 0; srv->workers && i < srv->nthreads; i++)
		if (srv->workers[i].fd >= 0)
			close(srv->workers[i].fd);
	free(srv->workers);
	srv->workers = NULL;
	srv->nworkers = 0;
	ioflusher_mempool_free(srv->data_pool);
	ioflusher_mempool_free(srv->work_pool);
	ioflusher_mempool_free(srv->conn_pool);
	srv->data_pool = srv->work_pool = srv->conn_pool = NULL;
}
