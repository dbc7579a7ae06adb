// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Tests of the mempool.  Built twice: against the library, and with
 * IOFLUSHER_DEBUG (test-mempool-debug), where the debug checks are tested
 * too.  No test asserts a duration but "at least the timeout".
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

/*
 * The NULL checks are what bad_arguments tests: without the header's
 * nonnull attributes here, UBSan does not trap the calls that pass NULL
 * where the header says nonnull, and the library, built without them too,
 * must answer -EINVAL.
 */
#ifndef IOFLUSHER_BUILDING_LIB
#define IOFLUSHER_BUILDING_LIB
#endif
#include "ioflusher.h"

#include "helpers.h"

static void *volatile nil;
#define NIL ((void *)nil)

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static struct ioflusher_mempool *make(size_t min_nr, size_t size, size_t align,
				      unsigned int cache_nr)
{
	struct ioflusher_mempool *pool = NULL;
	int r = ioflusher_mempool_new(NULL, min_nr, size, align, cache_nr, 0,
				      &pool);

	cr_assert_eq(r, 0, "ioflusher_mempool_new: %s", strerror(-r));
	cr_assert_not_null(pool);
	return pool;
}

static struct ioflusher_mempool_stats stats_of(struct ioflusher_mempool *pool)
{
	struct ioflusher_mempool_stats st;

	cr_assert_eq(ioflusher_mempool_stats(pool, &st, sizeof(st)), 0);
	return st;
}

/* Wait (without a time limit) until n allocations have started waiting. */
static void wait_for_waiters(struct ioflusher_mempool *pool, uint64_t n)
{
	while (stats_of(pool).waits < n)
		usleep(1000);
	usleep(10000); /* and are asleep in the futex */
}

/* Log capture. */
static char logbuf[8192];
static pthread_mutex_t log_mutex = PTHREAD_MUTEX_INITIALIZER;

static void log_capture(void *data, int priority, const char *file, int line,
			const char *fn, const char *format, va_list args)
{
	size_t len;

	pthread_mutex_lock(&log_mutex);
	len = strlen(logbuf);
	vsnprintf(logbuf + len, sizeof(logbuf) - len, format, args);
	len = strlen(logbuf);
	if (len + 1 < sizeof(logbuf))
		strcpy(logbuf + len, "\n");
	pthread_mutex_unlock(&log_mutex);
}

static struct ioflusher_ctx *capture_ctx(void)
{
	struct ioflusher_ctx *ctx;

	cr_assert_eq(ioflusher_ctx_new(&ctx), 0);
	cr_assert_eq(ioflusher_ctx_set_log_fn(ctx, log_capture, NULL), 0);
	cr_assert_eq(ioflusher_ctx_set_log_priority(ctx, LOG_DEBUG), 0);
	logbuf[0] = 0;
	return ctx;
}

Test(mempool, new_gives_distinct_aligned_elements)
{
	static const size_t sizes[] = { 8, 64, 100, 4096, 65536, 3 << 20 };
	size_t i, j;

	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct ioflusher_mempool *pool = make(16, sizes[i], 4096, 4);
		void *e[16];

		for (j = 0; j < 16; j++) {
			e[j] = ioflusher_mempool_alloc(
				pool, IOFLUSHER_MEMPOOL_NOWAIT);
			cr_assert_not_null(e[j], "size %zu element %zu",
					   sizes[i], j);
			cr_assert_eq((uintptr_t)e[j] % 4096, 0);
			memset(e[j], (int)j, sizes[i]);
		}
		cr_assert_null(ioflusher_mempool_alloc(
			pool, IOFLUSHER_MEMPOOL_NOWAIT));
		for (j = 0; j < 16; j++) {
			const unsigned char *p = e[j];

			cr_assert_eq(p[0], j);
			cr_assert_eq(p[sizes[i] - 1], j, "elements overlap");
			cr_assert_eq(ioflusher_mempool_free_elem(pool, e[j]),
				     0);
		}
		ioflusher_mempool_free(pool);
	}
}

Test(mempool, default_alignment_holds_any_object)
{
	struct ioflusher_mempool *pool = make(8, 1, 0, 0);
	struct ioflusher_mempool_stats st = stats_of(pool);
	void *e = ioflusher_mempool_alloc(pool, 0);

	cr_assert_eq((uintptr_t)e % _Alignof(max_align_t), 0);
	cr_assert_eq(st.stride, _Alignof(max_align_t));
	cr_assert_eq(st.elem_size, 1);
	cr_assert_eq(ioflusher_mempool_free_elem(pool, e), 0);
	ioflusher_mempool_free(pool);
}

Test(mempool, huge_alignment)
{
	struct ioflusher_mempool *pool = make(3, 4096, 2u << 20, 0);
	void *e[3];
	int i;

	cr_assert_eq(ioflusher_mempool_alloc_bulk(pool, e, 3, 0), 0);
	for (i = 0; i < 3; i++)
		cr_assert_eq((uintptr_t)e[i] % (2u << 20), 0);
	cr_assert_eq(ioflusher_mempool_free_bulk(pool, e, 3), 0);
	ioflusher_mempool_free(pool);
}

Test(mempool, bad_arguments)
{
	struct ioflusher_mempool *pool = NULL;
	struct ioflusher_mempool_stats st;
	int local;
	void *e[4], *elem;

	cr_assert_eq(ioflusher_mempool_new(NULL, 0, 64, 0, 0, 0, &pool),
		     -EINVAL);
	cr_assert_eq(ioflusher_mempool_new(NULL, 4, 0, 0, 0, 0, &pool),
		     -EINVAL);
	cr_assert_eq(ioflusher_mempool_new(NULL, 4, 64, 3, 0, 0, &pool),
		     -EINVAL);
	cr_assert_eq(ioflusher_mempool_new(NULL, 4, 64, 4u << 20, 0, 0, &pool),
		     -EINVAL);
	cr_assert_eq(ioflusher_mempool_new(NULL, 4, 64, 0, 5000, 0, &pool),
		     -EINVAL);
	cr_assert_eq(ioflusher_mempool_new(NULL, 4, 64, 0, 0, 0x80, &pool),
		     -EINVAL);
	cr_assert_eq(ioflusher_mempool_new(NULL, SIZE_MAX / 2, 64, 0, 0, 0,
					   &pool),
		     -EINVAL);
	cr_assert_eq(ioflusher_mempool_new(NULL, 4, 64, 0, 0, 0, NIL), -EINVAL);
	cr_assert_null(pool, "no pool on failure");

	pool = make(4, 64, 0, 2);
	cr_assert_null(ioflusher_mempool_alloc(NIL, 0));
	cr_assert_null(ioflusher_mempool_alloc(pool, 0x80));
	cr_assert_eq(ioflusher_mempool_alloc_timeout(NIL, &elem, 0), -EINVAL);
	cr_assert_eq(ioflusher_mempool_alloc_timeout(pool, NIL, 0), -EINVAL);
	cr_assert_eq(ioflusher_mempool_alloc_timeout(pool, &elem, -2), -EINVAL);
	cr_assert_eq(ioflusher_mempool_alloc_bulk(pool, e, 0, 0), -EINVAL);
	cr_assert_eq(ioflusher_mempool_alloc_bulk(pool, NIL, 1, 0), -EINVAL);
	cr_assert_eq(ioflusher_mempool_alloc_bulk(NIL, e, 1, 0), -EINVAL);
	/* More than the pool holds can never be granted: no endless wait. */
	cr_assert_eq(ioflusher_mempool_alloc_bulk(pool, e, 5,
						  IOFLUSHER_MEMPOOL_FOREVER),
		     -EINVAL);
	cr_assert_eq(ioflusher_mempool_free_elem(NIL, e[0]), -EINVAL);
	cr_assert_eq(ioflusher_mempool_free_elem(pool, NIL), -EINVAL);
	cr_assert_eq(ioflusher_mempool_free_elem(pool, &local), -EINVAL,
		     "a foreign pointer is refused");
	cr_assert_eq(ioflusher_mempool_free_bulk(pool, NIL, 1), -EINVAL);
	cr_assert_eq(ioflusher_mempool_free_bulk(NIL, e, 1), -EINVAL);
	cr_assert_eq(ioflusher_mempool_free_bulk(pool, e, 0), -EINVAL);
	cr_assert_eq(ioflusher_mempool_stats(NIL, &st, sizeof(st)), -EINVAL);
	cr_assert_eq(ioflusher_mempool_stats(pool, NIL, sizeof(st)), -EINVAL);
	cr_assert_eq(ioflusher_mempool_stats(pool, &st, 0), -EINVAL);
	cr_assert_eq(ioflusher_mempool_resize(NIL, 8), -EINVAL);
	cr_assert_eq(ioflusher_mempool_resize(pool, 3), -EINVAL,
		     "a pool does not shrink");
	cr_assert_eq(ioflusher_mempool_flush(NIL), -EINVAL);
	st = stats_of(pool);
	cr_assert_eq(st.in_use, 0, "nothing was taken by the failures");
	cr_assert_eq(st.free, 4);
	ioflusher_mempool_free(pool);
	ioflusher_mempool_free(NULL);
}

Test(mempool, stats_size_is_extensible)
{
	struct ioflusher_mempool *pool = make(4, 64, 0, 0);
	uint64_t small[2] = { 0, 42 };
	struct {
		struct ioflusher_mempool_stats st;
		uint64_t later;
	} big;

	memset(&big, 0xff, sizeof(big));
	cr_assert_eq(ioflusher_mempool_stats(pool, (void *)small, 8), 0);
	cr_assert_eq(small[0], 64, "elem_size comes first");
	cr_assert_eq(small[1], 42, "nothing written past size");
	cr_assert_eq(ioflusher_mempool_stats(pool, &big.st, sizeof(big)), 0);
	cr_assert_eq(big.later, 0, "fields unknown to this version are 0");
	ioflusher_mempool_free(pool);
}

