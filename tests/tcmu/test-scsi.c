// SPDX-License-Identifier: MIT
/*
 * The SCSI commands of ioflusher-tcmu, sent as the kernel sends them:
 * through the command ring of a map0 laid out by the kernel stand-in
 * (kernel.c), with every write of the daemon checked against where it may
 * write.  The answers are checked against SPC-4 and SBC-3, byte by byte
 * where an initiator reads them.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
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

TestSuite(tcmu_scsi, .init = setup, .fini = teardown);

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const uint8_t *p)
{
	return (uint64_t)be32(p) << 32 | be32(p + 4);
}

static uint16_t be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static void put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static void put_be32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static struct kern_cmd *inquiry(uint8_t evpd, uint8_t page, uint16_t alloc,
				uint64_t buf)
{
	uint8_t cdb[6] = { 0x12,	   evpd, page, (uint8_t)(alloc >> 8),
			   (uint8_t)alloc, 0 };

	return harness_run(&h, cdb, 6, KERN_FROM_DEV, NULL, buf);
}

/* The field pointer of INVALID FIELD IN CDB (SPC-4 4.5.2.4.2). */
static void expect_field(const struct kern_cmd *c, unsigned int byte)
{
	expect_sense(c, TCMU_SK_ILLEGAL_REQUEST, TCMU_ASC_INVALID_FIELD_IN_CDB);
	cr_assert_eq(c->sense[15] & 0xc0, 0xc0, "SKSV and C/D: 0x%02x",
		     c->sense[15]);
	cr_assert_eq(be16(c->sense + 16), byte, "field pointer %u, expected %u",
		     be16(c->sense + 16), byte);
}

static void fill(uint8_t *buf, size_t len, unsigned int seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 9));
}

static struct kern_cmd *rw(unsigned int cdb_len, bool write, uint64_t lba,
			   uint32_t nb, const void *out, uint64_t len)
{
	uint8_t cdb[16];

	cdb_rw(cdb, cdb_len, write, lba, nb);
	return harness_run(&h, cdb, cdb_len,
			   write ? KERN_TO_DEV : KERN_FROM_DEV, out, len);
}

/* ---------------------------------------------------------------- basics */

Test(tcmu_scsi, test_unit_ready_is_good)
{
	uint8_t cdb[6] = { 0 };

	expect_good(harness_run(&h, cdb, 6, KERN_NONE, NULL, 0));
}

Test(tcmu_scsi, request_sense_reports_no_sense)
{
	uint8_t cdb[6] = { 0x03, 0, 0, 0, 252, 0 };
	struct kern_cmd *c = harness_run(&h, cdb, 6, KERN_FROM_DEV, NULL, 252);

	expect_good(c);
	cr_assert_eq(c->read_len, 18);
	cr_assert_eq(c->in[0], 0x70);
	cr_assert_eq(c->in[2], 0);
	cr_assert_eq(c->in[7], 10);
	cdb[1] = 0x01; /* DESC */
	expect_field(harness_run(&h, cdb, 6, KERN_FROM_DEV, NULL, 252), 1);
}

Test(tcmu_scsi, unsupported_opcodes_are_invalid_command_operation_code)
{
	/* START STOP UNIT, MODE SELECT (10), VERIFY (16), a 32-byte
	 * variable length CDB, a vendor-specific opcode. */
	static const uint8_t ops[] = { 0x1b, 0x55, 0x8f, 0x7f, 0xc0 };

	for (size_t i = 0; i < sizeof(ops); i++) {
		uint8_t cdb[16] = { ops[i] };

		expect_sense(harness_run(&h, cdb, 16, KERN_NONE, NULL, 0),
			     TCMU_SK_ILLEGAL_REQUEST,
			     TCMU_ASC_INVALID_COMMAND_OPERATION_CODE);
	}
}

Test(tcmu_scsi, naca_in_the_control_byte_is_an_invalid_field)
{
	uint8_t cdb[10] = { 0x35 };

	cdb[9] = 0x04;
	expect_field(harness_run(&h, cdb, 10, KERN_NONE, NULL, 0), 9);
}

/* ---------------------------------------------------------------- INQUIRY */

Test(tcmu_scsi, inquiry_standard_data)
{
	struct kern_cmd *c = inquiry(0, 0, 255, 255);

	expect_good(c);
	/* 36 bytes, and the kernel told that the rest is residual. */
	cr_assert(c->uflags & TCMU_UFLAG_READ_LEN);
	cr_assert_eq(c->read_len, 36);
	cr_assert_eq(c->in[0], 0x00, "peripheral device type: disk");
	cr_assert_eq(c->in[1] & 0x80, 0, "not removable");
	cr_assert_eq(c->in[2], 0x06, "SPC-4");
	cr_assert_eq(c->in[3] & 0x0f, 2, "response data format 2");
	cr_assert_eq(c->in[4], 31, "additional length");
	cr_assert(c->in[7] & 0x02, "CMDQUE");
	cr_assert_arr_eq(c->in + 8, "IOFLUSHR", 8);
	cr_assert_arr_eq(c->in + 16, "ioflusher-tcmu  ", 16);
}

Test(tcmu_scsi, inquiry_is_cut_to_the_allocation_length)
{
	struct kern_cmd *c = inquiry(0, 0, 5, 5);

	expect_good(c);
	cr_assert_eq(c->read_len, 5);
	cr_assert_eq(c->in[4], 31, "the length says what there is");
}

/* With READ_LEN (what 6.1 offers) only the 36 bytes of the answer are
 * returned; without it, the whole buffer, whose rest must then be zeros,
 * not what a previous command left: test-ring.c's
 * without_read_len_the_rest_of_the_buffer_is_zeros. */
Test(tcmu_scsi, inquiry_tells_read_len_of_a_larger_buffer)
{
	uint8_t junk[4096];
	struct kern_cmd *c;

	memset(junk, 0xa5, sizeof(junk));
	expect_good(rw(10, true, 0, 8, junk, sizeof(junk)));
	c = inquiry(0, 0, 4096, 4096);
	expect_good(c);
	cr_assert_eq(c->read_len, 36);
}

Test(tcmu_scsi, vpd_supported_pages)
{
	static const uint8_t pages[] = { 0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2 };
	struct kern_cmd *c = inquiry(1, 0x00, 255, 255);

	expect_good(c);
	cr_assert_eq(c->in[1], 0x00);
	cr_assert_eq(be16(c->in + 2), sizeof(pages));
	cr_assert_arr_eq(c->in + 4, pages, sizeof(pages));
	/* and every page listed answers */
	for (size_t i = 0; i < sizeof(pages); i++) {
		c = inquiry(1, pages[i], 255, 255);
		expect_good(c);
		cr_assert_eq(c->in[1], pages[i]);
		cr_assert_eq(c->read_len, 4u + be16(c->in + 2));
	}
}

Test(tcmu_scsi, vpd_unit_serial_number)
{
	struct kern_cmd *c = inquiry(1, 0x80, 255, 255);

	expect_good(c);
	cr_assert_eq(be16(c->in + 2), 16);
	cr_assert_arr_eq(c->in + 4, h.lun.serial, 16);
	for (int i = 0; i < 16; i++)
		cr_assert(c->in[4 + i] > 0x20 && c->in[4 + i] < 0x7f,
			  "serial numbers are printable ASCII");
}

Test(tcmu_scsi, vpd_device_identification)
{
	struct kern_cmd *c = inquiry(1, 0x83, 255, 255);
	const uint8_t *d;
	uint64_t naa;

	expect_good(c);
	/* NAA: binary code set, LU association, type 3, 8 bytes. */
	d = c->in + 4;
	cr_assert_eq(d[0] & 0x0f, 1);
	cr_assert_eq(d[1] & 0x3f, 0x03);
	cr_assert_eq(d[3], 8);
	naa = be64(d + 4);
	cr_assert_eq(naa >> 60, 3, "NAA 3, locally assigned");
	cr_assert_eq(naa & 0x0fffffffffffffffull, h.lun.naa);
	/* T10 vendor ID: ASCII, type 1: vendor then serial number. */
	d += 4 + 8;
	cr_assert_eq(d[0] & 0x0f, 2);
	cr_assert_eq(d[1] & 0x3f, 0x01);
	cr_assert_eq(d[3], 8 + 16);
	cr_assert_arr_eq(d + 4, "IOFLUSHR", 8);
	cr_assert_arr_eq(d + 12, h.lun.serial, 16);
	cr_assert_eq(be16(c->in + 2), 12 + 4 + 24);
}

