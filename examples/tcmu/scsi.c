// SPDX-License-Identifier: MIT
/*
 * The SCSI commands of a disk LUN: what Linux's sd driver, sg3_utils and
 * the usual initiators send (SBC-3, SPC-4).  Everything else is answered
 * with CHECK CONDITION and fixed-format sense data.
 *
 * The CDB is the ring's private copy; the data buffers are pointers into
 * the data area that the ring checked.  Parameter data read from them (the
 * UNMAP list, the WRITE SAME block) is copied before it is checked, since
 * the other side may change it at any time.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "tcmu.h"

enum {
	OP_TEST_UNIT_READY = 0x00,
	OP_REQUEST_SENSE = 0x03,
	OP_READ_6 = 0x08,
	OP_WRITE_6 = 0x0a,
	OP_INQUIRY = 0x12,
	OP_MODE_SENSE_6 = 0x1a,
	OP_READ_CAPACITY_10 = 0x25,
	OP_READ_10 = 0x28,
	OP_WRITE_10 = 0x2a,
	OP_SYNCHRONIZE_CACHE_10 = 0x35,
	OP_WRITE_SAME_10 = 0x41,
	OP_UNMAP = 0x42,
	OP_MODE_SENSE_10 = 0x5a,
	OP_READ_16 = 0x88,
	OP_WRITE_16 = 0x8a,
	OP_SYNCHRONIZE_CACHE_16 = 0x91,
	OP_WRITE_SAME_16 = 0x93,
	OP_SERVICE_ACTION_IN_16 = 0x9e,
	OP_READ_12 = 0xa8,
	OP_WRITE_12 = 0xaa,
};

#define SAI_READ_CAPACITY_16 0x10
#define SAI_GET_LBA_STATUS 0x12
/* LBA status descriptors answered at most, per GET LBA STATUS. */
#define LBA_STATUS_DESC_MAX 64
#define MODE_PAGE_CACHING 0x08
#define MODE_PAGE_CONTROL 0x0a
#define MODE_PAGE_ALL 0x3f
#define NO_BIT 0xff

/* Identification: not a T10-registered vendor, so the designators below
 * are the locally assigned kinds. */
static const char vendor[8] = "IOFLUSHR";
static const char product[16] = "ioflusher-tcmu  ";
static const char revision[4] = "0001";

static const uint8_t vpd_pages[] = { 0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2 };

static uint16_t be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const uint8_t *p)
{
	return (uint64_t)be32(p) << 32 | be32(p + 4);
}

static void put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put_be32(uint8_t *p, uint32_t v)
{
	put_be16(p, (uint16_t)(v >> 16));
	put_be16(p + 2, (uint16_t)v);
}

static void put_be64(uint8_t *p, uint64_t v)
{
	put_be32(p, (uint32_t)(v >> 32));
	put_be32(p + 4, (uint32_t)v);
}

unsigned int tcmu_scsi_cdb_len(uint8_t opcode)
{
	switch (opcode >> 5) {
	case 0:
		return 6;
	case 1:
	case 2:
		return 10;
	case 4:
		return 16;
	case 5:
		return 12;
	default: /* 3: reserved and variable length; 6, 7: vendor specific */
		return 0;
	}
}

/* ---------------------------------------------------------------- sense */

void tcmu_scsi_sense(struct tcmu_cmd *cmd, uint8_t key, uint16_t asc)
{
	cmd->status = TCMU_STATUS_CHECK_CONDITION;
	cmd->xfer_len = 0;
	memset(cmd->sense, 0, sizeof(cmd->sense));
	cmd->sense[0] = 0x70; /* current error, fixed format */
	cmd->sense[2] = key & 0x0f;
	cmd->sense[7] = TCMU_SENSE_LEN - 8; /* additional sense length */
	cmd->sense[12] = (uint8_t)(asc >> 8);
	cmd->sense[13] = (uint8_t)asc;
}

/* INVALID FIELD IN CDB, with the sense-key specific field pointer to the
 * byte (and bit, unless NO_BIT) at fault: SPC-4 4.5.2.4.2. */
static void invalid_cdb(struct tcmu_cmd *cmd, unsigned int byte,
			unsigned int bit)
{
	tcmu_scsi_sense(cmd, TCMU_SK_ILLEGAL_REQUEST,
			TCMU_ASC_INVALID_FIELD_IN_CDB);
	cmd->sense[15] = 0x80 | 0x40; /* SKSV, C/D: the error is in the CDB */
	if (bit != NO_BIT)
		cmd->sense[15] |= 0x08 | (bit & 7); /* BPV, bit pointer */
	put_be16(cmd->sense + 16, (uint16_t)byte);
}

