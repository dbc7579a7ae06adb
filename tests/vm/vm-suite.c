// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The library against a real kernel, inside the test VM (tests/vm/run):
 *
 *   vm-suite root        the success paths, as root with every capability
 *   vm-suite user        each test as nobody (uid 65534) with no capability:
 *                        every call fails, with the right diagnosis
 *   vm-suite fake-prctl  under tests/vm/fake-prctl.so, where
 *                        prctl(PR_SET_IO_FLUSHER) does nothing: the library
 *                        must notice
 *
 * An optional second argument runs only the tests whose name contains it.
 * Prints TAP.  Not Criterion: the VM carries only what the tests need, and
 * several tests do what cannot be undone in a process (drop capabilities,
 * load a seccomp filter, change user), so a small runner forks one child
 * per test, with a deadline.
 *
 * The kernel's own view is read here without the library: the flags of
 * /proc/thread-self/stat (field 9), where PR_SET_IO_FLUSHER sets
 * PF_MEMALLOC_NOIO (0x00080000) and PF_LOCAL_THROTTLE (0x00100000), and
 * PR_GET_IO_FLUSHER.  A test that trusted the library's reading of the
 * flag could not see the library get it wrong.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ioflusher.h"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif
#ifndef PR_GET_IO_FLUSHER
#define PR_GET_IO_FLUSHER 58
#endif

#define PF_MEMALLOC_NOIO  0x00080000UL
#define PF_LOCAL_THROTTLE 0x00100000UL
#define PF_IO_FLUSHER	  (PF_MEMALLOC_NOIO | PF_LOCAL_THROTTLE)
#define NOBODY		  65534
#define TEST_SECONDS	  30
#define HELPER_FAILED	  3

enum suite { SUITE_ROOT = 1, SUITE_USER = 2, SUITE_FAKE = 4 };

struct test {
	const char *name;
	void (*run)(void);
	unsigned int suites;
	/* For the user suite: run as root before the drop to nobody. */
	void (*as_root)(void);
};

static int failures;
static const char *self_path = "/proc/self/exe";

/* ------------------------------------------------------------ checks */

static void diag(const char *fmt, ...)
{
	va_list ap;

	fputs("# ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
}

/* " (EPERM)" for a negative errno, "" otherwise. */
static const char *errname(long v, char *buf, size_t size)
{
	const char *n = v < 0 ? strerrorname_np((int)-v) : NULL;

	snprintf(buf, size, n ? " (%s)" : "", n);
	return buf;
}

static bool expect_true(bool ok, const char *what, int line)
{
	if (!ok) {
		diag("vm-suite.c:%d: expected %s", line, what);
		failures++;
	}
	return ok;
}

static bool expect_eq(long got, long want, const char *what, int line)
{
	char g[32], w[32];

	if (got != want) {
		diag("vm-suite.c:%d: %s is %ld%s, expected %ld%s", line, what,
		     got, errname(got, g, sizeof(g)), want,
		     errname(want, w, sizeof(w)));
		failures++;
		return false;
	}
	return true;
}

#define EXPECT(cond) expect_true((cond), #cond, __LINE__)
#define EXPECT_EQ(got, want)                                                   \
	expect_eq((long)(got), (long)(want), #got, __LINE__)

/* ------------------------------------------------------------ the kernel */

/* Field 9 (flags) of a stat file, after the comm in parentheses. */
static unsigned long stat_flags(const char *path)
{
	char buf[1024], *p;
	unsigned long flags;
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		diag("open %s: %m", path);
		failures++;
		return 0;
	}
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0) {
		/* Not "no flags": a read that fails checks nothing. */
		diag("read %s: %s", path, n < 0 ? strerror(errno) : "empty");
		failures++;
		return 0;
	}
	buf[n] = '\0';
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %lu", &flags) != 1) {
		diag("cannot parse %s: %s", path, buf);
		failures++;
		return 0;
	}
	return flags;
}

static unsigned long kernel_flags(void)
{
	return stat_flags("/proc/thread-self/stat");
}

/* 1 when both bits are set, 0 when neither, -1 when only one is. */
static int kernel_flagged(void)
{
	unsigned long f = kernel_flags() & PF_IO_FLUSHER;

	return f == PF_IO_FLUSHER ? 1 : f == 0 ? 0 : -1;
}

static pid_t tid_self(void)
{
	return (pid_t)syscall(SYS_gettid);
}

static int proc_oom_score_adj(void)
{
	char buf[32] = "";
	int fd = open("/proc/self/oom_score_adj", O_RDONLY | O_CLOEXEC);

	if (fd < 0 || read(fd, buf, sizeof(buf) - 1) < 0) {
		if (fd >= 0)
			close(fd);
		return 99999;
	}
	close(fd);
	return atoi(buf);
}

