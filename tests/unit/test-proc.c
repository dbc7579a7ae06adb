// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The parser of /proc/PID/task/TID/stat lines (lib/proc.c, compiled into
 * this test: it is not exported).  comm may hold spaces and parentheses;
 * a line cut short anywhere before its flags must be refused without
 * reading past its end, which AddressSanitizer checks here: each line sits
 * in a buffer of its own exact length.  (A line cut inside the flags
 * number reads as a smaller number: /proc writes whole lines, and nothing
 * in the line can tell.)  And the reader of /proc/PID/status fields,
 * whose file has no bound on its length.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "private.h"

static int parse(const char *text, char *state, unsigned long *flags,
		 char *comm, size_t size)
{
	size_t n = strlen(text) + 1;
	char *copy = malloc(n);
	int r;

	cr_assert_not_null(copy);
	memcpy(copy, text, n);
	r = proc_parse_stat(copy, state, flags, comm, size);
	free(copy);
	return r;
}

Test(proc, parses_state_flags_and_comm)
{
	unsigned long flags = 0;
	char comm[32], state = 0;

	cr_assert(eq(int,
		     parse("4242 (nbd-worker-0) S 1 4242 4242 0 -1 5767488 "
			   "170 0 0 0 1 2 0 0 20 0 7 0 123 4096 1 ...\n",
			   &state, &flags, comm, sizeof(comm)),
		     0));
	cr_assert(eq(chr, state, 'S'));
	cr_assert(eq(ulong, flags, 5767488UL)); /* 0x580140 */
	cr_assert(eq(str, comm, "nbd-worker-0"));
}

Test(proc, comm_with_spaces_and_parentheses)
{
	unsigned long flags = 0;
	char comm[32], state = 0;

	cr_assert(eq(int,
		     parse("7 (a) b) (c) Z 1 7 7 0 -1 4194560 0", &state,
			   &flags, comm, sizeof(comm)),
		     0));
	cr_assert(eq(str, comm, "a) b) (c"));
	cr_assert(eq(chr, state, 'Z'));
	cr_assert(eq(ulong, flags, 4194560UL));
}

Test(proc, comm_is_cut_to_the_buffer)
{
	char comm[4];

	cr_assert(eq(int,
		     parse("7 (abcdef) R 1 7 7 0 -1 0", NULL, NULL, comm,
			   sizeof(comm)),
		     0));
	cr_assert(eq(str, comm, "abc"));
}

Test(proc, every_prefix_before_the_flags_is_refused)
{
	/* comm with a space and a ')' of its own: the last ')' ends it. */
	static const char line[] =
		"4242 (a b) c) S 1 4242 4242 0 -1 5767488 170";
	const char *flags_at = strstr(line, "5767488");
	unsigned long flags;
	char prefix[sizeof(line)];

	for (size_t len = 0; line + len <= flags_at; len++) {
		memcpy(prefix, line, len);
		prefix[len] = '\0';
		cr_assert(eq(int, parse(prefix, NULL, &flags, NULL, 0),
			     -EBADMSG),
			  "cut at %zu: \"%s\"", len, prefix);
	}
	cr_assert(eq(int, parse(line, NULL, &flags, NULL, 0), 0));
	cr_assert(eq(ulong, flags, 5767488UL));
}

Test(proc, lines_cut_short_are_refused)
{
	static const char *const bad[] = {
		"",
		"7",
		"7 (x",
		"7 x)",
		"7 )x( R 1 7 7 0 -1 0",
		"7 (x)",
		"7 (x) ",
		"7 (x) R",
		"7 (x) R 1 7 7 0 -1",
		"7 (x) R 1 7 7 0 -1 ",
		"7 (x) R 1 7 7 0  -1 0",
		"7 (x) R 1 7 7 0 -1 12abc",
		"7 (x) R 1 7 7 0 -1 99999999999999999999999",
	};
	unsigned long flags;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert(eq(int, parse(bad[i], NULL, &flags, NULL, 0),
			     -EBADMSG),
			  "line %zu: \"%s\"", i, bad[i]);
}

/* The length of /proc/self/status, read whole with stdio. */
static size_t status_length(void)
{
	FILE *f = fopen("/proc/self/status", "re");
	size_t n = 0;

	cr_assert_not_null(f);
	while (fgetc(f) != EOF)
		n++;
	fclose(f);
	return n;
}

/* Groups: comes before Threads, VmLck and Seccomp, and has no bound: a
 * status file much longer than any buffer still yields every field. */
Test(proc, status_fields_after_a_long_groups_line)
{
	uint64_t threads, seccomp, vmlck, v;
	gid_t groups[2000];

	cr_assert(eq(int, proc_status_u64(0, "Threads", 10, &threads), 0));
	cr_assert(eq(int, proc_status_u64(0, "Seccomp", 10, &seccomp), 0));
	cr_assert(eq(int, proc_status_u64(0, "VmLck", 10, &vmlck), 0));
	for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++)
		groups[i] = (gid_t)(1000000 + i);
	if (setgroups(sizeof(groups) / sizeof(groups[0]), groups) < 0)
		cr_skip("setgroups: %s", strerror(errno));
	cr_assert(gt(sz, status_length(), 16384));
	cr_assert(eq(int, proc_status_u64(0, "Threads", 10, &v), 0));
	cr_assert(eq(u64, v, threads));
	cr_assert(eq(int, proc_status_u64(0, "Seccomp", 10, &v), 0));
	cr_assert(eq(u64, v, seccomp));
	cr_assert(eq(int, proc_status_u64(0, "VmLck", 10, &v), 0));
	cr_assert(eq(u64, v, vmlck));
	cr_assert(eq(int, proc_status_u64(0, "NoSuchField", 10, &v), -ENOENT));
}
