//! The container's mounts: the standard kernel filesystems, the pod's shared files
//! (`/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`, `/dev/shm`), and CRI's `mounts`
//! with propagation and (recursive) read-only. Also the masked and read-only paths.
//!
//! A CRI mount wins over a pod file with the same destination: kubelet manages
//! `/etc/hosts` itself for most pods and hands it over as a mount. SELinux relabelling is
//! ignored (no SELinux here).

use std::path::{Component, Path, PathBuf};

use capstan_volumes::Propagation;
use cri_proto::v1;
use oci_spec::runtime::Mount;

use crate::{Error, Result};

/// containerd's defaults: kernel interfaces that leak host information or reach hardware.
pub const DEFAULT_MASKED: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// containerd's defaults: /proc files that would change the host.
pub const DEFAULT_READONLY: [&str; 5] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Size of a container's own `/dev` and (without a pod one) `/dev/shm`.
const TMPFS_SIZE: &str = "size=65536k";

/// Files the pod shares with its containers, bind-mounted into each; `None` leaves the
/// image's file (or, for `shm`, gives the container a tmpfs of its own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxFiles {
    pub hosts: Option<PathBuf>,
    pub resolv_conf: Option<PathBuf>,
    pub hostname: Option<PathBuf>,
    pub shm: Option<PathBuf>,
}