Test(tcmu_scsi, vpd_block_limits)
{
	struct kern_cmd *c = inquiry(1, 0xb0, 255, 255);

	expect_good(c);
	cr_assert_eq(be16(c->in + 2), 0x3c);
	cr_assert_eq(c->in[4] & 0x01, 1, "WSNZ");
	cr_assert_eq(be32(c->in + 8), (1u << 20) / BS,
		     "maximum transfer length: 1 MiB");
	cr_assert_eq(be32(c->in + 20), (1u << 30) / BS,
		     "maximum unmap LBA count");
	cr_assert_eq(be32(c->in + 24), TCMU_UNMAP_DESC_MAX);
	cr_assert_eq(be32(c->in + 28), 4096 / BS, "optimal unmap granularity");
	cr_assert_eq(be32(c->in + 32), 0x80000000u, "UGAVALID, alignment 0");
	cr_assert_eq(be64(c->in + 36), (1u << 30) / BS,
		     "maximum write same length");
}

Test(tcmu_scsi, vpd_block_limits_follow_a_small_data_area)
{
	const struct kern_cfg cfg = { .cmd_area = 64 * 1024,
				      .data_area = 256 * 1024,
				      .guard = 1 << 20 };
	struct kern_cmd *c;

	harness_fini(&h);
	harness_init(&h, &cfg, LUN_SIZE, 4096);
	c = inquiry(1, 0xb0, 255, 255);
	expect_good(c);
	cr_assert_eq(be32(c->in + 8), 128 * 1024 / 4096,
		     "half the data area, in blocks of 4096");
	cr_assert_eq(be32(c->in + 28), 1);
}

Test(tcmu_scsi, vpd_block_device_characteristics)
{
	struct kern_cmd *c = inquiry(1, 0xb1, 255, 255);

	expect_good(c);
	cr_assert_eq(be16(c->in + 2), 0x3c);
	cr_assert_eq(be16(c->in + 4), 1, "non-rotating medium");
}

Test(tcmu_scsi, vpd_logical_block_provisioning)
{
	struct kern_cmd *c = inquiry(1, 0xb2, 255, 255);

	expect_good(c);
	cr_assert_eq(be16(c->in + 2), 4);
	cr_assert(c->in[5] & 0x80, "LBPU: UNMAP");
	cr_assert(c->in[5] & 0x40, "LBPWS: WRITE SAME (16) with UNMAP");
	cr_assert(c->in[5] & 0x20, "LBPWS10: WRITE SAME (10) with UNMAP");
	cr_assert_eq((c->in[5] >> 2) & 7, 1, "LBPRZ: unmapped reads zeros");
	cr_assert_eq(c->in[6] & 7, 2, "thin provisioned");
}

Test(tcmu_scsi, inquiry_invalid_fields)
{
	expect_field(inquiry(1, 0x99, 255, 255), 2);
	expect_field(inquiry(0, 0x80, 255, 255), 2); /* page without EVPD */
	expect_field(inquiry(2, 0, 255, 255), 1); /* CMDDT */
}

/* ---------------------------------------------------------------- capacity */

Test(tcmu_scsi, read_capacity_10)
{
	uint8_t cdb[10] = { 0x25 };
	struct kern_cmd *c = harness_run(&h, cdb, 10, KERN_FROM_DEV, NULL, 8);

	expect_good(c);
	cr_assert_eq(be32(c->in), LUN_SIZE / BS - 1, "last LBA");
	cr_assert_eq(be32(c->in + 4), BS);
	/* SBC-3: a LOGICAL BLOCK ADDRESS without PMI is an error. */
	cdb[5] = 1;
	expect_field(harness_run(&h, cdb, 10, KERN_FROM_DEV, NULL, 8), 2);
	cdb[8] = 1; /* PMI: allowed, and obsolete */
	expect_good(harness_run(&h, cdb, 10, KERN_FROM_DEV, NULL, 8));
}

Test(tcmu_scsi, read_capacity_10_of_a_large_lun_points_to_16)
{
	struct kern_cmd *c;
	uint8_t cdb[10] = { 0x25 };

	/* 2^32 blocks and more: thin, so nothing is committed. */
	harness_fini(&h);
	harness_init(&h, &harness_small, (1ull << 32) * BS + 4096, BS);
	c = harness_run(&h, cdb, 10, KERN_FROM_DEV, NULL, 8);
	expect_good(c);
	cr_assert_eq(be32(c->in), 0xffffffffu);
}

Test(tcmu_scsi, read_capacity_16)
{
	uint8_t cdb[16] = { 0x9e, 0x10 };
	struct kern_cmd *c;

	put_be32(cdb + 10, 32);
	c = harness_run(&h, cdb, 16, KERN_FROM_DEV, NULL, 32);
	expect_good(c);
	cr_assert_eq(be64(c->in), LUN_SIZE / BS - 1);
	cr_assert_eq(be32(c->in + 8), BS);
	cr_assert_eq(c->in[12] & 0x01, 0, "no protection");
	cr_assert_eq(c->in[13], 0, "one logical block per physical block");
	cr_assert_eq(c->in[14] & 0xc0, 0xc0, "LBPME and LBPRZ");
	/* cut to the allocation length */
	put_be32(cdb + 10, 12);
	c = harness_run(&h, cdb, 16, KERN_FROM_DEV, NULL, 32);
	expect_good(c);
	cr_assert_eq(c->read_len, 12);
	/* SBC-3: a LOGICAL BLOCK ADDRESS without PMI is an error. */
	put_be32(cdb + 10, 32);
	cdb[9] = 1;
	expect_field(harness_run(&h, cdb, 16, KERN_FROM_DEV, NULL, 32), 2);
	cdb[14] = 1; /* PMI: allowed, and obsolete */
	expect_good(harness_run(&h, cdb, 16, KERN_FROM_DEV, NULL, 32));
	/* another service action of the opcode: REPORT REFERRALS */
	cdb[1] = 0x13;
	expect_field(harness_run(&h, cdb, 16, KERN_FROM_DEV, NULL, 32), 1);
}

/* ---------------------------------------------------------------- READ, WRITE */

static void round_trip(unsigned int cdb_len, uint64_t lba, uint32_t nb)
{
	uint64_t len = (uint64_t)(nb ? nb : 256) * BS;
	uint8_t *out = malloc(len);
	struct kern_cmd *c;

	fill(out, len, cdb_len + (unsigned int)lba);
	expect_good(rw(cdb_len, true, lba, nb, out, len));
	c = rw(cdb_len, false, lba, nb, NULL, len);
	expect_good(c);
	cr_assert_eq(c->read_len, len);
	cr_assert_arr_eq(c->in, out, len,
			 "READ (%u) returns what WRITE (%u) "
			 "wrote",
			 cdb_len, cdb_len);
	free(out);
}

Test(tcmu_scsi, read_and_write_6_10_12_16)
{
	round_trip(6, 0x1fff8, 8); /* the last blocks, 17 bits of LBA */
	round_trip(10, 1000, 16);
	round_trip(12, 77777, 24);
	round_trip(16, LUN_SIZE / BS - 32, 32); /* the last blocks */
}

Test(tcmu_scsi, transfer_length_0_of_read_6_means_256_blocks)
{
	round_trip(6, 4096, 0);
}

Test(tcmu_scsi, transfers_of_many_iovecs)
{
	/* Every data block apart from the last: one iovec per page. */
	const struct kern_cfg cfg = { .cmd_area = 64 * 1024,
				      .data_area = 4 << 20,
				      .guard = 4ull << 30,
				      .scatter = true };
	uint64_t len = 1 << 20;
	uint8_t *out = malloc(len);
	struct kern_cmd *c;

	harness_fini(&h);
	harness_init(&h, &cfg, LUN_SIZE, BS);
	fill(out, len, 9);
	c = rw(16, true, 12345, (uint32_t)(len / BS), out, len);
	expect_good(c);
	cr_assert_eq(c->iov_cnt, 256);
	c = rw(16, false, 12345, (uint32_t)(len / BS), NULL, len);
	expect_good(c);
	cr_assert_eq(c->iov_cnt, 256);
	cr_assert_arr_eq(c->in, out, len);
	free(out);
}

Test(tcmu_scsi, a_write_completes_whole_with_no_residual)
{
	uint8_t buf[8 * BS];
	struct kern_cmd *c;

	/* No READ_LEN on a write: the kernel ignores it there, and a
	 * daemon that set it would only show it misreads the flag. */
	fill(buf, sizeof(buf), 8);
	c = rw(10, true, 0, 8, buf, sizeof(buf));
	expect_good(c);
	cr_assert_eq(c->uflags & TCMU_UFLAG_READ_LEN, 0);
	cr_assert_eq(c->read_len, sizeof(buf));
	c = rw(10, false, 0, 8, NULL, sizeof(buf));
	expect_good(c);
	cr_assert_eq(c->read_len, sizeof(buf));
}

