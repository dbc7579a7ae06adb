/* SPDX-License-Identifier: MIT */
/*
 * What the Criterion tests of tests/tcmu share: a kernel stand-in
 * (kernel.h) and the daemon's real ring, SCSI and backend code attached to
 * it, with the daemon's own callbacks (examples/tcmu/port.c: a
 * libioflusher mempool, and the "uio fd" being the kernel's socket).
 */
#ifndef IOFLUSHER_TCMU_TEST_HARNESS_H
#define IOFLUSHER_TCMU_TEST_HARNESS_H

#include <criterion/criterion.h>

#include "kernel.h"
#include "port.h"
#include "tcmu.h"

struct harness {
	struct kern k;
	struct tcmu_backend *be;
	struct tcmu_lun lun;
	struct tcmu_ring ring;
	struct tcmu_port port;
	struct ioflusher_mempool *pool;
	bool unchecked; /* no write check (a map too large to copy) */
};

/* 64 KiB command area, 4 MiB data area, 4 GiB guards. */
extern const struct kern_cfg harness_small;

/* A memory LUN of lun_size bytes in blocks of bs over the kernel of cfg. */
void harness_init(struct harness *h, const struct kern_cfg *cfg,
		  uint64_t lun_size, uint32_t bs);
/* The same over any backend. */
void harness_init_be(struct harness *h, const struct kern_cfg *cfg,
		     struct tcmu_backend *be, uint32_t bs);
void harness_fini(struct harness *h);

/* tcmu_ring_process() between a snapshot and the check that nothing was
 * written but where the daemon may write; its result. */
int harness_process(struct harness *h);
/* Queue, process, reap: the kernel's record of the completed command. */
struct kern_cmd *harness_run(struct harness *h, const uint8_t *cdb,
			     unsigned int cdb_len, enum kern_dir dir,
			     const void *out, uint64_t len);

void expect_good(const struct kern_cmd *c);
void expect_sense(const struct kern_cmd *c, uint8_t key, uint16_t asc);

/* CDB builders. */
void cdb_rw(uint8_t *cdb, unsigned int len, bool write, uint64_t lba,
	    uint32_t nb);

#endif /* IOFLUSHER_TCMU_TEST_HARNESS_H */
