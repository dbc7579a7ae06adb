/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libioflusher - protections for Linux IO-flusher daemons
 *
 * A daemon that sits in the block or filesystem IO path (NBD, TCMU, iSCSI,
 * FUSE, ublk) deadlocks when it allocates memory and reclaim waits for IO
 * that only this daemon can complete.  This library sets the kernel's
 * IO_FLUSHER flag (PR_SET_IO_FLUSHER, Linux 5.6) on the right threads, locks
 * and pre-faults memory, shields the daemon from the OOM killer, and says
 * precisely what it could not do and why.  See ioflusher(7).
 *
 * Functions that return int return 0, a count, a boolean 1 or 0, or an enum
 * value on success, and a negative errno on failure; errno is not part of
 * the contract.  ioflusher_memlock_check() is no boolean: 0 when the bytes
 * can be locked, -ENOMEM (-EPERM for a limit of 0) when they cannot.
 * ioflusher_memlock_all() returns 1 when it left MCL_FUTURE out, as
 * IOFLUSHER_MEMLOCK_FUTURE_IF_UNLIMITED may ask.  Negative on success
 * too: ioflusher_ctx_get_log_priority() (-1, logging off) and
 * ioflusher_report_error() (the errno a protection failed with).
 * Functions that return a pointer return NULL for an invalid argument (and
 * ioflusher_mempool_alloc() for an empty pool with NOWAIT, or without it
 * when it cannot wait: a filter that refuses futex(2)).  See ioflusher(3),
 * RETURN VALUE.
 */
#ifndef IOFLUSHER_H
#define IOFLUSHER_H

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Declarations are aligned by hand, attribute macros first. */
/* clang-format off */

/*
 * Arguments marked nonnull warn at the caller's compile time.  The library
 * itself is built without the attribute, so that its own checks stay and a
 * NULL that gets through returns -EINVAL instead of crashing.
 */
#if (defined(__GNUC__) || defined(__clang__)) && !defined(IOFLUSHER_BUILDING_LIB)
#define IOFLUSHER_NONNULL(...) __attribute__((nonnull(__VA_ARGS__)))
#else
#define IOFLUSHER_NONNULL(...)
#endif
#if defined(__GNUC__) || defined(__clang__)
#define IOFLUSHER_MUST_CHECK __attribute__((warn_unused_result))
#define IOFLUSHER_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define IOFLUSHER_MUST_CHECK
#define IOFLUSHER_PRINTF(f, a)
#endif

/*
 * Context: logging and the start-up policy.  Reference counted; the
 * library keeps little global state besides what the kernel holds: the
 * mempools' per-thread lookup of their caches and their fork handler, and
 * whether memory was locked without MCL_FUTURE (ioflusher(3)).
 */
struct ioflusher_ctx;

IOFLUSHER_MUST_CHECK IOFLUSHER_NONNULL(1) int
ioflusher_ctx_new(struct ioflusher_ctx **ctxp);
struct ioflusher_ctx *ioflusher_ctx_ref(struct ioflusher_ctx *ctx);
struct ioflusher_ctx *ioflusher_ctx_unref(struct ioflusher_ctx *ctx);

int ioflusher_ctx_set_log_fn(struct ioflusher_ctx *ctx,
			     void (*log_fn)(void *data, int priority,
					    const char *file, int line,
					    const char *fn, const char *format,
					    va_list args),
			     void *data);
int ioflusher_ctx_get_log_priority(const struct ioflusher_ctx *ctx);
int ioflusher_ctx_set_log_priority(struct ioflusher_ctx *ctx, int priority);

/* The protections setup applies, in the order it applies them. */
enum ioflusher_protection {
	IOFLUSHER_PROTECT_FLAG = 0, /* PR_SET_IO_FLUSHER on the calling thread */
	IOFLUSHER_PROTECT_OOM,	    /* oom_score_adj */
	IOFLUSHER_PROTECT_MEMLOCK,  /* mlockall(MCL_CURRENT | MCL_FUTURE) */
	IOFLUSHER_PROTECT_PREFAULT, /* stack and heap reserve faulted in */
	IOFLUSHER_PROTECT_COUNT
};

enum ioflusher_policy {
	IOFLUSHER_POLICY_OFF = 0,     /* do not attempt */
	IOFLUSHER_POLICY_BEST_EFFORT, /* attempt, report, go on */
	IOFLUSHER_POLICY_REQUIRED     /* attempt; setup fails without it */
};

enum ioflusher_outcome {
	IOFLUSHER_OUTCOME_APPLIED = 0,
	IOFLUSHER_OUTCOME_UNAVAILABLE, /* this kernel or environment cannot */
	IOFLUSHER_OUTCOME_FAILED,      /* should have worked and did not */
	IOFLUSHER_OUTCOME_SKIPPED      /* policy off, or an earlier failure */
};

