// SPDX-License-Identifier: MIT
/*
 * Finding our devices, as Documentation/target/tcmu-design.rst says: every
 * /sys/class/uio/uioN whose name is tcm-user/<hba>/<dev>/<subtype>/<config>
 * with <subtype> our handler's name; its configfs directory
 * /sys/kernel/config/target/core/user_<hba>/<dev> holds the block size and
 * the device size; map0's size, in sysfs, is what we map of /dev/uioN.
 *
 * Everything is looked up under a root ("" on a real system) so that the
 * tests can lay out a tree of their own.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tcmu.h"

#define UIO_CLASS "/sys/class/uio"
#define CONFIGFS_CORE "/sys/kernel/config/target/core"

/* Read a small sysfs or configfs file, without its trailing newline. */
static int read_text(const char *path, char *buf, size_t size)
{
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = '\0';
	return 0;
}

static int read_u64(const char *path, uint64_t *v)
{
	char buf[64], *end;
	int r;

	r = read_text(path, buf, sizeof(buf));
	if (r < 0)
		return r;
	errno = 0;
	*v = strtoull(buf, &end, 0); /* map sizes are in hex: 0x40800000 */
	if (errno || end == buf || *end)
		return -EINVAL;
	return 0;
}

static int copy_part(char *dst, const char *src, size_t len)
{
	if (!len || len >= TCMU_NAME_MAX)
		return -EINVAL;
	memcpy(dst, src, len);
	dst[len] = '\0';
	return 0;
}

int tcmu_uio_parse_name(const char *name, struct tcmu_uio_dev *dev)
{
	const char *p, *dev_end, *sub_end;
	unsigned long hba;
	char *end;

	if (strncmp(name, "tcm-user/", 9) || strlen(name) >= TCMU_NAME_MAX)
		return -EINVAL;
	p = name + 9;
	if (*p < '0' || *p > '9')
		return -EINVAL;
	errno = 0;
	hba = strtoul(p, &end, 10);
	if (errno || *end != '/' || hba > UINT32_MAX)
		return -EINVAL;
	p = end + 1;
	dev_end = strchr(p, '/');
	if (!dev_end)
		return -EINVAL;
	sub_end = strchr(dev_end + 1, '/');
	if (!sub_end || !sub_end[1])
		return -EINVAL;
	if (copy_part(dev->dev, p, (size_t)(dev_end - p)) < 0 ||
	    copy_part(dev->subtype, dev_end + 1,
		      (size_t)(sub_end - dev_end - 1)) < 0 ||
	    copy_part(dev->config, sub_end + 1, strlen(sub_end + 1)) < 0)
		return -EINVAL;
	/* configfs names: no ".." or "." to climb out of user_<hba>. */
	if (!strcmp(dev->dev, ".") || !strcmp(dev->dev, ".."))
		return -EINVAL;
	dev->hba = (unsigned int)hba;
	strcpy(dev->name, name);
	return 0;
}

static int read_sizes(const char *root, struct tcmu_uio_dev *dev)
{
	char path[3 * TCMU_NAME_MAX], info[1024], *s;
	uint64_t v;
	int r;

	snprintf(path, sizeof(path), "%s" UIO_CLASS "/%s/maps/map0/size", root,
		 dev->uio);
	r = read_u64(path, &dev->map_size);
	if (r < 0)
		return r;
	snprintf(path, sizeof(path), "%s" CONFIGFS_CORE "/user_%u/%s/attrib/%s",
		 root, dev->hba, dev->dev, "hw_block_size");
	r = read_u64(path, &v);
	if (r < 0)
		return r;
	if (v > UINT32_MAX)
		return -EINVAL;
	dev->block_size = (uint32_t)v;
	snprintf(path, sizeof(path), "%s" CONFIGFS_CORE "/user_%u/%s/attrib/%s",
		 root, dev->hba, dev->dev, "dev_size");
	if (read_u64(path, &dev->dev_size) == 0)
		return 0;
	/* Kernels before 5.3 show it only in "info": "... Size: N ...",
	 * after the target core's own "SectorSize: ...". */
	snprintf(path, sizeof(path), "%s" CONFIGFS_CORE "/user_%u/%s/info",
		 root, dev->hba, dev->dev);
	r = read_text(path, info, sizeof(info));
	if (r < 0)
		return r;
	s = strstr(info, " Size: ");
	if (!s)
		return -EINVAL;
	dev->dev_size = strtoull(s + 7, NULL, 10);
	return dev->dev_size ? 0 : -EINVAL;
}