Test(tcmu_scsi, writes_with_fua_and_zero_blocks)
{
	uint8_t cdb[10], buf[BS] = { 1, 2, 3 };

	cdb_rw(cdb, 10, true, 5, 1);
	cdb[1] = 0x08 | 0x10; /* FUA, DPO */
	expect_good(harness_run(&h, cdb, 10, KERN_TO_DEV, buf, BS));
	/* transfer length 0: nothing moves, no error (SBC-3 5.28) */
	expect_good(rw(10, true, 7, 0, NULL, 0));
	expect_good(rw(16, false, LUN_SIZE / BS, 0, NULL, 0));
}

Test(tcmu_scsi, lba_out_of_range)
{
	uint64_t last = LUN_SIZE / BS - 1;
	uint8_t buf[2 * BS] = { 0 };

	expect_sense(rw(10, false, last, 2, NULL, 2 * BS),
		     TCMU_SK_ILLEGAL_REQUEST, TCMU_ASC_LBA_OUT_OF_RANGE);
	expect_sense(rw(12, true, last + 1, 1, buf, BS),
		     TCMU_SK_ILLEGAL_REQUEST, TCMU_ASC_LBA_OUT_OF_RANGE);
	expect_sense(rw(6, true, 0x1fffff, 1, buf, BS), TCMU_SK_ILLEGAL_REQUEST,
		     TCMU_ASC_LBA_OUT_OF_RANGE);
	/* lba + blocks wraps around 2^64: still out of range */
	expect_sense(rw(16, false, UINT64_MAX - 1, 2, NULL, 2 * BS),
		     TCMU_SK_ILLEGAL_REQUEST, TCMU_ASC_LBA_OUT_OF_RANGE);
	expect_sense(rw(16, true, UINT64_MAX, 1, buf, BS),
		     TCMU_SK_ILLEGAL_REQUEST, TCMU_ASC_LBA_OUT_OF_RANGE);
}

Test(tcmu_scsi, a_buffer_that_is_not_the_transfer_length_is_refused)
{
	uint8_t buf[4 * BS], other[4 * BS];
	struct kern_cmd *c;

	fill(buf, sizeof(buf), 3);
	fill(other, sizeof(other), 4);
	expect_good(rw(10, true, 100, 4, buf, sizeof(buf)));
	/* 8 blocks asked, 4 blocks of buffer, either way; and a write of 2
	 * blocks from a buffer of 4.  The refused writes carry other data,
	 * which must not land. */
	expect_field(rw(10, false, 100, 8, NULL, 4 * BS), 7);
	expect_field(rw(10, true, 100, 2, other, 4 * BS), 7);
	expect_field(rw(16, true, 100, 8, other, 4 * BS), 10);
	/* and the refused write wrote nothing */
	c = rw(10, false, 100, 4, NULL, 4 * BS);
	expect_good(c);
	cr_assert_arr_eq(c->in, buf, sizeof(buf));
}

/* A read into a buffer larger than its transfer (an underflow): served,
 * the initiator told the residual by READ_LEN. */
Test(tcmu_scsi, a_read_into_a_larger_buffer_has_a_residual)
{
	uint8_t buf[4 * BS];
	struct kern_cmd *c;

	fill(buf, sizeof(buf), 7);
	expect_good(rw(10, true, 200, 1, buf, BS));
	for (unsigned int len = 10; len <= 16; len += 6) {
		c = rw(len, false, 200, 1, NULL, sizeof(buf));
		expect_good(c);
		cr_assert_eq(c->read_len, BS, "READ(%u): read_len %u", len,
			     c->read_len);
		cr_assert_arr_eq(c->in, buf, BS);
	}
}

/* Without CAP_READ_LEN the kernel returns the whole buffer: the block
 * read, then zeros, not what the junk written before left there. */
Test(tcmu_scsi, a_read_into_a_larger_buffer_without_read_len_zeroes_the_rest)
{
	const struct kern_cfg no_read_len = {
		.cmd_area = harness_small.cmd_area,
		.data_area = harness_small.data_area,
		.guard = harness_small.guard,
		.mb_flags = TCMU_MAILBOX_FLAG_CAP_OOOC,
	};
	uint8_t buf[4 * BS], junk[4 * BS], want[4 * BS] = { 0 };
	struct kern_cmd *c;

	harness_fini(&h);
	harness_init(&h, &no_read_len, LUN_SIZE, BS);
	fill(buf, BS, 7);
	memcpy(want, buf, BS);
	memset(junk, 0xa5, sizeof(junk));
	expect_good(rw(10, true, 200, 1, buf, BS));
	expect_good(rw(10, true, 0, 4, junk, sizeof(junk)));
	c = rw(10, false, 200, 1, NULL, sizeof(want));
	expect_good(c);
	cr_assert_eq(c->read_len, sizeof(want));
	cr_assert_arr_eq(c->in, want, sizeof(want));
}

/* A command that answers no bytes, given a Data-In buffer by its
 * initiator: the kernel returns the whole buffer, which must not hold
 * what an earlier command left in those pages. */
Test(tcmu_scsi, a_command_of_no_data_returns_a_zeroed_buffer)
{
	static const uint8_t cdbs[][10] = {
		{ 0x00 }, /* TEST UNIT READY */
		{ 0x35 }, /* SYNCHRONIZE CACHE (10) */
		{ 0x42 }, /* UNMAP, parameter list length 0 */
	};
	uint8_t junk[4096], zero[4096] = { 0 };
	struct kern_cmd *c;

	memset(junk, 0xa5, sizeof(junk));
	for (size_t i = 0; i < sizeof(cdbs) / sizeof(cdbs[0]); i++) {
		unsigned int len = cdbs[i][0] < 0x20 ? 6 : 10;

		expect_good(rw(10, true, 0, 4096 / BS, junk, sizeof(junk)));
		c = harness_run(&h, cdbs[i], len, KERN_FROM_DEV, NULL,
				sizeof(junk));
		expect_good(c);
		cr_assert_eq(c->read_len, sizeof(junk));
		cr_assert_arr_eq(c->in, zero, sizeof(zero),
				 "opcode 0x%02x returned stale bytes",
				 cdbs[i][0]);
	}
}

Test(tcmu_scsi, more_than_the_maximum_transfer_length_is_refused)
{
	uint32_t nb = (1u << 20) / BS + 1;

	expect_field(rw(16, false, 0, nb, NULL, (uint64_t)nb * BS), 10);
}

Test(tcmu_scsi, protection_information_is_refused)
{
	uint8_t cdb[16], buf[BS] = { 0 };

	cdb_rw(cdb, 16, false, 0, 1);
	cdb[1] = 0x20; /* RDPROTECT 1 */
	expect_field(harness_run(&h, cdb, 16, KERN_FROM_DEV, NULL, BS), 1);
	cdb_rw(cdb, 10, true, 0, 1);
	cdb[1] = 0x60; /* WRPROTECT 3 */
	expect_field(harness_run(&h, cdb, 10, KERN_TO_DEV, buf, BS), 1);
}

/* ---------------------------------------------------------------- SYNCHRONIZE CACHE */

Test(tcmu_scsi, synchronize_cache_10_and_16)
{
	uint8_t c10[10] = { 0x35, 0x02 /* IMMED */ }, c16[16] = { 0x91 };

	expect_good(harness_run(&h, c10, 10, KERN_NONE, NULL, 0));
	put_be64(c16 + 2, 100);
	put_be32(c16 + 10, 100);
	expect_good(harness_run(&h, c16, 16, KERN_NONE, NULL, 0));
	put_be64(c16 + 2, LUN_SIZE / BS - 1);
	expect_sense(harness_run(&h, c16, 16, KERN_NONE, NULL, 0),
		     TCMU_SK_ILLEGAL_REQUEST, TCMU_ASC_LBA_OUT_OF_RANGE);
	put_be32(c10 + 2, (uint32_t)(LUN_SIZE / BS + 1));
	expect_sense(harness_run(&h, c10, 10, KERN_NONE, NULL, 0),
		     TCMU_SK_ILLEGAL_REQUEST, TCMU_ASC_LBA_OUT_OF_RANGE);
}

/* ---------------------------------------------------------------- MODE SENSE */

static struct kern_cmd *mode_sense(bool ten, uint8_t byte1, uint8_t page,
				   uint8_t subpage, uint16_t alloc)
{
	uint8_t cdb[10] = { 0 };

	if (ten) {
		cdb[0] = 0x5a;
		cdb[7] = (uint8_t)(alloc >> 8);
		cdb[8] = (uint8_t)alloc;
	} else {
		cdb[0] = 0x1a;
		cdb[4] = (uint8_t)alloc;
	}
	cdb[1] = byte1;
	cdb[2] = page;
	cdb[3] = subpage;
	return harness_run(&h, cdb, ten ? 10 : 6, KERN_FROM_DEV, NULL, alloc);
}

