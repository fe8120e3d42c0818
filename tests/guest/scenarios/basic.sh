# Scenario 1: discovery, login (optionally CHAP and CRC32C digests), mkfs.ext4, files written and
# verified after a remount with cold caches, e2fsck clean, logout, the disk goes away.
# Env: PORTAL IQN [CHAP_USER CHAP_SECRET] [DIGEST=CRC32C]
discover
if [ -n "${CHAP_USER:-}" ]; then
  node_set node.session.auth.authmethod CHAP || fail chap-config "iscsiadm update failed"
  node_set node.session.auth.username "$CHAP_USER" || fail chap-config "iscsiadm update failed"
  node_set node.session.auth.password "$CHAP_SECRET" || fail chap-config "iscsiadm update failed"
fi
if [ -n "${DIGEST:-}" ]; then
  node_set 'node.conn[0].iscsi.HeaderDigest' "$DIGEST" || fail digest-config "iscsiadm update failed"
  node_set 'node.conn[0].iscsi.DataDigest' "$DIGEST" || fail digest-config "iscsiadm update failed"
fi
login
dev=$(wait_disk 0 60) || fail disk-appears "no disk for LUN 0 after login"
pass disk-appears
say "INFO disk $dev size_sectors=$(cat /sys/block/$dev/size) wwid=$(cat /sys/block/$dev/device/wwid 2>/dev/null)"
if [ -n "${DIGEST:-}" ]; then
  params=$(iscsiadm -m session -P 2 2>&1)
  echo "$params" | grep -q "HeaderDigest: $DIGEST" || fail header-digest "not negotiated: $params"
  echo "$params" | grep -q "DataDigest: $DIGEST" || fail data-digest "not negotiated: $params"
  pass digests-negotiated
fi
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
