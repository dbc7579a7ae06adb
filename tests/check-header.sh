#!/bin/sh
# The public header compiles alone, under -std=c99 -pedantic, and from C++.
set -u
srcdir="${top_srcdir:-.}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "1..3"
printf '#include <ioflusher.h>\nint main(void) { return ioflusher_flag_get() < -1; }\n' > "$tmp/alone.c"
if ${CC:-cc} -I"$srcdir/include" -Wall -Wextra -Werror -c "$tmp/alone.c" -o "$tmp/alone.o" 2> "$tmp/err"; then
	echo "ok 1 - header compiles alone"
else
	echo "not ok 1 - header does not compile alone"; sed 's/^/# /' "$tmp/err"
fi
if ${CC:-cc} -I"$srcdir/include" -std=c99 -pedantic -Wall -Wextra -Werror -c "$tmp/alone.c" -o "$tmp/c99.o" 2> "$tmp/err"; then
	echo "ok 2 - header compiles with -std=c99 -pedantic"
else
	echo "not ok 2 - header fails -std=c99 -pedantic"; sed 's/^/# /' "$tmp/err"
fi
if ${CXX:-c++} -I"$srcdir/include" -Wall -Wextra -Werror -pedantic -c "$srcdir/tests/header-cxx.cc" -o "$tmp/cxx.o" 2> "$tmp/err"; then
	echo "ok 3 - header compiles from C++"
else
	echo "not ok 3 - header fails from C++"; sed 's/^/# /' "$tmp/err"
fi
