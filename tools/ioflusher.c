// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * ioflusher(1): is this machine ready to run an IO-flusher daemon, does a
 * running daemon carry the flag on every thread, and run a command with
 * the flag set (the flag survives execve, as choom's and chrt's settings
 * do).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/securebits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/capability.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include "ioflusher.h"

/* Exit codes (ioflusher(1)). */
enum {
	EXIT_READY = 0,
	EXIT_NOT_READY = 1,
	EXIT_USAGE = 2,
	EXIT_CANNOT_EXEC = 126,
	EXIT_NOT_FOUND = 127,
};

#define PROC_USER_INIT_INO 0xEFFFFFFDU

static const char *prog = "ioflusher";

static void usage(FILE *out)
{
	fprintf(out,
		"Usage:\n"
		" %1$s status [PID]\n"
		" %1$s run [options] [--] COMMAND [ARG...]\n"
		"\n"
		"Check that the IO_FLUSHER protections can be had, or are in place\n"
		"on every thread of PID; or run COMMAND with them set.\n"
		"\n"
		"Options for run:\n"
		" -b, --best-effort        go on when a protection cannot be applied\n"
		" -o, --oom-score-adj N    OOM score adjustment for COMMAND (default -1000)\n"
		" -l, --no-mlock-limit     lift RLIMIT_MEMLOCK (needs CAP_SYS_RESOURCE)\n"
		" -k, --keep-caps LIST     drop every capability but LIST (names or numbers,\n"
		"                          separated by commas or blanks, e.g.\n"
		"                          cap_sys_resource,cap_ipc_lock; \"none\")\n"
		" -v, --verbose            print every protection, not only failures\n"
		"\n"
		" -h, --help               display this help\n"
		" -V, --version            display version\n"
		"\n"
		"Exit status: 0 ready or applied; 1 not ready or a required protection\n"
		"failed; 2 usage error; 126 COMMAND cannot run; 127 COMMAND not found.\n"
		"For more details see ioflusher(1).\n",
		prog);
}

static void errorx(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* A line "Key:\t..." of /proc/PID/status, or NULL. */
static char *status_field(pid_t pid, const char *key, char *buf, size_t size)
{
	char path[64], line[512];
	size_t klen = strlen(key);
	char *result = NULL;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return NULL;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, key, klen) || line[klen] != ':')
			continue;
		snprintf(buf, size, "%s",
			 line + klen + 1 + strspn(line + klen + 1, " \t"));
		buf[strcspn(buf, "\n")] = '\0';
		result = buf;
		break;
	}
	fclose(f);
	return result;
}

/* This process's own sets, which capget(2) and prctl(2) give without
 * /proc. */
static int own_cap_bit(const char *set, int cap)
{
	cap_flag_t which = strcmp(set, "CapEff") == 0 ? CAP_EFFECTIVE :
							CAP_PERMITTED;
	cap_flag_value_t v = CAP_CLEAR;
	cap_t caps;
	int r;

	if (strcmp(set, "CapBnd") == 0) {
		r = cap_get_bound((cap_value_t)cap);
		return r < 0 ? -1 : r > 0;
	}
	caps = cap_get_proc();
	if (!caps)
		return -1;
	r = cap_get_flag(caps, (cap_value_t)cap, which, &v);
	cap_free(caps);
	return r < 0 ? -1 : v == CAP_SET;
}

static int cap_bit(pid_t pid, const char *set, int cap)
{
	char buf[64];
	unsigned long long mask;

	if (!status_field(pid, set, buf, sizeof(buf)))
		return pid == getpid() ? own_cap_bit(set, cap) : -1;
	mask = strtoull(buf, NULL, 16);
	return (int)((mask >> cap) & 1);
}

static const char *yes_no(int v)
{
	return v < 0 ? "unknown" : v ? "yes" : "no";
}

/* Exact, so that two different limits never print alike: bytes unless a
 * whole number of KiB, and MiB only when a whole number of them. */
static void bytes_text(char *buf, size_t size, uint64_t v)
{
	if (v == UINT64_MAX)
		snprintf(buf, size, "unlimited");
	else if (v && v % (1u << 20) == 0)
		snprintf(buf, size, "%" PRIu64 " MiB", v >> 20);
	else if (v && v % 1024 == 0)
		snprintf(buf, size, "%" PRIu64 " KiB", v >> 10);
	else
		snprintf(buf, size, "%" PRIu64 " bytes", v);
}

