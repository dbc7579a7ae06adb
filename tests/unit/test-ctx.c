// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The context: reference counting, the policy setters, and logging that
 * stays quiet unless asked, through the caller's function or stderr.
 */
#include <errno.h>
#include <linux/capability.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "helpers.h"
#include "ioflusher.h"

static void fresh_environment(void)
{
	/* The level comes from the environment: start from none. */
	cr_assert(zero(int, unsetenv("IOFLUSHER_LOG")));
	cr_assert(eq(int, drop_capability(CAP_SYS_RESOURCE), 0));
}

TestSuite(ctx, .init = fresh_environment);

static struct ioflusher_ctx *ctx_new(void)
{
	struct ioflusher_ctx *ctx = NULL;

	cr_assert(eq(int, ioflusher_ctx_new(&ctx), 0));
	cr_assert(not(zero(ptr, ctx)));
	return ctx;
}

/* A setup that fails: the flag, required, cannot be had. */
static int failing_setup(struct ioflusher_ctx *ctx)
{
	struct ioflusher_report *report = NULL;
	int r;

	r = ioflusher_setup(ctx, &report);
	cr_assert(eq(int, r, -EPERM));
	ioflusher_report_free(report);
	return r;
}

struct collected {
	int count;
	int priority[8];
	char message[8][512];
};

static void collect(void *data, int priority, const char *file, int line,
		    const char *fn, const char *format, va_list args)
{
	struct collected *c = data;

	if (c->count >= 8)
		return;
	c->priority[c->count] = priority;
	vsnprintf(c->message[c->count], sizeof(c->message[0]), format, args);
	c->count++;
}

Test(ctx, new_ref_unref)
{
	/* Through a pointer without the header's nonnull attribute, which
	 * would warn at compile time and trap under UBSan. */
	int (*volatile ctx_new_unchecked)(struct ioflusher_ctx **) =
	    ioflusher_ctx_new;
	struct ioflusher_ctx *ctx = ctx_new();

	cr_assert(eq(ptr, ioflusher_ctx_ref(ctx), ctx));
	cr_assert(zero(ptr, ioflusher_ctx_unref(ctx)));
	/* One reference left: still usable. */
	cr_assert(eq(int, ioflusher_ctx_set_log_priority(ctx, LOG_INFO), 0));
	cr_assert(eq(int, ioflusher_ctx_get_log_priority(ctx), LOG_INFO));
	cr_assert(zero(ptr, ioflusher_ctx_unref(ctx)));
	cr_assert(zero(ptr, ioflusher_ctx_ref(NULL)));
	cr_assert(zero(ptr, ioflusher_ctx_unref(NULL)));
	cr_assert(eq(int, ctx_new_unchecked(NULL), -EINVAL));
}

Test(ctx, defaults)
{
	struct ioflusher_ctx *ctx = ctx_new();

	cr_assert(eq(int, ioflusher_ctx_get_log_priority(ctx), -1));
	cr_assert(eq(int, ioflusher_ctx_get_policy(ctx, IOFLUSHER_PROTECT_FLAG),
		     IOFLUSHER_POLICY_REQUIRED));
	for (int p = IOFLUSHER_PROTECT_OOM; p < IOFLUSHER_PROTECT_COUNT; p++)
		cr_assert(eq(int, ioflusher_ctx_get_policy(ctx, p),
			     IOFLUSHER_POLICY_BEST_EFFORT),
			  "protection %d", p);
	ioflusher_ctx_unref(ctx);
}