/* Why a protection was not applied. */
enum ioflusher_reason {
	IOFLUSHER_REASON_NONE = 0,
	IOFLUSHER_REASON_KERNEL,	 /* the kernel lacks the feature */
	IOFLUSHER_REASON_CAPABILITY,	 /* a capability is missing */
	IOFLUSHER_REASON_USER_NAMESPACE, /* held only in a child user namespace */
	IOFLUSHER_REASON_SANDBOX,	 /* seccomp or an LSM refused (or faked) it */
	IOFLUSHER_REASON_LIMIT,		 /* a resource limit is too low */
	IOFLUSHER_REASON_NO_MEMORY,	 /* the memory could not be had */
	IOFLUSHER_REASON_PROC,		 /* /proc is not available */
	IOFLUSHER_REASON_THREADS,	 /* other threads run without it */
	IOFLUSHER_REASON_POLICY,	 /* the policy said not to */
	IOFLUSHER_REASON_NOT_ATTEMPTED,	 /* an earlier required step failed */
	IOFLUSHER_REASON_OTHER
};

int ioflusher_ctx_set_policy(struct ioflusher_ctx *ctx, int protection,
			     int policy);
int ioflusher_ctx_get_policy(const struct ioflusher_ctx *ctx, int protection);
int ioflusher_ctx_set_oom_score_adj(struct ioflusher_ctx *ctx, int adj);
int ioflusher_ctx_set_memlock_flags(struct ioflusher_ctx *ctx,
				    unsigned int flags);
int ioflusher_ctx_set_reserve(struct ioflusher_ctx *ctx, size_t stack_bytes,
			      size_t heap_bytes);

/*
 * The IO_FLUSHER flag of the calling thread.  Setting and clearing need
 * CAP_SYS_RESOURCE in the initial user namespace; reading does not (it is
 * read from /proc/thread-self/stat).
 */
IOFLUSHER_MUST_CHECK int ioflusher_flag_set(void);
IOFLUSHER_MUST_CHECK int ioflusher_flag_clear(void);
int ioflusher_flag_get(void);
IOFLUSHER_MUST_CHECK int ioflusher_flag_save(void);
IOFLUSHER_MUST_CHECK int ioflusher_flag_restore(int saved);
int ioflusher_flag_supported(void);

/* Explain a negative errno returned for a protection: an ioflusher_reason. */
int ioflusher_diagnose(int protection, int err);
const char *ioflusher_reason_string(int reason);
const char *ioflusher_risk_string(int protection);

/* Threads. */
IOFLUSHER_MUST_CHECK IOFLUSHER_NONNULL(1, 3) int
ioflusher_thread_create(pthread_t *thread, const pthread_attr_t *attr,
			void *(*start)(void *), void *arg);

enum ioflusher_child_flags {
	IOFLUSHER_CHILD_RESET_OOM = 1u << 0 /* also set oom_score_adj to 0 */
};
IOFLUSHER_MUST_CHECK int ioflusher_thread_child_clear(unsigned int flags);

/* Audit of every thread of a process, from /proc/PID/task/{TID}/stat. */
struct ioflusher_audit;

IOFLUSHER_MUST_CHECK IOFLUSHER_NONNULL(2) int
ioflusher_audit_new(pid_t pid, struct ioflusher_audit **auditp);
int ioflusher_audit_count(const struct ioflusher_audit *audit);
int ioflusher_audit_missing(const struct ioflusher_audit *audit);
int ioflusher_audit_thread(const struct ioflusher_audit *audit,
			   unsigned int index, pid_t *tid, const char **comm,
			   int *flagged);
void ioflusher_audit_free(struct ioflusher_audit *audit);

/* Memory locking. */
enum ioflusher_memlock_flags {
	IOFLUSHER_MEMLOCK_ONFAULT = 1u << 0, /* MCL_ONFAULT: lock as touched */
	/* MCL_FUTURE only where RLIMIT_MEMLOCK cannot refuse later mappings:
	 * with CAP_IPC_LOCK, or an unlimited limit; 1 when left out */
	IOFLUSHER_MEMLOCK_FUTURE_IF_UNLIMITED = 1u << 1
};

IOFLUSHER_MUST_CHECK int ioflusher_memlock_all(unsigned int flags);
int ioflusher_memlock_limit(uint64_t *soft, uint64_t *hard);
IOFLUSHER_MUST_CHECK int ioflusher_memlock_raise_limit(uint64_t bytes);
int ioflusher_memlock_check(uint64_t bytes);
IOFLUSHER_MUST_CHECK int ioflusher_memlock_prefault_stack(size_t bytes);
IOFLUSHER_MUST_CHECK int ioflusher_memlock_prefault_heap(size_t bytes);
IOFLUSHER_MUST_CHECK int
ioflusher_memlock_maps(const char *const *skip, uint64_t *locked_bytes);
int ioflusher_memlock_locked(pid_t pid, uint64_t *bytes);

/* OOM killer: oom_score_adj from -1000 (never) to 1000. */
IOFLUSHER_MUST_CHECK int ioflusher_oom_set(pid_t pid, int adj);
IOFLUSHER_NONNULL(2) int ioflusher_oom_get(pid_t pid, int *adj);