Test(tcmu_scsi, mode_sense_6_caching_page)
{
	struct kern_cmd *c = mode_sense(false, 0, 0x08, 0, 255);
	const uint8_t *p;

	expect_good(c);
	cr_assert_eq(c->read_len, 4 + 8 + 20);
	cr_assert_eq(c->in[0], 4 + 8 + 20 - 1, "mode data length");
	cr_assert_eq(c->in[2] & 0x80, 0, "not write protected");
	cr_assert(c->in[2] & 0x10, "DPOFUA");
	cr_assert_eq(c->in[3], 8, "one short block descriptor");
	cr_assert_eq(be32(c->in + 4), LUN_SIZE / BS,
		     "NUMBER OF LOGICAL BLOCKS");
	cr_assert_eq(c->in[8], 0, "reserved");
	cr_assert_eq(be32(c->in + 8), BS, "LOGICAL BLOCK LENGTH");
	p = c->in + 12;
	cr_assert_eq(p[0] & 0x3f, 0x08);
	cr_assert_eq(p[1], 0x12);
	cr_assert_eq(p[2] & 0x04, 0, "memory: no volatile cache, WCE 0");
	cr_assert_eq(p[2] & 0x01, 0, "RCD 0");
}

Test(tcmu_scsi, mode_sense_short_descriptor_counts_32_bits_of_blocks)
{
	struct kern_cmd *c;

	/* 2^24 + 8 blocks: the 4-byte field holds them (thin: nothing is
	 * committed). */
	harness_fini(&h);
	harness_init(&h, &harness_small, ((1ull << 24) + 8) * BS, BS);
	c = mode_sense(false, 0, 0x08, 0, 255);
	expect_good(c);
	cr_assert_eq(be32(c->in + 4), (1u << 24) + 8);
	/* 2^32 + 8 blocks: more than it holds, FFFFFFFFh (SBC-3 6.4.2) */
	harness_fini(&h);
	harness_init(&h, &harness_small, ((1ull << 32) + 8) * BS, BS);
	c = mode_sense(true, 0, 0x08, 0, 255);
	expect_good(c);
	cr_assert_eq(be16(c->in + 6), 8, "a short descriptor");
	cr_assert_eq(be32(c->in + 8), 0xffffffffu);
	cr_assert_eq(be32(c->in + 12), BS);
}

Test(tcmu_scsi, mode_sense_10_long_lba_descriptor)
{
	struct kern_cmd *c = mode_sense(true, 0x10, 0x08, 0, 512);

	expect_good(c);
	cr_assert_eq(c->read_len, 8 + 16 + 20);
	cr_assert_eq(be16(c->in), 8 + 16 + 20 - 2);
	cr_assert(c->in[3] & 0x10, "DPOFUA");
	cr_assert_eq(c->in[4] & 0x01, 1, "LONGLBA");
	cr_assert_eq(be16(c->in + 6), 16);
	cr_assert_eq(be64(c->in + 8), LUN_SIZE / BS);
	cr_assert_eq(be32(c->in + 20), BS);
	cr_assert_eq(c->in[24] & 0x3f, 0x08);
}

Test(tcmu_scsi, mode_sense_all_pages_without_block_descriptors)
{
	struct kern_cmd *c = mode_sense(false, 0x08, 0x3f, 0, 255);

	expect_good(c);
	cr_assert_eq(c->in[3], 0, "DBD: no descriptor");
	cr_assert_eq(c->read_len, 4 + 20 + 12);
	cr_assert_eq(c->in[4] & 0x3f, 0x08);
	cr_assert_eq(c->in[24] & 0x3f, 0x0a);
	cr_assert_eq(c->in[25], 0x0a);
	/* all pages and subpages: the same, there are no subpages */
	c = mode_sense(true, 0x08, 0x3f, 0xff, 255);
	expect_good(c);
	cr_assert_eq(c->read_len, 8 + 20 + 12);
}

Test(tcmu_scsi, mode_sense_changeable_values_are_none)
{
	struct kern_cmd *c = mode_sense(false, 0x08, 0x40 | 0x08, 0, 255);

	expect_good(c);
	cr_assert_eq(c->in[4] & 0x3f, 0x08);
	for (int i = 2; i < 20; i++)
		cr_assert_eq(c->in[4 + i], 0, "byte %d changeable", i);
}

Test(tcmu_scsi, mode_sense_errors)
{
	expect_sense(mode_sense(false, 0, 0xc0 | 0x08, 0, 255),
		     TCMU_SK_ILLEGAL_REQUEST,
		     TCMU_ASC_SAVING_PARAMETERS_NOT_SUPPORTED);
	expect_field(mode_sense(true, 0, 0x19, 0, 255), 2);
	expect_field(mode_sense(false, 0, 0x08, 0x01, 255), 3);
}

Test(tcmu_scsi, mode_sense_6_is_cut_to_the_allocation_length)
{
	struct kern_cmd *c = mode_sense(false, 0, 0x3f, 0, 4);

	expect_good(c);
	cr_assert_eq(c->read_len, 4);
	cr_assert_eq(c->in[0], 4 + 8 + 32 - 1, "the full length is told");
}

/* ---------------------------------------------------------------- UNMAP */

static struct kern_cmd *unmap(const uint64_t *lba, const uint32_t *nb,
			      unsigned int n, uint16_t plen_override)
{
	uint8_t cdb[10] = { 0x42 };
	size_t len = 8 + 16 * (size_t)n;
	uint8_t *p = calloc(1, len);
	struct kern_cmd *c;
	uint16_t plen = plen_override ? plen_override : (uint16_t)len;

	p[0] = (uint8_t)((len - 2) >> 8);
	p[1] = (uint8_t)(len - 2);
	p[2] = (uint8_t)((16 * n) >> 8);
	p[3] = (uint8_t)(16 * n);
	for (unsigned int i = 0; i < n; i++) {
		put_be64(p + 8 + 16 * i, lba[i]);
		put_be32(p + 16 + 16 * i, nb[i]);
	}
	cdb[7] = (uint8_t)(plen >> 8);
	cdb[8] = (uint8_t)plen;
	c = harness_run(&h, cdb, 10, KERN_TO_DEV, p, plen < len ? plen : len);
	free(p);
	return c;
}

static void write_pattern(uint64_t lba, uint32_t nb, unsigned int seed)
{
	uint8_t *buf = malloc((size_t)nb * BS);

	fill(buf, (size_t)nb * BS, seed);
	expect_good(rw(16, true, lba, nb, buf, (uint64_t)nb * BS));
	free(buf);
}

static bool blocks_are_zero(uint64_t lba, uint32_t nb)
{
	struct kern_cmd *c = rw(16, false, lba, nb, NULL, (uint64_t)nb * BS);

	expect_good(c);
	for (size_t i = 0; i < (size_t)nb * BS; i++)
		if (c->in[i])
			return false;
	return true;
}

Test(tcmu_scsi, unmap_deallocates_and_reads_zeros)
{
	uint64_t lba[2] = { 9, 100 };
	uint32_t nb[2] = { 20, 64 };

	write_pattern(0, 256, 1);
	expect_good(unmap(lba, nb, 2, 0));
	cr_assert(blocks_are_zero(9, 20));
	cr_assert(blocks_are_zero(100, 64));
	cr_assert_not(blocks_are_zero(8, 1), "the block before stays");
	cr_assert_not(blocks_are_zero(29, 1), "the block after stays");
	cr_assert_not(blocks_are_zero(164, 1));
}

Test(tcmu_scsi, unmap_checks_every_descriptor_before_any)
{
	uint64_t lba[2] = { 0, LUN_SIZE / BS - 1 };
	uint32_t nb[2] = { 8, 2 };

	write_pattern(0, 8, 2);
	expect_sense(unmap(lba, nb, 2, 0), TCMU_SK_ILLEGAL_REQUEST,
		     TCMU_ASC_LBA_OUT_OF_RANGE);
	cr_assert_not(blocks_are_zero(0, 8), "nothing was unmapped");
}

Test(tcmu_scsi, unmap_parameter_list_errors)
{
	uint64_t lba[TCMU_UNMAP_DESC_MAX + 1] = { 0 };
	uint32_t nb[TCMU_UNMAP_DESC_MAX + 1] = { 0 };
	uint8_t cdb[10] = { 0x42, 0x01 /* ANCHOR */ };

	expect_sense(unmap(lba, nb, 1, 4), TCMU_SK_ILLEGAL_REQUEST,
		     TCMU_ASC_PARAMETER_LIST_LENGTH_ERROR);
	expect_sense(unmap(lba, nb, TCMU_UNMAP_DESC_MAX + 1, 0),
		     TCMU_SK_ILLEGAL_REQUEST,
		     TCMU_ASC_INVALID_FIELD_IN_PARAMETER_LIST);
	/* More blocks than the MAXIMUM UNMAP LBA COUNT in all: the same
	 * whole LUN, 17 times. */
	for (int i = 0; i < 17; i++)
		nb[i] = LUN_SIZE / BS;
	expect_sense(unmap(lba, nb, 17, 0), TCMU_SK_ILLEGAL_REQUEST,
		     TCMU_ASC_INVALID_FIELD_IN_PARAMETER_LIST);
	expect_field(harness_run(&h, cdb, 10, KERN_NONE, NULL, 0), 1);
	/* No parameter data at all: nothing to do, and no error. */
	cdb[1] = 0;
	expect_good(harness_run(&h, cdb, 10, KERN_NONE, NULL, 0));
}

