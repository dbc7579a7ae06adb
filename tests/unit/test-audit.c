// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Audit: every thread of a process, as /proc/PID/task lists it, with its
 * name and whether its flags carry IO_FLUSHER.  Without CAP_SYS_RESOURCE
 * no thread here has the flag: every one is missing it.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "ioflusher.h"

#define WORKERS 3

struct worker {
	pthread_t thread;
	pid_t tid;
	char name[16];
	pthread_barrier_t *started;
	int stop_fd;
};

static void *worker(void *arg)
{
	struct worker *w = arg;
	char byte;

	w->tid = gettid();
	pthread_setname_np(pthread_self(), w->name);
	pthread_barrier_wait(w->started);
	/* Until the test closes the other end. */
	while (read(w->stop_fd, &byte, 1) < 0 && errno == EINTR)
		;
	return NULL;
}

/* The threads listed by the audit are those of /proc, in the same order,
 * with the same names and flags. */
static void assert_audit_matches_proc(const struct ioflusher_audit *a)
{
	pid_t tids[64];
	int n = list_tasks(0, tids, 64);

	cr_assert(gt(int, n, 0));
	cr_assert(eq(int, ioflusher_audit_count(a), n));
	for (int i = 0; i < n; i++) {
		const char *comm = NULL;
		unsigned long flags;
		int flagged = -1;
		char name[64];
		pid_t tid = 0;

		cr_assert(eq(int,
			     ioflusher_audit_thread(a, (unsigned int)i, &tid,
						    &comm, &flagged),
			     0));
		cr_assert(eq(int, tid, tids[i]), "thread %d", i);
		cr_assert(
		    eq(int, read_task_flags(0, tid, &flags, name, sizeof(name)),
		       0));
		cr_assert(eq(str, (char *)comm, name));
		cr_assert(
		    eq(int, flagged,
		       (flags & TEST_PF_IO_FLUSHER) == TEST_PF_IO_FLUSHER));
	}
}

Test(audit, self_sees_every_thread)
{
	struct worker w[WORKERS];
	pthread_barrier_t started;
	struct ioflusher_audit *a = NULL;
	int stop[2], count;

	cr_assert(zero(int, pipe2(stop, O_CLOEXEC)));
	cr_assert(zero(int, pthread_barrier_init(&started, NULL, WORKERS + 1)));
	for (int i = 0; i < WORKERS; i++) {
		snprintf(w[i].name, sizeof(w[i].name), "audited-%c", '0' + i);
		w[i].started = &started;
		w[i].stop_fd = stop[0];
		cr_assert(zero(
		    int, pthread_create(&w[i].thread, NULL, worker, &w[i])));
	}
	pthread_barrier_wait(&started);

	cr_assert(eq(int, ioflusher_audit_new(0, &a), 0));
	assert_audit_matches_proc(a);
	count = ioflusher_audit_count(a);
	/* Criterion's own thread, this one, and ours. */
	cr_assert(ge(int, count, WORKERS + 1));
	cr_assert(eq(int, ioflusher_audit_missing(a), count));
	for (int i = 0; i < WORKERS; i++) {
		bool found = false;

		for (int j = 0; j < count; j++) {
			const char *comm;
			pid_t tid;

			cr_assert(eq(int,
				     ioflusher_audit_thread(a, (unsigned int)j,
							    &tid, &comm, NULL),
				     0));
			if (tid != w[i].tid)
				continue;
			cr_assert(eq(str, (char *)comm, w[i].name));
			found = true;
		}
		cr_assert(found, "thread %s (%d) in the audit", w[i].name,
			  (int)w[i].tid);
	}
	ioflusher_audit_free(a);

	close(stop[1]);
	for (int i = 0; i < WORKERS; i++)
		pthread_join(w[i].thread, NULL);
	close(stop[0]);
	pthread_barrier_destroy(&started);
}

static int name_self(void *arg)
{
	return prctl(PR_SET_NAME, (unsigned long)arg, 0UL, 0UL, 0UL) < 0
		   ? -errno
		   : 0;
}

Test(audit, another_process)
{
	struct ioflusher_audit *a = NULL;
	const char *comm = NULL;
	int flagged = -1;
	struct child c;
	pid_t tid = 0;

	cr_assert(eq(int, child_start(&c, name_self, "audited-child"), 0));
	cr_assert(eq(int, ioflusher_audit_new(c.pid, &a), 0));
	cr_assert(eq(int, ioflusher_audit_count(a), 1));
	cr_assert(eq(int, ioflusher_audit_missing(a), 1));
	cr_assert(
	    eq(int, ioflusher_audit_thread(a, 0, &tid, &comm, &flagged), 0));
	cr_assert(eq(int, tid, c.pid));
	cr_assert(eq(str, (char *)comm, "audited-child"));
	cr_assert(zero(int, flagged));
	cr_assert(eq(int, child_stop(&c), 0));
	ioflusher_audit_free(a);
}

