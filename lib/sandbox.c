// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * A seccomp filter that keeps the protections once they are set up: no
 * thread of the process (TSYNC) may clear the flag or unlock memory later,
 * whether by mistake in a library or by an attacker who took over the
 * daemon and wants to make it deadlock.  Everything else is allowed: the
 * daemon adds its own sandbox on top (filters stack; the strictest answer
 * wins).
 */
#include <errno.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "private.h"

static void seccomp_releasep(scmp_filter_ctx *f)
{
	if (*f)
		seccomp_release(*f);
}

/*
 * A filter already in place may refuse seccomp(2) itself (systemd's
 * SystemCallFilter= puts it in no group), which libseccomp reports as
 * -EOPNOTSUPP, as if the kernel were too old: ask the kernel once and
 * pass its answer on.  EINVAL is a kernel older than 4.14, which does not
 * know the question; ENOSYS is left to libseccomp.
 */
static int seccomp_callable(void)
{
	uint32_t action = SECCOMP_RET_ALLOW;

	if (syscall(SYS_seccomp, SECCOMP_GET_ACTION_AVAIL, 0, &action) == 0 ||
	    errno == EINVAL || errno == ENOSYS)
		return 0;
	return -errno;
}

_public_ int ioflusher_sandbox_lock(unsigned int flags)
{
	_cleanup_(seccomp_releasep) scmp_filter_ctx f = NULL;
	uint32_t deny;
	int r;

	if (flags & ~(unsigned int)IOFLUSHER_SANDBOX_LOG)
		return -EINVAL;
	deny = flags & IOFLUSHER_SANDBOX_LOG ? SCMP_ACT_LOG :
					       SCMP_ACT_ERRNO(EPERM);
	r = seccomp_callable();
	if (r < 0)
		return r;
	f = seccomp_init(SCMP_ACT_ALLOW);
	if (!f)
		return -ENOMEM;
	/* Without CAP_SYS_ADMIN a filter needs no_new_privs.  Set here, not
	 * by libseccomp, whose failure to set it is -EFAULT; TSYNC gives it
	 * to every thread with the filter. */
	r = seccomp_attr_set(f, SCMP_FLTATR_CTL_NNP, 0);
	if (r < 0)
		return r;
	r = seccomp_attr_set(f, SCMP_FLTATR_CTL_TSYNC, 1);
	if (r < 0)
		return r;
	/* Have seccomp_load() return the kernel's errno, not -ECANCELED. */
	r = seccomp_attr_set(f, SCMP_FLTATR_API_SYSRAWRC, 1);
	if (r < 0)
		return r;
	/* The kernel takes prctl's option as an int: only its low 32 bits
	 * are compared, or an option with high bits set would get through
	 * to the same prctl. */
	r = seccomp_rule_add(f, deny, SCMP_SYS(prctl), 2,
			     SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffu,
				     PR_SET_IO_FLUSHER),
			     SCMP_A1(SCMP_CMP_EQ, 0));
	if (r < 0)
		return r;
	r = seccomp_rule_add(f, deny, SCMP_SYS(munlockall), 0);
	if (r < 0)
		return r;
	r = seccomp_rule_add(f, deny, SCMP_SYS(munlock), 0);
	if (r < 0)
		return r;
	/* mlockall() without MCL_FUTURE ends the locking of what is mapped
	 * from now on (mm/mlock.c clears VM_LOCKED from the default flags). */
	r = seccomp_rule_add(f, deny, SCMP_SYS(mlockall), 1,
			     SCMP_A0(SCMP_CMP_MASKED_EQ, MCL_FUTURE, 0));
	if (r < 0)
		return r;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1UL, 0UL, 0UL, 0UL) < 0)
		return -errno;
	return seccomp_load(f);
}
