//! Agent mode: Capstan as the node agent on nodes without kubelet (off by default).
//!
//! Pods come from two sources, both as [`desired::DesiredPod`]s: the manifest directory
//! ([`manifests`], static pods) and, with `[agent] kubeconfig`, the API server ([`api`]: the
//! pods bound to this node; the same module registers the Node, renews its Lease and sends
//! pod status back). The sync loop here runs them alike: [`pod_sync`] turns each into CRI
//! calls on our own runtime, [`volumes`] sets its volumes up (configMap, secret and
//! downwardAPI files through [`projected`], claims bound to local PersistentVolumes as
//! [`api::claims`] resolves them; a pod whose volumes cannot be set up stays Pending with
//! the cause in its status and is tried again every sync), [`config_data`] resolves its ConfigMap and
//! Secret references, [`status`] builds its status (written beside the pod, and patched
//! to the API server for API pods). The pod workers around [`pod_sync`]: [`admission`]
//! (nodeSelector, node affinity), [`init_containers`], [`probes`] run by [`prober`] tasks,
//! [`termination`] (grace periods), [`qos`] cgroup parents, the [`downward`] API for
//! [`env`](mod@env) and volumes.

mod admission;
mod api;
mod config_data;
mod desired;
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

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::cri::Cri;

use api::ApiSide;
use desired::{DesiredPod, MANAGED_API, MANAGED_STATIC, PodKey};
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

/// Why a pod's claims could not be resolved.
#[derive(Debug, thiserror::Error)]
enum Unresolved {
    #[error(transparent)]
    Api(api::claims::ClaimError),
    /// A static pod names a claim.
    #[error("{0}")]
    Static(String),
}

