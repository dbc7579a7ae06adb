#!/bin/sh
# TCMU: ioflusher-tcmu serves tcm_loop SCSI disks: ext4 and fio verify on them, flagged.
#
# Two target_core_user backstores, dev_config=ioflusher/mem and
# ioflusher/file//tmp/lun1.img, exported through tcm_loop, are SCSI disks
# of this VM whose every command crosses the daemon's rings (one thread
# each).  The daemon runs as root with every capability and --sandbox, so
# the flag is required (no --best-effort) and a seccomp filter must be in
# place (/proc/PID/status); its report must say that every
# protection applied, its audit and ioflusher status that every thread
# carries the flag; every thread, the ring threads too, must have dropped
# every capability but CAP_IPC_LOCK (/proc/PID/task/*/status), and each
# ring thread's stack must be pre-faulted and locked (the mapping that
# holds its stack pointer, from /proc/PID/task/TID/syscall, in
# /proc/PID/smaps).  sd must take the disk as the daemon describes it
# (size, vendor, thin provisioning, no rotation), keep write-zeroes after
# a BLKZEROOUT (its WRITE SAME (10) answered), GET LBA STATUS must tell
# blocks written from blocks discarded, a filesystem must hold
# what is written to it across a remount with the caches dropped, fio must
# verify its own writes (crc32c), and a daemon started again after SIGTERM
# must take the ring up where the first left it.
#
# ext4 asks for the crc32c hash by its alias, which names no module file.
# vm-modules: @tcmu ext4 crc32c_generic
# vm-binaries: examples/tcmu/ioflusher-tcmu tools/ioflusher mkfs.ext4 e2fsck fio /usr/sbin/blkdiscard sg_get_lba_status
# vm-memory: 512
# About 2 minutes under TCG on 2 idle cores, and TCG slows with the host's
# load: the limit is a hang guard, not a deadline.
# vm-timeout: 600
. /vm/lib.sh

size=67108864 # 64 MiB: /sys/block/sdX/size is 131072 sectors
size1=33554432 # the file disk: 32 MiB, 65536 sectors
img=/tmp/lun1.img
mnt=/mnt/tcmu
mkdir -p "$mnt"

# tcmu_start LOG: the daemon in the background, until it says it serves.
tcmu_start() {
	vm_daemon_start "$1" "grep -q '^serving: ' '$1'" ioflusher-tcmu --verbose \
		--sandbox
}

# tcmu_stop: SIGTERM; its exit status (137 if it had to be killed).
tcmu_stop() { vm_daemon_stop; }

status_flagged() {
	ioflusher status "$1" >/tmp/status 2>&1
	_rc=$?
	cat /tmp/status
	[ "$_rc" = 0 ] &&
		grep -qx 'verdict: *every thread carries the flag' /tmp/status
}

# caps_dropped PID: every thread has CAP_IPC_LOCK (bit 14) and nothing
# else (vm_caps_only).
caps_dropped() { vm_caps_only "$1" 0000000000004000; }

