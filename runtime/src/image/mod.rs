//! The image service: pulls from registries (mirrors, auth, digest verification), a
//! content-addressed store, layers unpacked once into snapshots, container rootfs as
//! overlayfs over them, and garbage collection of what no image uses.
//!
//! One file per concern: `reference.rs` (names), `hosts.rs` (mirrors), `pull.rs` (registry
//! I/O), `layer.rs` + `unpack.rs` (bytes to snapshot), `store.rs` (disk layout, records,
//! GC), `rootfs.rs` (overlay mounts), `flight.rs` (shared concurrent pulls).
//!
//! For container creation: [`ImageStore::lookup`] resolves any reference to an image id
//! and its OCI config; [`ImageStore::mount_rootfs`] / [`ImageStore::unmount_rootfs`].

mod clients;
mod flight;
pub mod hosts;
mod layer;
mod pull;
pub mod reference;
mod rootfs;
mod store;
pub mod unpack;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use cri_proto::v1;
use oci_spec::image::ImageConfiguration;
use sha2::{Digest, Sha256};

pub use pull::Credentials;
pub use reference::ImageRef;
pub use store::{ImageRecord, LayerRecord};
/// Also measures a container's writable layer (`crate::stats`).
pub(crate) use unpack::disk_usage;

use crate::{Error, ImageOptions, Result};

/// An image as container creation needs it.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// The image id: `sha256:<hex>` of its config.
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// The reference to report as the container's `image_ref`: the first repo digest
    /// (`name@sha256:…`), else the id.
    pub reference: String,
    /// The OCI image configuration (Env, Entrypoint, Cmd, WorkingDir, User, StopSignal…).
    pub config: ImageConfiguration,
}

/// The image store and puller. Cheap to clone; all clones share one store.
#[derive(Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore").field("root", &self.inner.store.root).finish()
    }
}

pub(crate) struct Inner {
    store: Arc<store::Store>,
    options: ImageOptions,
    /// The sandbox image, normalised: reported as pinned.
    pinned: Option<ImageRef>,
    pulls: flight::SingleFlight<String>,
    layers: Arc<flight::SingleFlight<()>>,
    clients: clients::Clients,
}

impl ImageStore {
    /// Opens the store under `root_dir` (`<root>/images`, `<root>/snapshots`), reloading
    /// the images recorded there and removing what interrupted pulls left behind.
    pub fn open(root_dir: &Path, options: ImageOptions) -> Result<ImageStore> {
        let store = Arc::new(store::Store::open(root_dir)?);
        let pinned = match ImageRef::parse(&options.sandbox_image) {
            Ok(r) => Some(r),
            Err(e) => {
                if !options.sandbox_image.is_empty() {
                    tracing::warn!(sandbox_image = %options.sandbox_image, error = %e, "sandbox image is not a valid reference; nothing is pinned");
                }
                None
            }
        };
        tracing::info!(images = store.list().len(), root = %root_dir.display(), "image store loaded");
        Ok(ImageStore {
            inner: Arc::new(Inner {
                store,
                options,
                pinned,
                pulls: flight::SingleFlight::new(),
                layers: Arc::new(flight::SingleFlight::new()),
                clients: clients::Clients::default(),
            }),
        })
    }

