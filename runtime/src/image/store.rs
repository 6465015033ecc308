//! The image store on disk, and its in-memory index.
//!
//! ```text
//! <root>/images/blobs/sha256/<hex>     content-addressed blobs (index, manifest, config, layers)
//! <root>/images/ingest/                downloads in progress (emptied on start)
//! <root>/images/records/<hex>.json     one record per image, named by its id (config digest)
//! <root>/images/rootfs/<hash>.json     container rootfs mounts: which snapshots they hold
//! <root>/snapshots/<diffid hex>/fs     a layer unpacked once, read-only from then on
//! <root>/snapshots/<diffid hex>/usage.json
//! <root>/snapshots/l/<16 hex>          short symlinks to `../<hex>/fs` for overlay lowerdir
//! ```
//!
//! Every file appears atomically (temp + fsync + rename), and an image record is written only
//! after all its blobs and snapshots are complete, so a crash never shows half an image.
//! Content no image references is removed by [`Store::gc`]; pulls in flight and mounted
//! rootfs hold leases on what they use, so collection never takes content from under them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::reference::{ImageRef, digest_hex, id_prefix, parse_id};
use crate::{Error, Result, atomic};

/// What an image is made of and how it is named. Written as JSON under `records/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The image id: the digest of its config.
    pub id: String,
    /// `name:tag` references pointing at this image.
    pub repo_tags: Vec<String>,
    /// `name@sha256:…` references (the digest the registry serves the image under).
    pub repo_digests: Vec<String>,
    /// The platform manifest's digest.
    pub manifest_digest: String,
    /// The index / manifest list the manifest was chosen from, if any.
    #[serde(default)]
    pub index_digest: Option<String>,
    pub config_size: u64,
    /// Bottom layer first.
    pub layers: Vec<LayerRecord>,
    /// Compressed layers plus config, as containerd reports it.
    pub size: u64,
    /// The config's `User` (kept here so listing needs no config reads).
    #[serde(default)]
    pub user: String,
    /// When the image was last pulled or re-tagged (ns since the epoch): decides which
    /// record keeps a tag if a crash left it on two.
    pub updated_ns: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Digest of the blob as served (compressed).
    pub digest: String,
    /// Digest of the uncompressed tar (the snapshot's name).
    pub diff_id: String,
    pub size: u64,
    pub media_type: String,
}

impl ImageRecord {
    /// Every blob this image needs.
    pub fn blobs(&self) -> impl Iterator<Item = &str> {
        [Some(self.id.as_str()), Some(self.manifest_digest.as_str()), self.index_digest.as_deref()]
            .into_iter()
            .flatten()
            .chain(self.layers.iter().map(|l| l.digest.as_str()))
    }
}

/// Bytes and inodes a snapshot occupies on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Usage) {
        self.bytes += other.bytes;
        self.inodes += other.inodes;
    }
}

/// The kinds of content a lease protects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Content {
    Blob(String),
    Snapshot(String),
}

#[derive(Debug, Default)]
struct State {
    images: BTreeMap<String, ImageRecord>,
    leases: HashMap<Content, usize>,
    /// Snapshot usage by diff id, for ImageFsInfo without walking the store.
    usage: HashMap<String, Usage>,
}

#[derive(Debug)]
pub(crate) struct Store {
    pub root: PathBuf,
    state: Mutex<State>,
}

/// Holds content against garbage collection until dropped.
#[derive(Debug)]
pub(crate) struct Lease {
    store: Arc<Store>,
    content: Vec<Content>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut state = self.store.lock();
        for c in &self.content {
            if let Some(n) = state.leases.get_mut(c) {
                *n -= 1;
                if *n == 0 {
                    state.leases.remove(c);
                }
            }
        }
    }
}

/// A container's rootfs: which snapshots its overlay mount uses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RootfsRecord {
    pub container_dir: PathBuf,
    pub image_id: String,
    pub diff_ids: Vec<String>,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A name no other writer (thread or process) uses at the same time.
