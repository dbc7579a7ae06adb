# Shared by the tests of ioflusher-nbd: TAP output, a daemon per test on a
# unix socket in a temporary directory, killed at exit whatever happens.
# shellcheck shell=sh

builddir=${top_builddir:-.}
srcdir=${top_srcdir:-.}
NBD_DAEMON=${NBD_DAEMON:-$builddir/examples/nbd/ioflusher-nbd}
# This host has no CAP_SYS_RESOURCE: the tests run the daemon best effort
# (lifecycle.sh checks that it refuses to start without the option).
NBD_OPTS=${NBD_OPTS:---best-effort}

tap_n=0
tap_fail=0
tap_plan() { echo "1..$1"; }
tap_ok() {
	tap_n=$((tap_n + 1))
	echo "ok $tap_n - $1"
}
tap_not_ok() {
	tap_n=$((tap_n + 1))
	tap_fail=$((tap_fail + 1))
	echo "not ok $tap_n - $1"
}
tap_skip() {
	tap_n=$((tap_n + 1))
	echo "ok $tap_n - $1 # SKIP $2"
}
tap_diag() { sed 's/^/# /'; }
# tap_check DESCRIPTION COMMAND...: ok if the command succeeds; the output
# of a failing one goes to the log as diagnostics.
tap_check() {
	desc=$1
	shift
	if out=$("$@" 2>&1); then
		tap_ok "$desc"
	else
		tap_not_ok "$desc"
		printf '%s\n' "$out" | tail -n 30 | tap_diag
	fi
	return 0
}
# Skip the whole script when a client is missing.
nbd_require() {
	for c in "$@"; do
		if ! command -v "$c" >/dev/null 2>&1; then
			echo "1..0 # SKIP $c not installed (see scripts/packages)"
			exit 0
		fi
	done
}

nbd_tmp=$(mktemp -d "${TMPDIR:-/tmp}/ioflusher-nbd-test.XXXXXX")
nbd_pids=
nbd_cleanup() {
	for p in $nbd_pids; do
		kill -9 "$p" 2>/dev/null
	done
	rm -rf "$nbd_tmp"
}
trap nbd_cleanup EXIT
trap 'exit 1' INT TERM HUP

# nbd_start NAME ARGS...: start a daemon on $nbd_tmp/NAME.sock, wait until
# it serves, set $nbd_pid and $uri.  Its socket is put in place before the
# audit, the dropping of capabilities and the sandbox: "serving" is said
# after them all.
nbd_start() {
	name=$1
	shift
	sock=$nbd_tmp/$name.sock
	# shellcheck disable=SC2086
	"$NBD_DAEMON" $NBD_OPTS --socket "$sock" "$@" \
		>"$nbd_tmp/$name.out" 2>"$nbd_tmp/$name.err" &
	nbd_pid=$!
	nbd_pids="$nbd_pids $nbd_pid"
	i=0
	while [ ! -S "$sock" ] ||
		! grep -q ': serving ' "$nbd_tmp/$name.err"; do
		i=$((i + 1))
		if [ $i -gt 100 ] || ! kill -0 "$nbd_pid" 2>/dev/null; then
			echo "# daemon $name did not start:" 
			tap_diag <"$nbd_tmp/$name.err"
			return 1
		fi
		sleep 0.1
	done
	uri="nbd+unix:///?socket=$sock"
	return 0
}

# nbd_stop PID: SIGTERM, then wait (bounded); the daemon's exit status.
nbd_stop() {
	kill -TERM "$1" 2>/dev/null
	i=0
	while kill -0 "$1" 2>/dev/null; do
		i=$((i + 1))
		if [ $i -gt 150 ]; then
			kill -9 "$1" 2>/dev/null
			break
		fi
		sleep 0.1
	done
	wait "$1"
}

# nbd_alive PID: the daemon still runs.  Not kill -0, which a daemon that
# died and was not yet waited for (a zombie) passes too.
nbd_alive() {
	local st
	st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "${st%% *}" != Z ]
}

# nbd_retry CMD...: CMD until it succeeds, for 5 s at most.  For a client
# right after others left: each connection's thread gives its slot back a
# moment after it hung up, so a client at once may still be refused.
nbd_retry() { nbd_wait 5 "$@"; }

# nbd_wait SECONDS CMD...: CMD until it succeeds, for SECONDS at most,
# trying every tenth of a second.
nbd_wait() {
	local i n=$(($1 * 10))
	shift
	for i in $(seq "$n"); do
		"$@" && return 0
		sleep 0.1
	done
	return 1
}

# nbd_client_tap LABEL STATUS <OUTPUT: the lines of nbd-malformed.py as
# TAP lines of ours, labelled; STATUS is its exit status, which must be 0
# (all passed) or 1 (some failed, each said): anything else (killed by its
# timeout, crashed) fails a test of its own, since what it did not get to
# was never checked.
nbd_client_tap() {
	while IFS= read -r line; do
		case $line in
		"ok - "*) tap_ok "$1: ${line#ok - }" ;;
		"not ok - "*) tap_not_ok "$1: ${line#not ok - }" ;;
		*) echo "# $line" ;;
		esac
	done
	case $2 in
	0 | 1) ;;
	*) tap_not_ok "$1: the malformed-input client ran to its end (exit $2)" ;;
	esac
}

nbd_done() {
	[ "$tap_fail" -eq 0 ]
}
