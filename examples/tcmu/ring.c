// SPDX-License-Identifier: MIT
/*
 * The command ring of a target_core_user device (the kernel's
 * Documentation/target/tcmu-design.rst and <linux/target_core_user.h>).
 *
 * map0 holds the mailbox at offset 0, the command ring at cmdr_off, and
 * the data area after the ring up to the end of the mapping.  The kernel
 * puts entries at cmd_head; we complete them in order at cmd_tail, write
 * the new cmd_tail and tell the kernel with a 4-byte write to the uio fd.
 *
 * Everything in the mapping may change under us: the kernel writes it,
 * and so can anyone else who maps the device.  So, as the kernel does for
 * its side ("UAM" in drivers/target/target_core_user.c):
 *  - the ring's place and size are read once, at attach, and checked
 *    against the mapping's size; cmd_tail is ours, read back only to see
 *    whether the kernel reset the ring;
 *  - every field of an entry is read once, checked, and only the checked
 *    copy is used: offsets, lengths, iovecs, the CDB;
 *  - an entry that does not fit between cmd_tail and cmd_head, or past
 *    the ring's end, breaks the ring: nothing more is read or written
 *    until the kernel resets it (reset_ring moves cmd_tail);
 *  - a CMD entry whose CDB lies outside the entry, or whose iovecs leave
 *    the data area, is completed with HARDWARE ERROR, INTERNAL TARGET
 *    FAILURE, and none of its data is touched.
 * The response overlays the request in the entry (rsp and req share a
 * union), so the request is copied out before anything is written.
 */
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tcmu.h"

#define HDR_SIZE sizeof(struct tcmu_cmd_entry_hdr)
#define ENTRY_MIN sizeof(struct tcmu_cmd_entry)
#define OFF_IOV offsetof(struct tcmu_cmd_entry, req.iov)
#define IOV_SIZE 16 /* struct iovec of the kernel: base, length */

/* Loads of single, naturally aligned fields of the shared mapping: one
 * read each, which the compiler may neither repeat nor tear. */
static uint32_t load32(const uint8_t *p)
{
	return __atomic_load_n((const uint32_t *)(const void *)p,
			       __ATOMIC_RELAXED);
}

static uint64_t load64(const uint8_t *p)
{
	return __atomic_load_n((const uint64_t *)(const void *)p,
			       __ATOMIC_RELAXED);
}

static uint8_t *mailbox_field(struct tcmu_ring *ring, size_t off)
{
	return ring->map + off;
}

static uint32_t load_head(struct tcmu_ring *ring)
{
	/* Pairs with the kernel's smp_store_release() of cmd_head: the
	 * entry is written before the head that covers it. */
	return __atomic_load_n((uint32_t *)(void *)mailbox_field(
				       ring,
				       offsetof(struct tcmu_mailbox, cmd_head)),
			       __ATOMIC_ACQUIRE);
}

static void store_tail(struct tcmu_ring *ring)
{
	/* The responses are written before the tail that hands them back. */
	__atomic_store_n((uint32_t *)(void *)mailbox_field(
				 ring, offsetof(struct tcmu_mailbox, cmd_tail)),
			 ring->tail, __ATOMIC_RELEASE);
}

static bool valid_offset(const struct tcmu_ring *ring, uint32_t off)
{
	return off < ring->cmdr_size && off % TCMU_OP_ALIGN_SIZE == 0;
}

