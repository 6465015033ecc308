//! `/sys/fs/cgroup` inside containers on cgroup v1 hosts, laid out here the way runc does
//! it: a tmpfs with one bind mount per hierarchy of the container's own cgroup (read-only
//! unless privileged).
//!
//! Why not hand libcontainer a `cgroup`-type mount: libcontainer 0.7 then looks up the
//! container's "root" cgroups in the host's /proc by the init's *namespace* pid. In a pod
//! that shares its pid namespace (`pid: POD`), that pid means another host process, or none
//! (CreateContainer failed with `NotFound("/proc/11")`); in a fresh pid namespace it reads the
//! host's pid 1. Building the mounts from the host's own mount table avoids both. On v2 the
//! `cgroup` mount is a plain cgroup2 mount in the container's cgroup namespace, unaffected.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use oci_spec::runtime::Mount;

/// Controllers libcgroups' v1 manager creates a directory for in every container.
const MANAGED: &[&str] =
    &["cpu", "cpuacct", "cpuset", "devices", "hugetlb", "memory", "pids", "perf_event", "blkio", "net_prio", "net_cls", "freezer"];

const ROOT: &str = "/sys/fs/cgroup";

/// One v1 hierarchy mounted on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hierarchy {
    mount_point: PathBuf,
    controllers: Vec<String>,
}

/// The host's v1 hierarchies under /sys/fs/cgroup, read once (they do not change while the
/// node runs).
fn hierarchies() -> &'static [Hierarchy] {
    static HIERARCHIES: OnceLock<Vec<Hierarchy>> = OnceLock::new();
    HIERARCHIES.get_or_init(|| std::fs::read_to_string("/proc/self/mountinfo").map(|t| parse_mountinfo(&t)).unwrap_or_default())
}

fn parse_mountinfo(text: &str) -> Vec<Hierarchy> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((mount, fs)) = line.split_once(" - ") else { continue };
        let mut fs = fs.split(' ');
        if fs.next() != Some("cgroup") {
            continue;
        }
        let Some(mount_point) = mount.split(' ').nth(4).map(PathBuf::from) else { continue };
        if mount_point.parent() != Some(Path::new(ROOT)) {
            continue;
        }
        let options = fs.nth(1).unwrap_or_default();
        let controllers = options.split(',').filter(|o| MANAGED.contains(o)).map(String::from).collect::<Vec<_>>();
        if !controllers.is_empty() {
            out.push(Hierarchy { mount_point, controllers });
        }
    }
    out
}

/// The mounts that replace a `cgroup`-type mount at /sys/fs/cgroup for a container whose
/// cgroup is `cgroups_path`.
pub fn v1_mounts(cgroups_path: &Path, privileged: bool) -> Vec<Mount> {
    build(hierarchies(), cgroups_path, privileged)
}

fn build(hierarchies: &[Hierarchy], cgroups_path: &Path, privileged: bool) -> Vec<Mount> {
    let mode = if privileged { "rw" } else { "ro" };
    let relative = cgroups_path.strip_prefix("/").unwrap_or(cgroups_path);
    let mut out = vec![super::mounts::mount(ROOT, "tmpfs", Path::new("tmpfs"), &["nosuid", "noexec", "nodev", "mode=755", "size=64k"])];
    for h in hierarchies {
        let source = h.mount_point.join(relative);
        let Some(name) = h.mount_point.file_name().map(|n| n.to_string_lossy().into_owned()) else { continue };
        // A co-mounted hierarchy (cpu,cpuacct) is reachable under each controller's name
        // too, as the host's symlinks make it.
        let mut names = vec![name.clone()];
        names.extend(h.controllers.iter().filter(|c| **c != name).cloned());
        for n in names {
            let dest = format!("{ROOT}/{n}");
            out.push(super::mounts::mount(&dest, "bind", &source, &["rbind", "rprivate", "nosuid", "noexec", "nodev", mode]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 31 0:40 / /mnt/elsewhere rw,relatime - cgroup cgroup rw,pids
";

    #[test]
    fn only_managed_hierarchies_under_sys_fs_cgroup() {
        let h = parse_mountinfo(MOUNTINFO);
        assert_eq!(
            h,
            vec![
                Hierarchy { mount_point: "/sys/fs/cgroup/cpu,cpuacct".into(), controllers: vec!["cpu".into(), "cpuacct".into()] },
                Hierarchy { mount_point: "/sys/fs/cgroup/memory".into(), controllers: vec!["memory".into()] },
            ]
        );
    }

    #[test]
    fn binds_the_containers_own_cgroup_read_only() {
        let mounts = build(&parse_mountinfo(MOUNTINFO), Path::new("/kubepods/pod1/c1"), false);
        let dests: Vec<String> = mounts.iter().map(|m| m.destination().display().to_string()).collect();
        assert_eq!(
            dests,
            ["/sys/fs/cgroup", "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpuacct", "/sys/fs/cgroup/memory"]
        );
        let memory = &mounts[4];
        assert_eq!(memory.source().as_deref(), Some(Path::new("/sys/fs/cgroup/memory/kubepods/pod1/c1")));
        assert!(memory.options().as_ref().unwrap().contains(&"ro".to_string()));
        let privileged = build(&parse_mountinfo(MOUNTINFO), Path::new("/c"), true);
        assert!(privileged[1].options().as_ref().unwrap().contains(&"rw".to_string()));
    }
}
