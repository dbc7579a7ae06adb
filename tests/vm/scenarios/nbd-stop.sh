#!/bin/sh
# NBD: SIGTERM to ioflusher-nbd --connect while the kernel has IO in flight.
#
# What systemd does at `systemctl stop` while a client still writes: the
# daemon must disconnect the device, end its connection and exit 0, every
# time, wherever the signal lands; the writer gets EIO for what was not
# answered.  With the file backend, every write the kernel saw completed
# (dd's "records out", O_DIRECT, so each record is one answered request)
# must be in the file once the daemon has exited.  Each round sends the
# signal a little later, with the memory and the file backend in turn
# (the latter served by worker threads).
#
# vm-modules: @nbd
# vm-binaries: examples/nbd/ioflusher-nbd
# vm-memory: 512
# vm-timeout: 180
. /vm/lib.sh

img=/tmp/disk.img
src=/tmp/src
rounds=12

if ! dev=$(vm_nbd_device 0); then
	vm_not_ok "nbd.ko loads and makes /dev/nbd0, a block device"
	vm_exit
fi
# 25 MiB: more than a round writes before its signal under TCG.
dd if=/dev/urandom of="$src" bs=64k count=400 2>/dev/null

# written_matches: the records dd says are out, at the start of the file.
written_matches() {
	_n=$(sed -n 's/^\([0-9]*\)+[0-9]* records out$/\1/p' /tmp/dd.err)
	echo "dd wrote $_n records of 64 KiB before the disconnect"
	[ -n "$_n" ] && cmp -n $((_n * 65536)) "$src" "$img"
}

i=0
while [ $i -lt $rounds ]; do
	if [ $((i % 2)) = 0 ]; then
		what=memory
		set -- --memory 64M
	else
		what=file
		set -- --file "$img" --threads 3
		# A fresh file each round: what an earlier round wrote must
		# not stand in for what this one lost.
		rm -f "$img"
		truncate -s 64M "$img"
	fi
	delay=$((100000 + i * 40000))
	desc="round $i ($what, SIGTERM after $((delay / 1000)) ms of writes)"
	if ! vm_daemon_start /tmp/nbd.log \
		"grep -q ': serving ' /tmp/nbd.log && [ \"\$(cat /sys/block/nbd0/size)\" != 0 ]" \
		ioflusher-nbd --connect "$dev" "$@"; then
		vm_not_ok "$desc: the daemon starts"
		i=$((i + 1))
		continue
	fi
	dd if="$src" of="$dev" bs=64k count=400 oflag=direct 2>/tmp/dd.err &
	writer=$!
	usleep $delay
	vm_daemon_stop
	rc=$?
	wait $writer
	if [ "$rc" = 0 ] && grep -q 'signal 15: shutting down' /tmp/nbd.log; then
		vm_ok "$desc: the daemon exits 0"
	else
		vm_not_ok "$desc: the daemon exits 0 (exit $rc)"
		vm_diag_lines </tmp/nbd.log
	fi
	if [ "$(cat /sys/block/nbd0/size)" = 0 ]; then
		vm_ok "$desc: the device is disconnected"
	else
		vm_not_ok "$desc: the device is disconnected"
	fi
	[ $what = file ] &&
		vm_check "$desc: what the kernel saw written is in the file" \
			written_matches
	i=$((i + 1))
done
vm_exit
