// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Audit: which threads of a process carry the flag, from
 * /proc/PID/task/TID/stat.  Reading another process's stat needs no
 * privilege, so an operator can check a running daemon from outside.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "private.h"

struct audit_thread {
	pid_t tid;
	int flagged;
	char comm[64];
};

struct ioflusher_audit {
	unsigned int count;
	unsigned int missing;
	struct audit_thread threads[];
};

static int tid_compare(const void *a, const void *b)
{
	const struct audit_thread *x = a, *y = b;

	return (x->tid > y->tid) - (x->tid < y->tid);
}

static int audit_add(struct ioflusher_audit **ap, unsigned int *cap, pid_t pid,
		     pid_t tid)
{
	struct ioflusher_audit *a = *ap;
	struct audit_thread *t;
	unsigned long flags;
	int r;

	if (a->count == *cap) {
		unsigned int ncap = *cap * 2;
		struct ioflusher_audit *n;

		n = realloc(a, sizeof(*a) + ncap * sizeof(a->threads[0]));
		if (!n)
			return -ENOMEM;
		*ap = a = n;
		*cap = ncap;
	}
	t = &a->threads[a->count];
	r = proc_task_flags(pid, tid, &flags, t->comm, sizeof(t->comm));
	if (r == -ENOENT || r == -ESRCH)
		return 0; /* the thread ended while we looked */
	if (r < 0)
		return r;
	t->tid = tid;
	t->flagged = (flags & IOFLUSHER_PF_MASK) == IOFLUSHER_PF_MASK;
	if (!t->flagged)
		a->missing++;
	a->count++;
	return 0;
}

_public_ int ioflusher_audit_new(pid_t pid, struct ioflusher_audit **auditp)
{
	struct ioflusher_audit *a;
	unsigned int cap = 16;
	struct dirent *de;
	char path[64];
	DIR *dir;
	int r = 0;

	if (pid < 0 || !auditp)
		return -EINVAL;
	if (pid == 0)
		snprintf(path, sizeof(path), "/proc/self/task");
	else
		snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	dir = opendir(path); /* glibc opens it O_CLOEXEC */
	if (!dir)
		return errno == ENOENT && pid ? -ESRCH : -errno;
	a = calloc(1, sizeof(*a) + cap * sizeof(a->threads[0]));
	if (!a) {
		closedir(dir);
		return -ENOMEM;
	}
	for (;;) {
		char *end;
		long tid;

		/* NULL is the end, or an error: a process that exits while
		 * it is listed can cut the listing short. */
		errno = 0;
		de = readdir(dir);
		if (!de) {
			r = -errno;
			break;
		}
		tid = strtol(de->d_name, &end, 10);
		if (*end || tid <= 0)
			continue;
		r = audit_add(&a, &cap, pid, (pid_t)tid);
		if (r < 0)
			break;
	}
	closedir(dir);
	/* No thread left to look at: the process is gone, or a zombie.
	 * Never an empty audit, which would read as "all flagged". */
	if (r == 0 && a->count == 0)
		r = -ESRCH;
	if (r < 0) {
		free(a);
		return r;
	}
	qsort(a->threads, a->count, sizeof(a->threads[0]), tid_compare);
	*auditp = a;
	return 0;
}

_public_ int ioflusher_audit_count(const struct ioflusher_audit *audit)
{
	if (!audit)
		return -EINVAL;
	return (int)audit->count;
}

_public_ int ioflusher_audit_missing(const struct ioflusher_audit *audit)
{
	if (!audit)
		return -EINVAL;
	return (int)audit->missing;
}

_public_ int ioflusher_audit_thread(const struct ioflusher_audit *audit,
				    unsigned int index, pid_t *tid,
				    const char **comm, int *flagged)
{
	const struct audit_thread *t;

	if (!audit || index >= audit->count)
		return -EINVAL;
	t = &audit->threads[index];
	if (tid)
		*tid = t->tid;
	if (comm)
		*comm = t->comm;
	if (flagged)
		*flagged = t->flagged;
	return 0;
}

_public_ void ioflusher_audit_free(struct ioflusher_audit *audit)
{
	free(audit);
}
