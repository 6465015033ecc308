//! A container's root filesystem: an overlayfs of the image's read-only snapshots with a
//! writable upper layer in the container's own directory.
//!
//! ```text
//! <container_dir>/rootfs   the overlay mount (what the OCI spec's root.path names)
//! <container_dir>/upper    the container's changes
//! <container_dir>/work     overlayfs scratch space
//! ```
//!
//! The mount options must fit in one page (4096 bytes). Snapshot paths are long, so the
//! lower dirs are given as short relative links (`l/<16 hex>`) and the mount is made from a
//! helper thread whose working directory is the snapshots dir (`unshare(CLONE_FS)` gives
//! that thread its own cwd, leaving the daemon's untouched). That fits ~200 layers; more
//! than the page allows is refused with a clear error.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use super::ImageStore;
use super::store::{RootfsRecord, Store};
use crate::{Error, Result};

/// What the kernel accepts as mount data: one page, including the terminating NUL.
const MOUNT_DATA_MAX: usize = 4095;
/// The lower dir of images without layers.
const EMPTY_LOWER: &str = "empty";

impl ImageStore {
    /// Mounts the root filesystem of a container of image `image` (an id or any reference
    /// [`ImageStore::lookup`] accepts) under the absolute `container_dir`, and returns the
    /// mount point, `<container_dir>/rootfs`.
    ///
    /// The image's snapshots are held (persistently, across daemon restarts) until
    /// [`ImageStore::unmount_rootfs`], so removing the image meanwhile does not take them
    /// away. Calling it again for a mounted rootfs returns the same path.
    ///
    /// ```no_run
    /// # fn f(runtime: &capstan_runtime::Runtime) -> capstan_runtime::Result<()> {
    /// let dir = std::path::Path::new("/var/lib/capstan/containers/abc");
    /// let image = runtime.images().lookup("busybox:latest")?;
    /// let rootfs = runtime.images().mount_rootfs(&image.id, dir)?;
    /// assert_eq!(rootfs, dir.join("rootfs"));
    /// runtime.images().unmount_rootfs(dir)?;
    /// # Ok(()) }
    /// ```
    pub fn mount_rootfs(&self, image: &str, container_dir: &Path) -> Result<PathBuf> {
        if !container_dir.is_absolute() {
            return Err(Error::InvalidArgument(format!("container dir {} is not absolute", container_dir.display())));
        }
        let text = container_dir.to_string_lossy();
        if text.contains(',') || text.contains(':') {
            return Err(Error::InvalidArgument(format!(
                "container dir {text} contains ',' or ':', which overlayfs options cannot carry"
            )));
        }
        let store = &self.inner.store;
        let record = store.find(image).ok_or_else(|| Error::NotFound { kind: "image", id: image.to_string() })?;
        let rootfs = container_dir.join("rootfs");
        if is_mount_point(&rootfs)? {
            return Ok(rootfs);
        }
        let (upper, work) = (container_dir.join("upper"), container_dir.join("work"));
        for dir in [&rootfs, &upper, &work] {
            std::fs::create_dir_all(dir).map_err(Error::io("cannot create", dir))?;
        }
        let hold = RootfsRecord {
            container_dir: container_dir.to_path_buf(),
            image_id: record.id.clone(),
            diff_ids: record.layers.iter().map(|l| l.diff_id.clone()).collect(),
        };
        store.hold_rootfs(&hold)?;
        let mounted = (|| {
            let lowers = lower_dirs(store, &record.layers.iter().map(|l| l.diff_id.as_str()).collect::<Vec<_>>())?;
            let data = format!("lowerdir={},upperdir={},workdir={}", lowers.join(":"), upper.display(), work.display());
            if data.len() > MOUNT_DATA_MAX {
                return Err(Error::InvalidArgument(format!(
                    "image {} has {} layers: too many for one overlay mount",
                    record.id,
                    record.layers.len()
                )));
            }
            mount_overlay(&store.snapshots_dir(), &data, &rootfs)
        })();
        if let Err(e) = mounted {
            let _ = store.release_rootfs(container_dir);
            return Err(e);
        }
        tracing::debug!(image = %record.id, rootfs = %rootfs.display(), layers = record.layers.len(), "rootfs mounted");
        Ok(rootfs)
    }

    /// Unmounts `<container_dir>/rootfs` (if mounted) and releases the image's snapshots.
    /// The upper and work dirs stay: they go with the container's directory. Unmounting an
    /// unmounted rootfs is not an error.
    pub fn unmount_rootfs(&self, container_dir: &Path) -> Result<()> {
        let store = &self.inner.store;
        crate::mounts::unmount_under(&container_dir.join("rootfs"))?;
        let held = store.rootfs_record(container_dir);
        store.release_rootfs(container_dir)?;
        // The image went while this container used it: its content can go now.
        if let Some(held) = held
            && store.get(&held.image_id).is_none()
        {
            store.gc()?;
        }
        Ok(())
    }
}

/// Lower dirs relative to the snapshots dir, top layer first.
fn lower_dirs(store: &Store, diff_ids: &[&str]) -> Result<Vec<String>> {
    if diff_ids.is_empty() {
        let empty = store.snapshots_dir().join(EMPTY_LOWER);
        std::fs::create_dir_all(&empty).map_err(Error::io("cannot create", &empty))?;
        return Ok(vec![EMPTY_LOWER.to_string()]);
    }
    let mut lowers = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids.iter().rev() {
        if !store.has_snapshot(diff_id) {
            return Err(Error::FailedPrecondition(format!(
                "layer {diff_id} of the image is missing from the store; remove the image and pull it again"
            )));
        }
        let hex = super::reference::digest_hex(diff_id)?;
        let link = Store::snapshot_link(diff_id)?;
        let full = format!("{hex}/fs");
        // A link taken by another snapshot (a 64-bit prefix collision): use the long path.
        let ours = std::fs::read_link(store.snapshots_dir().join(&link)).is_ok_and(|t| t == Path::new("..").join(&full));
        lowers.push(if ours { link } else { full });
    }
    Ok(lowers)
}

fn mount_overlay(snapshots_dir: &Path, data: &str, target: &Path) -> Result<()> {
    let result = std::thread::scope(|s| {
        s.spawn(|| -> nix::Result<()> {
            // This thread alone gets its own cwd, so relative lower dirs resolve from here.
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)?;
            nix::unistd::chdir(snapshots_dir)?;
            nix::mount::mount(Some("overlay"), target, Some("overlay"), MsFlags::empty(), Some(data))
        })
        .join()
    });
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::Io { context: "cannot mount overlay rootfs at", path: target.to_path_buf(), source: e.into() }),
        Err(_) => Err(Error::Internal("overlay mount thread panicked".into())),
    }
}

fn is_mount_point(path: &Path) -> Result<bool> {
    Ok(crate::mounts::mounts_under(path)?.iter().any(|m| m == path))
}
