/* SPDX-License-Identifier: MIT */
/*
 * ioflusher-nbd: what the files of the daemon share.
 *
 *   proto.c    the wire format and the handshake (option haggling)
 *   request.c  the transmission phase: parse, validate, serve, reply
 *   backend.c  the export's storage: sparse memory, or a file/block device
 *   server.c   buffers, worker threads, connections, kernel mode
 *   main.c     the command line and the start-up order of libioflusher
 *
 * The protocol code never touches a socket: a connection reads and writes
 * through struct nbd_io, so that the fuzzer (fuzz-nbd.c) feeds it bytes.
 */
#ifndef IOFLUSHER_NBD_H
#define IOFLUSHER_NBD_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <ioflusher.h>

/* ---------------------------------------------------------------- wire */
/* Values from the NBD protocol (doc/proto.md of NetworkBlockDevice/nbd). */
#define NBD_MAGIC 0x4e42444d41474943ull /* "NBDMAGIC" */
#define NBD_OPT_MAGIC 0x49484156454f5054ull /* "IHAVEOPT" */
#define NBD_REP_MAGIC 0x0003e889045565a9ull /* option replies */
#define NBD_REQUEST_MAGIC 0x25609513u
#define NBD_SIMPLE_REPLY_MAGIC 0x67446698u
#define NBD_STRUCTURED_REPLY_MAGIC 0x668e33efu

enum {
	NBD_FLAG_FIXED_NEWSTYLE = 1u << 0, /* handshake flags */
	NBD_FLAG_NO_ZEROES = 1u << 1,
};
enum {
	NBD_FLAG_C_FIXED_NEWSTYLE = 1u << 0, /* client flags */
	NBD_FLAG_C_NO_ZEROES = 1u << 1,
};
enum {
	NBD_FLAG_HAS_FLAGS = 1u << 0, /* transmission flags */
	NBD_FLAG_READ_ONLY = 1u << 1,
	NBD_FLAG_SEND_FLUSH = 1u << 2,
	NBD_FLAG_SEND_FUA = 1u << 3,
	NBD_FLAG_ROTATIONAL = 1u << 4,
	NBD_FLAG_SEND_TRIM = 1u << 5,
	NBD_FLAG_SEND_WRITE_ZEROES = 1u << 6,
	NBD_FLAG_SEND_DF = 1u << 7,
	NBD_FLAG_CAN_MULTI_CONN = 1u << 8,
	NBD_FLAG_SEND_FAST_ZERO = 1u << 11,
};
enum {
	NBD_OPT_EXPORT_NAME = 1,
	NBD_OPT_ABORT = 2,
	NBD_OPT_LIST = 3,
	NBD_OPT_STARTTLS = 5,
	NBD_OPT_INFO = 6,
	NBD_OPT_GO = 7,
	NBD_OPT_STRUCTURED_REPLY = 8,
	NBD_OPT_LIST_META_CONTEXT = 9,
	NBD_OPT_SET_META_CONTEXT = 10,
};
#define NBD_REP_ERR(n) (0x80000000u | (n))
enum {
	NBD_REP_ACK = 1,
	NBD_REP_SERVER = 2,
	NBD_REP_INFO = 3,
	NBD_REP_ERR_UNSUP = NBD_REP_ERR(1),
	NBD_REP_ERR_POLICY = NBD_REP_ERR(2),
	NBD_REP_ERR_INVALID = NBD_REP_ERR(3),
	NBD_REP_ERR_UNKNOWN = NBD_REP_ERR(6),
	NBD_REP_ERR_SHUTDOWN = NBD_REP_ERR(7),
	NBD_REP_ERR_TOO_BIG = NBD_REP_ERR(9),
};
enum {
	NBD_INFO_EXPORT = 0,
	NBD_INFO_NAME = 1,
	NBD_INFO_DESCRIPTION = 2,
	NBD_INFO_BLOCK_SIZE = 3,
};
enum {
	NBD_CMD_READ = 0,
	NBD_CMD_WRITE = 1,
	NBD_CMD_DISC = 2,
	NBD_CMD_FLUSH = 3,
	NBD_CMD_TRIM = 4,
	NBD_CMD_WRITE_ZEROES = 6,
};
enum {
	NBD_CMD_FLAG_FUA = 1u << 0,
	NBD_CMD_FLAG_NO_HOLE = 1u << 1,
	NBD_CMD_FLAG_DF = 1u << 2,
	NBD_CMD_FLAG_FAST_ZERO = 1u << 4,
};
enum {
	NBD_REPLY_FLAG_DONE = 1u << 0,
};
enum {
	NBD_REPLY_TYPE_NONE = 0,
	NBD_REPLY_TYPE_OFFSET_DATA = 1,
	NBD_REPLY_TYPE_OFFSET_HOLE = 2,
	NBD_REPLY_TYPE_ERROR = 0x8001,
};
/* The only error values the protocol allows on the wire. */
enum {
	NBD_EPERM = 1,
	NBD_EIO = 5,
	NBD_ENOMEM = 12,
	NBD_EINVAL = 22,
	NBD_ENOSPC = 28,
	NBD_EOVERFLOW = 75,
	NBD_ENOTSUP = 95,
	NBD_ESHUTDOWN = 108,
};

