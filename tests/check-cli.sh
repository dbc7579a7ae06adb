#!/bin/sh
# ioflusher(1) on the machine the tests run on: what it says of this
# machine and of a process, and what run does, with the exit codes of its
# man page (0 ready or applied, 1 not ready or failed, 2 usage).  Where the
# tests run without CAP_SYS_RESOURCE (CI, containers) the flag cannot be
# had: status must say so and run must refuse unless told best effort;
# with it, the other way round.
set -u
tool=${top_builddir:-.}/tools/ioflusher
. "${top_srcdir:-.}/tests/tap.sh"
# check DESC WANT_STATUS PATTERN CMD...: CMD exits WANT_STATUS and its
# output (both streams) matches the grep -E PATTERN ("" for any).
check() {
	desc=$1 want=$2 pat=$3
	shift 3
	out=$("$@" 2>&1)
	rc=$?
	if [ "$rc" -ne "$want" ]; then
		not_ok "$desc" "exit status $rc, not $want:
$out"
	elif [ -n "$pat" ] && ! printf '%s\n' "$out" | grep -Eq -e "$pat"; then
		not_ok "$desc" "no match for /$pat/ in:
$out"
	else
		ok "$desc"
	fi
}

# CAP_SYS_RESOURCE is capability 24: bit 24 of CapEff.
eff=$(sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status)
if [ $(((0x$eff >> 24) & 1)) -eq 1 ]; then
	resource=yes
else
	resource=no
fi
echo "# CAP_SYS_RESOURCE effective here: $resource"

check "--version" 0 "^ioflusher from libioflusher " "$tool" --version
check "--help" 0 "ioflusher run \[options\]" "$tool" --help
check "status --help" 0 "^Usage:" "$tool" status --help
check "no command is a usage error" 2 "" "$tool"
check "an unknown command is a usage error" 2 "unknown command 'frobnicate'" \
	"$tool" frobnicate
check "status of something that is not a PID" 2 "not a process ID" \
	"$tool" status 12x
check "--oom-score-adj out of range" 2 "takes -1000 to 1000" \
	"$tool" run -o 4294966296 -- true
check "--oom-score-adj empty" 2 "takes -1000 to 1000" "$tool" run -o "" -- true
check "run without a command" 2 "no command given" "$tool" run
check "an unknown capability" 2 "unknown capability 'cap_nonsense'" \
	"$tool" run --keep-caps cap_nonsense -- true

check "status: the kernel supports PR_SET_IO_FLUSHER" \
	"$([ $resource = yes ] && echo 0 || echo 1)" \
	"^kernel: .*PR_SET_IO_FLUSHER supported$" "$tool" status
if [ $resource = no ]; then
	check "status: not ready, for want of CAP_SYS_RESOURCE" 1 \
		"^verdict: +not ready: this process lacks CAP_SYS_RESOURCE" \
		"$tool" status
	check "run -- true: refused, naming the capability" 1 \
		"io-flusher flag: unavailable: .*PR_SET_IO_FLUSHER needs CAP_SYS_RESOURCE" \
		"$tool" run -- true
	check "run -- true: and true does not run" 1 \
		"not running true: a required protection failed" "$tool" run -- true
	check "run --best-effort -- true: runs" 0 "" "$tool" run --best-effort -- true
else
	check "status: ready" 0 "^verdict: +ready" "$tool" status
	check "run -- true: runs" 0 "" "$tool" run -- true
fi
check "run: CMD's exit status" 3 "" "$tool" run --best-effort -- sh -c 'exit 3'
check "run: CMD not found is 127" 127 "cannot run no-such-command-here" \
	"$tool" run --best-effort -- no-such-command-here
# Raising oom_score_adj needs no privilege: CMD gets it across execve.
check "run -o 500: CMD runs with oom_score_adj 500" 0 "^500$" \
	"$tool" run --best-effort -o 500 -- cat /proc/self/oom_score_adj
check "run --keep-caps cap_ipc_lock: CMD has that one only" 0 \
	"^CapEff:[[:space:]]+0000000000004000$" \
	"$tool" run --best-effort --keep-caps cap_ipc_lock -- grep CapEff /proc/self/status

# As root without CAP_SETPCAP the bounding set cannot shrink, and execve
# would give a root CMD every capability back: run must refuse.
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null &&
	setpriv --bounding-set=-setpcap true 2>/dev/null; then
	check "run --keep-caps as root without CAP_SETPCAP: refused" 1 \
		"--keep-caps cannot hold" \
		setpriv --bounding-set=-setpcap "$tool" run --best-effort \
		--keep-caps cap_ipc_lock -- true
else
	n=$((n + 1))
	echo "ok $n - run --keep-caps as root without CAP_SETPCAP # SKIP not root, or setpriv cannot drop CAP_SETPCAP here"
fi

# status PID: a process of ours, and one that is gone.
sleep 30 &
pid=$!
check "status PID: names its thread without the flag" 1 \
	"thread +$pid +sleep +MISSING" "$tool" status "$pid"
kill "$pid"
wait "$pid" 2>/dev/null
check "status PID of a process that is gone: a usage error" 2 "no process $pid" \
	"$tool" status "$pid"

echo "1..$n"
exit $fail
