//! Container records: `<root>/containers/<id>/container.json` (written by the daemon, fixed
//! after create) beside `status.json` (written by the pod's monitor: phase, pid, times, exit
//! code, reason), cached in memory with the (pod, name, attempt) index.

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
        crate::create_private_dir(&dir)?;
        let store = ContainerStore { dir: dir.clone(), containers: Mutex::default(), names: Mutex::default() };
        let entries = std::fs::read_dir(&dir).map_err(Error::io("cannot read", &dir))?;
        for entry in entries.flatten() {
            let path = entry.path().join(RECORD_FILE);
            match crate::atomic::read_json::<ContainerRecord>(&path) {
                Ok(record) => {
                    lock(&store.names).insert(name_key(&record.pod_id, &record.metadata()), record.id.clone());
                    let c = Arc::new(Container { record, lock: tokio::sync::Mutex::new(()) });
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
        let c = Arc::new(Container { record, lock: tokio::sync::Mutex::new(()) });
        lock(&self.containers).insert(c.record.id.clone(), c.clone());
        Ok(c)
    }

    /// Forgets a container: its directory (unmounting anything left in it) and name.
    pub fn remove(&self, c: &Container) -> Result<()> {
        crate::mounts::remove_dir_all(&c.record.dir)?;
        lock(&self.containers).remove(&c.record.id);
        self.release(&c.record.pod_id, &c.record.metadata(), &c.record.id);
        Ok(())
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

/// Whether the monitor's record says the container is done.
pub fn has_exited(status: &Option<Runtime>) -> bool {
    status.as_ref().is_some_and(|s| s.phase == ContainerPhase::Exited)
}
