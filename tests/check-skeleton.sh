#!/bin/sh
# examples/skeleton, the template daemon, on the machine the tests run on.
# Where the flag cannot be had (no CAP_SYS_RESOURCE: CI, containers), it
# must refuse to serve by default, naming the capability, with exit status
# 4 (a required protection could not be applied), and serve with
# --best-effort: the report, the audit of the main thread and every
# worker, the end on a signal.  A --sandbox that cannot be installed
# (seccomp(2) failing, through tests/failsys) must stop it.  The success
# paths, flag set and every thread flagged, are check-vm's (skeleton).
set -u
skel=${top_builddir:-.}/examples/skeleton/ioflusher-skeleton
failsys=${top_builddir:-.}/tests/failsys
. "${top_srcdir:-.}/tests/tap.sh"
# check DESC WANT_STATUS CMD...: CMD exits WANT_STATUS; then each line of
# $want (grep -E patterns) must match its output and no line of $never.
check() {
	desc=$1 status=$2
	shift 2
	out=$("$@" 2>&1)
	rc=$?
	good=1
	[ "$rc" -eq "$status" ] || good=0
	while IFS= read -r p; do
		[ -z "$p" ] || printf '%s\n' "$out" | grep -Eq -e "$p" || good=0
	done <<W
$want
W
	while IFS= read -r p; do
		[ -z "$p" ] || ! printf '%s\n' "$out" | grep -Eq -e "$p" || good=0
	done <<W
$never
W
	if [ $good = 1 ]; then ok "$desc"; else not_ok "$desc (exit $rc)" "$out"; fi
}

echo "1..12"
want='Usage: '
never=
check "--help exits 0" 0 "$skel" --help
if [ -w /dev/full ]; then
	want='^cannot write the standard output'
	check "--help to a full disk: exit 1, said" 1 sh -c '"$0" --help >/dev/full' "$skel"
else
	ok "--help to a full disk # SKIP no /dev/full"
fi

# Values that atoi() took silently: a number with junk after it, a
# negative duration (it served forever), an argument nobody reads.
want='^--threads takes 1 to 64$'
never='^setup: '
check "--threads 4x exits 2 before setting up" 2 "$skel" --threads 4x
check "--threads +5 exits 2: digits only" 2 "$skel" --threads +5
want='^--duration takes 1 to 86400$'
check "--duration -1 exits 2" 2 "$skel" --best-effort --duration -1
want='^unexpected argument: extra$'
check "a stray argument exits 2" 2 "$skel" --best-effort extra

eff=$(sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status)
if [ $((0x$eff >> 24 & 1)) -eq 1 ]; then
	ok "refuses to serve without the flag # SKIP CAP_SYS_RESOURCE is held"
	ok "the report comes before the error # SKIP CAP_SYS_RESOURCE is held"
else
	want='io-flusher flag: unavailable: .*CAP_SYS_RESOURCE
^setup failed: a required protection is missing'
	never='^serving: '
	check "refuses to serve without the flag, naming CAP_SYS_RESOURCE: exit 4" 4 \
		"$skel" --threads 2 --duration 1
	# stdout is a pipe here, as under a service manager: the report must
	# come out before the error that refers to it, on stderr.
	if printf '%s\n' "$out" | tail -n 1 | grep -q '^setup failed: '; then
		ok "the report comes before the error that refers to it"
	else
		not_ok "the report comes before the error that refers to it" "$out"
	fi
fi

want='^setup: io-flusher flag: 
^setup: oom protection: 
^setup: memory lock: 
^setup: prefault: 
^audit: [0-9] of 4 threads carry the io-flusher flag
^audit: +[0-9]+ ioflusher-skele 
^audit: +[0-9]+ worker-0 
^audit: +[0-9]+ worker-1 
^audit: +[0-9]+ worker-2 
^serving: pid [0-9]+, 3 workers
^stopped: --duration elapsed'
never=
check "--best-effort: report, audit of all 4 threads, serves, ends when --duration elapses" 0 \
	"$skel" --best-effort --threads 3 --duration 1

# Its buffers where nothing can be locked (no CAP_IPC_LOCK, RLIMIT_MEMLOCK
# 0): best effort serves from them unlocked, and the library says why.
if [ "${IOFLUSHER_TEST_ASAN:-0}" = 1 ]; then
	ok "buffers that cannot be locked # SKIP AddressSanitizer intercepts mlock()"
elif [ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null; then
	want='mempool: cannot lock .*RLIMIT_MEMLOCK is 0 bytes.*not locked
^serving: pid [0-9]+, 2 workers'
	never=
	check "buffers that cannot be locked: served, and the warning says why" 0 \
		sh -c 'ulimit -l 0 && exec setpriv --bounding-set=-ipc_lock --inh-caps=-ipc_lock "$0" --best-effort --duration 1' "$skel"
else
	ok "buffers that cannot be locked # SKIP not root, or no setpriv"
fi

want='^--sandbox: .*not serving'
never='^serving: '
check "--sandbox that cannot be installed: exit 4, nothing served" 4 \
	"$failsys" seccomp=EINVAL "$skel" --best-effort --sandbox --duration 1

# Under systemd's Type=notify: READY=1 once it serves, STOPPING=1 when it
# stops, on an abstract socket as systemd's own is.
if command -v python3 >/dev/null 2>&1; then
	tmp=$(mktemp -d)
	name="@ioflusher-test-notify-$$"
	python3 "${top_srcdir:-.}/tests/notify-recv.py" "$name" "$tmp/bound" 20 \
		>"$tmp/got" &
	rpid=$!
	i=0
	while [ ! -e "$tmp/bound" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	NOTIFY_SOCKET=$name "$skel" --best-effort --duration 1 >"$tmp/out" 2>&1
	wait $rpid
	if [ "$(cat "$tmp/got")" = "$(printf 'READY=1\nSTOPPING=1')" ] &&
		grep -q '^serving: ' "$tmp/out"; then
		ok "NOTIFY_SOCKET: READY=1 once serving, STOPPING=1 at the stop"
	else
		not_ok "NOTIFY_SOCKET: READY=1 once serving, STOPPING=1 at the stop" \
			"$(cat "$tmp/got" "$tmp/out")"
	fi
	rm -rf "$tmp"
else
	ok "NOTIFY_SOCKET # SKIP no python3"
fi
exit $fail
