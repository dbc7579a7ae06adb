/* SPDX-License-Identifier: MIT */
/*
 * ioflusher-tcmu: what the files of the daemon share.
 *
 * The ring (ring.c), the SCSI commands (scsi.c) and the backends
 * (backend-*.c) form a small library that knows nothing of /dev, sysfs or
 * libioflusher: it takes a mapping laid out as the kernel's
 * target_core_user lays out a device's map0, and callbacks for per-command
 * state and for telling the kernel.  The daemon (main.c, uio.c, port.c)
 * feeds it the real /dev/uioN; the test harness (tests/tcmu/) feeds it a
 * memfd laid out by a kernel emulator, with guard pages around it; the
 * fuzzer (fuzz/tcmu-fuzz.c) feeds it whatever libFuzzer makes up.
 */
#ifndef IOFLUSHER_TCMU_H
#define IOFLUSHER_TCMU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/*
 * <linux/target_core_user.h> includes <linux/uio.h>, which defines struct
 * iovec a second time next to glibc's <sys/uio.h>.  Rename the kernel's
 * (same layout: a pointer-sized offset and a length) while it is read.
 */
#define iovec tcmu_kernel_iovec
#include <linux/target_core_user.h>
#undef iovec

#define TCMU_VERSION_STRING "0.1.0"

/* ---------------------------------------------------------------- SCSI */

/* Bytes of CDB kept: every command served here fits in 16. */
#define TCMU_CDB_MAX 16
/* Fixed-format sense data (SPC-4 4.5.3): 18 bytes. */
#define TCMU_SENSE_LEN 18
/* Data buffers of one command: the kernel gives one iovec per run of
 * contiguous data-area blocks, so at most one per page of the largest
 * transfer announced in the Block Limits VPD page. */
#define TCMU_IOV_MAX 256
#define TCMU_MAX_XFER_BYTES (1024u * 1024u)
/* UNMAP limits announced in the Block Limits VPD page. */
#define TCMU_UNMAP_DESC_MAX 256
#define TCMU_UNMAP_BYTES_MAX (1ull << 30)

enum tcmu_scsi_status {
	TCMU_STATUS_GOOD = 0x00,
	TCMU_STATUS_CHECK_CONDITION = 0x02,
};

enum tcmu_sense_key {
	TCMU_SK_NO_SENSE = 0x0,
	TCMU_SK_MEDIUM_ERROR = 0x3,
	TCMU_SK_HARDWARE_ERROR = 0x4,
	TCMU_SK_ILLEGAL_REQUEST = 0x5,
	TCMU_SK_DATA_PROTECT = 0x7,
};

/* Additional sense code and qualifier, ASC << 8 | ASCQ (SPC-4 D.2). */
enum tcmu_asc {
	TCMU_ASC_WRITE_ERROR = 0x0c00,
	TCMU_ASC_UNRECOVERED_READ_ERROR = 0x1100,
	TCMU_ASC_PARAMETER_LIST_LENGTH_ERROR = 0x1a00,
	TCMU_ASC_INVALID_COMMAND_OPERATION_CODE = 0x2000,
	TCMU_ASC_LBA_OUT_OF_RANGE = 0x2100,
	TCMU_ASC_INVALID_FIELD_IN_CDB = 0x2400,
	TCMU_ASC_INVALID_FIELD_IN_PARAMETER_LIST = 0x2600,
	TCMU_ASC_SPACE_ALLOCATION_FAILED = 0x2707,
	TCMU_ASC_SAVING_PARAMETERS_NOT_SUPPORTED = 0x3900,
	TCMU_ASC_INTERNAL_TARGET_FAILURE = 0x4400,
};

/*
 * One command, as the ring hands it to the SCSI layer: a private copy of
 * the CDB, and the data buffers already checked to lie in the data area
 * and turned into pointers.  Nothing here points at a field the kernel
 * (or whoever else maps the ring) could change under us, but the data.
 */
struct tcmu_cmd {
	uint8_t cdb[TCMU_CDB_MAX];
	unsigned int cdb_len;
	unsigned int iov_cnt;
	uint64_t data_len; /* sum of the iov_len */
	/* The answer. */
	uint8_t status;
	uint8_t sense[TCMU_SENSE_LEN];
	uint64_t xfer_len; /* Data-In bytes that are the answer */
	struct iovec iov[TCMU_IOV_MAX];
};

