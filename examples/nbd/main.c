// SPDX-License-Identifier: MIT
/*
 * ioflusher-nbd: an NBD server built on libioflusher, to copy.
 *
 * Start-up follows examples/skeleton/skeleton.c, and the order matters:
 *   0. the --run helper is forked first, before the protections: it
 *      shares next to nothing with the daemon then (ioflusher(7), FORKED
 *      HELPERS: a fork later makes the daemon's locked memory
 *      copy-on-write);
 *   1. ioflusher_setup() before any thread or buffer exists: the flag,
 *      OOM protection, mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)
 *      (ONFAULT: the sparse memory export and thread stacks are locked as
 *      they are touched, not all at once; MCL_FUTURE left out where
 *      RLIMIT_MEMLOCK would refuse later mappings), reserves pre-faulted
 *      (and each thread's stack reserve at its start, in server.c);
 *   2. the report, one line per protection, on stderr;
 *   3. the export and the mempools of the IO path;
 *   4. the listening socket;
 *   5. capabilities dropped, before any thread starts (a thread keeps
 *      what it had when another thread drops them);
 *   6. workers (ioflusher_thread_create), the kernel's device, then the
 *      audit of every thread;
 *   7. the optional seccomp sandbox;
 *   8. serve until SIGTERM, SIGINT or SIGHUP, or until the --run command
 *      ends.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/capability.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nbd.h"

#define PROG "ioflusher-nbd"
/* At shutdown: how long connections have to end after ESHUTDOWN, and
 * then after the hard disconnect (ioflusher-nbd(8)). */
#define NBD_GRACE_MS 10000
#define NBD_HARD_GRACE_MS 5000

struct options {
	const char *socket_path;
	const char *tcp;
	const char *file;
	uint64_t memory;
	bool readonly;
	const char *export_name;
	unsigned int threads;
	unsigned int queue_depth;
	unsigned int max_conns;
	unsigned int send_timeout;
	unsigned int handshake_timeout;
	unsigned int poll_us;
	const char *connect;
	const char *run;
	bool best_effort;
	bool sandbox;
};

/* One write(2) a line: the lines of connections that log at once (five
 * cut off in the same second) do not mix. */
static void log_stderr(const char *fmt, ...)
{
	char line[2048] = PROG ": ";
	size_t n = strlen(line);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	va_end(ap);
	n = strlen(line);
	if (n == sizeof(line) - 1 && line[n - 1] != '\n')
		line[n - 1] = '\n'; /* cut short: still a line */
	fputs(line, stderr);
}

/* What --help or --version printed must have been written: to a full disk
 * that is a failure (exit 1), not a success that printed nothing. */
static int stdout_flushed(void)
{
	if (fflush(stdout) != 0)
		log_stderr("cannot write the standard output: %s\n",
			   strerror(errno));
	else if (ferror(stdout))
		log_stderr("cannot write the standard output\n");
	else
		return 0;
	return 1;
}

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: " PROG
		" (--socket PATH | --tcp [ADDR:]PORT | --connect /dev/nbdX)\n"
		"                     [--memory SIZE | --file PATH] [--readonly]\n"
		"                     [--export-name NAME] [--threads N] [--queue-depth N]\n"
		"                     [--max-connections N] [--send-timeout SECONDS]\n"
		"                     [--handshake-timeout SECONDS] [--poll USEC]\n"
		"                     [--run CMD]\n"
		"                     [--best-effort] [--sandbox]\n"
		"An NBD server that runs as an IO-flusher daemon; see " PROG
		"(8).\n"
		"  --socket PATH        listen on a unix socket\n"
		"  --tcp [ADDR:]PORT    listen on TCP (address 127.0.0.1 unless given)\n"
		"  --connect /dev/nbdX  serve the kernel's nbd device (like qemu-nbd -c)\n"
		"  --memory SIZE        sparse export in memory, at most MemTotal (default 1G)\n"
		"  --file PATH          export a file or block device\n"
		"  --readonly           refuse writes\n"
		"  --export-name NAME   the export's name, at most 256 bytes (default:\n"
		"                       empty, the default export)\n"
		"  --threads N          workers for the file backend, 1 to 1024 (default 4)\n"
		"  --queue-depth N      requests in flight, all connections, 1 to 4096\n"
		"                       (default 64)\n"
		"  --max-connections N  clients at once, 1 to 1024 (default 16)\n"
		"  --send-timeout SECONDS  disconnect a client that takes no byte of a\n"
		"                       reply, or (--file) sends no byte of a write's\n"
		"                       data, for that long, at most 3600 (default 30;\n"
		"                       0: never)\n"
		"  --handshake-timeout SECONDS  disconnect a client whose handshake\n"
		"                       takes longer, at most 3600 (default 10; 0: never)\n"
		"  --poll USEC          spin up to USEC for a client's next request\n"
		"                       before sleeping, at most 1000000 (default 50;\n"
		"                       0: never)\n"
		"  --run CMD            run CMD once ready, with $uri set; exit with its status\n"
		"  --best-effort        run even where a protection cannot be applied\n"
		"  --sandbox            lock the protections in with a seccomp filter\n"
		"  -h, --help           this text\n"
		"  --version            the version\n");
}

