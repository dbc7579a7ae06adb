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
 *   make fuzz-nbd            (a longer run; see Makefile.am)
 */
#include <errno.h>
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

static int out_sendv(void *opaque, struct iovec *iov, int n, bool nowait)
{
	size_t total = 0;

	/* Touch every byte sent: ASan checks that each iovec is valid. */
	for (int i = 0; i < n; i++) {
		const volatile uint8_t *p = iov[i].iov_base;

		for (size_t j = 0; j < iov[i].iov_len; j += 512)
			total += p[j];
	}
	(void)total;
	(void)nowait;
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
	in.step = data[1] ? data[1] : NBD_IBUF_SIZE;
	in.p = data + 2;
	in.left = size - 2;

	nbd_conn_init(conn, srv, &io);
	conn->handshake = !(data[0] & 2);
	if (conn->handshake)
		r = nbd_handshake(conn);
	if (r == 1)
		nbd_serve(conn);
	nbd_conn_destroy(conn);
	check_export();
	return 0;
}
