// SPDX-License-Identifier: MIT
/*
 * The command ring of ioflusher-tcmu against a kernel that lays it out as
 * Linux 6.1 does (kernel.c), and against a kernel, or anyone else mapping
 * the device, that puts garbage in it: lengths, offsets, iovecs, cmd_head
 * and cmd_tail.  The daemon's view of the mapping sits between 4 GiB
 * guards of PROT_NONE, so that a stray access crashes the test, and every
 * pass made through harness_process() is checked for writes anywhere but
 * where the daemon may write.  Not checked for writes, only guarded: the
 * map of a full-size data area (too large to copy at each pass), the
 * passes a test makes by calling tcmu_ring_process() itself, and the
 * tests of the serving loop (tcmu_ring_serve()).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define LUN_SIZE (64ull << 20)
#define BS 512

static struct harness h;

static void setup(void)
{
	harness_init(&h, &harness_small, LUN_SIZE, BS);
}

static void teardown(void)
{
	harness_fini(&h);
}

TestSuite(tcmu_ring, .init = setup, .fini = teardown);

static const uint8_t tur[6] = { 0 };

static void reinit(const struct kern_cfg *cfg)
{
	harness_fini(&h);
	harness_init(&h, cfg, LUN_SIZE, BS);
}

static int queue(const uint8_t *cdb, unsigned int len, enum kern_dir dir,
		 const void *out, uint64_t n)
{
	int id = kern_queue(&h.k, cdb, len, dir, out, n);

	cr_assert_gt(id, 0, "kern_queue: %s", strerror(-id));
	return id;
}

static int queue_read(uint64_t lba, uint32_t nb)
{
	uint8_t cdb[16];

	cdb_rw(cdb, 16, false, lba, nb);
	return queue(cdb, 16, KERN_FROM_DEV, NULL, (uint64_t)nb * BS);
}

static int queue_write(uint64_t lba, uint32_t nb, const void *buf)
{
	uint8_t cdb[16];

	cdb_rw(cdb, 16, true, lba, nb);
	return queue(cdb, 16, KERN_TO_DEV, buf, (uint64_t)nb * BS);
}

static struct tcmu_cmd_entry *entry_of(int id)
{
	return (void *)kern_entry(&h.k, kern_cmd(&h.k, id)->entry_off);
}

static void expect_broken(void);

/* Process, expecting r, and reap what the daemon completed. */
static void pass(int expect)
{
	int r;

	kern_notify(&h.k);
	r = harness_process(&h);
	cr_assert_eq(r, expect, "tcmu_ring_process: %d, expected %d", r,
		     expect);
	if (r > 0) {
		cr_assert_eq(kern_take_notify(&h.k), 1);
		cr_assert_geq(kern_complete(&h.k), r);
	} else {
		cr_assert_eq(kern_take_notify(&h.k), 0,
			     "told the kernel of nothing");
	}
}

static void fill(uint8_t *buf, size_t len, unsigned int seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(seed * 31 + i * 13 + (i >> 8));
}

/* ---------------------------------------------------------------- layout */

Test(tcmu_ring, attaches_to_the_layout_of_linux_6_1)
{
	/* dev_size=16777216, defaults: map0 is 0x40800000 bytes, the ring
	 * ends at 8 MiB and the data area is 1 GiB. */
	const struct kern_cfg cfg = { .cmd_area = 8 << 20,
				      .data_area = 1 << 30,
				      .guard = 4ull << 30 };
	uint8_t buf[64 * 1024];
	struct kern_cmd *c;

	harness_fini(&h);
	harness_init(&h, &cfg, 16 << 20, 512);
	h.unchecked = true; /* 1 GiB would be copied for every command */
	cr_assert_eq(h.k.map_size, 0x40800000);
	cr_assert_eq(h.ring.cmdr_off, 128);
	cr_assert_eq(h.ring.cmdr_size, (8 << 20) - 128);
	cr_assert_eq(h.ring.data_off, 8 << 20);
	cr_assert_eq(h.lun.max_xfer_blocks, (1 << 20) / 512);
	expect_good(harness_run(&h, tur, 6, KERN_NONE, NULL, 0));
	fill(buf, sizeof(buf), 1);
	c = harness_run(&h, (uint8_t[10]){ 0x2a, 0, 0, 0, 0, 8, 0, 0, 128 }, 10,
			KERN_TO_DEV, buf, sizeof(buf));
	expect_good(c);
	c = harness_run(&h, (uint8_t[10]){ 0x28, 0, 0, 0, 0, 8, 0, 0, 128 }, 10,
			KERN_FROM_DEV, NULL, sizeof(buf));
	expect_good(c);
	cr_assert_arr_eq(c->in, buf, sizeof(buf));
}

static int reattach(void)
{
	struct tcmu_ring ring;

	return tcmu_ring_init(&ring, h.k.u, h.k.map_size, &h.lun,
			      &tcmu_port_ops, &h.port);
}

Test(tcmu_ring, refuses_a_mailbox_whose_ring_is_not_in_the_map)
{
	struct tcmu_mailbox *mb = (void *)h.k.k, saved = *mb;
	struct tcmu_ring ring;
	static const struct {
		uint32_t off, size;
	} bad[] = {
		{ 0, 4096 }, /* over the mailbox */
		{ 64, 4096 }, /* still over it */
		{ 132, 4096 }, /* not aligned */
		{ 128, 4092 }, /* a size not aligned */
		{ 128, 0 }, /* no ring */
		{ 128, 128 }, /* no room for two entries */
		{ 128, 0xfffffff8u }, /* off + size wraps 32 bits */
		{ 0xfffff000u, 4096 }, /* past the map */
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		mb->cmdr_off = bad[i].off;
		mb->cmdr_size = bad[i].size;
		cr_assert_eq(reattach(), -EINVAL, "cmdr_off %u, cmdr_size %u",
			     bad[i].off, bad[i].size);
	}
	*mb = saved;
	mb->cmdr_size = (uint32_t)h.k.map_size; /* the ring ends past the map */
	cr_assert_eq(reattach(), -EINVAL);
	*mb = saved;
	mb->version = 1;
	cr_assert_eq(reattach(), -EPROTONOSUPPORT);
	*mb = saved;
	cr_assert_eq(tcmu_ring_init(&ring, h.k.u, 64, &h.lun, &tcmu_port_ops,
				    &h.port),
		     -EINVAL, "a map smaller than the mailbox");
	cr_assert_eq(reattach(), 0);
}