impl From<Unresolved> for AgentError {
    /// A claim not (yet) usable is the pod's volume error (ContainerCreating, retried); a
    /// static pod's claim is a configuration error.
    fn from(e: Unresolved) -> AgentError {
        match e {
            Unresolved::Api(e) => AgentError::Volume(e.to_string()),
            Unresolved::Static(message) => AgentError::Invalid(message),
        }
    }
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

/// Starts the sync loop when `[agent] enabled` (and, with a kubeconfig, the API-server
/// tasks); it ends when `stop` turns true. Pods keep running when the daemon stops, as with
/// kubelet; the next start adopts them.
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
            if config.agent.kubeconfig.is_none() {
                match serde_json::to_string(&node) {
                    Ok(json) => tracing::info!(node = %json, "agent mode: this node's Node object (no agent.kubeconfig: not registered)"),
                    Err(e) => tracing::warn!(error = %e, "cannot encode the Node object"),
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot gather the node's facts"),
    }
    let node = Arc::new(node_info);
    let config = config.clone();
    Some(tokio::spawn(async move {
        let changed = Arc::new(tokio::sync::Notify::new());
        let api = api::start(&config, &node_name, cri.clone(), changed.clone(), stop.clone()).await;
        let agent = Agent { cri, node, pods_dir, manifests, pods: BTreeMap::new(), api, changed, deleted: HashSet::new() };
        agent.run(period, stop).await
    }))
}

struct Agent {
    cri: Arc<Cri>,
    /// What pods see of this node (admission, downward API, hostIP).
    node: Arc<node_info::NodeInfo>,
    pods_dir: PathBuf,
    manifests: ManifestDir,
    /// The pods we run, by manifest file or API uid.
    pods: BTreeMap<PodKey, RunningPod>,
    api: Option<ApiSide>,
    /// Woken by the API pod source on every change, so a new pod does not wait a period.
    changed: Arc<tokio::sync::Notify>,
    /// Uids of terminating API pods whose final delete went through.
    deleted: HashSet<String>,
}

impl Agent {
    async fn run(mut self, period: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        let static_pods = self.manifests.scan().into_values().collect();
        self.recover(MANAGED_STATIC, static_pods).await;
        let changed = self.changed.clone();
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.sync_once().await,
                () = changed.notified() => self.sync_once().await,
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
            }
        }
        tracing::info!(pods = self.pods.len(), "agent mode stopped; pods keep running");
    }

    /// Pods a previous daemon started for one source (`managed`: the `capstan.io/agent`
    /// label): a ready one still desired with the same uid is adopted, so a daemon restart
    /// does not restart the node's pods; any other goes, with its volumes. `false` when it
    /// must be tried again (an API pod's ConfigMaps or Secrets could not be fetched).
    async fn recover(&mut self, managed: &str, desired: Vec<DesiredPod>) -> bool {
        use cri_proto::RuntimeService;
        let filter = v1::PodSandboxFilter { label_selector: [(pod_sync::MANAGED_BY.to_string(), managed.to_string())].into(), ..Default::default() };
        let request = tonic::Request::new(v1::ListPodSandboxRequest { filter: Some(filter) });
        let list = match RuntimeService::list_pod_sandbox(&*self.cri, request).await {
            Ok(list) => list.into_inner().items,
            Err(e) => {
                tracing::warn!(error = %e.message(), managed, "cannot list pods left by a previous run");
                return managed == MANAGED_STATIC;
            }
        };
        for sandbox in list {
            let uid = sandbox.labels.get(pod_sync::POD_UID).cloned().unwrap_or_default();
            let ready = sandbox.state == v1::PodSandboxState::SandboxReady as i32;
            let source = desired.iter().find(|d| d.uid == uid && !self.pods.contains_key(&d.key())).cloned();
            if let (true, Some(source)) = (ready, source) {
                let source = match self.with_config(source).await {
                    Ok(source) => source,
                    Err(e) => {
                        tracing::warn!(sandbox = %sandbox.id, error = %e, "cannot fetch an API pod's ConfigMaps and Secrets; adopting it later");
                        return false;
                    }
                };
                let key = source.key();
                let adopted = match self.claims(&source).await {
                    Ok(claims) => pod_sync::adopt(&self.cri, &self.node, self.pods_dir.clone(), source, &claims, sandbox.id.clone()).await,
                    // An API server that did not answer is no reason to replace a running pod.
                    Err(Unresolved::Api(e @ api::claims::ClaimError::Unreachable(_))) => {
                        tracing::warn!(sandbox = %sandbox.id, error = %e, "cannot resolve an API pod's claims; adopting it later");
                        return false;
                    }
                    Err(e) => Err(e.into()),
                };
                match adopted {
                    Ok(pod) => {
                        self.pods.insert(key, pod);
                        continue;
                    }
                    Err(e) => tracing::warn!(sandbox = %sandbox.id, error = %e, "cannot adopt pod; replacing it"),
                }
            }
            tracing::info!(sandbox = %sandbox.id, managed, "removing a pod left by a previous run");
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
        true
    }

    /// An API pod with the ConfigMaps and Secrets it references; a static pod as it is.
    async fn with_config(&self, mut source: DesiredPod) -> Result<DesiredPod, api::ApiError> {
        if let (Some(api), false) = (&self.api, source.is_static()) {
            source.config = Arc::new(api::config_objects::fetch(&api.client, &source.pod).await?);
        }
        Ok(source)
    }

    /// The pod's persistentVolumeClaims as the volumes they are bound to: looked up on the
    /// API server for an API pod; a static pod may use none.
    async fn claims(&self, source: &DesiredPod) -> Result<volumes::Claims, Unresolved> {
        let spec = source.pod.spec.clone().unwrap_or_default();
        match &self.api {
            Some(api) if !source.is_static() => api::claims::resolve(&api.client, &source.pod, &self.node).await.map_err(Unresolved::Api),
            _ => api::claims::refuse_static(&spec).map(|()| volumes::Claims::new()).map_err(Unresolved::Static),
        }
    }

    /// A pod that could not start: an API pod's status says why (Pending, its containers
    /// waiting with the error's reason), with a FailedMount event when a volume was the
    /// cause; both only when the status changed, not on every retry.
    async fn report_not_started(&mut self, source: &DesiredPod, e: &AgentError) {
        let Some(api) = self.api.as_mut().filter(|_| !source.is_static()) else { return };
        let message = e.to_string();
        let status = status::not_started(source, &self.node, e.reason(), &message);
        if api.statuses.report(source, &status).await && matches!(e, AgentError::Volume(_)) {
            api::events::warn(&api.client, source, &self.node.name, "FailedMount", &message).await;
        }
    }

    /// What both sources want now. Until the API source's first full list (and the
    /// recovery against it) API pods are neither started nor stopped.
    async fn desired(&mut self) -> (BTreeMap<PodKey, DesiredPod>, Vec<DesiredPod>) {
        let mut desired: BTreeMap<PodKey, DesiredPod> = self.manifests.scan().into_values().map(|d| (d.key(), d)).collect();
        let mut terminating = Vec::new();
        let snapshot = self.api.as_ref().map(|api| api.pods.snapshot()).unwrap_or_default();
        let recovered = self.api.as_ref().is_some_and(|api| api.recovered);
        for pod in snapshot.pods {
            let d = DesiredPod::from_api(pod);
            let phase = d.pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if d.pod.metadata.deletion_timestamp.is_some() {
                terminating.push(d);
            } else if matches!(phase, Some("Succeeded" | "Failed")) && !self.pods.contains_key(&d.key()) {
                // Finished before we saw it (or before a restart): never run again.
            } else {
                desired.insert(d.key(), d);
            }
        }
        if snapshot.synced && !recovered {
            let api_pods = desired.values().filter(|d| !d.is_static()).cloned().collect();
            let done = self.recover(MANAGED_API, api_pods).await;
            if let Some(api) = self.api.as_mut() {
                api.recovered = done;
            }
        }
        if !self.api.as_ref().is_some_and(|api| api.recovered) {
            desired.retain(|_, d| d.is_static());
            for (key, pod) in &self.pods {
                if matches!(key, PodKey::Api(_)) {
                    desired.insert(key.clone(), pod.source.clone());
                }
            }
        }
        (desired, terminating)
    }

    async fn sync_once(&mut self) {
        let (desired, terminating) = self.desired().await;
        // A terminating API pod stops within the grace period its deletion set.
        for d in &terminating {
            if let Some(pod) = self.pods.get_mut(&d.key()).filter(|p| p.source.uid == d.uid) {
                pod.source.pod.metadata.deletion_grace_period_seconds = d.pod.metadata.deletion_grace_period_seconds;
            }
        }
        // Gone or changed sources: the old pod goes first (a changed file is a new pod; a
        // terminating API pod is no longer desired).
        let mut stale: Vec<PodKey> =
            self.pods.iter().filter(|(key, pod)| desired.get(*key).is_none_or(|d| d.uid != pod.source.uid)).map(|(key, _)| key.clone()).collect();
        // A sandbox stopped or removed behind our back (crictl, a crash) is made again, as
        // kubelet does: the pod goes and the loop below starts it afresh.
        for (key, pod) in &self.pods {
            if !stale.contains(key) && !pod_sync::sandbox_ready(&self.cri, &pod.sandbox_id).await {
                if pod.source.is_static() {
                    tracing::warn!(file = %pod.source.origin, sandbox = %pod.sandbox_id, "static pod sandbox is gone or not ready; recreating the pod");
                } else {
                    tracing::warn!(pod = %pod.source.name(), sandbox = %pod.sandbox_id, "API pod sandbox is gone or not ready; recreating the pod");
                }
                stale.push(key.clone());
            }
        }
        for key in stale {
            if let Some(pod) = self.pods.get_mut(&key) {
                // A pod given a grace period stays (terminating) until its containers stop.
                match pod_sync::remove(&self.cri, pod).await {
                    Ok(true) => {
                        if let (Some(api), PodKey::Api(uid)) = (self.api.as_mut(), &key) {
                            api.statuses.forget(uid);
                        }
                        self.pods.remove(&key);
                    }
                    Ok(false) => {}
                    Err(e) => tracing::error!(pod = %key, error = %e, "cannot remove pod; retrying next sync"),
                }
            }
        }
        self.finish_deletions(&terminating).await;
        let wanted: HashSet<String> = desired.values().map(|d| d.uid.clone()).collect();
        for (key, source) in desired {
            if self.pods.contains_key(&key) {
                continue;
            }
            let source = match self.with_config(source).await {
                Ok(source) => source,
                Err(e) => {
                    tracing::error!(pod = %key, error = %e, "cannot fetch the pod's ConfigMaps and Secrets; retrying next sync");
                    continue;
                }
            };
            let started = match self.claims(&source).await {
                Ok(claims) => pod_sync::start(&self.cri, &self.node, self.pods_dir.clone(), source.clone(), &claims).await,
                Err(e) => Err(e.into()),
            };
            match started {
                Ok(pod) => {
                    self.pods.insert(key, pod);
                }
                Err(e) => {
                    tracing::error!(pod = %key, error = %e, "cannot start pod; retrying next sync");
                    self.report_not_started(&source, &e).await;
                }
            }
        }
        if let Some(api) = self.api.as_mut() {
            let running: HashSet<&str> = self.pods.values().map(|p| p.source.uid.as_str()).collect();
            api.statuses.retain(|uid| wanted.contains(uid) || running.contains(uid));
        }
        for pod in self.pods.values_mut() {
            pod_sync::sync(&self.cri, pod).await;
            let statuses = pod_sync::container_statuses(&self.cri, pod).await;
            let status = status::pod_status(pod, &statuses);
            write_status(pod, &status);
            if let (Some(api), false) = (self.api.as_mut(), pod.source.is_static()) {
                api.statuses.report(&pod.source, &status).await;
            }
        }
    }

    /// Terminating API pods no longer run here are deleted for good (grace period 0), once
    /// each; the watch then drops them.
    async fn finish_deletions(&mut self, terminating: &[DesiredPod]) {
        let Some(api) = self.api.as_ref().filter(|api| api.recovered) else { return };
        self.deleted.retain(|uid| terminating.iter().any(|d| &d.uid == uid));
        for d in terminating {
            if self.pods.contains_key(&d.key()) || self.deleted.contains(&d.uid) {
                continue;
            }
            match api::pod_deletion::delete_now(&api.client, d.namespace(), d.name(), &d.uid).await {
                Ok(()) => {
                    self.deleted.insert(d.uid.clone());
                }
                Err(e) => tracing::warn!(pod = %d.name(), namespace = %d.namespace(), error = %e, "cannot delete the terminated pod; retrying next sync"),
            }
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
