#!/bin/sh
# ioflusher-nbd as a daemon: start-up policy, report and audit, privileges
# dropped, the sandbox, captive mode (--run, $uri), TCP, connection limit,
# what connected clients see at shutdown (ESHUTDOWN, a grace period),
# and a clean shutdown on SIGTERM that flushes the file backend.
. "${top_srcdir:-.}/tests/nbd/lib.sh"
nbd_require nbdinfo nbdcopy

has_cap() { # has_cap BIT [PID]
	eff=$(sed -n 's/^CapEff:[[:space:]]*//p' "/proc/${2:-self}/status")
	[ $(((0x$eff >> $1) & 1)) -eq 1 ]
}

# refused NAME PATTERN DESC ARGS...: the daemon started with ARGS on
# $nbd_tmp/NAME.sock (under the command $wrap, if set) exits $refused_rc
# (1 unless set) with PATTERN in its error output, and leaves no socket
# behind, where clients would be refused.
wrap=
refused_rc=1
refused() {
	_name=$1 _pat=$2 _desc=$3
	shift 3
	# shellcheck disable=SC2086
	timeout 20 $wrap "$NBD_DAEMON" --socket "$nbd_tmp/$_name.sock" "$@" \
		>/dev/null 2>"$nbd_tmp/$_name.err"
	_rc=$?
	if [ $_rc -eq "$refused_rc" ] && grep -q -- "$_pat" "$nbd_tmp/$_name.err" &&
		[ ! -e "$nbd_tmp/$_name.sock" ]; then
		tap_ok "$_desc"
	else
		tap_not_ok "$_desc (exit $_rc)"
		ls -l "$nbd_tmp" | tap_diag
		tap_diag <"$nbd_tmp/$_name.err"
	fi
}

# Without --best-effort the io-flusher flag is required: on a machine
# without CAP_SYS_RESOURCE the daemon must refuse to serve, with exit
# status 4, which the unit's RestartPreventExitStatus= does not restart.
if has_cap 24; then
	tap_skip "without --best-effort, refuses to start unprotected: exit 4" \
		"this machine has CAP_SYS_RESOURCE"
	tap_skip "without --best-effort: the report names CAP_SYS_RESOURCE" \
		"this machine has CAP_SYS_RESOURCE"
else
	refused_rc=4
	refused strict "^ioflusher-nbd: setup failed: a required protection is missing" \
		"without --best-effort, refuses to start unprotected: exit 4, 'setup failed'" \
		--memory 1M
	refused_rc=1
	tap_check "without --best-effort: the report names CAP_SYS_RESOURCE" \
		grep -q "setup: io-flusher flag: unavailable: .*CAP_SYS_RESOURCE" \
		"$nbd_tmp/strict.err"
fi
# A start that fails once the socket is made (here the kernel's device:
# not there) must remove it.
# shellcheck disable=SC2086
refused failed no-such-nbd \
	"a start that fails after listening exits 1 and removes its socket" \
	$NBD_OPTS --memory 1M --connect "$nbd_tmp/no-such-nbd"
# A sandbox asked for and not there (seccomp(2) failing, as where a
# filter already forbids it) is no sandbox: nothing is served.
wrap="${top_builddir:-.}/tests/failsys seccomp=EINVAL"
refused_rc=4
# shellcheck disable=SC2086
refused nosandbox "^ioflusher-nbd: --sandbox: .*not serving" \
	"--sandbox that cannot be installed: exit 4, said, the socket removed" \
	$NBD_OPTS --memory 1M --sandbox
wrap= refused_rc=1

tap_check "--version: the release's, $PACKAGE_VERSION" sh -c \
	"'$NBD_DAEMON' --version | grep -qx 'ioflusher-nbd ${PACKAGE_VERSION:-?} (libioflusher example)'"
if [ -w /dev/full ]; then
	tap_check "--help and --version to a full disk: exit 1, said" sh -c \
		"for o in --help --version; do
			'$NBD_DAEMON' \$o >/dev/full 2>'$nbd_tmp/full.err'
			[ \$? -eq 1 ] || exit 1
			grep -q 'cannot write the standard output' '$nbd_tmp/full.err' || exit 1
		done"
else
	tap_skip "--help and --version to a full disk: exit 1, said" "no /dev/full"
fi
for spec in localhost:10809 foo:1 :10809 127.0.0.1:65536; do
	tap_check "--tcp $spec: a usage error, exit 2" sh -c \
		"timeout 10 '$NBD_DAEMON' $NBD_OPTS --tcp '$spec' --memory 1M 2>&1 | grep -q 'tcp takes'; [ \$? -eq 0 ] &&
		timeout 10 '$NBD_DAEMON' $NBD_OPTS --tcp '$spec' --memory 1M 2>/dev/null; [ \$? -eq 2 ]"