struct tcmu_backend;

/* A disk LUN over a backend. */
struct tcmu_lun {
	struct tcmu_backend *be;
	uint64_t nblocks;
	uint32_t block_size;
	unsigned int block_shift;
	uint32_t max_xfer_blocks;
	uint64_t naa; /* 60 bits of the NAA locally assigned designator */
	char serial[17];
};

/* Block sizes 512 to 4096; the device name makes the serial number and
 * the NAA designator (VPD pages 0x80 and 0x83), stable across restarts. */
int tcmu_lun_init(struct tcmu_lun *lun, struct tcmu_backend *be,
		  uint32_t block_size, uint64_t data_area_bytes,
		  const char *name);
/* The CDB length of an opcode's group, 0 for the groups with none. */
unsigned int tcmu_scsi_cdb_len(uint8_t opcode);
void tcmu_scsi_execute(const struct tcmu_lun *lun, struct tcmu_cmd *cmd);
void tcmu_scsi_sense(struct tcmu_cmd *cmd, uint8_t key, uint16_t asc);

/* ---------------------------------------------------------------- backends */

struct tcmu_backend_ops {
	const char *name;
	/* Offsets and lengths are in bytes and checked by the caller; the
	 * backends check them again, as the last line before memory. */
	int (*read)(struct tcmu_backend *be, const struct iovec *iov,
		    unsigned int cnt, uint64_t off);
	int (*write)(struct tcmu_backend *be, const struct iovec *iov,
		     unsigned int cnt, uint64_t off, bool fua);
	int (*flush)(struct tcmu_backend *be);
	/* Deallocate; the range reads back as zeros afterwards. */
	int (*discard)(struct tcmu_backend *be, uint64_t off, uint64_t len);
	/* Write zeros over the range, in as few calls as the backend can. */
	int (*write_zeroes)(struct tcmu_backend *be, uint64_t off,
			    uint64_t len);
	/* Flushes what is left; -EIO when writes may have been lost. */
	int (*close)(struct tcmu_backend *be);
	/* The bytes from off, at most len, that are all allocated or all
	 * not (*mapped), for GET LBA STATUS; 0 or a negative errno. */
	int (*status)(struct tcmu_backend *be, uint64_t off, uint64_t len,
		      bool *mapped, uint64_t *run);
};

struct tcmu_backend {
	const struct tcmu_backend_ops *ops;
	uint64_t size;
	bool write_cache; /* volatile cache: WCE, SYNCHRONIZE CACHE flushes */
};

int tcmu_backend_mem_open(uint64_t size, struct tcmu_backend **bep);
int tcmu_backend_file_open(const char *path, uint64_t size,
			   struct tcmu_backend **bep);
/* The handler's part of the device config: "mem" or "file/" and an
 * absolute path ("file//srv/lun0.img"). */
int tcmu_backend_open(const char *config, uint64_t size,
		      struct tcmu_backend **bep);
/* 0, or -EIO when the backend lost writes it had acknowledged. */
int tcmu_backend_close(struct tcmu_backend *be);

/* ---------------------------------------------------------------- ring */

struct tcmu_ring_ops {
	/* Per-command state.  get may wait; NULL ends the pass early (the
	 * entries left are taken at the next one). */
	struct tcmu_cmd *(*cmd_get)(void *data);
	void (*cmd_put)(void *data, struct tcmu_cmd *cmd);
	/* Tell the kernel that cmd_tail moved: a 4-byte write to the uio fd.
	 * 0, -ENODEV when the device is gone, or another negative errno. */
	int (*notify)(void *data);
	/* Optional: the ring was found broken (once per breakage). */
	void (*broken)(void *data, const char *why);
};

struct tcmu_ring_stats {
	uint64_t cmds; /* CMD entries completed */
	uint64_t pads; /* PAD entries passed */
	uint64_t tmrs; /* TMR notifications passed */
	uint64_t unknown; /* entries completed with UNKNOWN_OP */
	/* CMD entries failed for offsets outside, or for a data page that
	 * faulted (one the kernel never allocated) */
	uint64_t malformed;
	uint64_t notifies;
	uint64_t breaks;
	/* cmd_tail moved by the kernel's reset_ring, or a broken ring whose
	 * entry at cmd_tail fits again */
	uint64_t resets;
};