Test(mempool, nowait_returns_at_once_when_empty)
{
	unsigned int caches[] = { 0, 8 };
	size_t i, j;

	for (i = 0; i < 2; i++) {
		struct ioflusher_mempool *pool = make(20, 64, 0, caches[i]);
		void *e[20], *x;

		for (j = 0; j < 20; j++)
			cr_assert_not_null(
				e[j] = ioflusher_mempool_alloc(pool, 0),
				"every element can be had by one thread");
		cr_assert_null(ioflusher_mempool_alloc(
			pool, IOFLUSHER_MEMPOOL_NOWAIT));
		cr_assert_eq(ioflusher_mempool_alloc_timeout(pool, &x, 0),
			     -EAGAIN);
		cr_assert_eq(ioflusher_mempool_alloc_bulk(pool, e, 2, 0),
			     -EAGAIN);
		cr_assert_eq(stats_of(pool).waits, 0);
		cr_assert_eq(stats_of(pool).refusals, 3,
			     "NOWAIT, and timeouts of 0 for one and two");
		cr_assert_eq(ioflusher_mempool_alloc_bulk(pool, e, 21, 0),
			     -EINVAL);
		cr_assert_eq(stats_of(pool).refusals, 3,
			     "a bulk larger than the pool is no refusal");
		cr_assert_eq(stats_of(pool).in_use, 20);
		cr_assert_eq(stats_of(pool).high_water, 20);
		for (j = 0; j < 20; j++)
			cr_assert_eq(ioflusher_mempool_free_elem(pool, e[j]),
				     0);
		ioflusher_mempool_free(pool);
	}
}

Test(mempool, timeout_expires)
{
	struct ioflusher_mempool *pool = make(1, 64, 0, 0);
	struct ioflusher_mempool_stats st;
	void *e = ioflusher_mempool_alloc(pool, 0), *x = NULL;
	uint64_t t0 = now_ns(), elapsed;

	cr_assert_eq(ioflusher_mempool_alloc_timeout(pool, &x, 50000000),
		     -ETIMEDOUT);
	elapsed = now_ns() - t0;
	cr_assert_geq(elapsed, 50000000, "waited %llu ns",
		      (unsigned long long)elapsed);
	cr_assert_null(x);
	st = stats_of(pool);
	cr_assert_eq(st.waits, 1);
	cr_assert_eq(st.timeouts, 1);
	cr_assert_geq(st.wait_ns, 50000000);
	cr_assert_eq(st.in_use, 1);
	/* The timed-out waiter left the queue: the next free is not lost. */
	cr_assert_eq(ioflusher_mempool_free_elem(pool, e), 0);
	cr_assert_eq(ioflusher_mempool_alloc_timeout(pool, &x, 0), 0);
	cr_assert_eq(x, e);
	cr_assert_eq(ioflusher_mempool_free_elem(pool, x), 0);
	ioflusher_mempool_free(pool);
}

struct waiter_arg {
	struct ioflusher_mempool *pool;
	size_t n;
	int64_t timeout;
	void *elems[16];
	int ret;
};

static void *waiter(void *p)
{
	struct waiter_arg *a = p;

	a->ret = ioflusher_mempool_alloc_bulk(a->pool, a->elems, a->n,
					      a->timeout);
	return NULL;
}

Test(mempool, waiter_wakes_on_free, .timeout = 60)
{
	struct ioflusher_mempool *pool = make(2, 4096, 4096, 0);
	struct waiter_arg a = { .pool = pool,
				.n = 1,
				.timeout = IOFLUSHER_MEMPOOL_FOREVER };
	void *e[2];
	pthread_t t;

	cr_assert_eq(ioflusher_mempool_alloc_bulk(pool, e, 2, 0), 0);
	cr_assert_eq(pthread_create(&t, NULL, waiter, &a), 0);
	wait_for_waiters(pool, 1);
	cr_assert_eq(ioflusher_mempool_free_elem(pool, e[1]), 0);
	pthread_join(t, NULL);
	cr_assert_eq(a.ret, 0);
	cr_assert_eq(a.elems[0], e[1], "the freed element was handed over");
	cr_assert_eq(stats_of(pool).waits, 1);
	cr_assert_gt(stats_of(pool).wait_ns, 0, "its wait is counted");
	ioflusher_mempool_free(pool);
}

/*
 * The freeing thread has room in its cache; with a waiter queued its
 * frees must reach the depot anyway, or the waiter would sleep forever.
 * A generous timeout turns that bug into a failure rather than a hang.
 */
Test(mempool, caches_do_not_strand_a_waiter, .timeout = 60)
{
	struct ioflusher_mempool *pool = make(8, 64, 0, 8);
	struct waiter_arg a = { .pool = pool, .n = 1, .timeout = 20000000000 };
	void *e[8];
	pthread_t t;
	int i;

	for (i = 0; i < 8; i++)
		e[i] = ioflusher_mempool_alloc(pool, 0);
	/* Room in this thread's cache. */
	cr_assert_eq(ioflusher_mempool_free_elem(pool, e[0]), 0);
	cr_assert_eq(ioflusher_mempool_free_elem(pool, e[1]), 0);
	cr_assert_eq(stats_of(pool).cached, 2);
	cr_assert_eq(pthread_create(&t, NULL, waiter, &a), 0);
	wait_for_waiters(pool, 1);
	cr_assert_eq(ioflusher_mempool_free_elem(pool, e[2]), 0);
	pthread_join(t, NULL);
	cr_assert_eq(a.ret, 0, "waiter: %s", strerror(-a.ret));
	cr_assert_eq(stats_of(pool).cached, 0,
		     "a free with a waiter gives the cache back too");
	cr_assert_eq(ioflusher_mempool_free_elem(pool, e[3]), 0);
	cr_assert_eq(stats_of(pool).cached, 1,
		     "no one waits any more: a free goes to the cache again");
	for (i = 4; i < 8; i++)
		cr_assert_eq(ioflusher_mempool_free_elem(pool, e[i]), 0);
	cr_assert_eq(ioflusher_mempool_free_elem(pool, a.elems[0]), 0);
	ioflusher_mempool_free(pool);
}

/* A waiter that timed out leaves no one waiting: frees are cached again. */
Test(mempool, caches_come_back_after_a_timed_out_wait)
{
	struct ioflusher_mempool *pool = make(2, 64, 0, 4);
	void *e[2], *x;

	cr_assert_eq(ioflusher_mempool_alloc_bulk(pool, e, 2, 0), 0);
	cr_assert_eq(ioflusher_mempool_alloc_timeout(pool, &x, 1000000),
		     -ETIMEDOUT);
	cr_assert_eq(ioflusher_mempool_free_elem(pool, e[0]), 0);
	cr_assert_eq(stats_of(pool).cached, 1);
	cr_assert_eq(ioflusher_mempool_free_elem(pool, e[1]), 0);
	cr_assert_eq(stats_of(pool).free, 2);
	ioflusher_mempool_free(pool);
}

/* Takes two, caches them, then asks for the whole pool of four. */
static void *cache_two_then_wait_for_four(void *p)
{
	struct waiter_arg *a = p;

	a->ret = ioflusher_mempool_alloc_bulk(a->pool, a->elems, 2, 0);
	if (a->ret == 0)
		a->ret = ioflusher_mempool_free_bulk(a->pool, a->elems, 2);
	if (a->ret == 0)
		a->ret = ioflusher_mempool_alloc_bulk(
			a->pool, a->elems, 4, IOFLUSHER_MEMPOOL_FOREVER);
	return NULL;
}

/* A bulk request that must wait gives its own cache to the depot first:
 * no one else could ever free those elements for it. */
Test(mempool, bulk_waiter_counts_its_own_cache, .timeout = 60)
{
	struct ioflusher_mempool *pool = make(4, 64, 0, 4);
	struct waiter_arg a = { .pool = pool };
	void *e[2];
	pthread_t t;

	cr_assert_eq(ioflusher_mempool_alloc_bulk(pool, e, 2, 0), 0);
	cr_assert_eq(pthread_create(&t, NULL, cache_two_then_wait_for_four, &a),
		     0);
	wait_for_waiters(pool, 1);
	cr_assert_eq(stats_of(pool).cached, 0,
		     "the waiter's cache went to the depot");
	cr_assert_eq(ioflusher_mempool_free_bulk(pool, e, 2), 0);
	pthread_join(t, NULL);
	cr_assert_eq(a.ret, 0, "waiter: %s", strerror(-a.ret));
	cr_assert_eq(stats_of(pool).in_use, 4);
	cr_assert_eq(ioflusher_mempool_free_bulk(pool, a.elems, 4), 0);
	ioflusher_mempool_free(pool);
}

Test(mempool, bulk_is_all_or_nothing)
{
	struct ioflusher_mempool *pool = make(8, 512, 0, 4);
	void *held[5], *more[4], *bad[3];
	int local;

	cr_assert_eq(ioflusher_mempool_alloc_bulk(pool, held, 5, 0), 0);
	cr_assert_eq(ioflusher_mempool_alloc_bulk(pool, more, 4, 0), -EAGAIN);
	cr_assert_eq(ioflusher_mempool_alloc_bulk(pool, more, 4, 20000000),
		     -ETIMEDOUT);
	cr_assert_eq(stats_of(pool).in_use, 5, "no partial set was taken");
	cr_assert_eq(ioflusher_mempool_alloc_bulk(pool, more, 3, 0), 0);
	cr_assert_eq(stats_of(pool).in_use, 8);

	bad[0] = held[0];
	bad[1] = &local;
	bad[2] = held[1];
	cr_assert_eq(ioflusher_mempool_free_bulk(pool, bad, 3), -EINVAL);
	bad[1] = NULL;
	cr_assert_eq(ioflusher_mempool_free_bulk(pool, bad, 3), -EINVAL);
	cr_assert_eq(stats_of(pool).in_use, 8, "nothing freed");
	cr_assert_eq(ioflusher_mempool_free_bulk(pool, held, 5), 0);
	cr_assert_eq(ioflusher_mempool_free_bulk(pool, more, 3), 0);
	cr_assert_eq(stats_of(pool).in_use, 0);
	ioflusher_mempool_free(pool);
}