/* Found by the fuzzer: a ring that reaches into the data area, over pages
 * the kernel never allocated, inside the map all the same.  Reading an
 * entry there later was a SIGBUS that killed the daemon; such a layout is
 * refused when it is attached. */
Test(tcmu_ring, refuses_a_ring_over_data_pages_never_allocated)
{
	struct tcmu_mailbox *mb = (void *)h.k.k, saved = *mb;

	mb->cmdr_size = saved.cmdr_size + 8192;
	cr_assert_eq(reattach(), -EINVAL);
	*mb = saved;
	cr_assert_eq(reattach(), 0);
}

Test(tcmu_ring, refuses_a_cmd_head_or_cmd_tail_outside_the_ring)
{
	struct tcmu_mailbox *mb = (void *)h.k.k;
	static const uint32_t bad[] = { 3, 12, 0xfffffff8u };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		mb->cmd_tail = bad[i];
		cr_assert_eq(reattach(), -EUCLEAN, "cmd_tail %u", bad[i]);
		mb->cmd_tail = 0;
		mb->cmd_head = bad[i];
		cr_assert_eq(reattach(), -EUCLEAN, "cmd_head %u", bad[i]);
		mb->cmd_head = 0;
	}
	mb->cmd_tail = h.k.cmdr_size;
	cr_assert_eq(reattach(), -EUCLEAN, "cmd_tail at the ring's size");
}

/* ---------------------------------------------------------------- the ring */

Test(tcmu_ring, completes_a_batch_with_one_notification)
{
	int ids[60];

	for (int i = 0; i < 60; i++)
		ids[i] = i % 2 ? queue(tur, 6, KERN_NONE, NULL, 0) :
				 queue_read((uint64_t)i * 8, 8);
	pass(60);
	cr_assert_eq(h.ring.stats.notifies, 1);
	for (int i = 0; i < 60; i++)
		expect_good(kern_cmd(&h.k, ids[i]));
	cr_assert_eq(kern_mb_tail(&h.k), h.k.head);
}

Test(tcmu_ring, wraps_around_with_pad_entries)
{
	/* The smallest ring: two pages less the mailbox.  Entries of every
	 * size from 120 to 400 bytes (1 to 18 iovecs), so that the ring's
	 * end falls anywhere in them. */
	const struct kern_cfg cfg = { .cmd_area = 8192,
				      .data_area = 512 * 1024,
				      .guard = 4ull << 30,
				      .scatter = true };
	uint8_t buf[18 * 4096];

	reinit(&cfg);
	for (unsigned int i = 0; i < 600; i++) {
		uint32_t nb = 1 + (i * 7) % (18 * 8);
		uint64_t lba = (i * 97) % 10000;
		int w, r;

		fill(buf, (size_t)nb * BS, i);
		w = queue_write(lba, nb, buf);
		r = queue_read(lba, nb);
		pass(h.k.nentries);
		expect_good(kern_cmd(&h.k, w));
		expect_good(kern_cmd(&h.k, r));
		cr_assert_arr_eq(kern_cmd(&h.k, r)->in, buf, (size_t)nb * BS,
				 "round %u", i);
	}
	cr_assert_gt(h.ring.stats.pads, 20, "%llu PAD entries",
		     (unsigned long long)h.ring.stats.pads);
}

Test(tcmu_ring, ignores_a_cmd_tail_scribbled_over)
{
	struct tcmu_mailbox *mb = (void *)h.k.k;

	queue(tur, 6, KERN_NONE, NULL, 0);
	pass(1);
	/* Only we write cmd_tail; we never take it back from the map. */
	mb->cmd_tail = 0xdeadbeef;
	queue(tur, 6, KERN_NONE, NULL, 0);
	kern_notify(&h.k);
	cr_assert_eq(harness_process(&h), 1);
	cr_assert_eq(kern_mb_tail(&h.k), h.k.head, "the tail is ours again");
	cr_assert_eq(kern_complete(&h.k), 1);
}

Test(tcmu_ring, follows_a_reset_of_the_ring)
{
	int aborted[2], id;

	queue(tur, 6, KERN_NONE, NULL, 0);
	pass(1);
	/* reset_ring with two commands queued: the kernel aborts them and
	 * moves cmd_tail to cmd_head; they must not be answered. */
	aborted[0] = queue_read(0, 8);
	aborted[1] = queue_read(8, 8);
	kern_reset_ring(&h.k);
	id = queue_read(16, 8);
	pass(1);
	expect_good(kern_cmd(&h.k, id));
	/* (their entries and blocks were not written: the write check) */
	cr_assert_neq(kern_cmd(&h.k, id)->entry_off,
		      kern_cmd(&h.k, aborted[1])->entry_off);
	cr_assert_eq(h.ring.stats.resets, 1);
	cr_assert_eq(h.ring.stats.cmds, 2);
}

Test(tcmu_ring, a_ring_broken_at_offset_0_is_taken_up_after_reset_ring)
{
	int bad = queue(tur, 6, KERN_NONE, NULL, 0), ids[3];

	/* The first entry of a fresh ring breaks it: cmd_tail is 0, ours
	 * and the kernel's. */
	cr_assert_eq(kern_cmd(&h.k, bad)->entry_off, 0);
	kern_set_len_op(entry_of(bad), 0, TCMU_OP_CMD);
	expect_broken();
	/* reset_ring: head and tail back to 0, which is where cmd_tail
	 * already was, and commands that waited for room queued at once
	 * from 0, so that cmd_head is not 0 either. */
	kern_reset_ring(&h.k);
	for (int i = 0; i < 3; i++)
		ids[i] = queue_read((uint64_t)i * 8, 8);
	cr_assert_neq(h.k.head, 0);
	pass(3);
	for (int i = 0; i < 3; i++)
		expect_good(kern_cmd(&h.k, ids[i]));
	cr_assert_not(h.ring.broken);
	cr_assert_eq(h.ring.stats.breaks, 1);
	cr_assert_eq(h.ring.stats.resets, 1);
}

