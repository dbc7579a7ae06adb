// SPDX-License-Identifier: MIT
/*
 * The file backend: the LUN's blocks are a file's bytes, through the page
 * cache, so the LUN has a volatile write cache (WCE): SYNCHRONIZE CACHE
 * is fdatasync(), and a FUA write a write then fdatasync().  A failed
 * fdatasync() is kept (lost()): Linux reports a writeback error once per
 * open file, and the next fdatasync() would succeed over the lost data.
 * A write that fails by itself (ENOSPC) loses nothing.  UNMAP punches
 * holes (reads of a hole return zeros); where the filesystem cannot, the
 * range is written with zeros.  A WRITE SAME of zeros without UNMAP
 * zeroes the range in place (FALLOC_FL_ZERO_RANGE, Linux 3.15: blocks
 * kept allocated, no data written), or writes zeros 1 MiB a call where the
 * filesystem cannot (tmpfs).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "tcmu.h"

struct file_backend {
	struct tcmu_backend be;
	int fd;
	char *path;
	/* The errno of the first failed fdatasync(), for good: from then
	 * on every write, flush, UNMAP and WRITE SAME fails with -EIO
	 * (reads go on), and closing reports it.  One ring thread per
	 * device uses the backend: no lock. */
	int wb_err;
	bool no_punch; /* FALLOC_FL_PUNCH_HOLE refused: write zeros */
	bool no_zero_range; /* FALLOC_FL_ZERO_RANGE refused: write zeros */
};

static struct file_backend *to_file(struct tcmu_backend *be)
{
	return (struct file_backend *)be;
}

static uint64_t iov_bytes(const struct iovec *iov, unsigned int cnt)
{
	uint64_t n = 0;

	for (unsigned int i = 0; i < cnt; i++)
		n += iov[i].iov_len;
	return n;
}

static bool fits(const struct tcmu_backend *be, uint64_t off, uint64_t len)
{
	return off <= be->size && len <= be->size - off;
}

/* Advance an iovec array past n bytes (after a short transfer). */
static void iov_advance(struct iovec **iov, unsigned int *cnt, size_t n)
{
	while (*cnt && n >= (*iov)->iov_len) {
		n -= (*iov)->iov_len;
		(*iov)++;
		(*cnt)--;
	}
	if (*cnt && n) {
		(*iov)->iov_base = (uint8_t *)(*iov)->iov_base + n;
		(*iov)->iov_len -= n;
	}
}

/* The first failure to make writes durable, logged once and kept. */
static int lost(struct file_backend *f, int err)
{
	if (!f->wb_err) {
		f->wb_err = err;
		fprintf(stderr,
			"%s: fdatasync: %s: writes the initiator was told "
			"were done may have been lost; from now on every "
			"write, SYNCHRONIZE CACHE, UNMAP and WRITE SAME of "
			"this device fails (MEDIUM ERROR) until the daemon "
			"is restarted\n",
			f->path, strerror(err));
	}
	return -EIO;
}

static int sync_file(struct file_backend *f)
{
	if (f->wb_err)
		return -EIO;
	return fdatasync(f->fd) < 0 ? lost(f, errno) : 0;
}

/* preadv/pwritev until done: both may stop short.  iov is copied, since
 * it is advanced; at most TCMU_IOV_MAX entries (and IOV_MAX per call). */
static int transfer(struct file_backend *f, const struct iovec *in,
		    unsigned int cnt, uint64_t off, bool write)
{
	struct iovec copy[TCMU_IOV_MAX], *iov = copy;

	if (cnt > TCMU_IOV_MAX)
		return -EINVAL;
	memcpy(copy, in, cnt * sizeof(*in));
	while (cnt) {
		unsigned int n = cnt > IOV_MAX ? IOV_MAX : cnt;
		ssize_t r;

		if (write)
			r = pwritev(f->fd, iov, (int)n, (off_t)off);
		else
			r = preadv(f->fd, iov, (int)n, (off_t)off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0) {
			if (write)
				return -EIO;
			/* Past the end of a file shorter than the LUN (it
			 * was truncated under us): zeros. */
			for (unsigned int i = 0; i < cnt; i++)
				memset(iov[i].iov_base, 0, iov[i].iov_len);
			return 0;
		}
		off += (uint64_t)r;
		iov_advance(&iov, &cnt, (size_t)r);
	}
	return 0;
}

static int file_read(struct tcmu_backend *be, const struct iovec *iov,
		     unsigned int cnt, uint64_t off)
{
	if (!fits(be, off, iov_bytes(iov, cnt)))
		return -EINVAL;
	return transfer(to_file(be), iov, cnt, off, false);
}

static int file_write(struct tcmu_backend *be, const struct iovec *iov,
		      unsigned int cnt, uint64_t off, bool fua)
{
	struct file_backend *f = to_file(be);
	int r;

	if (!fits(be, off, iov_bytes(iov, cnt)))
		return -EINVAL;
	if (f->wb_err)
		return -EIO;
	/* Not one RWF_DSYNC write: its error may be its sync's, the one
	 * report of an earlier write's lost writeback, or the write's own
	 * ENOSPC, and it cannot tell which. */
	r = transfer(f, iov, cnt, off, true);
	if (r == 0 && fua)
		r = sync_file(f);
	return r;
}

