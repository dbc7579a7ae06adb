// SPDX-License-Identifier: MIT
/*
 * The memory backend: a thin-provisioned RAM disk.
 *
 * One anonymous mapping of the device's size, reserved but not committed
 * (MAP_NORESERVE): a page takes memory when first written, reads of a
 * page never written map the shared zero page, and UNMAP gives pages back
 * with madvise(), after which they read as zeros again (LBPRZ).
 *
 * The daemon locks its memory with MCL_FUTURE | MCL_ONFAULT, so this
 * mapping is locked page by page as it is written, never all at once:
 * written data is never swapped out (swap may sit on this very disk), and
 * a 1 TiB thin disk costs only what was written.  Locked pages need
 * MADV_DONTNEED_LOCKED (Linux 5.18) to be dropped; before that, and for
 * partial pages, they are zeroed instead, and WRITE SAME of zeros zeroes
 * too: each page only if it holds anything but zeros, so that zeroing
 * never takes memory for a page never written (reading one maps the
 * shared zero page; writing it, even zeros, would allocate it).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tcmu.h"

#ifndef MADV_DONTNEED_LOCKED
#define MADV_DONTNEED_LOCKED 24
#endif

struct mem_backend {
	struct tcmu_backend be;
	uint8_t *mem;
	size_t page;
	int pagemap; /* /proc/self/pagemap, for GET LBA STATUS; or -1 */
};

static struct mem_backend *to_mem(struct tcmu_backend *be)
{
	return (struct mem_backend *)be;
}

static bool fits(const struct tcmu_backend *be, uint64_t off, uint64_t len)
{
	return off <= be->size && len <= be->size - off;
}

static uint64_t iov_bytes(const struct iovec *iov, unsigned int cnt)
{
	uint64_t n = 0;

	for (unsigned int i = 0; i < cnt; i++)
		n += iov[i].iov_len;
	return n;
}

static int mem_read(struct tcmu_backend *be, const struct iovec *iov,
		    unsigned int cnt, uint64_t off)
{
	const uint8_t *src = to_mem(be)->mem;

	if (!fits(be, off, iov_bytes(iov, cnt)))
		return -EINVAL;
	for (unsigned int i = 0; i < cnt; i++) {
		memcpy(iov[i].iov_base, src + off, iov[i].iov_len);
		off += iov[i].iov_len;
	}
	return 0;
}

static int mem_write(struct tcmu_backend *be, const struct iovec *iov,
		     unsigned int cnt, uint64_t off, bool fua)
{
	uint8_t *dst = to_mem(be)->mem;

	(void)fua; /* memory is written through */
	if (!fits(be, off, iov_bytes(iov, cnt)))
		return -EINVAL;
	for (unsigned int i = 0; i < cnt; i++) {
		memcpy(dst + off, iov[i].iov_base, iov[i].iov_len);
		off += iov[i].iov_len;
	}
	return 0;
}

static int mem_flush(struct tcmu_backend *be)
{
	(void)be; /* nothing volatile beyond the memory itself */
	return 0;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* Zeros over [off, off + len), written page by page where there is
 * something else. */
static void zero_range(struct mem_backend *m, uint64_t off, uint64_t len)
{
	while (len) {
		uint64_t n = m->page - (off & (m->page - 1));

		if (n > len)
			n = len;
		if (!all_zero(m->mem + off, n))
			memset(m->mem + off, 0, n);
		off += n;
		len -= n;
	}
}

static int mem_discard(struct tcmu_backend *be, uint64_t off, uint64_t len)
{
	struct mem_backend *m = to_mem(be);
	uint64_t start, end;

	if (!fits(be, off, len))
		return -EINVAL;
	start = (off + m->page - 1) & ~(uint64_t)(m->page - 1);
	end = (off + len) & ~(uint64_t)(m->page - 1);
	/* Parts of pages cannot be given back: zeroed, since LBPRZ says an
	 * unmapped block reads as zeros. */
	if (start >= end) {
		zero_range(m, off, len);
		return 0;
	}
	zero_range(m, off, start - off);
	zero_range(m, end, off + len - end);
	if (madvise(m->mem + start, end - start, MADV_DONTNEED_LOCKED) < 0 &&
	    madvise(m->mem + start, end - start, MADV_DONTNEED) < 0)
		zero_range(m, start, end - start);
	return 0;
}

static int mem_write_zeroes(struct tcmu_backend *be, uint64_t off, uint64_t len)
{
	if (!fits(be, off, len))
		return -EINVAL;
	zero_range(to_mem(be), off, len);
	return 0;
}

/*
 * A page neither present nor swapped (bits 63 and 62 of its entry in
 * /proc/self/pagemap) was never written or was given back: it reads as
 * zeros.  mincore() would not do: it says a page swapped out is not
 * resident, and this mapping is unlocked where the daemon may not lock
 * it.  A present page may still hold only zeros (the shared zero page
 * after a read, or a page zeroed in place): mapped, or unknown.  Without
 * pagemap every page is mapped, or unknown.
 */
static int mem_status(struct tcmu_backend *be, uint64_t off, uint64_t len,
		      bool *mapped, uint64_t *run)
{
	struct mem_backend *m = to_mem(be);
	uint64_t at = off & ~(uint64_t)(m->page - 1);
	uint64_t ent[512];
	bool first = true;

	if (!len || !fits(be, off, len))
		return -EINVAL;
	if (m->pagemap < 0) {
		*mapped = true;
		*run = len;
		return 0;
	}
	while (at < off + len) {
		uint64_t n = (off + len - at + m->page - 1) / m->page;
		uintptr_t vpn = (uintptr_t)(m->mem + at) / m->page;
		ssize_t got;

		if (n > sizeof(ent) / sizeof(ent[0]))
			n = sizeof(ent) / sizeof(ent[0]);
		got = pread(m->pagemap, ent, n * sizeof(ent[0]),
			    (off_t)(vpn * sizeof(ent[0])));
		if (got < 0)
			return -errno;
		if ((size_t)got < sizeof(ent[0]))
			return -EIO;
		n = (uint64_t)got / sizeof(ent[0]);
		for (uint64_t i = 0; i < n; i++, at += m->page) {
			bool in = ent[i] >> 62; /* present or swapped */

			if (first) {
				*mapped = in;
				first = false;
			} else if (in != *mapped) {
				*run = at - off;
				return 0;
			}
		}
	}
	*run = len;
	return 0;
}

static int mem_close(struct tcmu_backend *be)
{
	struct mem_backend *m = to_mem(be);

	munmap(m->mem, be->size);
	if (m->pagemap >= 0)
		close(m->pagemap);
	free(m);
	return 0;
}

static const struct tcmu_backend_ops mem_ops = {
	.name = "mem",
	.read = mem_read,
	.write = mem_write,
	.flush = mem_flush,
	.discard = mem_discard,
	.write_zeroes = mem_write_zeroes,
	.close = mem_close,
	.status = mem_status,
};

int tcmu_backend_mem_open(uint64_t size, struct tcmu_backend **bep)
{
	struct mem_backend *m;

	if (!size || size > SIZE_MAX)
		return -EINVAL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->mem = mmap(NULL, size, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m->mem == MAP_FAILED) {
		int r = -errno;

		free(m);
		return r;
	}
	m->page = (size_t)sysconf(_SC_PAGESIZE);
	/* Opened now, before any sandbox or drop of privilege. */
	m->pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	m->be.ops = &mem_ops;
	m->be.size = size;
	m->be.write_cache = false; /* written is as stable as it gets */
	*bep = &m->be;
	return 0;
}
