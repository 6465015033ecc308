//! `capstan check`: preflight checks in the spirit of kubeadm's, each a line that says
//! what was found and, when it fails, what to do.

use std::path::Path;

use crate::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug)]
pub struct Check {
    pub name: &'static str,
    pub outcome: Outcome,
    pub detail: String,
    /// What the operator should do; empty when the check passed.
    pub fix: String,
}

fn pass(name: &'static str, detail: impl Into<String>) -> Check {
    Check { name, outcome: Outcome::Pass, detail: detail.into(), fix: String::new() }
}
fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check { name, outcome: Outcome::Warn, detail: detail.into(), fix: fix.into() }
}
fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check { name, outcome: Outcome::Fail, detail: detail.into(), fix: fix.into() }
}

/// Runs every check against the effective configuration.
pub fn run_all(config: &Config) -> Vec<Check> {
    vec![
        namespaces(),
        overlayfs(),
        cgroups(Path::new("/sys/fs/cgroup")),
        seccomp(),
        cni_config(config),
        socket(config),
        disk_space(&config.root),
        other_runtimes(),
    ]
}

/// Prints the checks; returns false when any failed.
pub fn print(checks: &[Check]) -> bool {
    for c in checks {
        let tag = match c.outcome {
            Outcome::Pass => "[ OK ]",
            Outcome::Warn => "[WARN]",
            Outcome::Fail => "[FAIL]",
        };
        println!("{tag} {}: {}", c.name, c.detail);
        if !c.fix.is_empty() {
            println!("       fix: {}", c.fix);
        }
    }
    let failed = checks.iter().filter(|c| c.outcome == Outcome::Fail).count();
    let warned = checks.iter().filter(|c| c.outcome == Outcome::Warn).count();
    println!("{} checks: {} passed, {failed} failed, {warned} warnings", checks.len(), checks.len() - failed - warned);
    failed == 0
}

fn namespaces() -> Check {
    let needed = ["net", "ipc", "uts", "pid", "mnt", "cgroup"];
    let missing: Vec<&str> = needed.iter().copied().filter(|ns| !Path::new("/proc/self/ns").join(ns).exists()).collect();
    if missing.is_empty() {
        pass("namespaces", needed.join(" "))
    } else {
        fail("namespaces", format!("missing: {}", missing.join(" ")), "use a kernel built with CONFIG_NAMESPACES and the missing namespace types")
    }
}

fn overlayfs() -> Check {
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if filesystems.lines().any(|l| l.split_whitespace().last() == Some("overlay")) {
        pass("overlayfs", "overlay is registered in /proc/filesystems")
    } else {
        fail("overlayfs", "overlay is not in /proc/filesystems", "modprobe overlay (and add it to /etc/modules-load.d)")
    }
}

/// Which hierarchy the node has: pure v2, or v1 (possibly with a v2 "unified" mount).
pub fn cgroups(root: &Path) -> Check {
    let fs_type = |p: &Path| nix::sys::statfs::statfs(p).ok().map(|s| s.filesystem_type());
    let Some(kind) = fs_type(root) else {
        return fail("cgroups", format!("{} is not mounted", root.display()), "mount the cgroup filesystem (systemd does this at boot)");
    };
    if kind == nix::sys::statfs::CGROUP2_SUPER_MAGIC {
        let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        let have: Vec<&str> = controllers.split_whitespace().collect();
        let missing: Vec<&str> = ["cpu", "memory", "pids"].into_iter().filter(|c| !have.contains(c)).collect();
        return if missing.is_empty() {
            pass("cgroups", format!("v2 (unified), controllers: {}", have.join(" ")))
        } else {
            fail("cgroups", format!("v2, missing controllers: {}", missing.join(" ")), "enable them in the kernel command line / cgroup.subtree_control")
        };
    }
    let have: Vec<&str> = ["cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "freezer", "hugetlb", "blkio"]
        .into_iter()
        .filter(|c| root.join(c).is_dir())
        .collect();
    let missing: Vec<&str> = ["cpu", "memory", "pids", "devices"].into_iter().filter(|c| !have.contains(c)).collect();
    let layout = if root.join("unified").is_dir() { "v1 (hybrid, with a v2 'unified' mount)" } else { "v1 (legacy)" };
    if missing.is_empty() {
        warn(
            "cgroups",
            format!("{layout}, controllers: {}", have.join(" ")),
            "works; cgroup v2 is the target (boot with systemd.unified_cgroup_hierarchy=1) for memory.events, PSI and better OOM reporting",
        )
    } else {
        fail("cgroups", format!("{layout}, missing controllers: {}", missing.join(" ")), "mount the missing v1 controllers or switch to cgroup v2")
    }
}

fn seccomp() -> Check {
    match std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail") {
        Ok(actions) if actions.contains("errno") => pass("seccomp", format!("actions: {}", actions.trim())),
        Ok(actions) => warn("seccomp", format!("actions: {}", actions.trim()), "the RuntimeDefault profile needs SECCOMP_RET_ERRNO"),
        Err(_) => fail("seccomp", "no /proc/sys/kernel/seccomp", "use a kernel with CONFIG_SECCOMP_FILTER; RuntimeDefault profiles cannot be applied"),
    }
}

