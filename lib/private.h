/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What the library's files share; nothing here is exported. */
#ifndef IOFLUSHER_PRIVATE_H
#define IOFLUSHER_PRIVATE_H

#include <stdbool.h>
#include <stdint.h>
#include <syslog.h>
#include <sys/types.h>

#include "ioflusher.h"

#define _public_ __attribute__((visibility("default")))
#define _printf_(f, a) __attribute__((format(printf, f, a)))
#define _cleanup_(fn) __attribute__((cleanup(fn)))
#define _likely_(x) __builtin_expect(!!(x), 1)
#define _unlikely_(x) __builtin_expect(!!(x), 0)
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/*
 * The kernel's values, defined here when the headers are older than the
 * kernel we run on: the call must never be compiled out (ublksrv's was).
 */
#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif
#ifndef PR_GET_IO_FLUSHER
#define PR_GET_IO_FLUSHER 58
#endif
#ifndef MCL_ONFAULT
#define MCL_ONFAULT 4
#endif
/* include/linux/sched.h; PR_IO_FLUSHER is both. */
#define IOFLUSHER_PF_EXITING 0x00000004u
#define IOFLUSHER_PF_MEMALLOC_NOIO 0x00080000u
#define IOFLUSHER_PF_LOCAL_THROTTLE 0x00100000u
#define IOFLUSHER_PF_MASK \
	(IOFLUSHER_PF_MEMALLOC_NOIO | IOFLUSHER_PF_LOCAL_THROTTLE)

/* Logging (lib/ctx.c).  ctx may be NULL: then nothing is logged. */
void ioflusher__log(const struct ioflusher_ctx *ctx, int priority,
		    const char *file, int line, const char *fn,
		    const char *format, ...) _printf_(6, 7);
bool ioflusher__log_enabled(const struct ioflusher_ctx *ctx, int priority);

#define log_cond(ctx, prio, ...)                                      \
	do {                                                          \
		if (ioflusher__log_enabled(ctx, prio))                \
			ioflusher__log(ctx, prio, __FILE__, __LINE__, \
				       __func__, __VA_ARGS__);        \
	} while (0)
#define log_err(ctx, ...) log_cond(ctx, LOG_ERR, __VA_ARGS__)
#define log_warn(ctx, ...) log_cond(ctx, LOG_WARNING, __VA_ARGS__)
#define log_info(ctx, ...) log_cond(ctx, LOG_INFO, __VA_ARGS__)
#define log_dbg(ctx, ...) log_cond(ctx, LOG_DEBUG, __VA_ARGS__)

/* Context internals (lib/ctx.c), read by lib/setup.c. */
struct ioflusher_ctx {
	int refcount;
	int log_priority;
	void (*log_fn)(void *data, int priority, const char *file, int line,
		       const char *fn, const char *format, va_list args);
	void *log_data;
	int policy[IOFLUSHER_PROTECT_COUNT];
	int oom_score_adj;
	unsigned int memlock_flags; /* of MEMLOCK_FLAGS */
	size_t stack_reserve;
	size_t heap_reserve;
};

/* Every flag ioflusher_memlock_all() and ioflusher_ctx_set_memlock_flags()
 * take. */
#define MEMLOCK_FLAGS \
	(IOFLUSHER_MEMLOCK_ONFAULT | IOFLUSHER_MEMLOCK_FUTURE_IF_UNLIMITED)

/* Functions shared between the library's files are hidden from the shared
 * library, but a static libioflusher.a exports every global name: there they
 * carry the library's prefix, so that a program linked with it may have a
 * proc_read_file() of its own (tests/check-symbols.sh). */
#define caps_counted ioflusher__caps_counted
#define caps_permitted ioflusher__caps_permitted
#define caps_unbounded ioflusher__caps_unbounded
#define proc_task_flags ioflusher__proc_task_flags
#define proc_parse_stat ioflusher__proc_parse_stat
#define proc_status_u64 ioflusher__proc_status_u64
#define proc_read_file ioflusher__proc_read_file
#define proc_write_file ioflusher__proc_write_file
#define proc_thread_count ioflusher__proc_thread_count
#define proc_seccomp_mode ioflusher__proc_seccomp_mode
#define kernel_at_least ioflusher__kernel_at_least
#define prefault_heap ioflusher__prefault_heap

/* The capability is effective and the kernel's capable() will count it:
 * the process sits in the initial user namespace (lib/caps.c). */
bool caps_counted(int cap);
/* Whether the calling thread's permitted set holds the capability; and
 * whether the bounding set is known to lack it (false when it holds it or
 * cannot tell). */
bool caps_permitted(int cap);
bool caps_unbounded(int cap);

/* ioflusher_memlock_prefault_heap(); with lock_error, the reserve is also
 * mlock()ed, and the errno of a refusal stored there (lib/memlock.c). */
int prefault_heap(size_t bytes, int *lock_error);

/* /proc readers (lib/proc.c). */
/* Flags (field 9) of /proc/PID/task/TID/stat; pid 0 means this process,
 * tid 0 the calling thread.  -ESRCH for a thread that is gone, a zombie
 * (whose flags, never cleared at exit, would still read as protected), or
 * exiting (PF_EXITING: a joined thread is still listed a moment). */
int proc_task_flags(pid_t pid, pid_t tid, unsigned long *flags, char *comm,
		    size_t comm_size);
/* Parse a stat line: comm (field 2, may hold spaces and parentheses),
 * state (field 3) and flags (field 9); any output may be NULL. */
int proc_parse_stat(const char *line, char *state, unsigned long *flags,
		    char *comm, size_t comm_size);
/* A "Key:\tvalue" line of /proc/PID/status as an unsigned number (base 10 or 16). */
int proc_status_u64(pid_t pid, const char *key, int base, uint64_t *value);
/* Read a small file whole, NUL-terminated; returns its length or -errno. */
ssize_t proc_read_file(const char *path, char *buf, size_t size);
int proc_write_file(const char *path, const char *text);
/* Threads of a process (Threads: in /proc/PID/status). */
int proc_thread_count(pid_t pid);
/* Seccomp mode of this process: 0 none, 1 strict, 2 filter. */
int proc_seccomp_mode(void);
/* Running kernel release is at least major.minor: 1, 0, or -errno. */
int kernel_at_least(unsigned int major, unsigned int minor);

static inline pid_t self_tid(void)
{
	extern pid_t gettid(void);
	return gettid();
}

#endif
