// SPDX-License-Identifier: MIT
/*
 * The kernel's side of target_core_user, for the harness and the fuzzer:
 * see kernel.h.  Written from the 6.1 driver's behaviour, read to learn:
 * queue_cmd_ring(), tcmu_get_empty_block(), tcmu_vma_fault(),
 * tcmu_handle_completions(), tcmu_handle_completion(), tcmu_reset_ring().
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernel.h"

#define CMDR_OFF ((uint32_t)sizeof(struct tcmu_mailbox))
#define ENTRY_MIN ((uint32_t)sizeof(struct tcmu_cmd_entry))
#define OFF_IOV ((uint32_t)offsetof(struct tcmu_cmd_entry, req.iov))
#define RSP_END ENTRY_MIN

static struct tcmu_mailbox *mb(struct kern *k)
{
	return (struct tcmu_mailbox *)(void *)k->k;
}

void kern_set_len_op(void *entry, uint32_t len, uint8_t op)
{
	uint32_t v = (len & ~(uint32_t)TCMU_OP_MASK) | op;

	memcpy(entry, &v, sizeof(v));
}

uint8_t *kern_entry(struct kern *k, uint32_t off)
{
	return k->k + k->cmdr_off + off;
}

uint32_t kern_mb_tail(struct kern *k)
{
	return __atomic_load_n(&mb(k)->cmd_tail, __ATOMIC_ACQUIRE);
}

void kern_set_head(struct kern *k, uint32_t head)
{
	__atomic_store_n(&mb(k)->cmd_head, head, __ATOMIC_RELEASE);
}

int kern_init(struct kern *k, const struct kern_cfg *cfg)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	uint8_t *at;

	memset(k, 0, sizeof(*k));
	k->memfd = k->nopage_fd = -1;
	k->sock[0] = k->sock[1] = -1;
	if (cfg->cmd_area % page || cfg->data_area % page ||
	    cfg->guard % page || cfg->cmd_area < 2 * page)
		return -EINVAL;
	k->cmdr_off = CMDR_OFF;
	k->cmdr_size = cfg->cmd_area - CMDR_OFF;
	k->data_off = cfg->cmd_area;
	k->data_size = cfg->data_area;
	k->map_size = cfg->cmd_area + cfg->data_area;
	k->blk_size = (uint32_t)page;
	k->nblk = (uint32_t)(cfg->data_area / page);
	k->scatter = cfg->scatter;
	k->bitmap = calloc(k->nblk ? k->nblk : 1, 1);
	k->page = calloc(k->nblk ? k->nblk : 1, 1);
	k->cmds = calloc(KERN_CMDS, sizeof(*k->cmds));
	if (!k->bitmap || !k->page || !k->cmds)
		goto fail;

	k->memfd = memfd_create("tcmu-map0", MFD_CLOEXEC);
	if (k->memfd < 0 || ftruncate(k->memfd, (off_t)k->map_size) < 0)
		goto fail;
	k->k = mmap(NULL, k->map_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		    k->memfd, 0);
	if (k->k == MAP_FAILED)
		goto fail;
	/* An empty file: its pages, past its end, fault with SIGBUS. */
	k->nopage_fd = memfd_create("tcmu-no-page", MFD_CLOEXEC);
	if (k->nopage_fd < 0)
		goto fail;
	/* The daemon's view: guard, map0, guard.  An access that strays
	 * up to cfg->guard bytes either way faults. */
	k->reserve_len = k->map_size + 2 * cfg->guard;
	k->reserve = mmap(NULL, k->reserve_len, PROT_NONE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (k->reserve == MAP_FAILED)
		goto fail;
	at = mmap(k->reserve + cfg->guard, k->data_off, PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_FIXED, k->memfd, 0);
	if (at == MAP_FAILED)
		goto fail;
	k->u = at;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0,
		       k->sock) < 0)
		goto fail;

	k->mb_flags = cfg->mb_flags ? cfg->mb_flags :
				      TCMU_MAILBOX_FLAG_CAP_OOOC |
					      TCMU_MAILBOX_FLAG_CAP_READ_LEN |
					      TCMU_MAILBOX_FLAG_CAP_TMR |
					      TCMU_MAILBOX_FLAG_CAP_KEEP_BUF;
	if (kern_clear(k) < 0)
		goto fail;
	return 0;