Test(tcmu_ring, a_broken_ring_whose_entry_is_whole_again_goes_on)
{
	int id = queue(tur, 6, KERN_NONE, NULL, 0);
	uint32_t len = kern_cmd(&h.k, id)->entry_len;

	kern_set_len_op(entry_of(id), 0, TCMU_OP_CMD);
	expect_broken();
	/* whoever scribbled over it wrote it back */
	kern_set_len_op(entry_of(id), len, TCMU_OP_CMD);
	pass(1);
	expect_good(kern_cmd(&h.k, id));
	cr_assert_not(h.ring.broken);
}

/*
 * A kernel that resets the ring while the daemon is busy with a pass: in
 * cmd_get (the daemon has taken the entry, not yet answered it) or in
 * cmd_put (it has answered it, and is about to hand the tail back).
 */
static struct {
	int at; /* the call that resets */
	int calls;
	bool in_put;
	int fresh; /* the command queued after the reset */
} busy;
static struct tcmu_ring_ops busy_ops;

static void busy_reset(void)
{
	if (++busy.calls != busy.at)
		return;
	kern_reset_ring(&h.k);
	busy.fresh = queue_read(64, 8);
}

static struct tcmu_cmd *busy_get(void *data)
{
	if (!busy.in_put)
		busy_reset();
	return tcmu_port_ops.cmd_get(data);
}

static void busy_put(void *data, struct tcmu_cmd *cmd)
{
	tcmu_port_ops.cmd_put(data, cmd);
	if (busy.in_put)
		busy_reset();
}

static void reset_while_busy(bool in_put)
{
	int old[3];

	/* Entries well after offset 0, so that the one queued at 0 after
	 * the reset lies over none of them. */
	for (int i = 0; i < 6; i++)
		queue(tur, 6, KERN_NONE, NULL, 0);
	pass(6);
	busy_ops = tcmu_port_ops;
	busy_ops.cmd_get = busy_get;
	busy_ops.cmd_put = busy_put;
	busy.at = in_put ? 3 : 2;
	busy.calls = 0;
	busy.in_put = in_put;
	cr_assert_eq(tcmu_ring_init(&h.ring, h.k.u, h.k.map_size, &h.lun,
				    &busy_ops, &h.port),
		     0);
	for (int i = 0; i < 3; i++)
		old[i] = queue_read((uint64_t)i * 8, 8);
	cr_assert_gt(kern_cmd(&h.k, old[0])->entry_off,
		     kern_cmd(&h.k, old[0])->entry_len);
	kern_notify(&h.k);
	/* Not harness_process(): the reset took the old entries off the
	 * kernel's books, so the responses written to them before it (in
	 * cmd_put) would count as strays. */
	cr_assert_eq(tcmu_ring_process(&h.ring), 0, "the pass is void");
	cr_assert_eq(kern_mb_tail(&h.k), 0,
		     "the kernel's reset stands: cmd_tail is 0, not the "
		     "daemon's stale tail");
	cr_assert_eq(kern_take_notify(&h.k), 0);
	cr_assert_eq(kern_complete(&h.k), 0);
	cr_assert_not(kern_cmd(&h.k, busy.fresh)->done,
		      "the command queued after the reset was completed "
		      "without being run");
	/* and the next pass runs it, from 0 */
	pass(1);
	expect_good(kern_cmd(&h.k, busy.fresh));
	cr_assert_eq(kern_cmd(&h.k, busy.fresh)->read_len, 8 * BS);
	cr_assert_eq(h.ring.stats.resets, 1);
}

Test(tcmu_ring, a_reset_while_a_command_runs_voids_the_pass)
{
	reset_while_busy(false);
}

Test(tcmu_ring, a_reset_before_the_tail_is_handed_back_is_not_undone)
{
	reset_while_busy(true);
}

Test(tcmu_ring, a_restarted_daemon_resumes_at_cmd_tail)
{
	int id[5];

	for (int i = 0; i < 3; i++)
		queue(tur, 6, KERN_NONE, NULL, 0);
	pass(3);
	for (int i = 0; i < 5; i++)
		id[i] = queue_read((uint64_t)i, 1);
	/* the daemon restarts: a new attach to the same map */
	cr_assert_eq(tcmu_ring_init(&h.ring, h.k.u, h.k.map_size, &h.lun,
				    &tcmu_port_ops, &h.port),
		     0);
	pass(5);
	for (int i = 0; i < 5; i++)
		expect_good(kern_cmd(&h.k, id[i]));
}

Test(tcmu_ring, tmr_notifications_are_passed)
{
	uint16_t ids[2] = { 7, 9 };
	int id;

	cr_assert_geq(kern_queue_tmr(&h.k, TCMU_TMR_ABORT_TASK, ids, 2), 0);
	id = queue(tur, 6, KERN_NONE, NULL, 0);
	pass(2);
	cr_assert_eq(h.ring.stats.tmrs, 1);
	cr_assert_eq(h.k.raw_done, 1);
	cr_assert_eq(h.k.raw_uflags, 0, "a TMR entry is not an unknown op");
	expect_good(kern_cmd(&h.k, id));
}

Test(tcmu_ring, unknown_entry_ops_get_unknown_op)
{
	for (uint32_t op = 3; op <= 7; op++) {
		uint8_t e[64];
		int id;

		memset(e, 0x5a, sizeof(e));
		*(uint32_t *)(void *)e = (uint32_t)sizeof(e) | op;
		e[7] = 0;
		cr_assert_geq(kern_queue_raw(&h.k, e, sizeof(e)), 0);
		id = queue(tur, 6, KERN_NONE, NULL, 0);
		pass(2);
		cr_assert_eq(h.k.raw_uflags, TCMU_UFLAG_UNKNOWN_OP, "op %u",
			     op);
		expect_good(kern_cmd(&h.k, id));
	}
	cr_assert_eq(h.ring.stats.unknown, 5);
}

