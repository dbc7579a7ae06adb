// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The IO_FLUSHER flag of the calling thread: every way of failing to set
 * it, made real, and the diagnosis of each.  Setting it for real needs
 * CAP_SYS_RESOURCE: those paths run in the VM tests (tests/vm).  Here the
 * capability is dropped first, so that these tests mean the same as root.
 */
#include <errno.h>
#include <linux/capability.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "helpers.h"
#include "ioflusher.h"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

static void without_sys_resource(void)
{
	cr_assert(eq(int, drop_capability(CAP_SYS_RESOURCE), 0));
	cr_assert(eq(int, ioflusher_caps_have(CAP_SYS_RESOURCE), 0));
}

TestSuite(flag, .init = without_sys_resource);

static void assert_filtered(void)
{
	uint64_t mode = 0;

	cr_assert(eq(int, status_u64(0, "Seccomp", 10, &mode), 0));
	cr_assert(eq(u64, mode, 2), "a seccomp filter is in place");
}

Test(flag, set_eperm)
{
	int r = ioflusher_flag_set();

	cr_assert(eq(int, r, -EPERM));
	cr_assert(eq(int, ioflusher_diagnose(IOFLUSHER_PROTECT_FLAG, r),
		     IOFLUSHER_REASON_CAPABILITY));
	cr_assert(eq(int, kernel_flagged(), 0));
}

/* Clearing a flag that is clear asks nothing of the kernel, so needs no
 * capability: here every prctl on the flag would fail. */
Test(flag, clear_when_clear_makes_no_call)
{
	cr_assert(eq(int, install_prctl_filter(ENOSYS), 0));
	cr_assert(eq(int, prctl(PR_SET_IO_FLUSHER, 0UL, 0UL, 0UL, 0UL), -1));
	cr_assert(eq(int, errno, ENOSYS));
	cr_assert(eq(int, ioflusher_flag_clear(), 0));
	cr_assert(eq(int, kernel_flagged(), 0));
}

Test(flag, get_agrees_with_proc)
{
	int kernel = kernel_flagged();

	cr_assert(eq(int, kernel, 0));
	cr_assert(eq(int, ioflusher_flag_get(), kernel));
}

Test(flag, supported)
{
	/* The kernel knows PR_GET_IO_FLUSHER: it answers EPERM, not EINVAL. */
	cr_assert(eq(int, ioflusher_flag_supported(), 1));
}

Test(flag, einval_from_filter_is_sandbox)
{
	int r;

	cr_assert(eq(int, install_prctl_filter(EINVAL), 0));
	assert_filtered();
	r = ioflusher_flag_set();
	cr_assert(eq(int, r, -EINVAL));
	/* A 6.x kernel knows the option: EINVAL came from the filter. */
	cr_assert(eq(int, ioflusher_diagnose(IOFLUSHER_PROTECT_FLAG, r),
		     IOFLUSHER_REASON_SANDBOX));
	cr_assert(eq(int, ioflusher_flag_supported(), 1));
}

Test(flag, einval_on_old_kernel_is_kernel)
{
	int r;

	cr_assert(eq(int, install_prctl_filter(EINVAL), 0));
	cr_assert(eq(int, pretend_old_kernel(), 0));
	r = ioflusher_flag_set();
	cr_assert(eq(int, r, -EINVAL));
	cr_assert(eq(int, ioflusher_diagnose(IOFLUSHER_PROTECT_FLAG, r),
		     IOFLUSHER_REASON_KERNEL));
	cr_assert(eq(int, ioflusher_flag_supported(), 0));
}

Test(flag, enosys_is_sandbox)
{
	int r;

	cr_assert(eq(int, install_prctl_filter(ENOSYS), 0));
	r = ioflusher_flag_set();
	cr_assert(eq(int, r, -ENOSYS));
	cr_assert(eq(int, ioflusher_diagnose(IOFLUSHER_PROTECT_FLAG, r),
		     IOFLUSHER_REASON_SANDBOX));
	/* With a filter the kernel release is trusted, not the answer. */
	cr_assert(eq(int, ioflusher_flag_supported(), 1));
}

