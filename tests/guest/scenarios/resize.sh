# Scenario 3: online resize. The guest has the LUN mounted with data on it; the host grows the
# LUN (lunarctl lun resize); I/O from the guest gets the CAPACITY DATA HAS CHANGED unit attention
# (the kernel logs it); the guest rescans the disk, sees the new capacity, grows ext4 while
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
hctl=$(ls "/sys/block/$dev/device/scsi_device")
ua_msg="sd $hctl: Capacity data has changed"
n=$(dmesg | grep -c "$ua_msg" || true)
[ "$n" -eq 0 ] || fail no-ua-before-resize "the kernel logged '$ua_msg' before the resize"
pass no-ua-before-resize
wait_for_host resized
# The target reports CAPACITY DATA HAS CHANGED (2A/09) on the next command after the resize. The
# SCSI midlayer logs it (scsi_error.c, scsi_report_sense: "Capacity data has changed") and
# retries the command; the guest has no udev, so nothing rescans on its own. Issue I/O (a direct
# read, or ext4's own writes may already have carried the UA) and wait for the kernel's line.
step read-after-resize dd if="/dev/$dev" of=/dev/null bs=4096 count=1 iflag=direct
t=0
until dmesg | grep -q "$ua_msg"; do
  [ "$t" -lt 10 ] || fail capacity-changed-ua "no '$ua_msg' in dmesg 10 s after the resize"
  dd if="/dev/$dev" of=/dev/null bs=4096 count=1 skip=$((t + 1)) iflag=direct 2>/dev/null
  sleep 1; t=$((t + 1))
done
say "INFO capacity_ua $(dmesg | grep "$ua_msg" | tail -n 1 | sed 's/^\[[^]]*\] *//')"
# No rescan has happened yet: the UA alone does not change the size the kernel uses.
say "INFO size_at_ua $(cat /sys/block/$dev/size)"
pass capacity-changed-ua
# A rescan re-reads READ CAPACITY (what an admin, or a udev rule on the kernel's
# SDEV_UA=CAPACITY_DATA_HAS_CHANGED uevent, does).
echo 1 > "/sys/block/$dev/device/rescan"
t=0
while [ "$(cat /sys/block/$dev/size)" != "$NEW_SECTORS" ]; do
  sleep 1; t=$((t + 1))
  [ "$t" -lt 30 ] || fail new-capacity "size $(cat /sys/block/$dev/size) sectors, want $NEW_SECTORS"
done
pass new-capacity
# The block layer logs the new size (set_capacity_and_notify): "sdX: detected capacity change".
dmesg | grep -q "$dev: detected capacity change from $old to $NEW_SECTORS" ||
  fail capacity-change-logged "no '$dev: detected capacity change from $old to $NEW_SECTORS' in dmesg"
pass capacity-change-logged
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
