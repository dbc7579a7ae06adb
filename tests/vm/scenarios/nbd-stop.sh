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
# (the latter served by worker threads).  A round counts as a stop during
# writes only if dd was cut short (some records out, fewer than asked, and
# a failure): one that finished first, or had none out, says so, and each backend must have
# had such a stop at least once, or the scenario tested nothing it claims.
#
# vm-modules: @nbd
# vm-binaries: examples/nbd/ioflusher-nbd
# vm-memory: 512
# vm-timeout: 180
. /vm/lib.sh

img=/tmp/disk.img
src=/tmp/src
rounds=12
count=400
cut_memory=0
cut_file=0

if ! dev=$(vm_nbd_device 0); then
	vm_not_ok "nbd.ko loads and makes /dev/nbd0, a block device"
	vm_exit
fi
# 25 MiB: more than a round writes before its signal under TCG.
dd if=/dev/urandom of="$src" bs=64k count=$count 2>/dev/null

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
	dd if="$src" of="$dev" bs=64k count=$count oflag=direct 2>/tmp/dd.err &
	writer=$!
	usleep $delay
	vm_daemon_stop
	rc=$?
	wait $writer
	dd_rc=$?
	out=$(sed -n 's/^\([0-9]*\)+[0-9]* records out$/\1/p' /tmp/dd.err)
	if [ -z "$out" ]; then
		vm_not_ok "$desc: dd says how much it wrote"
		vm_diag_lines </tmp/dd.err
	elif [ "$out" -gt 0 ] && [ "$out" -lt $count ] && [ $dd_rc != 0 ]; then
		vm_ok "$desc: the stop cut dd short"
		vm_diag "dd: $out of $count records out, exit $dd_rc"
		if [ $what = memory ]; then
			cut_memory=$((cut_memory + 1))
		else
			cut_file=$((cut_file + 1))
		fi
	elif [ "$out" = 0 ]; then
		# Before its first record: dd may not have begun writing.
		vm_skip "$desc: the stop cut dd short" \
			"no record out before the signal (exit $dd_rc)"
	else
		vm_skip "$desc: the stop cut dd short" \
			"dd wrote all $count records before the signal (exit $dd_rc)"
	fi
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
# some_cut BACKEND N: N rounds of BACKEND cut dd short.
some_cut() {
	if [ "$2" -gt 0 ]; then
		vm_ok "$1: some round stopped the daemon while dd wrote"
		vm_diag "$1: $2 of $((rounds / 2)) rounds did"
	else
		vm_not_ok "$1: some round stopped the daemon while dd wrote"
		vm_diag "none did: dd needs more data, or the signals must come sooner"
	fi
}
some_cut memory $cut_memory
some_cut file $cut_file
vm_exit