Test(tcmu_scsi, unmap_ignores_a_truncated_descriptor)
{
	uint64_t lba[2] = { 0, 16 };
	uint32_t nb[2] = { 8, 8 };

	write_pattern(0, 24, 3);
	/* 8 + 16 + 10: the second descriptor is cut short */
	expect_good(unmap(lba, nb, 2, 8 + 16 + 10));
	cr_assert(blocks_are_zero(0, 8));
	cr_assert_not(blocks_are_zero(16, 8));
}

/* ---------------------------------------------------------------- WRITE SAME */

static struct kern_cmd *write_same(uint8_t flags, uint64_t lba, uint32_t nb,
				   const uint8_t *block, uint64_t len)
{
	uint8_t cdb[16] = { 0x93, flags };

	put_be64(cdb + 2, lba);
	put_be32(cdb + 10, nb);
	return harness_run(&h, cdb, 16, len ? KERN_TO_DEV : KERN_NONE, block,
			   len);
}

/* ---------------------------------------------------------------- GET LBA STATUS */

static void file_lun(uint64_t size);
static void file_done(void);

static struct kern_cmd *get_lba_status(uint64_t lba, uint32_t alloc)
{
	uint8_t cdb[16] = { 0x9e, 0x12 };

	put_be64(cdb + 2, lba);
	put_be32(cdb + 10, alloc);
	return harness_run(&h, cdb, 16, KERN_FROM_DEV, NULL, alloc);
}

/* Descriptor i of a GET LBA STATUS answer is LBA lba, nb blocks, status. */
static void expect_desc(const struct kern_cmd *c, unsigned int i, uint64_t lba,
			uint32_t nb, uint8_t status)
{
	const uint8_t *d = c->in + 8 + 16 * i;

	cr_assert_eq(be64(d), lba, "descriptor %u: LBA %llu, not %llu", i,
		     (unsigned long long)be64(d), (unsigned long long)lba);
	cr_assert_eq(be32(d + 8), nb, "descriptor %u: %u blocks, not %u", i,
		     be32(d + 8), nb);
	cr_assert_eq(d[12] & 0x0f, status, "descriptor %u: status %u, not %u",
		     i, d[12] & 0x0f, status);
}

/* Blocks never written and blocks unmapped are deallocated (1h), those
 * written mapped (0h), in runs from the LBA asked; what READ CAPACITY
 * (16)'s LBPME promises, checked on both backends. */
static void lba_status_runs(void)
{
	const uint64_t end = LUN_SIZE / BS;
	struct kern_cmd *c;

	write_pattern(64, 16, 1);
	c = get_lba_status(0, 8 + 16 * 64);
	expect_good(c);
	cr_assert_eq(be32(c->in), 4 + 3 * 16, "parameter data length %u",
		     be32(c->in));
	expect_desc(c, 0, 0, 64, 1);
	expect_desc(c, 1, 64, 16, 0);
	expect_desc(c, 2, 80, (uint32_t)(end - 80), 1);
	/* From inside a run; and cut to the allocation length, which the
	 * parameter data length is not. */
	c = get_lba_status(70, 8 + 16);
	expect_good(c);
	cr_assert_eq(c->read_len, 24);
	cr_assert_eq(be32(c->in), 4 + 2 * 16);
	expect_desc(c, 0, 70, 10, 0);
	/* Unmapped, the whole LUN is one deallocated run. */
	expect_good(unmap((const uint64_t[]){ 64 }, (const uint32_t[]){ 16 }, 1,
			  0));
	c = get_lba_status(0, 8 + 16 * 64);
	expect_good(c);
	cr_assert_eq(be32(c->in), 4 + 16);
	expect_desc(c, 0, 0, (uint32_t)end, 1);
	expect_sense(get_lba_status(end, 24), TCMU_SK_ILLEGAL_REQUEST,
		     TCMU_ASC_LBA_OUT_OF_RANGE);
}

/* SBC-4's REPORT TYPE (byte 14) asks for the runs of one status alone,
 * which this LUN does not filter: refused, with the byte pointed at,
 * rather than answered with runs of every status. */
Test(tcmu_scsi, get_lba_status_refuses_a_report_type)
{
	uint8_t cdb[16] = { 0x9e, 0x12 };
	struct kern_cmd *c;

	put_be32(cdb + 10, 24);
	cdb[14] = 3; /* deallocated LBAs only */
	c = harness_run(&h, cdb, 16, KERN_FROM_DEV, NULL, 24);
	expect_field(c, 14);
	cr_assert_eq(c->sense[15], 0xc0, "no bit pointer: 0x%02x",
		     c->sense[15]);
}

Test(tcmu_scsi, get_lba_status_of_the_memory_backend)
{
	lba_status_runs();
}

/* The last block, before and after it is written. */
Test(tcmu_scsi, get_lba_status_of_the_last_block)
{
	const uint64_t end = LUN_SIZE / BS;
	struct kern_cmd *c;

	c = get_lba_status(end - 1, 24);
	expect_good(c);
	expect_desc(c, 0, end - 1, 1, 1);
	write_pattern(end - 1, 1, 2);
	c = get_lba_status(end - 1, 24);
	expect_good(c);
	expect_desc(c, 0, end - 1, 1, 0);
}

/* A backend whose runs end inside blocks: bytes [1000, 1500) allocated,
 * the rest not, as a filesystem of blocks smaller than the LUN's has. */
static int status_in_bytes(struct tcmu_backend *be, uint64_t off, uint64_t len,
			   bool *mapped, uint64_t *run)
{
	uint64_t next = off < 1000 ? 1000 : off < 1500 ? 1500 : off + len;

	(void)be;
	*mapped = off >= 1000 && off < 1500;
	*run = next - off < len ? next - off : len;
	return 0;
}

/* Blocks 1 (bytes 512 to 1023) and 2 (1024 to 1535), partly allocated,
 * are mapped, in one descriptor; blocks 0 and 3 on are deallocated. */
Test(tcmu_scsi, get_lba_status_of_blocks_partly_allocated)
{
	const uint64_t end = LUN_SIZE / BS;
	const struct tcmu_backend_ops *real = h.lun.be->ops;
	struct tcmu_backend_ops ops = *real;
	struct kern_cmd *c;

	ops.status = status_in_bytes;
	h.lun.be->ops = &ops;
	c = get_lba_status(0, 8 + 16 * 8);
	h.lun.be->ops = real;
	expect_good(c);
	cr_assert_eq(be32(c->in), 4 + 3 * 16);
	expect_desc(c, 0, 0, 1, 1);
	expect_desc(c, 1, 1, 2, 0);
	expect_desc(c, 2, 3, (uint32_t)(end - 3), 1);
}

Test(tcmu_scsi, get_lba_status_of_the_file_backend)
{
	file_lun(LUN_SIZE);
	lba_status_runs();
	file_done();
}

/* 5 TiB, all holes: a descriptor counts at most 0xffffffff blocks, and
 * the next takes up where it ends, not merged into it. */
Test(tcmu_scsi, get_lba_status_runs_of_more_than_32_bits_of_blocks)
{
	const uint64_t size = 5ull << 40, end = size / BS;
	struct kern_cmd *c;

	file_lun(size);
	c = get_lba_status(0, 8 + 16 * 8);
	expect_good(c);
	cr_assert_eq(be32(c->in), 4 + 3 * 16);
	expect_desc(c, 0, 0, 0xffffffffu, 1);
	expect_desc(c, 1, 0xffffffffu, 0xffffffffu, 1);
	expect_desc(c, 2, 2 * 0xffffffffull,
		    (uint32_t)(end - 2 * 0xffffffffull), 1);
	file_done();
}

Test(tcmu_scsi, write_same_16_repeats_the_block)
{
	uint8_t block[BS];
	struct kern_cmd *c;

	fill(block, BS, 77);
	expect_good(write_same(0, 1000, 300, block, BS));
	c = rw(16, false, 999, 302, NULL, 302 * BS);
	expect_good(c);
	for (int i = 1; i <= 300; i++)
		cr_assert_arr_eq(c->in + i * BS, block, BS, "block %d", i);
	cr_assert_arr_neq(c->in, block, BS);
	cr_assert_arr_neq(c->in + 301 * BS, block, BS);
}