/* A limit as /proc/PID/limits writes it: a number or "unlimited". */
static void limit_text(char *buf, size_t size, const char *text)
{
	unsigned long long v;
	char *end;

	if (strcmp(text, "unlimited") == 0) {
		bytes_text(buf, size, UINT64_MAX);
		return;
	}
	errno = 0;
	v = strtoull(text, &end, 10);
	if (errno || end == text || *end)
		snprintf(buf, size, "unknown");
	else
		bytes_text(buf, size, v);
}

static void print_memlock_limit(pid_t pid)
{
	char path[64], line[256], soft[32] = "?", hard[32] = "?", a[32], b[32];
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/limits", (int)pid);
	f = fopen(path, "re");
	if (!f && pid == getpid()) {
		struct rlimit rl;

		/* Without /proc, this process's own is still known. */
		if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0) {
			bytes_text(a, sizeof(a),
				   rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX :
								  rl.rlim_cur);
			bytes_text(b, sizeof(b),
				   rl.rlim_max == RLIM_INFINITY ? UINT64_MAX :
								  rl.rlim_max);
			printf("%-18s %s (hard %s)\n", "RLIMIT_MEMLOCK:", a, b);
			return;
		}
	}
	if (!f) {
		printf("%-18s unknown (%s)\n",
		       "RLIMIT_MEMLOCK:", strerror(errno));
		return;
	}
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "Max locked memory", 17) == 0 &&
		    sscanf(line + 17, "%31s %31s", soft, hard) == 2)
			break;
	fclose(f);
	limit_text(a, sizeof(a), soft);
	limit_text(b, sizeof(b), hard);
	printf("%-18s %s (hard %s)\n", "RLIMIT_MEMLOCK:", a, b);
}

static int print_caps(pid_t pid)
{
	static const struct {
		int cap;
		const char *name, *why;
	} caps[] = {
		{ CAP_SYS_RESOURCE, "CAP_SYS_RESOURCE",
		  "the flag; oom_score_adj below its minimum" },
		{ CAP_IPC_LOCK, "CAP_IPC_LOCK",
		  "locking more than RLIMIT_MEMLOCK" },
	};
	int have_resource = 0;

	for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
		int eff = cap_bit(pid, "CapEff", caps[i].cap);

		char key[32];

		snprintf(key, sizeof(key), "%s:", caps[i].name);
		printf("%-18s effective %s, permitted %s, bounding %s (for %s)\n",
		       key, yes_no(eff),
		       yes_no(cap_bit(pid, "CapPrm", caps[i].cap)),
		       yes_no(cap_bit(pid, "CapBnd", caps[i].cap)),
		       caps[i].why);
		if (caps[i].cap == CAP_SYS_RESOURCE)
			have_resource = eff == 1;
	}
	return have_resource;
}

static int print_userns(pid_t pid)
{
	char path[64];
	struct stat st;

	snprintf(path, sizeof(path), "/proc/%d/ns/user", (int)pid);
	if (stat(path, &st) < 0) {
		printf("%-18s unknown (%s)\n",
		       "user namespace:", strerror(errno));
		return -1;
	}
	if (st.st_ino == PROC_USER_INIT_INO) {
		printf("%-18s initial\n", "user namespace:");
		return 1;
	}
	printf("%-18s %llu, not the initial one: capabilities held there do not "
	       "count for the flag, OOM protection or memory locking\n",
	       "user namespace:", (unsigned long long)st.st_ino);
	return 0;
}

/* The first line of a small file, without its newline: 1, 0 for an empty
 * file, or -errno when it cannot be opened. */
static int first_line(const char *path, char *line, size_t size)
{
	FILE *f = fopen(path, "re");
	int r = 0;

	if (!f)
		return -errno;
	if (fgets(line, (int)size, f)) {
		line[strcspn(line, "\n")] = '\0';
		r = 1;
	}
	fclose(f);
	return r;
}

/* Without /proc (a mount namespace without it, a sandbox), or with one
 * that shows only the processes (subset=pid, systemd's ProcSubset=pid:
 * no /proc/sys, no /proc/pressure), a file of it that is missing says
 * nothing of the kernel: why, or NULL when /proc is whole. */
static const char *proc_partial(void)
{
	if (access("/proc/self/status", R_OK) < 0)
		return "/proc is not mounted here, or not readable";
	if (access("/proc/sys", F_OK) < 0)
		return "this /proc shows only processes (subset=pid)";
	return NULL;
}