# stack_locked PID TID: the kB locked of the mapping that holds the
# thread's stack pointer (the eighth field of its syscall file, while it
# waits in poll).
stack_locked() {
	_sp=$(cut -d' ' -f8 "/proc/$1/task/$2/syscall" 2>/dev/null)
	case $_sp in
	0x*) _sp=$((_sp)) ;;
	*) return 1 ;;
	esac
	_in=0
	while read -r _a _b _rest; do
		case $_a in
		[0-9a-f]*-[0-9a-f]*)
			_in=0
			[ "$_sp" -ge $((0x${_a%-*})) ] &&
				[ "$_sp" -lt $((0x${_a#*-})) ] && _in=1
			;;
		Locked:)
			[ $_in = 1 ] && echo "$_b" && return 0
			;;
		esac
	done <"/proc/$1/smaps"
	return 1
}

# ring_stacks_prefaulted PID: the two ring threads have 64 kB or more of
# their stacks locked before they serve a command.
ring_stacks_prefaulted() {
	_bad=0
	_seen=0
	for _t in /proc/$1/task/*; do
		case $(cat "$_t/comm") in
		tcmu-*) ;;
		*) continue ;;
		esac
		_seen=$((_seen + 1))
		_kb=$(stack_locked "$1" "${_t##*/}")
		echo "${_t##*/} $(cat "$_t/comm"): ${_kb:-?} kB of its stack locked"
		[ -n "$_kb" ] && [ "$_kb" -ge 64 ] || _bad=1
	done
	[ $_seen = 2 ] && [ $_bad = 0 ]
}

# zeroout_kept DISK: BLKZEROOUT (util-linux's blkdiscard -z, busybox's has
# no -z: write-zeroes without unmapping, which sd sends as WRITE SAME (10)
# for a small range) zeroes 1 MiB, and sd still offers write-zeroes
# afterwards (an unsupported WRITE SAME would have it set no_write_same:
# write_zeroes_max_bytes 0).
zeroout_kept() {
	_q=/sys/block/$1/queue
	echo "write_zeroes_max_bytes before: $(cat $_q/write_zeroes_max_bytes)"
	dd if=/dev/urandom of=/tmp/rnd bs=64k count=16 2>/dev/null &&
		dd if=/tmp/rnd of="/dev/$1" bs=64k seek=16 oflag=direct \
			2>/dev/null &&
		/usr/sbin/blkdiscard -z -o 1048576 -l 1048576 "/dev/$1" &&
		dd if="/dev/$1" of=/tmp/back bs=64k skip=16 count=16 \
			iflag=direct 2>/dev/null &&
		dd if=/dev/zero of=/tmp/zero bs=64k count=16 2>/dev/null &&
		cmp /tmp/back /tmp/zero || return 1
	echo "write_zeroes_max_bytes after: $(cat $_q/write_zeroes_max_bytes)"
	[ "$(cat $_q/write_zeroes_max_bytes)" -gt 0 ]
}

# lba_runs DISK: 1 MiB written at 8 MiB (LBA 16384), 256 KiB of it from
# its middle discarded (UNMAP, which the memory backend answers with
# MADV_DONTNEED_LOCKED, its pages being locked), and GET LBA STATUS from
# sg3-utils must see the three runs: mapped, deallocated, mapped.
lba_runs() {
	dd if=/dev/urandom of=/tmp/rnd bs=64k count=16 2>/dev/null &&
		dd if=/tmp/rnd of="/dev/$1" bs=64k seek=128 oflag=direct \
			2>/dev/null &&
		/usr/sbin/blkdiscard -o 8912896 -l 262144 "/dev/$1" &&
		sg_get_lba_status --brief --lba=16384 --maxlen=56 "/dev/$1" \
			>/tmp/lba || return 1
	cat /tmp/lba
	# A descriptor a line: "0xLBA 0xBLOCKS STATUS ADDITIONAL", after
	# SBC-4's header fields, which this SBC-3 LUN leaves 0.
	[ "$(grep '^0x' /tmp/lba | head -n 3 | while read -r _l _n _s _rest; do
		printf '%d %d %d\n' "$_l" "$_n" "$_s"
	done)" = "16384 1024 0
17408 512 1
17920 512 0" ]
}

# find_disk SECTORS: the SCSI disk tcm_loop made of one of our LUNs, by
# its size: its sdX, once sd has it.
find_disk() {
	_i=0
	while [ $_i -lt 300 ]; do
		for _d in /sys/block/sd*; do
			[ -e "$_d/device/model" ] || continue
			case $(cat "$_d/device/model") in
			ioflusher-tcmu*)
				[ "$(cat "$_d/size")" = "$1" ] &&
					vm_wait_for "/dev/${_d##*/}" 5 &&
					echo "${_d##*/}" && return 0
				;;
			esac
		done
		usleep 100000
		_i=$((_i + 1))
	done
	return 1
}

# export BACKSTORE N: LUN N of a tcm_loop target, made in the order that
# lets the kernel's scan find it: the portal group, its nexus, then the
# LUN (with no nexus yet, tcm_loop fails the scan's commands).
export_lun() {
	_tpg=$VM_TARGET/loopback/naa.5001405000000011/tpgt_1
	if [ ! -d "$_tpg" ]; then
		mkdir -p "$_tpg" &&
			echo naa.5001405000000012 >"$_tpg/nexus" || return 1
	fi
	mkdir "$_tpg/lun/lun_$2" &&
		ln -s "$VM_TARGET/core/user_1/$1" "$_tpg/lun/lun_$2/$1"
}

