// SPDX-License-Identifier: MIT
/*
 * ioflusher-skeleton: the shape of an IO-flusher daemon on libioflusher.
 *
 * Copy this file to start a storage daemon.  The order is the point, and
 * it is ioflusher(7)'s:
 *   0. fork the launcher of helpers, if the daemon runs any, while the
 *      process is small (ioflusher(7), FORKED HELPERS);
 *   1. ioflusher_setup() first, before any thread exists (threads inherit
 *      the flag from their creator);
 *   2. print the report, one line per protection; then make the IO path's
 *      buffers, a mempool (and open the devices and sockets);
 *   3. drop the capabilities that are no longer needed, still before any
 *      thread exists: capabilities are per thread too, and a drop after
 *      the workers started would leave them theirs.  The flag stays set,
 *      and the workers inherit it without needing CAP_SYS_RESOURCE;
 *   4. start the workers with ioflusher_thread_create(), which refuses to
 *      run a worker that does not carry the flag, on small stacks (all of
 *      a stack is locked under MCL_FUTURE), each pre-faulting its own;
 *   5. once they run, audit every thread of the process and log it, and
 *      with --sandbox lock the protections in with a seccomp filter;
 *   6. serve (here: workers take "requests" from a pipe) until SIGTERM.
 * A required protection that cannot be had stops the daemon (exit 4) with
 * a message that names what is missing: the flag at setup, capabilities
 * that cannot be dropped, a worker without the flag at the audit, the
 * filter of --sandbox.  --best-effort serves without the flag, and with
 * capabilities it could not drop; a --sandbox asked for is had or not
 * served.  Any other failure to start exits 1 (out of memory,
 * say, which a restart may cure), a bad command line 2.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <getopt.h>
#include <linux/capability.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#include <ioflusher.h>

#define MAX_WORKERS 64
/* The IO path is shallow: a small stack is a small locked stack.  What it
 * uses is pre-faulted, and must leave 64 KiB of the stack untouched
 * (ioflusher_memlock_prefault_stack(3)). */
#define WORKER_STACK (256 << 10)
#define WORKER_STACK_USED (64 << 10)
_Static_assert(WORKER_STACK_USED + (64 << 10) <= WORKER_STACK,
	       "WORKER_STACK_USED does not fit in WORKER_STACK");
/* A request's buffer: 4 KiB, aligned for O_DIRECT. */
#define BUF_SIZE 4096

static int request_pipe[2];
/* The IO path's buffers, made before the workers start: one per worker,
 * since each serves one request at a time (ioflusher(7), SIZING A MEMPOOL). */
static struct ioflusher_mempool *buffers;

static void *worker(void *arg)
{
	ssize_t got;
	char req;
	int r;

	(void)arg;
	/* Fault in and lock the stack the IO path will use, now rather than
	 * on the IO path (this thread's stack is a mapping made after
	 * mlockall(): without MCL_FUTURE the call locks it itself).  It
	 * calls malloc() once, in pthread_getattr_np(), from the one arena
	 * the heap reserve set. */
	r = ioflusher_memlock_prefault_stack(WORKER_STACK_USED);
	if (r < 0)
		fprintf(stderr, "worker: stack not pre-faulted: %s\n",
			strerror(-r));
	else if (r == 1)
		fprintf(stderr, "worker: stack pre-faulted, not locked: "
				"RLIMIT_MEMLOCK without CAP_IPC_LOCK\n");
	/* The IO path: no malloc(), no mmap(); a buffer from the pool, which
	 * waits for one to be freed rather than ask the kernel for memory. */
	for (;;) {
		void *buf;

		got = read(request_pipe[0], &req, 1);
		if (got < 0 && errno == EINTR)
			continue;
		if (got != 1 || req == 'q')
			break;
		buf = ioflusher_mempool_alloc(buffers, 0);
		if (!buf)
			break; /* only where futex(2) is refused */
		memset(buf, req, BUF_SIZE); /* serve the request here */
		ioflusher_mempool_free_elem(buffers, buf);
	}
	if (got < 0)
		fprintf(stderr, "worker: %s\n", strerror(errno));
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

/*
 * systemd's readiness protocol (sd_notify(3), for Type=notify): one
 * datagram, "READY=1" once the daemon serves, "STOPPING=1" when it stops,
 * to the AF_UNIX socket named in $NOTIFY_SOCKET ('@' first: the abstract
 * namespace).  Read once, at start, and taken out of the environment, so
 * that no child the daemon starts speaks for it.  Not under systemd:
 * nothing.
 */
static char notify_path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];