Test(audit, no_such_process)
{
	struct ioflusher_audit *a = NULL;
	pid_t gone = unused_pid();

	cr_assert(gt(int, gone, 0));
	cr_assert(eq(int, ioflusher_audit_new(gone, &a), -ESRCH));
	cr_assert(zero(ptr, a));
}

/* A zombie's stat still shows the flags it ran with (exit does not clear
 * them): a dead daemon must not read as protected, nor as "0 of 0". */
Test(audit, a_zombie_is_no_process)
{
	struct ioflusher_audit *a = NULL;
	char path[64], buf[512], *p;
	siginfo_t si;
	pid_t child = fork();
	int status;
	FILE *f;

	cr_assert(ge(int, child, 0));
	if (child == 0)
		_exit(0);
	/* Until it has exited, but not reaped: a zombie, however late the
	 * child was scheduled. */
	cr_assert(
		eq(int, waitid(P_PID, (id_t)child, &si, WEXITED | WNOWAIT), 0));
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)child);
	f = fopen(path, "re");
	cr_assert_not_null(f);
	p = fgets(buf, sizeof(buf), f) ? strrchr(buf, ')') : NULL;
	fclose(f);
	cr_assert(p && p[1] == ' ' && p[2] == 'Z', "the child is a zombie: %s",
		  buf);
	cr_assert(eq(int, ioflusher_audit_new(child, &a), -ESRCH));
	cr_assert(zero(ptr, a));
	cr_assert(eq(int, waitpid(child, &status, 0), child));
}

static void *nothing(void *arg)
{
	return arg;
}

/* pthread_join() returns as soon as the thread has let go of its memory,
 * a moment before the kernel stops listing it in /proc: a daemon that
 * audits right after starting its workers, or after joining one that
 * failed, must not count a thread that has ended.  The window is short;
 * this many rounds saw it several dozen times before the audit skipped
 * threads that have begun to exit. */
Test(audit, a_joined_thread_is_gone)
{
	struct ioflusher_audit *a = NULL;
	int alone, extra = 0;

	cr_assert(eq(int, ioflusher_audit_new(0, &a), 0));
	alone = ioflusher_audit_count(a);
	ioflusher_audit_free(a);
	for (int i = 0; i < 20000; i++) {
		pthread_t t;

		cr_assert(zero(int, pthread_create(&t, NULL, nothing, NULL)));
		cr_assert(zero(int, pthread_join(t, NULL)));
		cr_assert(eq(int, ioflusher_audit_new(0, &a), 0));
		if (ioflusher_audit_count(a) != alone)
			extra++;
		ioflusher_audit_free(a);
	}
	cr_assert(zero(int, extra), "%d audits of 20000 saw a joined thread",
		  extra);
}

Test(audit, index_out_of_range)
{
	struct ioflusher_audit *a = NULL;
	pid_t tid = 0;
	int count;

	cr_assert(eq(int, ioflusher_audit_new(0, &a), 0));
	count = ioflusher_audit_count(a);
	cr_assert(gt(int, count, 0));
	/* Every output is optional. */
	cr_assert(eq(int,
		     ioflusher_audit_thread(a, (unsigned int)count - 1, NULL,
					    NULL, NULL),
		     0));
	cr_assert(
	    eq(int,
	       ioflusher_audit_thread(a, (unsigned int)count, &tid, NULL, NULL),
	       -EINVAL));
	cr_assert(eq(int, ioflusher_audit_thread(a, UINT_MAX, &tid, NULL, NULL),
		     -EINVAL));
	cr_assert(zero(int, tid));
	ioflusher_audit_free(a);
}

Test(audit, null_and_invalid)
{
	/* Through a pointer without the header's nonnull attribute, which
	 * would warn at compile time and trap under UBSan. */
	int (*volatile audit_new)(pid_t, struct ioflusher_audit **) =
	    ioflusher_audit_new;
	struct ioflusher_audit *a = NULL;

	cr_assert(eq(int, audit_new(0, NULL), -EINVAL));
	cr_assert(eq(int, ioflusher_audit_new(-1, &a), -EINVAL));
	cr_assert(zero(ptr, a));
	cr_assert(eq(int, ioflusher_audit_count(NULL), -EINVAL));
	cr_assert(eq(int, ioflusher_audit_missing(NULL), -EINVAL));
	cr_assert(eq(int, ioflusher_audit_thread(NULL, 0, NULL, NULL, NULL),
		     -EINVAL));
	ioflusher_audit_free(NULL);
}

static int audit_without_proc(void *arg, int *out)
{
	struct ioflusher_audit *a = NULL;

	out[0] = hide_proc();
	if (out[0] < 0)
		return 0;
	out[1] = ioflusher_audit_new(0, &a);
	out[2] = a == NULL;
	return 0;
}

Test(audit, without_proc)
{
	int out[3];

	cr_assert(eq(int, run_in_child(audit_without_proc, NULL, out, 3), 0));
	if (out[0] < 0)
		cr_skip("cannot unmount /proc here: %s", strerror(-out[0]));
	cr_assert(eq(int, out[1], -ENOENT));
	cr_assert(eq(int, out[2], 1));
}
