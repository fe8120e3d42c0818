#!/usr/bin/env bash
# Replication throughput against the machine's limits (issue 18's SPEED goals), one
# alternating run, figures as ratios to one loopback TCP stream:
#
#   tcp   one loopback TCP stream, 1 MiB writes into a discarding reader
#         (`lunar-null-target --tcp-throughput`, the meter bench-vs-tgtd.sh uses);
#   tls   the same over the replication link's TLS alone (mutual TLS 1.3, rustls, the
#         link's own configuration: `examples/link_bench`, its TLS figure);
#   pipe  a full send of a cached volume: `lunarctl replica send | lunarctl replica receive`
#         between two lunards (admin sockets, no TLS);
#   link  the same full send as the first cycle of a relationship between the two lunards
#         over the TLS link (bytes / duration of the source's `last_transfer`).
#
# Each round runs them in turn, so drift in machine load hits them all; the table prints
# each round and the medians. Both lunards keep their pools on /dev/shm, and the source
# volume (SIZE_MIB of non-zero data written through iSCSI once) is cached.
# BASE_LUNARD_BIN and BASE_LUNARCTL_BIN (both) add a second pair of lunards built from other
# code: its pipe and link sends take their turns in the same rounds (before/after).
#
#   bash tests/scripts/bench-replication.sh                 # 3 rounds, 2 GiB volume
#   ROUNDS=5 SIZE_MIB=1024 bash tests/scripts/bench-replication.sh
#   BASE_LUNARD_BIN=/tmp/base/lunard BASE_LUNARCTL_BIN=/tmp/base/lunarctl SIZE_MIB=1024 \
#       bash tests/scripts/bench-replication.sh
#   RPO=1 MINUTES=5 bash tests/scripts/bench-replication.sh # RPO soak instead
#
# RPO soak (RPO=1): a relationship with a 1-minute schedule (EVERY) while the source takes a
# steady write load (WRITE_MIB MiB of 64 KiB writes every second at scattered offsets, by
# qemu-img bench over iSCSI) for MINUTES minutes; `lag_secs` of `lunarctl replica list` is
# sampled every SAMPLE seconds and the script prints the maximum lag / interval (the goal:
# at most 2) and the load average.
#
# A benchmark, not a test: it prints figures and asserts nothing beyond "it ran".
# Needs qemu-img (qemu-block-extra for iscsi://) and python3; builds what is missing
# (release). LUNARD_BIN / LUNARCTL_BIN / NULL_TARGET_BIN / LINK_BENCH_BIN override.
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-3}
SIZE_MIB=${SIZE_MIB:-2048}
TCP_SECONDS=${TCP_SECONDS:-3}
TLS_MIB=${TLS_MIB:-2048}
RPO=${RPO:-0}
MINUTES=${MINUTES:-5}
EVERY=${EVERY:-1m}
WRITE_MIB=${WRITE_MIB:-4}
SAMPLE=${SAMPLE:-5}
[ "$RPO" = 1 ] && SIZE_MIB=${RPO_SIZE_MIB:-1024}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
LUNARD=${LUNARD_BIN:-$TARGET_DIR/release/lunard}
LUNARCTL=${LUNARCTL_BIN:-$TARGET_DIR/release/lunarctl}
NULL_TARGET=${NULL_TARGET_BIN:-$TARGET_DIR/release/lunar-null-target}
LINK_BENCH=${LINK_BENCH_BIN:-$TARGET_DIR/release/examples/link_bench}
BASE=""
if [ -n "${BASE_LUNARD_BIN:-}" ] || [ -n "${BASE_LUNARCTL_BIN:-}" ]; then
  [ -x "${BASE_LUNARD_BIN:-}" ] && [ -x "${BASE_LUNARCTL_BIN:-}" ] ||
    { echo "BASE_LUNARD_BIN and BASE_LUNARCTL_BIN must both name executables"; exit 2; }
  BASE=1
fi
IQN=iqn.2026-11.io.lunar:repl-bench

