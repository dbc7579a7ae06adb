// SPDX-License-Identifier: MIT
/*
 * The export's storage.
 *
 * Memory: one anonymous mapping of the export's size, MAP_NORESERVE, so
 * that it costs nothing until written: a read of a page never written maps
 * the kernel's zero page.  A bitmap says which 4 KiB grains may hold data,
 * so that reads of the rest go out as NBD_REPLY_TYPE_OFFSET_HOLE.  The
 * mapping is excluded from mlockall(MCL_FUTURE): it is the export's data,
 * not the daemon's working memory, and MADV_DONTNEED (trim) refuses
 * locked pages.  Pages are allocated by the write faults of the connection
 * threads, which carry the io-flusher flag: the kernel allocates them
 * under NOIO (memalloc_noio), so the fault cannot wait on our own device.
 *
 * File or block device: pread/pwrite through the page cache; FLUSH is
 * fdatasync(2), FUA a write then fdatasync (see nbd_backend_pwritev),
 * trim and zeroes are fallocate(2) where the file
 * system or device can, zeroes written out where not.  Each worker has an
 * open file description of its own (nbd_export_reopen), and a writeback
 * error, once seen, is kept for good (export_lost).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include "nbd.h"

/* Zeroes to write where fallocate cannot: read-only data, not a buffer. */
static const uint8_t zero_block[64 << 10];

int nbd_errno(int err)
{
	switch (err) {
	case EPERM:
	case EACCES:
	case EROFS:
		return -NBD_EPERM;
	case ENOSPC:
	case EDQUOT:
	case EFBIG:
		return -NBD_ENOSPC; /* as the protocol asks */
	case EINVAL:
	case EOVERFLOW:
	case EOPNOTSUPP:
		/* "The server SHOULD NOT return NBD_EOVERFLOW except" for a DF
		 * read, nor "NBD_ENOTSUP except" for a FAST_ZERO write zeroes:
		 * both are replied where they apply, never mapped from a
		 * system call's errno.  A value out of range, or an operation
		 * the storage cannot do, is the request's fault here. */
		return -NBD_EINVAL;
	case ENOMEM:
		return -NBD_ENOMEM;
	default:
		return -NBD_EIO;
	}
}

static uint16_t tflags_of(bool readonly)
{
	/* CAN_MULTI_CONN is true of both backends: every connection shares
	 * the one mapping, or the one file and its page cache (fdatasync
	 * through any worker's descriptor flushes all of it), so a FLUSH on
	 * any connection covers the writes answered on all. */
	uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH |
		     NBD_FLAG_CAN_MULTI_CONN;

	if (readonly)
		return f | NBD_FLAG_READ_ONLY;
	return f | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM |
	       NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
}

/* ---------------------------------------------------------------- memory */