static unsigned long status_kib(const char *key)
{
	char line[256];
	unsigned long v = 0;
	size_t len = strlen(key);
	FILE *f = fopen("/proc/self/status", "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, key, len) == 0 && line[len] == ':')
			v = strtoul(line + len + 1, NULL, 10);
	fclose(f);
	return v;
}

/* Effective and permitted capabilities, from the kernel. */
static bool caps_none(void)
{
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct d[2];

	if (syscall(SYS_capget, &h, d) < 0)
		return false;
	return !(d[0].effective | d[1].effective | d[0].permitted |
		 d[1].permitted);
}

/* Exit status of a child, or 128 + signal. */
static int wait_child(pid_t pid)
{
	int status;

	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

/*
 * Run argv (execvp) and return its exit status.  What it prints becomes
 * diagnostics: a line of its own starting with "ok" must never pass for a
 * test's result.
 */
static int run_program(char *const argv[])
{
	char line[1024];
	int fds[2], status;
	FILE *out;
	pid_t pid;

	if (pipe2(fds, O_CLOEXEC) < 0)
		return -1;
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		dup2(fds[1], STDOUT_FILENO);
		dup2(fds[1], STDERR_FILENO);
		execvp(argv[0], argv);
		fprintf(stderr, "cannot run %s: %m\n", argv[0]);
		_exit(127);
	}
	close(fds[1]);
	out = fdopen(fds[0], "r");
	while (out && fgets(line, sizeof(line), out)) {
		line[strcspn(line, "\n")] = '\0';
		diag("%s: %s", argv[0], line);
	}
	if (out)
		fclose(out);
	else
		close(fds[0]);
	status = pid < 0 ? -1 : wait_child(pid);
	diag("%s %s: exit status %d", argv[0], argv[1] ? argv[1] : "", status);
	return status;
}

/* ------------------------------------------------------------ threads */

#define CREW_MAX 8

struct crew;

struct worker {
	struct crew *crew;
	pthread_t thread;
	char name[16];
	bool clear;
	pid_t tid;
	int clear_result;
	int lib_flag;
	int kernel_flag;
};

/* Threads that start, look at their flag, and wait to be released. */
struct crew {
	int n;
	pthread_barrier_t started, release;
	struct worker w[CREW_MAX];
};

static void *worker_main(void *data)
{
	struct worker *w = data;

	prctl(PR_SET_NAME, (unsigned long)w->name, 0UL, 0UL, 0UL);
	w->tid = tid_self();
	if (w->clear)
		w->clear_result = ioflusher_flag_clear();
	w->lib_flag = ioflusher_flag_get();
	w->kernel_flag = kernel_flagged();
	pthread_barrier_wait(&w->crew->started);
	pthread_barrier_wait(&w->crew->release);
	return NULL;
}

/* Start n threads ("vm-worker"; the one at clear_index clears its flag
 * and is called "vm-cleared") and wait until all have looked. */
static bool crew_start(struct crew *c, int n, int clear_index)
{
	c->n = n;
	pthread_barrier_init(&c->started, NULL, (unsigned int)n + 1);
	pthread_barrier_init(&c->release, NULL, (unsigned int)n + 1);
	for (int i = 0; i < n; i++) {
		struct worker *w = &c->w[i];

		memset(w, 0, sizeof(*w));
		w->crew = c;
		w->clear = i == clear_index;
		snprintf(w->name, sizeof(w->name), "%s",
			 w->clear ? "vm-cleared" : "vm-worker");
		if (!EXPECT_EQ(pthread_create(&w->thread, NULL, worker_main, w),
			       0))
			return false;
	}
	pthread_barrier_wait(&c->started);
	return true;
}

static void crew_finish(struct crew *c)
{
	pthread_barrier_wait(&c->release);
	for (int i = 0; i < c->n; i++)
		pthread_join(c->w[i].thread, NULL);
	pthread_barrier_destroy(&c->started);
	pthread_barrier_destroy(&c->release);
}

/* ------------------------------------------------------------ root */

static void test_flag_set_clear(void)
{
	unsigned long f;

	EXPECT_EQ(ioflusher_flag_supported(), 1);
	EXPECT_EQ(ioflusher_flag_get(), 0);
	EXPECT_EQ(kernel_flagged(), 0);

	EXPECT_EQ(ioflusher_flag_set(), 0);
	EXPECT_EQ(ioflusher_flag_get(), 1);
	f = kernel_flags();
	diag("flags after set: %#lx", f);
	EXPECT(f & PF_MEMALLOC_NOIO);
	EXPECT(f & PF_LOCAL_THROTTLE);
	EXPECT_EQ(prctl(PR_GET_IO_FLUSHER, 0UL, 0UL, 0UL, 0UL), 1);
	EXPECT_EQ(ioflusher_flag_set(), 0); /* twice is fine */
	EXPECT_EQ(ioflusher_flag_get(), 1);

	EXPECT_EQ(ioflusher_flag_clear(), 0);
	EXPECT_EQ(ioflusher_flag_get(), 0);
	f = kernel_flags();
	diag("flags after clear: %#lx", f);
	EXPECT_EQ(f & PF_IO_FLUSHER, 0);
	EXPECT_EQ(prctl(PR_GET_IO_FLUSHER, 0UL, 0UL, 0UL, 0UL), 0);
}

static void test_flag_save_restore(void)
{
	int outer, inner;

	EXPECT_EQ(ioflusher_flag_get(), 0);
	outer = ioflusher_flag_save();
	EXPECT_EQ(outer, 0);
	EXPECT_EQ(kernel_flagged(), 1);
	inner = ioflusher_flag_save();
	EXPECT_EQ(inner, 1);
	EXPECT_EQ(kernel_flagged(), 1);
	EXPECT_EQ(ioflusher_flag_restore(inner), 0);
	EXPECT_EQ(kernel_flagged(), 1); /* still inside the outer scope */
	EXPECT_EQ(ioflusher_flag_restore(outer), 0);
	EXPECT_EQ(kernel_flagged(), 0);

	/* The state before the scope, whatever happened inside it. */
	EXPECT_EQ(ioflusher_flag_set(), 0);
	outer = ioflusher_flag_save();
	EXPECT_EQ(outer, 1);
	EXPECT_EQ(ioflusher_flag_clear(), 0);
	EXPECT_EQ(ioflusher_flag_restore(outer), 0);
	EXPECT_EQ(kernel_flagged(), 1);
	EXPECT_EQ(ioflusher_flag_restore(2), -EINVAL);
}

struct early {
	sem_t flag_set, looked;
	int kernel_flag;
};

static void *early_main(void *data)
{
	struct early *e = data;

	sem_wait(&e->flag_set);
	e->kernel_flag = kernel_flagged();
	sem_post(&e->looked);
	return NULL;
}

static void *report_main(void *data)
{
	*(int *)data = kernel_flagged();
	return NULL;
}

static void test_thread_inherit(void)
{
	struct crew c;
	struct early e = {.kernel_flag = -2};
	pthread_t early, t;
	int flagged = -2;

	/* A thread started before the flag was set keeps running without
	 * it: the flag is per thread. */
	sem_init(&e.flag_set, 0, 0);
	sem_init(&e.looked, 0, 0);
	EXPECT_EQ(pthread_create(&early, NULL, early_main, &e), 0);
	EXPECT_EQ(ioflusher_flag_set(), 0);
	sem_post(&e.flag_set);
	sem_wait(&e.looked);
	pthread_join(early, NULL);
	EXPECT_EQ(e.kernel_flag, 0);

	/* Threads started after inherit it. */
	if (crew_start(&c, 3, -1)) {
		for (int i = 0; i < c.n; i++) {
			EXPECT_EQ(c.w[i].kernel_flag, 1);
			EXPECT_EQ(c.w[i].lib_flag, 1);
		}
		crew_finish(&c);
	}

	/* ioflusher_thread_create sets it in the new thread even when the
	 * creator runs without it. */
	EXPECT_EQ(ioflusher_flag_clear(), 0);
	EXPECT_EQ(ioflusher_thread_create(&t, NULL, report_main, &flagged), 0);
	pthread_join(t, NULL);
	EXPECT_EQ(flagged, 1);
	EXPECT_EQ(kernel_flagged(), 0);
}

static void test_fork_inherit(void)
{
	pid_t pid;

	EXPECT_EQ(ioflusher_flag_set(), 0);
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		bool ok = kernel_flagged() == 1 && ioflusher_flag_get() == 1;

		_exit(ok ? 0 : 1);
	}
	EXPECT_EQ(wait_child(pid), 0);
}

static void test_execve_keep(void)
{
	char *argv[] = {(char *)self_path, "--helper", "flag-is-set", NULL};

	/* The helper can fail: without the flag it says so. */
	EXPECT_EQ(run_program(argv), HELPER_FAILED);
	EXPECT_EQ(ioflusher_flag_set(), 0);
	EXPECT_EQ(run_program(argv), 0);
}

static bool audit_has_tid(const struct ioflusher_audit *a, pid_t tid,
			  int *flagged, const char **comm)
{
	for (int i = 0; i < ioflusher_audit_count(a); i++) {
		pid_t t;

		if (ioflusher_audit_thread(a, (unsigned int)i, &t, comm,
					   flagged) == 0 &&
		    t == tid)
			return true;
	}
	return false;
}

static void audit_dump(const struct ioflusher_audit *a)
{
	for (int i = 0; i < ioflusher_audit_count(a); i++) {
		const char *comm = "?";
		pid_t tid = 0;
		int flagged = -1;

		ioflusher_audit_thread(a, (unsigned int)i, &tid, &comm,
				       &flagged);
		diag("audit: thread %d \"%s\" flagged %d", (int)tid, comm,
		     flagged);
	}
}

static void test_audit_all(void)
{
	struct ioflusher_audit *a = NULL;
	const char *comm;
	struct crew c;
	int flagged;

	EXPECT_EQ(ioflusher_flag_set(), 0);
	if (!crew_start(&c, 3, -1))
		return;
	if (EXPECT_EQ(ioflusher_audit_new(0, &a), 0)) {
		audit_dump(a);
		EXPECT_EQ(ioflusher_audit_count(a), 4);
		EXPECT_EQ(ioflusher_audit_missing(a), 0);
		EXPECT(audit_has_tid(a, tid_self(), &flagged, &comm));
		EXPECT_EQ(flagged, 1);
		for (int i = 0; i < c.n; i++) {
			EXPECT(audit_has_tid(a, c.w[i].tid, &flagged, &comm));
			EXPECT_EQ(flagged, 1);
			EXPECT(strcmp(comm, "vm-worker") == 0);
		}
		ioflusher_audit_free(a);
	}
	crew_finish(&c);
}

static void test_audit_missing(void)
{
	struct ioflusher_audit *a = NULL;
	const char *comm = "";
	struct crew c;
	int flagged = -1;

	EXPECT_EQ(ioflusher_flag_set(), 0);
	if (!crew_start(&c, 3, 1))
		return;
	EXPECT_EQ(c.w[1].clear_result, 0);
	EXPECT_EQ(c.w[1].kernel_flag, 0);
	if (EXPECT_EQ(ioflusher_audit_new(0, &a), 0)) {
		audit_dump(a);
		EXPECT_EQ(ioflusher_audit_count(a), 4);
		EXPECT_EQ(ioflusher_audit_missing(a), 1);
		EXPECT(audit_has_tid(a, c.w[1].tid, &flagged, &comm));
		EXPECT_EQ(flagged, 0);
		EXPECT(strcmp(comm, "vm-cleared") == 0);
		EXPECT(audit_has_tid(a, c.w[0].tid, &flagged, &comm));
		EXPECT_EQ(flagged, 1);
		ioflusher_audit_free(a);
	}
	crew_finish(&c);
}

