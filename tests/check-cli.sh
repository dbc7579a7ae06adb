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

# skip DESC REASON: a test that cannot run here.
skip() {
	n=$((n + 1))
	echo "ok $n - $1 # SKIP $2"
}

tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT

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
if [ -w /dev/full ]; then
	check "--help to a full disk fails and says so" 1 \
		"^ioflusher: cannot write the standard output: No space left" \
		sh -c '"$0" --help >/dev/full' "$tool"
	check "status to a full disk fails and says so" 1 \
		"^ioflusher: cannot write the standard output" \
		sh -c '"$0" status $$ >/dev/full' "$tool"
	# Nothing written to a standard output closed from the start: run's
	# failed exec keeps its own status.
	check "run of a missing command, stdout closed: still 127" 127 \
		"cannot run /nonexistent-command" \
		sh -c '"$0" run --best-effort -- /nonexistent-command >&-' "$tool"
else
	skip "--help to a full disk fails and says so" "no /dev/full"
	skip "status to a full disk fails and says so" "no /dev/full"
fi
check "no command is a usage error" 2 "" "$tool"
check "an unknown command is a usage error" 2 "unknown command 'frobnicate'" \
	"$tool" frobnicate
check "status of something that is not a PID" 2 "not a process ID" \
	"$tool" status 12x
# strtol takes blanks and a sign: a PID is digits only.
check "status of a PID with a blank before it" 2 "not a process ID: ' 12'" \
	"$tool" status " 12"
check "status of a PID with a sign" 2 "not a process ID: '\+1'" \
	"$tool" status +1
check "status of two PIDs: says so" 2 "^ioflusher: status: more than one PID$" \
	"$tool" status 1 2
# getopt's own words would start with the program's path, or "run:".
check "an unknown option, in the tool's words" 2 \
	"^ioflusher: unknown option '--frobnicate'$" "$tool" --frobnicate
check "run: an unknown option, in the tool's words" 2 \
	"^ioflusher: run: unknown option '-x'$" "$tool" run -x -- true
check "run -k without its list, in the tool's words" 2 \
	"^ioflusher: run: option '-k' needs an argument$" "$tool" run -k
check "--oom-score-adj out of range" 2 "takes -1000 to 1000" \
	"$tool" run -o 4294966296 -- true
check "--oom-score-adj empty" 2 "takes -1000 to 1000" "$tool" run -o "" -- true
check "run without a command" 2 "no command given" "$tool" run
check "an unknown capability" 2 "unknown capability 'cap_nonsense'" \
	"$tool" run --keep-caps cap_nonsense -- true
# cap_from_name() reads as far as it can, and numbers as C does: a word
# must be a whole name or a decimal number.
for word in 'cap_ipc_lock+ep' 'cap_ipc_lock;cap_chown' 21x 010 08; do
	check "--keep-caps '$word': not a whole name or decimal, a usage error" 2 \
		"unknown capability '$(printf '%s' "$word" | sed 's/[+]/[+]/g')'" \
		"$tool" run --best-effort --keep-caps "$word" -- true
done
# cap_from_name() takes any number; the kernel knows up to cap_last_cap.
if [ -r /proc/sys/kernel/cap_last_cap ]; then
	past=$(($(cat /proc/sys/kernel/cap_last_cap) + 1))
	check "a capability number past the kernel's last: a usage error" 2 \
		"unknown capability '$past'" \
		"$tool" run --best-effort --keep-caps "$past" -- true
else
	skip "a capability number past the kernel's last" \
		"no /proc/sys/kernel/cap_last_cap"
fi

# What compaction may do to locked pages, read from the sysctl itself.
if [ -r /proc/sys/vm/compact_unevictable_allowed ]; then
	cua=$(cat /proc/sys/vm/compact_unevictable_allowed)
	if [ "$cua" = 0 ]; then
		moved="are not moved"
	else
		moved="may be moved"
	fi
	check "status: the compaction sysctl as it is ($cua: $moved)" \
		"$([ $resource = yes ] && echo 0 || echo 1)" \
		"^compaction: +vm.compact_unevictable_allowed = $cua: locked pages $moved" \
		"$tool" status
else
	check "status: no compaction in this kernel" \
		"$([ $resource = yes ] && echo 0 || echo 1)" \
		"^compaction: +not in this kernel" "$tool" status
