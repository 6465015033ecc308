//! Agent mode: Capstan as the node agent on nodes without kubelet (off by default).
//!
//! This slice serves static pods: [`manifests`] reads the manifest directory, [`pod_sync`]
//! turns each pod into CRI calls on our own runtime, [`volumes`] sets its volumes up,
//! [`status`] reports phase and restart counts. The pod workers around [`pod_sync`]:
//! [`admission`] (nodeSelector, node affinity), [`init_containers`], [`probes`] run by
//! [`prober`] tasks, [`termination`] (grace periods), [`qos`] cgroup parents, the
//! [`downward`] API for [`env`](mod@env) and volumes. Node registration, the Lease and the API
//! server as a pod source are not here yet.

mod admission;
mod downward;
mod env;
mod init_containers;
mod manifests;
mod node;
mod node_info;
mod pod_sync;
mod probes;
mod prober;
mod projected;
mod qos;
mod quantity;
mod status;
mod termination;
mod volumes;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::cri::Cri;

use manifests::ManifestDir;
use pod_sync::RunningPod;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{call}: {status}", status = .status.message())]
    Cri { call: &'static str, status: tonic::Status },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Volume(String),
    #[error("image {0} is not present and imagePullPolicy is Never")]
    ImageNeverPull(String),
    #[error("{0}")]
    Internal(String),
}

impl AgentError {
    /// Kubelet's waiting reasons, for the container status.
    pub fn reason(&self) -> &'static str {
        match self {
            AgentError::Cri { call: "PullImage", .. } => "ErrImagePull",
            AgentError::ImageNeverPull(_) => "ErrImageNeverPull",
            AgentError::Invalid(_) => "CreateContainerConfigError",
            AgentError::Volume(_) => "ContainerCreating",
            _ => "CreateContainerError",
        }
    }
}

