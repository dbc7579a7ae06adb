// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * OOM protection: oom_score_adj as /proc has it, raised freely, lowered
 * only with CAP_SYS_RESOURCE, for this process or another one.
 */
#include <errno.h>
#include <linux/capability.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "ioflusher.h"

static int proc_adj(pid_t pid)
{
	int adj = 0;

	cr_assert(eq(int, read_oom_score_adj(pid, &adj), 0));
	return adj;
}

Test(oom, get_agrees_with_proc)
{
	int adj = 1234;

	cr_assert(eq(int, ioflusher_oom_get(0, &adj), 0));
	cr_assert(eq(int, adj, proc_adj(0)));
	cr_assert(eq(int, write_oom_score_adj(0, 17), 0));
	cr_assert(eq(int, ioflusher_oom_get(0, &adj), 0));
	cr_assert(eq(int, adj, 17));
	cr_assert(eq(int, ioflusher_oom_get(getpid(), &adj), 0));
	cr_assert(eq(int, adj, 17));
}

Test(oom, raise_reads_back)
{
	int start = proc_adj(0), adj = 0;

	/* Raising needs no privilege; back to where it was is no lower than
	 * the minimum either. */
	cr_assert(eq(int, drop_capability(CAP_SYS_RESOURCE), 0));
	cr_assert(eq(int, ioflusher_oom_set(0, start + 100), 0));
	cr_assert(eq(int, proc_adj(0), start + 100));
	cr_assert(eq(int, ioflusher_oom_get(0, &adj), 0));
	cr_assert(eq(int, adj, start + 100));
	cr_assert(eq(int, ioflusher_oom_set(0, 1000), 0));
	cr_assert(eq(int, proc_adj(0), 1000));
	cr_assert(eq(int, ioflusher_oom_set(0, start), 0));
	cr_assert(eq(int, proc_adj(0), start));
}

Test(oom, lower_without_capability_eacces)
{
	int start = proc_adj(0), r;

	cr_assert(eq(int, drop_capability(CAP_SYS_RESOURCE), 0));
	r = ioflusher_oom_set(0, -1000);
	cr_assert(eq(int, r, -EACCES));
	cr_assert(eq(int, ioflusher_diagnose(IOFLUSHER_PROTECT_OOM, r),
		     IOFLUSHER_REASON_CAPABILITY));
	cr_assert(eq(int, proc_adj(0), start));
}

Test(oom, bad_arguments)
{
	/* Through a pointer without the header's nonnull attribute, which
	 * would warn at compile time and trap under UBSan. */
	int (*volatile oom_get)(pid_t, int *) = ioflusher_oom_get;
	int adj;

	cr_assert(eq(int, ioflusher_oom_set(0, -1001), -EINVAL));
	cr_assert(eq(int, ioflusher_oom_set(0, 1001), -EINVAL));
	cr_assert(eq(int, ioflusher_oom_set(-1, 0), -EINVAL));
	cr_assert(eq(int, ioflusher_oom_get(-1, &adj), -EINVAL));
	cr_assert(eq(int, oom_get(0, NULL), -EINVAL));
}

Test(oom, no_such_process)
{
	pid_t gone = unused_pid();
	int adj;

	cr_assert(gt(int, gone, 0));
	cr_assert(eq(int, ioflusher_oom_set(gone, 0), -ESRCH));
	cr_assert(eq(int, ioflusher_oom_get(gone, &adj), -ESRCH));
}

static int set_own_adj(void *arg)
{
	return write_oom_score_adj(0, *(int *)arg);
}

Test(oom, another_process)
{
	int want = 321, adj = 0;
	struct child c;

	cr_assert(eq(int, child_start(&c, set_own_adj, &want), 0));
	cr_assert(eq(int, ioflusher_oom_get(c.pid, &adj), 0));
	cr_assert(eq(int, ioflusher_oom_set(c.pid, 500), 0));
	cr_assert(eq(int, proc_adj(c.pid), 500));
	cr_assert(eq(int, child_stop(&c), 0));
	cr_assert(eq(int, adj, want));
}

static int lower_in_user_namespace(void *arg, int *out)
{
	out[0] = enter_user_namespace();
	if (out[0] < 0)
		return 0;
	out[1] = ioflusher_oom_set(0, -1000);
	out[2] = ioflusher_diagnose(IOFLUSHER_PROTECT_OOM, out[1]);
	return 0;
}

Test(oom, lower_in_user_namespace)
{
	int out[3];

	cr_assert(eq(int, drop_capability(CAP_SYS_RESOURCE), 0));
	cr_assert(
	    eq(int, run_in_child(lower_in_user_namespace, NULL, out, 3), 0));
	if (out[0] < 0)
		cr_skip("unshare(CLONE_NEWUSER): %s", strerror(-out[0]));
	cr_assert(eq(int, out[1], -EACCES));
	cr_assert(eq(int, out[2], IOFLUSHER_REASON_USER_NAMESPACE));
}

static int set_on_read_only_proc(void *arg, int *out)
{
	out[0] = read_only_proc();
	if (out[0] < 0)
		return 0;
	out[1] = ioflusher_oom_set(0, 100);
	out[2] = ioflusher_diagnose(IOFLUSHER_PROTECT_OOM, out[1]);
	out[3] = ioflusher_oom_get(0, &out[4]);
	return 0;
}

Test(oom, read_only_proc_is_sandbox)
{
	int out[5];

	cr_assert(
	    eq(int, run_in_child(set_on_read_only_proc, NULL, out, 5), 0));
	if (out[0] < 0)
		cr_skip("cannot remount /proc read-only: %s",
			strerror(-out[0]));
	cr_assert(eq(int, out[1], -EROFS));
	cr_assert(eq(int, out[2], IOFLUSHER_REASON_SANDBOX));
	/* Reading still works. */
	cr_assert(eq(int, out[3], 0));
	cr_assert(eq(int, out[4], proc_adj(0)));
}

static int without_proc(void *arg, int *out)
{
	out[0] = hide_proc();
	if (out[0] < 0)
		return 0;
	out[1] = ioflusher_oom_set(0, 100);
	out[2] = ioflusher_diagnose(IOFLUSHER_PROTECT_OOM, out[1]);
	out[3] = ioflusher_oom_get(0, &out[4]);
	return 0;
}

Test(oom, without_proc)
{
	int out[5];

	cr_assert(eq(int, run_in_child(without_proc, NULL, out, 5), 0));
	if (out[0] < 0)
		cr_skip("cannot unmount /proc here: %s", strerror(-out[0]));
	cr_assert(eq(int, out[1], -ENOENT));
	cr_assert(eq(int, out[2], IOFLUSHER_REASON_PROC));
	cr_assert(eq(int, out[3], -ENOENT));
}
