// SPDX-License-Identifier: MIT
#include <errno.h>
#include <string.h>

#include "harness.h"

const struct kern_cfg harness_small = {
	.cmd_area = 64 * 1024,
	.data_area = 4 * 1024 * 1024,
	.guard = 4ull << 30,
};

void harness_init_be(struct harness *h, const struct kern_cfg *cfg,
		     struct tcmu_backend *be, uint32_t bs)
{
	int r;

	memset(h, 0, sizeof(*h));
	/* As the daemon does: data pages the kernel never allocated fault. */
	r = tcmu_ring_guard_init();
	cr_assert_eq(r, 0, "tcmu_ring_guard_init: %s", strerror(-r));
	r = kern_init(&h->k, cfg);
	cr_assert_eq(r, 0, "kern_init: %s", strerror(-r));
	h->be = be;
	r = tcmu_port_pool_new(NULL, 1, true, &h->pool);
	cr_assert_eq(r, 0, "pool: %s", strerror(-r));
	h->port.pool = h->pool;
	h->port.fd = h->k.sock[1];
	h->port.name = "harness";
	r = tcmu_ring_init(&h->ring, h->k.u, h->k.map_size, &h->lun,
			   &tcmu_port_ops, &h->port);
	cr_assert_eq(r, 0, "tcmu_ring_init: %s", strerror(-r));
	r = tcmu_lun_init(&h->lun, be, bs, h->k.data_size, "harness");
	cr_assert_eq(r, 0, "tcmu_lun_init: %s", strerror(-r));
}

void harness_init(struct harness *h, const struct kern_cfg *cfg,
		  uint64_t lun_size, uint32_t bs)
{
	struct tcmu_backend *be;
	int r;

	r = tcmu_backend_mem_open(lun_size, &be);
	cr_assert_eq(r, 0, "mem backend: %s", strerror(-r));
	harness_init_be(h, cfg, be, bs);
}

void harness_fini(struct harness *h)
{
	ioflusher_mempool_free(h->pool);
	tcmu_backend_close(h->be);
	kern_fini(&h->k);
}

int harness_process(struct harness *h)
{
	uint64_t first = 0, n;
	int r;

	if (h->unchecked)
		return tcmu_ring_process(&h->ring);
	kern_snapshot(&h->k);
	r = tcmu_ring_process(&h->ring);
	n = kern_stray_writes(&h->k, &first);
	cr_assert_eq(n, 0,
		     "the daemon wrote %llu bytes where it may not, the "
		     "first at offset %llu of the map",
		     (unsigned long long)n, (unsigned long long)first);
	return r;
}

struct kern_cmd *harness_run(struct harness *h, const uint8_t *cdb,
			     unsigned int cdb_len, enum kern_dir dir,
			     const void *out, uint64_t len)
{
	struct kern_cmd *c;
	int id, r;

	id = kern_queue(&h->k, cdb, cdb_len, dir, out, len);
	cr_assert_gt(id, 0, "kern_queue: %s", strerror(-id));
	cr_assert_eq(kern_notify(&h->k), 0);
	r = harness_process(h);
	cr_assert_geq(r, 1, "tcmu_ring_process: %d", r);
	cr_assert_eq(kern_take_notify(&h->k), 1,
		     "the daemon completed without telling the kernel");
	r = kern_complete(&h->k);
	cr_assert_geq(r, 1, "kern_complete: %d", r);
	c = kern_cmd(&h->k, id);
	cr_assert(c->done, "command %d was not completed", id);
	return c;
}

void expect_good(const struct kern_cmd *c)
{
	cr_assert_eq(c->status, TCMU_STATUS_GOOD,
		     "status 0x%02x, sense key 0x%x, ASC/ASCQ 0x%02x/0x%02x",
		     c->status, c->sense[2] & 0xf, c->sense[12], c->sense[13]);
}

void expect_sense(const struct kern_cmd *c, uint8_t key, uint16_t asc)
{
	cr_assert_eq(c->status, TCMU_STATUS_CHECK_CONDITION,
		     "status 0x%02x, expected CHECK CONDITION", c->status);
	cr_assert_eq(c->sense[0], 0x70, "sense response code 0x%02x",
		     c->sense[0]);
	cr_assert_eq(c->sense[7], 10, "additional sense length %u",
		     c->sense[7]);
	cr_assert_eq(c->sense[2] & 0xf, key,
		     "sense key 0x%x, expected 0x%x (ASC/ASCQ 0x%02x/0x%02x)",
		     c->sense[2] & 0xf, key, c->sense[12], c->sense[13]);
	cr_assert_eq(c->sense[12] << 8 | c->sense[13], asc,
		     "ASC/ASCQ 0x%02x/0x%02x, expected 0x%02x/0x%02x",
		     c->sense[12], c->sense[13], asc >> 8, asc & 0xff);
}

void cdb_rw(uint8_t *cdb, unsigned int len, bool write, uint64_t lba,
	    uint32_t nb)
{
	memset(cdb, 0, len);
	switch (len) {
	case 6:
		cdb[0] = write ? 0x0a : 0x08;
		cdb[1] = (uint8_t)(lba >> 16) & 0x1f;
		cdb[2] = (uint8_t)(lba >> 8);
		cdb[3] = (uint8_t)lba;
		cdb[4] = (uint8_t)nb; /* 0 is 256 */
		break;
	case 10:
		cdb[0] = write ? 0x2a : 0x28;
		for (int i = 0; i < 4; i++)
			cdb[2 + i] = (uint8_t)(lba >> (24 - 8 * i));
		cdb[7] = (uint8_t)(nb >> 8);
		cdb[8] = (uint8_t)nb;
		break;
	case 12:
		cdb[0] = write ? 0xaa : 0xa8;
		for (int i = 0; i < 4; i++) {
			cdb[2 + i] = (uint8_t)(lba >> (24 - 8 * i));
			cdb[6 + i] = (uint8_t)(nb >> (24 - 8 * i));
		}
		break;
	case 16:
		cdb[0] = write ? 0x8a : 0x88;
		for (int i = 0; i < 8; i++)
			cdb[2 + i] = (uint8_t)(lba >> (56 - 8 * i));
		for (int i = 0; i < 4; i++)
			cdb[10 + i] = (uint8_t)(nb >> (24 - 8 * i));
		break;
	}
}
