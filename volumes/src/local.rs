//! `local` PersistentVolume: storage already on the node, at `path`, which must exist.
//!
//! - A directory (often a disk the admin mounted there): bind-mounted into the pod's
//!   volume directory; `readOnly` remounts that bind read-only, so writes fail with `EROFS`
//!   while the node's own mount stays writable.
//! - A block device with `volumeMode: Filesystem`: its filesystem (`fsType`, default ext4)
//!   is mounted there directly, read-only if asked. Unlike kubelet we never format a device:
//!   one without a filesystem is a mount error, not an invitation to run mkfs.
//! - `volumeMode: Block` (handing the raw device to the container) is not supported.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::host_path::FileKind;
use crate::{Error, Result, mount};

/// `volumeMode` of the PersistentVolume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum VolumeMode {
    #[default]
    Filesystem,
    Block,
}

/// A `local` volume source.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Local {
    pub path: PathBuf,
    #[serde(default)]
    pub read_only: bool,
    /// Filesystem of a block-device `path`; ignored for directories.
    #[serde(default)]
    pub fs_type: Option<String>,
    #[serde(default)]
    pub volume_mode: VolumeMode,
}

impl Local {
    pub fn new(path: impl Into<PathBuf>, read_only: bool) -> Local {
        Local { path: path.into(), read_only, fs_type: None, volume_mode: VolumeMode::Filesystem }
    }

    /// Mounts the volume at `target`. Already mounted there: nothing to do. A failure
    /// leaves no mount and removes the directory if it was made here.
    pub fn setup(&self, target: &Path) -> Result<()> {
        if self.volume_mode == VolumeMode::Block {
            return Err(Error::Unsupported(format!("local volume {}: volumeMode Block", self.path.display())));
        }
        if !self.path.is_absolute() {
            return Err(Error::InvalidArgument(format!("local volume path {:?} must be absolute", self.path)));
        }
        let kind = FileKind::of(&self.path)?;
        if !matches!(kind, FileKind::Directory | FileKind::BlockDevice) {
            return match kind {
                FileKind::Missing => Err(Error::NotFound { path: self.path.clone() }),
                other => Err(Error::InvalidArgument(format!(
                    "local volume path {} is {other}; it must be a directory or a block device",
                    self.path.display()
                ))),
            };
        }
        // mountinfo before any stat of the target (see `teardown`).
        if mount::is_mount_point(target)? {
            return Ok(());
        }
        let created = mount::create_dir(target, 0o750)?;
        let result = if kind == FileKind::Directory {
            mount::bind(&self.path, target, self.read_only)
        } else {
            self.mount_device(target)
        };
        if result.is_err() && created {
            let _ = mount::remove_mount_dir(target);
        }
        result
    }

    fn mount_device(&self, target: &Path) -> Result<()> {
        let fs_type = self.fs_type.as_deref().filter(|t| !t.is_empty()).unwrap_or("ext4");
        let what = format!("{} ({fs_type})", self.path.display());
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        let mount = |flags| nix::mount::mount(Some(&self.path), target, Some(fs_type), flags, None::<&str>);
        if !self.read_only {
            return mount(flags).map_err(|errno| Error::Mount { what, target: target.into(), errno });
        }
        match mount(flags | MsFlags::MS_RDONLY) {
            Ok(()) => Ok(()),
            // The filesystem is mounted read-write elsewhere (another pod, the node): the
            // kernel will not make its superblock read-only, so this mount shares it and is
            // made read-only on its own.
            Err(nix::Error::EBUSY) => {
                mount(flags).map_err(|errno| Error::Mount { what: what.clone(), target: target.into(), errno })?;
                let ro = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
                nix::mount::mount(None::<&str>, target, None::<&str>, ro, None::<&str>).map_err(|errno| {
                    let _ = mount::unmount(target, false);
                    Error::Mount { what: format!("{what} (read-only remount)"), target: target.into(), errno }
                })
            }
            Err(errno) => Err(Error::Mount { what, target: target.into(), errno }),
        }
    }
}

/// Unmounts the volume at `target` and removes the (then empty) directory; the data on the
/// node's path is untouched. A missing target is success; a busy mount is an error unless
/// `force` (see [`crate::nfs`] for what forcing does).
pub fn teardown(target: &Path, force: bool) -> Result<()> {
    // mountinfo first, never a stat: stat(2) on the root of a hard NFS mount whose server
    // is dead blocks until the server comes back.
    mount::unmount(target, force)?;
    mount::remove_mount_dir(target)
}
