# Scenario 6: a 4-LUN target; four disks with distinct, stable NAA identifiers (VPD page 0x83,
# what udev turns into /dev/disk/by-id/wwn-0x... and scsi-3...), unchanged after lunard restarts
# (both on the reconnected session and on a fresh login).
# Env: PORTAL IQN LUNS (e.g. "0 1 2 3") [CHAP_USER CHAP_SECRET] [DIGEST=CRC32C]

# ids TAG: prints `lun wwid` lines for every LUN and reports them to the host.
ids() {
  : > "/tmp/ids.$1"
  for l in $LUNS; do
    d=$(wait_disk "$l" 60) || fail "disk-lun$l-$1" "no disk for LUN $l"
    w=$(cat "/sys/block/$d/device/wwid" 2>/dev/null)
    p=$(od -An -tx1 -v "/sys/block/$d/device/vpd_pg83" 2>/dev/null | tr -d ' \n')
    case "$w" in naa.*) ;; *) fail "wwid-lun$l-$1" "sd $d wwid is '$w', want an NAA designator" ;; esac
    [ -n "$p" ] || fail "vpd83-lun$l-$1" "no VPD page 0x83 for $d"
    echo "$l $w" >> "/tmp/ids.$1"
    say "INFO wwid $1 lun=$l dev=$d sectors=$(cat /sys/block/$d/size) by-id=wwn-0x${w#naa.} wwid=$w vpd83=$p"
  done
  dups=$(cut -d' ' -f2 "/tmp/ids.$1" | sort | uniq -d)
  [ -z "$dups" ] || fail "distinct-$1" "duplicate identifiers: $dups"
  pass "distinct-$1"
}

discover
configure_node
login
check_digests
ids first
n=$(ls /sys/block | grep -c '^sd')
[ "$n" -eq "$(echo $LUNS | wc -w)" ] || fail disk-count "$n disks, want $(echo $LUNS | wc -w)"
pass disk-count
wait_for_host restarted
# I/O on every disk goes through the re-established session; a rescan re-reads the VPD pages.
for l in $LUNS; do
  d=$(disk_for_lun "$l")
  step "read-after-restart-lun$l" dd if="/dev/$d" of=/dev/null bs=4096 count=16 iflag=direct
  echo 1 > "/sys/block/$d/device/rescan"
done
ids rescanned
say "INFO conn_errors $(dmesg | grep -c 'detected conn error' || true)"
cmp -s /tmp/ids.first /tmp/ids.rescanned || fail stable-rescan "$(cat /tmp/ids.first /tmp/ids.rescanned)"
pass stable-rescan
logout
wait_no_disks 60 || fail disk-gone "disks still present after logout"
login
ids relogin
cmp -s /tmp/ids.first /tmp/ids.relogin || fail stable-relogin "$(cat /tmp/ids.first /tmp/ids.relogin)"
pass stable-relogin
errs=$(kernel_errors)
[ -z "$errs" ] || fail no-kernel-errors "$errs"
pass no-kernel-errors
logout
