//! Capstan's runtime core. The CRI handlers in the agent are thin; the work is done here.

pub mod atomic;
pub mod cgroups;
pub mod container;
pub mod crashpoint;
pub mod error;
pub mod events;
pub mod host_paths;
pub mod id;
pub mod image;
pub mod monitor;
pub mod mounts;
pub mod options;
pub mod pod_cidr;
pub mod sandbox;
pub mod spec;
pub mod stats;
pub mod streaming;

use std::path::Path;

pub use error::{Error, Result};
pub use options::{CgroupDriver, CniOptions, ImageOptions, RuntimeOptions};

/// The runtime: owns the on-disk state under the root and state dirs.
#[derive(Debug)]
pub struct Runtime {
    options: RuntimeOptions,
    pub(crate) sandboxes: sandbox::SandboxStore,
    pub(crate) containers: container::ContainerStore,
    images: image::ImageStore,
    pub(crate) stats: stats::StatsCache,
    pub(crate) events: events::Events,
    /// Which host paths pods may log to and mount, resolved once (canonicalising the roots
    /// on every call was a visible part of RunPodSandbox and CreateContainer).
    pub(crate) host_paths: host_paths::HostPaths,
    /// RemoveContainer's cleanups still running, by pod (see `container/trash.rs`).
    pub(crate) removals: container::PendingRemovals,
}

impl Runtime {
    /// Opens (creating if needed) the runtime's directories.
    pub fn open(options: RuntimeOptions) -> Result<Self> {
        for dir in [&options.root_dir, &options.state_dir] {
            create_private_dir(dir)?;
        }
        // Pods and containers survive daemon restarts: reload their records.
        let sandboxes = sandbox::SandboxStore::open(&options.root_dir)?;
        let containers = container::ContainerStore::open(&options.root_dir)?;
        sandbox::report_monitors(&sandboxes);
        let images = image::ImageStore::open(&options.root_dir, options.images.clone())?;
        let events = events::Events::new(&containers, &sandboxes);
        let host_paths = host_paths::HostPaths::new(&options);
        let removals = container::PendingRemovals::default();
        Ok(Runtime { options, sandboxes, containers, images, stats: stats::StatsCache::default(), events, host_paths, removals })
    }

    pub fn options(&self) -> &RuntimeOptions {
        &self.options
    }

    /// The image store: pulls, lookups, rootfs mounts (see [`image::ImageStore`]).
    pub fn images(&self) -> &image::ImageStore {
        &self.images
    }

    /// Whether pods can be given a network: `Err` carries the reason kubelet shows while
    /// the node is NotReady (typically no CNI config has been installed yet).
    pub fn network_ready(&self) -> std::result::Result<String, String> {
        capstan_cni::load_default_network(&self.options.cni.conf_dir)
            .map(|list| list.name)
            .map_err(|e| e.to_string())
    }

    /// Whether the runtime can run containers: its directories must be usable.
    pub fn runtime_ready(&self) -> std::result::Result<(), String> {
        for dir in [&self.options.root_dir, &self.options.state_dir] {
            if !dir.is_dir() {
                return Err(format!("{} is missing", dir.display()));
            }
        }
        Ok(())
    }
}

/// Creates `dir` and its parents with mode 0700: runtime state is root's business only.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(Error::io("cannot create directory", dir))
}