static void test_child_clear(void)
{
	pid_t pid;
	int adj = 1;

	EXPECT_EQ(ioflusher_flag_set(), 0);
	EXPECT_EQ(ioflusher_oom_set(0, -1000), 0);
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		int r = ioflusher_thread_child_clear(IOFLUSHER_CHILD_RESET_OOM);

		EXPECT_EQ(r, 0);
		EXPECT_EQ(kernel_flagged(), 0);
		EXPECT_EQ(ioflusher_flag_get(), 0);
		EXPECT_EQ(proc_oom_score_adj(), 0);
		fflush(stdout);
		_exit(failures ? 1 : 0);
	}
	EXPECT_EQ(wait_child(pid), 0);
	/* The parent keeps both. */
	EXPECT_EQ(kernel_flagged(), 1);
	EXPECT_EQ(ioflusher_oom_get(0, &adj), 0);
	EXPECT_EQ(adj, -1000);
}

/* Clear CAP_SYS_RESOURCE from the effective set (PR_GET_IO_FLUSHER then
 * fails, and so does clearing the flag), and with everywhere from the
 * permitted and inheritable sets too, beyond raising again. */
static bool lower_sys_resource(bool everywhere)
{
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct d[2];
	unsigned int bit = 1u << (CAP_SYS_RESOURCE % 32);

	if (syscall(SYS_capget, &h, d) < 0)
		return false;
	d[CAP_SYS_RESOURCE / 32].effective &= ~bit;
	if (everywhere) {
		d[CAP_SYS_RESOURCE / 32].permitted &= ~bit;
		d[CAP_SYS_RESOURCE / 32].inheritable &= ~bit;
	}
	return syscall(SYS_capset, &h, d) == 0;
}

/* CAP_SYS_RESOURCE in the permitted set, from the kernel. */
static bool sys_resource_permitted(void)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];

	return syscall(SYS_capget, &h, d) == 0 &&
	       (d[CAP_SYS_RESOURCE / 32].permitted &
		(1u << (CAP_SYS_RESOURCE % 32)));
}

/* A daemon that lowered CAP_SYS_RESOURCE from its effective set after
 * setting up, keeping it permitted: child_clear raises it for the clear,
 * and lowers it again. */
static void test_child_clear_raises_capability(void)
{
	pid_t pid;

	EXPECT_EQ(ioflusher_flag_set(), 0);
	EXPECT(lower_sys_resource(false));
	EXPECT_EQ(ioflusher_caps_have(CAP_SYS_RESOURCE), 0);
	EXPECT(sys_resource_permitted());
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		EXPECT_EQ(kernel_flagged(), 1);
		EXPECT_EQ(ioflusher_thread_child_clear(0), 0);
		EXPECT_EQ(kernel_flagged(), 0);
		EXPECT_EQ(ioflusher_caps_have(CAP_SYS_RESOURCE), 0);
		EXPECT(sys_resource_permitted());
		fflush(stdout);
		_exit(failures ? 1 : 0);
	}
	EXPECT_EQ(wait_child(pid), 0);
	EXPECT_EQ(kernel_flagged(), 1);
}

/* The flag cannot be read at all (its stat file hidden, the prctl
 * refused): the OOM score is reset all the same, and the error said. */
static void test_child_clear_oom_without_flag_reading(void)
{
	pid_t pid;

	EXPECT_EQ(ioflusher_flag_set(), 0);
	EXPECT_EQ(ioflusher_oom_set(0, -1000), 0);
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		char path[64];
		int r;

		snprintf(path, sizeof(path), "/proc/self/task/%d/stat",
			 (int)getpid());
		EXPECT_EQ(unshare(CLONE_NEWNS), 0);
		EXPECT_EQ(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), 0);
		EXPECT_EQ(mount("/dev/null", path, NULL, MS_BIND, NULL), 0);
		EXPECT(lower_sys_resource(false));
		EXPECT(ioflusher_flag_get() < 0);
		r = ioflusher_thread_child_clear(IOFLUSHER_CHILD_RESET_OOM);
		EXPECT(r < 0);
		EXPECT_EQ(proc_oom_score_adj(), 0);
		fflush(stdout);
		_exit(failures ? 1 : 0);
	}
	EXPECT_EQ(wait_child(pid), 0);
}

static void test_oom(void)
{
	int adj = 1;

	EXPECT_EQ(ioflusher_oom_set(0, -1000), 0);
	EXPECT_EQ(ioflusher_oom_get(0, &adj), 0);
	EXPECT_EQ(adj, -1000);
	EXPECT_EQ(proc_oom_score_adj(), -1000);
	/* By PID too, and back up. */
	EXPECT_EQ(ioflusher_oom_set(getpid(), 0), 0);
	EXPECT_EQ(ioflusher_oom_get(getpid(), &adj), 0);
	EXPECT_EQ(adj, 0);
	EXPECT_EQ(proc_oom_score_adj(), 0);
}

/*
 * A kernel before 2.6.36, with oom_adj and no oom_score_adj: in a private
 * mount namespace, /proc/PID becomes a tmpfs that holds the real oom_adj
 * alone (/tmp, a tmpfs of the namespace's own, stages it).  Returns the
 * real oom_score_adj, opened before, to read what the kernel made of what
 * was written, or -1.
 */
static int hide_oom_score_adj(void)
{
	char dir[32], path[64];
	int fd, score;

	snprintf(dir, sizeof(dir), "/proc/%d", (int)getpid());
	snprintf(path, sizeof(path), "%s/oom_score_adj", dir);
	score = open(path, O_RDONLY | O_CLOEXEC);
	snprintf(path, sizeof(path), "%s/oom_adj", dir);
	if (!EXPECT(score >= 0) || !EXPECT_EQ(unshare(CLONE_NEWNS), 0) ||
	    !EXPECT_EQ(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), 0) ||
	    !EXPECT_EQ(mount("tmpfs", "/tmp", "tmpfs", 0, "size=16k"), 0))
		return -1;
	fd = open("/tmp/oom_adj", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (!EXPECT(fd >= 0))
		return -1;
	close(fd);
	if (!EXPECT_EQ(mount(path, "/tmp/oom_adj", NULL, MS_BIND, NULL), 0) ||
	    !EXPECT_EQ(mount("/tmp", dir, NULL, MS_BIND | MS_REC, NULL), 0) ||
	    !EXPECT_EQ(access("/proc/self/oom_score_adj", F_OK), -1) ||
	    !EXPECT_EQ(access("/proc/self/oom_adj", W_OK), 0))
		return -1;
	return score;
}

static int pread_int(int fd)
{
	char buf[32];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);

	if (n <= 0)
		return 99999;
	buf[n] = '\0';
	return atoi(buf);
}

static void test_oom_legacy(void)
{
	int score = hide_oom_score_adj(), adj = 1;

	if (score < 0)
		return;
	/* -500 is oom_adj -8 (-500 * 17 / 1000), which the kernel makes
	 * -8 * 1000 / 17. */
	EXPECT_EQ(ioflusher_oom_set(0, -500), 0);
	EXPECT_EQ(pread_int(score), -470);
	/* -1000 is OOM_DISABLE, -17: -16 would leave it at -941, which the
	 * OOM killer may still choose. */
	EXPECT_EQ(ioflusher_oom_set(0, -1000), 0);
	EXPECT_EQ(pread_int(score), -1000);
	EXPECT_EQ(ioflusher_oom_get(0, &adj), 0);
	EXPECT_EQ(adj, -1000);
	EXPECT_EQ(ioflusher_oom_set(0, 0), 0);
	EXPECT_EQ(pread_int(score), 0);
	close(score);
}

static void report_dump(const struct ioflusher_report *r)
{
	char line[1024];

	for (int p = 0; p < IOFLUSHER_PROTECT_COUNT; p++)
		if (ioflusher_report_format(r, p, line, sizeof(line)) >= 0)
			diag("report: %s", line);
}

static void test_setup_applied(void)
{
	struct ioflusher_report *report = NULL;
	struct ioflusher_ctx *ctx = NULL;

	if (!EXPECT_EQ(ioflusher_ctx_new(&ctx), 0))
		return;
	EXPECT_EQ(ioflusher_setup(ctx, &report), 0);
	if (report) {
		report_dump(report);
		for (int p = 0; p < IOFLUSHER_PROTECT_COUNT; p++) {
			EXPECT_EQ(ioflusher_report_outcome(report, p),
				  IOFLUSHER_OUTCOME_APPLIED);
			EXPECT_EQ(ioflusher_report_error(report, p), 0);
			EXPECT_EQ(ioflusher_report_reason(report, p),
				  IOFLUSHER_REASON_NONE);
		}
	}
	/* What setup says it did, the kernel shows. */
	EXPECT_EQ(kernel_flagged(), 1);
	EXPECT_EQ(proc_oom_score_adj(), -1000);
	EXPECT(status_kib("VmLck") > 0);
	diag("VmLck %lu kB", status_kib("VmLck"));
	ioflusher_report_free(report);
	ioflusher_ctx_unref(ctx);
}