static void illegal(struct tcmu_cmd *cmd, uint16_t asc)
{
	tcmu_scsi_sense(cmd, TCMU_SK_ILLEGAL_REQUEST, asc);
}

/* ---------------------------------------------------------------- data */

/* Copy between a flat buffer and the command's data buffers, from byte
 * off of the latter; returns the bytes copied. */
static uint64_t copy_iov(const struct tcmu_cmd *cmd, uint64_t off, void *buf,
			 uint64_t len, bool to_iov)
{
	uint8_t *p = buf;
	uint64_t done = 0;

	for (unsigned int i = 0; i < cmd->iov_cnt && done < len; i++) {
		uint64_t seg = cmd->iov[i].iov_len, n;

		if (off >= seg) {
			off -= seg;
			continue;
		}
		n = seg - off;
		if (n > len - done)
			n = len - done;
		if (to_iov)
			memcpy((uint8_t *)cmd->iov[i].iov_base + off, p + done,
			       n);
		else
			memcpy(p + done, (uint8_t *)cmd->iov[i].iov_base + off,
			       n);
		done += n;
		off = 0;
	}
	return done;
}

static void zero_iov_from(const struct tcmu_cmd *cmd, uint64_t off)
{
	for (unsigned int i = 0; i < cmd->iov_cnt; i++) {
		uint64_t seg = cmd->iov[i].iov_len;

		if (off >= seg) {
			off -= seg;
			continue;
		}
		memset((uint8_t *)cmd->iov[i].iov_base + off, 0, seg - off);
		off = 0;
	}
}

/*
 * Answer with parameter data built in buf: as much as the allocation
 * length and the buffer allow (SPC-4 4.2.5.6: truncation is no error).
 * The rest of the buffer is zeroed by tcmu_scsi_execute().
 */
static void data_in(struct tcmu_cmd *cmd, const void *buf, uint64_t len,
		    uint64_t alloc_len)
{
	if (len > alloc_len)
		len = alloc_len;
	cmd->xfer_len = copy_iov(cmd, 0, (void *)buf, len, true);
}

/* ---------------------------------------------------------------- LUN */

static uint64_t fnv1a(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (; *s; s++) {
		h ^= (uint8_t)*s;
		h *= 0x100000001b3ull;
	}
	return h;
}

int tcmu_lun_init(struct tcmu_lun *lun, struct tcmu_backend *be,
		  uint32_t block_size, uint64_t data_area_bytes,
		  const char *name)
{
	uint64_t max_xfer = TCMU_MAX_XFER_BYTES;
	unsigned int shift;

	for (shift = 9; shift <= 12; shift++)
		if (block_size == 1u << shift)
			break;
	if (shift > 12 || be->size < block_size)
		return -EINVAL;
	/* A command whose data does not fit in half the data area waits for
	 * the other half to drain; one that does not fit at all is refused
	 * by the kernel.  Announce what always fits. */
	if (max_xfer > data_area_bytes / 2)
		max_xfer = data_area_bytes / 2;
	if (max_xfer < block_size)
		return -EINVAL;
	memset(lun, 0, sizeof(*lun));
	lun->be = be;
	lun->block_size = block_size;
	lun->block_shift = shift;
	lun->nblocks = be->size >> shift;
	lun->max_xfer_blocks = (uint32_t)(max_xfer >> shift);
	/* NAA 3 (locally assigned) takes 60 bits of our own. */
	lun->naa = fnv1a(name) & 0x0fffffffffffffffull;
	snprintf(lun->serial, sizeof(lun->serial), "%016llx",
		 (unsigned long long)lun->naa);
	return 0;
}

static uint32_t unmap_lba_max(const struct tcmu_lun *lun)
{
	uint64_t n = TCMU_UNMAP_BYTES_MAX >> lun->block_shift;

	return n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
}

/* The range check of SBC-3 4.5: LBA OUT OF RANGE if any block is past
 * the end, written so that lba + n cannot wrap. */
static bool in_range(const struct tcmu_lun *lun, uint64_t lba, uint64_t n)
{
	return lba <= lun->nblocks && n <= lun->nblocks - lba;
}

/* ---------------------------------------------------------------- INQUIRY */

static size_t inquiry_standard(uint8_t *b)
{
	memset(b, 0, 36);
	b[0] = 0x00; /* connected, direct access block device */
	b[2] = 0x06; /* SPC-4 */
	b[3] = 0x02; /* response data format 2 */
	b[4] = 36 - 5;
	b[7] = 0x02; /* CMDQUE */
	memcpy(b + 8, vendor, sizeof(vendor));
	memcpy(b + 16, product, sizeof(product));
	memcpy(b + 32, revision, sizeof(revision));
	return 36;
}