Test(tcmu_ring, a_cmd_entry_too_short_for_a_response_gets_unknown_op)
{
	uint8_t e[16] = { 0 };
	int id;

	*(uint32_t *)(void *)e = 16 | TCMU_OP_CMD;
	cr_assert_geq(kern_queue_raw(&h.k, e, sizeof(e)), 0);
	id = queue(tur, 6, KERN_NONE, NULL, 0);
	pass(2);
	cr_assert_eq(h.k.raw_uflags, TCMU_UFLAG_UNKNOWN_OP);
	expect_good(kern_cmd(&h.k, id));
}

/* ---------------------------------------------------------------- broken */

static void expect_broken(void)
{
	pass(-EUCLEAN);
	cr_assert(h.ring.broken);
	/* and it stays so, touching nothing, however often it is asked */
	pass(-EUCLEAN);
}

/* What reset_ring does; then the ring works again. */
static void expect_reset_recovers(void)
{
	int id;

	kern_reset_ring(&h.k);
	id = queue(tur, 6, KERN_NONE, NULL, 0);
	pass(1);
	expect_good(kern_cmd(&h.k, id));
	cr_assert_not(h.ring.broken);
	cr_assert_eq(h.ring.stats.resets, 1);
}

Test(tcmu_ring, breaks_on_a_cmd_head_outside_the_ring)
{
	queue(tur, 6, KERN_NONE, NULL, 0);
	kern_set_head(&h.k, h.k.cmdr_size + 8);
	expect_broken();
	kern_set_head(&h.k, 4);
	pass(-EUCLEAN);
	kern_set_head(&h.k, h.k.head);
	expect_reset_recovers();
}

Test(tcmu_ring, breaks_on_an_entry_of_length_zero)
{
	int id = queue(tur, 6, KERN_NONE, NULL, 0);

	kern_set_len_op(entry_of(id), 0, TCMU_OP_CMD);
	expect_broken();
	cr_assert_eq(kern_mb_tail(&h.k), 0, "nothing was completed");
	expect_reset_recovers();
}

Test(tcmu_ring, breaks_on_an_entry_longer_than_what_was_queued)
{
	int ok = queue(tur, 6, KERN_NONE, NULL, 0);
	int id = queue(tur, 6, KERN_NONE, NULL, 0);

	kern_set_len_op(entry_of(id), 4096, TCMU_OP_CMD);
	kern_notify(&h.k);
	cr_assert_eq(harness_process(&h), -EUCLEAN);
	/* the entry before it was completed, and handed back */
	cr_assert_eq(kern_take_notify(&h.k), 1);
	cr_assert_eq(kern_complete(&h.k), 1);
	expect_good(kern_cmd(&h.k, ok));
	cr_assert_eq(kern_mb_tail(&h.k), kern_cmd(&h.k, id)->entry_off);
	pass(-EUCLEAN);
	expect_reset_recovers();
}

Test(tcmu_ring, breaks_on_an_entry_past_the_end_of_the_ring)
{
	uint32_t end = h.k.cmdr_size - 128;
	int a, b;

	/* An empty ring 128 bytes before its end: a 120-byte entry fits,
	 * the next goes to 0 after an 8-byte PAD. */
	kern_move_to(&h.k, end);
	cr_assert_eq(tcmu_ring_init(&h.ring, h.k.u, h.k.map_size, &h.lun,
				    &tcmu_port_ops, &h.port),
		     0);
	a = queue(tur, 6, KERN_NONE, NULL, 0);
	b = queue(tur, 6, KERN_NONE, NULL, 0);
	cr_assert_eq(kern_cmd(&h.k, a)->entry_off, end);
	cr_assert_eq(kern_cmd(&h.k, b)->entry_off, 0);
	/* within what was queued, but across the ring's end */
	kern_set_len_op(entry_of(a), 128 + 120, TCMU_OP_CMD);
	expect_broken();
	kern_set_head(&h.k, h.k.head);
	expect_reset_recovers();
}

/* ---------------------------------------------------------------- hostile entries */

static void expect_malformed(int id)
{
	expect_sense(kern_cmd(&h.k, id), TCMU_SK_HARDWARE_ERROR,
		     TCMU_ASC_INTERNAL_TARGET_FAILURE);
}

Test(tcmu_ring, iovecs_outside_the_data_area_fail_the_command)
{
	const uint64_t m = h.k.map_size, d = h.k.data_off;
	const struct {
		uint64_t base, len;
	} bad[] = {
		{ 0, 4096 }, /* the mailbox */
		{ 128, 4096 }, /* the ring */
		{ d - 8, 4096 }, /* straddling the ring's end */
		{ m - 100, 4096 }, /* past the map's end */
		{ m, 4096 }, /* right after the map */
		{ m + 4096, 4096 }, /* in the guard */
		{ d, UINT64_MAX }, /* base + len wraps */
		{ UINT64_MAX - 10, 20 }, /* base wraps */
		{ 1ull << 62, 4096 }, /* anywhere */
		{ (uint64_t)-4096, 4096 }, /* just before address 0 */
	};
	uint8_t buf[8 * BS];

	fill(buf, sizeof(buf), 5);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = queue_read(0, 8), w = queue_write(0, 8, buf);

		entry_of(r)->req.iov[0].iov_base =
			(void *)(uintptr_t)bad[i].base;
		entry_of(r)->req.iov[0].iov_len = bad[i].len;
		entry_of(w)->req.iov[0].iov_base =
			(void *)(uintptr_t)bad[i].base;
		entry_of(w)->req.iov[0].iov_len = bad[i].len;
		pass(2);
		expect_malformed(r);
		expect_malformed(w);
	}
	cr_assert_eq(h.ring.stats.malformed, 2 * sizeof(bad) / sizeof(bad[0]));
	/* and the refused writes wrote nothing */
	{
		int r = queue_read(0, 8);
		uint8_t zero[8 * BS] = { 0 };

		pass(1);
		cr_assert_arr_eq(kern_cmd(&h.k, r)->in, zero, sizeof(zero));
	}
}

