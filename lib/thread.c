// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Threads.  The flag is per thread: a thread inherits it from the thread
 * that creates it, and one created before the flag was set, by a library
 * or a dynamic pool, runs without it.  ioflusher_thread_create() makes the
 * guarantee explicit: the new thread checks its own flags before it runs a
 * line of the caller's code, sets the flag if it must, and the creator
 * learns the outcome before pthread_create's caller does.
 */
#include <errno.h>
#include <linux/capability.h>
#include <semaphore.h>
#include <sys/capability.h>

#include "private.h"

struct trampoline {
	void *(*start)(void *);
	void *arg;
	int result;
	sem_t ready;
};

static void *trampoline(void *data)
{
	struct trampoline *t = data;
	void *(*start)(void *) = t->start;
	void *arg = t->arg;
	int r;

	r = ioflusher_flag_get();
	if (r == 0)
		r = ioflusher_flag_set();
	else if (r == 1)
		r = 0;
	t->result = r;
	/* t lives on the creator's stack: not to be touched after this. */
	sem_post(&t->ready);
	if (r < 0)
		return NULL;
	return start(arg);
}

_public_ int ioflusher_thread_create(pthread_t *thread,
				     const pthread_attr_t *attr,
				     void *(*start)(void *), void *arg)
{
	struct trampoline t = { .start = start, .arg = arg };
	int detached = PTHREAD_CREATE_JOINABLE;
	int r, cancel;

	if (!thread || !start)
		return -EINVAL;
	if (attr && pthread_attr_getdetachstate(attr, &detached) != 0)
		return -EINVAL;
	if (sem_init(&t.ready, 0, 0) < 0)
		return -errno;
	/* sem_wait() is a cancellation point, pthread_create() is not: a
	 * caller cancelled while waiting would leave t, on its stack, to a
	 * thread that still writes to it. */
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel);
	r = pthread_create(thread, attr, trampoline, &t);
	if (r == 0) {
		while (sem_wait(&t.ready) < 0 && errno == EINTR)
			;
		r = -t.result;
		/* Neither may the thread that failed be left unjoined. */
		if (r && detached == PTHREAD_CREATE_JOINABLE)
			pthread_join(*thread, NULL);
	}
	pthread_setcancelstate(cancel, NULL);
	sem_destroy(&t.ready);
	return -r;
}

static int raise_effective(cap_value_t cap, cap_flag_value_t value)
{
	cap_t caps = cap_get_proc();
	int r = 0;

	if (!caps)
		return -errno;
	if (cap_set_flag(caps, CAP_EFFECTIVE, 1, &cap, value) < 0 ||
	    cap_set_proc(caps) < 0)
		r = -errno;
	cap_free(caps);
	return r;
}

_public_ int ioflusher_thread_child_clear(unsigned int flags)
{
	int r, err = 0, adj;
	bool raised = false;

	if (flags & ~(unsigned int)IOFLUSHER_CHILD_RESET_OOM)
		return -EINVAL;
	r = ioflusher_flag_get();
	if (r < 0)
		err = r;
	if (r == 1) {
		/* Clearing needs CAP_SYS_RESOURCE too: a daemon that dropped it
		 * from the effective set but kept it permitted can still. */
		if (ioflusher_caps_have(CAP_SYS_RESOURCE) == 0 &&
		    raise_effective(CAP_SYS_RESOURCE, CAP_SET) == 0)
			raised = true;
		err = ioflusher_flag_clear();
		if (raised)
			(void)raise_effective(CAP_SYS_RESOURCE, CAP_CLEAR);
	}
	/* A helper that allocates freely must not be immune to the OOM
	 * killer either; raising oom_score_adj needs no privilege.  Done even
	 * when the flag could not be cleared: the two are independent. */
	if (flags & IOFLUSHER_CHILD_RESET_OOM) {
		r = ioflusher_oom_get(0, &adj);
		if (r == 0 && adj < 0)
			r = ioflusher_oom_set(0, 0);
		if (r < 0 && !err)
			err = r;
	}
	return err;
}
