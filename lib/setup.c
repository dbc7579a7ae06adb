// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * One call for a daemon's start-up, and its report.
 *
 * Order matters.  The flag comes first, so that the allocations and faults
 * of the rest of the setup already run under NOIO; then OOM protection;
 * then mlockall, which faults in and locks the whole process; then the
 * reserves, faulted in after mlockall so that they are locked too (the
 * heap's by mlock() when MCL_FUTURE was left out, since the pages the heap
 * grows by are then not locked).  All of
 * it belongs before the first thread starts: threads inherit the flag from
 * their creator, and one started earlier runs without it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>

#include "private.h"

struct report_entry {
	int outcome;
	int error;
	int reason;
	char detail[256];
};

struct ioflusher_report {
	struct report_entry e[IOFLUSHER_PROTECT_COUNT];
	/* mlockall() applied without MCL_FUTURE. */
	bool locked_current_only;
};

static const char *const protection_name[] = {
	[IOFLUSHER_PROTECT_FLAG] = "io-flusher flag",
	[IOFLUSHER_PROTECT_OOM] = "oom protection",
	[IOFLUSHER_PROTECT_MEMLOCK] = "memory lock",
	[IOFLUSHER_PROTECT_PREFAULT] = "prefault",
};

static const char *const outcome_name[] = {
	[IOFLUSHER_OUTCOME_APPLIED] = "applied",
	[IOFLUSHER_OUTCOME_UNAVAILABLE] = "unavailable",
	[IOFLUSHER_OUTCOME_FAILED] = "failed",
	[IOFLUSHER_OUTCOME_SKIPPED] = "skipped",
};

/* What this system cannot provide, as opposed to what went wrong. */
static int outcome_of(int reason)
{
	switch (reason) {
	case IOFLUSHER_REASON_KERNEL:
	case IOFLUSHER_REASON_CAPABILITY:
	case IOFLUSHER_REASON_USER_NAMESPACE:
	case IOFLUSHER_REASON_LIMIT:
		return IOFLUSHER_OUTCOME_UNAVAILABLE;
	default:
		return IOFLUSHER_OUTCOME_FAILED;
	}
}

/* Where CAP_SYS_RESOURCE is missing says what would bring it. */
static void capability_missing(struct report_entry *e)
{
	const char *what;

	if (caps_unbounded(CAP_SYS_RESOURCE))
		what = "which is not in this process's bounding set, so not "
		       "even root can have it: grant it to the service "
		       "(CapabilityBoundingSet=, AmbientCapabilities=; for "
		       "a container, --cap-add SYS_RESOURCE)";
	else if (caps_permitted(CAP_SYS_RESOURCE))
		what = "which this process has permitted but not effective: "
		       "raise it before setup";
	else
		what = "which this process does not have: run it as root, or "
		       "grant it (AmbientCapabilities=CAP_SYS_RESOURCE)";
	snprintf(e->detail, sizeof(e->detail),
		 "PR_SET_IO_FLUSHER needs CAP_SYS_RESOURCE, %s", what);
}

static void flag_failure(struct report_entry *e, int err)
{
	switch (ioflusher_diagnose(IOFLUSHER_PROTECT_FLAG, err)) {
	case IOFLUSHER_REASON_KERNEL:
		snprintf(e->detail, sizeof(e->detail),
			 "prctl(PR_SET_IO_FLUSHER) came with Linux 5.6");
		break;
	case IOFLUSHER_REASON_CAPABILITY:
		capability_missing(e);
		break;
	case IOFLUSHER_REASON_USER_NAMESPACE:
		snprintf(
			e->detail, sizeof(e->detail),
			"the kernel checks CAP_SYS_RESOURCE in the initial user "
			"namespace; what this one grants does not count");
		break;
	case IOFLUSHER_REASON_SANDBOX:
		snprintf(
			e->detail, sizeof(e->detail),
			"CAP_SYS_RESOURCE is %s, yet prctl(PR_SET_IO_FLUSHER) %s "
			"(seccomp mode %d)",
			ioflusher_caps_have(CAP_SYS_RESOURCE) == 1 ? "held" :
								     "not held",
			err == -EIO ? "returned success without setting it" :
				      "was refused",
			proc_seccomp_mode());
		break;
	default:
		break;
	}
}

