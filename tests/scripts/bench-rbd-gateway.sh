#!/usr/bin/env bash
# Benchmarks one lunard HA gateway with its pool on an RBD image, over iSCSI, against
# `fio --ioengine=rbd` on a plain RBD image of the same size in the same cluster, and prints
# a markdown table (medians, and lunard / fio-rbd). Issue 16's speed goal: >= 0.8.
#
#     LUNAR_CEPH_CONF=/path/ceph.conf bash tests/scripts/bench-rbd-gateway.sh
#     RUNS=5 SECONDS_PER_RUN=10 LUNAR_CEPH_CONF=... bash tests/scripts/bench-rbd-gateway.sh
#     WORKLOADS="randread1 seqwrite" LUNAR_CEPH_CONF=... bash tests/scripts/bench-rbd-gateway.sh
#     BASE_LUNARD_BIN=/path/to/older/lunard LUNAR_CEPH_CONF=... bash tests/scripts/bench-rbd-gateway.sh
#     KEEP_JSON=/tmp/dir ... keeps every fio JSON output (latency percentiles); NAME_PREFIX=x
#     names the group, images and objects x-<random> (default bench).
#
# With BASE_LUNARD_BIN a second gateway (e.g. the build before a change; its own group, port
# and image) runs beside the first and takes its turn in the same alternation (base, lunard,
# fio-rbd, base, ...), so a before/after comparison sees the same machine and cluster load;
# the table gains the base figures and base / fio-rbd.
#
# What runs:
#   - ONE lunard gateway (an `ha:` section, `pool.rbd`; docs/ha.md) on 127.0.0.1 with a port
#     of its own, a unique group `bench-<random>`; the script waits until `lunarctl ha status`
#     says it is `active` (the owner: active/optimized). Its target has LUN 0, a 1 GiB thin
#     volume with 512-byte blocks, and LUN 1, a 4 x RUNS GiB thin volume left unwritten.
#   - Two plain RBD images in the same RADOS pool: one of 1 GiB (the counterpart of LUN 0) and
#     one of 4 x RUNS GiB (of LUN 1), both thin.
#   - LUN 0 and the 1 GiB image are filled first (1 MiB sequential writes), so reads hit data
#     and writes overwrite (a thin LUN or image would answer reads of holes without I/O).
#   - Each workload alternates lunard / fio-rbd run by run (RUNS runs each, so drift in the
#     machine's load hits both) and each cell is the median. The lunard side is fio with its
#     libiscsi engine (a user-space initiator; tests/scripts/build-fio-libiscsi.sh builds it,
#     FIO=/path picks one); the RBD side is Debian's fio with its rbd engine (FIO_RBD=/path),
#     with the same job options. Both sides are librbd with the RBD cache off (lunard turns it
#     off itself; the script checks that the ceph.conf does so for fio's client).
#     Workloads: 4 KiB random read QD1 and QD32, random write QD1 and QD32 (time-based,
#     SECONDS_PER_RUN), 1 MiB sequential read and write QD4 (time-based), and
#     `freshwrite32`: 4 KiB random writes at QD32 into space never written before: run r
#     writes into the r-th 4 GiB of LUN 1 / of the second image, FRESH_IOS (8192) writes at
#     random 64 KiB-aligned offsets (the pool's chunk size), so on lunard ~94% of them are
#     the first write into their chunk (fio's random map is off with blockalign, so a few
#     offsets repeat); on RBD a pool pays a synchronous journal write for a first write
#     (docs/performance.md).
# Afterwards the gateway is stopped (SIGTERM: it releases the lease) and the images and the
# group's RADOS objects (`lunar.<group>.*`) are removed, also on failure or ^C.
#
# Needs: a Ceph cluster (LUNAR_CEPH_CONF; client admin; RADOS pool RBD_POOL, default rbd),
# ceph-common (rbd, rados, ceph-conf), fio with the rbd engine, a fio with the libiscsi engine,
# python3, and a release lunard built with `--features ceph` (built here if missing). Figures,
# not assertions: this is not part of run-all.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNS=${RUNS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-6}
FRESH_IOS=${FRESH_IOS:-8192}
RBD_POOL=${RBD_POOL:-rbd}
CHUNK_KIB=64
TARGET_DIR=${CARGO_TARGET_DIR:-target}
LUNARD=${LUNARD_BIN:-$TARGET_DIR/release/lunard}
LUNARCTL=${LUNARCTL_BIN:-$TARGET_DIR/release/lunarctl}
IQN=iqn.2026-11.io.lunar:rbd-bench