/// How the mounts are to be made.
#[derive(Debug, Clone, Copy, Default)]
pub struct MountOptions {
    pub privileged: bool,
    pub readonly_rootfs: bool,
    /// `mount_setattr(2)` exists: `recursive_read_only` becomes libcontainer's `rro`.
    pub recursive_readonly: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerMounts {
    pub mounts: Vec<Mount>,
    /// `rshared`/`rslave` when a CRI mount needs events to flow; else the runtime's default.
    pub rootfs_propagation: Option<String>,
}

pub fn container_mounts(config: &v1::ContainerConfig, files: &SandboxFiles, opts: MountOptions) -> Result<ContainerMounts> {
    let cri = cri_mounts(&config.mounts, opts, &mut MountInfo::default())?;
    let taken = |dest: &str| cri.iter().any(|m| clean(m.destination()) == Path::new(dest));
    let mut mounts = standard_mounts(opts.privileged);
    let pod_files = [("/etc/hostname", &files.hostname), ("/etc/hosts", &files.hosts), ("/etc/resolv.conf", &files.resolv_conf)];
    for (dest, source) in pod_files {
        if let (Some(source), false) = (source, taken(dest)) {
            let rw = if opts.readonly_rootfs { "ro" } else { "rw" };
            mounts.push(mount(dest, "bind", source, &["rbind", "rprivate", rw]));
        }
    }
    if !taken("/dev/shm") {
        mounts.push(match &files.shm {
            Some(shm) => mount("/dev/shm", "bind", shm, &["rbind", "rprivate", "nosuid", "nodev", "noexec"]),
            None => mount("/dev/shm", "tmpfs", Path::new("shm"), &["nosuid", "noexec", "nodev", "mode=1777", TMPFS_SIZE]),
        });
    }
    let propagations: Vec<Propagation> = config.mounts.iter().filter_map(|m| propagation(m.propagation).ok()).collect();
    let rootfs_propagation = if propagations.contains(&Propagation::Bidirectional) {
        Some("rshared".to_string())
    } else if propagations.contains(&Propagation::HostToContainer) {
        Some("rslave".to_string())
    } else {
        None
    };
    mounts.extend(cri);
    Ok(ContainerMounts { mounts, rootfs_propagation })
}

fn standard_mounts(privileged: bool) -> Vec<Mount> {
    let sys_mode = if privileged { "rw" } else { "ro" };
    vec![
        mount("/proc", "proc", Path::new("proc"), &["nosuid", "noexec", "nodev"]),
        mount("/dev", "tmpfs", Path::new("tmpfs"), &["nosuid", "strictatime", "mode=755", TMPFS_SIZE]),
        mount("/dev/pts", "devpts", Path::new("devpts"), &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
        mount("/dev/mqueue", "mqueue", Path::new("mqueue"), &["nosuid", "noexec", "nodev"]),
        mount("/sys", "sysfs", Path::new("sysfs"), &["nosuid", "noexec", "nodev", sys_mode]),
        mount("/sys/fs/cgroup", "cgroup", Path::new("cgroup"), &["nosuid", "noexec", "nodev", "relatime", sys_mode]),
    ]
}

/// CRI mounts as bind mounts, parents before children.
fn cri_mounts(requested: &[v1::Mount], opts: MountOptions, info: &mut MountInfo) -> Result<Vec<Mount>> {
    let mut out = Vec::with_capacity(requested.len());
    for m in requested {
        out.push(cri_mount(m, opts, info)?);
    }
    // A stable sort keeps the request order among mounts of equal depth.
    out.sort_by_key(|m| clean(m.destination()).components().count());
    Ok(out)
}

fn cri_mount(m: &v1::Mount, opts: MountOptions, info: &mut MountInfo) -> Result<Mount> {
    let dest = Path::new(&m.container_path);
    if !dest.is_absolute() {
        return Err(Error::InvalidArgument(format!("mount container_path {:?} must be absolute", m.container_path)));
    }
    if m.image.as_ref().is_some_and(|i| !i.image.is_empty()) {
        return Err(Error::InvalidArgument(format!("mount at {}: image volumes are not supported", dest.display())));
    }
    if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "mount at {}: id-mapped mounts need user namespaces, which are not supported",
            dest.display()
        )));
    }
    let host = Path::new(&m.host_path);
    if !host.is_absolute() {
        return Err(Error::InvalidArgument(format!("mount host_path {:?} must be absolute", m.host_path)));
    }
    let resolved = std::fs::canonicalize(host)
        .map_err(|e| Error::InvalidArgument(format!("mount host_path {}: {e}", host.display())))?;
    let propagation = propagation(m.propagation)?;
    if propagation != Propagation::Private {
        info.check(&resolved, propagation)?;
    }
    let mut options = vec!["rbind", propagation.oci_option()];
    if m.recursive_read_only {
        if !m.readonly || propagation != Propagation::Private {
            return Err(Error::InvalidArgument(format!(
                "mount at {}: recursive_read_only needs readonly and private propagation",
                dest.display()
            )));
        }
        if opts.recursive_readonly {
            options.push("rro");
        } else {
            tracing::warn!(path = %dest.display(), "no mount_setattr(2) on this kernel: recursive read-only mount made plain read-only");
        }
    }
    options.push(if m.readonly { "ro" } else { "rw" });
    Ok(mount(&m.container_path, "bind", &resolved, &options))
}

fn propagation(value: i32) -> Result<Propagation> {
    match v1::MountPropagation::try_from(value) {
        Ok(v1::MountPropagation::PropagationPrivate) => Ok(Propagation::Private),
        Ok(v1::MountPropagation::PropagationHostToContainer) => Ok(Propagation::HostToContainer),
        Ok(v1::MountPropagation::PropagationBidirectional) => Ok(Propagation::Bidirectional),
        Err(_) => Err(Error::InvalidArgument(format!("mount propagation {value} is not a known value"))),
    }
}

pub(super) fn mount(dest: &str, typ: &str, source: &Path, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(dest));
    m.set_typ(Some(typ.to_string()));
    m.set_source(Some(source.to_path_buf()));
    m.set_options(Some(options.iter().map(|o| o.to_string()).collect()));
    m
}

/// `/a/./b/` → `/a/b` (no `..` resolution: a destination climbing out is refused by the
/// runtime, not reinterpreted here).
fn clean(p: &Path) -> PathBuf {
    p.components().filter(|c| !matches!(c, Component::CurDir)).collect()
}