pub(crate) fn unique_suffix() -> String {
    format!("{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

pub(crate) fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
}

impl Store {
    /// Opens the store under `root` (the runtime's root dir), removing leftovers of
    /// interrupted pulls and content no image references.
    pub fn open(root: &Path) -> Result<Store> {
        let store = Store { root: root.to_path_buf(), state: Mutex::new(State::default()) };
        for dir in [store.blobs_dir(), store.ingest_dir(), store.records_dir(), store.rootfs_dir(), store.links_dir()] {
            crate::create_private_dir(&dir)?;
        }
        store.clean_leftovers()?;
        let images = store.load_records()?;
        let usage = store.load_usage();
        {
            let mut state = store.lock();
            state.images = images;
            state.usage = usage;
        }
        store.gc()?;
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }
    pub fn blobs_dir(&self) -> PathBuf {
        self.images_dir().join("blobs/sha256")
    }
    pub fn ingest_dir(&self) -> PathBuf {
        self.images_dir().join("ingest")
    }
    fn records_dir(&self) -> PathBuf {
        self.images_dir().join("records")
    }
    fn rootfs_dir(&self) -> PathBuf {
        self.images_dir().join("rootfs")
    }
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }
    pub fn links_dir(&self) -> PathBuf {
        self.snapshots_dir().join("l")
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.blobs_dir().join(digest_hex(digest)?))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.is_file())
    }

    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.blob_path(digest)?;
        std::fs::read(&path).map_err(Error::io("cannot read blob", path))
    }

    /// Stores a small blob whose digest the caller has verified.
    pub fn write_blob(&self, digest: &str, data: &[u8]) -> Result<()> {
        let path = self.blob_path(digest)?;
        if path.is_file() {
            return Ok(());
        }
        atomic::write_file(&path, data).map_err(Error::io("cannot write blob", path))
    }

    /// `<root>/snapshots/<hex>`: the snapshot directory of a layer (by diff id).
    pub fn snapshot_dir(&self, diff_id: &str) -> Result<PathBuf> {
        Ok(self.snapshots_dir().join(digest_hex(diff_id)?))
    }

    pub fn has_snapshot(&self, diff_id: &str) -> bool {
        self.snapshot_dir(diff_id).is_ok_and(|d| d.join("fs").is_dir())
    }

    /// The short link name of a snapshot, relative to the snapshots dir.
    pub fn snapshot_link(diff_id: &str) -> Result<String> {
        Ok(format!("l/{}", &digest_hex(diff_id)?[..16]))
    }

    /// Records a snapshot's usage after it was committed.
    pub fn snapshot_committed(&self, diff_id: &str, usage: Usage) {
        self.lock().usage.insert(diff_id.to_string(), usage);
    }

    /// Protects `content` from collection while the lease lives.
    pub fn lease(self: &Arc<Self>, content: Vec<Content>) -> Lease {
        let mut state = self.lock();
        for c in &content {
            *state.leases.entry(c.clone()).or_default() += 1;
        }
        drop(state);
        Lease { store: Arc::clone(self), content }
    }

    /// Adds an image (or merges it into the record with the same id), naming it `tag`
    /// (moved from whichever image had it) and `repo_digest`.
    pub fn commit(&self, mut record: ImageRecord, tag: Option<String>, repo_digest: String) -> Result<ImageRecord> {
        let mut state = self.lock();
        record.updated_ns = now_ns();
        if let Some(old) = state.images.get(&record.id) {
            record.repo_tags = old.repo_tags.clone();
            record.repo_digests = old.repo_digests.clone();
        }
        if let Some(tag) = &tag
            && !record.repo_tags.contains(tag)
        {
            record.repo_tags.push(tag.clone());
        }
        if !record.repo_digests.contains(&repo_digest) {
            record.repo_digests.push(repo_digest);
        }
        // The new record first: a crash before the old one is rewritten leaves the tag on
        // both, and the newer record wins on load.
        self.write_record(&record)?;
        state.images.insert(record.id.clone(), record.clone());
        if let Some(tag) = tag {
            let losers: Vec<String> = state
                .images
                .values()
                .filter(|r| r.id != record.id && r.repo_tags.contains(&tag))
                .map(|r| r.id.clone())
                .collect();
            for id in losers {
                if let Some(other) = state.images.get_mut(&id) {
                    other.repo_tags.retain(|t| t != &tag);
                    other.updated_ns = now_ns();
                    let other = other.clone();
                    self.write_record(&other)?;
                }
            }
        }
        Ok(record)
    }

    fn write_record(&self, record: &ImageRecord) -> Result<()> {
        let path = self.records_dir().join(format!("{}.json", digest_hex(&record.id)?));
        atomic::write_json(&path, record).map_err(Error::io("cannot write image record", path))
    }

    pub fn list(&self) -> Vec<ImageRecord> {
        self.lock().images.values().cloned().collect()
    }

    pub fn get(&self, id: &str) -> Option<ImageRecord> {
        self.lock().images.get(id).cloned()
    }

    /// Finds an image by tag (`busybox`, `docker.io/library/busybox:1`), repo digest
    /// (`name@sha256:…`), full id (`sha256:…` or bare hex) or a unique id prefix.
    pub fn find(&self, reference: &str) -> Option<ImageRecord> {
        let state = self.lock();
        if let Some(id) = parse_id(reference) {
            return state.images.get(&id).cloned();
        }
        if let Ok(r) = ImageRef::parse(reference) {
            let found = match (&r.digest, r.tagged()) {
                (Some(d), _) => {
                    let wanted = r.with_digest(d);
                    state.images.values().find(|i| i.repo_digests.contains(&wanted))
                }
                (None, Some(tag)) => state.images.values().find(|i| i.repo_tags.contains(&tag)),
                (None, None) => None,
            };
            if let Some(found) = found {
                return Some(found.clone());
            }
        }
        let prefix = id_prefix(reference)?;
        let mut matches = state.images.values().filter(|i| i.id["sha256:".len()..].starts_with(prefix));
        match (matches.next(), matches.next()) {
            (Some(only), None) => Some(only.clone()),
            _ => None,
        }
    }

    /// Drops an image's record; returns it, or `None` when there was none.
    pub fn remove(&self, id: &str) -> Result<Option<ImageRecord>> {
        let mut state = self.lock();
        let Some(record) = state.images.remove(id) else { return Ok(None) };
        let path = self.records_dir().join(format!("{}.json", digest_hex(id)?));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                state.images.insert(id.to_string(), record);
                return Err(Error::Io { context: "cannot remove image record", path, source: e });
            }
        }
        Ok(Some(record))
    }

    /// Records that a container's rootfs uses `diff_ids`, before it is mounted.
    pub fn hold_rootfs(&self, record: &RootfsRecord) -> Result<()> {
        let path = self.rootfs_record_path(&record.container_dir);
        atomic::replace_json(&path, record).map_err(Error::io("cannot write rootfs record", path))
    }

    pub fn rootfs_record(&self, container_dir: &Path) -> Option<RootfsRecord> {
        atomic::read_json(&self.rootfs_record_path(container_dir)).ok()
    }

    pub fn release_rootfs(&self, container_dir: &Path) -> Result<()> {
        let path = self.rootfs_record_path(container_dir);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io { context: "cannot remove rootfs record", path, source: e }),
        }
    }

    fn rootfs_record_path(&self, container_dir: &Path) -> PathBuf {
        use sha2::Digest;
        let hash = hex::encode(sha2::Sha256::digest(container_dir.as_os_str().as_encoded_bytes()));
        self.rootfs_dir().join(format!("{}.json", &hash[..32]))
    }

    /// Snapshots held by container rootfs whose directory still exists, where it was
    /// mounted or in the trash of removed containers (still mounted until their cleanup).
    fn rootfs_holds(&self) -> BTreeSet<String> {
        let mut held = BTreeSet::new();
        let exists = |dir: &Path| dir.is_dir() || crate::container::store::trash_path(dir).is_some_and(|t| t.is_dir());
        for entry in std::fs::read_dir(self.rootfs_dir()).into_iter().flatten().flatten() {
            let path = entry.path();
            match atomic::read_json::<RootfsRecord>(&path) {
                Ok(r) if exists(&r.container_dir) => held.extend(r.diff_ids),
                // The container's directory is gone: nothing can use the mount any more.
                Ok(_) => {
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "unreadable rootfs record ignored"),
            }
        }
        held
    }

    /// Removes blobs and snapshots that no image, pull in flight or rootfs uses.
    pub fn gc(&self) -> Result<()> {
        let mut trash = Vec::new();
        {
            let mut state = self.lock();
            let mut blobs: BTreeSet<String> = BTreeSet::new();
            let mut snapshots: BTreeSet<String> = self.rootfs_holds();
            for image in state.images.values() {
                blobs.extend(image.blobs().map(str::to_string));
                snapshots.extend(image.layers.iter().map(|l| l.diff_id.clone()));
            }
            for c in state.leases.keys() {
                match c {
                    Content::Blob(d) => blobs.insert(d.clone()),
                    Content::Snapshot(d) => snapshots.insert(d.clone()),
                };
            }
            for entry in std::fs::read_dir(self.blobs_dir()).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !blobs.contains(&format!("sha256:{name}")) {
                    tracing::debug!(blob = %name, "removing unreferenced blob");
                    let _ = std::fs::remove_file(entry.path());
                }
            }
            for entry in std::fs::read_dir(self.snapshots_dir()).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let diff_id = format!("sha256:{name}");
                if name.starts_with('.') || name == "l" || snapshots.contains(&diff_id) || parse_id(&name).is_none() {
                    continue;
                }
                // Renamed away under the lock, deleted outside it: a pull that looks for the
                // snapshot afterwards sees it missing and unpacks it again.
                let to = self.snapshots_dir().join(format!(".trash-{name}-{}", unique_suffix()));
                if std::fs::rename(entry.path(), &to).is_ok() {
                    tracing::debug!(snapshot = %name, "removing unreferenced snapshot");
                    if let Ok(link) = Self::snapshot_link(&diff_id) {
                        let _ = std::fs::remove_file(self.snapshots_dir().join(link));
                    }
                    state.usage.remove(&diff_id);
                    trash.push(to);
                }
            }
        }
        for dir in trash {
            remove_tree(&dir)?;
        }
        Ok(())
    }

    /// Bytes and inodes used by blobs, records and snapshots.
    pub fn usage(&self) -> Usage {
        use std::os::unix::fs::MetadataExt;
        let mut total = Usage::default();
        for dir in [self.blobs_dir(), self.records_dir()] {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if let Ok(meta) = entry.metadata() {
                    total += Usage { bytes: meta.blocks() * 512, inodes: 1 };
                }
            }
        }
        for usage in self.lock().usage.values() {
            total += *usage;
        }
        total
    }

    fn clean_leftovers(&self) -> Result<()> {
        for entry in std::fs::read_dir(self.ingest_dir()).into_iter().flatten().flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        for entry in std::fs::read_dir(self.snapshots_dir()).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with('.') {
                remove_tree(&entry.path())?;
            }
        }
        // Links whose snapshot is gone.
        for entry in std::fs::read_dir(self.links_dir()).into_iter().flatten().flatten() {
            if !entry.path().exists() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    fn load_records(&self) -> Result<BTreeMap<String, ImageRecord>> {
        let mut images = BTreeMap::new();
        let dir = self.records_dir();
        for entry in std::fs::read_dir(&dir).map_err(Error::io("cannot read", &dir))?.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                // Temp files of an interrupted write.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            match atomic::read_json::<ImageRecord>(&path) {
                Ok(record) if self.complete(&record) => {
                    images.insert(record.id.clone(), record);
                }
                Ok(record) => {
                    tracing::warn!(image = %record.id, "image content missing on disk; dropping its record (pull it again)");
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "unreadable image record ignored"),
            }
        }
        // A tag on two records (crash between the two writes of a tag move): newest wins.
        let mut owner: HashMap<String, (i64, String)> = HashMap::new();
        for r in images.values() {
            for t in &r.repo_tags {
                let e = owner.entry(t.clone()).or_insert((r.updated_ns, r.id.clone()));
                if r.updated_ns > e.0 {
                    *e = (r.updated_ns, r.id.clone());
                }
            }
        }
        for r in images.values_mut() {
            let before = r.repo_tags.len();
            r.repo_tags.retain(|t| owner.get(t).is_some_and(|(_, id)| id == &r.id));
            if r.repo_tags.len() != before {
                self.write_record(r)?;
            }
        }
        Ok(images)
    }

    fn complete(&self, r: &ImageRecord) -> bool {
        self.has_blob(&r.id) && r.layers.iter().all(|l| self.has_snapshot(&l.diff_id))
    }

    fn load_usage(&self) -> HashMap<String, Usage> {
        let mut usage = HashMap::new();
        for entry in std::fs::read_dir(self.snapshots_dir()).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if parse_id(&name).is_none() {
                continue;
            }
            if let Ok(u) = atomic::read_json::<Usage>(&entry.path().join("usage.json")) {
                usage.insert(format!("sha256:{name}"), u);
            }
        }
        usage
    }
}

