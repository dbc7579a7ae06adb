// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Test helpers: real failures (seccomp filters, dropped capabilities,
 * lowered limits, namespaces, an old kernel's uname) and readers of /proc
 * that share no code with the library.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <seccomp.h>

#include "helpers.h"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif
#ifndef PR_GET_IO_FLUSHER
#define PR_GET_IO_FLUSHER 58
#endif

/* ------------------------------------------------------------ seccomp */

static int load_filter(int nr, int err, unsigned int nargs,
		       const struct scmp_arg_cmp *args, unsigned int nrules)
{
	scmp_filter_ctx f;
	int r = 0;

	f = seccomp_init(SCMP_ACT_ALLOW);
	if (!f)
		return -ENOMEM;
	/* One rule per compared value: each rule ANDs its comparisons. */
	for (unsigned int i = 0; r == 0 && i < nrules; i++)
		r = seccomp_rule_add_array(f, SCMP_ACT_ERRNO((uint32_t)err), nr,
					   nargs, nargs ? &args[i] : NULL);
	if (r == 0)
		r = seccomp_load(f);
	seccomp_release(f);
	return r;
}

int install_prctl_filter(int err)
{
	const struct scmp_arg_cmp args[] = {
	    /* The option is an int to the kernel: its low 32 bits. */
	    SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffu, PR_SET_IO_FLUSHER),
	    SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffu, PR_GET_IO_FLUSHER),
	};

	return load_filter(SCMP_SYS(prctl), err, 1, args, 2);
}

int install_syscall_filter(int nr, int err)
{
	return load_filter(nr, err, 0, NULL, 1);
}

/* ------------------------------------------------------- capabilities */

int drop_capability(int cap)
{
	cap_value_t v = (cap_value_t)cap;
	cap_t caps;
	int r = 0;

	caps = cap_get_proc();
	if (!caps)
		return -errno;
	if (cap_set_flag(caps, CAP_EFFECTIVE, 1, &v, CAP_CLEAR) < 0 ||
	    cap_set_flag(caps, CAP_PERMITTED, 1, &v, CAP_CLEAR) < 0 ||
	    cap_set_flag(caps, CAP_INHERITABLE, 1, &v, CAP_CLEAR) < 0 ||
	    cap_set_proc(caps) < 0)
		r = -errno;
	cap_free(caps);
	return r;
}

int status_caps(const char *field, uint64_t *mask)
{
	return status_u64(0, field, 16, mask);
}

/* ------------------------------------------------------------- limits */

int set_memlock_limit(uint64_t soft, uint64_t hard)
{
	struct rlimit rl = {
	    .rlim_cur = soft == UINT64_MAX ? RLIM_INFINITY : (rlim_t)soft,
	    .rlim_max = hard == UINT64_MAX ? RLIM_INFINITY : (rlim_t)hard,
	};

	if (setrlimit(RLIMIT_MEMLOCK, &rl) < 0)
		return -errno;
	return 0;
}

/* --------------------------------------- namespaces and personalities */

int enter_user_namespace(void)
{
	if (unshare(CLONE_NEWUSER) < 0)
		return -errno;
	return 0;
}

static int private_mounts(void)
{
	if (unshare(CLONE_NEWNS) < 0)
		return -errno;
	/* Do not let what follows propagate back to the host. */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return -errno;
	return 0;
}

int hide_proc(void)
{
	int r = private_mounts();

	if (r < 0)
		return r;
	if (umount2("/proc", MNT_DETACH) < 0)
		return -errno;
	if (access("/proc/self/stat", F_OK) == 0)
		return -EEXIST; /* something else is mounted there */
	return 0;
}

int read_only_proc(void)
{
	int r = private_mounts();

	if (r < 0)
		return r;
	if (mount(NULL, "/proc", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) <
	    0)
		return -errno;
	return 0;
}

int pretend_old_kernel(void)
{
	struct utsname u;
	int cur;

	cur = personality(0xffffffff);
	if (cur < 0)
		return -errno;
	if (personality((unsigned long)cur | UNAME26) < 0)
		return -errno;
	if (uname(&u) < 0)
		return -errno;
	return strncmp(u.release, "2.6.", 4) == 0 ? 0 : -ENOTSUP;
}

/* -------------------------------------------------------------- /proc */