/// Paths masked in `/proc` and `/sys`: CRI's list when kubelet sends one, else the
/// defaults; privileged containers see everything.
pub fn masked_paths(sc: &v1::LinuxContainerSecurityContext) -> Vec<String> {
    paths_or_default(sc.privileged, &sc.masked_paths, &DEFAULT_MASKED)
}

pub fn readonly_paths(sc: &v1::LinuxContainerSecurityContext) -> Vec<String> {
    paths_or_default(sc.privileged, &sc.readonly_paths, &DEFAULT_READONLY)
}

fn paths_or_default(privileged: bool, asked: &[String], default: &[&str]) -> Vec<String> {
    if privileged {
        Vec::new()
    } else if asked.is_empty() {
        default.iter().map(|s| s.to_string()).collect()
    } else {
        asked.to_vec()
    }
}

/// `/proc/self/mountinfo`, read on first need: propagation other than private must be
/// possible from the host side, or the kernel silently gives a private mount.
#[derive(Debug, Default)]
struct MountInfo {
    text: Option<String>,
}

impl MountInfo {
    fn check(&mut self, path: &Path, wanted: Propagation) -> Result<()> {
        if self.text.is_none() {
            let file = "/proc/self/mountinfo";
            self.text = Some(std::fs::read_to_string(file).map_err(Error::io("cannot read", file))?);
        }
        check_propagation(self.text.as_deref().unwrap_or_default(), path, wanted)
    }
}