int tcmu_ring_init(struct tcmu_ring *ring, void *map, uint64_t map_size,
		   const struct tcmu_lun *lun, const struct tcmu_ring_ops *ops,
		   void *data)
{
	uint8_t *m = map;
	uint16_t version;
	uint32_t head;

	memset(ring, 0, sizeof(*ring));
	if (!map || (uintptr_t)map % TCMU_OP_ALIGN_SIZE ||
	    map_size < sizeof(struct tcmu_mailbox) || !ops || !ops->cmd_get ||
	    !ops->cmd_put || !ops->notify)
		return -EINVAL;
	ring->map = m;
	ring->map_size = map_size;
	ring->lun = lun;
	ring->ops = ops;
	ring->data = data;

	memcpy(&version, m + offsetof(struct tcmu_mailbox, version),
	       sizeof(version));
	if (version != TCMU_MAILBOX_VERSION)
		return -EPROTONOSUPPORT;
	memcpy(&ring->mb_flags, m + offsetof(struct tcmu_mailbox, flags),
	       sizeof(ring->mb_flags));
	ring->cmdr_off = load32(m + offsetof(struct tcmu_mailbox, cmdr_off));
	ring->cmdr_size = load32(m + offsetof(struct tcmu_mailbox, cmdr_size));
	/* The ring after the mailbox, aligned, room for at least one entry,
	 * and the data area after it, inside the mapping. */
	if (ring->cmdr_off < sizeof(struct tcmu_mailbox) ||
	    ring->cmdr_off % TCMU_OP_ALIGN_SIZE ||
	    ring->cmdr_size % TCMU_OP_ALIGN_SIZE ||
	    ring->cmdr_size < 2 * ENTRY_MIN ||
	    (uint64_t)ring->cmdr_off + ring->cmdr_size > map_size)
		return -EINVAL;
	ring->data_off = (uint64_t)ring->cmdr_off + ring->cmdr_size;

	/* A restarted daemon resumes where the last one stopped. */
	ring->tail = load32(m + offsetof(struct tcmu_mailbox, cmd_tail));
	head = load_head(ring);
	if (!valid_offset(ring, ring->tail) || !valid_offset(ring, head))
		return -EUCLEAN;
	return 0;
}

static int set_broken(struct tcmu_ring *ring, const char *why)
{
	if (!ring->broken) {
		ring->broken = true;
		ring->why = why;
		ring->stats.breaks++;
		if (ring->ops->broken)
			ring->ops->broken(ring->data, why);
	}
	return -EUCLEAN;
}

/*
 * Nobody but us writes cmd_tail, except the kernel when it resets the
 * ring (the device's reset_ring attribute, tcmu_reset_ring(): cmd_tail
 * set to cmd_head, the commands in flight aborted).  So a cmd_tail that
 * is a ring offset and not the one we wrote is where we go on from; one
 * that is not an offset was scribbled over, is ignored, and is rewritten
 * at the next completion.  A broken ring waits for such a reset, or for
 * the ring to be empty again.  A reset racing with a pass of ours may be
 * undone by our store of cmd_tail: reset a ring whose handler is stuck.
 * Returns false while the ring stays broken.
 */
static bool follow_reset(struct tcmu_ring *ring)
{
	uint32_t tail = load32(
		mailbox_field(ring, offsetof(struct tcmu_mailbox, cmd_tail)));

	if (!valid_offset(ring, tail))
		return !ring->broken;
	if (tail == ring->tail && !(ring->broken && tail == load_head(ring)))
		return !ring->broken;
	ring->tail = tail;
	ring->broken = false;
	ring->why = NULL;
	ring->stats.resets++;
	return true;
}

/* Where an entry at ring offset off, len bytes long, lies in the map. */
static uint8_t *entry_at(struct tcmu_ring *ring, uint32_t off)
{
	return ring->map + ring->cmdr_off + off;
}

/*
 * Copy the CDB and the Data-Out/Data-In iovecs of a CMD entry into cmd.
 * Returns 0, -EFAULT for an offset outside where it must be (the entry
 * for the CDB, the data area for the data), -E2BIG for more iovecs than a
 * command of ours can have.
 */