/* "64M", "1G", "512", "2TiB": powers of 1024. */
static int parse_size(const char *s, uint64_t *out)
{
	static const char units[] = "KMGTPE";
	uint64_t v = 0;
	const char *p = s, *u;
	unsigned int shift = 0;

	if (*p < '0' || *p > '9')
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (v > (UINT64_MAX - 9) / 10)
			return -ERANGE;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (*p) {
		u = strchr(units, *p >= 'a' && *p <= 'z' ? *p - 32 : *p);
		if (!u)
			return -EINVAL;
		shift = 10 * (unsigned int)(u - units + 1);
		p++;
		if (*p == 'i')
			p++;
		if (*p == 'B' || *p == 'b')
			p++;
		if (*p)
			return -EINVAL;
		if (v > (UINT64_MAX >> shift))
			return -ERANGE;
	}
	*out = v << shift;
	return 0;
}

/* Whether s is well-formed UTF-8 (RFC 3629: no overlong form, no
 * surrogate, nothing past U+10FFFF), which the protocol requires of the
 * names it carries. */
static bool utf8_valid(const char *s)
{
	static const unsigned int least[] = { 0, 0x80, 0x800, 0x10000 };
	const unsigned char *p = (const unsigned char *)s;

	while (*p) {
		/* The bytes that follow a lead byte: 110xxxxx one, 1110xxxx
		 * two, 11110xxx three. */
		unsigned int n = *p < 0x80	     ? 0 :
				 (*p & 0xe0) == 0xc0 ? 1 :
				 (*p & 0xf0) == 0xe0 ? 2 :
				 (*p & 0xf8) == 0xf0 ? 3 :
						       4;
		unsigned int c;

		if (n == 4)
			return false;
		c = *p++ & (n ? 0x3f >> n : 0x7f);
		for (unsigned int i = 0; i < n; i++, p++) {
			if ((*p & 0xc0) != 0x80)
				return false;
			c = c << 6 | (*p & 0x3f);
		}
		if (c < least[n] || c > 0x10ffff ||
		    (c >= 0xd800 && c <= 0xdfff))
			return false;
	}
	return true;
}

static int parse_uint(const char *s, unsigned int min, unsigned int max,
		      unsigned int *out)
{
	char *end;
	unsigned long v;

	/* Digits only: strtoul() takes "+5", " 7" and "-1" too. */
	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -EINVAL;
	*out = (unsigned int)v;
	return 0;
}

/*
 * --tcp [ADDR:]PORT, split and resolved (numeric only): ADDR 127.0.0.1
 * when absent, an IPv6 address in brackets or bare, PORT from 0 to 65535
 * (getaddrinfo() would take 99999 modulo 65536, and "" as 0).  *aip is
 * getaddrinfo()'s, addr the address as given, without brackets.
 */
static int tcp_resolve(const char *spec, char *addr, size_t asize,
		       struct addrinfo **aip)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICHOST |
					      AI_NUMERICSERV };
	const char *colon = strrchr(spec, ':');
	unsigned int port;
	char serv[8];

	snprintf(addr, asize, "127.0.0.1");
	if (colon) {
		size_t n = (size_t)(colon - spec);

		if (spec[0] == '[' && n >= 2 && spec[n - 1] == ']') {
			spec++;
			n -= 2;
		}
		if (n == 0 || n >= asize)
			return -EINVAL;
		memcpy(addr, spec, n);
		addr[n] = 0;
		spec = colon + 1;
	}
	if (parse_uint(spec, 0, 65535, &port) < 0)
		return -EINVAL;
	snprintf(serv, sizeof(serv), "%u", port);
	return getaddrinfo(addr, serv, &hints, aip) ? -EINVAL : 0;
}