Test(ctx, quiet_by_default)
{
	struct ioflusher_ctx *ctx = ctx_new();
	struct ioflusher_report *report = NULL;
	struct capture cap;
	int best_effort, required;
	char out[4096];

	cr_assert(eq(int, stderr_capture_begin(&cap), 0));
	/* Best effort: every protection is tried and reported... */
	ioflusher_ctx_set_policy(ctx, IOFLUSHER_PROTECT_FLAG,
				 IOFLUSHER_POLICY_BEST_EFFORT);
	best_effort = ioflusher_setup(ctx, &report);
	ioflusher_report_free(report);
	/* ...and required: setup fails. */
	ioflusher_ctx_set_policy(ctx, IOFLUSHER_PROTECT_FLAG,
				 IOFLUSHER_POLICY_REQUIRED);
	required = ioflusher_setup(ctx, &report);
	ioflusher_report_free(report);
	cr_assert(
	    ge(long, (long)stderr_capture_end(&cap, out, sizeof(out)), 0L));
	cr_assert(eq(int, best_effort, 0));
	cr_assert(eq(int, required, -EPERM));
	cr_assert(eq(str, out, ""));
	ioflusher_ctx_unref(ctx);
}

Test(ctx, env_debug_raises_level)
{
	struct ioflusher_ctx *ctx;
	struct capture cap;
	char out[4096];

	cr_assert(zero(int, setenv("IOFLUSHER_LOG", "debug", 1)));
	ctx = ctx_new();
	cr_assert(eq(int, ioflusher_ctx_get_log_priority(ctx), LOG_DEBUG));
	/* Through the default function, to stderr. */
	cr_assert(eq(int, stderr_capture_begin(&cap), 0));
	failing_setup(ctx);
	cr_assert(
	    gt(long, (long)stderr_capture_end(&cap, out, sizeof(out)), 0L));
	cr_assert(not(zero(ptr, strstr(out, "libioflusher: "))), "stderr: %s",
		  out);
	cr_assert(not(zero(ptr, strstr(out, "CAP_SYS_RESOURCE"))), "stderr: %s",
		  out);
	/* No internal function names, which no caller could look up. */
	cr_assert(zero(ptr, strstr(out, "log_entry")), "stderr: %s", out);
	ioflusher_ctx_unref(ctx);
}

Test(ctx, env_levels)
{
	static const struct {
		const char *value;
		int priority;
	} levels[] = {
	    {"err", LOG_ERR},	{"ERROR", LOG_ERR}, {"warning", LOG_WARNING},
	    {"info", LOG_INFO}, {"6", LOG_INFO},    {"0", LOG_EMERG},
	    {"bogus", -1},	{"8", -1},	    {"", -1},
	};

	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
		struct ioflusher_ctx *ctx;

		cr_assert(
		    zero(int, setenv("IOFLUSHER_LOG", levels[i].value, 1)));
		ctx = ctx_new();
		cr_assert(eq(int, ioflusher_ctx_get_log_priority(ctx),
			     levels[i].priority),
			  "IOFLUSHER_LOG=%s", levels[i].value);
		ioflusher_ctx_unref(ctx);
	}
}

Test(ctx, log_fn_receives_errors)
{
	struct ioflusher_ctx *ctx = ctx_new();
	struct collected c = {0};
	struct capture cap;
	char out[4096];

	cr_assert(eq(int, ioflusher_ctx_set_log_fn(ctx, collect, &c), 0));
	/* A caller who hands over a function wants errors at least. */
	cr_assert(eq(int, ioflusher_ctx_get_log_priority(ctx), LOG_ERR));
	cr_assert(eq(int, stderr_capture_begin(&cap), 0));
	failing_setup(ctx);
	cr_assert(
	    ge(long, (long)stderr_capture_end(&cap, out, sizeof(out)), 0L));
	cr_assert(eq(str, out, ""));
	cr_assert(eq(int, c.count, 1));
	cr_assert(eq(int, c.priority[0], LOG_ERR));
	cr_assert(not(zero(ptr, strstr(c.message[0], "io-flusher flag"))), "%s",
		  c.message[0]);
	cr_assert(not(zero(ptr, strstr(c.message[0], "CAP_SYS_RESOURCE"))),
		  "%s", c.message[0]);
	ioflusher_ctx_unref(ctx);
}

