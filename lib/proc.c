// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Readers for /proc.  Everything here needs no privilege: a thread's own
 * flags, and those of any process the caller may read, come from
 * /proc/PID/task/TID/stat, whose field 9 is task->flags (fs/proc/array.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "private.h"

ssize_t proc_read_file(const char *path, char *buf, size_t size)
{
	size_t len = 0;
	ssize_t n;
	int fd;

	if (size == 0)
		return -EINVAL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	while (len < size - 1) {
		n = read(fd, buf + len, size - 1 - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			n = -errno;
			close(fd);
			return n;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	return (ssize_t)len;
}

int proc_write_file(const char *path, const char *text)
{
	size_t len = strlen(text);
	ssize_t n;
	int fd, r = 0;

	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	do
		n = write(fd, text, len);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		r = -errno;
	else if ((size_t)n != len)
		r = -EIO;
	close(fd);
	return r;
}

int proc_parse_stat(const char *line, char *state, unsigned long *flags,
		    char *comm, size_t comm_size)
{
	const char *open_paren, *close_paren, *p;
	unsigned long v;
	char *end;
	int field;

	/* comm may contain spaces and ')': it runs to the last ')'. */
	open_paren = strchr(line, '(');
	close_paren = strrchr(line, ')');
	if (!open_paren || !close_paren || close_paren < open_paren)
		return -EBADMSG;
	if (comm && comm_size) {
		size_t n = (size_t)(close_paren - open_paren - 1);

		if (n >= comm_size)
			n = comm_size - 1;
		memcpy(comm, open_paren + 1, n);
		comm[n] = '\0';
	}
	/* Fields after comm, each after one space: 3 state, 4 ppid, 5 pgrp,
	 * 6 session, 7 tty_nr, 8 tpgid, 9 flags.  A line cut short anywhere
	 * is refused without reading past its end. */
	p = close_paren + 1;
	for (field = 3;; field++) {
		if (*p != ' ' || p[1] == '\0' || p[1] == ' ')
			return -EBADMSG;
		p++;
		if (field == 3 && state)
			*state = *p;
		if (field == 9)
			break;
		p += strcspn(p, " ");
	}
	errno = 0;
	v = strtoul(p, &end, 10);
	if (errno || end == p || (*end != ' ' && *end != '\0' && *end != '\n'))
		return -EBADMSG;
	if (flags)
		*flags = v;
	return 0;
}

int proc_task_flags(pid_t pid, pid_t tid, unsigned long *flags, char *comm,
		    size_t comm_size)
{
	char path[64], buf[1024], state;
	unsigned long v;
	ssize_t n;
	int r;

	if (pid == 0 && tid == 0)
		/* /proc/thread-self exists since Linux 3.17. */
		snprintf(path, sizeof(path), "/proc/thread-self/stat");
	else if (pid == 0)
		snprintf(path, sizeof(path), "/proc/self/task/%d/stat",
			 (int)tid);
	else
		snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", (int)pid,
			 (int)tid);
	n = proc_read_file(path, buf, sizeof(buf));
	if (n == -ENOENT && pid == 0 && tid == 0) {
		snprintf(path, sizeof(path), "/proc/self/task/%d/stat",
			 (int)self_tid());
		n = proc_read_file(path, buf, sizeof(buf));
	}
	if (n < 0)
		return (int)n;
	r = proc_parse_stat(buf, &state, &v, comm, comm_size);
	/* A zombie, or a thread already on its way out: PF_EXITING is set
	 * at the start of exit, before the thread lets a pthread_join()
	 * return, and the thread stays listed, running or in D, until it is
	 * reaped a little later.  Neither runs the program's code again. */
	if (r == 0 &&
	    (state == 'Z' || state == 'X' || (v & IOFLUSHER_PF_EXITING)))
		return -ESRCH;
	if (r == 0 && flags)
		*flags = v;
	return r;
}

/* One line of a status file: -ENOENT when it is not key's. */
static int status_line(const char *line, const char *key, size_t keylen,
		       int base, uint64_t *value)
{
	unsigned long long v;
	char *end;

	if (strncmp(line, key, keylen) != 0 || line[keylen] != ':')
		return -ENOENT;
	errno = 0;
	v = strtoull(line + keylen + 1, &end, base);
	if (errno || end == line + keylen + 1)
		return -EBADMSG;
	*value = v;
	return 0;
}

/*
 * A field of /proc/PID/status, read line by line: the file has no bound
 * (Groups: lists every supplementary group, up to 65536 of them, before
 * VmLck, Threads and Seccomp), so a line longer than the buffer is
 * skipped, never taken for the end of the file.  No field read here is
 * anywhere near that long.
 */
int proc_status_u64(pid_t pid, const char *key, int base, uint64_t *value)
{
	char path[64], buf[4096], *p, *nl;
	size_t keylen = strlen(key), len = 0;
	bool skip = false;
	int fd, r = -ENOENT;
	ssize_t n;

	if (pid == 0)
		snprintf(path, sizeof(path), "/proc/self/status");
	else
		snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	for (;;) {
		n = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			break;
		}
		if (n == 0) {
			/* A last line without its newline. */
			buf[len] = '\0';
			if (len && !skip)
				r = status_line(buf, key, keylen, base, value);
			break;
		}
		len += (size_t)n;
		buf[len] = '\0';
		for (p = buf; (nl = memchr(p, '\n', len - (size_t)(p - buf)));
		     p = nl + 1) {
			*nl = '\0';
			if (!skip)
				r = status_line(p, key, keylen, base, value);
			skip = false;
			if (r != -ENOENT)
				goto out;
		}
		len -= (size_t)(p - buf);
		if (len == sizeof(buf) - 1) {
			skip = true;
			len = 0;
		} else {
			memmove(buf, p, len);
		}
	}
out:
	close(fd);
	return r;
}

int proc_thread_count(pid_t pid)
{
	uint64_t n;
	int r;

	r = proc_status_u64(pid, "Threads", 10, &n);
	if (r < 0)
		return r;
	return (int)n;
}

int proc_seccomp_mode(void)
{
	uint64_t mode;
	int r;

	r = proc_status_u64(0, "Seccomp", 10, &mode);
	if (r < 0)
		return r;
	return (int)mode;
}

int kernel_at_least(unsigned int major, unsigned int minor)
{
	unsigned int maj, min;
	struct utsname u;

	if (uname(&u) < 0)
		return -errno;
	if (sscanf(u.release, "%u.%u", &maj, &min) != 2)
		return -EBADMSG;
	return maj > major || (maj == major && min >= minor);
}