CONF=${LUNAR_CEPH_CONF:?set LUNAR_CEPH_CONF to a cluster ceph.conf (tests/scripts/ceph.sh start DIR)}
CONF=$(realpath "$CONF")
for t in rbd rados ceph-conf python3; do
  command -v "$t" >/dev/null || { echo "missing $t (apt-get install ceph-common python3)"; exit 2; }
done
FIO_RBD=${FIO_RBD:-/usr/bin/fio}
"$FIO_RBD" --enghelp 2>/dev/null | grep -qw rbd || { echo "$FIO_RBD has no rbd engine (FIO_RBD=/path)"; exit 2; }
FIO=${FIO:-${XDG_CACHE_HOME:-$HOME/.cache}/lunar/fio-libiscsi/fio}
"$FIO" --enghelp 2>/dev/null | grep -qw libiscsi ||
  { echo "no fio with the libiscsi engine at $FIO (bash tests/scripts/build-fio-libiscsi.sh builds one; FIO=/path)"; exit 2; }
if [ "$(ceph-conf -c "$CONF" --name client.admin rbd_cache 2>/dev/null || true)" != false ]; then
  echo "warning: $CONF does not set 'rbd cache = false' for clients: fio-rbd would run with the"
  echo "         librbd cache on while lunard runs with it off (add it under [client])"
fi
if [ ! -x "$LUNARD" ] || [ ! -x "$LUNARCTL" ]; then
  echo "building release lunard with the ceph feature..."
  cargo build --release -p target-daemon --features ceph --bins
fi

export CEPH_CONF=$CONF
rbdc() { rbd -c "$CONF" --id admin -p "$RBD_POOL" "$@"; }
radosc() { rados -c "$CONF" --id admin -p "$RBD_POOL" "$@"; }

