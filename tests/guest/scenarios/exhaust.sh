# Scenario 5 (pool exhaustion): a 512 MiB thin LUN in a 128 MiB pool of which the host has
# reserved 64 MiB for a "filler" LUN (guarantee full). The guest puts ext4 on the LUN (inode
# tables and journal written by mkfs, so the file system's own metadata is allocated up front),
# writes and syncs a set of files, then writes until the pool is exhausted: the writes must fail
# (the kernel logs the target's sense DATA PROTECT 27/07 "Space allocation failed write protect"
# and a "critical space allocation error"), the file system must stay consistent (clean umount,
# e2fsck -fn clean while the pool is still full). The host deletes the filler LUN; the guest
# remounts, writes again, and every file synced before the exhaustion verifies; e2fsck clean.
# Env: PORTAL IQN
discover
login
dev=$(wait_disk 0 60) || fail disk-appears "no disk for LUN 0 after login"
pass disk-appears
say "INFO disk $dev size_sectors=$(cat /sys/block/$dev/size)"
# 4096 inodes (1 MiB of inode tables) and an 8 MiB journal, both written now (mkfs zeroes the
# journal with WRITE SAME, UNMAP=0, which allocates: decision 0030): what ext4 writes
# in place later lives in chunks that are already allocated.
step mkfs mkfs.ext4 -q -F -N 4096 -J size=8 -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 "/dev/$dev"
step mount mount -t ext4 "/dev/$dev" /mnt
mkdir -p /mnt/fill
# The "synced before" set: 6 files, 512 KiB..3 MiB (10.5 MiB), plus a small nested one.
step write-files write_files /mnt 6 512
step sync sync
say "INFO synced_files $(wc -l < /tmp/sums)"
# Fill: 4 MiB files with O_DIRECT (an error surfaces in dd itself), at most 160 MiB / 5 min.
dd if=/dev/urandom of=/tmp/rand bs=1M count=4 2>/dev/null
i=0; failed=; start=$(date +%s)
while [ "$i" -lt 40 ]; do
  if ! dd if=/tmp/rand of="/mnt/fill/f$i" bs=1M oflag=direct 2>/tmp/fill.err; then
    failed=$i; break
  fi
  i=$((i + 1))
  [ $(($(date +%s) - start)) -lt 300 ] || break
done
say "INFO fill files_written=$i failed_at=${failed:-none} secs=$(($(date +%s) - start)) error=$(grep -v records /tmp/fill.err | head -n 1)"
[ -n "$failed" ] || fail write-error "wrote $((i * 4)) MiB into a pool with about 55 MiB free without an error"
pass write-error
# A buffered write + fsync fails as well (the error comes back from writeback).
if cat /tmp/rand /tmp/rand | dd of=/mnt/fill/buffered bs=1M conv=fsync 2>/tmp/buffered.err; then
  fail buffered-write-fails "8 MiB written and fsync'ed with the pool exhausted"
fi
say "INFO buffered error=$(grep -v records /tmp/buffered.err | head -n 1)"
pass buffered-write-fails
# What the kernel saw: the target's sense and the block layer's verdict.
sense=$(dmesg | grep -c 'Space allocation failed write protect' || true)
crit=$(dmesg | grep -c 'critical space allocation error' || true)
say "INFO exhaustion sense_27_07=$sense critical_space_allocation=$crit"
dmesg | grep -E 'Sense Key|Add. Sense|critical space' |
  sed -e 's/^\[[^]]*\] //' -e 's/tag#[0-9]* //' -e 's/sector [0-9]*/sector N/' -e 's/flags 0x[0-9a-f]*/flags F/' |
  sort | uniq -c | sort -rn | head -n 6 | log_lines
[ "$sense" -gt 0 ] || fail sense-27-07 "no 'Space allocation failed write protect' in dmesg"
pass sense-27-07
# The file system itself never failed: no ext4 error, no journal abort, no read-only remount.
fs_errs=$(dmesg | grep -E 'EXT4-fs error|Aborting journal|Detected aborted journal|remounting filesystem read-only' || true)
[ -z "$fs_errs" ] || fail no-fs-errors "$fs_errs"
pass no-fs-errors
step sync-while-full sync
step umount-while-full umount /mnt
step e2fsck-while-full e2fsck -fn "/dev/$dev"
wait_for_host freed
step remount mount -t ext4 "/dev/$dev" /mnt
step checksums verify_files /mnt
step write-after-free dd if=/tmp/rand of=/mnt/after-free bs=1M conv=fsync
step rm-fill rm -rf /mnt/fill
step umount umount /mnt
drop_caches
step remount-cold mount -t ext4 "/dev/$dev" /mnt
step checksums-cold verify_files /mnt
[ "$(md5sum < /mnt/after-free)" = "$(md5sum < /tmp/rand)" ] || fail after-free-verifies "differs"
pass after-free-verifies
step umount-again umount /mnt
step e2fsck e2fsck -fn "/dev/$dev"
fs_errs=$(dmesg | grep -E 'EXT4-fs error|Aborting journal|Detected aborted journal|remounting filesystem read-only' || true)
[ -z "$fs_errs" ] || fail no-fs-errors-after "$fs_errs"
pass no-fs-errors-after
logout