fail:
	kern_fini(k);
	return -ENOMEM;
}

/* The daemon's view of data block i: the kernel's page, or none. */
static int map_block(struct kern *k, uint32_t i, bool page)
{
	uint64_t off = k->data_off + (uint64_t)i * k->blk_size;
	void *at;

	at = mmap(k->u + off, k->blk_size, PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_FIXED, page ? k->memfd : k->nopage_fd,
		  page ? (off_t)off : 0);
	return at == MAP_FAILED ? -errno : 0;
}

int kern_clear(struct kern *k)
{
	uint32_t v;
	void *at;

	/* Zeros without touching every page of a 1 GiB data area. */
	if (fallocate(k->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
		      (off_t)k->map_size) < 0)
		memset(k->k, 0, k->map_size);
	memset(k->bitmap, 0, k->nblk ? k->nblk : 1);
	/* No data page yet: tcmu_vma_fault() answers VM_FAULT_SIGBUS for a
	 * page that tcmu_get_empty_block() has not allocated. */
	memset(k->page, 0, k->nblk ? k->nblk : 1);
	if (k->data_size) {
		at = mmap(k->u + k->data_off, k->data_size,
			  PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
			  k->nopage_fd, 0);
		if (at == MAP_FAILED)
			return -errno;
	}
	for (int i = 0; i < KERN_CMDS; i++) {
		free(k->cmds[i].in);
		k->cmds[i].in = NULL;
		k->cmds[i].inflight = false;
		k->cmds[i].done = false;
	}
	k->head = k->last_cleaned = 0;
	k->nentries = 0;
	k->raw_done = 0;
	k->raw_uflags = 0;
	k->broken = false;
	while (read(k->sock[0], &v, sizeof(v)) > 0 ||
	       read(k->sock[1], &v, sizeof(v)) > 0)
		;
	/* The mailbox as tcmu_configure_device() fills it. */
	mb(k)->version = TCMU_MAILBOX_VERSION;
	mb(k)->flags = k->mb_flags;
	mb(k)->cmdr_off = k->cmdr_off;
	mb(k)->cmdr_size = k->cmdr_size;
	return 0;
}

void kern_fini(struct kern *k)
{
	if (k->cmds)
		for (int i = 0; i < KERN_CMDS; i++)
			free(k->cmds[i].in);
	if (k->k && k->k != MAP_FAILED)
		munmap(k->k, k->map_size);
	if (k->reserve && k->reserve != MAP_FAILED)
		munmap(k->reserve, k->reserve_len);
	if (k->memfd >= 0)
		close(k->memfd);
	if (k->nopage_fd >= 0)
		close(k->nopage_fd);
	for (int i = 0; i < 2; i++)
		if (k->sock[i] >= 0)
			close(k->sock[i]);
	free(k->bitmap);
	free(k->page);
	free(k->cmds);
	free(k->snap);
	memset(k, 0, sizeof(*k));
	k->memfd = k->nopage_fd = k->sock[0] = k->sock[1] = -1;
}

static uint32_t spc_used(uint32_t head, uint32_t tail, uint32_t size)
{
	return head >= tail ? head - tail : size - tail + head;
}

static uint32_t spc_free(struct kern *k)
{
	/* One byte kept free, or full could not be told from empty. */
	return k->cmdr_size - spc_used(k->head, k->last_cleaned, k->cmdr_size) -
	       1;
}

