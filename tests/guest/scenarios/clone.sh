# Scenario 2: SAN clone seen by the kernel initiator. The guest fills an ext4 LUN, unmounts it
# (clean file system), the host makes a linked clone and maps it as LUN 1 of the same target;
# the guest rescans the session, finds the clone with its own NAA identifier, the clone's
# file system checks clean and holds the same files; writes to either side stay on that side.
# Env: PORTAL IQN
discover
login
dev=$(wait_disk 0 60) || fail disk-appears "no disk for LUN 0 after login"
pass disk-appears
step mkfs mkfs.ext4 -q -F "/dev/$dev"
step mount mount -t ext4 "/dev/$dev" /mnt
step write-files write_files /mnt 8 256
step umount umount /mnt
wait_for_host cloned
step rescan iscsiadm -m session --rescan
clone=$(wait_disk 1 60) || fail clone-appears "no disk for LUN 1 after the rescan"
pass clone-appears
w0=$(cat "/sys/block/$dev/device/wwid")
w1=$(cat "/sys/block/$clone/device/wwid")
say "INFO wwids origin=$w0 clone=$w1"
[ -n "$w1" ] && [ "$w0" != "$w1" ] || fail clone-own-id "origin $w0, clone $w1"
pass clone-own-id
[ "$(cat /sys/block/$clone/size)" = "$(cat /sys/block/$dev/size)" ] ||
  fail clone-size "clone $(cat /sys/block/$clone/size) sectors, origin $(cat /sys/block/$dev/size)"
pass clone-size
step clone-e2fsck e2fsck -fn "/dev/$clone"
mkdir -p /mnt2
step mount-both mount -t ext4 "/dev/$dev" /mnt
# Same file system UUID on both disks: ext4 mounts it anyway (no udev/by-uuid here).
step mount-clone mount -t ext4 "/dev/$clone" /mnt2
step clone-checksums verify_files /mnt2
step origin-checksums verify_files /mnt
step write-clone dd if=/dev/urandom of=/mnt2/only-in-clone bs=64k count=16 conv=fsync
step write-origin dd if=/dev/urandom of=/mnt/only-in-origin bs=64k count=16 conv=fsync
step rm-in-clone rm /mnt2/data/f1
step umount-both umount /mnt /mnt2
drop_caches
step remount-both sh -c "mount -t ext4 /dev/$dev /mnt && mount -t ext4 /dev/$clone /mnt2"
[ -f /mnt2/only-in-clone ] && [ ! -e /mnt/only-in-clone ] || fail clone-isolated "clone write visible on the origin"
[ -f /mnt/only-in-origin ] && [ ! -e /mnt2/only-in-origin ] || fail origin-isolated "origin write visible on the clone"
[ -f /mnt/data/f1 ] || fail origin-isolated "delete in the clone removed the origin's file"
pass isolated
step origin-still-verifies verify_files /mnt
step umount-again umount /mnt /mnt2
step e2fsck-origin e2fsck -fn "/dev/$dev"
step e2fsck-clone e2fsck -fn "/dev/$clone"
errs=$(kernel_errors)
[ -z "$errs" ] || fail no-kernel-errors "$errs"
pass no-kernel-errors
logout
