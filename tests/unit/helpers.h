/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What the unit tests share: ways to make the kernel answer as an old
 * kernel, a sandbox, a container or a tight limit would, for real, and
 * readers of /proc written independently of lib/proc.c, so that the tests
 * check the library against the kernel rather than against itself.
 *
 * Criterion runs every test in a process of its own, so a filter, a
 * dropped capability or a lowered limit ends with the test.  That process
 * has a second thread (Criterion's), though: unshare() of a user or mount
 * namespace needs a single-threaded process, so those tests go through
 * run_in_child().
 */
#ifndef IOFLUSHER_TEST_HELPERS_H
#define IOFLUSHER_TEST_HELPERS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

/* Under AddressSanitizer mlock(), mlockall() and mallopt() are intercepted
 * and do nothing: tests that need them to reach the kernel skip there. */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

#define skip_under_asan(why)                                                   \
	do {                                                                   \
		if (UNDER_ASAN)                                                \
			cr_skip("AddressSanitizer intercepts " why);           \
	} while (0)

/* The kernel's PF_MEMALLOC_NOIO | PF_LOCAL_THROTTLE, include/linux/sched.h. */
#define TEST_PF_IO_FLUSHER 0x00180000UL

/* Seccomp filters (libseccomp, on the calling thread).  err 0 makes the
 * call return 0 without running: a sandbox faking success.  Return 0 or a
 * negative errno. */
int install_prctl_filter(int err);
int install_syscall_filter(int nr, int err);

/* Capabilities of the calling thread, with libcap. */
int drop_capability(int cap);
/* A CapEff/CapPrm/CapBnd... line of /proc/self/status. */
int status_caps(const char *field, uint64_t *mask);

/* RLIMIT_MEMLOCK, soft and hard. */
int set_memlock_limit(uint64_t soft, uint64_t hard);

/* unshare(CLONE_NEWUSER): every capability, in a namespace where the
 * kernel's capable() checks do not see them.  Single-threaded only. */
int enter_user_namespace(void);
/* A private mount namespace with /proc unmounted, or mounted read-only as
 * container runtimes do.  Single-threaded only. */
int hide_proc(void);
int read_only_proc(void);
/* personality(UNAME26): uname() reports a 2.6 release, an "old kernel". */
int pretend_old_kernel(void);

/* Independent /proc readers. */
int read_task_flags(pid_t pid, pid_t tid, unsigned long *flags, char *comm,
		    size_t comm_size);
/* Field 9 of /proc/thread-self/stat carries PR_IO_FLUSHER: 1, 0, -errno. */
int kernel_flagged(void);
int status_u64(pid_t pid, const char *key, int base, uint64_t *value);
int read_oom_score_adj(pid_t pid, int *adj);
int write_oom_score_adj(pid_t pid, int adj);

struct mapping_lock {
	int mappings; /* mappings whose path contains the string */
	int locked;   /* of them, VM_LOCKED ("lo" in VmFlags) */
	uint64_t kib; /* their "Locked:" total */
};
/* Mappings of /proc/self/smaps whose path contains path_part. */
int smaps_lock_state(const char *path_part, struct mapping_lock *out);

/* Thread ids of /proc/PID/task (0: self), sorted; returns the count. */
int list_tasks(pid_t pid, pid_t *tids, int max);

/* Minor faults of the calling thread so far. */
long thread_minflt(void);
/* No transparent huge pages for this process, so that every touched page
 * of a fresh region is one minor fault. */
int disable_thp(void);

/* A PID that cannot exist: PIDs are allocated below pid_max. */
pid_t unused_pid(void);

/* Run fn(arg, out) in a forked, single-threaded child; out is shared with
 * the parent and holds n ints, filled with INT_MIN first.  Returns fn's
 * return value (the child's exit status), or -1 if it died of a signal. */
int run_in_child(int (*fn)(void *arg, int *out), void *arg, int *out, size_t n);

/* A child process that runs prepare(arg) (which may be NULL), then waits
 * until child_stop() or until its parent goes away. */
struct child {
	pid_t pid;
	int stop_fd;
};
int child_start(struct child *c, int (*prepare)(void *arg), void *arg);
int child_stop(struct child *c);

/* What is written to fd 2 between the two calls, NUL-terminated in buf. */
struct capture {
	int saved;
	int fd;
};
int stderr_capture_begin(struct capture *c);
ssize_t stderr_capture_end(struct capture *c, char *buf, size_t size);

#endif