static size_t vpd_device_id(const struct tcmu_lun *lun, uint8_t *b)
{
	size_t n = 4, serial_len = strlen(lun->serial);

	/* NAA, binary, associated with the logical unit (SPC-4 7.8.6.6). */
	b[n++] = 0x01;
	b[n++] = 0x03;
	b[n++] = 0;
	b[n++] = 8;
	put_be64(b + n, 3ull << 60 | lun->naa);
	n += 8;
	/* T10 vendor ID, ASCII: vendor and our serial number. */
	b[n++] = 0x02;
	b[n++] = 0x01;
	b[n++] = 0;
	b[n++] = (uint8_t)(sizeof(vendor) + serial_len);
	memcpy(b + n, vendor, sizeof(vendor));
	n += sizeof(vendor);
	memcpy(b + n, lun->serial, serial_len);
	return n + serial_len;
}

static size_t vpd_block_limits(const struct tcmu_lun *lun, uint8_t *b)
{
	uint32_t granularity = 4096 >> lun->block_shift;

	b[4] = 0x01; /* WSNZ: WRITE SAME must name its blocks */
	put_be32(b + 8, lun->max_xfer_blocks);
	put_be32(b + 20, unmap_lba_max(lun));
	put_be32(b + 24, TCMU_UNMAP_DESC_MAX);
	/* Pages (memory) and filesystem blocks (file) deallocate whole. */
	put_be32(b + 28, granularity ? granularity : 1);
	put_be32(b + 32, 0x80000000u); /* UGAVALID, alignment 0 */
	put_be64(b + 36, unmap_lba_max(lun));
	return 64;
}

static void inquiry(const struct tcmu_lun *lun, struct tcmu_cmd *cmd)
{
	const uint8_t *cdb = cmd->cdb;
	uint16_t alloc = be16(cdb + 3);
	uint8_t b[128] = { 0 };
	size_t n;

	if (cdb[1] & 0x02)
		return invalid_cdb(cmd, 1, 1); /* CMDDT, obsolete */
	if (!(cdb[1] & 0x01)) {
		if (cdb[2])
			return invalid_cdb(cmd, 2, NO_BIT);
		n = inquiry_standard(b);
		return data_in(cmd, b, n, alloc);
	}
	b[1] = cdb[2];
	switch (cdb[2]) {
	case 0x00: /* supported VPD pages */
		memcpy(b + 4, vpd_pages, sizeof(vpd_pages));
		n = 4 + sizeof(vpd_pages);
		break;
	case 0x80: /* unit serial number */
		n = strlen(lun->serial);
		memcpy(b + 4, lun->serial, n);
		n += 4;
		break;
	case 0x83:
		n = vpd_device_id(lun, b);
		break;
	case 0xb0:
		n = vpd_block_limits(lun, b);
		break;
	case 0xb1: /* block device characteristics */
		put_be16(b + 4, 1); /* non-rotating medium */
		n = 64;
		break;
	case 0xb2: /* logical block provisioning */
		/* LBPU, LBPWS, LBPWS10, LBPRZ 001b: unmapped blocks read as
		 * zeros. */
		b[5] = 0x80 | 0x40 | 0x20 | 0x04;
		b[6] = 0x02; /* thin provisioned */
		n = 8;
		break;
	default:
		return invalid_cdb(cmd, 2, NO_BIT);
	}
	put_be16(b + 2, (uint16_t)(n - 4));
	data_in(cmd, b, n, alloc);
}

/* ---------------------------------------------------------------- capacity */

static void read_capacity_10(const struct tcmu_lun *lun, struct tcmu_cmd *cmd)
{
	uint64_t last = lun->nblocks - 1;
	uint8_t b[8];

	/* SBC-3 5.16.1: without PMI the LBA field shall be zero. */
	if (!(cmd->cdb[8] & 0x01) && be32(cmd->cdb + 2))
		return invalid_cdb(cmd, 2, NO_BIT);
	/* 0xffffffff sends the initiator to READ CAPACITY (16). */
	put_be32(b, last > 0xfffffffeu ? 0xffffffffu : (uint32_t)last);
	put_be32(b + 4, lun->block_size);
	data_in(cmd, b, sizeof(b), sizeof(b));
}

static void read_capacity_16(const struct tcmu_lun *lun, struct tcmu_cmd *cmd)
{
	uint8_t b[32] = { 0 };

	/* SBC-3: as for READ CAPACITY (10), without PMI the LBA field
	 * shall be zero. */
	if (!(cmd->cdb[14] & 0x01) && be64(cmd->cdb + 2))
		return invalid_cdb(cmd, 2, NO_BIT);
	put_be64(b, lun->nblocks - 1);
	put_be32(b + 8, lun->block_size);
	b[14] = 0x80 | 0x40; /* LBPME, LBPRZ */
	data_in(cmd, b, sizeof(b), be32(cmd->cdb + 10));
}