static void record(struct kern *k, uint32_t off, uint32_t len, uint8_t op,
		   bool raw)
{
	if (k->nentries < KERN_ENTRIES)
		k->entries[k->nentries++] =
			(struct kern_entry){ off, len, op, raw };
}

static struct kern_entry *recorded(struct kern *k, uint32_t off)
{
	for (unsigned int i = 0; i < k->nentries; i++)
		if (k->entries[i].off == off)
			return &k->entries[i];
	return NULL;
}

/* Make room for len contiguous bytes at the head: a PAD if the ring's end
 * is nearer.  Returns -EAGAIN when the ring is too full. */
static int reserve_entry(struct kern *k, uint32_t len)
{
	uint32_t to_end = k->cmdr_size - k->head;
	uint32_t need = to_end >= len ? len : len + to_end;

	if (spc_free(k) < need)
		return -EAGAIN;
	if (to_end < len) {
		struct tcmu_cmd_entry_hdr *hdr = (void *)kern_entry(k, k->head);

		kern_set_len_op(hdr, to_end, TCMU_OP_PAD);
		hdr->cmd_id = 0;
		hdr->kflags = 0;
		hdr->uflags = 0;
		record(k, k->head, to_end, TCMU_OP_PAD, false);
		k->head = 0;
		kern_set_head(k, k->head);
	}
	return 0;
}

static void free_blocks(struct kern *k, struct kern_cmd *c)
{
	for (uint32_t i = 0; i < c->nblk; i++)
		k->bitmap[c->dbi[i]] = 0;
	c->nblk = 0;
}

static int alloc_blocks(struct kern *k, struct kern_cmd *c, uint32_t n)
{
	uint32_t avail = 0, last = UINT32_MAX;

	for (uint32_t i = 0; i < k->nblk; i++)
		avail += !k->bitmap[i];
	if (avail < n)
		return -EAGAIN;
	c->nblk = 0;
	while (c->nblk < n) {
		uint32_t pick = UINT32_MAX;

		for (uint32_t i = 0; i < k->nblk; i++) {
			if (k->bitmap[i])
				continue;
			if (pick == UINT32_MAX)
				pick = i;
			if (!k->scatter || i != last + 1) {
				pick = i;
				break;
			}
		}
		/* A block's page is allocated when the block is first
		 * used, and kept when it is freed. */
		if (!k->page[pick]) {
			int r = map_block(k, pick, true);

			if (r < 0) {
				free_blocks(k, c);
				return r;
			}
			k->page[pick] = 1;
		}
		k->bitmap[pick] = 1;
		c->dbi[c->nblk++] = pick;
		last = pick;
	}
	return 0;
}

/* iovecs over the blocks, merged where contiguous (new_block_to_iov). */
static void build_iovs(struct kern *k, struct kern_cmd *c)
{
	uint64_t left = c->data_len;

	c->iov_cnt = 0;
	for (uint32_t i = 0; i < c->nblk && left; i++) {
		uint64_t base = k->data_off + (uint64_t)c->dbi[i] * k->blk_size;
		uint64_t n = left < k->blk_size ? left : k->blk_size;

		if (c->iov_cnt &&
		    c->iov_base[c->iov_cnt - 1] + c->iov_len[c->iov_cnt - 1] ==
			    base) {
			c->iov_len[c->iov_cnt - 1] += n;
		} else {
			c->iov_base[c->iov_cnt] = base;
			c->iov_len[c->iov_cnt] = n;
			c->iov_cnt++;
		}
		left -= n;
	}
}

static void copy_blocks(struct kern *k, struct kern_cmd *c, uint8_t *buf,
			uint64_t len, bool to_ring)
{
	uint64_t done = 0;

	for (uint32_t i = 0; i < c->nblk && done < len; i++) {
		uint8_t *blk =
			k->k + k->data_off + (uint64_t)c->dbi[i] * k->blk_size;
		uint64_t n = len - done < k->blk_size ? len - done :
							k->blk_size;

		if (to_ring)
			memcpy(blk, buf + done, n);
		else
			memcpy(buf + done, blk, n);
		done += n;
	}
}

