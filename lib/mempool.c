// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Mempool: the userspace counterpart of the kernel's mempool_t
 * (mm/mempool.c).  A daemon in the IO path must finish every IO it has
 * accepted without asking the kernel for memory: a page fault or a malloc
 * that enters reclaim may wait on the very IO the daemon serves.  So all
 * of a pool's memory is mapped, written and locked when the pool is made,
 * and afterwards alloc and free only move pointers.
 *
 * Layout.  Elements live in chunks (one per ioflusher_mempool_new() or
 * ioflusher_mempool_resize() call).  A free element is in exactly one
 * place: the depot (under one lock: a stack of loose pointers and a few
 * full magazines) or the cache of one thread (two magazines holding at
 * most cache_nr pointers together, on cache lines of its own).  The fast
 * path pops from or pushes to the calling thread's magazine and touches no
 * shared line that anyone writes; only when both of a thread's magazines
 * are empty, or both full, does it take the depot lock, and then it trades
 * a whole magazine, as Bonwick's slab allocator and the kernel's per-cpu
 * sheaves do: what crosses to another CPU is one pointer and the lines of
 * the magazine.  Elements are copied under the lock only where no
 * magazine can be traded: a refill from loose elements (a fresh pool, or
 * after waiters were served), a full magazine when the depot has no empty
 * one, and bulk requests, waiters and threads without a cache, which take
 * loose elements.
 *
 * Waiting.  An allocation that finds the depot short queues a waiter and
 * sleeps on a futex in it.  Frees refill the depot and hand elements to
 * the waiters in FIFO order before anyone else may take them, so a bulk
 * request is not starved by single ones and no wake-up is lost: the grant
 * is made under the lock the waiter queued under.  While anyone waits,
 * frees bypass the per-thread caches, so other threads do not pile up
 * elements out of the waiter's reach.  The fast path of a free sees that
 * someone waits through one relaxed load, without the lock: a free racing
 * with the arrival of a waiter may still go into the freeing thread's
 * cache, like the elements that were there before.  Those are what the
 * sizing rule of ioflusher(7) reserves for caches (T x cache_nr); a pool
 * with no caches (cache_nr 0) has no such elements.
 */
#include <errno.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "private.h"

/* Two cache lines: the adjacent-line prefetcher of x86 fetches pairs, so
 * caches of two threads on neighbouring lines would still bounce. */
#define MP_LINE 128
#define MP_CACHE_SLOTS 64 /* threads that get a cache; more use the depot */
#define MP_CACHE_MAX 4096 /* cache_nr limit */
#define MP_CHUNKS 32 /* one for new(), the others for resize() */
#define MP_ALIGN_MAX (2u << 20) /* a huge page */
#define MP_TLS_WAYS 8
#define MP_MAGS 4 /* magazines of the depot, full or empty */
#define MP_POISON_FREE 0x6b /* include/linux/poison.h */
#define MP_SPIN 100
/*
 * The pool's header starts this far into its page.  At offset 0 its
 * fields would share bits 11:0 with the first bytes of every page-aligned
 * element, and a load of them right after the caller wrote an element
 * waits on that store (4K aliasing in the store-to-load forwarding check):
 * some 2 ns per call in a loop that writes each buffer's header.
 */
#define MP_META_OFFSET 1152
_Static_assert(MP_META_OFFSET % MP_LINE == 0,
	       "the pool's header is aligned to MP_LINE");

/*
 * A thread's cache is two magazines (Bonwick and Adams, "Magazines and
 * Vmem", 2001): arrays of mag_nr element pointers, each used as a stack.
 * Alloc and free take and put at the top of the loaded one: the most
 * recently freed element, still in the CPU's cache.  When the loaded one
 * is empty (alloc) or full (free) and the previous one is the other way,
 * the two trade places; only when both are empty, or both full, does the
 * thread take the depot lock, and then it trades a whole magazine for a
 * full or an empty one in the depot: a few pointer moves, however large a
 * magazine is, where copying its elements would touch every cache line of
 * it under the lock.  Alternating alloc and free at the edge of a
 * magazine so costs no lock.  Each magazine holds half of cache_nr, so a
 * thread still keeps at most cache_nr free elements.
 * Only the owner writes a cache; stats read the counts.
 */
struct mp_cache {
	_Atomic uintptr_t owner; /* the owning thread's mp_tls, 0 if free */
	struct ioflusher_mempool *pool; /* for the thread-exit destructor */
	_Atomic unsigned int n; /* elements in loaded */
	_Atomic unsigned int prev_n; /* elements in prev */
	void **loaded;
	void **prev;
};

#define RELAXED memory_order_relaxed

struct mp_chunk {
	uintptr_t base;
	size_t nr;
	void *map;
	size_t map_size;
#ifdef IOFLUSHER_DEBUG
	_Atomic unsigned char *state; /* MP_STATE_* of each element */
#endif
};

enum { MP_STATE_FREE = 0, MP_STATE_USED, MP_STATE_FREEING };

/* On the waiter's stack; linked in the pool's queue under its lock. */
struct mp_waiter {
	struct mp_waiter *next;
	void **elems;
	size_t n;
	_Atomic uint32_t granted; /* futex word */
};

struct ioflusher_mempool {
	/* Read by every fast-path call; written only at creation, but for
	 * free_limit, which changes when someone starts or stops waiting. */
	uint64_t serial;
	uintptr_t base0; /* chunk 0, the only one checked on the fast path */
	/* Element k of chunk 0 starts at base0 + k * stride, and nothing
	 * else does: ror(offset * inv0, shift0) is k for those offsets and
	 * at least nr0 for every other (elem_index0()). */
	uint64_t inv0;
	size_t nr0;
	unsigned int shift0;
	size_t stride;
	unsigned int cache_nr;
	unsigned int mag_nr; /* elements per magazine, cache_nr / 2 */
	/* mag_nr, or 0 while anyone waits: frees then skip the caches.
	 * One load on the fast path for both conditions; written under the
	 * lock when the queue of waiters becomes empty or not. */
	_Atomic unsigned int free_limit;
	size_t elem_size;
	size_t align;
	unsigned int flags;
	bool locked;
	bool have_key;
	pthread_key_t key;
	struct ioflusher_ctx *ctx;
	char *slots; /* MP_CACHE_SLOTS caches of slot_size bytes, or NULL */
	size_t slot_size;
	size_t meta_size; /* this struct and the caches, one mapping */

	/* Written under the lock, on lines of their own; what every trade
	 * of magazines touches comes first, on the lock's line pair. */
	_Alignas(MP_LINE) _Atomic uint32_t lock;
	unsigned int waiters; /* queued */
	struct mp_waiter *wait_head;
	void **depot; /* the loose free elements */
	size_t depot_count;
	size_t total;
	uint64_t high_water;
	/* mags[0, nfull) are full magazines, mags[nfull, MP_MAGS) empty:
	 * a trade swaps one pointer and moves nfull.  tops[i] is the last
	 * element of the full magazine mags[i], here on the lock's lines so
	 * that the thread that takes the magazine returns it without
	 * waiting for a line of the magazine to come from another CPU. */
	unsigned int nfull;
	void **mags[MP_MAGS];
	void *tops[MP_MAGS];
	size_t depot_cap;
	size_t depot_map_size;
	struct mp_waiter **wait_tail;
	uint64_t waits;
	uint64_t wait_ns;
	uint64_t timeouts;
	uint64_t refusals;
	_Atomic uint32_t resize_lock;
	_Atomic unsigned int nchunks;
	/* Bumped when a thread gives its cache slot back: a thread that
	 * found every slot taken looks again only then. */
	_Atomic uintptr_t slot_gen;
	struct mp_chunk chunks[MP_CHUNKS];
};

_Static_assert(offsetof(struct ioflusher_mempool, tops) +
			       sizeof(((struct ioflusher_mempool *)0)->tops) -
			       offsetof(struct ioflusher_mempool, lock) <=
		       MP_LINE,
	       "what a trade of magazines touches is on the lock's lines");