Test(tcmu_scsi, write_same_16_with_unmap_deallocates)
{
	uint8_t zero[BS] = { 0 }, one[BS];

	write_pattern(2000, 64, 4);
	expect_good(write_same(0x08, 2000, 32, zero, BS));
	cr_assert(blocks_are_zero(2000, 32));
	cr_assert_not(blocks_are_zero(2032, 1));
	/* UNMAP with data that is not zeros: written, not unmapped */
	memset(one, 0x11, sizeof(one));
	expect_good(write_same(0x08, 2032, 2, one, BS));
	cr_assert_not(blocks_are_zero(2032, 1));
	/* NDOB: no Data-Out buffer, zeros */
	expect_good(write_same(0x08 | 0x01, 2032, 32, NULL, 0));
	cr_assert(blocks_are_zero(2032, 32));
}

Test(tcmu_scsi, write_same_16_errors)
{
	uint8_t block[BS] = { 0 };

	expect_field(write_same(0, 0, 0, block, BS), 10); /* WSNZ */
	expect_field(write_same(0, 0, (1u << 30) / BS + 1, block, BS), 10);
	expect_sense(write_same(0, LUN_SIZE / BS - 1, 2, block, BS),
		     TCMU_SK_ILLEGAL_REQUEST, TCMU_ASC_LBA_OUT_OF_RANGE);
	expect_field(write_same(0, 0, 1, block, BS / 2), 10);
	expect_field(write_same(0x10, 0, 1, block, BS), 1); /* ANCHOR */
	expect_field(write_same(0x20, 0, 1, block, BS), 1); /* WRPROTECT */
	expect_field(write_same(0x04, 0, 1, block, BS), 1); /* PBDATA */
	expect_field(write_same(0x02, 0, 1, block, BS), 1); /* LBDATA */
}

static struct kern_cmd *write_same_10(uint8_t flags, uint32_t lba, uint16_t nb,
				      const uint8_t *block, uint64_t len)
{
	uint8_t cdb[10] = { 0x41, flags };

	put_be32(cdb + 2, lba);
	cdb[7] = (uint8_t)(nb >> 8);
	cdb[8] = (uint8_t)nb;
	return harness_run(&h, cdb, 10, len ? KERN_TO_DEV : KERN_NONE, block,
			   len);
}

Test(tcmu_scsi, write_same_10_repeats_the_block)
{
	uint8_t block[BS];
	struct kern_cmd *c;

	fill(block, BS, 78);
	expect_good(write_same_10(0, 3000, 600, block, BS));
	c = rw(16, false, 2999, 602, NULL, 602 * BS);
	expect_good(c);
	for (int i = 1; i <= 600; i++)
		cr_assert_arr_eq(c->in + i * BS, block, BS, "block %d", i);
	cr_assert_arr_neq(c->in, block, BS);
	cr_assert_arr_neq(c->in + 601 * BS, block, BS);
}

Test(tcmu_scsi, write_same_10_of_zeros_with_and_without_unmap)
{
	uint8_t zero[BS] = { 0 };

	/* What sd sends for write-zeroes: without UNMAP for BLKZEROOUT
	 * (REQ_NOUNMAP), with it when LBPRZ and LBPWS10 allow. */
	write_pattern(4000, 80, 9);
	expect_good(write_same_10(0, 4001, 30, zero, BS));
	cr_assert(blocks_are_zero(4001, 30));
	cr_assert_not(blocks_are_zero(4000, 1));
	cr_assert_not(blocks_are_zero(4031, 1));
	expect_good(write_same_10(0x08, 4031, 33, zero, BS));
	cr_assert(blocks_are_zero(4031, 33));
	cr_assert_not(blocks_are_zero(4064, 1));
}

Test(tcmu_scsi, write_same_10_errors)
{
	uint8_t block[BS] = { 0 };

	expect_field(write_same_10(0, 0, 0, block, BS), 7); /* WSNZ */
	expect_sense(write_same_10(0, LUN_SIZE / BS - 1, 2, block, BS),
		     TCMU_SK_ILLEGAL_REQUEST, TCMU_ASC_LBA_OUT_OF_RANGE);
	expect_field(write_same_10(0, 0, 1, block, BS / 2), 7);
	expect_field(write_same_10(0x01, 0, 1, NULL, 0), 1); /* no NDOB */
	expect_field(write_same_10(0x02, 0, 1, block, BS), 1); /* LBDATA */
	expect_field(write_same_10(0x04, 0, 1, block, BS), 1); /* PBDATA */
	expect_field(write_same_10(0x10, 0, 1, block, BS), 1); /* ANCHOR */
	expect_field(write_same_10(0x40, 0, 1, block, BS), 1); /* WRPROTECT */
}