/* A bulk waiter is served first come first served: single allocations
 * arriving later do not take the elements it waits for. */
Test(mempool, bulk_waiter_is_not_starved, .timeout = 60)
{
	struct ioflusher_mempool *pool = make(4, 64, 0, 0);
	struct waiter_arg a = { .pool = pool,
				.n = 4,
				.timeout = IOFLUSHER_MEMPOOL_FOREVER };
	void *e[4], *x[3];
	pthread_t t;
	int i;

	cr_assert_eq(ioflusher_mempool_alloc_bulk(pool, e, 4, 0), 0);
	cr_assert_eq(pthread_create(&t, NULL, waiter, &a), 0);
	wait_for_waiters(pool, 1);
	for (i = 0; i < 3; i++) {
		cr_assert_eq(ioflusher_mempool_free_elem(pool, e[i]), 0);
		cr_assert_null(
			ioflusher_mempool_alloc(pool, IOFLUSHER_MEMPOOL_NOWAIT),
			"queued behind the bulk waiter");
		cr_assert_eq(ioflusher_mempool_alloc_timeout(pool, x, 0),
			     -EAGAIN);
		cr_assert_eq(ioflusher_mempool_alloc_bulk(pool, x,
							  (size_t)i + 1, 0),
			     -EAGAIN, "all that is free is owed");
	}
	cr_assert_eq(stats_of(pool).refusals, 9,
		     "refused with elements free, owed to the waiter");
	cr_assert_eq(stats_of(pool).in_use, 1);
	cr_assert_eq(ioflusher_mempool_free_elem(pool, e[3]), 0);
	pthread_join(t, NULL);
	cr_assert_eq(a.ret, 0);
	cr_assert_eq(stats_of(pool).waits, 1);
	cr_assert_eq(stats_of(pool).refusals, 9);
	cr_assert_eq(ioflusher_mempool_free_bulk(pool, a.elems, 4), 0);
	ioflusher_mempool_free(pool);
}

/* The head of the queue times out: the waiter behind it, which the
 * elements free already satisfy, is served then, with no other free.
 * The head waits 2 s, for the second waiter to queue behind it; false
 * when it did not in time (a machine stalled for 2 s), all cleaned up. */
static bool behind_a_timed_out_one(void)
{
	struct ioflusher_mempool *pool = make(2, 64, 0, 0);
	struct waiter_arg head = { .pool = pool,
				   .n = 2,
				   .timeout = 2000000000 };
	struct ioflusher_mempool_stats st;
	struct waiter_arg next = { .pool = pool,
				   .n = 1,
				   .timeout = IOFLUSHER_MEMPOOL_FOREVER };
	void *e[2];
	pthread_t t[2];

	cr_assert_eq(ioflusher_mempool_alloc_bulk(pool, e, 2, 0), 0);
	cr_assert_eq(pthread_create(&t[0], NULL, waiter, &head), 0);
	wait_for_waiters(pool, 1);
	cr_assert_eq(ioflusher_mempool_free_elem(pool, e[0]), 0);
	cr_assert_eq(pthread_create(&t[1], NULL, waiter, &next), 0);
	do {
		usleep(1000);
		st = stats_of(pool);
	} while (st.waits < 2 && !st.timeouts);
	pthread_join(t[0], NULL);
	cr_assert_eq(head.ret, -ETIMEDOUT);
	pthread_join(t[1], NULL);
	cr_assert_eq(next.ret, 0);
	cr_assert_eq(next.elems[0], e[0]);
	cr_assert_eq(ioflusher_mempool_free_elem(pool, e[0]), 0);
	cr_assert_eq(ioflusher_mempool_free_elem(pool, e[1]), 0);
	ioflusher_mempool_free(pool);
	/* Queued only after the head was gone: no test of the order. */
	return st.timeouts == 0;
}

Test(mempool, waiter_behind_a_timed_out_one_is_served, .timeout = 60)
{
	int tries = 0;

	while (!behind_a_timed_out_one())
		cr_assert_lt(++tries, 3,
			     "three times the second waiter queued only after "
			     "the head timed out");
}

/* N threads each needing M elements at once from a pool that holds only
 * a few such sets: everyone finishes. */
struct worker_arg {
	struct ioflusher_mempool *pool;
	unsigned int id;
	unsigned int rounds;
	unsigned int m;
	bool bulk_only;
	_Atomic unsigned int *errors;
};

static void *exhaust_worker(void *p)
{
	struct worker_arg *a = p;
	void *e[8];
	unsigned int r, i;

	for (r = 0; r < a->rounds; r++) {
		if (a->bulk_only || r % 2 == 0) {
			if (ioflusher_mempool_alloc_bulk(
				    a->pool, e, a->m,
				    IOFLUSHER_MEMPOOL_FOREVER) != 0)
				atomic_fetch_add(a->errors, 1);
		} else {
			for (i = 0; i < a->m; i++)
				e[i] = ioflusher_mempool_alloc(a->pool, 0);
		}
		for (i = 0; i < a->m; i++)
			*(unsigned int *)e[i] = a->id;
		sched_yield();
		for (i = 0; i < a->m; i++)
			if (*(unsigned int *)e[i] != a->id)
				atomic_fetch_add(a->errors, 1);
		if (r % 3 == 0) {
			if (ioflusher_mempool_free_bulk(a->pool, e, a->m))
				atomic_fetch_add(a->errors, 1);
		} else {
			for (i = 0; i < a->m; i++)
				if (ioflusher_mempool_free_elem(a->pool, e[i]))
					atomic_fetch_add(a->errors, 1);
		}
	}
	return NULL;
}

static struct ioflusher_mempool_stats
exhaust(unsigned int threads, unsigned int m, size_t min_nr,
	unsigned int cache_nr, unsigned int rounds, bool bulk_only)
{
	struct ioflusher_mempool *pool = make(min_nr, 256, 0, cache_nr);
	struct worker_arg a[16];
	pthread_t t[16];
	_Atomic unsigned int errors = 0;
	struct ioflusher_mempool_stats st;
	unsigned int i;

	for (i = 0; i < threads; i++) {
		a[i] = (struct worker_arg){ pool, i + 1,     rounds,
					    m,	  bulk_only, &errors };
		cr_assert_eq(pthread_create(&t[i], NULL, exhaust_worker, &a[i]),
			     0);
	}
	for (i = 0; i < threads; i++)
		pthread_join(t[i], NULL);
	st = stats_of(pool);
	cr_assert_eq(errors, 0);
	cr_assert_eq(st.in_use, 0);
	cr_assert_eq(st.cached, 0, "exited threads gave their caches back");
	cr_assert_eq(st.free, min_nr);
	cr_assert_leq(st.high_water, min_nr);
	ioflusher_mempool_free(pool);
	return st;
}

/* Bulk requests of 4 from a pool of 6: only one set fits at a time. */
Test(mempool, exhaustion_bulk_waiters_all_finish, .timeout = 120)
{
	struct ioflusher_mempool_stats st = exhaust(8, 4, 6, 0, 3000, true);

	cr_assert_gt(st.waits, 0, "the pool was exhausted");
}

Test(mempool, exhaustion_bulk_waiters_with_caches, .timeout = 120)
{
	struct ioflusher_mempool_stats st = exhaust(8, 4, 6, 2, 3000, true);

	cr_assert_gt(st.waits, 0, "the pool was exhausted");
}

/* One element at a time, a thread waits holding up to m - 1: the sizing
 * rule of ioflusher(7) gives (m - 1) per thread plus one, plus what the
 * caches hold. */
Test(mempool, exhaustion_single_waiters_sized_pool, .timeout = 120)
{
	exhaust(8, 4, 8 * 3 + 1 + 8 * 2, 2, 3000, false);
}

/* Request/completion handoff: one thread allocates, others free. */
struct ring {
	_Atomic size_t head, tail;
	void *slot[1024];
};

struct handoff_arg {
	struct ioflusher_mempool *pool;
	struct ring *ring;
	size_t count;
	_Atomic unsigned int *errors;
};

static void *producer(void *p)
{
	struct handoff_arg *a = p;
	size_t i;

	for (i = 0; i < a->count; i++) {
		void *e = ioflusher_mempool_alloc(a->pool, 0);
		size_t h = atomic_load(&a->ring->head);

		*(size_t *)e = i;
		while (h - atomic_load(&a->ring->tail) == 1024)
			sched_yield();
		a->ring->slot[h % 1024] = e;
		atomic_store(&a->ring->head, h + 1);
	}
	return NULL;
}

static void *consumer(void *p)
{
	struct handoff_arg *a = p;
	size_t i;

	for (i = 0; i < a->count; i++) {
		size_t t = atomic_load(&a->ring->tail);
		void *e;

		while (atomic_load(&a->ring->head) == t)
			sched_yield();
		e = a->ring->slot[t % 1024];
		atomic_store(&a->ring->tail, t + 1);
		if (*(size_t *)e != i ||
		    ioflusher_mempool_free_elem(a->pool, e) != 0)
			atomic_fetch_add(a->errors, 1);
	}
	return NULL;
}

