//! Which host paths a pod may make the runtime touch.
//!
//! The runtime runs as root and writes wherever a CRI request points it, so requests are
//! held to a few rules:
//! - a pod's `log_directory` lies below one of the configured log roots (kubelet uses
//!   `/var/log/pods`) or below the runtime's own root (agent mode keeps its pods' logs
//!   there), and a container's log file stays inside its pod's directory even through
//!   symlinks that exist on the host;
//! - a bind mount never exposes the runtime's own state: the image store, other pods'
//!   rootfs and records, the monitors' sockets. Agent mode's volume directories under the
//!   root are the one exception (they are pod volumes, made to be mounted).
//!
//! Paths are compared after resolving symlinks of the part that exists, so a symlink in a
//! requested path cannot lead around a rule.

use std::path::{Component, Path, PathBuf};

use crate::options::RuntimeOptions;
use crate::{Error, Result};

/// The rules of one runtime configuration.
#[derive(Debug, Clone)]
pub struct HostPaths {
    log_roots: Vec<PathBuf>,
    protected: Vec<PathBuf>,
    exempt: Vec<PathBuf>,
}

impl HostPaths {
    pub fn new(options: &RuntimeOptions) -> HostPaths {
        let mut log_roots: Vec<PathBuf> = options.log_roots.iter().map(|p| resolve(p)).collect();
        log_roots.push(resolve(&options.root_dir));
        HostPaths {
            log_roots,
            protected: vec![resolve(&options.root_dir), resolve(&options.state_dir)],
            exempt: vec![resolve(&options.root_dir.join("agent").join("pods"))],
        }
    }

    /// A pod's `log_directory` (empty: the pod keeps no logs).
    pub fn check_log_directory(&self, dir: &str) -> Result<()> {
        if dir.is_empty() {
            return Ok(());
        }
        let path = Path::new(dir);
        if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
            return Err(Error::InvalidArgument(format!("log_directory {dir:?} must be an absolute path without '..'")));
        }
        let resolved = resolve(path);
        if self.log_roots.iter().any(|root| resolved.starts_with(root)) {
            return Ok(());
        }
        Err(Error::InvalidArgument(format!(
            "log_directory {dir:?} (resolved: {}) is outside the allowed log roots {}; add its parent to security.log_roots to allow it",
            resolved.display(),
            shown(&self.log_roots)
        )))
    }

    /// A container's log file, already joined to its pod's log directory: whatever exists
    /// of its path on the host must not lead out of that directory.
    pub fn check_container_log(&self, log_directory: &str, file: &Path) -> Result<()> {
        let pod_dir = resolve(Path::new(log_directory));
        let resolved = resolve(file);
        if resolved.starts_with(&pod_dir) && resolved != pod_dir {
            return Ok(());
        }
        Err(Error::InvalidArgument(format!(
            "log_path {} resolves to {}, outside the pod's log directory {}",
            file.display(),
            resolved.display(),
            pod_dir.display()
        )))
    }

    /// The resolved source of a bind mount.
    pub fn check_mount_source(&self, container_path: &str, resolved: &Path) -> Result<()> {
        let inside = |dirs: &[PathBuf]| dirs.iter().any(|d| resolved.starts_with(d));
        if inside(&self.protected) && !inside(&self.exempt) {
            return Err(Error::InvalidArgument(format!(
                "mount at {container_path}: host path {} is inside the runtime's own state ({}); refusing to expose it",
                resolved.display(),
                shown(&self.protected)
            )));
        }
        Ok(())
    }
}

/// `path` with the symlinks of its longest existing ancestor resolved and the rest
/// appended as written (callers refuse `..` first where it matters).
pub fn resolve(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(&existing) {
            return rest.iter().rev().fold(real, |acc: PathBuf, c: &std::ffi::OsString| acc.join(c));
        }
        match (existing.file_name().map(|n| n.to_os_string()), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

fn shown(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(base: &Path) -> HostPaths {
        let mut options = RuntimeOptions::for_tests(base);
        options.log_roots = vec![base.join("logs")];
        HostPaths::new(&options)
    }

    #[test]
    fn log_directories_stay_below_the_roots_even_through_symlinks() {
        let base = tempfile::tempdir().unwrap();
        let b = base.path();
        std::fs::create_dir_all(b.join("logs/pod")).unwrap();
        std::fs::create_dir_all(b.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(b.join("elsewhere"), b.join("logs/sneaky")).unwrap();
        let r = rules(b);
        r.check_log_directory(&b.join("logs/pod").display().to_string()).unwrap();
        r.check_log_directory(&b.join("logs/new/pod").display().to_string()).expect("not yet existing is fine");
        r.check_log_directory(&b.join("root/agent/pods/u/logs").display().to_string()).expect("the runtime's root");
        r.check_log_directory("").unwrap();
        for bad in [b.join("elsewhere/pod"), b.join("logs/sneaky/pod"), b.join("logs/../elsewhere"), PathBuf::from("/etc")] {
            let err = r.check_log_directory(&bad.display().to_string()).unwrap_err().to_string();
            assert!(err.contains("log_directory") && (err.contains("outside") || err.contains("'..'")), "{bad:?}: {err}");
        }
        assert!(r.check_log_directory("relative/dir").is_err());
    }

    #[test]
    fn container_logs_may_not_leave_the_pod_directory() {
        let base = tempfile::tempdir().unwrap();
        let b = base.path();
        std::fs::create_dir_all(b.join("logs/pod")).unwrap();
        std::os::unix::fs::symlink("/etc", b.join("logs/pod/c")).unwrap();
        let r = rules(b);
        let dir = b.join("logs/pod").display().to_string();
        r.check_container_log(&dir, &b.join("logs/pod/app/0.log")).unwrap();
        let err = r.check_container_log(&dir, &b.join("logs/pod/c/0.log")).unwrap_err().to_string();
        assert!(err.contains("/etc/0.log") && err.contains("outside"), "{err}");
    }

    #[test]
    fn mounts_of_the_runtimes_own_state_are_refused() {
        let base = tempfile::tempdir().unwrap();
        let b = base.path();
        let r = rules(b);
        for bad in [b.join("root"), b.join("root/images"), b.join("state/pods/x")] {
            let err = r.check_mount_source("/x", &resolve(&bad)).unwrap_err().to_string();
            assert!(err.contains("runtime's own state"), "{err}");
        }
        for good in [b.join("root/agent/pods/uid/volumes/v"), PathBuf::from("/"), b.join("data")] {
            r.check_mount_source("/x", &resolve(&good)).unwrap();
        }
    }
}
