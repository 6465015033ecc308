#!/usr/bin/env bash
# The fuzz smoke CI runs: builds every cargo-fuzz target (stable Rust, so no sanitizer:
# libFuzzer with coverage only) and runs each for a bounded time. A crash fails the run and
# leaves its input under runtime/fuzz/artifacts/<target>/ (reproduce with
# `cargo fuzz run -s none -O <target> <file>`).
#
#   runtime/fuzz/smoke.sh [SECONDS_PER_TARGET]   (default 20; CAPSTAN_FUZZ_SECONDS too)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-${CAPSTAN_FUZZ_SECONDS:-20}}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz smoke: installing cargo-fuzz (crates.io)"
  cargo install --locked cargo-fuzz
fi
start=$(date +%s)
cargo fuzz build -s none -O
built=$(( $(date +%s) - start ))
status=0
for target in $(cargo fuzz list); do
  echo "=== fuzz $target for ${seconds} s"
  log=$(mktemp)
  rc=0
  # Seeds (small real inputs kept in git) start the search where real layers are; new
  # inputs go to the (ignored) corpus dir, the first one named.
  corpora=("fuzz/corpus/$target")
  mkdir -p "fuzz/corpus/$target"
  if [ -d "fuzz/seeds/$target" ]; then corpora+=("fuzz/seeds/$target"); fi
  cargo fuzz run -s none -O "$target" "${corpora[@]}" -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || rc=$?
  grep -E "stat::number_of_executed_units|DONE|ERROR|panicked|SUMMARY|Test unit written" "$log" || tail -n 20 "$log"
  rm -f "$log"
  if [ "$rc" -ne 0 ]; then
    echo "fuzz smoke: $target FAILED (input saved under runtime/fuzz/artifacts/$target/)" >&2
    status=1
  fi
done
echo "fuzz smoke: build ${built} s, ${seconds} s per target, exit $status"
exit "$status"
