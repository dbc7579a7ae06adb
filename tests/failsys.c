// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * failsys: run a command with system calls failing, as an old kernel or a
 * sandbox makes them fail, to test a daemon's failure paths end to end.
 *
 *   failsys SYSCALL=ERRNO[,SYSCALL=ERRNO]... COMMAND [ARG]...
 *
 * A real seccomp filter (libseccomp) answers each SYSCALL with ERRNO (a
 * number, or one of the names below); the command and every thread and
 * child it makes inherit it.  The filter sets no_new_privs, as any
 * unprivileged filter must.
 */
#include <errno.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct {
	const char *name;
	int value;
} errnos[] = {
	{ "EPERM", EPERM },   { "ENOENT", ENOENT }, { "EIO", EIO },
	{ "ENOMEM", ENOMEM }, { "EACCES", EACCES }, { "EFAULT", EFAULT },
	{ "EINVAL", EINVAL }, { "ENOSYS", ENOSYS },
};

static int errno_of(const char *s)
{
	char *end;
	long v;

	for (size_t i = 0; i < sizeof(errnos) / sizeof(errnos[0]); i++)
		if (!strcmp(s, errnos[i].name))
			return errnos[i].value;
	v = strtol(s, &end, 10);
	return *s && !*end && v > 0 && v < 4096 ? (int)v : -1;
}

int main(int argc, char **argv)
{
	scmp_filter_ctx f;
	char *spec, *item, *save = NULL;
	int r;

	if (argc < 3) {
		fprintf(stderr, "usage: failsys SYSCALL=ERRNO[,...] COMMAND "
				"[ARG]...\n");
		return 2;
	}
	f = seccomp_init(SCMP_ACT_ALLOW);
	if (!f) {
		fprintf(stderr, "failsys: seccomp_init failed\n");
		return 2;
	}
	spec = strdup(argv[1]);
	for (item = strtok_r(spec, ",", &save); item;
	     item = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(item, '=');
		int nr, err;

		if (!eq) {
			fprintf(stderr, "failsys: %s: not SYSCALL=ERRNO\n",
				item);
			return 2;
		}
		*eq = 0;
		nr = seccomp_syscall_resolve_name(item);
		err = errno_of(eq + 1);
		if (nr == __NR_SCMP_ERROR || err < 0) {
			fprintf(stderr, "failsys: %s=%s: unknown %s\n", item,
				eq + 1,
				nr == __NR_SCMP_ERROR ? "system call" :
							"errno");
			return 2;
		}
		r = seccomp_rule_add(f, SCMP_ACT_ERRNO((uint32_t)err), nr, 0);
		if (r < 0) {
			fprintf(stderr, "failsys: %s: %s\n", item,
				strerror(-r));
			return 2;
		}
	}
	free(spec);
	r = seccomp_load(f);
	seccomp_release(f);
	if (r < 0) {
		fprintf(stderr, "failsys: seccomp_load: %s\n", strerror(-r));
		return 2;
	}
	execvp(argv[2], argv + 2);
	fprintf(stderr, "failsys: %s: %s\n", argv[2], strerror(errno));
	return 127;
}
