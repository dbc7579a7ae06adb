// SPDX-License-Identifier: MIT
/*
 * Kernel mode: serve /dev/nbdX from this process, as qemu-nbd -c does.
 *
 * The kernel's nbd driver is the client.  It gets one end of a socketpair
 * (NBD_SET_SOCK) and speaks the transmission phase on it straight away:
 * there is no handshake, the size and flags are set by ioctl, and replies
 * are simple ones.  NBD_DO_IT then blocks in a thread of ours until the
 * device is disconnected.
 *
 * This is the loopback arrangement the io-flusher flag exists for: a
 * filesystem on /dev/nbdX writes back through this daemon, so if one of
 * our threads entered direct reclaim and waited for that writeback, it
 * would wait for itself.  The threads that serve the socket carry the flag
 * (nbd_thread_start), and the memory they need was locked at start-up.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nbd.h"

/* The ioctls of <linux/nbd.h>, which cannot be included beside nbd.h: it
 * declares the protocol's names too, older ones (struct nbd_request). */
#define NBD_IOCTL(n) _IO(0xab, n)
#define NBD_SET_SOCK NBD_IOCTL(0)
#define NBD_SET_BLKSIZE NBD_IOCTL(1)
#define NBD_DO_IT NBD_IOCTL(3)
#define NBD_CLEAR_SOCK NBD_IOCTL(4)
#define NBD_CLEAR_QUE NBD_IOCTL(5)
#define NBD_SET_SIZE_BLOCKS NBD_IOCTL(7)
#define NBD_DISCONNECT NBD_IOCTL(8)
#define NBD_SET_FLAGS NBD_IOCTL(10)

static void *doit_main(void *arg)
{
	struct nbd_kernel *k = arg;
	uint64_t one = 1;
	ssize_t w;

	nbd_stack_reserve(k->srv);
	/* Returns when the device is disconnected: NBD_DISCONNECT from us at
	 * shutdown, or from someone else (nbd-client -d); at once when the
	 * kernel refuses to start it. */
	if (ioctl(k->nbd_fd, NBD_DO_IT) < 0)
		atomic_store(&k->doit_err, errno);
	atomic_store(&k->doit_ended, true);
	ioctl(k->nbd_fd, NBD_CLEAR_QUE);
	ioctl(k->nbd_fd, NBD_CLEAR_SOCK);
	w = write(k->notify_fd, &one, sizeof(one));
	(void)w;
	return NULL;
}

int nbd_kernel_connect(struct nbd_server *srv, const char *dev, int notify_fd,
		       struct nbd_kernel *k)
{
	uint64_t size = srv->exp->size;
	unsigned long blksize;
	int sv[2], r;

	/* The device's size is counted in its blocks.  NBD_SET_BLKSIZE sets
	 * the logical and the physical block size both: 512, as qemu-nbd -c
	 * does, since a device of 4096-byte sectors would not read a
	 * partition table or a file system made for 512-byte sectors (ext4
	 * with 1 KiB blocks, XFS with 512-byte sectors). */
	if (size % 512)
		return -EINVAL;
	blksize = 512;

	k->notify_fd = notify_fd;
	k->running = false;
	k->srv = srv;
	atomic_store(&k->doit_err, 0);
	atomic_store(&k->doit_ended, false);
	if (k->nbd_fd < 0 && nbd_kernel_open(dev, k) < 0)
		return -errno;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		r = -errno;
		goto fail_fd;
	}
	/* The socket first: the kernel gives a device to one task at a time,
	 * and refuses NBD_SET_SOCK with EBUSY while another one sets it up or
	 * serves it, also one that died under a filesystem still mounted on
	 * it.  Never NBD_CLEAR_SOCK before it succeeds: that would cut a live
	 * server's connection, and fail the IO of the filesystem it serves;
	 * nor set the size first, which would resize a live device. */
	if (ioctl(k->nbd_fd, NBD_SET_SOCK, sv[0]) < 0) {
		r = -errno;
		goto fail_sock;
	}
	if (ioctl(k->nbd_fd, NBD_SET_BLKSIZE, blksize) < 0 ||
	    ioctl(k->nbd_fd, NBD_SET_SIZE_BLOCKS,
		  (unsigned long)(size / blksize)) < 0 ||
	    ioctl(k->nbd_fd, NBD_SET_FLAGS,
		  (unsigned long)nbd_export_tflags(srv->exp, false)) < 0) {
		r = -errno;
		goto fail_clear;
	}
	/* The server end is served before NBD_DO_IT: the kernel may read
	 * through it as soon as the device starts (udev's probe, the
	 * partition table at the device's next open). */
	r = nbd_server_add(srv, sv[1], false);
	if (r < 0)
		goto fail_clear;
	sv[1] = -1;
	k->sock = sv[0];
	/* It waits in NBD_DO_IT: a small stack. */
	r = nbd_thread_start(srv, &k->doit, NBD_SMALL_STACK, false, "nbd-do-it",
			     doit_main, k);
	if (r < 0) {
		nbd_server_shutdown(srv);
		goto fail_clear;
	}
	k->running = true;
	return 0;

fail_clear:
	ioctl(k->nbd_fd, NBD_CLEAR_SOCK);
fail_sock:
	close(sv[0]);
	if (sv[1] >= 0)
		close(sv[1]);
fail_fd:
	close(k->nbd_fd);
	k->nbd_fd = -1;
	return r;
}

int nbd_kernel_open(const char *dev, struct nbd_kernel *k)
{
	k->nbd_fd = open(dev, O_RDWR | O_CLOEXEC);
	return k->nbd_fd < 0 ? -errno : 0;
}

/*
 * NBD_DO_IT starts the device, and only then does the kernel give it its
 * size (nbd_start_device()); then it waits in the kernel.  The device is
 * ready for a mount once it has its size, and never will be if NBD_DO_IT
 * returned first.  Its partitions are scanned later, at its next open
 * (udev's, after the change event).
 */
int nbd_kernel_wait_started(struct nbd_kernel *k, int timeout_ms)
{
	uint64_t bytes = 0,
		 deadline = nbd_now_ns() + (uint64_t)timeout_ms * 1000000u;

	for (;;) {
		if (ioctl(k->nbd_fd, BLKGETSIZE64, &bytes) == 0 && bytes)
			return 0;
		if (atomic_load(&k->doit_ended)) {
			int err = atomic_load(&k->doit_err);

			return -(err ? err : EIO);
		}
		if (nbd_now_ns() >= deadline)
			return -ETIMEDOUT;
		usleep(1000);
	}
}

void nbd_kernel_disconnect(struct nbd_kernel *k)
{
	/* The kernel sends NBD_CMD_DISC, our connection ends, NBD_DO_IT
	 * returns; needs CAP_SYS_ADMIN, which is kept for it. */
	if (k->running)
		ioctl(k->nbd_fd, NBD_DISCONNECT);
}

void nbd_kernel_wait(struct nbd_kernel *k)
{
	if (!k->running) {
		/* Opened, and the start failed before it connected. */
		if (k->nbd_fd >= 0)
			close(k->nbd_fd);
		k->nbd_fd = -1;
		return;
	}
	pthread_join(k->doit, NULL);
	k->running = false;
	close(k->sock);
	close(k->nbd_fd);
	k->nbd_fd = -1;
}