fn cni_config(config: &Config) -> Check {
    let list = match capstan_cni::load_default_network(&config.cni.conf_dir) {
        Ok(list) => list,
        Err(e) => {
            return warn(
                "cni",
                e.to_string(),
                format!("install a network add-on or a conflist in {} (the node stays NotReady until then)", config.cni.conf_dir.display()),
            );
        }
    };
    let types: Vec<String> =
        list.plugins.iter().filter_map(|p| p.get("type").and_then(|t| t.as_str()).map(String::from)).collect();
    let missing: Vec<String> = types
        .iter()
        .filter(|plugin| !config.cni.bin_dirs.iter().any(|d| d.join(plugin).is_file()))
        .cloned()
        .collect();
    if missing.is_empty() {
        pass("cni", format!("network {:?} ({}), plugins {} found", list.name, list.path.display(), types.join(" ")))
    } else {
        let dirs: Vec<String> = config.cni.bin_dirs.iter().map(|d| d.display().to_string()).collect();
        fail(
            "cni",
            format!("network {:?} needs plugins not found in {}: {}", list.name, dirs.join(", "), missing.join(" ")),
            "apt-get install containernetworking-plugins, or add the plugins' directory to cni.bin_dirs",
        )
    }
}

fn socket(config: &Config) -> Check {
    let socket = &config.socket;
    let dir = socket.parent().unwrap_or(Path::new("/"));
    if socket.exists() {
        return match std::os::unix::net::UnixStream::connect(socket) {
            Ok(_) => warn("socket", format!("{} is served by a running daemon", socket.display()), "fine if that is this node's capstan; a second daemon on it would be refused"),
            Err(_) => pass("socket", format!("{} is stale and will be replaced at start", socket.display())),
        };
    }
    match nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK) {
        Ok(()) => pass("socket", format!("{} can be created", socket.display())),
        Err(_) if !dir.exists() => pass("socket", format!("{} will be created (mode 0700)", dir.display())),
        Err(e) => fail("socket", format!("cannot write {}: {e}", dir.display()), "run capstan as root or choose another --socket"),
    }
}

fn disk_space(root: &Path) -> Check {
    // The root may not exist yet; measure the filesystem it will live on.
    let mut probe = root;
    while !probe.exists() {
        probe = probe.parent().unwrap_or(Path::new("/"));
    }
    match nix::sys::statvfs::statvfs(probe) {
        Ok(s) => {
            let free = s.blocks_available() * s.fragment_size();
            let gib = free as f64 / (1u64 << 30) as f64;
            let detail = format!("{gib:.1} GiB free for {}", root.display());
            if gib < 2.0 {
                fail("disk", detail, "free space: images and writable layers need room (kubelet's image GC starts at 85%)")
            } else if gib < 10.0 {
                warn("disk", detail, "10 GiB or more is recommended for images")
            } else {
                pass("disk", detail)
            }
        }
        Err(e) => fail("disk", format!("statvfs {}: {e}", probe.display()), "check the root directory"),
    }
}

fn other_runtimes() -> Check {
    let sockets = ["/run/containerd/containerd.sock", "/var/run/crio/crio.sock", "/var/run/cri-dockerd.sock"];
    let found: Vec<&str> = sockets.into_iter().filter(|s| Path::new(s).exists()).collect();
    if found.is_empty() {
        pass("other runtimes", "no containerd, CRI-O or cri-dockerd socket")
    } else {
        warn(
            "other runtimes",
            format!("found {}", found.join(", ")),
            "make sure kubelet's --container-runtime-endpoint points at unix:///run/capstan/capstan.sock",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_layout_is_recognised_on_this_host() {
        let c = cgroups(Path::new("/sys/fs/cgroup"));
        assert_ne!(c.outcome, Outcome::Fail, "{c:?}");
        assert!(c.detail.contains("v1") || c.detail.contains("v2"), "{c:?}");
    }

    #[test]
    fn a_missing_cgroup_mount_fails_with_a_fix() {
        let c = cgroups(Path::new("/nonexistent/cgroup"));
        assert_eq!(c.outcome, Outcome::Fail);
        assert!(!c.fix.is_empty());
    }

    #[test]
    fn cni_check_names_missing_plugins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("10.conflist"),
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"type":"no-such-plugin"}]}"#,
        )
        .unwrap();
        let mut config = Config::default();
        config.cni.conf_dir = dir.path().to_path_buf();
        config.cni.bin_dirs = vec![dir.path().join("bin")];
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::fs::write(dir.path().join("bin/bridge"), b"").unwrap();
        let c = cni_config(&config);
        assert_eq!(c.outcome, Outcome::Fail, "{c:?}");
        assert!(c.detail.contains("no-such-plugin") && !c.detail.contains("bridge,"), "{c:?}");
    }

    #[test]
    fn disk_check_measures_an_absent_root() {
        let c = disk_space(Path::new("/nonexistent/capstan/root"));
        assert!(c.detail.contains("GiB free"), "{c:?}");
    }
}