/* ---------------------------------------------------------------- MODE SENSE */

static size_t mode_page(const struct tcmu_lun *lun, uint8_t page, uint8_t pc,
			uint8_t *b)
{
	switch (page) {
	case MODE_PAGE_CACHING:
		memset(b, 0, 20);
		b[0] = MODE_PAGE_CACHING;
		b[1] = 20 - 2;
		/* Changeable values (pc 1): none, all bits zero. */
		if (pc != 1 && lun->be->write_cache)
			b[2] = 0x04; /* WCE */
		return 20;
	case MODE_PAGE_CONTROL:
		memset(b, 0, 12);
		b[0] = MODE_PAGE_CONTROL;
		b[1] = 12 - 2;
		if (pc != 1)
			b[3] = 0x10; /* unrestricted reordering allowed */
		return 12;
	}
	return 0;
}

static void mode_sense(const struct tcmu_lun *lun, struct tcmu_cmd *cmd,
		       bool ten)
{
	const uint8_t *cdb = cmd->cdb;
	bool dbd = cdb[1] & 0x08, llbaa = ten && (cdb[1] & 0x10);
	uint8_t pc = cdb[2] >> 6, page = cdb[2] & 0x3f, subpage = cdb[3];
	size_t hdr = ten ? 8 : 4, n, desc = 0;
	uint32_t alloc = ten ? be16(cdb + 7) : cdb[4];
	uint8_t b[128] = { 0 };

	if (pc == 3)
		return illegal(cmd, TCMU_ASC_SAVING_PARAMETERS_NOT_SUPPORTED);
	/* Subpage 0xff asks for the page and its subpages: we have none. */
	if (subpage != 0x00 && subpage != 0xff)
		return invalid_cdb(cmd, 3, NO_BIT);
	n = hdr;
	if (!dbd) {
		desc = llbaa ? 16 : 8;
		if (llbaa) {
			put_be64(b + n, lun->nblocks);
			put_be32(b + n + 12, lun->block_size);
		} else {
			/* SBC-3 6.4.2, the short LBA block descriptor: NUMBER
			 * OF LOGICAL BLOCKS in bytes 0-3, FFFFFFFFh when the
			 * medium has more; byte 4 reserved, then the LOGICAL
			 * BLOCK LENGTH in bytes 5-7.  (A density code in byte
			 * 0 is the general descriptor of other device types.) */
			uint32_t nb = lun->nblocks > 0xffffffffu ?
					      0xffffffffu :
					      (uint32_t)lun->nblocks;

			put_be32(b + n, nb);
			put_be32(b + n + 4, lun->block_size);
		}
		n += desc;
	}
	if (page == MODE_PAGE_ALL) {
		n += mode_page(lun, MODE_PAGE_CACHING, pc, b + n);
		n += mode_page(lun, MODE_PAGE_CONTROL, pc, b + n);
	} else {
		size_t len = mode_page(lun, page, pc, b + n);

		if (!len)
			return invalid_cdb(cmd, 2, 5);
		n += len;
	}
	/* DPOFUA: DPO and FUA are honoured, so Linux sends FUA writes. */
	if (ten) {
		put_be16(b, (uint16_t)(n - 2));
		b[3] = 0x10;
		b[4] = llbaa ? 0x01 : 0x00;
		put_be16(b + 6, (uint16_t)desc);
	} else {
		b[0] = (uint8_t)(n - 1);
		b[2] = 0x10;
		b[3] = (uint8_t)desc;
	}
	data_in(cmd, b, n, alloc);
}

/* ---------------------------------------------------------------- IO */

static void backend_error(struct tcmu_cmd *cmd, int err, bool write)
{
	if (err == -ENOSPC)
		return tcmu_scsi_sense(cmd, TCMU_SK_DATA_PROTECT,
				       TCMU_ASC_SPACE_ALLOCATION_FAILED);
	/* A system call given a data buffer it could not touch: a data
	 * page the kernel never allocated, which the ring's SIGBUS guard
	 * answers the same way where the backend touches it itself. */
	if (err == -EFAULT)
		return tcmu_scsi_sense(cmd, TCMU_SK_HARDWARE_ERROR,
				       TCMU_ASC_INTERNAL_TARGET_FAILURE);
	tcmu_scsi_sense(cmd, TCMU_SK_MEDIUM_ERROR,
			write ? TCMU_ASC_WRITE_ERROR :
				TCMU_ASC_UNRECOVERED_READ_ERROR);
}