/*
 * In a child without CAP_IPC_LOCK, under an RLIMIT_MEMLOCK that holds the
 * process now and 16 MiB more: ioflusher_memlock_all(flags), which must
 * return want, then a mapping of 64 MiB.  0 when it is made, 1 when it is
 * refused (EAGAIN), 2 when memlock_all returned otherwise, 3 or 4 for the
 * test's own failures.
 */
/* RLIMIT_MEMLOCK set to the process's size plus headroom, and
 * CAP_IPC_LOCK no longer effective, so that the limit applies. */
static int limited_without_ipc_lock(unsigned long headroom)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];
	struct rlimit rl;

	rl.rlim_cur = rl.rlim_max = ((rlim_t)status_kib("VmSize") << 10) +
				    headroom;
	if (setrlimit(RLIMIT_MEMLOCK, &rl) < 0 ||
	    syscall(SYS_capget, &h, d) < 0)
		return -1;
	d[CAP_IPC_LOCK / 32].effective &= ~(1u << (CAP_IPC_LOCK % 32));
	return syscall(SYS_capset, &h, d) < 0 ? -1 : 0;
}

static int map_after_memlock(unsigned int flags, int want)
{
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		void *p;

		if (limited_without_ipc_lock(16 << 20) < 0)
			_exit(3);
		if (ioflusher_memlock_all(flags) != want)
			_exit(2);
		p = mmap(NULL, 64 << 20, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		_exit(p != MAP_FAILED ? 0 : errno == EAGAIN ? 1 : 4);
	}
	return pid < 0 ? -1 : wait_child(pid);
}

/* MCL_FUTURE without CAP_IPC_LOCK charges every later mapping to the
 * limit: the 64 MiB are refused.  FUTURE_IF_UNLIMITED leaves it out
 * there (and says so: 1), and the mapping is made. */
static void test_memlock_future_if_unlimited(void)
{
	EXPECT_EQ(map_after_memlock(IOFLUSHER_MEMLOCK_ONFAULT, 0), 1);
	EXPECT_EQ(map_after_memlock(IOFLUSHER_MEMLOCK_ONFAULT |
					    IOFLUSHER_MEMLOCK_FUTURE_IF_UNLIMITED,
				    1),
		  0);
}

/* Locked: in /proc/self/smaps, in KiB, of the mappings named name, or
 * without a name of the one that holds addr. */
static unsigned long locked_kib(const char *name, uintptr_t addr)
{
	FILE *f = fopen("/proc/self/smaps", "re");
	unsigned long kib = 0;
	bool in = false;
	char line[512];

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned long start, end, v;

		if (sscanf(line, "%lx-%lx ", &start, &end) == 2)
			in = name ? strstr(line, name) != NULL :
				    start <= addr && addr < end;
		else if (in && sscanf(line, "Locked: %lu kB", &v) == 1)
			kib += v;
	}
	fclose(f);
	return kib;
}

static unsigned long heap_locked_kib(void)
{
	return locked_kib("[heap]", 0);
}

/* Setup with FUTURE_IF_UNLIMITED under a limit of the process's size plus
 * headroom, without CAP_IPC_LOCK, and a 4 MiB heap reserve: 0 when the
 * reserve is locked (want_locked) or said not to be (!want_locked). */
static int heap_reserve_after_memlock(unsigned long headroom, bool want_locked)
{
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		struct ioflusher_report *report = NULL;
		struct ioflusher_ctx *ctx = NULL;
		unsigned long before;
		char line[1024];
		bool said;

		if (limited_without_ipc_lock(headroom) < 0 ||
		    ioflusher_ctx_new(&ctx))
			_exit(3);
		ioflusher_ctx_set_log_priority(ctx, -1);
		if (ioflusher_ctx_set_policy(ctx, IOFLUSHER_PROTECT_FLAG,
					     IOFLUSHER_POLICY_OFF) ||
		    ioflusher_ctx_set_policy(ctx, IOFLUSHER_PROTECT_OOM,
					     IOFLUSHER_POLICY_OFF) ||
		    ioflusher_ctx_set_policy(ctx, IOFLUSHER_PROTECT_MEMLOCK,
					     IOFLUSHER_POLICY_REQUIRED) ||
		    ioflusher_ctx_set_policy(ctx, IOFLUSHER_PROTECT_PREFAULT,
					     IOFLUSHER_POLICY_REQUIRED) ||
		    ioflusher_ctx_set_memlock_flags(
			    ctx, IOFLUSHER_MEMLOCK_FUTURE_IF_UNLIMITED) ||
		    ioflusher_ctx_set_reserve(ctx, 64 << 10, 4 << 20))
			_exit(3);
		before = heap_locked_kib();
		if (ioflusher_setup(ctx, &report) != 0)
			_exit(2);
		ioflusher_report_format(report, IOFLUSHER_PROTECT_MEMLOCK,
					line, sizeof(line));
		printf("#   %s\n", line);
		ioflusher_report_format(report, IOFLUSHER_PROTECT_PREFAULT,
					line, sizeof(line));
		printf("#   %s; heap locked %lu KiB, before %lu KiB\n", line,
		       heap_locked_kib(), before);
		fflush(stdout);
		said = strstr(line, "the heap reserve is not locked") != NULL;
		if (want_locked)
			_exit(!said && heap_locked_kib() >= before + 4096 ? 0 : 4);
		_exit(said ? 0 : 5);
	}
	return pid < 0 ? -1 : wait_child(pid);
}

/* Without MCL_FUTURE the pages the heap grows by are not locked: setup
 * locks the heap reserve itself, or says it could not. */
static void test_setup_heap_reserve_locked(void)
{
	EXPECT_EQ(heap_reserve_after_memlock(16ul << 20, true), 0);
	EXPECT_EQ(heap_reserve_after_memlock(1ul << 20, false), 0);
}

struct stack_probe {
	int r;
	unsigned long locked_kib;
};

static void *prefault_stack_probe(void *arg)
{
	struct stack_probe *p = arg;
	char here;

	p->r = ioflusher_memlock_prefault_stack(128 << 10);
	p->locked_kib = locked_kib(NULL, (uintptr_t)&here);
	return NULL;
}

/* A new thread with a 512 KiB stack of its own pre-faults 128 KiB of it:
 * what it returned, and how much of the stack is locked, in *p; -1 when
 * the thread could not be made. */
static int probe_new_thread(struct stack_probe *p)
{
	pthread_attr_t attr;
	pthread_t t;
	int r;

	p->r = -1;
	if (pthread_attr_init(&attr))
		return -1;
	r = pthread_attr_setstacksize(&attr, 512 << 10) ||
	    pthread_create(&t, &attr, prefault_stack_probe, p);
	pthread_attr_destroy(&attr);
	if (r)
		return -1;
	pthread_join(t, NULL);
	return 0;
}

/* After memlock_all left MCL_FUTURE out, under a limit of the process's
 * size plus headroom without CAP_IPC_LOCK, a thread created then
 * pre-faults 128 KiB of its stack: 0 when the call returned want and
 * the stack's mapping is locked (want 0) or not (want 1). */
static int stack_reserve_after_memlock(unsigned long headroom, int want)
{
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		struct stack_probe probe;

		if (limited_without_ipc_lock(headroom) < 0 ||
		    ioflusher_memlock_all(
			    IOFLUSHER_MEMLOCK_FUTURE_IF_UNLIMITED) != 1 ||
		    probe_new_thread(&probe) < 0)
			_exit(3);
		printf("#   headroom %lu KiB: returned %d, stack locked %lu KiB\n",
		       headroom >> 10, probe.r, probe.locked_kib);
		fflush(stdout);
		if (probe.r != want)
			_exit(2);
		if (want == 0)
			_exit(probe.locked_kib >= 128 ? 0 : 4);
		_exit(probe.locked_kib == 0 ? 0 : 5);
	}
	return pid < 0 ? -1 : wait_child(pid);
}

/* Without MCL_FUTURE a new thread's stack is a mapping mlockall() did
 * not lock: the stack reserve locks it, or says it could not. */
static void test_prefault_stack_locked(void)
{
	EXPECT_EQ(stack_reserve_after_memlock(16ul << 20, 0), 0);
	EXPECT_EQ(stack_reserve_after_memlock(64ul << 10, 1), 0);
}