#define NBD_REQUEST_SIZE 28
#define NBD_SIMPLE_REPLY_SIZE 16
#define NBD_CHUNK_HEADER_SIZE 20
#define NBD_NAME_MAX 4096 /* strings: "MUST be no longer than 4096 bytes" */

/* This example's version: the libioflusher release it comes with. */
#define NBD_VERSION_STRING "0.1.0"

/* Limits of this server. */
#define NBD_MAX_PAYLOAD (32u << 20) /* advertised maximum block size */
#define NBD_PREFERRED_BLOCK 4096u
#define NBD_OPT_DATA_MAX (NBD_NAME_MAX + 4 + 2 + 2 * 64)
#define NBD_MAX_OPTIONS 1024 /* per handshake, then a hard disconnect */
#define NBD_READ_CHUNKS_MAX 16 /* content chunks in one structured read */

struct nbd_request {
	uint32_t magic;
	uint16_t flags;
	uint16_t type;
	uint64_t cookie;
	uint64_t offset;
	uint32_t len;
};

static inline uint16_t get_be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t get_be64(const uint8_t *p)
{
	return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

static inline void put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void put_be32(uint8_t *p, uint32_t v)
{
	put_be16(p, (uint16_t)(v >> 16));
	put_be16(p + 2, (uint16_t)v);
}

static inline void put_be64(uint8_t *p, uint64_t v)
{
	put_be32(p, (uint32_t)(v >> 32));
	put_be32(p + 4, (uint32_t)v);
}

/* ---------------------------------------------------------------- export */
enum nbd_backend_kind { NBD_BACKEND_MEMORY, NBD_BACKEND_FILE };

struct nbd_export {
	const char *name;
	uint64_t size;
	bool readonly;
	enum nbd_backend_kind kind;
	uint16_t tflags; /* transmission flags, without NBD_FLAG_SEND_DF */

	/* memory: one sparse anonymous mapping and a bitmap of the grains
	 * that may hold data; a clear bit reads as zeroes. */
	uint8_t *map;
	size_t map_len;
	_Atomic uint64_t *bitmap;
	size_t grain; /* bytes per bit: 4 KiB, or the page if larger */

	/* file or block device; a device's queue/write_zeroes_max_bytes */
	const char *path;
	int fd;
	bool blockdev;
	int wzero_fd;
	atomic_bool no_punch, no_zero_range;
	/* The errno of the first failure to make writes durable (fdatasync),
	 * for ever: Linux reports a writeback error to
	 * each open file once, and what it lost stays lost.  closing: the
	 * daemon is exiting, nothing may change the export any more. */
	atomic_int wb_err;
	atomic_bool closing;
	void (*log)(const char *fmt, ...) IOFLUSHER_PRINTF(1, 2);
};

int nbd_export_memory(struct nbd_export *exp, uint64_t size);
int nbd_export_file(struct nbd_export *exp, const char *path);
/* Another open file description of the file export, for one worker. */
int nbd_export_reopen(const struct nbd_export *exp);
/* Refuse every change from now on and fdatasync: 0, or the -errno of a
 * writeback error of this run (however it was reported). */
int nbd_export_stop(struct nbd_export *exp);
void nbd_export_close(struct nbd_export *exp);
/* Backend operations: 0, or a negative errno of the NBD set.  fd is the
 * calling worker's own description of a file export (nbd_export_reopen),
 * ignored by the memory backend. */
int nbd_backend_preadv(struct nbd_export *exp, int fd, const struct iovec *iov,
		       int n, uint64_t off, size_t len);
int nbd_backend_pwritev(struct nbd_export *exp, int fd, const struct iovec *iov,
			int n, uint64_t off, size_t len, bool fua);
int nbd_backend_flush(struct nbd_export *exp, int fd);
int nbd_backend_trim(struct nbd_export *exp, int fd, uint64_t off, uint64_t len,
		     bool fua);
int nbd_backend_zero(struct nbd_export *exp, int fd, uint64_t off, uint64_t len,
		     uint16_t flags);
/* Memory: mark [off, off+len) written, once its bytes are in place (a
 * clear bit means zeroes); how long the run of grains from off with the
 * same state is (bounded by len), and whether it is a hole. */
void nbd_memory_mark(struct nbd_export *exp, uint64_t off, uint64_t len);
uint64_t nbd_memory_extent(const struct nbd_export *exp, uint64_t off,
			   uint64_t len, bool *hole);
int nbd_errno(int err);

/* ---------------------------------------------------------------- server */
/*
 * Buffers.  Every buffer of the IO path comes from a libioflusher mempool
 * made at start-up (see ioflusher_mempool_new(3)): the connection (its
 * input and output buffers), the request of a worker, and the data of a
 * file request in elements of NBD_DATA_ELEM bytes.
 *
 * A client can stop reading its replies.  So that it stalls nobody else:
 * no worker ever waits on a client's socket (a reply that does not fit
 * goes to the connection's sender thread), one connection holds at most
 * half of each pool (nbd_conn_reserve), and a reply that makes no progress
 * for --send-timeout seconds ends its connection.
 */
#define NBD_IBUF_SIZE (256u << 10)
#define NBD_OBUF_SIZE (16u << 10)
#define NBD_OIOV_MAX 256
/* Writes up to this go through ibuf, which one recv(2) fills with the
 * request, its payload and what follows; larger ones go straight to
 * their place, where a copy would cost more than the recv(2) it saves. */
#define NBD_INLINE_PAYLOAD (32u << 10)
/* What one recv(2) into ibuf asks for, unless more is needed (or, after
 * a large request, less: struct nbd_conn's lean). */
#define NBD_RECV_MAX (NBD_INLINE_PAYLOAD + NBD_REQUEST_SIZE)
/*
 * Send buffer asked of a unix socket: room for four 256 KiB replies.  The
 * default (net.core.wmem_default, 208 KiB) holds less than one, so the
 * sender slept in the middle of every large reply until the client had
 * read some; the kernel caps what is asked at net.core.wmem_max.
 */
#define NBD_UNIX_SNDBUF (1 << 20)
/* Thread stacks: the IO path is shallow, and a small stack is a small
 * locked one.  NBD_STACK for the connection and worker threads,
 * NBD_SMALL_STACK for those that only send or wait in the kernel; each
 * thread pre-faults NBD_STACK_USED of it at its start
 * (nbd_stack_reserve()), which must leave 64 KiB below it. */
#define NBD_STACK (256 << 10)
#define NBD_SMALL_STACK (128 << 10)
#define NBD_STACK_USED (32 << 10)
_Static_assert(NBD_STACK_USED + (64 << 10) < NBD_SMALL_STACK,
	       "NBD_STACK_USED does not fit the smallest stack");
#define NBD_DATA_ELEM (256u << 10)
#define NBD_DATA_ELEMS_MAX (NBD_MAX_PAYLOAD / NBD_DATA_ELEM)

struct nbd_server;

/*
 * How a connection moves bytes: a socket, or the fuzzer's buffer.  recv
 * returns like read(2) but a negative errno.  sendv sends all of iov and
 * returns 0, advancing iov past what went out (entries sent become empty)
 * so that a send can be resumed: with nowait, -EAGAIN when that would
 * wait; otherwise -ETIMEDOUT when nothing went out for the send timeout,
 * or another -errno.  shutdown is the hard disconnect: it ends both
 * directions, and the read the connection thread may be blocked in.
 */
struct nbd_io {
	/* nowait: -EAGAIN rather than wait when nothing has come. */
	ssize_t (*recv)(void *opaque, void *buf, size_t len, bool nowait);
	int (*sendv)(void *opaque, struct iovec *iov, int n, bool nowait);
	void (*shutdown)(void *opaque);
	void *opaque;
};

/* A FIFO of requests linked through their next: the server's work queue,
 * a connection's backlog.  The functions are in server.c. */
struct nbd_work_list {
	struct nbd_work *head, **tail;
};

struct nbd_conn {
	struct nbd_server *srv;
	struct nbd_io io;
	int fd;
	unsigned int id;
	bool handshake; /* false in kernel mode: the kernel skips it */
	bool structured;
	bool no_zeroes;
	bool spin; /* the last wait for the client was short: poll first */
	/* The last request was a read or write larger than
	 * NBD_INLINE_PAYLOAD: the next is likely large too, so the next
	 * request is read without NBD_RECV_MAX, whose bytes past it would be
	 * a large write's payload, copied again out of ibuf.  Reads count:
	 * at 64k randrw, a write follows a read half the time. */
	bool lean;
	/* CLOCK_MONOTONIC ns by which the handshake must be done; 0: none. */
	uint64_t handshake_deadline;
	/* While a write's data is read into buffers of the shared pool: how
	 * long the client may send nothing before it is cut off (ns; 0: for
	 * ever).  Buffers held by a client that stopped midway are buffers
	 * every other client waits for. */
	uint64_t stall_ns;

	/* Requests taken by workers and not yet answered, and the data
	 * elements they hold (nbd_conn_reserve); idle is signalled whenever
	 * one is answered.  The backlog holds the replies workers could not
	 * send without waiting, in order, the first maybe half sent. */
	pthread_mutex_t lock;
	pthread_cond_t idle;
	unsigned int inflight;
	unsigned int elems;
	struct nbd_work_list backlog;
	pthread_cond_t backlog_cond;
	bool sender_quit;
	bool has_sender;
	pthread_t sender;

	/* Bytes go out under send_lock, the backlog first: the connection
	 * thread sends its batches, the sender thread the backlog, a worker
	 * its reply if the lock is free and the socket takes it at once.
	 * The first failure sets send_failed and disconnects. */
	pthread_mutex_t send_lock;
	atomic_bool send_failed;

	struct nbd_conn *next; /* the server's list */

	size_t ipos, ilen;
	size_t olen;
	int niov;
	struct iovec oiov[NBD_OIOV_MAX];
	uint8_t obuf[NBD_OBUF_SIZE];
	uint8_t ibuf[NBD_IBUF_SIZE];
};

/* A request a worker serves; its data are mempool elements.  Its reply
 * (header in hdr, data in the elements) stays here until it is sent. */
struct nbd_work {
	struct nbd_conn *conn;
	struct nbd_request req;
	struct nbd_work *next; /* the work queue, then the backlog */
	unsigned int nelem; /* elements held */
	unsigned int nres; /* elements reserved on the connection */
	int nriov;
	struct iovec iov[NBD_DATA_ELEMS_MAX];
	void *elem[NBD_DATA_ELEMS_MAX];
	struct iovec riov[1 + NBD_DATA_ELEMS_MAX];
	uint8_t hdr[128];
};

struct nbd_server {
	struct ioflusher_ctx *ctx;
	struct nbd_export *exp;
	unsigned int nthreads; /* 0: serve everything inline */
	unsigned int queue_depth; /* requests in flight, all connections */
	unsigned int max_conns;
	unsigned int send_timeout; /* seconds; 0: none */
	unsigned int handshake_timeout; /* seconds; 0: none */
	unsigned int poll_us; /* spin so long for a request before sleeping */
	/* Connections being served, and up to how many of them spin
	 * (conn_recv() in server.c). */
	atomic_uint serving;
	unsigned int max_spinners;
	bool best_effort;
	void (*log)(const char *fmt, ...) IOFLUSHER_PRINTF(1, 2);

	struct ioflusher_mempool *conn_pool;
	struct ioflusher_mempool *work_pool;
	struct ioflusher_mempool *data_pool;
	/* What one connection may hold: half of each pool. */
	unsigned int conn_max_inflight;
	unsigned int conn_max_elems;

	pthread_mutex_t lock;
	pthread_cond_t cond; /* work queued, or quit */
	pthread_cond_t conns_cond; /* a connection ended */
	struct nbd_work_list queue;
	/* Stopping: no new connections, and every request or option read
	 * from a client from now on is refused with ESHUTDOWN. */
	atomic_bool stopping;
	bool quit; /* workers leave once the queue is empty */
	struct nbd_conn *conns;
	unsigned int nconns;
	unsigned int next_id;
	struct nbd_worker *workers;
	unsigned int nworkers;
};

/* Each worker serves a file export through its own open file description:
 * Linux reports a writeback error once per description (errseq_t), so
 * with one shared, a worker's fdatasync could take the report another's
 * FLUSH needs to fail. */
struct nbd_worker {
	struct nbd_server *srv;
	pthread_t thread;
	int fd;
};

int nbd_server_init(struct nbd_server *srv);
/* The workers' descriptors, before the capabilities are dropped; then
 * their threads. */
int nbd_server_open_workers(struct nbd_server *srv);
int nbd_server_start_workers(struct nbd_server *srv);
void nbd_server_fini(struct nbd_server *srv);
/* Serve a socket on a new thread; handshake false for the kernel. */
int nbd_server_add(struct nbd_server *srv, int fd, bool handshake);
/* The soft stop: see nbd_server_stop() in server.c. */
void nbd_server_stop(struct nbd_server *srv);
/* The hard one: every connection's socket shut down both ways. */
void nbd_server_shutdown(struct nbd_server *srv);
/* Wait at most timeout_ms for every connection to end: how many are left. */
unsigned int nbd_server_wait_idle(struct nbd_server *srv, int timeout_ms);
/* CLOCK_MONOTONIC, in nanoseconds. */
uint64_t nbd_now_ns(void);
/* Every thread of the daemon: with the flag (ioflusher_thread_create(),
 * or without it at best effort), a stack of the size given, named. */
int nbd_thread_start(struct nbd_server *srv, pthread_t *t, size_t stack,
		     bool detached, const char *name, void *(*fn)(void *),
		     void *arg);
/* At the start of each thread: its stack reserve (NBD_STACK_USED). */
void nbd_stack_reserve(struct nbd_server *srv);
void nbd_work_queue(struct nbd_server *srv, struct nbd_work *w);
/* Serve w on fd, the worker's own description of a file export. */
void nbd_work_run(struct nbd_work *w, int fd);
/* Free w and its elements, and count it out of its connection. */
void nbd_work_done(struct nbd_work *w);

/* ---------------------------------------------------------------- conn */
void nbd_conn_init(struct nbd_conn *c, struct nbd_server *srv,
		   const struct nbd_io *io);
void nbd_conn_destroy(struct nbd_conn *c);
/* Ensure n bytes are buffered at ibuf + ipos: 0, or -errno (-ECONNRESET
 * at end of stream). */
int nbd_conn_fill(struct nbd_conn *c, size_t n);
/* Read n bytes, from the buffer first, then straight into dst. */
int nbd_conn_read(struct nbd_conn *c, void *dst, size_t n);
int nbd_conn_readv(struct nbd_conn *c, const struct iovec *iov, int n,
		   size_t len);
int nbd_conn_skip(struct nbd_conn *c, uint64_t n);
/* Send, waiting as long as the send timeout allows; the backlog first. */
int nbd_conn_send(struct nbd_conn *c, struct iovec *iov, int n);
int nbd_conn_flush(struct nbd_conn *c);
/* A worker's reply (w->riov): sent without waiting, or left to the
 * sender thread; w is done with either way. */
void nbd_conn_reply(struct nbd_conn *c, struct nbd_work *w);
/* Count in a request holding nelem data elements, waiting for room
 * within the connection's share; undone by nbd_conn_release. */
int nbd_conn_reserve(struct nbd_conn *c, unsigned int nelem);
void nbd_conn_release(struct nbd_conn *c, unsigned int nelem);
void nbd_conn_wait_idle(struct nbd_conn *c);
/* The sender thread, with workers only. */
int nbd_conn_start_sender(struct nbd_conn *c);
void nbd_conn_stop_sender(struct nbd_conn *c);

/* proto.c: 1 when the transmission phase starts, 0 when the client ends
 * the handshake, -errno on a broken or violated connection. */
int nbd_handshake(struct nbd_conn *c);
/* Decode a 28-byte request. */
void nbd_request_decode(const uint8_t *p, struct nbd_request *r);
/* 0 if the request may be served, else the NBD error to reply with and,
 * in *msg, why (a constant string, for structured error chunks). */
int nbd_request_check(const struct nbd_export *exp, bool structured,
		      const struct nbd_request *r, const char **msg);
uint16_t nbd_export_tflags(const struct nbd_export *exp, bool structured);
size_t nbd_simple_reply(uint8_t *p, uint64_t cookie, uint32_t err);
size_t nbd_chunk_header(uint8_t *p, uint16_t flags, uint16_t type,
			uint64_t cookie, uint32_t len);
size_t nbd_error_chunk(uint8_t *p, uint64_t cookie, uint32_t err,
		       const char *msg);

/* request.c: serve the transmission phase until the client leaves. */
int nbd_serve(struct nbd_conn *c);

/* kernel.c: serve /dev/nbdX through a socketpair, like qemu-nbd -c. */
struct nbd_kernel {
	int nbd_fd;
	int sock; /* the kernel's end of the socketpair */
	int notify_fd; /* written once when the device lets go */
	struct nbd_server *srv;
	pthread_t doit;
	bool running;
	/* Set by the thread in NBD_DO_IT when it returns: its errno, if any. */
	atomic_int doit_err;
	atomic_bool doit_ended;
};
/* The device, opened before the capabilities are dropped (nbd_fd -1
 * until then); connect opens it if this was not called. */
int nbd_kernel_open(const char *dev, struct nbd_kernel *k);
int nbd_kernel_connect(struct nbd_server *srv, const char *dev, int notify_fd,
		       struct nbd_kernel *k);
/* 0 once the device has started (its size set), or why it did not. */
int nbd_kernel_wait_started(struct nbd_kernel *k, int timeout_ms);
void nbd_kernel_disconnect(struct nbd_kernel *k);
void nbd_kernel_wait(struct nbd_kernel *k);

#endif /* IOFLUSHER_NBD_H */
