#!/bin/sh
# The guest's kernel NFS server on its loopback, without systemd:
#
#   nfs-server.sh start    rpcbind, rpc.mountd and nfsd; /export exported to 127.0.0.1
#   nfs-server.sh stop     unexports everything and stops them again
#
# Tests may export more directories themselves while it runs
# (`exportfs -o rw,no_root_squash,no_subtree_check,insecure 127.0.0.1:/dir`, and
# `exportfs -u 127.0.0.1:/dir` when done).
set -eu

EXPORT=/export
OPTS=rw,sync,no_subtree_check,no_root_squash,insecure

say() { echo "capstan-vm: nfs: $*"; }

start() {
  modprobe nfsd
  mountpoint -q /proc/fs/nfsd || mount -t nfsd nfsd /proc/fs/nfsd
  mkdir -p /run/rpcbind /var/lib/nfs/rpc_pipefs "$EXPORT"
  mountpoint -q /var/lib/nfs/rpc_pipefs || mount -t rpc_pipefs sunrpc /var/lib/nfs/rpc_pipefs
  printf '%s 127.0.0.1(%s)\n' "$EXPORT" "$OPTS" >/etc/exports
  rpcbind -w
  # Short leases, so a test's unmounted client state expires quickly.
  echo 10 >/proc/fs/nfsd/nfsv4leasetime
  echo 10 >/proc/fs/nfsd/nfsv4gracetime
  exportfs -ra
  rpc.mountd
  rpc.nfsd 4
  # A fresh server has no clients to reclaim state: end the NFSv4 grace period now, or
  # the first OPEN through a new mount waits it out.
  echo Y >/proc/fs/nfsd/v4_end_grace
  say "serving $EXPORT to 127.0.0.1 (kernel nfsd, versions: $(cat /proc/fs/nfsd/versions))"
}

stop() {
  exportfs -ua || true
  rpc.nfsd 0 || true
  for p in rpc.mountd rpcbind; do
    pkill -x "$p" || true
  done
  mountpoint -q /var/lib/nfs/rpc_pipefs && umount /var/lib/nfs/rpc_pipefs
  mountpoint -q /proc/fs/nfsd && umount /proc/fs/nfsd
  say "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
