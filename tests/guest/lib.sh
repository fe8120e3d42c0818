# Shell library of the kernel-initiator test guest, sourced by /init and by scenarios.
#
# Protocol on the serial console (read by tests/src/guest.rs):
#   LUNAR-GUEST: BOOTED <kernel>           the guest is up, iscsid runs
#   LUNAR-GUEST: PASS <name>               a check passed
#   LUNAR-GUEST: FAIL <name> <reason>      a check failed (the scenario stops)
#   LUNAR-GUEST: INFO <key> <value...>     facts the host checks (e.g. WWIDs)
#   LUNAR-GUEST: WAIT <token>              the guest waits for the host to type `<token>` + newline
#   LUNAR-GUEST: LOG <line>                diagnostics after a failure (dmesg, iscsid log)
#   LUNAR-GUEST: DONE <status>             the scenario finished (status 0 = success)

say() { echo "LUNAR-GUEST: $*"; }
log_lines() { while IFS= read -r l; do echo "LUNAR-GUEST: LOG $l"; done; }

# Diagnostics for a failure: kernel log, iscsid log, sessions.
dump_diag() {
  dmesg | tail -n 80 | log_lines
  [ -f /tmp/iscsid.log ] && tail -n 40 /tmp/iscsid.log | sed 's/^/iscsid: /' | log_lines
  iscsiadm -m session -P 3 2>&1 | tail -n 40 | sed 's/^/session: /' | log_lines
}

pass() { say "PASS $1"; }
# fail NAME REASON...: reports, dumps diagnostics and ends the scenario (exit from the subshell).
fail() {
  n=$1; shift
  say "FAIL $n $*"
  dump_diag
  exit 1
}

# step NAME CMD...: runs CMD; on failure reports its output tail and ends the scenario.
step() {
  n=$1; shift
  if out=$("$@" 2>&1); then
    pass "$n"
  else
    rc=$?
    echo "$out" | tail -n 20 | sed "s/^/$n: /" | log_lines
    fail "$n" "exit $rc: $*"
  fi
}

# wait_for_host TOKEN: asks the host to act and blocks until it types TOKEN (10 min at most).
wait_for_host() {
  say "WAIT $1"
  while :; do
    IFS= read -r -t 600 line || fail "wait-$1" "no answer from the host"
    line=$(echo "$line" | tr -d '\r')
    [ "$line" = "$1" ] && return 0
  done
}

# disk_for_lun LUN: prints sdX of the disk with that LUN number (any host), empty if none.
disk_for_lun() {
  for d in /sys/block/sd*; do
    [ -e "$d/device/scsi_device" ] || continue
    hctl=$(ls "$d/device/scsi_device" 2>/dev/null)
    [ "${hctl##*:}" = "$1" ] && { basename "$d"; return 0; }
  done
  return 0
}

# wait_disk LUN [SECONDS]: waits until the disk of LUN exists and has a size; prints sdX.
wait_disk() {
  t=0
  while [ "$t" -lt "${2:-60}" ]; do
    d=$(disk_for_lun "$1")
    if [ -n "$d" ] && [ -e "/dev/$d" ] && [ "$(cat /sys/block/$d/size 2>/dev/null)" != 0 ]; then
      echo "$d"; return 0
    fi
    sleep 1; t=$((t + 1))
  done
  return 1
}

# wait_no_disks [SECONDS]: waits until no sd disk is left.
wait_no_disks() {
  t=0
  while [ "$t" -lt "${1:-60}" ]; do
    ls /sys/block | grep -q '^sd' || return 0
    sleep 1; t=$((t + 1))
  done
  return 1
}

# node_set NAME VALUE: updates the node record of $IQN at $PORTAL.
node_set() { iscsiadm -m node -T "$IQN" -p "$PORTAL" -o update -n "$1" -v "$2"; }

# discover: SendTargets from the guest; the advertised portal must be the one we can reach.
discover() {
  out=$(iscsiadm -m discovery -t sendtargets -p "$PORTAL" 2>&1) || fail discovery "$out"
  echo "$out" | sed 's/^/discovery: /' | log_lines
  echo "$out" | grep -q "^$PORTAL,[0-9]* $IQN\$" ||
    fail discovery "SendTargets did not advertise $PORTAL for $IQN: $out"
  pass discovery
}

# configure_node: CHAP (CHAP_USER/CHAP_SECRET) and digests (DIGEST, e.g. CRC32C) from the env.
configure_node() {
  if [ -n "${CHAP_USER:-}" ]; then
    node_set node.session.auth.authmethod CHAP || fail chap-config "iscsiadm update failed"
    node_set node.session.auth.username "$CHAP_USER" || fail chap-config "iscsiadm update failed"
    node_set node.session.auth.password "$CHAP_SECRET" || fail chap-config "iscsiadm update failed"
  fi
  if [ -n "${DIGEST:-}" ]; then
    node_set 'node.conn[0].iscsi.HeaderDigest' "$DIGEST" || fail digest-config "iscsiadm update failed"
    node_set 'node.conn[0].iscsi.DataDigest' "$DIGEST" || fail digest-config "iscsiadm update failed"
  fi
}

# check_digests: the negotiated digests are $DIGEST (when set).
check_digests() {
  [ -n "${DIGEST:-}" ] || return 0
  params=$(iscsiadm -m session -P 2 2>&1)
  echo "$params" | grep -q "HeaderDigest: $DIGEST" || fail header-digest "not negotiated: $params"
  echo "$params" | grep -q "DataDigest: $DIGEST" || fail data-digest "not negotiated: $params"
  pass digests-negotiated
}