Test(mempool, stress_handoff_between_threads, .timeout = 120)
{
	struct ioflusher_mempool *pool = make(256, 64, 64, 32);
	static struct ring rings[2];
	struct handoff_arg a[2];
	pthread_t t[4];
	_Atomic unsigned int errors = 0;
	int i;

	for (i = 0; i < 2; i++) {
		a[i] = (struct handoff_arg){ pool, &rings[i], 300000, &errors };
		pthread_create(&t[2 * i], NULL, producer, &a[i]);
		pthread_create(&t[2 * i + 1], NULL, consumer, &a[i]);
	}
	for (i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	cr_assert_eq(errors, 0);
	cr_assert_eq(stats_of(pool).in_use, 0);
	cr_assert_eq(stats_of(pool).free, 256);
	ioflusher_mempool_free(pool);
}

/*
 * Every way a thread's two magazines and the depot's can fill and empty,
 * for caches of 1 (a single magazine), odd and even sizes: after each
 * burst of allocations, then of frees, the thread caches at most cache_nr
 * elements, and the pool accounts for every one of them.
 */
Test(mempool, a_thread_caches_at_most_cache_nr)
{
	static const unsigned int caches[] = { 1, 2, 3, 7, 8, 64 };
	static const size_t bursts[] = { 1, 2, 3, 5, 8, 13, 31, 64, 65, 100 };
	void *e[128];
	size_t c, b, r, i;

	for (c = 0; c < sizeof(caches) / sizeof(caches[0]); c++) {
		struct ioflusher_mempool *pool = make(200, 64, 0, caches[c]);

		for (r = 0; r < 3; r++) {
			for (b = 0; b < sizeof(bursts) / sizeof(bursts[0]);
			     b++) {
				struct ioflusher_mempool_stats st;

				for (i = 0; i < bursts[b]; i++)
					cr_assert_not_null(
						e[i] = ioflusher_mempool_alloc(
							pool, 0));
				st = stats_of(pool);
				cr_assert_leq(st.cached, caches[c]);
				cr_assert_eq(st.in_use, bursts[b]);
				/* Freed in an order that is not the
				 * reverse of the allocations: 7 is prime
				 * to every burst size. */
				for (i = 0; i < bursts[b]; i++)
					cr_assert_eq(
						ioflusher_mempool_free_elem(
							pool,
							e[(i * 7) % bursts[b]]),
						0);
				st = stats_of(pool);
				cr_assert_leq(st.cached, caches[c],
					      "cache_nr %u: %llu cached",
					      caches[c],
					      (unsigned long long)st.cached);
				cr_assert_eq(st.in_use, 0);
				cr_assert_eq(st.free, 200);
			}
		}
		ioflusher_mempool_free(pool);
	}
}

/*
 * With cache_nr 4 (magazines of 2), the calling thread takes five and
 * gives them back: its two magazines fill, and the fifth free trades the
 * full one for an empty one of the depot.  Three stay cached here.
 */
static void park_a_full_magazine(struct ioflusher_mempool *pool)
{
	void *e[5];
	int i;

	cr_assert_eq(stats_of(pool).cache_nr, 4);
	cr_assert_eq(ioflusher_mempool_alloc_bulk(pool, e, 5, 0), 0);
	for (i = 0; i < 5; i++)
		cr_assert_eq(ioflusher_mempool_free_elem(pool, e[i]), 0);
	cr_assert_eq(stats_of(pool).cached, 3);
}

/* Elements that leave the depot in a full magazine count in high_water. */
Test(mempool, high_water_counts_a_traded_magazine)
{
	struct ioflusher_mempool *pool = make(8, 64, 0, 4);
	void *e[8];
	int i;

	park_a_full_magazine(pool);
	/* The cache and the loose elements; the full magazine is left. */
	cr_assert_eq(ioflusher_mempool_alloc_bulk(pool, e, 6, 0), 0);
	cr_assert_eq(stats_of(pool).high_water, 6);
	for (i = 6; i < 8; i++)
		cr_assert_not_null(e[i] = ioflusher_mempool_alloc(
					   pool, IOFLUSHER_MEMPOOL_NOWAIT));
	cr_assert_eq(stats_of(pool).in_use, 8);
	cr_assert_eq(stats_of(pool).high_water, 8);
	cr_assert_eq(ioflusher_mempool_free_bulk(pool, e, 8), 0);
	ioflusher_mempool_free(pool);
}

/* A full magazine in the depot is owed to the waiter like loose elements:
 * a thread with an empty cache does not take it. */
Test(mempool, waiter_keeps_a_full_magazine_in_the_depot, .timeout = 60)
{
	struct ioflusher_mempool *pool = make(8, 64, 0, 4);
	struct waiter_arg a = { .pool = pool,
				.n = 6,
				.timeout = IOFLUSHER_MEMPOOL_FOREVER };
	void *e[3];
	pthread_t t;

	park_a_full_magazine(pool);
	cr_assert_eq(ioflusher_mempool_alloc_bulk(pool, e, 3, 0), 0);
	cr_assert_eq(stats_of(pool).cached, 0);
	cr_assert_eq(pthread_create(&t, NULL, waiter, &a), 0);
	wait_for_waiters(pool, 1);
	cr_assert_null(ioflusher_mempool_alloc(pool, IOFLUSHER_MEMPOOL_NOWAIT),
		       "five free, all owed to the waiter");
	cr_assert_eq(stats_of(pool).free, 5);
	cr_assert_eq(ioflusher_mempool_free_elem(pool, e[0]), 0);
	pthread_join(t, NULL);
	cr_assert_eq(a.ret, 0);
	cr_assert_eq(stats_of(pool).in_use, 8);
	cr_assert_eq(ioflusher_mempool_free_bulk(pool, a.elems, 6), 0);
	cr_assert_eq(ioflusher_mempool_free_bulk(pool, e + 1, 2), 0);
	ioflusher_mempool_free(pool);
}

struct unique_arg {
	struct ioflusher_mempool *pool;
	_Atomic unsigned char *out; /* per element: 1 while someone has it */
	void *base;
	size_t nr;
	unsigned int seed;
	_Atomic unsigned int *errors;
};

static size_t index_of(struct unique_arg *a, void *e)
{
	return (size_t)((char *)e - (char *)a->base) / 64;
}

/* Take and give back in bursts of varying sizes, singly and in bulk,
 * checking that no element is ever held by two threads at once. */
static void *churn_unique(void *p)
{
	struct unique_arg *a = p;
	unsigned int seed = a->seed;
	void *e[40];
	int round;

	for (round = 0; round < 20000; round++) {
		size_t n = 1 + (size_t)rand_r(&seed) % 40, i;
		bool bulk = rand_r(&seed) % 4 == 0;

		if (bulk) {
			if (ioflusher_mempool_alloc_bulk(
				    a->pool, e, n, IOFLUSHER_MEMPOOL_FOREVER))
				goto fail;
		} else {
			for (i = 0; i < n; i++)
				if (!(e[i] = ioflusher_mempool_alloc(a->pool,
								     0)))
					goto fail;
		}
		for (i = 0; i < n; i++) {
			unsigned char was = 0;

			if (index_of(a, e[i]) >= a->nr ||
			    !atomic_compare_exchange_strong(
				    &a->out[index_of(a, e[i])], &was, 1))
				goto fail;
		}
		for (i = 0; i < n; i++)
			atomic_store(&a->out[index_of(a, e[i])], 0);
		if (rand_r(&seed) % 4 == 0) {
			if (ioflusher_mempool_free_bulk(a->pool, e, n))
				goto fail;
		} else {
			for (i = 0; i < n; i++)
				if (ioflusher_mempool_free_elem(a->pool,
								e[n - 1 - i]))
					goto fail;
		}
	}
	ioflusher_mempool_flush(a->pool);
	return NULL;
fail:
	atomic_fetch_add(a->errors, 1);
	return NULL;
}

/* Four threads trading magazines through a depot that holds few of
 * them; at the end one thread can take every element, each once. */
Test(mempool, no_element_is_out_twice, .timeout = 120)
{
	static const unsigned int caches[] = { 1, 3, 16, 64 };
	size_t c, i;

	for (c = 0; c < sizeof(caches) / sizeof(caches[0]); c++) {
		/* 4 x 40 held at most, plus 4 caches. */
		size_t nr = 160 + 4 * caches[c];
		struct ioflusher_mempool *pool = make(nr, 64, 64, caches[c]);
		_Atomic unsigned char *out = calloc(nr, 1);
		_Atomic unsigned int errors = 0;
		struct unique_arg a[4];
		pthread_t t[4];
		void **all = calloc(nr, sizeof(void *)), *base;

		cr_assert_not_null(out);
		cr_assert_not_null(all);
		/* A fresh pool hands out in address order. */
		base = ioflusher_mempool_alloc(pool, 0);
		cr_assert_eq(ioflusher_mempool_free_elem(pool, base), 0);
		cr_assert_eq(ioflusher_mempool_flush(pool), 0);
		for (i = 0; i < 4; i++) {
			a[i] = (struct unique_arg){
				pool,	out, base, nr, (unsigned int)(i + 1),
				&errors
			};
			pthread_create(&t[i], NULL, churn_unique, &a[i]);
		}
		for (i = 0; i < 4; i++)
			pthread_join(t[i], NULL);
		cr_assert_eq(errors, 0, "cache_nr %u", caches[c]);
		cr_assert_eq(stats_of(pool).in_use, 0);
		cr_assert_eq(stats_of(pool).free, nr);
		for (i = 0; i < nr; i++) {
			all[i] = ioflusher_mempool_alloc(
				pool, IOFLUSHER_MEMPOOL_NOWAIT);
			cr_assert_not_null(all[i], "element %zu of %zu", i, nr);
			cr_assert_lt(index_of(&a[0], all[i]), nr);
			cr_assert_eq(atomic_exchange(
					     &out[index_of(&a[0], all[i])], 1),
				     0, "handed out twice");
		}
		cr_assert_null(ioflusher_mempool_alloc(
			pool, IOFLUSHER_MEMPOOL_NOWAIT));
		cr_assert_eq(ioflusher_mempool_free_bulk(pool, all, nr), 0);
		free(all);
		free(out);
		ioflusher_mempool_free(pool);
	}
}

Test(mempool, resize_grows_and_wakes_waiters, .timeout = 60)
{
	struct ioflusher_mempool *pool = make(2, 4096, 4096, 0);
	struct waiter_arg a = { .pool = pool,
				.n = 3,
				.timeout = IOFLUSHER_MEMPOOL_FOREVER };
	void *e[2], *b[3];
	pthread_t t;
	int i;

	cr_assert_eq(ioflusher_mempool_alloc_bulk(pool, e, 2, 0), 0);
	cr_assert_eq(ioflusher_mempool_alloc_bulk(pool, b, 3, 0), -EINVAL,
		     "more than the pool holds");
	cr_assert_eq(ioflusher_mempool_resize(pool, 5), 0);
	cr_assert_eq(stats_of(pool).min_nr, 5);
	cr_assert_eq(ioflusher_mempool_alloc_bulk(pool, b, 3, 0), 0);
	cr_assert_eq(pthread_create(&t, NULL, waiter, &a), 0);
	wait_for_waiters(pool, 1);
	cr_assert_eq(ioflusher_mempool_resize(pool, 8), 0);
	pthread_join(t, NULL);
	cr_assert_eq(a.ret, 0);
	for (i = 0; i < 3; i++) {
		memset(a.elems[i], 1, 4096);
		cr_assert_eq((uintptr_t)a.elems[i] % 4096, 0);
	}
	cr_assert_eq(ioflusher_mempool_resize(pool, 8), 0, "same size");
	cr_assert_eq(ioflusher_mempool_resize(pool, 7), -EINVAL);
	cr_assert_eq(stats_of(pool).in_use, 8);
	cr_assert_eq(ioflusher_mempool_free_bulk(pool, a.elems, 3), 0);
	cr_assert_eq(ioflusher_mempool_free_bulk(pool, e, 2), 0);
	cr_assert_eq(stats_of(pool).in_use, 3, "the main thread's three");
	/* Those of the grown chunks are freed like those of the first. */
	cr_assert_eq(ioflusher_mempool_free_bulk(pool, b, 3), 0);
	cr_assert_eq(stats_of(pool).in_use, 0);
	cr_assert_eq(stats_of(pool).free, 8);
	ioflusher_mempool_free(pool);
}

/* A pointer inside an element of a grown chunk is refused like one of
 * the first chunk, in every build. */
Test(mempool, interior_pointer_of_a_grown_chunk_is_refused)
{
	struct ioflusher_mempool *pool = make(2, 96, 32, 0);
	char *e[4];
	int i;

	cr_assert_eq(ioflusher_mempool_alloc_bulk(pool, (void **)e, 2, 0), 0);
	cr_assert_eq(ioflusher_mempool_resize(pool, 4), 0);
	cr_assert_eq(ioflusher_mempool_alloc_bulk(pool, (void **)e + 2, 2, 0),
		     0);
	for (i = 2; i < 4; i++) {
		cr_assert_eq(ioflusher_mempool_free_elem(pool, e[i] + 1),
			     -EINVAL);
		cr_assert_eq(ioflusher_mempool_free_elem(pool, e[i] + 48),
			     -EINVAL);
		cr_assert_eq(ioflusher_mempool_free_bulk(
				     pool, (void *[]){ e[i] + 95 }, 1),
			     -EINVAL);
	}
	cr_assert_eq(stats_of(pool).in_use, 4, "nothing was freed");
	cr_assert_eq(ioflusher_mempool_free_bulk(pool, (void **)e, 4), 0);
	cr_assert_eq(stats_of(pool).free, 4);
	cr_assert_eq(ioflusher_mempool_alloc_bulk(pool, (void **)e, 4, 0), 0);
	for (i = 0; i < 4; i++)
		cr_assert_eq((uintptr_t)e[i] % 32, 0, "element starts only");
	cr_assert_eq(ioflusher_mempool_free_bulk(pool, (void **)e, 4), 0);
	ioflusher_mempool_free(pool);
}

/* Returns how many elements the thread had cached, or -1 when a call
 * failed: an assertion in this thread would not fail the test. */
static void *use_and_exit(void *p)
{
	struct ioflusher_mempool *pool = p;
	struct ioflusher_mempool_stats st;
	void *e[4];
	int i;

	for (i = 0; i < 4; i++)
		if (!(e[i] = ioflusher_mempool_alloc(pool, 0)))
			return (void *)-1;
	for (i = 0; i < 4; i++)
		if (ioflusher_mempool_free_elem(pool, e[i]) < 0)
			return (void *)-1;
	if (ioflusher_mempool_stats(pool, &st, sizeof(st)) < 0)
		return (void *)-1;
	return (void *)(uintptr_t)st.cached;
}

Test(mempool, exiting_thread_gives_its_cache_back)
{
	struct ioflusher_mempool *pool = make(32, 64, 0, 8);
	pthread_t t;
	void *cached;

	cr_assert_eq(pthread_create(&t, NULL, use_and_exit, pool), 0);
	pthread_join(t, &cached);
	cr_assert_neq((intptr_t)cached, -1, "a call in the thread failed");
	cr_assert_gt((intptr_t)cached, 0, "the thread cached elements");
	cr_assert_eq(stats_of(pool).cached, 0);
	cr_assert_eq(stats_of(pool).free, 32);
	ioflusher_mempool_free(pool);
}

Test(mempool, flush_empties_the_thread_cache)
{
	struct ioflusher_mempool *pool = make(32, 64, 0, 8);
	void *e = ioflusher_mempool_alloc(pool, 0);

	cr_assert_gt(stats_of(pool).cached, 0);
	cr_assert_eq(ioflusher_mempool_flush(pool), 0);
	cr_assert_eq(stats_of(pool).cached, 0);
	cr_assert_eq(stats_of(pool).in_use, 1);
	cr_assert_eq(ioflusher_mempool_free_elem(pool, e), 0);
	ioflusher_mempool_free(pool);
}

static uint64_t vm_locked_kib(void)
{
	char line[256];
	unsigned long long kib = 0;
	FILE *f = fopen("/proc/self/status", "re");

	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmLck: %llu kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

static long faults(void)
{
	struct rusage ru;

	getrusage(RUSAGE_THREAD, &ru);
	return ru.ru_minflt + ru.ru_majflt;
}

/* The child of a fork has not the pool's memory, but its only thread
 * still has the forking thread's cache: exiting with pthread_exit(), it
 * must not give that cache back (a SIGSEGV, before the atfork handler). */
Test(mempool, a_forked_child_exits_its_thread_without_the_parents_cache)
{
	struct ioflusher_mempool *pool = make(8, 64, 64, 4);
	uint64_t cached;
	int status;
	pid_t pid;

	ioflusher_mempool_free_elem(pool, ioflusher_mempool_alloc(pool, 0));
	cached = stats_of(pool).cached;
	cr_assert_gt(cached, 0, "this thread has a cache");
	fflush(NULL);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0)
		pthread_exit(NULL); /* the last thread: exit status 0 */
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert_eq(status, 0, "the child ended with status %#x", status);
	cr_assert_eq(stats_of(pool).cached, cached,
		     "the parent's cache is whole");
	ioflusher_mempool_free(pool);
}

/* What the pool calls locked, the kernel counts: its bytes in VmLck. */
Test(mempool, memory_is_locked_in_the_kernel)
{
	uint64_t before = vm_locked_kib();
	struct ioflusher_mempool *pool;

	skip_under_asan("mlock()");
	pool = make(256, 4096, 4096, 16);
	cr_assert_eq(stats_of(pool).locked, 1);
	cr_assert_geq((vm_locked_kib() - before) * 1024, 256 * 4096);
	ioflusher_mempool_free(pool);
}

Test(mempool, memory_is_locked_and_never_faults)
{
	struct ioflusher_mempool *pool;
	struct ioflusher_mempool_stats st;
	unsigned char vec[256];
	void *e[64];
	long f0;
	int i, r;

	pool = make(256, 4096, 4096, 16);
	st = stats_of(pool);
	cr_assert_eq(st.locked, 1);
	cr_assert_geq(st.bytes, 256 * 4096);
	e[0] = ioflusher_mempool_alloc(pool, 0);
	cr_assert_eq(mincore(e[0], 4096, vec), 0);
	cr_assert(vec[0] & 1, "resident");
	ioflusher_mempool_free_elem(pool, e[0]);

	f0 = faults();
	for (r = 0; r < 1000; r++) {
		for (i = 0; i < 64; i++) {
			e[i] = ioflusher_mempool_alloc(pool, 0);
			((char *)e[i])[r % 4096] = (char)r;
		}
		for (i = 0; i < 64; i++)
			ioflusher_mempool_free_elem(pool, e[i]);
	}
	cr_assert_eq(faults() - f0, 0, "page faults in steady state");
	ioflusher_mempool_free(pool);
}

static void drop_ipc_lock(uint64_t limit)
{
	cr_assert_eq(drop_capability(CAP_IPC_LOCK), 0);
	cr_assert_eq(set_memlock_limit(limit, limit), 0);
}

Test(mempool, lock_failure_is_reported)
{
	struct ioflusher_ctx *ctx;
	struct ioflusher_mempool *pool = NULL;
	const char *msg;
	size_t bytes;
	int r;

	skip_under_asan("mlock()");
	ctx = capture_ctx();
	drop_ipc_lock(64 * 1024);
	r = ioflusher_mempool_new(ctx, 1024, 4096, 4096, 0, 0, &pool);
	cr_assert(r == -ENOMEM || r == -EPERM, "got %d", r);
	cr_assert_null(pool);
	cr_assert_not_null(strstr(logbuf, "RLIMIT_MEMLOCK is 65536"), "%s",
			   logbuf);
	cr_assert_not_null(strstr(logbuf, "CAP_IPC_LOCK is not held"), "%s",
			   logbuf);
	msg = strstr(logbuf, "cannot lock ");
	cr_assert_not_null(msg, "%s", logbuf);
	cr_assert_eq(sscanf(msg, "cannot lock a mapping of %zu bytes", &bytes),
		     1);
	cr_assert_geq(bytes, 1024 * 4096, "the bytes needed are named");
	cr_assert_not_null(strstr(logbuf, "bytes are locked already"), "%s",
			   logbuf);
	cr_assert_not_null(strstr(logbuf, "grant CAP_IPC_LOCK"), "%s", logbuf);

	/* No page may be locked now: each of the pool's mappings fails. */
	cr_assert_eq(set_memlock_limit(0, 0), 0);
	logbuf[0] = 0;
	r = ioflusher_mempool_new(ctx, 1024, 4096, 4096, 0,
				  IOFLUSHER_MEMPOOL_UNLOCKED_OK, &pool);
	cr_assert_eq(r, 0);
	cr_assert_eq(stats_of(pool).locked, 0);
	cr_assert_not_null(strstr(logbuf, "not locked"), "%s", logbuf);
	msg = strstr(logbuf, "cannot lock ");
	cr_assert_not_null(msg, "%s", logbuf);
	cr_assert_null(strstr(msg + 1, "cannot lock "),
		       "said once for the pool, not per mapping: %s", logbuf);
	/* With all its bytes, elements and all, not only the first mapping
	 * refused (its header), so that the limit can be sized from it. */
	cr_assert_eq(sscanf(msg, "cannot lock %zu bytes of the pool", &bytes),
		     1, "%s", logbuf);
	cr_assert_geq(bytes, 1024 * 4096 + 1024 * sizeof(void *), "%s",
		      logbuf);
	cr_assert_eq(bytes, stats_of(pool).bytes, "%s", logbuf);
	ioflusher_mempool_free(pool);
	ioflusher_ctx_unref(ctx);
}

/*
 * In the order ioflusher(7) teaches, mlockall(MCL_FUTURE) comes first: the
 * kernel then locks a pool's mapping as it makes it, and refuses the
 * mapping itself (EAGAIN from mmap) when it would exceed RLIMIT_MEMLOCK.
 * That is the limit's error, logged with the limit, and no flag helps.
 */
Test(mempool, lock_failure_under_mcl_future_is_reported)
{
	struct ioflusher_ctx *ctx;
	struct ioflusher_mempool *pool = NULL;
	int r, r_ok, lockall;

	skip_under_asan("mlockall()");
	/* Locking the whole test process needs it, or a large limit. */
	if (ioflusher_caps_have(CAP_IPC_LOCK) != 1)
		cr_skip("needs CAP_IPC_LOCK");
	ctx = capture_ctx();
	lockall = mlockall(MCL_CURRENT | MCL_FUTURE);
	cr_assert_eq(lockall, 0, "mlockall: %s", strerror(errno));
	drop_ipc_lock(64 * 1024);
	r = ioflusher_mempool_new(ctx, 1024, 4096, 4096, 0, 0, &pool);
	r_ok = ioflusher_mempool_new(ctx, 1024, 4096, 4096, 0,
				     IOFLUSHER_MEMPOOL_UNLOCKED_OK, &pool);
	/* What the asserts below may allocate is not locked any more. */
	munlockall();
	cr_assert_eq(r, -ENOMEM, "got %d", r);
	cr_assert_eq(r_ok, -ENOMEM, "with UNLOCKED_OK: got %d", r_ok);
	cr_assert_null(pool);
	cr_assert_eq(ioflusher_diagnose(IOFLUSHER_PROTECT_MEMLOCK, r),
		     IOFLUSHER_REASON_LIMIT);
	cr_assert_not_null(strstr(logbuf, "RLIMIT_MEMLOCK is 65536"), "%s",
			   logbuf);
	cr_assert_not_null(strstr(logbuf, "CAP_IPC_LOCK is not held"), "%s",
			   logbuf);
	cr_assert_not_null(strstr(logbuf, "MCL_FUTURE"), "%s", logbuf);
	ioflusher_ctx_unref(ctx);
}

/*
 * Without the debug checks a double free is not seen when it happens; it
 * must be refused when the pool would hold more than it has, and never
 * write past the depot.  With them, it is refused at once.
 */
/*
 * A pointer inside an element, or just outside the pool, is refused in
 * every build, and the pool loses nothing: strides that are powers of
 * two and strides that are not, whose check on the fast path is a
 * multiplication rather than a mask.
 */
Test(mempool, interior_and_outside_pointers_are_refused)
{
	static const size_t shapes[][2] = {
		{ 64, 0 },	    { 96, 32 }, { 4160, 64 },
		{ 3 * 4096, 4096 }, { 8, 8 },
	};
	struct ioflusher_ctx *ctx = capture_ctx();

	for (size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++) {
		size_t size = shapes[k][0], nr = 8, i;
		struct ioflusher_mempool *pool;
		char *e[8], *lo = NULL;

		cr_assert_eq(ioflusher_mempool_new(ctx, nr, size, shapes[k][1],
						   2, 0, &pool),
			     0);
		for (i = 0; i < nr; i++) {
			e[i] = ioflusher_mempool_alloc(pool, 0);
			if (!lo || e[i] < lo)
				lo = e[i];
		}
		for (i = 0; i < nr; i++) {
			const ptrdiff_t bad[] = { 1, (ptrdiff_t)size / 2,
						  (ptrdiff_t)size - 1 };

			for (size_t b = 0; b < 3; b++)
				cr_assert_eq(ioflusher_mempool_free_elem(
						     pool, e[i] + bad[b]),
					     -EINVAL, "size %zu, +%td", size,
					     bad[b]);
		}
		cr_assert_not_null(strstr(logbuf, "not the start"), "%s",
				   logbuf);
		cr_assert_eq(ioflusher_mempool_free_elem(pool, lo - size),
			     -EINVAL);
		cr_assert_eq(ioflusher_mempool_free_elem(pool, lo + nr * size),
			     -EINVAL);
		cr_assert_eq(stats_of(pool).in_use, nr);
		for (i = 0; i < nr; i++)
			cr_assert_eq(ioflusher_mempool_free_elem(pool, e[i]),
				     0);
		cr_assert_eq(stats_of(pool).free, nr);
		/* What comes out again are the elements' starts. */
		for (i = 0; i < nr; i++) {
			char *p = ioflusher_mempool_alloc(pool, 0);

			cr_assert_eq((size_t)(p - lo) % size, 0, "size %zu",
				     size);
		}
		ioflusher_mempool_free(pool);
	}
	ioflusher_ctx_unref(ctx);
}

/* A filter that refuses madvise(): the pool works, but it is no longer
 * kept from children, and that is said. */
Test(mempool, unexcluded_from_fork_is_said)
{
	struct ioflusher_ctx *ctx;
	struct ioflusher_mempool *pool;
	void *e;

	skip_under_asan("madvise()");
	ctx = capture_ctx();
	cr_assert_eq(install_syscall_filter(SYS_madvise, EPERM), 0);
	cr_assert_eq(ioflusher_mempool_new(ctx, 4, 4096, 4096, 2, 0, &pool), 0);
	cr_assert_not_null(strstr(logbuf, "MADV_DONTFORK"), "%s", logbuf);
	e = ioflusher_mempool_alloc(pool, 0);
	cr_assert_not_null(e);
	cr_assert_eq(ioflusher_mempool_free_elem(pool, e), 0);
	ioflusher_mempool_free(pool);
	ioflusher_ctx_unref(ctx);
}

Test(mempool, double_free_never_overflows_the_depot)
{
	struct ioflusher_ctx *ctx = capture_ctx();
	struct ioflusher_mempool *pool;
	void *x;

	cr_assert_eq(ioflusher_mempool_new(ctx, 16, 64, 0, 8, 0, &pool), 0);
	x = ioflusher_mempool_alloc(pool, 0);
	cr_assert_eq(ioflusher_mempool_free_elem(pool, x), 0);
#ifdef IOFLUSHER_DEBUG
	cr_assert_eq(ioflusher_mempool_free_elem(pool, x), -EINVAL);
	cr_assert_eq(ioflusher_mempool_flush(pool), 0);
#else
	/* The cache has room: the second free is not seen yet. */
	cr_assert_eq(ioflusher_mempool_free_elem(pool, x), 0);
	cr_assert_eq(ioflusher_mempool_flush(pool), -EINVAL);
	cr_assert_not_null(strstr(logbuf, "double free"), "%s", logbuf);
	cr_assert_leq(stats_of(pool).free, 17);
#endif
	ioflusher_mempool_free(pool);
	ioflusher_ctx_unref(ctx);
}

#ifndef IOFLUSHER_DEBUG
static void *alloc_waiting(void *p)
{
	return ioflusher_mempool_alloc(p, 0);
}

/*
 * A free that gives its element back, and then finds, draining its cache
 * for a waiter, that the cache holds elements freed twice: the element is
 * back (and the waiter served with it), so the free succeeded, as the
 * page's "on failure no element was given back" requires.
 */
Test(mempool, free_succeeds_when_a_drain_finds_a_double_free, .timeout = 60)
{
	struct ioflusher_ctx *ctx = capture_ctx();
	struct ioflusher_mempool *pool;
	void *e[4], *got = NULL;
	pthread_t t;

	cr_assert_eq(ioflusher_mempool_new(ctx, 4, 64, 0, 8, 0, &pool), 0);
	cr_assert_eq(ioflusher_mempool_alloc_bulk(pool, e, 4, 0), 0);
	/* Not seen yet: four in the cache, two of them twice. */
	for (int i = 0; i < 4; i++)
		cr_assert_eq(ioflusher_mempool_free_elem(pool, e[i / 2]), 0);
	cr_assert_eq(pthread_create(&t, NULL, alloc_waiting, pool), 0);
	while (stats_of(pool).waits == 0)
		usleep(1000);
	cr_assert_eq(ioflusher_mempool_free_elem(pool, e[2]), 0);
	pthread_join(t, &got);
	cr_assert_eq(got, e[2], "the waiter got the element freed");
	cr_assert_not_null(strstr(logbuf, "double free"), "%s", logbuf);
	ioflusher_mempool_free(pool);
	ioflusher_ctx_unref(ctx);
}

/* A log function that uses the pool it hears about, as one that reports
 * the pool's statistics with the error would. */
static struct ioflusher_mempool *logged_pool;
static _Atomic unsigned int stats_in_log;

static void log_with_stats(void *data, int priority, const char *file, int line,
			   const char *fn, const char *format, va_list args)
{
	struct ioflusher_mempool_stats st;

	log_capture(data, priority, file, line, fn, format, args);
	if (logged_pool &&
	    ioflusher_mempool_stats(logged_pool, &st, sizeof(st)) == 0)
		atomic_fetch_add(&stats_in_log, 1);
}

/* The error of a double free is logged once the pool's lock is released:
 * held, the log function above would wait for it forever. */
Test(mempool, a_double_free_is_logged_outside_the_lock, .timeout = 30)
{
	struct ioflusher_ctx *ctx = capture_ctx();
	struct ioflusher_mempool *pool;
	void *x;

	cr_assert_eq(ioflusher_ctx_set_log_fn(ctx, log_with_stats, NULL), 0);
	cr_assert_eq(ioflusher_mempool_new(ctx, 16, 64, 0, 8, 0, &pool), 0);
	logged_pool = pool;
	x = ioflusher_mempool_alloc(pool, 0);
	cr_assert_eq(ioflusher_mempool_free_elem(pool, x), 0);
	cr_assert_eq(ioflusher_mempool_free_elem(pool, x), 0);
	cr_assert_eq(ioflusher_mempool_flush(pool), -EINVAL);
	cr_assert_not_null(strstr(logbuf, "double free"), "%s", logbuf);
	cr_assert_gt(atomic_load(&stats_in_log), 0);
	logged_pool = NULL;
	ioflusher_mempool_free(pool);
	ioflusher_ctx_unref(ctx);
}

struct exit_arg {
	struct ioflusher_mempool *pool;
	void **e;
	int n;
	const int *order;
};

static void *free_in_order_and_exit(void *p)
{
	struct exit_arg *a = p;

	for (int i = 0; i < a->n; i++)
		ioflusher_mempool_free_elem(a->pool, a->e[a->order[i]]);
	return NULL;
}

/*
 * A thread that freed an element twice and exits: its cache is too big
 * for the depot, but only the duplicate may be lost, not the elements
 * freed once beside it (a waiter on the whole pool would then wait
 * forever).  Duplicates within the cache, and of an element the depot
 * has already.
 */
Test(mempool, an_exiting_thread_loses_only_what_it_freed_twice, .timeout = 30)
{
	/* The order the thread frees in; the element the main thread has
	 * given back to the depot before, or -1. */
	static const struct {
		int order[5], in_depot;
	} rounds[] = {
		{ { 0, 0, 1, 2, 3 }, -1 }, /* e0 twice into the cache */
		{ { 0, 0, 1, 2, 3 }, 1 }, /* and e1 in the depot too */
		{ { 1, 1, 0, 2, 3 }, 1 }, /* e1 twice, and in the depot */
		{ { 0, 0, 1, 2, 3 }, 0 }, /* e0 twice, and in the depot */
	};
	struct ioflusher_ctx *ctx = capture_ctx();
	struct ioflusher_mempool *pool;
	void *e[4], *got[4];
	struct exit_arg a;
	pthread_t t;

	cr_assert_eq(ioflusher_mempool_new(ctx, 4, 64, 0, 8, 0, &pool), 0);
	for (size_t r = 0; r < sizeof(rounds) / sizeof(rounds[0]); r++) {
		int d = rounds[r].in_depot;

		cr_assert_eq(ioflusher_mempool_alloc_bulk(pool, e, 4, 0), 0);
		cr_assert_eq(ioflusher_mempool_flush(pool), 0);
		/* In address order, as the exiting cache sorts them: e0 is
		 * the lowest. */
		for (int i = 1; i < 4; i++)
			for (int j = i; j > 0 && e[j - 1] > e[j]; j--) {
				void *x = e[j];

				e[j] = e[j - 1];
				e[j - 1] = x;
			}
		a = (struct exit_arg){ pool, e, 5, rounds[r].order };
		/* Freed here first, and this thread's cache flushed: in the
		 * depot when the other thread frees it again. */
		if (d >= 0) {
			cr_assert_eq(ioflusher_mempool_free_elem(pool, e[d]),
				     0);
			cr_assert_eq(ioflusher_mempool_flush(pool), 0);
		}
		cr_assert_eq(pthread_create(&t, NULL, free_in_order_and_exit,
					    &a),
			     0);
		pthread_join(t, NULL);
		cr_assert_eq(stats_of(pool).free, 4, "round %zu: free %llu", r,
			     (unsigned long long)stats_of(pool).free);
		/* Four distinct elements, none of them twice. */
		cr_assert_eq(ioflusher_mempool_alloc_bulk(pool, got, 4, 0), 0);
		for (int i = 0; i < 4; i++)
			for (int j = i + 1; j < 4; j++)
				cr_assert_neq(got[i], got[j], "round %zu", r);
		ioflusher_mempool_free_bulk(pool, got, 4);
		cr_assert_eq(ioflusher_mempool_flush(pool), 0);
	}
	cr_assert_not_null(strstr(logbuf, "double free"), "%s", logbuf);
	ioflusher_mempool_free(pool);
	ioflusher_ctx_unref(ctx);
}

/* A log function that takes an element of the pool and gives it back. */
static void log_with_an_alloc(void *data, int priority, const char *file,
			      int line, const char *fn, const char *format,
			      va_list args)
{
	void *x;

	log_capture(data, priority, file, line, fn, format, args);
	if (!logged_pool)
		return;
	x = ioflusher_mempool_alloc(logged_pool, IOFLUSHER_MEMPOOL_NOWAIT);
	if (x)
		ioflusher_mempool_free_elem(logged_pool, x);
}

/* The exiting thread logs its double free after it has given its cache
 * up: what the log function does with the pool then is not left in a
 * cache that no thread owns. */
Test(mempool, a_log_function_at_thread_exit_strands_nothing, .timeout = 30)
{
	static const int order[] = { 0, 0, 1, 2, 3 };
	struct ioflusher_ctx *ctx = capture_ctx();
	struct ioflusher_mempool *pool;
	struct ioflusher_mempool_stats st;
	void *e[4];
	struct exit_arg a = { NULL, e, 5, order };
	pthread_t t;

	cr_assert_eq(ioflusher_ctx_set_log_fn(ctx, log_with_an_alloc, NULL), 0);
	cr_assert_eq(ioflusher_mempool_new(ctx, 4, 64, 0, 8, 0, &pool), 0);
	a.pool = pool;
	cr_assert_eq(ioflusher_mempool_alloc_bulk(pool, e, 4, 0), 0);
	cr_assert_eq(ioflusher_mempool_flush(pool), 0);
	logged_pool = pool;
	cr_assert_eq(pthread_create(&t, NULL, free_in_order_and_exit, &a), 0);
	pthread_join(t, NULL);
	logged_pool = NULL;
	cr_assert_not_null(strstr(logbuf, "double free"), "%s", logbuf);
	st = stats_of(pool);
	cr_assert_eq(st.free, 4);
	cr_assert_eq(st.cached, 0, "%llu left in a cache no one owns",
		     (unsigned long long)st.cached);
	cr_assert_eq(ioflusher_mempool_alloc_bulk(pool, e, 4, 0), 0);
	ioflusher_mempool_free_bulk(pool, e, 4);
	ioflusher_mempool_free(pool);
	ioflusher_ctx_unref(ctx);
}
#endif

struct churn_arg {
	struct ioflusher_mempool *pool;
	_Atomic bool stop;
};

static void *churn(void *p)
{
	struct churn_arg *a = p;
	void *e[2];

	while (!atomic_load(&a->stop)) {
		if (ioflusher_mempool_alloc_bulk(a->pool, e, 2, 0) == 0)
			ioflusher_mempool_free_bulk(a->pool, e, 2);
	}
	return NULL;
}

/* Another thread's cache is read while its owner moves both ends. */
Test(mempool, stats_while_another_thread_churns, .timeout = 60)
{
	struct churn_arg a = { .pool = make(64, 64, 0, 8) };
	pthread_t t;
	int i;

	cr_assert_eq(pthread_create(&t, NULL, churn, &a), 0);
	for (i = 0; i < 200000; i++) {
		struct ioflusher_mempool_stats st = stats_of(a.pool);

		if (st.cached > st.cache_nr || st.free > st.min_nr)
			break;
	}
	atomic_store(&a.stop, true);
	pthread_join(t, NULL);
	cr_assert_eq(i, 200000, "a snapshot counted more than a cache holds");
	cr_assert_eq(stats_of(a.pool).free, 64);
	ioflusher_mempool_free(a.pool);
}

struct idle_arg {
	struct ioflusher_mempool *pool;
	pthread_barrier_t *ready, *done;
};

/* Takes a cache slot of the pool, empty, then holds it until told. */
static void *hold_a_slot(void *p)
{
	struct idle_arg *a = p;

	ioflusher_mempool_flush(a->pool);
	pthread_barrier_wait(a->ready);
	pthread_barrier_wait(a->done);
	return NULL;
}

/*
 * A snapshot reads the threads' caches one after another, without their
 * owners' lock.  An element that the producer's cache held when it was
 * read can be in the consumer's by the time that is read: counted twice,
 * it would make free exceed the pool and in_use wrap around.  The
 * producer's cache is the first slot and the consumer's the last, with
 * idle threads holding the slots between, so that the window is as wide
 * as a snapshot.
 */
Test(mempool, stats_during_a_handoff_never_exceed_the_pool, .timeout = 120)
{
	enum { IDLE = 62 };
	struct ioflusher_mempool *pool = make(256, 64, 64, 64);
	static struct ring ring;
	_Atomic unsigned int errors = 0;
	struct handoff_arg a = { pool, &ring, 5000000, &errors };
	pthread_barrier_t ready, done;
	struct idle_arg ia = { pool, &ready, &done };
	pthread_t give, take, idle[IDLE];
	int i, bad = 0;

	cr_assert_eq(pthread_barrier_init(&ready, NULL, IDLE + 1), 0);
	cr_assert_eq(pthread_barrier_init(&done, NULL, IDLE + 1), 0);
	cr_assert_eq(pthread_create(&give, NULL, producer, &a), 0);
	/* The producer has its cache once it has passed one on. */
	while (atomic_load(&ring.head) == 0)
		sched_yield();
	for (i = 0; i < IDLE; i++)
		cr_assert_eq(pthread_create(&idle[i], NULL, hold_a_slot, &ia),
			     0);
	pthread_barrier_wait(&ready);
	cr_assert_eq(pthread_create(&take, NULL, consumer, &a), 0);
	/* As long as the handoff lasts: a few hundred thousand snapshots. */
	while (atomic_load(&ring.tail) < a.count && !bad) {
		struct ioflusher_mempool_stats st = stats_of(pool);

		bad = st.free > st.min_nr || st.in_use > st.min_nr ||
		      st.free + st.in_use != st.min_nr;
	}
	pthread_join(give, NULL);
	pthread_join(take, NULL);
	pthread_barrier_wait(&done);
	for (i = 0; i < IDLE; i++)
		pthread_join(idle[i], NULL);
	cr_assert_eq(errors, 0);
	cr_assert_not(bad, "a snapshot counted more than the pool has");
	cr_assert_eq(stats_of(pool).free, 256);
	ioflusher_mempool_free(pool);
}

static void *alloc_free_some(void *p)
{
	struct ioflusher_mempool *pool = p;
	void *e[4];
	int r, i;

	for (r = 0; r < 100; r++) {
		for (i = 0; i < 4; i++)
			e[i] = ioflusher_mempool_alloc(pool, 0);
		for (i = 0; i < 4; i++)
			if (ioflusher_mempool_free_elem(pool, e[i]) < 0)
				return (void *)1;
	}
	return NULL;
}

/* 64 threads get a cache; the others work on the depot. */
Test(mempool, more_threads_than_caches, .timeout = 120)
{
	enum { N = 80 };
	struct ioflusher_mempool *pool = make(N * 4 + 64 * 4, 64, 0, 4);
	pthread_t t[N];
	void *ret;
	int i;

	for (i = 0; i < N; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, alloc_free_some, pool),
			     0);
	for (i = 0; i < N; i++) {
		pthread_join(t[i], &ret);
		cr_assert_null(ret);
	}
	cr_assert_eq(stats_of(pool).cached, 0, "exiting threads gave back");
	cr_assert_eq(stats_of(pool).free, N * 4 + 64 * 4);
	ioflusher_mempool_free(pool);
}

