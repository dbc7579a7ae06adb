// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Memory locking and pre-faulting.
 *
 * A page of the daemon that is swapped out, or a file-backed page of its
 * code that reclaim dropped, must be read back in when the IO path touches
 * it: that read may wait behind the very IO the daemon is serving.
 * mlockall(MCL_CURRENT | MCL_FUTURE) keeps everything resident; locking
 * also faults the pages in, except with MCL_ONFAULT (Linux 4.4), which
 * locks pages as they are first touched and so saves memory but not the
 * first fault: pre-fault what the IO path will touch.
 *
 * Without CAP_IPC_LOCK (checked with capable(), in the initial user
 * namespace) the kernel allows locking up to RLIMIT_MEMLOCK: EPERM when it
 * is 0, ENOMEM when the process is larger (mm/mlock.c).  Memory locks are
 * not inherited by fork() and are dropped by execve().
 */
#include <errno.h>
#include <fnmatch.h>
#include <linux/capability.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "private.h"

static uint64_t rlim_to_u64(rlim_t v)
{
	return v == RLIM_INFINITY ? UINT64_MAX : (uint64_t)v;
}

static rlim_t u64_to_rlim(uint64_t v)
{
	return v == UINT64_MAX ? RLIM_INFINITY : (rlim_t)v;
}

_public_ int ioflusher_memlock_limit(uint64_t *soft, uint64_t *hard)
{
	struct rlimit rl;

	if (!soft && !hard)
		return -EINVAL;
	if (getrlimit(RLIMIT_MEMLOCK, &rl) < 0)
		return -errno;
	if (soft)
		*soft = rlim_to_u64(rl.rlim_cur);
	if (hard)
		*hard = rlim_to_u64(rl.rlim_max);
	return 0;
}

_public_ int ioflusher_memlock_raise_limit(uint64_t bytes)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_MEMLOCK, &rl) < 0)
		return -errno;
	if (rlim_to_u64(rl.rlim_cur) >= bytes)
		return 0;
	rl.rlim_cur = u64_to_rlim(bytes);
	/* Raising the hard limit needs CAP_SYS_RESOURCE; EPERM without. */
	if (rlim_to_u64(rl.rlim_max) < bytes)
		rl.rlim_max = rl.rlim_cur;
	if (setrlimit(RLIMIT_MEMLOCK, &rl) < 0)
		return -errno;
	return 0;
}

_public_ int ioflusher_memlock_locked(pid_t pid, uint64_t *bytes)
{
	uint64_t kib;
	int r;

	if (pid < 0 || !bytes)
		return -EINVAL;
	r = proc_status_u64(pid, "VmLck", 10, &kib);
	if (r == -ENOENT && pid) {
		char path[32];

		/* No /proc/PID: no such process, -ESRCH as ioflusher_oom_get()
		 * and ioflusher_audit_new() answer.  (A kernel thread has
		 * /proc/PID but no VmLck line: that stays -ENOENT.) */
		snprintf(path, sizeof(path), "/proc/%d", (int)pid);
		if (access(path, F_OK) < 0 && errno == ENOENT)
			return -ESRCH;
	}
	if (r < 0)
		return r;
	*bytes = kib * 1024;
	return 0;
}

_public_ int ioflusher_memlock_check(uint64_t bytes)
{
	uint64_t soft, locked;
	int r;

	if (caps_counted(CAP_IPC_LOCK))
		return 0;
	r = ioflusher_memlock_limit(&soft, NULL);
	if (r < 0)
		return r;
	if (soft == 0)
		return -EPERM;
	r = ioflusher_memlock_locked(0, &locked);
	if (r < 0)
		return r;
	if (soft != UINT64_MAX && (locked > soft || bytes > soft - locked))
		return -ENOMEM;
	return 0;
}

/*
 * How ioflusher_memlock_all() last locked the process.  MEMLOCK_CURRENT:
 * what was mapped, MCL_FUTURE left out, so the stack of a thread created
 * since is a new mapping, not locked, and ioflusher_memlock_prefault_stack()
 * locks it itself.  Either way the main thread's stack is locked, and may
 * grow only within RLIMIT_MEMLOCK.  A forked child inherits no lock, so
 * its copy is cleared.
 */
enum { MEMLOCK_NONE, MEMLOCK_ALL, MEMLOCK_CURRENT };
static _Atomic int memlock_state;
static pthread_once_t memlock_atfork_once = PTHREAD_ONCE_INIT;

static void memlock_atfork_child(void)
{
	atomic_store_explicit(&memlock_state, MEMLOCK_NONE,
			      memory_order_relaxed);
}

static void memlock_atfork_register(void)
{
	/* Out of memory, the child keeps the parent's record: it then
	 * mlock()s new threads' stacks, which is harmless. */
	(void)pthread_atfork(NULL, NULL, memlock_atfork_child);
}