/*
 * GET LBA STATUS (SBC-3 5.7), which a LUN that reports LBPME must support:
 * from the LBA given, runs of blocks that are deallocated (1h: they read
 * as zeros) or mapped, or not known to be deallocated (0h), as the
 * backend finds them.  At most LBA_STATUS_DESC_MAX runs, each of at most
 * 0xffffffff blocks; the initiator asks again from where they end.
 */
/* Descriptor n of a GET LBA STATUS answer: nb blocks from lba. */
static void put_lba_status(uint8_t *b, unsigned int n, uint64_t lba,
			   uint64_t nb, bool mapped)
{
	uint8_t *d = b + 8 + 16 * n;

	put_be64(d, lba);
	put_be32(d + 8, (uint32_t)nb);
	d[12] = mapped ? 0x0 : 0x1;
}

static void get_lba_status(const struct tcmu_lun *lun, struct tcmu_cmd *cmd)
{
	uint8_t b[8 + 16 * LBA_STATUS_DESC_MAX] = { 0 };
	struct tcmu_backend *be = lun->be;
	uint64_t lba = be64(cmd->cdb + 2), start, count = 0;
	bool status = true;
	unsigned int n = 0;

	/* SBC-4's REPORT TYPE, reserved in SBC-3: an initiator asking for
	 * the deallocated runs alone must not be given every run. */
	if (cmd->cdb[14])
		return invalid_cdb(cmd, 14, NO_BIT);
	if (lba >= lun->nblocks)
		return illegal(cmd, TCMU_ASC_LBA_OUT_OF_RANGE);
	/* The run being built, count blocks from start of status, is a
	 * descriptor too. */
	start = lba;
	while (lba < lun->nblocks && n + (count != 0) < LBA_STATUS_DESC_MAX) {
		/* A descriptor counts at most 0xffffffff blocks: the backend
		 * is asked about no more. */
		uint64_t nb = lun->nblocks - lba < 0xffffffffu ?
				      lun->nblocks - lba :
				      0xffffffffu;
		bool mapped = true;

		if (be->ops->status) {
			uint64_t run = 0;
			int r = be->ops->status(be, lba << lun->block_shift,
						nb << lun->block_shift, &mapped,
						&run);

			if (r < 0)
				return backend_error(cmd, r, false);
			/* Whole blocks: a block partly allocated is mapped. */
			nb = run >> lun->block_shift;
			if (!nb) {
				nb = 1;
				mapped = true;
			}
		}
		/* A run like the one being built continues it. */
		if (count && (mapped != status || count + nb > 0xffffffffu)) {
			put_lba_status(b, n++, start, count, status);
			start = lba;
			count = 0;
		}
		status = mapped;
		count += nb;
		lba += nb;
	}
	put_lba_status(b, n++, start, count, status);
	put_be32(b, 4 + 16 * n); /* PARAMETER DATA LENGTH: bytes after it */
	data_in(cmd, b, 8 + 16 * (uint64_t)n, be32(cmd->cdb + 10));
}

/* Read len bytes into the first len of the command's buffers: the iovecs
 * cut short for the backend, and restored. */
static int read_into(struct tcmu_backend *be, struct tcmu_cmd *cmd,
		     uint64_t off, uint64_t len)
{
	unsigned int cnt = 0, saved_cnt = cmd->iov_cnt;
	size_t saved_len;
	uint64_t sum = 0;
	int r;

	if (len == cmd->data_len)
		return be->ops->read(be, cmd->iov, cmd->iov_cnt, off);
	while (sum + cmd->iov[cnt].iov_len < len)
		sum += cmd->iov[cnt++].iov_len;
	saved_len = cmd->iov[cnt].iov_len;
	cmd->iov[cnt].iov_len = (size_t)(len - sum);
	cmd->iov_cnt = cnt + 1;
	r = be->ops->read(be, cmd->iov, cmd->iov_cnt, off);
	cmd->iov[cnt].iov_len = saved_len;
	cmd->iov_cnt = saved_cnt;
	return r;
}