Test(tcmu_ring, an_iovec_on_a_data_page_never_allocated_is_a_hardware_error)
{
	/* Inside the data area, but a page the kernel never gave to any
	 * command: the last one.  Touching it is a SIGBUS. */
	const uint64_t never = h.k.map_size - 4096;
	uint8_t buf[8 * BS];
	int r, w, id;

	cr_assert_not(h.k.page[h.k.nblk - 1]);
	fill(buf, sizeof(buf), 6);
	r = queue_read(0, 8);
	w = queue_write(0, 8, buf);
	entry_of(r)->req.iov[0].iov_base = (void *)(uintptr_t)never;
	entry_of(w)->req.iov[0].iov_base = (void *)(uintptr_t)never;
	pass(2);
	expect_malformed(r);
	expect_malformed(w);
	cr_assert_eq(h.ring.stats.malformed, 2);
	/* and the daemon goes on serving */
	id = queue_read(0, 8);
	pass(1);
	expect_good(kern_cmd(&h.k, id));
}

Test(tcmu_ring, a_second_iovec_outside_fails_the_whole_command)
{
	const struct kern_cfg cfg = { .cmd_area = 64 * 1024,
				      .data_area = 4 << 20,
				      .guard = 4ull << 30,
				      .scatter = true };
	int id;

	reinit(&cfg);
	id = queue_read(0, 32); /* 4 pages, 4 iovecs */
	cr_assert_eq(kern_cmd(&h.k, id)->iov_cnt, 4);
	entry_of(id)->req.iov[3].iov_len = h.k.map_size;
	pass(1);
	expect_malformed(id);
}

Test(tcmu_ring, iovec_counts_beyond_the_entry_fail_the_command)
{
	const uint32_t counts[] = { 0xffffffffu, 0x80000000u, 5, 100 };

	for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
		int a = queue_read(0, 8), b = queue_read(0, 8),
		    c = queue_read(0, 8);

		/* the entry (128 bytes) has room for 5 iovecs */
		entry_of(a)->req.iov_cnt = counts[i];
		entry_of(b)->req.iov_bidi_cnt = counts[i];
		entry_of(c)->req.iov_dif_cnt = counts[i];
		pass(3);
		expect_malformed(a);
		expect_malformed(b);
		expect_malformed(c);
	}
}

Test(tcmu_ring, cdb_offsets_outside_the_entry_fail_the_command)
{
	for (int i = 0; i < 7; i++) {
		int id = queue_read(0, 8);
		struct kern_cmd *c = kern_cmd(&h.k, id);
		uint64_t start = h.k.cmdr_off + c->entry_off;
		uint64_t end = start + c->entry_len;
		uint64_t off[] = { 0,	       h.k.map_size, UINT64_MAX, start,
				   start + 48, end,	     end - 1 };

		entry_of(id)->req.cdb_off = off[i];
		/* the last byte of the entry says "READ (10)": cut short */
		h.k.k[end - 1] = 0x28;
		pass(1);
		expect_malformed(id);
	}
}

Test(tcmu_ring, more_iovecs_than_a_command_can_have_is_an_invalid_field)
{
	const struct kern_cfg cfg = { .cmd_area = 64 * 1024,
				      .data_area = 4 << 20,
				      .guard = 4ull << 30,
				      .scatter = true };
	int id;

	reinit(&cfg);
	id = queue_read(0, (TCMU_IOV_MAX + 1) * 8);
	cr_assert_eq(kern_cmd(&h.k, id)->iov_cnt, TCMU_IOV_MAX + 1);
	pass(1);
	expect_sense(kern_cmd(&h.k, id), TCMU_SK_ILLEGAL_REQUEST,
		     TCMU_ASC_INVALID_FIELD_IN_CDB);
}

Test(tcmu_ring, without_read_len_the_rest_of_the_buffer_is_zeros)
{
	const struct kern_cfg cfg = { .cmd_area = 64 * 1024,
				      .data_area = 4 << 20,
				      .guard = 4ull << 30,
				      .mb_flags = TCMU_MAILBOX_FLAG_CAP_OOOC };
	uint8_t junk[4096], inq[6] = { 0x12, 0, 0, 0x10, 0, 0 };
	struct kern_cmd *c;

	reinit(&cfg);
	memset(junk, 0xee, sizeof(junk));
	expect_good(harness_run(&h,
				(uint8_t[10]){ 0x2a, 0, 0, 0, 0, 0, 0, 0, 8 },
				10, KERN_TO_DEV, junk, sizeof(junk)));
	c = harness_run(&h, inq, 6, KERN_FROM_DEV, NULL, 4096);
	expect_good(c);
	cr_assert_eq(c->uflags & TCMU_UFLAG_READ_LEN, 0,
		     "READ_LEN is set only when the kernel can take it");
	cr_assert_eq(c->read_len, 4096);
	for (int i = 36; i < 4096; i++)
		cr_assert_eq(c->in[i], 0, "byte %d", i);
}

/* ---------------------------------------------------------------- serving */

struct server {
	pthread_t thread;
	int stop;
	unsigned int poll_us;
	atomic_int result;
	atomic_bool done;
};

static void *serve(void *arg)
{
	struct server *s = arg;

	s->result = tcmu_ring_serve(&h.ring, h.k.sock[1], s->stop, s->poll_us);
	s->done = true;
	return NULL;
}

static void start(struct server *s, unsigned int poll_us)
{
	memset(s, 0, sizeof(*s));
	s->poll_us = poll_us;
	s->stop = eventfd(0, EFD_CLOEXEC);
	cr_assert_geq(s->stop, 0);
	cr_assert_eq(pthread_create(&s->thread, NULL, serve, s), 0);
}

static int stop(struct server *s)
{
	uint64_t one = 1;

	cr_assert_eq(write(s->stop, &one, sizeof(one)), sizeof(one));
	pthread_join(s->thread, NULL);
	close(s->stop);
	return s->result;
}

/* The daemon's notification, as the kernel gets its irqcontrol. */
static bool wait_notify(int ms)
{
	struct pollfd p = { .fd = h.k.sock[0], .events = POLLIN };

	return poll(&p, 1, ms) == 1 && kern_take_notify(&h.k);
}

