// SPDX-License-Identifier: MIT
/*
 * ioflusher-skeleton: the shape of an IO-flusher daemon on libioflusher.
 *
 * Copy this file to start a storage daemon.  The order is the point:
 *   1. ioflusher_setup() first, before any thread exists (threads inherit
 *      the flag from their creator);
 *   2. print the report, one line per protection;
 *   3. drop the capabilities that are no longer needed, still before any
 *      thread exists: capabilities are per thread too, and a drop after
 *      the workers started would leave them theirs.  The flag stays set,
 *      and the workers inherit it without needing CAP_SYS_RESOURCE;
 *   4. start the workers with ioflusher_thread_create(), which refuses to
 *      run a worker that does not carry the flag, on small stacks (all of
 *      a stack is locked under MCL_FUTURE), each pre-faulting its own;
 *   5. once they run, audit every thread of the process and log it, and
 *      lock the protections in with a seccomp filter;
 *   6. serve (here: workers take "requests" from a pipe) until SIGTERM.
 * A required protection that setup cannot apply stops the daemon (exit 4)
 * with a message that names what is missing; --best-effort serves anyway.
 * Any other failure to start exits 1, a bad command line 2.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <getopt.h>
#include <linux/capability.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ioflusher.h>

#define MAX_WORKERS 64
/* The IO path is shallow: a small stack is a small locked stack. */
#define WORKER_STACK (256 << 10)
#define WORKER_STACK_USED (64 << 10)

static int request_pipe[2];

static void *worker(void *arg)
{
	char req;

	(void)arg;
	/* Fault in (and, under MCL_FUTURE, lock) the stack the IO path will
	 * use, now rather than on the IO path.  It calls malloc() once, in
	 * pthread_getattr_np(), from the one arena the heap reserve set. */
	if (ioflusher_memlock_prefault_stack(WORKER_STACK_USED) < 0)
		fprintf(stderr, "worker: stack not pre-faulted\n");
	/* The IO path: no malloc here; buffers come from a mempool set up at
	 * start (see ioflusher_mempool_new(3)). */
	while (read(request_pipe[0], &req, 1) == 1 && req != 'q')
		;
	return NULL;
}

static void print_report(const struct ioflusher_report *report)
{
	char line[512];

	for (int p = 0; p < IOFLUSHER_PROTECT_COUNT; p++) {
		ioflusher_report_format(report, p, line, sizeof(line));
		printf("setup: %s\n", line);
	}
}

static int audit_threads(void)
{
	struct ioflusher_audit *audit;
	int r, n;

	r = ioflusher_audit_new(0, &audit);
	if (r < 0) {
		fprintf(stderr, "audit: %s\n", strerror(-r));
		return r;
	}
	n = ioflusher_audit_count(audit);
	printf("audit: %d of %d threads carry the io-flusher flag\n",
	       n - ioflusher_audit_missing(audit), n);
	for (int i = 0; i < n; i++) {
		const char *comm;
		int flagged;
		pid_t tid;

		ioflusher_audit_thread(audit, (unsigned int)i, &tid, &comm,
				       &flagged);
		printf("audit:   %d %-15s %s\n", (int)tid, comm,
		       flagged ? "flagged" : "MISSING");
	}
	r = ioflusher_audit_missing(audit);
	ioflusher_audit_free(audit);
	return r;
}

/* What --help printed must have been written: to a full disk that is a
 * failure (exit 1), not a success that printed nothing. */
static int stdout_flushed(void)
{
	if (fflush(stdout) != 0)
		fprintf(stderr, "cannot write the standard output: %s\n",
			strerror(errno));
	else if (ferror(stdout))
		fprintf(stderr, "cannot write the standard output\n");
	else
		return 0;
	return 1;
}

static void usage(FILE *out, const char *prog)
{
	fprintf(out,
		"Usage: %s [OPTION]...\n"
		"A template IO-flusher daemon: sets up, starts N workers, audits them,\n"
		"then waits for SIGTERM (or SECONDS) and exits.\n"
		"\n"
		"  -b, --best-effort     serve even where the io-flusher flag cannot be set\n"
		"  -t, --threads N       workers, 1 to %d (default 2)\n"
		"  -d, --duration SECONDS  exit after SECONDS, 1 to 86400 (default: at SIGTERM)\n"
		"  -s, --sandbox         lock the protections in with a seccomp filter\n"
		"  -h, --help            this text\n",
		prog, MAX_WORKERS);
}

