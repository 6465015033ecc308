#!/usr/bin/env bash
# Pull benchmark: a ~50 MB multi-layer image (busybox-static plus 5 layers of incompressible
# data, built at run time) served by a local docker-registry, pulled by capstan (PullImage:
# download, verify every digest, unpack into snapshots, fsync) and copied by `skopeo copy`
# to a directory (download, verify, write blobs), alternately, in one run. Prints each
# round and the medians. Everything it starts is stopped and removed at the end.
#
#   bash integration/bench/pull.sh [--mib N] [--layers N] [--rounds N]
set -euo pipefail
cd "$(dirname "$0")/../.."

export PULL_BENCH_MIB=50 PULL_BENCH_LAYERS=5 PULL_BENCH_ROUNDS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --mib) PULL_BENCH_MIB=$2; shift 2 ;;
    --layers) PULL_BENCH_LAYERS=$2; shift 2 ;;
    --rounds) PULL_BENCH_ROUNDS=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" -ne 0 ]; then
  echo "pull.sh: unpacking layers with their owners needs root" >&2
  exit 1
fi
bash packaging/deps.sh runtime build test >/dev/null

export CARGO_TERM_COLOR=never
cargo build --release --bins -q
# The daemon logs at warn: debug logging would be part of the measurement.
CAPSTAN_TEST_LOG=warn cargo test --release -q -p capstan-integration --test pull_bench -- --ignored --nocapture 2>&1 \
  | grep -E '^(image|round|median)'