/* The resident memory of this process, in KiB. */
static long rss_kib(void)
{
	char line[256];
	long kib = -1;
	FILE *f = fopen("/proc/self/status", "r");

	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

Test(tcmu_scsi, zeroing_pages_never_written_takes_no_memory)
{
	const uint64_t base = LUN_SIZE / BS / 2; /* never written */
	uint64_t lba[256] = { 0 };
	uint32_t nb[256];
	uint8_t zero[BS] = { 0 };
	long before;

	/* Once, so that the harness has all it allocates. */
	expect_good(unmap(lba, (uint32_t[1]){ 0 }, 1, 0));
	before = rss_kib();
	/* 1024 UNMAPs of one block, each in a page of its own: parts of
	 * pages, which cannot be given back, and hold only zeros. */
	for (int j = 0; j < 4; j++) {
		for (int i = 0; i < 256; i++) {
			lba[i] = base + 8 * (uint64_t)(256 * j + i) + 3;
			nb[i] = 1;
		}
		expect_good(unmap(lba, nb, 256, 0));
	}
	/* and 8 MiB of WRITE SAME zeros without UNMAP */
	expect_good(write_same(0, base + 16384, 16384, zero, BS));
	cr_assert_lt(rss_kib() - before, 1024,
		     "zeroing took %ld KiB (4 MiB of pages for the UNMAPs, 8 "
		     "for WRITE SAME if each page was allocated)",
		     rss_kib() - before);
	cr_assert(blocks_are_zero(base + 3, 1));
	cr_assert(blocks_are_zero(base + 16384, 64));
}

/* ---------------------------------------------------------------- file backend */

static char file_path[64];

static void file_lun(uint64_t size)
{
	struct tcmu_backend *be;
	int fd, r;

	harness_fini(&h);
	strcpy(file_path, "/tmp/tcmu-test-XXXXXX");
	fd = mkstemp(file_path);
	cr_assert_geq(fd, 0);
	close(fd);
	r = tcmu_backend_file_open(file_path, size, &be);
	cr_assert_eq(r, 0, "file backend: %s", strerror(-r));
	harness_init_be(&h, &harness_small, be, BS);
}

static void file_done(void)
{
	unlink(file_path);
}

Test(tcmu_scsi, file_backend_round_trip_fua_and_flush)
{
	uint8_t buf[8 * BS], back[8 * BS], cdb[16];
	struct kern_cmd *c;
	int fd;

	file_lun(LUN_SIZE);
	fill(buf, sizeof(buf), 5);
	cdb_rw(cdb, 16, true, 64, 8);
	cdb[1] = 0x08; /* FUA */
	expect_good(harness_run(&h, cdb, 16, KERN_TO_DEV, buf, sizeof(buf)));
	c = rw(10, false, 64, 8, NULL, sizeof(buf));
	expect_good(c);
	cr_assert_arr_eq(c->in, buf, sizeof(buf));
	/* the bytes are the file's */
	fd = open(file_path, O_RDONLY);
	cr_assert_eq(pread(fd, back, sizeof(back), 64 * BS), sizeof(back));
	close(fd);
	cr_assert_arr_eq(back, buf, sizeof(buf));
	cdb[0] = 0x91;
	memset(cdb + 1, 0, 15);
	expect_good(harness_run(&h, cdb, 16, KERN_NONE, NULL, 0));
	file_done();
}

static const struct tcmu_backend_ops *real_ops;
static struct tcmu_backend_ops counting_ops;
static unsigned int flushes;

static int count_flush(struct tcmu_backend *be)
{
	flushes++;
	return real_ops->flush(be);
}

/* FUA on a read: what the write cache holds of the blocks reaches the
 * medium first (SBC-3 5.11), as DPOFUA in MODE SENSE promises. */
Test(tcmu_scsi, file_backend_read_with_fua_flushes_first)
{
	uint8_t buf[8 * BS], cdb[16];
	struct kern_cmd *c;

	file_lun(LUN_SIZE);
	real_ops = h.lun.be->ops;
	counting_ops = *real_ops;
	counting_ops.flush = count_flush;
	h.lun.be->ops = &counting_ops;
	fill(buf, sizeof(buf), 9);
	expect_good(rw(10, true, 64, 8, buf, sizeof(buf)));
	flushes = 0;
	expect_good(rw(10, false, 64, 8, NULL, sizeof(buf)));
	cr_assert_eq(flushes, 0, "a read without FUA flushes nothing");
	cdb_rw(cdb, 10, false, 64, 8);
	cdb[1] = 0x08; /* FUA */
	c = harness_run(&h, cdb, 10, KERN_FROM_DEV, NULL, sizeof(buf));
	expect_good(c);
	cr_assert_arr_eq(c->in, buf, sizeof(buf));
	cr_assert_eq(flushes, 1, "a read with FUA flushed %u times", flushes);
	h.lun.be->ops = real_ops;
	file_done();
}

Test(tcmu_scsi, file_backend_has_a_write_cache)
{
	struct kern_cmd *c;

	file_lun(LUN_SIZE);
	c = mode_sense(false, 0x08, 0x08, 0, 255);
	expect_good(c);
	cr_assert(c->in[4 + 2] & 0x04, "WCE");
	file_done();
}

Test(tcmu_scsi, file_backend_unmap_punches_holes)
{
	uint64_t lba = 0;
	uint32_t nb = (1 << 20) / BS;
	struct stat before, after;

	file_lun(LUN_SIZE);
	write_pattern(0, 2048, 6);
	cr_assert_eq(stat(file_path, &before), 0);
	expect_good(unmap(&lba, &nb, 1, 0));
	cr_assert_eq(stat(file_path, &after), 0);
	cr_assert(blocks_are_zero(0, 2048));
	cr_assert_lt(after.st_blocks, before.st_blocks,
		     "the file gave its blocks back (%lld -> %lld)",
		     (long long)before.st_blocks, (long long)after.st_blocks);
	file_done();
}

Test(tcmu_scsi, file_backend_write_same_of_zeros_zeroes_in_place)
{
	uint8_t zero[BS] = { 0 };
	struct stat st;

	blkcnt_t before;

	/* FALLOC_FL_ZERO_RANGE, where the tests' /tmp allows it */
	file_lun(LUN_SIZE);
	write_pattern(0, 2048, 10);
	cr_assert_eq(stat(file_path, &st), 0);
	before = st.st_blocks;
	expect_good(write_same(0, 8, 2000, zero, BS));
	cr_assert(blocks_are_zero(8, 2000));
	cr_assert_not(blocks_are_zero(7, 1));
	cr_assert_not(blocks_are_zero(2008, 1));
	cr_assert_eq(stat(file_path, &st), 0);
	cr_assert_eq(st.st_size, LUN_SIZE);
	/* In place: the blocks stay allocated, unlike UNMAP's holes. */
	cr_assert_geq(st.st_blocks, before, "%lld -> %lld blocks",
		      (long long)before, (long long)st.st_blocks);
	file_done();
}

Test(tcmu_scsi,
     file_backend_iovec_on_a_page_never_allocated_is_a_hardware_error)
{
	uint8_t buf[8 * BS], cdb[16];
	struct tcmu_cmd_entry *e;
	int r, w;

	/* The file backend hands the iovecs to preadv and pwritev, which
	 * fail with EFAULT where the daemon itself would take a SIGBUS. */
	file_lun(LUN_SIZE);
	fill(buf, sizeof(buf), 11);
	cdb_rw(cdb, 16, false, 0, 8);
	r = kern_queue(&h.k, cdb, 16, KERN_FROM_DEV, NULL, sizeof(buf));
	cdb_rw(cdb, 16, true, 0, 8);
	w = kern_queue(&h.k, cdb, 16, KERN_TO_DEV, buf, sizeof(buf));
	cr_assert(r > 0 && w > 0);
	for (int id = r; id <= w; id += w - r) {
		e = (void *)kern_entry(&h.k, kern_cmd(&h.k, id)->entry_off);
		e->req.iov[0].iov_base =
			(void *)(uintptr_t)(h.k.map_size - 4096);
	}
	kern_notify(&h.k);
	cr_assert_eq(harness_process(&h), 2);
	cr_assert_eq(kern_complete(&h.k), 2);
	expect_sense(kern_cmd(&h.k, r), TCMU_SK_HARDWARE_ERROR,
		     TCMU_ASC_INTERNAL_TARGET_FAILURE);
	expect_sense(kern_cmd(&h.k, w), TCMU_SK_HARDWARE_ERROR,
		     TCMU_ASC_INTERNAL_TARGET_FAILURE);
	file_done();
}

Test(tcmu_scsi, file_backend_write_error_is_a_medium_error)
{
	uint8_t buf[8 * BS];
	struct rlimit lim = { 4096, RLIM_INFINITY };

	/* The file exists at its full size; a lower RLIMIT_FSIZE makes
	 * writes past 4 KiB fail with EFBIG, for real. */
	file_lun(LUN_SIZE);
	signal(SIGXFSZ, SIG_IGN);
	cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
	fill(buf, sizeof(buf), 7);
	expect_sense(rw(10, true, 1024, 8, buf, sizeof(buf)),
		     TCMU_SK_MEDIUM_ERROR, TCMU_ASC_WRITE_ERROR);
	expect_good(rw(10, true, 0, 8, buf, 8 * BS));
	file_done();
}

/* Run child() in a child process and return its exit status, skipping
 * the test (with why_skipped) when it answers 77. */
static int in_child(int (*child)(void), const char *why_skipped)
{
	pid_t pid;
	int status;

	fflush(NULL);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0)
		_exit(child());
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status), "the child died: status 0x%x", status);
	if (WEXITSTATUS(status) == 77)
		cr_skip("%s", why_skipped);
	return WEXITSTATUS(status);
}

/* A private tmpfs of the given size at the new directory dir (a mkdtemp
 * template), in a mount namespace of this child's own: 0, 2 when the
 * directory cannot be made, 77 when the mounts cannot. */
static int private_tmpfs(char *dir, const char *size)
{
	char opts[32];

	if (!mkdtemp(dir))
		return 2;
	snprintf(opts, sizeof(opts), "size=%s", size);
	if (unshare(CLONE_NEWNS) < 0 ||
	    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("tmpfs", dir, "tmpfs", 0, opts) < 0) {
		rmdir(dir);
		return 77;
	}
	return 0;
}

/* A full filesystem: a tmpfs of 1 MiB in a mount namespace of a child
 * process (a single-threaded one: unshare needs it).  No Criterion
 * assertion in the child: it answers with its exit status. */
static int enospc_child(void)
{
	char dir[] = "/tmp/tcmu-enospc-XXXXXX", path[64];
	struct ioflusher_mempool *pool;
	struct tcmu_backend *be;
	struct tcmu_port port;
	struct tcmu_ring ring;
	struct tcmu_lun lun;
	struct kern_cmd *c = NULL;
	struct kern k;
	uint8_t *buf = malloc(1 << 20), cdb[16];
	int r;

	if (!buf)
		return 2;
	r = private_tmpfs(dir, "1m");
	if (r)
		return r;
	snprintf(path, sizeof(path), "%s/lun", dir);
	if (kern_init(&k, &harness_small) < 0 ||
	    tcmu_backend_file_open(path, 16 << 20, &be) < 0 ||
	    tcmu_port_pool_new(NULL, 1, true, &pool) < 0)
		return 3;
	port = (struct tcmu_port){ pool, k.sock[1], "enospc" };
	if (tcmu_ring_init(&ring, k.u, k.map_size, &lun, &tcmu_port_ops,
			   &port) < 0 ||
	    tcmu_lun_init(&lun, be, 4096, k.data_size, "enospc") < 0)
		return 4;
	memset(buf, 1, 1 << 20);
	/* 2 MiB into 1 MiB: the first or the second write fails. */
	for (int i = 0; i < 2; i++) {
		int id;

		cdb_rw(cdb, 16, true, 256 * (uint64_t)i, 256);
		id = kern_queue(&k, cdb, 16, KERN_TO_DEV, buf, 1 << 20);
		if (id < 0 || tcmu_ring_process(&ring) != 1 ||
		    kern_complete(&k) != 1)
			return 5;
		c = kern_cmd(&k, id);
		if (c->status != TCMU_STATUS_GOOD)
			break;
	}
	if (c->status != TCMU_STATUS_CHECK_CONDITION)
		return 6;
	return (c->sense[2] & 0xf) == TCMU_SK_DATA_PROTECT &&
			       c->sense[12] == 0x27 && c->sense[13] == 0x07 ?
		       0 :
		       7;
}

Test(tcmu_scsi, a_full_filesystem_is_space_allocation_failed)
{
	int status =
		in_child(enospc_child, "no mount namespace with a tmpfs here");

	cr_assert_eq(status, 0,
		     "DATA PROTECT, SPACE ALLOCATION FAILED WRITE PROTECT "
		     "expected (child status %d)",
		     status);
}

/* A real writeback error: the LUN's file is on an ext2 of 128 MiB on a
 * loop device over a tmpfs of 16 MiB, so that writes land in the page
 * cache and their writeback fails.  Linux reports that to fdatasync once;
 * the backend must go on reporting it.  A child in a mount namespace, as
 * above, answering with its exit status (77: no loop device or mkfs). */