/* More pools than ways in the thread's lookup table, used in turn. */
Test(mempool, many_pools_in_turn)
{
	enum { P = 12 };
	struct ioflusher_mempool *pool[P];
	void *e[P];
	int i, r;

	for (i = 0; i < P; i++)
		pool[i] = make(8, 64, 0, 4);
	for (r = 0; r < 1000; r++) {
		for (i = 0; i < P; i++) {
			e[i] = ioflusher_mempool_alloc(pool[i], 0);
			cr_assert_not_null(e[i]);
		}
		for (i = 0; i < P; i++)
			cr_assert_eq(ioflusher_mempool_free_elem(pool[i], e[i]),
				     0);
		/* Each element goes back to its own pool. */
		cr_assert_eq(ioflusher_mempool_free_elem(pool[(r + 1) % P],
							 e[r % P]),
			     -EINVAL);
	}
	for (i = 0; i < P; i++) {
		cr_assert_eq(stats_of(pool[i]).free, 8);
		cr_assert_gt(stats_of(pool[i]).cached, 0, "each has a cache");
		ioflusher_mempool_free(pool[i]);
	}
}

static int wait_without_futex(void *arg, int *out)
{
	struct ioflusher_mempool *pool = make(1, 64, 0, 0);

	/* The only element, taken: the next allocation must wait. */
	if (!ioflusher_mempool_alloc(pool, 0))
		return 3;
	void *f;

	if (install_syscall_filter(SYS_futex, EPERM) < 0)
		return 2;
	out[0] = ioflusher_mempool_alloc_timeout(pool, &f,
						 IOFLUSHER_MEMPOOL_FOREVER);
	out[1] = ioflusher_mempool_alloc(pool, 0) == NULL;
	return 0;
}

