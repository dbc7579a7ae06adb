#!/bin/sh
# ioflusher-nbd under fio's NBD engine (libnbd), several jobs at once each
# on its own connection, every block checked with crc32c.
. "${top_srcdir:-.}/tests/nbd/lib.sh"
nbd_require fio
if ! fio --enghelp=nbd >/dev/null 2>&1; then
	echo "1..0 # SKIP this fio has no nbd engine"
	exit 0
fi

run_fio() {
	# Each job verifies its own 16M region (offset_increment): jobs
	# write in parallel without overwriting each other's blocks.  fio
	# runs in the temporary directory and saves no verify state: it
	# would leave local-verify-*.state files behind in the build tree.
	(cd "$nbd_tmp" && timeout 120 fio --name=verify --ioengine=nbd --uri="$uri" \
		--rw="$1" --bs="$2" --iodepth="$3" --numjobs=3 --size=16M \
		--offset_increment=16M --verify=crc32c --verify_fatal=1 \
		--do_verify=1 --verify_state_save=0 --group_reporting \
		--output="$nbd_tmp/fio.out") &&
		grep -q "err= 0" "$nbd_tmp/fio.out" &&
		! grep -q "verify: bad" "$nbd_tmp/fio.out"
}

for backend in memory file; do
	if [ $backend = memory ]; then
		nbd_start $backend --memory 64M || exit 1
	else
		truncate -s 64M "$nbd_tmp/disk.img"
		nbd_start $backend --file "$nbd_tmp/disk.img" --threads 4 || exit 1
	fi
	tap_check "$backend: fio 4k randwrite qd16 x3 jobs, crc32c verified" \
		run_fio randwrite 4k 16
	tap_check "$backend: fio 64k..256k write qd8 x3 jobs, crc32c verified" \
		run_fio write 64k-256k 8
	tap_check "$backend: fio 512b..8k randrw qd32 x3 jobs, crc32c verified" \
		run_fio randrw 512-8k 32
	nbd_stop "$nbd_pid"
done
tap_plan "$tap_n"
nbd_done
