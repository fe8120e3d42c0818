# Scenario 4: lunard restarts while the guest has the LUN mounted and is writing. The kernel
# initiator reconnects by itself (within replacement_timeout); no I/O error reaches the file
# system and every file written before, during and after the restart verifies.
# Env: PORTAL IQN [CHAP_USER CHAP_SECRET] [DIGEST=CRC32C]
discover
configure_node
login
check_digests
dev=$(wait_disk 0 60) || fail disk-appears "no disk for LUN 0 after login"
pass disk-appears
step mkfs mkfs.ext4 -q -F "/dev/$dev"
step mount mount -t ext4 "/dev/$dev" /mnt
mkdir -p /mnt/w /tmp/src
# Writer: 512 KiB files, each fsynced, checksum recorded only once the fsync succeeded.
(
  i=0
  while [ ! -f /tmp/stop ]; do
    f=/mnt/w/f$i
    # A copy stays in guest RAM so a mismatch can be described byte by byte.
    dd if=/dev/urandom of="/tmp/src/f$i" bs=64k count=8 2>/dev/null
    if dd if="/tmp/src/f$i" of="$f" bs=64k conv=fsync 2>>/tmp/writer.err; then
      (cd /mnt && md5sum "w/f$i") >> /tmp/sums
    else
      echo "write $f failed" >> /tmp/writer.failed
    fi
    i=$((i + 1))
    echo "$i" > /tmp/count
  done
) &
writer=$!
count() { cat /tmp/count 2>/dev/null || echo 0; }
# wait_count N: until the writer finished N files (5 min at most).
wait_count() {
  t=0
  while [ "$(count)" -lt "$1" ]; do
    sleep 1; t=$((t + 1))
    [ "$t" -lt 300 ] || fail writer-progress "writer stuck at $(count) files (wanted $1)"
  done
}
wait_count 3
pass writing-before-restart
wait_for_host restarted
before=$(count)
say "INFO files_at_restart_ack $before"
wait_count $((before + 5))
pass writing-after-restart
touch /tmp/stop
wait "$writer"
[ ! -f /tmp/writer.failed ] || fail writer-errors "$(cat /tmp/writer.failed /tmp/writer.err | head -n 10 | tr '\n' ' ')"
pass no-write-errors
say "INFO files_written $(wc -l < /tmp/sums)"
step sync sync
step umount umount /mnt
drop_caches
step remount mount -t ext4 "/dev/$dev" /mnt
if ! verify_files /mnt >/dev/null; then
  # Describe every damaged file: which byte ranges differ and what was read instead.
  for f in $(grep FAILED /tmp/verify.out | cut -d: -f1); do
    n=${f#w/}
    cmp -l "/tmp/src/$n" "/mnt/$f" 2>/dev/null | awk -v f="$f" '
      { o = $1 - 1; if (first == "") first = o; last = o; cnt++; if ($3 == 0) zero++ }
      END { printf "%s: %d bytes differ, offsets %d..%d (64 KiB chunks %d..%d), %d of them read back as zero\n",
            f, cnt, first, last, first / 65536, last / 65536, zero }' | log_lines
  done
  fail checksums "$(grep -c FAILED /tmp/verify.out) file(s) differ after the restart: $(grep FAILED /tmp/verify.out | tr '\n' ' ')"
fi
pass checksums
step umount-again umount /mnt
step e2fsck e2fsck -fn "/dev/$dev"
errs=$(kernel_errors)
[ -z "$errs" ] || fail no-kernel-errors "$errs"
pass no-kernel-errors
reconnects=$(dmesg | grep -c 'detected conn error' || true)
say "INFO conn_errors $reconnects"
logout
wait_no_disks 60 || fail disk-gone "a disk is still present after logout"
pass disk-gone