fi
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
	# The OOM protection is not attempted after the flag failed: its
	# line says so too.
	check "run -- true: the skipped OOM protection has its line" 1 \
		"^ioflusher: oom protection: skipped: not attempted" \
		"$tool" run -- true
	# -l cannot lift the hard limit: -b still raises the soft one to it.
	# 8 MiB must be within the hard limit, which this cannot raise.
	hard=$(ulimit -Hl)
	if command -v prlimit >/dev/null &&
		{ [ "$hard" = unlimited ] || [ "$hard" -ge 8192 ]; }; then
		check "run -b -l without CAP_SYS_RESOURCE: soft raised to the hard limit" 0 \
			"^8192$" prlimit --memlock=65536:8388608 \
			"$tool" run -b -l -- sh -c 'ulimit -Sl'
		check "run -b -l without CAP_SYS_RESOURCE: says so" 0 \
			"cannot lift RLIMIT_MEMLOCK: .*the soft limit is raised to the hard one, 8 MiB" \
			prlimit --memlock=65536:8388608 "$tool" run -b -l -- true
	else
		skip "run -b -l without CAP_SYS_RESOURCE" "no prlimit, or a hard RLIMIT_MEMLOCK below 8 MiB"
	fi
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
check "run --keep-caps NONE: any case, CMD has none" 0 \
	"^CapEff:[[:space:]]+0000000000000000$" \
	"$tool" run --best-effort --keep-caps NONE -- grep CapEff /proc/self/status
check "run --keep-caps with a blank after the comma: both kept" 0 \
	"^CapEff:[[:space:]]+0000000000004001$" \
	"$tool" run --best-effort --keep-caps "cap_ipc_lock, cap_chown" -- \
	grep CapEff /proc/self/status
check "run --keep-caps separated by blanks, as systemd lists them: both kept" 0 \
	"^CapEff:[[:space:]]+0000000000004001$" \
	"$tool" run --best-effort --keep-caps "cap_ipc_lock cap_chown" -- \
	grep CapEff /proc/self/status
check "run --keep-caps 14,0,14: decimal numbers, a repeat counted once" 0 \
	"^CapEff:[[:space:]]+0000000000004001$" \
	"$tool" run --best-effort --keep-caps "14,0,14" -- \
	grep CapEff /proc/self/status
# -v reports what run applied itself, not only what the library did.
check "run -v: the RLIMIT_MEMLOCK raise has its line" 0 \
	"^ioflusher: RLIMIT_MEMLOCK: applied: " \
	"$tool" run --best-effort -v --keep-caps cap_ipc_lock -- true
check "run -v: the capability drop has its line" 0 \
	"^ioflusher: capabilities: applied: every one dropped but cap_ipc_lock$" \
	"$tool" run --best-effort -v --keep-caps cap_ipc_lock -- true

# RLIMIT_MEMLOCK exactly: 1000 bytes is no "0 KiB", and 1600000 no
# "1.5 MiB" like 1572864.  Lowering a limit needs no privilege: both
# must be within the hard limit (1600000 bytes is 1563 KiB).
hard=$(ulimit -Hl)
if command -v prlimit >/dev/null &&
	{ [ "$hard" = unlimited ] || [ "$hard" -ge 1563 ]; }; then
	st=$([ $resource = yes ] && echo 0 || echo 1)
	check "status: RLIMIT_MEMLOCK below a KiB, in bytes" "$st" \
		"^RLIMIT_MEMLOCK: +1000 bytes \(hard 1000 bytes\)$" \
		prlimit --memlock=1000:1000 "$tool" status
	check "status: RLIMIT_MEMLOCK, two limits that differ print apart" "$st" \
		"^RLIMIT_MEMLOCK: +1536 KiB \(hard 1600000 bytes\)$" \
		prlimit --memlock=1572864:1600000 "$tool" status
else
	skip "status: RLIMIT_MEMLOCK exactly" "no prlimit, or a hard RLIMIT_MEMLOCK below 1563 KiB"
fi

# As root without CAP_SETPCAP the bounding set cannot shrink, and execve
# would give a root CMD every capability back: run must refuse.
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null &&
	setpriv --bounding-set=-setpcap true 2>/dev/null; then
	check "run --keep-caps as root without CAP_SETPCAP: refused" 1 \
		"--keep-caps cannot hold" \
		setpriv --bounding-set=-setpcap "$tool" run --best-effort \
		--keep-caps cap_ipc_lock -- true
	# Root by the real user ID alone is root to execve too.
	check "run --keep-caps with a real UID of 0 without CAP_SETPCAP: refused" 1 \
		"--keep-caps cannot hold" \
		setpriv --euid=65534 --bounding-set=-setpcap "$tool" run \
		--best-effort --keep-caps cap_ipc_lock -- true
else
	skip "run --keep-caps as root without CAP_SETPCAP" \
		"not root, or setpriv cannot drop CAP_SETPCAP here"
fi

