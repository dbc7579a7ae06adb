// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The context: logging and the start-up policy.
 *
 * Quiet by default: the library never writes to stderr unless the caller
 * set a log function or a priority, or IOFLUSHER_LOG asks for it (read with
 * secure_getenv, so a set-uid daemon cannot be made to talk).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "private.h"

/* The message names what it is about; the internal function that logs,
 * which no caller knows, is left to log functions that want it. */
static void log_stderr(void *data, int priority, const char *file, int line,
		       const char *fn, const char *format, va_list args)
{
	fputs("libioflusher: ", stderr);
	vfprintf(stderr, format, args);
	fputc('\n', stderr);
}

static int log_priority_parse(const char *s)
{
	static const struct {
		const char *name;
		int priority;
	} names[] = {
		{ "err", LOG_ERR },	    { "error", LOG_ERR },
		{ "warning", LOG_WARNING }, { "warn", LOG_WARNING },
		{ "notice", LOG_NOTICE },   { "info", LOG_INFO },
		{ "debug", LOG_DEBUG },
	};
	char *end;
	long v;

	v = strtol(s, &end, 10);
	if (end != s && *end == '\0' && v >= LOG_EMERG && v <= LOG_DEBUG)
		return (int)v;
	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		if (strcasecmp(s, names[i].name) == 0)
			return names[i].priority;
	return -1;
}

_public_ int ioflusher_ctx_new(struct ioflusher_ctx **ctxp)
{
	struct ioflusher_ctx *ctx;
	const char *env;

	if (!ctxp)
		return -EINVAL;
	ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return -ENOMEM;
	ctx->refcount = 1;
	ctx->log_fn = log_stderr;
	ctx->log_priority = -1; /* quiet */
	env = secure_getenv("IOFLUSHER_LOG");
	if (env)
		ctx->log_priority = log_priority_parse(env);
	ctx->policy[IOFLUSHER_PROTECT_FLAG] = IOFLUSHER_POLICY_REQUIRED;
	ctx->policy[IOFLUSHER_PROTECT_OOM] = IOFLUSHER_POLICY_BEST_EFFORT;
	ctx->policy[IOFLUSHER_PROTECT_MEMLOCK] = IOFLUSHER_POLICY_BEST_EFFORT;
	ctx->policy[IOFLUSHER_PROTECT_PREFAULT] = IOFLUSHER_POLICY_BEST_EFFORT;
	ctx->oom_score_adj = -1000;
	ctx->stack_reserve = 256 * 1024;
	*ctxp = ctx;
	return 0;
}

_public_ struct ioflusher_ctx *ioflusher_ctx_ref(struct ioflusher_ctx *ctx)
{
	if (ctx)
		__atomic_add_fetch(&ctx->refcount, 1, __ATOMIC_RELAXED);
	return ctx;
}

_public_ struct ioflusher_ctx *ioflusher_ctx_unref(struct ioflusher_ctx *ctx)
{
	if (!ctx || __atomic_sub_fetch(&ctx->refcount, 1, __ATOMIC_ACQ_REL) > 0)
		return NULL;
	free(ctx);
	return NULL;
}

_public_ int ioflusher_ctx_set_log_fn(
	struct ioflusher_ctx *ctx,
	void (*log_fn)(void *data, int priority, const char *file, int line,
		       const char *fn, const char *format, va_list args),
	void *data)
{
	if (!ctx)
		return -EINVAL;
	ctx->log_fn = log_fn ? log_fn : log_stderr;
	ctx->log_data = data;
	/* A caller who hands us a function wants to hear errors at least. */
	if (log_fn && ctx->log_priority < LOG_ERR)
		ctx->log_priority = LOG_ERR;
	return 0;
}

_public_ int ioflusher_ctx_get_log_priority(const struct ioflusher_ctx *ctx)
{
	if (!ctx)
		return -EINVAL;
	return ctx->log_priority;
}

_public_ int ioflusher_ctx_set_log_priority(struct ioflusher_ctx *ctx,
					    int priority)
{
	if (!ctx || priority < -1 || priority > LOG_DEBUG)
		return -EINVAL;
	ctx->log_priority = priority;
	return 0;
}

static bool protection_valid(int protection)
{
	return protection >= 0 && protection < IOFLUSHER_PROTECT_COUNT;
}

_public_ int ioflusher_ctx_set_policy(struct ioflusher_ctx *ctx, int protection,
				      int policy)
{
	if (!ctx || !protection_valid(protection) ||
	    policy < IOFLUSHER_POLICY_OFF || policy > IOFLUSHER_POLICY_REQUIRED)
		return -EINVAL;
	ctx->policy[protection] = policy;
	return 0;
}

_public_ int ioflusher_ctx_get_policy(const struct ioflusher_ctx *ctx,
				      int protection)
{
	if (!ctx || !protection_valid(protection))
		return -EINVAL;
	return ctx->policy[protection];
}

_public_ int ioflusher_ctx_set_oom_score_adj(struct ioflusher_ctx *ctx, int adj)
{
	if (!ctx || adj < -1000 || adj > 1000)
		return -EINVAL;
	ctx->oom_score_adj = adj;
	return 0;
}

_public_ int ioflusher_ctx_set_memlock_flags(struct ioflusher_ctx *ctx,
					     unsigned int flags)
{
	if (!ctx || (flags & ~MEMLOCK_FLAGS))
		return -EINVAL;
	ctx->memlock_flags = flags;
	return 0;
}

_public_ int ioflusher_ctx_set_reserve(struct ioflusher_ctx *ctx,
				       size_t stack_bytes, size_t heap_bytes)
{
	if (!ctx)
		return -EINVAL;
	ctx->stack_reserve = stack_bytes;
	ctx->heap_reserve = heap_bytes;
	return 0;
}

bool ioflusher__log_enabled(const struct ioflusher_ctx *ctx, int priority)
{
	return ctx && priority <= ctx->log_priority;
}

void ioflusher__log(const struct ioflusher_ctx *ctx, int priority,
		    const char *file, int line, const char *fn,
		    const char *format, ...)
{
	va_list args;

	va_start(args, format);
	ctx->log_fn(ctx->log_data, priority, file, line, fn, format, args);
	va_end(args);
}
