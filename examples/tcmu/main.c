// SPDX-License-Identifier: MIT
/*
 * ioflusher-tcmu: a userspace SCSI backstore for the kernel's LIO target,
 * served over target_core_user's command ring, with libioflusher.
 *
 * The start-up order is the skeleton's (examples/skeleton/skeleton.c):
 *   1. ioflusher_setup() before any thread: the io-flusher flag, OOM
 *      protection, memory locked as it is touched (MCL_ONFAULT, so that a
 *      thin memory disk is not committed whole), reserves pre-faulted;
 *   2. the report, one line per protection;
 *   3. the devices found, their backends opened, their rings mapped, and
 *      one mempool for per-command state;
 *   4. capabilities dropped (the flag stays): cap_set_proc() and the
 *      bounding set are per thread, so this comes before any ring thread,
 *      which inherits what its creator has then;
 *   5. one ring thread per device, started with ioflusher_thread_create(),
 *      which refuses a thread without the flag (inherited: it needs no
 *      CAP_SYS_RESOURCE to have it); each pre-faults its stack;
 *   6. every thread audited, and optionally the seccomp lock (TSYNC: it
 *      reaches the running threads);
 *   7. serve until SIGTERM.
 */
#include <errno.h>
#include <getopt.h>
#include <linux/capability.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <ioflusher.h>

#include "port.h"
#include "tcmu.h"

#define MAX_DEVICES 64

/*
 * What a ring thread's deepest path keeps on its stack: WRITE SAME's
 * block and iovecs (8 KiB), UNMAP's descriptors (4 KiB), the file
 * backend's copy of the iovecs (4 KiB), the SIGBUS guard's sigjmp_buf,
 * and libc's system calls under them: under 24 KiB.  Pre-faulted (and
 * locked) with a margin when the thread starts, since a page first
 * touched while serving is an allocation on the IO path.
 */
#define RING_STACK_RESERVE (64 * 1024)
/* The ring thread's stack: the reserve, the 64 KiB that
 * ioflusher_memlock_prefault_stack(3) leaves below it, and room above. */
#define RING_STACK (256 * 1024)
_Static_assert(RING_STACK_RESERVE + 64 * 1024 < RING_STACK,
	       "RING_STACK_RESERVE does not fit in RING_STACK");

struct device {
	struct tcmu_uio_dev uio;
	struct tcmu_backend *be;
	struct tcmu_lun lun;
	struct tcmu_ring ring;
	struct tcmu_port port;
	void *map;
	pthread_t thread;
	bool started;
	int result;
	bool reported; /* its failure said already, by wait_for_stop() */
	_Atomic bool ended;
};

struct options {
	const char *handler;
	const char *device;
	const char *root;
	int policy;
	unsigned int poll_us;
	bool sandbox;
	bool verbose;
};

static int stop_fd = -1;
static pthread_t main_thread;
static unsigned int poll_us;

