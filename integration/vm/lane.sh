#!/usr/bin/env bash
# The VM test lane, as CI runs it: pure cgroup v2 + kernel NFS in a qemu guest.
#
#   integration/vm/lane.sh [TARGET...]
#
# Builds (or reuses) the guest image, builds the workspace's binaries and the integration
# test executables (never compiling inside the guest), and runs in the guest:
#   - integration/vm/tests/*.sh (the lane's own checks: cgroup v2, OOM kill, NFS, loop ext4)
#   - the capstan-integration test targets named TARGET, by default every target whose name
#     starts with `vm_` (integration/tests/vm_*.rs: the tests only the guest can run; they
#     see CAPSTAN_VM=1 there). The host lane's `pods` also passes here but takes 7-8 min
#     under TCG, so it is not in the default set: `lane.sh vm_cgroups pods` (see README.md)
#   - integration/leftovers.sh, so nothing may be left behind in the guest either.
# Exits with the guest tests' status; prints the test counts, boot time and lane time.
#
# Environment: CAPSTAN_VM_TEST_ARGS (libtest arguments for the Rust tests),
# CAPSTAN_VM_TIMEOUT (minutes, default 25), CAPSTAN_VM_CARGO_FLAGS (default --locked),
# and those of run.sh / build-guest.sh.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
start=$(date +%s)
cargo_flags=${CAPSTAN_VM_CARGO_FLAGS---locked}

[ "$(id -u)" -eq 0 ] || { echo "lane.sh: run as root" >&2; exit 1; }

echo "=== VM lane: guest image"
# Also installs the host's tools (qemu, debootstrap, jq, ...) when missing.
bash "$here/build-guest.sh" >/dev/null

echo "=== VM lane: building binaries and test executables (host)"
# shellcheck disable=SC2086 # cargo_flags is a list of flags, possibly empty
cargo build $cargo_flags --workspace --bins
json=$(mktemp)
debs=$(mktemp -d)
trap 'rm -rf "$json" "$debs"' EXIT
# The package the guest installs for real (vm_deb.rs), from the binaries just built.
deb=$(bash "$repo/packaging/build-deb.sh" --bin-dir "$repo/target/debug" --out "$debs")
# shellcheck disable=SC2086
cargo test $cargo_flags -p capstan-integration --no-run --message-format=json >"$json"

# Test executables of the chosen targets (kind "test", i.e. integration/tests/<name>.rs).
list=$(jq -r 'select(.reason == "compiler-artifact" and .executable != null and any(.target.kind[]; . == "test"))
              | "\(.target.name) \(.executable)"' <"$json")
exes=()
if [ "$#" -gt 0 ]; then
  for want in "$@"; do
    exe=$(awk -v n="$want" '$1 == n {print $2}' <<<"$list")
    [ -n "$exe" ] || { echo "lane.sh: no integration test target '$want'" >&2; exit 2; }
    exes+=("$exe")
  done
else
  while read -r name exe; do
    case "$name" in vm_*) exes+=("$exe") ;; esac
  done <<<"$list"
fi

# Last, the host lane's leftovers check, in the guest: the tests clean up there too.
tests=("$here"/tests/*.sh "${exes[@]}" "$repo/integration/leftovers.sh")

echo "=== VM lane: running ${#tests[@]} test executables in the guest"
for t in "${tests[@]}"; do echo "    $t"; done
set +e
bash "$here/run.sh" --nfs --share "$deb" --timeout "${CAPSTAN_VM_TIMEOUT:-25}" \
  --test-args "${CAPSTAN_VM_TEST_ARGS:-}" -- "${tests[@]}"
rc=$?
set -e
echo "=== VM lane: exit $rc, wall time $(( $(date +%s) - start )) s"
exit "$rc"