static void print_psi(void)
{
	char line[256];
	int r = first_line("/proc/pressure/memory", line, sizeof(line));
	const char *partial = r == -ENOENT ? proc_partial() : NULL;

	if (partial)
		printf("%-18s unknown (%s)\n", "PSI:", partial);
	else if (r < 0)
		printf("%-18s unavailable (%s; needs CONFIG_PSI and psi=1)\n",
		       "PSI:", strerror(-r));
	else if (r)
		printf("%-18s /proc/pressure/memory: %s\n", "PSI:", line);
}

/* Locked is not pinned: compaction may move locked pages, and a thread
 * touching one then takes a minor fault (ioflusher(7), MEMORY). */
static void print_compaction(void)
{
	char line[32];
	int r = first_line("/proc/sys/vm/compact_unevictable_allowed", line,
			   sizeof(line));
	const char *partial = r == -ENOENT ? proc_partial() : NULL;

	if (partial)
		printf("%-18s unknown (%s)\n", "compaction:", partial);
	else if (r < 0)
		printf("%-18s %s\n", "compaction:",
		       r == -ENOENT ?
			       "not in this kernel: locked pages stay put" :
			       strerror(-r));
	else if (r)
		printf("%-18s vm.compact_unevictable_allowed = %s: %s\n",
		       "compaction:", line,
		       strcmp(line, "0") == 0 ?
			       "locked pages are not moved" :
			       "locked pages may be moved (a minor fault on "
			       "touching one meanwhile)");
}

static bool is_zombie(pid_t pid)
{
	char buf[64];

	return status_field(pid, "State", buf, sizeof(buf)) && buf[0] == 'Z';
}

/* The threads missing the flag, or a negative errno; *zombie when the
 * process has exited and is not reaped yet: no thread is left then. */
static int print_threads(pid_t pid, bool *zombie)
{
	struct ioflusher_audit *audit;
	int r, n, missing;

	r = ioflusher_audit_new(pid, &audit);
	*zombie = r == -ESRCH && is_zombie(pid);
	if (*zombie) {
		printf("%-18s 0 of 0 threads carry it: a zombie, it has exited "
		       "and no thread is left\n",
		       "io-flusher flag:");
		return r;
	}
	if (r < 0) {
		printf("%-18s unknown (cannot read its threads: %s)\n",
		       "io-flusher flag:", strerror(-r));
		return r;
	}
	n = ioflusher_audit_count(audit);
	missing = ioflusher_audit_missing(audit);
	printf("%-18s %d of %d threads carry it\n",
	       "io-flusher flag:", n - missing, n);
	for (int i = 0; i < n; i++) {
		const char *comm;
		int flagged;
		pid_t tid;

		ioflusher_audit_thread(audit, (unsigned int)i, &tid, &comm,
				       &flagged);
		printf("  thread %-8d %-16s %s\n", (int)tid, comm,
		       flagged ? "flagged" : "MISSING");
	}
	ioflusher_audit_free(audit);
	return missing;
}

/* Digits only: strtol would take " 12" and "+1" too. */
static pid_t parse_pid(const char *arg)
{
	char *end;
	long v;

	if (!*arg || strspn(arg, "0123456789") != strlen(arg))
		return -1;
	errno = 0;
	v = strtol(arg, &end, 10);
	if (errno || v <= 0 || v > INT_MAX)
		return -1;
	return (pid_t)v;
}

/*
 * 0 when /proc shows PID, -ESRCH when there is no such process, -EACCES
 * when there is one that /proc hides: kill() says it exists (EPERM, not
 * ESRCH), yet with hidepid=invisible (2) /proc/PID is absent, and with
 * hidepid=noaccess (1) its status, readable by all otherwise, is refused.
 * -ENOENT when /proc shows not even this process: not mounted, or denied.
 */
static int process_visible(pid_t pid)
{
	char path[64];
	int err;

	/* EPERM: it exists, another user's.  Or it may be signalled and be
	 * hidden all the same: one of this user's that is not dumpable
	 * (file capabilities), under hidepid=. */
	if (kill(pid, 0) < 0 && errno != EPERM)
		return errno == ESRCH ? -ESRCH : 0;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if (access(path, R_OK) == 0)
		return 0;
	err = errno;
	if (err != ENOENT && err != EPERM && err != EACCES)
		return 0;
	/* Or it exited in between. */
	if (kill(pid, 0) < 0 && errno == ESRCH)
		return -ESRCH;
	if (access("/proc/self/status", R_OK) < 0)
		return -ENOENT;
	return -EACCES;
}

