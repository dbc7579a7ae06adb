#!/bin/sh
# TCMU benchmark: fio on ioflusher-tcmu's disk against the kernel's rd_mcp ramdisk, both behind tcm_loop.
#
# Not a check-vm scenario (it takes minutes): "make bench-tcmu" runs it
# with tests/vm/run.  Two LUNs of the same tcm_loop target: LUN 0 a
# target_core_user backstore served by ioflusher-tcmu (memory backend),
# LUN 1 the kernel's own rd_mcp ramdisk, the in-kernel limit of what a
# memory disk behind LIO can do.  Both are written whole first, then fio
# runs each workload on each disk in turn (O_DIRECT, libaio), several
# times, the order of the two disks swapped at each repetition: the VM
# emulates its CPUs (TCG) and one run's figure drifts by a fifth from the
# next.  Each run is made at each of the target's completion affinities
# (param/cmd_completion_affinity): -2, where LIO completes a command on
# the CPU that completes it (the daemon's, as ioflusher-tcmu(8) advises),
# and -1, the kernel's default, where it queues the completion back to
# the CPU that submitted the command.  It applies to both disks alike;
# rd_mcp completes on the submitting CPU either way.  The median IOPS of
# each disk and their ratio ours/kernel are printed for each affinity,
# one TAP line per workload.  The seconds per run (4), the repetitions
# (5), the daemon's --poll (0), the affinities (-2,-1) and the workloads
# (RW:BS:DEPTH,...) come from the kernel command line, which make
# bench-tcmu sets from TCMU_BENCH_SECONDS, TCMU_BENCH_REPS,
# TCMU_BENCH_POLL, TCMU_BENCH_AFFINITIES and TCMU_BENCH_WORKLOADS.
#
# vm-modules: @tcmu
# vm-binaries: examples/tcmu/ioflusher-tcmu fio
# vm-memory: 1024
# vm-cpus: 2
# vm-timeout: 900
# vm-cmdline: tcmu_bench_seconds=4 tcmu_bench_reps=5 tcmu_bench_poll=0 tcmu_bench_affinities=-2,-1
. /vm/lib.sh

secs=4
reps=5
poll=0
affinities="-2 -1"
workloads="randread:4k:32 randwrite:4k:32 read:256k:8 write:256k:8"
for _a in $(cat /proc/cmdline); do
	case $_a in
	tcmu_bench_seconds=*) secs=${_a#*=} ;;
	tcmu_bench_reps=*) reps=${_a#*=} ;;
	tcmu_bench_poll=*) poll=${_a#*=} ;;
	tcmu_bench_affinities=*) affinities=$(echo "${_a#*=}" | tr , ' ') ;;
	tcmu_bench_workloads=*) workloads=$(echo "${_a#*=}" | tr , ' ') ;;
	esac
done
size=134217728 # 128 MiB each
tpg=$VM_TARGET/loopback/naa.5001405000000021/tpgt_1

uio=$(vm_tcmu_backstore disk0 "$size" ioflusher/mem) ||
	{ vm_not_ok "a user backstore"; vm_exit; }
rd=$VM_TARGET/core/rd_mcp_0/ram0
if ! { mkdir -p "$rd" && echo "rd_pages=$((size / 4096))" >"$rd/control" &&
	echo 1 >"$rd/enable"; }; then
	vm_not_ok "an rd_mcp backstore"
	vm_exit
fi
ioflusher-tcmu --poll "$poll" >/tmp/tcmu.log 2>&1 &
pid=$!
_i=0
until grep -q '^serving: ' /tmp/tcmu.log; do
	[ $_i -ge 100 ] && { vm_diag_lines </tmp/tcmu.log; vm_not_ok "the daemon starts"; vm_exit; }
	usleep 100000
	_i=$((_i + 1))
done
mkdir -p "$tpg" && echo naa.5001405000000022 >"$tpg/nexus" &&
	mkdir "$tpg/lun/lun_0" "$tpg/lun/lun_1" &&
	ln -s "$VM_TARGET/core/user_1/disk0" "$tpg/lun/lun_0/disk0" &&
	ln -s "$rd" "$tpg/lun/lun_1/ram0"

