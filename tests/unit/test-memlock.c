// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Memory locking and pre-faulting, checked against the kernel: VmLck and
 * "Locked:" in /proc, mincore() for what is resident, and the thread's
 * minor faults for what pre-faulting saves.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <locale.h>
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "helpers.h"
#include "ioflusher.h"

#define KIB (UINT64_C(1) << 10)
#define MIB (UINT64_C(1) << 20)

static uint64_t vmlck_bytes(void)
{
	uint64_t kib = 0;

	cr_assert(eq(int, status_u64(0, "VmLck", 10, &kib), 0));
	return kib * KIB;
}

static uint64_t rlim_u64(rlim_t v)
{
	return v == RLIM_INFINITY ? UINT64_MAX : (uint64_t)v;
}

static void without_ipc_lock(uint64_t soft, uint64_t hard)
{
	cr_assert(eq(int, drop_capability(CAP_IPC_LOCK), 0));
	cr_assert(eq(int, ioflusher_caps_have(CAP_IPC_LOCK), 0));
	cr_assert(eq(int, set_memlock_limit(soft, hard), 0));
}

static void need_ipc_lock(void)
{
	if (ioflusher_caps_have(CAP_IPC_LOCK) != 1)
		cr_skip("needs CAP_IPC_LOCK");
}

/* Pages of a fresh anonymous mapping resident right after mmap(). */
static int fresh_mapping_resident(size_t pages)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	unsigned char vec[64];
	int resident = 0;
	void *p;

	cr_assert(le(sz, pages, sizeof(vec)));
	p = mmap(NULL, pages * page, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert(ne(ptr, p, MAP_FAILED));
	cr_assert(eq(int, mincore(p, pages * page, vec), 0));
	for (size_t i = 0; i < pages; i++)
		resident += vec[i] & 1;
	munmap(p, pages * page);
	return resident;
}

Test(memlock, limit_agrees_with_getrlimit)
{
	uint64_t soft = 1, hard = 1, only;
	struct rlimit rl;

	cr_assert(eq(int, getrlimit(RLIMIT_MEMLOCK, &rl), 0));
	cr_assert(eq(int, ioflusher_memlock_limit(&soft, &hard), 0));
	cr_assert(eq(u64, soft, rlim_u64(rl.rlim_cur)));
	cr_assert(eq(u64, hard, rlim_u64(rl.rlim_max)));
	cr_assert(eq(int, ioflusher_memlock_limit(&only, NULL), 0));
	cr_assert(eq(u64, only, soft));
	cr_assert(eq(int, ioflusher_memlock_limit(NULL, &only), 0));
	cr_assert(eq(u64, only, hard));
	cr_assert(eq(int, ioflusher_memlock_limit(NULL, NULL), -EINVAL));
}

Test(memlock, raise_limit_within_hard)
{
	struct rlimit rl;

	cr_assert(eq(int, set_memlock_limit(64 * KIB, 4 * MIB), 0));
	cr_assert(eq(int, ioflusher_memlock_raise_limit(1 * MIB), 0));
	cr_assert(eq(int, getrlimit(RLIMIT_MEMLOCK, &rl), 0));
	cr_assert(eq(u64, (uint64_t)rl.rlim_cur, 1 * MIB));
	cr_assert(eq(u64, (uint64_t)rl.rlim_max, 4 * MIB));
	/* Never lowers. */
	cr_assert(eq(int, ioflusher_memlock_raise_limit(64 * KIB), 0));
	cr_assert(eq(int, getrlimit(RLIMIT_MEMLOCK, &rl), 0));
	cr_assert(eq(u64, (uint64_t)rl.rlim_cur, 1 * MIB));
	cr_assert(eq(int, ioflusher_memlock_raise_limit(4 * MIB), 0));
	cr_assert(eq(int, getrlimit(RLIMIT_MEMLOCK, &rl), 0));
	cr_assert(eq(u64, (uint64_t)rl.rlim_cur, 4 * MIB));
}