/* The child of flag_trial(): tries the flag and exits with the errno. */
static int flag_trial_child(pid_t *child)
{
	*child = fork();
	if (*child < 0)
		return -errno;
	if (*child == 0) {
		int r = ioflusher_flag_set();

		_exit(r < 0 && -r < 256 ? -r : r < 0 ? EIO : 0);
	}
	return 0;
}

/*
 * Whether the flag can really be set here, which the capabilities alone do
 * not show: a seccomp filter or a security module may refuse prctl(2), or
 * fake its success.  Tried in a child that exits at once: 0, the negative
 * errno of ioflusher_flag_set(), or -EINTR with *sig when a filter killed
 * the child.
 */
static int flag_trial(int *sig)
{
	/* SIGCHLD ignored, as some supervisors leave it across execve, would
	 * reap the child before waitpid() sees it (ECHILD). */
	struct sigaction dfl = { .sa_handler = SIG_DFL }, old;
	pid_t child;
	int st, r;

	fflush(stdout);
	sigaction(SIGCHLD, &dfl, &old);
	r = flag_trial_child(&child);
	if (r == 0) {
		while (waitpid(child, &st, 0) < 0)
			if (errno != EINTR) {
				r = -errno;
				break;
			}
	}
	sigaction(SIGCHLD, &old, NULL);
	if (r < 0)
		return r;
	if (WIFSIGNALED(st)) {
		*sig = WTERMSIG(st);
		return -EINTR;
	}
	return -WEXITSTATUS(st);
}

static int cmd_status(int argc, char **argv)
{
	pid_t pid = getpid(), thread = 0;
	bool self = true;
	struct utsname u;
	char buf[64];
	int supported, adj, r, have_resource, initial, missing = 0, sig = 0;
	bool zombie = false;

	/* "status -- PID", as scripts write it to be safe. */
	if (argc >= 2 && strcmp(argv[1], "--") == 0) {
		argv[1] = argv[0];
		argv++;
		argc--;
	} else if (argc == 2 && (strcmp(argv[1], "-h") == 0 ||
				 strcmp(argv[1], "--help") == 0)) {
		usage(stdout);
		return EXIT_READY;
	}
	if (argc > 2) {
		errorx("status: more than one PID");
		usage(stderr);
		return EXIT_USAGE;
	}
	if (argc == 2) {
		pid = parse_pid(argv[1]);
		if (pid < 0) {
			errorx("not a process ID: '%s'", argv[1]);
			return EXIT_USAGE;
		}
		self = false;
		r = process_visible(pid);
		if (r == -ESRCH) {
			errorx("no process %d", (int)pid);
			return EXIT_USAGE;
		}
		if (r == -ENOENT) {
			errorx("/proc is not mounted here, or not readable: "
			       "process %d cannot be audited",
			       (int)pid);
			return EXIT_NOT_READY;
		}
		if (r == -EACCES) {
			errorx("process %d is hidden by /proc (mounted with "
			       "hidepid=): run ioflusher as root, as its user, "
			       "or in the group of /proc's gid= option",
			       (int)pid);
			return EXIT_NOT_READY;
		}
		/* A thread's ID names its /proc directory too: audit the
		 * process it belongs to, and say so. */
		pid_t tgid = status_field(pid, "Tgid", buf, sizeof(buf)) ?
				     (pid_t)atoi(buf) :
				     0;

		if (tgid > 0 && tgid != pid) {
			thread = pid;
			pid = tgid;
		}
	}
	uname(&u);
	supported = ioflusher_flag_supported();
	printf("%-18s Linux %s: PR_SET_IO_FLUSHER %s\n", "kernel:", u.release,
	       supported == 1 ? "supported" :
	       supported == 0 ? "NOT supported (needs Linux 5.6)" :
				"unknown");
	if (thread)
		printf("%-18s %d (%d is one of its threads)\n",
		       "process:", (int)pid, (int)thread);
	else
		printf("%-18s %d%s\n", "process:", (int)pid,
		       self ? " (ioflusher itself; name a daemon's PID to "
			      "audit it)" :
			      "");
	initial = print_userns(pid);
	have_resource = print_caps(pid);
	/* PR_GET_SECCOMP answers for this process without /proc (2 for a
	 * filter; strict mode would have killed it for asking). */
	if (!status_field(pid, "Seccomp", buf, sizeof(buf))) {
		r = self ? prctl(PR_GET_SECCOMP, 0UL, 0UL, 0UL, 0UL) : -1;
		if (r >= 0)
			snprintf(buf, sizeof(buf), "%d", r);
		else
			buf[0] = '\0';
	}
	printf("%-18s %s\n", "seccomp:",
	       !buf[0] ? "unknown" :
	       strcmp(buf, "2") == 0 ?
			 "filter (may refuse what the capabilities allow)" :
	       strcmp(buf, "1") == 0 ? "strict" :
				       "none");
	print_memlock_limit(pid);
	printf("%-18s %s\n", "locked memory:",
	       status_field(pid, "VmLck", buf, sizeof(buf)) ? buf : "unknown");
	r = ioflusher_oom_get(self ? 0 : pid, &adj);
	if (r < 0)
		printf("%-18s unknown (%s)\n", "oom_score_adj:", strerror(-r));
	else
		printf("%-18s %d%s\n", "oom_score_adj:", adj,
		       adj == -1000 ? " (never chosen by the OOM killer)" : "");
	print_psi();
	print_compaction();
	if (!self)
		missing = print_threads(pid, &zombie);
	if (supported != 1) {
		printf("verdict:           not ready: %s\n",
		       supported == 0 ?
			       "the kernel has no PR_SET_IO_FLUSHER" :
			       "cannot tell whether the kernel has PR_SET_IO_FLUSHER");
		return EXIT_NOT_READY;
	}
	if (!self) {
		/* The flag decides; the other protections are worth a word. */
		if (zombie) {
			printf("verdict:           NOT protected: a zombie, with "
			       "no thread left\n");
			return EXIT_NOT_READY;
		}
		if (missing != 0) {
			printf("verdict:           NOT protected: %s\n",
			       missing < 0 ? "its threads cannot be read" :
					     "threads run without the flag");
			return EXIT_NOT_READY;
		}
		printf("verdict:           every thread carries the flag%s%s\n",
		       r == 0 && adj != -1000 ?
			       "; not shielded from the OOM killer" :
			       "",
		       status_field(pid, "VmLck", buf, sizeof(buf)) &&
				       strtoull(buf, NULL, 10) == 0 ?
			       "; no memory locked" :
			       "");
		return EXIT_READY;
	}
	if (initial == 0 || !have_resource) {
		printf("verdict:           not ready: %s\n",
		       initial == 0 ?
			       "capabilities of this user namespace do not count" :
			       "this process lacks CAP_SYS_RESOURCE, needed to set the flag");
		return EXIT_NOT_READY;
	}
	r = flag_trial(&sig);
	if (r == -EINTR) {
		printf("verdict:           not ready: a process trying to set "
		       "the flag was killed by %s (a seccomp filter?)\n",
		       strsignal(sig));
		return EXIT_NOT_READY;
	}
	if (r < 0) {
		printf("verdict:           not ready: setting the flag failed "
		       "(%s): %s\n",
		       strerror(-r),
		       ioflusher_reason_string(
			       ioflusher_diagnose(IOFLUSHER_PROTECT_FLAG, r)));
		return EXIT_NOT_READY;
	}
	printf("verdict:           ready: this process can set the flag "
	       "(tried)\n");
	return EXIT_READY;
}