done
tap_check "short options but -h are refused, exit 2" sh -c \
	"timeout 10 '$NBD_DAEMON' -s '$nbd_tmp/short.sock' 2>/dev/null; [ \$? -eq 2 ]"

nbd_start main --memory 16M --sandbox || exit 1
err=$nbd_tmp/main.err
tap_check "the setup report is printed, one line per protection" \
	sh -c "grep -c 'setup: \\(io-flusher flag\\|oom protection\\|memory lock\\|prefault\\):' '$err' | grep -qx 4"
tap_check "the audit of the threads is logged" grep -q "audit: .* threads carry the io-flusher flag" "$err"
# Exactly CAP_IPC_LOCK (bit 14) left, if this shell had it to give, in
# the effective and permitted sets; in the bounding set too where the
# daemon had CAP_SETPCAP (bit 8) to lower it.
# Capabilities are per thread, and a thread keeps what it had when
# another drops them: every thread of the daemon is looked at.
# caps_dropped DESC MIN_THREADS: exactly CAP_IPC_LOCK (bit 14) left, if
# this shell had it to give, in the effective and permitted sets of each
# of at least MIN_THREADS threads; in the bounding set too where the
# daemon had CAP_SETPCAP (bit 8) to lower it.
capset() { sed -n "s/^$1:[[:space:]]*//p" "$2/status"; }
caps_dropped() {
	# Without a capability to give, every thread has none, dropped or
	# not: nothing to tell.
	if ! has_cap 14 && ! has_cap 21 && ! has_cap 8; then
		tap_skip "$1" "this shell holds none of CAP_IPC_LOCK, CAP_SYS_ADMIN, CAP_SETPCAP"
		return
	fi
	want=0000000000000000
	has_cap 14 && want=0000000000004000
	good=1 nthr=0
	for t in /proc/$nbd_pid/task/*; do
		[ -e "$t/status" ] || continue
		nthr=$((nthr + 1))
		if [ "$(capset CapEff "$t")" != $want ] ||
			[ "$(capset CapPrm "$t")" != $want ] ||
			{ has_cap 8 && [ "$(capset CapBnd "$t")" != $want ]; }; then
			good=0
			{ cat "$t/comm"; grep Cap "$t/status"; } | tap_diag
		fi
	done
	if [ $good = 1 ] && [ $nthr -ge "$2" ]; then
		tap_ok "$1 ($nthr threads)"
	else
		tap_not_ok "$1 ($nthr threads, want $2 at least)"
	fi
}
caps_dropped "capabilities dropped after setup, but CAP_IPC_LOCK" 1
tap_check "--sandbox: a seccomp filter is in place" \
	grep -q "^Seccomp:[[:space:]]*2" "/proc/$nbd_pid/status"
tap_check "--sandbox: and it serves" timeout 30 nbdinfo --size "$uri"
# A unix socket's send buffer is raised to 1 MiB (the kernel doubles what
# is asked, up to twice net.core.wmem_max), so that a 256 KiB reply is
# queued whole: the default holds less than one.
want=$((2 * 1048576))
max=$((2 * $(cat /proc/sys/net/core/wmem_max)))
[ "$max" -lt "$want" ] && want=$max
tb=$(python3 -c '
import re, socket, subprocess, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.recv(18)  # the handshake greeting: the server side is set up
out = subprocess.run(["ss", "-xmpH"], capture_output=True, text=True).stdout
for line in out.splitlines():
    # skmem:(r0,rb212992,t0,tb2097152,...): not a "tb" in a path
    m = re.search(r"skmem:\(.*[(,]tb(\d+)[,)]", line)
    if "pid=%s," % sys.argv[2] in line and m:
        print(m.group(1))
' "$nbd_tmp/main.sock" "$nbd_pid" | sort -n | tail -1)
tap_check "unix socket: the send buffer is raised ($tb bytes, want $want)" \
	test "${tb:-0}" -eq "$want"
# Both connected at once, each told the size: a bare wait would return 0
# whatever the clients returned.
if timeout 30 sh -c "nbdinfo --size '$uri' >'$nbd_tmp/c1' & p1=\$!;
	nbdinfo --size '$uri' >'$nbd_tmp/c2' & p2=\$!;
	wait \$p1 && wait \$p2" &&
	[ "$(cat "$nbd_tmp/c1")" = 16777216 ] && [ "$(cat "$nbd_tmp/c2")" = 16777216 ]; then
	tap_ok "two clients at once"
else
	tap_not_ok "two clients at once"
fi
# --socket never takes a path from anyone: not a running server's socket
# (its clients would lose it), nor a file that is not a socket.
timeout 20 "$NBD_DAEMON" $NBD_OPTS --socket "$nbd_tmp/main.sock" --memory 1M \
	>/dev/null 2>"$nbd_tmp/taken.err"
rc=$?
tap_check "--socket on a running server's socket: exit 1, said" \
	sh -c "test $rc -eq 1 && grep -q 'another server listens on it' '$nbd_tmp/taken.err'"
tap_check "... and the running server still serves there" \
	sh -c "test \"\$(timeout 30 nbdinfo --size '$uri')\" = 16777216"
# A server whose backlog is full (it accepts nobody) is a server too: the
# probe of the path must not wait for it, with SIGTERM blocked.
python3 - "$nbd_tmp/full.sock" <<'EOF2' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(0)
c = socket.socket(socket.AF_UNIX)
c.connect(sys.argv[1])  # the backlog of 0 holds this one: it is full
open(sys.argv[1] + ".ready", "w").close()
time.sleep(60)
EOF2
full=$!
nbd_wait 10 test -e "$nbd_tmp/full.sock.ready"
timeout 20 "$NBD_DAEMON" $NBD_OPTS --socket "$nbd_tmp/full.sock" --memory 1M \
	>/dev/null 2>"$nbd_tmp/full.err"
rc=$?
kill $full 2>/dev/null
wait $full 2>/dev/null
tap_check "--socket on a server's socket whose backlog is full: exit 1 at once, said" \
	sh -c "test $rc -eq 1 && grep -q 'another server listens on it' '$nbd_tmp/full.err'"
echo precious >"$nbd_tmp/precious"
timeout 20 "$NBD_DAEMON" $NBD_OPTS --socket "$nbd_tmp/precious" --memory 1M \
	>/dev/null 2>"$nbd_tmp/precious.err"
rc=$?
tap_check "--socket on a regular file: exit 1, said, the file kept" \
	sh -c "test $rc -eq 1 && grep -q 'not a socket' '$nbd_tmp/precious.err' &&
		test \"\$(cat '$nbd_tmp/precious')\" = precious"
nbd_stop "$nbd_pid"
rc=$?
tap_check "SIGTERM: exit 0" test $rc -eq 0
tap_check "SIGTERM: the socket is removed" test ! -e "$nbd_tmp/main.sock"
# The socket of a daemon killed with SIGKILL, nobody listening: replaced.
python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' \
	"$nbd_tmp/stale.sock"
tap_check "--socket on a stale socket (nobody listening): replaced, served" \
	timeout 30 "$NBD_DAEMON" $NBD_OPTS --socket "$nbd_tmp/stale.sock" \
	--memory 1M --run 'nbdinfo --size "$uri" >/dev/null'

# SIGTERM while writes are in flight: what was acknowledged is in the file.
head -c 8M /dev/urandom >"$nbd_tmp/data"
truncate -s 8M "$nbd_tmp/disk.img"
nbd_start file --file "$nbd_tmp/disk.img" || exit 1
# The file backend's workers (4 by default) started after the drop.
caps_dropped "--file: the workers' threads hold no more capabilities either" 5
timeout 30 nbdcopy --connections=2 "$nbd_tmp/data" "$uri"
rc1=$?
nbd_stop "$nbd_pid"
rc=$?
if [ $rc1 -eq 0 ] && [ $rc -eq 0 ]; then
	tap_ok "file backend: SIGTERM after writes: exit 0"
else
	tap_not_ok "file backend: SIGTERM after writes: exit 0"
	echo "nbdcopy exited with $rc1, the daemon with $rc" | tap_diag
	tap_diag <"$nbd_tmp/file.err"
fi
tap_check "file backend: the data is in the file after shutdown" cmp "$nbd_tmp/data" "$nbd_tmp/disk.img"
tap_check "file backend: shut down with a log line" grep -q "signal 15: shutting down" "$nbd_tmp/file.err"

# SIGTERM with clients connected: ESHUTDOWN, NBD_REP_ERR_SHUTDOWN, and a
# hard disconnect of the idle one after the grace period; then exit 0.
nbd_start stop --memory 8M || exit 1
timeout 90 python3 "$srcdir/tests/nbd/nbd-malformed.py" "$nbd_tmp/stop.sock" \
	shutdown "$nbd_pid" >"$nbd_tmp/stop.tap" 2>&1
nbd_client_tap shutdown $? <"$nbd_tmp/stop.tap"
nbd_stop "$nbd_pid"
rc=$?
tap_check "shutdown: then exit 0" test $rc -eq 0
tap_check "shutdown: the hard disconnect is logged" \
	grep -q "1 connection still open after 10 s: disconnecting it" \
	"$nbd_tmp/stop.err"

# A second SIGTERM during the grace period: the idle client is cut off
# then, not after the 10 s.
nbd_start again --memory 8M || exit 1
python3 - "$nbd_tmp/again.sock" "$nbd_tmp/again.ready" <<'EOF2' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.recv(18)  # the greeting, then nothing: an idle client in the handshake
open(sys.argv[2], "w").close()
time.sleep(30)
EOF2
idle=$!
nbd_wait 20 test -e "$nbd_tmp/again.ready"
kill -TERM "$nbd_pid"
# Two SIGTERMs pending at once are one: the second is sent once the first
# has been taken.
nbd_wait 20 grep -q "signal 15: shutting down" "$nbd_tmp/again.err"
nbd_stop "$nbd_pid"
rc=$?
kill "$idle" 2>/dev/null
wait "$idle" 2>/dev/null
tap_check "a second SIGTERM cuts the grace period short, said; exit 0" \
	sh -c "test $rc -eq 0 &&
		grep -q 'signal 15 again: not waiting for the clients' '$nbd_tmp/again.err' &&
		grep -q '1 connection still open after [0-9] s: disconnecting it' '$nbd_tmp/again.err'"

# Captive mode.
URI_OUT=$nbd_tmp/uri timeout 30 "$NBD_DAEMON" $NBD_OPTS --socket "$nbd_tmp/run.sock" \
	--memory 8M --export-name 'a b/c' --run 'echo "$uri" >"$URI_OUT"; exit 7' \
	2>"$nbd_tmp/run.err" && rc=0 || rc=$?
tap_check "--run: exits with the command's status" test $rc -eq 7
tap_check "--run: \$uri names the socket and the escaped export" \
	grep -qx "nbd+unix:///a%20b%2Fc?socket=$nbd_tmp/run.sock" "$nbd_tmp/uri"
out=$(timeout 30 "$NBD_DAEMON" $NBD_OPTS --socket "$nbd_tmp/run2.sock" --memory 3M \
	--export-name x --run 'nbdinfo --size "$uri"' 2>"$nbd_tmp/run2.err")
tap_check "--run: the command is a client of the ready server" test "$out" = 3145728
out=$(timeout 30 "$NBD_DAEMON" $NBD_OPTS --tcp 127.0.0.1:0 --memory 5M \
	--run 'echo "$uri"; nbdinfo --size "$uri"' 2>"$nbd_tmp/tcp.err")
case $out in
nbd://127.0.0.1:[1-9]*/*5242880) tap_ok "--tcp 127.0.0.1:0: \$uri has the port chosen, and serves" ;;
*)
	tap_not_ok "--tcp 127.0.0.1:0: \$uri has the port chosen, and serves"
	printf '%s\n' "$out" | tap_diag
	;;
