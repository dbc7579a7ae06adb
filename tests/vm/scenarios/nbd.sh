#!/bin/sh
# NBD: ioflusher-nbd --connect serves /dev/nbd0 with ext4 on it, flagged.
#
# The loopback the io-flusher flag exists for: a filesystem on /dev/nbd0,
# written back through a daemon of this same machine (kernel mode, as
# qemu-nbd -c: NBD_SET_SOCK and NBD_DO_IT on a socketpair).  The daemon
# runs as root with every capability, so the flag is required (no
# --best-effort): its report must say that every protection applied, and
# its audit and ioflusher status that every thread carries the flag.
#
# Memory backend: mkfs.ext4, mount, write, sync, umount, then mount again
# with the caches dropped and verify what the daemon gives back; e2fsck.
# A memory export dies with its daemon, so disconnect and reconnect are
# shown with the file backend (on the VM's tmpfs): mkfs, mount, write,
# sync, umount, disconnect (SIGTERM), reconnect (a new daemon), mount,
# verify; then what was written and synced before a kill -9 of the daemon
# is there after a restart.
#
# ext4 asks for the crc32c hash by its alias, which names no module file.
# vm-modules: @nbd ext4 crc32c_generic
# vm-binaries: examples/nbd/ioflusher-nbd tools/ioflusher mkfs.ext4 e2fsck
# vm-memory: 512
# vm-timeout: 120
. /vm/lib.sh

mnt=/mnt/nbd
img=/tmp/disk.img
size=64M
sectors=131072 # 64 MiB in 512-byte sectors: /sys/block/nbd0/size
mkdir -p "$mnt"

# nbd_start LOG ARGS...: ioflusher-nbd --connect /dev/nbd0 ARGS in the
# background, its output in LOG; waits until it says it serves and the
# kernel has sized the device.  Sets $pid.
nbd_start() {
	_nlog=$1
	shift
	vm_daemon_start "$_nlog" \
		"grep -q ': serving ' '$_nlog' && [ \"\$(cat /sys/block/nbd0/size)\" != 0 ]" \
		ioflusher-nbd --connect "$dev" "$@"
}

# nbd_stop: SIGTERM; the daemon disconnects the device and exits.
nbd_stop() { vm_daemon_stop; }

# The protections the daemon applied, from its own words and from
# ioflusher status: tests for daemon LOG, named by DESC.
check_protected() {
	_log=$1 _desc=$2
	# One line per protection: flag, OOM, memory lock, prefault.
	if [ "$(grep -c ': setup: .*: applied' "$_log")" = 4 ] &&
		! grep ': setup: ' "$_log" | grep -qv ': applied'; then
		vm_ok "$_desc: its start-up report says every protection applied"
	else
		vm_not_ok "$_desc: its start-up report says every protection applied"
		grep ': setup' "$_log" | vm_diag_lines
	fi
	# "audit: N of N threads carry the io-flusher flag": at least the
	# main thread, the kernel's connection and the one in NBD_DO_IT.
	_n=$(sed -n 's/.*: audit: \([0-9]*\) of \1 threads carry the io-flusher flag$/\1/p' "$_log")
	if [ -n "$_n" ] && [ "$_n" -ge 3 ] && ! grep -q MISSING "$_log"; then
		vm_ok "$_desc: its audit says all $_n threads carry the flag"
		_t=$(sed -n 's/.*: audit: *[0-9]* \([^ ]*\) *flagged$/\1/p' "$_log")
		vm_diag "$_desc: flagged:" $_t # one line
	else
		vm_not_ok "$_desc: its audit says every thread carries the flag"
		grep ': audit' "$_log" | vm_diag_lines
	fi
	vm_check "$_desc: ioflusher status $pid: every thread carries the flag" \
		status_flagged "$pid"
	vm_check "$2: every thread kept CAP_IPC_LOCK and CAP_SYS_ADMIN only" \
		caps_kept "$pid"
}

# caps_kept PID: every thread has CAP_IPC_LOCK (bit 14) and CAP_SYS_ADMIN
# (21, for --connect) and nothing else (vm_caps_only): a thread started
# before the drop would keep them all.
caps_kept() { vm_caps_only "$1" 0000000000204000; }

# status_flagged PID: ioflusher(1)'s verdict on PID's threads, printed.
status_flagged() {
	ioflusher status "$1" >/tmp/status 2>&1
	_rc=$?
	cat /tmp/status
	[ "$_rc" = 0 ] &&
		grep -qx 'verdict: *every thread carries the flag' /tmp/status
}

# refused STATUS LOG: a daemon exited 1, and said the device is busy.
refused() {
	cat "$2"
	[ "$1" = 1 ] && grep -q 'Device or resource busy' "$2"
}

# still_serving PREFIX: the daemon $pid runs, the device keeps its size,
# and a file written on it is synced.
still_serving() {
	vm_alive "$pid" && vm_write_files "$mnt" "$1" 1 &&
		[ "$(cat /sys/block/nbd0/size)" = "$sectors" ]
}

if dev=$(vm_nbd_device 0); then
	vm_ok "nbd.ko loads and makes $dev, a block device"
else
	vm_not_ok "nbd.ko loads and makes /dev/nbd0, a block device"
	ls -l /dev | vm_diag_lines
	vm_exit
fi
vm_check "/dev/nbd0 is empty until a server connects" \
	test "$(cat /sys/block/nbd0/size 2>&1)" = 0

# ------------------------------------------------------------ memory

if ! nbd_start /tmp/mem.log --memory "$size"; then
	vm_not_ok "ioflusher-nbd --connect $dev --memory $size serves the device"
	vm_exit
