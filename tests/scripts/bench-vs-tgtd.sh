#!/usr/bin/env bash
# Benchmarks lunard against tgtd on this machine and prints a markdown table.
#
#     bash tests/scripts/bench-vs-tgtd.sh            # 5 runs per cell, 1 GiB LUNs
#     RUNS=3 SECONDS_PER_RUN=5 bash tests/scripts/bench-vs-tgtd.sh
#     BASE_LUNARD_BIN=/path/to/older/lunard bash tests/scripts/bench-vs-tgtd.sh   # before/after
#     WORKLOADS="seqwrite randread1 fio_randread1" bash tests/scripts/bench-vs-tgtd.sh
#
# With BASE_LUNARD_BIN a second lunard (e.g. the build before a change) runs beside the first
# and takes its turn in the same alternation (base, lunard, tgtd, base, lunard, tgtd...), so a
# before/after comparison sees the same machine load; the table gains a base column and the
# base/tgtd ratio.
#
# Both targets listen on loopback and keep their data on tmpfs (/dev/shm): lunard's pool and
# tgtd's backing file, each for a 1 GiB LUN with 512-byte blocks, so the comparison measures
# the targets, not a disk. Workloads alternate lunard/tgtd run by run (so drift in machine load
# hits both), and each cell is the median of RUNS runs. Initiators (both in user space, via
# libiscsi, so no kernel initiator is involved):
#   - iscsi-perf (libiscsi-bin): random/sequential READs at a fixed queue depth, IOPS;
#   - qemu-img bench over iscsi:// (qemu-block-extra): WRITEs. qemu-img bench has no random
#     mode; its "step" (-S) wraps modulo the LUN size, so a step of 104729 (a prime) x 4 KiB
#     visits every 4 KiB block of the LUN once, scattered — random writes without repeats.
#   - fio with its libiscsi engine, when a build with that engine is available (Debian's fio
#     has none; tests/scripts/build-fio-libiscsi.sh builds one): 4 KiB random read at QD1 and
#     QD32 and random write at QD32, the rows where a second initiator with its own I/O loop
#     is worth having. FIO=/path/to/fio picks the binary; otherwise the script's cache
#     directory is tried; FIO=none skips these rows.
# The sequential-write workload runs first and fills both LUNs, so reads never hit holes
# (a thin LUN would answer those without touching storage).
#
# The machine's limit runs in the same alternation (issue 17): a null iSCSI target
# (lunar-null-target, tests/src/bin: scsi-proto's PDU codec and login, no storage: READs
# return zeros, WRITEs are taken and answered GOOD) takes every workload's turn after tgtd,
# and one loopback TCP stream (lunar-null-target --tcp-throughput, 1 MiB writes into a
# reader that discards them) takes the sequential rows' turn. The table adds lunard's ratio
# to both: what any iSCSI target could reach on this machine, and what the wire allows.
#
# Needs root (tgtd), libiscsi-bin, tgt, qemu-utils, qemu-block-extra and a release lunard
# (built here if missing). These are figures, not assertions: this is not part of run-all.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNS=${RUNS:-5}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-6}
LUN_BYTES=$((1 << 30))
export PATH="$PATH:/usr/sbin:/sbin"
TARGET_DIR=${CARGO_TARGET_DIR:-target}
LUNARD=${LUNARD_BIN:-$TARGET_DIR/release/lunard}

for t in iscsi-perf qemu-img tgtd tgtadm; do
  command -v "$t" >/dev/null || { echo "missing $t (apt-get install libiscsi-bin qemu-utils qemu-block-extra tgt)"; exit 2; }
done
FIO=${FIO:-${XDG_CACHE_HOME:-$HOME/.cache}/lunar/fio-libiscsi/fio}
if [ "$FIO" != none ] && [ -x "$FIO" ] && "$FIO" --enghelp 2>/dev/null | grep -qw libiscsi; then
  echo "fio with libiscsi: $FIO"
else
  echo "no fio with the libiscsi engine (bash tests/scripts/build-fio-libiscsi.sh builds one): fio rows skipped"
  FIO=""
fi
if [ ! -x "$LUNARD" ]; then
  echo "building release lunard..."
  cargo build --release -p target-daemon --bin lunard
