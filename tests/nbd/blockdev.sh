#!/bin/sh
# ioflusher-nbd exporting real block devices: loop devices over a file on
# ramfs (no write zeroes: write_zeroes_max_bytes is 0, so the kernel's
# ZERO_RANGE writes zero pages) and on tmpfs (write zeroes by punching the
# file).  FAST_ZERO must fail with ENOTSUP where zeroing would only be a
# write, and succeed where the device zeroes; nbd-malformed.py's other
# checks run against both.  Then a loop device over a tmpfs too small for
# it: a real writeback error, which Linux reports to fdatasync once, and
# which the daemon must go on reporting (FLUSH, FUA, writes, exit status).
# Needs root, losetup and loop devices: skipped elsewhere.
. "${top_srcdir:-.}/tests/nbd/lib.sh"
nbd_require python3 losetup

blk_skip() {
	echo "1..0 # SKIP $1"
	exit 0
}
[ "$(id -u)" = 0 ] || blk_skip "needs root (loop devices, mounts)"

blk_mounts=
blk_loops=
blk_cleanup() {
	for l in $blk_loops; do
		losetup -d "$l" 2>/dev/null
	done
	for m in $blk_mounts; do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
	done
}
trap 'blk_cleanup; nbd_cleanup' EXIT

# loop_on NAME FSTYPE OPTIONS SIZE: a loop device over a sparse file of
# SIZE on a new FSTYPE mount; sets $dev and $back (the file).
loop_on() {
	dir=$nbd_tmp/$1
	mkdir -p "$dir"
	mount -t "$2" -o "$3" "ioflusher-nbd-test" "$dir" 2>/dev/null || return 1
	blk_mounts="$dir $blk_mounts"
	back=$dir/back
	truncate -s "$4" "$back" || return 1
	dev=$(losetup -f --show "$back" 2>/dev/null) || return 1
	blk_loops="$dev $blk_loops"
}

# run_suite NAME ARGS...: nbd-malformed.py in MODE NAME against a daemon
# started with ARGS, its lines numbered here.
run_suite() {
	mode=$1
	shift
	if ! nbd_start "$mode" "$@"; then
		tap_not_ok "$mode: the daemon starts"
		return 1
	fi
	timeout 120 python3 "$srcdir/tests/nbd/nbd-malformed.py" \
		"$nbd_tmp/$mode.sock" "$mode" $suite_args >"$nbd_tmp/$mode.tap" 2>&1
	nbd_client_tap "$label" $? <"$nbd_tmp/$mode.tap"
}

loop_on ramfs ramfs mode=0755 16M ||
	blk_skip "no loop device over ramfs here (losetup, mount)"
label="ramfs loop"
suite_args=$dev
run_suite blockdev --file "$dev" --threads 2 --send-timeout 5
nbd_stop "$nbd_pid"
tap_check "$label: SIGTERM: exit 0" test $? -eq 0

if loop_on tmpfs tmpfs size=32M 16M; then
	label="tmpfs loop"
	suite_args=$dev
	run_suite blockdev --file "$dev" --threads 2 --send-timeout 5
	nbd_stop "$nbd_pid"
	tap_check "$label: SIGTERM: exit 0" test $? -eq 0
else
	tap_not_ok "a loop device over tmpfs"
fi
# A real writeback error: 16 MiB of loop device over a tmpfs of 4 MiB.
# wb_run MODE LABEL ARGS...: the daemon on such a device, MODE's checks,
# then SIGTERM, which must exit 1 and say why.
wb_run() {
	wbmode=$1
	label=$2
	shift 2
	if ! loop_on "$wbmode" tmpfs size=4M 16M; then
		tap_not_ok "$label: a loop device over a small tmpfs"
		return
	fi
	suite_args=$back
	run_suite "$wbmode" --file "$dev" "$@"
	err=$nbd_tmp/$wbmode.err
	nbd_stop "$nbd_pid"
	rc=$?
	tap_check "$label: logged once" \
		test "$(grep -c 'writes may have been lost' "$err")" -eq 1
	if [ $rc -eq 1 ] && grep -q "exit status 1" "$err"; then
		tap_ok "$label: SIGTERM: exit status 1, and why"
	else
		tap_not_ok "$label: SIGTERM: exit status 1, and why (exit $rc)"
		tap_diag <"$err"
	fi
}
wb_run wberror "writeback error" --threads 2
wb_run wbfua "writeback error, reported to a FUA write" --threads 1
wb_run wbfinal "writeback error, never flushed" --threads 2

# A full file system is no writeback error: an 8 MiB sparse file on a
# tmpfs of 2 MiB, served directly (no loop device: the write fails, not
# its writeback).
label="full file system"
full=$nbd_tmp/full
mkdir -p "$full"
if mount -t tmpfs -o size=2M "ioflusher-nbd-test" "$full" 2>/dev/null; then
	blk_mounts="$full $blk_mounts"
	truncate -s 8M "$full/back"
	suite_args=$full/back
	run_suite full --file "$full/back" --threads 1
	nbd_stop "$nbd_pid"
	rc=$?
	if [ $rc -eq 0 ] && ! grep -q 'writes may have been lost' "$nbd_tmp/full.err"; then
		tap_ok "$label: SIGTERM: exit 0, nothing said lost"
	else
		tap_not_ok "$label: SIGTERM: exit 0, nothing said lost (exit $rc)"
		tap_diag <"$nbd_tmp/full.err"
	fi
else
	tap_not_ok "$label: a tmpfs of 2 MiB"
fi
tap_plan "$tap_n"
nbd_done
