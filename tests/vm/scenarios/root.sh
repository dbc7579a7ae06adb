#!/bin/sh
# The library's success paths, as root with every capability.
#
# Flag, scopes, inheritance (threads, fork, execve), audit, child_clear,
# OOM, setup, capabilities, sandbox and ioflusher(1): tests/vm/vm-suite.c.
#
# vm-binaries: tests/vm/vm-suite tools/ioflusher
# vm-memory: 256
# vm-timeout: 180
. /vm/lib.sh

vm_tap vm-suite root
vm_exit
