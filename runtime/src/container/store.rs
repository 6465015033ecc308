//! Container records: `<root>/containers/<id>/container.json` (written by the daemon, fixed
//! after create) beside `status.json` (written by the pod's monitor: phase, pid, times, exit
//! code, reason), cached in memory with the (pod, name, attempt) index.
//!
//! A removed container's directory is renamed to `<root>/containers/.trash/<id>`, record
//! and all, which takes it out of sight at once; `trash.rs` finishes the removal from there.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cri_proto::monitor::{ContainerPhase, ContainerRecord as Runtime};
use cri_proto::v1;
use serde::{Deserialize, Serialize};

use crate::sandbox::store::lock;
use crate::{Error, Result};

const RECORD_FILE: &str = "container.json";
const STATUS_FILE: &str = "status.json";
/// Where removed containers' directories wait for their cleanup, beside the live ones.
pub const TRASH_DIR: &str = ".trash";

/// What the daemon decided when it created the container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub pod_id: String,
    pub config: v1::ContainerConfig,
    /// The image as the client named it, and as resolved (id = config digest).
    pub image: String,
    pub image_ref: String,
    pub image_id: String,
    pub created_at: i64,
    /// Absolute CRI log file, if the pod has a log directory and the container a log path.
    pub log_path: Option<PathBuf>,
    /// `<root>/containers/<id>`: bundle, rootfs mount, status.
    pub dir: PathBuf,
    /// The container's cgroup (cgroupfs path).
    pub cgroup: PathBuf,
    /// Signal StopContainer sends first (the image's `StopSignal`, default SIGTERM).
    pub stop_signal: i32,
}

impl ContainerRecord {
    pub fn metadata(&self) -> v1::ContainerMetadata {
        self.config.metadata.clone().unwrap_or_default()
    }
    pub fn status_path(&self) -> PathBuf {
        self.dir.join(STATUS_FILE)
    }
    pub fn bundle(&self) -> PathBuf {
        self.dir.join("bundle")
    }
    /// What the monitor last recorded; `None` before the monitor created it.
    pub fn runtime_status(&self) -> Option<Runtime> {
        crate::atomic::read_json(&self.status_path()).ok()
    }
}

/// The uniqueness key: a name and attempt within a pod.
pub fn name_key(pod_id: &str, meta: &v1::ContainerMetadata) -> String {
    format!("{pod_id}_{}_{}", meta.name, meta.attempt)
}

#[derive(Debug)]
pub struct Container {
    pub record: ContainerRecord,
    /// Orders lifecycle calls on this container.
    pub lock: tokio::sync::Mutex<()>,
    /// The user it runs as, kept once read from its file (written at create, then fixed).
    pub(super) user: std::sync::OnceLock<cri_proto::v1::ContainerUser>,
}

#[derive(Debug)]
pub struct ContainerStore {
    dir: PathBuf,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    names: Mutex<HashMap<String, String>>,
}

impl ContainerStore {
    pub fn open(root: &Path) -> Result<ContainerStore> {
        let dir = root.join("containers");
        crate::create_private_dir(&dir.join(TRASH_DIR))?;
        let store = ContainerStore { dir: dir.clone(), containers: Mutex::default(), names: Mutex::default() };
        let entries = std::fs::read_dir(&dir).map_err(Error::io("cannot read", &dir))?;
        for entry in entries.flatten() {
            if entry.file_name() == TRASH_DIR {
                continue;
            }
            let path = entry.path().join(RECORD_FILE);
            match crate::atomic::read_json::<ContainerRecord>(&path) {
                Ok(record) => {
                    lock(&store.names).insert(name_key(&record.pod_id, &record.metadata()), record.id.clone());
                    let c = Arc::new(Container { record, lock: tokio::sync::Mutex::new(()), user: std::sync::OnceLock::new() });
                    lock(&store.containers).insert(c.record.id.clone(), c);
                }
                Err(e) => tracing::error!(path = %path.display(), error = %e, "skipping unreadable container record"),
            }
        }
        Ok(store)
    }

