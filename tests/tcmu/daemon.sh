#!/bin/sh
# ioflusher-tcmu as a whole, on the host: options, start-up (the report,
# the audit, capabilities dropped) and device discovery, over a sysfs,
# configfs and /dev laid out in a directory (--root).  The fake /dev/uio0
# is a regular file: mapped like map0, each 4-byte read() of it a
# notification, and its end (read() returning 0) ends the ring thread as
# a removed device's would.  The daemon's 4-byte write
# lands at the start of the file, over the mailbox: each run gets a new
# one.
set -u
builddir=${top_builddir:-.}
daemon="$builddir/examples/tcmu/ioflusher-tcmu"
tmp=$(mktemp -d /tmp/tcmu-daemon-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
n=0
echo "1..25"

ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() {
	n=$((n + 1))
	echo "not ok $n - $1"
	sed 's/^/# /' "$tmp/out"
}
check() { if [ "$2" -eq 0 ]; then ok "$1"; else not_ok "$1"; fi; }
has() { grep -q -- "$1" "$tmp/out"; }

# A TCMU device as a 6.1 kernel shows it: the uio name, map0's size, the
# configfs attributes; map0 starts with a mailbox (version 2, the ring at
# 128, 65408 bytes long) and has a 256 KiB data area after the ring.
device() { # N DEV CONFIG [VERSION]
	d="$tmp/root/sys/class/uio/uio$1"
	c="$tmp/root/sys/kernel/config/target/core/user_0/$2/attrib"
	mkdir -p "$d/maps/map0" "$c" "$tmp/root/dev"
	echo "tcm-user/0/$2/ioflusher/$3" >"$d/name"
	echo 0x50000 >"$d/maps/map0/size"
	echo 512 >"$c/hw_block_size"
	echo 16777216 >"$c/dev_size"
	printf "\\${4:-002}\\000\\000\\000\\200\\000\\000\\000\\200\\377\\000\\000" \
		>"$tmp/root/dev/uio$1"
	truncate -s 327680 "$tmp/root/dev/uio$1"
}

"$daemon" --help >"$tmp/out" 2>&1
check "--help exits 0 and names the options" \
	"$([ $? -eq 0 ] && has --best-effort && has --handler; echo $?)"

"$daemon" --version >"$tmp/out" 2>&1
check "--version: the release's, $PACKAGE_VERSION" \
	"$(grep -qx "ioflusher-tcmu ${PACKAGE_VERSION:-?}" "$tmp/out"; echo $?)"

if [ -w /dev/full ]; then
	full=0
	for o in --help --version; do
		"$daemon" $o >/dev/full 2>"$tmp/out"
		[ $? -eq 1 ] && has "cannot write the standard output" || full=1
	done
	check "--help and --version to a full disk: exit 1, said" $full
else
	ok "--help and --version to a full disk # SKIP no /dev/full"
fi

"$daemon" --bogus >"$tmp/out" 2>&1
check "an unknown option exits 2" "$([ $? -eq 2 ]; echo $?)"

r=0
for v in +5 ' 7' '' 5x 1000001; do
	"$daemon" --poll "$v" >"$tmp/out" 2>&1
	if [ $? -ne 2 ] || ! has '^--poll takes 0 to 1000000$'; then r=1; fi
done
check "--poll takes digits only: +5, ' 7', '', 5x and 1000001 exit 2" $r

mkdir -p "$tmp/root"
"$daemon" --best-effort --root "$tmp/root" >"$tmp/out" 2>&1
check "no UIO at all: exit 1, and the module to load" \
	"$([ $? -eq 1 ] && has "$tmp/root/sys/class/uio is missing" &&
		has 'modprobe target_core_user'; echo $?)"

mkdir -p "$tmp/root/sys/class/uio"
"$daemon" --best-effort --root "$tmp/root" >"$tmp/out" 2>&1
check "no device: exit 1, and what to write to configfs" \
	"$([ $? -eq 1 ] && has 'no TCMU device for handler "ioflusher"' &&
		has dev_config=ioflusher/mem; echo $?)"

