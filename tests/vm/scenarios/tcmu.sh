#!/bin/sh
# TCMU smoke: configfs, target_core_mod, target_core_user and tcm_loop load.
#
# A user backstore is created and enabled, which makes /dev/uioN for a
# handler, and a tcm_loop target is made; a daemon scenario then serves
# the ring and exports the backstore with vm_tcm_loop_lun (lib.sh).
#
# vm-modules: @tcmu
# vm-memory: 256
# vm-timeout: 60
. /vm/lib.sh

vm_check "configfs mounts and shows the target core" \
	sh -c '. /vm/lib.sh && vm_configfs && test -f "$VM_TARGET/version"'
if uio=$(vm_tcmu_backstore smoke 16777216); then
	vm_ok "an enabled user backstore makes $uio"
	vm_diag "$(cat "/sys/class/uio/${uio#/dev/}/name")"
else
	vm_not_ok "an enabled user backstore makes /dev/uioN"
	dmesg | tail -n 20 | vm_diag_lines
fi
vm_check "tcm_loop makes a target and its portal group" \
	mkdir -p "$VM_TARGET/loopback/naa.5001405000000001/tpgt_1"
vm_check "the backstore and the target are removed again" sh -c "
	rmdir $VM_TARGET/loopback/naa.5001405000000001/tpgt_1 &&
	rmdir $VM_TARGET/loopback/naa.5001405000000001 &&
	rmdir $VM_TARGET/core/user_1/smoke &&
	test ! -e $VM_TARGET/core/user_1/smoke"
vm_exit
