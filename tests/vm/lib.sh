# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Helpers for the scenarios (tests/vm/scenarios/*.sh), sourced inside the
# VM by busybox sh.  A line for the host starts with $VM_MARK; tests/vm/run
# reads nothing else from the console, so a kernel message or a program's
# chatter can never pass for a result.  Each vm_ok / vm_not_ok is one TAP
# line on the host.

VM_MARK='@@IOFLUSHER-VM@@'
VM_FAILED=0

vm_say() { printf '%s %s\n' "$VM_MARK" "$*"; }
vm_diag() { vm_say "# $*"; }
vm_ok() { vm_say "ok - $*"; }
vm_not_ok() {
	vm_say "not ok - $*"
	VM_FAILED=1
}
vm_skip() { vm_say "ok - $1 # SKIP $2"; }

# Standard input as diagnostics, line by line.
vm_diag_lines() {
	while IFS= read -r _l; do
		vm_diag "$_l"
	done
}

# vm_check DESCRIPTION COMMAND...: one test, passing when COMMAND exits 0;
# on failure its output becomes diagnostics.
vm_check() {
	_desc=$1
	shift
	if _out=$("$@" 2>&1); then
		vm_ok "$_desc"
	else
		_rc=$?
		vm_not_ok "$_desc"
		vm_diag "'$*' exited with status $_rc"
		printf '%s\n' "$_out" | vm_diag_lines
	fi
}

# vm_tap COMMAND...: run a program that prints TAP and pass its tests on,
# one line each.  A missing plan, fewer tests than planned, or a non-zero
# exit with no failing test (a crash) adds a failing test.
vm_tap() {
	{
		"$@" 2>&1
		echo "@@exit $?"
	} | awk -v mark="$VM_MARK" -v prog="$*" '
		/^1\.\.[0-9]+/ { plan = substr($1, 4) + 0; planned = 1; next }
		/^(not )?ok/ {
			n++
			if ($0 ~ /^not /) bad++
			line = $0
			sub(/^(not )?ok *[0-9]* *-? */, "", line)
			print mark, ($0 ~ /^not / ? "not ok - " : "ok - ") line
			next
		}
		/^@@exit / { status = $2 + 0; next }
		/^#/ { print mark, $0; next }
		{ print mark, "# " $0 }
		END {
			if (!planned) {
				print mark, "not ok - " prog ": printed no plan"; bad++
			} else if (n != plan) {
				print mark, "not ok - " prog ": planned " plan \
					" tests, ran " n; bad++
			}
			if (status != 0 && !bad) {
				print mark, "not ok - " prog ": exited with status " \
					status; bad++
			}
			exit bad != 0
		}' || VM_FAILED=1
}

# End a scenario: its status says whether a test failed.
vm_exit() { exit "$VM_FAILED"; }

# vm_retry SECONDS CMD...: CMD until it succeeds, for SECONDS at most (the
# output of its last try).
vm_retry() {
	_vm_retry_n=$(($1 * 10))
	shift
	while ! "$@" >/tmp/vm_retry.out 2>&1; do
		_vm_retry_n=$((_vm_retry_n - 1))
		[ "$_vm_retry_n" -le 0 ] && { cat /tmp/vm_retry.out; return 1; }
		usleep 100000
	done
	cat /tmp/vm_retry.out
}

# vm_wait_for PATH [SECONDS]: wait until PATH exists (a device node that
# the kernel creates when a driver binds, a sysfs entry).
vm_wait_for() { vm_retry "${2:-10}" test -e "$1"; }

# vm_alive PID: PID runs (a child that exited stays a zombie until waited
# for, which kill -0 cannot tell).
vm_alive() {
	_st=$(sed -n 's/.*) \(.\) .*/\1/p' "/proc/$1/stat" 2>/dev/null)
	[ -n "$_st" ] && [ "$_st" != Z ]
}

# vm_daemon_start LOG READY COMMAND...: COMMAND in the background, its
# output in LOG, until the shell command READY succeeds (checked every
# 0.1 s, for 20 s at most).  Sets $pid.  Fails, with LOG as diagnostics,
# when COMMAND exits first or READY never holds.
vm_daemon_start() {
	_log=$1 _ready=$2
	shift 2
	: >"$_log"
	"$@" >"$_log" 2>&1 &
	pid=$!
	_i=0
	until eval "$_ready"; do
		if [ $_i -ge 200 ] || ! vm_alive "$pid"; then
			vm_diag "$* did not start:"
			vm_diag_lines <"$_log"
			return 1
		fi
		usleep 100000
		_i=$((_i + 1))
	done
}

# vm_daemon_stop [SIGNAL]: SIGNAL (TERM) to $pid, then its exit status; a
# daemon still there after 20 s is killed (status 137).
vm_daemon_stop() {
	kill -"${1:-TERM}" "$pid"
	_i=0
	while vm_alive "$pid"; do
		if [ $_i -ge 200 ]; then
			vm_diag "$pid still runs 20 s after SIG${1:-TERM}"
			kill -9 "$pid"
			break
		fi
		usleep 100000
		_i=$((_i + 1))
	done
	{ wait "$pid"; } 2>/dev/null
}

