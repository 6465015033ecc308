#!/usr/bin/env bash
# Benchmarks Capstan against containerd in one run, with the same CRI client (cri-bench),
# the same images (built from busybox-static, served by a local docker-registry) and the
# same CNI plugins. Runtimes are measured alternately (A B A B ...) so drift on the machine
# hits both. Everything started here is stopped and removed at the end.
#
#   bash integration/bench/vs-containerd.sh [--iterations N] [--rounds R] [--parallel K]... [--capstan-only|--containerd-only] [--debug]
#
# CAPSTAN_BENCH_WRAP (see below) puts the daemon under strace or perf to see where time goes.
#
# Prints each runtime's per-step median/p95/max, the ratio containerd/capstan per step,
# parallel start figures and RSS (daemon; per pod: capstan-monitor vs containerd-shim).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT_DIR=$(pwd)

ITERATIONS=10
ROUNDS=2
PARALLEL=()
CAPSTAN_ONLY=0
CONTAINERD_ONLY=0
PROFILE=release
while [ $# -gt 0 ]; do
  case "$1" in
    --iterations) ITERATIONS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --parallel) PARALLEL+=("$2"); shift 2 ;;
    --capstan-only) CAPSTAN_ONLY=1; shift ;;
    --containerd-only) CONTAINERD_ONLY=1; shift ;;
    --debug) PROFILE=debug; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