static int parse_cmd(struct tcmu_ring *ring, const uint8_t *e, uint32_t off,
		     uint32_t len, struct tcmu_cmd *cmd)
{
	uint64_t entry = (uint64_t)ring->cmdr_off + off, cdb_off, avail;
	uint32_t iov_cnt =
		load32(e + offsetof(struct tcmu_cmd_entry, req.iov_cnt));
	uint32_t bidi =
		load32(e + offsetof(struct tcmu_cmd_entry, req.iov_bidi_cnt));
	uint32_t dif =
		load32(e + offsetof(struct tcmu_cmd_entry, req.iov_dif_cnt));
	uint64_t iovs = (uint64_t)iov_cnt + bidi + dif;
	uint64_t data_end = ring->map_size;

	cmd->cdb_len = 0;
	cmd->iov_cnt = 0;
	cmd->data_len = 0;
	/* The iovecs are part of the entry. */
	if (iovs > (len - OFF_IOV) / IOV_SIZE)
		return -EFAULT;
	/* The CDB too: the kernel puts it after the iovecs. */
	cdb_off = load64(e + offsetof(struct tcmu_cmd_entry, req.cdb_off));
	if (cdb_off < entry + OFF_IOV + iovs * IOV_SIZE ||
	    cdb_off >= entry + len)
		return -EFAULT;
	avail = entry + len - cdb_off;
	cmd->cdb_len = avail < TCMU_CDB_MAX ? (unsigned int)avail :
					      TCMU_CDB_MAX;
	memcpy(cmd->cdb, ring->map + cdb_off, cmd->cdb_len);
	/* Checked on the copy: what the CDB says it is long must be there. */
	if (tcmu_scsi_cdb_len(cmd->cdb[0]) > cmd->cdb_len)
		return -EFAULT;

	if (iov_cnt > TCMU_IOV_MAX)
		return -E2BIG;
	for (uint32_t i = 0; i < iov_cnt; i++) {
		const uint8_t *v = e + OFF_IOV + (size_t)i * IOV_SIZE;
		uint64_t base = load64(v), vlen = load64(v + 8);

		if (base < ring->data_off || base > data_end ||
		    vlen > data_end - base)
			return -EFAULT;
		cmd->iov[i].iov_base = ring->map + base;
		cmd->iov[i].iov_len = vlen;
		cmd->data_len += vlen;
	}
	cmd->iov_cnt = iov_cnt;
	/* Bidirectional and protection buffers: no command of ours has
	 * them, so they are never touched and need no check. */
	return 0;
}

/* Write the response over the request, in the entry (len bytes). */
static void respond(struct tcmu_ring *ring, uint8_t *e,
		    const struct tcmu_cmd *cmd)
{
	struct tcmu_cmd_entry *ent = (struct tcmu_cmd_entry *)(void *)e;
	uint8_t uflags = 0;

	ent->rsp.scsi_status = cmd->status;
	if (cmd->status == TCMU_STATUS_CHECK_CONDITION) {
		memcpy(ent->rsp.sense_buffer, cmd->sense, TCMU_SENSE_LEN);
		memset(ent->rsp.sense_buffer + TCMU_SENSE_LEN, 0,
		       TCMU_SENSE_BUFFERSIZE - TCMU_SENSE_LEN);
	} else if (cmd->xfer_len < cmd->data_len &&
		   (ring->mb_flags & TCMU_MAILBOX_FLAG_CAP_READ_LEN)) {
		/* A short Data-In answer: the initiator gets the residual. */
		ent->rsp.read_len = (uint32_t)cmd->xfer_len;
		uflags |= TCMU_UFLAG_READ_LEN;
	}
	/* uflags is one byte of its own in the header. */
	__atomic_store_n(&ent->hdr.uflags, uflags, __ATOMIC_RELAXED);
}

static void set_uflags(uint8_t *e, uint8_t flags)
{
	struct tcmu_cmd_entry_hdr *hdr = (struct tcmu_cmd_entry_hdr *)(void *)e;

	__atomic_store_n(&hdr->uflags, flags, __ATOMIC_RELAXED);
}

/* Complete one CMD entry of len bytes (len >= ENTRY_MIN). */
static int do_cmd(struct tcmu_ring *ring, uint8_t *e, uint32_t off,
		  uint32_t len)
{
	struct tcmu_cmd *cmd = ring->ops->cmd_get(ring->data);
	int r;

	if (!cmd)
		return -ENOMEM;
	r = parse_cmd(ring, e, off, len, cmd);
	if (r == -EFAULT) {
		ring->stats.malformed++;
		cmd->iov_cnt = 0;
		cmd->data_len = 0;
		tcmu_scsi_sense(cmd, TCMU_SK_HARDWARE_ERROR,
				TCMU_ASC_INTERNAL_TARGET_FAILURE);
	} else if (r == -E2BIG) {
		/* More data than the Block Limits page allows: what the
		 * kernel answers for a command too big for its ring. */
		cmd->iov_cnt = 0;
		cmd->data_len = 0;
		tcmu_scsi_sense(cmd, TCMU_SK_ILLEGAL_REQUEST,
				TCMU_ASC_INVALID_FIELD_IN_CDB);
	} else {
		tcmu_scsi_execute(ring->lun, cmd);
	}
	respond(ring, e, cmd);
	ring->stats.cmds++;
	ring->ops->cmd_put(ring->data, cmd);
	return 0;
}