static void setup_best_effort(struct ioflusher_ctx *ctx)
{
	struct ioflusher_report *report = NULL;

	cr_assert(eq(int,
		     ioflusher_ctx_set_policy(ctx, IOFLUSHER_PROTECT_FLAG,
					      IOFLUSHER_POLICY_BEST_EFFORT),
		     0));
	cr_assert(eq(int, ioflusher_setup(ctx, &report), 0));
	ioflusher_report_free(report);
}

Test(ctx, log_fn_honours_priority)
{
	struct ioflusher_ctx *ctx;
	struct collected warnings = {0}, all = {0};

	if (ioflusher_caps_have(CAP_IPC_LOCK) != 1)
		cr_skip("needs CAP_IPC_LOCK");
	ctx = ctx_new();
	/* Flag and OOM protection unavailable (warnings, being best effort),
	 * memory lock and prefault applied (info). */
	cr_assert(
	    eq(int, ioflusher_ctx_set_log_fn(ctx, collect, &warnings), 0));
	cr_assert(eq(int, ioflusher_ctx_set_log_priority(ctx, LOG_WARNING), 0));
	setup_best_effort(ctx);
	cr_assert(eq(int, warnings.count, 2));
	for (int i = 0; i < warnings.count; i++)
		cr_assert(eq(int, warnings.priority[i], LOG_WARNING), "%s",
			  warnings.message[i]);
	cr_assert(
	    not(zero(ptr, strstr(warnings.message[0], "io-flusher flag"))));
	cr_assert(
	    not(zero(ptr, strstr(warnings.message[1], "oom protection"))));

	cr_assert(eq(int, ioflusher_ctx_set_log_fn(ctx, collect, &all), 0));
	cr_assert(eq(int, ioflusher_ctx_set_log_priority(ctx, LOG_INFO), 0));
	setup_best_effort(ctx);
	cr_assert(eq(int, all.count, IOFLUSHER_PROTECT_COUNT));
	cr_assert(eq(int, all.priority[IOFLUSHER_PROTECT_MEMLOCK], LOG_INFO));
	cr_assert(not(zero(ptr, strstr(all.message[IOFLUSHER_PROTECT_MEMLOCK],
				       "memory lock"))));
	ioflusher_ctx_unref(ctx);
}

Test(ctx, log_fn_null_means_stderr)
{
	struct ioflusher_ctx *ctx = ctx_new();
	struct collected c = {0};
	struct capture cap;
	char out[4096];

	cr_assert(eq(int, ioflusher_ctx_set_log_fn(ctx, collect, &c), 0));
	cr_assert(eq(int, ioflusher_ctx_set_log_fn(ctx, NULL, NULL), 0));
	cr_assert(eq(int, stderr_capture_begin(&cap), 0));
	failing_setup(ctx);
	cr_assert(
	    gt(long, (long)stderr_capture_end(&cap, out, sizeof(out)), 0L));
	cr_assert(zero(int, c.count));
	cr_assert(not(zero(ptr, strstr(out, "io-flusher flag"))), "stderr: %s",
		  out);
	ioflusher_ctx_unref(ctx);
}