static void *ring_thread(void *arg)
{
	struct device *d = arg;
	int r;

	/* ioflusher_setup() pre-faulted the main thread's stack only. */
	r = ioflusher_memlock_prefault_stack(RING_STACK_RESERVE);
	if (r < 0)
		fprintf(stderr,
			"%s: ring thread stack: %s: not pre-faulted, its "
			"pages are faulted in as they are first used\n",
			d->uio.name, strerror(-r));
	else if (r == 1)
		fprintf(stderr,
			"%s: ring thread stack: pre-faulted, not locked: "
			"RLIMIT_MEMLOCK without CAP_IPC_LOCK\n",
			d->uio.name);
	d->result = tcmu_ring_serve(&d->ring, d->port.fd, stop_fd, poll_us);
	/* Wake the main thread, which ends when no ring is served. */
	d->ended = true;
	pthread_kill(main_thread, SIGUSR1);
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

/* What a ring that cannot be attached means, beside its errno. */
static const char *ring_error(int r)
{
	switch (r) {
	case -EPROTONOSUPPORT:
		return "its mailbox is of another version than this daemon's "
		       "(2)";
	case -EUCLEAN:
		return "cmd_head or cmd_tail is not an entry of the ring: "
		       "reset it (echo 1 > action/reset_ring in the device's "
		       "configfs directory)";
	default:
		return "the ring's offset or size in the mailbox does not fit "
		       "map0, or map0 cannot be read whole";
	}
}

/* Why a backend was refused, beside its errno. */
static const char *backend_hint(const struct device *d, int r)
{
	if (!d->uio.dev_size)
		return " (the device has no size: write dev_size= to its "
		       "control file before enabling it)";
	if (r != -EINVAL)
		return "";
	if (strcmp(d->uio.config, "mem") && strncmp(d->uio.config, "file//", 6))
		return " (expected \"mem\", or \"file/\" and an absolute path)";
	if (!strcmp(d->uio.config, "mem"))
		return " (larger than this process can map)";
	return " (a regular file, not a device or a directory, is expected)";
}

static int open_device(struct device *d, const struct options *o)
{
	uint64_t data_bytes;
	int r;

	/* The device first: held, it is no other daemon's (and a second
	 * daemon touches no backend file of it). */
	r = tcmu_uio_open(o->root, &d->uio, &d->port.fd, &d->map);
	if (r < 0) {
		fprintf(stderr, "%s: /dev/%s: %s%s\n", d->uio.name, d->uio.uio,
			strerror(-r),
			r == -EBUSY ? " (another process serves it: one daemon "
				      "per device)" :
				      "");
		return r;
	}
	r = tcmu_backend_open(d->uio.config, d->uio.dev_size, &d->be);
	if (r < 0) {
		fprintf(stderr, "%s: backend \"%s\": %s%s\n", d->uio.name,
			d->uio.config, strerror(-r), backend_hint(d, r));
		return r;
	}
	d->port.name = d->uio.name;
	/* The LUN's limits depend on the data area: attach first. */
	r = tcmu_ring_init(&d->ring, d->map, d->uio.map_size, &d->lun,
			   &tcmu_port_ops, &d->port);
	if (r < 0) {
		fprintf(stderr, "%s: command ring: %s: %s\n", d->uio.name,
			strerror(-r), ring_error(r));
		return r;
	}
	data_bytes = d->uio.map_size - d->ring.data_off;
	r = tcmu_lun_init(&d->lun, d->be, d->uio.block_size, data_bytes,
			  d->uio.name);
	if (r < 0) {
		fprintf(stderr,
			"%s: block size %u, size %llu, data area %llu: not "
			"served (block sizes are powers of two from 512 to "
			"4096; the device must hold a block, and half the "
			"data area too)\n",
			d->uio.name, d->uio.block_size,
			(unsigned long long)d->uio.dev_size,
			(unsigned long long)data_bytes);
		return r;
	}
	printf("device: %s on /dev/%s: %s backend, %llu blocks of %u bytes, "
	       "serial %s\n",
	       d->uio.name, d->uio.uio, d->be->ops->name,
	       (unsigned long long)d->lun.nblocks, d->lun.block_size,
	       d->lun.serial);
	return 0;
}

/* -EIO when the device's backend lost acknowledged writes. */
static int close_device(struct device *d)
{
	if (d->map)
		munmap(d->map, d->uio.map_size);
	if (d->port.fd >= 0)
		close(d->port.fd);
	return tcmu_backend_close(d->be);
}

static void skipped(const struct tcmu_uio_dev *dev, int err, void *data)
{
	fprintf(stderr,
		"%s on /dev/%s: skipped: its sizes (maps/map0/size in sysfs, "
		"attrib/hw_block_size and attrib/dev_size in configfs): %s\n",
		dev->name, dev->uio, strerror(-err));
	++*(unsigned int *)data;
}

/* Why no device was found, and what to do. */
static void no_device(const struct options *o, unsigned int nskipped)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/sys/class/uio", o->root);
	if (access(path, F_OK) < 0) {
		fprintf(stderr,
			"no TCMU device: %s is missing, no UIO device exists: "
			"load target_core_user (modprobe target_core_user)\n",
			path);
		return;
	}
	if (nskipped)
		return; /* each one said why */
	fprintf(stderr,
		"no TCMU device for handler \"%s\"%s%s: write "
		"dev_config=%s/mem to a user backstore's control file and "
		"enable it\n",
		o->handler, o->device ? " named " : "",
		o->device ? o->device : "", o->handler);
}

