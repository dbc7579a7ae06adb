/* SPDX-License-Identifier: MIT */
/*
 * A stand-in for the kernel's side of target_core_user (Linux 6.1,
 * drivers/target/target_core_user.c), for the harness and the fuzzer.
 *
 * It lays out the device's map0 as the kernel does: the mailbox at 0
 * (version 2, the 6.1 capability flags), the command ring right after it
 * up to the end of the command area, the data area after that in blocks
 * of a page.  It queues commands as queue_cmd_ring() does: a PAD entry
 * when the entry would not fit before the ring's end, the entry zeroed,
 * iovecs over the lowest free data blocks with contiguous blocks merged,
 * the CDB right after the iovecs, cmd_head moved with a release store and
 * a 4-byte "interrupt" on the notification socket.  It reaps completions
 * as tcmu_handle_completions() does, from its own last-cleaned offset up
 * to the cmd_tail the daemon wrote, looking entries up by cmd_id, and
 * takes a non-zero READ_LEN as a Data-In command's length.  Its
 * reset_ring sets cmd_head, cmd_tail and its last-cleaned offset to 0.
 *
 * The memfd is mapped twice: the kernel's view, and the daemon's view in
 * the middle of a large PROT_NONE reservation, so that any access by the
 * daemon outside its mapping faults.  In the daemon's view a data block
 * is backed only once the kernel has used it (the 6.1 driver allocates a
 * data page when a command first needs the block, and keeps it); until
 * then it is a page past the end of an empty file, and touching it is a
 * SIGBUS, as tcmu_vma_fault() makes it.  A snapshot of the mapping taken
 * before the daemon runs tells afterwards whether it wrote anywhere but
 * cmd_tail, the responses of queued entries and the data blocks of
 * queued commands.
 */
#ifndef IOFLUSHER_TCMU_TEST_KERNEL_H
#define IOFLUSHER_TCMU_TEST_KERNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tcmu.h"

#define KERN_CMDS 256 /* command ids 1 .. KERN_CMDS - 1 */
#define KERN_ENTRIES 4096 /* entries remembered for the write check */
#define KERN_IOV_MAX 320 /* data blocks of one command */

enum kern_dir { KERN_NONE = 0, KERN_TO_DEV, KERN_FROM_DEV };

struct kern_cfg {
	uint32_t cmd_area; /* mailbox and ring: 8 MiB by default in 6.1 */
	uint64_t data_area; /* 1 GiB by default in 6.1 (max_data_area_mb) */
	uint64_t guard; /* PROT_NONE bytes either side of the daemon's view */
	uint16_t mb_flags; /* 0: what 6.1 sets */
	bool scatter; /* never two adjacent data blocks: one iovec each */
};

struct kern_cmd {
	bool inflight;
	bool done;
	uint16_t id;
	enum kern_dir dir;
	uint32_t entry_off; /* in the ring */
	uint32_t entry_len;
	uint64_t data_len;
	uint32_t nblk;
	uint32_t dbi[KERN_IOV_MAX];
	unsigned int iov_cnt;
	uint64_t iov_base[KERN_IOV_MAX];
	uint64_t iov_len[KERN_IOV_MAX];
	/* The completion, as the kernel took it. */
	uint8_t status;
	uint8_t uflags;
	uint32_t read_len;
	uint8_t sense[TCMU_SENSE_BUFFERSIZE];
	uint8_t *in; /* Data-In, data_len bytes, gathered at completion */
};

struct kern_entry {
	uint32_t off;
	uint32_t len;
	uint8_t op;
	bool raw;
};

struct kern {
	int memfd;
	uint8_t *k; /* the kernel's view */
	uint8_t *u; /* the daemon's view, guarded */
	uint8_t *reserve;
	size_t reserve_len;
	uint64_t map_size;
	uint32_t cmdr_off;
	uint32_t cmdr_size;
	uint64_t data_off;
	uint64_t data_size;
	uint32_t blk_size;
	uint32_t nblk;
	uint8_t *bitmap; /* blocks in use */
	uint8_t *page; /* blocks whose page was ever allocated */
	int nopage_fd; /* what the daemon sees of the others */
	uint32_t head; /* the kernel's copy, like mb->cmd_head */
	uint32_t last_cleaned; /* cmdr_last_cleaned */
	uint16_t mb_flags;
	bool scatter;
	bool broken;
	int sock[2]; /* [0] the kernel's end, [1] the "uio fd" */
	struct kern_cmd *cmds;
	struct kern_entry entries[KERN_ENTRIES];
	unsigned int nentries;
	uint8_t *snap;
	/* Raw entries reaped: how many, and the uflags of the last. */
	unsigned int raw_done;
	uint8_t raw_uflags;
};

int kern_init(struct kern *k, const struct kern_cfg *cfg);
void kern_fini(struct kern *k);
/* Back to a device just enabled: map zeroed, mailbox set, nothing queued,
 * no data page allocated.  0 or a negative errno. */
int kern_clear(struct kern *k);

/* Queue a command: its id, -EAGAIN when the ring or the data area is
 * full, -E2BIG when it could never fit. */
int kern_queue(struct kern *k, const uint8_t *cdb, unsigned int cdb_len,
	       enum kern_dir dir, const void *out, uint64_t len);
/* Queue any bytes as an entry of len bytes (a multiple of 8), after a
 * PAD if needed; returns its ring offset. */
int kern_queue_raw(struct kern *k, const void *entry, uint32_t len);
/* A TMR notification entry, as 6.1 queues it (tmr_notify). */
int kern_queue_tmr(struct kern *k, uint8_t type, const uint16_t *ids,
		   unsigned int n);
struct kern_cmd *kern_cmd(struct kern *k, int id);
/* The entry in the kernel's view. */
uint8_t *kern_entry(struct kern *k, uint32_t off);
/* An entry header's len_op (packed: not through a pointer to it). */
void kern_set_len_op(void *entry, uint32_t len, uint8_t op);

/* The uio interrupt: 4 bytes on the socket. */
int kern_notify(struct kern *k);
/* The daemon's 4-byte write, if any: 1, 0 if none. */
int kern_take_notify(struct kern *k);
/* Reap completions up to cmd_tail: how many, -EUCLEAN if broken. */
int kern_complete(struct kern *k);
void kern_release(struct kern *k, int id);

void kern_snapshot(struct kern *k);
/* Bytes written since the snapshot where the daemon may not write; the
 * first one's offset in *first. */
uint64_t kern_stray_writes(struct kern *k, uint64_t *first);

uint32_t kern_mb_tail(struct kern *k);
void kern_set_head(struct kern *k, uint32_t head);
/* The device's reset_ring attribute: cmd_head = cmd_tail = 0, commands
 * in flight aborted, no notification. */
void kern_reset_ring(struct kern *k);
/* An empty ring whose head and tail are at off (before attaching). */
void kern_move_to(struct kern *k, uint32_t off);

#endif /* IOFLUSHER_TCMU_TEST_KERNEL_H */