static void serve_rounds(int rounds)
{
	uint8_t buf[16 * BS];

	for (int i = 0; i < rounds; i++) {
		uint32_t nb = 1 + (uint32_t)i % 16;
		int w, r, reaped = 0;

		fill(buf, sizeof(buf), (unsigned int)i);
		w = queue_write((uint64_t)i * 16, nb, buf);
		r = queue_read((uint64_t)i * 16, nb);
		cr_assert_eq(kern_notify(&h.k), 0);
		while (reaped < 2) {
			int n;

			cr_assert(wait_notify(5000),
				  "no completion within 5 s, round %d", i);
			n = kern_complete(&h.k);
			cr_assert_geq(n, 0);
			reaped += n;
		}
		expect_good(kern_cmd(&h.k, w));
		expect_good(kern_cmd(&h.k, r));
		cr_assert_arr_eq(kern_cmd(&h.k, r)->in, buf, (size_t)nb * BS);
	}
}

Test(tcmu_ring, serves_over_the_notification_fd)
{
	struct server s;

	start(&s, 0);
	serve_rounds(300);
	cr_assert_eq(stop(&s), 0);
	/* and with polling between batches */
	start(&s, 50);
	serve_rounds(300);
	cr_assert_eq(stop(&s), 0);
}

Test(tcmu_ring, serving_ends_when_the_device_goes)
{
	struct server s;

	start(&s, 0);
	serve_rounds(3);
	/* uio's fd of a removed device: poll reports it, read fails */
	close(h.k.sock[0]);
	h.k.sock[0] = -1;
	pthread_join(s.thread, NULL);
	close(s.stop);
	cr_assert_eq(s.result, -ENODEV);
}

/* An initiator that never pauses: each notification of completions
 * reaps them and queues the next command, so that every pass leaves one
 * pending and the serving loop never needs to poll(2). */
static atomic_int busy_passes;

static int notify_and_queue(void *data)
{
	int r = tcmu_port_ops.notify(data);
	uint8_t events[4096];

	busy_passes++;
	/* uio's event count is a counter, where the emulator's are 4-byte
	 * messages: left unread by a loop that never polls, they would fill
	 * the socket. */
	while (recv(h.k.sock[1], events, sizeof(events), MSG_DONTWAIT) > 0)
		;
	if (r == 0 && kern_take_notify(&h.k) >= 0 && kern_complete(&h.k) >= 0 &&
	    queue_read(0, 1) < 0)
		r = -EIO;
	return r;
}

Test(tcmu_ring, a_stop_is_seen_while_commands_keep_coming, .timeout = 60)
{
	struct tcmu_ring_ops ops = tcmu_port_ops;
	struct server s;

	ops.notify = notify_and_queue;
	h.ring.ops = &ops;
	cr_assert_geq(queue_read(0, 1), 0);
	start(&s, 0);
	/* Without a look at stop_fd between passes, this never returns. */
	cr_assert_eq(stop(&s), 0);
	cr_assert_geq(busy_passes, 64, "%d passes: the ring ran dry",
		      (int)busy_passes);
}

static int notify_nothing(void *data)
{
	return 0;
}

Test(tcmu_ring,
     a_daemon_started_again_hands_back_what_its_predecessor_completed)
{
	struct tcmu_ring_ops dying = tcmu_port_ops;
	struct server s;
	int ids[3];

	/* The first daemon completes three commands and dies after its
	 * store of cmd_tail, before its 4-byte write. */
	dying.notify = notify_nothing;
	cr_assert_eq(tcmu_ring_init(&h.ring, h.k.u, h.k.map_size, &h.lun,
				    &dying, &h.port),
		     0);
	for (int i = 0; i < 3; i++)
		ids[i] = queue_read((uint64_t)i, 1);
	kern_notify(&h.k);
	cr_assert_eq(harness_process(&h), 3);
	cr_assert_eq(kern_take_notify(&h.k), 0);
	/* The next one finds an empty ring: cmd_tail is cmd_head. */
	cr_assert_eq(tcmu_ring_init(&h.ring, h.k.u, h.k.map_size, &h.lun,
				    &tcmu_port_ops, &h.port),
		     0);
	start(&s, 0);
	cr_assert(wait_notify(5000),
		  "the kernel was never told of the completions");
	cr_assert_eq(kern_complete(&h.k), 3);
	for (int i = 0; i < 3; i++)
		expect_good(kern_cmd(&h.k, ids[i]));
	cr_assert_eq(stop(&s), 0);
}

static atomic_int get_failures;

static struct tcmu_cmd *get_or_fail(void *data)
{
	if (atomic_fetch_sub(&get_failures, 1) > 0)
		return NULL;
	return tcmu_port_ops.cmd_get(data);
}

Test(tcmu_ring, entries_left_for_want_of_command_state_are_taken_later)
{
	static struct tcmu_ring_ops ops;
	struct server s;
	int id;

	ops = tcmu_port_ops;
	ops.cmd_get = get_or_fail;
	cr_assert_eq(tcmu_ring_init(&h.ring, h.k.u, h.k.map_size, &h.lun, &ops,
				    &h.port),
		     0);
	start(&s, 0);
	cr_assert(wait_notify(5000), "the first notification");
	/* One notification for the command, as the kernel sends it; the
	 * first passes find no command state. */
	atomic_store(&get_failures, 4);
	id = queue(tur, 6, KERN_NONE, NULL, 0);
	cr_assert_eq(kern_notify(&h.k), 0);
	cr_assert(wait_notify(5000),
		  "the command waits in the ring until the next notification");
	cr_assert_eq(kern_complete(&h.k), 1);
	expect_good(kern_cmd(&h.k, id));
	cr_assert_eq(stop(&s), 0);
}

Test(tcmu_ring, a_device_removed_under_the_notification_is_enodev)
{
	int efd;

	/* An eventfd answers a 4-byte write() with EINVAL, as uio_write()
	 * does for a device unregistered under an open fd. */
	efd = eventfd(0, EFD_CLOEXEC);
	cr_assert_geq(efd, 0, "%s", strerror(errno));
	h.port.fd = efd;
	queue(tur, 6, KERN_NONE, NULL, 0);
	cr_assert_eq(harness_process(&h), -ENODEV);
	h.port.fd = h.k.sock[1];
	close(efd);
}

