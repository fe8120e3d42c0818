#!/usr/bin/env bash
# Bounded fuzzing of every parser that reads untrusted bytes: builds the libFuzzer targets of
# scsi-proto/fuzz (iSCSI PDUs, text, login, CDBs and sense, PERSISTENT RESERVE OUT lists and
# TransportIDs, EXTENDED COPY lists, UNMAP lists) and target-daemon/fuzz (admin request
# lines, YAML configuration, PDU streams through the iSCSI connection machine) and
# storage-core/fuzz (replication streams) on stable Rust, then runs each one for a fixed time starting
# from its committed corpus. Exits non-zero if any target crashes, hangs or leaks past its
# limits, printing the input that did it and how to replay it.
#
# Usage: bash tests/scripts/fuzz.sh [TARGET...]        (default: every target)
# Environment:
#     LUNAR_FUZZ_SECONDS  seconds per target (default 20; run-all.sh uses the default)
#     LUNAR_FUZZ_OPT_LEVEL  opt-level of the instrumented build (default 1: builds faster)
#     LUNAR_FUZZ_JOBS     targets run at once (default: the number of CPUs)
#     LUNAR_FUZZ_MERGE=1  afterwards, merge what the run found into the committed corpora
#                         (only inputs that add coverage; review the diff before committing)
#     CARGO_TARGET_DIR    the build goes to $CARGO_TARGET_DIR/fuzz (default target/fuzz), apart
#                         from the normal build, whose artifacts it would otherwise invalidate
#
# No nightly and no cargo-fuzz needed: the flags below are what cargo-fuzz passes, and all
# are stable; libfuzzer-sys compiles libFuzzer itself with the C++ compiler. The explicit
# --target keeps the instrumentation out of build scripts (which run on the host).
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

seconds=${LUNAR_FUZZ_SECONDS:-20}
jobs=${LUNAR_FUZZ_JOBS:-$(nproc 2>/dev/null || echo 2)}
target_dir=${CARGO_TARGET_DIR:-$root/target}
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
target_dir="$target_dir/fuzz"

# crate directory : its targets
crates=(
  "scsi-proto/fuzz:pdu_decode text_parse login cdb_parse pr_out xcopy unmap"
  "target-daemon/fuzz:admin_request config_yaml iscsi_connection"
  "storage-core/fuzz:stream_decode"
)

host=$(rustc -vV | sed -n 's/^host: //p')
[ -n "$host" ] || { echo "fuzz: cannot tell the host triple from rustc -vV"; exit 1; }
bin_dir="$target_dir/$host/release"
# opt-level 1, not 3: the instrumented build of three crate graphs was most of this step's
# time (426 s of 553 s in CI) for runs of 20 s; the runs find a little less per second at 1.
export CARGO_PROFILE_RELEASE_OPT_LEVEL=${LUNAR_FUZZ_OPT_LEVEL:-1}
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"

declare -A crate_of=()
all=()
for entry in "${crates[@]}"; do
  for t in ${entry#*:}; do crate_of[$t]=${entry%%:*}; all+=("$t"); done
done
if [ $# -gt 0 ]; then
  selected=("$@")
  for t in "${selected[@]}"; do
    [ -n "${crate_of[$t]:-}" ] || { echo "fuzz: unknown target $t (known: ${all[*]})"; exit 2; }
  done
else
  selected=("${all[@]}")
fi

t0=$(date +%s)
for entry in "${crates[@]}"; do
  dir=${entry%%:*}
  need=0
  for t in "${selected[@]}"; do [ "${crate_of[$t]}" = "$dir" ] && need=1; done
  [ "$need" = 1 ] || continue
  # The main workspace's `cargo fmt --all` does not reach these crates.
  (cd "$dir" && cargo fmt --check) || { echo "fuzz: $dir is not formatted (cargo fmt)"; exit 1; }
  echo "fuzz: building $dir"
  # Not --locked: the fuzz crates' Cargo.lock files pin what they had when committed, and
  # cargo adds to them (in the work tree) whatever a dependency added since; commit that.
  (cd "$dir" && CARGO_TARGET_DIR="$target_dir" cargo build --release --bins \
    --target "$host") || { echo "fuzz: build of $dir failed"; exit 1; }
done
t1=$(date +%s)
echo "fuzz: built in $((t1 - t0))s; running ${#selected[@]} targets for ${seconds}s each, $jobs at a time"

run_dir="$target_dir/runs"
rm -rf "$run_dir"
mkdir -p "$run_dir"

# run_one TARGET: fuzz it from a scratch corpus seeded by the committed one (libFuzzer adds
# new inputs to the first directory only, so the committed corpus is read, never written).
run_one() {
  local t=$1 dir=${crate_of[$1]}
  mkdir -p "$run_dir/$t/new" "$run_dir/$t/artifacts"
  "$bin_dir/$t" "$run_dir/$t/new" "$dir/corpus/$t" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$run_dir/$t/artifacts/" >"$run_dir/$t/log" 2>&1
}

declare -A pid_of=()
failed=()
# reap: wait for one running target and record its result.
reap() {
  local done_pid rc=0 t
  wait -n -p done_pid || rc=$?
  for t in "${!pid_of[@]}"; do
    [ "${pid_of[$t]}" = "$done_pid" ] || continue
    unset "pid_of[$t]"
    local runs
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$run_dir/$t/log")
    if [ "$rc" -eq 0 ]; then
      printf 'fuzz: %-14s ok   (%s runs, %s new inputs)\n' "$t" "${runs:-?}" \
        "$(find "$run_dir/$t/new" -type f | wc -l)"
    else
      failed+=("$t")
      printf 'fuzz: %-14s FAILED (exit %s)\n' "$t" "$rc"
      grep -E -A12 "panicked at|ERROR: libFuzzer|SUMMARY" "$run_dir/$t/log" | head -40
      local a
      for a in "$run_dir/$t/artifacts"/*; do
        [ -e "$a" ] || continue
        echo "fuzz: $t: failing input $a"
        echo "fuzz:   replay: $bin_dir/$t $a"
        echo "fuzz:   base64: $(base64 -w0 "$a" | head -c 2000)"
      done
      echo "fuzz: $t: full log $run_dir/$t/log"
    fi
  done
}

for t in "${selected[@]}"; do
  while [ "${#pid_of[@]}" -ge "$jobs" ]; do reap; done
  run_one "$t" &
  pid_of[$t]=$!
done
while [ "${#pid_of[@]}" -gt 0 ]; do reap; done
t2=$(date +%s)

if [ "${LUNAR_FUZZ_MERGE:-0}" = 1 ]; then
  for t in "${selected[@]}"; do
    dir=${crate_of[$t]}
    "$bin_dir/$t" -merge=1 "$dir/corpus/$t" "$run_dir/$t/new" >"$run_dir/$t/merge.log" 2>&1 ||
      echo "fuzz: merge of $t failed, see $run_dir/$t/merge.log"
  done
  echo "fuzz: merged new coverage into the corpora: $(du -sh scsi-proto/fuzz/corpus \
    target-daemon/fuzz/corpus | awk '{print $1}' | paste -sd+)"
fi

echo "fuzz: build $((t1 - t0))s, runs $((t2 - t1))s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}"
  exit 1
fi
echo "fuzz: ${#selected[@]} targets ran ${seconds}s each without a failure"
