#!/bin/sh
# PID 1 of the kernel-initiator test guest (busybox sh). Mounts the API file systems, loads the
# iSCSI/SCSI/ext4/NIC modules, brings up the QEMU user-mode network (no default route: the
# guest reaches the host as 10.0.2.2 and nothing else), starts iscsid, runs the scenario that
# the host appended as a second initramfs (/scenario/run.sh with /scenario/env), prints
# `LUNAR-GUEST: DONE` and powers off. Verdicts are `LUNAR-GUEST: PASS|FAIL ...` lines on the
# serial console (see lib.sh).
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /dev/pts /run/lock/iscsi /var/lock/iscsi /etc/iscsi/nodes /etc/iscsi/send_targets \
  /etc/iscsi/ifaces /tmp
. /lib/lunar-guest.sh
guest_main
# guest_main powers off; if that ever fails, do not return from PID 1 (kernel panic).
poweroff -f
while :; do sleep 3600; done
