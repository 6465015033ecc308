//! `emptyDir`: a directory that lives as long as the pod.
//!
//! - Default medium (node disk): a plain directory, mode 0777 like kubelet's. `sizeLimit`
//!   is not enforced by the filesystem: as in kubelet, usage is measured ([`usage`],
//!   [`EmptyDir::over_limit`]) and evicting a pod over its limit is the caller's job (the
//!   agent's eviction manager), not this crate's.
//! - `medium: Memory`: a tmpfs (`nosuid,nodev`) mounted on that directory, mode 0777, with `size=` set to
//!   `sizeLimit`, so writing past it fails with `ENOSPC`. Without a limit tmpfs takes its own
//!   default (half the node's memory); kubelet would cap it at the pod's memory limit, which
//!   the caller knows and passes as `size_limit`. Pages in it count against the memory of
//!   the cgroup that touches them.
//! - `medium: HugePages` is not supported.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::mount::MsFlags;

use crate::{Error, Result, mount};

/// Where the volume's data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Medium {
    /// The node's disk under the pod's volumes directory.
    #[default]
    #[serde(rename = "")]
    Disk,
    /// A tmpfs.
    Memory,
    /// Huge-page-backed memory: not supported.
    HugePages,
}

/// An `emptyDir` volume source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmptyDir {
    #[serde(default)]
    pub medium: Medium,
    /// `sizeLimit` in bytes (the caller parses the quantity): the tmpfs size for `Memory`,
    /// the eviction threshold for `Disk`.
    #[serde(default)]
    pub size_limit: Option<u64>,
}

/// kubelet makes emptyDirs world-writable: containers may run as any user.
const MODE: u32 = 0o777;

impl EmptyDir {
    pub fn disk() -> EmptyDir {
        EmptyDir::default()
    }

    pub fn memory(size_limit: Option<u64>) -> EmptyDir {
        EmptyDir { medium: Medium::Memory, size_limit }
    }

    /// Creates the directory (and mounts the tmpfs) at `dir`. Already set up: nothing to do.
    pub fn setup(&self, dir: &Path) -> Result<()> {
        match self.medium {
            Medium::Disk => mount::create_dir(dir, MODE).map(|_| ()),
            Medium::Memory => self.setup_tmpfs(dir),
            Medium::HugePages => Err(Error::Unsupported("emptyDir medium HugePages".into())),
        }
    }

    fn setup_tmpfs(&self, dir: &Path) -> Result<()> {
        if self.size_limit == Some(0) {
            // tmpfs reads size=0 as "no limit": the opposite of what was asked.
            return Err(Error::InvalidArgument("emptyDir sizeLimit 0 with medium Memory".into()));
        }
        if mount::is_mount_point(dir)? {
            return Ok(());
        }
        let created = mount::create_dir(dir, MODE)?;
        let mut data = format!("mode={MODE:o}");
        if let Some(size) = self.size_limit {
            data.push_str(&format!(",size={size}"));
        }
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        if let Err(errno) = nix::mount::mount(Some("tmpfs"), dir, Some("tmpfs"), flags, Some(data.as_str())) {
            if created {
                let _ = mount::remove_mount_dir(dir);
            }
            return Err(Error::Mount { what: format!("tmpfs ({data})"), target: dir.into(), errno });
        }
        Ok(())
    }

    /// Whether the volume at `dir` uses more than its `sizeLimit` (never, without one).
    pub fn over_limit(&self, dir: &Path) -> Result<bool> {
        match self.size_limit {
            Some(limit) => Ok(usage(dir)? > limit),
            None => Ok(false),
        }
    }
}

/// Unmounts the tmpfs if there is one, then deletes the directory and its contents. A
/// missing directory is success; something else still mounted inside it is [`Error::Busy`].
pub fn teardown(dir: &Path) -> Result<()> {
    mount::unmount(dir, false)?;
    if !dir.exists() {
        return Ok(());
    }
    mount::ensure_nothing_below(dir)?;
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("cannot remove", dir)(e)),
    }
}

/// Bytes of storage the files under `dir` take (allocated blocks, as `du` counts them):
/// hard links once, nothing on other filesystems mounted inside.
pub fn usage(dir: &Path) -> Result<u64> {
    let mut seen = HashSet::new();
    let mut total = 0u64;
    for entry in walkdir::WalkDir::new(dir).same_file_system(true) {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(dir).to_path_buf();
            Error::io("cannot walk", path)(e.into())
        })?;
        let meta = entry.metadata().map_err(|e| Error::io("cannot stat", entry.path())(e.into()))?;
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total += meta.blocks() * 512;
    }
    Ok(total)
}