static void read_write(const struct tcmu_lun *lun, struct tcmu_cmd *cmd,
		       bool write, uint64_t lba, uint32_t nb,
		       unsigned int len_byte)
{
	struct tcmu_backend *be = lun->be;
	uint64_t bytes = (uint64_t)nb << lun->block_shift;
	bool fua = false;
	int r;

	if (cmd->cdb[0] != OP_READ_6 && cmd->cdb[0] != OP_WRITE_6) {
		if (cmd->cdb[1] & 0xe0) /* RDPROTECT, WRPROTECT: no PI */
			return invalid_cdb(cmd, 1, 7);
		fua = cmd->cdb[1] & 0x08;
	}
	if (!in_range(lun, lba, nb))
		return illegal(cmd, TCMU_ASC_LBA_OUT_OF_RANGE);
	/* A buffer larger than a read's transfer is an underflow, which the
	 * initiator learns as a residual, as target_cmd_size_check() in
	 * drivers/target allows it; a write's data must be exactly what it
	 * writes, and no transfer may overflow its buffer. */
	if (nb > lun->max_xfer_blocks || bytes > cmd->data_len ||
	    (write && bytes != cmd->data_len))
		return invalid_cdb(cmd, len_byte, NO_BIT);
	if (!nb)
		return;
	/* FUA on a read (SBC-3 5.11): what a volatile cache holds of the
	 * blocks reaches the medium before they are read. */
	if (!write && fua && be->write_cache) {
		r = be->ops->flush(be);
		if (r < 0)
			return backend_error(cmd, r, true);
	}
	if (write)
		r = be->ops->write(be, cmd->iov, cmd->iov_cnt,
				   lba << lun->block_shift, fua);
	else
		r = read_into(be, cmd, lba << lun->block_shift, bytes);
	if (r < 0)
		return backend_error(cmd, r, write);
	if (!write)
		cmd->xfer_len = bytes;
}

static void synchronize_cache(const struct tcmu_lun *lun, struct tcmu_cmd *cmd,
			      uint64_t lba, uint32_t nb)
{
	/* Zero blocks: from lba to the end of the medium. */
	if (!in_range(lun, lba, nb))
		return illegal(cmd, TCMU_ASC_LBA_OUT_OF_RANGE);
	if (lun->be->ops->flush(lun->be) < 0)
		tcmu_scsi_sense(cmd, TCMU_SK_MEDIUM_ERROR,
				TCMU_ASC_WRITE_ERROR);
}

struct unmap_desc {
	uint64_t lba;
	uint32_t nb;
};

