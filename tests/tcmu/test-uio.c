// SPDX-License-Identifier: MIT
/*
 * Finding TCMU devices: the uio names of tcmu-design.rst, and a sysfs,
 * configfs and /dev laid out in a directory as a 6.1 kernel lays them
 * out for `dev_config=ioflusher/mem` (the uio "name" file, maps/map0/size
 * in hex, attrib/hw_block_size and attrib/dev_size).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tcmu.h"

Test(tcmu_uio, parses_the_names_of_tcmu_devices)
{
	struct tcmu_uio_dev d;

	cr_assert_eq(tcmu_uio_parse_name("tcm-user/0/disk0/ioflusher/mem", &d),
		     0);
	cr_assert_eq(d.hba, 0);
	cr_assert_str_eq(d.dev, "disk0");
	cr_assert_str_eq(d.subtype, "ioflusher");
	cr_assert_str_eq(d.config, "mem");
	/* the config is the rest, slashes and all */
	cr_assert_eq(tcmu_uio_parse_name(
			     "tcm-user/12/lun.a/ioflusher/file//srv/a b.img",
			     &d),
		     0);
	cr_assert_eq(d.hba, 12);
	cr_assert_str_eq(d.dev, "lun.a");
	cr_assert_str_eq(d.config, "file//srv/a b.img");
}

Test(tcmu_uio, refuses_other_names)
{
	static const char *const bad[] = {
		"uio_pci_generic",
		"tcm-user",
		"tcm-user/",
		"tcm-user/x/disk0/ioflusher/mem",
		"tcm-user/-1/disk0/ioflusher/mem",
		"tcm-user/99999999999/disk0/ioflusher/mem",
		"tcm-user/0/disk0/ioflusher",
		"tcm-user/0/disk0/ioflusher/",
		"tcm-user/0//ioflusher/mem",
		"tcm-user/0/disk0//mem",
		"tcm-user/0/../ioflusher/mem",
		"tcm-user/0/./ioflusher/mem",
		"tcm-user0/disk0/ioflusher/mem",
	};
	struct tcmu_uio_dev d;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(tcmu_uio_parse_name(bad[i], &d), -EINVAL, "%s",
			     bad[i]);
}

static char root[64];

static void put(const char *rel, const char *text)
{
	char path[512], dir[512], *slash;
	FILE *f;

	snprintf(path, sizeof(path), "%s%s", root, rel);
	strcpy(dir, path);
	slash = strrchr(dir, '/');
	*slash = '\0';
	for (char *p = dir + strlen(root) + 1; (p = strchr(p, '/')); p++) {
		*p = '\0';
		mkdir(dir, 0755);
		*p = '/';
	}
	mkdir(dir, 0755);
	f = fopen(path, "w");
	cr_assert_not_null(f, "%s", path);
	fputs(text, f);
	fclose(f);
}

/* A uio device and, for a TCMU one, its configfs directory. */
static void device(int n, const char *name, unsigned int hba, const char *dev,
		   const char *bs, const char *size)
{
	char rel[256], text[512];

	snprintf(rel, sizeof(rel), "/sys/class/uio/uio%d/name", n);
	snprintf(text, sizeof(text), "%s\n", name);
	put(rel, text);
	snprintf(rel, sizeof(rel), "/sys/class/uio/uio%d/maps/map0/size", n);
	put(rel, "0x40800000\n");
	if (!dev)
		return;
	snprintf(rel, sizeof(rel),
		 "/sys/kernel/config/target/core/user_%u/%s/attrib/"
		 "hw_block_size",
		 hba, dev);
	put(rel, bs);
	if (!size)
		return;
	snprintf(rel, sizeof(rel),
		 "/sys/kernel/config/target/core/user_%u/%s/attrib/dev_size",
		 hba, dev);
	put(rel, size);
}

static void make_root(void)
{
	strcpy(root, "/tmp/tcmu-uio-XXXXXX");
	cr_assert_not_null(mkdtemp(root));
}

