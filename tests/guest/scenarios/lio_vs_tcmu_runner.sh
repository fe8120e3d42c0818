# lunard's TCMU backstore next to Debian's tcmu-runner (issue 8: the side-by-side figure).
# Two loopback (tcm_loop) targets in one guest, each with one disk of the same size:
#   - lunard (LUN 0 of $WWPN, backstore lunar_* in core/user_0), its pool in the guest's RAM;
#   - tcmu-runner 1.5.4 (LUN 1 of $RWWPN, backstore core/user_9/runner_raw) with its "qcow"
#     handler serving a raw file of exactly the disk's size, also in the guest's RAM. Debian
#     ships no plain file handler; handler_qcow probes qcow (v1) and otherwise opens a file
#     whose size equals dev_size as raw, then does one pread/pwrite per command.
# Both disks are filled with a sequential write first (no holes), then fio measures 4 KiB
# random reads and writes at QD1 and QD16, alternating lunard / tcmu-runner. The figures are
# INFO lines; the only checks are that everything ran and produced numbers.
# Env: WWPN, RWWPN (the two targets), VOL (lunard's volume), MIB (disk size = fio region),
#      RUNTIME (seconds per fio run)
CFG=/sys/kernel/config
RHBA=9
RBS=runner_raw
RAW=/var/lib/tcmu-bench/raw.img

lio_load

# --- lunard first: its backstore exists before tcmu-runner starts. tcmu-runner tells the
# kernel it answers the TCMU netlink events (SET_FEATURES); from then on the kernel waits for
# its reply to every new device's ADDED_DEVICE, and tcmu-runner has no handler for lunard's.
mkdir -p /var/lib/tcmu-bench /var/log /run
runner_log() {
  tail -n 40 /var/log/tcmu-runner.log 2>/dev/null | sed 's/^/tcmu-runner: /' | log_lines
  tail -n 20 /tmp/tcmu-runner.out 2>/dev/null | sed 's/^/tcmu-runner out: /' | log_lines
}
lunard_loopback $((MIB * 4)) "$MIB"
ldev=$(wait_disk 0 60) || { lunard_log; fail lunard-disk "no disk for LUN 0 from tcm_loop"; }
[ "$(cat /sys/block/$ldev/device/vendor | tr -d ' ')" = LUNAR ] || fail lunard-disk "sd for LUN 0 is not lunard's"
pass lunard-disk
lbs=$(cat /sys/block/$ldev/queue/logical_block_size)

# --- tcmu-runner: no D-Bus system bus in the guest. First without /etc/tcmu/tcmu.conf (the
# package's copy is shipped as tcmu.conf.dist): it refuses to start without one.
dd if=/dev/zero of="$RAW" bs=1M count="$MIB" 2>/dev/null || fail runner-file "cannot create $RAW"
start_runner() {
  (cd / && exec tcmu-runner --handler-path /lib/x86_64-linux-gnu/tcmu-runner -l /var/log) \
    >/tmp/tcmu-runner.out 2>&1 &
  RPID=$!
}
[ ! -e /etc/tcmu/tcmu.conf ] || fail runner-no-conf "/etc/tcmu/tcmu.conf exists"
start_runner
t=0
while kill -0 "$RPID" 2>/dev/null && [ "$t" -lt 10 ]; do sleep 1; t=$((t + 1)); done
if kill -0 "$RPID" 2>/dev/null; then
  say "INFO runner-without-conf still running after ${t} s"
  kill "$RPID"; wait "$RPID" 2>/dev/null
else
  wait "$RPID"; rc=$?
  say "INFO runner-without-conf exited with status $rc after ${t} s: $(tr '\n' ' ' < /tmp/tcmu-runner.out)"
fi
cp /etc/tcmu/tcmu.conf.dist /etc/tcmu/tcmu.conf || fail runner-conf "no tcmu.conf.dist"
start_runner
sleep 3
kill -0 "$RPID" 2>/dev/null || { runner_log; fail runner-starts "tcmu-runner exited"; }
pass runner-starts
R=$CFG/target/core/user_$RHBA/$RBS
mkdir -p "$R" || fail runner-backstore "mkdir $R"
echo -n "dev_config=qcow/$RAW,dev_size=$((MIB * 1048576)),hw_block_size=$lbs,max_data_area_mb=64" > "$R/control" ||
  fail runner-backstore "control"