static void unmap(const struct tcmu_lun *lun, struct tcmu_cmd *cmd)
{
	struct unmap_desc d[TCMU_UNMAP_DESC_MAX];
	uint64_t len = be16(cmd->cdb + 7), total = 0;
	uint8_t hdr[8];
	size_t nd;

	if (cmd->cdb[1] & 0x01) /* ANCHOR: not supported (ANC_SUP 0) */
		return invalid_cdb(cmd, 1, 0);
	if (!len) /* SBC-3 5.28: no parameter data, no error */
		return;
	if (len > cmd->data_len)
		len = cmd->data_len;
	if (len < sizeof(hdr))
		return illegal(cmd, TCMU_ASC_PARAMETER_LIST_LENGTH_ERROR);
	copy_iov(cmd, 0, hdr, sizeof(hdr), false);
	/* A descriptor cut short by either length is ignored. */
	nd = be16(hdr + 2);
	if (nd > len - sizeof(hdr))
		nd = len - sizeof(hdr);
	nd /= 16;
	if (nd > TCMU_UNMAP_DESC_MAX)
		return illegal(cmd, TCMU_ASC_INVALID_FIELD_IN_PARAMETER_LIST);
	/* Check every descriptor of our copy before deallocating any. */
	for (size_t i = 0; i < nd; i++) {
		uint8_t raw[16];

		copy_iov(cmd, sizeof(hdr) + 16 * i, raw, sizeof(raw), false);
		d[i].lba = be64(raw);
		d[i].nb = be32(raw + 8);
		if (!in_range(lun, d[i].lba, d[i].nb))
			return illegal(cmd, TCMU_ASC_LBA_OUT_OF_RANGE);
		total += d[i].nb;
		if (total > unmap_lba_max(lun))
			return illegal(
				cmd, TCMU_ASC_INVALID_FIELD_IN_PARAMETER_LIST);
	}
	for (size_t i = 0; i < nd; i++) {
		int r;

		if (!d[i].nb)
			continue;
		r = lun->be->ops->discard(lun->be, d[i].lba << lun->block_shift,
					  (uint64_t)d[i].nb
						  << lun->block_shift);
		if (r < 0)
			return backend_error(cmd, r, true);
	}
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* The flags of byte 1 of WRITE SAME (10) and (16), SBC-3 5.42, 5.43. */
enum {
	WS_WRPROTECT = 0xe0,
	WS_ANCHOR = 0x10,
	WS_UNMAP = 0x08,
	WS_PBDATA = 0x04, /* obsolete in SBC-4 */
	WS_LBDATA = 0x02, /* obsolete in SBC-4 */
	WS_NDOB = 0x01, /* (16) only, SBC-4; reserved in (10) */
};

/* Write one block again and again, TCMU_IOV_MAX at a time: at most 1 MiB
 * (blocks of 4096) per system call, 8 KiB of stack. */
static int write_pattern(const struct tcmu_lun *lun, const uint8_t *block,
			 uint64_t off, uint32_t nb)
{
	struct iovec iov[TCMU_IOV_MAX];
	int r = 0;

	for (size_t i = 0; i < TCMU_IOV_MAX; i++) {
		iov[i].iov_base = (void *)block;
		iov[i].iov_len = lun->block_size;
	}
	while (nb && r >= 0) {
		unsigned int n = nb < TCMU_IOV_MAX ? nb : TCMU_IOV_MAX;

		r = lun->be->ops->write(lun->be, iov, n, off, false);
		off += (uint64_t)n << lun->block_shift;
		nb -= n;
	}
	return r;
}

static void write_same(const struct tcmu_lun *lun, struct tcmu_cmd *cmd,
		       uint64_t lba, uint32_t nb, unsigned int len_byte)
{
	const uint8_t *cdb = cmd->cdb;
	bool unmap_bit = cdb[1] & WS_UNMAP, ndob = cdb[1] & WS_NDOB;
	uint32_t bs = lun->block_size;
	uint8_t block[4096];
	uint64_t off, len;
	int r;

	if (cdb[1] & WS_WRPROTECT) /* no protection information */
		return invalid_cdb(cmd, 1, 7);
	if (cdb[1] & WS_ANCHOR) /* ANC_SUP 0 */
		return invalid_cdb(cmd, 1, 4);
	/* One block of data, without the LBA or the physical sector number
	 * written into it: this LUN has neither to write. */
	if (cdb[1] & WS_PBDATA)
		return invalid_cdb(cmd, 1, 2);
	if (cdb[1] & WS_LBDATA)
		return invalid_cdb(cmd, 1, 1);
	if (cdb[0] == OP_WRITE_SAME_10 && ndob) /* reserved there */
		return invalid_cdb(cmd, 1, 0);
	if (!nb || nb > unmap_lba_max(lun)) /* WSNZ, MAXIMUM WRITE SAME */
		return invalid_cdb(cmd, len_byte, NO_BIT);
	if (!in_range(lun, lba, nb))
		return illegal(cmd, TCMU_ASC_LBA_OUT_OF_RANGE);
	if (cmd->data_len != (ndob ? 0 : bs))
		return invalid_cdb(cmd, len_byte, NO_BIT);
	/* NDOB (SBC-4): no Data-Out buffer, the block is zeros. */
	memset(block, 0, bs);
	if (!ndob)
		copy_iov(cmd, 0, block, bs, false);
	off = lba << lun->block_shift;
	len = (uint64_t)nb << lun->block_shift;
	/* Zeros (what Linux's write-zeroes sends): deallocated with UNMAP
	 * (LBPRZ: they read as zeros), zeroed by the backend in one go
	 * without, never block by block from the ring thread. */
	if (all_zero(block, bs))
		r = unmap_bit ? lun->be->ops->discard(lun->be, off, len) :
				lun->be->ops->write_zeroes(lun->be, off, len);
	else
		r = write_pattern(lun, block, off, nb);
	if (r < 0)
		backend_error(cmd, r, true);
}

/* ---------------------------------------------------------------- dispatch */

static void request_sense(struct tcmu_cmd *cmd)
{
	uint8_t b[TCMU_SENSE_LEN] = { 0 };

	if (cmd->cdb[1] & 0x01) /* DESC: descriptor format not supported */
		return invalid_cdb(cmd, 1, 0);
	/* Sense goes with the CHECK CONDITION (autosense): nothing pends. */
	b[0] = 0x70;
	b[2] = TCMU_SK_NO_SENSE;
	b[7] = TCMU_SENSE_LEN - 8;
	data_in(cmd, b, sizeof(b), cmd->cdb[4]);
}

/* Whether the command's buffer holds Data-Out, the initiator's data: an
 * UNMAP without a parameter list has none. */
static bool data_out(const struct tcmu_cmd *cmd)
{
	switch (cmd->cdb[0]) {
	case OP_WRITE_6:
	case OP_WRITE_10:
	case OP_WRITE_12:
	case OP_WRITE_16:
	case OP_WRITE_SAME_10:
	case OP_WRITE_SAME_16:
		return true;
	case OP_UNMAP:
		return be16(cmd->cdb + 7) != 0;
	default:
		return false;
	}
}

static void execute(const struct tcmu_lun *lun, struct tcmu_cmd *cmd)
{
	const uint8_t *c = cmd->cdb;
	unsigned int len = tcmu_scsi_cdb_len(c[0]);

	cmd->status = TCMU_STATUS_GOOD;
	cmd->xfer_len = 0;
	memset(cmd->sense, 0, sizeof(cmd->sense));
	if (!len || cmd->cdb_len < len) {
		/* A group without a fixed length is none of ours; a CDB cut
		 * short cannot be from the kernel, but let it not be read. */
		if (!len || !cmd->cdb_len)
			return illegal(cmd,
				       TCMU_ASC_INVALID_COMMAND_OPERATION_CODE);
		return invalid_cdb(cmd, cmd->cdb_len - 1, NO_BIT);
	}
	switch (c[0]) {
	case OP_TEST_UNIT_READY:
	case OP_REQUEST_SENSE:
	case OP_READ_6:
	case OP_WRITE_6:
	case OP_INQUIRY:
	case OP_MODE_SENSE_6:
	case OP_READ_CAPACITY_10:
	case OP_READ_10:
	case OP_WRITE_10:
	case OP_SYNCHRONIZE_CACHE_10:
	case OP_WRITE_SAME_10:
	case OP_UNMAP:
	case OP_MODE_SENSE_10:
	case OP_READ_16:
	case OP_WRITE_16:
	case OP_SYNCHRONIZE_CACHE_16:
	case OP_WRITE_SAME_16:
	case OP_SERVICE_ACTION_IN_16:
	case OP_READ_12:
	case OP_WRITE_12:
		break;
	default:
		return illegal(cmd, TCMU_ASC_INVALID_COMMAND_OPERATION_CODE);
	}
	/* NACA in the CONTROL byte: ACA is not supported (SAM-5 5.9). */
	if (c[len - 1] & 0x04)
		return invalid_cdb(cmd, len - 1, 2);

	switch (c[0]) {
	case OP_TEST_UNIT_READY:
		return;
	case OP_REQUEST_SENSE:
		return request_sense(cmd);
	case OP_INQUIRY:
		return inquiry(lun, cmd);
	case OP_MODE_SENSE_6:
		return mode_sense(lun, cmd, false);
	case OP_MODE_SENSE_10:
		return mode_sense(lun, cmd, true);
	case OP_READ_CAPACITY_10:
		return read_capacity_10(lun, cmd);
	case OP_SERVICE_ACTION_IN_16:
		if ((c[1] & 0x1f) == SAI_GET_LBA_STATUS)
			return get_lba_status(lun, cmd);
		if ((c[1] & 0x1f) != SAI_READ_CAPACITY_16)
			return invalid_cdb(cmd, 1, 4);
		return read_capacity_16(lun, cmd);
	case OP_READ_6:
	case OP_WRITE_6:
		/* Transfer length 0 means 256 blocks here (SBC-3 5.15). */
		return read_write(lun, cmd, c[0] == OP_WRITE_6,
				  ((uint32_t)(c[1] & 0x1f) << 16) | be16(c + 2),
				  c[4] ? c[4] : 256, 4);
	case OP_READ_10:
	case OP_WRITE_10:
		return read_write(lun, cmd, c[0] == OP_WRITE_10, be32(c + 2),
				  be16(c + 7), 7);
	case OP_READ_12:
	case OP_WRITE_12:
		return read_write(lun, cmd, c[0] == OP_WRITE_12, be32(c + 2),
				  be32(c + 6), 6);
	case OP_READ_16:
	case OP_WRITE_16:
		return read_write(lun, cmd, c[0] == OP_WRITE_16, be64(c + 2),
				  be32(c + 10), 10);
	case OP_SYNCHRONIZE_CACHE_10:
		return synchronize_cache(lun, cmd, be32(c + 2), be16(c + 7));
	case OP_SYNCHRONIZE_CACHE_16:
		return synchronize_cache(lun, cmd, be64(c + 2), be32(c + 10));
	case OP_UNMAP:
		return unmap(lun, cmd);
	case OP_WRITE_SAME_10:
		/* What Linux's sd sends for write-zeroes of a small range when
		 * REPORT SUPPORTED OPERATION CODES did not vouch for (16); an
		 * INVALID COMMAND OPERATION CODE would have it give up
		 * write-zeroes for the disk (sd_done(): no_write_same). */
		return write_same(lun, cmd, be32(c + 2), be16(c + 7), 7);
	case OP_WRITE_SAME_16:
		return write_same(lun, cmd, be64(c + 2), be32(c + 10), 10);
	}
}

void tcmu_scsi_execute(const struct tcmu_lun *lun, struct tcmu_cmd *cmd)
{
	execute(lun, cmd);
	/* What the answer leaves of a Data-In buffer is zeroed, whatever
	 * the command: the kernel returns the whole buffer when the answer
	 * is no bytes (it ignores a READ_LEN of 0), or lacks CAP_READ_LEN,
	 * and an initiator must never see what an earlier command, perhaps
	 * another initiator's, left in those data-area pages. */
	if (!data_out(cmd) && cmd->xfer_len < cmd->data_len)
		zero_iov_from(cmd, cmd->xfer_len);
}