static int parse_args(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "tcp", required_argument, NULL, 'p' },
		{ "memory", required_argument, NULL, 'm' },
		{ "file", required_argument, NULL, 'f' },
		{ "readonly", no_argument, NULL, 'r' },
		{ "export-name", required_argument, NULL, 'e' },
		{ "threads", required_argument, NULL, 't' },
		{ "queue-depth", required_argument, NULL, 'q' },
		{ "max-connections", required_argument, NULL, 'C' },
		{ "send-timeout", required_argument, NULL, 'T' },
		{ "handshake-timeout", required_argument, NULL, 'H' },
		{ "poll", required_argument, NULL, 'P' },
		{ "connect", required_argument, NULL, 'c' },
		{ "run", required_argument, NULL, 'R' },
		{ "best-effort", no_argument, NULL, 'b' },
		{ "sandbox", no_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int c, r;

	/* Long options only (and -h): they say what they do. */
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			o->socket_path = optarg;
			break;
		case 'p':
			o->tcp = optarg;
			break;
		case 'm':
			r = parse_size(optarg, &o->memory);
			if (r < 0 || o->memory == 0) {
				log_stderr("--memory: %s: %s\n",
					   r == -ERANGE ? "more than 16 EiB" :
							  "not a size",
					   optarg);
				return 2;
			}
			break;
		case 'f':
			o->file = optarg;
			break;
		case 'r':
			o->readonly = true;
			break;
		case 'e':
			if (strlen(optarg) > 256) {
				log_stderr(
					"--export-name: at most 256 bytes\n");
				return 2;
			}
			if (!utf8_valid(optarg)) {
				log_stderr("--export-name: not UTF-8, which "
					   "the NBD protocol requires of "
					   "names\n");
				return 2;
			}
			o->export_name = optarg;
			break;
		case 't':
			if (parse_uint(optarg, 1, 1024, &o->threads) < 0) {
				log_stderr("--threads takes 1 to 1024\n");
				return 2;
			}
			break;
		case 'q':
			if (parse_uint(optarg, 1, 4096, &o->queue_depth) < 0) {
				log_stderr("--queue-depth takes 1 to 4096\n");
				return 2;
			}
			break;
		case 'C':
			if (parse_uint(optarg, 1, 1024, &o->max_conns) < 0) {
				log_stderr(
					"--max-connections takes 1 to 1024\n");
				return 2;
			}
			break;
		case 'T':
			if (parse_uint(optarg, 0, 3600, &o->send_timeout) < 0) {
				log_stderr("--send-timeout takes 0 to 3600\n");
				return 2;
			}
			break;
		case 'H':
			if (parse_uint(optarg, 0, 3600, &o->handshake_timeout) <
			    0) {
				log_stderr(
					"--handshake-timeout takes 0 to 3600\n");
				return 2;
			}
			break;
		case 'P':
			if (parse_uint(optarg, 0, 1000000, &o->poll_us) < 0) {
				log_stderr("--poll takes 0 to 1000000\n");
				return 2;
			}
			break;
		case 'c':
			o->connect = optarg;
			break;
		case 'R':
			o->run = optarg;
			break;
		case 'b':
			o->best_effort = true;
			break;
		case 'S':
			o->sandbox = true;
			break;
		case 'h':
			usage(stdout);
			return 1;
		case 'V':
			printf(PROG " " NBD_VERSION_STRING
				    " (libioflusher example)\n");
			return 1;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		log_stderr("unexpected argument: %s\n", argv[optind]);
		return 2;
	}
	if (o->tcp) {
		/* Checked here, so that a typo is a usage error (which
		 * systemd does not restart), not a failure to listen. */
		struct addrinfo *ai;
		char addr[256];

		if (tcp_resolve(o->tcp, addr, sizeof(addr), &ai) < 0) {
			log_stderr("--tcp takes [ADDR:]PORT, a numeric address "
				   "and a port from 0 to 65535\n");
			return 2;
		}
		freeaddrinfo(ai);
	}
	if (o->socket_path && !o->socket_path[0]) {
		log_stderr("--socket takes a path\n");
		return 2;
	}
	if (o->connect && !o->file && o->memory % 512) {
		log_stderr(
			"--connect: the --memory size must be a whole number "
			"of 512-byte sectors\n");
		return 2;
	}
	if (o->socket_path && o->tcp) {
		log_stderr("--socket and --tcp: one listening socket only\n");
		return 2;
	}
	if (!o->socket_path && !o->tcp && !o->connect) {
		log_stderr("one of --socket, --tcp or --connect is needed\n");
		return 2;
	}
	if (o->file && o->memory) {
		log_stderr("--memory and --file exclude each other\n");
		return 2;
	}
	if (o->connect && o->file) {
		/* A regular file's size, known before setup; a block device's
		 * is whole sectors.  main() checks the export again, since the
		 * file may change size in between. */
		struct stat st;

		if (stat(o->file, &st) == 0 && S_ISREG(st.st_mode) &&
		    st.st_size == 0) {
			log_stderr("--connect: %s: an empty file, and the "
				   "kernel's device needs a size\n",
				   o->file);
			return 2;
		}
		if (stat(o->file, &st) == 0 && S_ISREG(st.st_mode) &&
		    st.st_size % 512) {
			log_stderr(
				"--connect: %s: the file's %llu bytes are not "
				"a whole number of 512-byte sectors, as a "
				"block device's size is\n",
				o->file, (unsigned long long)st.st_size);
			return 2;
		}
	}
	if (o->socket_path &&
	    strlen(o->socket_path) >=
		    sizeof(((struct sockaddr_un *)0)->sun_path)) {
		log_stderr("--socket: path too long for a unix socket\n");
		return 2;
	}
	return 0;
}

/* ---------------------------------------------------------------- setup */

/*
 * A memory export is RAM, and this daemon is shielded from the OOM killer
 * (oom_score_adj -1000): clients filling an export larger than the machine
 * would have the kernel kill every other process first.  So it may not be
 * larger than MemTotal.  0 if it fits, or could not be checked (said).
 */
static int check_memory_size(uint64_t size)
{
	unsigned long long kib = 0;
	char line[128];
	FILE *f;

	f = fopen("/proc/meminfo", "re");
	if (!f) {
		log_stderr("--memory: cannot check it against MemTotal: %s\n",
			   strerror(errno));
		return 0;
	}
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "MemTotal: %llu kB", &kib) == 1)
			break;
	fclose(f);
	if (!kib) {
		log_stderr("--memory: no MemTotal in /proc/meminfo to check "
			   "it against\n");
		return 0;
	}
	if (size / 1024 <= kib)
		return 0;
	log_stderr("--memory: %llu MiB is more than this machine's memory "
		   "(MemTotal %llu MiB): the daemon asks to be shielded from "
		   "the OOM killer, so filling the export would kill "
		   "everything else\n",
		   (unsigned long long)(size >> 20), kib >> 10);
	return -EFBIG;
}

/*
 * 0, or the exit status: 4 when a required protection could not be
 * applied (the LSB's "insufficient privilege": the unit's
 * RestartPreventExitStatus= does not restart what a restart cannot fix),
 * 1 when setup could not even try (out of memory).
 */
