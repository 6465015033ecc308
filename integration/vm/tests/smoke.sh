#!/bin/sh
# The VM lane's own test: proves the guest gives the tests what the host cannot.
#   cgroup2         pure cgroup v2 at /sys/fs/cgroup, memory/cpu/pids (and cpuset/io) available
#   oom_kill        a child cgroup with memory.max=32M: a process using more is OOM-killed and
#                   memory.events counts oom_kill
#   pids_max        pids.max stops forks beyond the limit and pids.events counts it
#   nfs             the guest kernel's nfsd export mounts over 127.0.0.1, a file written
#                   through the mount appears in the export (needs run.sh --nfs)
#   loop_ext4       a loop-backed ext4 image (the local-PV case) mounts and takes a file
# Prints libtest-style lines so the lane counts it with the Rust tests; exits 1 on any failure.
# Cleans up everything it creates, even when a check fails.
set -u

passed=0
failed=0
ok() { echo "test vm_smoke::$1 ... ok"; passed=$((passed + 1)); }
bad() { echo "test vm_smoke::$1 ... FAILED: $2"; failed=$((failed + 1)); }

cg=/sys/fs/cgroup
scratch=$(mktemp -d /var/tmp/vm-smoke.XXXXXX)

check_cgroup2() {
  fstype=$(stat -f -c %T $cg)
  [ "$fstype" = cgroup2fs ] || { bad cgroup2 "/sys/fs/cgroup is $fstype, not cgroup2fs"; return; }
  if grep -q ' cgroup ' /proc/mounts; then bad cgroup2 "a cgroup v1 hierarchy is mounted"; return; fi
  for c in memory cpu pids cpuset io; do
    grep -qw "$c" $cg/cgroup.controllers || { bad cgroup2 "controller $c not available"; return; }
    grep -qw "$c" $cg/cgroup.subtree_control || { bad cgroup2 "controller $c not enabled for children"; return; }
  done
  ok cgroup2
}

check_oom_kill() {
  d=$cg/vm-smoke-oom
  mkdir $d || { bad oom_kill "cannot create $d"; return; }
  echo 32M >$d/memory.max
  [ -f $d/memory.swap.max ] && echo 0 >$d/memory.swap.max
  # dd fills a 64 MiB buffer from /dev/zero: twice the limit, all of it touched.
  sh -c "echo \$\$ >$d/cgroup.procs && exec dd if=/dev/zero of=/dev/null bs=64M count=1" 2>/dev/null
  status=$?
  kills=$(awk '$1=="oom_kill"{print $2}' $d/memory.events)
  max=$(cat $d/memory.max)
  rmdir $d
  [ "$max" = 33554432 ] || { bad oom_kill "memory.max reads $max"; return; }
  [ "$status" = 137 ] || { bad oom_kill "dd exited $status, not killed by SIGKILL"; return; }
  [ "${kills:-0}" -ge 1 ] || { bad oom_kill "memory.events oom_kill is ${kills:-missing}"; return; }
  ok oom_kill
}

check_pids_max() {
  d=$cg/vm-smoke-pids
  mkdir $d || { bad pids_max "cannot create $d"; return; }
  echo 3 >$d/pids.max
  # The shell itself plus at most two children fit; the rest of the forks must fail.
  sh -c "echo \$\$ >$d/cgroup.procs; for i in 1 2 3 4 5 6; do sleep 2 & done; wait" 2>/dev/null
  events=$(awk '$1=="max"{print $2}' $d/pids.events)
  # The shell gives up when a fork fails and leaves its sleeps behind: end them.
  echo 1 >$d/cgroup.kill
  n=0
  while grep -q 'populated 1' $d/cgroup.events && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
  rmdir $d
  [ "${events:-0}" -ge 1 ] || { bad pids_max "pids.events max is ${events:-missing}"; return; }
  ok pids_max
}

check_nfs() {
  if [ -z "${CAPSTAN_NFS_EXPORT:-}" ]; then bad nfs "no NFS server (run.sh --nfs)"; return; fi
  mnt=$scratch/nfs
  mkdir -p "$mnt"
  name=smoke-$$
  if ! timeout 60 mount -t nfs "$CAPSTAN_NFS_SERVER:$CAPSTAN_NFS_EXPORT" "$mnt"; then
    bad nfs "mount -t nfs $CAPSTAN_NFS_SERVER:$CAPSTAN_NFS_EXPORT failed"; return
  fi
  fstype=$(stat -f -c %T "$mnt")
  vers=$(awk -v m="$mnt" '$2==m{print $3}' /proc/mounts)
  echo "through nfs $$" >"$mnt/$name"
  sync
  umount "$mnt"
  content=$(cat "$CAPSTAN_NFS_EXPORT/$name" 2>/dev/null)
  rm -f "$CAPSTAN_NFS_EXPORT/$name"
  [ "$fstype" = nfs ] || { bad nfs "mount has type $fstype"; return; }
  [ "$content" = "through nfs $$" ] || { bad nfs "file not in the export (read '$content')"; return; }
  echo "nfs: mounted as $vers, file written through it is in $CAPSTAN_NFS_EXPORT"
  ok nfs
}

check_loop_ext4() {
  img=$scratch/pv.img
  mnt=$scratch/pv
  mkdir -p "$mnt"
  truncate -s 64M "$img"
  mkfs.ext4 -q -F "$img" || { bad loop_ext4 "mkfs.ext4 failed"; return; }
  dev=$(losetup -f --show "$img") || { bad loop_ext4 "no free loop device"; return; }
  if mount -t ext4 "$dev" "$mnt"; then
    echo pv >"$mnt/f"
    fstype=$(stat -f -c %T "$mnt")
    umount "$mnt"
  else
    fstype=unmounted
  fi
  losetup -d "$dev"
  [ "$fstype" = ext2/ext3 ] || { bad loop_ext4 "mount of $dev gave $fstype"; return; }
  ok loop_ext4
}

check_cgroup2
check_oom_kill
check_pids_max
check_nfs
check_loop_ext4
rm -rf "$scratch"

if [ "$failed" = 0 ]; then result=ok; else result=FAILED; fi
echo "test result: $result. $passed passed; $failed failed; 0 ignored; 0 measured; 0 filtered out"
[ "$failed" = 0 ]
