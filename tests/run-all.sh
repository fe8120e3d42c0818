#!/usr/bin/env bash
# Runs every Lunar test: unit, property, crash and end-to-end tests against real initiators.
# Installs the Debian packages it needs (idempotently) first. Used by README and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=(libiscsi-bin sg3-utils tgt qemu-utils qemu-block-extra fio)
missing=()
for p in "${need_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cargo build --release --workspace --bins
cargo test --release --workspace -- --test-threads=2
