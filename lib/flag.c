// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The IO_FLUSHER flag of the calling thread.
 *
 * PR_SET_IO_FLUSHER (Linux 5.6, kernel/sys.c) sets PF_MEMALLOC_NOIO |
 * PF_LOCAL_THROTTLE on the calling thread only: its allocations behave as
 * GFP_NOIO, so reclaim entered on its behalf does not issue IO that could
 * come back to it, and writeback throttling only counts the device it
 * writes to.  Threads and children created later inherit the flags
 * (copy_process copies task->flags) and execve keeps them.  Setting,
 * clearing and PR_GET_IO_FLUSHER all need CAP_SYS_RESOURCE in the initial
 * user namespace (capable(), not ns_capable()); the capability is checked
 * before the arguments, so a kernel that knows the option answers EPERM
 * without it and an older kernel answers EINVAL.
 */
#include <errno.h>
#include <sys/prctl.h>

#include "private.h"

static int flag_prctl(unsigned long value)
{
	/*
	 * prctl() is variadic: pass unsigned long, never a bare 0, or the
	 * upper halves of arguments 3 to 5 are whatever the registers held
	 * and the kernel answers EINVAL.
	 */
	if (prctl(PR_SET_IO_FLUSHER, value, 0UL, 0UL, 0UL) < 0)
		return -errno;
	return 0;
}

_public_ int ioflusher_flag_get(void)
{
	unsigned long flags;
	int r, k;

	r = proc_task_flags(0, 0, &flags, NULL, 0);
	if (r == 0)
		return (flags & IOFLUSHER_PF_MASK) == IOFLUSHER_PF_MASK;
	/* No /proc (a chroot, early boot): the kernel can say, with the
	 * capability. */
	k = prctl(PR_GET_IO_FLUSHER, 0UL, 0UL, 0UL, 0UL);
	if (k >= 0)
		return k;
	return r;
}

static int flag_set_verified(unsigned long value)
{
	int r;

	/* Already so: nothing to ask the kernel, which would want
	 * CAP_SYS_RESOURCE even for that (a worker that inherited the flag
	 * after the capability was dropped). */
	r = ioflusher_flag_get();
	if (r >= 0 && (unsigned long)r == value)
		return 0;
	r = flag_prctl(value);
	if (r < 0)
		return r;
	/*
	 * Verify: a seccomp filter returning SECCOMP_RET_ERRNO with 0 makes
	 * prctl() "succeed" without running it.  -EIO says the kernel's answer
	 * and the thread's flags disagree.
	 */
	r = ioflusher_flag_get();
	if (r < 0)
		return r;
	if ((unsigned long)r != value)
		return -EIO;
	return 0;
}

_public_ int ioflusher_flag_set(void)
{
	return flag_set_verified(1);
}

_public_ int ioflusher_flag_clear(void)
{
	return flag_set_verified(0);
}

_public_ int ioflusher_flag_save(void)
{
	int prev, r;

	prev = ioflusher_flag_get();
	if (prev <= 0) {
		if (prev < 0)
			return prev;
		r = ioflusher_flag_set();
		if (r < 0)
			return r;
	}
	return prev;
}

_public_ int ioflusher_flag_restore(int saved)
{
	int cur;

	if (saved != 0 && saved != 1)
		return -EINVAL;
	/* Like memalloc_noio_restore(): the state before the scope, whatever
	 * happened inside it. */
	cur = ioflusher_flag_get();
	if (cur < 0)
		return cur;
	if (cur == saved)
		return 0;
	return saved ? ioflusher_flag_set() : ioflusher_flag_clear();
}

_public_ int ioflusher_flag_supported(void)
{
	int err;

	/* A seccomp filter can answer anything, success included (ERRNO
	 * with 0 on an old kernel): trust the release instead.  (Kernels
	 * with the option backported and an older release number then read
	 * as unsupported; without a filter they are found.) */
	if (proc_seccomp_mode() == 2)
		return kernel_at_least(5, 6);
	if (prctl(PR_GET_IO_FLUSHER, 0UL, 0UL, 0UL, 0UL) >= 0)
		return 1;
	err = errno;
	if (err == EPERM)
		return 1;
	if (err == EINVAL)
		return 0;
	return -err;
}