int nbd_export_memory(struct nbd_export *exp, uint64_t size)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	uint64_t nbits, words;
	size_t bm_len;

	exp->kind = NBD_BACKEND_MEMORY;
	exp->fd = -1;
	exp->wzero_fd = -1;
	exp->grain = page > 4096 ? page : 4096;
	if (size == 0 || size > ((uint64_t)1 << 50))
		return -EINVAL;
	/* One page past the end stays PROT_NONE: an overrun faults. */
	exp->map_len = (size_t)((size + page - 1) / page * page) + page;
	exp->map = mmap(NULL, exp->map_len, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (exp->map == MAP_FAILED) {
		exp->map = NULL;
		return -errno;
	}
	mprotect(exp->map + exp->map_len - page, page, PROT_NONE);
	munlock(exp->map, exp->map_len);

	nbits = (size + exp->grain - 1) / exp->grain;
	words = (nbits + 63) / 64;
	bm_len = (size_t)(words * sizeof(uint64_t));
	exp->bitmap = mmap(NULL, bm_len, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (exp->bitmap == MAP_FAILED) {
		exp->bitmap = NULL;
		munmap(exp->map, exp->map_len);
		exp->map = NULL;
		return -errno;
	}
	exp->size = size;
	exp->tflags = tflags_of(exp->readonly);
	return 0;
}

void nbd_memory_mark(struct nbd_export *exp, uint64_t off, uint64_t len)
{
	uint64_t g, last;

	if (!len)
		return;
	last = (off + len - 1) / exp->grain;
	for (g = off / exp->grain; g <= last; g++)
		atomic_fetch_or_explicit(&exp->bitmap[g / 64],
					 (uint64_t)1 << (g % 64),
					 memory_order_release);
}

static bool grain_used(const struct nbd_export *exp, uint64_t g)
{
	return atomic_load_explicit(&exp->bitmap[g / 64],
				    memory_order_acquire) &
	       ((uint64_t)1 << (g % 64));
}

uint64_t nbd_memory_extent(const struct nbd_export *exp, uint64_t off,
			   uint64_t len, bool *hole)
{
	uint64_t g = off / exp->grain, end = off + len, pos;
	bool used = grain_used(exp, g);

	pos = (g + 1) * exp->grain;
	while (pos < end && grain_used(exp, pos / exp->grain) == used)
		pos += exp->grain;
	*hole = !used;
	return (pos < end ? pos : end) - off;
}

static void memory_clear_bits(struct nbd_export *exp, uint64_t g, uint64_t n)
{
	for (; n; g++, n--)
		atomic_fetch_and_explicit(&exp->bitmap[g / 64],
					  ~((uint64_t)1 << (g % 64)),
					  memory_order_relaxed);
}

/* Zero [off, off+len): whole grains are given back to the kernel (they
 * read as zeroes again), partial ones written with zeroes.  Without punch
 * (NO_HOLE) the range is written and marked, as a write of zeroes is:
 * allocated, and read back as data. */
static int memory_zero(struct nbd_export *exp, uint64_t off, uint64_t len,
		       bool punch)
{
	uint64_t end = off + len, first, last;

	if (!len)
		return 0;
	first = (off + exp->grain - 1) / exp->grain * exp->grain;
	last = end / exp->grain * exp->grain;
	if (!punch || first >= last) {
		memset(exp->map + off, 0, len);
		if (!punch)
			nbd_memory_mark(exp, off, len);
		return 0;
	}
	if (off < first)
		memset(exp->map + off, 0, first - off);
	if (last < end)
		memset(exp->map + last, 0, end - last);
	/* Bits first, then the pages: a write landing in between sets its
	 * bits after its copy (write_memory), so the grain ends either
	 * marked, with its bytes or zeroes, or clear and zero; a clear bit
	 * never hides data. */
	memory_clear_bits(exp, first / exp->grain, (last - first) / exp->grain);
	if (madvise(exp->map + first, last - first, MADV_DONTNEED) < 0) {
		/* Cannot give it back (a locked range): write the zeroes. */
		memset(exp->map + first, 0, last - first);
	}
	return 0;
}

/* ---------------------------------------------------------------- file */

/* A block device's queue attribute, kept open to be read afresh; a
 * partition has no queue/ of its own, its disk's is one level up. */
static int open_queue_attr(dev_t rdev, const char *attr)
{
	char path[128];
	int fd;

	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/queue/%s",
		 major(rdev), minor(rdev), attr);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0)
		return fd;
	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/../queue/%s",
		 major(rdev), minor(rdev), attr);
	return open(path, O_RDONLY | O_CLOEXEC);
}

/* Whether the device offers write zeroes now: read each time, since the
 * kernel turns it off (to 0) once the device has refused it. */
static bool blockdev_write_zeroes(const struct nbd_export *exp)
{
	char buf[32];
	ssize_t n;

	if (exp->wzero_fd < 0)
		return false;
	n = pread(exp->wzero_fd, buf, sizeof(buf) - 1, 0);
	if (n <= 0)
		return false;
	buf[n] = 0;
	return strtoull(buf, NULL, 10) > 0;
}