    /// Finds an image by tag (`busybox`, `docker.io/library/busybox:1.36`), repo digest
    /// (`name@sha256:…`, `name:tag@sha256:…`), id (`sha256:<hex>`, `<hex>`) or unique id
    /// prefix, and reads its OCI config. `NotFound` when the store has no such image.
    pub fn lookup(&self, reference: &str) -> Result<ImageInfo> {
        let record = self.find(reference)?;
        let bytes = self.inner.store.read_blob(&record.id)?;
        let config: ImageConfiguration = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Internal(format!("stored config of image {} is unreadable: {e}", record.id)))?;
        Ok(ImageInfo {
            reference: record.repo_digests.first().cloned().unwrap_or_else(|| record.id.clone()),
            id: record.id,
            repo_tags: record.repo_tags,
            repo_digests: record.repo_digests,
            config,
        })
    }

    fn find(&self, reference: &str) -> Result<ImageRecord> {
        let reference = reference.trim();
        if reference.is_empty() {
            return Err(Error::InvalidArgument("image reference is empty".into()));
        }
        self.inner.store.find(reference).ok_or_else(|| Error::NotFound { kind: "image", id: reference.to_string() })
    }

    /// ListImages: every image, or only the one `filter` names (an unknown filter gives an
    /// empty list).
    pub fn list(&self, filter: Option<&str>) -> Vec<v1::Image> {
        let records = match filter.map(str::trim).filter(|f| !f.is_empty()) {
            Some(f) => self.inner.store.find(f).into_iter().collect(),
            None => self.inner.store.list(),
        };
        records.iter().map(|r| self.to_cri(r)).collect()
    }

    /// ImageStatus: the image, or `None` when absent (not an error in CRI). With
    /// `verbose`, `info["info"]` is JSON with the manifest, layers, chain id and config.
    pub fn status(&self, reference: &str, verbose: bool) -> Result<Option<(v1::Image, HashMap<String, String>)>> {
        let record = match self.find(reference) {
            Ok(r) => r,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut info = HashMap::new();
        if verbose {
            let config: serde_json::Value = serde_json::from_slice(&self.inner.store.read_blob(&record.id)?)
                .map_err(|e| Error::Internal(format!("stored config of image {} is unreadable: {e}", record.id)))?;
            let snapshots: Vec<String> = record
                .layers
                .iter()
                .filter_map(|l| self.inner.store.snapshot_dir(&l.diff_id).ok())
                .map(|d| d.join("fs").display().to_string())
                .collect();
            let details = serde_json::json!({
                "id": record.id,
                "manifestDigest": record.manifest_digest,
                "indexDigest": record.index_digest,
                "chainID": chain_id(record.layers.iter().map(|l| l.diff_id.as_str())),
                "layers": record.layers,
                "snapshots": snapshots,
                "size": record.size,
                "imageSpec": config,
            });
            info.insert("info".to_string(), details.to_string());
        }
        Ok(Some((self.to_cri(&record), info)))
    }

    /// RemoveImage: drops the image with every tag and digest naming it, then the blobs
    /// and snapshots nothing else uses. An absent image is not an error.
    pub fn remove(&self, reference: &str) -> Result<()> {
        let record = match self.find(reference) {
            Ok(r) => r,
            Err(Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        if self.inner.store.remove(&record.id)?.is_some() {
            tracing::info!(image = %record.id, tags = ?record.repo_tags, "image removed");
        }
        self.inner.store.gc()
    }

    /// ImageFsInfo: bytes and inodes the store occupies on disk.
    pub fn fs_info(&self) -> v1::ImageFsInfoResponse {
        let usage = self.inner.store.usage();
        let timestamp = store::now_ns();
        v1::ImageFsInfoResponse {
            image_filesystems: vec![v1::FilesystemUsage {
                timestamp,
                fs_id: Some(v1::FilesystemIdentifier { mountpoint: self.inner.store.root.display().to_string() }),
                used_bytes: Some(v1::UInt64Value { value: usage.bytes }),
                inodes_used: Some(v1::UInt64Value { value: usage.inodes }),
            }],
            container_filesystems: vec![],
        }
    }

    fn pinned(&self, record: &ImageRecord) -> bool {
        let Some(p) = &self.inner.pinned else { return false };
        match (&p.digest, p.tagged()) {
            (Some(d), _) => record.repo_digests.contains(&p.with_digest(d)),
            (None, Some(tag)) => record.repo_tags.contains(&tag),
            (None, None) => false,
        }
    }

    fn to_cri(&self, record: &ImageRecord) -> v1::Image {
        let (uid, username) = user_of(&record.user);
        v1::Image {
            id: record.id.clone(),
            repo_tags: record.repo_tags.clone(),
            repo_digests: record.repo_digests.clone(),
            size: record.size,
            uid: uid.map(|value| v1::Int64Value { value }),
            username,
            spec: Some(v1::ImageSpec { image: record.id.clone(), ..Default::default() }),
            pinned: self.pinned(record),
        }
    }
}

/// The config's `User` as kubelet wants it: a numeric user is a uid, a name a username
/// (`user:group` forms report the user part).
fn user_of(user: &str) -> (Option<i64>, String) {
    let user = user.split(':').next().unwrap_or_default().trim();
    if user.is_empty() {
        return (None, String::new());
    }
    match user.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) => (None, user.to_string()),
    }
}

/// The OCI chain id of a layer stack.
fn chain_id<'a>(diff_ids: impl Iterator<Item = &'a str>) -> String {
    let mut chain: Option<String> = None;
    for d in diff_ids {
        chain = Some(match chain {
            None => d.to_string(),
            Some(c) => format!("sha256:{}", hex::encode(Sha256::digest(format!("{c} {d}")))),
        });
    }
    chain.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_become_uid_or_username() {
        assert_eq!(user_of(""), (None, String::new()));
        assert_eq!(user_of("1000"), (Some(1000), String::new()));
        assert_eq!(user_of("1000:1000"), (Some(1000), String::new()));
        assert_eq!(user_of("app"), (None, "app".into()));
        assert_eq!(user_of("app:staff"), (None, "app".into()));
    }

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        assert_eq!(chain_id([a.as_str()].into_iter()), a);
        let expected = format!("sha256:{}", hex::encode(Sha256::digest(format!("{a} {b}"))));
        assert_eq!(chain_id([a.as_str(), b.as_str()].into_iter()), expected);
    }
}