/// Starts the sync loop when `[agent] enabled`; it ends when `stop` turns true. Static
/// pods keep running when the daemon stops, as with kubelet; the next start adopts them.
pub fn spawn(
    config: &Config,
    cri: Arc<Cri>,
    runtime_ready: bool,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    if !config.agent.enabled {
        return None;
    }
    let node_name = config.agent.node_name.clone().unwrap_or_else(crate::node::node_name);
    let period = Duration::from_secs(config.agent.sync_period_seconds.max(1));
    let pods_dir = config.root.join("agent").join("pods");
    let manifests = ManifestDir::new(config.agent.manifest_dir.clone(), node_name.clone());
    tracing::info!(manifest_dir = %config.agent.manifest_dir.display(), node = %node_name, period_secs = period.as_secs(), "agent mode: serving static pods");
    let mut node_info = node_info::NodeInfo::minimal(&node_name);
    match node::gather(config, &node_name, runtime_ready) {
        Ok(facts) => {
            let node = node::node_object(&facts);
            node_info = node_info::NodeInfo::from_node(&node);
            match serde_json::to_string(&node) {
                Ok(json) => tracing::info!(node = %json, "agent mode: this node's Node object (not registered: no API server in this mode yet)"),
                Err(e) => tracing::warn!(error = %e, "cannot encode the Node object"),
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot gather the node's facts"),
    }
    let agent = Agent { cri, node: Arc::new(node_info), pods_dir, manifests, pods: BTreeMap::new() };
    Some(tokio::spawn(agent.run(period, stop)))
}

struct Agent {
    cri: Arc<Cri>,
    /// What pods see of this node (admission, downward API).
    node: Arc<node_info::NodeInfo>,
    pods_dir: PathBuf,
    manifests: ManifestDir,
    /// The pods we run, by manifest file.
    pods: BTreeMap<PathBuf, RunningPod>,
}

impl Agent {
    async fn run(mut self, period: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        self.recover().await;
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.sync_once().await,
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
            }
        }
        tracing::info!(pods = self.pods.len(), "agent mode stopped; static pods keep running");
    }

    /// Static pods a previous daemon started: a ready one whose manifest is unchanged (same
    /// uid) is adopted, so a daemon restart does not restart the node's static pods; any
    /// other goes, with its volumes.
    async fn recover(&mut self) {
        use cri_proto::RuntimeService;
        let filter = v1::PodSandboxFilter {
            label_selector: [(pod_sync::MANAGED_BY.to_string(), "static".to_string())].into(),
            ..Default::default()
        };
        let request = tonic::Request::new(v1::ListPodSandboxRequest { filter: Some(filter) });
        let list = match RuntimeService::list_pod_sandbox(&*self.cri, request).await {
            Ok(list) => list.into_inner().items,
            Err(e) => {
                tracing::warn!(error = %e.message(), "cannot list static pods left by a previous run");
                return;
            }
        };
        let desired = self.manifests.scan();
        for sandbox in list {
            let uid = sandbox.labels.get(pod_sync::POD_UID).cloned().unwrap_or_default();
            let ready = sandbox.state == v1::PodSandboxState::SandboxReady as i32;
            let source = desired.values().find(|d| d.hash == uid && !self.pods.contains_key(&d.file)).cloned();
            if let (true, Some(source)) = (ready, source) {
                let file = source.file.clone();
                match pod_sync::adopt(&self.cri, &self.node, self.pods_dir.clone(), source, sandbox.id.clone()).await {
                    Ok(pod) => {
                        self.pods.insert(file, pod);
                        continue;
                    }
                    Err(e) => tracing::warn!(sandbox = %sandbox.id, error = %e, "cannot adopt static pod; replacing it"),
                }
            }
            tracing::info!(sandbox = %sandbox.id, "removing a static pod left by a previous run");
            let id = sandbox.id.clone();
            let _ = RuntimeService::stop_pod_sandbox(&*self.cri, tonic::Request::new(v1::StopPodSandboxRequest { pod_sandbox_id: id.clone() })).await;
            let _ = RuntimeService::remove_pod_sandbox(&*self.cri, tonic::Request::new(v1::RemovePodSandboxRequest { pod_sandbox_id: id })).await;
            if let Ok(pv) = capstan_volumes::PodVolumes::new(&self.pods_dir, &uid) {
                let dir = self.pods_dir.join(&uid);
                let _ = tokio::task::spawn_blocking(move || {
                    if pv.teardown_all(true).is_ok() {
                        let _ = std::fs::remove_dir_all(dir);
                    }
                    qos::tidy();
                })
                .await;
            }
        }
    }

    async fn sync_once(&mut self) {
        let desired = self.manifests.scan();
        // Removed or changed files: the old pod goes first (a changed file is a new pod).
        let mut stale: Vec<PathBuf> = self
            .pods
            .iter()
            .filter(|(file, pod)| desired.get(*file).is_none_or(|d| d.hash != pod.source.hash))
            .map(|(file, _)| file.clone())
            .collect();
        // A sandbox stopped or removed behind our back (crictl, a crash) is made again, as
        // kubelet does: the pod goes and the loop below starts it afresh.
        for (file, pod) in &self.pods {
            if !stale.contains(file) && !pod_sync::sandbox_ready(&self.cri, &pod.sandbox_id).await {
                tracing::warn!(file = %file.display(), sandbox = %pod.sandbox_id, "static pod sandbox is gone or not ready; recreating the pod");
                stale.push(file.clone());
            }
        }
        for file in stale {
            if let Some(pod) = self.pods.get_mut(&file) {
                // A pod given a grace period stays (terminating) until its containers stop.
                match pod_sync::remove(&self.cri, pod).await {
                    Ok(true) => {
                        self.pods.remove(&file);
                    }
                    Ok(false) => {}
                    Err(e) => tracing::error!(file = %file.display(), error = %e, "cannot remove static pod; retrying next sync"),
                }
            }
        }
        for (file, source) in desired {
            if self.pods.contains_key(&file) {
                continue;
            }
            match pod_sync::start(&self.cri, &self.node, self.pods_dir.clone(), source).await {
                Ok(pod) => {
                    self.pods.insert(file, pod);
                }
                Err(e) => tracing::error!(file = %file.display(), error = %e, "cannot start static pod; retrying next sync"),
            }
        }
        for pod in self.pods.values_mut() {
            pod_sync::sync(&self.cri, pod).await;
            let statuses = pod_sync::container_statuses(&self.cri, pod).await;
            let status = status::pod_status(pod, &statuses);
            write_status(pod, &status);
        }
    }
}

fn write_status(pod: &RunningPod, status: &k8s_openapi::api::core::v1::PodStatus) {
    let path = pod.pod_dir.join("status.json");
    let tmp = pod.pod_dir.join(".status.json.tmp");
    let result = serde_json::to_vec_pretty(status)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cannot write pod status");
    }
}

use cri_proto::v1;