Test(memlock, raise_limit_beyond_hard_eperm)
{
	struct rlimit rl;

	/* Raising the hard limit needs CAP_SYS_RESOURCE. */
	cr_assert(eq(int, drop_capability(CAP_SYS_RESOURCE), 0));
	cr_assert(eq(int, set_memlock_limit(64 * KIB, 1 * MIB), 0));
	cr_assert(
	    eq(int, ioflusher_memlock_raise_limit(1 * MIB + 4 * KIB), -EPERM));
	cr_assert(eq(int, getrlimit(RLIMIT_MEMLOCK, &rl), 0));
	cr_assert(eq(u64, (uint64_t)rl.rlim_cur, 64 * KIB));
	cr_assert(eq(u64, (uint64_t)rl.rlim_max, 1 * MIB));
}

Test(memlock, all_without_ipc_lock_over_limit)
{
	int r;

	skip_under_asan("mlockall()");
	without_ipc_lock(64 * KIB, 64 * KIB);
	r = ioflusher_memlock_all(0);
	cr_assert(eq(int, r, -ENOMEM));
	cr_assert(eq(int, ioflusher_diagnose(IOFLUSHER_PROTECT_MEMLOCK, r),
		     IOFLUSHER_REASON_LIMIT));
	cr_assert(zero(u64, vmlck_bytes()));
}

Test(memlock, all_without_ipc_lock_limit_zero)
{
	int r;

	skip_under_asan("mlockall()");
	without_ipc_lock(0, 0);
	r = ioflusher_memlock_all(0);
	cr_assert(eq(int, r, -EPERM));
	cr_assert(eq(int, ioflusher_diagnose(IOFLUSHER_PROTECT_MEMLOCK, r),
		     IOFLUSHER_REASON_LIMIT));
	cr_assert(zero(u64, vmlck_bytes()));
}

Test(memlock, all_without_ipc_lock_takes_hard_limit)
{
	struct rlimit rl;

	skip_under_asan("mlockall()");
	/* A soft limit of 0 would be EPERM: the library raises it to the
	 * hard limit first, and the process is still larger (ENOMEM). */
	without_ipc_lock(0, 64 * KIB);
	cr_assert(eq(int, ioflusher_memlock_all(0), -ENOMEM));
	cr_assert(eq(int, getrlimit(RLIMIT_MEMLOCK, &rl), 0));
	cr_assert(eq(u64, (uint64_t)rl.rlim_cur, 64 * KIB));
}

Test(memlock, all_with_ipc_lock)
{
	uint64_t locked = 0;

	skip_under_asan("mlockall()");
	need_ipc_lock();
	cr_assert(eq(int, ioflusher_memlock_locked(0, &locked), 0));
	cr_assert(zero(u64, locked));
	cr_assert(zero(int, fresh_mapping_resident(16)));
	/* Far beyond RLIMIT_MEMLOCK: CAP_IPC_LOCK lifts it. */
	cr_assert(eq(int, set_memlock_limit(64 * KIB, 64 * KIB), 0));
	cr_assert(eq(int, ioflusher_memlock_all(0), 0));
	cr_assert(eq(int, ioflusher_memlock_locked(0, &locked), 0));
	cr_assert(gt(u64, locked, 64 * KIB));
	cr_assert(gt(u64, vmlck_bytes(), 64 * KIB));
	/* MCL_FUTURE: a new mapping is faulted in and locked at once. */
	cr_assert(eq(int, fresh_mapping_resident(16), 16));
}

Test(memlock, all_onfault)
{
	skip_under_asan("mlockall()");
	need_ipc_lock();
	cr_assert(eq(int, ioflusher_memlock_all(IOFLUSHER_MEMLOCK_ONFAULT), 0));
	cr_assert(gt(u64, vmlck_bytes(), 0));
	/* MCL_ONFAULT: locked as touched, not faulted in by the lock. */
	cr_assert(zero(int, fresh_mapping_resident(16)));
}

