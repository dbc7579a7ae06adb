// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for ioflusher-tcmu's command ring and CDB parser.
 *
 * The input is a little program for the kernel stand-in of the harness
 * (tests/tcmu/kernel.c) and for whoever else maps the device: queue a
 * command with fuzzed CDB and data (for Data-Out, a count of data bytes
 * that follow in the input), queue a structured READ or WRITE,
 * queue raw entries, overwrite bytes and words of the mailbox and ring,
 * move cmd_head, reset the ring, re-attach, and let the daemon's ring
 * process.  The daemon's view of map0 has PROT_NONE guards either side,
 * so an access outside it faults; AddressSanitizer and UBSan watch the
 * rest.  While nothing but the stand-in has written the map, every pass
 * is also checked for writes where the daemon may not write, and for what
 * the LUN holds: a shadow of it, zeros at first (a new memory backend for
 * each input), follows the writes completed, and a READ must return it.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernel.h"
#include "tcmu.h"

#define LUN_BYTES (8u << 20)
#define LUN_BS 512u
#define LUN_BLOCKS (LUN_BYTES / LUN_BS)

static struct kern k;
static struct tcmu_backend *be;
static struct tcmu_lun lun;
static struct tcmu_ring ring;
static bool attached;
static struct tcmu_cmd cmd_state;

static struct tcmu_cmd *cmd_get(void *data)
{
	return &cmd_state;
}

static void cmd_put(void *data, struct tcmu_cmd *cmd)
{
}

static int notify(void *data)
{
	return 0;
}

static const struct tcmu_ring_ops ops = {
	.cmd_get = cmd_get,
	.cmd_put = cmd_put,
	.notify = notify,
};

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const struct kern_cfg cfg = { .cmd_area = 16 * 1024,
				      .data_area = 256 * 1024,
				      .guard = 1ull << 30 };

	if (tcmu_ring_guard_init() < 0 || kern_init(&k, &cfg) < 0)
		abort();
	return 0;
}

/*
 * The shadow: per block of the LUN, the byte all of its bytes hold, a
 * block of the pattern table, or UNKNOWN.  It follows the structured
 * READs and WRITEs (queue_rw(): one byte over whole blocks) and, of the
 * fuzzed CDBs, READ, WRITE and WRITE SAME of Data-Out the input gave,
 * and UNMAP (LBPRZ: zeros); a write it cannot follow (data from stale
 * pages, an error after part of it may be written) makes the whole LUN
 * UNKNOWN.  A command is applied when the kernel reaps it, in the order
 * queued, which is the ring's: the daemon runs them in that order.  Only
 * while strict: nobody but the stand-in wrote the ring, so what ran is
 * what was queued.
 */
#define UNKNOWN 0xffff
#define PATTERNS 64

static uint16_t shadow[LUN_BLOCKS];
static uint8_t pattern[PATTERNS][LUN_BS];
static unsigned int npattern;

enum effect_kind {
	EFF_READ, /* if GOOD, the Data-In is what the shadow holds */
	EFF_WRITE, /* if GOOD, nb blocks from lba hold val */
	EFF_UNMAP, /* if GOOD, the descriptors' blocks read as zeros */
	EFF_ANY, /* if GOOD, anything may have changed */
};

struct effect {
	int id;
	enum effect_kind kind;
	bool rw; /* queue_rw()'s: GOOD in the LUN, LBA OUT OF RANGE past it */
	bool same; /* val[0] for every block */
	uint64_t lba;
	uint64_t nb;
	uint16_t val[256];
	unsigned int nd;
	struct {
		uint64_t lba;
		uint32_t nb;
	} d[TCMU_UNMAP_DESC_MAX];
};

static struct effect pending[KERN_CMDS];
static unsigned int npending;

