#!/bin/sh
# A broken library fails: prctl(PR_SET_IO_FLUSHER) made a no-op by a shim.
#
# tests/vm/fake-prctl.so answers 0 without asking the kernel.  The library
# must catch it (it verifies the flag after setting it), ioflusher status
# must not call the machine ready, and the root suite run under the shim
# must fail: the proof that these tests can.
#
# GNU env, for --ignore-signal (busybox's has none; and a shell that execs
# a command resets an ignored SIGCHLD first).
# vm-binaries: tests/vm/vm-suite tools/ioflusher tests/vm/fake-prctl.la /usr/bin/env
# vm-memory: 256
# vm-timeout: 180
. /vm/lib.sh

shim=/usr/lib/fake-prctl.so

vm_tap env LD_PRELOAD=$shim vm-suite fake-prctl

vm_check "ioflusher run refuses to start CMD when the flag does not stick" \
	sh -c "env LD_PRELOAD=$shim ioflusher run -- true; test \$? = 1"

# status tries the flag in a child: ready as root, and not ready where
# prctl(2) only pretends, whatever the capabilities say.
vm_check "ioflusher status: ready, tried, as root" \
	sh -c "ioflusher status | grep -q '^verdict: *ready: .*(tried)'"
vm_check "ioflusher status: ready with SIGCHLD ignored too (its trial waited for)" \
	sh -c "/usr/bin/env --ignore-signal=CHLD ioflusher status >/tmp/st2.out 2>&1;
		cat /tmp/st2.out; grep -q '^verdict: *ready: .*(tried)' /tmp/st2.out"
vm_check "ioflusher status under the shim: not ready, the flag did not stick" \
	sh -c "env LD_PRELOAD=$shim ioflusher status >/tmp/st.out; rc=\$?;
		cat /tmp/st.out; test \$rc = 1 &&
		grep -q '^verdict: *not ready: setting the flag failed' /tmp/st.out"

out=$(env LD_PRELOAD=$shim vm-suite root 2>&1)
rc=$?
failed=$(printf '%s\n' "$out" | grep -c '^not ok')
if [ "$rc" != 0 ] &&
	printf '%s\n' "$out" | grep -q '^not ok .* flag: set, get and clear'; then
	vm_ok "the root suite fails under the shim ($failed of its tests fail)"
	printf '%s\n' "$out" | grep '^not ok' | vm_diag_lines
else
	vm_not_ok "the root suite fails under the shim"
	printf '%s\n' "$out" | vm_diag_lines
fi
vm_exit