/* TEXT without the blanks around it, in place. */
static char *trim(char *text)
{
	size_t len;

	text += strspn(text, " \t");
	len = strlen(text);
	while (len && (text[len - 1] == ' ' || text[len - 1] == '\t'))
		text[--len] = '\0';
	return text;
}

/* A word that is a whole capability name or a decimal number: libcap's
 * cap_from_name() reads as far as it can ("cap_a cap_b" as cap_a, "+ep"
 * and trailing junk ignored) and numbers as C reads them (010 is 8). */
static bool cap_word(const char *w)
{
	bool digits = true, name = true;

	for (const char *p = w; *p; p++) {
		digits = digits && *p >= '0' && *p <= '9';
		name = name && (*p == '_' || (*p >= 'a' && *p <= 'z') ||
				(*p >= 'A' && *p <= 'Z'));
	}
	return *w && (name || (digits && (w[0] != '0' || !w[1])));
}

/* Names in any case, or decimal numbers, separated by commas or blanks
 * (as systemd's AmbientCapabilities= lists them); a number must be one
 * this kernel knows (cap_from_name() takes any).  A capability named twice
 * counts once. */
static int parse_caps(const char *list, int *caps, size_t *n)
{
	char *copy, *all, *tok, *save;
	size_t count = 0, i;
	int r = 0;

	copy = strdup(list);
	if (!copy)
		return -ENOMEM;
	all = trim(copy);
	if (strcasecmp(all, "none") == 0)
		*all = '\0';
	for (tok = strtok_r(all, ", \t\n", &save); tok;
	     tok = strtok_r(NULL, ", \t\n", &save)) {
		cap_value_t v;

		r = -EINVAL;
		if (!cap_word(tok) || cap_from_name(tok, &v) < 0 || v < 0) {
			errorx("unknown capability '%s' (names or decimal "
			       "numbers, separated by commas or blanks)",
			       tok);
			goto out;
		}
		if (v >= (cap_value_t)cap_max_bits()) {
			errorx("unknown capability '%s': this kernel's last is %d",
			       tok, (int)cap_max_bits() - 1);
			goto out;
		}
		r = 0;
		for (i = 0; i < count && caps[i] != v; i++)
			;
		if (i == count)
			caps[count++] = v;
	}
	*n = count;
out:
	free(copy);
	return r;
}

