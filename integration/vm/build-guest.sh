#!/usr/bin/env bash
# Builds the VM lane's guest from Debian packages only, and caches it.
#
#   build-guest.sh            prints the guest directory (vmlinuz, initrd.img, root.img) on stdout
#
# The guest is a bookworm minbase root (debootstrap) with the packages the guest tests need,
# plus Debian's linux-image-amd64: its vmlinuz boots directly (qemu -kernel), its modules go
# into the root, and a small busybox initramfs loads virtio/ext4/9p, mounts the root disk and
# the host's 9p share, and hands over to the guest init on that share
# (integration/vm/guest/init.sh), so changing the guest scripts never needs a rebuild.
#
# The root is a raw ext4 image written by `mkfs.ext4 -d` (no loop mounts); run.sh boots it
# with `-snapshot`, so every run starts from the same pristine root.
#
# Cache: $CAPSTAN_VM_CACHE (default /var/cache/capstan-vm)/<key>/, where key hashes the
# package list, the suite and this script's guest format version. Older builds are removed.
# Progress goes to stderr; only the guest directory goes to stdout.
set -euo pipefail

# Bump when the guest layout or the initramfs changes.
GUEST_FORMAT=1
SUITE=bookworm
KERNEL_PKG=linux-image-amd64
# What the guest tests need: the daemon's runtime packages (CNI plugins, iptables, iproute2,
# libseccomp for capstan-monitor), the harness's (registry, busybox image source; the OCI
# client's TLS stack refuses to start without system CA certificates), the kernel NFS server
# and client, mkfs for loop-backed local PVs.
GUEST_PKGS=(
  busybox-static docker-registry containernetworking-plugins
  nfs-kernel-server nfs-common
  e2fsprogs iproute2 iptables util-linux mount kmod procps psmisc libseccomp2
  ca-certificates
)
# What the lane needs on the host (jq: lane.sh reads cargo's JSON; objcopy: run.sh strips).
HOST_PKGS=(debootstrap e2fsprogs kmod cpio gzip qemu-system-x86 jq binutils)
# Driver trees no test guest needs; dropping them halves the root image.
PRUNE_MODULES=(
  sound drivers/gpu drivers/media drivers/infiniband drivers/iio drivers/usb drivers/staging
  drivers/hwmon drivers/hid drivers/input drivers/comedi drivers/mtd drivers/video
  drivers/platform drivers/mmc drivers/target drivers/net/wireless drivers/net/ethernet
  drivers/bluetooth drivers/isdn drivers/thunderbolt
)
# Modules the initramfs loads to reach the root disk and the 9p share.
INITRAMFS_MODULES=(virtio_pci virtio_blk ext4 9p 9pnet_virtio virtio_rng)
# Free space left in the root image for images, snapshots and loop-device files.
ROOT_SPARE_MB=3072

CACHE=${CAPSTAN_VM_CACHE:-/var/cache/capstan-vm}
here=$(cd "$(dirname "$0")" && pwd)

log() { echo "build-guest: $*" >&2; }
die() { echo "build-guest: error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, device nodes in the guest root)"

# The Debian mirror apt already uses here (deb822 or one-line sources), unless overridden.
mirror() {
  if [ -n "${CAPSTAN_VM_MIRROR:-}" ]; then echo "$CAPSTAN_VM_MIRROR"; return; fi
  local m
  m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
        awk '/^URIs:/{for(i=2;i<=NF;i++) if ($i ~ /\/debian\/?$/) {print $i; exit}}')
  if [ -z "$m" ]; then
    m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
          awk '$1=="deb"{for(i=2;i<=NF;i++) if ($i ~ /^https?:.*\/debian\/?$/) {print $i; exit}}')
  fi
  echo "${m:-http://deb.debian.org/debian}"
}

key=$( { echo "format=$GUEST_FORMAT suite=$SUITE kernel=$KERNEL_PKG";
         printf '%s\n' "${GUEST_PKGS[@]}" | sort;
         printf 'prune %s\n' "${PRUNE_MODULES[@]}";
         printf 'initramfs %s\n' "${INITRAMFS_MODULES[@]}";
         echo "spare=$ROOT_SPARE_MB";
         cat "$here/initramfs-init"; } | sha256sum | cut -c1-16)
out="$CACHE/guest-$key"

# The host's tools, checked on every call (cheap): run.sh and lane.sh rely on them too.
missing=()
for p in "${HOST_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing host packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

if [ -f "$out/ready" ]; then
  log "cached guest $out"
  echo "$out"
  exit 0
fi

mkdir -p "$CACHE"
# One build at a time; a second caller waits, then finds the cache filled.
exec 9>"$CACHE/lock"
flock 9
if [ -f "$out/ready" ]; then
  log "cached guest $out (built meanwhile)"
  echo "$out"
  exit 0
fi

