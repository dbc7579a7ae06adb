// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * OOM protection: /proc/PID/oom_score_adj, from -1000 (OOM_SCORE_ADJ_MIN,
 * never chosen) to 1000.  Lowering it below the process's
 * oom_score_adj_min needs CAP_SYS_RESOURCE (EACCES without); raising it
 * never does.  Kernels before 2.6.36 only have oom_adj (-17 disables, -16
 * to 15 scale the badness), still present, deprecated, in later ones.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "private.h"

#define OOM_DISABLE (-17)
#define OOM_ADJUST_MIN (-16)
#define OOM_ADJUST_MAX 15

static void oom_path(char *buf, size_t size, pid_t pid, const char *file)
{
	if (pid == 0)
		snprintf(buf, size, "/proc/self/%s", file);
	else
		snprintf(buf, size, "/proc/%d/%s", (int)pid, file);
}

/* The kernel's own conversion, fs/proc/base.c: adj * 1000 / 17. */
static int legacy_from_score(int adj)
{
	int v;

	if (adj == -1000)
		return OOM_DISABLE;
	v = adj * -OOM_DISABLE / 1000;
	if (v < OOM_ADJUST_MIN)
		v = OOM_ADJUST_MIN;
	if (v > OOM_ADJUST_MAX)
		v = OOM_ADJUST_MAX;
	return v;
}

/* As fs/proc/base.c reads oom_adj back: its maximum is the score's. */
static int score_from_legacy(int v)
{
	if (v == OOM_DISABLE)
		return -1000;
	if (v == OOM_ADJUST_MAX)
		return 1000;
	return v * 1000 / -OOM_DISABLE;
}

_public_ int ioflusher_oom_set(pid_t pid, int adj)
{
	char path[64], text[16];
	int r;

	if (pid < 0 || adj < -1000 || adj > 1000)
		return -EINVAL;
	oom_path(path, sizeof(path), pid, "oom_score_adj");
	snprintf(text, sizeof(text), "%d", adj);
	r = proc_write_file(path, text);
	if (r != -ENOENT)
		return r;
	oom_path(path, sizeof(path), pid, "oom_adj");
	snprintf(text, sizeof(text), "%d", legacy_from_score(adj));
	r = proc_write_file(path, text);
	/* /proc/PID itself missing is ESRCH to the caller. */
	return r == -ENOENT && pid ? -ESRCH : r;
}

_public_ int ioflusher_oom_get(pid_t pid, int *adj)
{
	char path[64], buf[32], *end;
	bool legacy = false;
	ssize_t n;
	long v;

	if (pid < 0 || !adj)
		return -EINVAL;
	oom_path(path, sizeof(path), pid, "oom_score_adj");
	n = proc_read_file(path, buf, sizeof(buf));
	if (n == -ENOENT) {
		legacy = true;
		oom_path(path, sizeof(path), pid, "oom_adj");
		n = proc_read_file(path, buf, sizeof(buf));
	}
	if (n < 0)
		return n == -ENOENT && pid ? -ESRCH : (int)n;
	v = strtol(buf, &end, 10);
	if (end == buf)
		return -EBADMSG;
	*adj = legacy ? score_from_legacy((int)v) : (int)v;
	return 0;
}