static ssize_t read_text(const char *path, char *buf, size_t size)
{
	ssize_t n, len = 0;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	while ((size_t)len < size - 1 &&
	       (n = read(fd, buf + len, size - 1 - (size_t)len)) > 0)
		len += n;
	close(fd);
	buf[len] = '\0';
	return len;
}

int read_task_flags(pid_t pid, pid_t tid, unsigned long *flags, char *comm,
		    size_t comm_size)
{
	char path[64], buf[1024], *open_paren, *close_paren;
	ssize_t n;

	if (pid == 0 && tid == 0)
		snprintf(path, sizeof(path), "/proc/thread-self/stat");
	else
		snprintf(path, sizeof(path), "/proc/%d/task/%d/stat",
			 pid ? (int)pid : (int)getpid(), (int)tid);
	n = read_text(path, buf, sizeof(buf));
	if (n < 0)
		return (int)n;
	open_paren = strchr(buf, '(');
	close_paren = strrchr(buf, ')');
	if (!open_paren || !close_paren)
		return -EBADMSG;
	if (comm) {
		size_t len = (size_t)(close_paren - open_paren - 1);

		if (len >= comm_size)
			len = comm_size - 1;
		memcpy(comm, open_paren + 1, len);
		comm[len] = '\0';
	}
	/* proc(5): after "pid (comm)", state ppid pgrp session tty_nr
	 * tpgid flags. */
	if (sscanf(close_paren + 1, " %*c %*d %*d %*d %*d %*d %lu", flags) != 1)
		return -EBADMSG;
	return 0;
}

int kernel_flagged(void)
{
	unsigned long flags;
	int r;

	r = read_task_flags(0, 0, &flags, NULL, 0);
	if (r < 0)
		return r;
	return (flags & TEST_PF_IO_FLUSHER) == TEST_PF_IO_FLUSHER;
}

int status_u64(pid_t pid, const char *key, int base, uint64_t *value)
{
	char path[64], line[512];
	size_t keylen = strlen(key);
	int r = -ENOENT;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status",
		 pid ? (int)pid : (int)getpid());
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, key, keylen) != 0 || line[keylen] != ':')
			continue;
		*value = strtoull(line + keylen + 1, NULL, base);
		r = 0;
		break;
	}
	fclose(f);
	return r;
}

int read_oom_score_adj(pid_t pid, int *adj)
{
	char path[64], buf[32];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%d/oom_score_adj",
		 pid ? (int)pid : (int)getpid());
	n = read_text(path, buf, sizeof(buf));
	if (n < 0)
		return (int)n;
	*adj = atoi(buf);
	return 0;
}

int write_oom_score_adj(pid_t pid, int adj)
{
	char path[64];
	FILE *f;
	int r = 0;

	snprintf(path, sizeof(path), "/proc/%d/oom_score_adj",
		 pid ? (int)pid : (int)getpid());
	f = fopen(path, "we");
	if (!f)
		return -errno;
	if (fprintf(f, "%d", adj) < 0)
		r = -EIO;
	if (fclose(f) != 0 && r == 0)
		r = -errno;
	return r;
}

int smaps_lock_state(const char *path_part, struct mapping_lock *out)
{
	char line[4096];
	bool in = false;
	FILE *f;

	memset(out, 0, sizeof(*out));
	f = fopen("/proc/self/smaps", "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		unsigned long start, end, kib;
		int path_at = 0;

		/* A mapping's header: "start-end perms offset dev inode path".
		 */
		if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &start, &end,
			   &path_at) == 2 &&
		    path_at > 0) {
			in = strstr(line + path_at, path_part) != NULL;
			if (in)
				out->mappings++;
			continue;
		}
		if (!in)
			continue;
		if (sscanf(line, "Locked: %lu kB", &kib) == 1)
			out->kib += kib;
		else if (strncmp(line, "VmFlags:", 8) == 0 &&
			 strstr(line, " lo"))
			out->locked++;
	}
	fclose(f);
	return 0;
}

static int tid_compare(const void *a, const void *b)
{
	pid_t x = *(const pid_t *)a, y = *(const pid_t *)b;

	return (x > y) - (x < y);
}

