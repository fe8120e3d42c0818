#!/usr/bin/env bash
# A throwaway single-node Ceph cluster for Lunar's Ceph tests: one monitor, one manager and one
# bluestore OSD on a sparse file, all under one base directory, on loopback only, without
# systemd and without authentication (auth none), pool size 1. It creates the RADOS pool `rbd`
# (initialised for RBD) and prints the configuration the tests use.
#
# Usage (as root, with ceph-mon, ceph-mgr, ceph-osd and ceph-common installed):
#     tests/scripts/ceph.sh start  BASE_DIR [MON_PORT]   # prints LUNAR_CEPH_CONF=<path>
#     tests/scripts/ceph.sh stop   BASE_DIR              # idempotent, by the daemons' pid files
#     tests/scripts/ceph.sh status BASE_DIR              # exit 0 when every daemon runs and
#                                                        # the cluster answers
# MON_PORT defaults to 3300 (msgr2 only; msgr1 is not bound). `start` on a base directory that
# already holds a cluster starts its stopped daemons again (the data is kept); on a running one
# it only prints the configuration. Environment: LUNAR_CEPH_OSD_SIZE (default 8G, sparse),
# LUNAR_CEPH_TIMEOUT (seconds to wait for readiness, default 120).
set -euo pipefail

usage() {
  echo "usage: $0 start|stop|status BASE_DIR [MON_PORT]" >&2
  exit 2
}

[ $# -ge 2 ] || usage
cmd=$1
base=$2
port=${3:-3300}
osd_size=${LUNAR_CEPH_OSD_SIZE:-8G}
timeout=${LUNAR_CEPH_TIMEOUT:-120}
export PATH="$PATH:/usr/sbin:/sbin"

case "$port" in
  '' | *[!0-9]*) echo "MON_PORT must be a number, got '$port'" >&2; exit 2 ;;
esac

# The daemons, in start order; stop goes the other way.
daemons=(mon.a mgr.x osd.0)

conf_path() { echo "$base/ceph.conf"; }

# ceph CLI against this cluster, bounded so a dead monitor cannot hang the script.
cephcli() { timeout 30 ceph -c "$(conf_path)" --connect-timeout 10 "$@"; }

pid_file() { echo "$base/run/$1.pid"; }

# Prints the pid of daemon $1 if its pid file names a live ceph daemon (a stale pid file whose
# number was reused by another process does not count).
live_pid() {
  local f pid comm
  f=$(pid_file "$1")
  [ -s "$f" ] || return 1
  pid=$(tr -dc '0-9' <"$f")
  [ -n "$pid" ] || return 1
  comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
  case "$comm" in ceph-*) echo "$pid" ;; *) return 1 ;; esac
}

write_conf() {
  local fsid=$1 conf
  conf=$(conf_path)
  mkdir -p "$base/run" "$base/log" "$base/mon" "$base/mgr" "$base/osd"
  cat >"$conf.tmp" <<EOF
# Written by tests/scripts/ceph.sh: a single-node test cluster, loopback only, no auth.
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$port/0
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
auth cluster required = none
auth service required = none
auth client required = none
keyring = /dev/null
osd pool default size = 1
osd pool default min size = 1
osd crush chooseleaf type = 0
osd pool default pg autoscale mode = off
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 2
mon warn on insecure global id reclaim allowed = false
mon warn on insecure global id reclaim = false
run dir = $base/run
admin socket = $base/run/\$cluster-\$name.asok
log file = $base/log/\$cluster-\$name.log
pid file = $base/run/\$type.\$id.pid
mon data = $base/mon/\$cluster-\$id
mgr data = $base/mgr/\$cluster-\$id
osd data = $base/osd/\$cluster-\$id
osd objectstore = bluestore
bluestore block create = true
bluestore block size = $(numfmt --from=iec "$osd_size")
bluestore fsck on mkfs = false
bluestore fsck on mount = false
osd memory target = 1073741824
[mon.a]
public addr = v2:127.0.0.1:$port/0
[client]
rbd cache = false
admin socket =
log file = $base/log/\$cluster-\$name.\$pid.log
EOF
  mv "$conf.tmp" "$conf"
}

# wait_for WHAT CMD...: until CMD succeeds, at most $timeout seconds; fails at once (with the
# daemon's log tail) when one of the daemons started so far has died.
wait_for() {
  local what=$1; shift
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    local d
    for d in "${started[@]}"; do
      if ! live_pid "$d" >/dev/null; then
        echo "ceph.sh: $d died while waiting for $what; its log ends:" >&2
        tail -n 15 "$base/log/ceph-$d.log" "$base/log/start-$d.log" 2>/dev/null >&2
        return 1
      fi
    done
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "ceph.sh: timed out after ${timeout}s waiting for $what" >&2
      return 1
    fi
    sleep 1
  done
}
started=()