/*
 * A thread finds its cache of a pool through a small direct-mapped table
 * in initial-exec TLS: one %fs-relative load, where pthread_getspecific()
 * is a call and the global-dynamic model a __tls_get_addr() call.  Serials
 * are never reused, so an entry left by a freed pool never matches.
 */
struct mp_tls {
	uint64_t serial;
	struct mp_cache *cache;
};
/* An entry serial | MP_NO_SLOT says "no slot was free at slot_gen",
 * cache holding that generation; the fast path never matches it. */
#define MP_NO_SLOT (1ull << 63)
static __thread struct mp_tls mp_tls[MP_TLS_WAYS]
	__attribute__((tls_model("initial-exec")));
static _Atomic uint64_t mp_next_serial = 1;

/*
 * In the child of a fork(), the forking thread, its only thread, still
 * holds the parent's caches as its values of the pools' keys, but not the
 * memory they are in (MADV_DONTFORK): were it to exit with pthread_exit(),
 * the keys' destructor would give back caches that are not there.  So
 * the child forgets them: the keys of the live pools are kept here, as
 * bits (glibc's keys are below PTHREAD_KEYS_MAX; one beyond is not kept,
 * and such a child is left as it was).
 */
#define MP_KEY_WORDS ((PTHREAD_KEYS_MAX + 63) / 64)
static _Atomic uint64_t mp_keys[MP_KEY_WORDS];
static pthread_once_t mp_atfork_once = PTHREAD_ONCE_INIT;

static void mp_atfork_child(void)
{
	for (size_t w = 0; w < MP_KEY_WORDS; w++) {
		uint64_t bits =
			atomic_load_explicit(&mp_keys[w], memory_order_relaxed);

		while (bits) {
			pthread_key_t key =
				(pthread_key_t)(w * 64 +
						(size_t)__builtin_ctzll(bits));

			bits &= bits - 1;
			/* NULL needs no memory: glibc allocates only to
			 * store a value. */
			pthread_setspecific(key, NULL);
		}
	}
	memset(mp_tls, 0, sizeof(mp_tls));
}

static void mp_atfork_register(void)
{
	/* ENOMEM leaves children as they were: nothing else to do. */
	(void)pthread_atfork(NULL, NULL, mp_atfork_child);
}

