//! Pod and container cgroups with the cgroupfs driver, on cgroup v1 (including the v1/v2
//! hybrid this project's hosts run) and v2.
//!
//! Layout (containerd's): a pod's containers live in `<cgroup_parent>/<container id>` and its
//! infra process in `<cgroup_parent>/<pod id>`. kubelet creates `cgroup_parent` itself; when
//! a client gives none, the pod gets `/capstan/<pod id>`. libcontainer creates container
//! cgroups (with every missing ancestor) and removes the leaf on delete; the ancestors the
//! runtime caused to exist are removed here when the pod goes.
//!
//! On cgroup v2, libcgroups also enables every controller of the root in the
//! `cgroup.subtree_control` of each ancestor on the way down (idempotent where kubelet did it
//! already), so the leaves get `memory.max`, `cpu.max`, `pids.max`... The v2 rule that a
//! cgroup with enabled controllers holds no processes is kept by the layout: processes only
//! live in the leaves (`<parent>/<pod id>`, `<parent>/<container id>`).

use std::path::{Component, Path, PathBuf};

use libcgroups::common::CgroupSetup;

use crate::{CgroupDriver, Error, Result};

/// Parent of pod cgroups when the client gives no `cgroup_parent`.
pub const DEFAULT_PARENT: &str = "/capstan";

/// Which cgroup API the host offers; a hybrid host is driven through its v1 controllers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

pub fn version() -> Result<Version> {
    match libcgroups::common::get_cgroup_setup() {
        Ok(CgroupSetup::Unified) => Ok(Version::V2),
        Ok(CgroupSetup::Legacy | CgroupSetup::Hybrid) => Ok(Version::V1),
        Err(e) => Err(Error::Internal(format!("cannot detect the cgroup setup under /sys/fs/cgroup: {e}"))),
    }
}

/// Where a pod's cgroups go, and which of those directories this pod brought into being
/// (removed, deepest first, with the pod).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodCgroups {
    /// cgroupfs path relative to each hierarchy root, e.g. `/kubepods/besteffort/pod123`.
    pub parent: PathBuf,
    /// Directories to remove when the pod is removed, deepest first.
    pub owned: Vec<PathBuf>,
}

impl PodCgroups {
    /// Decides the pod's cgroup parent from the CRI `cgroup_parent`.
    pub fn plan(driver: CgroupDriver, cgroup_parent: &str, pod_id: &str) -> Result<PodCgroups> {
        if driver == CgroupDriver::Systemd {
            return Err(Error::FailedPrecondition(
                "the systemd cgroup driver is not supported yet; set [cgroup] driver = \"cgroupfs\" \
                 (and kubelet's --cgroup-driver=cgroupfs)"
                    .into(),
            ));
        }
        if cgroup_parent.is_empty() {
            let parent = Path::new(DEFAULT_PARENT).join(pod_id);
            // The shared default root is removed too once it is empty.
            return Ok(PodCgroups { owned: vec![parent.clone(), DEFAULT_PARENT.into()], parent });
        }
        let parent = validate(cgroup_parent)?;
        let hierarchies = hierarchies()?;
        let mut owned = Vec::new();
        let mut dir = parent.clone();
        while dir != Path::new("/") {
            let exists = hierarchies.iter().any(|h| h.join(dir.strip_prefix("/").unwrap_or(&dir)).is_dir());
            if exists {
                break;
            }
            owned.push(dir.clone());
            if !dir.pop() {
                break;
            }
        }
        Ok(PodCgroups { parent, owned })
    }

    /// The cgroup of one container (or of the infra process, named by the pod id).
    pub fn child(&self, id: &str) -> PathBuf {
        self.parent.join(id)
    }

    /// Removes the directories this pod owns in every hierarchy. Non-empty ones (another
    /// pod still uses the default root) are left alone.
    pub fn remove_owned(&self) -> Result<()> {
        let hierarchies = hierarchies()?;
        for dir in &self.owned {
            let rel = dir.strip_prefix("/").unwrap_or(dir);
            for h in &hierarchies {
                remove_dir(&h.join(rel))?;
            }
        }
        Ok(())
    }
}

/// `rmdir` tolerating absence and, for shared ancestors, being in use.
fn remove_dir(path: &Path) -> Result<()> {
    match std::fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::ENOTEMPTY)) => {
            tracing::debug!(path = %path.display(), "cgroup still in use; left in place");
            Ok(())
        }
        Err(e) => Err(Error::Io { context: "cannot remove cgroup", path: path.to_path_buf(), source: e }),
    }
}

/// An absolute cgroupfs path without `..`; anything else is the caller's mistake.
fn validate(cgroup_parent: &str) -> Result<PathBuf> {
    let path = Path::new(cgroup_parent);
    let ok = path.is_absolute() && path.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !ok {
        return Err(Error::InvalidArgument(format!(
            "cgroup_parent {cgroup_parent:?} is not an absolute cgroupfs path (a systemd slice \
             name needs the systemd cgroup driver)"
        )));
    }
    Ok(path.to_path_buf())
}

