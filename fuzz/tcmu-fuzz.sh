#!/bin/sh
# The libFuzzer target of ioflusher-tcmu's ring and CDB parser
# (fuzz/tcmu-fuzz.c), run for FUZZ_SECONDS (15 in make check; make
# fuzz-tcmu runs it longer, with a corpus kept in FUZZ_CORPUS).  TAP; a
# skip when clang or its libFuzzer runtime is not installed.  The seed is
# fixed unless FUZZ_SEED says otherwise (make fuzz-tcmu draws one): a
# short run in make check then tries the same inputs on every machine, a
# prefix of them on a slower one, and does not turn red by luck.
set -u
builddir=${top_builddir:-.}
fuzzer="$builddir/fuzz/tcmu-fuzz"
secs=${FUZZ_SECONDS:-15}
echo "1..1"
if [ ! -x "$fuzzer" ]; then
	echo "ok 1 - fuzz/tcmu-fuzz # SKIP not built: clang with libFuzzer (clang, libclang-rt-14-dev) is needed"
	exit 0
fi
seeds=$(mktemp -d /tmp/tcmu-fuzz-seeds-XXXXXX)
trap 'rm -rf "$seeds" ${tmpcorpus:+"$tmpcorpus"}' EXIT
if [ -n "${FUZZ_CORPUS:-}" ]; then
	corpus=$FUZZ_CORPUS
	mkdir -p "$corpus"
else
	tmpcorpus=$(mktemp -d /tmp/tcmu-fuzz-corpus-XXXXXX)
	corpus=$tmpcorpus
fi
# Seeds in the target's little language (see tcmu-fuzz.c): op 0 queues a
# CDB (length index, direction, data length / 2, CDB bytes, and for
# Data-Out a count and that many bytes of data, zeros after them), op 2 a READ
# or WRITE (16), op 4 overwrites a ring word, op 7 resets, op 9 processes.
printf '\000\000\002\000\200\022\000\000\000\377\000\011' >"$seeds/inquiry"
printf '\000\000\002\000\200\022\001\260\000\377\000\011' >"$seeds/vpd-b0"
# INQUIRY of the VPD pages 0x80, 0x83, 0xb1 and 0xb2, MODE SENSE (6) of
# every page, MODE SENSE (10) of the caching page's changeable values,
# READ CAPACITY (10), READ (12) of 8 blocks, SYNCHRONIZE CACHE (10) and
# (16).  With these seeds a 15 s run executed 93% of scsi.c's lines (81%
# without them) and 97% of ring.c's parse_cmd, measured with llvm-cov on
# a build with -fprofile-instr-generate; most of the rest is errors the
# memory backend never returns.
for page in 200 203 261 262; do
	printf "\\000\\000\\002\\000\\200\\022\\001\\$page\\000\\377\\000\\011" >"$seeds/vpd-$page"