static int setup(const struct options *o)
{
	struct ioflusher_report *report = NULL;
	struct ioflusher_ctx *ctx;
	char line[512];
	int r;

	r = ioflusher_ctx_new(&ctx);
	if (r < 0) {
		log_stderr("ioflusher_ctx_new: %s\n", strerror(-r));
		return 1;
	}
	/* Production wants the flag: without it the daemon can deadlock
	 * serving its own writeback.  --best-effort runs anyway and says so. */
	r = ioflusher_ctx_set_policy(ctx, IOFLUSHER_PROTECT_FLAG,
				     o->best_effort ?
					     IOFLUSHER_POLICY_BEST_EFFORT :
					     IOFLUSHER_POLICY_REQUIRED);
	/* Without CAP_IPC_LOCK under a finite RLIMIT_MEMLOCK, MCL_FUTURE
	 * would charge every later mapping whole to the limit and refuse it
	 * beyond (mlock_future_ok() in mm/mmap.c, even under MCL_ONFAULT):
	 * lock what is mapped now only, there, and the report says so. */
	if (r == 0)
		r = ioflusher_ctx_set_memlock_flags(
			ctx, IOFLUSHER_MEMLOCK_ONFAULT |
				     IOFLUSHER_MEMLOCK_FUTURE_IF_UNLIMITED);
	if (r == 0)
		r = ioflusher_ctx_set_reserve(ctx, 256 << 10, 1 << 20);
	if (r < 0) {
		/* A setting the library refuses is a bug here, not a
		 * machine's: say so rather than run with defaults. */
		log_stderr("setup settings: %s\n", strerror(-r));
		ioflusher_ctx_unref(ctx);
		return 1;
	}
	r = ioflusher_setup(ctx, &report);
	ioflusher_ctx_unref(ctx);
	if (r < 0 && !report) {
		/* The report could not be allocated: nothing was tried. */
		log_stderr("setup: %s\n", strerror(-r));
		return 1;
	}
	for (int p = 0; report && p < IOFLUSHER_PROTECT_COUNT; p++) {
		ioflusher_report_format(report, p, line, sizeof(line));
		log_stderr("setup: %s\n", line);
	}
	ioflusher_report_free(report);
	if (r < 0) {
		log_stderr("setup failed: a required protection is missing "
			   "(--best-effort runs anyway, unprotected)\n");
		return 4;
	}
	return 0;
}

static int audit_threads(void)
{
	struct ioflusher_audit *audit;
	int r, n;

	r = ioflusher_audit_new(0, &audit);
	if (r < 0) {
		log_stderr("audit: %s\n", strerror(-r));
		return r;
	}
	n = ioflusher_audit_count(audit);
	log_stderr("audit: %d of %d threads carry the io-flusher flag\n",
		   n - ioflusher_audit_missing(audit), n);
	for (int i = 0; i < n; i++) {
		const char *comm;
		int flagged;
		pid_t tid;

		ioflusher_audit_thread(audit, (unsigned int)i, &tid, &comm,
				       &flagged);
		log_stderr("audit:   %d %-15s %s\n", (int)tid, comm,
			   flagged ? "flagged" : "MISSING");
	}
	r = ioflusher_audit_missing(audit);
	ioflusher_audit_free(audit);
	return r;
}

/* ---------------------------------------------------------------- --run */

/*
 * The helper is forked before ioflusher_setup(), while the process has one
 * thread and nothing locked: a fork after it would share the pages setup
 * locked and pre-faulted, and the daemon's first write to each would copy
 * it.  It waits on a pipe for the URI: the command runs once the server is
 * ready, and a daemon that fails before that leaves it with end of file.
 * It has neither the flag nor the OOM shield of the daemon, unless the
 * daemon was started with them (under ioflusher run, say): it drops them
 * before exec, since a command that allocates freely must be allowed to
 * reclaim and be killed.
 */
static pid_t launcher_start(const char *cmd, int *wfd)
{
	pid_t daemon_pid = getpid(), pid;
	/* A process group of its own, so that what the command starts ends
	 * with it when the daemon stops (kill_run()); but not where the
	 * daemon runs in the foreground of a terminal: there the command
	 * stays in its group, in the foreground too, so that it can read the
	 * terminal (nbdsh, qemu-io), and ^C or ^Z reach both, as the shell's
	 * job control expects. */
	bool own_group = !isatty(STDIN_FILENO) ||
			 tcgetpgrp(STDIN_FILENO) != getpgrp();
	int p[2];

	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (pid == 0) {
		char buf[8192], *nl;
		size_t n = 0;
		ssize_t r;

		close(p[1]);
		while (n < sizeof(buf) - 1 &&
		       (r = read(p[0], buf + n, sizeof(buf) - 1 - n)) != 0) {
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0)
				_exit(127);
			n += (size_t)r;
		}
		if (n == 0)
			_exit(127);
		buf[n] = 0;
		/* Only what this daemon says: none inherited. */
		unsetenv("uri");
		unsetenv("nbd");
		nl = strchr(buf, '\n');
		if (nl) {
			*nl = 0;
			if (nl[1])
				setenv("nbd", nl + 1, 1);
		}
		if (buf[0])
			setenv("uri", buf, 1);
		if (own_group)
			setpgid(0, 0);
		/* A daemon killed outright (SIGKILL) ends the command's
		 * shell too. */
		if (prctl(PR_SET_PDEATHSIG, (unsigned long)SIGTERM, 0UL, 0UL,
			  0UL) == 0 &&
		    getppid() != daemon_pid)
			_exit(127);
		r = ioflusher_thread_child_clear(IOFLUSHER_CHILD_RESET_OOM);
		if (r < 0)
			fprintf(stderr,
				PROG ": --run: the command keeps the "
				     "io-flusher flag: %s\n",
				strerror((int)-r));
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	if (own_group)
		setpgid(pid, pid); /* as the child does: whichever runs first */
	close(p[0]);
	*wfd = p[1];
	return pid;
}

