# Scenario 1: discovery, login (optionally CHAP and CRC32C digests), mkfs.ext4, files written and
# verified after a remount with cold caches, e2fsck clean, logout, the disk goes away.
# Env: PORTAL IQN [CHAP_USER CHAP_SECRET] [DIGEST=CRC32C]
discover
configure_node
login
dev=$(wait_disk 0 60) || fail disk-appears "no disk for LUN 0 after login"
pass disk-appears
say "INFO disk $dev size_sectors=$(cat /sys/block/$dev/size) wwid=$(cat /sys/block/$dev/device/wwid 2>/dev/null)"
check_digests
step mkfs mkfs.ext4 -q -F "/dev/$dev"
step mount mount -t ext4 "/dev/$dev" /mnt
step write-files write_files /mnt 12 256
step sync sync
step umount umount /mnt
drop_caches
step remount mount -t ext4 "/dev/$dev" /mnt
step checksums verify_files /mnt
step umount-again umount /mnt
step e2fsck e2fsck -fn "/dev/$dev"
errs=$(kernel_errors)
[ -z "$errs" ] || fail no-kernel-errors "$errs"
pass no-kernel-errors
logout
wait_no_disks 60 || fail disk-gone "a disk is still present after logout: $(ls /sys/block)"
pass disk-gone