/* A sandbox that refuses futex(2): a wait fails, it does not spin. */
Test(mempool, a_refused_futex_fails_the_wait, .timeout = 30)
{
	int out[2];

	cr_assert_eq(run_in_child(wait_without_futex, NULL, out, 2), 0);
	cr_assert_eq(out[0], -ENOSYS);
	cr_assert_eq(out[1], 1, "alloc returns NULL");
}

/* Sizes whose rounding overflows are refused, not wrapped. */
Test(mempool, sizes_that_overflow_when_rounded)
{
	struct ioflusher_mempool *pool = NULL;
	size_t huge = 2u << 20;

	cr_assert_eq(ioflusher_mempool_new(NULL, SIZE_MAX / huge, 1, huge, 0, 0,
					   &pool),
		     -EINVAL);
	cr_assert_eq(ioflusher_mempool_new(NULL, SIZE_MAX / 64 - 1, 64, 64, 0,
					   0, &pool),
		     -EINVAL);
	cr_assert_null(pool);
}

Test(mempool, pointer_from_another_pool_is_refused)
{
	struct ioflusher_mempool *a = make(2, 64, 0, 0), *b = make(2, 64, 0, 0);
	void *e = ioflusher_mempool_alloc(a, 0);

	cr_assert_eq(ioflusher_mempool_free_elem(b, e), -EINVAL);
	cr_assert_eq(ioflusher_mempool_free_elem(a, e), 0);
	ioflusher_mempool_free(a);
	ioflusher_mempool_free(b);
}
#ifdef IOFLUSHER_DEBUG
Test(mempool, debug_double_free_is_refused)
{
	struct ioflusher_ctx *ctx = capture_ctx();
	struct ioflusher_mempool *pool;
	void *e, *pair[2];

	cr_assert_eq(ioflusher_mempool_new(ctx, 4, 64, 0, 2, 0, &pool), 0);
	e = ioflusher_mempool_alloc(pool, 0);
	cr_assert_eq(ioflusher_mempool_free_elem(pool, e), 0);
	cr_assert_eq(ioflusher_mempool_free_elem(pool, e), -EINVAL);
	cr_assert_not_null(strstr(logbuf, "double free"), "%s", logbuf);
	pair[0] = ioflusher_mempool_alloc(pool, 0);
	pair[1] = pair[0];
	cr_assert_eq(ioflusher_mempool_free_bulk(pool, pair, 2), -EINVAL);
	cr_assert_eq(stats_of(pool).in_use, 1);
	cr_assert_eq(ioflusher_mempool_free_elem(pool, pair[0]), 0);
	cr_assert_eq(stats_of(pool).free, 4);
	ioflusher_mempool_free(pool);
	ioflusher_ctx_unref(ctx);
}