/*
 * After memlock_all left MCL_FUTURE out under a limit of the process's
 * size plus 256 KiB: the main thread's locked stack may grow only so far,
 * and a reserve of 4 MiB, which a touch would take past the limit (a
 * SIGSEGV), is refused with -EAGAIN, while 16 KiB is made; and a forked
 * child, which inherits no lock, locks no new thread's stack.  0 when all
 * holds.
 */
/* On the main thread, locked under the limit of the callers below: a
 * 4 MiB stack reserve must be refused (-EAGAIN), 16 KiB made; printed
 * under label.  0 when both are so. */
static int main_stack_reserves(const char *label)
{
	int big = ioflusher_memlock_prefault_stack(4ul << 20);
	int small = ioflusher_memlock_prefault_stack(16ul << 10);

	printf("#   %s: 4 MiB reserve %d, 16 KiB %d\n", label, big, small);
	fflush(stdout);
	return big == -EAGAIN && small == 0 ? 0 : -1;
}

static int main_stack_and_fork_after_memlock(void)
{
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		struct stack_probe probe;
		pid_t child;

		if (limited_without_ipc_lock(256ul << 10) < 0 ||
		    ioflusher_memlock_all(
			    IOFLUSHER_MEMLOCK_FUTURE_IF_UNLIMITED) != 1)
			_exit(3);
		if (main_stack_reserves("main thread") < 0)
			_exit(2);
		child = fork();
		if (child == 0) {
			if (probe_new_thread(&probe) < 0)
				_exit(3);
			printf("#   forked child: a new thread's reserve %d, "
			       "its stack locked %lu KiB\n",
			       probe.r, probe.locked_kib);
			fflush(stdout);
			_exit(probe.r == 0 && probe.locked_kib == 0 ? 0 : 4);
		}
		_exit(child < 0 ? 3 : wait_child(child));
	}
	return pid < 0 ? -1 : wait_child(pid);
}

/* The same limit, with MCL_FUTURE kept (no FUTURE_IF_UNLIMITED): the main
 * stack is locked just the same, and its growth limited. */
static int main_stack_under_future(void)
{
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		if (limited_without_ipc_lock(256ul << 10) < 0 ||
		    ioflusher_memlock_all(0) != 0)
			_exit(3);
		_exit(main_stack_reserves("MCL_FUTURE") < 0 ? 2 : 0);
	}
	return pid < 0 ? -1 : wait_child(pid);
}

static void test_prefault_main_stack_and_fork(void)
{
	EXPECT_EQ(main_stack_and_fork_after_memlock(), 0);
	EXPECT_EQ(main_stack_under_future(), 0);
}

/* A thread started before setup runs without the flag: setup sets it on
 * the caller, and fails the flag all the same, naming that thread. */
static void test_setup_threads(void)
{
	struct ioflusher_report *report = NULL;
	struct ioflusher_ctx *ctx = NULL;
	char line[1024], first[64];
	struct crew c;

	EXPECT_EQ(kernel_flagged(), 0);
	if (!EXPECT_EQ(ioflusher_ctx_new(&ctx), 0))
		return;
	if (!crew_start(&c, 1, -1)) {
		ioflusher_ctx_unref(ctx);
		return;
	}
	EXPECT_EQ(c.w[0].kernel_flag, 0);
	EXPECT_EQ(ioflusher_setup(ctx, &report), -EBUSY);
	if (EXPECT(report != NULL)) {
		report_dump(report);
		EXPECT_EQ(ioflusher_report_outcome(report,
						   IOFLUSHER_PROTECT_FLAG),
			  IOFLUSHER_OUTCOME_FAILED);
		EXPECT_EQ(ioflusher_report_error(report,
						 IOFLUSHER_PROTECT_FLAG),
			  -EBUSY);
		EXPECT_EQ(ioflusher_report_reason(report,
						  IOFLUSHER_PROTECT_FLAG),
			  IOFLUSHER_REASON_THREADS);
		snprintf(first, sizeof(first), "(first: %d \"vm-worker\")",
			 (int)c.w[0].tid);
		EXPECT(ioflusher_report_format(report, IOFLUSHER_PROTECT_FLAG,
					       line, sizeof(line)) > 0);
		EXPECT(strstr(line, "but 1 other thread runs already"));
		EXPECT(strstr(line, first));
		for (int p = IOFLUSHER_PROTECT_FLAG + 1;
		     p < IOFLUSHER_PROTECT_COUNT; p++)
			EXPECT_EQ(ioflusher_report_reason(report, p),
				  IOFLUSHER_REASON_NOT_ATTEMPTED);
	}
	/* Set on the caller, as the line says; not on the worker. */
	EXPECT_EQ(kernel_flagged(), 1);
	crew_finish(&c);
	ioflusher_report_free(report);
	ioflusher_ctx_unref(ctx);
}

/* Setup with CAP_SYS_RESOURCE missing: the flag is unavailable, and its
 * line says what would bring the capability. */
static void expect_setup_says(const char *what)
{
	struct ioflusher_report *report = NULL;
	struct ioflusher_ctx *ctx = NULL;
	char line[1024];

	EXPECT_EQ(ioflusher_caps_have(CAP_SYS_RESOURCE), 0);
	if (!EXPECT_EQ(ioflusher_ctx_new(&ctx), 0))
		return;
	EXPECT_EQ(ioflusher_setup(ctx, &report), -EPERM);
	if (EXPECT(report != NULL)) {
		report_dump(report);
		EXPECT_EQ(ioflusher_report_reason(report,
						  IOFLUSHER_PROTECT_FLAG),
			  IOFLUSHER_REASON_CAPABILITY);
		EXPECT(ioflusher_report_format(report, IOFLUSHER_PROTECT_FLAG,
					       line, sizeof(line)) > 0);
		if (!EXPECT(strstr(line, what)))
			diag("not in the line: %s", what);
	}
	EXPECT_EQ(kernel_flagged(), 0);
	ioflusher_report_free(report);
	ioflusher_ctx_unref(ctx);
}

static void test_setup_capability_lowered(void)
{
	EXPECT(lower_sys_resource(false));
	EXPECT(sys_resource_permitted());
	expect_setup_says("which this process has permitted but not "
			  "effective: raise it before setup");
}

static void test_setup_capability_dropped(void)
{
	EXPECT(lower_sys_resource(true));
	EXPECT(!sys_resource_permitted());
	expect_setup_says("which this process does not have: run it as root, "
			  "or grant it (AmbientCapabilities=CAP_SYS_RESOURCE)");
}

static void test_setup_capability_unbounded(void)
{
	/* This test's process is a child of the runner's: the bounding set
	 * shrinks here only. */
	EXPECT_EQ(prctl(PR_CAPBSET_DROP, CAP_SYS_RESOURCE, 0UL, 0UL, 0UL), 0);
	EXPECT_EQ(prctl(PR_CAPBSET_READ, CAP_SYS_RESOURCE, 0UL, 0UL, 0UL), 0);
	EXPECT(lower_sys_resource(true));
	expect_setup_says("which is not in this process's bounding set, so "
			  "not even root can have it");
}

static void test_caps_drop(void)
{
	int flagged = -2;
	pthread_t t;

	EXPECT_EQ(ioflusher_flag_set(), 0);
	EXPECT_EQ(ioflusher_caps_have(CAP_SYS_RESOURCE), 1);
	EXPECT_EQ(ioflusher_caps_drop(NULL, 0), 0);
	EXPECT(caps_none());
	EXPECT_EQ(ioflusher_caps_have(CAP_SYS_RESOURCE), 0);
	/* The flag stays, on this thread and on threads started now. */
	EXPECT_EQ(kernel_flagged(), 1);
	EXPECT_EQ(ioflusher_flag_get(), 1);
	EXPECT_EQ(pthread_create(&t, NULL, report_main, &flagged), 0);
	pthread_join(t, NULL);
	EXPECT_EQ(flagged, 1);
	/* Setting what is set needs no capability: nothing is asked. */
	EXPECT_EQ(ioflusher_flag_set(), 0);
	/* The capability is really gone: clearing needs it. */
	EXPECT_EQ(ioflusher_flag_clear(), -EPERM);
	EXPECT_EQ(ioflusher_diagnose(IOFLUSHER_PROTECT_FLAG, -EPERM),
		  IOFLUSHER_REASON_CAPABILITY);
	EXPECT_EQ(kernel_flagged(), 1);
}

