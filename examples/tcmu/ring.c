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
 *    against the mapping's size, and every page of the ring is touched
 *    then under the guard below: the kernel allocates the ring once and
 *    for good, but a layout that put it over the data area, whose pages
 *    come and go, could fault later; cmd_tail is ours, read back only to
 *    see whether the kernel reset the ring;
 *  - every field of an entry is read once, checked, and only the checked
 *    copy is used: offsets, lengths, iovecs, the CDB;
 *  - an entry that does not fit between cmd_tail and cmd_head, or past
 *    the ring's end, breaks the ring: nothing is completed while it is
 *    so, and each pass looks again at the entry at cmd_tail, which the
 *    kernel's reset_ring (or whoever wrote it) may have made whole;
 *  - a CMD entry whose CDB lies outside the entry, or whose iovecs leave
 *    the data area, is completed with HARDWARE ERROR, INTERNAL TARGET
 *    FAILURE, and none of its data is touched;
 *  - an iovec inside the data area may still name a page the kernel never
 *    allocated: tcmu_vma_fault() answers a touch of it with SIGBUS.  The
 *    command runs under a per-thread guard that turns such a SIGBUS into
 *    the same HARDWARE ERROR (tcmu_ring_guard_init()).
 * The response overlays the request in the entry (rsp and req share a
 * union), so the request is copied out before anything is written.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
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
	/* The kernel writes an entry, flushes the data cache over it and
	 * then publishes cmd_head with a release store (queue_cmd_ring()'s
	 * UPDATE_HEAD, smp_store_release()); this acquire pairs with it, so
	 * that an entry seen through the head is whole, whether or not a
	 * system call came between (the --poll spin, the pass that finds
	 * more queued). */
	return __atomic_load_n((uint32_t *)(void *)mailbox_field(
				       ring,
				       offsetof(struct tcmu_mailbox, cmd_head)),
			       __ATOMIC_ACQUIRE);
}

static uint32_t *tail_field(struct tcmu_ring *ring)
{
	return (uint32_t *)(void *)mailbox_field(
		ring, offsetof(struct tcmu_mailbox, cmd_tail));
}

static bool valid_offset(const struct tcmu_ring *ring, uint32_t off)
{
	return off < ring->cmdr_size && off % TCMU_OP_ALIGN_SIZE == 0;
}

/* ---------------------------------------------------------------- SIGBUS */

/*
 * The guard of the thread running a command: where its jump goes, and
 * the data area whose faults it takes.  Thread-local, so that each ring
 * thread guards its own command; set and cleared with signal fences so
 * that the handler, which runs on this thread, sees it as the code does.
 */
struct guard {
	sigjmp_buf env;
	const uint8_t *lo, *hi;
};

static __thread struct guard *guard_active;
static struct sigaction guard_previous;
static bool guard_installed;

static void guard_handler(int sig, siginfo_t *si, void *uc)
{
	struct guard *g = guard_active;
	const uint8_t *addr = si->si_addr;

	(void)uc;
	/* A fault (si_code > 0, not a kill) on a data-area page of the
	 * command this thread runs: the page the kernel never allocated. */
	if (g && si->si_code > 0 && addr >= g->lo && addr < g->hi)
		siglongjmp(g->env, 1);
	/* Anything else is not ours: give it to whoever had SIGBUS before
	 * (the default, a sanitizer), by faulting again on return, or by
	 * raising again a signal that was sent. */
	sigaction(SIGBUS, &guard_previous, NULL);
	if (si->si_code <= 0)
		raise(sig);
}

int tcmu_ring_guard_init(void)
{
	/* SA_NODEFER and an empty sa_mask: the handler changes no signal
	 * mask, so the jump out of it needs none restored (sigsetjmp with
	 * savemask 0: no system call per command). */
	struct sigaction sa = { .sa_sigaction = guard_handler,
				.sa_flags = SA_SIGINFO | SA_NODEFER };

	if (guard_installed)
		return 0;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, &sa, &guard_previous) < 0)
		return -errno;
	guard_installed = true;
	return 0;
}

/*
 * Run fn(arg) under the guard of [lo, hi): false when a page there
 * faulted, and fn was left where it was.
 */
static bool run_guarded(const uint8_t *lo, const uint8_t *hi,
			void (*fn)(void *), void *arg)
{
	struct guard g;

	g.lo = lo;
	g.hi = hi;
	if (sigsetjmp(g.env, 0)) {
		guard_active = NULL;
		__atomic_signal_fence(__ATOMIC_SEQ_CST);
		return false;
	}
	guard_active = &g;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	fn(arg);
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	guard_active = NULL;
	return true;
}

struct execute_args {
	const struct tcmu_lun *lun;
	struct tcmu_cmd *cmd;
};

static void execute(void *arg)
{
	struct execute_args *a = arg;

	tcmu_scsi_execute(a->lun, a->cmd);
}