struct tcmu_ring {
	uint8_t *map;
	uint64_t map_size;
	/* Copies taken once at attach: the kernel never changes them, and
	 * whoever does must not move what we check against. */
	uint32_t cmdr_off;
	uint32_t cmdr_size;
	uint64_t data_off; /* the data area: [data_off, map_size) */
	uint16_t mb_flags;
	uint32_t tail; /* ours: where the next entry is */
	uint32_t mb_tail; /* the cmd_tail we last wrote (or took up) */
	bool broken;
	const char *why;
	const struct tcmu_lun *lun;
	const struct tcmu_ring_ops *ops;
	void *data;
	struct tcmu_ring_stats stats;
};

/*
 * Attach to a mapping laid out as target_core_user's map0.  Returns 0,
 * -EINVAL for a mapping too small or a mailbox whose ring does not fit
 * in it, -EPROTONOSUPPORT for another mailbox version, -EUCLEAN for a
 * cmd_head or cmd_tail that is not a valid ring offset.
 */
int tcmu_ring_init(struct tcmu_ring *ring, void *map, uint64_t map_size,
		   const struct tcmu_lun *lun, const struct tcmu_ring_ops *ops,
		   void *data);
/*
 * Once per process, before any ring is processed: a SIGBUS handler that
 * fails, with HARDWARE ERROR, a command whose data page faults (an iovec
 * naming a data-area page the kernel never allocated), rather than let
 * the signal kill the daemon.  A SIGBUS anywhere else goes to the handler
 * that was there before.  0, or a negative errno from sigaction().
 */
int tcmu_ring_guard_init(void);
/*
 * Complete every entry between cmd_tail and cmd_head, then tell the
 * kernel.  Returns the entries completed, or -EUCLEAN when the ring is
 * broken (an entry that does not fit, a cmd_head outside the ring):
 * nothing is completed while it is so, and every pass looks again at the
 * entry at cmd_tail, which a reset_ring (cmd_tail moved, or the ring
 * started again at 0) makes whole.  A reset seen during the pass voids it
 * (0): cmd_tail is the kernel's 0, not our stale one.  Another negative
 * errno is what the notify callback returned.
 */
int tcmu_ring_process(struct tcmu_ring *ring);
/*
 * Serve until stop_fd is readable: tell the kernel once (completions a
 * dead predecessor left unreaped), then wait on fd (the uio fd, or
 * anything that reads 4 bytes per event), process, and spin up to poll_us
 * microseconds for more before sleeping again; entries left for want of
 * command state are tried again after 1 to 128 ms.  stop_fd is looked at
 * every 64 passes too while commands keep coming.  Returns 0 when
 * stopped, -ENODEV when fd reports the device gone (or notify does),
 * another negative errno on error.
 */
int tcmu_ring_serve(struct tcmu_ring *ring, int fd, int stop_fd,
		    unsigned int poll_us);

/* ---------------------------------------------------------------- uio */

#define TCMU_NAME_MAX 512

/* A TCMU device found under /sys/class/uio. */
struct tcmu_uio_dev {
	char uio[32]; /* "uio0" */
	char name[TCMU_NAME_MAX]; /* tcm-user/<hba>/<dev>/<subtype>/<config> */
	unsigned int hba;
	char dev[TCMU_NAME_MAX]; /* the configfs device */
	char subtype[TCMU_NAME_MAX]; /* the handler */
	char config[TCMU_NAME_MAX]; /* the handler's own string */
	uint64_t map_size;
	uint64_t dev_size;
	uint32_t block_size;
};

int tcmu_uio_parse_name(const char *name, struct tcmu_uio_dev *dev);
/* Devices of this handler (and this configfs device name if not NULL),
 * under root ("" on a real system), with their sizes read.  One whose
 * sizes cannot be read (its configfs directory gone, a file garbled) is
 * skipped, and told to skipped() if not NULL, with the errno.  Returns
 * the number found, at most max, or a negative errno for /sys/class/uio
 * itself. */
int tcmu_uio_scan(const char *root, const char *handler, const char *only,
		  struct tcmu_uio_dev *devs, size_t max,
		  void (*skipped)(const struct tcmu_uio_dev *dev, int err,
				  void *data),
		  void *data);
/* Open /dev/uioN read-write and map its map0. */
int tcmu_uio_open(const char *root, const struct tcmu_uio_dev *dev, int *fdp,
		  void **mapp);

#endif /* IOFLUSHER_TCMU_H */