# vm_write_files DIR PREFIX N: N files of 1 MiB of random bytes in the
# ext4 filesystem mounted on DIR, their checksums appended to /tmp/sums
# (which a scenario empties where it starts a filesystem), then sync.
vm_write_files() {
	grep -q " $1 ext4 " /proc/mounts || return 1
	_i=0
	while [ $_i -lt "$3" ]; do
		dd if=/dev/urandom of="$1/$2$_i" bs=64k count=16 2>/dev/null ||
			return 1
		_i=$((_i + 1))
	done
	(cd "$1" && sha256sum "$2"*) >>/tmp/sums && sync
}

# vm_remount_verify DEV DIR [keep]: mount DEV (ext4) on DIR with the caches
# dropped, so that what is read comes from the device's server, check
# every file of /tmp/sums, and unmount unless told to keep it mounted.
vm_remount_verify() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
	mount -t ext4 "$1" "$2" || return 1
	(cd "$2" && sha256sum -c /tmp/sums) || return 1
	[ "${3-}" = keep ] || umount "$2"
}

# vm_as_nobody COMMAND...: run COMMAND as uid and gid 65534 with no
# capability, the way an unprivileged daemon runs.
vm_as_nobody() {
	setpriv --reuid=65534 --regid=65534 --clear-groups \
		--inh-caps=-all -- "$@"
}

# ------------------------------------------------------------ NBD
# Needs "# vm-modules: @nbd".

# vm_nbd_device [N]: /dev/nbdN (default 0) once nbd.ko made it.
vm_nbd_device() {
	_dev=/dev/nbd${1:-0}
	vm_wait_for "$_dev" 5 || return 1
	[ -b "$_dev" ] || return 1
	printf '%s\n' "$_dev"
}

# ------------------------------------------------------------ TCMU
# Needs "# vm-modules: @tcmu".  The target's configuration lives in configfs
# (Documentation/target/tcmu-design.rst).

VM_TARGET=/sys/kernel/config/target

vm_configfs() {
	grep -q ' /sys/kernel/config ' /proc/mounts ||
		mount -t configfs configfs /sys/kernel/config
}

# vm_tcmu_backstore NAME SIZE_BYTES [CONFIG]: create and enable a TCMU user
# backstore; print its /dev/uioN.  A handler (the daemon under test) opens
# that device and serves the command ring; CONFIG is the handler's
# dev_config string (default NAME), which it reads from the uio name
# "tcm-user/HBA/NAME/CONFIG".
vm_tcmu_backstore() {
	vm_configfs || return 1
	_bs=$VM_TARGET/core/user_1/$1
	mkdir -p "$_bs" || return 1
	echo "dev_size=$2" >"$_bs/control" || return 1
	echo "dev_config=${3:-$1}" >"$_bs/control" || return 1
	# As ioflusher-tcmu(8) says: no netlink reply is waited for.
	echo nl_reply_supported=-1 >"$_bs/control" || return 1
	echo 1 >"$_bs/enable" || return 1
	for _u in /sys/class/uio/uio*; do
		case $(cat "$_u/name" 2>/dev/null) in
		"tcm-user/1/$1/"*)
			vm_wait_for "/dev/${_u##*/}" 5 || return 1
			printf '/dev/%s\n' "${_u##*/}"
			return 0
			;;
		esac
	done
	return 1
}

# vm_tcm_loop_lun BACKSTORE: export the user backstore BACKSTORE as LUN 0
# of a new tcm_loop target, that is a SCSI disk of this VM.  The kernel
# scans the disk at once, so the handler must already serve the ring (or
# the scan waits for the command timeout).  Prints the target's configfs
# directory.
vm_tcm_loop_lun() {
	vm_configfs || return 1
	_tpg=$VM_TARGET/loopback/naa.5001405000000001/tpgt_1
	mkdir -p "$_tpg/lun/lun_0" || return 1
	ln -s "$VM_TARGET/core/user_1/$1" "$_tpg/lun/lun_0/$1" || return 1
	echo naa.5001405000000002 >"$_tpg/nexus" || return 1
	printf '%s\n' "$_tpg"
}

# vm_caps_only PID HEX: every thread of PID has exactly the capabilities
# HEX (as /proc shows them: 0000000000004000 for CAP_IPC_LOCK alone),
# effective, permitted and in its bounding set; each thread's sets are
# printed.  Capabilities are per thread: cap_set_proc() and
# PR_CAPBSET_DROP act on the calling thread only, so a thread started
# before a daemon dropped them keeps them all.
vm_caps_only() {
	_bad=0
	for _s in /proc/$1/task/*/status; do
		_name=$(sed -n 's/^Name:[[:space:]]*//p' "$_s")
		for _set in CapEff CapPrm CapBnd; do
			_c=$(sed -n "s/^$_set:[[:space:]]*//p" "$_s")
			echo "$_name $_set $_c"
			[ "$_c" = "$2" ] || _bad=1
		done
	done
	[ $_bad = 0 ]
}
