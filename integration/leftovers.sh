#!/usr/bin/env bash
# Fails when the tests left anything of Capstan's behind on this machine: mounts, network
# namespaces, capstan processes, cgroups. Tests must clean up after themselves.
set -u
bad=0
report() { echo "leftovers: $*" >&2; bad=1; }

mounts=$(findmnt -rn -o TARGET | grep -E 'capstan' || true)
[ -z "$mounts" ] || report "mounts left behind:"$'\n'"$mounts"

netns=$(ip netns list 2>/dev/null | grep -iE 'capstan|capt' || true)
[ -z "$netns" ] || report "network namespaces left behind:"$'\n'"$netns"

procs=$( (pgrep -a -x capstan; pgrep -a -x capstan-monitor) || true)
[ -z "$procs" ] || report "processes left behind:"$'\n'"$procs"

cgroups=$(find /sys/fs/cgroup -maxdepth 3 -type d -iname '*capstan*' 2>/dev/null || true)
[ -z "$cgroups" ] || report "cgroups left behind:"$'\n'"$cgroups"

links=$(ip -o link show 2>/dev/null | grep -E ': capt' || true)
[ -z "$links" ] || report "network links left behind:"$'\n'"$links"

[ "$bad" = 0 ] && echo "leftovers: none (mounts, netns, processes, cgroups, links)"
exit "$bad"