    pub fn dir_of(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    pub fn reserve(&self, pod_id: &str, meta: &v1::ContainerMetadata, id: &str) -> Result<()> {
        let key = name_key(pod_id, meta);
        let mut names = lock(&self.names);
        if let Some(holder) = names.get(&key) {
            return Err(Error::AlreadyExists(format!(
                "container name {:?} (attempt {}) is already used by container {holder} in pod {pod_id}",
                meta.name, meta.attempt
            )));
        }
        names.insert(key, id.to_string());
        Ok(())
    }

    pub fn release(&self, pod_id: &str, meta: &v1::ContainerMetadata, id: &str) {
        let key = name_key(pod_id, meta);
        let mut names = lock(&self.names);
        if names.get(&key).is_some_and(|holder| holder == id) {
            names.remove(&key);
        }
    }

    /// Persists the record and makes the container visible.
    pub fn insert(&self, record: ContainerRecord) -> Result<Arc<Container>> {
        let path = record.dir.join(RECORD_FILE);
        crate::atomic::replace_json(&path, &record).map_err(Error::io("cannot write container record", &path))?;
        let c = Arc::new(Container { record, lock: tokio::sync::Mutex::new(()), user: std::sync::OnceLock::new() });
        lock(&self.containers).insert(c.record.id.clone(), c.clone());
        Ok(c)
    }

    /// Takes a container out of sight in one step: its directory (record, bundle, mounted
    /// rootfs and all) is renamed into the trash, and it leaves the index and frees its name.
    /// `None` when it was gone already (a concurrent removal won). Nothing is unmounted or
    /// deleted here; `trash.rs` does that.
    pub fn trash(&self, c: &Arc<Container>) -> Result<Option<Trashed>> {
        let record = &c.record;
        let dir = trash_path(&record.dir)
            .ok_or_else(|| Error::Internal(format!("container dir {} has no parent", record.dir.display())))?;
        {
            // Held across the rename: a reader sees the container with its directory or not at all.
            let mut containers = lock(&self.containers);
            if !containers.get(&record.id).is_some_and(|held| Arc::ptr_eq(held, c)) {
                return Ok(None);
            }
            move_dir(&record.dir, &dir)?;
            containers.remove(&record.id);
        }
        self.release(&record.pod_id, &record.metadata(), &record.id);
        Ok(Some(Trashed { record: record.clone(), dir }))
    }

    /// Everything in the trash: removals a crash (or a failed cleanup) left unfinished.
    /// Entries whose record cannot be read come back with `record: None`.
    pub fn trashed(&self) -> Vec<(PathBuf, Option<ContainerRecord>)> {
        let trash = self.dir.join(TRASH_DIR);
        let Ok(entries) = std::fs::read_dir(&trash) else { return Vec::new() };
        entries
            .flatten()
            .map(|e| {
                let dir = e.path();
                let record = crate::atomic::read_json::<ContainerRecord>(&dir.join(RECORD_FILE)).ok();
                (dir, record)
            })
            .collect()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Container>> {
        lock(&self.containers).get(id).cloned()
    }

    /// By full id or unique prefix.
    pub fn find(&self, id: &str) -> Result<Arc<Container>> {
        if id.is_empty() {
            return Err(Error::InvalidArgument("container id is empty".into()));
        }
        if let Some(c) = self.get(id) {
            return Ok(c);
        }
        let all = lock(&self.containers);
        let mut matches = all.values().filter(|c| c.record.id.starts_with(id));
        match (matches.next(), matches.next()) {
            (Some(c), None) => Ok(c.clone()),
            (Some(_), Some(_)) => Err(Error::InvalidArgument(format!("container id prefix {id:?} is ambiguous"))),
            _ => Err(Error::NotFound { kind: "container", id: id.to_string() }),
        }
    }

    pub fn all(&self) -> Vec<Arc<Container>> {
        lock(&self.containers).values().cloned().collect()
    }

    pub fn of_pod(&self, pod_id: &str) -> Vec<Arc<Container>> {
        lock(&self.containers).values().filter(|c| c.record.pod_id == pod_id).cloned().collect()
    }
}

/// Whether the monitor has created it: CreateContainer only records it (phase `Created`,
/// no pid); StartContainer has the monitor create and start it.
pub fn launched(status: Option<&Runtime>) -> bool {
    status.is_some_and(|s| s.pid.is_some() || s.phase != ContainerPhase::Created)
}

/// A container taken out of sight whose removal is not finished: its record (whose `dir`
/// names where it lived) and where its directory is now.
#[derive(Debug, Clone)]
pub struct Trashed {
    pub record: ContainerRecord,
    pub dir: PathBuf,
}

/// Where the directory `container_dir` goes when its container is removed:
/// `<parent>/.trash/<name>`, on the same filesystem so the move is one rename.
pub fn trash_path(container_dir: &Path) -> Option<PathBuf> {
    Some(container_dir.parent()?.join(TRASH_DIR).join(container_dir.file_name()?))
}

/// Renames a container directory into the trash (recreating the trash if someone removed
/// it). A directory already missing is no error: its cleanup still releases the cgroup.
fn move_dir(from: &Path, to: &Path) -> Result<()> {
    let moved = match std::fs::rename(from, to) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && from.exists() => {
            let trash = to.parent().unwrap_or(to);
            crate::create_private_dir(trash)?;
            std::fs::rename(from, to)
        }
        other => other,
    };
    match moved {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !from.exists() => {
            tracing::warn!(dir = %from.display(), "the removed container's directory was missing already");
            Ok(())
        }
        Err(e) => Err(Error::Io { context: "cannot move to the trash", path: from.to_path_buf(), source: e }),
    }
}

/// Whether the monitor's record says the container is done.
pub fn has_exited(status: &Option<Runtime>) -> bool {
    status.as_ref().is_some_and(|s| s.phase == ContainerPhase::Exited)
}

/// Whether something of it may run: the monitor created it and it has not exited. Only
/// such a container has anything to stop.
pub fn may_run(status: &Option<Runtime>) -> bool {
    launched(status.as_ref()) && !has_exited(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(store: &ContainerStore, id: &str, name: &str) -> ContainerRecord {
        let dir = store.dir_of(id);
        std::fs::create_dir_all(dir.join("rootfs")).unwrap();
        ContainerRecord {
            id: id.into(),
            pod_id: "pod".into(),
            config: v1::ContainerConfig {
                metadata: Some(v1::ContainerMetadata { name: name.into(), attempt: 0 }),
                ..Default::default()
            },
            image: String::new(),
            image_ref: String::new(),
            image_id: String::new(),
            created_at: 0,
            log_path: None,
            dir,
            cgroup: PathBuf::from("/capstan/pod").join(id),
            stop_signal: libc::SIGTERM,
        }
    }

    #[test]
    fn trashing_moves_the_directory_and_frees_the_name_at_once() {
        let root = tempfile::tempdir().unwrap();
        let store = ContainerStore::open(root.path()).unwrap();
        let meta = v1::ContainerMetadata { name: "web".into(), attempt: 0 };
        store.reserve("pod", &meta, "c1").unwrap();
        let c = store.insert(record(&store, "c1", "web")).unwrap();
        let trashed = store.trash(&c).unwrap().expect("trashed");
        assert_eq!(trashed.dir, root.path().join("containers/.trash/c1"));
        assert_eq!(trashed.record.dir, root.path().join("containers/c1"), "the record keeps where it lived");
        assert!(trashed.dir.join("rootfs").is_dir() && !store.dir_of("c1").exists());
        assert!(store.get("c1").is_none());
        store.reserve("pod", &meta, "c2").unwrap();
        assert!(store.trash(&c).unwrap().is_none(), "a second removal finds nothing to do");
        // The trash itself gone: it is made again rather than the directory left in place.
        let c3 = store.insert(record(&store, "c3", "db")).unwrap();
        std::fs::rename(root.path().join("containers/.trash"), root.path().join("elsewhere")).unwrap();
        let trashed = store.trash(&c3).unwrap().expect("trashed");
        assert!(trashed.dir.join("rootfs").is_dir() && !store.dir_of("c3").exists());
        std::fs::rename(root.path().join("elsewhere/c1"), root.path().join("containers/.trash/c1")).unwrap();
        // A restart sees the trash entry (with its record) but does not load it.
        let reopened = ContainerStore::open(root.path()).unwrap();
        assert!(reopened.all().is_empty());
        let mut ids: Vec<String> = reopened.trashed().into_iter().filter_map(|(_, r)| r.map(|r| r.id)).collect();
        ids.sort();
        assert_eq!(ids, ["c1", "c3"]);
    }

    #[test]
    fn the_trash_is_a_sibling_of_the_container_dir() {
        assert_eq!(trash_path(Path::new("/r/containers/abc")), Some(PathBuf::from("/r/containers/.trash/abc")));
        assert_eq!(trash_path(Path::new("/")), None);
    }
}