/* The daemon stops before --run's command ended: the command and what it
 * started, not only the shell (its group, where it has one), stopped
 * ones too. */
static void kill_run(pid_t pid)
{
	if (pid <= 0)
		return;
	if (kill(-pid, SIGTERM) == 0) {
		kill(-pid, SIGCONT);
		return;
	}
	kill(pid, SIGTERM);
	kill(pid, SIGCONT);
}

/* The command's exit status once the daemon is done, as a shell gives it
 * (128 + the signal): it was sent SIGTERM when the daemon stopped serving
 * (kill_run()); SIGKILL 5 s after the shutdown. */
static int end_run(pid_t pid)
{
	pid_t r;
	int ws;

	for (int i = 0; (r = waitpid(pid, &ws, WNOHANG)) != pid; i++) {
		if (r < 0 && errno != EINTR)
			return 1; /* not our child any more: cannot be */
		if (i == 50) {
			log_stderr(
				"--run: the command outlived SIGTERM by 5 s: "
				"SIGKILL\n");
			if (kill(-pid, SIGKILL) < 0)
				kill(pid, SIGKILL);
		}
		usleep(100000);
	}
	return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
}

/* Each worker of the file backend opens the file anew and each client
 * is a descriptor: --threads 1024 with --max-connections 1024 needs more
 * than the usual soft limit of 1024.  The hard limit is the daemon's to
 * take; the --run command, forked before, keeps the soft one. */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			log_stderr("RLIMIT_NOFILE: %s\n", strerror(errno));
	}
}

/* Percent-encode for a URI, keeping '/' where it is a path. */
static void uri_escape(char *out, size_t size, const char *s, bool keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(out);

	for (; *s && n + 4 < size; s++) {
		unsigned char ch = (unsigned char)*s;

		if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		    (ch >= '0' && ch <= '9') || strchr("-._~", ch) ||
		    (keep_slash && ch == '/')) {
			out[n++] = (char)ch;
		} else {
			out[n++] = '%';
			out[n++] = hex[ch >> 4];
			out[n++] = hex[ch & 15];
		}
	}
	out[n] = 0;
}

/* ---------------------------------------------------------------- sockets */

/* The socket this daemon put at --socket's path: only that is removed. */
static dev_t socket_dev;
static ino_t socket_ino;

/* Stop listening: a unix socket left behind would have clients that see
 * it refused.  Whatever replaced ours at the path since is left alone. */
static void unlisten(int lfd, const char *path)
{
	struct stat st;

	if (lfd < 0)
		return;
	close(lfd);
	if (path && lstat(path, &st) == 0 && st.st_dev == socket_dev &&
	    st.st_ino == socket_ino)
		unlink(path);
}

/*
 * Whether path may be taken: nothing there, or a socket nobody listens on
 * (left by a daemon that was killed).  A file that is not a socket is
 * never replaced (-EEXIST), nor a socket another server listens on
 * (-EADDRINUSE): the rename into place would take it from its clients.
 * The probe does not wait: a server that accepts nobody, its backlog full
 * (EAGAIN), is a server all the same, and a blocking connect(2) to it
 * would hang the start with SIGTERM already blocked.
 */
static int socket_path_free(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, r;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	r = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 ? -EADDRINUSE :
	    errno == EAGAIN					 ? -EADDRINUSE :
	    errno == ECONNREFUSED				 ? 0 :
								   -errno;
	close(fd);
	return r;
}

static int listen_unix(const char *path, char *tmp, size_t tmpsize)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd;

	fd = socket_path_free(path);
	if (fd < 0)
		return fd;

	/* Bound and listening under a temporary name, then renamed: a client
	 * that finds the path can connect, never ECONNREFUSED. */
	snprintf(tmp, tmpsize, "%s.%d", path, (int)getpid());
	if (strlen(tmp) >= sizeof(sa.sun_path))
		snprintf(tmp, tmpsize, "%s", path);
	strcpy(sa.sun_path, tmp);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	unlink(tmp);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(fd, 128) < 0 ||
	    (strcmp(tmp, path) && rename(tmp, path) < 0) ||
	    lstat(path, &st) < 0) {
		int r = -errno;

		unlink(tmp);
		close(fd);
		return r;
	}
	socket_dev = st.st_dev;
	socket_ino = st.st_ino;
	return fd;
}

static int listen_tcp(const char *spec, char *uri_host, size_t hsize,
		      unsigned int *port)
{
	struct addrinfo *ai;
	char addr[256];
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int fd, one = 1, r;

	r = tcp_resolve(spec, addr, sizeof(addr), &ai);
	if (r < 0)
		return r;
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		r = -errno;
		freeaddrinfo(ai);
		return r;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0 ||
	    getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
		r = -errno;
		freeaddrinfo(ai);
		close(fd);
		return r;
	}
	snprintf(uri_host, hsize, ai->ai_family == AF_INET6 ? "[%s]" : "%s",
		 addr);
	*port = ntohs(ss.ss_family == AF_INET6 ?
			      ((struct sockaddr_in6 *)&ss)->sin6_port :
			      ((struct sockaddr_in *)&ss)->sin_port);
	freeaddrinfo(ai);
	return fd;
}

/* Take a client; false when the process is out of descriptors or
 * memory for one, and the caller waits before it tries again: the client
 * stays in the listening socket's backlog, and poll(2) would report it at
 * once, spinning. */