fi
vm_check "ioflusher-nbd --connect $dev --memory $size serves $size" \
	test "$(cat /sys/block/nbd0/size)" = "$sectors"
check_protected /tmp/mem.log memory
vm_check "$dev has 512-byte sectors, logical and physical" \
	test "$(cat /sys/block/nbd0/queue/logical_block_size)/$(cat /sys/block/nbd0/queue/physical_block_size)" = 512/512
# 1 KiB blocks: a file system that 4096-byte sectors could not hold.
vm_check "memory: mkfs.ext4 -b 1024 on $dev" mkfs.ext4 -q -F -b 1024 "$dev"
vm_check "memory: mount" mount -t ext4 "$dev" "$mnt"
: >/tmp/sums
vm_check "memory: write 8 files of 1 MiB, sync" vm_write_files "$mnt" m 8
# A mistake an operator makes: a second server for a device in use.  It
# must be refused before it touches the device, and the first serve on.
ioflusher-nbd --connect "$dev" --memory 32M 2>/tmp/second.log
vm_check "memory: a second daemon on the busy $dev is refused (EBUSY)" \
	refused $? /tmp/second.log
vm_check "memory: and the first serves on: write, sync, size $size" \
	still_serving m2
vm_check "memory: umount" umount "$mnt"
vm_check "memory: e2fsck finds the filesystem clean" e2fsck -fn "$dev"
vm_check "memory: mount again, every checksum matches" vm_remount_verify "$dev" "$mnt"
nbd_stop
vm_check "memory: SIGTERM disconnects the device, exit status 0" test $? = 0
vm_check "memory: /dev/nbd0 is empty again" \
	test "$(cat /sys/block/nbd0/size)" = 0

# ------------------------------------------------------------ file

dd if=/dev/zero of="$img" bs=1M count=0 seek=64 2>/dev/null
: >/tmp/sums
if ! nbd_start /tmp/file.log --file "$img"; then
	vm_not_ok "ioflusher-nbd --connect $dev --file $img serves the device"
	vm_exit
fi
vm_check "ioflusher-nbd --connect $dev --file (64 MiB) serves $size" \
	test "$(cat /sys/block/nbd0/size)" = "$sectors"
check_protected /tmp/file.log file
vm_check "file: mkfs.ext4 on $dev" mkfs.ext4 -q -F "$dev"
vm_check "file: mount" mount -t ext4 "$dev" "$mnt"
vm_check "file: write 8 files of 1 MiB, sync" vm_write_files "$mnt" f 8
vm_check "file: umount" umount "$mnt"
nbd_stop
vm_check "file: SIGTERM disconnects the device, exit status 0" test $? = 0
vm_check "file: /dev/nbd0 is empty again" \
	test "$(cat /sys/block/nbd0/size)" = 0
if nbd_start /tmp/file2.log --file "$img"; then
	vm_ok "file: a new daemon reconnects $dev"
else
	vm_not_ok "file: a new daemon reconnects $dev"
	vm_exit
fi
vm_check "file: mount, every checksum matches" vm_remount_verify "$dev" "$mnt" keep

# kill -9: no flush, no disconnect.  What was synced was flushed
# (NBD_CMD_FLUSH, fdatasync) before sync returned.
vm_check "file: write 8 more files, sync" vm_write_files "$mnt" k 8
kill -9 "$pid"
{ wait "$pid"; } 2>/dev/null # not the shell's "Killed" on the console
vm_check "file: kill -9 ends the daemon" test $? = 137
# The device fails its IO now, and stays taken while the filesystem holds
# it: a new server is refused until it is let go.
ioflusher-nbd --connect "$dev" --file "$img" 2>/tmp/early.log
vm_check "file: a new daemon is refused while the filesystem is mounted" \
	refused $? /tmp/early.log
umount "$mnt" 2>/dev/null || umount -l "$mnt"
if nbd_start /tmp/file3.log --file "$img"; then
	vm_ok "file: once it is unmounted, a new daemon serves $dev"
else
	vm_not_ok "file: once it is unmounted, a new daemon serves $dev"
	vm_exit
fi
vm_check "file: mount, every file synced before kill -9 is there" \
	vm_remount_verify "$dev" "$mnt"
vm_check "file: e2fsck finds the filesystem clean" e2fsck -fn "$dev"
nbd_stop
vm_check "file: SIGTERM disconnects the device, exit status 0" test $? = 0

# --run: the daemon is flagged and shielded from the OOM killer, its
# command neither (forked before the setup, it never had them).
cat >/tmp/run.sh <<'EOS'
#!/bin/sh
# shellcheck disable=SC2046
set -- $(cat /proc/$$/stat)
echo "$9 $(cat /proc/$$/oom_score_adj)" >/tmp/run.out
EOS
chmod +x /tmp/run.sh
ioflusher-nbd --socket /tmp/run.sock --memory 1M --run /tmp/run.sh \
	2>/tmp/run.log
rc=$?
read -r flags adj </tmp/run.out
if [ $rc = 0 ] && [ $((flags & 0x80000)) = 0 ] && [ "$adj" = 0 ] &&
	grep -q ': setup: io-flusher flag: applied' /tmp/run.log &&
	grep -q ': setup: oom protection: applied' /tmp/run.log; then
	vm_ok "--run: the daemon flagged and OOM-immune, its command neither"
else
	vm_not_ok "--run: the daemon flagged and OOM-immune, its command neither (exit $rc, flags $flags, oom_score_adj $adj)"
	vm_diag_lines </tmp/run.log
fi
vm_exit
