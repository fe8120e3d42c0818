#!/usr/bin/env bash
# Session scaling (issue 17, "More than one core"): 4 KiB random read and write at QD32 per
# session with 1, 2 and 4 sessions, lunard next to the null target (lunar-null-target,
# tests/src/bin: the wire and no storage, the machine's limit for any iSCSI target), in one
# alternation, and prints a markdown table.
#
#     bash tests/scripts/bench-sessions.sh
#     RUNS=3 SECONDS_PER_RUN=5 SESSIONS="1 2 4" bash tests/scripts/bench-sessions.sh
#     BASE_LUNARD_BIN=/path/to/older/lunard bash tests/scripts/bench-sessions.sh   # before/after
#
# Each session is one fio job of the libiscsi engine (fio --numjobs=N: N processes, each
# with its own libiscsi context, so its own session and TCP connection; the script checks
# lunard's lunar_iscsi_sessions gauge during a run to make sure), QD32 each. Per cell the
# median IOPS over RUNS runs, and the target's CPU time per I/O (user + system, from
# /proc/PID/stat over the run): on a shared, loaded host the steadier figure, since it does
# not depend on how much of the machine the run was given. The pool and the null target
# hold nothing on disk (tmpfs). Needs fio with the libiscsi engine
# (tests/scripts/build-fio-libiscsi.sh) and release builds of lunard and lunar-null-target
# (built here if missing). Figures, not assertions: not part of run-all.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNS=${RUNS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
SESSIONS=${SESSIONS:-"1 2 4"}
QD=${QD:-32}
LUN_BYTES=$((1 << 30))
TARGET_DIR=${CARGO_TARGET_DIR:-target}
LUNARD=${LUNARD_BIN:-$TARGET_DIR/release/lunard}
NULL_TARGET=${NULL_TARGET_BIN:-$TARGET_DIR/release/lunar-null-target}
FIO=${FIO:-${XDG_CACHE_HOME:-$HOME/.cache}/lunar/fio-libiscsi/fio}
"$FIO" --enghelp 2>/dev/null | grep -qw libiscsi ||
  { echo "no fio with the libiscsi engine at $FIO (bash tests/scripts/build-fio-libiscsi.sh)"; exit 2; }
[ -x "$LUNARD" ] || cargo build --release -p target-daemon --bin lunard
[ -x "$NULL_TARGET" ] || cargo build --release -p lunar-e2e --bin lunar-null-target

work=$(mktemp -d /dev/shm/lunar-sessions.XXXXXX)
pids=()
cleanup() {
  set +e
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  rm -rf "$work"
  return 0
}
trap cleanup EXIT

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
declare -A url pid
start_lunard() { # BIN NAME
  local bin=$1 name=$2 addr="" metrics
  metrics=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$bin" --config "$work/lunard.yaml" --data-dir "$work/$name-data" --portal 127.0.0.1:0 \
    --metrics "127.0.0.1:$metrics" --log-level warn,lunard=info >"$work/$name.log" 2>&1 &
  pid[$name]=$!
  pids+=($!)
  for _ in $(seq 200); do
    addr=$(sed 's/\x1b\[[0-9;]*m//g' "$work/$name.log" | grep -o 'lunard ready: listening on [0-9.:]*' | awk '{print $NF}' | head -1 || true)
    [ -n "$addr" ] && break
    kill -0 "${pid[$name]}" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$addr" ] || { echo "$name did not start:"; cat "$work/$name.log"; exit 1; }
  url[$name]="iscsi://$addr/iqn.2026-11.io.lunar:bench/0"
  echo "$name ${url[$name]} (pid ${pid[$name]}, metrics 127.0.0.1:$metrics)"
  eval "metrics_$name=127.0.0.1:$metrics"
}
start_lunard "$LUNARD" lunard
targets=(lunard null)
if [ -n "${BASE_LUNARD_BIN:-}" ]; then
  start_lunard "$BASE_LUNARD_BIN" base
  targets=(base lunard null)
fi
"$NULL_TARGET" --listen 127.0.0.1:0 --blocks $((LUN_BYTES / 512)) >"$work/null.log" 2>&1 &
pid[null]=$!
pids+=($!)
addr=""
for _ in $(seq 100); do
  addr=$(grep -o 'listening on [0-9.:]*' "$work/null.log" | awk '{print $NF}' | head -1 || true)
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "lunar-null-target did not start:"; cat "$work/null.log"; exit 1; }
url[null]="iscsi://$addr/iqn.2026-11.io.lunar:null/0"
echo "null ${url[null]} (pid ${pid[null]})"

# cpu_ticks PID: user + system clock ticks so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)

