#!/usr/bin/env bash
# Runs prebuilt test executables inside a qemu guest booted from Debian's kernel with a pure
# cgroup v2 hierarchy and the kernel NFS server, streams their output here, and exits with
# their exit code.
#
#   run.sh [options] TEST...
#
# TEST is a test executable built on this host (cargo test --no-run) or a script (*.sh, run
# by its #! line, /bin/sh without one; --test-args are not passed to scripts). They run as
# root, one after the other, each from an
# empty scratch directory, with CAPSTAN_BIN_DIR=/lane/bin (capstan, capstan-monitor),
# CAPSTAN_VM=1 and, with --nfs, CAPSTAN_NFS_SERVER=127.0.0.1 CAPSTAN_NFS_EXPORT=/export.
#
# Options:
#   --bin-dir DIR       where capstan and capstan-monitor are (default: <repo>/target/debug)
#   --nfs               start the guest's kernel NFS server (export /export to 127.0.0.1)
#   --test-args ARGS    arguments for every non-script test executable (e.g. "--test-threads=1")
#   --accel auto|kvm|tcg  auto tries KVM for --kvm-deadline seconds, then falls back to TCG
#   --timeout MIN       hard limit for the whole guest run (default 25); qemu is killed after it
#   --test-timeout SEC  limit per test executable inside the guest (default 900)
#   --mem MB, --smp N   guest size (default 2048, all host cores up to 4)
#   --env NAME=VALUE    set in the tests' environment (repeatable), e.g. RUST_BACKTRACE=1
#   --keep-debug        share executables with their debug info (file:line in backtraces)
#   --share FILE        also put FILE (as is) in the guest's /lane/bin (repeatable; e.g. the .deb)
#
# Environment: CAPSTAN_VM_CACHE (guest cache dir, see build-guest.sh), CAPSTAN_VM_ACCEL.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

bin_dir=$repo/target/debug
nfs=0
keep_debug=0
test_args=
accel=${CAPSTAN_VM_ACCEL:-auto}
timeout_min=25
test_timeout=900
mem=2048
smp=$(nproc); [ "$smp" -gt 4 ] && smp=4
kvm_deadline=20
tcg_cpu=${CAPSTAN_VM_TCG_CPU:-max}
append_extra=${CAPSTAN_VM_APPEND:-}
boot_deadline=180
tests=()
envs=()
extra=()

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
die() { echo "capstan-vm: error: $*" >&2; exit 1; }

while [ "$#" -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir=$2; shift 2 ;;
    --nfs) nfs=1; shift ;;
    --keep-debug) keep_debug=1; shift ;;
    --share) extra+=("$2"); shift 2 ;;
    --test-args) test_args=$2; shift 2 ;;
    --accel) accel=$2; shift 2 ;;
    --timeout) timeout_min=$2; shift 2 ;;
    --test-timeout) test_timeout=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    --smp) smp=$2; shift 2 ;;
    --kvm-deadline) kvm_deadline=$2; shift 2 ;;
    --env)
      [[ "$2" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env wants NAME=VALUE, got '$2'"
      envs+=("$2"); shift 2 ;;
    -h|--help) usage ;;
    --) shift; tests+=("$@"); break ;;
    -*) echo "run.sh: unknown option $1" >&2; usage ;;
    *) tests+=("$1"); shift ;;
  esac
done
[ "${#tests[@]}" -gt 0 ] || { echo "run.sh: no tests given" >&2; usage; }
case "$accel" in auto|kvm|tcg) ;; *) die "--accel must be auto, kvm or tcg" ;; esac
[ "$(id -u)" -eq 0 ] || die "run as root (the guest cache and device access need it)"

lane_start=$(date +%s.%N)
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}'; }

guest=$(bash "$here/build-guest.sh") || die "the guest image could not be built (see above)"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing (build-guest.sh installs qemu-system-x86)"
image_s=$(elapsed "$lane_start")

[ -x "$bin_dir/capstan" ] || die "no $bin_dir/capstan: build first (cargo build --workspace --bins)"

