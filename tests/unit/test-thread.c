// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Threads: a thread created through the library carries the flag before
 * it runs a line of the caller's code, or it never runs the caller's code
 * at all.  Here the flag cannot be had, so it is the "never" that is
 * tested; the thread that gets the flag is tested in the VM.
 */
#include <errno.h>
#include <linux/capability.h>
#include <sched.h>

#include "helpers.h"
#include "ioflusher.h"

static void without_sys_resource(void)
{
	cr_assert(eq(int, drop_capability(CAP_SYS_RESOURCE), 0));
}

TestSuite(thread, .init = without_sys_resource);

static int ran;

static void *start(void *arg)
{
	__atomic_store_n(&ran, 1, __ATOMIC_SEQ_CST);
	return arg;
}

static int threads_now(void)
{
	uint64_t n = 0;

	cr_assert(eq(int, status_u64(0, "Threads", 10, &n), 0));
	return (int)n;
}

Test(thread, create_eperm_never_runs_start)
{
	pthread_t t;

	/* A joinable thread that failed is joined before the call returns:
	 * if it has not run start() by now, it never will. */
	cr_assert(
	    eq(int, ioflusher_thread_create(&t, NULL, start, NULL), -EPERM));
	cr_assert(zero(int, __atomic_load_n(&ran, __ATOMIC_SEQ_CST)));
}

/* A daemon may retry: each failed thread is joined, its stack given back
 * for the next one, not left mapped.  Not the thread count, which falls
 * back once the thread has exited, joined or not: the stack is what
 * stays.  The first failure may map a stack (none of that size was free);
 * later ones reuse it. */
Test(thread, create_eperm_leaves_no_stack_behind)
{
	uint64_t before = 0, after = 0;
	pthread_t t;

	cr_assert(eq(int, ioflusher_thread_create(&t, NULL, start, NULL),
		     -EPERM));
	cr_assert(eq(int, status_u64(0, "VmSize", 10, &before), 0));
	for (int i = 0; i < 4; i++)
		cr_assert(eq(int,
			     ioflusher_thread_create(&t, NULL, start, NULL),
			     -EPERM));
	cr_assert(eq(int, status_u64(0, "VmSize", 10, &after), 0));
	cr_assert(eq(u64, after, before), "VmSize %llu kB, then %llu kB",
		  (unsigned long long)before, (unsigned long long)after);
	cr_assert(zero(int, __atomic_load_n(&ran, __ATOMIC_SEQ_CST)));
}

Test(thread, create_detached_eperm_never_runs_start)
{
	int before = threads_now();
	pthread_attr_t attr;
	pthread_t t;

	cr_assert(zero(int, pthread_attr_init(&attr)));
	cr_assert(zero(
	    int, pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED)));
	cr_assert(
	    eq(int, ioflusher_thread_create(&t, &attr, start, NULL), -EPERM));
	pthread_attr_destroy(&attr);
	/* The detached thread ends on its own: wait until it has, so that a
	 * start routine run after the call returned would be seen. */
	while (threads_now() > before)
		sched_yield();
	cr_assert(zero(int, __atomic_load_n(&ran, __ATOMIC_SEQ_CST)));
}

struct canceled {
	int go;
	int result;
	int returned;
};

static void *cancelled_creator(void *arg)
{
	struct canceled *c = arg;
	pthread_t t;

	/* Spinning is no cancellation point: the cancel stays pending
	 * until ioflusher_thread_create() reaches one, if it has any. */
	while (!__atomic_load_n(&c->go, __ATOMIC_SEQ_CST))
		sched_yield();
	c->result = ioflusher_thread_create(&t, NULL, start, NULL);
	__atomic_store_n(&c->returned, 1, __ATOMIC_SEQ_CST);
	pthread_testcancel();
	return NULL;
}

/* Like pthread_create(), no cancellation point: a caller cancelled
 * inside would leave the new thread writing to its dead stack. */
Test(thread, create_is_no_cancellation_point)
{
	struct canceled c = {0};
	pthread_t creator;
	void *res;

	cr_assert(zero(int, pthread_create(&creator, NULL, cancelled_creator,
					   &c)));
	cr_assert(zero(int, pthread_cancel(creator)));
	__atomic_store_n(&c.go, 1, __ATOMIC_SEQ_CST);
	cr_assert(zero(int, pthread_join(creator, &res)));
	cr_assert(eq(ptr, res, PTHREAD_CANCELED));
	cr_assert(eq(int, __atomic_load_n(&c.returned, __ATOMIC_SEQ_CST), 1));
	cr_assert(eq(int, c.result, -EPERM));
}

Test(thread, create_faked_success_eio)
{
	pthread_t t;

	/* The new thread inherits the filter: its prctl "succeeds", the
	 * check of its own flags does not agree. */
	cr_assert(eq(int, install_prctl_filter(0), 0));
	cr_assert(
	    eq(int, ioflusher_thread_create(&t, NULL, start, NULL), -EIO));
	cr_assert(zero(int, __atomic_load_n(&ran, __ATOMIC_SEQ_CST)));
}

Test(thread, create_null_arguments)
{
	/* Through a pointer without the header's nonnull attribute, which
	 * would warn at compile time and trap under UBSan. */
	int (*volatile create)(pthread_t *, const pthread_attr_t *,
			       void *(*)(void *), void *) =
	    ioflusher_thread_create;
	pthread_t t;

	cr_assert(eq(int, create(NULL, NULL, start, NULL), -EINVAL));
	cr_assert(eq(int, create(&t, NULL, NULL, NULL), -EINVAL));
	cr_assert(zero(int, __atomic_load_n(&ran, __ATOMIC_SEQ_CST)));
}

Test(thread, child_clear_without_flag)
{
	cr_assert(eq(int, kernel_flagged(), 0));
	/* Nothing to clear: no prctl, so no EPERM either. */
	cr_assert(eq(int, install_prctl_filter(ENOSYS), 0));
	cr_assert(eq(int, ioflusher_thread_child_clear(0), 0));
	cr_assert(eq(int, kernel_flagged(), 0));
}

Test(thread, child_clear_leaves_non_negative_oom_alone)
{
	int adj = 0;

	cr_assert(eq(int, write_oom_score_adj(0, 100), 0));
	cr_assert(eq(
	    int, ioflusher_thread_child_clear(IOFLUSHER_CHILD_RESET_OOM), 0));
	cr_assert(eq(int, read_oom_score_adj(0, &adj), 0));
	cr_assert(eq(int, adj, 100));
}

Test(thread, child_clear_bad_flags)
{
	cr_assert(eq(int, ioflusher_thread_child_clear(2), -EINVAL));
	cr_assert(eq(int, ioflusher_thread_child_clear(~0u), -EINVAL));
}