# Production default: the io-flusher flag is required.
eff=$(sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status)
if [ $((0x$eff >> 24 & 1)) -eq 1 ]; then
	ok "the flag is required by default # SKIP CAP_SYS_RESOURCE is held"
	ok "the report comes before the error # SKIP CAP_SYS_RESOURCE is held"
else
	"$daemon" --root "$tmp/root" >"$tmp/out" 2>&1
	check "the flag is required by default: without CAP_SYS_RESOURCE, exit 4" \
		"$([ $? -eq 4 ] && has 'setup failed' &&
			has 'io-flusher flag: unavailable'; echo $?)"
	# stdout to a file, as to the journal: the report (stdout) comes
	# before the error on stderr that refers to it.
	check "the report comes before the error that refers to it" \
		"$(tail -n 1 "$tmp/out" | grep -q 'setup failed'; echo $?)"
fi

device 0 disk0 mem
"$daemon" --best-effort --verbose --root "$tmp/root" >"$tmp/out" 2>&1
check "serves a memory device: the report, the device, the audit, the end" \
	"$([ $? -eq 0 ] && has '^setup: io-flusher flag' &&
		has '^setup: memory lock' &&
		has '^device: tcm-user/0/disk0/ioflusher/mem on /dev/uio0: mem backend, 32768 blocks of 512 bytes' &&
		has '^audit: ' && has '^serving: ' && has 'device removed' &&
		has '^stats: tcm-user/0/disk0/ioflusher/mem: 0 commands'; echo $?)"

device 0 disk0 mem
"$daemon" --best-effort --sandbox --root "$tmp/root" >"$tmp/out" 2>&1
check "--sandbox: serves under the filter" \
	"$([ $? -eq 0 ] && has '^serving: ' && has 'device removed'; echo $?)"

# Under systemd's Type=notify: READY=1 once it serves, STOPPING=1 when it
# stops (here because its device is removed).
if ! command -v python3 >/dev/null 2>&1; then
	ok "NOTIFY_SOCKET # SKIP no python3"
else
device 0 disk0 mem
python3 "${top_srcdir:-.}/tests/notify-recv.py" "$tmp/notify.sock" "$tmp/bound" 20 \
	>"$tmp/got" &
rpid=$!
i=0
while [ ! -e "$tmp/bound" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
NOTIFY_SOCKET=$tmp/notify.sock "$daemon" --best-effort --sandbox --root "$tmp/root" \
	>"$tmp/out" 2>&1
rc=$?
wait $rpid
check "NOTIFY_SOCKET: READY=1 once serving, under the sandbox, STOPPING=1 at the end" \
	"$([ $rc -eq 0 ] && has '^serving: ' &&
		[ "$(cat "$tmp/got")" = "$(printf 'READY=1\nSTOPPING=1')" ]; echo $?)"
fi

# A sandbox asked for and not there (seccomp(2) failing, as where a
# filter already forbids it) is no sandbox: the daemon must not serve.
device 0 disk0 mem
"$builddir/tests/failsys" seccomp=EINVAL \
	"$daemon" --best-effort --sandbox --root "$tmp/root" >"$tmp/out" 2>&1
check "--sandbox that cannot be installed: exit 4, said, nothing served" \
	"$([ $? -eq 4 ] && has '^--sandbox: ' && ! has '^serving: '; echo $?)"

# A ring thread that fails (its poll(2) refused) stops the daemon at once,
# exit 1 and why, rather than leave the device unserved while it runs on.
device 0 disk0 mem
timeout 30 "$builddir/tests/failsys" poll=ENOMEM \
	"$daemon" --best-effort --root "$tmp/root" >"$tmp/out" 2>&1
check "a ring thread that fails stops the daemon: exit 1, and why, once" \
	"$([ $? -eq 1 ] && has 'ring thread failed: Cannot allocate memory' &&
		[ "$(grep -c 'Cannot allocate memory' "$tmp/out")" -eq 1 ]; echo $?)"