Test(mempool, debug_interior_pointer_is_refused)
{
	struct ioflusher_ctx *ctx = capture_ctx();
	struct ioflusher_mempool *pool;
	char *e;

	cr_assert_eq(ioflusher_mempool_new(ctx, 4, 64, 0, 2, 0, &pool), 0);
	e = ioflusher_mempool_alloc(pool, 0);
	cr_assert_eq(ioflusher_mempool_free_elem(pool, e + 8), -EINVAL);
	cr_assert_not_null(strstr(logbuf, "not the start"), "%s", logbuf);
	cr_assert_eq(ioflusher_mempool_free_elem(pool, e), 0);
	ioflusher_mempool_free(pool);
	ioflusher_ctx_unref(ctx);
}

Test(mempool, debug_freed_elements_are_poisoned)
{
	struct ioflusher_ctx *ctx = capture_ctx();
	struct ioflusher_mempool *pool;
	unsigned char *e;
	size_t i;

	cr_assert_eq(ioflusher_mempool_new(ctx, 1, 300, 0, 0, 0, &pool), 0);
	e = ioflusher_mempool_alloc(pool, 0);
	memset(e, 0, 300);
	cr_assert_eq(ioflusher_mempool_free_elem(pool, e), 0);
	/* The memory stays mapped: looking at it is how poison is seen. */
	for (i = 0; i < 300; i++)
		cr_assert_eq(e[i], 0x6b, "byte %zu", i);
	e[17] = 0; /* a write after free */
	cr_assert_eq(ioflusher_mempool_alloc(pool, 0), e);
	cr_assert_not_null(strstr(logbuf, "written after free at offset 17"),
			   "%s", logbuf);
	ioflusher_mempool_free(pool);
	cr_assert_not_null(strstr(logbuf, "freed with 1 elements in use"), "%s",
			   logbuf);
	ioflusher_ctx_unref(ctx);
}

#endif