login() {
  out=$(iscsiadm -m node -T "$IQN" -p "$PORTAL" --login 2>&1) || fail login "$out"
  pass login
}

logout() {
  out=$(iscsiadm -m node -T "$IQN" -p "$PORTAL" --logout 2>&1) || fail logout "$out"
  pass logout
}

# kernel_errors: block/SCSI/ext4 errors the kernel logged (none may reach the file system).
kernel_errors() {
  dmesg | grep -E 'I/O error|EXT4-fs (error|warning)|Buffer I/O|critical medium|Aborting journal|remounting filesystem read-only' || true
}

# Files with random contents and their checksums in /tmp/sums (paths relative to the mount).
write_files() {
  dir=$1; count=$2; kib=$3
  mkdir -p "$dir/data/deep/er"
  i=1
  while [ "$i" -le "$count" ]; do
    dd if=/dev/urandom of="$dir/data/f$i" bs=1024 count=$((kib * i)) 2>/dev/null || return 1
    i=$((i + 1))
  done
  echo "small file" > "$dir/data/deep/er/small"
  (cd "$dir" && find data -type f | sort | xargs md5sum) > /tmp/sums
}

verify_files() { (cd "$1" && md5sum -c /tmp/sums >/tmp/verify.out 2>&1) || { cat /tmp/verify.out; return 1; }; }

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# --- LIO guests (tests/tests/lio_tcmu.rs) ------------------------------------------------------

# lio_load: loads target_core_user and tcm_loop and mounts configfs at $CFG.
lio_load() {
  step modprobe-tcmu modprobe target_core_user
  step modprobe-tcm-loop modprobe tcm_loop
  grep -q " $CFG configfs" /proc/mounts || step mount-configfs mount -t configfs configfs "$CFG"
  [ -d "$CFG/target/core" ] || fail lio-present "no $CFG/target/core"
  pass lio-present
}

lunard_log() { tail -n 60 /tmp/lunard.log | sed 's/^/lunard: /' | log_lines; }

# lunard_loopback POOL_MIB LUN_MIB: lunard in this guest with one loopback target $WWPN whose
# LUN 0 is the thin volume $VOL; waits for its ready line (sets LPID).
lunard_loopback() {
  mkdir -p /var/lib/lunar
  cat > /etc/lunar.yaml <<EOF
data_dir: /var/lib/lunar
pool:
  path: pool
  chunk_size: 64KiB
  capacity: ${1}MiB
portals:
  - listen: 127.0.0.1:3260
metrics:
  enabled: false
targets:
  - wwpn: $WWPN
    fabric: loopback
    allow_any: true
    luns:
      - id: 0
        volume: $VOL
        size: ${2}MiB
EOF
  lunard --config /etc/lunar.yaml >/tmp/lunard.log 2>&1 &
  LPID=$!
  t=0
  until grep -q "lunard ready" /tmp/lunard.log; do
    kill -0 "$LPID" 2>/dev/null || { lunard_log; fail lunard-ready "lunard exited"; }
    sleep 1; t=$((t + 1))
    [ "$t" -lt 60 ] || { lunard_log; fail lunard-ready "no ready line after 60 s"; }
  done
  pass lunard-ready
}

guest_main() {
  for m in e1000 crc32c_generic crc32c-intel scsi_transport_iscsi libiscsi libiscsi_tcp iscsi_tcp sd_mod ext4; do
    modprobe "$m" 2>/tmp/modprobe.err || case "$m" in
      crc32c-intel) ;;  # needs SSE4.2; crc32c_generic serves otherwise
      *) say "FAIL boot modprobe $m: $(cat /tmp/modprobe.err)"; dump_diag; say "DONE 1"; poweroff -f ;;
    esac
  done
  ip link set lo up
  nic=$(ls /sys/class/net | grep -v '^lo$' | head -n 1)
  [ -n "$nic" ] || { say "FAIL boot no network interface"; dump_diag; say "DONE 1"; poweroff -f; }
  ip addr add 10.0.2.15/24 dev "$nic"
  ip link set "$nic" up
  [ -f /scenario/env ] || { say "FAIL boot no /scenario/env"; say "DONE 1"; poweroff -f; }
  . /scenario/env
  echo "InitiatorName=${INITIATOR:-iqn.2026-11.io.lunar.test:kernel-guest}" > /etc/iscsi/initiatorname.iscsi
  # Manual node startup; faster NOP-Out based failure detection than the defaults.
  sed -i -e 's/^node.startup = .*/node.startup = manual/' \
    -e "s/^node.session.timeo.replacement_timeout = .*/node.session.timeo.replacement_timeout = ${REPLACEMENT_TIMEOUT:-120}/" \
    /etc/iscsi/iscsid.conf
  iscsid -f >/tmp/iscsid.log 2>&1 &
  t=0
  until iscsiadm -m session >/dev/null 2>&1 || iscsiadm -m session 2>&1 | grep -q "No active sessions"; do
    sleep 1; t=$((t + 1))
    [ "$t" -lt 30 ] || { say "FAIL boot iscsid did not start"; dump_diag; say "DONE 1"; poweroff -f; }
  done
  say "BOOTED $(uname -r) nic=$nic"
  ( . /scenario/run.sh )
  rc=$?
  sync
  say "DONE $rc"
  poweroff -f
}