static int open_flags(const struct nbd_export *exp)
{
	return (exp->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC;
}

int nbd_export_file(struct nbd_export *exp, const char *path)
{
	struct stat st;
	uint64_t size;
	int fd;

	exp->kind = NBD_BACKEND_FILE;
	exp->path = path;
	exp->wzero_fd = -1;
	fd = open(path, open_flags(exp));
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		goto fail;
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, &size) < 0)
			goto fail;
		exp->blockdev = true;
		exp->wzero_fd =
			open_queue_attr(st.st_rdev, "write_zeroes_max_bytes");
	} else if (S_ISREG(st.st_mode)) {
		size = (uint64_t)st.st_size;
	} else {
		errno = EINVAL;
		goto fail;
	}
	exp->fd = fd;
	exp->size = size;
	exp->tflags = tflags_of(exp->readonly);
	return 0;
fail:
	close(fd);
	return -errno;
}

/* Through /proc/self/fd, which opens the very inode anew (a new open file
 * description, unlike dup(2)); without /proc, the path again, checked to
 * be the same file. */
int nbd_export_reopen(const struct nbd_export *exp)
{
	struct stat a, b;
	char path[64];
	int fd;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", exp->fd);
	fd = open(path, open_flags(exp));
	if (fd < 0 && errno == ENOENT)
		fd = open(exp->path, open_flags(exp));
	if (fd < 0)
		return -errno;
	if (fstat(fd, &a) < 0 || fstat(exp->fd, &b) < 0 ||
	    a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
		close(fd);
		return -ESTALE;
	}
	return fd;
}

/*
 * The first failure to make writes durable.  Linux reports a writeback
 * error to fdatasync(2) once per
 * open file description, and the data it could not write is gone from the
 * page cache's dirty set: the next fdatasync succeeds.  A server that
 * trusted it would answer the next FLUSH with success over lost writes.
 * So the error is kept, and from then on every FLUSH, FUA, write, trim
 * and write zeroes fails with EIO (export_broken): the export can no
 * longer say what it holds.  Reads go on.  Logged once.
 */
static int export_lost(struct nbd_export *exp, int err, const char *what)
{
	int none = 0;

	if (atomic_compare_exchange_strong(&exp->wb_err, &none, err) &&
	    exp->log)
		exp->log("%s: %s failed: %s: writes may have been lost; from "
			 "now on every write, trim, write zeroes and flush "
			 "fails with EIO\n",
			 exp->path, what, strerror(err));
	return nbd_errno(err);
}

/* 0 if the export may still change, else the error to reply with. */
static int export_broken(const struct nbd_export *exp)
{
	if (atomic_load_explicit(&exp->wb_err, memory_order_relaxed))
		return -NBD_EIO;
	if (atomic_load_explicit(&exp->closing, memory_order_relaxed))
		return -NBD_ESHUTDOWN;
	return 0;
}

int nbd_export_stop(struct nbd_export *exp)
{
	int err;

	/* On the way out a worker may still be writing (the connections
	 * that did not end are shut down, so none of it can be answered
	 * any more); nothing new starts after this. */
	atomic_store(&exp->closing, true);
	if (exp->kind != NBD_BACKEND_FILE || exp->readonly)
		return 0;
	/* exp->fd is no worker's: this fdatasync also reports an error
	 * that only happened in writeback, never reported to a worker. */
	if (fdatasync(exp->fd) < 0)
		export_lost(exp, errno, "the final fdatasync");
	err = atomic_load(&exp->wb_err);
	return err ? -err : 0;
}

void nbd_export_close(struct nbd_export *exp)
{
	if (exp->map) {
		munmap(exp->map, exp->map_len);
		munmap(exp->bitmap,
		       ((exp->size + exp->grain - 1) / exp->grain + 63) / 64 *
			       sizeof(uint64_t));
		exp->map = NULL;
	}
	if (exp->fd >= 0) {
		close(exp->fd);
		exp->fd = -1;
	}
	if (exp->wzero_fd >= 0) {
		close(exp->wzero_fd);
		exp->wzero_fd = -1;
	}
}

/* Step an iovec array past done bytes. */
static int iov_advance(struct iovec *iov, int n, size_t done, int *first)
{
	int i = *first;

	while (i < n && done >= iov[i].iov_len) {
		done -= iov[i].iov_len;
		i++;
	}
	if (i < n) {
		iov[i].iov_base = (uint8_t *)iov[i].iov_base + done;
		iov[i].iov_len -= done;
	}
	*first = i;
	return n - i;
}