/* The flag, and that no other thread already runs without it. */
static int apply_flag(struct report_entry *e)
{
	struct ioflusher_audit *a;
	const char *comm = "";
	pid_t tid = 0;
	int r, missing;

	r = ioflusher_flag_set();
	if (r < 0) {
		flag_failure(e, r);
		return r;
	}
	if (proc_thread_count(0) <= 1 || ioflusher_audit_new(0, &a) < 0)
		return 0;
	missing = ioflusher_audit_missing(a);
	for (int i = 0; missing > 0 && i < ioflusher_audit_count(a); i++) {
		int flagged;

		ioflusher_audit_thread(a, (unsigned int)i, &tid, &comm,
				       &flagged);
		if (!flagged)
			break;
	}
	if (missing > 0)
		snprintf(e->detail, sizeof(e->detail),
			 "set on this thread, but %d other thread%s already "
			 "without it (first: %d \"%s\")",
			 missing, missing == 1 ? " runs" : "s run", (int)tid,
			 comm);
	ioflusher_audit_free(a);
	return missing > 0 ? -EBUSY : 0;
}

static int apply_oom(const struct ioflusher_ctx *ctx, struct report_entry *e)
{
	int r, adj;

	r = ioflusher_oom_set(0, ctx->oom_score_adj);
	if (r == -EACCES && ioflusher_oom_get(0, &adj) == 0)
		snprintf(e->detail, sizeof(e->detail),
			 "oom_score_adj stays %d, lowering it to %d needs "
			 "CAP_SYS_RESOURCE",
			 adj, ctx->oom_score_adj);
	else if (r == 0)
		snprintf(e->detail, sizeof(e->detail), "oom_score_adj %d",
			 ctx->oom_score_adj);
	return r;
}

static void mib(char *buf, size_t size, uint64_t bytes)
{
	if (bytes == UINT64_MAX)
		snprintf(buf, size, "unlimited");
	else
		snprintf(buf, size, "%.1f MiB", (double)bytes / (1 << 20));
}

static int apply_memlock(const struct ioflusher_ctx *ctx,
			 struct ioflusher_report *report,
			 struct report_entry *e)
{
	uint64_t soft = 0, hard = 0, locked = 0, size = 0;
	char s[32], h[32], v[32];
	int r;

	r = ioflusher_memlock_all(ctx->memlock_flags);
	if (r >= 0) {
		size_t n;

		ioflusher_memlock_locked(0, &locked);
		mib(v, sizeof(v), locked);
		n = (size_t)snprintf(e->detail, sizeof(e->detail),
				     "mlockall(MCL_CURRENT%s%s), %s locked",
				     r == 0 ? "|MCL_FUTURE" : "",
				     ctx->memlock_flags &
						     IOFLUSHER_MEMLOCK_ONFAULT ?
					     "|MCL_ONFAULT" :
					     "",
				     v);
		report->locked_current_only = r == 1;
		if (r == 0 || n >= sizeof(e->detail))
			return 0;
		/* 1: FUTURE_IF_UNLIMITED left MCL_FUTURE out. */
		if (ioflusher_memlock_limit(&soft, NULL) == 0)
			mib(s, sizeof(s), soft);
		else
			snprintf(s, sizeof(s), "unknown");
		snprintf(
			e->detail + n, sizeof(e->detail) - n,
			"; not MCL_FUTURE: without CAP_IPC_LOCK, RLIMIT_MEMLOCK "
			"(%s) would refuse what is mapped from now on, which is "
			"therefore not locked",
			s);
		return 0;
	}
	ioflusher_memlock_limit(&soft, &hard);
	proc_status_u64(0, "VmSize", 10, &size);
	mib(s, sizeof(s), soft);
	mib(h, sizeof(h), hard);
	mib(v, sizeof(v), size * 1024);
	snprintf(
		e->detail, sizeof(e->detail),
		"RLIMIT_MEMLOCK is %s (hard %s), the process maps %s and has no "
		"CAP_IPC_LOCK: grant CAP_IPC_LOCK or LimitMEMLOCK=infinity",
		s, h, v);
	if (ioflusher_diagnose(IOFLUSHER_PROTECT_MEMLOCK, r) !=
	    IOFLUSHER_REASON_LIMIT)
		e->detail[0] = '\0';
	return r;
}

