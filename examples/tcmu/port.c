// SPDX-License-Identifier: MIT
/*
 * Per-command state comes from a libioflusher mempool: allocated, written
 * and locked at start-up, so that taking a command off the ring never asks
 * the kernel for memory, which could wait for the very IO this daemon
 * serves.  Each ring thread holds one command at a time and the pool
 * holds two per ring, so a thread never waits for one in practice; if it
 * had to, it would wait rather than fail the command.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include "port.h"

static struct tcmu_cmd *port_get(void *data)
{
	struct tcmu_port *port = data;
	void *elem;

	if (ioflusher_mempool_alloc_timeout(port->pool, &elem,
					    IOFLUSHER_MEMPOOL_FOREVER) < 0)
		return NULL;
	return elem;
}

static void port_put(void *data, struct tcmu_cmd *cmd)
{
	struct tcmu_port *port = data;

	ioflusher_mempool_free_elem(port->pool, cmd);
}

static int port_notify(void *data)
{
	struct tcmu_port *port = data;
	uint32_t one = 1;
	ssize_t n;

	/* uio's irqcontrol: the kernel then reaps completions up to
	 * cmd_tail (tcmu_irqcontrol in target_core_user.c). */
	do
		n = write(port->fd, &one, sizeof(one));
	while (n < 0 && errno == EINTR);
	/* Once the device is unregistered under the open fd, uio_write()
	 * finds its info gone and answers EINVAL (drivers/uio/uio.c; the
	 * length, the only other EINVAL, is right): a removed device, as
	 * poll's POLLERR is.  EIO is uio's answer for a device without an
	 * interrupt, which a TCMU device is not, and read()'s for one
	 * removed: taken as removal too. */
	if (n < 0)
		return errno == EINVAL || errno == EIO ? -ENODEV : -errno;
	return n == sizeof(one) ? 0 : -EIO;
}

static void port_broken(void *data, const char *why)
{
	struct tcmu_port *port = data;

	fprintf(stderr,
		"%s: command ring broken (%s): nothing is completed until "
		"the entry at cmd_tail fits again (action/reset_ring)\n",
		port->name, why);
}

const struct tcmu_ring_ops tcmu_port_ops = {
	.cmd_get = port_get,
	.cmd_put = port_put,
	.notify = port_notify,
	.broken = port_broken,
};

int tcmu_port_pool_new(struct ioflusher_ctx *ctx, unsigned int rings,
		       bool unlocked_ok, struct ioflusher_mempool **poolp)
{
	return ioflusher_mempool_new(
		ctx, 2 * (size_t)rings, sizeof(struct tcmu_cmd), 64, 0,
		unlocked_ok ? IOFLUSHER_MEMPOOL_UNLOCKED_OK : 0, poolp);
}