/* With CAP_IPC_LOCK the limit does not apply: FUTURE_IF_UNLIMITED keeps
 * MCL_FUTURE.  (Without it, under a limit that holds the process, the
 * VM's root suite checks that MCL_FUTURE is left out: the limit must be
 * raised above this test's size, which needs CAP_SYS_RESOURCE.) */
Test(memlock, future_if_unlimited_keeps_it_with_ipc_lock)
{
	skip_under_asan("mlockall()");
	need_ipc_lock();
	cr_assert(eq(int, set_memlock_limit(64 * KIB, 64 * KIB), 0));
	cr_assert(eq(int,
		     ioflusher_memlock_all(IOFLUSHER_MEMLOCK_FUTURE_IF_UNLIMITED),
		     0));
	/* MCL_FUTURE: a new mapping is faulted in and locked at once. */
	cr_assert(eq(int, fresh_mapping_resident(16), 16));
}

Test(memlock, all_bad_flags)
{
	cr_assert(eq(int, ioflusher_memlock_all(4), -EINVAL));
	cr_assert(eq(int, ioflusher_memlock_all(~0u), -EINVAL));
	cr_assert(zero(u64, vmlck_bytes()));
}

Test(memlock, all_refused_by_filter_is_sandbox)
{
	int r;

	skip_under_asan("mlockall()");
	need_ipc_lock();
	cr_assert(eq(int, install_syscall_filter(SYS_mlockall, EPERM), 0));
	r = ioflusher_memlock_all(0);
	cr_assert(eq(int, r, -EPERM));
	cr_assert(eq(int, ioflusher_diagnose(IOFLUSHER_PROTECT_MEMLOCK, r),
		     IOFLUSHER_REASON_SANDBOX));
}

Test(memlock, all_enosys_is_sandbox)
{
	int r;

	skip_under_asan("mlockall()");
	cr_assert(eq(int, install_syscall_filter(SYS_mlockall, ENOSYS), 0));
	r = ioflusher_memlock_all(0);
	cr_assert(eq(int, r, -ENOSYS));
	cr_assert(eq(int, ioflusher_diagnose(IOFLUSHER_PROTECT_MEMLOCK, r),
		     IOFLUSHER_REASON_SANDBOX));
}

Test(memlock, onfault_einval_is_kernel)
{
	int r;

	/* What a kernel before 4.4 answers to MCL_ONFAULT. */
	skip_under_asan("mlockall()");
	cr_assert(eq(int, install_syscall_filter(SYS_mlockall, EINVAL), 0));
	r = ioflusher_memlock_all(IOFLUSHER_MEMLOCK_ONFAULT);
	cr_assert(eq(int, r, -EINVAL));
	cr_assert(eq(int, ioflusher_diagnose(IOFLUSHER_PROTECT_MEMLOCK, r),
		     IOFLUSHER_REASON_KERNEL));
}

Test(memlock, enomem_with_ipc_lock_is_no_memory)
{
	skip_under_asan("mlockall()");
	need_ipc_lock();
	cr_assert(eq(int, install_syscall_filter(SYS_mlockall, ENOMEM), 0));
	cr_assert(eq(int, ioflusher_memlock_all(0), -ENOMEM));
	cr_assert(eq(int,
		     ioflusher_diagnose(IOFLUSHER_PROTECT_MEMLOCK, -ENOMEM),
		     IOFLUSHER_REASON_NO_MEMORY));
	cr_assert(eq(int,
		     ioflusher_diagnose(IOFLUSHER_PROTECT_MEMLOCK, -EAGAIN),
		     IOFLUSHER_REASON_NO_MEMORY));
}

static int lock_one_page(void *arg)
{
	static char page[1 << 16] __attribute__((aligned(1 << 16)));

	page[0] = 1;
	return mlock(page, 4096) < 0 ? -errno : 0;
}