esac
# The command is forked before the sandbox and the dropping of privileges,
# and sheds the OOM shield: it is not part of the IO path.
timeout 30 "$NBD_DAEMON" $NBD_OPTS --socket "$nbd_tmp/run3.sock" --memory 1M --sandbox \
	--run 'grep -q "^Seccomp:[[:space:]]*0" /proc/self/status && test "$(cat /proc/self/oom_score_adj)" -ge 0' \
	2>/dev/null
tap_check "--run: the command runs outside the daemon's sandbox" test $? -eq 0

# Under systemd's Type=notify: READY=1 once it serves, STOPPING=1 when it
# stops; and the
# command does not see $NOTIFY_SOCKET, so cannot speak for the daemon.
notify=$nbd_tmp/notify.sock
python3 "${top_srcdir:-.}/tests/notify-recv.py" "$notify" "$nbd_tmp/notify.bound" 30 \
	>"$nbd_tmp/notify.got" &
rpid=$!
i=0
while [ ! -e "$nbd_tmp/notify.bound" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
NOTIFY_SOCKET=$notify timeout 30 "$NBD_DAEMON" $NBD_OPTS --socket "$nbd_tmp/notify-run.sock" \
	--memory 1M --run 'echo "NOTIFY_SOCKET=${NOTIFY_SOCKET-unset}"' \
	>"$nbd_tmp/notify.out" 2>"$nbd_tmp/notify.err"
wait $rpid
tap_check "NOTIFY_SOCKET: READY=1 once serving, STOPPING=1 at the stop" \
	test "$(cat "$nbd_tmp/notify.got")" = "$(printf 'READY=1\nSTOPPING=1')"
tap_check "NOTIFY_SOCKET: not in the --run command's environment" \
	grep -qx 'NOTIFY_SOCKET=unset' "$nbd_tmp/notify.out"

# Buffers that cannot be locked (no CAP_IPC_LOCK, RLIMIT_MEMLOCK 0): best
# effort serves from them unlocked, and the library's warning says why.
if [ "${IOFLUSHER_TEST_ASAN:-0}" = 1 ]; then
	# Its mlock() and mlockall() lock nothing and never fail.
	tap_skip "buffers that cannot be locked" "AddressSanitizer intercepts mlock()"
	tap_skip "without CAP_IPC_LOCK, RLIMIT_MEMLOCK 8 MiB" "AddressSanitizer intercepts mlockall()"
elif [ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null; then
	# unlockable KIB SIZE: a daemon without CAP_IPC_LOCK under an
	# RLIMIT_MEMLOCK of KIB serves SIZE to nbdinfo --size.
	unlockable() {
		(ulimit -l "$1" && exec setpriv --bounding-set=-ipc_lock --inh-caps=-ipc_lock \
			"$NBD_DAEMON" $NBD_OPTS --socket "$nbd_tmp/unl.sock" --memory "$2" \
			--run 'nbdinfo --size "$uri"') >"$nbd_tmp/unl.out" 2>"$nbd_tmp/unl.err"
	}
	unlockable 0 1M
	tap_check "buffers that cannot be locked: served, and the warning says why" \
		sh -c "test $? -eq 0 && grep -qx 1048576 '$nbd_tmp/unl.out' &&
			grep -q 'mempool: cannot lock .*RLIMIT_MEMLOCK is 0 bytes.*not locked' '$nbd_tmp/unl.err'"
	# A finite limit that mlockall fits in: MCL_FUTURE would then charge
	# the whole export and every pool to it, and refuse their mappings.
	unlockable 8192 64M
	tap_check "without CAP_IPC_LOCK, RLIMIT_MEMLOCK 8 MiB: 64M served, nothing more locked, said" \
		sh -c "test $? -eq 0 && grep -qx 67108864 '$nbd_tmp/unl.out' &&
			grep -q 'memory lock: applied: .*not MCL_FUTURE: without CAP_IPC_LOCK, RLIMIT_MEMLOCK (8.0 MiB)' '$nbd_tmp/unl.err'"
else
	tap_skip "buffers that cannot be locked" "not root, or no setpriv"
	tap_skip "without CAP_IPC_LOCK, RLIMIT_MEMLOCK 8 MiB" "not root, or no setpriv"
fi

# Limits and bad arguments.
nbd_start lim --memory 1M --max-connections 1 || exit 1
python3 -c '
import socket, sys, time
a = socket.socket(socket.AF_UNIX); a.connect(sys.argv[1]); a.recv(18)
b = socket.socket(socket.AF_UNIX); b.connect(sys.argv[1]); b.settimeout(20)
print("refused" if b.recv(18) == b"" else "accepted")
a.close()
' "$nbd_tmp/lim.sock" >"$nbd_tmp/lim.out" 2>&1
tap_check "--max-connections 1: a second client is refused" grep -qx refused "$nbd_tmp/lim.out"
tap_check "--max-connections 1: and it is logged" grep -q "max-connections reached" "$nbd_tmp/lim.err"
tap_check "--max-connections 1: the first slot is free again" \
	nbd_retry timeout 30 nbdinfo --size "$uri"
nbd_stop "$nbd_pid"
# Each with a socket to listen on, so that only the bad argument can be
# what is refused, and the refusal must name it.
refused() {
	grep -q -- "$1" "$nbd_tmp/bad.err" ||
		{ echo "no \"$1\" in:"; cat "$nbd_tmp/bad.err"; return 1; }
}
# ARGS|WHAT IT SAYS|EXIT STATUS: 2 for what the command line alone tells,
# 1 for what only opening the export finds (after setup).
for bad in "--memory 12X|--memory: not a size|2" "--memory 0|--memory: not a size|2" \
	"--threads 0|--threads takes|2" "--poll 1000001|--poll takes|2" "--poll -1|--poll takes|2" \
	"--tcp 1|--socket and --tcp|2" "--file $nbd_tmp/nonexistent|nonexistent: No such file|1" \
	"--threads +5|--threads takes|2" \
	"--connect /dev/nbd9 --memory 1000|whole number of 512-byte sectors|2"; do
	args=${bad%%|*} want_rc=${bad##*|} said=${bad#*|}
	said=${said%|*}
	# shellcheck disable=SC2086
	timeout 20 "$NBD_DAEMON" $NBD_OPTS --socket "$nbd_tmp/bad.sock" $args \
		>/dev/null 2>"$nbd_tmp/bad.err"
	rc=$?
	tap_check "refused: $args: exit $want_rc" test $rc -eq "$want_rc"
	tap_check "refused: $args: and says so" refused "$said"
done
timeout 20 "$NBD_DAEMON" $NBD_OPTS --socket '' >/dev/null 2>"$nbd_tmp/empty.err"
rc=$?
tap_check "refused: --socket '', exit 2, saying it takes a path" \
	sh -c "test $rc -eq 2 && grep -q 'takes a path' '$nbd_tmp/empty.err'"
# With --connect, a --file that is not whole sectors is known before
# setup, as a --memory size is: exit 2, and nothing set up.  (It comes
# before the device is opened: no nbd module needed.)
head -c 1000 /dev/zero >"$nbd_tmp/odd.img"
timeout 20 "$NBD_DAEMON" $NBD_OPTS --connect /dev/nbd0 --file "$nbd_tmp/odd.img" \
	>/dev/null 2>"$nbd_tmp/odd.err"
rc=$?
tap_check "refused: --connect, a 1000-byte --file: exit 2 before setup, saying so" \
	sh -c "test $rc -eq 2 &&
		grep -q 'odd.img: .* 1000 bytes are not a whole number of 512-byte sectors' '$nbd_tmp/odd.err' &&
		! grep -q 'setup:' '$nbd_tmp/odd.err'"
# An empty one too: the kernel's device would never get a size.
: >"$nbd_tmp/empty.img"
timeout 20 "$NBD_DAEMON" $NBD_OPTS --connect /dev/nbd0 --file "$nbd_tmp/empty.img" \
	>/dev/null 2>"$nbd_tmp/empty.err"
rc=$?
tap_check "refused: --connect, an empty --file: exit 2 before setup, saying so" \
	sh -c "test $rc -eq 2 && grep -q 'empty.img: an empty file' '$nbd_tmp/empty.err' &&
		! grep -q 'setup:' '$nbd_tmp/empty.err'"
# Names on the wire are UTF-8 (proto.md, Conventions): a byte 0xff, an
# overlong NUL and a lone surrogate are refused before anything is served.
for name in 'a\377b|a byte 0xff' '\300\200|an overlong NUL' \
	'\355\240\200|a surrogate'; do
	timeout 20 "$NBD_DAEMON" $NBD_OPTS --socket "$nbd_tmp/name.sock" --memory 1M \
		--export-name "$(printf "${name%|*}")" >/dev/null 2>"$nbd_tmp/name.err"
	rc=$?
	tap_check "refused: an --export-name with ${name#*|}, not UTF-8: exit 2, saying so" \
		sh -c "test $rc -eq 2 && grep -q 'not UTF-8' '$nbd_tmp/name.err'"
done
out=$(timeout 30 "$NBD_DAEMON" $NBD_OPTS --socket "$nbd_tmp/name.sock" --memory 1M \
	--export-name "$(printf 'd\303\251j\303\240 \360\237\222\276')" \
	--run 'nbdinfo --list "$uri"' 2>"$nbd_tmp/name.err")
tap_check "--export-name of UTF-8 beyond ASCII: served, listed as given" \
	sh -c 'printf "%s\n" "$1" | grep -q "^export=\"$2\":"' sh "$out" \
	"$(printf 'd\303\251j\303\240 \360\237\222\276')"
# A port getaddrinfo() would wrap (99999 is 34463) or take as 0.
for port in 99999 65536 127.0.0.1: x1; do
	timeout 20 "$NBD_DAEMON" $NBD_OPTS --tcp "$port" >/dev/null 2>"$nbd_tmp/port.err"
	rc=$?
	tap_check "refused: --tcp '$port', exit 2, saying the range" \
		sh -c "test $rc -eq 2 && grep -q '0 to 65535' '$nbd_tmp/port.err'"
done
# A memory export is RAM, and the daemon is shielded from the OOM killer:
# one larger than the machine's memory is refused.
timeout 20 "$NBD_DAEMON" $NBD_OPTS --socket "$nbd_tmp/big.sock" --memory 64T \
	>/dev/null 2>"$nbd_tmp/big.err"
rc=$?
tap_check "refused: --memory 64T, more than MemTotal, saying so" \
	sh -c "test $rc -eq 1 && grep -q MemTotal '$nbd_tmp/big.err'"
if [ -e /dev/nbd0 ]; then
	tap_skip "--connect to a missing device fails cleanly" "/dev/nbd0 exists here"
else
	timeout 20 "$NBD_DAEMON" $NBD_OPTS --connect /dev/nbd0 --memory 1M >/dev/null 2>"$nbd_tmp/c.err"
	rc=$?
	tap_check "--connect without nbd.ko fails cleanly, naming the device" \
		sh -c "test $rc -eq 1 && grep -q /dev/nbd0 '$nbd_tmp/c.err'"
fi
# Out of descriptors (RLIMIT_NOFILE 16, 24 clients holding theirs): the
# daemon says so, waits, and takes clients again once they leave.  (Said
# again only after a client was taken in between: once here, or more
# when the leaving clients' descriptors are freed one by one.)
(ulimit -n 16 && exec "$NBD_DAEMON" $NBD_OPTS --socket "$nbd_tmp/fd.sock" \
	--memory 1M) >/dev/null 2>"$nbd_tmp/fd.err" &
fdd=$!
nbd_pids="$nbd_pids $fdd"
nbd_wait 10 test -S "$nbd_tmp/fd.sock"
python3 - "$nbd_tmp/fd.sock" "$nbd_tmp/fd.err" <<'EOF2'
import socket, sys, time
held = []
for _ in range(24):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    held.append(s)
# Held until the daemon has said it is out of descriptors (20 s at most).
for _ in range(200):
    with open(sys.argv[2]) as f:
        if "cannot take a client" in f.read():
            break
    time.sleep(0.1)
EOF2
tap_check "out of descriptors: said, then clients are taken again" \
	nbd_retry sh -c "test \"\$(timeout 30 nbdinfo --size 'nbd+unix:///?socket=$nbd_tmp/fd.sock')\" = 1048576 &&
		grep -q 'cannot take a client: Too many open files' '$nbd_tmp/fd.err'"
nbd_stop "$fdd"

# sleep_seen N: yes once a process "sleep N" runs (10 s at most), else no:
# a check that it ended would pass on nothing if it never started.
sleep_seen() {
	i=0
	while ! pgrep -f "^sleep $1\$" >/dev/null && [ $i -lt 100 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	if pgrep -f "^sleep $1\$" >/dev/null; then echo yes; else echo no; fi
}
# sleep_gone N: no "sleep N" runs, within 5 s.
sleep_gone() { nbd_retry sh -c "! pgrep -f '^sleep $1\$' >/dev/null"; }
# seen_then_gone SEEN N: sleep_seen said yes, and then sleep N ended.
seen_then_gone() { [ "$1" = yes ] && sleep_gone "$2"; }

# The daemon stopped while --run's command runs: the command's children
# end too, not only its shell.
marker=$((3000 + $$ % 1000))
"$NBD_DAEMON" $NBD_OPTS --socket "$nbd_tmp/grp.sock" --memory 1M \
	--run "sleep $marker; echo after" >"$nbd_tmp/grp.out" 2>&1 &
grp=$!
started=$(sleep_seen $marker)
kill -TERM $grp
wait $grp
grp_rc=$?
if [ $started = no ]; then
	tap_not_ok "SIGTERM during --run: the command's children end too (its sleep never seen running)"
elif ! sleep_gone $marker; then
	tap_not_ok "SIGTERM during --run: the command's children end too"
	pkill -f "^sleep $marker\$"
else
	tap_ok "SIGTERM during --run: the command's children end too"
fi
# A command cut short is no success: its status (SIGTERM: 143) is the
# daemon's.
tap_check "SIGTERM during --run: the daemon exits with the command's 143" \
	sh -c "test $grp_rc -eq 143 && ! grep -qx after '$nbd_tmp/grp.out'"
# And it is told at once: a command that holds a connection open (in its
# handshake, so that the shutdown cannot refuse it anything) would
# otherwise keep the daemon for the 10 s grace period.  Not a stopwatch:
# the daemon says when the grace ran out ("still open after"), and when
# the command outlived SIGTERM; neither may be in its log, which must
# show the shutdown, so that an empty log cannot pass.
HOLD=$nbd_tmp/held "$NBD_DAEMON" $NBD_OPTS --socket "$nbd_tmp/hold.sock" --memory 1M --run '
	exec python3 -c "
import os, socket, time
s = socket.socket(socket.AF_UNIX)
s.connect(os.environ[\"uri\"].split(\"socket=\")[1])
s.recv(18)
open(os.environ[\"HOLD\"], \"w\").close()
time.sleep(60)"' >/dev/null 2>"$nbd_tmp/hold.err" &
hd=$!
nbd_wait 10 test -e "$nbd_tmp/held"
kill -TERM $hd
wait $hd
hold_rc=$?
tap_check "SIGTERM during --run: the command is told at once, not after the grace" \
	sh -c "test -e '$nbd_tmp/held' && test $hold_rc -eq 143 &&
		grep -q 'signal 15: shutting down' '$nbd_tmp/hold.err' &&
		! grep -q -e 'still open after' -e 'outlived SIGTERM' '$nbd_tmp/hold.err' ||
		{ echo 'exit $hold_rc'; cat '$nbd_tmp/hold.err'; false; }"

# SIGHUP (a closed terminal) stops it as SIGTERM does: exit 0, the socket
# removed.
nbd_start hup --memory 1M || exit 1
kill -HUP "$nbd_pid"
nbd_stop "$nbd_pid"
tap_check "SIGHUP: a clean shutdown, exit 0, the socket removed" \
	sh -c "test $? -eq 0 && ! test -e '$nbd_tmp/hup.sock' &&
		grep -q 'signal 1: shutting down' '$nbd_tmp/hup.err'"

# A stop as soon as the socket is there (a service manager's, right after
# the start): the daemon is held 2 s in the rename(2) that puts its socket
# in place (strace's delay injection), and a SIGTERM sent then must be a
# clean shutdown too, not a death that leaves the socket behind.
# ptrace may be refused (a container's seccomp profile, Yama, a tracer
# already there): then strace cannot hold anything, and the check skips.
if command -v strace >/dev/null && strace -qq -o /dev/null true 2>/dev/null; then
	early=$nbd_tmp/early.sock
	# LeakSanitizer cannot run under ptrace: its check at exit would
	# fail the daemon.
	# shellcheck disable=SC2086
	ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
		timeout 60 strace -qq -o /dev/null -e trace=rename,renameat,renameat2 \
		-e inject=rename,renameat,renameat2:delay_exit=2000000 \
		"$NBD_DAEMON" $NBD_OPTS --socket "$early" --memory 1M \
		>/dev/null 2>"$nbd_tmp/early.err" &
	st=$!
	nbd_pids="$nbd_pids $st"
	nbd_wait 10 test -S "$early"
	# timeout's child is strace, whose child is the daemon (through
	# libtool's wrapper, which execs it).
	early_pid=$(pgrep -P "$(pgrep -P $st)")
	[ -n "$early_pid" ] && nbd_pids="$nbd_pids $early_pid"
	[ -n "$early_pid" ] && kill -TERM "$early_pid"
	wait $st
	early_rc=$?
	tap_check "SIGTERM as soon as the socket appears: a clean shutdown, exit 0, the socket removed" \
		sh -c "test -n '$early_pid' && test $early_rc -eq 0 &&
			! test -e '$early' &&
			grep -q 'signal 15: shutting down' '$nbd_tmp/early.err' ||
			{ echo 'exit $early_rc'; cat '$nbd_tmp/early.err'; false; }"
else
	tap_skip "SIGTERM as soon as the socket appears" "no strace, or ptrace refused"
fi

# Killed outright, the daemon takes the command's shell with it
# (PR_SET_PDEATHSIG); here the shell is the sleep itself (exec).
marker2=$((marker + 1000))
"$NBD_DAEMON" $NBD_OPTS --socket "$nbd_tmp/kill.sock" --memory 1M \
	--run "exec sleep $marker2" >/dev/null 2>&1 &
kd=$!
started=$(sleep_seen $marker2)
kill -9 $kd
wait $kd 2>/dev/null
tap_check "kill -9 of the daemon: the --run command gets SIGTERM" \
	seen_then_gone "$started" $marker2
pkill -f "^sleep $marker2\$"

# On a terminal (script(1) gives it one) the command stays in the daemon's
# foreground process group, so an interactive one can read it; and no uri
# or nbd from the daemon's own environment.
if command -v script >/dev/null; then
	printf 'hello\n' | nbd=stale timeout 30 script -qec \
		"'$NBD_DAEMON' $NBD_OPTS --socket '$nbd_tmp/tty.sock' --memory 1M --run 'read x; echo \"got \$x, nbd=\$nbd.\"' 2>/dev/null" \
		/dev/null >"$nbd_tmp/tty.out" 2>&1
	tap_check "--run on a terminal: the command reads it, and no stale nbd" \
		grep -q 'got hello, nbd=\.' "$nbd_tmp/tty.out"
else
	tap_skip "--run on a terminal" "no script(1)"
fi
tap_plan "$tap_n"
nbd_done