command -v qemu-img >/dev/null || { echo "missing qemu-img (apt-get install qemu-utils qemu-block-extra)"; exit 2; }
[ -x "$LUNARD" ] && [ -x "$LUNARCTL" ] || cargo build --release -p target-daemon --bin lunard --bin lunarctl
[ -x "$NULL_TARGET" ] || cargo build --release -p lunar-e2e --bin lunar-null-target
[ -x "$LINK_BENCH" ] || cargo build --release -p target-daemon --example link_bench

work=$(mktemp -d /dev/shm/lunar-repl-bench.XXXXXX)
pids=() load_pid=""
cleanup() {
  set +e
  [ -n "$load_pid" ] && kill -TERM "$load_pid" 2>/dev/null && wait "$load_pid" 2>/dev/null
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  rm -rf "$work"
  return 0
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
# json EXPR: reads JSON on stdin, prints the Python expression EXPR of it (`j` is the value).
json() { python3 -c "import json,sys; j=json.load(sys.stdin); print($1)"; }
calc() { python3 -c "print($1)"; }
now() { date +%s.%N; }
# mibps BYTES SECONDS
mibps() { calc "round($1 / 1048576 / $2)"; }

declare -A CTL URL
# ctl SIDE ARGS...: lunarctl of lunard SIDE.
ctl() { local s=$1; shift; "${CTL[$s]}" --socket "$work/$s-data/admin.sock" "$@"; }

pool_mib=$((SIZE_MIB * 3 + 1024))
[ "$RPO" = 1 ] && pool_mib=$((SIZE_MIB * 4 + 1024))
# config OTHER MYPORT OTHERPORT OTHERFP LUNS
config() {
  cat <<EOF
pool:
  path: pool
  chunk_size: 64KiB
  capacity: ${pool_mib}MiB
portals:
  - listen: 127.0.0.1:0
targets:
  - iqn: $IQN
    allow_any: true
    luns:$5
replication:
  listen: 127.0.0.1:$2
  identity:
    cert: replication/identity.crt
    key: replication/identity.key
  peers:
    - name: $1
      address: 127.0.0.1:$3
      fingerprint: "$4"
EOF
}

# start SIDE LUNARD: starts lunard SIDE (config $work/SIDE.yaml), sets URL[SIDE] (its LUN 0).
start() {
  local s=$1 bin=$2 addr="" pid
  "$bin" --config "$work/$s.yaml" --data-dir "$work/$s-data" --portal 127.0.0.1:0 \
    --log-level warn,lunard=info >"$work/$s.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 300); do
    addr=$(sed 's/\x1b\[[0-9;]*m//g' "$work/$s.log" | grep -o 'lunard ready: listening on [0-9.:]*' | awk '{print $NF}' | head -1 || true)
    [ -n "$addr" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$addr" ] || { echo "lunard $s did not start:"; cat "$work/$s.log"; exit 1; }
  URL[$s]="iscsi://$addr/$IQN/0"
}

# pair SRC DST LUNARD LUNARCTL: two paired lunards, SRC with volume src (filled), DST empty.
pair() {
  local a=$1 b=$2 bin=$3 ctlbin=$4 fa fb pa pb
  CTL[$a]=$ctlbin CTL[$b]=$ctlbin
  for s in "$a" "$b"; do
    mkdir -p "$work/$s-data/replication"
    "$ctlbin" replica identity create --cert "$work/$s-data/replication/identity.crt" \
      --key "$work/$s-data/replication/identity.key" >/dev/null
  done
  fa=$("$ctlbin" replica identity show --cert "$work/$a-data/replication/identity.crt" | grep -o 'sha256:[0-9a-f:]*')
  fb=$("$ctlbin" replica identity show --cert "$work/$b-data/replication/identity.crt" | grep -o 'sha256:[0-9a-f:]*')
  pa=$(free_port)
  pb=$(free_port)
  config "$b" "$pa" "$pb" "$fb" "
      - id: 0
        volume: src
        size: ${SIZE_MIB}MiB" >"$work/$a.yaml"
  config "$a" "$pb" "$pa" "$fa" " []" >"$work/$b.yaml"
  start "$a" "$bin"
  start "$b" "$bin"
  echo "$a: filling src with ${SIZE_MIB} MiB of non-zero data (1 MiB writes, QD8, iSCSI)..."
  qemu-img bench -w -f raw -t none -d 8 -s 1M -c "$SIZE_MIB" --pattern=0x5a "${URL[$a]}" >/dev/null
}

# wait_transfer SIDE NAME: waits for relationship NAME's first transfer on SIDE; prints
# "bytes duration_ms".
wait_transfer() {
  local out
  for _ in $(seq 6000); do
    out=$(ctl "$1" --json replica list | json "' '.join(str(r['last_transfer'][k]) for r in j if r['name'] == '$2' and r.get('last_transfer') for k in ('bytes', 'duration_ms'))")
    [ -n "$out" ] && { echo "$out"; return 0; }
    sleep 0.1
  done
  echo "relationship $2 made no transfer:" >&2
  ctl "$1" --json replica list >&2
  exit 1
}

echo "load average before: $(loadavg)"
pair a b "$LUNARD" "$LUNARCTL"

if [ "$RPO" = 1 ]; then
  # --- RPO soak ---------------------------------------------------------------------------
  echo "relationship every $EVERY, steady load ${WRITE_MIB} MiB/s of 64 KiB writes, ${MINUTES} min"
  ctl a replica create rpo --volume src --peer b --remote-volume rpo --every "$EVERY" >/dev/null
  wait_transfer a rpo >/dev/null
  every_s=$(ctl a --json replica list | json "[r['every_secs'] for r in j if r['name'] == 'rpo'][0]")
  chunks=$((SIZE_MIB * 16))
  per_s=$((WRITE_MIB * 16))
  (
    off=0
    while :; do
      t0=$(now)
      # 64 KiB writes at a stride of 4099 chunks (a prime) modulo the volume: scattered.
      qemu-img bench -w -f raw -t none -d 4 -s 64K -c "$per_s" -S $((4099 * 65536)) \
        -o $((off * 65536)) --pattern=0x3c "${URL[a]}" >/dev/null 2>&1 || true
      off=$(((off + per_s * 4099) % chunks))
      sleep "$(calc "max(0.0, 1 - ($(now) - $t0))")"
    done
  ) &
  load_pid=$!
  end=$(($(date +%s) + MINUTES * 60))
  max_lag=0 samples=0 loads=""
  while [ "$(date +%s)" -lt "$end" ]; do
    lag=$(ctl a --json replica list | json "[r['lag_secs'] or 0 for r in j if r['name'] == 'rpo'][0]")
    samples=$((samples + 1))
    [ "$lag" -gt "$max_lag" ] && max_lag=$lag
    if [ $((samples % 12)) = 1 ]; then
      echo "  t+$(((samples - 1) * SAMPLE))s lag ${lag}s (max ${max_lag}s) load average $(loadavg)"
      loads="$loads $(cut -d' ' -f1 /proc/loadavg)"
    fi
    sleep "$SAMPLE"
  done
  kill -TERM "$load_pid" 2>/dev/null
  wait "$load_pid" 2>/dev/null || true
  load_pid=""
  ctl a --json replica list | json "'last transfer: ' + str([r['last_transfer'] for r in j if r['name'] == 'rpo'][0])"
  echo "RPO soak: interval ${every_s}s, ${samples} samples over ${MINUTES} min, max lag ${max_lag}s," \
    "max lag / interval $(calc "round($max_lag / $every_s, 2)") (goal <= 2), load average (1 min) samples:${loads}"
  exit 0
fi

sides=(a)
[ -n "$BASE" ] && { pair a0 b0 "$BASE_LUNARD_BIN" "$BASE_LUNARCTL_BIN"; sides=(a a0); }
for s in "${sides[@]}"; do ctl "$s" snapshot create src@s1 >/dev/null; done

# pipe_send SRC DST ROUND: prints MiB/s of `lunarctl replica send | lunarctl replica receive`.
pipe_send() {
  local a=$1 b=$2 r=$3 t0 t1 bytes
  t0=$(now)
  ctl "$a" replica send --volume src --snapshot s1 | ctl "$b" replica receive --volume "p$r" >"$work/recv.out"
  t1=$(now)
  bytes=$(grep -o '([0-9]* bytes' "$work/recv.out" | tr -dc 0-9)
  echo "$bytes" >"$work/stream-bytes"
  ctl "$b" lun delete "p$r" --recursive >/dev/null || echo "  (p$r kept on $b)" >&2
  mibps "$bytes" "$(calc "$t1 - $t0")"
}

# link_send SRC DST ROUND: prints MiB/s of a relationship's first (full) transfer.
link_send() {
  local a=$1 b=$2 r=$3 lbytes lms s
  ctl "$a" replica create "r$r" --volume src --peer "$b" --remote-volume "l$r" --every 1h >/dev/null
  read -r lbytes lms < <(wait_transfer "$a" "r$r")
  # Free the space for the next round: the relationship and its snapshot on a, the copy on b.
  ctl "$a" replica delete "r$r" >/dev/null
  for s in $(ctl "$a" --json snapshot list src | json "' '.join(s['name'] for s in j if s['name'].startswith('repl-'))"); do
    ctl "$a" snapshot delete "src@$s" >/dev/null
  done
  ctl "$b" lun delete "l$r" --recursive --force >/dev/null 2>&1 || echo "  (l$r kept on $b)" >&2
  mibps "$lbytes" "$(calc "$lms / 1000")"
}

ratio() { calc "round($1 / $2, 2)"; }
declare -A V
cols=(tcp tls pipe link)
[ -n "$BASE" ] && cols+=(base-pipe base-link)
hdr=$(printf '%-6s' round; for c in "${cols[@]}"; do printf ' %10s' "$c"; done
  printf ' %9s %9s %9s %9s' tls/tcp pipe/tcp link/tcp link/tls
  [ -n "$BASE" ] && printf ' %9s %9s' pipe/base link/base
  printf '  %s' "load average")
echo "MiB/s per round (tcp, tls: 1 MiB writes into a discarding reader; pipe, link: full sends)"
echo "$hdr"
row() { # NAME: prints the row of V[NAME-*]
  local n=$1
  printf '%-6s' "$n"
  for c in "${cols[@]}"; do printf ' %10s' "${V[$n-$c]}"; done
  printf ' %9s %9s %9s %9s' "$(ratio "${V[$n-tls]}" "${V[$n-tcp]}")" "$(ratio "${V[$n-pipe]}" "${V[$n-tcp]}")" \
    "$(ratio "${V[$n-link]}" "${V[$n-tcp]}")" "$(ratio "${V[$n-link]}" "${V[$n-tls]}")"
  [ -n "$BASE" ] && printf ' %9s %9s' "$(ratio "${V[$n-pipe]}" "${V[$n-base-pipe]}")" \
    "$(ratio "${V[$n-link]}" "${V[$n-base-link]}")"
  printf '  %s\n' "$(loadavg)"
}
for r in $(seq 0 $((ROUNDS - 1))); do
  V[$r-tcp]=$("$NULL_TARGET" --tcp-throughput "$TCP_SECONDS")
  # link_bench prints MB/s (10^6) of one round; in MiB/s here.
  tls_mb=$("$LINK_BENCH" "$TLS_MIB" 1 | grep -o 'tls [0-9]* MB/s' | head -1 | awk '{print $2}')
  V[$r-tls]=$(calc "round($tls_mb * 1e6 / 1048576)")
  # Alternate which build goes first from round to round.
  if [ -n "$BASE" ] && [ $((r % 2)) = 1 ]; then
    V[$r-base-pipe]=$(pipe_send a0 b0 "$r")
    V[$r-pipe]=$(pipe_send a b "$r")
    V[$r-base-link]=$(link_send a0 b0 "$r")
    V[$r-link]=$(link_send a b "$r")
  else
    V[$r-pipe]=$(pipe_send a b "$r")
    [ -n "$BASE" ] && V[$r-base-pipe]=$(pipe_send a0 b0 "$r")
    V[$r-link]=$(link_send a b "$r")
    [ -n "$BASE" ] && V[$r-base-link]=$(link_send a0 b0 "$r")
  fi
  row "$r"
done
med() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print v[int((NR + 1) / 2)]}'; }
for c in "${cols[@]}"; do
  vals=()
  for r in $(seq 0 $((ROUNDS - 1))); do vals+=("${V[$r-$c]}"); done
  V[median-$c]=$(med "${vals[@]}")
done
row median
echo "volume ${SIZE_MIB} MiB, stream $(cat "$work/stream-bytes") bytes, ${ROUNDS} rounds"