done
printf '\000\000\002\000\200\032\000\077\000\377\000\011' >"$seeds/mode-sense-6"
printf '\000\001\002\000\200\132\000\110\000\000\000\000\000\377\000\011' >"$seeds/mode-sense-10"
printf '\000\001\002\000\004\045\000\000\000\000\000\000\000\000\000\011' >"$seeds/read-capacity-10"
printf '\000\001\000\000\000\065\000\000\000\000\000\000\000\000\000\011' >"$seeds/sync-cache"
printf '\000\002\002\010\000\250\000\000\000\000\000\000\000\000\010\000\000\011' >"$seeds/read-12"
printf '\000\003\000\000\000\221\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\011' >"$seeds/sync-cache-16"
printf '\000\003\002\000\020\236\020\000\000\000\000\000\000\000\000\000\000\000\040\000\000\011' >"$seeds/rc16"
printf '\002\001\010\000\000\100\002\000\010\000\000\100\011' >"$seeds/write-read"
printf '\002\001\010\000\000\100\004\000\007\377\377\377\377\000\000\000\000\011\007\011' >"$seeds/corrupt-iov"
# UNMAP of blocks 8 to 15 (a parameter list of 24 bytes), WRITE SAME(16)
# of 8 blocks with UNMAP, of 8 blocks of a pattern and of 8 of zeros, each
# over 9 blocks written first, then the 9 read.
printf '\002\001\010\000\000\010\011\000\001\001\000\014\102\000\000\000\000\000\000\000\030\000\030\000\026\000\020\000\000\000\000\000\000\000\000\000\000\000\010\000\000\000\010\000\000\000\000\011\002\000\010\000\000\010\011' >"$seeds/unmap"
printf '\002\001\010\000\000\020\011\000\003\001\001\000\223\010\000\000\000\000\000\000\000\020\000\000\000\010\000\000\000\011\002\000\010\000\000\020\011' >"$seeds/write-same-unmap"
printf '\002\001\010\000\000\040\011\000\003\001\001\000\223\000\000\000\000\000\000\000\000\040\000\000\000\010\000\000\004\132\132\132\132\011\002\000\010\000\000\040\011' >"$seeds/write-same"
printf '\002\001\010\000\000\060\011\000\003\001\001\000\223\000\000\000\000\000\000\000\000\060\000\000\000\010\000\000\000\011\002\000\010\000\000\060\011' >"$seeds/write-same-zeros"
# 18 blocks written from block 0, then UNMAP of blocks 7 to 16, parts of
# the pages either side of the whole one (zeroed, not given back), and the
# 18 read: the written ones either side of the zeros.
printf '\002\001\021\000\000\000\011\000\001\001\000\014\102\000\000\000\000\000\000\000\030\000\030\000\026\000\020\000\000\000\000\000\000\000\000\000\000\000\007\000\000\000\012\000\000\000\000\011\002\000\021\000\000\000\011' >"$seeds/unmap-partial-pages"
# A WRITE (16) of 9 blocks at block 64, then GET LBA STATUS from block 0
# into 128 bytes: runs deallocated, mapped, deallocated.
printf '\002\001\010\000\000\100\000\003\002\000\100\236\022\000\000\000\000\000\000\000\000\000\000\000\200\000\000\011' >"$seeds/get-lba-status"
# 8 blocks of 0x03 written at block 16376, the LUN's last; a WRITE of 9
# blocks of 0x05 from 16380, past its end, refused; the 8 read back: all
# 0x03 still (the shadow in tcmu-fuzz.c checks it).
printf '\002\003\007\000\077\370\011\002\005\010\000\077\374\011\002\000\007\000\077\370\011' >"$seeds/refused-write"
# A READ whose iovec is moved to data page 40, which no command has used:
# the SIGBUS guard's path (op 4 writes the word at ring offset 48).
printf '\002\000\007\000\000\000\004\000\006\000\000\000\000\000\002\300\000\011' >"$seeds/unallocated-page"
# Writes and their processing, 300 times: the command ring (16 KiB) wraps,
# with PAD entries, more than once, and only the daemon writes the ring.
i=0
while [ $i -lt 300 ]; do
	printf '\002\001\010\000\000\100\011'
	i=$((i + 1))
done >"$seeds/wrap"
seed=${FUZZ_SEED-1}
set +e
"$fuzzer" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 \
	${seed:+-seed="$seed"} \
	-print_final_stats=1 -artifact_prefix="$builddir/fuzz/tcmu-" \
	"$corpus" "$seeds" 2>"$builddir/fuzz/tcmu-fuzz.out"
rc=$?
set -e
sed 's/^/# /' "$builddir/fuzz/tcmu-fuzz.out" | grep -E '^# (#[0-9]+.*(DONE|pulse)|Done|stat::number_of_executed_units|stat::peak_rss|==[0-9]+==|SUMMARY)' || true
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$builddir/fuzz/tcmu-fuzz.out")
# A run that executed next to nothing fuzzed nothing.
if [ "$rc" -eq 0 ] && [ "${runs:-0}" -gt 1000 ]; then
	echo "ok 1 - fuzz/tcmu-fuzz: ${runs:-?} inputs in ${secs} s, no fault"
else
	echo "not ok 1 - fuzz/tcmu-fuzz: exit $rc, ${runs:-0} inputs: see $builddir/fuzz/tcmu-fuzz.out and any fuzz/tcmu-crash-* input"
	tail -40 "$builddir/fuzz/tcmu-fuzz.out" | sed 's/^/# /'
fi
