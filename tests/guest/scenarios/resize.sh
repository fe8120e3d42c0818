# Scenario 3: online resize. The guest has the LUN mounted with data on it; the host grows the
# LUN (lunarctl lun resize); the guest rescans the disk, sees the new capacity, grows ext4 while
# mounted (resize2fs), and every file still verifies; e2fsck clean afterwards.
# Env: PORTAL IQN NEW_SECTORS (512-byte sectors after the resize)
discover
login
dev=$(wait_disk 0 60) || fail disk-appears "no disk for LUN 0 after login"
pass disk-appears
old=$(cat "/sys/block/$dev/size")
say "INFO size_before $old"
step mkfs mkfs.ext4 -q -F "/dev/$dev"
step mount mount -t ext4 "/dev/$dev" /mnt
step write-files write_files /mnt 8 128
step sync sync
blocks_before=$(df -k /mnt | awk 'NR==2 {print $2}')
wait_for_host resized
# The target reports CAPACITY DATA HAS CHANGED; a rescan re-reads READ CAPACITY either way.
echo 1 > "/sys/block/$dev/device/rescan"
t=0
while [ "$(cat /sys/block/$dev/size)" != "$NEW_SECTORS" ]; do
  sleep 1; t=$((t + 1))
  [ "$t" -lt 30 ] || fail new-capacity "size $(cat /sys/block/$dev/size) sectors, want $NEW_SECTORS"
done
pass new-capacity
step resize2fs resize2fs "/dev/$dev"
blocks_after=$(df -k /mnt | awk 'NR==2 {print $2}')
say "INFO fs_kib $blocks_before $blocks_after"
[ "$blocks_after" -gt "$blocks_before" ] || fail fs-grew "file system still $blocks_after KiB"
pass fs-grew
step write-more dd if=/dev/urandom of=/mnt/after-resize bs=64k count=16 conv=fsync
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