Test(memlock, locked_of_another_process)
{
	uint64_t bytes = 0;
	struct child c;
	pid_t gone;

	skip_under_asan("mlock()");
	need_ipc_lock();
	/* Memory locks are not inherited: the child locks its own page. */
	cr_assert(eq(int, child_start(&c, lock_one_page, NULL), 0));
	cr_assert(eq(int, ioflusher_memlock_locked(c.pid, &bytes), 0));
	cr_assert(eq(int, child_stop(&c), 0));
	cr_assert(eq(u64, bytes, 4 * KIB));
	cr_assert(eq(int, ioflusher_memlock_locked(0, &bytes), 0));
	cr_assert(zero(u64, bytes));
	gone = unused_pid();
	cr_assert(gt(int, gone, 0));
	cr_assert(eq(int, ioflusher_memlock_locked(gone, &bytes), -ESRCH));
}

Test(memlock, locked_invalid)
{
	uint64_t bytes;

	cr_assert(eq(int, ioflusher_memlock_locked(-1, &bytes), -EINVAL));
	cr_assert(eq(int, ioflusher_memlock_locked(0, NULL), -EINVAL));
}

Test(memlock, check_with_ipc_lock)
{
	need_ipc_lock();
	cr_assert(eq(int, set_memlock_limit(0, 0), 0));
	cr_assert(eq(int, ioflusher_memlock_check(UINT64_MAX), 0));
}

Test(memlock, check_against_limit)
{
	without_ipc_lock(64 * KIB, 64 * KIB);
	cr_assert(eq(int, ioflusher_memlock_check(4 * KIB), 0));
	cr_assert(eq(int, ioflusher_memlock_check(64 * KIB), 0));
	cr_assert(eq(int, ioflusher_memlock_check(64 * KIB + 1), -ENOMEM));
	cr_assert(eq(int, ioflusher_memlock_check(UINT64_MAX), -ENOMEM));
	cr_assert(eq(int, set_memlock_limit(0, 0), 0));
	cr_assert(eq(int, ioflusher_memlock_check(1), -EPERM));
}

Test(memlock, check_counts_what_is_locked)
{
	static char area[8 << 12] __attribute__((aligned(1 << 12)));

	skip_under_asan("mlock()");
	without_ipc_lock(64 * KIB, 64 * KIB);
	memset(area, 1, sizeof(area));
	cr_assert(eq(int, mlock(area, sizeof(area)), 0));
	cr_assert(eq(u64, vmlck_bytes(), 32 * KIB));
	cr_assert(eq(int, ioflusher_memlock_check(32 * KIB), 0));
	cr_assert(eq(int, ioflusher_memlock_check(32 * KIB + 1), -ENOMEM));
}

Test(memlock, prefault_stack_reasonable)
{
	cr_assert(eq(int, ioflusher_memlock_prefault_stack(256 * KIB), 0));
	cr_assert(eq(int, ioflusher_memlock_prefault_stack(0), 0));
}

Test(memlock, prefault_stack_larger_than_stack)
{
	struct rlimit rl;
	int r;

	cr_assert(eq(int, getrlimit(RLIMIT_STACK, &rl), 0));
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 64 * MIB)
		cr_skip("RLIMIT_STACK is unlimited or huge");
	r = ioflusher_memlock_prefault_stack((size_t)rl.rlim_cur);
	cr_assert(eq(int, r, -E2BIG));
	cr_assert(eq(int, ioflusher_diagnose(IOFLUSHER_PROTECT_PREFAULT, r),
		     IOFLUSHER_REASON_LIMIT));
	cr_assert(eq(int, ioflusher_memlock_prefault_stack(SIZE_MAX), -E2BIG));
}

struct in_thread {
	size_t fits, too_big;
	int fits_r, too_big_r;
};

static void *prefault_in_thread(void *arg)
{
	struct in_thread *t = arg;

	t->fits_r = ioflusher_memlock_prefault_stack(t->fits);
	t->too_big_r = ioflusher_memlock_prefault_stack(t->too_big);
	return NULL;
}