/// Where the unified hierarchy is on a v2 host: where libcgroups creates cgroups.
const V2_ROOT: &str = "/sys/fs/cgroup";

/// Mount points of every cgroup hierarchy the runtime uses: each v1 controller mount, or
/// the v2 root libcgroups works in (other cgroup2 mounts, e.g. bind mounts, are not ours).
pub fn hierarchies() -> Result<Vec<PathBuf>> {
    if version()? == Version::V2 {
        return Ok(vec![PathBuf::from(V2_ROOT)]);
    }
    let mountinfo = "/proc/self/mountinfo";
    let text = std::fs::read_to_string(mountinfo).map_err(Error::io("cannot read", mountinfo))?;
    Ok(parse_hierarchies(&text, "cgroup"))
}

fn parse_hierarchies(mountinfo: &str, fstype: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            (right.split(' ').next()? == fstype).then(|| PathBuf::from(mount_point))
        })
        .collect()
}

/// The directory of `cgroup` in the memory hierarchy.
pub fn memory_dir(cgroup: &Path) -> Result<PathBuf> {
    let rel = cgroup.strip_prefix("/").unwrap_or(cgroup);
    match version()? {
        Version::V2 => Ok(Path::new(V2_ROOT).join(rel)),
        Version::V1 => {
            let mount = libcgroups::v1::util::get_subsystem_mount_point(&libcgroups::v1::ControllerType::Memory)
                .map_err(|e| Error::Internal(format!("no v1 memory controller mounted: {e}")))?;
            Ok(mount.join(rel))
        }
    }
}

/// How many processes of `cgroup` the kernel's OOM killer has killed: v1
/// `memory.oom_control` / v2 `memory.events`, field `oom_kill`. `None` when unreadable.
pub fn oom_kill_count(cgroup: &Path) -> Option<u64> {
    let dir = memory_dir(cgroup).ok()?;
    let text = std::fs::read_to_string(dir.join("memory.events"))
        .or_else(|_| std::fs::read_to_string(dir.join("memory.oom_control")))
        .ok()?;
    parse_oom_kill(&text)
}

fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|v| v.trim().parse().ok())
}

/// Moves `pid` into `cgroup`, creating it first. On v2 the directories are made here, not by
/// libcgroups: its check-then-mkdir fails when another pod creates a shared parent
/// (`/capstan`) at the same moment, while `create_dir_all` takes that in its stride, and a
/// shared parent that a departing pod removes in between is simply made again.
pub fn join(cgroup: &Path, pid: nix::unistd::Pid) -> Result<()> {
    use libcgroups::common::CgroupManager;
    if version()? == Version::V2 {
        create_v2(Path::new(V2_ROOT), cgroup)?;
    }
    let failed = |e: &dyn std::fmt::Display| Error::Internal(format!("cannot move {pid} into cgroup {}: {e}", cgroup.display()));
    let manager = libcgroups::common::create_cgroup_manager(libcgroups::common::CgroupConfig {
        cgroup_path: cgroup.to_path_buf(),
        systemd_cgroup: false,
        container_name: String::new(),
    })
    .map_err(|e| failed(&e))?;
    manager.add_task(pid).map_err(|e| failed(&e))
}

/// `mkdir -p` of `cgroup` in the v2 hierarchy at `root`, then every ancestor of the leaf
/// hands its controllers down (the leaf holds processes, so it enables none).
fn create_v2(root: &Path, cgroup: &Path) -> Result<()> {
    let rel = cgroup.strip_prefix("/").unwrap_or(cgroup);
    let full = root.join(rel);
    let mut attempts = 0;
    loop {
        match std::fs::create_dir_all(&full) {
            Ok(()) => break,
            // A departing pod removed an empty shared parent between two mkdirs.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempts < 3 => attempts += 1,
            Err(e) => return Err(Error::Io { context: "cannot create cgroup", path: full, source: e }),
        }
    }
    let mut dir = root.to_path_buf();
    enable_controllers(&dir);
    let parents: Vec<_> = rel.parent().map(|p| p.components().collect()).unwrap_or_default();
    for part in parents {
        dir.push(part);
        enable_controllers(&dir);
    }
    Ok(())
}

