#!/usr/bin/env bash
# Runs every Lunar check: formatting, lints, release build, unit/property/crash tests, the
# end-to-end suite against real initiators (libiscsi, qemu) with the tgtd comparison, and a
# bounded fuzzing run of the parsers (tests/scripts/fuzz.sh).
#
# Usage (from anywhere; as root on a fresh Debian 12 with Rust, or with sudo available):
#     bash tests/run-all.sh
# It installs the Debian packages it needs first (idempotently: apt-get runs only when one is
# missing). Every step runs even if an earlier one failed (except that tests need a build), a
# summary follows, and the exit status is non-zero if anything failed. Environment:
#     CARGO_TARGET_DIR   build directory (default: target/)
#     LUNAR_SKIP_APT=1   never call apt-get (missing tools then fail the e2e tests)
#     LUNAR_E2E_STRICT   defaults to 1 here: a missing initiator tool fails instead of skipping
#     LUNAR_CEPH_CONF    an existing Ceph cluster's ceph.conf for the Ceph tests; unset, a
#                        throwaway single-node cluster (tests/scripts/ceph.sh) runs for the
#                        duration of this script under a temporary directory
#     LUNAR_CEPH_PORT    its monitor port (default 3399)
#     LUNAR_REQUIRE_CEPH defaults to 1 here: Ceph tests fail instead of skipping without a cluster
set -uo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
declare -a step_names=() step_status=() step_secs=()
failed=0

log() { printf '\n==> %s\n' "$*"; }

# run_step NAME COMMAND...: runs a step, records its status and duration.
run_step() {
  local name=$1; shift
  log "$name: $*"
  local t0=$(date +%s) rc=0
  "$@" || rc=$?
  local dt=$(( $(date +%s) - t0 ))
  step_names+=("$name"); step_secs+=("$dt")
  if [ "$rc" -eq 0 ]; then
    step_status+=("ok")
  else
    step_status+=("FAILED (exit $rc)"); failed=$((failed + 1))
    echo "!!! $name failed (exit $rc)"
  fi
  return "$rc"
}

skip_step() {
  step_names+=("$1"); step_status+=("not run ($2)"); step_secs+=(0); failed=$((failed + 1))
}

