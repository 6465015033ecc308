//! The container's capabilities: containerd's default set, CRI's add/drop (with `ALL`),
//! ambient additions, and every capability the kernel knows for privileged containers.
//!
//! Bounding, effective and permitted get the same set; inheritable stays empty except for
//! ambient capabilities (CVE-2022-24769: a non-empty inheritable set let file capabilities
//! of an executable in the image raise privileges).

use std::collections::HashSet;
use std::str::FromStr;

use cri_proto::v1;
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

use crate::{Error, Result};

/// Every capability oci-spec knows, with its kernel number (`linux/capability.h`): the
/// number decides whether this kernel supports it (`/proc/sys/kernel/cap_last_cap`).
pub const ALL: [(Capability, u32); 41] = [
    (Capability::Chown, 0),
    (Capability::DacOverride, 1),
    (Capability::DacReadSearch, 2),
    (Capability::Fowner, 3),
    (Capability::Fsetid, 4),
    (Capability::Kill, 5),
    (Capability::Setgid, 6),
    (Capability::Setuid, 7),
    (Capability::Setpcap, 8),
    (Capability::LinuxImmutable, 9),
    (Capability::NetBindService, 10),
    (Capability::NetBroadcast, 11),
    (Capability::NetAdmin, 12),
    (Capability::NetRaw, 13),
    (Capability::IpcLock, 14),
    (Capability::IpcOwner, 15),
    (Capability::SysModule, 16),
    (Capability::SysRawio, 17),
    (Capability::SysChroot, 18),
    (Capability::SysPtrace, 19),
    (Capability::SysPacct, 20),
    (Capability::SysAdmin, 21),
    (Capability::SysBoot, 22),
    (Capability::SysNice, 23),
    (Capability::SysResource, 24),
    (Capability::SysTime, 25),
    (Capability::SysTtyConfig, 26),
    (Capability::Mknod, 27),
    (Capability::Lease, 28),
    (Capability::AuditWrite, 29),
    (Capability::AuditControl, 30),
    (Capability::Setfcap, 31),
    (Capability::MacOverride, 32),
    (Capability::MacAdmin, 33),
    (Capability::Syslog, 34),
    (Capability::WakeAlarm, 35),
    (Capability::BlockSuspend, 36),
    (Capability::AuditRead, 37),
    (Capability::Perfmon, 38),
    (Capability::Bpf, 39),
    (Capability::CheckpointRestore, 40),
];

/// The default set of containerd and Docker (CRI-O's is a subset of it).
pub const DEFAULT: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// The container's capability sets. `cap_last_cap` is the highest number the kernel knows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerCaps {
    /// Bounding = effective = permitted.
    pub granted: HashSet<Capability>,
    /// Ambient (and so also inheritable).
    pub ambient: HashSet<Capability>,
}

impl ContainerCaps {
    pub fn has(&self, cap: Capability) -> bool {
        self.granted.contains(&cap)
    }

    pub fn to_oci(&self) -> LinuxCapabilities {
        let granted: Capabilities = self.granted.clone();
        let ambient: Capabilities = self.ambient.clone();
        let mut caps = LinuxCapabilities::default();
        caps.set_bounding(Some(granted.clone()));
        caps.set_effective(Some(granted.clone()));
        caps.set_permitted(Some(granted));
        caps.set_inheritable(Some(ambient.clone()));
        caps.set_ambient(Some(ambient));
        caps
    }
}

/// Applies privileged / add / drop / ambient to the default set.
///
/// Order as in containerd: `add: [ALL]` starts from everything, `drop: [ALL]` then empties it,
/// then single additions, then single drops. So `drop: [ALL], add: [NET_BIND_SERVICE]` leaves
/// exactly NET_BIND_SERVICE, and `add: [ALL], drop: [CHOWN]` everything but CHOWN.
pub fn container_caps(sc: &v1::LinuxContainerSecurityContext, cap_last_cap: u32) -> Result<ContainerCaps> {
    let supported = || ALL.iter().filter(|(_, n)| *n <= cap_last_cap).map(|(c, _)| *c);
    if sc.privileged {
        return Ok(ContainerCaps { granted: supported().collect(), ambient: HashSet::new() });
    }
    let request = sc.capabilities.clone().unwrap_or_default();
    let is_all = |name: &String| name.eq_ignore_ascii_case("ALL");
    let mut granted: HashSet<Capability> = DEFAULT.into_iter().collect();
    if request.add_capabilities.iter().any(is_all) {
        granted = supported().collect();
    }
    if request.drop_capabilities.iter().any(is_all) {
        granted.clear();
    }
    for name in request.add_capabilities.iter().filter(|n| !is_all(n)) {
        granted.insert(parse_supported(name, cap_last_cap, "add_capabilities")?);
    }
    for name in request.drop_capabilities.iter().filter(|n| !is_all(n)) {
        granted.remove(&parse(name, "drop_capabilities")?);
    }
    let mut ambient = HashSet::new();
    for name in &request.add_ambient_capabilities {
        let cap = parse_supported(name, cap_last_cap, "add_ambient_capabilities")?;
        // An ambient capability must be permitted and inheritable to be raised at all.
        granted.insert(cap);
        ambient.insert(cap);
    }
    Ok(ContainerCaps { granted, ambient })
}