Test(tcmu_ring, a_notification_answered_eio_is_enodev)
{
	int master, slave;

	/* A hung-up terminal answers write() with EIO, as uio_read() does
	 * for a device unregistered under an open fd. */
	master = posix_openpt(O_RDWR | O_NOCTTY);
	if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0)
		cr_skip("no pseudo-terminal here: %s", strerror(errno));
	slave = open(ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
	cr_assert_geq(slave, 0, "%s", strerror(errno));
	h.port.fd = slave;
	queue(tur, 6, KERN_NONE, NULL, 0);
	close(master);
	cr_assert_eq(harness_process(&h), -ENODEV);
	h.port.fd = h.k.sock[1];
	close(slave);
}

struct scribbler {
	atomic_bool stop;
	unsigned int seed;
};

static void *scribble(void *arg)
{
	struct scribbler *sc = arg;
	uint8_t *ring = h.k.k + h.k.cmdr_off;

	while (!sc->stop) {
		unsigned int r = (unsigned int)rand_r(&sc->seed);
		uint32_t head = __atomic_load_n(&h.k.head, __ATOMIC_RELAXED);
		uint32_t off;

		if (r % 997 == 0) {
			/* the mailbox: cmdr_off, cmdr_size, cmd_head */
			((volatile uint32_t *)(void *)h.k.k)[r % 3 + 1] =
				(uint32_t)rand_r(&sc->seed);
			continue;
		}
		/* Mostly the entries just queued, a word at a time: lengths,
		 * counts, offsets, iovecs. */
		off = r % 4 ? (head + h.k.cmdr_size - 8 - 8 * ((r >> 4) % 64)) %
				      h.k.cmdr_size :
			      (r >> 4) % h.k.cmdr_size & ~7u;
		((volatile uint32_t *)(void *)(ring + off))[(r >> 12) & 1] =
			(r >> 14) % 3 ? (uint32_t)rand_r(&sc->seed) :
					(uint32_t)rand_r(&sc->seed) % 4096;
		usleep(r % 8 ? 0 : 1);
	}
	return NULL;
}

/* Commands to complete once the scribbling has done damage. */
#define SCRIBBLED_CMDS 5000

/* A stat the server thread counts, read while it runs: one aligned word,
 * which a relaxed load takes whole. */
static uint64_t stat_now(const uint64_t *stat)
{
	return __atomic_load_n(stat, __ATOMIC_RELAXED);
}

Test(tcmu_ring, survives_anyone_scribbling_over_the_ring)
{
	struct scribbler sc = { .seed = 42 };
	const struct tcmu_ring_stats *st = &h.ring.stats;
	uint64_t cmds_then = 0;
	bool scribbled = false;
	pthread_t thread;
	struct server s;
	uint8_t buf[16 * BS];
	int rounds;

	start(&s, 0);
	cr_assert_eq(pthread_create(&thread, NULL, scribble, &sc), 0);
	fill(buf, sizeof(buf), 1);
	/* Until an amount of work is done, however long it takes: the
	 * scribbling has failed a command and broken the ring, and
	 * SCRIBBLED_CMDS commands were completed after both.  The cap on
	 * rounds is only there to fail a test that would never get there. */
	for (rounds = 0; rounds < 100000 && !s.done; rounds++) {
		uint8_t cdb[16];

		if (!scribbled && stat_now(&st->malformed) > 0 &&
		    stat_now(&st->breaks) > 0) {
			scribbled = true;
			cmds_then = stat_now(&st->cmds);
		}
		if (scribbled &&
		    stat_now(&st->cmds) >= cmds_then + SCRIBBLED_CMDS)
			break;
		/* A kernel that keeps queueing into the mess. */
		for (int i = 0; i < 8; i++) {
			cdb_rw(cdb, 16, i % 2, (uint64_t)i * 64, 16);
			if (kern_queue(&h.k, cdb, 16,
				       i % 2 ? KERN_TO_DEV : KERN_FROM_DEV, buf,
				       sizeof(buf)) < 0) {
				kern_reset_ring(&h.k);
				break;
			}
		}
		kern_notify(&h.k);
		wait_notify(2);
		if (kern_complete(&h.k) < 0)
			kern_reset_ring(&h.k);
	}
	sc.stop = true;
	pthread_join(thread, NULL);
	cr_assert_not(s.done, "the server stopped by itself: %d",
		      (int)s.result);
	cr_assert_eq(stop(&s), 0);
	cr_log_info("scribbled over: %d rounds, %llu commands, %llu "
		    "malformed, %llu unknown, %llu breaks, %llu resets",
		    rounds, (unsigned long long)st->cmds,
		    (unsigned long long)st->malformed,
		    (unsigned long long)st->unknown,
		    (unsigned long long)st->breaks,
		    (unsigned long long)st->resets);
	cr_assert(scribbled,
		  "after %d rounds, no command failed as malformed (%llu), "
		  "or the ring never broke (%llu)",
		  rounds, (unsigned long long)st->malformed,
		  (unsigned long long)st->breaks);
	cr_assert_geq(st->cmds, cmds_then + SCRIBBLED_CMDS,
		      "after %d rounds, %llu commands completed since the "
		      "scribbling was first seen to fail one and break the "
		      "ring",
		      rounds, (unsigned long long)(st->cmds - cmds_then));
}

/* ---------------------------------------------------------------- the guard */

static void touch_in_child(volatile uint8_t *p, int sig)
{
	struct sigaction sa = { .sa_handler = SIG_DFL };
	pid_t pid;
	int status;

	fflush(NULL);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		/* SIGSEGV kills, whatever a sanitizer installed. */
		sigaction(SIGSEGV, &sa, NULL);
		sigaction(SIGBUS, &sa, NULL);
		(void)*p;
		_exit(0);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == sig,
		  "a read %p from the map did not fault with %s (status 0x%x)",
		  (void *)p, strsignal(sig), status);
}

Test(tcmu_ring, the_guard_pages_fault)
{
	/* Proof that the harness would catch a stray access: what lies
	 * right before, right after and gigabytes after the daemon's view
	 * of the map faults. */
	touch_in_child(h.k.u - 1, SIGSEGV);
	touch_in_child(h.k.u + h.k.map_size, SIGSEGV);
	touch_in_child(h.k.u + h.k.map_size + (3ull << 30), SIGSEGV);
}