echo 1 > "$R/enable" || { runner_log; fail runner-backstore "enable (did tcmu-runner refuse the device?)"; }
pass runner-backstore
RT=$CFG/target/loopback/$RWWPN/tpgt_1
# The nexus (the local SCSI host) first, then the LUN: linking it adds the disk. (A nexus
# written after the link makes the host scan before tcm_loop has its nexus.)
mkdir -p "$RT/lun/lun_1" || fail runner-target "mkdir $RT/lun/lun_1"
echo -n "naa.50014050000000f9" > "$RT/nexus" || fail runner-target "nexus"
ln -s "$R" "$RT/lun/lun_1/$RBS" || fail runner-target "LUN link"
pass runner-target
rdev=$(wait_disk 1 60) || { runner_log; fail runner-disk "no disk for LUN 1 from tcm_loop"; }
[ "$(cat /sys/block/$rdev/size)" = "$(cat /sys/block/$ldev/size)" ] ||
  fail runner-disk "sizes differ: $(cat /sys/block/$rdev/size) vs $(cat /sys/block/$ldev/size) sectors"
pass runner-disk
say "INFO disks lunard=$ldev runner=$rdev sectors=$(cat /sys/block/$ldev/size) block=$lbs" \
  "vendors=$(cat /sys/block/$ldev/device/vendor | tr -d ' ')/$(cat /sys/block/$rdev/device/vendor | tr -d ' ')"
say "INFO uio $(for u in /sys/class/uio/uio*; do cat "$u/name"; done 2>/dev/null | tr '\n' ' ')"
# What tcmu-runner said about the missing system bus and configuration file.
cat /tmp/tcmu-runner.out /var/log/tcmu-runner.log 2>/dev/null | grep -v '^$' | head -n 15 | while IFS= read -r l; do say "INFO runner-log $l"; done

# --- fio
FIO_COMMON="--thread --direct=1 --ioengine=libaio --bs=4k --size=${MIB}M --minimal"
step fill-lunard fio --name=fill --filename="/dev/$ldev" --rw=write --bs=1M --iodepth=4 \
  --direct=1 --ioengine=libaio --size="${MIB}M" --thread
step fill-runner fio --name=fill --filename="/dev/$rdev" --rw=write --bs=1M --iodepth=4 \
  --direct=1 --ioengine=libaio --size="${MIB}M" --thread
drop_caches

# fio_iops NAME DEV RW QD: prints the IOPS of one run (terse format: field 8 read, 49 write).
fio_iops() {
  out=$(fio --name="$1" --filename="/dev/$2" --rw="$3" --iodepth="$4" $FIO_COMMON \
    --runtime="$RUNTIME" --time_based 2>&1) || {
    echo "$out" | tail -n 10 | sed "s/^/$1: /" | log_lines
    return 1
  }
  case "$3" in
    randread) f=8 ;;
    *) f=49 ;;
  esac
  echo "$out" | grep ';' | tail -n 1 | awk -F';' -v f="$f" '{printf "%d\n", $f}'
}

for wl in "randread 1" "randread 16" "randwrite 1" "randwrite 16"; do
  set -- $wl
  rw=$1; qd=$2; name=${rw}-qd$qd
  li=$(fio_iops "$name-lunard" "$ldev" "$rw" "$qd") || { lunard_log; fail "fio-$name-lunard" "fio failed"; }
  [ "${li:-0}" -gt 0 ] || fail "fio-$name-lunard" "no IOPS figure ('$li')"
  pass "fio-$name-lunard"
  ri=$(fio_iops "$name-runner" "$rdev" "$rw" "$qd") || { runner_log; fail "fio-$name-runner" "fio failed"; }
  [ "${ri:-0}" -gt 0 ] || fail "fio-$name-runner" "no IOPS figure ('$ri')"
  pass "fio-$name-runner"
  ratio=$(awk -v a="$li" -v b="$ri" 'BEGIN {printf "%.2f", a / b}')
  say "INFO fio $rw qd=$qd lunard_iops=$li tcmu_runner_iops=$ri ratio=$ratio"
done

errs=$(kernel_errors)
[ -z "$errs" ] || fail no-kernel-errors "$errs"
pass no-kernel-errors
kill -0 "$LPID" 2>/dev/null || { lunard_log; fail lunard-alive "lunard died"; }
kill -0 "$RPID" 2>/dev/null || { runner_log; fail runner-alive "tcmu-runner died"; }
pass both-alive
runner_log