static uint32_t round8(uint32_t n)
{
	return (n + 7) & ~7u;
}

int kern_queue(struct kern *k, const uint8_t *cdb, unsigned int cdb_len,
	       enum kern_dir dir, const void *out, uint64_t len)
{
	struct tcmu_cmd_entry *ent;
	struct kern_cmd *c = NULL;
	uint32_t nblk, base, size;
	int id, r;

	if (dir == KERN_NONE)
		len = 0;
	nblk = (uint32_t)((len + k->blk_size - 1) / k->blk_size);
	if (nblk > KERN_IOV_MAX || len > k->data_size)
		return -E2BIG;
	for (id = 1; id < KERN_CMDS; id++)
		if (!k->cmds[id].inflight) {
			c = &k->cmds[id];
			break;
		}
	if (!c)
		return -EAGAIN;
	free(c->in);
	memset(c, 0, sizeof(*c));
	c->id = (uint16_t)id;
	c->dir = dir;
	c->data_len = len;
	/* Sized for the worst case first, as the kernel does. */
	base = OFF_IOV + 16 * nblk;
	if (base < ENTRY_MIN)
		base = ENTRY_MIN;
	size = base + round8(cdb_len);
	if (size > k->cmdr_size / 2)
		return -E2BIG;
	r = alloc_blocks(k, c, nblk);
	if (r < 0)
		return r;
	build_iovs(k, c);
	base = OFF_IOV + 16 * c->iov_cnt;
	if (base < ENTRY_MIN)
		base = ENTRY_MIN;
	size = base + round8(cdb_len);
	r = reserve_entry(k, size);
	if (r < 0) {
		free_blocks(k, c);
		return r;
	}
	if (dir == KERN_TO_DEV && len)
		copy_blocks(k, c, (uint8_t *)out, len, true);
	if (dir == KERN_FROM_DEV) {
		c->in = calloc(1, len ? len : 1);
		if (!c->in) {
			free_blocks(k, c);
			return -ENOMEM;
		}
	}

	ent = (void *)kern_entry(k, k->head);
	memset(ent, 0, size);
	kern_set_len_op(ent, size, TCMU_OP_CMD);
	ent->hdr.cmd_id = c->id;
	ent->req.iov_cnt = c->iov_cnt;
	for (unsigned int i = 0; i < c->iov_cnt; i++) {
		ent->req.iov[i].iov_base = (void *)(uintptr_t)c->iov_base[i];
		ent->req.iov[i].iov_len = c->iov_len[i];
	}
	/* The CDB's offset is from the start of the map, not the entry. */
	ent->req.cdb_off = k->cmdr_off + k->head + base;
	memcpy(k->k + ent->req.cdb_off, cdb, cdb_len);
	c->entry_off = k->head;
	c->entry_len = size;
	c->inflight = true;
	record(k, k->head, size, TCMU_OP_CMD, false);
	k->head = (k->head + size) % k->cmdr_size;
	kern_set_head(k, k->head);
	return id;
}

int kern_queue_raw(struct kern *k, const void *entry, uint32_t len)
{
	uint32_t off;
	int r;

	if (len % 8 || len < 8 || len > k->cmdr_size / 2)
		return -EINVAL;
	r = reserve_entry(k, len);
	if (r < 0)
		return r;
	off = k->head;
	memcpy(kern_entry(k, off), entry, len);
	record(k, off, len, (uint8_t)tcmu_hdr_get_op(*(const uint32_t *)entry),
	       true);
	k->head = (k->head + len) % k->cmdr_size;
	kern_set_head(k, k->head);
	return (int)off;
}