/*
 * Whether execve gives the command the whole bounding set: where the real
 * or the effective user ID is 0, unless SECBIT_NOROOT is set
 * (handle_privileged_root() in security/commoncap.c).
 */
static bool exec_as_root(void)
{
	int bits = prctl(PR_GET_SECUREBITS, 0UL, 0UL, 0UL, 0UL);

	return (getuid() == 0 || geteuid() == 0) &&
	       (bits < 0 || !(bits & SECBIT_NOROOT));
}

/*
 * For a command run as root, execve makes the permitted set the whole
 * bounding set: a drop holds only where the bounding set shrank.  The
 * first capability dropped but still bounded, or -1.
 */
static int check_bounding(const int *keep, size_t nkeep)
{
	if (!exec_as_root())
		return -1;
	for (int cap = 0; cap < (int)cap_max_bits(); cap++) {
		bool kept = false;

		for (size_t i = 0; i < nkeep; i++)
			kept |= keep[i] == cap;
		if (!kept && cap_get_bound((cap_value_t)cap) == 1)
			return cap;
	}
	return -1;
}

/*
 * Every protection's line, skipped ones included, but for the memory lock
 * and the reserves, which run turns off (they do not survive execve):
 * those, and the applied ones, only with -v.  (After a required failure
 * the report says of those "not attempted", which run never does.)
 */
static void print_report(const struct ioflusher_report *report, int p,
			 bool verbose, const char *cmd)
{
	char line[768];

	if (p == IOFLUSHER_PROTECT_MEMLOCK || p == IOFLUSHER_PROTECT_PREFAULT) {
		if (!verbose)
			return;
		if (p == IOFLUSHER_PROTECT_MEMLOCK)
			fprintf(stderr,
				"%s: memory lock: skipped: memory locks do not "
				"survive execve, %s must lock its own\n",
				prog, cmd);
		else
			fprintf(stderr,
				"%s: prefault: skipped: %s must fault in its "
				"own reserves\n",
				prog, cmd);
		return;
	}
	if (!verbose &&
	    ioflusher_report_outcome(report, p) == IOFLUSHER_OUTCOME_APPLIED)
		return;
	ioflusher_report_format(report, p, line, sizeof(line));
	fprintf(stderr, "%s: %s\n", prog, line);
}

/*
 * RLIMIT_MEMLOCK for COMMAND: the soft limit raised to the hard one, or
 * with -l both unlimited.  Raising the hard limit needs CAP_SYS_RESOURCE:
 * without it, -b -l falls back to the former, rather than leave the soft
 * limit lower than without -l.  0, or -1 when COMMAND must not run.
 */
static int raise_memlock(bool no_limit, int policy, bool verbose)
{
	uint64_t soft, hard;
	char s[32], h[32];
	int r, lift = 0;

	r = ioflusher_memlock_limit(NULL, &hard);
	if (r == 0 && no_limit) {
		lift = ioflusher_memlock_raise_limit(UINT64_MAX);
		if (lift < 0 && policy == IOFLUSHER_POLICY_REQUIRED) {
			errorx("cannot lift RLIMIT_MEMLOCK: %s (raising the hard "
			       "limit needs CAP_SYS_RESOURCE)",
			       strerror(-lift));
			return -1;
		}
	}
	if (r == 0 && (!no_limit || lift < 0))
		r = ioflusher_memlock_raise_limit(hard);
	if (r < 0) {
		errorx("cannot raise RLIMIT_MEMLOCK: %s", strerror(-r));
		return policy == IOFLUSHER_POLICY_REQUIRED ? -1 : 0;
	}
	bytes_text(h, sizeof(h), hard);
	if (lift < 0)
		errorx("cannot lift RLIMIT_MEMLOCK: %s (raising the hard limit "
		       "needs CAP_SYS_RESOURCE); the soft limit is raised to "
		       "the hard one, %s, instead",
		       strerror(-lift), h);
	if (verbose && ioflusher_memlock_limit(&soft, &hard) == 0) {
		bytes_text(s, sizeof(s), soft);
		bytes_text(h, sizeof(h), hard);
		fprintf(stderr, "%s: RLIMIT_MEMLOCK: applied: %s (hard %s)\n",
			prog, s, h);
	}
	return 0;
}