fi
NULL_TARGET=${NULL_TARGET_BIN:-$TARGET_DIR/release/lunar-null-target}
if [ ! -x "$NULL_TARGET" ]; then
  echo "building release lunar-null-target..."
  cargo build --release -p lunar-e2e --bin lunar-null-target
fi

work=$(mktemp -d /dev/shm/lunar-bench.XXXXXX)
lunard_pid="" base_pid="" tgtd_pid="" ctl="" null_pid=""
cleanup() {
  set +e
  [ -n "$null_pid" ] && kill -TERM "$null_pid" 2>/dev/null && wait "$null_pid" 2>/dev/null
  [ -n "$lunard_pid" ] && kill -TERM "$lunard_pid" 2>/dev/null && wait "$lunard_pid" 2>/dev/null
  [ -n "$base_pid" ] && kill -TERM "$base_pid" 2>/dev/null && wait "$base_pid" 2>/dev/null
  if [ -n "$tgtd_pid" ]; then
    kill -KILL "$tgtd_pid" 2>/dev/null   # tgtd ignores SIGTERM; its state is scratch
    wait "$tgtd_pid" 2>/dev/null
    rm -f "/var/run/tgtd/socket.$ctl" "/var/run/tgtd/socket.$ctl.lock"
  fi
  rm -rf "$work"
  return 0
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- lunard: a 1 GiB thin LUN, pool on tmpfs ----------------------------------------------
cat >"$work/lunard.yaml" <<EOF
pool:
  path: pool
  chunk_size: 64KiB
  capacity: 4GiB
portals:
  - listen: 127.0.0.1:0
targets:
  - iqn: iqn.2026-11.io.lunar:bench
    allow_any: true
    luns:
      - id: 0
        volume: bench
        size: 1GiB
EOF
# start_lunard BIN NAME: starts BIN with its own data directory, sets $started_pid and
# $started_url.
start_lunard() {
  local bin=$1 name=$2 addr=""
  "$bin" --config "$work/lunard.yaml" --data-dir "$work/$name-data" --portal 127.0.0.1:0 \
    --log-level warn,lunard=info >"$work/$name.log" 2>&1 &
  started_pid=$!
  for _ in $(seq 200); do
    addr=$(sed 's/\x1b\[[0-9;]*m//g' "$work/$name.log" | grep -o 'lunard ready: listening on [0-9.:]*' | awk '{print $NF}' | head -1 || true)
    [ -n "$addr" ] && break
    kill -0 "$started_pid" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$addr" ] || { echo "$name did not start:"; cat "$work/$name.log"; exit 1; }
  started_url="iscsi://$addr/iqn.2026-11.io.lunar:bench/0"
}
start_lunard "$LUNARD" lunard
lunard_pid=$started_pid
LUNARD_URL=$started_url
BASE_URL=""
if [ -n "${BASE_LUNARD_BIN:-}" ]; then
  start_lunard "$BASE_LUNARD_BIN" base
  base_pid=$started_pid
  BASE_URL=$started_url
fi


# --- tgtd: a 1 GiB sparse file on tmpfs ---------------------------------------------------
tgtd_port=$(free_port)
ctl=$((1 + tgtd_port % 32000))
truncate -s "$LUN_BYTES" "$work/tgtd.img"
tgtd -f -C "$ctl" --iscsi "portal=127.0.0.1:$tgtd_port" >"$work/tgtd.log" 2>&1 &
tgtd_pid=$!
for _ in $(seq 100); do
  tgtadm -C "$ctl" --op show --mode system >/dev/null 2>&1 && break
  sleep 0.1
done
tgtadm -C "$ctl" --lld iscsi --op new --mode target --tid 1 -T iqn.2026-11.io.lunar:tgtd-bench
tgtadm -C "$ctl" --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$work/tgtd.img"
tgtadm -C "$ctl" --lld iscsi --op bind --mode target --tid 1 -I ALL
TGTD_URL="iscsi://127.0.0.1:$tgtd_port/iqn.2026-11.io.lunar:tgtd-bench/1"

# --- the null target: no storage, the same LUN size -------------------------------------
"$NULL_TARGET" --listen 127.0.0.1:0 --blocks $((LUN_BYTES / 512)) >"$work/null.log" 2>&1 &
null_pid=$!
null_addr=""
for _ in $(seq 100); do
  null_addr=$(grep -o 'listening on [0-9.:]*' "$work/null.log" | awk '{print $NF}' | head -1 || true)
  [ -n "$null_addr" ] && break
  sleep 0.1
done
[ -n "$null_addr" ] || { echo "lunar-null-target did not start:"; cat "$work/null.log"; exit 1; }
NULL_URL="iscsi://$null_addr/iqn.2026-11.io.lunar:null/0"

# --- measurements -------------------------------------------------------------------------
# iscsi_perf URL QD BLOCKS [-r]: prints average IOPS over SECONDS_PER_RUN seconds.
iscsi_perf() {
  local url=$1 qd=$2 blocks=$3; shift 3
  timeout -s INT "$SECONDS_PER_RUN" iscsi-perf -i iqn.2026-11.io.lunar.bench:perf -m "$qd" -b "$blocks" "$@" "$url" 2>&1 |
    tr '\r' '\n' | grep -o 'iops average [0-9]*' | tail -1 | awk '{print $3}'
}
# qemu_bench URL QD SIZE COUNT [extra]: prints IOPS (count / elapsed).
qemu_bench() {
  local url=$1 qd=$2 size=$3 count=$4; shift 4
  qemu-img bench -f raw -t none -d "$qd" -s "$size" -c "$count" "$@" "$url" 2>&1 |
    awk -v c="$count" '/Run completed in/ {printf "%.0f\n", c / $4}'
}

# fio_iscsi URL RW QD: prints IOPS of a SECONDS_PER_RUN-second fio run (libiscsi engine).
fio_iscsi() {
  local url=$1 rw=$2 qd=$3
  # fio splits file names at ':'; the URL's colons are escaped.
  "$FIO" --name=bench --ioengine=libiscsi --initiator=iqn.2026-11.io.lunar.bench:fio \
    --filename="${url//:/\\:}" --rw="$rw" --bs=4k --iodepth="$qd" --time_based \
    --runtime="$SECONDS_PER_RUN" --randrepeat=0 --output-format=terse --terse-version=3 2>/dev/null |
    awk -F';' -v rw="$rw" 'NF > 50 {print (rw == "randwrite") ? $49 : $8}'
}

STEP=$((104729 * 4096))
declare -A result
workloads=(seqwrite seqread randread1 randread32 randwrite32)
[ -n "$FIO" ] && workloads+=(fio_randread1 fio_randread32 fio_randwrite32)
# WORKLOADS="seqwrite randread1" runs a subset (keep seqwrite first: it fills the LUNs).
[ -n "${WORKLOADS:-}" ] && read -r -a workloads <<<"$WORKLOADS"
declare -A title=(
  [seqwrite]="1 MiB sequential write, QD8 (qemu-img bench)"
  [seqread]="1 MiB sequential read, QD8 (iscsi-perf)"
  [randread1]="4 KiB random read, QD1 (iscsi-perf)"
  [randread32]="4 KiB random read, QD32 (iscsi-perf)"
  [randwrite32]="4 KiB random write, QD32 (qemu-img bench)"
  [fio_randread1]="4 KiB random read, QD1 (fio libiscsi)"
  [fio_randread32]="4 KiB random read, QD32 (fio libiscsi)"
  [fio_randwrite32]="4 KiB random write, QD32 (fio libiscsi)"
)
measure() { # workload url
  case $1 in
    seqwrite) qemu_bench "$2" 8 1M 1024 -w ;;   # the whole LUN: also fills it
    seqread) iscsi_perf "$2" 8 2048 ;;
    randread1) iscsi_perf "$2" 1 8 -r ;;
    randread32) iscsi_perf "$2" 32 8 -r ;;
    randwrite32) qemu_bench "$2" 32 4k 65536 -w -S "$STEP" ;;
    fio_randread1) fio_iscsi "$2" randread 1 ;;
    fio_randread32) fio_iscsi "$2" randread 32 ;;
    fio_randwrite32) fio_iscsi "$2" randwrite 32 ;;
  esac
}
median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print 0; else if (NR%2) print a[(NR+1)/2]; else printf "%.0f\n", (a[NR/2]+a[NR/2+1])/2}'; }