/* The devices found, into devs[].uio; the number, or a negative errno.
 * *nskipped: those found and skipped, each said. */
static int scan(const struct options *o, struct device *devs,
		unsigned int *nskipped)
{
	struct tcmu_uio_dev *found;
	int r;

	/* One more than served, to tell that some are left out. */
	found = calloc(MAX_DEVICES + 1, sizeof(*found));
	if (!found)
		return -ENOMEM;
	r = tcmu_uio_scan(o->root, o->handler, o->device, found,
			  MAX_DEVICES + 1, skipped, nskipped);
	if (r > MAX_DEVICES) {
		fprintf(stderr,
			"more than %d devices: only %d of them are served\n",
			MAX_DEVICES, MAX_DEVICES);
		r = MAX_DEVICES;
	}
	for (int i = 0; i < r; i++) {
		devs[i].uio = found[i];
		devs[i].port.fd = -1;
	}
	free(found);
	return r;
}

/* What --help or --version printed must have been written: to a full
 * disk that is a failure (exit 1), not a success that printed nothing. */
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
		"Serve the TCMU devices of a handler (target_core_user backstores\n"
		"whose dev_config is HANDLER/mem or HANDLER/file//PATH).\n"
		"\n"
		"  -H, --handler NAME   the handler (subtype) to serve (ioflusher)\n"
		"  -d, --device NAME    only the configfs device NAME\n"
		"  -b, --best-effort    run even without the io-flusher flag\n"
		"  -p, --poll USEC      spin up to USEC for more commands (0)\n"
		"  -s, --sandbox        lock the protections in with seccomp\n"
		"  -r, --root DIR       look for sysfs, configfs and /dev under DIR\n"
		"  -v, --verbose        per-device statistics at exit\n"
		"  -h, --help           this text\n"
		"  -V, --version        the version\n",
		prog);
}

