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
        if crate::mounts::is_mount_point(&rootfs)? {
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
        self.unmount_moved_rootfs(container_dir, container_dir)
    }

    /// [`ImageStore::unmount_rootfs`] for a container directory renamed since the mount
    /// (into the trash, see `container::store::trash_path`): the mount is under `now_at`,
    /// the snapshots are held under the name `container_dir` had at mount time.
    pub fn unmount_moved_rootfs(&self, container_dir: &Path, now_at: &Path) -> Result<()> {
        let store = &self.inner.store;
        crate::mounts::unmount_under(&now_at.join("rootfs"))?;
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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;

    use sha2::{Digest, Sha256};

    use super::super::layer::{self, Source, Wanted};
    use super::super::store::{ImageRecord, LayerRecord};
    use super::*;

    fn sha(data: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(data)))
    }

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn test_store(dir: &Path) -> ImageStore {
        let options = crate::ImageOptions {
            sandbox_image: String::new(),
            registry_config_dir: dir.join("certs.d"),
            insecure_registries: vec![],
            max_concurrent_downloads: 1,
            stall_timeout: std::time::Duration::from_secs(60),
        };
        ImageStore::open(&dir.join("root"), options).unwrap()
    }

    /// An image record naming `layers`, with no tags and an empty user.
    fn record_of(id: &str, layers: Vec<LayerRecord>) -> ImageRecord {
        ImageRecord {
            id: id.to_string(),
            repo_tags: vec![],
            repo_digests: vec![],
            manifest_digest: id.to_string(),
            index_digest: None,
            config_size: 0,
            layers,
            size: 0,
            user: String::new(),
            updated_ns: 0,
        }
    }

    /// Stores a layer as a pull would; returns its record.
    fn add_layer(images: &ImageStore, tar: &[u8]) -> LayerRecord {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(tar).unwrap();
        let gz = gz.finish().unwrap();
        let record = LayerRecord { digest: sha(&gz), diff_id: sha(tar), size: gz.len() as u64, media_type: "tar+gzip".into() };
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.try_send(Ok(bytes::Bytes::from(gz))).unwrap();
        drop(tx);
        let store = Arc::clone(&images.inner.store);
        layer::process(&store, &record, Source::Channel(rx), Wanted { blob: true, snapshot: true }, "test").unwrap();
        record
    }

    /// Unmounts on drop, so a failed assertion leaves no mount behind.
    struct Unmount<'a>(&'a ImageStore, PathBuf);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = self.0.unmount_rootfs(&self.1);
        }
    }

    #[test]
    fn overlay_rootfs_applies_whiteouts_and_keeps_changes_in_upper() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: mounting overlayfs needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let images = test_store(dir.path());
        let bottom = add_layer(&images, &tar_of(&[("etc/a", b"1"), ("etc/b", b"2"), ("dir/x", b"x")]));
        let top = add_layer(&images, &tar_of(&[("etc/.wh.a", b""), ("dir/.wh..wh..opq", b""), ("dir/y", b"y"), ("etc/c", b"3")]));
        let config = br#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1"],"User":"7"},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let id = sha(config);
        images.inner.store.write_blob(&id, config).unwrap();
        let record = ImageRecord { config_size: config.len() as u64, user: "7".into(), ..record_of(&id, vec![bottom.clone(), top.clone()]) };
        images.inner.store.commit(record, Some("x.io/r:1".into()), "x.io/r@sha256:00".into()).unwrap();
        let info = images.lookup("x.io/r:1").unwrap();
        assert_eq!(info.id, id);
        assert_eq!(info.config.config().as_ref().unwrap().env().as_ref().unwrap(), &vec!["A=1".to_string()]);

        let container = dir.path().join("containers/c1");
        let _guard = Unmount(&images, container.clone());
        let rootfs = images.mount_rootfs(&id, &container).unwrap();
        assert_eq!(rootfs, container.join("rootfs"));
        assert!(!rootfs.join("etc/a").exists(), "whiteout hides the lower file");
        assert_eq!(std::fs::read(rootfs.join("etc/b")).unwrap(), b"2");
        assert_eq!(std::fs::read(rootfs.join("etc/c")).unwrap(), b"3");
        let dir_entries: Vec<_> = std::fs::read_dir(rootfs.join("dir")).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(dir_entries, vec![std::ffi::OsString::from("y")], "opaque dir hides lower entries");
        std::fs::write(rootfs.join("new"), b"n").unwrap();
        assert_eq!(std::fs::read(container.join("upper/new")).unwrap(), b"n", "writes land in the upper dir");
        let snapshot_file = images.inner.store.snapshot_dir(&bottom.diff_id).unwrap().join("fs/etc/b");
        std::fs::write(rootfs.join("etc/b"), b"changed").unwrap();
        assert_eq!(std::fs::read(&snapshot_file).unwrap(), b"2", "snapshots stay read-only");
        assert_eq!(images.mount_rootfs(&id, &container).unwrap(), rootfs, "mounting again is idempotent");

        // Removing the image while the rootfs is mounted keeps its snapshots…
        images.remove(&id).unwrap();
        assert!(images.inner.store.has_snapshot(&bottom.diff_id));
        // …until the rootfs is unmounted.
        images.unmount_rootfs(&container).unwrap();
        assert!(!crate::mounts::mounts_under(&container).unwrap().iter().any(|m| m == &rootfs));
        assert!(!images.inner.store.has_snapshot(&bottom.diff_id) && !images.inner.store.has_snapshot(&top.diff_id));
        images.unmount_rootfs(&container).unwrap();
        assert!(matches!(images.mount_rootfs(&id, &container), Err(Error::NotFound { .. })));
    }

    #[test]
    fn a_hundred_and_twenty_layers_fit_one_mount() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: mounting overlayfs needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let images = test_store(dir.path());
        let layers: Vec<LayerRecord> = (0..120)
            .map(|i| add_layer(&images, &tar_of(&[(&format!("layer{i}"), format!("{i}").as_bytes()), ("top", format!("{i}").as_bytes())])))
            .collect();
        let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let id = sha(config);
        images.inner.store.write_blob(&id, config).unwrap();
        images.inner.store.commit(record_of(&id, layers), None, "x.io/many@sha256:00".into()).unwrap();
        let container = dir.path().join("containers/many");
        let _guard = Unmount(&images, container.clone());
        let rootfs = images.mount_rootfs(&id, &container).unwrap();
        assert_eq!(std::fs::read(rootfs.join("top")).unwrap(), b"119", "the last layer is on top");
        assert_eq!(std::fs::read(rootfs.join("layer0")).unwrap(), b"0");
        assert_eq!(std::fs::read_dir(&rootfs).unwrap().count(), 121);
        images.unmount_rootfs(&container).unwrap();
    }
}
