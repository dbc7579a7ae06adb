// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Capabilities, through libcap.
 *
 * The kernel checks CAP_SYS_RESOURCE (the flag, lowering oom_score_adj,
 * raising hard limits) and CAP_IPC_LOCK (mlock beyond RLIMIT_MEMLOCK) with
 * capable(), that is in the initial user namespace: a container's root,
 * with every capability in its own user namespace, holds none of them.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/capability.h>
#include <sys/stat.h>

#include "private.h"

/* PROC_USER_INIT_INO, include/linux/proc_ns.h: fixed since Linux 3.8. */
#define PROC_USER_INIT_INO 0xEFFFFFFDU

static void cap_freep(cap_t *caps)
{
	if (*caps)
		cap_free(*caps);
}

static bool cap_number_valid(int cap)
{
	return cap >= 0 && cap < (int)cap_max_bits();
}

static int caps_flag(int cap, cap_flag_t which)
{
	_cleanup_(cap_freep) cap_t caps = NULL;
	cap_flag_value_t v;

	if (!cap_number_valid(cap))
		return -EINVAL;
	caps = cap_get_proc();
	if (!caps)
		return -errno;
	if (cap_get_flag(caps, (cap_value_t)cap, which, &v) < 0)
		return -errno;
	return v == CAP_SET;
}

_public_ int ioflusher_caps_have(int cap)
{
	return caps_flag(cap, CAP_EFFECTIVE);
}

_public_ int ioflusher_caps_initial_userns(void)
{
	struct stat st;

	if (stat("/proc/self/ns/user", &st) < 0) {
		int err = errno;

		/* /proc is there but not the file: a kernel built without
		 * user namespaces (CONFIG_USER_NS), where every process is
		 * in the initial one. */
		if (err == ENOENT && stat("/proc/self/status", &st) == 0)
			return 1;
		return -err;
	}
	return st.st_ino == PROC_USER_INIT_INO;
}

bool caps_counted(int cap)
{
	return ioflusher_caps_have(cap) == 1 &&
	       ioflusher_caps_initial_userns() == 1;
}

bool caps_permitted(int cap)
{
	_cleanup_(cap_freep) cap_t cur = cap_get_proc();
	cap_flag_value_t v;

	return cur &&
	       cap_get_flag(cur, (cap_value_t)cap, CAP_PERMITTED, &v) == 0 &&
	       v == CAP_SET;
}

bool caps_unbounded(int cap)
{
	return cap_get_bound((cap_value_t)cap) == 0;
}

static int drop_bounding(const bool *keep)
{
	int r, max = (int)cap_max_bits();

	/* Dropping from the bounding set needs CAP_SETPCAP; without it the
	 * bounding set stays, and so may what an execve of a set-uid-root or
	 * file-capability program regains. */
	r = ioflusher_caps_have(CAP_SETPCAP);
	if (r <= 0)
		return r;
	for (int c = 0; c < max; c++) {
		if (keep[c] || CAP_IS_SUPPORTED(c) == 0)
			continue;
		if (cap_drop_bound((cap_value_t)c) < 0 && errno != EINVAL)
			return -errno;
	}
	return 0;
}

_public_ int ioflusher_caps_drop(const int *keep, size_t n)
{
	_cleanup_(cap_freep) cap_t cur = NULL, next = NULL;
	int max = (int)cap_max_bits();
	bool kept[64] = { false };
	int r;

	if ((!keep && n > 0) || max > (int)ARRAY_SIZE(kept))
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (!cap_number_valid(keep[i]))
			return -EINVAL;
		kept[keep[i]] = true;
	}
	cur = cap_get_proc();
	next = cap_init();
	if (!cur || !next)
		return -errno;
	r = drop_bounding(kept);
	if (r < 0)
		return r;
	/* Keep a capability only where the process holds it: asking to keep
	 * what is not there is not an error, it stays absent.  The kernel
	 * refuses a new inheritable capability outside the bounding set: one
	 * permitted but no longer bounded stays out of the inheritable set,
	 * or the whole change would fail. */
	for (int c = 0; c < max; c++) {
		cap_value_t v = (cap_value_t)c;
		cap_flag_value_t p, i;

		if (!kept[c] || cap_get_flag(cur, v, CAP_PERMITTED, &p) < 0 ||
		    p != CAP_SET)
			continue;
		if (cap_get_flag(cur, v, CAP_INHERITABLE, &i) < 0)
			return -errno;
		if (cap_set_flag(next, CAP_PERMITTED, 1, &v, CAP_SET) < 0 ||
		    cap_set_flag(next, CAP_EFFECTIVE, 1, &v, CAP_SET) < 0)
			return -errno;
		if ((i == CAP_SET || cap_get_bound(v) == 1) &&
		    cap_set_flag(next, CAP_INHERITABLE, 1, &v, CAP_SET) < 0)
			return -errno;
	}
	if (CAP_AMBIENT_SUPPORTED() && cap_reset_ambient() < 0)
		return -errno;
	if (cap_set_proc(next) < 0)
		return -errno;
	return 0;
}
