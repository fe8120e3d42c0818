# Scenario 6: a 4-LUN target; four disks with distinct, stable /dev/disk/by-id names from their
# NAA identifiers (VPD page 0x83), unchanged after lunard restarts (both on the reconnected
# session and on a fresh login). The guest has no udev daemon: it runs udev's own scsi_id the way
# 60-persistent-storage.rules does (`scsi_id --export --whitelisted -d $devnode`) and creates the
# links those rules create from its output (disk/by-id/scsi-$ID_SERIAL and
# disk/by-id/wwn-$ID_WWN_WITH_EXTENSION). The kernel's own identifier (sysfs wwid) must agree.
# Env: PORTAL IQN LUNS (e.g. "0 1 2 3") [CHAP_USER CHAP_SECRET] [DIGEST=CRC32C]

SCSI_ID=/lib/udev/scsi_id

# ids TAG: (re)creates /dev/disk/by-id for every LUN, records `lun wwid wwn-name scsi-name` in
# /tmp/ids.TAG and reports each disk to the host.
ids() {
  : > "/tmp/ids.$1"
  rm -rf /dev/disk/by-id
  mkdir -p /dev/disk/by-id
  for l in $LUNS; do
    d=$(wait_disk "$l" 60) || fail "disk-lun$l-$1" "no disk for LUN $l"
    w=$(cat "/sys/block/$d/device/wwid" 2>/dev/null)
    p=$(od -An -tx1 -v "/sys/block/$d/device/vpd_pg83" 2>/dev/null | tr -d ' \n')
    case "$w" in naa.*) ;; *) fail "wwid-lun$l-$1" "sd $d wwid is '$w', want an NAA designator" ;; esac
    [ -n "$p" ] || fail "vpd83-lun$l-$1" "no VPD page 0x83 for $d"
    # udev: IMPORT{program}="scsi_id --export --whitelisted -d $devnode"
    out=$("$SCSI_ID" --export --whitelisted -d "/dev/$d" 2>&1) ||
      fail "scsi-id-lun$l-$1" "scsi_id exit $?: $out"
    serial=$(echo "$out" | sed -n 's/^ID_SERIAL=//p')
    wwn=$(echo "$out" | sed -n 's/^ID_WWN_WITH_EXTENSION=//p')
    [ -n "$serial" ] && [ -n "$wwn" ] ||
      fail "scsi-id-lun$l-$1" "no ID_SERIAL/ID_WWN_WITH_EXTENSION from scsi_id: $(echo $out)"
    # udev: SYMLINK+="disk/by-id/$env{ID_BUS}-$env{ID_SERIAL}" (ID_BUS=scsi) and
    #       SYMLINK+="disk/by-id/wwn-$env{ID_WWN_WITH_EXTENSION}"
    for n in "scsi-$serial" "wwn-$wwn"; do
      [ ! -e "/dev/disk/by-id/$n" ] || fail "distinct-$1" "/dev/disk/by-id/$n exists already ($(readlink /dev/disk/by-id/$n))"
      ln -s "../../$d" "/dev/disk/by-id/$n"
      [ "$(readlink -f /dev/disk/by-id/$n)" = "/dev/$d" ] || fail "by-id-lun$l-$1" "$n does not lead to /dev/$d"
    done
    # The names are the NAA designator: scsi-3<naa>, wwn-0x<naa> (3 = SPC designator type NAA).
    [ "wwn-$wwn" = "wwn-0x${w#naa.}" ] && [ "scsi-$serial" = "scsi-3${w#naa.}" ] ||
      fail "by-id-naa-lun$l-$1" "scsi_id names scsi-$serial wwn-$wwn disagree with the kernel's wwid $w"
    echo "$l $w wwn-$wwn scsi-$serial" >> "/tmp/ids.$1"
    say "INFO wwid $1 lun=$l dev=$d sectors=$(cat /sys/block/$d/size) by-id=wwn-$wwn scsi-id=scsi-$serial wwid=$w vpd83=$p"
  done
  pass "by-id-$1"
  n=$(ls /dev/disk/by-id | grep -c '^wwn-')
  [ "$n" -eq "$(echo $LUNS | wc -w)" ] || fail "distinct-$1" "$n wwn-* names in /dev/disk/by-id: $(ls /dev/disk/by-id)"
  dups=$(cut -d' ' -f2- "/tmp/ids.$1" | tr ' ' '\n' | sort | uniq -d)
  [ -z "$dups" ] || fail "distinct-$1" "duplicate identifiers: $dups"
  say "INFO by_id $1 $(cd /dev/disk/by-id && for n in *; do printf '%s->%s ' "$n" "$(readlink "$n")"; done)"
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
