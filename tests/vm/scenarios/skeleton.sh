#!/bin/sh
# The template daemon, examples/skeleton, as root with every capability.
#
# What a copy of it must get right where the flag can be set: the flag
# required (no --best-effort) and every protection applied, every thread
# flagged (its own audit, and ioflusher status from outside), every
# capability but CAP_IPC_LOCK dropped in every thread before the workers
# started (/proc/PID/task/*/status), the seccomp filter of --sandbox in
# place, and SIGTERM ending it with status 0.
#
# vm-binaries: examples/skeleton/ioflusher-skeleton tools/ioflusher
# vm-memory: 256
# vm-timeout: 60
. /vm/lib.sh

log=/tmp/skeleton.log
if ! vm_daemon_start "$log" "grep -q '^serving: ' '$log'" \
	ioflusher-skeleton --threads 3 --sandbox; then
	vm_not_ok "the skeleton starts as root, the flag required"
	vm_exit
fi
vm_ok "the skeleton starts as root, the flag required"
vm_diag_lines <"$log"
vm_check "its report: the four protections applied" \
	sh -c "[ \$(grep -c '^setup: [a-z -]*: applied' '$log') = 4 ]"
vm_check "its audit: the main thread and 3 workers carry the flag" \
	grep -qx 'audit: 4 of 4 threads carry the io-flusher flag' "$log"
vm_check "ioflusher status: every thread carries the flag" \
	sh -c "ioflusher status $pid | grep -qx 'verdict: *every thread carries the flag'"

# caps_only_ipc_lock PID: every thread has CAP_IPC_LOCK (bit 14) and
# nothing else (vm_caps_only).
caps_only_ipc_lock() { vm_caps_only "$1" 0000000000004000; }
vm_check "every thread kept CAP_IPC_LOCK only" caps_only_ipc_lock "$pid"
vm_check "--sandbox: a seccomp filter is in place" \
	grep -q '^Seccomp:[[:space:]]*2' "/proc/$pid/status"
vm_daemon_stop
vm_check "SIGTERM: exit 0" test $? = 0
vm_exit
