# LIO + TCMU (issue 8): lunard runs inside the guest and exports a loopback (tcm_loop) target
# through a TCMU user backstore, the same path through LIO that a qla2xxx Fibre Channel port
# takes. The LUN appears as a local SCSI disk; ext4 on it round-trips and checks clean; a full
# clone made with lunarctl appears as a second disk only once its copy completed and holds the
# point-in-time data; after a SIGKILL the next lunard re-attaches to the backstores it left and
# the disks keep working; a SIGTERM removes everything lunard put in configfs.
# Env: WWPN (target port), VOL (volume name), PERF_MIB (size of the dd throughput figures)
CFG=/sys/kernel/config
LUNARCTL="lunarctl --socket /var/lib/lunar/admin.sock"

lio_load
mkdir -p /mnt2
lunard_loopback 640 160

dev=$(wait_disk 0 60) || { lunard_log; fail disk-appears "no disk for LUN 0 from tcm_loop"; }
pass disk-appears
vendor=$(cat /sys/block/$dev/device/vendor | tr -d ' ')
[ "$vendor" = LUNAR ] || fail inquiry-vendor "vendor is '$vendor'"
pass inquiry-vendor
bs=$(ls "$CFG/target/core/user_0/" | grep '^lunar_' | tr '\n' ' ')
[ -n "$bs" ] || fail backstore "no lunar_ backstore in $CFG/target/core/user_0"
say "INFO disk $dev size_sectors=$(cat /sys/block/$dev/size) wwid=$(cat /sys/block/$dev/device/wwid 2>/dev/null) backstores=$bs"
uio=$(for u in /sys/class/uio/uio*; do cat "$u/name"; done 2>/dev/null | tr '\n' ' ')
say "INFO uio $uio"

step mkfs mkfs.ext4 -q -F "/dev/$dev"
step mount mount -t ext4 "/dev/$dev" /mnt
step write-files write_files /mnt 10 512
step sync sync
step umount umount /mnt
drop_caches
step remount mount -t ext4 "/dev/$dev" /mnt
step checksums verify_files /mnt
step umount-before-clone umount /mnt
step e2fsck e2fsck -fn "/dev/$dev"

# Throughput through LIO and TCMU (figures, not checks): O_DIRECT sequential and 4 KiB reads.
# The file system's blocks are mapped, so reads come from the pool, not holes.
if [ "${PERF_MIB:-0}" -gt 0 ]; then
  # busybox `time` prints "real 0m 1.23s" (its dd no throughput line).
  seq=$( (time dd if="/dev/$dev" of=/dev/null bs=1M count="$PERF_MIB" iflag=direct) 2>&1 | grep real)
  rnd=$( (time dd if="/dev/$dev" of=/dev/null bs=4k count=$((PERF_MIB * 64)) iflag=direct) 2>&1 | grep real)
  say "INFO perf read_1m_${PERF_MIB}MiB $seq"
  say "INFO perf read_4k_${PERF_MIB}MiB $rnd"
fi

# A full clone: absent from the fabric until its copy completes.
step clone-create $LUNARCTL clone create --source "$VOL" --name "${VOL}c" --mode full --target "$WWPN" --lun-id 1
# The source changes after the clone started: the clone must not see it.
step mount-source mount -t ext4 "/dev/$dev" /mnt
step write-after sh -c 'echo after > /mnt/after-clone && sync'
seen_creating=0
t=0
while :; do
  st=$($LUNARCTL --json clone list | tr ',{' '\n\n' | grep -A0 '"state"' | tail -n 1 | sed 's/.*: *"\([a-z]*\)".*/\1/')
  case "$st" in
    completed) break ;;
    failed|cancelled) $LUNARCTL clone list | log_lines; fail clone-completes "state $st" ;;
    *)
      seen_creating=1
      [ ! -e "$CFG/target/loopback/$WWPN/tpgt_1/lun/lun_1" ] || fail clone-hidden "lun_1 linked while the clone is $st"
      [ -z "$(disk_for_lun 1)" ] || fail clone-hidden "a disk for LUN 1 while the clone is $st"
      ;;
  esac
  sleep 0.2; t=$((t + 1))
  [ "$t" -lt 1500 ] || fail clone-completes "still $st after 300 s"