/*
 * Execute a command under the guard.  Returns false when a data page of
 * it faulted.  What runs here (the SCSI layer, the backends) takes no lock
 * and allocates nothing, so that leaving it half-way, from the handler,
 * leaves nothing held: a memcpy to or from the data area stops where it
 * faulted, and the command is answered as failed.
 */
static bool execute_guarded(struct tcmu_ring *ring, struct tcmu_cmd *cmd)
{
	struct execute_args a = { ring->lun, cmd };

	return run_guarded(ring->map + ring->data_off,
			   ring->map + ring->map_size, execute, &a);
}

struct touch_args {
	const uint8_t *p;
	size_t len;
};

/* Read a byte of every page of the range, and its last byte. */
static void touch(void *arg)
{
	const struct touch_args *a = arg;
	size_t page = (size_t)sysconf(_SC_PAGESIZE), i;

	for (i = 0; i < a->len; i += page)
		(void)*(const volatile uint8_t *)(a->p + i);
	(void)*(const volatile uint8_t *)(a->p + a->len - 1);
}

/*
 * Whether every page of [p, p + len) can be read, under the guard: a
 * fault anywhere in [lo, hi) answers false instead of killing us.
 * Without the guard installed (tcmu_ring_guard_init()), true untested.
 */
static bool readable_guarded(const uint8_t *p, size_t len, const uint8_t *lo,
			     const uint8_t *hi)
{
	struct touch_args a = { p, len };

	if (!guard_installed || !len)
		return true;
	return run_guarded(lo, hi, touch, &a);
}

/* ---------------------------------------------------------------- attach */

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
	if (!readable_guarded(m + ring->cmdr_off, ring->cmdr_size, m,
			      m + map_size))
		return -EINVAL;

	/* A restarted daemon resumes where the last one stopped. */
	ring->tail = load32(m + offsetof(struct tcmu_mailbox, cmd_tail));
	ring->mb_tail = ring->tail;
	head = load_head(ring);
	if (!valid_offset(ring, ring->tail) || !valid_offset(ring, head))
		return -EUCLEAN;
	return 0;
}

/* ---------------------------------------------------------------- resets */

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

/* A broken ring whose entry at cmd_tail fits again. */
static void mend(struct tcmu_ring *ring)
{
	if (!ring->broken)
		return;
	ring->broken = false;
	ring->why = NULL;
	ring->stats.resets++;
}

static void adopt(struct tcmu_ring *ring, uint32_t tail)
{
	ring->tail = ring->mb_tail = tail;
	ring->broken = false;
	ring->why = NULL;
	ring->stats.resets++;
}

/*
 * Nobody but us writes cmd_tail, except the kernel when it resets the
 * ring (the device's reset_ring attribute, tcmu_reset_ring(): cmd_head,
 * cmd_tail and its own last-cleaned offset set to 0, the commands in
 * flight aborted, and no notification; commands waiting for room are
 * queued at once from 0).  So a cmd_tail that is a ring offset and not
 * the one we last wrote is a reset, and where we go on from; one that is
 * not an offset was scribbled over, is ignored, and is rewritten at the
 * next completion.  Returns true when a reset was taken.
 *
 * A reset to the very offset we last wrote cannot be seen: the kernel
 * resets to 0, so one that comes while our last cmd_tail was 0 (a ring
 * never used, or one whose last pass ended at the ring's start) looks like
 * nothing happened (the ABA problem; see tcmu_ring_process()).
 */
static bool follow_reset(struct tcmu_ring *ring)
{
	uint32_t tail = load32((const uint8_t *)tail_field(ring));

	if (!valid_offset(ring, tail) || tail == ring->mb_tail)
		return false;
	adopt(ring, tail);
	return true;
}

/*
 * Hand the completions back: cmd_tail moves from what we last wrote to
 * ring->tail, by compare-and-swap, so that a reset the kernel made during
 * the pass (its plain store of 0 comes before or after ours, never in
 * the middle) is not overwritten by a stale tail, which would have the
 * kernel complete, unrun, the commands it queued after the reset.  The
 * responses are written before the tail (release).  Returns false when
 * the ring was reset: the reset is adopted and the pass counts for
 * nothing, since the commands it completed were aborted.
 */
