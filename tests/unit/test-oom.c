// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * OOM protection: oom_score_adj as /proc has it, raised freely, lowered
 * only with CAP_SYS_RESOURCE, for this process or another one.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
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

/*
 * A kernel before 2.6.36, with oom_adj and no oom_score_adj: in a private
 * mount namespace, /proc/PID becomes a tmpfs that holds the real oom_adj
 * alone (/tmp, a tmpfs of the namespace's own, stages it).  Returns the
 * real oom_score_adj, opened before, to read what the kernel made of what
 * was written, or a negative errno.  Single-threaded only.
 */
static int hide_oom_score_adj(void)
{
	char dir[32], path[64];
	int fd, score;

	if (unshare(CLONE_NEWNS) < 0 ||
	    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return -errno;
	snprintf(dir, sizeof(dir), "/proc/%d", (int)getpid());
	snprintf(path, sizeof(path), "%s/oom_score_adj", dir);
	score = open(path, O_RDONLY | O_CLOEXEC);
	if (score < 0)
		return -errno;
	snprintf(path, sizeof(path), "%s/oom_adj", dir);
	if (mount("tmpfs", "/tmp", "tmpfs", 0, "size=16k") < 0)
		return -errno;
	fd = open("/tmp/oom_adj", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	close(fd);
	if (mount(path, "/tmp/oom_adj", NULL, MS_BIND, NULL) < 0 ||
	    mount("/tmp", dir, NULL, MS_BIND | MS_REC, NULL) < 0)
		return -errno;
	if (access("/proc/self/oom_score_adj", F_OK) == 0 || errno != ENOENT ||
	    access("/proc/self/oom_adj", W_OK) < 0)
		return -EEXIST;
	return score;
}

static int pread_int(int fd)
{
	char buf[32];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);

	if (n <= 0)
		return INT_MIN;
	buf[n] = '\0';
	return atoi(buf);
}

static int set_legacy(void *arg, int *out)
{
	int score = hide_oom_score_adj();

	out[0] = score;
	if (score < 0)
		return 0;
	out[1] = ioflusher_oom_set(0, 600);
	out[2] = pread_int(score);
	out[3] = ioflusher_oom_get(0, &out[4]);
	out[5] = ioflusher_oom_set(0, 1000);
	out[6] = pread_int(score);
	out[7] = ioflusher_oom_get(0, &out[8]);
	return 0;
}

Test(oom, legacy_oom_adj)
{
	int out[9];

	cr_assert(eq(int, run_in_child(set_legacy, NULL, out, 9), 0));
	if (out[0] < 0)
		cr_skip("cannot hide oom_score_adj: %s", strerror(-out[0]));
	/* 600 is oom_adj 10 (600 * 17 / 1000), which the kernel makes
	 * 10 * 1000 / 17: raising, so no capability needed. */
	cr_assert(eq(int, out[1], 0));
	cr_assert(eq(int, out[2], 588));
	/* Read back as the kernel gives oom_adj, 588 * 17 / 1000 = 9: that
	 * is 9 * 1000 / 17. */
	cr_assert(eq(int, out[3], 0));
	cr_assert(eq(int, out[4], 529));
	/* 1000 is 15, the maximum, both ways. */
	cr_assert(eq(int, out[5], 0));
	cr_assert(eq(int, out[6], 1000));
	cr_assert(eq(int, out[7], 0));
	cr_assert(eq(int, out[8], 1000));
}