static uint64_t be_n(const uint8_t *p, unsigned int n)
{
	uint64_t v = 0;

	for (unsigned int i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

static uint16_t uniform(const uint8_t *p, size_t n)
{
	for (size_t i = 1; i < n; i++)
		if (p[i] != p[0])
			return UNKNOWN;
	return p[0];
}

/* A block of data as the shadow holds it. */
static uint16_t block_val(const uint8_t *p)
{
	uint16_t v = uniform(p, LUN_BS);

	if (v != UNKNOWN || npattern == PATTERNS)
		return v;
	memcpy(pattern[npattern], p, LUN_BS);
	return (uint16_t)(256 + npattern++);
}

static bool block_is(const uint8_t *p, uint16_t v)
{
	return v < 256 ? uniform(p, LUN_BS) == v :
			 !memcmp(p, pattern[v - 256], LUN_BS);
}

static bool in_lun(uint64_t lba, uint64_t nb)
{
	return lba <= LUN_BLOCKS && nb <= LUN_BLOCKS - lba;
}

static void forget_all(void)
{
	for (uint32_t b = 0; b < LUN_BLOCKS; b++)
		shadow[b] = UNKNOWN;
}

static struct effect *expect(int id, enum effect_kind kind)
{
	struct effect *e;

	if (id <= 0)
		return NULL;
	/* No more commands are in flight than there are ids. */
	if (npending == KERN_CMDS)
		abort();
	e = &pending[npending++];
	e->id = id;
	e->kind = kind;
	e->rw = e->same = false;
	e->nd = 0;
	return e;
}

/* The LBA and blocks of a READ, WRITE or WRITE SAME, as SBC-3 has them. */
static void cdb_range(const uint8_t *cdb, uint64_t *lba, uint64_t *nb)
{
	switch (cdb[0]) {
	case 0x08:
	case 0x0a: /* (6): 0 blocks is 256 */
		*lba = be_n(cdb + 1, 3) & 0x1fffff;
		*nb = cdb[4] ? cdb[4] : 256;
		break;
	case 0x28:
	case 0x2a:
	case 0x41: /* (10) */
		*lba = be_n(cdb + 2, 4);
		*nb = be_n(cdb + 7, 2);
		break;
	case 0xa8:
	case 0xaa: /* (12) */
		*lba = be_n(cdb + 2, 4);
		*nb = be_n(cdb + 6, 4);
		break;
	default: /* (16) */
		*lba = be_n(cdb + 2, 8);
		*nb = be_n(cdb + 10, 4);
		break;
	}
}

static void expect_unmap(struct effect *e, const uint8_t *cdb,
			 const uint8_t *out, uint32_t n)
{
	/* SBC-3 5.28: the parameter list is what both the CDB and the buffer
	 * hold, the descriptors what both it and the header's length hold,
	 * whole ones only. */
	uint64_t len = be_n(cdb + 7, 2), nd;

	if (len > n)
		len = n;
	nd = len < 8 ? 0 : be_n(out + 2, 2);
	if (len >= 8 && nd > len - 8)
		nd = len - 8;
	nd /= 16;
	/* More than the Block Limits page allows is refused. */
	if (nd > TCMU_UNMAP_DESC_MAX) {
		e->kind = EFF_ANY;
		return;
	}
	e->nd = (unsigned int)nd;
	for (unsigned int i = 0; i < e->nd; i++) {
		e->d[i].lba = be_n(out + 8 + 16 * i, 8);
		e->d[i].nb = (uint32_t)be_n(out + 16 + 16 * i, 4);
	}
}

/* A fuzzed CDB that reads or writes the LUN; out holds its Data-Out if
 * dir is KERN_TO_DEV (if not, the data area's stale bytes: unknown). */
static void expect_cdb(int id, const uint8_t *cdb, enum kern_dir dir,
		       const uint8_t *out, uint32_t n)
{
	bool known = dir == KERN_TO_DEV;
	struct effect *e;

	switch (cdb[0]) {
	case 0x08:
	case 0x28:
	case 0xa8:
	case 0x88:
		/* Only a Data-In buffer comes back to be compared. */
		if (dir != KERN_FROM_DEV)
			return;
		e = expect(id, EFF_READ);
		break;
	case 0x0a:
	case 0x2a:
	case 0xaa:
	case 0x8a:
	case 0x41:
	case 0x93:
		e = expect(id, EFF_WRITE);
		break;
	case 0x42:
		e = expect(id, known ? EFF_UNMAP : EFF_ANY);
		if (e && known)
			expect_unmap(e, cdb, out, n);
		return;
	default:
		return;
	}
	if (!e)
		return;
	cdb_range(cdb, &e->lba, &e->nb);
	e->val[0] = UNKNOWN;
	if (cdb[0] == 0x41 || cdb[0] == 0x93) {
		/* One block again and again; NDOB (16): zeros, no Data-Out. */
		e->same = true;
		if (cdb[0] == 0x93 && (cdb[1] & 0x01))
			e->val[0] = 0;
		else if (known && n == LUN_BS)
			e->val[0] = block_val(out);
	} else if (e->kind == EFF_WRITE) {
		/* GOOD only with a buffer of exactly the blocks written. */
		e->same = !known || n != e->nb * LUN_BS || e->nb > 256;
		for (uint64_t b = 0; !e->same && b < e->nb; b++)
			e->val[b] = block_val(out + b * LUN_BS);
	}
}

static bool illegal_request(const struct kern_cmd *c)
{
	return c->status == TCMU_STATUS_CHECK_CONDITION &&
	       (c->sense[2] & 0xf) == TCMU_SK_ILLEGAL_REQUEST;
}

/* queue_rw()'s commands: GOOD in the LUN, LBA OUT OF RANGE past it. */
static bool as_promised(const struct effect *e, const struct kern_cmd *c)
{
	if (in_lun(e->lba, e->nb))
		return c->status == TCMU_STATUS_GOOD;
	return illegal_request(c) &&
	       (c->sense[12] << 8 | c->sense[13]) == TCMU_ASC_LBA_OUT_OF_RANGE;
}

static void apply(const struct effect *e, const struct kern_cmd *c)
{
	bool good = c->status == TCMU_STATUS_GOOD;

	if (e->rw && !as_promised(e, c))
		abort();
	/* ILLEGAL REQUEST: refused before anything was written (the daemon
	 * checks a CDB, and an UNMAP's whole parameter list, first).  Any
	 * other error may come after part of the data was written. */
	if (illegal_request(c))
		return;
	if (!good) {
		if (e->kind != EFF_READ)
			forget_all();
		return;
	}
	/* GOOD for blocks outside the LUN is the daemon's fault. */
	if (e->kind != EFF_UNMAP && e->kind != EFF_ANY &&
	    !in_lun(e->lba, e->nb))
		abort();
	switch (e->kind) {
	case EFF_READ:
		for (uint64_t b = 0; b < e->nb; b++) {
			uint16_t v = shadow[e->lba + b];

			if (v != UNKNOWN && !block_is(c->in + b * LUN_BS, v))
				abort();
		}
		break;
	case EFF_WRITE:
		for (uint64_t b = 0; b < e->nb; b++)
			shadow[e->lba + b] = e->val[e->same ? 0 : b];
		break;
	case EFF_UNMAP:
		for (unsigned int i = 0; i < e->nd; i++) {
			if (!in_lun(e->d[i].lba, e->d[i].nb))
				abort();
			for (uint32_t b = 0; b < e->d[i].nb; b++)
				shadow[e->d[i].lba + b] = 0;
		}
		break;
	case EFF_ANY:
		forget_all();
		break;
	}
}

/* The commands just reaped, in the order they were queued. */
static void settle(void)
{
	unsigned int i = 0;

	for (; i < npending; i++) {
		const struct kern_cmd *c = kern_cmd(&k, pending[i].id);

		if (c->inflight)
			break;
		if (!c->done)
			abort();
		apply(&pending[i], c);
	}
	/* The rest still queued, and none of them completed before one
	 * queued ahead of it. */
	for (unsigned int j = i; j < npending; j++)
		if (!kern_cmd(&k, pending[j].id)->inflight)
			abort();
	memmove(pending, pending + i, (npending - i) * sizeof(pending[0]));
	npending -= i;
}

struct input {
	const uint8_t *p;
	size_t n;
};

static uint8_t byte(struct input *in)
{
	if (!in->n)
		return 0;
	in->n--;
	return *in->p++;
}

static uint64_t bytes(struct input *in, unsigned int n)
{
	uint64_t v = 0;

	for (unsigned int i = 0; i < n; i++)
		v = v << 8 | byte(in);
	return v;
}

static void attach(void)
{
	attached = tcmu_ring_init(&ring, k.u, k.map_size, &lun, &ops, NULL) ==
			   0 &&
		   tcmu_lun_init(&lun, be, LUN_BS, k.data_size, "fuzz") == 0;
}

static void pass(bool strict)
{
	uint64_t first;
	int r;

	if (!attached)
		return;
	if (strict)
		kern_snapshot(&k);
	r = tcmu_ring_process(&ring);
	if (r < 0 && r != -EUCLEAN)
		abort();
	if (ring.tail >= ring.cmdr_size || ring.tail % 8)
		abort();
	if (strict && kern_stray_writes(&k, &first))
		abort();
	/* Where only the stand-in wrote the ring, a completion it cannot
	 * take is the daemon's fault: a cmd_tail or an entry it wrote
	 * wrong.  Only a ring the input corrupted is reset. */
	if (kern_complete(&k) < 0) {
		if (strict)
			abort();
		kern_reset_ring(&k);
	}
	/* Not strict: what ran may not be what was queued. */
	if (strict)
		settle();
	else
		npending = 0;
}

static void queue_cdb(struct input *in)
{
	static const unsigned int lens[] = { 6, 10, 12, 16 };
	static uint8_t buf[128 * 1024];
	unsigned int len = lens[byte(in) % 4];
	/* Zeros past len, as the daemon sees them in the entry. */
	uint8_t cdb[16] = { 0 };
	enum kern_dir dir = (enum kern_dir)(byte(in) % 3);
	uint32_t n = (uint32_t)bytes(in, 2) * 2;

	for (unsigned int i = 0; i < len; i++)
		cdb[i] = byte(in);
	for (uint32_t i = 0; i < n && i < sizeof(buf); i++)
		buf[i] = dir == KERN_TO_DEV ? 0 : (uint8_t)(i * 7);
	/* Data-Out: a count, then that many bytes of the input begin the
	 * data (an UNMAP list, a WRITE SAME block; zeros after them), taken
	 * from the input so that what follows is the program's next op, not
	 * the data again. */
	if (dir == KERN_TO_DEV) {
		uint32_t m = byte(in);

		if (m > in->n)
			m = (uint32_t)in->n;
		if (m > n)
			m = n;
		memcpy(buf, in->p, m);
		in->p += m;
		in->n -= m;
	}
	expect_cdb(kern_queue(&k, cdb, len, dir, buf, n), cdb, dir, buf, n);
}

static void queue_rw(struct input *in)
{
	static uint8_t buf[64 * 1024];
	uint8_t c = byte(in), cdb[16] = { 0 };
	uint32_t nb = byte(in) % 128 + 1;
	/* Mostly in the LUN, where the shadow can compare, and up to a
	 * transfer past its end. */
	uint64_t lba = bytes(in, 3) % (LUN_BLOCKS + 128);
	bool write = c & 1;
	struct effect *e;

	cdb[0] = write ? 0x8a : 0x88;
	cdb[1] = c & 0x08; /* FUA */
	for (int i = 0; i < 8; i++)
		cdb[2 + i] = (uint8_t)(lba >> (56 - 8 * i));
	cdb[13] = (uint8_t)nb;
	memset(buf, c, sizeof(buf));
	e = expect(kern_queue(&k, cdb, 16, write ? KERN_TO_DEV : KERN_FROM_DEV,
			      buf, (uint64_t)nb * LUN_BS),
		   write ? EFF_WRITE : EFF_READ);
	if (e) {
		e->rw = e->same = true;
		e->lba = lba;
		e->nb = nb;
		e->val[0] = c;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { data, size };
	bool strict = true;

	/* A new LUN for each input: zeros, as the shadow starts, and an
	 * input that does the same whatever ran before it. */
	if (be)
		be->ops->close(be);
	if (kern_clear(&k) < 0 || tcmu_backend_mem_open(LUN_BYTES, &be) < 0)
		abort();
	memset(shadow, 0, sizeof(shadow));
	npattern = npending = 0;
	attach();
	while (in.n) {
		uint8_t op = byte(&in);

		switch (op % 10) {
		case 0:
		case 1:
			queue_cdb(&in);
			break;
		case 2:
			queue_rw(&in);
			break;
		case 3: { /* a byte anywhere in the mailbox or the ring */
			uint64_t off = bytes(&in, 2) % k.data_off;

			k.k[off] = byte(&in);
			strict = false;
			break;
		}
		case 4: { /* an aligned word of the ring: lengths, offsets */
			uint64_t off = (bytes(&in, 2) * 8) % k.cmdr_size;
			uint64_t v = bytes(&in, 8);

			memcpy(k.k + k.cmdr_off + off, &v, sizeof(v));
			strict = false;
			break;
		}
		case 5: /* cmd_head, by the stand-in or anyone */
			kern_set_head(&k, (uint32_t)bytes(&in, 4));
			strict = false;
			break;
		case 6: { /* a raw entry */
			uint8_t e[256];
			uint32_t len = (byte(&in) % 32 + 1) * 8;

			for (uint32_t i = 0; i < len; i++)
				e[i] = byte(&in);
			kern_queue_raw(&k, e, len);
			strict = false;
			break;
		}
		case 7:
			/* What was queued and not run is aborted, never run:
			 * the daemon starts again at the kernel's 0. */
			kern_reset_ring(&k);
			npending = 0;
			break;
		case 8:
			attach();
			break;
		default:
			pass(strict);
			break;
		}
	}
	pass(strict);
	return 0;
}