Test(memlock, prefault_stack_of_a_thread)
{
	/* Another thread's stack is its mapping, not RLIMIT_STACK. */
	struct in_thread t = {.fits = 128 * KIB, .too_big = 512 * KIB};
	pthread_attr_t attr;
	pthread_t thread;

	cr_assert(zero(int, pthread_attr_init(&attr)));
	cr_assert(zero(int, pthread_attr_setstacksize(&attr, 512 * KIB)));
	cr_assert(
	    zero(int, pthread_create(&thread, &attr, prefault_in_thread, &t)));
	pthread_join(thread, NULL);
	pthread_attr_destroy(&attr);
	cr_assert(eq(int, t.fits_r, 0));
	cr_assert(eq(int, t.too_big_r, -E2BIG));
}

/* "Locked:" of the mapping that holds addr, in bytes, from smaps;
 * UINT64_MAX when smaps cannot be read.  No cr_assert(): it is called
 * from threads other than the test's. */
static uint64_t locked_at(uintptr_t addr)
{
	FILE *f = fopen("/proc/self/smaps", "re");
	uint64_t kib = 0;
	bool in = false;
	char line[512];

	if (!f)
		return UINT64_MAX;
	while (fgets(line, sizeof(line), f)) {
		unsigned long start, end, v;

		if (sscanf(line, "%lx-%lx ", &start, &end) == 2)
			in = start <= addr && addr < end;
		else if (in && sscanf(line, "Locked: %lu kB", &v) == 1)
			kib = v;
	}
	fclose(f);
	return kib * KIB;
}

/* 1 when every page from addr up, of len bytes, is resident (mincore),
 * 0 when one is not, -1 when it cannot be told.  No cr_assert(), as
 * above. */
static int all_resident(uintptr_t addr, size_t len)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	uintptr_t start = addr & ~(uintptr_t)(page - 1);
	size_t pages = (addr + len - start + page - 1) / page;
	unsigned char vec[256];

	if (pages > sizeof(vec) ||
	    mincore((void *)start, pages * page, vec) < 0)
		return -1;
	for (size_t i = 0; i < pages; i++)
		if (!(vec[i] & 1))
			return 0;
	return 1;
}

struct new_stack {
	int r;
	uint64_t locked;
	int resident;
};

#define NEW_STACK (512 * KIB)
#define NEW_STACK_USED (128 * KIB)

static void *prefault_new_stack(void *arg)
{
	struct new_stack *t = arg;
	char here;

	t->r = ioflusher_memlock_prefault_stack(NEW_STACK_USED);
	t->locked = locked_at((uintptr_t)&here);
	t->resident =
		all_resident((uintptr_t)&here - NEW_STACK_USED, NEW_STACK_USED);
	return NULL;
}

/* A thread created now, with a stack mapping of its own, pre-faults it. */
static struct new_stack in_new_thread(void)
{
	struct new_stack t = { .r = -1 };
	pthread_attr_t attr;
	pthread_t thread;

	cr_assert(zero(int, pthread_attr_init(&attr)));
	cr_assert(zero(int, pthread_attr_setstacksize(&attr, NEW_STACK)));
	cr_assert(zero(int,
		       pthread_create(&thread, &attr, prefault_new_stack, &t)));
	pthread_join(thread, NULL);
	pthread_attr_destroy(&attr);
	return t;
}

Test(memlock, prefault_stack_locks_nothing_unasked)
{
	struct new_stack t;

	/* Nothing locked the process: pre-faulting locks nothing either.
	 * That it locks a new thread's stack after mlockall() without
	 * MCL_FUTURE needs a limit above this process's size without
	 * CAP_IPC_LOCK, which only root can set: tests/vm/vm-suite.c. */
	t = in_new_thread();
	cr_assert(eq(int, t.r, 0));
	cr_assert(zero(u64, t.locked));
	cr_assert(eq(int, t.resident, 1));
}

/* Touch bytes of stack below the caller, top down, as a deep call chain
 * on the IO path would. */