start=$(date +%s)
work=$(mktemp -d "$CACHE/build.XXXXXX")
cleanup() {
  # debootstrap mounts proc/sys inside the target; never leave them behind.
  local m
  for m in $(findmnt -rn -o TARGET | grep -F "$work" | sort -r); do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
chmod 0755 "$work"
root=$work/root

m=$(mirror)
include=$(IFS=,; echo "${GUEST_PKGS[*]}")
log "debootstrap $SUITE (minbase + ${#GUEST_PKGS[@]} packages) from $m"
t=$(date +%s)
if ! debootstrap --variant=minbase --include="$include" "$SUITE" "$root" "$m" >"$work/debootstrap.log" 2>&1; then
  tail -n 30 "$work/debootstrap.log" >&2
  [ -f "$root/debootstrap/debootstrap.log" ] && tail -n 30 "$root/debootstrap/debootstrap.log" >&2
  die "debootstrap failed (log above)"
fi
log "debootstrap took $(( $(date +%s) - t )) s"

# The kernel: the package linux-image-amd64 depends on right now (apt's own view, so the
# security update is taken when the host's apt has it).
log "fetching $KERNEL_PKG"
kpkg=$(apt-cache depends "$KERNEL_PKG" 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
if [ -z "$kpkg" ]; then
  apt-get update -q >&2
  kpkg=$(apt-cache depends "$KERNEL_PKG" 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
fi
[ -n "$kpkg" ] || die "cannot resolve the kernel package behind $KERNEL_PKG"
mkdir -p "$work/kernel"
# apt fetches as _apt; let it write there so it need not fall back to root with a warning.
chown _apt "$work/kernel" 2>/dev/null || true
( cd "$work/kernel" && apt-get download -q "$kpkg" >&2 ) || die "apt-get download $kpkg failed"
dpkg-deb -x "$work/kernel/"*.deb "$work/kernel/x"
kver=${kpkg#linux-image-}
[ -f "$work/kernel/x/boot/vmlinuz-$kver" ] || die "no vmlinuz-$kver in $kpkg"
[ -d "$work/kernel/x/lib/modules/$kver" ] || die "no modules for $kver in $kpkg"
for d in "${PRUNE_MODULES[@]}"; do rm -rf "$work/kernel/x/lib/modules/$kver/kernel/$d"; done
mkdir -p "$root/usr/lib/modules"
mv "$work/kernel/x/lib/modules/$kver" "$root/usr/lib/modules/$kver"
depmod -b "$root" "$kver"

mkdir -p "$out.tmp"
rm -rf "${out:?}.tmp/"*
cp "$work/kernel/x/boot/vmlinuz-$kver" "$out.tmp/vmlinuz"
echo "$kver" >"$out.tmp/kernel-version"

# Guest root: trimmed of caches and docs, with the mount points the guest init uses.
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"* \
       "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/info" "$root/usr/share/locale"
mkdir -p "$root/lane" "$root/results" "$root/export" "$root/sys/fs/cgroup"
echo capstan-vm >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost capstan-vm\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
: >"$root/etc/resolv.conf"
printf '/dev/vda / ext4 rw 0 1\n' >"$root/etc/fstab"
# Package versions, for the record and for the report.
# shellcheck disable=SC2016 # dpkg-query's format, not the shell's
chroot "$root" dpkg-query -W -f='${Package} ${Version}\n' >"$out.tmp/packages.txt" 2>/dev/null || true
echo "$kpkg $(dpkg-deb -f "$work/kernel/"*.deb Version)" >>"$out.tmp/packages.txt"

# Initramfs: busybox (from the guest's own busybox-static) + the modules to reach the root.
ird=$work/initramfs
mkdir -p "$ird/bin" "$ird/dev" "$ird/proc" "$ird/sys" "$ird/newroot" "$ird/modules"
cp "$root/usr/bin/busybox" "$ird/bin/busybox"
for a in sh mount umount insmod switch_root sleep cat mkdir poweroff echo grep; do ln -s busybox "$ird/bin/$a"; done
: >"$ird/modules/order"
modprobe -d "$root" -S "$kver" -a --show-depends "${INITRAMFS_MODULES[@]}" |
  awk '$1=="insmod"{print $2}' | awk '!seen[$0]++' |
  while read -r ko; do
    cp "$ko" "$ird/modules/"
    basename "$ko" >>"$ird/modules/order"
  done
install -m 0755 "$here/initramfs-init" "$ird/init"
( cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1 ) >"$out.tmp/initrd.img"

# Root image: sized to the content plus spare room, written without mounting anything.
used_mb=$(du -sm "$root" | cut -f1)
size_mb=$(( used_mb * 12 / 10 + ROOT_SPARE_MB ))
log "root: ${used_mb} MB of files, image ${size_mb} MB (sparse)"
truncate -s "${size_mb}M" "$out.tmp/root.img"
mkfs.ext4 -q -F -L capstan-root -d "$root" "$out.tmp/root.img" "${size_mb}M" >&2

touch "$out.tmp/ready"
rm -rf "$out"
mv "$out.tmp" "$out"
# Only the current build is kept.
for old in "$CACHE"/guest-*; do
  [ "$old" = "$out" ] || rm -rf "$old"
done
log "built guest $out (kernel $kver) in $(( $(date +%s) - start )) s"
echo "$out"
