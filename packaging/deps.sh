#!/usr/bin/env bash
# Installs the Debian packages Capstan needs, by purpose:
#   deps.sh runtime   what the daemon needs on a node (CNI plugins, iptables, iproute2)
#   deps.sh build     what building it needs (protoc for the CRI protos, libseccomp for youki)
#   deps.sh test      what the test suite needs (registry, busybox images, skopeo, ...)
# Several purposes may be given at once. Only missing packages are installed.
set -euo pipefail

declare -A PKGS=(
  [runtime]="containernetworking-plugins iptables iproute2 libseccomp2 util-linux mount"
  [build]="protobuf-compiler libseccomp-dev pkg-config gcc libc6-dev"
  [test]="busybox-static docker-registry skopeo procps psmisc kmod qemu-system-x86 debootstrap cpio jq binutils e2fsprogs dpkg-dev systemd"
)

if [ "$#" -eq 0 ]; then
  echo "usage: $0 runtime|build|test ..." >&2
  exit 2
fi

wanted=()
for purpose in "$@"; do
  [ -n "${PKGS[$purpose]+x}" ] || { echo "deps.sh: unknown purpose '$purpose'" >&2; exit 2; }
  read -r -a list <<<"${PKGS[$purpose]}"
  wanted+=("${list[@]}")
done

missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps.sh: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "deps.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Keep package scripts from starting services (docker-registry's own on :5000) on
  # machines with an init system: the tests start their own registries.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
  fi
  trap '[ "$created_policy" = 1 ] && rm -f "$policy"' EXIT
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "deps.sh: cargo is not on PATH; this machine kind ships a Rust toolchain (rustup) — add ~/.cargo/bin to PATH" >&2
  exit 1
fi