/* One command through the ring: its status, or -1; MEDIUM ERROR as
 * such: TCMU_SK_MEDIUM_ERROR << 8 | CHECK CONDITION. */
static int run_one(struct kern *k, struct tcmu_ring *ring, const uint8_t *cdb,
		   unsigned int len, enum kern_dir dir, const void *buf,
		   uint64_t n)
{
	int id = kern_queue(k, cdb, len, dir, buf, n);
	struct kern_cmd *c;

	if (id < 0 || tcmu_ring_process(ring) != 1 || kern_complete(k) != 1)
		return -1;
	c = kern_cmd(k, id);
	if (c->status == TCMU_STATUS_CHECK_CONDITION)
		return (c->sense[2] & 0xf) << 8 | c->status;
	return c->status;
}

#define MEDIUM_ERROR (TCMU_SK_MEDIUM_ERROR << 8 | TCMU_STATUS_CHECK_CONDITION)

static int sync_cache(struct kern *k, struct tcmu_ring *ring)
{
	uint8_t cdb[10] = { 0x35 };

	return run_one(k, ring, cdb, 10, KERN_NONE, NULL, 0);
}

static int writeback_child(void)
{
	char dir[] = "/tmp/tcmu-wb-XXXXXX", img[64], mnt[64], path[80],
	     loop[32], cmd[128];
	int ctl, lfd, ifd, n, r = 0;
	struct ioflusher_mempool *pool;
	uint8_t cdb[16], *buf = malloc(1 << 20);
	struct tcmu_backend *be;
	struct tcmu_port port;
	struct tcmu_ring ring;
	struct tcmu_lun lun;
	struct kern k;

	if (!buf)
		return 2;
	r = private_tmpfs(dir, "16m");
	if (r)
		return r;
	snprintf(img, sizeof(img), "%s/img", dir);
	snprintf(mnt, sizeof(mnt), "%s/mnt", dir);
	snprintf(path, sizeof(path), "%s/lun", mnt);
	ifd = open(img, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ifd < 0 || ftruncate(ifd, 128 << 20) < 0 || mkdir(mnt, 0700) < 0)
		return 3;
	if (ctl < 0)
		return 77;
	/* Another test (losetup -f) may take the free device in between:
	 * EBUSY, then ask for the next free one. */
	for (int tries = 0;; tries++) {
		n = ioctl(ctl, LOOP_CTL_GET_FREE);
		if (n < 0)
			return 77;
		snprintf(loop, sizeof(loop), "/dev/loop%d", n);
		lfd = open(loop, O_RDWR | O_CLOEXEC);
		if (lfd < 0)
			return 77;
		if (ioctl(lfd, LOOP_SET_FD, ifd) == 0)
			break;
		r = errno;
		close(lfd);
		if (r != EBUSY || tries == 10)
			return 77;
		r = 0;
	}
	snprintf(cmd, sizeof(cmd), "mkfs.ext2 -q -F -N 64 %s >/dev/null 2>&1",
		 loop);
	if (system(cmd) != 0 || mount(loop, mnt, "ext2", 0, NULL) < 0) {
		ioctl(lfd, LOOP_CLR_FD);
		return 77;
	}
	if (kern_init(&k, &harness_small) < 0 ||
	    tcmu_backend_file_open(path, 64 << 20, &be) < 0 ||
	    tcmu_port_pool_new(NULL, 1, true, &pool) < 0)
		r = 4;
	port = (struct tcmu_port){ pool, k.sock[1], "writeback" };
	if (!r && (tcmu_ring_init(&ring, k.u, k.map_size, &lun, &tcmu_port_ops,
				  &port) < 0 ||
		   tcmu_lun_init(&lun, be, 4096, k.data_size, "writeback") < 0))
		r = 5;
	/* 32 MiB written, more than the tmpfs holds: accepted, cached. */
	memset(buf, 0x6b, 1 << 20);
	for (int i = 0; !r && i < 32; i++) {
		cdb_rw(cdb, 16, true, 256 * (uint64_t)i, 256);
		if (run_one(&k, &ring, cdb, 16, KERN_TO_DEV, buf, 1 << 20) !=
		    TCMU_STATUS_GOOD)
			r = 6;
	}
	/* The first SYNCHRONIZE CACHE gets the error; so must the next. */
	if (!r && sync_cache(&k, &ring) != MEDIUM_ERROR)
		r = 7;
	if (!r && sync_cache(&k, &ring) != MEDIUM_ERROR)
		r = 8;
	/* After it, a write, a WRITE SAME of zeros and an UNMAP fail too. */
	cdb_rw(cdb, 16, true, 0, 1);
	if (!r &&
	    run_one(&k, &ring, cdb, 16, KERN_TO_DEV, buf, 4096) != MEDIUM_ERROR)
		r = 10;
	memset(cdb, 0, sizeof(cdb));
	cdb[0] = 0x93; /* WRITE SAME(16), block 0, 1 block */
	cdb[13] = 1;
	memset(buf, 0, 4096);
	if (!r &&
	    run_one(&k, &ring, cdb, 16, KERN_TO_DEV, buf, 4096) != MEDIUM_ERROR)
		r = 12;
	memset(cdb, 0, sizeof(cdb));
	cdb[0] = 0x42; /* UNMAP, a list of 24 bytes: block 0, 1 block */
	cdb[8] = 24;
	buf[1] = 22;
	buf[3] = 16;
	buf[19] = 1;
	if (!r &&
	    run_one(&k, &ring, cdb, 10, KERN_TO_DEV, buf, 24) != MEDIUM_ERROR)
		r = 13;
	if (!r && tcmu_backend_close(be) != -EIO)
		r = 11;
	umount2(mnt, MNT_DETACH);
	ioctl(lfd, LOOP_CLR_FD);
	return r;
}

Test(tcmu_scsi, a_failed_writeback_fails_every_later_flush)
{
	int status =
		in_child(writeback_child,
			 "no mount namespace, loop device or mkfs.ext2 here");

	cr_assert_eq(
		status, 0,
		"child status %d: 7, the first SYNCHRONIZE CACHE was GOOD; "
		"8, the second was; 10, 12, 13: a write, a WRITE SAME, an "
		"UNMAP after them was not a MEDIUM ERROR; 11, closing did "
		"not say writes were lost",
		status);
}

/* WRITE SAME of zeros on a tmpfs file, which has no FALLOC_FL_ZERO_RANGE
 * (EOPNOTSUPP): zeros are written instead.  A child, as above. */
static int zero_range_child(void)
{
	char dir[] = "/tmp/tcmu-zero-XXXXXX", path[64];
	struct ioflusher_mempool *pool;
	uint8_t cdb[16] = { 0x93 }, *buf = malloc(1 << 20);
	struct tcmu_backend *be;
	struct tcmu_port port;
	struct tcmu_ring ring;
	struct tcmu_lun lun;
	struct kern k;
	int id, r;

	if (!buf)
		return 2;
	r = private_tmpfs(dir, "8m");
	if (r)
		return r;
	snprintf(path, sizeof(path), "%s/lun", dir);
	if (kern_init(&k, &harness_small) < 0 ||
	    tcmu_backend_file_open(path, 4 << 20, &be) < 0 ||
	    tcmu_port_pool_new(NULL, 1, true, &pool) < 0)
		return 3;
	port = (struct tcmu_port){ pool, k.sock[1], "zero-range" };
	if (tcmu_ring_init(&ring, k.u, k.map_size, &lun, &tcmu_port_ops,
			   &port) < 0 ||
	    tcmu_lun_init(&lun, be, 4096, k.data_size, "zero-range") < 0)
		return 4;
	memset(buf, 0x5a, 1 << 20);
	if (be->ops->write(be, &(struct iovec){ buf, 1 << 20 }, 1, 0, false))
		return 5;
	put_be32(cdb + 10, 200); /* blocks 0 to 199 of 4096 bytes */
	memset(buf, 0, 4096);
	id = kern_queue(&k, cdb, 16, KERN_TO_DEV, buf, 4096);
	if (id < 0 || tcmu_ring_process(&ring) != 1 || kern_complete(&k) != 1)
		return 6;
	if (kern_cmd(&k, id)->status != TCMU_STATUS_GOOD)
		return 7;
	if (be->ops->read(be, &(struct iovec){ buf, 1 << 20 }, 1, 0))
		return 8;
	for (size_t i = 0; i < 1 << 20; i++)
		if (buf[i] != (i < 200 * 4096 ? 0 : 0x5a))
			return 9;
	return 0;
}

Test(tcmu_scsi, write_same_of_zeros_where_zero_range_is_refused)
{
	int status = in_child(zero_range_child,
			      "no mount namespace with a tmpfs here");

	cr_assert_eq(status, 0,
		     "zeros where WRITE SAME wrote them, the pattern after "
		     "(child status %d)",
		     status);
}