static bool accept_one(struct nbd_server *srv, int lfd, bool tcp, bool *said)
{
	int fd, one = 1, r;

	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno != EMFILE && errno != ENFILE && errno != ENOBUFS &&
		    errno != ENOMEM)
			return true;
		if (!*said)
			log_stderr("cannot take a client: %s (RLIMIT_NOFILE, "
				   "or memory): trying again every 100 ms\n",
				   strerror(errno));
		*said = true;
		return false;
	}
	*said = false;
	/* Replies are batched per sendmsg already; Nagle would only add a
	 * round trip of latency to the last one. */
	if (tcp)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	r = nbd_server_add(srv, fd, true);
	if (r < 0) {
		log_stderr("connection refused: %s\n",
			   r == -EMFILE ? "--max-connections reached" :
					  strerror(-r));
		close(fd);
	}
	return true;
}

/* ---------------------------------------------------------------- main */

/* The grace period of a shutdown: until the connections end, NBD_GRACE_MS
 * pass, or a second SIGTERM or SIGINT says not to wait.  The connections
 * left. */
static unsigned int grace_wait(struct nbd_server *srv, int sfd, int *waited_s)
{
	struct signalfd_siginfo si;
	unsigned int left = 1;
	int ms;

	for (ms = 0; ms < NBD_GRACE_MS && left; ms += 100) {
		struct pollfd p = { .fd = sfd, .events = POLLIN };

		left = nbd_server_wait_idle(srv, 100);
		if (!left || poll(&p, 1, 0) != 1 ||
		    read(sfd, &si, sizeof(si)) != sizeof(si) ||
		    si.ssi_signo == SIGCHLD)
			continue;
		log_stderr("signal %d again: not waiting for the clients\n",
			   (int)si.ssi_signo);
		break;
	}
	*waited_s = (ms + 999) / 1000;
	return left;
}

/* r from nbd_export_stop(): true, and said, if writes may have been lost. */
static bool report_lost(const struct nbd_export *exp, int r)
{
	if (r == 0)
		return false;
	log_stderr("%s: a writeback error (%s) was seen: writes acknowledged "
		   "to clients may not be stored; exit status 1\n",
		   exp->path, strerror(-r));
	return true;
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
		log_stderr("systemd notify: %s\n", strerror(errno));
	if (fd >= 0)
		close(fd);
}

