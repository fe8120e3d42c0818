#!/usr/bin/env bash
# Builds the throw-away Linux guest the kernel-initiator and LIO/TCMU tests boot
# (tests/tests/kernel_initiator.rs, tests/tests/lio_tcmu.rs, tests/tests/kernel_initiator_ha.rs): a
# Debian 12 kernel plus an initramfs holding busybox, open-iscsi (iscsid/iscsiadm), e2fsprogs, kmod,
# udev's scsi_id (the /dev/disk/by-id names), multipath-tools (multipathd/multipath, with
# tests/guest/multipath.conf as /etc/multipath.conf) and dmsetup, and the modules for iscsi_tcp,
# sd_mod, ext4, the e1000 NIC, LIO (target_core_user, tcm_loop) and dm-multipath with the ALUA
# device handler (scsi_dh_alua).
#
# Everything comes from Debian packages fetched with `apt-get download` (nothing is installed on
# the host). Shared libraries come from the fetched library packages or, when a library is not
# among them, from the host (the host is Debian 12 too, the same release as the binaries).
#
# Usage: tests/guest/build-initramfs.sh [CACHE_DIR]
#   CACHE_DIR defaults to $LUNAR_GUEST_CACHE, else $XDG_CACHE_HOME/lunar-guest or ~/.cache/lunar-guest.
# Prints two lines on success:
#   KERNEL=<path to vmlinuz>
#   INITRD=<path to initramfs.cpio.gz>
# The result is cached under CACHE_DIR/build-<key>, keyed by the package versions and the hash of
# this script and the guest files, so re-runs cost one `apt-cache policy` call.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${1:-${LUNAR_GUEST_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/lunar-guest}}
mkdir -p "$cache/debs"
# One build at a time per cache (parallel test processes or CI jobs share it).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$cache/.lock"
  flock -w 1200 9 || { echo "guest-build: error: cache $cache locked for 20 min" >&2; exit 1; }
fi

log() { echo "guest-build: $*" >&2; }
die() { echo "guest-build: error: $*" >&2; exit 1; }

for tool in apt-get apt-cache dpkg-deb depmod gzip sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/sbin/$tool" ] || [ -x "/usr/sbin/$tool" ] ||
    die "$tool not found (this script needs a Debian host)"
done
export PATH="$PATH:/sbin:/usr/sbin"

