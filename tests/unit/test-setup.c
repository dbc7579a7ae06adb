// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Setup and its report, and the diagnosis behind them: what was applied,
 * what could not be and why, in the words a daemon's log will carry.
 *
 * Not reachable here: IOFLUSHER_REASON_THREADS needs the flag set on the
 * calling thread while another runs without it, that is CAP_SYS_RESOURCE;
 * and of the three places the capability can be missing from (bounding,
 * permitted, effective set), only the one this host's CapBnd decides.
 * The root suite of tests/vm/vm-suite.c covers them all ("setup: a thread
 * started before...", "setup: CAP_SYS_RESOURCE ...").
 */
#include <errno.h>
#include <linux/capability.h>
#include <string.h>
#include <sys/syscall.h>

#include "helpers.h"
#include "ioflusher.h"

#define MIB ((size_t)1 << 20)

static void without_sys_resource(void)
{
	cr_assert(eq(int, drop_capability(CAP_SYS_RESOURCE), 0));
}

TestSuite(setup, .init = without_sys_resource);

static struct ioflusher_ctx *ctx_with(int flag_policy)
{
	struct ioflusher_ctx *ctx = NULL;

	cr_assert(eq(int, ioflusher_ctx_new(&ctx), 0));
	cr_assert(eq(int,
		     ioflusher_ctx_set_policy(ctx, IOFLUSHER_PROTECT_FLAG,
					      flag_policy),
		     0));
	return ctx;
}

static void assert_entry(const struct ioflusher_report *report, int p,
			 int outcome, int reason, int error)
{
	char line[1024];

	ioflusher_report_format(report, p, line, sizeof(line));
	cr_assert(eq(int, ioflusher_report_outcome(report, p), outcome), "%s",
		  line);
	cr_assert(eq(int, ioflusher_report_reason(report, p), reason), "%s",
		  line);
	cr_assert(eq(int, ioflusher_report_error(report, p), error), "%s",
		  line);
}

static void assert_line_has(const struct ioflusher_report *report, int p,
			    const char *what)
{
	char line[1024];
	int n;

	n = ioflusher_report_format(report, p, line, sizeof(line));
	cr_assert(gt(int, n, 0));
	cr_assert(lt(int, n, (int)sizeof(line)));
	cr_assert(not(zero(ptr, strstr(line, what))), "\"%s\" in: %s", what,
		  line);
}

static uint64_t vmlck(void)
{
	uint64_t kib = 0;

	cr_assert(eq(int, status_u64(0, "VmLck", 10, &kib), 0));
	return kib;
}

static int oom_adj(void)
{
	int adj = 0;

	cr_assert(eq(int, read_oom_score_adj(0, &adj), 0));
	return adj;
}

Test(setup, default_policy_requires_flag)
{
	struct ioflusher_ctx *ctx = NULL;
	struct ioflusher_report *report = NULL;
	int adj = oom_adj();

	cr_assert(eq(int, ioflusher_ctx_new(&ctx), 0));
	cr_assert(eq(int, ioflusher_setup(ctx, &report), -EPERM));
	cr_assert(not(zero(ptr, report)));
	assert_entry(report, IOFLUSHER_PROTECT_FLAG,
		     IOFLUSHER_OUTCOME_UNAVAILABLE, IOFLUSHER_REASON_CAPABILITY,
		     -EPERM);
	for (int p = IOFLUSHER_PROTECT_OOM; p < IOFLUSHER_PROTECT_COUNT; p++)
		assert_entry(report, p, IOFLUSHER_OUTCOME_SKIPPED,
			     IOFLUSHER_REASON_NOT_ATTEMPTED, 0);
	/* Not attempted indeed. */
	cr_assert(zero(u64, vmlck()));
	cr_assert(eq(int, oom_adj(), adj));
	assert_line_has(report, IOFLUSHER_PROTECT_MEMLOCK, "not attempted");
	ioflusher_report_free(report);
	ioflusher_ctx_unref(ctx);
}

Test(setup, flag_best_effort)
{
	struct ioflusher_report *report = NULL;
	struct ioflusher_ctx *ctx;

	if (ioflusher_caps_have(CAP_IPC_LOCK) != 1)
		cr_skip("needs CAP_IPC_LOCK");
	ctx = ctx_with(IOFLUSHER_POLICY_BEST_EFFORT);
	cr_assert(eq(int, ioflusher_setup(ctx, &report), 0));
	assert_entry(report, IOFLUSHER_PROTECT_FLAG,
		     IOFLUSHER_OUTCOME_UNAVAILABLE, IOFLUSHER_REASON_CAPABILITY,
		     -EPERM);
	assert_entry(report, IOFLUSHER_PROTECT_OOM,
		     IOFLUSHER_OUTCOME_UNAVAILABLE, IOFLUSHER_REASON_CAPABILITY,
		     -EACCES);
	assert_entry(report, IOFLUSHER_PROTECT_MEMLOCK,
		     IOFLUSHER_OUTCOME_APPLIED, IOFLUSHER_REASON_NONE, 0);
	assert_entry(report, IOFLUSHER_PROTECT_PREFAULT,
		     IOFLUSHER_OUTCOME_APPLIED, IOFLUSHER_REASON_NONE, 0);
	ioflusher_report_free(report);
	ioflusher_ctx_unref(ctx);
}

/* What the report calls applied, the kernel counts: memory locked. */
Test(setup, best_effort_locks_memory)
{
	struct ioflusher_report *report = NULL;
	struct ioflusher_ctx *ctx;

	skip_under_asan("mlockall()");
	if (ioflusher_caps_have(CAP_IPC_LOCK) != 1)
		cr_skip("needs CAP_IPC_LOCK");
	cr_assert(zero(u64, vmlck()));
	ctx = ctx_with(IOFLUSHER_POLICY_BEST_EFFORT);
	cr_assert(eq(int, ioflusher_setup(ctx, &report), 0));
	cr_assert(gt(u64, vmlck(), 0));
	ioflusher_report_free(report);
	ioflusher_ctx_unref(ctx);
}

Test(setup, format_explains)
{
	struct ioflusher_ctx *ctx = ctx_with(IOFLUSHER_POLICY_BEST_EFFORT);
	struct ioflusher_report *report = NULL;
	char line[1024];

	cr_assert(eq(int, ioflusher_setup(ctx, &report), 0));
	assert_line_has(report, IOFLUSHER_PROTECT_FLAG,
			"io-flusher flag: unavailable");
	assert_line_has(report, IOFLUSHER_PROTECT_FLAG, "CAP_SYS_RESOURCE");
	assert_line_has(report, IOFLUSHER_PROTECT_FLAG, "(EPERM)");
	assert_line_has(report, IOFLUSHER_PROTECT_FLAG, "risk: ");
	assert_line_has(report, IOFLUSHER_PROTECT_OOM, "CAP_SYS_RESOURCE");
	assert_line_has(report, IOFLUSHER_PROTECT_OOM, "(EACCES)");
	assert_line_has(report, IOFLUSHER_PROTECT_OOM, "risk: ");
	/* What was applied carries no risk. */
	ioflusher_report_format(report, IOFLUSHER_PROTECT_PREFAULT, line,
				sizeof(line));
	cr_assert(not(zero(ptr, strstr(line, "prefault: applied"))), "%s",
		  line);
	cr_assert(zero(ptr, strstr(line, "risk:")), "%s", line);
	ioflusher_report_free(report);
	ioflusher_ctx_unref(ctx);
}

/* What would bring the missing capability depends on where it is
 * missing: the bounding set (not even root has it), or only this
 * process's sets. */
Test(setup, format_says_where_the_capability_is_missing)
{
	struct ioflusher_ctx *ctx = ctx_with(IOFLUSHER_POLICY_BEST_EFFORT);
	struct ioflusher_report *report = NULL;
	uint64_t bnd = 0, prm = 0;

	cr_assert(eq(int, status_caps("CapBnd", &bnd), 0));
	cr_assert(eq(int, status_caps("CapPrm", &prm), 0));
	if (prm & (1ull << CAP_SYS_RESOURCE))
		cr_assert(eq(int, drop_capability(CAP_SYS_RESOURCE), 0));
	cr_assert(eq(int, ioflusher_setup(ctx, &report), 0));
	if (!(bnd & (1ull << CAP_SYS_RESOURCE)))
		assert_line_has(report, IOFLUSHER_PROTECT_FLAG,
				"not in this process's bounding set");
	else
		assert_line_has(report, IOFLUSHER_PROTECT_FLAG,
				"which this process does not have: run it as "
				"root, or grant it");
	ioflusher_report_free(report);
	ioflusher_ctx_unref(ctx);
}

Test(setup, format_truncates_like_snprintf)
{
	struct ioflusher_ctx *ctx = NULL;
	struct ioflusher_report *report = NULL;
	char full[1024], small[10];
	int n;

	cr_assert(eq(int, ioflusher_ctx_new(&ctx), 0));
	cr_assert(eq(int, ioflusher_setup(ctx, &report), -EPERM));
	n = ioflusher_report_format(report, IOFLUSHER_PROTECT_FLAG, NULL, 0);
	cr_assert(gt(int, n, (int)sizeof(small)));
	cr_assert(lt(int, n, (int)sizeof(full)));
	cr_assert(eq(int,
		     ioflusher_report_format(report, IOFLUSHER_PROTECT_FLAG,
					     full, sizeof(full)),
		     n));
	cr_assert(eq(sz, strlen(full), (size_t)n));
	memset(small, 'x', sizeof(small));
	cr_assert(eq(int,
		     ioflusher_report_format(report, IOFLUSHER_PROTECT_FLAG,
					     small, sizeof(small)),
		     n));
	cr_assert(eq(sz, strlen(small), sizeof(small) - 1));
	cr_assert(zero(int, strncmp(small, full, sizeof(small) - 1)));
	cr_assert(eq(int,
		     ioflusher_report_format(report, IOFLUSHER_PROTECT_FLAG,
					     small, 1),
		     n));
	cr_assert(eq(str, small, ""));
	ioflusher_report_free(report);
	ioflusher_ctx_unref(ctx);
}

Test(setup, policy_off_skipped)
{
	struct ioflusher_ctx *ctx = ctx_with(IOFLUSHER_POLICY_OFF);
	struct ioflusher_report *report = NULL;
	int adj = oom_adj();

	for (int p = 0; p < IOFLUSHER_PROTECT_COUNT; p++)
		cr_assert(eq(int,
			     ioflusher_ctx_set_policy(ctx, p,
						      IOFLUSHER_POLICY_OFF),
			     0));
	cr_assert(eq(int, ioflusher_setup(ctx, &report), 0));
	for (int p = 0; p < IOFLUSHER_PROTECT_COUNT; p++) {
		assert_entry(report, p, IOFLUSHER_OUTCOME_SKIPPED,
			     IOFLUSHER_REASON_POLICY, 0);
		assert_line_has(report, p, "skipped: not asked for; risk: ");
	}
	cr_assert(zero(u64, vmlck()));
	cr_assert(eq(int, oom_adj(), adj));
	ioflusher_report_free(report);
	ioflusher_ctx_unref(ctx);
}

Test(setup, oom_raised_is_applied)
{
	struct ioflusher_ctx *ctx = ctx_with(IOFLUSHER_POLICY_BEST_EFFORT);
	struct ioflusher_report *report = NULL;

	cr_assert(eq(int, ioflusher_ctx_set_oom_score_adj(ctx, 500), 0));
	cr_assert(eq(int, ioflusher_setup(ctx, &report), 0));
	assert_entry(report, IOFLUSHER_PROTECT_OOM, IOFLUSHER_OUTCOME_APPLIED,
		     IOFLUSHER_REASON_NONE, 0);
	cr_assert(eq(int, oom_adj(), 500));
	assert_line_has(report, IOFLUSHER_PROTECT_OOM, "oom_score_adj 500");
	ioflusher_report_free(report);
	ioflusher_ctx_unref(ctx);
}

Test(setup, memlock_over_limit_unavailable)
{
	struct ioflusher_report *report = NULL;
	struct ioflusher_ctx *ctx;

	skip_under_asan("mlockall()");
	ctx = ctx_with(IOFLUSHER_POLICY_BEST_EFFORT);
	cr_assert(eq(int, drop_capability(CAP_IPC_LOCK), 0));
	cr_assert(eq(int, set_memlock_limit(64 << 10, 64 << 10), 0));
	cr_assert(eq(int, ioflusher_setup(ctx, &report), 0));
	assert_entry(report, IOFLUSHER_PROTECT_MEMLOCK,
		     IOFLUSHER_OUTCOME_UNAVAILABLE, IOFLUSHER_REASON_LIMIT,
		     -ENOMEM);
	assert_line_has(report, IOFLUSHER_PROTECT_MEMLOCK,
			"RLIMIT_MEMLOCK is 0.1 MiB");
	assert_line_has(report, IOFLUSHER_PROTECT_MEMLOCK, "CAP_IPC_LOCK");
	/* Best effort: prefault still comes. */
	assert_entry(report, IOFLUSHER_PROTECT_PREFAULT,
		     IOFLUSHER_OUTCOME_APPLIED, IOFLUSHER_REASON_NONE, 0);
	ioflusher_report_free(report);
	ioflusher_ctx_unref(ctx);
}

/* mlockall refused by a filter, with CAP_IPC_LOCK held: a sandbox, and
 * no advice about RLIMIT_MEMLOCK, which has nothing to do with it. */
Test(setup, memlock_refused_by_a_filter_is_no_limit)
{
	struct ioflusher_report *report = NULL;
	struct ioflusher_ctx *ctx;
	char line[1024];
	int n;

	skip_under_asan("mlockall()");
	if (ioflusher_caps_have(CAP_IPC_LOCK) != 1)
		cr_skip("CAP_IPC_LOCK is not held here");
	ctx = ctx_with(IOFLUSHER_POLICY_BEST_EFFORT);
	cr_assert(eq(int, install_syscall_filter(SYS_mlockall, EPERM), 0));
	cr_assert(eq(int, ioflusher_setup(ctx, &report), 0));
	cr_assert(eq(int,
		     ioflusher_report_reason(report,
					     IOFLUSHER_PROTECT_MEMLOCK),
		     IOFLUSHER_REASON_SANDBOX));
	cr_assert(eq(int,
		     ioflusher_report_error(report, IOFLUSHER_PROTECT_MEMLOCK),
		     -EPERM));
	n = ioflusher_report_format(report, IOFLUSHER_PROTECT_MEMLOCK, line,
				    sizeof(line));
	cr_assert(gt(int, n, 0));
	cr_assert(zero(ptr, strstr(line, "RLIMIT_MEMLOCK")),
		  "limit advice for a filter's refusal: %s", line);
	ioflusher_report_free(report);
	ioflusher_ctx_unref(ctx);
}

Test(setup, required_memlock_failure_stops)
{
	struct ioflusher_report *report = NULL;
	struct ioflusher_ctx *ctx;

	skip_under_asan("mlockall()");
	ctx = ctx_with(IOFLUSHER_POLICY_BEST_EFFORT);
	cr_assert(eq(int, drop_capability(CAP_IPC_LOCK), 0));
	cr_assert(eq(int, set_memlock_limit(0, 0), 0));
	cr_assert(eq(int,
		     ioflusher_ctx_set_policy(ctx, IOFLUSHER_PROTECT_MEMLOCK,
					      IOFLUSHER_POLICY_REQUIRED),
		     0));
	cr_assert(eq(int, ioflusher_setup(ctx, &report), -EPERM));
	assert_entry(report, IOFLUSHER_PROTECT_MEMLOCK,
		     IOFLUSHER_OUTCOME_UNAVAILABLE, IOFLUSHER_REASON_LIMIT,
		     -EPERM);
	assert_entry(report, IOFLUSHER_PROTECT_PREFAULT,
		     IOFLUSHER_OUTCOME_SKIPPED, IOFLUSHER_REASON_NOT_ATTEMPTED,
		     0);
	ioflusher_report_free(report);
	ioflusher_ctx_unref(ctx);
}

Test(setup, memlock_onfault)
{
	struct ioflusher_report *report = NULL;
	struct ioflusher_ctx *ctx;

	if (ioflusher_caps_have(CAP_IPC_LOCK) != 1)
		cr_skip("needs CAP_IPC_LOCK");
	ctx = ctx_with(IOFLUSHER_POLICY_BEST_EFFORT);
	cr_assert(eq(int,
		     ioflusher_ctx_set_memlock_flags(ctx,
						     IOFLUSHER_MEMLOCK_ONFAULT),
		     0));
	cr_assert(eq(int, ioflusher_setup(ctx, &report), 0));
	assert_entry(report, IOFLUSHER_PROTECT_MEMLOCK,
		     IOFLUSHER_OUTCOME_APPLIED, IOFLUSHER_REASON_NONE, 0);
	assert_line_has(report, IOFLUSHER_PROTECT_MEMLOCK, "MCL_ONFAULT");
	ioflusher_report_free(report);
	ioflusher_ctx_unref(ctx);
}

Test(setup, stack_reserve_too_big)
{
	struct ioflusher_ctx *ctx = ctx_with(IOFLUSHER_POLICY_BEST_EFFORT);
	struct ioflusher_report *report = NULL;

	cr_assert(eq(int, ioflusher_ctx_set_reserve(ctx, 1024 * MIB, 0), 0));
	cr_assert(eq(int, ioflusher_setup(ctx, &report), 0));
	assert_entry(report, IOFLUSHER_PROTECT_PREFAULT,
		     IOFLUSHER_OUTCOME_UNAVAILABLE, IOFLUSHER_REASON_LIMIT,
		     -E2BIG);
	assert_line_has(report, IOFLUSHER_PROTECT_PREFAULT,
			"stack reserve of 1073741824 bytes");
	ioflusher_report_free(report);
	ioflusher_ctx_unref(ctx);
}

Test(setup, faked_flag_failed_sandbox)
{
	struct ioflusher_ctx *ctx = ctx_with(IOFLUSHER_POLICY_REQUIRED);
	struct ioflusher_report *report = NULL;

	cr_assert(eq(int, install_prctl_filter(0), 0));
	cr_assert(eq(int, ioflusher_setup(ctx, &report), -EIO));
	assert_entry(report, IOFLUSHER_PROTECT_FLAG, IOFLUSHER_OUTCOME_FAILED,
		     IOFLUSHER_REASON_SANDBOX, -EIO);
	assert_line_has(report, IOFLUSHER_PROTECT_FLAG,
			"returned success without setting it");
	assert_line_has(report, IOFLUSHER_PROTECT_FLAG, "seccomp mode 2");
	ioflusher_report_free(report);
	ioflusher_ctx_unref(ctx);
}

Test(setup, flag_on_old_kernel)
{
	struct ioflusher_ctx *ctx = ctx_with(IOFLUSHER_POLICY_REQUIRED);
	struct ioflusher_report *report = NULL;

	cr_assert(eq(int, install_prctl_filter(EINVAL), 0));
	cr_assert(eq(int, pretend_old_kernel(), 0));
	cr_assert(eq(int, ioflusher_setup(ctx, &report), -EINVAL));
	assert_entry(report, IOFLUSHER_PROTECT_FLAG,
		     IOFLUSHER_OUTCOME_UNAVAILABLE, IOFLUSHER_REASON_KERNEL,
		     -EINVAL);
	assert_line_has(report, IOFLUSHER_PROTECT_FLAG, "Linux 5.6");
	ioflusher_report_free(report);
	ioflusher_ctx_unref(ctx);
}

static int setup_in_user_namespace(void *arg, int *out)
{
	struct ioflusher_report *report = NULL;
	struct ioflusher_ctx *ctx = NULL;
	char line[1024] = "";

	out[0] = enter_user_namespace();
	if (out[0] < 0)
		return 0;
	if (ioflusher_ctx_new(&ctx) < 0)
		return 1;
	out[1] = ioflusher_setup(ctx, &report);
	out[2] = ioflusher_report_outcome(report, IOFLUSHER_PROTECT_FLAG);
	out[3] = ioflusher_report_reason(report, IOFLUSHER_PROTECT_FLAG);
	ioflusher_report_format(report, IOFLUSHER_PROTECT_FLAG, line,
				sizeof(line));
	out[4] = strstr(line, "initial user namespace") != NULL;
	ioflusher_report_free(report);
	ioflusher_ctx_unref(ctx);
	return 0;
}

Test(setup, flag_in_user_namespace)
{
	int out[5];

	cr_assert(eq(int, run_in_child(setup_in_user_namespace, NULL, out, 5),
		     0));
	if (out[0] < 0)
		cr_skip("unshare(CLONE_NEWUSER): %s", strerror(-out[0]));
	cr_assert(eq(int, out[1], -EPERM));
	cr_assert(eq(int, out[2], IOFLUSHER_OUTCOME_UNAVAILABLE));
	cr_assert(eq(int, out[3], IOFLUSHER_REASON_USER_NAMESPACE));
	cr_assert(eq(int, out[4], 1));
}

Test(setup, null_arguments)
{
	/* Through a pointer without the header's nonnull attribute, which
	 * would warn at compile time and trap under UBSan. */
	int (*volatile setup)(struct ioflusher_ctx *,
			      struct ioflusher_report **) = ioflusher_setup;
	/* A caller that trusts the page leaves report unset: it must be
	 * NULL after any call with reportp, ctx NULL or not. */
	struct ioflusher_report *report = (struct ioflusher_report *)&report;
	struct ioflusher_ctx *ctx = NULL;
	char line[64];

	cr_assert(eq(int, ioflusher_ctx_new(&ctx), 0));
	cr_assert(eq(int, setup(NULL, &report), -EINVAL));
	cr_assert(zero(ptr, report));
	cr_assert(eq(int, setup(ctx, NULL), -EINVAL));
	cr_assert(eq(int, ioflusher_report_outcome(NULL, 0), -EINVAL));
	cr_assert(eq(int, ioflusher_report_error(NULL, 0), -EINVAL));
	cr_assert(eq(int, ioflusher_report_reason(NULL, 0), -EINVAL));
	cr_assert(eq(int, ioflusher_report_format(NULL, 0, line, sizeof(line)),
		     -EINVAL));
	ioflusher_report_free(NULL);

	cr_assert(eq(int, ioflusher_setup(ctx, &report), -EPERM));
	for (int p = -1; p <= IOFLUSHER_PROTECT_COUNT;
	     p += IOFLUSHER_PROTECT_COUNT + 1) {
		cr_assert(
			eq(int, ioflusher_report_outcome(report, p), -EINVAL));
		cr_assert(eq(int, ioflusher_report_error(report, p), -EINVAL));
		cr_assert(eq(int, ioflusher_report_reason(report, p), -EINVAL));
		cr_assert(eq(int,
			     ioflusher_report_format(report, p, line,
						     sizeof(line)),
			     -EINVAL));
	}
	cr_assert(eq(int,
		     ioflusher_report_format(report, 0, NULL, sizeof(line)),
		     -EINVAL));
	ioflusher_report_free(report);
	ioflusher_ctx_unref(ctx);
}

Test(diagnose, invalid)
{
	cr_assert(eq(int, ioflusher_diagnose(-1, -EPERM), -EINVAL));
	cr_assert(eq(int, ioflusher_diagnose(IOFLUSHER_PROTECT_COUNT, -EPERM),
		     -EINVAL));
	cr_assert(eq(int, ioflusher_diagnose(IOFLUSHER_PROTECT_COUNT, 0),
		     -EINVAL));
	cr_assert(eq(int, ioflusher_diagnose(IOFLUSHER_PROTECT_FLAG, EPERM),
		     -EINVAL));
	cr_assert(
		eq(int, ioflusher_diagnose(IOFLUSHER_PROTECT_OOM, 1), -EINVAL));
}

Test(diagnose, no_error)
{
	for (int p = 0; p < IOFLUSHER_PROTECT_COUNT; p++)
		cr_assert(eq(int, ioflusher_diagnose(p, 0),
			     IOFLUSHER_REASON_NONE),
			  "protection %d", p);
}

Test(diagnose, unexpected_error)
{
	for (int p = 0; p < IOFLUSHER_PROTECT_COUNT; p++)
		cr_assert(eq(int, ioflusher_diagnose(p, -EBADF),
			     IOFLUSHER_REASON_OTHER),
			  "protection %d", p);
}

Test(diagnose, every_reason_has_a_string)
{
	for (int r = IOFLUSHER_REASON_NONE; r <= IOFLUSHER_REASON_OTHER; r++) {
		const char *s = ioflusher_reason_string(r);

		cr_assert(not(zero(ptr, (void *)s)), "reason %d", r);
		cr_assert(gt(sz, strlen(s), 0), "reason %d", r);
		for (int o = IOFLUSHER_REASON_NONE; o < r; o++)
			cr_assert(ne(str, (char *)s,
				     (char *)ioflusher_reason_string(o)));
	}
	cr_assert(zero(ptr, (void *)ioflusher_reason_string(-1)));
	cr_assert(zero(ptr, (void *)ioflusher_reason_string(
				    IOFLUSHER_REASON_OTHER + 1)));
}

Test(diagnose, every_protection_has_a_risk)
{
	for (int p = 0; p < IOFLUSHER_PROTECT_COUNT; p++) {
		const char *s = ioflusher_risk_string(p);

		cr_assert(not(zero(ptr, (void *)s)), "protection %d", p);
		cr_assert(gt(sz, strlen(s), 0), "protection %d", p);
	}
	cr_assert(zero(ptr, (void *)ioflusher_risk_string(-1)));
	cr_assert(zero(ptr,
		       (void *)ioflusher_risk_string(IOFLUSHER_PROTECT_COUNT)));
}