Test(tcmu_ring, data_pages_never_allocated_fault_with_sigbus)
{
	int id = queue_read(0, 8);

	/* As tcmu_vma_fault() answers: a page the kernel gave a command
	 * maps, any other is a SIGBUS, and one outside a command kills
	 * whatever guard the process has. */
	pass(1);
	expect_good(kern_cmd(&h.k, id));
	cr_assert_eq(((volatile uint8_t *)h.k.u)[h.k.data_off], 0);
	touch_in_child(h.k.u + h.k.data_off + 4096, SIGBUS);
	touch_in_child(h.k.u + h.k.map_size - 1, SIGBUS);
}

/* ---------------------------------------------------------------- the write check */

/*
 * The check that every harness_process() and every strict pass of the
 * fuzzer make, kern_stray_writes(), is worth only what it catches: bytes
 * changed in the daemon's view after the snapshot, as the daemon would
 * write them, where it may and where it may not.
 */
struct books {
	uint64_t done_out; /* the Data-Out block of a WRITE completed */
	uint64_t entry; /* a READ queued: its entry, in the map */
	uint64_t in; /* its Data-In block */
	uint64_t out; /* a WRITE queued: its Data-Out block */
	uint64_t tmr; /* a TMR notification queued: its entry */
	uint64_t past_head; /* the ring where nothing is queued */
};

static void keep_books(struct books *b)
{
	uint8_t buf[8 * BS];
	int id[3], r, w, t;

	/* Three commands run and completed; the two queued next take the
	 * lowest blocks again, which leaves the WRITE's free. */
	fill(buf, sizeof(buf), 7);
	id[0] = queue_read(0, 8);
	id[1] = queue_read(8, 8);
	id[2] = queue_write(16, 8, buf);
	b->done_out = kern_cmd(&h.k, id[2])->iov_base[0];
	pass(3);
	for (int i = 0; i < 3; i++)
		expect_good(kern_cmd(&h.k, id[i]));
	r = queue_read(24, 8);
	w = queue_write(32, 8, buf);
	t = kern_queue_tmr(&h.k, TCMU_TMR_ABORT_TASK, (uint16_t[]){ 1 }, 1);
	cr_assert_geq(t, 0);
	b->entry = h.k.cmdr_off + kern_cmd(&h.k, r)->entry_off;
	b->in = kern_cmd(&h.k, r)->iov_base[0];
	b->out = kern_cmd(&h.k, w)->iov_base[0];
	b->tmr = h.k.cmdr_off + (uint64_t)t;
	b->past_head = h.k.cmdr_off + h.k.head;
	cr_assert(b->done_out != b->in && b->done_out != b->out,
		  "the completed WRITE's block was given again");
	/* Right after the response comes the READ's CDB. */
	cr_assert_eq(entry_of(r)->req.cdb_off,
		     b->entry + sizeof(struct tcmu_cmd_entry));
}

/* Change n bytes of the daemon's view after a snapshot, check, and put
 * them back: the bytes reported. */
static uint64_t strays_after(const uint64_t *off, size_t n, uint64_t *first)
{
	uint64_t strays;

	kern_snapshot(&h.k);
	for (size_t i = 0; i < n; i++)
		h.k.u[off[i]] ^= 0xff;
	strays = kern_stray_writes(&h.k, first);
	for (size_t i = 0; i < n; i++)
		h.k.u[off[i]] ^= 0xff;
	return strays;
}

Test(tcmu_ring, the_write_check_reports_a_byte_the_daemon_may_not_write)
{
	const uint64_t tail = offsetof(struct tcmu_mailbox, cmd_tail);
	struct books b;

	keep_books(&b);
	const uint64_t stray[] = {
		offsetof(struct tcmu_mailbox, cmd_head), /* the kernel's */
		tail - 1,
		tail + 4,
		b.entry + offsetof(struct tcmu_cmd_entry_hdr, kflags),
		b.entry + sizeof(struct tcmu_cmd_entry), /* the CDB */
		/* where a CMD entry's response would be */
		b.tmr + sizeof(struct tcmu_cmd_entry_hdr),
		b.past_head,
		b.done_out,
		b.done_out + h.k.blk_size - 1,
	};
	const size_t n = sizeof(stray) / sizeof(stray[0]);
	uint64_t first;

	for (size_t i = 0; i < n; i++) {
		first = UINT64_MAX;
		cr_assert_eq(strays_after(&stray[i], 1, &first), 1,
			     "a write at offset %llu of the map went unseen",
			     (unsigned long long)stray[i]);
		cr_assert_eq(first, stray[i]);
	}
	/* All of them: each counted, the first the lowest. */
	cr_assert_eq(strays_after(stray, n, &first), n);
	cr_assert_eq(first, stray[0]);
}

Test(tcmu_ring, the_write_check_passes_the_bytes_the_daemon_may_write)
{
	const uint64_t tail = offsetof(struct tcmu_mailbox, cmd_tail);
	const uint64_t uflags = offsetof(struct tcmu_cmd_entry_hdr, uflags);
	struct books b;

	keep_books(&b);
	const uint64_t may[] = {
		tail,
		tail + 1,
		tail + 2,
		tail + 3,
		b.entry + uflags,
		/* the response: status first, the sense buffer's end last */
		b.entry + sizeof(struct tcmu_cmd_entry_hdr),
		b.entry + sizeof(struct tcmu_cmd_entry) - 1,
		b.in,
		b.in + h.k.blk_size - 1,
		/* a Data-Out buffer is the command's too */
		b.out,
		b.out + h.k.blk_size - 1,
		b.tmr + uflags,
		/* and one that is not, the last */
		offsetof(struct tcmu_mailbox, cmd_head),
	};
	const size_t n = sizeof(may) / sizeof(may[0]);
	uint64_t first = UINT64_MAX;

	cr_assert_eq(strays_after(may, n - 1, &first), 0,
		     "a permitted write reported, the first at offset %llu",
		     (unsigned long long)first);
	/* Not blind to them either: the one stray among them is seen. */
	cr_assert_eq(strays_after(may, n, &first), 1);
	cr_assert_eq(first, may[n - 1]);
}