static __attribute__((noinline)) void touch_stack(size_t bytes)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	volatile char *area = __builtin_alloca(bytes);

	for (size_t off = bytes; off >= page; off -= page)
		area[off - 1] = 1;
	area[0] = 1;
	__asm__ volatile("" : : "r"(area) : "memory");
}

static __attribute__((noinline)) long faults_touching_stack(size_t bytes)
{
	long before = thread_minflt();

	touch_stack(bytes);
	return thread_minflt() - before;
}

#define STACK_RESERVE (2 * MIB)
#define STACK_TOUCHED (STACK_RESERVE - 64 * KIB)

Test(memlock, stack_faults_without_prefault)
{
	long pages = (long)(STACK_TOUCHED / 4096);

	/* The measurement itself: untouched stack faults page by page. */
	cr_assert(eq(int, disable_thp(), 0));
	cr_assert(ge(long, faults_touching_stack(STACK_TOUCHED), pages / 2));
}

Test(memlock, prefault_stack_faults_in)
{
	long pages = (long)(STACK_TOUCHED / 4096);

	cr_assert(eq(int, disable_thp(), 0));
	cr_assert(eq(int, ioflusher_memlock_prefault_stack(STACK_RESERVE), 0));
	cr_assert(lt(long, faults_touching_stack(STACK_TOUCHED), pages / 8));
}

#define HEAP_RESERVE (4 * MIB)
#define HEAP_USED    (HEAP_RESERVE - 128 * KIB)

static long faults_touching_heap(size_t bytes)
{
	volatile char *p;
	long before;

	p = malloc(bytes);
	cr_assert(not(zero(ptr, (void *)p)));
	before = thread_minflt();
	for (size_t off = 0; off < bytes; off += 4096)
		p[off] = 1;
	before = thread_minflt() - before;
	free((void *)p);
	return before;
}

Test(memlock, heap_faults_without_prefault)
{
	skip_under_asan("mallopt()");
	cr_assert(eq(int, disable_thp(), 0));
	/* The library's malloc settings, without its reserve. */
	cr_assert(eq(int, mallopt(M_TRIM_THRESHOLD, -1), 1));
	cr_assert(eq(int, mallopt(M_MMAP_MAX, 0), 1));
	cr_assert(ge(long, faults_touching_heap(HEAP_USED),
		     (long)(HEAP_USED / 4096 / 2)));
}

Test(memlock, prefault_heap_faults_in)
{
	skip_under_asan("mallopt()");
	cr_assert(eq(int, disable_thp(), 0));
	cr_assert(eq(int, ioflusher_memlock_prefault_heap(HEAP_RESERVE), 0));
	cr_assert(lt(long, faults_touching_heap(HEAP_USED),
		     (long)(HEAP_USED / 4096 / 8)));
	cr_assert(eq(int, ioflusher_memlock_prefault_heap(0), 0));
}

struct heap_probe {
	size_t bytes;
	long faults;
};

static void *thread_touching_heap(void *arg)
{
	struct heap_probe *hp = arg;

	hp->faults = faults_touching_heap(hp->bytes);
	return NULL;
}

/* The reserve serves the other threads too: their malloc() comes from the
 * same arena, not from one of their own that faults page by page. */
Test(memlock, prefault_heap_serves_other_threads)
{
	struct heap_probe hp = { HEAP_USED, 0 };
	pthread_t t;

	skip_under_asan("mallopt()");
	cr_assert(eq(int, disable_thp(), 0));
	cr_assert(eq(int, ioflusher_memlock_prefault_heap(HEAP_RESERVE), 0));
	cr_assert(eq(int, pthread_create(&t, NULL, thread_touching_heap, &hp),
		     0));
	pthread_join(t, NULL);
	cr_assert(lt(long, hp.faults, (long)(HEAP_USED / 4096 / 8)),
		  "%ld faults in a thread", hp.faults);
}