int kern_queue_tmr(struct kern *k, uint8_t type, const uint16_t *ids,
		   unsigned int n)
{
	uint8_t buf[512] = { 0 };
	struct tcmu_tmr_entry *tmr = (void *)buf;
	uint32_t len =
		round8((uint32_t)(offsetof(struct tcmu_tmr_entry, cmd_ids) +
				  n * sizeof(uint16_t)));

	if (len > sizeof(buf))
		return -EINVAL;
	kern_set_len_op(tmr, len, TCMU_OP_TMR);
	tmr->tmr_type = type;
	tmr->cmd_cnt = n;
	memcpy(tmr->cmd_ids, ids, n * sizeof(uint16_t));
	return kern_queue_raw(k, buf, len);
}

struct kern_cmd *kern_cmd(struct kern *k, int id)
{
	if (id <= 0 || id >= KERN_CMDS)
		return NULL;
	return &k->cmds[id];
}

int kern_notify(struct kern *k)
{
	uint32_t one = 1;

	if (write(k->sock[0], &one, sizeof(one)) == sizeof(one))
		return 0;
	/* uio counts events, a socket queues them: a full socket holds
	 * events the daemon has not read yet, which will wake it anyway. */
	return errno == EAGAIN ? 0 : -errno;
}

int kern_take_notify(struct kern *k)
{
	uint32_t v;
	int n = 0;

	while (read(k->sock[0], &v, sizeof(v)) == sizeof(v))
		n = 1;
	return n;
}

static void forget_entry(struct kern *k, uint32_t off)
{
	for (unsigned int i = 0; i < k->nentries; i++)
		if (k->entries[i].off == off) {
			memmove(&k->entries[i], &k->entries[i + 1],
				(k->nentries - i - 1) * sizeof(k->entries[0]));
			k->nentries--;
			return;
		}
}

int kern_complete(struct kern *k)
{
	uint32_t tail = kern_mb_tail(k);
	int n = 0;

	if (k->broken)
		return -EUCLEAN;
	if (tail >= k->cmdr_size || tail % 8)
		goto broken;
	while (k->last_cleaned != tail) {
		struct tcmu_cmd_entry *ent =
			(void *)kern_entry(k, k->last_cleaned);
		uint32_t len = tcmu_hdr_get_len(ent->hdr.len_op);
		uint8_t op = (uint8_t)tcmu_hdr_get_op(ent->hdr.len_op);
		struct kern_entry *rec = recorded(k, k->last_cleaned);
		struct kern_cmd *c;

		/* An entry that does not fit between last_cleaned and the
		 * tail would have us go round for ever. */
		if (!len || len > k->cmdr_size - k->last_cleaned ||
		    len > spc_used(tail, k->last_cleaned, k->cmdr_size))
			goto broken;
		if (rec && rec->raw) {
			k->raw_done++;
			k->raw_uflags = ent->hdr.uflags;
		} else if (op == TCMU_OP_CMD) {
			c = kern_cmd(k, ent->hdr.cmd_id);
			if (!c || !c->inflight)
				goto broken;
			c->uflags = ent->hdr.uflags;
			c->status = ent->rsp.scsi_status;
			if (c->uflags & TCMU_UFLAG_UNKNOWN_OP)
				c->status = TCMU_STATUS_CHECK_CONDITION;
			if (c->status == TCMU_STATUS_CHECK_CONDITION)
				memcpy(c->sense, ent->rsp.sense_buffer,
				       sizeof(c->sense));
			/* As tcmu_handle_completion(): READ_LEN counts for a
			 * Data-In command only, and only when not 0; it is
			 * then the command's length (a residual for the
			 * initiator), and the data is gathered even with
			 * CHECK CONDITION (SCF_TREAT_READ_AS_NORMAL). */
			c->read_len = (uint32_t)c->data_len;
			bool read_len_valid =
				c->dir == KERN_FROM_DEV &&
				(c->uflags & TCMU_UFLAG_READ_LEN) &&
				ent->rsp.read_len;
			if (read_len_valid && ent->rsp.read_len < c->read_len)
				c->read_len = ent->rsp.read_len;
			if (c->dir == KERN_FROM_DEV &&
			    (c->status == TCMU_STATUS_GOOD || read_len_valid))
				copy_blocks(k, c, c->in, c->read_len, false);
			free_blocks(k, c);
			c->inflight = false;
			c->done = true;
		}
		forget_entry(k, k->last_cleaned);
		k->last_cleaned = (k->last_cleaned + len) % k->cmdr_size;
		n++;
	}
	return n;
broken:
	k->broken = true;
	return -EUCLEAN;
}

