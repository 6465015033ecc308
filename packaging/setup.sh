#!/usr/bin/env bash
# One command to get a running Capstan on a fresh Debian 12 node, as root:
# installs what the daemon needs, builds it, installs the binaries, and runs the daemon
# in the foreground on its embedded default configuration (Ctrl-C stops it; pods keep
# running). For a service managed by systemd, see systemd/capstan.service.
set -euo pipefail
cd "$(dirname "$0")/.."

bash packaging/deps.sh runtime build
cargo build --release --locked --bins
install -m 0755 target/release/capstan /usr/local/bin/capstan
if [ -e target/release/capstan-monitor ]; then
  install -m 0755 target/release/capstan-monitor /usr/local/bin/capstan-monitor
fi

# A node without any CNI config reports NetworkReady=false, as kubelet expects until a
# network add-on is installed. Offer a simple bridge network only where none exists.
if [ -z "$(ls -A /etc/cni/net.d 2>/dev/null)" ]; then
  install -D -m 0644 packaging/cni/10-capstan-bridge.conflist /etc/cni/net.d/10-capstan-bridge.conflist
  echo "setup.sh: installed /etc/cni/net.d/10-capstan-bridge.conflist"
fi

echo "setup.sh: starting capstan on unix:///run/capstan/capstan.sock (crictl: see README)"
exec /usr/local/bin/capstan
