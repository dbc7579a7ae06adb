// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Capabilities: what the library says the process holds must be what
 * /proc/self/status says, and a drop must leave exactly what was kept.
 */
#include <errno.h>
#include <limits.h>
#include <linux/capability.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/prctl.h>

#include "helpers.h"
#include "ioflusher.h"

#define BIT(c) ((uint64_t)1 << (c))

static uint64_t status_mask(const char *field)
{
	uint64_t mask = 0;

	cr_assert(eq(int, status_caps(field, &mask), 0), "%s", field);
	return mask;
}

/* The inheritable set, exactly mask; the rest as it is. */
static int set_inheritable(uint64_t mask)
{
	cap_t caps = cap_get_proc();
	int r = 0;

	if (!caps)
		return -errno;
	if (cap_clear_flag(caps, CAP_INHERITABLE) < 0)
		r = -errno;
	for (int c = 0; r == 0 && c < (int)cap_max_bits(); c++) {
		cap_value_t v = (cap_value_t)c;

		if ((mask & BIT(c)) &&
		    cap_set_flag(caps, CAP_INHERITABLE, 1, &v, CAP_SET) < 0)
			r = -errno;
	}
	if (r == 0 && cap_set_proc(caps) < 0)
		r = -errno;
	cap_free(caps);
	return r;
}

Test(caps, have_agrees_with_proc)
{
	uint64_t eff = status_mask("CapEff");
	int max = (int)cap_max_bits();

	cr_assert(gt(int, max, CAP_IPC_LOCK));
	for (int c = 0; c < max; c++)
		cr_assert(
		    eq(int, ioflusher_caps_have(c), (int)((eff >> c) & 1)),
		    "capability %d, CapEff %016llx", c,
		    (unsigned long long)eff);
}

Test(caps, have_here)
{
	/* The development host: root without CAP_SYS_RESOURCE even in its
	 * bounding set, with CAP_IPC_LOCK.  Elsewhere (the VM, full root),
	 * have_agrees_with_proc covers what the library must say. */
	if (status_mask("CapBnd") & BIT(CAP_SYS_RESOURCE))
		cr_skip("CAP_SYS_RESOURCE can be had here");
	cr_assert(eq(int, ioflusher_caps_have(CAP_SYS_RESOURCE), 0));
	cr_assert(eq(int, ioflusher_caps_have(CAP_IPC_LOCK), 1));
}

Test(caps, have_sees_drop)
{
	if (ioflusher_caps_have(CAP_IPC_LOCK) != 1)
		cr_skip("needs CAP_IPC_LOCK");
	cr_assert(eq(int, drop_capability(CAP_IPC_LOCK), 0));
	cr_assert(eq(int, ioflusher_caps_have(CAP_IPC_LOCK), 0));
	cr_assert(zero(u64, status_mask("CapEff") & BIT(CAP_IPC_LOCK)));
}

Test(caps, have_invalid)
{
	cr_assert(eq(int, ioflusher_caps_have(-1), -EINVAL));
	cr_assert(eq(int, ioflusher_caps_have((int)cap_max_bits()), -EINVAL));
	cr_assert(eq(int, ioflusher_caps_have(64), -EINVAL));
	cr_assert(eq(int, ioflusher_caps_have(INT_MAX), -EINVAL));
}

Test(caps, initial_userns)
{
	cr_assert(eq(int, ioflusher_caps_initial_userns(), 1));
}

static int userns_child(void *arg, int *out)
{
	out[0] = enter_user_namespace();
	if (out[0] < 0)
		return 0;
	out[1] = ioflusher_caps_initial_userns();
	out[2] = ioflusher_caps_have(CAP_SYS_RESOURCE);
	return 0;
}

Test(caps, initial_userns_after_unshare)
{
	int out[3];

	cr_assert(eq(int, run_in_child(userns_child, NULL, out, 3), 0));
	if (out[0] < 0)
		cr_skip("unshare(CLONE_NEWUSER): %s", strerror(-out[0]));
	cr_assert(eq(int, out[1], 0));
	/* Held there, and useless for what capable() checks. */
	cr_assert(eq(int, out[2], 1));
}

Test(caps, drop_keeps_exactly)
{
	const int keep[] = {CAP_IPC_LOCK};

	if (!(status_mask("CapPrm") & BIT(CAP_IPC_LOCK)) ||
	    !(status_mask("CapEff") & BIT(CAP_SETPCAP)))
		cr_skip("needs CAP_IPC_LOCK and CAP_SETPCAP");
	cr_assert(ne(u64, status_mask("CapBnd"), BIT(CAP_IPC_LOCK)));
	cr_assert(eq(int, ioflusher_caps_drop(keep, 1), 0));
	cr_assert(eq(u64, status_mask("CapEff"), BIT(CAP_IPC_LOCK)));
	cr_assert(eq(u64, status_mask("CapPrm"), BIT(CAP_IPC_LOCK)));
	cr_assert(eq(u64, status_mask("CapBnd"), BIT(CAP_IPC_LOCK)));
	cr_assert(zero(u64, status_mask("CapAmb")));
	cr_assert(eq(int, ioflusher_caps_have(CAP_IPC_LOCK), 1));
}

/* Kept and bounded, a capability is put into the inheritable set, which
 * keeps nothing else. */