echo "lunard $LUNARD_URL"
[ -n "$BASE_URL" ] && echo "base   $BASE_URL ($BASE_LUNARD_BIN)"
echo "tgtd   $TGTD_URL"
echo "null   $NULL_URL"
targets=(lunard tgtd null)
[ -n "$BASE_URL" ] && targets=(base lunard tgtd null)
for w in "${workloads[@]}"; do
  for r in $(seq "$RUNS"); do
    run_targets=("${targets[@]}")
    # Loopback TCP bounds the sequential rows (MiB/s, i.e. 1 MiB "IOPS").
    case $w in seq*) run_targets+=(tcp) ;; esac
    for t in "${run_targets[@]}"; do
      case $t in lunard) url=$LUNARD_URL ;; base) url=$BASE_URL ;; tgtd) url=$TGTD_URL ;; null) url=$NULL_URL ;; tcp) url="" ;; esac
      if [ "$t" = tcp ]; then
        v=$("$NULL_TARGET" --tcp-throughput "$SECONDS_PER_RUN" || true)
      else
        v=$(measure "$w" "$url" || true)
      fi
      [ -n "$v" ] || { echo "  $w run $r $t: no result"; v=0; }
      result[$w,$t]+="$v "
      printf '  %-12s run %d %-7s %8s IOPS\n' "$w" "$r" "$t" "$v"
    done
  done
