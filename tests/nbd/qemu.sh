#!/bin/sh
# ioflusher-nbd with qemu's NBD client: qemu-io patterns (write -P, read
# -P, write -z, discard, flush, aio) read back and verified, and
# qemu-img compare against a local image given the same writes.
. "${top_srcdir:-.}/tests/nbd/lib.sh"
nbd_require qemu-io qemu-img

qio() {
	out=$(timeout 60 qemu-io -f raw "$@" 2>&1)
	rc=$?
	printf '%s\n' "$out"
	# qemu-io exits 0 even when a pattern does not match: look for it.
	[ $rc -eq 0 ] && ! printf '%s\n' "$out" | grep -q -i -E "mismatch|error|fail"
}

for backend in memory file; do
	if [ $backend = memory ]; then
		nbd_start $backend --memory 32M || exit 1
	else
		truncate -s 32M "$nbd_tmp/disk.img"
		nbd_start $backend --file "$nbd_tmp/disk.img" --threads 2 || exit 1
	fi
	tap_check "$backend: write -P then read -P, aligned and not" qio "$uri" \
		-c "write -P 0xa5 0 64k" -c "read -P 0xa5 0 64k" \
		-c "write -P 0x5a 1000 3000" -c "read -P 0x5a 1000 3000" \
		-c "read -P 0xa5 0 1000" -c "read -P 0xa5 4000 61536"
	tap_check "$backend: write -z reads back as zeroes" qio "$uri" \
		-c "write -P 0x77 1M 256k" -c "write -z 1M 128k" \
		-c "read -P 0 1M 128k" -c "read -P 0x77 1152k 128k"
	tap_check "$backend: write -z -u (may unmap) and discard" qio "$uri" \
		-c "write -P 0x33 2M 1M" -c "write -z -u 2M 512k" \
		-c "read -P 0 2M 512k" -c "discard 2560k 512k" -c "read -P 0 8M 4k"
	tap_check "$backend: write with FUA, then flush" qio "$uri" \
		-c "write -f -P 0x42 4M 64k" -c "flush" -c "read -P 0x42 4M 64k"
	tap_check "$backend: aio writes and reads in flight together" qio "$uri" \
		-c "aio_write -P 0x11 5M 64k" -c "aio_write -P 0x22 6M 64k" \
		-c "aio_write -P 0x44 7M 1M" -c "aio_flush" \
		-c "aio_read -P 0x11 5M 64k" -c "aio_read -P 0x22 6M 64k" \
		-c "aio_read -P 0x44 7M 1M" -c "aio_flush"
	tap_check "$backend: a write at the last byte" qio "$uri" \
		-c "write -P 0x99 33554431 1" -c "read -P 0x99 33554431 1"
	# A check of the size the server advertised, on the client's side:
	# qemu-io refuses this read itself, and no request reaches the server
	# (whose EINVAL for one is nbd-malformed.py's, in malformed.sh).
	if out=$(timeout 30 qemu-io -f raw "$uri" -c "read 33554432 512" 2>&1) &&
		! printf '%s\n' "$out" | grep -q -i "error\|invalid"; then
		tap_not_ok "$backend: qemu-io sees the end at 32M: it refuses a read there itself"
	else
		tap_ok "$backend: qemu-io sees the end at 32M: it refuses a read there itself"
	fi
	printf "%s\n" "$out" | tail -n 5 | tap_diag

	# The same writes to a local image, then qemu-img compare.  Each
	# write must succeed: writes failed on both would leave two images of
	# zeroes, which compare the same.
	truncate -s 32M "$nbd_tmp/ref.img"
	wrote=yes
	for t in "$nbd_tmp/ref.img" "$uri"; do
		if ! qio "$t" \
			-c "write -P 0x10 0 1M" -c "write -P 0x20 10M 3M" \
			-c "write -z 10M 1M" -c "write -P 0x30 31M 1M" \
			-c "write -P 0 2M 8M" -c "write -P 0 13M 18M" \
			-c "write -P 0 1M 1M" >"$nbd_tmp/writes.out"; then
			wrote=no
			echo "writes to $t:" | tap_diag
			tail -n 10 "$nbd_tmp/writes.out" | tap_diag
		fi
	done
	if [ $wrote = yes ]; then
		tap_check "$backend: qemu-img compare with a local image" \
			timeout 60 qemu-img compare -f raw -F raw "$nbd_tmp/ref.img" "$uri"
	else
		tap_not_ok "$backend: qemu-img compare with a local image (a write failed)"
	fi
	if qio "$uri" -c "write -P 0x31 20M 4k" >"$nbd_tmp/writes.out"; then
		# 1 is "the images differ"; 2 an error, which sees nothing.
		timeout 60 qemu-img compare -q -f raw -F raw "$nbd_tmp/ref.img" "$uri"
		rc=$?
	else
		rc="the write failed"
		tail -n 10 "$nbd_tmp/writes.out" | tap_diag
	fi
	if [ "$rc" = 1 ]; then
		tap_ok "$backend: qemu-img compare sees a changed block"
	else
		tap_not_ok "$backend: qemu-img compare sees a changed block ($rc)"
	fi
	nbd_stop "$nbd_pid"
done
tap_plan "$tap_n"
nbd_done
