// SPDX-License-Identifier: MIT
/*
 * echo-floor: the least server CPU a request can cost on this machine.
 *
 * Two threads over a unix socketpair play a queue-depth-1 client and a
 * server that does nothing but answer: a 28-byte request (an NBD
 * request's size), a 16-byte reply (a simple reply's).  The client waits
 * for each reply in recv(2), as fio's nbd engine does.  The server either
 * sleeps in recv(2) for the next request, paying for its own wake-up, or
 * spins on a recv(2) that does not wait, paying for the client's round
 * trip instead.  Whichever is less is what any server, whatever it does
 * with the request, spends at least per request at queue depth 1.
 *
 *   echo-floor [ROUND_TRIPS]    (default 20000 in each mode)
 *
 * Prints "sleep_cpu_us=X spin_cpu_us=Y": the server thread's CPU time
 * (CLOCK_THREAD_CPUTIME_ID) per round trip in each mode.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

struct echo {
	int fd;
	long n;
	bool spin;
	double cpu_s;
};

static double thread_cpu_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static bool recv_all(int fd, char *buf, size_t len, int flags)
{
	size_t got = 0;

	while (got < len) {
		ssize_t r = recv(fd, buf + got, len - got, flags);

		if (r == 0)
			return false;
		if (r > 0)
			got += (size_t)r;
		else if (!(flags & MSG_DONTWAIT))
			return false;
	}
	return true;
}

static void *server(void *arg)
{
	struct echo *e = arg;
	char req[28], rep[16] = { 0 };
	double c0 = thread_cpu_s();

	for (long i = 0; i < e->n; i++) {
		if (!recv_all(e->fd, req, sizeof(req),
			      e->spin ? MSG_DONTWAIT : 0) ||
		    send(e->fd, rep, sizeof(rep), 0) != sizeof(rep))
			break;
	}
	e->cpu_s = thread_cpu_s() - c0;
	return NULL;
}

/* Server CPU per round trip, in microseconds; negative on failure. */
static double run(long n, bool spin)
{
	struct echo e = { .n = n, .spin = spin };
	char req[28] = { 0 }, rep[16];
	pthread_t t;
	int sv[2];
	long i;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -1;
	e.fd = sv[1];
	if (pthread_create(&t, NULL, server, &e) != 0)
		return -1;
	for (i = 0; i < n; i++)
		if (send(sv[0], req, sizeof(req), 0) != sizeof(req) ||
		    !recv_all(sv[0], rep, sizeof(rep), 0))
			break;
	pthread_join(t, NULL);
	return i == n ? e.cpu_s / (double)n * 1e6 : -1;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 20000;
	double sleep_us, spin_us;

	if (n <= 0) {
		fprintf(stderr, "usage: echo-floor [ROUND_TRIPS]\n");
		return 2;
	}
	sleep_us = run(n, false);
	spin_us = run(n, true);
	if (sleep_us < 0 || spin_us < 0) {
		fprintf(stderr, "echo-floor: the socketpair failed\n");
		return 1;
	}
	printf("sleep_cpu_us=%.2f spin_cpu_us=%.2f\n", sleep_us, spin_us);
	return 0;
}