# new_fs DISK PREFIX N: ext4 on DISK with N files of 1 MiB, unmounted.
new_fs() {
	mkfs.ext4 -q -F "/dev/$1" && mount -t ext4 "/dev/$1" "$mnt" &&
		vm_write_files "$mnt" "$2" "$3" && umount "$mnt"
}

if uio=$(vm_tcmu_backstore disk0 "$size" ioflusher/mem); then
	vm_ok "a user backstore with dev_config=ioflusher/mem makes $uio"
else
	vm_not_ok "a user backstore with dev_config=ioflusher/mem makes /dev/uioN"
	dmesg | tail -n 20 | vm_diag_lines
	vm_exit
fi
vm_diag "$(cat /sys/class/uio/${uio#/dev/}/name), map0 $(cat /sys/class/uio/${uio#/dev/}/maps/map0/size)"
if uio1=$(vm_tcmu_backstore disk1 "$size1" "ioflusher/file/$img"); then
	vm_ok "and one with dev_config=ioflusher/file/$img makes $uio1"
else
	vm_not_ok "and one with dev_config=ioflusher/file/$img makes /dev/uioN"
	vm_exit
fi

if ! tcmu_start /tmp/tcmu.log; then
	vm_not_ok "ioflusher-tcmu serves $uio"
	vm_exit
fi
# One daemon per device: a second one, while the first serves, is told.
vm_check "a second daemon beside the first: exit 1, the device is served already" \
	sh -c "timeout 20 ioflusher-tcmu -d disk0 >/tmp/tcmu-dup.log 2>&1; rc=\$?;
		cat /tmp/tcmu-dup.log; test \$rc = 1 &&
		grep -q 'another process serves it' /tmp/tcmu-dup.log"
vm_check "ioflusher-tcmu serves tcm-user/1/disk0/ioflusher/mem on $uio" \
	grep -q "^device: tcm-user/1/disk0/ioflusher/mem on $uio: mem backend, 131072 blocks of 512 bytes" /tmp/tcmu.log
vm_check "and tcm-user/1/disk1/ioflusher/file/$img on $uio1, made" \
	sh -c "grep -q '^device: tcm-user/1/disk1/ioflusher/file/$img on $uio1: file backend, 65536 blocks of 512 bytes' /tmp/tcmu.log &&
		test \$(stat -c %s $img) = $size1"
if [ "$(grep -c '^setup: .*: applied' /tmp/tcmu.log)" = 4 ]; then
	vm_ok "its start-up report says every protection applied"
else
	vm_not_ok "its start-up report says every protection applied"
	grep '^setup' /tmp/tcmu.log | vm_diag_lines
fi
n=$(sed -n 's/^audit: \([0-9]*\) of \1 threads carry the io-flusher flag$/\1/p' /tmp/tcmu.log)
if [ "$n" = 3 ] && ! grep -q MISSING /tmp/tcmu.log; then
	vm_ok "its audit says all 3 threads (main, two rings) carry the flag"
else
	vm_not_ok "its audit says every thread carries the flag"
	grep '^audit' /tmp/tcmu.log | vm_diag_lines
fi
vm_check "ioflusher status $pid: every thread carries the flag" \
	status_flagged "$pid"
vm_check "every thread, the ring threads too, kept CAP_IPC_LOCK alone" \
	caps_dropped "$pid"
vm_check "--sandbox: a seccomp filter is in place" \
	grep -q '^Seccomp:[[:space:]]*2' "/proc/$pid/status"
# Each ring thread pre-faults its stack as it starts, which the serving
# line does not wait for.
vm_check "each ring thread's stack is pre-faulted and locked, 64 kB or more" \
	vm_retry 10 ring_stacks_prefaulted "$pid"
ring_stacks_prefaulted "$pid" | vm_diag_lines

# ------------------------------------------------------------ the disk

if export_lun disk0 0 && disk=$(find_disk 131072); then
	vm_ok "tcm_loop exports the LUN: sd makes /dev/$disk"