/* A whole decimal number from min to max, or -1. */
static long parse_num(const char *s, long min, long max)
{
	char *end;
	long v;

	/* Digits only: strtol() takes "+5", " 7" and "-1" too. */
	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -1;
	return v;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "best-effort", no_argument, NULL, 'b' },
		{ "threads", required_argument, NULL, 't' },
		{ "duration", required_argument, NULL, 'd' },
		{ "sandbox", no_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	/* What the running daemon still needs: CAP_IPC_LOCK, so that what it
	 * maps later is locked beyond RLIMIT_MEMLOCK.  A daemon that forks
	 * helpers (ioflusher_thread_child_clear) or clears the flag for a
	 * scope keeps CAP_SYS_RESOURCE too; one that re-opens devices or
	 * raises limits later keeps what those need. */
	static const int keep[] = { CAP_IPC_LOCK };
	struct ioflusher_report *report = NULL;
	struct ioflusher_ctx *ctx;
	pthread_t threads[MAX_WORKERS];
	pthread_attr_t attr;
	int policy = IOFLUSHER_POLICY_REQUIRED, nthreads = 2, duration = 0;
	bool sandbox = false;
	sigset_t sigs;
	int c, r, sig, started = 0, status = 0;
	char name[32];

	while ((c = getopt_long(argc, argv, "bt:d:sh", opts, NULL)) != -1) {
		switch (c) {
		case 'b':
			policy = IOFLUSHER_POLICY_BEST_EFFORT;
			break;
		case 't':
			nthreads = (int)parse_num(optarg, 1, MAX_WORKERS);
			if (nthreads < 0) {
				fprintf(stderr, "--threads takes 1 to %d\n",
					MAX_WORKERS);
				return 2;
			}
			break;
		case 'd':
			duration = (int)parse_num(optarg, 1, 86400);
			if (duration < 0) {
				fprintf(stderr,
					"--duration takes 1 to 86400\n");
				return 2;
			}
			break;
		case 's':
			sandbox = true;
			break;
		case 'h':
			usage(stdout, argv[0]);
			return stdout_flushed();
		default:
			usage(stderr, argv[0]);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "unexpected argument: %s\n", argv[optind]);
		return 2;
	}

	/* 1. Set up, before any thread exists. */
	r = ioflusher_ctx_new(&ctx);
	if (r < 0) {
		fprintf(stderr, "ioflusher_ctx_new: %s\n", strerror(-r));
		return 1;
	}
	ioflusher_ctx_set_policy(ctx, IOFLUSHER_PROTECT_FLAG, policy);
	ioflusher_ctx_set_reserve(ctx, 256 * 1024, 1024 * 1024);
	r = ioflusher_setup(ctx, &report);
	ioflusher_ctx_unref(ctx);

	/* 2. Say what was applied and what was not, and the risk left.  No
	 * report: it could not be allocated, and nothing was tried. */
	if (!report) {
		fprintf(stderr, "setup: %s\n", strerror(-r));
		return 1;
	}
	print_report(report);
	ioflusher_report_free(report);
	if (r < 0) {
		/* 4, the LSB's "insufficient privilege": a service manager
		 * told so (RestartPreventExitStatus=) does not restart what a
		 * restart cannot fix. */
		fprintf(stderr, "setup failed: a required protection is "
				"missing, as said above "
				"(--best-effort runs anyway)\n");
		return 4;
	}

	/* SIGTERM and SIGINT are taken synchronously by the main thread;
	 * block them before the workers exist, so that they inherit the mask. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGALRM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	if (pipe2(request_pipe, O_CLOEXEC) < 0) {
		perror("pipe2");
		return 1;
	}

	/* 3. Drop what is no longer needed, before any thread exists.
	 * Without CAP_SETPCAP the bounding set is left as it is: what this
	 * process executes later could gain capabilities back. */
	if (ioflusher_caps_have(CAP_SETPCAP) != 1)
		fprintf(stderr, "capabilities: no CAP_SETPCAP, the bounding "
				"set stays as it is\n");
	r = ioflusher_caps_drop(keep, sizeof(keep) / sizeof(keep[0]));
	if (r < 0)
		fprintf(stderr,
			"dropping capabilities: %s%s; the workers keep them\n",
			strerror(-r),
			r == -EPERM ? " (a seccomp filter or a security "
				      "module refused)" :
				      "");

	/* 4. Workers that carry the flag, or none at all.  Best effort: a
	 * system without the flag still runs them, unprotected. */
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, WORKER_STACK);
	for (int i = 0; i < nthreads; i++) {
		r = ioflusher_thread_create(&threads[i], &attr, worker,
					    (void *)(intptr_t)i);
		if (r < 0 && policy == IOFLUSHER_POLICY_BEST_EFFORT)
			r = -pthread_create(&threads[i], &attr, worker,
					    (void *)(intptr_t)i);
		if (r < 0) {
			/* Why the flag is missing, not just "EPERM". */
			fprintf(stderr, "worker %d: %s: %s\n", i, strerror(-r),
				ioflusher_reason_string(ioflusher_diagnose(
					IOFLUSHER_PROTECT_FLAG, r)));
			status = 1;
			break;
		}
		/* Named by its creator, so that the audit right below sees
		 * the name whether or not the thread has run yet. */
		snprintf(name, sizeof(name), "worker-%d", i);
		name[15] = '\0'; /* the kernel's TASK_COMM_LEN */
		pthread_setname_np(threads[i], name);
		started++;
	}

	pthread_attr_destroy(&attr);

	/* 5. The audit, now that everything runs: a thread without the flag
	 * (one a library started, say) is a deadlock waiting to happen. */
	if (!status) {
		r = audit_threads();
		if (r != 0 && policy == IOFLUSHER_POLICY_REQUIRED) {
			fprintf(stderr, "%s: not serving\n",
				r < 0 ? "the threads cannot be audited" :
					"a thread runs without the flag");
			/* 4 says a restart cannot help; an audit that could
			 * not be made (out of memory) may be retried. */
			status = r < 0 ? 1 : 4;
		}
	}

	/* And keep the protections: no thread may undo them from now on. */
	if (!status && sandbox) {
		r = ioflusher_sandbox_lock(0);
		if (r < 0) {
			fprintf(stderr, "--sandbox: %s: not serving\n",
				strerror(-r));
			status = 4;
		}
	}

	/* 6. Serve until told to stop. */
	if (!status) {
		printf("serving: pid %d, %d workers; SIGTERM to stop\n",
		       (int)getpid(), started);
		fflush(stdout);
		if (duration > 0)
			alarm((unsigned int)duration);
		sigwait(&sigs, &sig);
		printf("stopped: %s\n",
		       sig == SIGALRM ? "--duration elapsed" : strsignal(sig));
	}
	for (int i = 0; i < started; i++)
		if (write(request_pipe[1], "q", 1) != 1)
			break;
	for (int i = 0; i < started; i++)
		pthread_join(threads[i], NULL);
	return status;
}