Test(memlock, prefault_heap_too_big)
{
	int r;

	/* AddressSanitizer would abort on the allocation, not fail it. */
	skip_under_asan("mallopt()");
	need_ipc_lock();
	r = ioflusher_memlock_prefault_heap(SIZE_MAX / 2);
	cr_assert(eq(int, r, -ENOMEM));
	cr_assert(eq(int, ioflusher_diagnose(IOFLUSHER_PROTECT_PREFAULT, r),
		     IOFLUSHER_REASON_NO_MEMORY));
}

static void map_locale(struct mapping_lock *before)
{
	/* Loads /usr/lib/locale/C.utf8/LC_* (or the locale archive). */
	cr_assert(not(zero(ptr, setlocale(LC_ALL, "C.UTF-8"))));
	cr_assert(eq(int, smaps_lock_state("/usr/lib/locale/", before), 0));
	if (before->mappings == 0)
		cr_skip(
		    "setlocale(C.UTF-8) mapped nothing under /usr/lib/locale");
	cr_assert(zero(int, before->locked));
}

Test(memlock, maps_default_skips_locale)
{
	struct mapping_lock locale, stack;
	uint64_t bytes = 0;
	int r;

	skip_under_asan("mlock()");
	need_ipc_lock();
	map_locale(&locale);
	r = ioflusher_memlock_maps(NULL, &bytes);
	cr_assert(gt(int, r, 0));
	cr_assert(gt(u64, bytes, 0));
	cr_assert(eq(int, smaps_lock_state("/usr/lib/locale/", &locale), 0));
	cr_assert(gt(int, locale.mappings, 0));
	cr_assert(zero(int, locale.locked));
	cr_assert(zero(u64, locale.kib));
	/* The rest is locked. */
	cr_assert(eq(int, smaps_lock_state("[stack]", &stack), 0));
	cr_assert(eq(int, stack.locked, 1));
	cr_assert(gt(u64, stack.kib, 0));
}

Test(memlock, maps_empty_list_locks_locale)
{
	const char *const nothing[] = {NULL};
	struct mapping_lock locale;

	skip_under_asan("mlock()");
	need_ipc_lock();
	map_locale(&locale);
	cr_assert(gt(int, ioflusher_memlock_maps(nothing, NULL), 0));
	cr_assert(eq(int, smaps_lock_state("/usr/lib/locale/", &locale), 0));
	cr_assert(eq(int, locale.locked, locale.mappings));
	cr_assert(gt(u64, locale.kib, 0));
}

Test(memlock, maps_own_skip_pattern)
{
	const char *const skip[] = {"*/ioflusher-unit-*", NULL};
	const char *const nothing[] = {NULL};
	char path[] = "/tmp/ioflusher-unit-XXXXXX";
	struct mapping_lock mine;
	char data[16 * 1024];
	void *p;
	int fd;

	skip_under_asan("mlock()");
	need_ipc_lock();
	fd = mkostemp(path, O_CLOEXEC);
	cr_assert(ge(int, fd, 0));
	memset(data, 'x', sizeof(data));
	cr_assert(
	    eq(long, (long)write(fd, data, sizeof(data)), (long)sizeof(data)));
	p = mmap(NULL, sizeof(data), PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	unlink(path); /* the mapping keeps the file: "... (deleted)" */
	cr_assert(ne(ptr, p, MAP_FAILED));

	cr_assert(gt(int, ioflusher_memlock_maps(skip, NULL), 0));
	cr_assert(eq(int, smaps_lock_state("/ioflusher-unit-", &mine), 0));
	cr_assert(eq(int, mine.mappings, 1));
	cr_assert(zero(int, mine.locked));

	cr_assert(gt(int, ioflusher_memlock_maps(nothing, NULL), 0));
	cr_assert(eq(int, smaps_lock_state("/ioflusher-unit-", &mine), 0));
	cr_assert(eq(int, mine.locked, 1));
	cr_assert(eq(u64, mine.kib, sizeof(data) / KIB));
	munmap(p, sizeof(data));
}