stage=$(mktemp -d /var/tmp/capstan-vm.XXXXXX)
qjob=
tailpid=
# qemu runs inside a background subshell ($qjob) that records its exit status in
# $stage/qemu.rc; qemu's own pid comes from its -pidfile. The subshell lives as long as qemu.
qemu_alive() { [ -n "$qjob" ] && kill -0 "$qjob" 2>/dev/null; }
qemu_stop() {
  local pid n=0
  [ -n "$qjob" ] || return 0
  pid=$(cat "$stage/qemu.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && qemu_alive; then
    kill "$pid" 2>/dev/null
    while qemu_alive && [ "$n" -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
    qemu_alive && kill -9 "$pid" 2>/dev/null
  fi
  wait "$qjob" 2>/dev/null || true
  qjob=
}
stop_tail() {
  [ -n "$tailpid" ] || return 0
  kill "$tailpid" 2>/dev/null || true
  wait "$tailpid" 2>/dev/null || true
  tailpid=
}
# shellcheck disable=SC2317 # called from the EXIT trap
cleanup() {
  stop_tail
  qemu_stop
  rm -rf "$stage"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The share holds copies, never links: a rebuild during the run must not change what the
# guest executes. Executables lose their debug info on the way (a fifth of the size, so
# less to copy and to page in over 9p; backtraces keep function names) unless --keep-debug.
share=$stage/share
results=$stage/results
mkdir -p "$share/bin" "$share/tests" "$share/guest" "$results"
put() {
  if [ "$keep_debug" = 0 ] && [ "$(head -c 4 "$1" | od -An -c | tr -d ' ')" = '177ELF' ] &&
     objcopy --strip-debug "$1" "$2" 2>/dev/null; then
    :
  else
    cp -f "$1" "$2"
  fi
  chmod 0755 "$2"
}
put "$bin_dir/capstan" "$share/bin/capstan"
[ -x "$bin_dir/capstan-monitor" ] && put "$bin_dir/capstan-monitor" "$share/bin/capstan-monitor"
for f in "${extra[@]}"; do
  [ -f "$f" ] || die "--share $f: no such file"
  cp -f "$f" "$share/bin/"
done
cp "$here/guest/"* "$share/guest/"
names=()
i=0
for t in "${tests[@]}"; do
  [ -f "$t" ] || die "test $t does not exist"
  i=$((i + 1))
  name=$(printf '%02d-%s' "$i" "$(basename "$t")")
  put "$t" "$share/tests/$name"
  names+=("$name")
done
{
  printf 'TESTS=%q\n' "${names[*]}"
  printf 'TEST_ARGS=%q\n' "$test_args"
  printf 'TEST_TIMEOUT=%q\n' "$test_timeout"
  printf 'NFS=%q\n' "$nfs"
  for e in "${envs[@]}"; do printf 'export %s=%q\n' "${e%%=*}" "${e#*=}"; done
} >"$share/lane.env"

# boot ACCEL DEADLINE: starts qemu in the background with the console going to
# $stage/console.log, and waits until the guest init says it is ready. Returns 1 if it
# did not within DEADLINE seconds (qemu is then killed) or qemu exited first.
boot() {
  local acc=$1 deadline=$2 cpu
  if [ "$acc" = kvm ]; then cpu=host; acc_opt=kvm; else cpu=$tcg_cpu; acc_opt=tcg,thread=multi; fi
  : >"$stage/console.log"
  rm -f "$results/rc" "$stage/qemu.pid" "$stage/qemu.rc"
  boot_start=$(date +%s.%N)
  # -snapshot: writes go to a temporary overlay; the cached root image stays pristine.
  ( qemu-system-x86_64 -pidfile "$stage/qemu.pid" \
    -nodefaults -no-user-config -no-reboot -display none \
    -machine q35 -accel "$acc_opt" -cpu "$cpu" -smp "$smp" -m "$mem" \
    -kernel "$guest/vmlinuz" -initrd "$guest/initrd.img" \
    -append "console=ttyS0 panic=-1 quiet loglevel=4 systemd.unified_cgroup_hierarchy=1 capstan.init=/lane/guest/init.sh $append_extra" \
    -drive "file=$guest/root.img,format=raw,if=virtio,snapshot=on,cache=unsafe" \
    -virtfs "local,path=$share,mount_tag=capstan,security_model=none,readonly=on" \
    -virtfs "local,path=$results,mount_tag=results,security_model=none" \
    -device virtio-rng-pci \
    -chardev "file,id=con,path=$stage/console.log" -serial chardev:con \
    -monitor none \
    </dev/null >"$stage/qemu.out" 2>&1
    echo $? >"$stage/qemu.rc" ) 2>/dev/null &
  qjob=$!
  # The hard limit for this qemu, boot included.
  qemu_deadline=$(( $(date +%s) + timeout_min * 60 ))
  tail -n +1 -f --pid="$qjob" "$stage/console.log" &
  tailpid=$!
  local waited=0
  while ! grep -q "capstan-vm: guest ready" "$stage/console.log"; do
    if ! qemu_alive; then
      sleep 0.5
      qemu_stop
      stop_tail
      echo "capstan-vm: qemu ($acc) exited before the guest was ready (exit $(cat "$stage/qemu.rc" 2>/dev/null)):" >&2
      cat "$stage/qemu.out" >&2
      return 1
    fi
    if [ "$waited" -ge $((deadline * 10)) ]; then
      echo "capstan-vm: the guest did not get ready within ${deadline} s with $acc" >&2
      qemu_stop
      stop_tail
      return 1
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  boot_s=$(elapsed "$boot_start")
  used_accel=$acc
  return 0
}

used_accel=
booted=0
if [ "$accel" != tcg ]; then
  if [ -w /dev/kvm ]; then
    echo "capstan-vm: trying KVM (deadline ${kvm_deadline} s)"
    boot kvm "$kvm_deadline" && booted=1
    [ "$booted" = 1 ] || echo "capstan-vm: KVM did not boot the guest; falling back to TCG (software emulation)"
  else
    echo "capstan-vm: no usable /dev/kvm; using TCG (software emulation)"
  fi
  [ "$accel" = kvm ] && [ "$booted" = 0 ] && die "KVM was required (--accel kvm) but did not boot the guest"
fi
if [ "$booted" = 0 ]; then
  boot tcg "$boot_deadline" && booted=1
fi
[ "$booted" = 1 ] || die "the guest could not boot (console above; qemu's own output: $(tr '\n' ' ' <"$stage/qemu.out"))"
echo "capstan-vm: guest booted with $used_accel in ${boot_s} s"

tests_start=$(date +%s.%N)
timed_out=0
while qemu_alive; do
  if [ "$(date +%s)" -ge "$qemu_deadline" ]; then
    timed_out=1
    break
  fi
  sleep 1
done
qemu_stop
qrc=$(cat "$stage/qemu.rc" 2>/dev/null || echo killed)
# tail notices qemu's end within a second and prints the rest first.
n=0
while [ -n "$tailpid" ] && kill -0 "$tailpid" 2>/dev/null && [ "$n" -lt 30 ]; do sleep 0.1; n=$((n + 1)); done
stop_tail
tests_s=$(elapsed "$tests_start")

# Counts from libtest's summary lines ("test result: ok. 3 passed; 0 failed; 1 ignored; ...").
counts=$( (grep -a '^test result:' "$stage/console.log" || true) |
  awk '{for(i=1;i<=NF;i++){if($(i+1) ~ /^passed/)p+=$i; if($(i+1) ~ /^failed/)f+=$i; if($(i+1) ~ /^ignored/)g+=$i}}
       END{printf "%d passed, %d failed, %d ignored", p, f, g}')

if [ "$timed_out" = 1 ]; then
  echo "capstan-vm: error: the guest run hit the ${timeout_min} min limit; qemu was killed" >&2
  rc=1
elif [ ! -s "$results/rc" ]; then
  echo "capstan-vm: error: the guest stopped without a result (qemu exit $qrc; kernel panic or crash? console above)" >&2
  [ -s "$stage/qemu.out" ] && cat "$stage/qemu.out" >&2
  rc=1
else
  rc=$(cat "$results/rc")
fi

echo "capstan-vm: lane summary: tests ${counts} in ${#tests[@]} executables; image ${image_s} s, boot ${boot_s} s (${used_accel}), tests ${tests_s} s, lane total $(elapsed "$lane_start") s; exit ${rc}"
exit "$rc"