_public_ int ioflusher_memlock_all(unsigned int flags)
{
	int mcl = MCL_CURRENT | MCL_FUTURE;
	uint64_t soft, hard;

	if (flags & ~MEMLOCK_FLAGS)
		return -EINVAL;
	if (flags & IOFLUSHER_MEMLOCK_ONFAULT)
		mcl |= MCL_ONFAULT;
	/* Without CAP_IPC_LOCK the soft limit is all we may lock: take what
	 * the hard limit allows.  With it, the limit does not apply now, but
	 * it does to every mapping made under MCL_FUTURE once the daemon has
	 * dropped CAP_IPC_LOCK: raise it either way. */
	{
		int r = ioflusher_memlock_limit(NULL, &hard);

		if (r == 0)
			r = ioflusher_memlock_raise_limit(hard);
		if (r < 0 && !caps_counted(CAP_IPC_LOCK))
			return r;
	}
	/* Under MCL_FUTURE, without CAP_IPC_LOCK, every later mapping is
	 * charged whole to the limit, and refused beyond it (EAGAIN: the
	 * heap, thread stacks, the daemon's buffers): left out on request,
	 * what is mapped from now on is not locked, but can be mapped. */
	if ((flags & IOFLUSHER_MEMLOCK_FUTURE_IF_UNLIMITED) &&
	    !caps_counted(CAP_IPC_LOCK) &&
	    (ioflusher_memlock_limit(&soft, NULL) < 0 || soft != UINT64_MAX))
		mcl &= ~MCL_FUTURE;
	if (mlockall(mcl) < 0)
		return -errno;
	pthread_once(&memlock_atfork_once, memlock_atfork_register);
	atomic_store_explicit(&memlock_state,
			      mcl & MCL_FUTURE ? MEMLOCK_ALL : MEMLOCK_CURRENT,
			      memory_order_relaxed);
	return mcl & MCL_FUTURE ? 0 : 1;
}

/* Touch bytes of stack below the caller's frame, page by page, top down,
 * so that the kernel grows the stack and faults (and, under MCL_FUTURE,
 * locks) the pages now rather than on the IO path.  Returns the lowest
 * address touched. */
static __attribute__((noinline)) uintptr_t stack_touch(size_t bytes)
{
	long page = sysconf(_SC_PAGESIZE);
	volatile char *area = __builtin_alloca(bytes);

	for (size_t off = bytes; off > 0;
	     off -= off < (size_t)page ? off : (size_t)page)
		area[off - 1] = 0;
	area[0] = 0;
	__asm__ volatile("" : : "r"(area) : "memory");
	return (uintptr_t)area;
}

/* The start of the mapping that holds addr, from /proc/self/maps; 0 when
 * it cannot be read. */
static uintptr_t mapping_start(uintptr_t addr)
{
	FILE *f = fopen("/proc/self/maps", "re");
	uintptr_t start = 0;
	bool line_start = true;
	char line[256];

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		bool at_start = line_start;
		unsigned long s, e;

		/* The rest of a long line (a long path) is no new line. */
		line_start = strchr(line, '\n') != NULL;
		if (at_start && sscanf(line, "%lx-%lx", &s, &e) == 2 &&
		    s <= addr && addr < e) {
			start = s;
			break;
		}
	}
	fclose(f);
	return start;
}

/*
 * The main thread's stack grows into its mapping as it is touched.  Once
 * mlockall() has locked that mapping (MCL_FUTURE or not), without
 * CAP_IPC_LOCK, the kernel lets it grow only within RLIMIT_MEMLOCK
 * (acct_stack_growth()), and a touch beyond is a SIGSEGV: false when
 * growing it down to low would pass the limit.
 */
static bool main_stack_may_grow(uintptr_t here, uintptr_t low)
{
	uintptr_t start = mapping_start(here);
	uint64_t soft, kib;

	if (!start || low >= start || caps_counted(CAP_IPC_LOCK) ||
	    ioflusher_memlock_limit(&soft, NULL) < 0 || soft == UINT64_MAX ||
	    proc_status_u64(0, "VmLck", 10, &kib) < 0)
		return true;
	return kib * 1024 + (start - low) <= soft;
}

_public_ int ioflusher_memlock_prefault_stack(size_t bytes)
{
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), low;
	pthread_attr_t attr;
	size_t size, avail;
	bool main_thread;
	int state;
	/* This frame's address: a local's may be elsewhere, in the fake
	 * frames of AddressSanitizer's use-after-return detection. */
	uintptr_t here = (uintptr_t)__builtin_frame_address(0);
	void *base;
	int r;

	if (bytes == 0)
		return 0;
	/* How much stack is left below us: the main thread's is bounded by
	 * RLIMIT_STACK (glibc reports it so), another thread's by its mapping. */
	r = pthread_getattr_np(pthread_self(), &attr);
	if (r)
		return -r;
	r = pthread_attr_getstack(&attr, &base, &size);
	pthread_attr_destroy(&attr);
	if (r)
		return -r;
	/* On a stack of its own (a coroutine's, sigaltstack(2)'s), whose
	 * bounds are not known here. */
	if (here < (uintptr_t)base || here >= (uintptr_t)base + size)
		return -EFAULT;
	avail = (size_t)(here - (uintptr_t)base);
	/* Leave room for the frames of whoever runs below the reserve. */
	if (avail < 64 * 1024 || bytes > avail - 64 * 1024)
		return -E2BIG;
	state = atomic_load_explicit(&memlock_state, memory_order_relaxed);
	main_thread = getpid() == gettid();
	/* A page more than the bytes: the frames below this one. */
	if (state != MEMLOCK_NONE && main_thread &&
	    !main_stack_may_grow(here, (here - bytes - page) & ~(page - 1)))
		return -EAGAIN;
	low = stack_touch(bytes) & ~(page - 1);
	/*
	 * mlockall() without MCL_FUTURE locked the stacks that were mapped
	 * then, the main thread's among them, whose growth stays locked;
	 * a thread created since has a stack mapping of its own that is not
	 * locked.  Lock from the lowest page touched to the top of the
	 * mapping: the frames above this one, and glibc's thread descriptor
	 * and TLS there, are on the IO path too.  Where the stack was
	 * locked already, mlock() changes nothing and charges nothing.
	 */
	if (state == MEMLOCK_CURRENT && !main_thread &&
	    mlock((void *)low, (uintptr_t)base + size - low) < 0)
		return 1;
	return 0;
}

