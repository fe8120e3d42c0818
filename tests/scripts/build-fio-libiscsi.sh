#!/usr/bin/env bash
# Builds fio with its libiscsi engine (`--ioengine=libiscsi`) from Debian's fio source into a
# cache directory and prints the binary's path on the last line of stdout.
#
#     bash tests/scripts/build-fio-libiscsi.sh             # -> $FIO_CACHE/fio (built once)
#     FIO_CACHE=/some/dir bash tests/scripts/build-fio-libiscsi.sh
#
# Debian's fio package is configured without libiscsi, so the benchmark against tgtd
# (bench-vs-tgtd.sh) could only use iscsi-perf and qemu-img bench. This script:
#   1. adds a deb-src line for bookworm (/etc/apt/sources.list.d/lunar-deb-src.sources) if
#      no deb-src entry for bookworm main exists yet, and runs apt-get update;
#   2. installs fio's build dependencies and libiscsi-dev;
#   3. fetches the source with `apt-get source fio` (the same version as Debian's binary) and
#      builds it with ./configure, with --enable-libiscsi (statically linked engine), failing unless
#      configure reports "iscsi engine yes".
# Running it again reuses the cached binary. Needs root for apt (or sudo).
set -euo pipefail

FIO_CACHE=${FIO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lunar/fio-libiscsi}
BIN="$FIO_CACHE/fio"

if [ -x "$BIN" ] && "$BIN" --enghelp 2>/dev/null | grep -qw libiscsi; then
  echo "$BIN"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "need root or sudo for apt-get" >&2; exit 2; }
  sudo="sudo"
fi

# 1. deb-src for bookworm, once.
has_src() {
  grep -rqsE '^(deb-src[[:space:]].*bookworm|Types:.*deb-src)' /etc/apt/sources.list /etc/apt/sources.list.d/ \
    >/dev/null 2>&1
}
if ! has_src; then
  echo "adding deb-src for bookworm (/etc/apt/sources.list.d/lunar-deb-src.sources)" >&2
  $sudo tee /etc/apt/sources.list.d/lunar-deb-src.sources >/dev/null <<'EOF'
# Added by Lunar's tests/scripts/build-fio-libiscsi.sh: source packages (apt-get source fio).
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
elif ! compgen -G '/var/lib/apt/lists/*_Sources*' >/dev/null; then
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
fi

# 2. build dependencies.
$sudo env DEBIAN_FRONTEND=noninteractive apt-get build-dep -y -qq fio >&2
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  libiscsi-dev dpkg-dev >&2

# 3. source and build.
mkdir -p "$FIO_CACHE/src"
cd "$FIO_CACHE/src"
if ! compgen -G 'fio-*/configure' >/dev/null; then
  apt-get source -qq fio >&2
fi
srcdir=$(dirname "$(compgen -G 'fio-*/configure' | head -1)")
cd "$srcdir"
./configure --disable-native --enable-libiscsi >configure.log 2>&1 || { cat configure.log >&2; exit 1; }
if ! grep -E '^iscsi engine[[:space:]]+yes' configure.log >/dev/null; then
  echo "fio's configure did not enable the libiscsi engine:" >&2
  grep -i iscsi configure.log >&2 || true
  exit 1
fi
make -s -j"$(nproc)" >&2
install -m 0755 fio "$BIN"
"$BIN" --enghelp 2>/dev/null | grep -qw libiscsi || { echo "built fio lacks libiscsi" >&2; exit 1; }
echo "$BIN"
