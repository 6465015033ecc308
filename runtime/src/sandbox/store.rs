//! Pod sandbox records: one JSON file per pod under `<root>/pods/<id>/sandbox.json`, cached
//! in memory, plus the name index that makes (name, namespace, uid, attempt) unique.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use cri_proto::monitor::{MonitorInfo, PodNamespaces};
use cri_proto::v1;
use serde::{Deserialize, Serialize};

use crate::cgroups::PodCgroups;
use crate::{Error, Result};

const RECORD_FILE: &str = "sandbox.json";

/// Where a pod is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    /// RunPodSandbox has not finished; a record found in this state after a daemon crash
    /// is unwound at start-up.
    Creating,
    Ready,
    /// Stopped: containers killed, network torn down, monitor gone.
    NotReady,
}

/// The pod's network as CNI reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNetwork {
    /// Name of the CNI network list used (needed again for DEL).
    pub network: String,
    pub ips: Vec<String>,
}

/// Everything the daemon knows about a pod, persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub config: v1::PodSandboxConfig,
    pub runtime_handler: String,
    pub state: SandboxState,
    pub created_at: i64,
    /// `<state>/pods/<id>`: monitor socket, pinned namespaces, pod files, shm.
    pub pod_dir: PathBuf,
    pub namespaces: PodNamespaces,
    pub cgroups: PodCgroups,
    #[serde(default)]
    pub monitor: Option<MonitorInfo>,
    #[serde(default)]
    pub network: Option<PodNetwork>,
    /// Whether the runtime created `log_directory` (and so removes it with the pod).
    #[serde(default)]
    pub log_dir_created: bool,
}

impl SandboxRecord {
    pub fn metadata(&self) -> v1::PodSandboxMetadata {
        self.config.metadata.clone().unwrap_or_default()
    }

    pub fn namespace_paths(&self) -> BTreeMap<String, PathBuf> {
        self.monitor.as_ref().map(|m| m.namespace_paths.clone()).unwrap_or_default()
    }

    /// The pod's `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf` and `/dev/shm`.
    pub fn hostname_file(&self) -> PathBuf {
        self.pod_dir.join("hostname")
    }
    pub fn hosts_file(&self) -> PathBuf {
        self.pod_dir.join("hosts")
    }
    pub fn resolv_file(&self) -> PathBuf {
        self.pod_dir.join("resolv.conf")
    }
    pub fn shm_dir(&self) -> PathBuf {
        self.pod_dir.join("shm")
    }

    /// Whether the pod's monitor is the live process recorded.
    pub fn monitor_alive(&self) -> bool {
        self.monitor.as_ref().is_some_and(crate::monitor::is_alive)
    }
}

/// The uniqueness key kubelet relies on.
pub fn name_key(meta: &v1::PodSandboxMetadata) -> String {
    format!("{}_{}_{}_{}", meta.name, meta.namespace, meta.uid, meta.attempt)
}

/// One pod: its record and the lock that orders lifecycle calls on it. Container calls take
/// the lock shared, Stop/RemovePodSandbox exclusive.
#[derive(Debug)]
pub struct Sandbox {
    pub id: String,
    record: Mutex<SandboxRecord>,
    pub lock: tokio::sync::RwLock<()>,
}

impl Sandbox {
    pub fn record(&self) -> SandboxRecord {
        self.guard().clone()
    }

    fn guard(&self) -> MutexGuard<'_, SandboxRecord> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the record and writes it to disk before anyone else sees the change.
    pub fn update(&self, store: &SandboxStore, change: impl FnOnce(&mut SandboxRecord)) -> Result<SandboxRecord> {
        let mut guard = self.guard();
        let mut next = guard.clone();
        change(&mut next);
        store.write(&next)?;
        *guard = next.clone();
        Ok(next)
    }
}

#[derive(Debug)]
pub struct SandboxStore {
    dir: PathBuf,
    pods: Mutex<HashMap<String, Arc<Sandbox>>>,
    names: Mutex<HashMap<String, String>>,
}