/* -v: the capabilities --keep-caps left, each once. */
static void print_kept(const int *keep, size_t nkeep)
{
	char names[1024] = "";
	size_t len = 0;

	for (size_t i = 0; i < nkeep && len < sizeof(names); i++) {
		bool seen = false;
		char *name;

		for (size_t j = 0; j < i; j++)
			seen |= keep[j] == keep[i];
		if (seen || ioflusher_caps_have(keep[i]) != 1)
			continue;
		name = cap_to_name((cap_value_t)keep[i]);
		len += (size_t)snprintf(names + len, sizeof(names) - len,
					"%s%s", len ? "," : "",
					name ? name : "?");
		cap_free(name);
	}
	fprintf(stderr, "%s: capabilities: applied: %s%s\n", prog,
		len ? "every one dropped but " : "every one dropped", names);
}

/* Whether NAME (LEN bytes, perhaps abbreviated) is the long option of OPTS
 * with value VAL. */
static bool long_option_is(const struct option *opts, const char *name,
			   size_t len, int val)
{
	for (; opts->name; opts++)
		if (opts->val == val && strncmp(opts->name, name, len) == 0)
			return true;
	return false;
}

/*
 * getopt_long's complaint in the tool's words (opterr is 0): C is what it
 * returned, ':' for a missing argument (the optstring starts with ":").
 * optopt is 0 for an unknown long option, the option's value for a long
 * one with a wrong argument, or the character of a short one.
 */
static void bad_option(const char *cmd, char **argv, const struct option *opts,
		       int c)
{
	const char *arg = argv[optind - 1];
	int len = (int)strcspn(arg, "=");

	if (strncmp(arg, "--", 2) == 0 &&
	    (!optopt ||
	     long_option_is(opts, arg + 2, (size_t)len - 2, optopt))) {
		if (c == ':')
			errorx("%soption '%.*s' needs an argument", cmd, len,
			       arg);
		else if (optopt)
			errorx("%soption '%.*s' takes no argument", cmd, len,
			       arg);
		else
			errorx("%sunknown option '%.*s'", cmd, len, arg);
	} else if (c == ':') {
		errorx("%soption '-%c' needs an argument", cmd, optopt);
	} else {
		errorx("%sunknown option '-%c'", cmd, optopt);
	}
}

