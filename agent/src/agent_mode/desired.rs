//! A pod the node should run, whichever source asked for it: a manifest file (static pod)
//! or the API server (a pod bound to this node). The sync loop and [`super::pod_sync`]
//! treat both alike; the source only decides the pod's identity and what is reported back.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use super::config_data::ConfigData;

/// Where a desired pod comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// A file in the manifest directory.
    File(PathBuf),
    /// The API server (`spec.nodeName` is this node).
    Api,
}

/// How the sync loop keys the pods it runs: one per manifest file, one per API pod uid.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PodKey {
    File(PathBuf),
    Api(String),
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PodKey::File(path) => write!(f, "file {}", path.display()),
            PodKey::Api(uid) => write!(f, "api pod {uid}"),
        }
    }
}

/// One pod as its source wants it.
#[derive(Debug, Clone)]
pub struct DesiredPod {
    pub origin: Origin,
    /// The pod's uid: a static pod's content hash, an API pod's `metadata.uid`.
    pub uid: String,
    pub pod: Pod,
    /// The ConfigMaps and Secrets the pod references, fetched before it starts (API pods
    /// only: static pods may not reference API objects).
    pub config: Arc<ConfigData>,
}

impl DesiredPod {
    pub fn from_file(file: PathBuf, hash: String, pod: Pod) -> DesiredPod {
        DesiredPod { origin: Origin::File(file), uid: hash, pod, config: Arc::default() }
    }

    pub fn from_api(pod: Pod) -> DesiredPod {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        DesiredPod { origin: Origin::Api, uid, pod, config: Arc::default() }
    }

    pub fn name(&self) -> &str {
        self.pod.metadata.name.as_deref().unwrap_or_default()
    }

    pub fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("default")
    }

    pub fn key(&self) -> PodKey {
        match &self.origin {
            Origin::File(path) => PodKey::File(path.clone()),
            Origin::Api => PodKey::Api(self.uid.clone()),
        }
    }

    pub fn is_static(&self) -> bool {
        matches!(self.origin, Origin::File(_))
    }

    /// The value of the `capstan.io/agent` label on its sandboxes and containers, by which a
    /// restarted daemon finds the pods of each source again.
    pub fn managed_by(&self) -> &'static str {
        match self.origin {
            Origin::File(_) => MANAGED_STATIC,
            Origin::Api => MANAGED_API,
        }
    }
}

pub const MANAGED_STATIC: &str = "static";
pub const MANAGED_API: &str = "api";

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Api => f.write_str("api-server"),
        }
    }
}