int list_tasks(pid_t pid, pid_t *tids, int max)
{
	struct dirent *de;
	char path[64];
	int n = 0;
	DIR *dir;

	snprintf(path, sizeof(path), "/proc/%d/task",
		 pid ? (int)pid : (int)getpid());
	dir = opendir(path);
	if (!dir)
		return -errno;
	while ((de = readdir(dir))) {
		int tid = atoi(de->d_name);

		if (tid <= 0)
			continue;
		if (n == max) {
			n = -E2BIG;
			break;
		}
		tids[n++] = (pid_t)tid;
	}
	closedir(dir);
	if (n > 0)
		qsort(tids, (size_t)n, sizeof(*tids), tid_compare);
	return n;
}

long thread_minflt(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_THREAD, &ru) < 0)
		return -errno;
	return ru.ru_minflt;
}

int disable_thp(void)
{
	if (prctl(PR_SET_THP_DISABLE, 1UL, 0UL, 0UL, 0UL) < 0)
		return -errno;
	return 0;
}

pid_t unused_pid(void)
{
	char buf[32];
	pid_t pid;

	if (read_text("/proc/sys/kernel/pid_max", buf, sizeof(buf)) <= 0)
		return -1;
	pid = (pid_t)atoi(buf);
	/* kernel/pid.c allocates in [1, pid_max): this one never exists. */
	if (pid <= 1 || kill(pid, 0) == 0 || errno != ESRCH)
		return -1;
	return pid;
}

/* ---------------------------------------------------------- processes */

int run_in_child(int (*fn)(void *arg, int *out), void *arg, int *out, size_t n)
{
	size_t size = n * sizeof(int);
	int *shared, status;
	pid_t pid;

	shared = mmap(NULL, size ? size : 1, PROT_READ | PROT_WRITE,
		      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shared == MAP_FAILED)
		return -1;
	for (size_t i = 0; i < n; i++)
		shared[i] = INT_MIN;
	pid = fork();
	if (pid < 0) {
		munmap(shared, size ? size : 1);
		return -1;
	}
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL, 0UL, 0UL, 0UL);
		/* _exit: Criterion's and the sanitizers' exit handlers belong
		 * to the parent. */
		_exit(fn(arg, shared) & 0xff);
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	memcpy(out, shared, size);
	munmap(shared, size ? size : 1);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int child_start(struct child *c, int (*prepare)(void *arg), void *arg)
{
	int ready[2], stop[2];
	unsigned char answer = 0;
	ssize_t n;

	if (pipe2(ready, O_CLOEXEC) < 0)
		return -errno;
	if (pipe2(stop, O_CLOEXEC) < 0) {
		close(ready[0]);
		close(ready[1]);
		return -errno;
	}
	c->pid = fork();
	if (c->pid < 0) {
		int r = -errno;

		close(ready[0]);
		close(ready[1]);
		close(stop[0]);
		close(stop[1]);
		return r;
	}
	if (c->pid == 0) {
		int r = 0;
		char byte;

		prctl(PR_SET_PDEATHSIG, SIGKILL, 0UL, 0UL, 0UL);
		close(ready[0]);
		close(stop[1]);
		if (prepare)
			r = prepare(arg);
		answer = (unsigned char)(r < 0 ? -r : 0);
		if (write(ready[1], &answer, 1) != 1)
			_exit(1);
		/* Until the parent closes its end, or dies. */
		while (read(stop[0], &byte, 1) < 0 && errno == EINTR)
			;
		_exit(0);
	}
	close(ready[1]);
	close(stop[0]);
	c->stop_fd = stop[1];
	do
		n = read(ready[0], &answer, 1);
	while (n < 0 && errno == EINTR);
	close(ready[0]);
	if (n != 1 || answer) {
		child_stop(c);
		return n != 1 ? -EIO : -(int)answer;
	}
	return 0;
}

int child_stop(struct child *c)
{
	int status;

	close(c->stop_fd);
	while (waitpid(c->pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int stderr_capture_begin(struct capture *c)
{
	fflush(stderr);
	c->fd = memfd_create("stderr", MFD_CLOEXEC);
	if (c->fd < 0)
		return -errno;
	c->saved = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
	if (c->saved < 0 || dup2(c->fd, STDERR_FILENO) < 0) {
		close(c->fd);
		return -errno;
	}
	return 0;
}

ssize_t stderr_capture_end(struct capture *c, char *buf, size_t size)
{
	ssize_t n;

	fflush(stderr);
	dup2(c->saved, STDERR_FILENO);
	close(c->saved);
	n = pread(c->fd, buf, size - 1, 0);
	close(c->fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return n;
}