static int apply_prefault(const struct ioflusher_ctx *ctx,
			  const struct ioflusher_report *report,
			  struct report_entry *e)
{
	bool stack_unlocked;
	int lock_error = 0, r;
	size_t n;

	r = ioflusher_memlock_prefault_stack(ctx->stack_reserve);
	if (r < 0) {
		snprintf(e->detail, sizeof(e->detail),
			 r == -EAGAIN ?
				 "stack reserve of %zu bytes: the locked stack "
				 "cannot grow so far under RLIMIT_MEMLOCK" :
			 r == -E2BIG ?
				 "stack reserve of %zu bytes does not fit this "
				 "stack" :
				 "stack reserve of %zu bytes",
			 ctx->stack_reserve);
		return r;
	}
	/* 1: a thread other than the main one, created after mlockall(),
	 * whose stack could not be locked. */
	stack_unlocked = r == 1;
	r = prefault_heap(ctx->heap_reserve,
			  report->locked_current_only ? &lock_error : NULL);
	if (r < 0) {
		snprintf(e->detail, sizeof(e->detail),
			 "heap reserve of %zu bytes", ctx->heap_reserve);
		return r;
	}
	n = (size_t)snprintf(e->detail, sizeof(e->detail),
			     "stack %zu KiB, heap %zu KiB",
			     ctx->stack_reserve / 1024,
			     ctx->heap_reserve / 1024);
	/* Faulted in, which is what the reserve is for; that it is not
	 * locked is said, not failed. */
	if (stack_unlocked && n < sizeof(e->detail))
		n += (size_t)snprintf(e->detail + n, sizeof(e->detail) - n,
				      "; the stack reserve is not locked "
				      "(RLIMIT_MEMLOCK, without CAP_IPC_LOCK)");
	if (lock_error && n < sizeof(e->detail))
		snprintf(e->detail + n, sizeof(e->detail) - n,
			 "; the heap reserve is not locked: mlock: %s "
			 "(RLIMIT_MEMLOCK, without CAP_IPC_LOCK)",
			 strerror(lock_error));
	return 0;
}

static int apply(const struct ioflusher_ctx *ctx,
		 struct ioflusher_report *report, int p, struct report_entry *e)
{
	switch (p) {
	case IOFLUSHER_PROTECT_FLAG:
		return apply_flag(e);
	case IOFLUSHER_PROTECT_OOM:
		return apply_oom(ctx, e);
	case IOFLUSHER_PROTECT_MEMLOCK:
		return apply_memlock(ctx, report, e);
	default:
		return apply_prefault(ctx, report, e);
	}
}

static void log_entry(const struct ioflusher_ctx *ctx,
		      const struct ioflusher_report *report, int p, int policy)
{
	int prio = LOG_INFO;
	char line[512];

	if (report->e[p].outcome == IOFLUSHER_OUTCOME_FAILED ||
	    report->e[p].outcome == IOFLUSHER_OUTCOME_UNAVAILABLE)
		prio = policy == IOFLUSHER_POLICY_REQUIRED ? LOG_ERR :
							     LOG_WARNING;
	if (!ioflusher__log_enabled(ctx, prio))
		return;
	ioflusher_report_format(report, p, line, sizeof(line));
	ioflusher__log(ctx, prio, __FILE__, __LINE__, __func__, "%s", line);
}