static void notify_init(void)
{
	const char *p = getenv("NOTIFY_SOCKET");

	if (p && (p[0] == '/' || p[0] == '@') &&
	    strlen(p) < sizeof(notify_path) - 1)
		strcpy(notify_path, p);
	unsetenv("NOTIFY_SOCKET");
}

static void notify(const char *state)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t len = strlen(notify_path);
	int fd;

	if (!len)
		return;
	memcpy(sa.sun_path, notify_path, len);
	if (sa.sun_path[0] == '@')
		sa.sun_path[0] = 0;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0 ||
	    sendto(fd, state, strlen(state), MSG_NOSIGNAL,
		   (const struct sockaddr *)&sa,
		   (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) <
		    0)
		fprintf(stderr, "systemd notify: %s\n", strerror(errno));
	if (fd >= 0)
		close(fd);
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
	 * maps later is locked beyond RLIMIT_MEMLOCK.  Helpers come from a
	 * launcher forked before the setup, which keeps its own capabilities
	 * (ioflusher(7), FORKED HELPERS).  A daemon that clears the flag for
	 * a scope keeps CAP_SYS_RESOURCE too; one that re-opens devices or
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

	/* Lines as they come, under a service manager too (stdout is a pipe
	 * there), in order with what goes to stderr. */
	setvbuf(stdout, NULL, _IOLBF, 0);

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

	/* 0. The launcher of helpers, if the daemon runs any, is forked
	 * here, before anything is locked or dropped; $NOTIFY_SOCKET is
	 * taken out of the environment before. */
	notify_init();

	/* 1. Set up, before any thread exists. */
	r = ioflusher_ctx_new(&ctx);
	if (r < 0) {
		fprintf(stderr, "ioflusher_ctx_new: %s\n", strerror(-r));
		return 1;
	}
	r = ioflusher_ctx_set_policy(ctx, IOFLUSHER_PROTECT_FLAG, policy);
	/* Without CAP_IPC_LOCK under a finite RLIMIT_MEMLOCK, MCL_FUTURE
	 * would refuse every later mapping beyond the limit: lock what is
	 * mapped now only, there, and the report says so. */
	if (r == 0)
		r = ioflusher_ctx_set_memlock_flags(
			ctx, IOFLUSHER_MEMLOCK_FUTURE_IF_UNLIMITED);
	if (r == 0)
		r = ioflusher_ctx_set_reserve(ctx, 256 * 1024, 1024 * 1024);
	if (r < 0) {
		/* A setting the library refuses is a bug in this code: say
		 * so rather than run with the defaults. */
		fprintf(stderr, "setup settings: %s\n", strerror(-r));
		ioflusher_ctx_unref(ctx);
		return 1;
	}
	r = ioflusher_setup(ctx, &report);

	/* 2. Say what was applied and what was not, and the risk left.  No
	 * report: it could not be allocated, and nothing was tried. */
	if (!report) {
		fprintf(stderr, "setup: %s\n", strerror(-r));
		ioflusher_ctx_unref(ctx);
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
		ioflusher_ctx_unref(ctx);
		return 4;
	}

	/* The IO path's buffers, made with ctx, which logs why one cannot
	 * be locked (the report above is said already: logged from here on
	 * only, unless IOFLUSHER_LOG set a priority).  The memory is locked
	 * and pre-faulted now; best effort serves from unlocked memory
	 * rather than none.  The pool holds its own reference to ctx.  Open
	 * the devices and sockets here too. */
	if (ioflusher_ctx_get_log_priority(ctx) < 0)
		ioflusher_ctx_set_log_priority(ctx, LOG_WARNING);
	r = ioflusher_mempool_new(ctx, (size_t)nthreads, BUF_SIZE, BUF_SIZE, 0,
				  policy == IOFLUSHER_POLICY_BEST_EFFORT ?
					  IOFLUSHER_MEMPOOL_UNLOCKED_OK :
					  0,
				  &buffers);
	ioflusher_ctx_unref(ctx);
	if (r < 0) {
		fprintf(stderr, "buffers: %s\n", strerror(-r));
		return 1;
	}

	/* SIGTERM, SIGINT and SIGHUP are taken synchronously by the main
	 * thread; block them before the workers exist, so that they inherit
	 * the mask. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	/* Its terminal gone: a stop, not a kill.  A daemon with a
	 * configuration to reload would take SIGHUP for that instead. */
	sigaddset(&sigs, SIGHUP);
	sigaddset(&sigs, SIGALRM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	/* A peer that closes its socket makes a write fail with EPIPE, to
	 * be handled where it happens, instead of killing the daemon. */
	signal(SIGPIPE, SIG_IGN);
	if (pipe2(request_pipe, O_CLOEXEC) < 0) {
		perror("pipe2");
		ioflusher_mempool_free(buffers);
		return 1;
	}

	/* 3. Drop what is no longer needed, before any thread exists.
	 * Without CAP_SETPCAP the bounding set is left as it is: what this
	 * process executes later could gain capabilities back. */
	if (ioflusher_caps_have(CAP_SETPCAP) != 1)
		fprintf(stderr, "capabilities: no CAP_SETPCAP, the bounding "
				"set stays as it is\n");
	r = ioflusher_caps_drop(keep, sizeof(keep) / sizeof(keep[0]));
	if (r < 0) {
		/* Kept, CAP_SYS_RESOURCE lets any thread clear the flag:
		 * not served, unless --best-effort. */
		fprintf(stderr, "dropping capabilities: %s%s%s\n", strerror(-r),
			r == -EPERM ? " (a seccomp filter or a security "
				      "module refused)" :
				      "",
			policy == IOFLUSHER_POLICY_REQUIRED ?
				": not serving" :
				"; the workers keep them");
		if (policy == IOFLUSHER_POLICY_REQUIRED)
			status = r == -ENOMEM ? 1 : 4;
	}

	/* 4. Workers that carry the flag, or none at all.  Best effort: a
	 * system without the flag still runs them, unprotected. */
	pthread_attr_init(&attr);
	r = pthread_attr_setstacksize(&attr, WORKER_STACK);
	if (r) {
		/* Below PTHREAD_STACK_MIN, say: the default stack instead
		 * would be 8 MiB a worker, all of it locked. */
		fprintf(stderr, "WORKER_STACK: %s\n", strerror(r));
		status = 1;
	}
	for (int i = 0; !status && i < nthreads; i++) {
		bool flagged = true;

		r = ioflusher_thread_create(&threads[i], &attr, worker,
					    (void *)(intptr_t)i);
		if (r < 0 && policy == IOFLUSHER_POLICY_BEST_EFFORT) {
			flagged = false;
			r = -pthread_create(&threads[i], &attr, worker,
					    (void *)(intptr_t)i);
		}
		if (r < 0) {
			/* Why the flag is missing, not just "EPERM"; other
			 * errors (-EAGAIN: RLIMIT_NPROC, or a stack that
			 * cannot be locked) are pthread_create(3)'s or /proc's,
			 * and so are all of the unflagged fallback's. */
			const char *why = "";

			if (flagged && (r == -EPERM || r == -EIO ||
					r == -EINVAL || r == -ENOSYS))
				why = ioflusher_reason_string(
					ioflusher_diagnose(
						IOFLUSHER_PROTECT_FLAG, r));
			fprintf(stderr, "worker %d: %s%s%s\n", i, strerror(-r),
				*why ? ": " : "", why);
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

	/* And keep the protections: no thread may undo them from now on.
	 * Asked for, not always: the filter sets no_new_privs on every
	 * thread, so that nothing the daemon executes from then on gains
	 * privileges (a set-user-ID helper, a file's capabilities), and under
	 * systemd's SystemCallFilter= it needs seccomp(2) allowed
	 * (ioflusher_sandbox_lock(3)).  Asked for and not had is not served:
	 * 4, or 1 for what a restart may cure. */
	if (!status && sandbox) {
		r = ioflusher_sandbox_lock(0);
		if (r < 0) {
			fprintf(stderr, "--sandbox: %s: not serving\n",
				strerror(-r));
			status = r == -ENOMEM || r == -EFAULT ? 1 : 4;
		}
	}

	/* 6. Serve until told to stop. */
	if (!status) {
		printf("serving: pid %d, %d workers; SIGTERM to stop\n",
		       (int)getpid(), started);
		fflush(stdout);
		/* Only now may units ordered after this one start. */
		notify("READY=1");
		if (duration > 0)
			alarm((unsigned int)duration);
		sigwait(&sigs, &sig);
		printf("stopped: %s\n",
		       sig == SIGALRM ? "--duration elapsed" : strsignal(sig));
		notify("STOPPING=1");
	}
	for (int i = 0; i < started; i++)
		if (write(request_pipe[1], "q", 1) != 1)
			break;
	for (int i = 0; i < started; i++)
		pthread_join(threads[i], NULL);
	ioflusher_mempool_free(buffers);
	return status;
}