# disk MODEL: the sdX whose model starts so.
disk() {
	_i=0
	while [ $_i -lt 300 ]; do
		for _d in /sys/block/sd*; do
			case $(cat "$_d/device/model" 2>/dev/null) in
			"$1"*) [ -b "/dev/${_d##*/}" ] && echo "${_d##*/}" && return 0 ;;
			esac
		done
		usleep 100000
		_i=$((_i + 1))
	done
	return 1
}
ours=$(disk ioflusher-tcmu) || { vm_not_ok "our disk appears"; vm_exit; }
kern=$(disk RAMDISK-MCP) || { vm_not_ok "the rd_mcp disk appears"; vm_exit; }
vm_diag "ours: /dev/$ours (ioflusher-tcmu --poll $poll), kernel: /dev/$kern (rd_mcp); medians of $reps runs of $secs s, interleaved; $(nproc) CPUs"
for d in "$ours" "$kern"; do
	dd if=/dev/urandom of=/tmp/fill bs=1M count=8 2>/dev/null
	_o=0
	while [ $_o -lt $((size / 8388608)) ]; do
		dd if=/tmp/fill of="/dev/$d" bs=1M seek=$((_o * 8)) oflag=direct \
			2>/dev/null
		_o=$((_o + 1))
	done
done

# run DISK RW BS DEPTH: IOPS of one fio run (terse output: read IOPS is
# field 8, write IOPS field 49).
run() {
	fio --name=b --filename="/dev/$1" --direct=1 --ioengine=libaio \
		--rw="$2" --bs="$3" --iodepth="$4" --time_based \
		--runtime="$secs" --ramp_time=1 --size="$size" \
		--randrepeat=0 --minimal 2>/dev/null |
		awk -F';' -v rw="$2" '{ print (rw ~ /read/) ? $8 : $49 }'
}

# median N...: the median of the numbers.
median() {
	printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 }
		END { print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

param=${tpg%/*}/param/cmd_completion_affinity
[ -w "$param" ] || { vm_not_ok "$param is there"; vm_exit; }
vm_diag "workload               affinity   ours IOPS   kernel IOPS   ours/kernel"
for w in $workloads; do
	set -- $(echo "$w" | tr : ' ')
	for a in $affinities; do
		eval "os_${a#-}= ks_${a#-}="
	done
	_r=0
	while [ $_r -lt "$reps" ]; do
		for a in $affinities; do
			echo "$a" >"$param" ||
				{ vm_not_ok "cmd_completion_affinity $a"; vm_exit; }
			if [ $((_r % 2)) = 0 ]; then
				o=$(run "$ours" "$1" "$2" "$3")
				k=$(run "$kern" "$1" "$2" "$3")
			else
				k=$(run "$kern" "$1" "$2" "$3")
				o=$(run "$ours" "$1" "$2" "$3")
			fi
			eval "os_${a#-}=\"\$os_${a#-} $o\"; ks_${a#-}=\"\$ks_${a#-} $k\""
		done
		_r=$((_r + 1))
	done
	first=
	for a in $affinities; do
		eval "os=\$os_${a#-}; ks=\$ks_${a#-}"
		vm_diag "  $1 $2 affinity $a runs: ours$os; kernel$ks"
		o=$(median $os)
		k=$(median $ks)
		r=$(awk -v o="$o" -v k="$k" 'BEGIN { printf "%.2f", k ? o / k : 0 }')
		vm_diag "$(printf '%-8s %-4s qd%-3s %10s %11s %13s %13s' "$1" "$2" "$3" "$a" "$o" "$k" "$r")"
		[ -n "$first" ] || first="$a $r"
	done
	set -- "$1" "$2" $first
	case $1 in
	randread)
		if awk -v r="$4" 'BEGIN { exit !(r >= 0.8) }'; then
			vm_ok "4k random read, affinity $3: ours/kernel $4 (target 0.8)"
		else
			vm_not_ok "4k random read, affinity $3: ours/kernel $4 (target 0.8)"
		fi
		;;
	*)
		if awk -v r="$4" 'BEGIN { exit !(r > 0) }'; then
			vm_ok "$1 $2, affinity $3: ours/kernel $4"
		else
			vm_not_ok "$1 $2, affinity $3: fio ran on both disks"
		fi
		;;
	esac
done
kill -TERM "$pid"
wait "$pid"
vm_exit
