# HA scenario: dm-multipath over two Lunar gateways of one HA group (tests/tests/kernel_initiator_ha.rs).
# The guest logs in through both gateways' portals, finds ONE multipath device over the two
# paths (the owner's path group active, the standby's enabled), and runs a writer that writes
# numbered 4 KiB blocks with O_DIRECT, reads each back, and records every acknowledged one. The
# host kills the owner gateway under it (WAIT killed); the writer must see no I/O error, go on
# through the other gateway once it took over, and every acknowledged block must read back.
# Env: PORTAL1 PORTAL2 IQN [RUN] [WRITES_AFTER=30]
for m in dm_mod dm_multipath dm_round_robin dm_service_time scsi_dh_alua; do
  step "modprobe-$m" modprobe "$m"
done
for p in "$PORTAL1" "$PORTAL2"; do
  out=$(iscsiadm -m discovery -t sendtargets -p "$p" 2>&1) || fail discovery "$p: $out"
  echo "$out" | sed 's/^/discovery: /' | log_lines
  echo "$out" | grep -q "^$p,[0-9]* $IQN\$" || fail discovery "SendTargets of $p did not advertise it for $IQN: $out"
done
pass discovery
for p in "$PORTAL1" "$PORTAL2"; do
  out=$(iscsiadm -m node -T "$IQN" -p "$p" --login 2>&1) || fail login "$p: $out"
done
pass login

# disks_for_lun LUN: every sdX with that LUN number (one per path).
disks_for_lun() {
  for d in /sys/block/sd*; do
    [ -e "$d/device/scsi_device" ] || continue
    hctl=$(ls "$d/device/scsi_device" 2>/dev/null)
    [ "${hctl##*:}" = "$1" ] && basename "$d"
  done
  return 0
}
t=0
until [ "$(disks_for_lun 0 | wc -l)" -ge 2 ]; do
  sleep 1; t=$((t + 1))
  [ "$t" -lt 60 ] || fail two-paths "disks for LUN 0: $(disks_for_lun 0 | tr '\n' ' ')"
done
pass two-paths
for d in $(disks_for_lun 0); do
  say "INFO path $d wwid=$(cat /sys/block/$d/device/wwid 2>/dev/null) handler=$(cat /sys/block/$d/device/dh_state 2>/dev/null)"
done

# multipathd without udevd: libdevmapper makes the /dev/mapper nodes itself, and an (empty)
# udev database entry per path disk makes libudev count it as initialized, which multipathd's
# device enumeration requires (udevd would write these).
export DM_DISABLE_UDEV=1
mkdir -p /run/udev/data
for d in $(disks_for_lun 0); do
  : >"/run/udev/data/b$(cat /sys/block/$d/dev)"
done
multipathd -d -s -v3 >/tmp/multipathd.log 2>&1 &
t=0
map=""
while [ -z "$map" ]; do
  map=$(dmsetup ls --target multipath 2>/dev/null | awk '$1 != "No" {print $1; exit}')
  [ -n "$map" ] && break
  sleep 1; t=$((t + 1))
  if [ "$t" -ge 60 ]; then
    tail -n 60 /tmp/multipathd.log | sed 's/^/multipathd: /' | log_lines
    fail multipath-map "no multipath map after 60 s"
  fi
done
[ "$(dmsetup ls --target multipath | awk '$1 != "No"' | wc -l)" = 1 ] ||
  fail one-map "$(dmsetup ls --target multipath | tr '\n' ' ')"
[ -b "/dev/mapper/$map" ] || dmsetup mknodes >/dev/null 2>&1
dev=/dev/mapper/$map
[ -b "$dev" ] || fail multipath-map "no block device $dev"
# Both paths in the map, in two path groups (one per ALUA state).
t=0
until [ "$(dmsetup table "$map" | grep -o ' [0-9]*:[0-9]* ' | wc -l)" -ge 2 ]; do
  sleep 1; t=$((t + 1))
  [ "$t" -lt 30 ] || fail multipath-map "map $map has fewer than two paths: $(dmsetup table "$map")"