int main(int argc, char **argv)
{
	struct options o = {
		.export_name = "",
		.threads = 4,
		.queue_depth = 64,
		.max_conns = 16,
		.send_timeout = 30,
		.handshake_timeout = 10,
		.poll_us = 50,
	};
	struct nbd_export exp = { .fd = -1 };
	struct nbd_server srv = { 0 };
	struct nbd_kernel kern = { .nbd_fd = -1 };
	char tmp[sizeof(((struct sockaddr_un *)0)->sun_path) + 16];
	char uri[8192] = "", host[300];
	int keep[2], nkeep = 0;
	int lfd = -1, sfd = -1, kfd = -1, run_wfd = -1, status = 0, r;
	unsigned int port = 0, left;
	int grace_s = 0, fail_status = 1;
	pid_t run_pid = -1;
	bool running = true, accept_paused = false, accept_said = false;
	sigset_t sigs;

	r = parse_args(argc, argv, &o);
	if (r)
		return r == 1 ? stdout_flushed() : r;

	/* 0. The --run helper, before anything is locked; $NOTIFY_SOCKET
	 * is taken out of the environment before, as the command is no
	 * voice of the daemon's. */
	notify_init();
	if (o.run) {
		run_pid = launcher_start(o.run, &run_wfd);
		if (run_pid < 0) {
			log_stderr("--run: %s\n", strerror(errno));
			return 1;
		}
	}

	/* 1-2. Protections first, before any thread or buffer. */
	r = setup(&o);
	if (r)
		return r;
	raise_nofile();

	/* 3. The export, and the buffers of the IO path. */
	exp.name = o.export_name;
	exp.readonly = o.readonly;
	exp.log = log_stderr;
	if (!o.file && !o.memory)
		o.memory = 1ull << 30;
	if (!o.file && check_memory_size(o.memory) < 0)
		return 1;
	if (o.file)
		r = nbd_export_file(&exp, o.file);
	else
		r = nbd_export_memory(&exp, o.memory);
	if (r < 0) {
		log_stderr("%s: %s\n", o.file ? o.file : "--memory",
			   o.file && r == -EINVAL ?
				   "neither a regular file nor a block device" :
				   strerror(-r));
		return 1;
	}
	srv.exp = &exp;
	srv.best_effort = o.best_effort;
	srv.log = log_stderr;
	srv.queue_depth = o.queue_depth;
	srv.max_conns = o.max_conns + (o.connect ? 1 : 0);
	srv.send_timeout = o.send_timeout;
	srv.handshake_timeout = o.handshake_timeout;
	srv.poll_us = o.poll_us;
	srv.nthreads = exp.kind == NBD_BACKEND_FILE ? o.threads : 0;
	/* The pools' context logs warnings (unless IOFLUSHER_LOG sets a
	 * priority): why their memory cannot be locked, say. */
	r = ioflusher_ctx_new(&srv.ctx);
	if (r == 0 && ioflusher_ctx_get_log_priority(srv.ctx) < 0)
		ioflusher_ctx_set_log_priority(srv.ctx, LOG_WARNING);
	if (r == 0)
		r = nbd_server_init(&srv);
	if (r < 0) {
		log_stderr("buffers: %s\n", strerror(-r));
		return 1;
	}

	/* Signals are taken synchronously by this thread, through a
	 * signalfd; blocked before any other thread exists, they stay
	 * blocked in all of them.  Blocked before the socket is there too:
	 * a stop sent as soon as it appears (a service manager's, a test's)
	 * is a clean shutdown, not a death that leaves the socket behind. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP); /* its terminal gone: a stop, not a kill */
	sigaddset(&sigs, SIGCHLD);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	sfd = signalfd(-1, &sigs, SFD_CLOEXEC);
	kfd = eventfd(0, EFD_CLOEXEC);
	if (sfd < 0 || kfd < 0) {
		log_stderr("signalfd: %s\n", strerror(errno));
		return 1;
	}

	/* 4. Where clients come from. */
	if (o.socket_path) {
		lfd = listen_unix(o.socket_path, tmp, sizeof(tmp));
		strcpy(uri, "nbd+unix:///");
		uri_escape(uri, sizeof(uri), o.export_name, false);
		strcat(uri, "?socket=");
		uri_escape(uri, sizeof(uri), o.socket_path, true);
	} else if (o.tcp) {
		lfd = listen_tcp(o.tcp, host, sizeof(host), &port);
		snprintf(uri, sizeof(uri), "nbd://%s:%u/", host, port);
		uri_escape(uri, sizeof(uri), o.export_name, false);
	}
	if (lfd < 0 && (o.socket_path || o.tcp)) {
		log_stderr("%s: %s\n", o.socket_path ? o.socket_path : o.tcp,
			   lfd == -EEXIST && o.socket_path ?
				   "exists and is not a socket: not replaced" :
			   lfd == -EADDRINUSE && o.socket_path ?
				   "another server listens on it" :
				   strerror(-lfd));
		return 1;
	}

	/* What must be opened with the privileges of start-up: the kernel's
	 * device, and the workers' descriptors of a file export (a new
	 * open(2) each, with its permission checks). */
	if (o.connect) {
		r = nbd_kernel_open(o.connect, &kern);
		if (r < 0) {
			log_stderr("%s: %s\n", o.connect,
				   r == -ENOENT ?
					   "No such device (modprobe nbd makes "
					   "/dev/nbd0 to /dev/nbd15)" :
					   strerror(-r));
			goto fail_listening;
		}
	}
	r = nbd_server_open_workers(&srv);
	if (r < 0) {
		log_stderr("workers: %s\n", strerror(-r));
		goto fail_listening;
	}

	/* 5. What is left of privilege, before any thread starts:
	 * libcap changes the calling thread only, and a thread already
	 * running keeps what it had (ioflusher_caps_drop(3)).  CAP_IPC_LOCK:
	 * under MCL_FUTURE every new mapping is locked, the stack of each
	 * new connection's thread too, and without it they count against
	 * RLIMIT_MEMLOCK.  CAP_SYS_ADMIN, in kernel mode: NBD_SET_SOCK and
	 * NBD_DO_IT below, NBD_DISCONNECT at shutdown. */
	keep[nkeep++] = CAP_IPC_LOCK;
	if (o.connect)
		keep[nkeep++] = CAP_SYS_ADMIN;
	/* Without CAP_SETPCAP the bounding set is left as it is, silently:
	 * what the daemon executes could gain capabilities back. */
	if (ioflusher_caps_have(CAP_SETPCAP) != 1)
		log_stderr("capabilities: no CAP_SETPCAP, the bounding set "
			   "stays as it is\n");
	r = ioflusher_caps_drop(keep, (size_t)nkeep);
	if (r < 0) {
		/* Kept, CAP_SYS_RESOURCE lets any thread clear the flag:
		 * not served, unless --best-effort. */
		log_stderr("dropping capabilities: %s%s%s\n", strerror(-r),
			   r == -EPERM ? " (a seccomp filter or a security "
					 "module refused)" :
					 "",
			   o.best_effort ? "; the threads keep them" :
					   ": not serving");
		if (!o.best_effort) {
			fail_status = r == -ENOMEM ? 1 : 4;
			goto fail_listening;
		}
	}

	/* 6. Workers, the kernel's device, then the audit of them all. */
	r = nbd_server_start_workers(&srv);
	if (r < 0) {
		log_stderr("workers: %s\n", strerror(-r));
		goto fail_listening;
	}
	/* parse_args() checked the file already; it may have changed size
	 * since. */
	if (o.connect && (exp.size % 512 || !exp.size)) {
		log_stderr("%s: the export's %llu bytes are not a whole, "
			   "non-zero number of 512-byte sectors, as a block "
			   "device's size is\n",
			   o.connect, (unsigned long long)exp.size);
		goto fail_listening;
	}
	if (o.connect) {
		r = nbd_kernel_connect(&srv, o.connect, kfd, &kern);
		if (r == 0) {
			/* Ready means a mount can find the device sized. */
			r = nbd_kernel_wait_started(&kern, 10000);
			if (r < 0) {
				log_stderr("%s: NBD_DO_IT: %s: the device did "
					   "not start\n",
					   o.connect, strerror(-r));
				goto fail_listening;
			}
		}
		if (r < 0) {
			log_stderr("%s: %s\n", o.connect, strerror(-r));
			goto fail_listening;
		}
	}
	/* With the flag required, a thread without it (one a library
	 * started) is a daemon that must not serve. */
	r = audit_threads();
	if (r != 0 && !o.best_effort) {
		log_stderr("audit: %s: not serving\n",
			   r < 0 ? strerror(-r) :
				   "a thread runs without the flag");
		/* 4 says a restart cannot help; an audit that could not be
		 * made (out of memory) may be retried. */
		fail_status = r < 0 ? 1 : 4;
		goto fail_listening;
	}

	/* 7. The optional sandbox, once every thread exists. */
	if (o.sandbox) {
		r = ioflusher_sandbox_lock(0);
		if (r < 0) {
			/* Asked for and not there: do not serve without it. */
			log_stderr("--sandbox: %s: not serving\n",
				   strerror(-r));
			/* 4, or 1 for what a restart may cure. */
			fail_status = r == -ENOMEM || r == -EFAULT ? 1 : 4;
			goto fail_listening;
		}
	}

	log_stderr("serving %s%s%s (%llu bytes, %s%s), pid %d\n",
		   uri[0] ? uri : "", uri[0] && o.connect ? " and " : "",
		   o.connect ? o.connect : "", (unsigned long long)exp.size,
		   o.file ? "file" : "memory", o.readonly ? ", read-only" : "",
		   (int)getpid());
	if (run_wfd >= 0) {
		size_t n = strlen(uri);
		ssize_t w;

		if (o.connect)
			snprintf(uri + n, sizeof(uri) - n, "\n%s", o.connect);
		w = write(run_wfd, uri, strlen(uri));
		(void)w;
		close(run_wfd);
		uri[n] = 0;
	}
	/* Only now may units ordered after this one (clients, a mount of
	 * the kernel's device) start. */
	notify("READY=1");

	/* 8. Serve. */
	while (running) {
		struct pollfd pfd[3] = {
			{ sfd, POLLIN, 0 },
			{ kfd, POLLIN, 0 },
			{ lfd, POLLIN, 0 },
		};
		struct signalfd_siginfo si;
		int np = lfd >= 0 && !accept_paused ? 3 : 2;

		r = poll(pfd, np, accept_paused ? 100 : -1);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		accept_paused = false;
		if (np == 3 && (pfd[2].revents & POLLIN))
			accept_paused = !accept_one(&srv, lfd, o.tcp != NULL,
						    &accept_said);
		if (pfd[1].revents & POLLIN) {
			log_stderr("%s: disconnected\n", o.connect);
			running = false;
		}
		if (!(pfd[0].revents & POLLIN) ||
		    read(sfd, &si, sizeof(si)) != sizeof(si))
			continue;
		if (si.ssi_signo == SIGCHLD) {
			int ws;

			if (run_pid > 0 &&
			    waitpid(run_pid, &ws, WNOHANG) == run_pid) {
				status = WIFEXITED(ws) ? WEXITSTATUS(ws) :
							 128 + WTERMSIG(ws);
				run_pid = -1;
				running = false;
			}
		} else {
			log_stderr("signal %d: shutting down\n",
				   (int)si.ssi_signo);
			running = false;
		}
	}

	notify("STOPPING=1");
	/* The --run command cannot go on without the server, whatever
	 * stopped it (a signal, the kernel's device): it is told at once, and
	 * its status is the daemon's (end_run()). */
	if (run_pid > 0)
		kill_run(run_pid);

	/* Stop taking clients.  Those connected have what they sent served,
	 * and the rest refused with ESHUTDOWN, upon which they disconnect;
	 * after the grace period, those left are hard-disconnected, and a
	 * connection that does not end even then is left behind. */
	unlisten(lfd, o.socket_path);
	if (o.connect)
		nbd_kernel_disconnect(&kern);
	nbd_server_stop(&srv);
	left = grace_wait(&srv, sfd, &grace_s);
	if (left) {
		log_stderr("%u connection%s still open after %d s: "
			   "disconnecting %s\n",
			   left, left == 1 ? "" : "s", grace_s,
			   left == 1 ? "it" : "them");
		nbd_server_shutdown(&srv);
		left = nbd_server_wait_idle(&srv, NBD_HARD_GRACE_MS);
	}
	if (left) {
		/* A thread stuck past SHUT_RDWR: the buffers it may still
		 * use cannot be freed.  Every connection is shut down, so no
		 * write still running can be answered any more: stop refuses
		 * new ones, and flushes what was answered. */
		log_stderr("connections did not end; exiting without them\n");
		report_lost(&exp, nbd_export_stop(&exp));
		return 1;
	}
	nbd_kernel_wait(&kern);
	nbd_server_fini(&srv);
	if (run_pid > 0)
		status = end_run(run_pid);
	/* The file backend is flushed (fdatasync), and its writeback errors
	 * of the whole run counted: an exit status of 0 says that what was
	 * acknowledged was stored. */
	if (report_lost(&exp, nbd_export_stop(&exp)) && !status)
		status = 1;
	nbd_export_close(&exp);
	ioflusher_ctx_unref(srv.ctx);
	return status;

fail_listening:
	/* Nothing was served, and the socket must not outlive the daemon
	 * all the same.  A kernel device connected already is disconnected,
	 * and what was set up undone, as at the end of a run. */
	unlisten(lfd, o.socket_path);
	if (o.connect)
		nbd_kernel_disconnect(&kern);
	nbd_server_shutdown(&srv);
	if (nbd_server_wait_idle(&srv, NBD_HARD_GRACE_MS) == 0) {
		nbd_kernel_wait(&kern);
		nbd_server_fini(&srv);
		nbd_export_close(&exp);
		ioflusher_ctx_unref(srv.ctx);
	}
	return fail_status;
}