# One daemon per device: one that finds the device held (flock(1) holds
# it here, as a first daemon would) says so and exits 1.
if command -v flock >/dev/null; then
	device 0 disk0 mem
	flock -x "$tmp/root/dev/uio0" \
		"$daemon" --best-effort --root "$tmp/root" >"$tmp/out" 2>&1
	check "a device another process holds: exit 1, and why" \
		"$([ $? -eq 1 ] && has '/dev/uio0: .*another process serves it'; echo $?)"
else
	ok "a device another process holds # SKIP no flock(1)"
fi

# A device without a size (dev_size= never written): said so.
device 0 disk0 mem
echo 0 >"$tmp/root/sys/kernel/config/target/core/user_0/disk0/attrib/dev_size"
"$daemon" --best-effort --root "$tmp/root" >"$tmp/out" 2>&1
check "a device of size 0: exit 1, and dev_size= named" \
	"$([ $? -eq 1 ] && has 'write dev_size= to its control file'; echo $?)"

# More devices than it serves: it says so, and serves as many as it can.
for i in $(seq 0 64); do device "$i" "many$i" mem; done
"$daemon" --best-effort --root "$tmp/root" >"$tmp/out" 2>&1
check "more than 64 devices: 64 served, and the rest said to be left out" \
	"$([ $? -eq 0 ] && has 'more than 64 devices: only 64 of them are served' &&
		has '^serving: pid [0-9]*, 64 devices'; echo $?)"
rm -rf "$tmp/root"
device 0 disk0 mem

# A device of ours being removed (its configfs directory already gone)
# is skipped, and the others served.
device 0 disk0 mem
device 1 gone mem
rm -rf "$tmp/root/sys/kernel/config/target/core/user_0/gone"
"$daemon" --best-effort --root "$tmp/root" >"$tmp/out" 2>&1
check "a device whose sizes cannot be read is skipped, the others served" \
	"$([ $? -eq 0 ] && has '^tcm-user/0/gone/ioflusher/mem on /dev/uio1: skipped' &&
		has '^device: tcm-user/0/disk0/ioflusher/mem on /dev/uio0' &&
		has 'device removed'; echo $?)"
rm -rf "$tmp/root/sys/class/uio/uio1"

# Without CAP_IPC_LOCK, mlockall(MCL_FUTURE) would charge map0, the memory
# backend and the ring threads' stacks to RLIMIT_MEMLOCK, and their mmap
# would fail (EAGAIN).  setpriv takes CAP_IPC_LOCK out of root's bounding
# set, so the daemon runs without it.
drop=
if [ $((0x$eff >> 14 & 1)) -eq 1 ]; then
	drop=$(command -v setpriv) && drop="$drop --bounding-set=-ipc_lock"
fi
if [ $((0x$eff >> 14 & 1)) -eq 1 ] && [ -z "$drop" ]; then
	ok "without CAP_IPC_LOCK # SKIP CAP_IPC_LOCK is held and setpriv is missing"
elif ! (ulimit -l 8192) 2>/dev/null; then
	ok "without CAP_IPC_LOCK # SKIP RLIMIT_MEMLOCK cannot be raised to 8 MiB (hard limit $(ulimit -H -l))"
else
	# The limit is the test's, not whatever this shell was given: 8 MiB,
	# which what the daemon maps at start-up fits in, so that a lock
	# refused is a failure, not a skip.
	device 0 disk0 mem
	(ulimit -l 8192 && exec $drop "$daemon" --best-effort --root "$tmp/root") \
		>"$tmp/out" 2>&1
	check "without CAP_IPC_LOCK, RLIMIT_MEMLOCK 8 MiB: memory locked at start-up stays, the devices are served" \
		"$([ $? -eq 0 ] && has '^setup: memory lock: applied: .*not MCL_FUTURE: without CAP_IPC_LOCK, RLIMIT_MEMLOCK (8.0 MiB)' &&
			has '^device: tcm-user/0/disk0' && has 'device removed'; echo $?)"
