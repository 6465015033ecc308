#!/usr/bin/env bash
# Builds the capstan .deb with Debian's own tools (dpkg-deb, dpkg-shlibdeps), from binaries
# that are already built.
#
#   packaging/build-deb.sh [--bin-dir DIR] [--out DIR] [--version V]
#
# --bin-dir  where capstan and capstan-monitor are (default target/release)
# --out      where the .deb goes (default target/debian); its path is printed last
# --version  package version (default: the workspace version)
#
# The package holds /usr/bin/capstan and capstan-monitor (debug info stripped), the systemd
# unit, /etc/capstan/config.toml (a conffile: the embedded defaults, as `capstan config
# default` prints them) and examples (crictl.yaml, a CNI bridge conflist, a kubeadm
# JoinConfiguration, a kubelet drop-in) under /usr/share/doc/capstan/examples.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
bin_dir=$repo/target/release
out=$repo/target/debian
version=

while [ "$#" -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --version) version=$2; shift 2 ;;
    *) echo "build-deb.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
for b in capstan capstan-monitor; do
  [ -x "$bin_dir/$b" ] || { echo "build-deb.sh: $bin_dir/$b missing (cargo build --release --bins)" >&2; exit 1; }
done
if [ -z "$version" ]; then
  version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml")
fi
arch=$(dpkg --print-architecture)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" \
  "$root/etc/capstan" "$root/usr/share/doc/capstan/examples"

for b in capstan capstan-monitor; do
  objcopy --strip-debug "$bin_dir/$b" "$root/usr/bin/$b"
  chmod 0755 "$root/usr/bin/$b"
done
install -m 0644 "$repo/systemd/capstan.service" "$root/lib/systemd/system/capstan.service"
"$bin_dir/capstan" config default >"$root/etc/capstan/config.toml"
chmod 0644 "$root/etc/capstan/config.toml"
ex=$root/usr/share/doc/capstan/examples
install -m 0644 "$here/crictl.yaml" "$ex/crictl.yaml"
install -m 0644 "$here/cni/10-capstan-bridge.conflist" "$ex/10-capstan-bridge.conflist"
install -m 0644 "$here/kubeadm-join.yaml" "$ex/kubeadm-join.yaml"
install -m 0644 "$repo/systemd/kubelet.service.d/10-capstan.conf" "$ex/kubelet-10-capstan.conf"
install -m 0644 "$here/deb/copyright" "$root/usr/share/doc/capstan/copyright"

# Shared-library dependencies, computed the Debian way from the binaries themselves.
mkdir -p "$work/src/debian"
printf 'Source: capstan\n\nPackage: capstan\nArchitecture: any\n' >"$work/src/debian/control"
shlibs=$(cd "$work/src" && dpkg-shlibdeps -O "$root/usr/bin/capstan" "$root/usr/bin/capstan-monitor" 2>/dev/null |
  sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || { echo "build-deb.sh: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

installed_kb=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SHLIBS@/$shlibs/" \
  -e "s/@SIZE@/$installed_kb/" "$here/deb/control.in" >"$root/DEBIAN/control"
install -m 0644 "$here/deb/conffiles" "$root/DEBIAN/conffiles"
for s in postinst prerm postrm; do install -m 0755 "$here/deb/$s" "$root/DEBIAN/$s"; done

mkdir -p "$out"
deb=$out/capstan_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zzstd -z9 --build "$root" "$deb" >/dev/null
echo "$deb"