# The kernel: whatever linux-image-amd64 currently depends on.
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$kpkg" ] || die "cannot resolve linux-image-amd64 (run apt-get update?)"
kver=${kpkg#linux-image-}

tools_pkgs=(busybox-static open-iscsi e2fsprogs kmod multipath-tools dmsetup)
# Library packages the tool packages depend on (their direct lib* dependencies); fetched so that
# libraries the host lacks (libisns0, libopeniscsiusr) are available.
lib_pkgs=$(apt-cache depends "${tools_pkgs[@]}" 2>/dev/null |
  awk '/^ *(Pre)?Depends: lib/ {print $2}' | tr -d '<>' | sort -u)
# Packages used for a single, self-contained binary: udev for /lib/udev/scsi_id (links only
# against libc), what udev's 60-persistent-storage.rules run to name /dev/disk/by-id/scsi-* and
# wwn-*. Their library dependencies are not fetched (udev itself is not run in the guest).
single_pkgs=(udev)
pkgs=("$kpkg" "${tools_pkgs[@]}" "${single_pkgs[@]}" $lib_pkgs)

# One apt-cache call for all candidate versions ("pkg:" lines followed by "  Candidate: v").
policy=$(apt-cache policy "${pkgs[@]}" 2>/dev/null |
  awk '/^[^ ].*:$/ {p=$1; sub(/:$/, "", p)} /^  Candidate:/ {print p "=" $2}')
versions=""
for p in "${pkgs[@]}"; do
  v=$(awk -F= -v p="$p" '$1 == p {print $2; exit}' <<<"$policy")
  [ -n "$v" ] && [ "$v" != "(none)" ] || die "no candidate version for $p"
  versions+="$p=$v "
done
key=$( { echo "$versions"; cat "$here/build-initramfs.sh" "$here/init.sh" "$here/lib.sh" "$here/multipath.conf"; } |
  sha256sum | cut -c1-16)
out="$cache/build-$key"
if [ -f "$out/initramfs.cpio.gz" ] && [ -f "$out/vmlinuz" ]; then
  echo "KERNEL=$out/vmlinuz"
  echo "INITRD=$out/initramfs.cpio.gz"
  exit 0
fi

# Download what is missing (apt-get download is idempotent per file name).
cd "$cache/debs"
missing=()
for pv in $versions; do
  p=${pv%%=*}; v=${pv#*=}
  ls "${p}_"*.deb >/dev/null 2>&1 && ls "${p}_"*.deb | grep -qF "_${v//:/%3a}_" && continue
  missing+=("$p=$v")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "downloading ${missing[*]}"
  apt-get download -q "${missing[@]}" >&2 || die "apt-get download failed"
fi

work=$(mktemp -d "$cache/tmp-XXXXXX")
trap 'rm -rf "$work"' EXIT
x=$work/extract
root=$work/root
mkdir -p "$x" "$root"
for pv in $versions; do
  p=${pv%%=*}; v=${pv#*=}
  deb=$(ls "${p}_${v//:/%3a}_"*.deb 2>/dev/null | head -1)
  [ -n "$deb" ] || die "downloaded package for $p=$v not found"
  dpkg-deb -x "$deb" "$x"
done

# --- file system skeleton ---------------------------------------------------------------------
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib/udev,lib/x86_64-linux-gnu,lib/multipath,lib64,etc/iscsi,etc/multipath,proc,sys,dev,run,tmp,mnt,var/lib/iscsi,var/lock,root,scenario}
ln -s lib "$root/usr/lib" 2>/dev/null || true
cp "$x/bin/busybox" "$root/bin/busybox"
for app in $("$root/bin/busybox" --list); do
  [ -e "$root/bin/$app" ] || ln -s busybox "$root/bin/$app"
done
# Real tools replace busybox applets of the same name.
# scsi_id is in /lib/udev in Debian 12 (/usr/lib/udev after the /usr merge); the guest has it as
# /lib/udev/scsi_id either way (its /usr/lib is a link to /lib).
if [ ! -x "$x/lib/udev/scsi_id" ] && [ -x "$x/usr/lib/udev/scsi_id" ]; then
  mkdir -p "$x/lib/udev"
  cp "$x/usr/lib/udev/scsi_id" "$x/lib/udev/scsi_id"
fi
bins=(sbin/iscsid sbin/iscsiadm sbin/mke2fs sbin/e2fsck sbin/tune2fs sbin/dumpe2fs sbin/resize2fs bin/kmod
  lib/udev/scsi_id sbin/multipath sbin/multipathd sbin/dmsetup)
for b in "${bins[@]}"; do
  [ -x "$x/$b" ] || die "$b missing from the packages"
  cp "$x/$b" "$root/$b"
done
ln -sf mke2fs "$root/sbin/mkfs.ext4"
ln -sf e2fsck "$root/sbin/fsck.ext4"
for k in modprobe insmod rmmod lsmod depmod modinfo; do
  rm -f "$root/bin/$k" "$root/sbin/$k"
  ln -s /bin/kmod "$root/sbin/$k"
done
cp "$x/etc/iscsi/iscsid.conf" "$root/etc/iscsi/iscsid.conf"
# multipath-tools loads its path checkers and prioritizers from /lib/multipath at run time
# (dlopen: ldd of the binaries does not see them); they are checked by ldd below like the rest.
plugins=()
for so in "$x"/lib/multipath/lib*.so; do
  rel=${so#"$x"/}
  cp "$so" "$root/$rel"
  plugins+=("$rel")
done
[ -f "$root/lib/multipath/libchecktur.so" ] && [ -f "$root/lib/multipath/libprioalua.so" ] ||
  die "multipath-tools without its tur checker / alua prioritizer"
cp "$here/multipath.conf" "$root/etc/multipath.conf"
# iscsid only talks to root peers and resolves them by name (getpwuid).
echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
echo 'root:x:0:' > "$root/etc/group"

# --- shared libraries (ldd with the extracted library dirs first) ------------------------------
# multipath-tools keeps its own libraries (libmultipath, libmpathutil, ...) in /lib.
libpath="$x/lib/x86_64-linux-gnu:$x/usr/lib/x86_64-linux-gnu:$x/lib"
for b in "${bins[@]}" "${plugins[@]}"; do
  deps=$(LD_LIBRARY_PATH=$libpath ldd "$root/$b" 2>&1) || die "ldd $b: $deps"
  if grep -q "not found" <<<"$deps"; then
    die "$b needs libraries found neither in the packages nor on the host: $(grep 'not found' <<<"$deps" | tr '\n' ' ')"
  fi
  for lib in $(awk '/=>/ {print $3} /^[[:space:]]*\/lib64/ {print $1}' <<<"$deps"); do
    [ -f "$lib" ] || continue
    name=$(basename "$lib")
    case "$lib" in
      */ld-linux-x86-64.so.2) cp -L "$lib" "$root/lib64/ld-linux-x86-64.so.2" ;;
      *) cp -L "$lib" "$root/lib/x86_64-linux-gnu/$name" ;;
    esac
  done
done
[ -f "$root/lib64/ld-linux-x86-64.so.2" ] || cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
# glibc loads libgcc_s at run time for thread cancellation (multipathd cancels its threads
# when it stops); ldd does not list it.
for d in "$x/lib/x86_64-linux-gnu" /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu; do
  if [ -f "$d/libgcc_s.so.1" ]; then cp -L "$d/libgcc_s.so.1" "$root/lib/x86_64-linux-gnu/"; break; fi
done
[ -f "$root/lib/x86_64-linux-gnu/libgcc_s.so.1" ] || die "libgcc_s.so.1 not found (package libgcc-s1)"
ln -s ../lib64/ld-linux-x86-64.so.2 "$root/lib/ld-linux-x86-64.so.2" 2>/dev/null || true

# --- kernel modules: the wanted ones and everything they depend on -----------------------------
depmod -b "$x" "$kver"
# target_core_user + tcm_loop (LIO with its TCMU user backstore and loopback fabric): the
# LIO/TCMU suite (tests/tests/lio_tcmu.rs) runs lunard inside the guest.
# dm-multipath, its path selectors and the ALUA device handler: the HA guest
# (tests/tests/kernel_initiator_ha.rs) runs dm-multipath over two gateways.
wanted=(e1000 virtio_net iscsi_tcp sd_mod ext4 crc32c_generic crc32c-intel target_core_user tcm_loop
  dm_multipath dm_round_robin dm_service_time scsi_dh_alua)
for m in "${wanted[@]}"; do
  modprobe -d "$x" -S "$kver" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
done | sort -u | while read -r ko; do
  rel=${ko#"$x"/}
  mkdir -p "$root/$(dirname "$rel")"
  cp "$ko" "$root/$rel"
done
for f in modules.order modules.builtin modules.builtin.modinfo; do
  [ -f "$x/lib/modules/$kver/$f" ] && cp "$x/lib/modules/$kver/$f" "$root/lib/modules/$kver/"
done
depmod -b "$root" "$kver"

# --- init and the scenario library -------------------------------------------------------------
cp "$here/init.sh" "$root/init"
cp "$here/lib.sh" "$root/lib/lunar-guest.sh"
chmod 755 "$root/init"
echo "$kver" > "$root/etc/lunar-guest-kernel"
echo "$versions" | tr ' ' '\n' | grep . > "$root/etc/lunar-guest-packages"

# --- pack (busybox cpio: the host may lack cpio) -----------------------------------------------
mkdir -p "$work/out"
(cd "$root" && find . -mindepth 1 | sort | "$root/bin/busybox" cpio -o -H newc 2>/dev/null) |
  gzip -6 > "$work/out/initramfs.cpio.gz"
cp "$x/boot/vmlinuz-$kver" "$work/out/vmlinuz"
rm -rf "$out"
mv "$work/out" "$out"
log "built $out ($(du -h "$out/initramfs.cpio.gz" | cut -f1) initramfs, kernel $kver)"
# Keep the cache small: older builds go away.
for old in "$cache"/build-*; do
  [ "$old" = "$out" ] || rm -rf "$old"
done
echo "KERNEL=$out/vmlinuz"
echo "INITRD=$out/initramfs.cpio.gz"
