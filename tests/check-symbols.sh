#!/bin/sh
# The shared library exports only ioflusher_* symbols, each versioned
# LIBIOFLUSHER_1 (or a later node), and exactly those of the version script.
# The static archive exports those and names prefixed ioflusher__ only, so
# that a program linked with it statically may use any other name.
set -u
lib="${top_builddir:-.}/lib/.libs/libioflusher.so"
sym="${top_srcdir:-.}/lib/libioflusher.sym"
echo "1..4"
if [ ! -f "$lib" ]; then
	echo "Bail out! $lib not built"
	exit 1
fi
exported=$(${NM:-nm} -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' | grep -v '^LIBIOFLUSHER_' | sort)
stray=$(printf '%s\n' "$exported" | sed 's/@.*//' | grep -v '^ioflusher_' || true)
if [ -z "$stray" ]; then
	echo "ok 1 - only ioflusher_* symbols exported"
else
	echo "not ok 1 - symbols outside the ioflusher_ namespace: $stray"
fi
unversioned=$(printf '%s\n' "$exported" | grep -v '@@*LIBIOFLUSHER_[0-9]' || true)
if [ -z "$unversioned" ]; then
	echo "ok 2 - every exported symbol is versioned"
else
	echo "not ok 2 - unversioned: $unversioned"
fi
want=$(sed -n 's/^[[:space:]]*\(ioflusher_[a-z0-9_]*\);.*/\1/p' "$sym" | sort)
have=$(printf '%s\n' "$exported" | sed 's/@.*//' | sort)
if [ "$want" = "$have" ]; then
	echo "ok 3 - exports match lib/libioflusher.sym ($(printf '%s\n' "$have" | wc -l) symbols)"
else
	echo "not ok 3 - exports differ from the version script:"
	diff -u "$(printf '%s\n' "$want" > "${TMPDIR:-/tmp}/want.$$"; echo "${TMPDIR:-/tmp}/want.$$")" - <<EOT | sed 's/^/# /'
$have
EOT
	rm -f "${TMPDIR:-/tmp}/want.$$"
fi
archive="${top_builddir:-.}/lib/.libs/libioflusher.a"
if [ ! -f "$archive" ]; then
	echo "ok 4 # SKIP no static library built"
else
	stray=$(${NM:-nm} -g --defined-only "$archive" | awk 'NF == 3 {print $3}' |
		grep -v '^ioflusher__' | sort -u | grep -vxF "$want" || true)
	if [ -z "$stray" ]; then
		echo "ok 4 - the static library defines no name outside ioflusher__ but the API"
	else
		echo "not ok 4 - the static library defines:" $stray
	fi
fi
