#!/bin/sh
# A short libFuzzer run of the handshake and request parser of
# ioflusher-nbd (examples/nbd/fuzz-nbd.c), under ASan and UBSan.  Built
# with clang when it is there; "make fuzz-nbd" runs it longer, with a
# seed of its own.  Here the seed is fixed (NBD_FUZZ_SEED): the same
# inputs on every machine, so that make check does not turn red by luck.
. "${top_srcdir:-.}/tests/nbd/lib.sh"
fuzzer=$builddir/examples/nbd/fuzz-nbd
if [ ! -x "$fuzzer" ]; then
	echo "1..0 # SKIP the fuzzer was not built (clang and libclang-rt-14-dev, see scripts/packages)"
	exit 0
fi
seconds=${NBD_FUZZ_SECONDS:-20}
python3 "$srcdir/tests/nbd/fuzz-seeds.py" "$nbd_tmp/seeds"
mkdir -p "$nbd_tmp/corpus"
fuzzer=$(cd "$(dirname "$fuzzer")" && pwd)/fuzz-nbd
# -rss_limit_mb: the mempools and the export are mapped once and reused.
(cd "$nbd_tmp" && timeout $((seconds + 60)) "$fuzzer" -seed="${NBD_FUZZ_SEED:-1}" \
	-max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 \
	corpus seeds >fuzz.log 2>&1)
rc=$?
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$nbd_tmp/fuzz.log")
if [ $rc -eq 0 ] && [ "${runs:-0}" -gt 1000 ]; then
	tap_ok "fuzz-nbd: $runs inputs in ${seconds}s, no crash, the replies well-formed, nothing written outside the export"
else
	tap_not_ok "fuzz-nbd: ${seconds}s without a crash (exit $rc, ${runs:-0} inputs)"
	tail -n 40 "$nbd_tmp/fuzz.log" | tap_diag
	# Keep the input that failed, where the log can say.
	for f in "$nbd_tmp"/crash-* "$nbd_tmp"/leak-* "$nbd_tmp"/timeout-*; do
		[ -e "$f" ] && cp "$f" "$builddir/" && echo "# kept $(basename "$f") in $builddir"
	done
fi
tap_plan "$tap_n"
nbd_done