static int parse_options(int argc, char **argv, struct options *o)
{
	static const struct option opts[] = {
		{ "handler", required_argument, NULL, 'H' },
		{ "device", required_argument, NULL, 'd' },
		{ "best-effort", no_argument, NULL, 'b' },
		{ "poll", required_argument, NULL, 'p' },
		{ "sandbox", no_argument, NULL, 's' },
		{ "root", required_argument, NULL, 'r' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	char *end;
	long v;
	int c;

	*o = (struct options){ .handler = "ioflusher",
			       .root = "",
			       .policy = IOFLUSHER_POLICY_REQUIRED };
	while ((c = getopt_long(argc, argv, "H:d:bp:sr:vhV", opts, NULL)) !=
	       -1) {
		switch (c) {
		case 'H':
			o->handler = optarg;
			break;
		case 'd':
			o->device = optarg;
			break;
		case 'b':
			o->policy = IOFLUSHER_POLICY_BEST_EFFORT;
			break;
		case 'p':
			/* Digits only: strtol() takes "+5" and " 7" too. */
			errno = 0;
			v = strtol(optarg, &end, 10);
			if (*optarg < '0' || *optarg > '9' || errno || *end ||
			    v > 1000000) {
				fprintf(stderr, "--poll takes 0 to 1000000\n");
				return 2;
			}
			o->poll_us = (unsigned int)v;
			break;
		case 's':
			o->sandbox = true;
			break;
		case 'r':
			o->root = optarg;
			break;
		case 'v':
			o->verbose = true;
			break;
		case 'h':
			usage(stdout, argv[0]);
			return stdout_flushed();
		case 'V':
			printf("ioflusher-tcmu " TCMU_VERSION_STRING "\n");
			return stdout_flushed();
		default:
			usage(stderr, argv[0]);
			return 2;
		}
	}
	if (optind < argc) {
		usage(stderr, argv[0]);
		return 2;
	}
	return -1;
}

/*
 * 0, or the exit status: 4 when a required protection could not be
 * applied (the LSB's "insufficient privilege": the unit's
 * RestartPreventExitStatus= does not restart what a restart cannot fix),
 * 1 when setup could not even try (out of memory).
 */
static int setup(const struct options *o, struct ioflusher_ctx **ctxp)
{
	struct ioflusher_report *report = NULL;
	struct ioflusher_ctx *ctx;
	int r;

	r = ioflusher_ctx_new(&ctx);
	if (r < 0) {
		fprintf(stderr, "ioflusher_ctx_new: %s\n", strerror(-r));
		return 1;
	}
	r = ioflusher_ctx_set_policy(ctx, IOFLUSHER_PROTECT_FLAG, o->policy);
	/* Lock pages as they are touched: the memory backend's mapping is
	 * the whole LUN and must not be committed at once.  Without
	 * CAP_IPC_LOCK under a finite RLIMIT_MEMLOCK, MCL_FUTURE would
	 * charge every later mapping whole to the limit and refuse it
	 * beyond (mlock_future_ok() in mm/mmap.c, even under MCL_ONFAULT):
	 * lock what is mapped now only, there, and the report says so. */
	if (r == 0)
		r = ioflusher_ctx_set_memlock_flags(
			ctx, IOFLUSHER_MEMLOCK_ONFAULT |
				     IOFLUSHER_MEMLOCK_FUTURE_IF_UNLIMITED);
	/* The main thread's stack and the heap: what start-up and the
	 * signal wait use.  The ring threads pre-fault their own stacks. */
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
	if (r < 0 && !report) {
		/* The report could not be allocated: nothing was tried. */
		fprintf(stderr, "setup: %s\n", strerror(-r));
		ioflusher_ctx_unref(ctx);
		return 1;
	}
	if (report) {
		print_report(report);
		ioflusher_report_free(report);
	}
	if (r < 0) {
		fprintf(stderr, "setup failed: a required protection is "
				"missing (--best-effort runs anyway)\n");
		ioflusher_ctx_unref(ctx);
		return 4;
	}
	/* The report said what setup did.  From here on the library logs
	 * warnings (unless IOFLUSHER_LOG set a priority): why a pool's memory
	 * cannot be locked, say. */
	if (ioflusher_ctx_get_log_priority(ctx) < 0)
		ioflusher_ctx_set_log_priority(ctx, LOG_WARNING);
	*ctxp = ctx;
	return 0;
}

static int start_threads(struct device *devs, int n, int policy)
{
	pthread_attr_t attr;
	char name[16];
	int started = 0;

	/* A small stack is a small locked stack: the reserve it pre-faults
	 * and the 64 KiB it must leave below. */
	pthread_attr_init(&attr);
	if (pthread_attr_setstacksize(&attr, RING_STACK) != 0) {
		fprintf(stderr, "ring threads: a stack of %d bytes refused\n",
			RING_STACK);
		pthread_attr_destroy(&attr);
		return -EINVAL;
	}
	for (int i = 0; i < n; i++) {
		struct device *d = &devs[i];
		int r;

		r = ioflusher_thread_create(&d->thread, &attr, ring_thread, d);
		if (r < 0 && policy == IOFLUSHER_POLICY_BEST_EFFORT)
			r = -pthread_create(&d->thread, &attr, ring_thread, d);
		if (r < 0) {
			fprintf(stderr, "%s: ring thread: %s\n", d->uio.name,
				strerror(-r));
			pthread_attr_destroy(&attr);
			return r;
		}
		/* Named by its creator, so that the audit right after sees
		 * the name whether or not the thread has run yet. */
		snprintf(name, sizeof(name), "tcmu-%.10s", d->uio.uio);
		pthread_setname_np(d->thread, name);
		d->started = true;
		started++;
	}
	pthread_attr_destroy(&attr);
	return started;
}

static void print_stats(const struct device *d)
{
	const struct tcmu_ring_stats *s = &d->ring.stats;

	printf("stats: %s: %llu commands, %llu pad, %llu tmr, %llu unknown, "
	       "%llu malformed, %llu notifications, %llu breaks, %llu resets\n",
	       d->uio.name, (unsigned long long)s->cmds,
	       (unsigned long long)s->pads, (unsigned long long)s->tmrs,
	       (unsigned long long)s->unknown, (unsigned long long)s->malformed,
	       (unsigned long long)s->notifies, (unsigned long long)s->breaks,
	       (unsigned long long)s->resets);
}

/* Wait for SIGTERM or SIGINT, for every ring thread to end, or for one
 * to fail (-1): a device no longer served while the daemon runs on would
 * look alive to its supervisor, so the daemon stops (exit 1) and can be
 * restarted.  A removed device (-ENODEV) is no failure. */
static int wait_for_stop(struct device *devs, int n, const sigset_t *sigs)
{
	for (;;) {
		int sig, running = 0;

		sigwait(sigs, &sig);
		if (sig != SIGUSR1)
			return sig;
		for (int i = 0; i < n; i++) {
			if (!devs[i].started)
				continue;
			if (!devs[i].ended) {
				running++;
			} else if (devs[i].result < 0 &&
				   devs[i].result != -ENODEV) {
				fprintf(stderr,
					"%s: ring thread failed: %s: stopping "
					"every device, so that the daemon can "
					"be restarted\n",
					devs[i].uio.name,
					strerror(-devs[i].result));
				devs[i].reported = true;
				return -1;
			}
		}
		if (!running)
			return 0;
	}
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
	/* What the running daemon still needs: to lock memory it maps
	 * later.  The devices and backends are open by then. */
	static const int keep[] = { CAP_IPC_LOCK };
	struct ioflusher_mempool *pool = NULL;
	struct ioflusher_ctx *ctx = NULL;
	struct device *devs;
	struct options o;
	unsigned int nskipped = 0;
	int n, r, sig, exit_code = 1;
	sigset_t sigs;

	/* Lines as they come, under a service manager too (stdout is a pipe
	 * there), in order with what goes to stderr. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	r = parse_options(argc, argv, &o);
	if (r >= 0)
		return r;
	poll_us = o.poll_us;
	notify_init();

	/* 1, 2: protections before any thread exists, and the report. */
	r = setup(&o, &ctx);
	if (r)
		return r;

	/* 3: devices, backends, rings, the pool.  The SIGBUS guard first:
	 * attaching a ring reads every page of it under the guard, and a
	 * ring smaller than its mailbox says must fail that device, not
	 * kill the daemon. */
	r = tcmu_ring_guard_init();
	if (r < 0) {
		fprintf(stderr, "SIGBUS guard: %s\n", strerror(-r));
		goto out_ctx;
	}
	devs = calloc(MAX_DEVICES, sizeof(*devs));
	if (!devs) {
		fprintf(stderr, "out of memory\n");
		goto out_ctx;
	}
	n = 0;
	r = scan(&o, devs, &nskipped);
	if (r < 0) {
		fprintf(stderr, "looking for TCMU devices: %s\n", strerror(-r));
		goto out_devs;
	}
	n = r;
	if (n == 0) {
		no_device(&o, nskipped);
		goto out_devs;
	}
	for (int i = 0; i < n; i++)
		if (open_device(&devs[i], &o) < 0)
			goto out_close;
	r = tcmu_port_pool_new(ctx, (unsigned int)n,
			       o.policy == IOFLUSHER_POLICY_BEST_EFFORT, &pool);
	if (r < 0) {
		fprintf(stderr, "command pool: %s\n", strerror(-r));
		goto out_close;
	}
	for (int i = 0; i < n; i++)
		devs[i].port.pool = pool;

	/* SIGTERM, SIGINT, SIGHUP and the threads' SIGUSR1 are taken
	 * synchronously by the main thread; the ring threads inherit the
	 * mask. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP); /* its terminal gone: a stop, not a kill */
	sigaddset(&sigs, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	main_thread = pthread_self();
	stop_fd = eventfd(0, EFD_CLOEXEC);
	if (stop_fd < 0) {
		perror("eventfd");
		goto out_pool;
	}

	/* 4: drop what is no longer needed, before any thread inherits it.
	 * Without CAP_SETPCAP the bounding set is left as it is, silently:
	 * what the daemon executes could gain capabilities back.  Asked
	 * before the drop, which takes CAP_SETPCAP away. */
	if (ioflusher_caps_have(CAP_SETPCAP) != 1)
		fprintf(stderr, "capabilities: no CAP_SETPCAP, the bounding "
				"set stays as it is\n");
	r = ioflusher_caps_drop(keep, sizeof(keep) / sizeof(keep[0]));
	if (r < 0) {
		/* Kept, CAP_SYS_RESOURCE lets any thread clear the flag:
		 * not served, unless the flag is only best effort. */
		bool required = o.policy != IOFLUSHER_POLICY_BEST_EFFORT;

		fprintf(stderr, "dropping capabilities: %s%s%s\n", strerror(-r),
			r == -EPERM ? " (a seccomp filter or a security "
				      "module refused)" :
				      "",
			required ? ": not serving" : "; the threads keep them");
		if (required) {
			exit_code = r == -ENOMEM ? 1 : 4;
			goto out_stop;
		}
	}
	/* 5: ring threads that carry the flag. */
	if (start_threads(devs, n, o.policy) < 0)
		goto out_stop;

	/* 6: audit, and the sandbox over every thread.  With the flag
	 * required, a thread without it (one a library started) is a daemon
	 * that must not serve. */
	r = audit_threads();
	if (r != 0 && o.policy != IOFLUSHER_POLICY_BEST_EFFORT) {
		fprintf(stderr, "audit: %s: not serving\n",
			r < 0 ? strerror(-r) :
				"a thread runs without the flag");
		/* 4 says a restart cannot help; an audit that could not be
		 * made (out of memory) may be retried. */
		exit_code = r < 0 ? 1 : 4;
		goto out_stop;
	}
	if (o.sandbox) {
		r = ioflusher_sandbox_lock(0);
		if (r < 0) {
			/* Asked for and not there: do not serve without it. */
			fprintf(stderr, "--sandbox: %s: not serving\n",
				strerror(-r));
			/* 4, or 1 for what a restart may cure. */
			exit_code = r == -ENOMEM || r == -EFAULT ? 1 : 4;
			goto out_stop;
		}
	}
	printf("serving: pid %d, %d device%s; SIGTERM to stop\n", (int)getpid(),
	       n, n == 1 ? "" : "s");
	fflush(stdout);
	/* Only now may the unit that exports the devices start. */
	notify("READY=1");

	/* 7: serve. */
	sig = wait_for_stop(devs, n, &sigs);
	if (sig > 0)
		printf("stopping on %s\n", strsignal(sig));
	notify("STOPPING=1");
	exit_code = 0;
out_stop:
	if (eventfd_write(stop_fd, 1) < 0)
		perror("eventfd_write");
	for (int i = 0; i < n; i++) {
		if (devs[i].started)
			pthread_join(devs[i].thread, NULL);
		/* A removed device ends its thread normally. */
		if (devs[i].result == -ENODEV) {
			printf("%s: device removed\n", devs[i].uio.name);
		} else if (devs[i].result < 0) {
			if (!devs[i].reported)
				fprintf(stderr, "%s: %s\n", devs[i].uio.name,
					strerror(-devs[i].result));
			exit_code = 1;
		}
		if (o.verbose)
			print_stats(&devs[i]);
	}
	close(stop_fd);
out_pool:
	ioflusher_mempool_free(pool);
out_close:
	for (int i = 0; i < n; i++) {
		if (close_device(&devs[i]) < 0 && exit_code == 0) {
			fprintf(stderr,
				"%s: writes may have been lost: exit status 1\n",
				devs[i].uio.name);
			exit_code = 1;
		}
	}
out_devs:
	free(devs);
out_ctx:
	ioflusher_ctx_unref(ctx);
	return exit_code;
}