# Not root, a kept capability survives execve only as an ambient one: run
# must raise it after the drop, which clears the ambient set.  As nobody,
# with CAP_IPC_LOCK ambient (so the tool has it at all), bit 14.
nobody_lock="setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=+ipc_lock --ambient-caps=+ipc_lock"
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null &&
	$nobody_lock "$tool" --version >/dev/null 2>&1; then
	check "run --keep-caps cap_ipc_lock as nobody: CMD has it, ambient" 0 \
		"^CapEff:[[:space:]]+0000000000004000$" \
		$nobody_lock "$tool" run --best-effort --keep-caps cap_ipc_lock \
		-- grep CapEff /proc/self/status
	# A capability it does not hold stays absent, without a warning.
	out=$($nobody_lock "$tool" run --best-effort \
		--keep-caps cap_ipc_lock,cap_sys_admin -- true 2>&1)
	rc=$?
	if [ $rc -eq 0 ] && ! printf '%s\n' "$out" | grep -q "not kept across execve"; then
		ok "run --keep-caps of a capability not held: no warning"
	else
		not_ok "run --keep-caps of a capability not held: no warning" \
			"exit $rc: $out"
	fi
else
	skip "run --keep-caps cap_ipc_lock as nobody" \
		"not root, no setpriv, or nobody cannot have CAP_IPC_LOCK or run the tool"
fi

# status PID: a process of ours, and one that is gone.
sleep 30 &
pid=$!
# Named sleep once it has exec'd, which the fork need not have done yet.
i=0
while [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != sleep ] && [ $i -lt 100 ]; do
	sleep 0.1
	i=$((i + 1))
done
check "status PID: names its thread without the flag" 1 \
	"thread +$pid +sleep +MISSING" "$tool" status "$pid"
check "status -- PID: the same" 1 \
	"thread +$pid +sleep +MISSING" "$tool" status -- "$pid"
# Without /proc (a mount namespace of its own, as root): said, not blamed
# on hidepid=.
if [ "$(id -u)" -eq 0 ] && unshare -m true 2>/dev/null; then
	check "status PID without /proc: says /proc is not there, exit 1" 1 \
		"/proc is not mounted here, or not readable" \
		unshare -m sh -c 'umount -l /proc && exec "$0" status "$1"' "$tool" "$pid"
	# Its own status: what /proc alone shows is unknown, not guessed;
	# what system calls show is still known.
	noproc() {
		unshare -m sh -c 'umount -l /proc && exec "$0" status' "$tool"
	}
	check "status without /proc: compaction unknown, not 'not in this kernel'" \
		"$([ $resource = yes ] && echo 0 || echo 1)" \
		"^compaction: +unknown \(/proc is not mounted here" noproc
	check "status without /proc: PSI unknown, not 'needs CONFIG_PSI'" \
		"$([ $resource = yes ] && echo 0 || echo 1)" \
		"^PSI: +unknown \(/proc is not mounted here" noproc
	# What they must say, from this shell's /proc and limits, which the
	# tool inherits.
	capbit() {
		v=$(sed -n "s/^$1:[[:space:]]*//p" /proc/self/status)
		[ $(((0x$v >> 14) & 1)) -eq 1 ] && echo yes || echo no
	}
	memlock_text() {
		case $1 in
		unlimited) echo unlimited ;;
		0) echo "0 bytes" ;;
		*) if [ $(($1 % 1024)) -eq 0 ]; then
			echo "$(($1 / 1024)) MiB"
		else
			echo "$1 KiB"
		fi ;;
		esac
	}
	case $(sed -n 's/^Seccomp:[[:space:]]*//p' /proc/self/status) in
	0) mode=none ;;
	2) mode=filter ;;
	*) mode=strict ;;
	esac
	check "status without /proc: its capabilities from capget(2)" \
		"$([ $resource = yes ] && echo 0 || echo 1)" \
		"^CAP_IPC_LOCK: +effective $(capbit CapEff), permitted $(capbit CapPrm), bounding $(capbit CapBnd) " \
		noproc
	check "status without /proc: its RLIMIT_MEMLOCK from getrlimit(2)" \
		"$([ $resource = yes ] && echo 0 || echo 1)" \
		"^RLIMIT_MEMLOCK: +$(memlock_text "$(ulimit -l)") \(hard $(memlock_text "$(ulimit -H -l)")\)$" \
		noproc
	check "status without /proc: its seccomp mode from prctl(2)" \
		"$([ $resource = yes ] && echo 0 || echo 1)" \
		"^seccomp: +$mode" noproc
else
	skip "status PID without /proc" "not root, or no unshare -m"
