#!/bin/sh
# Every exported function has a man page (its own or an alias page), and
# every page renders.
set -u
srcdir="${top_srcdir:-.}"
builddir="${top_builddir:-.}"
sym="$srcdir/lib/libioflusher.sym"
symbols=$(sed -n 's/^[[:space:]]*\(ioflusher_[a-z0-9_]*\);.*/\1/p' "$sym")
# Every page made from a source in man/, the daemons' (section 8) too.
pages=$(cd "$srcdir/man" && ls ./*.scd | sed 's|^\./||; s|\.scd$||')
n=0
for s in $symbols $pages; do n=$((n + 1)); done
echo "1..$n"
i=0
page_path() {
	for d in "$builddir/man" "$srcdir/man"; do
		if [ -f "$d/$1" ]; then
			echo "$d/$1"
			return 0
		fi
	done
	return 1
}
for s in $symbols; do
	i=$((i + 1))
	case $s in *.*) p=$s ;; *) p=$s.3 ;; esac
	if ! f=$(page_path "$p"); then
		echo "not ok $i - $s has no man page (man/$p)"
		continue
	fi
	# An alias page names its family page, which must exist.
	target=$(sed -n 's/^\.so man3\///p' "$f")
	if [ -n "$target" ] && ! page_path "$target" >/dev/null; then
		echo "not ok $i - $s: alias to missing man/$target"
		continue
	fi
	echo "ok $i - $s documented in $(basename "${target:-$f}")"
done
for p in $pages; do
	i=$((i + 1))
	if ! f=$(page_path "$p"); then
		echo "not ok $i - man/$p missing"
		continue
	fi
	# groff comes with man-db (groff-base), which scripts/packages lists:
	# without it nothing was rendered, and that is no pass.
	if ! command -v groff >/dev/null 2>&1; then
		echo "not ok $i - $p renders: groff is missing"
		continue
	fi
	warn=$(groff -man -Tutf8 -ww -z "$f" 2>&1)
	if [ -n "$warn" ]; then
		echo "not ok $i - $p renders with warnings"
		printf '%s\n' "$warn" | sed 's/^/# /'
		continue
	fi
	echo "ok $i - $p renders"
done