int nbd_backend_preadv(struct nbd_export *exp, int fd, const struct iovec *src,
		       int n, uint64_t off, size_t len)
{
	struct iovec iov[NBD_DATA_ELEMS_MAX];
	int first = 0;
	ssize_t r;

	(void)exp;
	if (n < 0 || n > (int)NBD_DATA_ELEMS_MAX)
		return -NBD_EINVAL;
	memcpy(iov, src, (size_t)n * sizeof(*iov));
	while (len) {
		r = preadv(fd, iov + first, n - first, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return nbd_errno(errno);
		if (r == 0) {
			/* The file shrank under us: what is gone reads as
			 * zeroes, as a hole would. */
			while (first < n) {
				memset(iov[first].iov_base, 0,
				       iov[first].iov_len);
				first++;
			}
			return 0;
		}
		off += (uint64_t)r;
		len -= (size_t)r;
		iov_advance(iov, n, (size_t)r, &first);
	}
	return 0;
}

int nbd_backend_pwritev(struct nbd_export *exp, int fd, const struct iovec *src,
			int n, uint64_t off, size_t len, bool fua)
{
	struct iovec iov[NBD_DATA_ELEMS_MAX];
	int first = 0;
	ssize_t r;

	if (n < 0 || n > (int)NBD_DATA_ELEMS_MAX)
		return -NBD_EINVAL;
	r = export_broken(exp);
	if (r)
		return (int)r;
	memcpy(iov, src, (size_t)n * sizeof(*iov));
	while (len) {
		r = pwritev(fd, iov + first, n - first, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		/* A failure to write (a full file system, a quota, a file
		 * size limit) loses nothing already accepted: this write
		 * fails and the export goes on. */
		if (r < 0)
			return nbd_errno(errno);
		if (r == 0)
			return -NBD_EIO;
		off += (uint64_t)r;
		len -= (size_t)r;
		iov_advance(iov, n, (size_t)r, &first);
	}
	/* FUA: the write, then fdatasync, and not one RWF_DSYNC write,
	 * whose error may be its sync's, and so the one report of an
	 * earlier write's lost writeback, or the write's own ENOSPC: it
	 * cannot tell them apart.  fdatasync's error is always a writeback
	 * error (export_lost). */
	if (fua)
		return nbd_backend_flush(exp, fd);
	return 0;
}

int nbd_backend_flush(struct nbd_export *exp, int fd)
{
	int r;

	if (exp->kind == NBD_BACKEND_MEMORY)
		return 0;
	r = export_broken(exp);
	if (r)
		return r;
	if (fdatasync(fd) < 0)
		return export_lost(exp, errno, "fdatasync");
	return 0;
}

static int write_zeroes(int fd, uint64_t off, uint64_t len)
{
	while (len) {
		size_t n = len < sizeof(zero_block) ? (size_t)len :
						      sizeof(zero_block);
		ssize_t r = pwrite(fd, zero_block, n, (off_t)off);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return nbd_errno(errno);
		if (r == 0)
			return -NBD_EIO;
		off += (uint64_t)r;
		len -= (uint64_t)r;
	}
	return 0;
}

/* fallocate, remembering a mode the file does not support: 1 done, 0 not
 * possible here, <0 error. */
static int try_fallocate(struct nbd_export *exp, int fd, int mode,
			 atomic_bool *no, uint64_t off, uint64_t len)
{
	if (atomic_load(no))
		return 0;
	/* On a block device PUNCH_HOLE is the device's write zeroes or
	 * nothing, but the kernel drops the range from the page cache,
	 * dirty pages included, before it finds out (truncate_bdev_range):
	 * tried where the device has none, it would fail and lose writes
	 * not yet written back.  So it is not tried there. */
	if (exp->blockdev && (mode & FALLOC_FL_PUNCH_HOLE) &&
	    !blockdev_write_zeroes(exp))
		return 0;
	if (fallocate(fd, mode, (off_t)off, (off_t)len) == 0)
		return 1;
	if (errno == EOPNOTSUPP || errno == ENOSYS) {
		atomic_store(no, true);
		return 0;
	}
	/* A block device refuses ranges not aligned to its sectors. */
	if (errno == EINVAL)
		return 0;
	return nbd_errno(errno);
}

int nbd_backend_trim(struct nbd_export *exp, int fd, uint64_t off, uint64_t len,
		     bool fua)
{
	int r;

	if (exp->kind == NBD_BACKEND_MEMORY)
		return memory_zero(exp, off, len, true);
	r = export_broken(exp);
	if (r || !len)
		return r;
	/* Trim is advisory: where a hole cannot be punched, nothing is
	 * done, and that is a success. */
	r = try_fallocate(exp, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			  &exp->no_punch, off, len);
	if (r < 0)
		return r;
	return fua ? nbd_backend_flush(exp, fd) : 0;
}

/*
 * A fast zero on a block device.  There fallocate(2) is
 * blkdev_issue_zeroout(): PUNCH_HOLE tells it not to fall back
 * (BLKDEV_ZERO_NOFALLBACK: the device's write zeroes, which may unmap, or
 * EOPNOTSUPP), while ZERO_RANGE, which must not unmap, writes zero pages
 * when the device has no write zeroes: no faster than the client's own
 * write, which FAST_ZERO exists to avoid.  So: punch where a hole may be
 * made, ZERO_RANGE where not, both only while the queue offers write
 * zeroes; else nothing is touched (0) and the caller replies ENOTSUP.  A
 * device that offers write zeroes but refuses them without unmapping is
 * found out by the kernel on first use: that request is written out, and
 * the kernel stops offering them.  But the kernel drops the range from the
 * page cache before it tries, dirty pages included: the range is written
 * back first, so that the ENOTSUP of a refusal leaves the export as it was,
 * as the protocol asks.
 */
static int blockdev_fast_zero(struct nbd_export *exp, int fd, uint64_t off,
			      uint64_t len, bool may_punch)
{
	if (!blockdev_write_zeroes(exp))
		return 0;
	if (may_punch && !atomic_load(&exp->no_punch)) {
		if (sync_file_range(fd, (off_t)off, (off_t)len,
				    SYNC_FILE_RANGE_WAIT_BEFORE |
					    SYNC_FILE_RANGE_WRITE |
					    SYNC_FILE_RANGE_WAIT_AFTER) < 0)
			return nbd_errno(errno);
		return try_fallocate(exp, fd,
				     FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				     &exp->no_punch, off, len);
	}
	if (may_punch)
		return 0;
	return try_fallocate(exp, fd,
			     FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
			     &exp->no_zero_range, off, len);
}

int nbd_backend_zero(struct nbd_export *exp, int fd, uint64_t off, uint64_t len,
		     uint16_t flags)
{
	bool may_punch = !(flags & NBD_CMD_FLAG_NO_HOLE);
	int r = 0;

	if (exp->kind == NBD_BACKEND_MEMORY)
		return memory_zero(exp, off, len, may_punch);
	r = export_broken(exp);
	if (r || !len)
		return r;
	if (exp->blockdev && (flags & NBD_CMD_FLAG_FAST_ZERO)) {
		r = blockdev_fast_zero(exp, fd, off, len, may_punch);
		if (r == 0)
			return -NBD_ENOTSUP;
		if (r < 0)
			return r;
		return flags & NBD_CMD_FLAG_FUA ? nbd_backend_flush(exp, fd) :
						  0;
	}
	/* A regular file's fallocate never falls back to writing: what it
	 * does is fast, and where it cannot, nothing is done. */
	if (may_punch)
		r = try_fallocate(exp, fd,
				  FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				  &exp->no_punch, off, len);
	if (r == 0)
		r = try_fallocate(exp, fd,
				  FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
				  &exp->no_zero_range, off, len);
	if (r == 0) {
		/* "the server SHOULD fail quickly with ENOTSUP" when the
		 * zeroes would have to be written one by one. */
		if (flags & NBD_CMD_FLAG_FAST_ZERO)
			return -NBD_ENOTSUP;
		r = write_zeroes(fd, off, len);
	}
	if (r < 0)
		return r;
	return flags & NBD_CMD_FLAG_FUA ? nbd_backend_flush(exp, fd) : 0;
}