/// `NET_ADMIN`, `CAP_NET_ADMIN`, `net_admin`: all the same.
pub fn parse(name: &str, field: &str) -> Result<Capability> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    Capability::from_str(bare).map_err(|_| Error::InvalidArgument(format!("{field}: unknown capability {name:?}")))
}

fn parse_supported(name: &str, cap_last_cap: u32, field: &str) -> Result<Capability> {
    let cap = parse(name, field)?;
    match number(cap) {
        Some(n) if n <= cap_last_cap => Ok(cap),
        _ => Err(Error::InvalidArgument(format!("{field}: capability {name:?} is not supported by this kernel"))),
    }
}

pub fn number(cap: Capability) -> Option<u32> {
    ALL.iter().find(|(c, _)| *c == cap).map(|(_, n)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const LAST: u32 = 40;

    fn sc(add: &[&str], drop: &[&str]) -> v1::LinuxContainerSecurityContext {
        v1::LinuxContainerSecurityContext {
            capabilities: Some(v1::Capability {
                add_capabilities: add.iter().map(|s| s.to_string()).collect(),
                drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
                add_ambient_capabilities: vec![],
            }),
            ..Default::default()
        }
    }

    #[test]
    fn default_set_is_containerds() {
        let caps = container_caps(&Default::default(), LAST).unwrap();
        assert_eq!(caps.granted.len(), 14);
        assert!(caps.has(Capability::NetBindService) && caps.has(Capability::Chown));
        assert!(!caps.has(Capability::SysAdmin) && !caps.has(Capability::NetAdmin));
        let oci = caps.to_oci();
        assert_eq!(oci.effective().as_ref().unwrap().len(), 14);
        assert!(oci.inheritable().as_ref().unwrap().is_empty());
    }

    #[test]
    fn add_and_drop_single_capabilities_in_any_spelling() {
        let caps = container_caps(&sc(&["NET_ADMIN", "cap_sys_time"], &["CAP_CHOWN", "mknod"]), LAST).unwrap();
        assert!(caps.has(Capability::NetAdmin) && caps.has(Capability::SysTime));
        assert!(!caps.has(Capability::Chown) && !caps.has(Capability::Mknod));
        assert_eq!(caps.granted.len(), 14);
    }

    #[test]
    fn all_works_in_both_directions() {
        let only = container_caps(&sc(&["NET_BIND_SERVICE"], &["ALL"]), LAST).unwrap();
        assert_eq!(only.granted, HashSet::from([Capability::NetBindService]));
        let most = container_caps(&sc(&["all"], &["CHOWN"]), LAST).unwrap();
        assert_eq!(most.granted.len(), 40);
        assert!(!most.has(Capability::Chown));
        let none = container_caps(&sc(&["ALL"], &["ALL"]), LAST).unwrap();
        assert!(none.granted.is_empty());
    }

    #[test]
    fn privileged_gets_what_the_kernel_supports() {
        let privileged = v1::LinuxContainerSecurityContext { privileged: true, ..sc(&[], &["ALL"]) };
        assert_eq!(container_caps(&privileged, LAST).unwrap().granted.len(), 41);
        // A 5.4 kernel stops at CAP_AUDIT_READ (37).
        let old = container_caps(&privileged, 37).unwrap();
        assert_eq!(old.granted.len(), 38);
        assert!(!old.has(Capability::Bpf));
        assert!(matches!(container_caps(&sc(&["BPF"], &[]), 37), Err(Error::InvalidArgument(m)) if m.contains("kernel")));
    }

    #[test]
    fn unknown_names_are_invalid_arguments() {
        assert!(matches!(container_caps(&sc(&["CAP_MAGIC"], &[]), LAST), Err(Error::InvalidArgument(m)) if m.contains("CAP_MAGIC")));
        assert!(container_caps(&sc(&[], &["NOPE"]), LAST).is_err());
    }

    #[test]
    fn ambient_capabilities_are_also_permitted_and_inheritable() {
        let mut ctx = sc(&[], &["ALL"]);
        ctx.capabilities.as_mut().unwrap().add_ambient_capabilities = vec!["NET_BIND_SERVICE".into()];
        let oci = container_caps(&ctx, LAST).unwrap().to_oci();
        for set in [oci.ambient(), oci.inheritable(), oci.permitted(), oci.bounding(), oci.effective()] {
            assert!(set.as_ref().unwrap().contains(&Capability::NetBindService));
        }
    }

    #[test]
    fn kernel_numbers_are_unique_and_dense() {
        let numbers: BTreeSet<u32> = ALL.iter().map(|(_, n)| *n).collect();
        assert_eq!(numbers, (0..41).collect());
    }
}