/// The mount holding `path` must be shared for rshared, shared or a slave for rslave.
fn check_propagation(mountinfo: &str, path: &Path, wanted: Propagation) -> Result<()> {
    let holder = mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let point = PathBuf::from(unescape(fields.get(4)?));
            let optional = fields.iter().skip(6).take_while(|f| **f != "-");
            let shared = optional.clone().any(|f| f.starts_with("shared:"));
            let slave = optional.clone().any(|f| f.starts_with("master:"));
            path.starts_with(&point).then_some((point, shared, slave))
        })
        // The longest mount point wins; of equal ones (stacked mounts) the last, the top.
        .fold(None::<(PathBuf, bool, bool)>, |best, cur| match best {
            Some(b) if b.0.components().count() > cur.0.components().count() => Some(b),
            _ => Some(cur),
        });
    let Some((point, shared, slave)) = holder else {
        return Err(Error::Internal(format!("no mount holds {} in mountinfo", path.display())));
    };
    let ok = match wanted {
        Propagation::Private => true,
        Propagation::HostToContainer => shared || slave,
        Propagation::Bidirectional => shared,
    };
    if ok {
        return Ok(());
    }
    let need = if wanted == Propagation::Bidirectional { "shared" } else { "shared or slave" };
    Err(Error::InvalidArgument(format!(
        "mount {} asks for {} propagation but {} is not a {need} mount (mount --make-rshared {})",
        path.display(),
        wanted.oci_option(),
        point.display(),
        point.display()
    )))
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let mut out = Vec::with_capacity(field.len());
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cri(container: &str, host: &str) -> v1::Mount {
        v1::Mount { container_path: container.into(), host_path: host.into(), ..Default::default() }
    }

    fn options(m: &Mount) -> Vec<String> {
        m.options().clone().unwrap_or_default()
    }

    fn find<'a>(mounts: &'a [Mount], dest: &str) -> Vec<&'a Mount> {
        mounts.iter().filter(|m| m.destination() == Path::new(dest)).collect()
    }

    fn files() -> SandboxFiles {
        SandboxFiles {
            hosts: Some("/run/pod/hosts".into()),
            resolv_conf: Some("/run/pod/resolv.conf".into()),
            hostname: Some("/run/pod/hostname".into()),
            shm: Some("/run/pod/shm".into()),
        }
    }

    #[test]
    fn standard_and_pod_mounts_are_present_in_order() {
        let out = container_mounts(&v1::ContainerConfig::default(), &files(), MountOptions::default()).unwrap();
        let dests: Vec<_> = out.mounts.iter().map(|m| m.destination().to_string_lossy().into_owned()).collect();
        assert_eq!(
            dests,
            ["/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys", "/sys/fs/cgroup", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/dev/shm"]
        );
        assert!(options(find(&out.mounts, "/sys")[0]).contains(&"ro".to_string()));
        let shm = find(&out.mounts, "/dev/shm")[0];
        assert_eq!(shm.source().as_deref(), Some(Path::new("/run/pod/shm")));
        assert!(options(find(&out.mounts, "/etc/hosts")[0]).contains(&"rw".to_string()));
        assert_eq!(out.rootfs_propagation, None);
    }

    #[test]
    fn privileged_and_readonly_rootfs_change_modes() {
        let opts = MountOptions { privileged: true, readonly_rootfs: true, recursive_readonly: true };
        let out = container_mounts(&v1::ContainerConfig::default(), &SandboxFiles::default(), opts).unwrap();
        assert!(options(find(&out.mounts, "/sys")[0]).contains(&"rw".to_string()));
        assert!(options(find(&out.mounts, "/sys/fs/cgroup")[0]).contains(&"rw".to_string()));
        // No pod shm: a tmpfs of its own. No pod files: the image's stay.
        assert_eq!(find(&out.mounts, "/dev/shm")[0].typ().as_deref(), Some("tmpfs"));
        assert!(find(&out.mounts, "/etc/hosts").is_empty());
        let out = container_mounts(&v1::ContainerConfig::default(), &files(), opts).unwrap();
        assert!(options(find(&out.mounts, "/etc/resolv.conf")[0]).contains(&"ro".to_string()));
    }

    #[test]
    fn cri_mounts_replace_pod_files_and_sort_parents_first() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().to_str().unwrap();
        let config = v1::ContainerConfig {
            mounts: vec![cri("/data/sub", host), cri("/etc/hosts", "/etc/hosts"), cri("/data", host), cri("/dev/shm", host)],
            ..Default::default()
        };
        let out = container_mounts(&config, &files(), MountOptions::default()).unwrap();
        let hosts = find(&out.mounts, "/etc/hosts");
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].source().as_deref(), Some(Path::new("/etc/hosts")));
        assert_eq!(find(&out.mounts, "/dev/shm").len(), 1);
        let data = out.mounts.iter().position(|m| m.destination() == Path::new("/data")).unwrap();
        let sub = out.mounts.iter().position(|m| m.destination() == Path::new("/data/sub")).unwrap();
        assert!(data < sub);
        assert_eq!(options(&out.mounts[data]), ["rbind", "rprivate", "rw"]);
    }

    #[test]
    fn readonly_and_recursive_readonly() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().to_str().unwrap();
        let ro = v1::Mount { readonly: true, ..cri("/ro", host) };
        let rro = v1::Mount { readonly: true, recursive_read_only: true, ..cri("/rro", host) };
        let config = v1::ContainerConfig { mounts: vec![ro, rro.clone()], ..Default::default() };
        let with = MountOptions { recursive_readonly: true, ..Default::default() };
        let out = container_mounts(&config, &SandboxFiles::default(), with).unwrap();
        assert_eq!(options(find(&out.mounts, "/ro")[0]), ["rbind", "rprivate", "ro"]);
        assert_eq!(options(find(&out.mounts, "/rro")[0]), ["rbind", "rprivate", "rro", "ro"]);
        let out = container_mounts(&config, &SandboxFiles::default(), MountOptions::default()).unwrap();
        assert_eq!(options(find(&out.mounts, "/rro")[0]), ["rbind", "rprivate", "ro"]);
        let rw_rro = v1::Mount { readonly: false, ..rro };
        let config = v1::ContainerConfig { mounts: vec![rw_rro], ..Default::default() };
        assert!(matches!(container_mounts(&config, &SandboxFiles::default(), with), Err(Error::InvalidArgument(m)) if m.contains("recursive_read_only")));
    }

    #[test]
    fn bad_cri_mounts_are_invalid_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().to_str().unwrap();
        let image = v1::Mount { image: Some(v1::ImageSpec { image: "busybox".into(), ..Default::default() }), ..cri("/img", "") };
        let idmap = v1::Mount { uid_mappings: vec![v1::IdMapping { host_id: 1, container_id: 0, length: 1 }], ..cri("/x", host) };
        let bad_prop = v1::Mount { propagation: 9, ..cri("/x", host) };
        for (m, word) in [
            (cri("relative", host), "absolute"),
            (cri("/x", "relative"), "absolute"),
            (cri("/x", "/does/not/exist"), "/does/not/exist"),
            (image, "image volumes"),
            (idmap, "user namespaces"),
            (bad_prop, "propagation"),
        ] {
            let config = v1::ContainerConfig { mounts: vec![m], ..Default::default() };
            match container_mounts(&config, &SandboxFiles::default(), MountOptions::default()) {
                Err(Error::InvalidArgument(msg)) => assert!(msg.contains(word), "{msg}"),
                other => panic!("expected InvalidArgument with {word:?}, got {other:?}"),
            }
        }
    }

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:25 / /mnt/private rw,relatime - tmpfs tmpfs rw
31 22 0:26 / /mnt/slave rw,relatime master:7 - tmpfs tmpfs rw
32 22 0:27 / /mnt/with\\040space rw shared:9 master:3 - tmpfs tmpfs rw";

    #[test]
    fn propagation_needs_a_matching_host_mount() {
        let check = |p: &str, w| check_propagation(MOUNTINFO, Path::new(p), w);
        assert!(check("/var/lib/x", Propagation::Bidirectional).is_ok());
        assert!(check("/mnt/slave/x", Propagation::HostToContainer).is_ok());
        assert!(matches!(check("/mnt/slave/x", Propagation::Bidirectional), Err(Error::InvalidArgument(m)) if m.contains("/mnt/slave")));
        assert!(check("/mnt/private/x", Propagation::HostToContainer).is_err());
        assert!(check("/mnt/private", Propagation::Private).is_ok());
        assert!(check("/mnt/with space/d", Propagation::Bidirectional).is_ok());
    }

    #[test]
    fn propagation_sets_rootfs_propagation() {
        // `/` is shared on a systemd host; a tempdir under it can be rslave'd.
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().to_str().unwrap();
        let slave = v1::Mount { propagation: v1::MountPropagation::PropagationHostToContainer as i32, ..cri("/s", host) };
        let config = v1::ContainerConfig { mounts: vec![slave], ..Default::default() };
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let expect_ok = check_propagation(&mountinfo, &std::fs::canonicalize(dir.path()).unwrap(), Propagation::HostToContainer).is_ok();
        match container_mounts(&config, &SandboxFiles::default(), MountOptions::default()) {
            Ok(out) => {
                assert!(expect_ok);
                assert_eq!(out.rootfs_propagation.as_deref(), Some("rslave"));
                assert!(options(find(&out.mounts, "/s")[0]).contains(&"rslave".to_string()));
            }
            Err(Error::InvalidArgument(_)) => assert!(!expect_ok),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn masked_and_readonly_paths() {
        let mut sc = v1::LinuxContainerSecurityContext::default();
        assert_eq!(masked_paths(&sc).len(), DEFAULT_MASKED.len());
        assert!(readonly_paths(&sc).contains(&"/proc/sys".to_string()));
        sc.masked_paths = vec!["/proc/kcore".into()];
        assert_eq!(masked_paths(&sc), ["/proc/kcore"]);
        sc.privileged = true;
        assert!(masked_paths(&sc).is_empty() && readonly_paths(&sc).is_empty());
    }
}