static void test_caps_keep(void)
{
	const int keep[] = {CAP_SYS_RESOURCE};

	EXPECT_EQ(ioflusher_caps_drop(keep, 1), 0);
	EXPECT_EQ(ioflusher_caps_have(CAP_SYS_RESOURCE), 1);
	EXPECT_EQ(ioflusher_caps_have(CAP_SYS_ADMIN), 0);
	EXPECT_EQ(ioflusher_caps_have(CAP_SETUID), 0);
	/* What was kept works. */
	EXPECT_EQ(ioflusher_flag_set(), 0);
	EXPECT_EQ(ioflusher_flag_clear(), 0);
}

static void test_tool_run(void)
{
	char *direct[] = {(char *)self_path, "--helper", "threads-flagged",
			  NULL};
	char *run[] = {
	    "ioflusher",       "run", "--", (char *)self_path, "--helper",
	    "threads-flagged", NULL};

	/* The helper fails when its threads run without the flag... */
	EXPECT_EQ(run_program(direct), HELPER_FAILED);
	/* ...and passes under ioflusher run. */
	EXPECT_EQ(run_program(run), 0);
}

/* /proc read-only in a mount namespace of this test's own: the flag can
 * be set, oom_score_adj not (EROFS).  run requires both, so CMD, which
 * would pass with the flag alone, must not start; --best-effort starts it. */
static void test_tool_run_oom_required(void)
{
	char *run[] = {"ioflusher",	  "run",      "--", (char *)self_path,
		       "--helper",	  "flag-is-set", NULL};
	char *best[] = {"ioflusher",	   "run",      "--best-effort", "--",
			(char *)self_path, "--helper", "flag-is-set",	NULL};

	if (!EXPECT_EQ(unshare(CLONE_NEWNS), 0) ||
	    !EXPECT_EQ(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), 0) ||
	    !EXPECT_EQ(mount(NULL, "/proc", NULL,
			     MS_REMOUNT | MS_BIND | MS_RDONLY, NULL),
		       0))
		return;
	EXPECT_EQ(access("/proc/self/oom_score_adj", W_OK), -1);
	EXPECT_EQ(run_program(run), 1);
	EXPECT_EQ(run_program(best), 0);
}

/* Start the hold helper under argv and return its PID (it reports itself
 * once its threads run), or -1; *child is the process to reap. */
static pid_t hold_start(char *const argv[], pid_t *child)
{
	char buf[64] = "";
	int fds[2];
	ssize_t n;
	pid_t pid;

	if (pipe2(fds, O_CLOEXEC) < 0)
		return -1;
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		dup2(fds[1], STDOUT_FILENO);
		execvp(argv[0], argv);
		_exit(127);
	}
	close(fds[1]);
	*child = pid;
	n = read(fds[0], buf, sizeof(buf) - 1);
	close(fds[0]);
	if (n <= 0 || strncmp(buf, "ready ", 6) != 0) {
		diag("hold helper said \"%s\"", buf);
		return -1;
	}
	return (pid_t)atoi(buf + 6);
}

static int tool_status(pid_t pid)
{
	char arg[16];
	char *argv[] = {"ioflusher", "status", arg, NULL};

	snprintf(arg, sizeof(arg), "%d", (int)pid);
	return run_program(argv);
}

static void test_tool_status(void)
{
	char *plain[] = {(char *)self_path, "--helper", "hold", NULL};
	char *run[] = {"ioflusher", "run",  "--", (char *)self_path,
		       "--helper",  "hold", NULL};
	char *one[] = {"ioflusher", "run",  "--", (char *)self_path,
		       "--helper",  "hold-one-cleared", NULL};
	pid_t child, pid;

	pid = hold_start(run, &child);
	if (EXPECT(pid > 0))
		EXPECT_EQ(tool_status(pid), 0);
	kill(child, SIGKILL);
	wait_child(child);

	/* 1, "not ready": not 2, a usage error or no such process. */
	pid = hold_start(plain, &child);
	if (EXPECT(pid > 0))
		EXPECT_EQ(tool_status(pid), 1);
	kill(child, SIGKILL);
	wait_child(child);

	/* Every thread flagged but one: a status that looked at the main
	 * thread alone would pass this. */
	pid = hold_start(one, &child);
	if (EXPECT(pid > 0))
		EXPECT_EQ(tool_status(pid), 1);
	kill(child, SIGKILL);
	wait_child(child);
}

/* A thread started before the lock that tries to clear after it. */
struct late_clear {
	sem_t go, done;
	int result;
	int kernel_flag;
};

static void *late_clear_main(void *data)
{
	struct late_clear *l = data;

	sem_wait(&l->go);
	l->result = ioflusher_flag_clear();
	l->kernel_flag = kernel_flagged();
	sem_post(&l->done);
	return NULL;
}

static void test_sandbox_lock(void)
{
	struct late_clear l = {.result = 1, .kernel_flag = -2};
	pthread_t t;

	EXPECT_EQ(ioflusher_flag_set(), 0);
	sem_init(&l.go, 0, 0);
	sem_init(&l.done, 0, 0);
	if (!EXPECT_EQ(pthread_create(&t, NULL, late_clear_main, &l), 0))
		return;
	EXPECT_EQ(ioflusher_sandbox_lock(0), 0);
	EXPECT_EQ(ioflusher_flag_clear(), -EPERM);
	/* Refused although CAP_SYS_RESOURCE is held: the sandbox. */
	EXPECT_EQ(ioflusher_diagnose(IOFLUSHER_PROTECT_FLAG, -EPERM),
		  IOFLUSHER_REASON_SANDBOX);
	EXPECT_EQ(kernel_flagged(), 1);
	EXPECT_EQ(munlockall(), -1);
	EXPECT_EQ(errno, EPERM);
	/* Setting stays allowed. */
	EXPECT_EQ(ioflusher_flag_set(), 0);
	/* The thread that existed before the lock is held to it too (TSYNC). */
	sem_post(&l.go);
	sem_wait(&l.done);
	pthread_join(t, NULL);
	EXPECT_EQ(l.result, -EPERM);
	EXPECT_EQ(l.kernel_flag, 1);
}

/* ------------------------------------------------------------ nobody */

static void drop_to_nobody(void)
{
	if (setgroups(0, NULL) < 0 || setresgid(NOBODY, NOBODY, NOBODY) < 0 ||
	    setresuid(NOBODY, NOBODY, NOBODY) < 0) {
		diag("cannot become nobody: %m");
		_exit(2);
	}
	/* As an ordinary user's process is (setuid made it undumpable). */
	prctl(PR_SET_DUMPABLE, 1UL, 0UL, 0UL, 0UL);
	if (!caps_none()) {
		diag("capabilities left after the change of user");
		_exit(2);
	}
}

static void as_root_set_flag(void)
{
	if (ioflusher_flag_set() != 0) {
		diag("cannot set the flag as root");
		_exit(2);
	}
}

static void test_user_flag_set(void)
{
	int r = ioflusher_flag_set();

	EXPECT_EQ(r, -EPERM);
	EXPECT_EQ(ioflusher_diagnose(IOFLUSHER_PROTECT_FLAG, r),
		  IOFLUSHER_REASON_CAPABILITY);
	EXPECT_EQ(ioflusher_flag_get(), 0);
	EXPECT_EQ(kernel_flagged(), 0);
	/* EPERM means the kernel knows the option. */
	EXPECT_EQ(ioflusher_flag_supported(), 1);
}

static void test_user_flag_scopes(void)
{
	int r;

	/* Clear already: nothing is asked of the kernel, nothing needed. */
	EXPECT_EQ(ioflusher_flag_clear(), 0);
	r = ioflusher_flag_save();
	EXPECT_EQ(r, -EPERM);
	EXPECT_EQ(ioflusher_diagnose(IOFLUSHER_PROTECT_FLAG, r),
		  IOFLUSHER_REASON_CAPABILITY);
	EXPECT_EQ(ioflusher_flag_restore(1), -EPERM);
	EXPECT_EQ(ioflusher_flag_restore(0), 0); /* nothing to change */
	EXPECT_EQ(kernel_flagged(), 0);
}

static void test_user_oom(void)
{
	int adj = 1, r;

	r = ioflusher_oom_set(0, -1000);
	EXPECT_EQ(r, -EACCES);
	EXPECT_EQ(ioflusher_diagnose(IOFLUSHER_PROTECT_OOM, r),
		  IOFLUSHER_REASON_CAPABILITY);
	EXPECT_EQ(ioflusher_oom_get(0, &adj), 0);
	EXPECT_EQ(adj, 0);
	/* Raising needs no privilege: the path itself works. */
	EXPECT_EQ(ioflusher_oom_set(0, 500), 0);
	EXPECT_EQ(proc_oom_score_adj(), 500);
}

