//! Facts about this host that change what a valid spec looks like. Detected once per
//! process; tests build their own values to exercise both sides of each fact.

use std::path::Path;
use std::sync::OnceLock;

/// What the host supports and what this process may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// A pure cgroup v2 (unified) hierarchy; a v1/v2 hybrid is driven through v1.
    pub cgroup_v2: bool,
    /// The memory controller accounts swap (`memory.memsw.*` on v1, `memory.swap.*` on v2).
    pub swap_accounting: bool,
    /// `mount_setattr(2)` exists, so libcontainer can make a bind mount read-only recursively.
    pub recursive_readonly: bool,
    /// The lowest `oom_score_adj` our containers can get: without CAP_SYS_RESOURCE a process
    /// cannot go below its own value, and containers inherit the monitor's (ours).
    pub oom_score_adj_min: i32,
    /// `/proc/sys/kernel/cap_last_cap`: the newest capability this kernel knows.
    pub cap_last_cap: u32,
}

impl HostFacts {
    /// The facts of this host, detected on first use.
    pub fn get() -> &'static HostFacts {
        static FACTS: OnceLock<HostFacts> = OnceLock::new();
        FACTS.get_or_init(HostFacts::detect)
    }

    pub fn detect() -> HostFacts {
        let cgroup_v2 = match crate::cgroups::version() {
            Ok(version) => version == crate::cgroups::Version::V2,
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell the cgroup version; assuming v1");
                false
            }
        };
        let facts = HostFacts {
            cgroup_v2,
            swap_accounting: swap_accounting(Path::new("/sys/fs/cgroup"), cgroup_v2),
            recursive_readonly: mount_setattr_exists(),
            oom_score_adj_min: oom_score_adj_min(),
            cap_last_cap: cap_last_cap(),
        };
        tracing::debug!(?facts, "host facts for OCI specs");
        facts
    }
}

fn swap_accounting(root: &Path, v2: bool) -> bool {
    if !v2 {
        return root.join("memory/memory.memsw.limit_in_bytes").exists();
    }
    // The root cgroup has no memory.swap.* files; any child with the controller does.
    std::fs::read_dir(root)
        .map(|dir| dir.flatten().any(|e| e.path().join("memory.swap.max").exists()))
        .unwrap_or(false)
}

/// Probes with an invalid fd: a kernel that has the call says EBADF/EINVAL, one without ENOSYS.
fn mount_setattr_exists() -> bool {
    // Safety: no memory is passed (null attr, size 0); the call fails before touching any.
    let rc = unsafe { libc::syscall(libc::SYS_mount_setattr, -1, c"".as_ptr(), 0, std::ptr::null::<u8>(), 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS)
}

fn oom_score_adj_min() -> i32 {
    const CAP_SYS_RESOURCE: u32 = 24;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if cap_eff(&status).is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0) {
        return -1000;
    }
    match std::fs::read_to_string("/proc/self/oom_score_adj").map(|s| s.trim().parse::<i32>()) {
        Ok(Ok(value)) => value,
        _ => {
            tracing::warn!("cannot read /proc/self/oom_score_adj; containers keep oom_score_adj >= 0");
            0
        }
    }
}

/// The `CapEff:` line of `/proc/<pid>/status`.
fn cap_eff(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

fn cap_last_cap() -> u32 {
    match std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").map(|s| s.trim().parse::<u32>()) {
        Ok(Ok(n)) => n,
        _ => {
            tracing::warn!("cannot read /proc/sys/kernel/cap_last_cap; assuming CAP_AUDIT_READ (37) is the last");
            37
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_eff_is_parsed_from_status() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\n";
        let eff = cap_eff(status).unwrap();
        assert_eq!(eff & (1 << 24), 0, "bit 24 (CAP_SYS_RESOURCE) is clear in this sample");
        assert_ne!(eff & (1 << 21), 0);
        assert_eq!(cap_eff("Name:\tx\n"), None);
    }

    #[test]
    fn detection_on_this_host_is_consistent() {
        let facts = HostFacts::detect();
        let own: i32 = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap().trim().parse().unwrap();
        assert!(facts.oom_score_adj_min <= own, "we can always keep our own value");
        assert!(facts.cap_last_cap >= 37 && facts.cap_last_cap <= 63);
        assert!(std::ptr::eq(HostFacts::get(), HostFacts::get()));
    }

    #[test]
    fn swap_accounting_follows_the_files() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!swap_accounting(dir.path(), false));
        std::fs::create_dir_all(dir.path().join("memory")).unwrap();
        std::fs::write(dir.path().join("memory/memory.memsw.limit_in_bytes"), "").unwrap();
        assert!(swap_accounting(dir.path(), false));
        assert!(!swap_accounting(dir.path(), true));
        std::fs::create_dir_all(dir.path().join("system.slice")).unwrap();
        std::fs::write(dir.path().join("system.slice/memory.swap.max"), "max").unwrap();
        assert!(swap_accounting(dir.path(), true));
    }
}
