#!/usr/bin/env bash
# One command to test Capstan on a fresh Debian 12 machine, as root: installs every package
# the tests need, builds everything, runs clippy and every test (unit and integration) on the
# host, then the VM lane (pure cgroup v2, kernel NFS) in a qemu guest.
# Exits non-zero when anything fails. .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

bash packaging/deps.sh runtime build test

if [ "$(id -u)" -ne 0 ]; then
  echo "run-tests.sh: the integration tests create namespaces, mounts and cgroups: run as root" >&2
  exit 1
fi

export CARGO_TERM_COLOR=never
cargo build --locked --workspace --bins
cargo clippy --locked --workspace --all-targets -- -D warnings
set +e
cargo test --locked --workspace --no-fail-fast
status=$?
set -e

# A smoke run of the benchmark harness (Capstan only, debug build) so it does not rot.
bash integration/bench/vs-containerd.sh --capstan-only --debug --iterations 2 --rounds 1 --parallel 3 || status=1

bash integration/leftovers.sh || status=1

# Fuzz smoke: every cargo-fuzz target (runtime/fuzz/) built and run for a bounded time.
bash runtime/fuzz/smoke.sh "${CAPSTAN_FUZZ_SECONDS:-20}" || status=1

# The second lane: Debian's kernel in qemu with pure cgroup v2 and kernel NFS
# (integration/vm/README.md). It runs the prebuilt integration/tests/vm_*.rs there.
bash integration/vm/lane.sh || status=1
exit "$status"