int tcmu_ring_process(struct tcmu_ring *ring)
{
	int done = 0, r = 0;
	uint32_t head;

	if (!follow_reset(ring))
		return -EUCLEAN;
	head = load_head(ring);
	if (!valid_offset(ring, head))
		return set_broken(ring,
				  "cmd_head is not an offset in the ring");

	while (ring->tail != head) {
		uint32_t off = ring->tail, used, len, len_op;
		uint8_t *e = entry_at(ring, off);

		/* Bytes the kernel has put between tail and head. */
		used = head > off ? head - off : ring->cmdr_size - off + head;
		/* A header always fits: off is aligned and the ring's size a
		 * multiple of the alignment, which the header is. */
		len_op = load32(e);
		len = tcmu_hdr_get_len(len_op);
		if (!len || len > used || len > ring->cmdr_size - off) {
			r = set_broken(ring,
				       "an entry does not fit in the ring");
			break;
		}
		switch (tcmu_hdr_get_op(len_op)) {
		case TCMU_OP_PAD:
			ring->stats.pads++;
			break;
		case TCMU_OP_TMR:
			/* A notification of an aborted task or a reset: in
			 * order, nothing of ours is pending to abort. */
			ring->stats.tmrs++;
			break;
		case TCMU_OP_CMD:
			if (len < ENTRY_MIN) {
				/* No room for a response. */
				ring->stats.unknown++;
				set_uflags(e, TCMU_UFLAG_UNKNOWN_OP);
				break;
			}
			r = do_cmd(ring, e, off, len);
			break;
		default:
			ring->stats.unknown++;
			set_uflags(e, TCMU_UFLAG_UNKNOWN_OP);
			break;
		}
		if (r < 0)
			break;
		ring->tail = (off + len) % ring->cmdr_size;
		done++;
	}
	if (done) {
		store_tail(ring);
		ring->stats.notifies++;
		if (ring->ops->notify(ring->data) < 0 && !r)
			r = -EIO;
	}
	if (r == -ENOMEM)
		r = 0; /* the rest at the next pass */
	return r < 0 ? r : done;
}

static bool ring_pending(struct tcmu_ring *ring)
{
	return !ring->broken && load_head(ring) != ring->tail;
}

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#else
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int tcmu_ring_serve(struct tcmu_ring *ring, int fd, int stop_fd,
		    unsigned int poll_us)
{
	struct pollfd pfd[2] = {
		{ .fd = fd, .events = POLLIN },
		{ .fd = stop_fd, .events = POLLIN },
	};

	for (;;) {
		uint32_t events;
		ssize_t n;
		int r;

		r = tcmu_ring_process(ring);
		if (r < 0 && r != -EUCLEAN)
			return r;
		if (poll_us && r > 0) {
			/* More commands often follow at once: catching them
			 * here saves a sleep and a wake-up. */
			uint64_t end = now_us() + poll_us;

			while (!ring_pending(ring) && now_us() < end)
				cpu_relax();
			if (ring_pending(ring))
				continue;
		}
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (pfd[1].revents)
			return 0;
		if (pfd[0].revents & (POLLERR | POLLHUP | POLLNVAL))
			return -ENODEV;
		/* uio: the event count, 4 bytes; reading re-arms poll. */
		n = read(fd, &events, sizeof(events));
		if (n == 0)
			return -ENODEV;
		if (n < 0 && errno != EINTR && errno != EAGAIN)
			return errno == EIO ? -ENODEV : -errno;
	}
}