static void test_user_setup_required(void)
{
	struct ioflusher_report *report = NULL;
	struct ioflusher_ctx *ctx = NULL;

	if (!EXPECT_EQ(ioflusher_ctx_new(&ctx), 0))
		return;
	EXPECT_EQ(ioflusher_setup(ctx, &report), -EPERM);
	if (EXPECT(report != NULL)) {
		report_dump(report);
		EXPECT_EQ(
		    ioflusher_report_outcome(report, IOFLUSHER_PROTECT_FLAG),
		    IOFLUSHER_OUTCOME_UNAVAILABLE);
		EXPECT_EQ(
		    ioflusher_report_error(report, IOFLUSHER_PROTECT_FLAG),
		    -EPERM);
		EXPECT_EQ(
		    ioflusher_report_reason(report, IOFLUSHER_PROTECT_FLAG),
		    IOFLUSHER_REASON_CAPABILITY);
		for (int p = IOFLUSHER_PROTECT_FLAG + 1;
		     p < IOFLUSHER_PROTECT_COUNT; p++) {
			EXPECT_EQ(ioflusher_report_outcome(report, p),
				  IOFLUSHER_OUTCOME_SKIPPED);
			EXPECT_EQ(ioflusher_report_reason(report, p),
				  IOFLUSHER_REASON_NOT_ATTEMPTED);
		}
	}
	ioflusher_report_free(report);
	ioflusher_ctx_unref(ctx);
}

static void test_user_setup_best_effort(void)
{
	const struct rlimit none = {0, 0};
	struct ioflusher_report *report = NULL;
	struct ioflusher_ctx *ctx = NULL;

	/* RLIMIT_MEMLOCK 0, as some service managers set it. */
	EXPECT_EQ(setrlimit(RLIMIT_MEMLOCK, &none), 0);
	if (!EXPECT_EQ(ioflusher_ctx_new(&ctx), 0))
		return;
	EXPECT_EQ(ioflusher_ctx_set_policy(ctx, IOFLUSHER_PROTECT_FLAG,
					   IOFLUSHER_POLICY_BEST_EFFORT),
		  0);
	EXPECT_EQ(ioflusher_setup(ctx, &report), 0);
	if (EXPECT(report != NULL)) {
		report_dump(report);
		EXPECT_EQ(
		    ioflusher_report_outcome(report, IOFLUSHER_PROTECT_FLAG),
		    IOFLUSHER_OUTCOME_UNAVAILABLE);
		EXPECT_EQ(
		    ioflusher_report_reason(report, IOFLUSHER_PROTECT_FLAG),
		    IOFLUSHER_REASON_CAPABILITY);
		EXPECT_EQ(
		    ioflusher_report_outcome(report, IOFLUSHER_PROTECT_OOM),
		    IOFLUSHER_OUTCOME_UNAVAILABLE);
		EXPECT_EQ(ioflusher_report_error(report, IOFLUSHER_PROTECT_OOM),
			  -EACCES);
		EXPECT_EQ(
		    ioflusher_report_reason(report, IOFLUSHER_PROTECT_OOM),
		    IOFLUSHER_REASON_CAPABILITY);
		EXPECT_EQ(
		    ioflusher_report_outcome(report, IOFLUSHER_PROTECT_MEMLOCK),
		    IOFLUSHER_OUTCOME_UNAVAILABLE);
		EXPECT_EQ(
		    ioflusher_report_reason(report, IOFLUSHER_PROTECT_MEMLOCK),
		    IOFLUSHER_REASON_LIMIT);
	}
	EXPECT_EQ(kernel_flagged(), 0);
	ioflusher_report_free(report);
	ioflusher_ctx_unref(ctx);
}

static void test_user_audit(void)
{
	struct ioflusher_audit *a = NULL;

	/* Reading needs no privilege: this process, and root's init. */
	if (EXPECT_EQ(ioflusher_audit_new(0, &a), 0)) {
		EXPECT_EQ(ioflusher_audit_count(a), 1);
		EXPECT_EQ(ioflusher_audit_missing(a), 1);
		ioflusher_audit_free(a);
	}
	if (EXPECT_EQ(ioflusher_audit_new(1, &a), 0)) {
		EXPECT(ioflusher_audit_count(a) >= 1);
		EXPECT_EQ(ioflusher_audit_missing(a), ioflusher_audit_count(a));
		ioflusher_audit_free(a);
	}
}

/* A daemon started flagged by root that then changed user. */
static void test_user_child_clear(void)
{
	pid_t pid;

	EXPECT_EQ(kernel_flagged(), 1); /* the flag survived setresuid */
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		int r = ioflusher_thread_child_clear(0);

		EXPECT_EQ(r, -EPERM);
		EXPECT_EQ(ioflusher_diagnose(IOFLUSHER_PROTECT_FLAG, r),
			  IOFLUSHER_REASON_CAPABILITY);
		EXPECT_EQ(kernel_flagged(), 1);
		fflush(stdout);
		_exit(failures ? 1 : 0);
	}
	EXPECT_EQ(wait_child(pid), 0);
}

static void test_user_caps_drop(void)
{
	EXPECT_EQ(kernel_flagged(), 1);
	EXPECT_EQ(ioflusher_caps_have(CAP_SYS_RESOURCE), 0);
	EXPECT_EQ(ioflusher_caps_drop(NULL, 0), 0); /* nothing to drop */
	EXPECT_EQ(kernel_flagged(), 1);
}

static void test_user_sandbox(void)
{
	/* No privilege needed (no_new_privs); clearing fails either way. */
	EXPECT_EQ(ioflusher_sandbox_lock(0), 0);
	EXPECT_EQ(ioflusher_flag_clear(), -EPERM);
	EXPECT_EQ(kernel_flagged(), 1);
}

static void test_user_tool_run(void)
{
	char *run[] = {
	    "ioflusher",       "run", "--", (char *)self_path, "--helper",
	    "threads-flagged", NULL};
	char *best[] = {"ioflusher",	   "run",      "--best-effort", "--",
			(char *)self_path, "--helper", "flag-is-set",	NULL};

	/* Without the capability the command does not start... */
	EXPECT_EQ(run_program(run), 1);
	/* ...unless asked to go on, and then it runs without the flag. */
	EXPECT_EQ(run_program(best), HELPER_FAILED);
}

/* ------------------------------------------------------------ fake prctl */

static void test_fake_active(void)
{
	/* The shim is in place: the kernel was not asked. */
	EXPECT_EQ(prctl(PR_SET_IO_FLUSHER, 1UL, 0UL, 0UL, 0UL), 0);
	EXPECT_EQ(kernel_flagged(), 0);
}

static void test_fake_flag(void)
{
	int r = ioflusher_flag_set();

	EXPECT_EQ(r, -EIO);
	EXPECT_EQ(ioflusher_diagnose(IOFLUSHER_PROTECT_FLAG, r),
		  IOFLUSHER_REASON_SANDBOX);
	EXPECT_EQ(ioflusher_flag_get(), 0);
	EXPECT_EQ(kernel_flagged(), 0);
}

static void test_fake_setup(void)
{
	struct ioflusher_report *report = NULL;
	struct ioflusher_ctx *ctx = NULL;

	if (!EXPECT_EQ(ioflusher_ctx_new(&ctx), 0))
		return;
	EXPECT(ioflusher_setup(ctx, &report) < 0);
	if (EXPECT(report != NULL)) {
		report_dump(report);
		EXPECT_EQ(
		    ioflusher_report_outcome(report, IOFLUSHER_PROTECT_FLAG),
		    IOFLUSHER_OUTCOME_FAILED);
		EXPECT_EQ(
		    ioflusher_report_reason(report, IOFLUSHER_PROTECT_FLAG),
		    IOFLUSHER_REASON_SANDBOX);
	}
	ioflusher_report_free(report);
	ioflusher_ctx_unref(ctx);
}