_public_ int ioflusher_setup(struct ioflusher_ctx *ctx,
			     struct ioflusher_report **reportp)
{
	struct ioflusher_report *report;
	int failed = 0;

	/* NULL first, as documented: also when ctx is what is wrong. */
	if (reportp)
		*reportp = NULL;
	if (!ctx || !reportp)
		return -EINVAL;
	report = calloc(1, sizeof(*report));
	if (!report)
		return -ENOMEM;
	for (int p = 0; p < IOFLUSHER_PROTECT_COUNT; p++) {
		struct report_entry *e = &report->e[p];
		int policy = ctx->policy[p], r;

		if (policy == IOFLUSHER_POLICY_OFF || failed) {
			e->outcome = IOFLUSHER_OUTCOME_SKIPPED;
			e->reason = failed ? IOFLUSHER_REASON_NOT_ATTEMPTED :
					     IOFLUSHER_REASON_POLICY;
			continue;
		}
		r = apply(ctx, report, p, e);
		e->error = r;
		if (r == -EBUSY && p == IOFLUSHER_PROTECT_FLAG)
			e->reason = IOFLUSHER_REASON_THREADS;
		else
			e->reason = ioflusher_diagnose(p, r);
		e->outcome = r == 0 ? IOFLUSHER_OUTCOME_APPLIED :
				      outcome_of(e->reason);
		if (r < 0 && policy == IOFLUSHER_POLICY_REQUIRED)
			failed = r;
		log_entry(ctx, report, p, policy);
	}
	*reportp = report;
	return failed;
}

static bool entry_valid(const struct ioflusher_report *report, int protection)
{
	return report && protection >= 0 &&
	       protection < IOFLUSHER_PROTECT_COUNT;
}

_public_ int ioflusher_report_outcome(const struct ioflusher_report *report,
				      int protection)
{
	if (!entry_valid(report, protection))
		return -EINVAL;
	return report->e[protection].outcome;
}

_public_ int ioflusher_report_error(const struct ioflusher_report *report,
				    int protection)
{
	if (!entry_valid(report, protection))
		return -EINVAL;
	return report->e[protection].error;
}

_public_ int ioflusher_report_reason(const struct ioflusher_report *report,
				     int protection)
{
	if (!entry_valid(report, protection))
		return -EINVAL;
	return report->e[protection].reason;
}

_public_ int ioflusher_report_format(const struct ioflusher_report *report,
				     int protection, char *buf, size_t size)
{
	const struct report_entry *e;
	char err[64] = "";
	int n;

	if (!entry_valid(report, protection) || (!buf && size))
		return -EINVAL;
	e = &report->e[protection];
	if (e->error)
		snprintf(err, sizeof(err), " (%s)",
			 strerrorname_np(-e->error) ?
				 strerrorname_np(-e->error) :
				 "error");
	if (e->outcome == IOFLUSHER_OUTCOME_APPLIED)
		n = snprintf(buf, size, "%s: applied%s%s",
			     protection_name[protection],
			     e->detail[0] ? ": " : "", e->detail);
	else if (e->outcome == IOFLUSHER_OUTCOME_SKIPPED)
		n = snprintf(buf, size, "%s: skipped: %s; risk: %s",
			     protection_name[protection],
			     ioflusher_reason_string(e->reason),
			     ioflusher_risk_string(protection));
	else
		n = snprintf(buf, size, "%s: %s: %s%s%s%s; risk: %s",
			     protection_name[protection],
			     outcome_name[e->outcome],
			     ioflusher_reason_string(e->reason), err,
			     e->detail[0] ? "; " : "", e->detail,
			     ioflusher_risk_string(protection));
	return n < 0 ? -EIO : n;
}

_public_ void ioflusher_report_free(struct ioflusher_report *report)
{
	free(report);
}
