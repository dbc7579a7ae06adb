#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# make check-vm runs this through automake's TAP driver: tests/vm/run on
# this build tree, for the scenarios in VM_SCENARIOS (all by default).
# The TAP lines carry the verdict: run exits 1 only after a "not ok" line
# and 77 after "1..0 # SKIP", which the driver would count once more as an
# error.  99 (after "Bail out!") stays an error.
set -euo pipefail

: "${top_srcdir:?run through make check-vm}"
rc=0
# shellcheck disable=SC2086 # a list of scenario names
bash "$top_srcdir/tests/vm/run" --builddir "${top_builddir:-.}" \
	${IOFLUSHER_VM_SCENARIOS-} || rc=$?
if ((rc == 1 || rc == 77)); then
	exit 0
fi
exit "$rc"
