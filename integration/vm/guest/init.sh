#!/bin/sh
# PID 1 of the VM lane's guest (run by the initramfs from the read-only share at /lane).
#
# Sets up what a pure cgroup v2 node has (cgroup2 at /sys/fs/cgroup with every controller
# enabled for children, the init itself in init.scope so the root cgroup holds no process,
# like under systemd), loopback, the loop and NFS modules, optionally the kernel NFS server
# on 127.0.0.1, then runs the test executables listed in /lane/lane.env one after the
# other and writes their combined exit code to /results/rc before powering off.
#
# Output goes to the console (the host streams it). Lines starting "capstan-vm:" are the
# lane's own; run.sh watches for "capstan-vm: guest ready".
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8
umask 022

say() { echo "capstan-vm: $*"; }

# Never return: PID 1 exiting panics the kernel. Flush the disk, then power off.
finish() {
  rc=$1
  [ -d /results ] && mountpoint -q /results && { echo "$rc" >/results/rc; sync; umount /results; }
  say "powering off (rc=$rc)"
  sync
  busybox poweroff -f
  echo o >/proc/sysrq-trigger
  sleep 60
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
mount -t mqueue mqueue /dev/mqueue
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run
mkdir -p /run/lock
[ -e /dev/ptmx ] || ln -s pts/ptmx /dev/ptmx
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd

if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 results /results; then
  say "error: cannot mount the results share"
  finish 1
fi

# Pure cgroup v2: the unified hierarchy only, every available controller delegated to
# children (what systemd does with systemd.unified_cgroup_hierarchy=1).
if ! mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 /sys/fs/cgroup; then
  say "error: cannot mount cgroup2 at /sys/fs/cgroup"
  finish 1
fi
# shellcheck disable=SC2013 # one line of words
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
  echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control || say "warning: cannot enable controller $c"
done
mkdir -p /sys/fs/cgroup/init.scope
echo $$ >/sys/fs/cgroup/init.scope/cgroup.procs

ip link set lo up
hostname capstan-vm
# loop has no other way in (losetup needs /dev/loop-control); br_netfilter is what a
# Kubernetes node loads. The rest (overlay, veth, bridge, nf_tables, nfs, nfsd) load on
# demand through /sbin/modprobe. One modprobe call: each one costs ~0.5 s under emulation.
modprobe -a loop overlay br_netfilter || say "warning: cannot load loop/overlay/br_netfilter"

# The lane's settings, written by run.sh: TESTS (names under /lane/tests), TEST_ARGS,
# TEST_TIMEOUT (seconds per executable), NFS (1 = start the NFS server), and any
# `export NAME=value` lines given with run.sh --env.
TESTS='' TEST_ARGS='' TEST_TIMEOUT=900 NFS=0
if [ -f /lane/lane.env ]; then
  # shellcheck disable=SC1091 # written by run.sh at run time
  . /lane/lane.env
else
  say "error: no /lane/lane.env on the share"
  finish 1
fi

export CAPSTAN_VM=1
export CAPSTAN_BIN_DIR=/lane/bin
export TMPDIR=/var/tmp

if [ "$NFS" = 1 ]; then
  if sh /lane/guest/nfs-server.sh start; then
    export CAPSTAN_NFS_SERVER=127.0.0.1 CAPSTAN_NFS_EXPORT=/export
  else
    say "error: the NFS server did not start"
    finish 1
  fi
fi

read -r up _ </proc/uptime
say "guest ready: kernel $(uname -r), uptime ${up} s, cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.subtree_control)"

rc=0
total=0
failed=
for t in $TESTS; do
  exe=/lane/tests/$t
  total=$((total + 1))
  say "=== running $t"
  start=$(date +%s)
  # Each executable starts in its own scratch directory (cargo runs tests from the package
  # directory; nothing here may depend on that).
  dir=$(mktemp -d /var/tmp/lane.XXXXXX)
  # Through a pipe, as on a CI host: the console is a terminal, and tests (and libtest's
  # colours) would behave differently on one.
  # shellcheck disable=SC2086 # TEST_ARGS is a list of words for libtest
  case "$t" in
    *.sh) set -- "$exe" ;;
    *) set -- "$exe" $TEST_ARGS ;;
  esac
  { (cd "$dir" && timeout -k 10 "$TEST_TIMEOUT" "$@") </dev/null 2>&1; echo $? >"$dir.status"; } | cat
  status=$(cat "$dir.status" 2>/dev/null || echo 1)
  rm -f "$dir.status"
  rm -rf "$dir"
  [ "$status" = 124 ] && say "$t timed out after $TEST_TIMEOUT s"
  say "=== $t exited $status after $(( $(date +%s) - start )) s"
  if [ "$status" != 0 ]; then
    rc=1
    failed="$failed $t"
  fi
done

[ "$NFS" = 1 ] && sh /lane/guest/nfs-server.sh stop

if [ "$rc" = 0 ]; then
  say "all $total test executables passed"
else
  say "failed:$failed"
fi
finish "$rc"
