# Scenario 5 (thin reclaim part): space the guest frees comes back to the pool. The guest writes
# 64 MiB on ext4, the host reads the LUN's mapped bytes; the guest deletes the file and runs
# fstrim (UNMAP from the kernel's discard support); the host reads the mapped bytes again.
# Env: PORTAL IQN
discover
login
dev=$(wait_disk 0 60) || fail disk-appears "no disk for LUN 0 after login"
pass disk-appears
dmax=$(cat "/sys/block/$dev/queue/discard_max_bytes")
say "INFO discard_max_bytes $dmax granularity=$(cat /sys/block/$dev/queue/discard_granularity)"
[ "$dmax" -gt 0 ] || fail discard-supported "the kernel sees no discard support (LBPME/VPD B0/B2)"
pass discard-supported
step mkfs mkfs.ext4 -q -F "/dev/$dev"
step mount mount -t ext4 "/dev/$dev" /mnt
step write-64m dd if=/dev/urandom of=/mnt/big bs=1M count=64 conv=fsync
step sync sync
wait_for_host written
step rm rm /mnt/big
step sync-after-rm sync
out=$(fstrim -v /mnt 2>&1) || fail fstrim "$out"
say "INFO fstrim $out"
pass fstrim
wait_for_host trimmed
step umount umount /mnt
step e2fsck e2fsck -fn "/dev/$dev"
errs=$(kernel_errors)
[ -z "$errs" ] || fail no-kernel-errors "$errs"
pass no-kernel-errors
logout