int prefault_heap(size_t bytes, int *lock_error)
{
	long page = sysconf(_SC_PAGESIZE);
	volatile char *p;

	if (bytes == 0)
		return 0;
		/*
	 * glibc: keep freed memory in the heap rather than trimming it or
	 * unmapping large blocks, so that the reserve faulted in here serves
	 * later malloc() calls without new faults; and one arena for every
	 * thread, so that it serves theirs too.  Otherwise a thread's first
	 * malloc() (pthread_getattr_np() makes one) maps an arena of its own:
	 * 64 MiB of address space, locked whole under MCL_FUTURE, whose pages
	 * fault on first use.  This is process-wide and is what the call is
	 * for (ioflusher_memlock_prefault_heap(3)).
	 */
#ifdef __GLIBC__
	if (!mallopt(M_TRIM_THRESHOLD, -1) || !mallopt(M_MMAP_MAX, 0) ||
	    !mallopt(M_ARENA_MAX, 1))
		return -EINVAL;
#endif
	p = malloc(bytes);
	if (!p)
		return -ENOMEM;
	for (size_t off = 0; off < bytes; off += (size_t)page)
		p[off] = 0;
	p[bytes - 1] = 0;
	/* Without MCL_FUTURE the pages the heap grew by are not locked
	 * (do_brk_flags() takes mm->def_flags): locked here, the lock stays
	 * with the pages once freed, since the heap is no longer trimmed. */
	if (lock_error && mlock((void *)p, bytes) < 0)
		*lock_error = errno;
	free((void *)p);
	return 0;
}

_public_ int ioflusher_memlock_prefault_heap(size_t bytes)
{
	return prefault_heap(bytes, NULL);
}

/* The mappings lvm2 skips too: large, and never on an IO path. */
static const char *const default_skip[] = {
	"/usr/lib/locale/locale-archive",
	"/usr/lib/locale/*",
	"*/gconv/*",
	NULL,
};

static bool skipped(const char *path, const char *const *skip)
{
	for (; *skip; skip++)
		if (fnmatch(*skip, path, 0) == 0)
			return true;
	return false;
}

static int lock_mapping(char *line, const char *const *skip, uint64_t *bytes)
{
	unsigned long start, end;
	char perms[8];
	int path_at = 0;
	const char *path;

	if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %n", &start, &end, perms,
		   &path_at) < 3)
		return -EBADMSG;
	path = path_at ? line + path_at : "";
	/* Guard pages and reserved holes have no pages to lock; vsyscall is
	 * outside every VMA (mlock answers ENOMEM); vvar and vdso are special
	 * mappings that mlock_fixup() passes over without locking them. */
	if (strcmp(perms, "---p") == 0 ||
	    strncmp(path, "[vsyscall]", 10) == 0 ||
	    strncmp(path, "[vvar", 5) == 0 || strncmp(path, "[vdso]", 6) == 0 ||
	    skipped(path, skip))
		return 0;
	if (mlock((void *)start, end - start) < 0)
		return -errno;
	*bytes += end - start;
	return 1;
}

_public_ int ioflusher_memlock_maps(const char *const *skip,
				    uint64_t *locked_bytes)
{
	char *maps = NULL, *line, *next;
	size_t size = 0;
	uint64_t bytes = 0;
	int count = 0, first_err = 0, r;
	FILE *f, *out;

	f = fopen("/proc/self/maps", "re");
	if (!f)
		return -errno;
	/* Read the whole list before locking: locking changes the maps. */
	out = open_memstream(&maps, &size);
	if (!out) {
		r = -errno;
		fclose(f);
		return r;
	}
	for (int c; (c = getc(f)) != EOF;)
		putc(c, out);
	fclose(f);
	if (fclose(out) != 0) {
		free(maps);
		return -ENOMEM;
	}
	for (line = maps; line && *line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		r = lock_mapping(line, skip ? skip : default_skip, &bytes);
		if (r > 0)
			count++;
		else if (r < 0 && !first_err)
			first_err = r;
	}
	free(maps);
	if (locked_bytes)
		*locked_bytes = bytes;
	return first_err ? first_err : count;
}