done
kill -0 "$lunard_pid" 2>/dev/null || { echo "lunard died during the benchmark:"; tail -50 "$work/lunard.log"; exit 1; }
[ -z "$base_pid" ] || kill -0 "$base_pid" 2>/dev/null || { echo "base lunard died during the benchmark:"; tail -50 "$work/base.log"; exit 1; }

mibs() { # iops workload -> MiB/s
  case $2 in seq*) echo "$1" ;; *) awk -v i="$1" 'BEGIN {printf "%.1f", i * 4 / 1024}' ;; esac
}
echo
echo "$(nproc) CPUs, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg), $RUNS runs per cell (median), ${SECONDS_PER_RUN}s per iscsi-perf/fio run, LUNs on tmpfs"
echo
ratio() { awk -v l="$1" -v g="$2" 'BEGIN {if (g > 0) printf "%.2f", l / g; else print "n/a"}'; }
cell() { echo "${result[$1,$2]:-}" | tr ' ' '\n' | grep . | median; }
# lunard / the null target for every row; / loopback TCP for the sequential ones.
limits() { # workload lunard-iops
  local n t
  n=$(cell "$1" null)
  case $1 in seq*) t=$(cell "$1" tcp) ;; *) t="" ;; esac
  printf '%s | %s | %s | %s' "$n" "$(ratio "$2" "$n")" "${t:-}" "$([ -n "$t" ] && ratio "$2" "$t" || echo)"
}
if [ -n "$BASE_URL" ]; then
  echo "| workload | base IOPS | lunard IOPS | tgtd IOPS | lunard MiB/s | tgtd MiB/s | base / tgtd | lunard / tgtd | null IOPS | lunard / null | loopback MiB/s | lunard / loopback |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
else
  echo "| workload | lunard IOPS | tgtd IOPS | lunard MiB/s | tgtd MiB/s | lunard / tgtd | null IOPS | lunard / null | loopback MiB/s | lunard / loopback |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
fi
for w in "${workloads[@]}"; do
  l=$(cell "$w" lunard)
  g=$(cell "$w" tgtd)
  if [ -n "$BASE_URL" ]; then
    b=$(cell "$w" base)
    echo "| ${title[$w]} | $b | $l | $g | $(mibs "$l" "$w") | $(mibs "$g" "$w") | $(ratio "$b" "$g") | $(ratio "$l" "$g") | $(limits "$w" "$l") |"
  else
    echo "| ${title[$w]} | $l | $g | $(mibs "$l" "$w") | $(mibs "$g" "$w") | $(ratio "$l" "$g") | $(limits "$w" "$l") |"
  fi
done