fi

# And with RLIMIT_MEMLOCK 0 nothing can be locked: the command pool is
# used unlocked (best effort), and the library's warning says why.
if [ "${IOFLUSHER_TEST_ASAN:-0}" = 1 ]; then
	ok "nothing lockable # SKIP AddressSanitizer intercepts mlock()"
elif [ $((0x$eff >> 14 & 1)) -eq 1 ] && [ -z "$drop" ]; then
	ok "nothing lockable # SKIP CAP_IPC_LOCK is held and setpriv is missing"
else
	device 0 disk0 mem
	(ulimit -l 0 && exec $drop "$daemon" --best-effort --root "$tmp/root") \
		>"$tmp/out" 2>&1
	check "nothing lockable: served, and the pool's warning says why" \
		"$([ $? -eq 0 ] && has '^device: tcm-user/0/disk0' &&
			has 'mempool: cannot lock .*RLIMIT_MEMLOCK is 0 bytes.*not locked'; echo $?)"
fi

# Without CAP_SETPCAP the bounding set cannot be dropped: said, and it
# serves all the same.  As root, setpriv takes CAP_SETPCAP out of the
# bounding set, so the daemon runs without it.
nopcap=
if [ $((0x$eff >> 8 & 1)) -eq 1 ]; then
	device 0 disk0 mem
	"$daemon" --best-effort --root "$tmp/root" >"$tmp/out" 2>&1
	check "with CAP_SETPCAP: no word of a bounding set kept" \
		"$([ $? -eq 0 ] && has 'device removed' &&
			! has 'no CAP_SETPCAP'; echo $?)"
	nopcap=$(command -v setpriv) && nopcap="$nopcap --bounding-set=-setpcap"
else
	ok "with CAP_SETPCAP: no word of a bounding set kept # SKIP CAP_SETPCAP is not held"
fi
if [ $((0x$eff >> 8 & 1)) -eq 1 ] && [ -z "$nopcap" ]; then
	ok "without CAP_SETPCAP # SKIP CAP_SETPCAP is held and setpriv is missing"
else
	device 0 disk0 mem
	$nopcap "$daemon" --best-effort --root "$tmp/root" >"$tmp/out" 2>&1
	check "without CAP_SETPCAP: the bounding set kept is said, and it serves" \
		"$([ $? -eq 0 ] &&
			has '^capabilities: no CAP_SETPCAP, the bounding set stays as it is$' &&
			has 'device removed'; echo $?)"
fi

rm -rf "$tmp/root"
device 0 disk1 "file/$tmp/lun.img"
"$daemon" --best-effort --root "$tmp/root" >"$tmp/out" 2>&1
check "serves a file device, made at the device's size" \
	"$([ $? -eq 0 ] && has 'file backend' &&
		[ "$(stat -c %s "$tmp/lun.img")" -eq 16777216 ]; echo $?)"

rm -rf "$tmp/root"
device 0 disk2 mem 001
"$daemon" --best-effort --root "$tmp/root" >"$tmp/out" 2>&1
check "a mailbox of another version is refused" \
	"$([ $? -eq 1 ] && has 'command ring: Protocol not supported' &&
		has 'another version'; echo $?)"

# map0 says 320 KiB, the ring 64 KiB, and the pages behind them are not
# there: attaching reads the ring under the SIGBUS guard, so the device
# is refused and the daemon lives to say so.
rm -rf "$tmp/root"
device 0 disk3 mem
truncate -s 4096 "$tmp/root/dev/uio0"
"$daemon" --best-effort --root "$tmp/root" >"$tmp/out" 2>&1
check "a ring whose pages are missing is refused, not a SIGBUS" \
	"$([ $? -eq 1 ] && has 'command ring: Invalid argument: ' &&
		has 'cannot be read whole'; echo $?)"