static void mp_key_mark(pthread_key_t key, bool live)
{
	uint64_t bit;

	if ((size_t)key >= (size_t)MP_KEY_WORDS * 64)
		return;
	bit = 1ull << (key % 64);
	if (live)
		atomic_fetch_or(&mp_keys[key / 64], bit);
	else
		atomic_fetch_and(&mp_keys[key / 64], ~bit);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

static long futex(_Atomic uint32_t *uaddr, int op, uint32_t val,
		  const struct timespec *ts, uint32_t val3)
{
	return syscall(SYS_futex, uaddr, op, val, ts, NULL, val3);
}

/* The depot lock: a three-state futex mutex (Drepper, "Futexes Are
 * Tricky"), spinning briefly first since the critical sections are a few
 * dozen pointer moves. */
static void mp_lock(_Atomic uint32_t *l)
{
	uint32_t c = 0;
	int i;

	if (atomic_compare_exchange_strong_explicit(
		    l, &c, 1, memory_order_acquire, memory_order_relaxed))
		return;
	for (i = 0; i < MP_SPIN; i++) {
		cpu_relax();
		c = 0;
		if (atomic_load_explicit(l, memory_order_relaxed) == 0 &&
		    atomic_compare_exchange_strong_explicit(
			    l, &c, 1, memory_order_acquire,
			    memory_order_relaxed))
			return;
	}
	if (c != 2)
		c = atomic_exchange_explicit(l, 2, memory_order_acquire);
	while (c != 0) {
		futex(l, FUTEX_WAIT_PRIVATE, 2, NULL, 0);
		c = atomic_exchange_explicit(l, 2, memory_order_acquire);
	}
}

static void mp_unlock(_Atomic uint32_t *l)
{
	if (atomic_exchange_explicit(l, 0, memory_order_release) == 2)
		futex(l, FUTEX_WAKE_PRIVATE, 1, NULL, 0);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static size_t page_size(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

static size_t round_up(size_t x, size_t a)
{
	return (x + a - 1) & ~(a - 1);
}

/* round_up() of sizes that come from the caller: false on overflow. */
static bool round_up_checked(size_t x, size_t a, size_t *out)
{
	if (x > SIZE_MAX - (a - 1))
		return false;
	*out = round_up(x, a);
	return true;
}

/* The inverse of an odd d modulo 2^64, by Newton's iteration: each step
 * doubles the bits that are right, from the 3 of d * d == 1 mod 8. */
static uint64_t odd_inverse(uint64_t d)
{
	uint64_t x = d;

	for (int i = 0; i < 5; i++)
		x *= 2 - d * x;
	return x;
}

/*
 * The index of elem in chunk 0, or a number of at least nr0 when elem is
 * not the start of one of its elements: with stride = d << shift0, d odd,
 * a multiple q * stride of it maps to q, and every other offset, inside
 * an element or outside the chunk, to more than UINT64_MAX / stride, which
 * nr0 cannot reach (a division test: Granlund and Montgomery, 1994).  One
 * multiplication, where a division would cost ten times more.
 */
static inline uint64_t elem_index0(const struct ioflusher_mempool *pool,
				   const void *elem)
{
	uint64_t x = ((uintptr_t)elem - pool->base0) * pool->inv0;
	unsigned int s = pool->shift0;

	return s ? x >> s | x << (64 - s) : x;
}

/* ------------------------------------------------------------ memory */

/* What of a pool (or of what a resize adds) could not be locked: the
 * bytes, and the first error. */
struct mp_unlocked {
	size_t bytes;
	int err;
};

static void log_lock_failure(struct ioflusher_ctx *ctx, size_t len, int err,
			     bool fatal, const char *why)
{
	int reason = ioflusher_diagnose(IOFLUSHER_PROTECT_MEMLOCK, err);
	uint64_t soft = 0, hard = 0, locked = 0;
	int prio = fatal ? LOG_ERR : LOG_WARNING;
	bool cap = ioflusher_caps_have(CAP_IPC_LOCK) == 1;

	if (!ioflusher__log_enabled(ctx, prio))
		return;
	ioflusher_memlock_limit(&soft, &hard);
	ioflusher_memlock_locked(0, &locked);
	/* The limit counts what the process has locked already (mlockall,
	 * the heap reserve, other pools), not this mapping alone. */
	ioflusher__log(ctx, prio, __FILE__, __LINE__, __func__,
		       "mempool: cannot lock %s%zu bytes of the pool: %s: %s; "
		       "%llu bytes are locked already, "
		       "RLIMIT_MEMLOCK is %llu bytes (hard %llu), CAP_IPC_LOCK "
		       "is %s%s%s",
		       fatal ? "a mapping of " : "", len, strerror(-err),
		       ioflusher_reason_string(reason),
		       (unsigned long long)locked, (unsigned long long)soft,
		       (unsigned long long)hard, cap ? "held" : "not held", why,
		       cap ? "" :
			     "; grant CAP_IPC_LOCK or raise RLIMIT_MEMLOCK "
			     "(LimitMEMLOCK=infinity)");
}

/* Under IOFLUSHER_MEMPOOL_UNLOCKED_OK, once for a pool or a resize: all
 * the bytes left unlocked, so that the limit can be sized from it. */
static void log_unlocked(struct ioflusher_ctx *ctx,
			 const struct mp_unlocked *un)
{
	if (un->bytes)
		log_lock_failure(ctx, un->bytes, un->err, false,
				 "; the pool is pre-faulted but not locked");
}

/*
 * Map len bytes aligned to align, write every page and lock them.  The
 * pages are excluded from fork(): a child's copy-on-write reference would
 * make the parent's next write to a pool element fault.
 */
static void *mp_map(struct ioflusher_ctx *ctx, size_t len, size_t align,
		    unsigned int flags, struct mp_unlocked *un, int *errp)
{
	size_t page = page_size();
	size_t slack = align > page ? align : 0, total;
	char *map, *p;
	size_t i;

	if (__builtin_add_overflow(len, slack, &total)) {
		*errp = -EINVAL;
		return NULL;
	}
	map = mmap(NULL, total, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (map == MAP_FAILED && errno == EAGAIN) {
		/* mlockall(MCL_FUTURE) is in force, and the mapping, locked
		 * as it is made, would exceed RLIMIT_MEMLOCK: do_mmap() in
		 * mm/mmap.c checks the limit first and answers EAGAIN.  No
		 * flag of ours can map it unlocked: the error of a limit too
		 * low, whatever the flags. */
		*errp = -ENOMEM;
		log_lock_failure(ctx, total, *errp, true,
				 "; mlockall(MCL_FUTURE) locks each mapping as "
				 "it is made, so not even "
				 "IOFLUSHER_MEMPOOL_UNLOCKED_OK can make it");
		return NULL;
	}
	if (map == MAP_FAILED) {
		*errp = -errno;
		log_err(ctx, "mempool: cannot map %zu bytes: %s", total,
			strerror(-*errp));
		return NULL;
	}
	p = map;
	if (slack) {
		p = (char *)round_up((uintptr_t)map, align);
		if (p > map)
			munmap(map, (size_t)(p - map));
		if (p + len < map + len + slack)
			munmap(p + len,
			       (size_t)(map + len + slack - (p + len)));
	}
	if (madvise(p, len, MADV_DONTFORK) < 0)
		log_warn(ctx,
			 "mempool: madvise(MADV_DONTFORK): %s: children forked "
			 "later share the pool, and the first write to each "
			 "page of it after a fork copies it",
			 strerror(errno));
	if (mlock(p, len) < 0) {
		int err = -errno;
		bool ok = flags & IOFLUSHER_MEMPOOL_UNLOCKED_OK;

		/* Without the flag, said here; with it, once for the pool
		 * (or the resize), with all its bytes that are unlocked, by
		 * log_unlocked(). */
		if (!ok)
			log_lock_failure(ctx, len, err, true, "");
		if (!ok) {
			munmap(p, len);
			*errp = err;
			return NULL;
		}
		un->bytes += len;
		if (!un->err)
			un->err = err;
	}
	/* mlock() populates, but an unlocked pool must be faulted too. */
	for (i = 0; i < len; i += page)
		((volatile char *)p)[i] = 0;
	return p;
}

/* ------------------------------------------------------------ debug */

static struct mp_chunk *chunk_of(const struct ioflusher_mempool *pool,
				 const void *elem, size_t *index)
{
	unsigned int i, n;
	uintptr_t a = (uintptr_t)elem;

	n = atomic_load_explicit(&((struct ioflusher_mempool *)pool)->nchunks,
				 memory_order_acquire);
	for (i = 0; i < n; i++) {
		const struct mp_chunk *ch = &pool->chunks[i];

		if (a - ch->base < ch->nr * pool->stride) {
			if (index)
				*index = (a - ch->base) / pool->stride;
			return (struct mp_chunk *)ch;
		}
	}
	return NULL;
}

/* The chunk of elem, which must be the start of one of its elements:
 * NULL, logged, when it is not. */
static struct mp_chunk *elem_chunk(struct ioflusher_mempool *pool,
				   const void *elem, size_t *index)
{
	struct mp_chunk *ch = chunk_of(pool, elem, index);

	if (!ch) {
		log_err(pool->ctx, "mempool: free of %p: not from this pool",
			elem);
		return NULL;
	}
	if (((uintptr_t)elem - ch->base) % pool->stride) {
		log_err(pool->ctx,
			"mempool: free of %p: not the start of an element",
			elem);
		return NULL;
	}
	return ch;
}

#ifdef IOFLUSHER_DEBUG
/* Check the poison left by free and mark the element in use. */
static void debug_alloc(struct ioflusher_mempool *pool, void *elem)
{
	const unsigned char *p = elem;
	struct mp_chunk *ch;
	size_t i, index;

	ch = chunk_of(pool, elem, &index);
	if (!ch) {
		log_err(pool->ctx, "mempool: %p handed out but not ours", elem);
		return;
	}
	if (atomic_exchange(&ch->state[index], MP_STATE_USED) != MP_STATE_FREE)
		log_err(pool->ctx, "mempool: %p handed out twice", elem);
	for (i = 0; i < pool->elem_size; i++) {
		if (p[i] != MP_POISON_FREE) {
			log_err(pool->ctx,
				"mempool: %p written after free at offset %zu",
				elem, i);
			break;
		}
	}
}

/* First half of a free: the element must be one of ours, handed out. */
static int debug_free_begin(struct ioflusher_mempool *pool, void *elem)
{
	struct mp_chunk *ch;
	size_t index;
	unsigned char used = MP_STATE_USED;

	ch = elem_chunk(pool, elem, &index);
	if (!ch)
		return -EINVAL;
	if (!atomic_compare_exchange_strong(&ch->state[index], &used,
					    MP_STATE_FREEING)) {
		log_err(pool->ctx, "mempool: free of %p: double free", elem);
		return -EINVAL;
	}
	return 0;
}

static void debug_free_undo(struct ioflusher_mempool *pool, void *elem)
{
	size_t index;
	struct mp_chunk *ch = chunk_of(pool, elem, &index);

	atomic_store(&ch->state[index], MP_STATE_USED);
}

static void debug_free_end(struct ioflusher_mempool *pool, void *elem)
{
	size_t index;
	struct mp_chunk *ch = chunk_of(pool, elem, &index);

	memset(elem, MP_POISON_FREE, pool->elem_size);
	atomic_store(&ch->state[index], MP_STATE_FREE);
}
#else
static inline void debug_alloc(struct ioflusher_mempool *pool, void *elem)
{
}
/* Without the debug states, what can be told: an element of ours, at
 * its start (a pointer inside one would be handed out again). */
static inline int debug_free_begin(struct ioflusher_mempool *pool, void *elem)
{
	return elem_chunk(pool, elem, NULL) ? 0 : -EINVAL;
}
static inline void debug_free_undo(struct ioflusher_mempool *pool, void *elem)
{
}
static inline void debug_free_end(struct ioflusher_mempool *pool, void *elem)
{
}
#endif

/* ------------------------------------------------------------ depot */

/* Free elements in the depot: loose, and in its full magazines. */
static size_t depot_free(const struct ioflusher_mempool *pool)
{
	return pool->depot_count + (size_t)pool->nfull * pool->mag_nr;
}

static void note_high_water(struct ioflusher_mempool *pool)
{
	uint64_t out = pool->total - depot_free(pool);

	if (out > pool->high_water)
		pool->high_water = out;
}

/* n <= depot_free(): loose elements, emptying full magazines into the
 * loose array when it has too few (it has room for every element). */
static void depot_pop(struct ioflusher_mempool *pool, void **elems, size_t n)
{
	while (pool->depot_count < n) {
		pool->nfull--;
		memcpy(pool->depot + pool->depot_count, pool->mags[pool->nfull],
		       pool->mag_nr * sizeof(void *));
		pool->depot_count += pool->mag_nr;
	}
	pool->depot_count -= n;
	memcpy(elems, pool->depot + pool->depot_count, n * sizeof(*elems));
	note_high_water(pool);
}

static void depot_push(struct ioflusher_mempool *pool, void *const *elems,
		       size_t n)
{
	memcpy(pool->depot + pool->depot_count, elems, n * sizeof(*elems));
	pool->depot_count += n;
}

/* Lock held. */
static void waiters_dec(struct ioflusher_mempool *pool)
{
	if (--pool->waiters == 0)
		atomic_store_explicit(&pool->free_limit, pool->mag_nr,
				      memory_order_relaxed);
}

/* Hand elements to the waiters, first come first served; lock held. */
static void grant(struct ioflusher_mempool *pool)
{
	struct mp_waiter *w;

	while ((w = pool->wait_head) && depot_free(pool) >= w->n) {
		depot_pop(pool, w->elems, w->n);
		pool->wait_head = w->next;
		if (!pool->wait_head)
			pool->wait_tail = &pool->wait_head;
		waiters_dec(pool);
		atomic_store_explicit(&w->granted, 1, memory_order_release);
		/* Under the lock: the waiter takes the lock before it
		 * returns, so its stack is still there. */
		futex(&w->granted, FUTEX_WAKE_PRIVATE, 1, NULL, 0);
	}
}

static void unlink_waiter(struct ioflusher_mempool *pool, struct mp_waiter *w)
{
	struct mp_waiter **pp;

	for (pp = &pool->wait_head; *pp != w; pp = &(*pp)->next)
		;
	*pp = w->next;
	if (pool->wait_tail == &w->next)
		pool->wait_tail = pp;
	waiters_dec(pool);
}

/*
 * Queue for n elements and sleep until they are granted or the deadline
 * (CLOCK_MONOTONIC, NULL for none) passes.  Called with the lock held,
 * returns with it released.
 */
static int depot_wait(struct ioflusher_mempool *pool, void **elems, size_t n,
		      const struct timespec *deadline)
{
	struct mp_waiter w = { .elems = elems, .n = n };
	uint64_t start = now_ns();
	int ret = 0, err = 0;

	*pool->wait_tail = &w;
	pool->wait_tail = &w.next;
	if (pool->waiters++ == 0)
		atomic_store_explicit(&pool->free_limit, 0,
				      memory_order_relaxed);
	pool->waits++;
	mp_unlock(&pool->lock);

	while (!atomic_load_explicit(&w.granted, memory_order_acquire)) {
		/* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time. */
		if (futex(&w.granted, FUTEX_WAIT_BITSET_PRIVATE, 0, deadline,
			  FUTEX_BITSET_MATCH_ANY) == 0 ||
		    errno == EINTR || errno == EAGAIN)
			continue;
		/* ETIMEDOUT; anything else is a futex(2) refused, by a
		 * seccomp filter say: looping on it would spin. */
		err = errno;
		break;
	}

	/* Taken again even when granted: the granter still holds it while
	 * it wakes us, and w, on this stack, must outlive that. */
	mp_lock(&pool->lock);
	if (!atomic_load_explicit(&w.granted, memory_order_acquire)) {
		unlink_waiter(pool, &w);
		if (err == ETIMEDOUT) {
			pool->timeouts++;
			ret = -ETIMEDOUT;
		} else {
			ret = -ENOSYS;
		}
		grant(pool); /* those behind may fit now */
	}
	pool->wait_ns += now_ns() - start;
	mp_unlock(&pool->lock);
	if (ret == -ENOSYS)
		log_err(pool->ctx,
			"mempool: cannot wait for an element: "
			"futex: %s",
			strerror(err));
	return ret;
}

/* ------------------------------------------------------------ caches */

static inline struct mp_cache *
cache_lookup(const struct ioflusher_mempool *pool)
{
	struct mp_tls *t = &mp_tls[pool->serial & (MP_TLS_WAYS - 1)];

	return t->serial == pool->serial ? t->cache : NULL;
}

static struct mp_cache *slot(const struct ioflusher_mempool *pool,
			     unsigned int i)
{
	return (struct mp_cache *)(pool->slots + (size_t)i * pool->slot_size);
}

static inline unsigned int cache_count(const struct mp_cache *c)
{
	return atomic_load_explicit(&c->n, RELAXED) +
	       atomic_load_explicit(&c->prev_n, RELAXED);
}

/*
 * The count of another thread's cache, for statistics.  Its owner moves
 * the counts without the lock, so each is kept within what a magazine
 * can hold.
 */
static unsigned int cache_count_racy(const struct ioflusher_mempool *pool,
				     const struct mp_cache *c)
{
	unsigned int n = atomic_load_explicit(&c->n, RELAXED);
	unsigned int p = atomic_load_explicit(&c->prev_n, RELAXED);

	return (n < pool->mag_nr ? n : pool->mag_nr) +
	       (p < pool->mag_nr ? p : pool->mag_nr);
}

static inline __attribute__((always_inline)) void cache_swap(struct mp_cache *c)
{
	void **m = c->loaded;
	unsigned int n = atomic_load_explicit(&c->n, RELAXED);

	c->loaded = c->prev;
	c->prev = m;
	atomic_store_explicit(&c->n, atomic_load_explicit(&c->prev_n, RELAXED),
			      RELAXED);
	atomic_store_explicit(&c->prev_n, n, RELAXED);
}

/* Every element of the cache, into out; returns how many. */
static unsigned int cache_take_all(struct mp_cache *c, void **out)
{
	unsigned int n = atomic_load_explicit(&c->n, RELAXED);
	unsigned int p = atomic_load_explicit(&c->prev_n, RELAXED);

	memcpy(out, c->loaded, n * sizeof(void *));
	if (p)
		memcpy(out + n, c->prev, p * sizeof(void *));
	atomic_store_explicit(&c->n, 0, RELAXED);
	atomic_store_explicit(&c->prev_n, 0, RELAXED);
	return n + p;
}

/* The n most recently freed elements, still warm; n <= cache_count(). */
static void cache_pop(struct mp_cache *c, void **out, unsigned int n)
{
	while (n) {
		unsigned int top = atomic_load_explicit(&c->n, RELAXED), k;

		if (!top) {
			cache_swap(c);
			continue;
		}
		k = top < n ? top : n;
		for (unsigned int i = 1; i <= k; i++)
			*out++ = c->loaded[top - i];
		atomic_store_explicit(&c->n, top - k, RELAXED);
		n -= k;
	}
}

/* Room in the loaded magazine for n is known to be there. */
static void cache_put(struct mp_cache *c, void *const *elems, size_t n)
{
	unsigned int top = atomic_load_explicit(&c->n, RELAXED);

	memcpy(c->loaded + top, elems, n * sizeof(void *));
	atomic_store_explicit(&c->n, top + (unsigned int)n, RELAXED);
}

/*
 * The depot has room for every element of the pool, so more than that
 * coming back means an element was freed twice (a build without
 * IOFLUSHER_DEBUG cannot tell earlier).  Lock held; the caller logs it
 * with log_overflow() once the lock is released, since the log function
 * is the caller's code and may well use the pool.
 */
static bool depot_room(struct ioflusher_mempool *pool, size_t n)
{
	return n <= pool->depot_cap - depot_free(pool);
}

static void log_overflow(struct ioflusher_mempool *pool, size_t dropped)
{
	if (dropped)
		log_err(pool->ctx,
			"mempool: more elements freed than the pool holds: "
			"double free; %zu cached by an exiting thread could "
			"not be told apart from those freed twice and are lost",
			dropped);
	else
		log_err(pool->ctx,
			"mempool: more elements freed than the pool holds: "
			"double free");
}

/* Give every element of the cache back to the depot; lock held.  On a
 * double free the cache is left as it is and -EINVAL returned. */
static int cache_drain(struct ioflusher_mempool *pool, struct mp_cache *c)
{
	if (!depot_room(pool, cache_count(c)))
		return -EINVAL;
	pool->depot_count += cache_take_all(c, pool->depot + pool->depot_count);
	return 0;
}

/*
 * Elements are aligned to at least a pointer, so bit 0 of one in a
 * magazine is free to mark it, and comparisons ignore it.
 */
#define MP_MARK ((uintptr_t)1)

static uintptr_t ptr_key(const void *p)
{
	return (uintptr_t)p & ~MP_MARK;
}

/* Sorted in place, without malloc(), which qsort(3) may call: a Shell
 * sort with Ciura's gaps, for at most a magazine's 2048. */
static void ptr_sort(void **v, unsigned int n)
{
	static const unsigned int gaps[] = { 701, 301, 132, 57, 23, 10, 4, 1 };

	for (unsigned int g = 0; g < sizeof(gaps) / sizeof(gaps[0]); g++) {
		unsigned int gap = gaps[g];

		for (unsigned int i = gap; i < n; i++) {
			void *x = v[i];
			unsigned int j = i;

			for (; j >= gap && ptr_key(v[j - gap]) > ptr_key(x);
			     j -= gap)
				v[j] = v[j - gap];
			v[j] = x;
		}
	}
}

/* Marks x in the sorted v[0..n) if it is there. */
static void ptr_mark(void **v, unsigned int n, const void *x)
{
	unsigned int lo = 0, hi = n;

	while (lo < hi) {
		unsigned int mid = lo + (hi - lo) / 2;

		if (ptr_key(v[mid]) < ptr_key(x)) {
			lo = mid + 1;
		} else if (ptr_key(v[mid]) > ptr_key(x)) {
			hi = mid;
		} else {
			v[mid] = (void *)((uintptr_t)v[mid] | MP_MARK);
			return;
		}
	}
}

/* The elements of the sorted v[0..n) that no copy of is marked, each
 * once, moved to the front: their number.  ptr_mark() marks one copy of
 * an element the magazine holds twice, whichever the search meets. */
static unsigned int ptr_keep(void **v, unsigned int n)
{
	unsigned int kept = 0, i, j;

	for (i = 0; i < n; i = j) {
		bool marked = false;

		for (j = i; j < n && ptr_key(v[j]) == ptr_key(v[i]); j++)
			marked |= (uintptr_t)v[j] & MP_MARK;
		if (!marked)
			v[kept++] = v[i];
	}
	return kept;
}

/* Marks in v[0..n) every element that the depot holds. */
static void mark_depot_held(const struct ioflusher_mempool *pool, void **v,
			    unsigned int n)
{
	for (size_t i = 0; i < pool->depot_count; i++)
		ptr_mark(v, n, pool->depot[i]);
	for (unsigned int m = 0; m < pool->nfull; m++)
		for (unsigned int i = 0; i < pool->mag_nr; i++)
			ptr_mark(v, n, pool->mags[m][i]);
}

/*
 * An exiting thread's cache that the depot has no room for holds elements
 * freed twice.  What can be told apart goes back: each element once, and
 * none that the depot holds already.  What is still too much (an element
 * freed into two threads' caches) is dropped, so that the depot never
 * holds an element twice.  Lock held; the number dropped.
 */
static size_t cache_release_overflow(struct ioflusher_mempool *pool,
				     struct mp_cache *c)
{
	void **mag[2] = { c->loaded, c->prev };
	unsigned int count[2] = {
		atomic_load_explicit(&c->n, RELAXED),
		c->prev ? atomic_load_explicit(&c->prev_n, RELAXED) : 0
	};
	size_t dropped = 0;

	for (int m = 0; m < 2; m++) {
		/* The first magazine's go back before the second's are
		 * looked at: an element in both is then in the depot. */
		ptr_sort(mag[m], count[m]);
		mark_depot_held(pool, mag[m], count[m]);
		count[m] = ptr_keep(mag[m], count[m]);
		for (unsigned int i = 0; i < count[m]; i++) {
			if (depot_room(pool, 1))
				depot_push(pool, &mag[m][i], 1);
			else
				dropped++;
		}
	}
	atomic_store_explicit(&c->n, 0, RELAXED);
	atomic_store_explicit(&c->prev_n, 0, RELAXED);
	return dropped;
}

/* pthread key destructor: a thread that exits gives its cache back. */
static void cache_release(void *arg)
{
	struct mp_cache *c = arg;
	struct ioflusher_mempool *pool = c->pool;
	struct mp_tls *t = &mp_tls[pool->serial & (MP_TLS_WAYS - 1)];
	bool overflow = false;
	size_t dropped = 0;

	mp_lock(&pool->lock);
	if (cache_drain(pool, c) < 0) {
		overflow = true;
		dropped = cache_release_overflow(pool, c);
	}
	grant(pool);
	mp_unlock(&pool->lock);
	if ((t->serial & ~MP_NO_SLOT) == pool->serial)
		t->serial = 0;
	atomic_store_explicit(&c->owner, 0, memory_order_release);
	atomic_fetch_add_explicit(&pool->slot_gen, 1, memory_order_release);
	/* Last: a log function that uses the pool must not fill the cache
	 * just given back, which no one would own. */
	if (overflow)
		log_overflow(pool, dropped);
}

/*
 * The calling thread's cache, claimed on its first call; NULL when the
 * pool has none or all are taken.  The TLS table is a cache of
 * pthread_getspecific(): two pools in the same way of it evict each other,
 * and then each call of theirs takes this path, which touches no memory
 * that other threads write.
 */
static struct mp_cache *cache_get(struct ioflusher_mempool *pool)
{
	struct mp_tls *t = &mp_tls[pool->serial & (MP_TLS_WAYS - 1)];
	uintptr_t gen;
	struct mp_cache *c;
	unsigned int i;

	c = cache_lookup(pool);
	if (c || !pool->slots)
		return c;
	c = pthread_getspecific(pool->key);
	if (c)
		goto found;
	gen = atomic_load_explicit(&pool->slot_gen, memory_order_acquire);
	if (t->serial == (pool->serial | MP_NO_SLOT) &&
	    (uintptr_t)t->cache == gen)
		return NULL;
	for (i = 0; i < MP_CACHE_SLOTS; i++) {
		uintptr_t none = 0;

		c = slot(pool, i);
		/* Load first: a failed compare-and-swap would take the
		 * line, on which its owner's counts are, away from
		 * the owner. */
		if (atomic_load_explicit(&c->owner, memory_order_relaxed) ||
		    !atomic_compare_exchange_strong(&c->owner, &none,
						    (uintptr_t)mp_tls))
			continue;
		c->pool = pool;
		if (pthread_setspecific(pool->key, c) != 0) {
			atomic_store(&c->owner, 0);
			/* Free again: threads that found none look again. */
			atomic_fetch_add_explicit(&pool->slot_gen, 1,
						  memory_order_release);
			return NULL;
		}
		goto found;
	}
	t->serial = pool->serial | MP_NO_SLOT;
	t->cache = (struct mp_cache *)gen;
	return NULL;

found:
	t->serial = pool->serial;
	t->cache = c;
	return c;
}

/* ------------------------------------------------------------ create */

static int add_chunk(struct ioflusher_mempool *pool, size_t nr,
		     struct mp_chunk *ch, struct mp_unlocked *un)
{
	size_t bytes, states = 0, page = page_size();
	int err = 0;

	if (__builtin_mul_overflow(nr, pool->stride, &bytes) ||
	    !round_up_checked(bytes, page, &bytes))
		return -EINVAL;
#ifdef IOFLUSHER_DEBUG
	if (!round_up_checked(nr, page, &states))
		return -EINVAL;
#endif
	if (bytes + states < bytes)
		return -EINVAL;
	ch->map = mp_map(pool->ctx, bytes + states,
			 pool->align > page ? pool->align : page, pool->flags,
			 un, &err);
	if (!ch->map)
		return err;
	ch->map_size = bytes + states;
	ch->base = (uintptr_t)ch->map;
	ch->nr = nr;
#ifdef IOFLUSHER_DEBUG
	ch->state = (_Atomic unsigned char *)((char *)ch->map + bytes);
	memset(ch->map, MP_POISON_FREE, bytes);
#endif
	return 0;
}

/* A locked array of cap pointers for the depot. */
static void **depot_map(struct ioflusher_mempool *pool, size_t cap,
			size_t *map_size, struct mp_unlocked *un, int *errp)
{
	size_t len;

	if (__builtin_mul_overflow(cap, sizeof(void *), &len) ||
	    !round_up_checked(len, page_size(), &len)) {
		*errp = -EINVAL;
		return NULL;
	}
	*map_size = len;
	return mp_map(pool->ctx, len, page_size(), pool->flags, un, errp);
}

static bool args_valid(size_t min_nr, size_t elem_size, size_t align,
		       unsigned int cache_nr, unsigned int flags)
{
	return min_nr && elem_size && (align & (align - 1)) == 0 &&
	       align <= MP_ALIGN_MAX && cache_nr <= MP_CACHE_MAX &&
	       !(flags & ~(unsigned int)IOFLUSHER_MEMPOOL_UNLOCKED_OK);
}

_public_ int ioflusher_mempool_new(struct ioflusher_ctx *ctx, size_t min_nr,
				   size_t elem_size, size_t align,
				   unsigned int cache_nr, unsigned int flags,
				   struct ioflusher_mempool **poolp)
{
	struct ioflusher_mempool *pool;
	size_t slot_size = 0, mag_size = 0, meta_size, stride;
	size_t page = page_size();
	unsigned int mag_nr = cache_nr > 1 ? cache_nr / 2 : cache_nr;
	char *meta, *mags;
	struct mp_unlocked un = { 0 };
	size_t i;
	int err = 0;

	if (!poolp || !args_valid(min_nr, elem_size, align, cache_nr, flags))
		return -EINVAL;
	if (!align)
		align = _Alignof(max_align_t);
	if (align < sizeof(void *))
		align = sizeof(void *);
	stride = round_up(elem_size, align);
	if (stride < elem_size)
		return -EINVAL;
	if (cache_nr) {
		slot_size = round_up(sizeof(struct mp_cache), MP_LINE);
		mag_size = round_up(mag_nr * sizeof(void *), MP_LINE);
	}
	/* The header, the caches, two magazines per cache and the depot's. */
	meta_size = round_up(MP_META_OFFSET + round_up(sizeof(*pool), MP_LINE) +
				     MP_CACHE_SLOTS * slot_size +
				     (2 * MP_CACHE_SLOTS + MP_MAGS) * mag_size,
			     page);

	meta = mp_map(ctx, meta_size, page, flags, &un, &err);
	if (!meta)
		return err;
	pool = (struct ioflusher_mempool *)((char *)meta + MP_META_OFFSET);
	pool->meta_size = meta_size;
	pool->serial = atomic_fetch_add(&mp_next_serial, 1);
	pool->ctx = ioflusher_ctx_ref(ctx);
	pool->elem_size = elem_size;
	pool->align = align;
	pool->stride = stride;
	pool->flags = flags;
	pool->wait_tail = &pool->wait_head;
	if (cache_nr) {
		pthread_once(&mp_atfork_once, mp_atfork_register);
		if (pthread_key_create(&pool->key, cache_release) == 0) {
			mp_key_mark(pool->key, true);
			pool->have_key = true;
			pool->cache_nr = cache_nr;
			pool->mag_nr = mag_nr;
			pool->free_limit = mag_nr;
			pool->slot_size = slot_size;
			pool->slots =
				(char *)pool + round_up(sizeof(*pool), MP_LINE);
			mags = pool->slots + MP_CACHE_SLOTS * slot_size;
			for (i = 0; i < MP_CACHE_SLOTS; i++) {
				struct mp_cache *c =
					slot(pool, (unsigned int)i);

				c->loaded = (void **)mags;
				mags += mag_size;
				/* cache_nr 1: one magazine of one. */
				c->prev = cache_nr > 1 ? (void **)mags : NULL;
				mags += mag_size;
			}
			for (i = 0; i < MP_MAGS; i++) {
				pool->mags[i] = (void **)mags;
				mags += mag_size;
			}
		} else {
			log_warn(ctx, "mempool: no pthread key left: the pool "
				      "has no per-thread caches");
		}
	}

	err = add_chunk(pool, min_nr, &pool->chunks[0], &un);
	if (err < 0)
		goto fail;
	atomic_store(&pool->nchunks, 1);
	pool->base0 = pool->chunks[0].base;
	pool->nr0 = min_nr;
	pool->shift0 = (unsigned int)__builtin_ctzll(stride);
	pool->inv0 = odd_inverse(stride >> pool->shift0);
	pool->depot = depot_map(pool, min_nr, &pool->depot_map_size, &un, &err);
	if (!pool->depot)
		goto fail;
	pool->depot_cap = min_nr;
	/* Lowest address on top: a fresh pool hands out in address order. */
	for (i = 0; i < min_nr; i++)
		pool->depot[i] =
			(char *)pool->base0 + (min_nr - 1 - i) * stride;
	pool->depot_count = min_nr;
	pool->total = min_nr;
	pool->locked = !un.bytes;
	log_unlocked(ctx, &un);
	log_dbg(ctx,
		"mempool: %zu elements of %zu bytes (stride %zu, align %zu), "
		"%u cached per thread, %s",
		min_nr, elem_size, stride, align, pool->cache_nr,
		pool->locked ? "locked" : "not locked");
	*poolp = pool;
	return 0;

fail:
	ioflusher_mempool_free(pool);
	return err;
}

_public_ void ioflusher_mempool_free(struct ioflusher_mempool *pool)
{
	struct ioflusher_ctx *ctx;
	unsigned int i, n;

	if (!pool)
		return;
	if (pool->have_key) {
		mp_key_mark(pool->key, false);
		pthread_key_delete(pool->key);
	}
#ifdef IOFLUSHER_DEBUG
	if (pool->depot) {
		struct ioflusher_mempool_stats st;

		ioflusher_mempool_stats(pool, &st, sizeof(st));
		if (st.in_use)
			log_err(pool->ctx,
				"mempool: freed with %llu elements in use",
				(unsigned long long)st.in_use);
	}
#endif
	n = atomic_load(&pool->nchunks);
	for (i = 0; i < n; i++)
		munmap(pool->chunks[i].map, pool->chunks[i].map_size);
	if (pool->depot)
		munmap(pool->depot, pool->depot_map_size);
	ctx = pool->ctx;
	munmap((char *)pool - MP_META_OFFSET, pool->meta_size);
	ioflusher_ctx_unref(ctx);
}

_public_ int ioflusher_mempool_resize(struct ioflusher_mempool *pool,
				      size_t min_nr)
{
	struct mp_chunk ch = { 0 };
	void **depot, **old;
	size_t total, map_size, old_size;
	struct mp_unlocked un = { 0 };
	unsigned int n;
	int err = 0;

	if (!pool)
		return -EINVAL;
	mp_lock(&pool->resize_lock);
	total = pool->total; /* only resize changes it */
	n = atomic_load(&pool->nchunks);
	if (min_nr < total)
		err = -EINVAL;
	else if (min_nr > total && n == MP_CHUNKS)
		err = -ENOSPC;
	if (err < 0 || min_nr == total)
		goto out;

	/* Everything that may fault or sleep happens before the lock. */
	err = add_chunk(pool, min_nr - total, &ch, &un);
	if (err < 0)
		goto out;
	depot = depot_map(pool, min_nr, &map_size, &un, &err);
	if (!depot) {
		munmap(ch.map, ch.map_size);
		goto out;
	}
	for (size_t i = 0; i < ch.nr; i++)
		depot[i] = (char *)ch.base + (ch.nr - 1 - i) * pool->stride;

	mp_lock(&pool->lock);
	memcpy(depot + ch.nr, pool->depot, pool->depot_count * sizeof(void *));
	old = pool->depot;
	old_size = pool->depot_map_size;
	pool->depot = depot;
	pool->depot_map_size = map_size;
	pool->depot_count += ch.nr;
	pool->depot_cap = min_nr;
	pool->total = min_nr;
	pool->chunks[n] = ch;
	atomic_store_explicit(&pool->nchunks, n + 1, memory_order_release);
	if (un.bytes)
		pool->locked = false;
	grant(pool);
	mp_unlock(&pool->lock);
	munmap(old, old_size);
	log_unlocked(pool->ctx, &un);
	log_dbg(pool->ctx, "mempool: grown to %zu elements", min_nr);
out:
	mp_unlock(&pool->resize_lock);
	return err;
}

/* ------------------------------------------------------------ alloc */

/*
 * Start fetching the end of a magazine that another thread wrote (or
 * read) where this one will use it first: the top for allocations, the
 * bottom for frees.  Sixteen lines (128 pointers): in the 64 B handoff
 * with magazines of 512, 4 lines left the pool 4 to 6% slower, and all 64
 * were no faster than 16.  The hardware's stream prefetcher follows the
 * rest; a prefetch on the fast path, 128 pointers ahead, made it slower.
 */
#define MP_PREFETCH_LINES 16
static void mag_prefetch(const struct ioflusher_mempool *pool, void **mag,
			 bool for_free)
{
	const size_t per_line = 64 / sizeof(void *);
	size_t i, lines = (pool->mag_nr + per_line - 1) / per_line;

	if (lines > MP_PREFETCH_LINES)
		lines = MP_PREFETCH_LINES;
	for (i = 0; i < lines; i++) {
		if (for_free)
			__builtin_prefetch(mag + i * per_line, 1);
		else
			__builtin_prefetch(
				mag + pool->mag_nr - 1 - i * per_line, 0);
	}
}

/* A trade at the depot, lock held: both magazines of c are empty; the
 * previous one goes to the depot for a full one, which is loaded. */
static void *trade_for_full(struct ioflusher_mempool *pool, struct mp_cache *c)
{
	void **full = pool->mags[--pool->nfull];

	pool->mags[pool->nfull] = c->prev;
	c->prev = c->loaded;
	c->loaded = full;
	mag_prefetch(pool, full, false);
	atomic_store_explicit(&c->n, pool->mag_nr - 1, RELAXED);
	note_high_water(pool);
	return pool->tops[pool->nfull];
}

/* The other way, lock held: the previous magazine of c is full and the
 * depot has room for one more; it goes there for an empty one. */
static void trade_for_empty(struct ioflusher_mempool *pool, struct mp_cache *c)
{
	void **empty = pool->mags[pool->nfull];

	pool->tops[pool->nfull] = c->prev[pool->mag_nr - 1];
	pool->mags[pool->nfull++] = c->prev;
	c->prev = empty;
	mag_prefetch(pool, empty, true);
}

static __attribute__((noinline)) void *
alloc_slow(struct ioflusher_mempool *pool, unsigned int flags)
{
	struct mp_cache *c = cache_get(pool);
	unsigned int top;
	void *elem;
	size_t n;

	if (c && !atomic_load_explicit(&c->n, RELAXED) &&
	    atomic_load_explicit(&c->prev_n, RELAXED))
		cache_swap(c);
	if (c && (top = atomic_load_explicit(&c->n, RELAXED))) {
		elem = c->loaded[top - 1];
		atomic_store_explicit(&c->n, top - 1, RELAXED);
		goto out;
	}
	mp_lock(&pool->lock);
	if (!pool->wait_head && c && pool->nfull && c->prev) {
		elem = trade_for_full(pool, c);
		mp_unlock(&pool->lock);
		goto out;
	}
	if (!pool->wait_head && depot_free(pool)) {
		depot_pop(pool, &elem, 1);
		if (c) {
			/* Refill the loaded magazine: the next mag_nr
			 * allocations take no lock. */
			n = depot_free(pool);
			if (n > pool->mag_nr)
				n = pool->mag_nr;
			depot_pop(pool, c->loaded, n);
			atomic_store_explicit(&c->n, (unsigned int)n, RELAXED);
		}
		mp_unlock(&pool->lock);
		goto out;
	}
	if (flags & IOFLUSHER_MEMPOOL_NOWAIT) {
		pool->refusals++;
		mp_unlock(&pool->lock);
		return NULL;
	}
	if (depot_wait(pool, &elem, 1, NULL) < 0)
		return NULL;
out:
	debug_alloc(pool, elem);
	return elem;
}

/*
 * NULL means invalid arguments or, with IOFLUSHER_MEMPOOL_NOWAIT, an
 * empty pool: a pointer return keeps the fast path a handful of
 * instructions, as mempool_alloc() does.
 */
_public_ void *ioflusher_mempool_alloc(struct ioflusher_mempool *pool,
				       unsigned int flags)
{
	const struct mp_tls *t;
	void *elem;

	if (_unlikely_(!pool ||
		       (flags & ~(unsigned int)IOFLUSHER_MEMPOOL_NOWAIT)))
		return NULL;
	t = &mp_tls[pool->serial & (MP_TLS_WAYS - 1)];
	if (_likely_(t->serial == pool->serial)) {
		struct mp_cache *c = t->cache;
		unsigned int top = atomic_load_explicit(&c->n, RELAXED);

		/* Empty: the previous magazine, if it has any, trades
		 * places with it here, without a call. */
		if (_unlikely_(!top) &&
		    (top = atomic_load_explicit(&c->prev_n, RELAXED)))
			cache_swap(c);
		if (_likely_(top)) {
			elem = c->loaded[--top];
			atomic_store_explicit(&c->n, top, RELAXED);
			debug_alloc(pool, elem);
			return elem;
		}
	}
	return alloc_slow(pool, flags);
}

/* The absolute deadline; false when it is beyond what time_t holds,
 * which is as good as waiting forever. */
static bool deadline_of(int64_t timeout_ns, struct timespec *ts)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_nsec += timeout_ns % 1000000000;
	if (ts->tv_nsec >= 1000000000) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000;
	}
	return !__builtin_add_overflow(ts->tv_sec, timeout_ns / 1000000000,
				       &ts->tv_sec);
}

_public_ int ioflusher_mempool_alloc_bulk(struct ioflusher_mempool *pool,
					  void **elems, size_t n,
					  int64_t timeout_ns)
{
	struct timespec deadline;
	bool has_deadline = false;
	struct mp_cache *c;
	size_t k = 0, i;
	int ret = 0;

	if (!pool || !elems || !n || timeout_ns < IOFLUSHER_MEMPOOL_FOREVER)
		return -EINVAL;
	c = cache_get(pool);
	if (c)
		k = cache_count(c);
	if (k >= n) {
		cache_pop(c, elems, (unsigned int)n);
		goto out;
	}
	if (timeout_ns > 0)
		has_deadline = deadline_of(timeout_ns, &deadline);

	mp_lock(&pool->lock);
	if (n > pool->total) {
		/* The reserve can never satisfy it: waiting would hang. */
		mp_unlock(&pool->lock);
		return -EINVAL;
	}
	if (!pool->wait_head && depot_free(pool) + k >= n) {
		depot_pop(pool, elems, n - k);
		mp_unlock(&pool->lock);
		if (k)
			cache_take_all(c, elems + n - k);
		goto out;
	}
	if (timeout_ns == 0) {
		pool->refusals++;
		mp_unlock(&pool->lock);
		return -EAGAIN;
	}
	/* All or nothing: wait holding no partial set, or two requests
	 * each holding half of what the other needs would wait forever. */
	if (k) {
		if (cache_drain(pool, c) < 0) {
			mp_unlock(&pool->lock);
			log_overflow(pool, 0);
			return -EINVAL;
		}
		grant(pool);
	}
	ret = depot_wait(pool, elems, n, has_deadline ? &deadline : NULL);
	if (ret < 0)
		return ret;
out:
	for (i = 0; i < n; i++)
		debug_alloc(pool, elems[i]);
	return 0;
}

_public_ int ioflusher_mempool_alloc_timeout(struct ioflusher_mempool *pool,
					     void **elemp, int64_t timeout_ns)
{
	return ioflusher_mempool_alloc_bulk(pool, elemp, 1, timeout_ns);
}

/* ------------------------------------------------------------ free */

/*
 * Elements validated: to the cache if it has room and no one waits, else
 * to the depot.  What is checked without the lock (free_limit) is checked
 * again whenever the lock is taken: past that, an element must not go into
 * a cache once a waiter has queued, or it could wait for it forever.  What
 * goes into a cache without the lock races with a waiter's arrival as the
 * fast path does, and is part of what the sizing rule reserves for caches.
 */
static int free_slow(struct ioflusher_mempool *pool, void *const *elems,
		     size_t n)
{
	struct mp_cache *c = cache_get(pool);
	unsigned int top = 0, pn;
	bool drained = true;
	size_t i;

	for (i = 0; i < n; i++)
		debug_free_end(pool, elems[i]);
	if (c)
		top = atomic_load_explicit(&c->n, RELAXED);
	/* free_limit is mag_nr, or 0 while anyone waits. */
	if (c && n <= atomic_load_explicit(&pool->free_limit, RELAXED)) {
		if (top + n <= pool->mag_nr) {
			cache_put(c, elems, n);
			return 0;
		}
		if (!c->prev)
			goto locked;
		pn = atomic_load_explicit(&c->prev_n, RELAXED);
		if (pn) {
			/* Both full: the previous magazine goes to the
			 * depot, for an empty one if one is there. */
			mp_lock(&pool->lock);
			if (pool->wait_head)
				goto to_depot;
			if (!depot_room(pool, pn))
				goto overflow;
			if (pn == pool->mag_nr && pool->nfull < MP_MAGS)
				trade_for_empty(pool, c);
			else
				depot_push(pool, c->prev, pn);
			atomic_store_explicit(&c->prev_n, 0, RELAXED);
			mp_unlock(&pool->lock);
		}
		cache_swap(c);
		cache_put(c, elems, n);
		return 0;
	}

locked:
	mp_lock(&pool->lock);
to_depot:
	if (!depot_room(pool, n))
		goto overflow;
	depot_push(pool, elems, n);
	/* Someone waits: what this thread cached must not strand them.  A
	 * cache too big for the depot holds elements freed twice (logged);
	 * it stays as it is, and these elements are back all the same. */
	if (c && pool->wait_head)
		drained = cache_drain(pool, c) == 0;
	grant(pool);
	mp_unlock(&pool->lock);
	if (!drained)
		log_overflow(pool, 0);
	return 0;

overflow:
	grant(pool);
	mp_unlock(&pool->lock);
	log_overflow(pool, 0);
	return -EINVAL;
}

/* Out of line, so that the fast path keeps elem in a register. */
static __attribute__((noinline)) int
free_slow_one(struct ioflusher_mempool *pool, void *elem)
{
	return free_slow(pool, &elem, 1);
}

#ifndef IOFLUSHER_DEBUG
static __attribute__((noinline)) int
free_foreign(struct ioflusher_mempool *pool, void *elem)
{
	if (debug_free_begin(pool, elem) < 0)
		return -EINVAL;
	return free_slow(pool, &elem, 1);
}
#endif

_public_ int ioflusher_mempool_free_elem(struct ioflusher_mempool *pool,
					 void *elem)
{
	const struct mp_tls *t;
#ifdef IOFLUSHER_DEBUG
	int ret;
#endif

	if (_unlikely_(!pool || !elem))
		return -EINVAL;
#ifdef IOFLUSHER_DEBUG
	ret = debug_free_begin(pool, elem);
	if (ret < 0)
		return ret;
#else
	if (_unlikely_(elem_index0(pool, elem) >= pool->nr0))
		return free_foreign(pool, elem);
#endif
	t = &mp_tls[pool->serial & (MP_TLS_WAYS - 1)];
	if (_likely_(t->serial == pool->serial)) {
		struct mp_cache *c = t->cache;
		unsigned int top = atomic_load_explicit(&c->n, RELAXED);

		/* A plain load: a waiter that queued a moment ago is
		 * served by the next free, like one that queued a moment
		 * later.  Elements already cached are part of what the
		 * sizing rule of ioflusher(7) reserves for caches. */
		unsigned int limit =
			atomic_load_explicit(&pool->free_limit, RELAXED);

		/* Full, and no one waits: an empty previous magazine
		 * trades places with it here, without a call. */
		if (_unlikely_(top >= limit) && limit && c->prev &&
		    !atomic_load_explicit(&c->prev_n, RELAXED)) {
			cache_swap(c);
			top = 0;
		}
		if (_likely_(top < limit)) {
			debug_free_end(pool, elem);
			c->loaded[top] = elem;
			atomic_store_explicit(&c->n, top + 1, RELAXED);
			return 0;
		}
	}
	return free_slow_one(pool, elem);
}

_public_ int ioflusher_mempool_free_bulk(struct ioflusher_mempool *pool,
					 void *const *elems, size_t n)
{
	size_t i, j;
	int ret;

	if (!pool || !elems || !n)
		return -EINVAL;
	/* All or nothing: check every element before freeing one. */
	for (i = 0; i < n; i++) {
		ret = elems[i] ? debug_free_begin(pool, elems[i]) : -EINVAL;
		if (ret < 0) {
			for (j = 0; j < i; j++)
				debug_free_undo(pool, elems[j]);
			return ret;
		}
	}
	return free_slow(pool, elems, n);
}

_public_ int ioflusher_mempool_flush(struct ioflusher_mempool *pool)
{
	struct mp_cache *c;
	int r;

	if (!pool)
		return -EINVAL;
	/* cache_get(): a thread may call this first to claim its cache. */
	c = cache_get(pool);
	if (!c)
		return 0;
	mp_lock(&pool->lock);
	r = cache_drain(pool, c);
	grant(pool);
	mp_unlock(&pool->lock);
	if (r < 0)
		log_overflow(pool, 0);
	return r;
}

_public_ int ioflusher_mempool_stats(const struct ioflusher_mempool *cpool,
				     struct ioflusher_mempool_stats *stats,
				     size_t size)
{
	/* The lock is the only thing written; the pool is not changed. */
	struct ioflusher_mempool *pool = (struct ioflusher_mempool *)cpool;
	struct ioflusher_mempool_stats st = { 0 };
	unsigned int i, n;

	if (!pool || !stats || size < sizeof(uint64_t))
		return -EINVAL;
	st.elem_size = pool->elem_size;
	st.stride = pool->stride;
	st.cache_nr = pool->cache_nr;
	mp_lock(&pool->lock);
	for (i = 0; pool->slots && i < MP_CACHE_SLOTS; i++)
		st.cached += cache_count_racy(pool, slot(pool, i));
	st.min_nr = pool->total;
	/* Racy reads of the caches may add up to more than there is. */
	if (st.cached > pool->total - depot_free(pool))
		st.cached = pool->total - depot_free(pool);
	st.free = depot_free(pool) + st.cached;
	st.in_use = st.min_nr - st.free;
	st.high_water = pool->high_water;
	st.waits = pool->waits;
	st.wait_ns = pool->wait_ns;
	st.timeouts = pool->timeouts;
	st.refusals = pool->refusals;
	st.bytes = pool->meta_size + pool->depot_map_size;
	n = atomic_load(&pool->nchunks);
	for (i = 0; i < n; i++)
		st.bytes += pool->chunks[i].map_size;
	st.locked = pool->locked;
	mp_unlock(&pool->lock);
	if (size > sizeof(st)) {
		memset((char *)stats + sizeof(st), 0, size - sizeof(st));
		size = sizeof(st);
	}
	memcpy(stats, &st, size);
	return 0;
}