# ---------------------------------------------------------------------------------------------
# Debian packages: initiators (libiscsi-bin, qemu), tgtd (baseline), sg3-utils, fio,
# qemu-system-x86 (a guest running the kernel iSCSI initiator), prometheus (promtool and a
# real scraper), systemd (systemd-analyze), Ceph (a single-node cluster for the RBD and HA
# tests, and librados/librbd to build the `ceph` feature), and, if missing, a C toolchain
# for linking and a C++ compiler for libFuzzer.
install_packages() {
  # kmod: the guest build runs the host's depmod over the guest's modules.
  local need=(libiscsi-bin sg3-utils tgt qemu-utils qemu-block-extra fio qemu-system-x86
    prometheus systemd kmod ceph-mon ceph-osd ceph-mgr ceph-common librbd-dev librados-dev)
  command -v cc >/dev/null 2>&1 || need+=(build-essential)
  # libfuzzer-sys compiles libFuzzer (C++) for the fuzz step.
  command -v c++ >/dev/null 2>&1 || need+=(g++)
  local missing=() p
  for p in "${need[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  # qemu-block-extra (the iscsi:// driver) must be the same version as qemu-utils; a machine
  # that came with a qemu-utils from elsewhere (a backport) would otherwise lose qemu-img
  # when apt installs the distribution's qemu-block-extra. Install both from one suite.
  local qv bv
  qv=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
  bv=$(dpkg-query -W -f='${Version}' qemu-block-extra 2>/dev/null || true)
  local pin_qemu=0
  if [ "$qv" != "$bv" ] || ! command -v qemu-img >/dev/null 2>&1; then
    pin_qemu=1
    local tmp=()
    for p in "${missing[@]}"; do
      [ "$p" = qemu-utils ] || [ "$p" = qemu-block-extra ] || tmp+=("$p")
    done
    missing=("${tmp[@]}")
  fi
  # The kernel-initiator guest is assembled with `apt-get download`, which needs package lists.
  local have_lists=0
  compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null && have_lists=1
  if [ ${#missing[@]} -eq 0 ] && [ "$pin_qemu" = 0 ] && [ "$have_lists" = 1 ]; then
    echo "Debian packages present: ${need[*]}"
    return 0
  fi
  if [ "${LUNAR_SKIP_APT:-0}" = 1 ]; then
    [ ${#missing[@]} -eq 0 ] && { echo "no apt package lists, LUNAR_SKIP_APT=1: not updating"; return 0; }
    echo "missing Debian packages ${missing[*]} and LUNAR_SKIP_APT=1: not installing"
    return 1
  fi
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "need root or sudo to install ${missing[*]}"; return 1; }
    sudo="sudo"
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq || return 1
  if [ "$pin_qemu" = 1 ]; then
    # Both at the distribution's candidate version of qemu-block-extra: a newer qemu-utils
    # (a backport some images ship) would otherwise hold the pair back ("held broken
    # packages") and leave no iscsi:// driver.
    local cand
    cand=$(apt-cache policy qemu-block-extra | awk '/Candidate:/ {print $2; exit}')
    [ -n "$cand" ] && [ "$cand" != "(none)" ] || { echo "no candidate for qemu-block-extra"; return 1; }
    echo "installing qemu-utils and qemu-block-extra $cand"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      --allow-downgrades "qemu-utils=$cand" "qemu-block-extra=$cand" || return 1
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      --allow-downgrades "${missing[@]}" || return 1
  fi
  # What the tests run must really be there now, whatever apt decided.
  local t
  for t in qemu-img qemu-io iscsi-test-cu tgtd promtool qemu-system-x86_64 ceph-mon ceph-osd ceph-mgr ceph rbd; do
    command -v "$t" >/dev/null 2>&1 || [ -x "/usr/sbin/$t" ] ||
      { echo "after installing: $t still missing"; return 1; }
  done
  command -v depmod >/dev/null 2>&1 || [ -x /sbin/depmod ] || [ -x /usr/sbin/depmod ] ||
    { echo "after installing: depmod still missing"; return 1; }
}

rust_components() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install Rust (https://rustup.rs) first"
    return 1
  fi
  local c
  for c in rustfmt clippy; do
    if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
      if command -v rustup >/dev/null 2>&1; then
        rustup component add "$c" || return 1
      else
        echo "cargo $c missing and rustup unavailable"; return 1
      fi
    fi
  done
  cargo --version && rustc --version
}

export LUNAR_E2E_STRICT=${LUNAR_E2E_STRICT:-1}
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}
# No debug info in this run's release builds: the release profile's line tables (for perf and
# production backtraces) made every crate compile ~20 % slower (storage-core's unit tests:
# 39 s -> 31 s without) and every one of the ~40 release binaries link more. Panics still name
# their file and line, backtraces their functions.
export CARGO_PROFILE_RELEASE_DEBUG=${CARGO_PROFILE_RELEASE_DEBUG:-0}
# tgtd lives in /usr/sbin, which a non-login PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"

run_step "debian packages" install_packages

# Ceph: the workspace is built, linted and tested with the `ceph` feature (RBD pools, HA
# gateways), against a throwaway single-node cluster unless LUNAR_CEPH_CONF names one. The
# cluster starts after the build (it would only take memory and CPU from the compiler).
# target-daemon/ceph enables storage-core/ceph (features unify across the workspace), and
# lunar-e2e depends on target-daemon directly, so one flag serves every step.
CEPH_FEATURES=(--features target-daemon/ceph)
export LUNAR_REQUIRE_CEPH=${LUNAR_REQUIRE_CEPH:-1}
ceph_base=""
stop_ceph() {
  [ -n "$ceph_base" ] || return 0
  bash tests/scripts/ceph.sh stop "$ceph_base" || true
  rm -rf "$ceph_base"
  ceph_base=""
}
trap stop_ceph EXIT
start_ceph() {
  if [ -n "${LUNAR_CEPH_CONF:-}" ]; then
    echo "using the Ceph cluster of LUNAR_CEPH_CONF=$LUNAR_CEPH_CONF"
    return 0
  fi
  ceph_base=$(mktemp -d /tmp/lunar-ceph.XXXXXX)
  local out
  out=$(bash tests/scripts/ceph.sh start "$ceph_base" "${LUNAR_CEPH_PORT:-3399}") || return 1
  echo "$out"
  export LUNAR_CEPH_CONF=${out#LUNAR_CEPH_CONF=}
}
# The shipped systemd unit must be valid: verify a copy whose ExecStart points at the build.
verify_systemd_unit() {
  local unit=deploy/systemd/lunard.service bin tmp rc=0
  [ -f "$unit" ] || { echo "$unit missing"; return 1; }
  bin=$(realpath "${CARGO_TARGET_DIR:-target}/release/lunard")
  tmp=$(mktemp -d)
  sed "s|^ExecStart=[^ ]*|ExecStart=$bin|" "$unit" >"$tmp/lunard.service"
  systemd-analyze verify "$tmp/lunard.service" || rc=$?
  rm -rf "$tmp"
  return "$rc"
}

unit_tests() {
  local rc=0
  cargo test --release --no-fail-fast --workspace --exclude lunar-e2e "${CEPH_FEATURES[@]}" \
    --lib --bins --tests || rc=1
  cargo test --release --no-fail-fast --workspace --exclude lunar-e2e "${CEPH_FEATURES[@]}" \
    --doc || rc=1
  return "$rc"
}

# Each crate's modules import one way (docs/architecture.md): a new import cycle fails here.
run_step "module cycles" python3 tests/scripts/module-cycles.py scsi-proto storage-core target-daemon

if run_step "rust toolchain" rust_components; then
  run_step "cargo fmt --check" cargo fmt --all -- --check
  run_step "cargo clippy" cargo clippy --workspace --all-targets "${CEPH_FEATURES[@]}" -- -D warnings
  # The default build must not need librados/librbd: check it without the feature.
  run_step "build without ceph" cargo check -p target-daemon
  if run_step "release build" cargo build --release --workspace --bins "${CEPH_FEATURES[@]}"; then
    run_step "systemd unit" verify_systemd_unit
    run_step "ceph cluster" start_ceph
    # Unit, property and crash tests of every crate except the end-to-end crate. Libs, bins
    # and test targets, then doc tests: not the examples (benchmarks), which `cargo test`
    # would otherwise link in release only to check that they compile; clippy above has.
    run_step "unit tests" unit_tests
    # End-to-end tests: lunard (the release build above) against libiscsi and qemu, and the
    # iscsi-test-cu comparison with the recorded tgtd baseline. Two threads: two cores.
    run_step "e2e tests" cargo test --release --no-fail-fast -p lunar-e2e "${CEPH_FEATURES[@]}" \
      -- --test-threads=2
  else
    skip_step "systemd unit" "build failed"; skip_step "ceph cluster" "build failed"
    skip_step "unit tests" "build failed"; skip_step "e2e tests" "build failed"
  fi
  # Bounded fuzzing (LUNAR_FUZZ_SECONDS per target, default 20) of every parser of untrusted
  # input, from the committed corpora; its instrumented build lives in target/fuzz.
  # Built at opt-level 0 here (fuzz.sh's default is 1): the instrumented build of three crate
  # graphs took 468 s at 1 and 186 s at 0 (quiet machine), the biggest cost of the run after
  # the unit tests. The runs replay every committed corpus all the same and explore ~10x
  # fewer inputs in their 20 s; longer fuzzing runs fuzz.sh alone at its default.
  run_step "fuzz" env LUNAR_FUZZ_OPT_LEVEL="${LUNAR_FUZZ_OPT_LEVEL:-0}" bash tests/scripts/fuzz.sh
else
  for s in "cargo fmt --check" "cargo clippy" "build without ceph" "release build" "systemd unit" \
    "ceph cluster" "unit tests" "e2e tests" "fuzz"; do
    skip_step "$s" "no Rust toolchain"
  done
fi

stop_ceph

# ---------------------------------------------------------------------------------------------
total=$(( $(date +%s) - started ))
passed=$(( ${#step_names[@]} - failed ))
printf '\n==> Summary (%d:%02d)\n' $((total / 60)) $((total % 60))
for i in "${!step_names[@]}"; do
  printf '  %-20s %-22s %4ss\n' "${step_names[$i]}" "${step_status[$i]}" "${step_secs[$i]}"
done
results=${CARGO_TARGET_DIR:-target}/lunar-e2e/lunard-iscsi-test-cu.txt
[ -f "$results" ] && echo "  iscsi-test-cu per-test results: $results ($(grep -m1 '^# totals' "$results" | sed 's/^# //'))"
echo
# Closing line in cargo test's format: each step above counts as one test.
if [ "$failed" -eq 0 ]; then
  echo "test result: ok. $passed passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in ${total}s"
  exit 0
fi
echo "test result: FAILED. $passed passed; $failed failed; 0 ignored; 0 measured; 0 filtered out; finished in ${total}s"
exit 1