# fio_run URL RW JOBS: prints "IOPS" of a SECONDS_PER_RUN-second run, JOBS sessions at QD.
fio_run() {
  local u=$1 rw=$2 jobs=$3
  "$FIO" --name=bench --ioengine=libiscsi --initiator=iqn.2026-11.io.lunar.bench:fio \
    --filename="${u//:/\\:}" --rw="$rw" --bs=4k --iodepth="$QD" --numjobs="$jobs" \
    --group_reporting --time_based --runtime="$SECONDS_PER_RUN" --randrepeat=0 \
    --output-format=terse --terse-version=3 2>/dev/null |
    awk -F';' -v rw="$rw" 'NF > 50 {print (rw == "randwrite") ? $49 : $8}'
}

# Fill the LUNs so reads never hit holes (a thin LUN answers those without storage).
for t in "${targets[@]}"; do
  [ "$t" = null ] && continue
  "$FIO" --name=fill --ioengine=libiscsi --initiator=iqn.2026-11.io.lunar.bench:fio \
    --filename="${url[$t]//:/\\:}" --rw=write --bs=1M --iodepth=8 --size=$LUN_BYTES \
    --output-format=terse >/dev/null 2>&1 || { echo "filling $t failed"; exit 1; }
done

# The sessions really are separate: lunard's gauge during a 4-job run.
if [ -n "${metrics_lunard:-}" ]; then
  "$FIO" --name=probe --ioengine=libiscsi --initiator=iqn.2026-11.io.lunar.bench:fio \
    --filename="${url[lunard]//:/\\:}" --rw=randread --bs=4k --iodepth=4 --numjobs=4 \
    --time_based --runtime=3 --output-format=terse >/dev/null 2>&1 &
  probe=$!
  sleep 2
  echo "lunard sessions during a 4-job fio run: $(curl -s "http://$metrics_lunard/metrics" | awk '/^lunar_iscsi_sessions/ {s += $2} END {print s + 0}')"
  wait $probe || true
fi

declare -A iops cpu
for rw in randread randwrite; do
  for r in $(seq "$RUNS"); do
    for n in $SESSIONS; do
      for t in "${targets[@]}"; do
        c0=$(cpu_ticks "${pid[$t]}")
        v=$(fio_run "${url[$t]}" "$rw" "$n" || true)
        c1=$(cpu_ticks "${pid[$t]}")
        [ -n "$v" ] || v=0
        # CPU µs per I/O of the target process.
        per=$(awk -v c=$((c1 - c0)) -v t="$TCK" -v i="$v" -v s="$SECONDS_PER_RUN" \
          'BEGIN {if (i > 0) printf "%.1f", c / t * 1e6 / (i * s); else print "n/a"}')
        iops[$rw,$n,$t]+="$v "
        cpu[$rw,$n,$t]+="$per "
        printf '  %-9s run %d sessions %d %-7s %8s IOPS %8s CPU µs/IO  (load %s)\n' "$rw" "$r" "$n" "$t" "$v" "$per" "$(cut -d' ' -f1 /proc/loadavg)"
      done
    done
  done
done
for t in "${targets[@]}"; do
  kill -0 "${pid[$t]}" 2>/dev/null || { echo "$t died during the benchmark"; exit 1; }
done

median() { tr ' ' '\n' | grep -v '^$' | grep -v n/a | sort -n | awk '{a[NR]=$1} END {if (NR==0) print 0; else if (NR%2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}'; }
echo
echo "$(nproc) CPUs, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg), $RUNS runs per cell (median), ${SECONDS_PER_RUN}s per run, QD$QD per session, LUNs on tmpfs"
echo
head="| workload | sessions |"
sep="|---|---:|"
for t in "${targets[@]}"; do head+=" $t IOPS | $t CPU µs/IO |"; sep+="---:|---:|"; done
head+=" lunard / null | lunard vs 1 session | null vs 1 session |"
sep+="---:|---:|---:|"
echo "$head"
echo "$sep"
for rw in randread randwrite; do
  first=${SESSIONS%% *}
  l1=$(echo "${iops[$rw,$first,lunard]}" | median)
  n1=$(echo "${iops[$rw,$first,null]}" | median)
  for n in $SESSIONS; do
    row="| 4 KiB $rw QD$QD | $n |"
    for t in "${targets[@]}"; do
      row+=" $(echo "${iops[$rw,$n,$t]}" | median) | $(echo "${cpu[$rw,$n,$t]}" | median) |"
    done
    l=$(echo "${iops[$rw,$n,lunard]}" | median)
    nn=$(echo "${iops[$rw,$n,null]}" | median)
    row+=" $(ratio "$l" "$nn") | $(ratio "$l" "$l1") | $(ratio "$nn" "$n1") |"
    echo "$row"
  done
done