/// Removes a directory tree that may hold read-only directories and device nodes.
pub(crate) fn remove_tree(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io { context: "cannot remove", path: dir.to_path_buf(), source: e }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> String {
        format!("sha256:{}", hex::encode([n; 32]))
    }

    fn record(id: u8, layers: &[u8]) -> ImageRecord {
        ImageRecord {
            id: digest(id),
            repo_tags: vec![],
            repo_digests: vec![],
            manifest_digest: digest(id + 100),
            index_digest: None,
            config_size: 2,
            layers: layers
                .iter()
                .map(|l| LayerRecord { digest: digest(*l), diff_id: digest(l + 50), size: 1, media_type: "x".into() })
                .collect(),
            size: 3,
            user: String::new(),
            updated_ns: 0,
        }
    }

    /// Puts the blobs and (empty) snapshots of `r` on disk, as a pull would.
    fn materialise(store: &Store, r: &ImageRecord) {
        for b in r.blobs() {
            store.write_blob(b, b"x").unwrap();
        }
        for l in &r.layers {
            std::fs::create_dir_all(store.snapshot_dir(&l.diff_id).unwrap().join("fs")).unwrap();
        }
    }

    #[test]
    fn tags_move_and_lookups_resolve_every_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = (record(1, &[10]), record(2, &[10, 11]));
        materialise(&store, &a);
        materialise(&store, &b);
        let tag = "docker.io/library/busybox:latest".to_string();
        store.commit(a.clone(), Some(tag.clone()), format!("docker.io/library/busybox@{}", a.manifest_digest)).unwrap();
        assert_eq!(store.find("busybox").unwrap().id, a.id);
        assert_eq!(store.find(&a.id).unwrap().id, a.id);
        assert_eq!(store.find(&a.id[7..19]).unwrap().id, a.id);
        assert_eq!(store.find(&format!("busybox@{}", a.manifest_digest)).unwrap().id, a.id);
        store.commit(b.clone(), Some(tag.clone()), format!("docker.io/library/busybox@{}", b.manifest_digest)).unwrap();
        assert_eq!(store.find("busybox:latest").unwrap().id, b.id);
        assert!(store.get(&a.id).unwrap().repo_tags.is_empty());
        // Reloading keeps the same view.
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.find("busybox").unwrap().id, b.id);
        assert_eq!(store.list().len(), 2);
    }

    #[test]
    fn newest_record_keeps_a_tag_left_on_two() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (mut a, mut b) = (record(1, &[10]), record(2, &[11]));
        materialise(&store, &a);
        materialise(&store, &b);
        a.repo_tags = vec!["x.io/a:1".into()];
        a.updated_ns = 5;
        b.repo_tags = vec!["x.io/a:1".into()];
        b.updated_ns = 9;
        store.write_record(&a).unwrap();
        store.write_record(&b).unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.find("x.io/a:1").unwrap().id, b.id);
        assert!(store.get(&a.id).unwrap().repo_tags.is_empty());
    }

    #[test]
    fn gc_keeps_shared_leased_and_held_content() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let (a, b) = (record(1, &[10, 12]), record(2, &[10, 11]));
        materialise(&store, &a);
        materialise(&store, &b);
        store.commit(a.clone(), None, "x.io/a@sha256:aa".into()).unwrap();
        store.commit(b.clone(), None, "x.io/b@sha256:bb".into()).unwrap();
        // Content of a pull in flight.
        let orphan = record(3, &[13]);
        materialise(&store, &orphan);
        let lease = store.lease(vec![Content::Blob(orphan.id.clone()), Content::Snapshot(orphan.layers[0].diff_id.clone())]);
        store.remove(&a.id).unwrap();
        store.gc().unwrap();
        assert!(!store.has_blob(&a.id) && !store.has_blob(&a.layers[1].digest));
        assert!(!store.has_snapshot(&a.layers[1].diff_id));
        assert!(store.has_blob(&b.layers[0].digest) && store.has_snapshot(&b.layers[0].diff_id), "shared layer kept");
        assert!(store.has_blob(&orphan.id) && store.has_snapshot(&orphan.layers[0].diff_id), "leased content kept");
        drop(lease);
        // A rootfs holds b's snapshots even after b is removed, until its directory goes.
        let container = dir.path().join("c1");
        std::fs::create_dir(&container).unwrap();
        let held = RootfsRecord { container_dir: container.clone(), image_id: b.id.clone(), diff_ids: vec![b.layers[1].diff_id.clone()] };
        store.hold_rootfs(&held).unwrap();
        store.remove(&b.id).unwrap();
        store.gc().unwrap();
        assert!(!store.has_blob(&orphan.id));
        assert!(store.has_snapshot(&b.layers[1].diff_id));
        assert!(!store.has_snapshot(&b.layers[0].diff_id));
        // Moved to the trash by RemoveContainer, it is still mounted: still held.
        let trashed = crate::container::store::trash_path(&container).unwrap();
        std::fs::create_dir_all(trashed.parent().unwrap()).unwrap();
        std::fs::rename(&container, &trashed).unwrap();
        store.gc().unwrap();
        assert!(store.has_snapshot(&b.layers[1].diff_id), "a rootfs in the trash still holds");
        std::fs::remove_dir(&trashed).unwrap();
        store.gc().unwrap();
        assert!(!store.has_snapshot(&b.layers[1].diff_id));
        assert!(store.remove(&b.id).unwrap().is_none(), "removing twice is fine");
    }

    #[test]
    fn incomplete_records_and_leftovers_are_dropped_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = record(1, &[10]);
        store.write_record(&a).unwrap();
        std::fs::create_dir_all(store.snapshots_dir().join(".tmp-x/fs/etc")).unwrap();
        std::fs::write(store.ingest_dir().join("partial"), b"x").unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert!(store.list().is_empty());
        assert!(!store.snapshots_dir().join(".tmp-x").exists());
        assert_eq!(std::fs::read_dir(store.ingest_dir()).unwrap().count(), 0);
    }
}
