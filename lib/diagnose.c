// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Diagnosis: from the error a protection returned and the facts of this
 * process (capabilities, user namespace, seccomp, limits, kernel release)
 * to the reason, so that EPERM from a container and EINVAL from an old
 * kernel are never logged alike.
 */
#include <errno.h>
#include <linux/capability.h>

#include "private.h"

static const char *const reason_text[] = {
	[IOFLUSHER_REASON_NONE] = "no error",
	[IOFLUSHER_REASON_KERNEL] = "the running kernel does not offer it",
	[IOFLUSHER_REASON_CAPABILITY] =
		"a capability is missing in the initial user namespace",
	[IOFLUSHER_REASON_USER_NAMESPACE] =
		"the process runs in a user namespace other than the initial "
		"one, where capabilities do not count for this",
	[IOFLUSHER_REASON_SANDBOX] =
		"refused by a seccomp filter or a security module although "
		"the capability is held",
	[IOFLUSHER_REASON_LIMIT] = "a resource limit is too low",
	[IOFLUSHER_REASON_NO_MEMORY] = "the memory could not be had",
	[IOFLUSHER_REASON_PROC] = "/proc is not mounted or not readable",
	[IOFLUSHER_REASON_THREADS] =
		"other threads already run without it: set up before "
		"starting threads",
	[IOFLUSHER_REASON_POLICY] = "not asked for",
	[IOFLUSHER_REASON_NOT_ATTEMPTED] =
		"not attempted after a required protection failed",
	[IOFLUSHER_REASON_OTHER] = "unexpected error",
};

static const char *const risk_text[] = {
	[IOFLUSHER_PROTECT_FLAG] =
		"memory reclaim entered by this daemon may write back or swap "
		"through the devices it serves and wait on itself: a deadlock "
		"under memory pressure",
	[IOFLUSHER_PROTECT_OOM] =
		"the OOM killer may pick this daemon, and the IO in flight to "
		"the devices it serves fails",
	[IOFLUSHER_PROTECT_MEMLOCK] =
		"pages of the daemon may be swapped out or dropped, and "
		"faulting them back in on the IO path waits for IO",
	[IOFLUSHER_PROTECT_PREFAULT] =
		"the first touch of stack or heap on the IO path faults and "
		"may enter reclaim",
};

_public_ const char *ioflusher_reason_string(int reason)
{
	if (reason < 0 || reason >= (int)ARRAY_SIZE(reason_text))
		return NULL;
	return reason_text[reason];
}

_public_ const char *ioflusher_risk_string(int protection)
{
	if (protection < 0 || protection >= IOFLUSHER_PROTECT_COUNT)
		return NULL;
	return risk_text[protection];
}

/*
 * EPERM and friends for a capability checked with capable().  Not held at
 * all is a missing capability, wherever the process sits; held, but in a
 * child user namespace, is one that does not count; held where it counts
 * and refused all the same is a filter or a security module.
 */
static int diagnose_capability(int cap)
{
	if (ioflusher_caps_have(cap) != 1)
		return IOFLUSHER_REASON_CAPABILITY;
	if (ioflusher_caps_initial_userns() == 0)
		return IOFLUSHER_REASON_USER_NAMESPACE;
	return IOFLUSHER_REASON_SANDBOX;
}

static int diagnose_flag(int err)
{
	switch (err) {
	case -EINVAL:
		/* EINVAL for valid arguments: the kernel does not know the
		 * option, unless a filter answers for a kernel that does. */
		if (proc_seccomp_mode() == 2 && kernel_at_least(5, 6) == 1)
			return IOFLUSHER_REASON_SANDBOX;
		return IOFLUSHER_REASON_KERNEL;
	case -EPERM:
	case -EACCES:
		return diagnose_capability(CAP_SYS_RESOURCE);
	case -ENOSYS: /* prctl() always exists: a filter said so */
	case -EIO: /* accepted but not set: a filter faked success */
		return IOFLUSHER_REASON_SANDBOX;
	case -ENOENT:
	case -ENOTDIR:
		return IOFLUSHER_REASON_PROC;
	default:
		return IOFLUSHER_REASON_OTHER;
	}
}

static int diagnose_oom(int err)
{
	switch (err) {
	case -EACCES:
	case -EPERM:
		/* Lowering below oom_score_adj_min needs CAP_SYS_RESOURCE
		 * (fs/proc/base.c). */
		return diagnose_capability(CAP_SYS_RESOURCE);
	case -EROFS: /* /proc mounted read-only, as container runtimes do */
		return IOFLUSHER_REASON_SANDBOX;
	case -ENOENT:
	case -ENOTDIR:
		return IOFLUSHER_REASON_PROC;
	default:
		return IOFLUSHER_REASON_OTHER;
	}
}

static int diagnose_memlock(int err)
{
	switch (err) {
	case -EPERM:
	case -ENOMEM:
		/* mm/mlock.c: without CAP_IPC_LOCK, RLIMIT_MEMLOCK of 0 gives
		 * EPERM and a limit smaller than the process gives ENOMEM. */
		if (ioflusher_caps_have(CAP_IPC_LOCK) != 1)
			return IOFLUSHER_REASON_LIMIT;
		if (ioflusher_caps_initial_userns() == 0)
			return IOFLUSHER_REASON_USER_NAMESPACE;
		if (err == -EPERM)
			return IOFLUSHER_REASON_SANDBOX;
		return IOFLUSHER_REASON_NO_MEMORY;
	case -EAGAIN:
		return IOFLUSHER_REASON_NO_MEMORY;
	case -EINVAL: /* MCL_ONFAULT before Linux 4.4 */
		return IOFLUSHER_REASON_KERNEL;
	case -ENOSYS:
		return IOFLUSHER_REASON_SANDBOX;
	default:
		return IOFLUSHER_REASON_OTHER;
	}
}

static int diagnose_prefault(int err)
{
	switch (err) {
	case -E2BIG: /* a stack reserve larger than the stack (RLIMIT_STACK) */
	case -EAGAIN: /* the locked main stack's growth past RLIMIT_MEMLOCK */
		return IOFLUSHER_REASON_LIMIT;
	case -ENOMEM: /* malloc() of the heap reserve */
		return IOFLUSHER_REASON_NO_MEMORY;
	default: /* -EINVAL: mallopt() refused, malloc is not glibc's */
		return IOFLUSHER_REASON_OTHER;
	}
}

_public_ int ioflusher_diagnose(int protection, int err)
{
	if (err > 0)
		return -EINVAL;
	if (err == 0)
		return protection >= 0 && protection < IOFLUSHER_PROTECT_COUNT ?
			       IOFLUSHER_REASON_NONE :
			       -EINVAL;
	switch (protection) {
	case IOFLUSHER_PROTECT_FLAG:
		return diagnose_flag(err);
	case IOFLUSHER_PROTECT_OOM:
		return diagnose_oom(err);
	case IOFLUSHER_PROTECT_MEMLOCK:
		return diagnose_memlock(err);
	case IOFLUSHER_PROTECT_PREFAULT:
		return diagnose_prefault(err);
	default:
		return -EINVAL;
	}
}