impl SandboxStore {
    /// Loads every record under `<root>/pods`. Unreadable records are reported and skipped.
    pub fn open(root: &Path) -> Result<SandboxStore> {
        let dir = root.join("pods");
        crate::create_private_dir(&dir)?;
        let store = SandboxStore { dir: dir.clone(), pods: Mutex::default(), names: Mutex::default() };
        let entries = std::fs::read_dir(&dir).map_err(Error::io("cannot read", &dir))?;
        for entry in entries.flatten() {
            let path = entry.path().join(RECORD_FILE);
            match crate::atomic::read_json::<SandboxRecord>(&path) {
                Ok(record) => {
                    lock(&store.names).insert(name_key(&record.metadata()), record.id.clone());
                    lock(&store.pods).insert(record.id.clone(), Arc::new(new_sandbox(record)));
                }
                Err(e) => tracing::error!(path = %path.display(), error = %e, "skipping unreadable pod record"),
            }
        }
        Ok(store)
    }

    pub fn record_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Claims the pod's name; `AlreadyExists` names the pod holding it.
    pub fn reserve(&self, meta: &v1::PodSandboxMetadata, id: &str) -> Result<()> {
        let key = name_key(meta);
        let mut names = lock(&self.names);
        if let Some(holder) = names.get(&key) {
            return Err(Error::AlreadyExists(format!(
                "pod sandbox name {key:?} is already used by sandbox {holder}; remove it first or use a new attempt"
            )));
        }
        names.insert(key, id.to_string());
        Ok(())
    }

    pub fn release(&self, meta: &v1::PodSandboxMetadata, id: &str) {
        let key = name_key(meta);
        let mut names = lock(&self.names);
        if names.get(&key).is_some_and(|holder| holder == id) {
            names.remove(&key);
        }
    }

    /// Persists a new record and makes the pod visible.
    pub fn insert(&self, record: SandboxRecord) -> Result<Arc<Sandbox>> {
        crate::create_private_dir(&self.record_dir(&record.id))?;
        self.write(&record)?;
        let sandbox = Arc::new(new_sandbox(record));
        lock(&self.pods).insert(sandbox.id.clone(), sandbox.clone());
        Ok(sandbox)
    }

    fn write(&self, record: &SandboxRecord) -> Result<()> {
        let path = self.record_dir(&record.id).join(RECORD_FILE);
        crate::atomic::write_json(&path, record).map_err(Error::io("cannot write pod record", &path))
    }

    /// Forgets a pod: record directory and name.
    pub fn remove(&self, sandbox: &Sandbox) -> Result<()> {
        let record = sandbox.record();
        let dir = self.record_dir(&record.id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::Io { context: "cannot remove pod record", path: dir, source: e }),
        }
        lock(&self.pods).remove(&record.id);
        self.release(&record.metadata(), &record.id);
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<Arc<Sandbox>> {
        lock(&self.pods).get(id).cloned()
    }

    /// Looks a pod up by full id or unique prefix, as crictl users type them.
    pub fn find(&self, id: &str) -> Result<Arc<Sandbox>> {
        let not_found = || Error::NotFound { kind: "pod sandbox", id: id.to_string() };
        if id.is_empty() {
            return Err(Error::InvalidArgument("pod sandbox id is empty".into()));
        }
        if let Some(s) = self.get(id) {
            return Ok(s);
        }
        let pods = lock(&self.pods);
        let mut matches = pods.values().filter(|s| s.id.starts_with(id));
        match (matches.next(), matches.next()) {
            (Some(s), None) => Ok(s.clone()),
            (Some(_), Some(_)) => Err(Error::InvalidArgument(format!("pod sandbox id prefix {id:?} is ambiguous"))),
            _ => Err(not_found()),
        }
    }

    pub fn all(&self) -> Vec<Arc<Sandbox>> {
        lock(&self.pods).values().cloned().collect()
    }
}

fn new_sandbox(record: SandboxRecord) -> Sandbox {
    Sandbox { id: record.id.clone(), record: Mutex::new(record), lock: tokio::sync::RwLock::new(()) }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
