// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The sandbox that keeps the protections: once locked, no thread may
 * unlock memory or clear the flag.  The calls are made with syscall(), so
 * that what is tested is the kernel's answer, not a libc or sanitizer
 * wrapper's.
 *
 * Clearing the flag fails with EPERM here anyway (no CAP_SYS_RESOURCE),
 * so the filter is told apart by stacking: a first filter answers ENOSYS
 * for every IO_FLUSHER prctl; the sandbox, installed later, wins with
 * EPERM for clearing only (seccomp(2): for equal actions the most recent
 * filter's data is returned).
 */
#include <errno.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "helpers.h"
#include "ioflusher.h"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

static char page[1 << 12] __attribute__((aligned(1 << 12)));

static int seccomp_mode(pid_t tid)
{
	char path[64], line[256];
	int mode = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/task/%d/status", (int)tid);
	f = fopen(path, "re");
	cr_assert(not(zero(ptr, f)));
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Seccomp: %d", &mode) == 1)
			break;
	fclose(f);
	return mode;
}

/* The kernel's answer: 0, or the errno. */
static int sys_munlockall(void)
{
	return syscall(SYS_munlockall) < 0 ? errno : 0;
}

static int sys_munlock(void)
{
	return syscall(SYS_munlock, page, sizeof(page)) < 0 ? errno : 0;
}

static int sys_mlockall(int flags)
{
	return syscall(SYS_mlockall, flags) < 0 ? errno : 0;
}

static int sys_prctl(unsigned long option, unsigned long value)
{
	return syscall(SYS_prctl, option, value, 0UL, 0UL, 0UL) < 0 ? errno : 0;
}

static int sys_io_flusher(unsigned long value)
{
	return sys_prctl(PR_SET_IO_FLUSHER, value);
}

Test(sandbox, lock_refuses_unlocking)
{
	cr_assert(zero(int, seccomp_mode(gettid())));
	cr_assert(zero(int, sys_munlockall()));
	cr_assert(zero(int, sys_munlock()));
	cr_assert(eq(int, ioflusher_sandbox_lock(0), 0));
	cr_assert(eq(int, seccomp_mode(gettid()), 2));
	cr_assert(eq(int, sys_munlockall(), EPERM));
	cr_assert(eq(int, sys_munlock(), EPERM));
	/* mlockall() without MCL_FUTURE would end the locking of new
	 * mappings; with it, it only locks more. */
	cr_assert(eq(int, sys_mlockall(MCL_CURRENT), EPERM));
	/* Everything else goes on. */
	cr_assert(zero(int, mlock(page, sizeof(page)) < 0 ? errno : 0));
}

/* mlockall() with MCL_FUTURE only locks more: the lock lets it through.
 * Not under AddressSanitizer, whose shadow memory mlockall() would try to
 * lock (its interceptor of mlockall() is bypassed here). */
Test(sandbox, lock_lets_mlockall_with_future_through)
{
	skip_under_asan("mlockall()");
	cr_assert(eq(int, ioflusher_sandbox_lock(0), 0));
	cr_assert(zero(int, sys_mlockall(MCL_CURRENT | MCL_FUTURE)));
}

Test(sandbox, lock_refuses_clearing_the_flag)
{
	cr_assert(eq(int, install_prctl_filter(ENOSYS), 0));
	cr_assert(eq(int, sys_io_flusher(0), ENOSYS));
	cr_assert(eq(int, ioflusher_sandbox_lock(0), 0));
	cr_assert(eq(int, sys_io_flusher(0), EPERM));
	/* Setting it is not the sandbox's business. */
	cr_assert(eq(int, sys_io_flusher(1), ENOSYS));
}

/* The kernel reads prctl's option as an int: bits above 31 are ignored,
 * and must not take the call past the filter. */
Test(sandbox, lock_refuses_clearing_with_high_option_bits)
{
	const unsigned long high = 1UL << 32 | PR_SET_IO_FLUSHER;

	cr_assert(eq(int, install_prctl_filter(ENOSYS), 0));
	cr_assert(eq(int, sys_prctl(high, 0), ENOSYS));
	cr_assert(eq(int, ioflusher_sandbox_lock(0), 0));
	cr_assert(eq(int, sys_prctl(high, 0), EPERM));
	cr_assert(eq(int, sys_prctl(high, 1), ENOSYS));
}

struct waiter {
	pid_t tid;
	int answer;
	pthread_barrier_t ready, locked;
};

static void *waiter(void *arg)
{
	struct waiter *w = arg;

	w->tid = gettid();
	pthread_barrier_wait(&w->ready);
	pthread_barrier_wait(&w->locked);
	w->answer = sys_munlockall();
	return NULL;
}

Test(sandbox, lock_covers_threads_started_before)
{
	struct waiter w = {0};
	pthread_t t;

	cr_assert(zero(int, pthread_barrier_init(&w.ready, NULL, 2)));
	cr_assert(zero(int, pthread_barrier_init(&w.locked, NULL, 2)));
	cr_assert(zero(int, pthread_create(&t, NULL, waiter, &w)));
	pthread_barrier_wait(&w.ready);
	cr_assert(zero(int, seccomp_mode(w.tid)));
	cr_assert(eq(int, ioflusher_sandbox_lock(0), 0));
	cr_assert(eq(int, seccomp_mode(w.tid), 2));
	pthread_barrier_wait(&w.locked);
	pthread_join(t, NULL);
	cr_assert(eq(int, w.answer, EPERM));
}

Test(sandbox, log_mode_refuses_nothing)
{
	cr_assert(eq(int, install_prctl_filter(ENOSYS), 0));
	cr_assert(eq(int, ioflusher_sandbox_lock(IOFLUSHER_SANDBOX_LOG), 0));
	cr_assert(eq(int, seccomp_mode(gettid()), 2));
	cr_assert(zero(int, sys_munlockall()));
	/* Logged, and the earlier filter's answer stands. */
	cr_assert(eq(int, sys_io_flusher(0), ENOSYS));
}

/* A sandbox in place that refuses what the lock needs: its answer is
 * passed on (libseccomp alone says -EOPNOTSUPP and -EFAULT). */
Test(sandbox, refused_seccomp_is_passed_on)
{
	cr_assert(eq(int, install_syscall_filter(SYS_seccomp, EPERM), 0));
	cr_assert(eq(int, ioflusher_sandbox_lock(0), -EPERM));
	cr_assert(eq(int, seccomp_mode(gettid()), 2));
	cr_assert(zero(int, sys_munlockall()));
}

Test(sandbox, refused_no_new_privs_is_passed_on)
{
	cr_assert(eq(int, install_syscall_filter(SYS_prctl, EPERM), 0));
	cr_assert(eq(int, ioflusher_sandbox_lock(0), -EPERM));
	cr_assert(zero(int, sys_munlockall()));
}

Test(sandbox, bad_flags)
{
	cr_assert(eq(int, ioflusher_sandbox_lock(2), -EINVAL));
	cr_assert(eq(int, ioflusher_sandbox_lock(~0u), -EINVAL));
	cr_assert(zero(int, seccomp_mode(gettid())));
}