done
pass clone-completes
say "INFO clone seen_creating=$seen_creating"
pass clone-hidden
cdev=$(wait_disk 1 60) || { lunard_log; fail clone-disk "no disk for LUN 1 after the clone completed"; }
pass clone-disk
[ "$(cat /sys/block/$cdev/device/wwid)" != "$(cat /sys/block/$dev/device/wwid)" ] || fail clone-own-id "the clone has the source's WWID"
pass clone-own-id
step clone-mount mount -t ext4 "/dev/$cdev" /mnt2
step clone-checksums verify_files /mnt2
[ ! -e /mnt2/after-clone ] || fail clone-point-in-time "a file written after the clone started is in the clone"
pass clone-point-in-time
step clone-umount umount /mnt2
step clone-e2fsck e2fsck -fn "/dev/$cdev"
step umount-source umount /mnt

# A crash (SIGKILL) leaves the backstores and links in configfs; the next lunard re-attaches
# to them (ring reset, no new backstore) and the same disks keep working.
kill -KILL "$LPID"
wait "$LPID" 2>/dev/null
[ -d "$CFG/target/core/user_0/lunar_${WWPN#naa.}_0" ] || fail crash-leaves-backstore "backstore gone after SIGKILL"
pass crash-leaves-backstore
lunard --config /etc/lunar.yaml >>/tmp/lunard.log 2>&1 &
LPID=$!
t=0
until [ "$(grep -c 'lunard ready' /tmp/lunard.log)" -ge 2 ] && [ "$(grep -c 'LIO LUN exported' /tmp/lunard.log)" -ge 4 ]; do
  kill -0 "$LPID" 2>/dev/null || { lunard_log; fail reattach "lunard exited after the restart"; }
  sleep 1; t=$((t + 1))
  [ "$t" -lt 60 ] || { lunard_log; fail reattach "LUNs not exported again after 60 s"; }
done
grep -q "re-attaching to a backstore" /tmp/lunard.log || { lunard_log; fail reattach "the backstores were recreated, not re-attached"; }
pass reattach
[ "$(disk_for_lun 0)" = "$dev" ] || fail reattach-same-disk "LUN 0 is $(disk_for_lun 0), was $dev"
drop_caches
step reattach-mount mount -t ext4 "/dev/$dev" /mnt
step reattach-checksums verify_files /mnt
step reattach-write sh -c 'echo again > /mnt/after-restart && sync'
step reattach-umount umount /mnt
step reattach-e2fsck e2fsck -fn "/dev/$dev"

errs=$(kernel_errors)
[ -z "$errs" ] || fail no-kernel-errors "$errs"
pass no-kernel-errors

# Graceful stop: the disks go away and lunard leaves nothing in configfs.
kill -TERM "$LPID"
t=0
while kill -0 "$LPID" 2>/dev/null; do
  sleep 1; t=$((t + 1))
  [ "$t" -lt 60 ] || { lunard_log; fail lunard-stops "still running 60 s after SIGTERM"; }
done
wait "$LPID"; rc=$?
[ "$rc" = 0 ] || { lunard_log; fail lunard-stops "exit status $rc"; }
pass lunard-stops
left=$(ls "$CFG/target/core/user_0" 2>/dev/null | grep '^lunar_'; ls "$CFG/target/loopback" 2>/dev/null | grep -v '^discovery_auth$\|^version$')
[ -z "$left" ] || fail configfs-clean "left behind: $left"
pass configfs-clean
wait_no_disks 30 || fail disks-gone "still present: $(ls /sys/block)"
pass disks-gone
lunard_log