/* Capabilities (CAP_* numbers from <linux/capability.h>). */
int ioflusher_caps_have(int cap);
int ioflusher_caps_initial_userns(void);
IOFLUSHER_MUST_CHECK int ioflusher_caps_drop(const int *keep, size_t n);

/*
 * Seccomp filter that keeps the protections in place once set up: no
 * thread may clear the flag or unlock memory afterwards.
 */
enum ioflusher_sandbox_flags {
	IOFLUSHER_SANDBOX_LOG = 1u << 0 /* log, rather than refuse (audit mode) */
};
IOFLUSHER_MUST_CHECK int ioflusher_sandbox_lock(unsigned int flags);

/* One call for a daemon's start-up; see ioflusher_setup(3). */
struct ioflusher_report;

IOFLUSHER_MUST_CHECK IOFLUSHER_NONNULL(1, 2) int
ioflusher_setup(struct ioflusher_ctx *ctx, struct ioflusher_report **reportp);
int ioflusher_report_outcome(const struct ioflusher_report *report,
			     int protection);
int ioflusher_report_error(const struct ioflusher_report *report,
			   int protection);
int ioflusher_report_reason(const struct ioflusher_report *report,
			    int protection);
int ioflusher_report_format(const struct ioflusher_report *report,
			    int protection, char *buf, size_t size);
void ioflusher_report_free(struct ioflusher_report *report);

/* Mempool: preallocated fixed-size elements; see ioflusher_mempool_new(3). */
struct ioflusher_mempool;

enum ioflusher_mempool_flags {
	/* Create the pool even when its memory cannot be locked (it is
	 * still pre-faulted); the reason is logged. */
	IOFLUSHER_MEMPOOL_UNLOCKED_OK = 1u << 0
};

enum ioflusher_mempool_alloc_flags {
	IOFLUSHER_MEMPOOL_NOWAIT = 1u << 0 /* return NULL rather than wait */
};

enum ioflusher_mempool_timeout {
	IOFLUSHER_MEMPOOL_FOREVER = -1 /* timeout_ns: wait until granted */
};

/* Filled by ioflusher_mempool_stats(); later versions only append. */
struct ioflusher_mempool_stats {
	uint64_t elem_size;  /* bytes of one element, as asked */
	uint64_t stride;     /* bytes between two elements */
	uint64_t min_nr;     /* elements the pool holds */
	uint64_t cache_nr;   /* elements one thread may cache */
	uint64_t in_use;     /* handed out and not yet freed */
	uint64_t free;	     /* in the depot or in per-thread caches */
	uint64_t cached;     /* of those free, held in per-thread caches */
	uint64_t high_water; /* most elements ever out of the depot */
	uint64_t waits;	     /* allocations that had to wait */
	uint64_t wait_ns;    /* total time spent waiting */
	uint64_t timeouts;   /* waits that ended in -ETIMEDOUT */
	uint64_t bytes;	     /* memory mapped for the pool */
	uint64_t locked;     /* 1 when all of it is locked */
	uint64_t refusals;   /* found it empty and did not wait */
};

IOFLUSHER_MUST_CHECK IOFLUSHER_NONNULL(7) int
ioflusher_mempool_new(struct ioflusher_ctx *ctx, size_t min_nr,
		      size_t elem_size, size_t align, unsigned int cache_nr,
		      unsigned int flags, struct ioflusher_mempool **poolp);
void ioflusher_mempool_free(struct ioflusher_mempool *pool);
IOFLUSHER_MUST_CHECK IOFLUSHER_NONNULL(1) int
ioflusher_mempool_resize(struct ioflusher_mempool *pool, size_t min_nr);
IOFLUSHER_MUST_CHECK IOFLUSHER_NONNULL(1) void *
ioflusher_mempool_alloc(struct ioflusher_mempool *pool, unsigned int flags);
IOFLUSHER_MUST_CHECK IOFLUSHER_NONNULL(1, 2) int
ioflusher_mempool_alloc_timeout(struct ioflusher_mempool *pool, void **elemp,
				int64_t timeout_ns);
IOFLUSHER_MUST_CHECK IOFLUSHER_NONNULL(1, 2) int
ioflusher_mempool_alloc_bulk(struct ioflusher_mempool *pool, void **elems,
			     size_t n, int64_t timeout_ns);
IOFLUSHER_NONNULL(1, 2) int
ioflusher_mempool_free_elem(struct ioflusher_mempool *pool, void *elem);
IOFLUSHER_NONNULL(1, 2) int
ioflusher_mempool_free_bulk(struct ioflusher_mempool *pool, void *const *elems,
			    size_t n);
IOFLUSHER_NONNULL(1) int ioflusher_mempool_flush(struct ioflusher_mempool *pool);
IOFLUSHER_NONNULL(1, 2) int
ioflusher_mempool_stats(const struct ioflusher_mempool *pool,
			struct ioflusher_mempool_stats *stats, size_t size);

/* clang-format on */

#ifdef __cplusplus
}
#endif

#endif /* IOFLUSHER_H */