static int by_uio(const void *a, const void *b)
{
	const struct tcmu_uio_dev *x = a, *y = b;

	return strverscmp(x->uio, y->uio);
}

int tcmu_uio_scan(const char *root, const char *handler, const char *only,
		  struct tcmu_uio_dev *devs, size_t max,
		  void (*skipped)(const struct tcmu_uio_dev *dev, int err,
				  void *data),
		  void *data)
{
	char path[2 * TCMU_NAME_MAX], name[TCMU_NAME_MAX];
	struct dirent *de;
	size_t n = 0;
	DIR *dir;
	int r;

	snprintf(path, sizeof(path), "%s" UIO_CLASS, root);
	dir = opendir(path);
	if (!dir)
		return errno == ENOENT ? 0 : -errno;
	while (n < max && (de = readdir(dir))) {
		struct tcmu_uio_dev *dev = &devs[n];

		if (strncmp(de->d_name, "uio", 3) ||
		    strlen(de->d_name) >= sizeof(dev->uio))
			continue;
		snprintf(path, sizeof(path), "%s" UIO_CLASS "/%s/name", root,
			 de->d_name);
		if (read_text(path, name, sizeof(name)) < 0)
			continue;
		memset(dev, 0, sizeof(*dev));
		if (tcmu_uio_parse_name(name, dev) < 0 ||
		    strcmp(dev->subtype, handler) ||
		    (only && strcmp(dev->dev, only)))
			continue;
		strcpy(dev->uio, de->d_name);
		/* One device being removed, or half made, must not keep the
		 * others from being served. */
		r = read_sizes(root, dev);
		if (r < 0) {
			if (skipped)
				skipped(dev, r, data);
			continue;
		}
		n++;
	}
	closedir(dir);
	qsort(devs, n, sizeof(*devs), by_uio);
	return (int)n;
}

int tcmu_uio_open(const char *root, const struct tcmu_uio_dev *dev, int *fdp,
		  void **mapp)
{
	char path[TCMU_NAME_MAX];
	void *map;
	int fd;

	if (!dev->map_size || dev->map_size > SIZE_MAX)
		return -EINVAL;
	snprintf(path, sizeof(path), "%s/dev/%s", root, dev->uio);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	/* uio lets any number of processes open a device: two daemons would
	 * both complete its commands.  One holds it, the other is told. */
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int r = errno == EWOULDBLOCK ? -EBUSY : -errno;

		close(fd);
		return r;
	}
	/*
	 * map0 is at offset 0 (uio maps N at N pages).  It is mapped
	 * inaccessible first, then opened up: under mlockall(MCL_FUTURE) the
	 * kernel drops VM_LOCKED (and VM_LOCKONFAULT) from this VM_DONTEXPAND
	 * mapping but still populates it, faulting in the whole ring and then
	 * the first data page, which target_core_user has not allocated
	 * ("Invalid addr to data page mapping" in the kernel's log).  Only
	 * pages the kernel put in an iovec are ours to touch.
	 */
	map = mmap(NULL, dev->map_size, PROT_NONE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED ||
	    mprotect(map, dev->map_size, PROT_READ | PROT_WRITE) < 0) {
		int r = -errno;

		if (map != MAP_FAILED)
			munmap(map, dev->map_size);
		close(fd);
		return r;
	}
	*fdp = fd;
	*mapp = map;
	return 0;
}