Test(flag, faked_success_is_eio)
{
	int r;

	cr_assert(eq(int, install_prctl_filter(0), 0));
	/* The filter answers 0 without running prctl... */
	cr_assert(eq(long,
		     syscall(SYS_prctl, PR_SET_IO_FLUSHER, 1UL, 0UL, 0UL, 0UL),
		     0L));
	cr_assert(eq(int, kernel_flagged(), 0));
	/* ...and the library does not believe it. */
	r = ioflusher_flag_set();
	cr_assert(eq(int, r, -EIO));
	cr_assert(eq(int, ioflusher_diagnose(IOFLUSHER_PROTECT_FLAG, r),
		     IOFLUSHER_REASON_SANDBOX));
	/* The flag is clear, so clearing it makes no call and succeeds (the
	 * verification of a real clear runs in the VM, where it can be set). */
	cr_assert(eq(int, ioflusher_flag_clear(), 0));
}

static int set_in_user_namespace(void *arg, int *out)
{
	out[0] = enter_user_namespace();
	if (out[0] < 0)
		return 0;
	out[1] = ioflusher_caps_have(CAP_SYS_RESOURCE);
	out[2] = ioflusher_caps_initial_userns();
	out[3] = ioflusher_flag_set();
	out[4] = ioflusher_diagnose(IOFLUSHER_PROTECT_FLAG, out[3]);
	out[5] = kernel_flagged();
	return 0;
}

Test(flag, user_namespace)
{
	int out[6];

	cr_assert(
	    eq(int, run_in_child(set_in_user_namespace, NULL, out, 6), 0));
	if (out[0] < 0)
		cr_skip("unshare(CLONE_NEWUSER): %s", strerror(-out[0]));
	/* Every capability, in a namespace where they do not count. */
	cr_assert(eq(int, out[1], 1), "CAP_SYS_RESOURCE in the new namespace");
	cr_assert(eq(int, out[2], 0));
	cr_assert(eq(int, out[3], -EPERM));
	cr_assert(eq(int, out[4], IOFLUSHER_REASON_USER_NAMESPACE));
	cr_assert(eq(int, out[5], 0));
}

Test(flag, save_propagates_error)
{
	cr_assert(eq(int, ioflusher_flag_save(), -EPERM));
	cr_assert(eq(int, kernel_flagged(), 0));
}

Test(flag, save_propagates_sandbox_error)
{
	cr_assert(eq(int, install_prctl_filter(0), 0));
	cr_assert(eq(int, ioflusher_flag_save(), -EIO));
}

Test(flag, restore_invalid)
{
	cr_assert(eq(int, ioflusher_flag_restore(2), -EINVAL));
	cr_assert(eq(int, ioflusher_flag_restore(-1), -EINVAL));
	cr_assert(eq(int, ioflusher_flag_restore(-EPERM), -EINVAL));
}

Test(flag, restore_clear_makes_no_call)
{
	/* Every prctl on the flag fails now: restoring a state that is
	 * already there must not make one. */
	cr_assert(eq(int, install_prctl_filter(ENOSYS), 0));
	cr_assert(eq(int, ioflusher_flag_set(), -ENOSYS));
	cr_assert(eq(int, ioflusher_flag_restore(0), 0));
}

Test(flag, restore_set_eperm)
{
	cr_assert(eq(int, ioflusher_flag_restore(1), -EPERM));
	cr_assert(eq(int, kernel_flagged(), 0));
}

static int get_without_proc(void *arg, int *out)
{
	out[0] = hide_proc();
	if (out[0] < 0)
		return 0;
	out[1] = ioflusher_flag_get();
	out[2] = ioflusher_diagnose(IOFLUSHER_PROTECT_FLAG, out[1]);
	return 0;
}

Test(flag, get_without_proc)
{
	int out[3];

	cr_assert(eq(int, run_in_child(get_without_proc, NULL, out, 3), 0));
	if (out[0] < 0)
		cr_skip("cannot unmount /proc here: %s", strerror(-out[0]));
	/* No /proc, and PR_GET_IO_FLUSHER refused: the /proc error stays. */
	cr_assert(eq(int, out[1], -ENOENT));
	cr_assert(eq(int, out[2], IOFLUSHER_REASON_PROC));
}
