// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * LD_PRELOAD shim for the VM tests: prctl(PR_SET_IO_FLUSHER, ...) returns
 * 0 and does nothing, as a seccomp filter answering SECCOMP_RET_ERRNO with
 * errno 0 does.  The library verifies the flag after setting it, so under
 * this shim it must report a failure; the "fake-prctl" scenario and
 * "tests/vm/run --fake-prctl" use it to prove that the VM tests can fail.
 * Both the libc wrapper and syscall(SYS_prctl, ...) are covered.
 */
#include <dlfcn.h>
#include <stdarg.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

__attribute__((visibility("default"))) int prctl(int option, ...)
{
	static int (*real)(int, ...);
	unsigned long a[4];
	va_list ap;

	/* Like glibc's own wrapper: four arguments, whatever the option. */
	va_start(ap, option);
	for (int i = 0; i < 4; i++)
		a[i] = va_arg(ap, unsigned long);
	va_end(ap);
	if (option == PR_SET_IO_FLUSHER)
		return 0;
	if (!real)
		real = (int (*)(int, ...))dlsym(RTLD_NEXT, "prctl");
	return real(option, a[0], a[1], a[2], a[3]);
}

__attribute__((visibility("default"))) long syscall(long number, ...)
{
	static long (*real)(long, ...);
	long a[6];
	va_list ap;

	va_start(ap, number);
	for (int i = 0; i < 6; i++)
		a[i] = va_arg(ap, long);
	va_end(ap);
	if (number == SYS_prctl && a[0] == PR_SET_IO_FLUSHER)
		return 0;
	if (!real)
		real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
	return real(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}