static bool publish_tail(struct tcmu_ring *ring)
{
	uint32_t seen = ring->mb_tail;

	/* A cmd_tail scribbled over (not an offset) is overwritten; give up
	 * on a writer who keeps at it, and store plainly. */
	for (int i = 0; i < 8; i++) {
		if (__atomic_compare_exchange_n(
			    tail_field(ring), &seen, ring->tail, false,
			    __ATOMIC_RELEASE, __ATOMIC_RELAXED)) {
			ring->mb_tail = ring->tail;
			return true;
		}
		if (valid_offset(ring, seen)) {
			adopt(ring, seen);
			return false;
		}
	}
	__atomic_store_n(tail_field(ring), ring->tail, __ATOMIC_RELEASE);
	ring->mb_tail = ring->tail;
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
	} else if (cmd->xfer_len && cmd->xfer_len < cmd->data_len &&
		   (ring->mb_flags & TCMU_MAILBOX_FLAG_CAP_READ_LEN)) {
		/* A short Data-In answer: the initiator gets the residual.
		 * Only Data-In commands have an xfer_len, and only for them
		 * does the kernel take READ_LEN (tcmu_handle_completion());
		 * it ignores a read_len of 0, so a Data-In answer of no
		 * bytes returns the whole (zeroed) buffer instead. */
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

/* Complete one CMD entry of len bytes (len >= ENTRY_MIN).  Returns 0,
 * -ENOMEM without command state, -ERESTART when the ring was reset while
 * the command ran: its entry may be a new command's now, and is left. */
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
	} else if (!execute_guarded(ring, cmd)) {
		/* A data page the kernel never allocated. */
		ring->stats.malformed++;
		tcmu_scsi_sense(cmd, TCMU_SK_HARDWARE_ERROR,
				TCMU_ASC_INTERNAL_TARGET_FAILURE);
	}
	/* A reset while the command ran: its entry may have been given to
	 * a new command already, which the response would overwrite.  This
	 * narrows the window to the next few stores; it does not close it. */
	if (follow_reset(ring)) {
		ring->ops->cmd_put(ring->data, cmd);
		return -ERESTART;
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

	follow_reset(ring);
	head = load_head(ring);
	if (!valid_offset(ring, head))
		return set_broken(ring,
				  "cmd_head is not an offset in the ring");
	if (ring->tail == head)
		mend(ring);

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
		mend(ring);
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
		if (r == -ERESTART)
			return 0; /* reset and adopted: the pass is void */
		if (r < 0)
			break;
		ring->tail = (off + len) % ring->cmdr_size;
		done++;
	}
	if (done) {
		int n;

		if (!publish_tail(ring))
			return 0;
		ring->stats.notifies++;
		n = ring->ops->notify(ring->data);
		if (n < 0 && (!r || r == -EUCLEAN))
			r = n;
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

/* Serving pass after pass without poll(2) while commands keep coming:
 * a look at stop_fd every 64 passes, so that a stop does not wait for
 * the initiator to pause. */
static bool stop_seen(struct pollfd *stop, unsigned int *passes)
{
	if (++*passes % 64)
		return false;
	return poll(stop, 1, 0) > 0;
}

int tcmu_ring_serve(struct tcmu_ring *ring, int fd, int stop_fd,
		    unsigned int poll_us)
{
	struct pollfd pfd[2] = {
		{ .fd = fd, .events = POLLIN },
		{ .fd = stop_fd, .events = POLLIN },
	};
	unsigned int passes = 0;
	int backoff_ms = 0, r;

	/*
	 * Tell the kernel once before anything else: a daemon that died
	 * between its store of cmd_tail and its 4-byte write left
	 * completions the kernel has not reaped (its last-cleaned offset,
	 * which we cannot see, lags cmd_tail), and an empty ring would
	 * never make us write again.  tcmu_irqcontrol() with nothing to
	 * reap does nothing more.
	 */
	ring->stats.notifies++;
	r = ring->ops->notify(ring->data);
	if (r < 0)
		return r;
	for (;;) {
		uint32_t events;
		int timeout = -1;
		ssize_t n;

		r = tcmu_ring_process(ring);
		if (r < 0 && r != -EUCLEAN)
			return r;
		/* The kernel queued more while we worked: serve it now, without
		 * the poll(2) and read(2) of a wake-up.  The event count they
		 * would have consumed is read when the ring is caught up. */
		if (r > 0 && ring_pending(ring)) {
			if (stop_seen(&pfd[1], &passes))
				return 0;
			continue;
		}
		if (poll_us && r > 0) {
			/* More commands often follow at once: catching them
			 * here saves a sleep and a wake-up. */
			uint64_t end = now_us() + poll_us;

			while (!ring_pending(ring) && now_us() < end)
				cpu_relax();
			if (ring_pending(ring)) {
				if (stop_seen(&pfd[1], &passes))
					return 0;
				continue;
			}
		}
		/* Entries left after the pass: cmd_get found no command
		 * state for them.  The kernel, which notified once, will not
		 * again for them: look again soon, less often the longer it
		 * lasts (1 to 128 ms). */
		if (ring_pending(ring)) {
			backoff_ms = backoff_ms ? backoff_ms * 2 : 1;
			if (backoff_ms > 128)
				backoff_ms = 128;
			timeout = backoff_ms;
		} else {
			backoff_ms = 0;
		}
		r = poll(pfd, 2, timeout);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			continue;
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
