# TAP for the shell tests: ok DESC; not_ok DESC [DETAILS], DETAILS as
# "# " diagnostics.  $fail is 1 once a test failed: exit $fail at the end.
n=0
fail=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() {
	n=$((n + 1))
	fail=1
	echo "not ok $n - $1"
	[ -n "${2-}" ] && printf '%s\n' "$2" | sed 's/^/# /'
	return 0
}