static int cmd_run(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "best-effort", no_argument, NULL, 'b' },
		{ "oom-score-adj", required_argument, NULL, 'o' },
		{ "no-mlock-limit", no_argument, NULL, 'l' },
		{ "keep-caps", required_argument, NULL, 'k' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct ioflusher_report *report = NULL;
	struct ioflusher_ctx *ctx;
	int keep[64], policy = IOFLUSHER_POLICY_REQUIRED, adj = -1000, c, r;
	bool no_limit = false, drop = false, verbose = false;
	size_t nkeep = 0;
	char *end;

	optind = 1;
	while ((c = getopt_long(argc, argv, "+:bo:lk:vh", opts, NULL)) != -1) {
		switch (c) {
		case 'b':
			policy = IOFLUSHER_POLICY_BEST_EFFORT;
			break;
		case 'o': {
			long v;

			/* Range-checked before the cast: "4294966296" is not
			 * -1000, nor "" 0. */
			errno = 0;
			v = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || v < -1000 ||
			    v > 1000) {
				errorx("--oom-score-adj takes -1000 to 1000, not '%s'",
				       optarg);
				return EXIT_USAGE;
			}
			adj = (int)v;
			break;
		}
		case 'l':
			no_limit = true;
			break;
		case 'k':
			if (parse_caps(optarg, keep, &nkeep) < 0)
				return EXIT_USAGE;
			drop = true;
			break;
		case 'v':
			verbose = true;
			break;
		case 'h':
			usage(stdout);
			return EXIT_READY;
		default:
			bad_option("run: ", argv, opts, c);
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		errorx("run: no command given");
		usage(stderr);
		return EXIT_USAGE;
	}
	r = ioflusher_ctx_new(&ctx);
	if (r < 0) {
		errorx("%s", strerror(-r));
		return EXIT_NOT_READY;
	}
	/* Memory locks do not survive execve; the command locks its own. */
	if (ioflusher_ctx_set_policy(ctx, IOFLUSHER_PROTECT_FLAG, policy) < 0 ||
	    ioflusher_ctx_set_policy(ctx, IOFLUSHER_PROTECT_OOM, policy) < 0 ||
	    ioflusher_ctx_set_policy(ctx, IOFLUSHER_PROTECT_MEMLOCK,
				     IOFLUSHER_POLICY_OFF) < 0 ||
	    ioflusher_ctx_set_policy(ctx, IOFLUSHER_PROTECT_PREFAULT,
				     IOFLUSHER_POLICY_OFF) < 0 ||
	    ioflusher_ctx_set_oom_score_adj(ctx, adj) < 0) {
		ioflusher_ctx_unref(ctx);
		return EXIT_USAGE;
	}
	r = ioflusher_setup(ctx, &report);
	ioflusher_ctx_unref(ctx);
	if (report) {
		for (int p = 0; p < IOFLUSHER_PROTECT_COUNT; p++)
			print_report(report, p, verbose, argv[optind]);
		ioflusher_report_free(report);
	}
	if (r < 0) {
		errorx("not running %s: a required protection failed "
		       "(--best-effort runs it anyway)",
		       argv[optind]);
		return EXIT_NOT_READY;
	}
	if (raise_memlock(no_limit, policy, verbose) < 0)
		return EXIT_NOT_READY;
	if (drop) {
		r = ioflusher_caps_drop(keep, nkeep);
		if (r < 0) {
			errorx("cannot drop capabilities: %s", strerror(-r));
			return EXIT_NOT_READY;
		}
		r = check_bounding(keep, nkeep);
		if (r >= 0) {
			/* execve gives root every capability of the bounding
			 * set back: the drop would not hold for CMD. */
			errorx("not running %s as root: --keep-caps cannot hold, "
			       "%s is still in the bounding set (shrinking it "
			       "needs CAP_SETPCAP)",
			       argv[optind], cap_to_name((cap_value_t)r));
			return EXIT_NOT_READY;
		}
		/* For a command that is not run as root, kept capabilities
		 * survive execve only as ambient ones; one not held was not
		 * kept, and is not warned about. */
		for (size_t i = 0;
		     !exec_as_root() && i < nkeep && CAP_AMBIENT_SUPPORTED();
		     i++)
			if (own_cap_bit("CapPrm", keep[i]) == 1 &&
			    cap_set_ambient((cap_value_t)keep[i], CAP_SET) < 0)
				errorx("warning: %s is not kept across execve: "
				       "it cannot be made ambient: %s",
				       cap_to_name((cap_value_t)keep[i]),
				       strerror(errno));
		if (verbose)
			print_kept(keep, nkeep);
	}
	if (verbose)
		fprintf(stderr, "%s: running %s\n", prog, argv[optind]);
	execvp(argv[optind], argv + optind);
	r = errno;
	errorx("cannot run %s: %s", argv[optind], strerror(r));
	return r == ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_EXEC;
}

/* What was printed must have been written: a full disk is an error (1),
 * not a report nobody got.  A usage error stays 2.  A standard output
 * closed before the start (>&-) is no error where nothing was written to
 * it: run's failed exec keeps its 126 or 127. */
static int close_stdout(int status)
{
	bool failed = ferror(stdout), pending = __fpending(stdout) != 0;
	int err = 0;

	if (fclose(stdout) != 0 && (pending || errno != EBADF)) {
		failed = true;
		err = errno;
	}
	if (!failed)
		return status;
	if (err)
		errorx("cannot write the standard output: %s", strerror(err));
	else
		errorx("cannot write the standard output");
	return status == EXIT_USAGE ? EXIT_USAGE : EXIT_NOT_READY;
}

static int run_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, "+:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'h':
			usage(stdout);
			return EXIT_READY;
		case 'V':
			printf("%s from %s %s\n", prog, PACKAGE_NAME,
			       PACKAGE_VERSION);
			return EXIT_READY;
		default:
			bad_option("", argv, opts, c);
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (strcmp(argv[optind], "status") == 0)
		return cmd_status(argc - optind, argv + optind);
	if (strcmp(argv[optind], "run") == 0)
		return cmd_run(argc - optind, argv + optind);
	errorx("unknown command '%s'", argv[optind]);
	usage(stderr);
	return EXIT_USAGE;
}

int main(int argc, char **argv)
{
	return close_stdout(run_main(argc, argv));
}
