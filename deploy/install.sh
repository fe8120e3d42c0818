#!/usr/bin/env bash
# Installs Lunar as a system service from a source checkout:
#   binaries -> $PREFIX/bin (default /usr/local/bin), man pages -> $PREFIX/share/man/man8,
#   config -> /etc/lunar/lunar.yaml (kept if present), data -> /var/lib/lunar,
#   unit -> /etc/systemd/system/lunard.service, shell completions -> /usr/share/{bash-completion,
#   zsh,fish}, documentation -> /usr/share/doc/lunar (the unit's Documentation=).
# Usage: sudo bash deploy/install.sh            (builds in release mode first)
#        DESTDIR=/tmp/root bash deploy/install.sh   (stage into a root, no systemctl calls)
# Environment: PREFIX (default /usr/local), DESTDIR (default: none, the live system),
#   LUNAR_BIN_DIR (install the lunard and lunarctl found there and skip the build; default:
#   build into ${CARGO_TARGET_DIR:-target}/release).
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}

if [ -n "${LUNAR_BIN_DIR:-}" ]; then
  BIN_DIR=$LUNAR_BIN_DIR
else
  cargo build --release --bins
  BIN_DIR=${CARGO_TARGET_DIR:-target}/release
fi
for b in lunard lunarctl; do
  if [ ! -x "$BIN_DIR/$b" ]; then
    echo "install.sh: $BIN_DIR/$b is missing or not executable" >&2
    exit 1
  fi
done
install -d "$DESTDIR$PREFIX/bin" "$DESTDIR/etc/lunar" "$DESTDIR/etc/systemd/system"
install -d -m 0700 "$DESTDIR/var/lib/lunar"
for b in lunard lunarctl; do
  install -m 0755 "$BIN_DIR/$b" "$DESTDIR$PREFIX/bin/$b"
done
if [ ! -e "$DESTDIR/etc/lunar/lunar.yaml" ]; then
  install -m 0600 deploy/lunar.example.yaml "$DESTDIR/etc/lunar/lunar.yaml"
  echo "installed /etc/lunar/lunar.yaml from deploy/lunar.example.yaml: edit it before starting"
fi
install -d "$DESTDIR/usr/share/doc/lunar/docs"
install -m 0644 README.md "$DESTDIR/usr/share/doc/lunar/README.md"
cp -R docs/. "$DESTDIR/usr/share/doc/lunar/docs/"
# Completions and man pages, generated from the binaries' own CLI definitions.
install -d "$DESTDIR/usr/share/bash-completion/completions" "$DESTDIR/usr/share/zsh/vendor-completions" \
  "$DESTDIR/usr/share/fish/vendor_completions.d" "$DESTDIR$PREFIX/share/man/man8"
for b in lunard lunarctl; do
  bin="$BIN_DIR/$b"
  "$bin" --generate-completions bash > "$DESTDIR/usr/share/bash-completion/completions/$b"
  "$bin" --generate-completions zsh > "$DESTDIR/usr/share/zsh/vendor-completions/_$b"
  "$bin" --generate-completions fish > "$DESTDIR/usr/share/fish/vendor_completions.d/$b.fish"
  "$bin" --generate-man > "$DESTDIR$PREFIX/share/man/man8/$b.8"
done
sed "s#/usr/local/bin/lunard#$PREFIX/bin/lunard#" deploy/systemd/lunard.service \
  > "$DESTDIR/etc/systemd/system/lunard.service"
if [ -z "$DESTDIR" ] && command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload
  echo "start with: systemctl enable --now lunard"
fi