/// Enables in `dir/cgroup.subtree_control` each controller `dir` has and does not pass on
/// yet; a parent that already does (kubelet's) is not written to. Failures are only logged:
/// a limit that needs the controller then fails with the reason.
fn enable_controllers(dir: &Path) {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let (available, enabled) = (read("cgroup.controllers"), read("cgroup.subtree_control"));
    let enabled: Vec<&str> = enabled.split_whitespace().collect();
    for controller in available.split_whitespace().filter(|c| !enabled.contains(c)) {
        if let Err(e) = std::fs::write(dir.join("cgroup.subtree_control"), format!("+{controller}")) {
            tracing::debug!(dir = %dir.display(), controller, error = %e, "cannot enable cgroup controller for children");
        }
    }
}

/// SIGKILLs whatever still runs in `cgroup` and removes it (the leaf) from every hierarchy.
/// For pods whose monitor is gone; errors are logged, cleanup goes on.
pub fn kill_and_remove(cgroup: &Path) {
    use libcgroups::common::CgroupManager;
    let result = libcgroups::common::create_cgroup_manager(libcgroups::common::CgroupConfig {
        cgroup_path: cgroup.to_path_buf(),
        systemd_cgroup: false,
        container_name: String::new(),
    })
    .map_err(|e| e.to_string())
    .and_then(|m| m.remove().map_err(|e| e.to_string()));
    if let Err(e) = result {
        tracing::warn!(cgroup = %cgroup.display(), error = %e, "cannot remove cgroup");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kill_is_read_from_v1_and_v2_files() {
        assert_eq!(parse_oom_kill("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"), Some(3));
        assert_eq!(parse_oom_kill("low 0\nhigh 0\nmax 4\noom 2\noom_kill 1\noom_group_kill 0\n"), Some(1));
        assert_eq!(parse_oom_kill("oom_kill_disable 0\n"), None);
    }

    #[test]
    fn hierarchies_come_from_mountinfo() {
        let mi = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                  41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                  22 1 0:21 / /proc rw - proc proc rw\n";
        assert_eq!(parse_hierarchies(mi, "cgroup"), vec![PathBuf::from("/sys/fs/cgroup/cpu")]);
        assert_eq!(parse_hierarchies(mi, "cgroup2"), vec![PathBuf::from("/sys/fs/cgroup/unified")]);
    }

    /// Pods starting together create the shared parent together: each must get its cgroup.
    /// (libcgroups 0.7's own v2 creation failed 63 of 1600 such calls here with EEXIST.)
    #[test]
    fn concurrent_v2_creation_of_a_shared_parent_never_fails() {
        let root = tempfile::tempdir().unwrap();
        for round in 0..60 {
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
            let threads: Vec<_> = (0..8)
                .map(|i| {
                    let (root, barrier) = (root.path().to_path_buf(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        create_v2(&root, Path::new(&format!("/shared{round}/pod{i}/infra")))
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap().unwrap();
            }
            for i in 0..8 {
                assert!(root.path().join(format!("shared{round}/pod{i}/infra")).is_dir());
            }
        }
    }

    /// Controllers are handed down by every ancestor of the leaf, and only those missing.
    #[test]
    fn v2_parents_pass_their_controllers_down() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("kube/pod")).unwrap();
        for (dir, controllers) in [("", "cpu memory pids"), ("kube", "cpu memory pids"), ("kube/pod", "cpu memory")] {
            std::fs::write(r.join(dir).join("cgroup.controllers"), controllers).unwrap();
        }
        // A parent that already passes everything on (kubelet's) is not written to.
        std::fs::write(r.join("kube/cgroup.subtree_control"), "cpu memory pids").unwrap();
        create_v2(r, Path::new("/kube/pod/leaf")).unwrap();
        assert!(r.join("kube/pod/leaf").is_dir());
        // A plain file keeps the last write, as cgroupfs would not: enough to see what was written.
        assert_eq!(std::fs::read_to_string(r.join("cgroup.subtree_control")).unwrap(), "+pids");
        assert_eq!(std::fs::read_to_string(r.join("kube/cgroup.subtree_control")).unwrap(), "cpu memory pids");
        assert_eq!(std::fs::read_to_string(r.join("kube/pod/cgroup.subtree_control")).unwrap(), "+memory");
        assert!(!r.join("kube/pod/leaf/cgroup.subtree_control").exists(), "the leaf enables nothing");
    }

    #[test]
    fn parents_are_validated_and_defaulted() {
        let p = PodCgroups::plan(CgroupDriver::Cgroupfs, "", "abc").unwrap();
        assert_eq!(p.parent, PathBuf::from("/capstan/abc"));
        assert_eq!(p.child("c1"), PathBuf::from("/capstan/abc/c1"));
        assert!(PodCgroups::plan(CgroupDriver::Cgroupfs, "kubepods.slice", "a").is_err());
        assert!(PodCgroups::plan(CgroupDriver::Cgroupfs, "/a/../b", "a").is_err());
        let e = PodCgroups::plan(CgroupDriver::Systemd, "", "a").unwrap_err();
        assert!(matches!(e, Error::FailedPrecondition(_)), "{e}");
    }
}