static const struct test tests[] = {
    {"flag: set, get and clear agree with /proc/thread-self/stat",
     test_flag_set_clear, SUITE_ROOT, NULL},
    {"flag: save and restore nest", test_flag_save_restore, SUITE_ROOT, NULL},
    {"thread: new threads inherit the flag, earlier ones do not",
     test_thread_inherit, SUITE_ROOT, NULL},
    {"flag: a forked child inherits it", test_fork_inherit, SUITE_ROOT, NULL},
    {"flag: execve keeps it", test_execve_keep, SUITE_ROOT, NULL},
    {"audit: sees every thread and none missing when all carry it",
     test_audit_all, SUITE_ROOT, NULL},
    {"audit: names the one thread that cleared it", test_audit_missing,
     SUITE_ROOT, NULL},
    {"thread: child_clear in a forked child clears the flag and the OOM score",
     test_child_clear, SUITE_ROOT, NULL},
    {"thread: child_clear resets the OOM score when the flag cannot be read",
     test_child_clear_oom_without_flag_reading, SUITE_ROOT, NULL},
    {"thread: child_clear raises CAP_SYS_RESOURCE, only permitted, to clear",
     test_child_clear_raises_capability, SUITE_ROOT, NULL},
    {"oom: oom_score_adj -1000 is set and read back", test_oom, SUITE_ROOT,
     NULL},
    {"oom: without oom_score_adj, oom_adj: -1000 is -17", test_oom_legacy,
     SUITE_ROOT, NULL},
    {"setup: every protection is applied", test_setup_applied, SUITE_ROOT,
     NULL},
    {"memlock: FUTURE_IF_UNLIMITED: no MCL_FUTURE under a limit without "
     "CAP_IPC_LOCK, and the mapping is made",
     test_memlock_future_if_unlimited, SUITE_ROOT, NULL},
    {"setup: without MCL_FUTURE the heap reserve is locked, or said not to be",
     test_setup_heap_reserve_locked, SUITE_ROOT, NULL},
    {"memlock: without MCL_FUTURE a new thread's stack reserve is locked, or "
     "said not to be",
     test_prefault_stack_locked, SUITE_ROOT, NULL},
    {"memlock: the locked main stack's reserve stays within the limit "
     "(EAGAIN, no SIGSEGV), with MCL_FUTURE or without; a forked child "
     "locks no stack",
     test_prefault_main_stack_and_fork, SUITE_ROOT, NULL},
    {"setup: a thread started before fails the flag (EBUSY), named",
     test_setup_threads, SUITE_ROOT, NULL},
    {"setup: CAP_SYS_RESOURCE only permitted: says raise it",
     test_setup_capability_lowered, SUITE_ROOT, NULL},
    {"setup: CAP_SYS_RESOURCE not permitted: says grant it",
     test_setup_capability_dropped, SUITE_ROOT, NULL},
    {"setup: CAP_SYS_RESOURCE out of the bounding set: says so",
     test_setup_capability_unbounded, SUITE_ROOT, NULL},
    {"caps: the flag stays after CAP_SYS_RESOURCE is dropped", test_caps_drop,
     SUITE_ROOT, NULL},
    {"caps: drop keeps the capabilities asked for", test_caps_keep, SUITE_ROOT,
     NULL},
    {"tool: ioflusher run -- CMD runs every thread of CMD flagged",
     test_tool_run, SUITE_ROOT, NULL},
    {"tool: ioflusher run refuses CMD when OOM protection cannot be had",
     test_tool_run_oom_required, SUITE_ROOT, NULL},
    {"tool: ioflusher status PID passes only when every thread is flagged",
     test_tool_status, SUITE_ROOT, NULL},
    {"sandbox: after the lock, clearing the flag fails", test_sandbox_lock,
     SUITE_ROOT, NULL},

    {"flag: set fails with EPERM, for want of a capability", test_user_flag_set,
     SUITE_USER, NULL},
    {"flag: save and restore fail with EPERM; clearing a clear flag asks nothing", test_user_flag_scopes,
     SUITE_USER, NULL},
    {"oom: -1000 fails with EACCES, for want of a capability", test_user_oom,
     SUITE_USER, NULL},
    {"setup: the required flag is unavailable and the rest not attempted",
     test_user_setup_required, SUITE_USER, NULL},
    {"setup: best effort reports each protection's own reason",
     test_user_setup_best_effort, SUITE_USER, NULL},
    {"audit: needs no privilege and finds every thread missing",
     test_user_audit, SUITE_USER, NULL},
    {"thread: child_clear fails with EPERM after the change of user",
     test_user_child_clear, SUITE_USER, as_root_set_flag},
    {"caps: dropping keeps the flag inherited from root", test_user_caps_drop,
     SUITE_USER, as_root_set_flag},
    {"sandbox: the lock needs no privilege", test_user_sandbox, SUITE_USER,
     as_root_set_flag},
    {"tool: ioflusher run refuses to start CMD, unless --best-effort",
     test_user_tool_run, SUITE_USER, NULL},

    {"shim: prctl(PR_SET_IO_FLUSHER) answers 0 and sets nothing",
     test_fake_active, SUITE_FAKE, NULL},
    {"flag: a faked success is caught: EIO, diagnosed as the sandbox",
     test_fake_flag, SUITE_FAKE, NULL},
    {"setup: fails, with the flag failed for the sandbox", test_fake_setup,
     SUITE_FAKE, NULL},
};

/* ------------------------------------------------------------ helpers */

/* Programs that the tests run, through execve or ioflusher run. */
static int helper(const char *what)
{
	if (strcmp(what, "flag-is-set") == 0)
		return kernel_flagged() == 1 && ioflusher_flag_get() == 1
			   ? 0
			   : HELPER_FAILED;
	if (strcmp(what, "threads-flagged") == 0) {
		struct ioflusher_audit *a = NULL;
		struct crew c;
		int missing = -1, count = -1;

		if (!crew_start(&c, 3, -1))
			return 2;
		if (ioflusher_audit_new(0, &a) == 0) {
			count = ioflusher_audit_count(a);
			missing = ioflusher_audit_missing(a);
			audit_dump(a);
			ioflusher_audit_free(a);
		}
		crew_finish(&c);
		return count == 4 && missing == 0 ? 0 : HELPER_FAILED;
	}
	if (strcmp(what, "hold") == 0 ||
	    strcmp(what, "hold-one-cleared") == 0) {
		struct crew c;

		/* The second of two workers clears its own flag. */
		if (!crew_start(&c, 2, strcmp(what, "hold") == 0 ? -1 : 1))
			return 2;
		printf("ready %d\n", (int)getpid());
		fflush(stdout);
		for (;;)
			pause();
	}
	fprintf(stderr, "vm-suite: no helper %s\n", what);
	return 2;
}

static int run_test(const struct test *t, unsigned int suite, int n)
{
	int status;
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		diag("fork: %m");
		return -1;
	}
	if (pid == 0) {
		alarm(TEST_SECONDS);
		if (suite == SUITE_USER) {
			if (t->as_root)
				t->as_root();
			drop_to_nobody();
		}
		t->run();
		fflush(stdout);
		_exit(failures ? 1 : 0);
	}
	status = wait_child(pid);
	if (status > 128)
		diag("killed by signal %d%s", status - 128,
		     status - 128 == SIGALRM ? " (timeout)" : "");
	printf("%sok %d - %s\n", status == 0 ? "" : "not ", n, t->name);
	fflush(stdout);
	return status == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
	static char exe[4096];
	const char *filter = argc > 2 ? argv[2] : "";
	unsigned int suite;
	int n = 0, failed = 0;
	ssize_t len;

	if (argc == 3 && strcmp(argv[1], "--helper") == 0)
		return helper(argv[2]);
	if (argc < 2 || argc > 3) {
		fprintf(stderr,
			"usage: vm-suite root|user|fake-prctl [NAME]\n");
		return 2;
	}
	if (strcmp(argv[1], "root") == 0)
		suite = SUITE_ROOT;
	else if (strcmp(argv[1], "user") == 0)
		suite = SUITE_USER;
	else if (strcmp(argv[1], "fake-prctl") == 0)
		suite = SUITE_FAKE;
	else {
		fprintf(stderr, "vm-suite: no suite %s\n", argv[1]);
		return 2;
	}
	/* The path, not /proc/self/exe: ioflusher run execs it. */
	len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (len > 0) {
		exe[len] = '\0';
		self_path = exe;
	}
	for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++)
		if ((tests[i].suites & suite) && strstr(tests[i].name, filter))
			n++;
	printf("1..%d\n", n);
	n = 0;
	for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++)
		if ((tests[i].suites & suite) &&
		    strstr(tests[i].name, filter) &&
		    run_test(&tests[i], suite, ++n) < 0)
			failed++;
	return failed ? 1 : 0;
}