Test(ctx, bad_values)
{
	struct ioflusher_ctx *ctx = ctx_new();

	cr_assert(eq(int, ioflusher_ctx_set_log_priority(ctx, LOG_DEBUG + 1),
		     -EINVAL));
	cr_assert(eq(int, ioflusher_ctx_set_log_priority(ctx, -2), -EINVAL));
	cr_assert(eq(int, ioflusher_ctx_get_log_priority(ctx), -1));
	cr_assert(eq(int, ioflusher_ctx_set_log_priority(ctx, LOG_EMERG), 0));
	cr_assert(eq(int, ioflusher_ctx_get_log_priority(ctx), LOG_EMERG));

	cr_assert(eq(int,
		     ioflusher_ctx_set_policy(ctx, IOFLUSHER_PROTECT_COUNT,
					      IOFLUSHER_POLICY_OFF),
		     -EINVAL));
	cr_assert(eq(int,
		     ioflusher_ctx_set_policy(ctx, -1, IOFLUSHER_POLICY_OFF),
		     -EINVAL));
	cr_assert(eq(int,
		     ioflusher_ctx_set_policy(ctx, IOFLUSHER_PROTECT_OOM,
					      IOFLUSHER_POLICY_REQUIRED + 1),
		     -EINVAL));
	cr_assert(eq(int,
		     ioflusher_ctx_set_policy(ctx, IOFLUSHER_PROTECT_OOM, -1),
		     -EINVAL));
	cr_assert(eq(int, ioflusher_ctx_get_policy(ctx, IOFLUSHER_PROTECT_OOM),
		     IOFLUSHER_POLICY_BEST_EFFORT));
	cr_assert(eq(int,
		     ioflusher_ctx_set_policy(ctx, IOFLUSHER_PROTECT_OOM,
					      IOFLUSHER_POLICY_OFF),
		     0));
	cr_assert(eq(int, ioflusher_ctx_get_policy(ctx, IOFLUSHER_PROTECT_OOM),
		     IOFLUSHER_POLICY_OFF));
	cr_assert(eq(int,
		     ioflusher_ctx_get_policy(ctx, IOFLUSHER_PROTECT_COUNT),
		     -EINVAL));
	cr_assert(eq(int, ioflusher_ctx_get_policy(ctx, -1), -EINVAL));

	cr_assert(
	    eq(int, ioflusher_ctx_set_oom_score_adj(ctx, -1001), -EINVAL));
	cr_assert(eq(int, ioflusher_ctx_set_oom_score_adj(ctx, 1001), -EINVAL));
	cr_assert(eq(int, ioflusher_ctx_set_oom_score_adj(ctx, -1000), 0));
	cr_assert(eq(int, ioflusher_ctx_set_oom_score_adj(ctx, 1000), 0));
	cr_assert(eq(int, ioflusher_ctx_set_memlock_flags(ctx, 4), -EINVAL));
	cr_assert(eq(int, ioflusher_ctx_set_memlock_flags(ctx, ~0u), -EINVAL));
	cr_assert(
	    eq(int,
	       ioflusher_ctx_set_memlock_flags(ctx, IOFLUSHER_MEMLOCK_ONFAULT),
	       0));
	cr_assert(eq(int,
		     ioflusher_ctx_set_memlock_flags(
			     ctx, IOFLUSHER_MEMLOCK_ONFAULT |
					  IOFLUSHER_MEMLOCK_FUTURE_IF_UNLIMITED),
		     0));
	cr_assert(eq(int, ioflusher_ctx_set_reserve(ctx, 0, 0), 0));
	ioflusher_ctx_unref(ctx);
}

static void log_nothing(void *data, int priority, const char *file, int line,
			const char *fn, const char *format, va_list args)
{
}

Test(ctx, null_context)
{
	cr_assert(eq(int, ioflusher_ctx_set_log_fn(NULL, log_nothing, NULL),
		     -EINVAL));
	cr_assert(eq(int, ioflusher_ctx_get_log_priority(NULL), -EINVAL));
	cr_assert(
	    eq(int, ioflusher_ctx_set_log_priority(NULL, LOG_ERR), -EINVAL));
	cr_assert(eq(int,
		     ioflusher_ctx_set_policy(NULL, IOFLUSHER_PROTECT_FLAG,
					      IOFLUSHER_POLICY_OFF),
		     -EINVAL));
	cr_assert(eq(int,
		     ioflusher_ctx_get_policy(NULL, IOFLUSHER_PROTECT_FLAG),
		     -EINVAL));
	cr_assert(eq(int, ioflusher_ctx_set_oom_score_adj(NULL, 0), -EINVAL));
	cr_assert(eq(int, ioflusher_ctx_set_memlock_flags(NULL, 0), -EINVAL));
	cr_assert(eq(int, ioflusher_ctx_set_reserve(NULL, 0, 0), -EINVAL));
}