if [ "$CAPSTAN_ONLY" = 0 ]; then
  # Debian bookworm's containerd 1.6 and runc 1.1 (trixie's runc needs a newer glibc).
  missing=()
  for p in containerd runc; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
  if [ "${#missing[@]}" -gt 0 ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" || { rm -f /usr/sbin/policy-rc.d; exit 1; }
    rm -f /usr/sbin/policy-rc.d
  fi
fi
bash packaging/deps.sh runtime build test >/dev/null
if [ "$PROFILE" = release ]; then
  cargo build --release --bins -q
else
  cargo build --bins -q
fi
BIN="$ROOT_DIR/target/$PROFILE"

WORK=$(mktemp -d /tmp/capstan-bench.XXXXXX)
PIDS=()
cleanup() {
  set +e
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  sleep 1
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  # containerd's shims and pods outlive containerd by design: remove what this run made.
  pkill -9 -f "containerd-shim-runc-v2 -namespace k8s.io -id .* -address $WORK" 2>/dev/null
  # A daemon under CAPSTAN_BENCH_WRAP is the wrapper's child, not ours.
  pkill -9 -f "$BIN/capstan --config $WORK/" 2>/dev/null
  findmnt -rn -o TARGET | grep "^$WORK" | sort -r | xargs -r -n1 umount -l 2>/dev/null
  for br in capb0 capb1; do ip link del "$br" 2>/dev/null; done
  # iptables rules and chains this run's CNI networks added (and only those).
  for table in nat filter; do
    iptables-save -t "$table" | grep -E '^-A ' | sort >"$WORK/rules-after-$table"
    comm -13 "$WORK/rules-before-$table" "$WORK/rules-after-$table" | sed 's/^-A/-D/' | while read -r rule; do
      eval iptables -t "$table" "$rule" 2>/dev/null
    done
    iptables-save -t "$table" | grep -oE '^:[^ ]+' | tr -d ':' | sort >"$WORK/chains-after-$table"
    comm -13 "$WORK/chains-before-$table" "$WORK/chains-after-$table" | while read -r chain; do
      iptables -t "$table" -F "$chain" 2>/dev/null
    done
    comm -13 "$WORK/chains-before-$table" "$WORK/chains-after-$table" | while read -r chain; do
      iptables -t "$table" -X "$chain" 2>/dev/null
    done
  done
  for cg in /sys/fs/cgroup/*/capstan-bench /sys/fs/cgroup/capstan-bench; do
    [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
for table in nat filter; do
  { iptables-save -t "$table" | grep -E '^-A ' || true; } | sort >"$WORK/rules-before-$table"
  { iptables-save -t "$table" | grep -oE '^:[^ ]+' || true; } | tr -d ':' | sort >"$WORK/chains-before-$table"
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Registry with the benchmark images.
REG_PORT=$(free_port)
REG="127.0.0.1:$REG_PORT"
mkdir -p "$WORK/registry"
cat >"$WORK/registry/config.yml" <<YML
version: 0.1
log: { level: warn }
storage: { filesystem: { rootdirectory: $WORK/registry/data }, delete: { enabled: true } }
http: { addr: $REG }
YML
/usr/bin/docker-registry serve "$WORK/registry/config.yml" >"$WORK/registry/log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$REG_PORT") 2>/dev/null && break; sleep 0.1; done
"$BIN/push-test-images" --registry "$REG" >/dev/null

# One CNI network per runtime (separate bridges and address ranges).
cni_conf() { # dir bridge subnet
  mkdir -p "$1"
  cat >"$1/10-bench.conflist" <<JSON
{"cniVersion":"1.0.0","name":"bench-$2","plugins":[
 {"type":"bridge","bridge":"$2","isGateway":true,"ipMasq":false,
  "ipam":{"type":"host-local","ranges":[[{"subnet":"$3"}]],"dataDir":"$1/ipam"}},
 {"type":"portmap","capabilities":{"portMappings":true}},
 {"type":"loopback"}]}
JSON
}

# Capstan.
mkdir -p "$WORK/capstan"
cni_conf "$WORK/capstan/cni" capb0 10.251.0.0/24
cat >"$WORK/capstan/config.toml" <<TOML
socket = "$WORK/capstan/capstan.sock"
root = "$WORK/capstan/root"
state = "$WORK/capstan/state"
[log]
level = "warn"
[cni]
conf_dir = "$WORK/capstan/cni"
bin_dirs = ["/usr/lib/cni"]
[security]
log_roots = ["$WORK/logs"]
TOML
# CAPSTAN_BENCH_WRAP runs the daemon under a profiler, e.g.
# CAPSTAN_BENCH_WRAP="strace -f -tt -T -o /tmp/capstan.strace" or "perf record -g -o /tmp/perf.data".
# shellcheck disable=SC2086
${CAPSTAN_BENCH_WRAP:-} "$BIN/capstan" --config "$WORK/capstan/config.toml" 2>"$WORK/capstan/log" &
PIDS+=($!)

ENDPOINTS=("capstan=$WORK/capstan/capstan.sock")
RSS_ARGS=(--rss-process capstan --rss-process capstan-monitor)
if [ "$CONTAINERD_ONLY" = 1 ]; then ENDPOINTS=(); RSS_ARGS=(); fi

if [ "$CAPSTAN_ONLY" = 0 ]; then
  mkdir -p "$WORK/containerd/certs.d/$REG"
  cni_conf "$WORK/containerd/cni" capb1 10.252.0.0/24
  cat >"$WORK/containerd/certs.d/$REG/hosts.toml" <<TOML
server = "http://$REG"
[host."http://$REG"]
  capabilities = ["pull", "resolve"]
TOML
  cat >"$WORK/containerd/config.toml" <<TOML
version = 2
root = "$WORK/containerd/root"
state = "$WORK/containerd/state"
[grpc]
  address = "$WORK/containerd/containerd.sock"
[ttrpc]
  address = "$WORK/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$REG/pause:3.10"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$WORK/containerd/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$WORK/containerd/certs.d"
TOML
  containerd --config "$WORK/containerd/config.toml" --log-level warn 2>"$WORK/containerd/log" &
  PIDS+=($!)
  ENDPOINTS+=("containerd=$WORK/containerd/containerd.sock")
  RSS_ARGS+=(--rss-process containerd --rss-process containerd-shim)
fi

for ep in "${ENDPOINTS[@]}"; do
  sock=${ep#*=}
  for _ in $(seq 200); do [ -S "$sock" ] && break; sleep 0.1; done
  [ -S "$sock" ] || { echo "${ep%%=*} did not start; log:"; cat "$(dirname "$sock")/log"; exit 1; }
done

PAR_ARGS=()
for k in "${PARALLEL[@]}"; do PAR_ARGS+=(--parallel "$k"); done
for round in $(seq "$ROUNDS"); do
  for ep in "${ENDPOINTS[@]}"; do
    label=${ep%%=*}
    extra=()
    [ "$round" = "$ROUNDS" ] && extra=("${PAR_ARGS[@]}" "${RSS_ARGS[@]}")
    "$BIN/cri-bench" run --endpoint "${ep#*=}" --label "$label" --image "$REG/bench/busybox:1" \
      --pull-image "$REG/bench/pull:1" --iterations "$ITERATIONS" --cgroup-parent /capstan-bench \
      --log-dir "$WORK/logs" --samples-out "$WORK/samples.jsonl" "${extra[@]}" | tee -a "$WORK/out.txt"
  done
done

echo
echo "== medians over all rounds (ms), ratio = containerd / capstan (>1: capstan faster)"
"$BIN/cri-bench" compare "$WORK/samples.jsonl"
