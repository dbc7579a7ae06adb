#!/bin/sh
# The same calls as nobody with no capability: each fails, rightly diagnosed.
#
# Each test changes user (to 65534) itself (tests/vm/vm-suite.c), some after setting
# the flag as root, the way a daemon started by root drops privileges.
#
# vm-binaries: tests/vm/vm-suite tools/ioflusher
# vm-memory: 256
# vm-timeout: 180
. /vm/lib.sh

vm_tap vm-suite user
vm_exit