else
	vm_not_ok "tcm_loop exports the LUN as a SCSI disk"
	dmesg | tail -n 30 | vm_diag_lines
	vm_diag_lines </tmp/tcmu.log
	tcmu_stop
	vm_exit
fi
q=/sys/block/$disk/queue
vm_diag "$disk: $(cat /sys/block/$disk/device/vendor) $(cat /sys/block/$disk/device/model) $(cat /sys/block/$disk/device/rev), wwid $(cat /sys/block/$disk/device/wwid 2>/dev/null)"
vm_diag "$disk: max_hw_sectors_kb $(cat $q/max_hw_sectors_kb), discard_max_bytes $(cat $q/discard_max_bytes), discard_granularity $(cat $q/discard_granularity), write_cache $(cat $q/write_cache), provisioning_mode $(cat /sys/block/$disk/device/scsi_disk/*/provisioning_mode)"
vm_check "sd reads the size: 131072 sectors of 512 bytes" \
	test "$(cat /sys/block/$disk/size)" = 131072 -a \
	"$(cat $q/logical_block_size)" = 512
vm_check "sd reads the vendor: IOFLUSHR" \
	test "$(cat /sys/block/$disk/device/vendor)" = IOFLUSHR
# Linux ranks a locally assigned NAA and a T10 vendor ID alike, and
# names the disk by one of them.
vm_check "sd reads a designator of VPD page 0x83 as the disk's wwid" \
	grep -Eqx 't10\.IOFLUSHR[0-9a-f]{16}|naa\.3[0-9a-f]{15}' \
	/sys/block/$disk/device/wwid