void kern_reset_ring(struct kern *k)
{
	/* tcmu_reset_ring(): the ring starts again at 0, head and tail
	 * alike, and nobody is told (only commands queued afterwards, from
	 * the qfull queue, notify).  The data pages stay allocated. */
	k->head = k->last_cleaned = 0;
	__atomic_store_n(&mb(k)->cmd_tail, 0, __ATOMIC_RELAXED);
	kern_set_head(k, 0);
	for (int id = 1; id < KERN_CMDS; id++)
		if (k->cmds[id].inflight) {
			free_blocks(k, &k->cmds[id]);
			k->cmds[id].inflight = false;
		}
	k->nentries = 0;
	k->broken = false;
}

void kern_move_to(struct kern *k, uint32_t off)
{
	k->head = k->last_cleaned = off;
	mb(k)->cmd_tail = off;
	kern_set_head(k, off);
}

void kern_release(struct kern *k, int id)
{
	struct kern_cmd *c = kern_cmd(k, id);

	if (c && !c->inflight) {
		free(c->in);
		c->in = NULL;
		c->done = false;
	}
}

void kern_snapshot(struct kern *k)
{
	if (!k->snap)
		k->snap = malloc(k->map_size);
	if (k->snap)
		memcpy(k->snap, k->k, k->map_size);
}

static bool in_range(uint64_t off, uint64_t start, uint64_t len)
{
	return off >= start && off - start < len;
}

/* May the daemon have written byte off? */
static bool allowed(struct kern *k, uint64_t off)
{
	if (in_range(off, offsetof(struct tcmu_mailbox, cmd_tail), 4))
		return true;
	for (unsigned int i = 0; i < k->nentries; i++) {
		const struct kern_entry *e = &k->entries[i];
		uint64_t start = k->cmdr_off + e->off;

		if (!in_range(off, start, e->len))
			continue;
		if (off == start + offsetof(struct tcmu_cmd_entry_hdr, uflags))
			return true;
		return e->op == TCMU_OP_CMD && e->len >= RSP_END &&
		       in_range(off, start + 8, RSP_END - 8);
	}
	for (int id = 1; id < KERN_CMDS; id++) {
		struct kern_cmd *c = &k->cmds[id];

		/* Its own blocks, whatever the direction: the ring does not
		 * say it, and an initiator may send a Data-In command with a
		 * Data-Out buffer; the kernel then ignores what was written. */
		if (!c->inflight)
			continue;
		for (uint32_t b = 0; b < c->nblk; b++)
			if (in_range(off,
				     k->data_off +
					     (uint64_t)c->dbi[b] * k->blk_size,
				     k->blk_size))
				return true;
	}
	return false;
}

uint64_t kern_stray_writes(struct kern *k, uint64_t *first)
{
	uint64_t n = 0;

	if (!k->snap)
		return UINT64_MAX;
	for (uint64_t chunk = 0; chunk < k->map_size; chunk += 4096) {
		uint64_t len =
			k->map_size - chunk < 4096 ? k->map_size - chunk : 4096;

		if (!memcmp(k->snap + chunk, k->k + chunk, len))
			continue;
		for (uint64_t off = chunk; off < chunk + len; off++) {
			if (k->snap[off] == k->k[off] || allowed(k, off))
				continue;
			if (!n && first)
				*first = off;
			n++;
		}
	}
	return n;
}
