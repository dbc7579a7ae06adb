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
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/stat.h>
#include <sys/utsname.h>
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
		" -k, --keep-caps LIST     drop every capability but LIST (comma-separated,\n"
		"                          e.g. cap_sys_resource,cap_ipc_lock; \"none\")\n"
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

static int cap_bit(pid_t pid, const char *set, int cap)
{
	char buf[64];
	unsigned long long mask;

	if (!status_field(pid, set, buf, sizeof(buf)))
		return -1;
	mask = strtoull(buf, NULL, 16);
	return (int)((mask >> cap) & 1);
}

static const char *yes_no(int v)
{
	return v < 0 ? "unknown" : v ? "yes" : "no";
}

static void human(char *buf, size_t size, const char *limit_text)
{
	unsigned long long v;
	char *end;

	if (strcmp(limit_text, "unlimited") == 0) {
		snprintf(buf, size, "unlimited");
		return;
	}
	v = strtoull(limit_text, &end, 10);
	if (v >= (1ull << 20))
		snprintf(buf, size, "%.1f MiB", (double)v / (1 << 20));
	else
		snprintf(buf, size, "%llu KiB", v / 1024);
}

static void print_memlock_limit(pid_t pid)
{
	char path[64], line[256], soft[32] = "?", hard[32] = "?", a[32], b[32];
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/limits", (int)pid);
	f = fopen(path, "re");
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
	human(a, sizeof(a), soft);
	human(b, sizeof(b), hard);
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

		printf("%-18s effective %s, permitted %s, bounding %s (for %s)\n",
		       caps[i].name, yes_no(eff),
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

static void print_psi(void)
{
	char line[256];
	FILE *f = fopen("/proc/pressure/memory", "re");

	if (!f) {
		printf("%-18s unavailable (%s; needs CONFIG_PSI and psi=1)\n",
		       "PSI:", strerror(errno));
		return;
	}
	if (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		printf("%-18s /proc/pressure/memory: %s\n", "PSI:", line);
	}
	fclose(f);
}

static int print_threads(pid_t pid)
{
	struct ioflusher_audit *audit;
	int r, n, missing;

	r = ioflusher_audit_new(pid, &audit);
	if (r < 0) {
		errorx("cannot read the threads of %d: %s", (int)pid,
		       strerror(-r));
		return -1;
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

static int cmd_status(int argc, char **argv)
{
	pid_t pid = getpid();
	bool self = true;
	struct utsname u;
	char buf[64];
	int supported, adj, r, have_resource, initial, missing = 0;

	if (argc == 2 &&
	    (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
		usage(stdout);
		return EXIT_READY;
	}
	if (argc > 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (argc == 2) {
		char *end;
		long v = strtol(argv[1], &end, 10);

		if (*end || v <= 0 || v > INT_MAX) {
			errorx("not a process ID: '%s'", argv[1]);
			return EXIT_USAGE;
		}
		pid = (pid_t)v;
		self = false;
		if (kill(pid, 0) < 0 && errno == ESRCH) {
			errorx("no process %d", (int)pid);
			return EXIT_USAGE;
		}
	}
	uname(&u);
	supported = ioflusher_flag_supported();
	printf("%-18s Linux %s: PR_SET_IO_FLUSHER %s\n", "kernel:", u.release,
	       supported == 1 ? "supported" :
	       supported == 0 ? "NOT supported (needs Linux 5.6)" :
				"unknown");
	printf("%-18s %d%s\n", "process:", (int)pid,
	       self ? " (ioflusher itself; name a daemon's PID to audit it)" :
		      "");
	initial = print_userns(pid);
	have_resource = print_caps(pid);
	printf("%-18s %s\n", "seccomp:",
	       !status_field(pid, "Seccomp", buf, sizeof(buf)) ?
		       "unknown" :
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
	if (!self)
		missing = print_threads(pid);
	if (supported != 1) {
		printf("verdict:           not ready: %s\n",
		       supported == 0 ?
			       "the kernel has no PR_SET_IO_FLUSHER" :
			       "cannot tell whether the kernel has PR_SET_IO_FLUSHER");
		return EXIT_NOT_READY;
	}
	if (!self) {
		/* The flag decides; the other protections are worth a word. */
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
	printf("verdict:           ready: this process can set the flag\n");
	return EXIT_READY;
}

static int parse_caps(const char *list, int *caps, size_t *n)
{
	char *copy, *tok, *save;
	size_t count = 0;

	if (strcmp(list, "none") == 0 || !*list) {
		*n = 0;
		return 0;
	}
	copy = strdup(list);
	if (!copy)
		return -ENOMEM;
	for (tok = strtok_r(copy, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		cap_value_t v;

		if (cap_from_name(tok, &v) < 0 || count >= 64) {
			errorx("unknown capability '%s'", tok);
			free(copy);
			return -EINVAL;
		}
		caps[count++] = v;
	}
	free(copy);
	*n = count;
	return 0;
}

/*
 * For a command run as root (euid 0), execve makes the permitted set the
 * whole bounding set: a drop holds only where the bounding set shrank.
 * The first capability dropped but still bounded, or -1.
 */
static int check_bounding(const int *keep, size_t nkeep)
{
	if (geteuid() != 0)
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

static void print_report(const struct ioflusher_report *report, int p,
			 bool verbose)
{
	char line[768];

	if (!verbose &&
	    ioflusher_report_outcome(report, p) == IOFLUSHER_OUTCOME_APPLIED)
		return;
	if (ioflusher_report_outcome(report, p) == IOFLUSHER_OUTCOME_SKIPPED)
		return;
	ioflusher_report_format(report, p, line, sizeof(line));
	fprintf(stderr, "%s: %s\n", prog, line);
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
	while ((c = getopt_long(argc, argv, "+bo:lk:vh", opts, NULL)) != -1) {
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
			print_report(report, p, verbose);
		ioflusher_report_free(report);
	}
	if (r < 0) {
		errorx("not running %s: a required protection failed "
		       "(--best-effort runs it anyway)",
		       argv[optind]);
		return EXIT_NOT_READY;
	}
	if (no_limit) {
		r = ioflusher_memlock_raise_limit(UINT64_MAX);
	} else {
		uint64_t hard;

		r = ioflusher_memlock_limit(NULL, &hard);
		if (r == 0)
			r = ioflusher_memlock_raise_limit(hard);
	}
	if (r < 0) {
		errorx("cannot lift RLIMIT_MEMLOCK: %s (raising the hard limit needs "
		       "CAP_SYS_RESOURCE)",
		       strerror(-r));
		if (policy == IOFLUSHER_POLICY_REQUIRED)
			return EXIT_NOT_READY;
	}
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
		 * survive execve only as ambient ones. */
		for (size_t i = 0;
		     geteuid() != 0 && i < nkeep && CAP_AMBIENT_SUPPORTED();
		     i++)
			if (cap_set_ambient((cap_value_t)keep[i], CAP_SET) < 0)
				errorx("warning: %s is not kept across execve: "
				       "it cannot be made ambient: %s",
				       cap_to_name((cap_value_t)keep[i]),
				       strerror(errno));
	}
	if (verbose)
		fprintf(stderr, "%s: running %s\n", prog, argv[optind]);
	execvp(argv[optind], argv + optind);
	r = errno;
	errorx("cannot run %s: %s", argv[optind], strerror(r));
	return r == ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_EXEC;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "+hV", opts, NULL)) != -1) {
		switch (c) {
		case 'h':
			usage(stdout);
			return EXIT_READY;
		case 'V':
			printf("%s from %s %s\n", prog, PACKAGE_NAME,
			       PACKAGE_VERSION);
			return EXIT_READY;
		default:
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