vm_check "sd reads the thin provisioning pages: UNMAP (discard) enabled" \
	sh -c "[ \$(cat $q/discard_max_bytes) -gt 0 ] &&
		grep -qx unmap /sys/block/$disk/device/scsi_disk/*/provisioning_mode"
vm_check "sd reads the block device characteristics: not rotational" \
	test "$(cat $q/rotational)" = 0
vm_check "sd reads the caching mode page: no volatile cache (memory)" \
	test "$(cat $q/write_cache)" = "write through"
vm_check "BLKZEROOUT zeroes 1 MiB through WRITE SAME (10); sd keeps write-zeroes" \
	zeroout_kept "$disk"
vm_check "GET LBA STATUS (sg_get_lba_status): written blocks mapped, discarded ones deallocated" \
	lba_runs "$disk"

# ------------------------------------------------------------ a filesystem

vm_check "mkfs.ext4 on /dev/$disk" mkfs.ext4 -q -F "/dev/$disk"
vm_check "mount" mount -t ext4 "/dev/$disk" "$mnt"
: >/tmp/sums
vm_check "write 16 files of 1 MiB, sync" vm_write_files "$mnt" f 16
vm_check "fstrim: UNMAP through the ring" fstrim "$mnt"
vm_check "umount" umount "$mnt"
vm_check "e2fsck finds the filesystem clean" e2fsck -fn "/dev/$disk"
vm_check "mount again with the caches dropped: every checksum matches" \
	vm_remount_verify "/dev/$disk" "$mnt"

# ------------------------------------------------------------ the file disk

if export_lun disk1 1 && disk1=$(find_disk 65536); then
	vm_ok "the file LUN: sd makes /dev/$disk1"
else
	vm_not_ok "the file LUN is exported as a SCSI disk"
	dmesg | tail -n 30 | vm_diag_lines
	tcmu_stop
	vm_exit
fi
vm_check "sd reads the caching mode page: a volatile cache (file)" \
	test "$(cat /sys/block/$disk1/queue/write_cache)" = "write back"
: >/tmp/sums
vm_check "file: mkfs.ext4, mount, write 8 files of 1 MiB, sync, umount" \
	new_fs "$disk1" g 8
vm_check "file: mount again with the caches dropped: every checksum matches" \
	vm_remount_verify "/dev/$disk1" "$mnt"
vm_check "file: what the disk reads is the file's bytes" \
	cmp "/dev/$disk1" "$img"

# ------------------------------------------------------------ fio verify

vm_check "fio: 4k random writes, 16 in flight, verified (crc32c)" \
	fio --name=verify --filename="/dev/$disk" --direct=1 --ioengine=libaio \
	--iodepth=16 --rw=randwrite --bs=4k --size=16M --verify=crc32c \
	--do_verify=1 --verify_fatal=1 --output=/tmp/fio.out
vm_check "fio: 256k sequential writes, verified (crc32c)" \
	fio --name=seq --filename="/dev/$disk" --direct=1 --ioengine=libaio \
	--iodepth=4 --rw=write --bs=256k --size=32M --offset=16M \
	--verify=crc32c --do_verify=1 --verify_fatal=1 --output=/tmp/fio.out
# What ioflusher-tcmu(8) advises: LIO completes each command on the CPU
# that completes it (the ring thread's), not on the one that submitted it.
aff=$VM_TARGET/loopback/naa.5001405000000011/param/cmd_completion_affinity
vm_check "cmd_completion_affinity -2: fio's 4k random writes verified (crc32c)" \
	sh -c "echo -2 >$aff && [ \$(cat $aff) = -2 ] &&
	fio --name=verify2 --filename=/dev/$disk --direct=1 --ioengine=libaio \
	--iodepth=32 --rw=randwrite --bs=4k --size=16M --offset=48M \
	--verify=crc32c --do_verify=1 --verify_fatal=1 --output=/tmp/fio.out &&
	echo -1 >$aff"
vm_check "the daemon still serves" vm_alive "$pid"

# ------------------------------------------------------------ restart

tcmu_stop
vm_check "SIGTERM: the daemon exits 0" test $? = 0
grep '^stats: ' /tmp/tcmu.log | vm_diag_lines
# stats_clean: a line per device, each with commands counted and neither
# a malformed entry nor a break.
stats_clean() {
	grep '^stats: ' /tmp/tcmu.log >/tmp/stats || return 1
	[ "$(wc -l </tmp/stats)" -eq 2 ] &&
		! grep -Evq ': [1-9][0-9]* commands, .* 0 malformed, .* 0 breaks' /tmp/stats
}
vm_check "both devices counted their commands, no malformed entry or break" \
	stats_clean
# Commands sent while no daemon serves wait in the ring for the next one.
dd if="/dev/$disk" of=/dev/null bs=4k count=1 iflag=direct 2>/dev/null &
reader=$!
# in_flight: the disk has a read in flight (queued in the ring, since no
# daemon serves it): the first field of /sys/block/X/inflight.
in_flight() {
	_i=0
	while [ $_i -lt 50 ]; do
		set -- $(cat "/sys/block/$disk/inflight")
		[ "$1" -ge 1 ] && return 0
		usleep 100000
		_i=$((_i + 1))
	done
	return 1
}
vm_check "with no daemon, a read is in flight on the disk" in_flight
if tcmu_start /tmp/tcmu2.log; then
	vm_ok "a second daemon attaches to the same ring"
else
	vm_not_ok "a second daemon attaches to the same ring"
fi
_i=0
while vm_alive "$reader" && [ $_i -lt 100 ]; do
	usleep 100000
	_i=$((_i + 1))
done
# Not answered in 10 s: killed, so that the wait below cannot hang.
vm_alive "$reader" && kill -9 "$reader"
wait "$reader"
vm_check "the read queued while no daemon ran is answered by the second" \
	test $? = 0
vm_check "and it serves the disk: write and read 1 MiB" \
	sh -c "dd if=/dev/urandom of=/tmp/mb bs=64k count=16 2>/dev/null &&
		dd if=/tmp/mb of=/dev/$disk bs=64k oflag=direct 2>/dev/null &&
		dd if=/dev/$disk of=/tmp/mb2 bs=64k count=16 iflag=direct 2>/dev/null &&
		cmp /tmp/mb /tmp/mb2"
# SIGHUP (its terminal gone) is a stop as SIGTERM is, not a kill.
vm_daemon_stop HUP
vm_check "SIGHUP: the second daemon stops, exit 0" test $? = 0
vm_check "and says so" grep -q '^stopping on Hangup' /tmp/tcmu2.log
vm_exit