fi
# A /proc that shows only processes (subset=pid, systemd's
# ProcSubset=pid) has no /proc/sys or /proc/pressure: unknown, not "not
# in this kernel".
subset() {
	unshare -m sh -c 'mount -t proc -o subset=pid proc /proc && exec "$0" status' "$tool"
}
if [ "$(id -u)" -eq 0 ] &&
	unshare -m sh -c 'mount -t proc -o subset=pid proc /proc' 2>/dev/null; then
	check "status with /proc of subset=pid: compaction unknown" \
		"$([ $resource = yes ] && echo 0 || echo 1)" \
		"^compaction: +unknown \(this /proc shows only processes" subset
	check "status with /proc of subset=pid: PSI unknown" \
		"$([ $resource = yes ] && echo 0 || echo 1)" \
		"^PSI: +unknown \(this /proc shows only processes" subset
else
	skip "status with /proc of subset=pid" "not root, or /proc cannot be mounted so"
fi
kill "$pid"
wait "$pid" 2>/dev/null

# A thread's ID names its process, which is audited, and said to be.
skel=${top_builddir:-.}/examples/skeleton/ioflusher-skeleton
"$skel" --best-effort >/dev/null 2>&1 &
pid=$!
tid=
for _ in $(seq 50); do
	tid=$(ls "/proc/$pid/task" 2>/dev/null | grep -vx "$pid" | head -n 1)
	[ -n "$tid" ] && break
	sleep 0.1
done
if [ -n "$tid" ]; then
	check "status TID: the process it belongs to, said so" \
		"$([ $resource = yes ] && echo 0 || echo 1)" \
		"^process: +$pid \($tid is one of its threads\)$" \
		"$tool" status "$tid"
	check "status TID: audits every thread of its process" \
		"$([ $resource = yes ] && echo 0 || echo 1)" \
		"thread +$pid " "$tool" status "$tid"
else
	skip "status TID" "the skeleton started no thread within 5 s"
fi
kill "$pid"
wait "$pid" 2>/dev/null
check "status PID of a process that is gone: a usage error" 2 "no process $pid" \
	"$tool" status "$pid"

# A zombie: sleep 1 exits, and sleep 30, its parent, never reaps it.  Not
# sleep 0: a child that ends before the exec is reaped by sh (dash waits
# for its jobs between commands), and no zombie is left.
sh -c 'sleep 1 & echo $! >"$1"; exec sleep 30' sh "$tmp/zombie" &
parent=$!
zombie=
for _ in $(seq 20); do
	[ -s "$tmp/zombie" ] && zombie=$(cat "$tmp/zombie") &&
		grep -q '^State:.*Z' "/proc/$zombie/status" 2>/dev/null && break
	zombie=
	sleep 0.5
done
if [ -n "$zombie" ]; then
	check "status PID of a zombie: its flag line, 0 of 0" 1 \
		"^io-flusher flag: +0 of 0 threads carry it: a zombie" \
		"$tool" status "$zombie"
	check "status PID of a zombie: the verdict says so" 1 \
		"^verdict: +NOT protected: a zombie, with no thread left$" \
		"$tool" status "$zombie"
else
	skip "status PID of a zombie" "no zombie within 10 s"
fi
kill "$parent"
wait "$parent" 2>/dev/null

# /proc mounted with hidepid= hides root's processes from nobody: kill()
# says the process exists, /proc says nothing (2) or refuses (1).  A
# mount namespace of its own, as root.
sleep 30 &
pid=$!
nobody="setpriv --reuid=65534 --regid=65534 --clear-groups"
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null &&
	command -v setpriv >/dev/null &&
	unshare -m sh -c 'mount -t proc -o hidepid=2 proc /proc' 2>/dev/null &&
	$nobody "$tool" --version >/dev/null 2>&1; then
	for h in 2 1; do
		# Hidden indeed: before Linux 5.8 a proc mount shares its
		# options with the others of its PID namespace.
		if ! unshare -m sh -c 'mount -t proc -o hidepid=$1 proc /proc &&
			exec '"$nobody"' test ! -r "/proc/$2/status"' sh "$h" "$pid"; then
			skip "status PID hidden by /proc's hidepid=$h" \
				"this proc mount does not hide the process"
			continue
		fi
		check "status PID hidden by /proc's hidepid=$h: says so" 1 \
			"^ioflusher: process $pid is hidden by /proc \(mounted with hidepid=\)" \
			unshare -m sh -c 'mount -t proc -o hidepid=$1 proc /proc &&
				exec '"$nobody"' "$2" status "$3"' sh "$h" "$tool" "$pid"
	done
else
	skip "status PID hidden by /proc's hidepid=" \
		"not root, no unshare or setpriv, proc cannot be mounted, or nobody cannot run the tool"
fi
kill "$pid"
wait "$pid" 2>/dev/null

echo "1..$n"
exit $fail