osd_up() { cephcli osd dump --format json | grep -q '"up":1'; }
pgs_active() {
  local out
  out=$(cephcli pg stat) || return 1
  # e.g. "33 pgs: 33 active+clean; ..." -- every pg active+clean
  echo "$out" | grep -Eq '^([0-9]+) pgs: \1 active\+clean'
}

start_daemon() {
  local d=$1 type=${1%%.*} id=${1#*.}
  started+=("$d")
  if live_pid "$d" >/dev/null; then return 0; fi
  # The daemons fork into the background; their start-up chatter goes to the log directory.
  "ceph-$type" -c "$(conf_path)" -i "$id" >>"$base/log/start-$d.log" 2>&1 || {
    cat "$base/log/start-$d.log" >&2; return 1; }
}

do_start() {
  local conf fsid
  conf=$(conf_path)
  mkdir -p "$base"
  base=$(realpath "$base")
  conf=$(conf_path)
  if [ -f "$conf" ]; then
    grep -q "^mon host = v2:127.0.0.1:$port/0$" "$conf" || {
      echo "ceph.sh: $conf exists with another monitor port (not $port)" >&2; exit 1; }
    fsid=$(awk '$1 == "fsid" {print $3}' "$conf")
  else
    fsid=$(cat /proc/sys/kernel/random/uuid)
    write_conf "$fsid"
  fi

  if ! live_pid mon.a >/dev/null && ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
    echo "ceph.sh: 127.0.0.1:$port is already in use (another cluster?); pick another MON_PORT" >&2
    exit 1
  fi
  if [ ! -d "$base/mon/ceph-a" ]; then
    ceph-mon -c "$conf" --mkfs -i a --fsid "$fsid" --keyring /dev/null >"$base/log/mkfs-mon.log" 2>&1 || {
      cat "$base/log/mkfs-mon.log" >&2; exit 1; }
  fi
  start_daemon mon.a
  wait_for "the monitor on 127.0.0.1:$port" cephcli mon stat
  mkdir -p "$base/mgr/ceph-x"
  start_daemon mgr.x

  if [ ! -f "$base/osd/ceph-0/fsid" ]; then
    local uuid id
    uuid=$(cat /proc/sys/kernel/random/uuid)
    id=$(cephcli osd new "$uuid")
    [ "$id" = 0 ] || { echo "ceph.sh: expected OSD id 0, monitor gave '$id'" >&2; exit 1; }
    mkdir -p "$base/osd/ceph-0"
    ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$uuid" >"$base/log/mkfs-osd.log" 2>&1 || {
      cat "$base/log/mkfs-osd.log" >&2; exit 1; }
  fi
  start_daemon osd.0
  wait_for "the OSD to come up" osd_up

  if ! cephcli osd pool ls | grep -qx rbd; then
    cephcli osd pool create rbd 32 32 >/dev/null 2>>"$base/log/setup.log"
    timeout 60 rbd -c "$conf" pool init rbd
  fi
  wait_for "every placement group to be active+clean" pgs_active
  echo "LUNAR_CEPH_CONF=$conf"
}

do_stop() {
  [ -d "$base" ] || return 0
  local i d pid
  for (( i=${#daemons[@]}-1; i>=0; i-- )); do
    d=${daemons[$i]}
    pid=$(live_pid "$d") || { rm -f "$(pid_file "$d")"; continue; }
    kill -TERM "$pid" 2>/dev/null || true
    local n=0
    while [ -d "/proc/$pid" ] && [ "$n" -lt 150 ]; do sleep 0.2; n=$((n + 1)); done
    if [ -d "/proc/$pid" ]; then
      echo "ceph.sh: $d (pid $pid) ignored SIGTERM for 30s, killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$(pid_file "$d")"
  done
}

do_status() {
  local d pid rc=0
  for d in "${daemons[@]}"; do
    if pid=$(live_pid "$d"); then echo "$d running (pid $pid)"; else echo "$d stopped"; rc=1; fi
  done
  [ "$rc" = 0 ] || return 1
  cephcli health || return 1
  echo "LUNAR_CEPH_CONF=$(conf_path)"
}

case "$cmd" in
  start) do_start ;;
  stop) do_stop ;;
  status) base=$(realpath "$base" 2>/dev/null || echo "$base"); do_status ;;
  *) usage ;;
esac