done
pass multipath-map
say "INFO map $map table: $(dmsetup table "$map")"
multipath -ll 2>&1 | sed 's/^/topology: /' | log_lines

RUN=${RUN:-1}
# block K: 4 KiB naming the run and K on every line, so a block of another number never
# compares equal.
blk() { yes "LUNAR-HA run $RUN block $1" | head -c 4096; }
# Uptime in hundredths of a second.
now_cs() { read -r up _ </proc/uptime; echo "${up%.*}${up#*.}"; }
(
  k=0
  last=$(now_cs)
  max=0
  while [ ! -f /tmp/stop ]; do
    blk "$k" >/tmp/w
    if dd if=/tmp/w of="$dev" bs=4096 seek="$k" count=1 oflag=direct 2>>/tmp/writer.err; then
      if dd if="$dev" bs=4096 skip="$k" count=1 iflag=direct 2>>/tmp/writer.err | cmp -s - /tmp/w; then
        echo "$k" >>/tmp/acked
      else
        echo "block $k read back different right after its write" >>/tmp/writer.failed
      fi
    else
      echo "write of block $k failed" >>/tmp/writer.failed
    fi
    t=$(now_cs)
    gap=$((t - last))
    last=$t
    [ "$gap" -gt "$max" ] && { max=$gap; echo "$max" >/tmp/max_gap_cs; }
    k=$((k + 1))
    echo "$k" >/tmp/count
  done
) &
writer=$!
count() { cat /tmp/count 2>/dev/null || echo 0; }
wait_count() {
  t=0
  while [ "$(count)" -lt "$1" ]; do
    sleep 1; t=$((t + 1))
    [ -f /tmp/writer.failed ] && fail writer-errors "$(head -n 5 /tmp/writer.failed /tmp/writer.err | tr '\n' ' ')"
    [ "$t" -lt 300 ] || fail writer-progress "writer stuck at $(count) blocks (wanted $1)"
  done
}
wait_count 20
pass writing-before-kill
wait_for_host killed
say "INFO killed_seen_at_uptime $(cut -d' ' -f1 /proc/uptime)"
before=$(count)
say "INFO blocks_at_kill $before"
wait_count $((before + ${WRITES_AFTER:-30}))
pass writing-after-kill
touch /tmp/stop
wait "$writer"
[ ! -f /tmp/writer.failed ] || fail no-io-errors "$(head -n 10 /tmp/writer.failed /tmp/writer.err | tr '\n' ' ')"
pass no-io-errors
acked=$(wc -l </tmp/acked)
say "INFO blocks_acknowledged $acked"
say "INFO max_gap_s $(awk '{printf "%.2f", $1 / 100}' /tmp/max_gap_cs)"
# Every acknowledged block, read back through the multipath device (the new owner now).
bad=0
for k in $(cat /tmp/acked); do
  blk "$k" >/tmp/w
  dd if="$dev" bs=4096 skip="$k" count=1 iflag=direct 2>/dev/null | cmp -s - /tmp/w || {
    bad=$((bad + 1)); echo "block $k" >>/tmp/bad; }
done
[ "$bad" = 0 ] || fail acknowledged-blocks "$bad of $acked differ: $(head -n 10 /tmp/bad | tr '\n' ' ')"
pass acknowledged-blocks
# No error may reach the multipath device (its paths' errors are dm-multipath's business).
errs=$(dmesg | grep -E 'I/O error, dev dm-|Buffer I/O error on dev dm-' || true)
[ -z "$errs" ] || fail no-dm-errors "$errs"
pass no-dm-errors
multipath -ll 2>&1 | sed 's/^/topology after: /' | log_lines
dmesg | grep -E 'alua|multipath|device-mapper|connection|session|iscsi|sd ' | tail -n 60 | sed 's/^/kernel: /' | log_lines
if [ -n "${DEBUG_MPATH:-}" ]; then
  grep -E 'checker|tur|ghost|reinstat|fail|prio|switch' /tmp/multipathd.log | tail -n 80 | sed 's/^/multipathd: /' | log_lines
fi