Test(caps, drop_makes_kept_inheritable)
{
	const int keep[] = { CAP_IPC_LOCK };

	if (!(status_mask("CapPrm") & BIT(CAP_IPC_LOCK)) ||
	    !(status_mask("CapBnd") & BIT(CAP_IPC_LOCK)) ||
	    !(status_mask("CapPrm") & BIT(CAP_CHOWN)))
		cr_skip("needs CAP_IPC_LOCK and CAP_CHOWN, and CAP_IPC_LOCK "
			"bounded");
	/* CAP_CHOWN inheritable, CAP_IPC_LOCK not: the drop must swap them. */
	cr_assert(eq(int, set_inheritable(BIT(CAP_CHOWN)), 0));
	cr_assert(eq(u64, status_mask("CapInh"), BIT(CAP_CHOWN)));
	cr_assert(eq(int, ioflusher_caps_drop(keep, 1), 0));
	cr_assert(eq(u64, status_mask("CapInh"), BIT(CAP_IPC_LOCK)));
	cr_assert(eq(u64, status_mask("CapPrm"), BIT(CAP_IPC_LOCK)));
}

/* An ambient capability is what execve of any program keeps: the drop
 * clears them all, a kept one too, although it stays permitted and
 * inheritable, which is all the kernel asks of an ambient one. */
Test(caps, drop_clears_ambient)
{
	const int keep[] = { CAP_IPC_LOCK };

	if (!(status_mask("CapPrm") & BIT(CAP_IPC_LOCK)) ||
	    !(status_mask("CapBnd") & BIT(CAP_IPC_LOCK)))
		cr_skip("needs CAP_IPC_LOCK, bounded");
	cr_assert(eq(int, set_inheritable(BIT(CAP_IPC_LOCK)), 0));
	cr_assert(zero(int, prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE,
				  CAP_IPC_LOCK, 0, 0)));
	cr_assert(eq(u64, status_mask("CapAmb"), BIT(CAP_IPC_LOCK)));
	cr_assert(eq(int, ioflusher_caps_drop(keep, 1), 0));
	cr_assert(zero(u64, status_mask("CapAmb")));
	cr_assert(eq(u64, status_mask("CapInh"), BIT(CAP_IPC_LOCK)));
	cr_assert(eq(int, ioflusher_caps_have(CAP_IPC_LOCK), 1));
}

Test(caps, drop_everything)
{
	cr_assert(eq(int, ioflusher_caps_drop(NULL, 0), 0));
	cr_assert(zero(u64, status_mask("CapEff")));
	cr_assert(zero(u64, status_mask("CapPrm")));
	cr_assert(zero(u64, status_mask("CapBnd")));
}

/* A kept capability that is permitted but out of the bounding set cannot
 * become inheritable: it is kept all the same, and the rest dropped. */
Test(caps, drop_keeps_one_outside_the_bounding_set)
{
	const int keep[] = {CAP_IPC_LOCK};

	if (!(status_mask("CapPrm") & BIT(CAP_IPC_LOCK)) ||
	    !(status_mask("CapEff") & BIT(CAP_SETPCAP)))
		cr_skip("needs CAP_IPC_LOCK and CAP_SETPCAP");
	/* Inheritable already, it could stay so: not the case tested. */
	if (status_mask("CapInh") & BIT(CAP_IPC_LOCK))
		cr_skip("CAP_IPC_LOCK is inheritable here");
	cr_assert(zero(int, prctl(PR_CAPBSET_DROP, CAP_IPC_LOCK, 0, 0, 0)));
	cr_assert(eq(int, ioflusher_caps_drop(keep, 1), 0));
	cr_assert(eq(u64, status_mask("CapEff"), BIT(CAP_IPC_LOCK)));
	cr_assert(eq(u64, status_mask("CapPrm"), BIT(CAP_IPC_LOCK)));
	cr_assert(zero(u64, status_mask("CapInh")));
	cr_assert(zero(u64, status_mask("CapBnd")));
}

Test(caps, drop_keeps_absent_absent)
{
	const int keep[] = {CAP_SYS_RESOURCE, CAP_IPC_LOCK};
	uint64_t prm = status_mask("CapPrm");

	cr_assert(eq(int, drop_capability(CAP_SYS_RESOURCE), 0));
	cr_assert(eq(int, ioflusher_caps_drop(keep, 2), 0));
	cr_assert(eq(u64, status_mask("CapEff"), prm & BIT(CAP_IPC_LOCK)));
	cr_assert(eq(int, ioflusher_caps_have(CAP_SYS_RESOURCE), 0));
}

Test(caps, drop_without_setpcap_keeps_bounding_set)
{
	const int keep[] = {CAP_IPC_LOCK};
	uint64_t bnd = status_mask("CapBnd");
	/* Kept if it was there: read before the drop, or a drop that lost
	 * it too would compare 0 with 0. */
	uint64_t ipc = status_mask("CapPrm") & BIT(CAP_IPC_LOCK);

	cr_assert(eq(int, drop_capability(CAP_SETPCAP), 0));
	cr_assert(eq(int, ioflusher_caps_drop(keep, 1), 0));
	cr_assert(eq(u64, status_mask("CapEff"), ipc));
	cr_assert(eq(u64, status_mask("CapPrm"), ipc));
	cr_assert(eq(u64, status_mask("CapBnd"), bnd));
}

Test(caps, drop_invalid)
{
	const int negative[] = {-1};
	const int too_big[] = {CAP_IPC_LOCK, (int)cap_max_bits()};
	uint64_t eff = status_mask("CapEff");

	cr_assert(eq(int, ioflusher_caps_drop(NULL, 1), -EINVAL));
	cr_assert(eq(int, ioflusher_caps_drop(negative, 1), -EINVAL));
	cr_assert(eq(int, ioflusher_caps_drop(too_big, 2), -EINVAL));
	/* Refused before anything was dropped. */
	cr_assert(eq(u64, status_mask("CapEff"), eff));
}