static int file_flush(struct tcmu_backend *be)
{
	return sync_file(to_file(be));
}

static int write_zeros(struct file_backend *f, uint64_t off, uint64_t len)
{
	static const uint8_t zeros[65536];
	struct iovec iov[16];
	int r = 0;

	for (size_t i = 0; i < 16; i++) {
		iov[i].iov_base = (void *)zeros;
		iov[i].iov_len = sizeof(zeros);
	}
	while (len && r == 0) {
		uint64_t n = len < sizeof(zeros) * 16 ? len :
							sizeof(zeros) * 16;
		unsigned int cnt =
			(unsigned int)((n + sizeof(zeros) - 1) / sizeof(zeros));

		iov[cnt - 1].iov_len = n - (uint64_t)(cnt - 1) * sizeof(zeros);
		r = transfer(f, iov, cnt, off, true);
		iov[cnt - 1].iov_len = sizeof(zeros);
		off += n;
		len -= n;
	}
	return r;
}

static int file_discard(struct tcmu_backend *be, uint64_t off, uint64_t len)
{
	struct file_backend *f = to_file(be);

	if (!fits(be, off, len))
		return -EINVAL;
	if (f->wb_err)
		return -EIO;
	if (!f->no_punch) {
		if (fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      (off_t)off, (off_t)len) == 0)
			return 0;
		if (errno != EOPNOTSUPP && errno != ENOSYS)
			return -errno;
		f->no_punch = true;
	}
	return write_zeros(f, off, len);
}

static int file_write_zeroes(struct tcmu_backend *be, uint64_t off,
			     uint64_t len)
{
	struct file_backend *f = to_file(be);

	if (!fits(be, off, len))
		return -EINVAL;
	if (f->wb_err)
		return -EIO;
	if (!f->no_zero_range) {
		if (fallocate(f->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
			      (off_t)off, (off_t)len) == 0)
			return 0;
		if (errno != EOPNOTSUPP && errno != ENOSYS)
			return -errno;
		f->no_zero_range = true;
	}
	return write_zeros(f, off, len);
}

/* Holes, from SEEK_HOLE and SEEK_DATA, are deallocated: they read as
 * zeros, and so do unwritten extents (FALLOC_FL_ZERO_RANGE), which some
 * filesystems (ext4) report as holes too.  Data is mapped or unknown. */
static int file_status(struct tcmu_backend *be, uint64_t off, uint64_t len,
		       bool *mapped, uint64_t *run)
{
	struct file_backend *f = to_file(be);
	off_t data, next;

	if (!len || !fits(be, off, len))
		return -EINVAL;
	data = lseek(f->fd, (off_t)off, SEEK_DATA);
	if (data < 0 && errno != ENXIO)
		return -errno;
	if (data < 0 || (uint64_t)data > off) {
		/* A hole up to the next data, or to the end. */
		*mapped = false;
		next = data < 0 ? (off_t)(off + len) : data;
	} else {
		*mapped = true;
		next = lseek(f->fd, (off_t)off, SEEK_HOLE);
		if (next < 0)
			return -errno;
	}
	*run = (uint64_t)next - off < len ? (uint64_t)next - off : len;
	return 0;
}

/* A last fdatasync(): what is written and was never flushed reaches the
 * file, or its loss is said and -EIO returned. */
static int file_close(struct tcmu_backend *be)
{
	struct file_backend *f = to_file(be);
	int r = sync_file(f);

	close(f->fd);
	free(f->path);
	free(f);
	return r;
}

static const struct tcmu_backend_ops file_ops = {
	.name = "file",
	.read = file_read,
	.write = file_write,
	.flush = file_flush,
	.discard = file_discard,
	.write_zeroes = file_write_zeroes,
	.close = file_close,
	.status = file_status,
};

/* The file is made if missing and grown (sparse) to the LUN's size; a
 * larger file keeps its size and only its first bytes are the LUN. */
int tcmu_backend_file_open(const char *path, uint64_t size,
			   struct tcmu_backend **bep)
{
	struct file_backend *f;
	struct stat st;
	int fd, r;

	if (!size || size > INT64_MAX)
		return -EINVAL;
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		r = -EINVAL;
		goto fail;
	}
	if ((uint64_t)st.st_size < size && ftruncate(fd, (off_t)size) < 0) {
		r = -errno;
		goto fail;
	}
	f = calloc(1, sizeof(*f));
	if (!f || !(f->path = strdup(path))) {
		free(f);
		r = -ENOMEM;
		goto fail;
	}
	f->fd = fd;
	f->be.ops = &file_ops;
	f->be.size = size;
	f->be.write_cache = true;
	*bep = &f->be;
	return 0;
fail:
	close(fd);
	return r;
}

int tcmu_backend_open(const char *config, uint64_t size,
		      struct tcmu_backend **bep)
{
	if (!strcmp(config, "mem"))
		return tcmu_backend_mem_open(size, bep);
	/* "file/" and an absolute path: the '/' after "file" separates. */
	if (!strncmp(config, "file/", 5) && config[5] == '/')
		return tcmu_backend_file_open(config + 5, size, bep);
	return -EINVAL;
}

int tcmu_backend_close(struct tcmu_backend *be)
{
	return be ? be->ops->close(be) : 0;
}
