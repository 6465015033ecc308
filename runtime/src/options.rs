//! What the runtime needs to know from the daemon's configuration.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How pod and container cgroups are created: directly in cgroupfs, or as systemd scopes
/// (kubelet's `--cgroup-driver` must match).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    #[default]
    Cgroupfs,
    Systemd,
}

/// Where the CNI configuration and plugins are.
#[derive(Debug, Clone)]
pub struct CniOptions {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
}

/// Everything the runtime core is configured with.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Persistent state: images, snapshots, metadata (`/var/lib/capstan`).
    pub root_dir: PathBuf,
    /// Runtime state that must not survive a reboot: sockets, per-pod state (`/run/capstan`).
    pub state_dir: PathBuf,
    pub cgroup_driver: CgroupDriver,
    pub cni: CniOptions,
    pub images: ImageOptions,
    /// Directories of CDI spec files, lowest priority first (`/etc/cdi`, `/var/run/cdi`).
    pub cdi_spec_dirs: Vec<PathBuf>,
    /// Where pods' `log_directory` may be (besides `root_dir`); see [`crate::host_paths`].
    pub log_roots: Vec<PathBuf>,
}

impl RuntimeOptions {
    /// Options rooted in `base` (`base/root`, `base/state`), for unit tests.
    #[cfg(test)]
    pub fn for_tests(base: &std::path::Path) -> RuntimeOptions {
        RuntimeOptions {
            root_dir: base.join("root"),
            state_dir: base.join("state"),
            cgroup_driver: CgroupDriver::Cgroupfs,
            cni: CniOptions { conf_dir: base.join("cni"), bin_dirs: Vec::new() },
            images: ImageOptions {
                sandbox_image: String::new(),
                registry_config_dir: base.join("certs.d"),
                insecure_registries: Vec::new(),
                max_concurrent_downloads: 1,
                stall_timeout: std::time::Duration::from_secs(60),
            },
            cdi_spec_dirs: Vec::new(),
            log_roots: vec!["/var/log/pods".into()],
        }
    }
}

/// Registry access and image store settings.
#[derive(Debug, Clone)]
pub struct ImageOptions {
    /// The pod sandbox image kubelet knows about: reported as pinned, never removed by GC.
    pub sandbox_image: String,
    /// containerd-style `hosts.toml` tree: `<dir>/<host>/hosts.toml`, `<dir>/_default/hosts.toml`.
    pub registry_config_dir: PathBuf,
    /// Hosts (`host` or `host:port`) reached over plain HTTP; loopback always may be.
    pub insecure_registries: Vec<String>,
    /// Layers of one image downloaded at once.
    pub max_concurrent_downloads: usize,
    /// A registry connection that delivers nothing for this long fails the pull (a hung
    /// server, a blob stalled half-way), instead of holding kubelet's PullImage forever.
    pub stall_timeout: std::time::Duration,
}
