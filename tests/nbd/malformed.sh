#!/bin/sh
# ioflusher-nbd against a hostile client (nbd-malformed.py): bad magic,
# oversize lengths, offsets past the end, unknown options and commands,
# truncated requests, a client gone mid-request.  Clear errors or a clean
# disconnect, never a crash, and nothing written where it should not be.
. "${top_srcdir:-.}/tests/nbd/lib.sh"
nbd_require python3

n=0
run_mode() {
	mode=$1
	shift
	if ! nbd_start "$mode" "$@"; then
		tap_not_ok "$mode: the daemon starts"
		return
	fi
	file=
	[ "$mode" = file ] && file=$nbd_tmp/disk.img
	timeout 120 python3 "$srcdir/tests/nbd/nbd-malformed.py" \
		"$nbd_tmp/$mode.sock" "$mode" $file >"$nbd_tmp/$mode.tap" 2>&1
	nbd_client_tap "$mode" $? <"$nbd_tmp/$mode.tap"
	if grep -q "a reply made no progress for 5 s (--send-timeout): disconnected" \
		"$nbd_tmp/$mode.err"; then
		tap_ok "$mode: the send timeout is logged"
	else
		tap_not_ok "$mode: the send timeout is logged"
		tap_diag <"$nbd_tmp/$mode.err"
	fi
	if grep -q "more than 1024 options in the handshake, a denial of service: disconnected" \
		"$nbd_tmp/$mode.err"; then
		tap_ok "$mode: the hang-up after 1024 options is logged"
	else
		tap_not_ok "$mode: the hang-up after 1024 options is logged"
	fi
	if [ "$mode" = file ]; then
		if grep -q "a write's data stopped arriving for --send-timeout, its buffers held: disconnected" \
			"$nbd_tmp/$mode.err"; then
			tap_ok "$mode: the stalled writers' disconnection is logged"
		else
			tap_not_ok "$mode: the stalled writers' disconnection is logged"
		fi
	fi
	if nbd_alive "$nbd_pid"; then
		tap_ok "$mode: the daemon is still running"
	else
		tap_not_ok "$mode: the daemon is still running"
	fi
	nbd_stop "$nbd_pid"
	rc=$?
	if [ $rc -eq 0 ]; then
		tap_ok "$mode: SIGTERM ends it cleanly (exit 0)"
	else
		tap_not_ok "$mode: SIGTERM ends it cleanly (exit $rc)"
		tap_diag <"$nbd_tmp/$mode.err"
	fi
}

# --send-timeout 5: the client that reads no replies is dropped soon, and
# a client that reads them is not, even one stalled for a few seconds.
truncate -s 16M "$nbd_tmp/disk.img"
run_mode memory --memory 16M --send-timeout 5
run_mode file --file "$nbd_tmp/disk.img" --threads 2 --send-timeout 5
run_mode readonly --memory 16M --readonly --send-timeout 5

# --handshake-timeout 3: handshakes that never end give their connection
# back, and are logged.
if nbd_start handshake --memory 16M --max-connections 2 --handshake-timeout 3; then
	timeout 120 python3 "$srcdir/tests/nbd/nbd-malformed.py" \
		"$nbd_tmp/handshake.sock" handshake >"$nbd_tmp/handshake.tap" 2>&1
	nbd_client_tap handshake $? <"$nbd_tmp/handshake.tap"
	tap_check "handshake: the timeout is logged" \
		grep -q "handshake not done within --handshake-timeout" \
		"$nbd_tmp/handshake.err"
	nbd_stop "$nbd_pid"
	tap_check "handshake: SIGTERM ends it cleanly" test $? -eq 0
else
	tap_not_ok "handshake: the daemon starts"
fi
echo "1..$tap_n"
nbd_done
