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
 * is also checked for writes where the daemon may not write.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernel.h"
#include "tcmu.h"

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

	if (tcmu_ring_guard_init() < 0 || kern_init(&k, &cfg) < 0 ||
	    tcmu_backend_mem_open(8 << 20, &be) < 0)
		abort();
	return 0;
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
		   tcmu_lun_init(&lun, be, 512, k.data_size, "fuzz") == 0;
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
}

static void queue_cdb(struct input *in)
{
	static const unsigned int lens[] = { 6, 10, 12, 16 };
	static uint8_t buf[128 * 1024];
	unsigned int len = lens[byte(in) % 4];
	uint8_t cdb[16];
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
	kern_queue(&k, cdb, len, dir, buf, n);
}

static void queue_rw(struct input *in)
{
	static uint8_t buf[64 * 1024];
	uint8_t c = byte(in), cdb[16] = { 0 };
	uint32_t nb = byte(in) % 128 + 1;
	uint64_t lba = bytes(in, 3);
	bool write = c & 1;

	cdb[0] = write ? 0x8a : 0x88;
	cdb[1] = c & 0x08; /* FUA */
	for (int i = 0; i < 8; i++)
		cdb[2 + i] = (uint8_t)(lba >> (56 - 8 * i));
	cdb[13] = (uint8_t)nb;
	memset(buf, c, sizeof(buf));
	kern_queue(&k, cdb, 16, write ? KERN_TO_DEV : KERN_FROM_DEV, buf,
		   (uint64_t)nb * 512);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { data, size };
	bool strict = true;

	if (kern_clear(&k) < 0)
		abort();
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
			kern_reset_ring(&k);
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