static void remove_root(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(tcmu_uio, .init = make_root, .fini = remove_root);

Test(tcmu_uio, finds_the_devices_of_its_handler)
{
	struct tcmu_uio_dev d[8];

	device(0, "uio_pci_generic", 0, NULL, NULL, NULL);
	device(10, "tcm-user/0/disk9/ioflusher/mem", 0, "disk9", "4096\n",
	       "33554432\n");
	device(2, "tcm-user/0/disk0/ioflusher/mem", 0, "disk0", "512\n",
	       "16777216\n");
	device(3, "tcm-user/1/other/tcmu-runner/file//x", 1, "other", "512\n",
	       "1048576\n");
	cr_assert_eq(tcmu_uio_scan(root, "ioflusher", NULL, d, 8, NULL, NULL),
		     2);
	/* in the order of their uio numbers, uio2 before uio10 */
	cr_assert_str_eq(d[0].uio, "uio2");
	cr_assert_str_eq(d[0].dev, "disk0");
	cr_assert_eq(d[0].map_size, 0x40800000);
	cr_assert_eq(d[0].block_size, 512);
	cr_assert_eq(d[0].dev_size, 16777216);
	cr_assert_str_eq(d[1].uio, "uio10");
	cr_assert_eq(d[1].block_size, 4096);
	cr_assert_eq(d[1].dev_size, 33554432);
	/* one device by its configfs name */
	cr_assert_eq(
		tcmu_uio_scan(root, "ioflusher", "disk9", d, 8, NULL, NULL), 1);
	cr_assert_str_eq(d[0].uio, "uio10");
	cr_assert_eq(tcmu_uio_scan(root, "ioflusher", "nope", d, 8, NULL, NULL),
		     0);
	/* at most what fits */
	cr_assert_eq(tcmu_uio_scan(root, "ioflusher", NULL, d, 1, NULL, NULL),
		     1);
	cr_assert_eq(tcmu_uio_scan(root, "tcmu-runner", NULL, d, 8, NULL, NULL),
		     1);
}

Test(tcmu_uio, reads_the_size_from_info_on_older_kernels)
{
	struct tcmu_uio_dev d[1];

	device(0, "tcm-user/0/old/ioflusher/mem", 0, "old", "512\n", NULL);
	put("/sys/kernel/config/target/core/user_0/old/info",
	    "Status: ACTIVATED  Max Queue Depth: 0  SectorSize: 512  "
	    "HwMaxSectors: 128\n        Config: ioflusher/mem Size: 8388608 "
	    "MaxDataAreaMB: 1024\n");
	cr_assert_eq(tcmu_uio_scan(root, "ioflusher", NULL, d, 1, NULL, NULL),
		     1);
	cr_assert_eq(d[0].dev_size, 8388608);
}

Test(tcmu_uio, no_uio_class_is_no_device)
{
	struct tcmu_uio_dev d[1];

	cr_assert_eq(tcmu_uio_scan(root, "ioflusher", NULL, d, 1, NULL, NULL),
		     0);
}

struct skips {
	int n;
	int err;
	char dev[TCMU_NAME_MAX];
};

static void note_skip(const struct tcmu_uio_dev *dev, int err, void *data)
{
	struct skips *s = data;

	s->n++;
	s->err = err;
	snprintf(s->dev, sizeof(s->dev), "%s", dev->dev);
}

Test(tcmu_uio, a_device_without_configfs_is_skipped)
{
	struct tcmu_uio_dev d[2];
	struct skips s = { 0 };

	/* Being removed: its configfs directory is gone already.  The
	 * other device is served all the same. */
	device(0, "tcm-user/0/gone/ioflusher/mem", 0, NULL, NULL, NULL);
	device(1, "tcm-user/0/disk1/ioflusher/mem", 0, "disk1", "512\n",
	       "1048576\n");
	cr_assert_eq(
		tcmu_uio_scan(root, "ioflusher", NULL, d, 2, note_skip, &s), 1);
	cr_assert_str_eq(d[0].dev, "disk1");
	cr_assert_eq(s.n, 1);
	cr_assert_eq(s.err, -ENOENT);
	cr_assert_str_eq(s.dev, "gone");
	/* a garbled size too */
	put("/sys/kernel/config/target/core/user_0/disk1/attrib/dev_size",
	    "lots\n");
	put("/sys/kernel/config/target/core/user_0/disk1/info", "Size: x\n");
	cr_assert_eq(
		tcmu_uio_scan(root, "ioflusher", NULL, d, 2, note_skip, &s), 0);
	cr_assert_eq(s.n, 3, "both skipped");
}

Test(tcmu_uio, maps_map0_of_the_device)
{
	struct tcmu_uio_dev d[1];
	char path[128];
	void *map;
	int fd;

	device(0, "tcm-user/0/disk0/ioflusher/mem", 0, "disk0", "512\n",
	       "16777216\n");
	put("/sys/class/uio/uio0/maps/map0/size", "0x10000\n");
	snprintf(path, sizeof(path), "%s/dev", root);
	mkdir(path, 0755);
	put("/dev/uio0", "");
	snprintf(path, sizeof(path), "%s/dev/uio0", root);
	cr_assert_eq(truncate(path, 0x10000), 0);
	cr_assert_eq(tcmu_uio_scan(root, "ioflusher", NULL, d, 1, NULL, NULL),
		     1);
	cr_assert_eq(tcmu_uio_open(root, &d[0], &fd, &map), 0);
	cr_assert_eq(((volatile uint8_t *)map)[0xffff], 0);
	munmap(map, 0x10000);
	cr_assert_geq(fcntl(fd, F_GETFD) & FD_CLOEXEC, 1);
	close(fd);
	unlink(path);
	cr_assert_eq(tcmu_uio_open(root, &d[0], &fd, &map), -ENOENT);
}

Test(tcmu_uio, backends_by_config)
{
	struct tcmu_backend *be;
	char path[128];

	cr_assert_eq(tcmu_backend_open("mem", 1 << 20, &be), 0);
	cr_assert_str_eq(be->ops->name, "mem");
	cr_assert_not(be->write_cache);
	tcmu_backend_close(be);
	snprintf(path, sizeof(path), "file/%s/lun.img", root);
	cr_assert_eq(tcmu_backend_open(path, 1 << 20, &be), 0);
	cr_assert_str_eq(be->ops->name, "file");
	cr_assert(be->write_cache);
	tcmu_backend_close(be);
	cr_assert_eq(tcmu_backend_open("file/relative.img", 1 << 20, &be),
		     -EINVAL);
	cr_assert_eq(tcmu_backend_open("file", 1 << 20, &be), -EINVAL);
	cr_assert_eq(tcmu_backend_open("rbd/pool/image", 1 << 20, &be),
		     -EINVAL);
	cr_assert_eq(tcmu_backend_open("mem", 0, &be), -EINVAL);
	snprintf(path, sizeof(path), "file/%s", root); /* a directory */
	cr_assert_eq(tcmu_backend_open(path, 1 << 20, &be), -EISDIR);
}

Test(tcmu_uio, the_file_backend_grows_a_short_file_and_keeps_a_long_one)
{
	struct tcmu_backend *be;
	char path[128];
	struct stat st;
	int fd;

	snprintf(path, sizeof(path), "%s/short.img", root);
	fd = open(path, O_CREAT | O_WRONLY, 0600);
	cr_assert_eq(write(fd, "x", 1), 1);
	close(fd);
	cr_assert_eq(tcmu_backend_file_open(path, 1 << 20, &be), 0);
	tcmu_backend_close(be);
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(st.st_size, 1 << 20);
	cr_assert_eq(tcmu_backend_file_open(path, 4096, &be), 0);
	cr_assert_eq(be->size, 4096);
	tcmu_backend_close(be);
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(st.st_size, 1 << 20);
}
