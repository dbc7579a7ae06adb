/* SPDX-License-Identifier: MIT */
/*
 * The ring callbacks of a served device: per-command state from a
 * libioflusher mempool, and the kernel told through the device's fd.
 * Kept apart from tcmu.h so that the ring, SCSI and backend files build
 * without libioflusher (the fuzzer links only those).
 */
#ifndef IOFLUSHER_TCMU_PORT_H
#define IOFLUSHER_TCMU_PORT_H

#include <stdbool.h>

#include <ioflusher.h>

#include "tcmu.h"

struct tcmu_port {
	struct ioflusher_mempool *pool;
	int fd; /* /dev/uioN: a 4-byte write tells the kernel */
	const char *name; /* for messages */
};

extern const struct tcmu_ring_ops tcmu_port_ops;

/* The pool for every ring of the daemon: two commands per ring thread. */
int tcmu_port_pool_new(struct ioflusher_ctx *ctx, unsigned int rings,
		       bool unlocked_ok, struct ioflusher_mempool **poolp);

#endif /* IOFLUSHER_TCMU_PORT_H */
