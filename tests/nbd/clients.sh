#!/bin/sh
# ioflusher-nbd with libnbd's clients: nbdinfo sees the export as it is
# configured; nbdcopy round-trips random data through it with several
# connections, compared byte for byte.
. "${top_srcdir:-.}/tests/nbd/lib.sh"
nbd_require nbdinfo nbdcopy

info_has() {
	printf '%s\n' "$info" | grep -q -x "[[:space:]]*$1" ||
		{ echo "missing: $1"; printf '%s\n' "$info"; return 1; }
}
check_info() {
	for line in "$@"; do
		info_has "$line" || return 1
	done
}

nbd_start mem --memory 64M --export-name demo || exit 1
uri="nbd+unix:///demo?socket=$nbd_tmp/mem.sock"
info=$(timeout 30 nbdinfo "$uri" 2>&1)
tap_check "nbdinfo: export name" check_info 'export="demo":'
tap_check "nbdinfo: size of --memory 64M" check_info 'export-size: 67108864 (64M)'
tap_check "nbdinfo: block sizes 1, 4096, 32M" check_info \
	'block_size_minimum: 1' 'block_size_preferred: 4096' \
	'block_size_maximum: 33554432'
tap_check "nbdinfo: writable, flush, FUA, trim, zero, fast zero, DF" check_info \
	'is_read_only: false' 'can_flush: true' 'can_fua: true' \
	'can_trim: true' 'can_zero: true' 'can_fast_zero: true' 'can_df: true'
tap_check "nbdinfo: multi-conn (one shared backend)" check_info 'can_multi_conn: true'
info=$(timeout 30 nbdinfo --list "nbd+unix:///?socket=$nbd_tmp/mem.sock" 2>&1)
tap_check "nbdinfo --list: the export is listed" check_info 'export="demo":'

head -c 48M /dev/urandom >"$nbd_tmp/random.img"
tap_check "nbdcopy: 48M of random data in, 4 connections" \
	timeout 60 nbdcopy --connections=4 --requests=16 "$nbd_tmp/random.img" "$uri"
tap_check "nbdcopy: and out again, 4 connections" \
	timeout 60 nbdcopy --connections=4 "$uri" "$nbd_tmp/out.img"
tap_check "nbdcopy: round trip is byte for byte the same (first 48M)" \
	cmp -n 50331648 "$nbd_tmp/random.img" "$nbd_tmp/out.img"
tap_check "nbdcopy: the unwritten 16M read as zeroes" \
	cmp -i 50331648 -n 16777216 "$nbd_tmp/out.img" /dev/zero
nbd_stop "$nbd_pid"

truncate -s 48M "$nbd_tmp/disk.img"
# --poll 0: the connection thread sleeps in recv(2) at once, never spins.
nbd_start file --file "$nbd_tmp/disk.img" --threads 3 --poll 0 || exit 1
info=$(timeout 30 nbdinfo "$uri" 2>&1)
tap_check "nbdinfo: the file backend's size is the file's" \
	check_info 'export-size: 50331648 (48M)'
tap_check "nbdcopy: into the file backend, 4 connections" \
	timeout 60 nbdcopy --connections=4 "$nbd_tmp/random.img" "$uri"
tap_check "nbdcopy: back out of it, 2 connections" \
	timeout 60 nbdcopy --connections=2 "$uri" "$nbd_tmp/out2.img"
tap_check "nbdcopy: file round trip is byte for byte the same" \
	cmp "$nbd_tmp/random.img" "$nbd_tmp/out2.img"
tap_check "the file itself holds the data" cmp "$nbd_tmp/random.img" "$nbd_tmp/disk.img"
nbd_stop "$nbd_pid"

# raw_writes SOCKET: a write, a write zeroes and a trim of the first 4 KiB,
# sent whatever the export's flags say: libnbd and qemu refuse a read-only
# export themselves, so only a client like this one reaches the server's
# refusal.  Exit 0 when each is answered EPERM.
raw_writes() {
	timeout 30 python3 - "$1" <<'EOF2'
import socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
def recv(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            sys.exit("the server hung up")
        b += c
    return b
assert recv(18)[:16] == b"NBDMAGICIHAVEOPT", "no greeting"
s.sendall(struct.pack(">I", 3))  # fixed newstyle, no zeroes
s.sendall(struct.pack(">QIIIH", 0x49484156454F5054, 7, 6, 0, 0))  # GO ""
while True:
    _, _, typ, ln = struct.unpack(">QIII", recv(20))
    recv(ln)
    if typ == 1:
        break
    if typ & 0x80000000:
        sys.exit("GO refused")
bad = 0
for cookie, (cmd, name, payload) in enumerate(
        [(1, "write", b"\x5a" * 4096), (6, "write zeroes", b""), (4, "trim", b"")], 1):
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, cmd, cookie, 0, 4096) + payload)
    magic, err, c = struct.unpack(">IIQ", recv(16))
    print("%s: error %d" % (name, err))
    bad += magic != 0x67446698 or c != cookie or err != 1
s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 2, 99, 0, 0))
sys.exit(bad)
EOF2
}

# The file holds random.img now: what is sent below differs from it, so
# that a write that got through would show in the file.
head -c 48M /dev/urandom >"$nbd_tmp/other.img"
nbd_start ro --file "$nbd_tmp/disk.img" --readonly || exit 1
info=$(timeout 30 nbdinfo "$uri" 2>&1)
tap_check "nbdinfo: --readonly is read-only, without trim or zero" check_info \
	'is_read_only: true' 'can_trim: false' 'can_zero: false'
# libnbd refuses this itself, seeing the read-only flag.
if timeout 30 nbdcopy "$nbd_tmp/other.img" "$uri" >"$nbd_tmp/ro.out" 2>&1; then
	tap_not_ok "nbdcopy into a --readonly export fails"
else
	tap_ok "nbdcopy into a --readonly export fails"
fi
tap_diag <"$nbd_tmp/ro.out"
tap_check "nbdcopy into a --readonly export: the file is unchanged" \
	cmp "$nbd_tmp/random.img" "$nbd_tmp/disk.img"
if command -v python3 >/dev/null 2>&1; then
	tap_check "--readonly: a write, a write zeroes and a trim sent anyway get EPERM" \
		raw_writes "$nbd_tmp/ro.sock"
	tap_check "--readonly: after them, the file is unchanged" \
		cmp "$nbd_tmp/random.img" "$nbd_tmp/disk.img"
else
	tap_skip "--readonly: writes sent anyway get EPERM" "no python3"
fi
nbd_stop "$nbd_pid"
tap_plan "$tap_n"
nbd_done