group=${NAME_PREFIX:-bench}-$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')
fio_image=$group-fio
fresh_image=$group-fresh
work=$(mktemp -d /tmp/lunar-rbd-bench.XXXXXX)
gateway_pids=()
gateway_groups=()
cleanup() {
  set +e
  local pid g
  for pid in "${gateway_pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  for img in "${gateway_groups[@]/#/lunar-}" "$fio_image" "$fresh_image"; do
    rbdc info "$img" >/dev/null 2>&1 || continue
    # A killed client's watch lingers until the OSD times it out (~30 s).
    for _ in $(seq 12); do rbdc rm --no-progress "$img" >/dev/null 2>&1 && break; sleep 5; done
    rbdc info "$img" >/dev/null 2>&1 && echo "could not remove image $RBD_POOL/$img"
  done
  for g in "${gateway_groups[@]}"; do
    radosc ls 2>/dev/null | grep -F "lunar.$g." | while read -r obj; do radosc rm "$obj"; done
  done
  left=$(radosc ls 2>/dev/null | grep -cF "$group" || true)
  [ "$left" = 0 ] || echo "left in RADOS pool $RBD_POOL: $left objects naming $group"
  rm -rf "$work"
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- the gateway(s) -----------------------------------------------------------------------
# start_gateway NAME BIN: one HA gateway of its own group ($group-NAME), work directory, port
# and image (lunar-$group-NAME); sets started_pid and started_port.
start_gateway() {
  local name=$1 bin=$2 g=$group-$1 dir=$work/$1 port
  mkdir -p "$dir"
  port=$(free_port)
  cat >"$dir/lunard.yaml" <<EOF
data_dir: $dir/data
pool:
  rbd:
    image: lunar-$g
  chunk_size: ${CHUNK_KIB}KiB
  capacity: $((4 * RUNS + 2))GiB
portals:
  - listen: 127.0.0.1:$port
ha:
  group: $g
  gateway: gw1
  port_group: 1
  ceph:
    conf: $CONF
    client: admin
    pool: $RBD_POOL
targets:
  - iqn: $IQN
    allow_any: true
    luns:
      - id: 0
        volume: bench
        size: 1GiB
      - id: 1
        volume: fresh
        size: $((4 * RUNS))GiB
EOF
  "$bin" --config "$dir/lunard.yaml" --no-metrics --log-level warn,lunard=info >"$dir/lunard.log" 2>&1 &
  started_pid=$!
  started_port=$port
  gateway_pids+=("$started_pid")
  gateway_groups+=("$g")
  local role=""
  for _ in $(seq 600); do
    kill -0 "$started_pid" 2>/dev/null || break
    role=$("$LUNARCTL" --socket "$dir/data/admin.sock" --json ha status 2>/dev/null |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["role"])' 2>/dev/null || true)
    [ "$role" = active ] && break
    sleep 0.1
  done
  [ "$role" = active ] || { echo "gateway $name did not become active (role '$role'):"; tail -50 "$dir/lunard.log"; exit 1; }
}
epoch() { # NAME
  "$LUNARCTL" --socket "$work/$1/data/admin.sock" --json ha status |
    python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["role"], s["epoch"])'
}
start_gateway main "$LUNARD"
lunard_pid=$started_pid
port=$started_port
start_state=$(epoch main)
sides=(lunard rbd)
base_pid=""
if [ -n "${BASE_LUNARD_BIN:-}" ]; then
  start_gateway base "$BASE_LUNARD_BIN"
  base_pid=$started_pid
  base_port=$started_port
  base_start=$(epoch base)
  sides=(base lunard rbd)
fi
echo "group $group-main: gateway active on 127.0.0.1:$port (image $RBD_POOL/lunar-$group-main); fio-rbd images $fio_image, $fresh_image"
[ -n "$base_pid" ] &&
  echo "group $group-base: base gateway ($BASE_LUNARD_BIN) active on 127.0.0.1:$base_port (image $RBD_POOL/lunar-$group-base)"

rbdc create --size 1G "$fio_image"
rbdc create --size "$((4 * RUNS))G" "$fresh_image"

# --- measurements -------------------------------------------------------------------------
# fio_json: prints "IOPS MiB/s IOS P50" of the fio JSON on stdin for side read|write (P50:
# median completion latency in microseconds; on a loaded host the mean, and so IOPS at QD1,
# is ruled by a few stalls of tens of milliseconds, the median by the I/O path).
fio_json() {
  python3 -c '
import json, sys
text = sys.stdin.read()
job = json.loads(text[text.index("{"):])["jobs"][0][sys.argv[1]]
p50 = job["clat_ns"].get("percentile", {}).get("50.000000", 0) / 1000.0
print("%.0f %.1f %d %.0f" % (job["iops"], job["bw_bytes"] / 1048576, job["total_ios"], p50))' "$1"
}
# with_rusage FILE CMD...: runs CMD and writes "CTX CPU_S" of it and all its threads and
# descendants (voluntary and involuntary context switches, user and system CPU seconds) to
# FILE. fio's own figures count the job's main thread only, not librbd's threads.
with_rusage() {
  python3 -c '
import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
u = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as f:
    f.write("%d %.4f\n" % (u.ru_nvcsw + u.ru_nivcsw, u.ru_utime + u.ru_stime))
sys.exit(rc)' "$@"
}
# proc_snap PID: "CPU_TICKS CTX" of a process, all its threads (utime+stime; voluntary and
# involuntary context switches).
proc_snap() {
  local ticks ctx
  ticks=$(awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0)
  ctx=$(cat /proc/"$1"/task/*/status 2>/dev/null |
    awk '/^(voluntary|nonvoluntary)_ctxt_switches/ {n += $2} END {print n + 0}')
  echo "$ticks $ctx"
}
CLK_TCK=$(getconf CLK_TCK)
# run_fio SIDE RW BS QD [fio options]: one fio job on a gateway (SIDE lunard or base, LUN 0)
# or on the 1 GiB RBD image (SIDE rbd); prints "IOPS MiB/s". A first option --fresh picks LUN
# 1 / the second image.
run_fio() {
  local side=$1 rw=$2 bs=$3 qd=$4 out
  shift 4
  local -a target
  if [ "$side" != rbd ]; then
    local p=$port lun=0
    [ "$side" = base ] && p=$base_port
    if [ "${1:-}" = --fresh ]; then lun=1; shift; fi
    local url="iscsi://127.0.0.1:$p/$IQN/$lun"
    # fio splits file names at ':'; the URL's colons are escaped.
    target=("$FIO" --ioengine=libiscsi --initiator=iqn.2026-11.io.lunar.bench:fio "--filename=${url//:/\\:}")
  else
    local image=$fio_image
    if [ "${1:-}" = --fresh ]; then image=$fresh_image; shift; fi
    target=("$FIO_RBD" --ioengine=rbd --clientname=admin "--pool=$RBD_POOL" "--rbdname=$image")
  fi
  out=$(with_rusage "$work/rusage" "${target[@]}" --name=bench --rw="$rw" --bs="$bs" --iodepth="$qd" --randrepeat=0 \
    --output-format=json "$@" 2>"$work/fio.err") || { cat "$work/fio.err" >&2; return 1; }
  if [ -n "${KEEP_JSON:-}" ]; then
    mkdir -p "$KEEP_JSON"
    echo "$out" >"$KEEP_JSON/$side-$rw-$bs-qd$qd-$(date +%s%N).json"
  fi
  case $rw in *write) echo "$out" | fio_json write ;; *) echo "$out" | fio_json read ;; esac |
    tr '\n' ' '
  cat "$work/rusage"
}
# measure_costs WORKLOAD SIDE RUN: measure's figures followed by "CTX/IO CPU_US/IO" of the
# client that talks to the OSD (the gateway process for lunard and base, fio's for rbd) and
# of the initiator (0 0 for rbd).
measure_costs() {
  local gw_pid="" before after v
  case $2 in lunard) gw_pid=$lunard_pid ;; base) gw_pid=$base_pid ;; esac
  [ -n "$gw_pid" ] && before=$(proc_snap "$gw_pid")
  v=$(measure "$@") || return 1
  [ -n "$gw_pid" ] && after=$(proc_snap "$gw_pid")
  # shellcheck disable=SC2086
  set -- $v
  local iops=$1 mibs=$2 ios=$3 p50=$4 ctx=$5 cpu=$6
  [ "$ios" -gt 0 ] || ios=1
  if [ -n "$gw_pid" ]; then
    # shellcheck disable=SC2086
    set -- $before $after
    awk -v i="$iops" -v m="$mibs" -v n="$ios" -v t0="$1" -v c0="$2" -v t1="$3" -v c1="$4" \
      -v ic="$ctx" -v icpu="$cpu" -v hz="$CLK_TCK" -v p="$p50" \
      'BEGIN {printf "%s %s %s %.2f %.1f %.2f %.1f\n", i, m, p, (c1 - c0) / n, (t1 - t0) / hz * 1e6 / n, ic / n, icpu * 1e6 / n}'
  else
    awk -v i="$iops" -v m="$mibs" -v n="$ios" -v c="$ctx" -v cpu="$cpu" -v p="$p50" \
      'BEGIN {printf "%s %s %s %.2f %.1f 0 0\n", i, m, p, c / n, cpu * 1e6 / n}'
  fi
}
timed=(--time_based "--runtime=$SECONDS_PER_RUN" --size=1g)

echo "filling LUN 0 and the 1 GiB image (1 MiB sequential writes, QD8)..."
echo "  lunard:  $(run_fio lunard write 1M 8 --size=1g | awk '{print $2}') MiB/s"
[ -n "$base_pid" ] && echo "  base:    $(run_fio base write 1M 8 --size=1g | awk '{print $2}') MiB/s"
echo "  fio-rbd: $(run_fio rbd write 1M 8 --size=1g | awk '{print $2}') MiB/s"

declare -A result title=(
  [randread1]="4 KiB random read, QD1"
  [randread32]="4 KiB random read, QD32"
  [randwrite1]="4 KiB random write, QD1"
  [randwrite32]="4 KiB random write, QD32"
  [seqread]="1 MiB sequential read, QD4"
  [seqwrite]="1 MiB sequential write, QD4"
  [freshwrite32]="4 KiB random write to unwritten space, QD32"
)
workloads=(randread1 randread32 randwrite1 randwrite32 seqread seqwrite freshwrite32)
[ -n "${WORKLOADS:-}" ] && read -r -a workloads <<<"$WORKLOADS"
measure() { # workload side run
  case $1 in
    randread1) run_fio "$2" randread 4k 1 "${timed[@]}" ;;
    randread32) run_fio "$2" randread 4k 32 "${timed[@]}" ;;
    randwrite1) run_fio "$2" randwrite 4k 1 "${timed[@]}" ;;
    randwrite32) run_fio "$2" randwrite 4k 32 "${timed[@]}" ;;
    seqread) run_fio "$2" read 1M 4 "${timed[@]}" ;;
    seqwrite) run_fio "$2" write 1M 4 "${timed[@]}" ;;
    # The run's own 4 GiB of the fresh LUN / image, chunk-aligned offsets.
    freshwrite32) run_fio "$2" randwrite 4k 32 --fresh --offset="$((($3 - 1) << 32))" --size=4g \
      --blockalign="${CHUNK_KIB}k" --io_size="$((FRESH_IOS * 4))k" ;;
  esac
}
median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print 0; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for w in "${workloads[@]}"; do
  for r in $(seq "$RUNS"); do
    for side in "${sides[@]}"; do
      v=$(measure_costs "$w" "$side" "$r" || true)
      [ -n "$v" ] || { echo "  $w run $r $side: no result"; v="0 0 0 0 0 0 0"; }
      read -r v_iops v_mibs v_p50 v_ctx v_cpu v_ictx v_icpu <<<"$v"
      result[$w,$side,iops]+="$v_iops "
      result[$w,$side,mibs]+="$v_mibs "
      result[$w,$side,p50]+="$v_p50 "
      result[$w,$side,ctx]+="$v_ctx "
      result[$w,$side,cpu]+="$v_cpu "
      printf '  %-12s run %d %-7s %7s IOPS %7s MiB/s p50 %6s us  client %6s cs/IO %6s us CPU/IO  initiator %5s cs/IO %6s us CPU/IO  load %s\n' \
        "$w" "$r" "$side" "$v_iops" "$v_mibs" "$v_p50" "$v_ctx" "$v_cpu" "$v_ictx" "$v_icpu" "$(cut -d' ' -f1 /proc/loadavg)"
    done
  done
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
kill -0 "$lunard_pid" 2>/dev/null || { echo "lunard died during the benchmark:"; tail -50 "$work/main/lunard.log"; exit 1; }
end_state=$(epoch main)
[ "$start_state" = "$end_state" ] ||
  echo "warning: the gateway's role/epoch changed during the run ($start_state -> $end_state): figures include a takeover"
if [ -n "$base_pid" ]; then
  kill -0 "$base_pid" 2>/dev/null || { echo "the base lunard died during the benchmark:"; tail -50 "$work/base/lunard.log"; exit 1; }
  base_end=$(epoch base)
  [ "$base_start" = "$base_end" ] ||
    echo "warning: the base gateway's role/epoch changed during the run ($base_start -> $base_end)"
fi

cell() { echo "${result[$1,$2,$3]:-}" | tr ' ' '\n' | grep . | median; }
ratio() { awk -v l="$1" -v g="$2" 'BEGIN {if (g > 0) printf "%.2f", l / g; else print "n/a"}'; }
echo
echo "$(nproc) CPUs, $(uname -r), load average $load_start at the start, $load_end at the end;"
echo "$RUNS runs per cell (median), ${SECONDS_PER_RUN}s per time-based run, $FRESH_IOS writes per unwritten-space run;"
echo "lunard: one HA gateway (active), pool on RBD image $RBD_POOL/lunar-$group-main (${CHUNK_KIB} KiB chunks), fio libiscsi over 127.0.0.1;"
[ -n "$base_pid" ] && echo "base: $BASE_LUNARD_BIN, the same on its own image $RBD_POOL/lunar-$group-base;"
echo "fio-rbd: $FIO_RBD --ioengine=rbd on a plain image of the same size"
echo
if [ -z "$base_pid" ]; then
  echo "| workload | lunard IOPS | fio-rbd IOPS | lunard MiB/s | fio-rbd MiB/s | lunard / fio-rbd |"
  echo "|---|---:|---:|---:|---:|---:|"
else
  echo "| workload | base IOPS | lunard IOPS | fio-rbd IOPS | base MiB/s | lunard MiB/s | fio-rbd MiB/s | base / fio-rbd | lunard / fio-rbd |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
fi
for w in "${workloads[@]}"; do
  li=$(cell "$w" lunard iops) ri=$(cell "$w" rbd iops)
  lm=$(cell "$w" lunard mibs) rm=$(cell "$w" rbd mibs)
  case $w in seq*) ra=$(ratio "$lm" "$rm") ;; *) ra=$(ratio "$li" "$ri") ;; esac
  if [ -z "$base_pid" ]; then
    echo "| ${title[$w]} | $li | $ri | $lm | $rm | $ra |"
  else
    bi=$(cell "$w" base iops) bm=$(cell "$w" base mibs)
    case $w in seq*) ba=$(ratio "$bm" "$rm") ;; *) ba=$(ratio "$bi" "$ri") ;; esac
    echo "| ${title[$w]} | $bi | $li | $ri | $bm | $lm | $rm | $ba | $ra |"
  fi
done
echo
echo "Medians of the median completion latency (us, as fio sees it), and per I/O of the process"
echo "that talks to the OSD -- the gateway (lunard, base; librbd's threads included) or fio's"
echo "(fio-rbd) -- its context switches and CPU microseconds (background work included)."
echo
echo "| workload |$(for side in "${sides[@]}"; do printf ' %s p50 us | %s cs/IO | %s us CPU/IO |' "$side" "$side" "$side"; done)"
echo "|---|$(for _ in "${sides[@]}"; do printf -- '---:|---:|---:|'; done)"
for w in "${workloads[@]}"; do
  row="| ${title[$w]} |"
  for side in "${sides[@]}"; do
    row+=" $(cell "$w" "$side" p50) | $(cell "$w" "$side" ctx) | $(cell "$w" "$side" cpu) |"
  done
  echo "$row"
done
