//! The Node object on the API server, as kubelet keeps it: created at start (or, when one
//! by this name exists, its labels reconciled by a patch), then its status (conditions,
//! capacity, allocatable, addresses, nodeInfo) posted to `nodes/<name>/status` whenever it
//! changes, and at least every `node_status_report_seconds` so heartbeats stay fresh. Each
//! condition carries `lastHeartbeatTime` (the post) and `lastTransitionTime` (its last
//! change of status, kept across daemon restarts from the Node as registered).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use cri_proto::RuntimeService;
use cri_proto::v1;
use k8s_openapi::api::core::v1 as k8s;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams, PostParams};

use super::{ApiError, Backoff, Settings, sleep_or_stop, status_code};
use crate::agent_mode::node;
use crate::config::Config;
use crate::cri::Cri;

pub struct NodeRegistration {
    nodes: Api<k8s::Node>,
    settings: Settings,
    config: Arc<Config>,
    cri: Arc<Cri>,
}

/// What was posted last, to tell a change from a heartbeat.
struct Posted {
    /// The status without condition times.
    status: k8s::NodeStatus,
    /// `None`: taken from the Node as registered, not posted by this run yet.
    at: Option<Instant>,
    /// When each condition last changed its status, by type.
    transitions: BTreeMap<String, Time>,
}

impl Posted {
    /// The registered Node's status: its conditions' transition times carry over a daemon
    /// restart while their status stays the same.
    fn from_registered(node: &k8s::Node) -> Posted {
        let mut status = node.status.clone().unwrap_or_default();
        let mut transitions = BTreeMap::new();
        for c in status.conditions.iter_mut().flatten() {
            if let Some(t) = c.last_transition_time.take() {
                transitions.insert(c.type_.clone(), t);
            }
            c.last_heartbeat_time = None;
        }
        Posted { status, at: None, transitions }
    }
}

impl NodeRegistration {
    pub fn new(client: kube::Client, settings: Settings, config: Arc<Config>, cri: Arc<Cri>) -> NodeRegistration {
        NodeRegistration { nodes: Api::all(client), settings, config, cri }
    }

    /// Registers the node (retrying with back-off), hands its uid to the Lease task, then
    /// keeps its status posted until `stop`.
    #[tracing::instrument(skip_all, fields(node = %self.settings.node))]
    pub async fn run(self, uid: tokio::sync::watch::Sender<Option<String>>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let started = Instant::now();
        let mut backoff = Backoff::default();
        let registered = loop {
            let result = match self.desired().await {
                Ok(node) => self.register(&node).await,
                Err(message) => Err(ApiError::Facts(message)),
            };
            match result {
                Ok(node) => break node,
                Err(e) => {
                    let wait = backoff.next();
                    tracing::warn!(error = %e, retry_secs = wait.as_secs(), "cannot register the node");
                    if sleep_or_stop(wait, &mut stop).await {
                        return;
                    }
                }
            }
        };
        let node_uid = registered.metadata.uid.clone().unwrap_or_default();
        tracing::info!(uid = %node_uid, elapsed_ms = started.elapsed().as_millis() as u64, "node registered with the API server");
        let _ = uid.send(Some(node_uid));
        let mut posted = Posted::from_registered(&registered);
        loop {
            match self.desired().await {
                Ok(node) => posted = self.post_status(node, posted).await,
                Err(e) => tracing::warn!(error = %e, "cannot gather the node's facts"),
            }
            if sleep_or_stop(self.settings.status_check, &mut stop).await {
                return;
            }
        }
    }

    /// The Node as this host describes it now; Ready follows the runtime's own conditions
    /// (RuntimeReady and NetworkReady), as kubelet's does.
    async fn desired(&self) -> Result<k8s::Node, String> {
        let (ready, why) = runtime_readiness(&self.cri).await;
        let config = self.config.clone();
        let name = self.settings.node.clone();
        let facts = tokio::task::spawn_blocking(move || node::gather(&config, &name, ready))
            .await
            .map_err(|e| e.to_string())??;
        let mut node = node::node_object(&facts);
        if let Some(c) = node.status.as_mut().and_then(|s| s.conditions.as_mut()).and_then(|c| c.iter_mut().find(|c| c.type_ == "Ready"))
            && !ready
        {
            c.message = Some(why);
        }
        Ok(node)
    }

    /// Creates the Node; when one by this name exists (409), takes it over: our labels are
    /// patched onto it, the rest of it is left as it is (the status follows separately).
    async fn register(&self, node: &k8s::Node) -> Result<k8s::Node, ApiError> {
        let name = &self.settings.node;
        let now = Time(super::now());
        let mut stamped = node.clone();
        stamped.status = node.status.as_ref().map(|s| stamp(s, &BTreeMap::new(), &now));
        match super::bounded(self.nodes.create(&PostParams::default(), &stamped)).await {
            Ok(created) => {
                tracing::info!("node created");
                Ok(created)
            }
            Err(e) if status_code(&e) == Some(409) => {
                let existing = super::bounded(self.nodes.get(name)).await.map_err(ApiError::call(format!("get node {name}")))?;
                match label_patch(&existing, node) {
                    Some(patch) => {
                        tracing::info!(patch = %patch, "node exists; reconciling its labels");
                        super::bounded(self.nodes.patch(name, &PatchParams::default(), &Patch::Strategic(patch)))
                            .await
                            .map_err(ApiError::call(format!("patch node {name}")))
                    }
                    None => {
                        tracing::info!("node exists with our labels");
                        Ok(existing)
                    }
                }
            }
            Err(e) => Err(ApiError::call(format!("create node {name}"))(e)),
        }
    }

    /// Posts the status when it changed, on this run's first round, or when the report
    /// period ran out; returns what is now posted (the old record when the post failed, so
    /// the next round tries again).
    async fn post_status(&self, node: k8s::Node, posted: Posted) -> Posted {
        let status = node.status.unwrap_or_default();
        let changed = posted.status != status;
        if !changed && posted.at.is_some_and(|at| at.elapsed() < self.settings.status_report) {
            return posted;
        }
        let now = Time(super::now());
        let transitions = transitions(Some((&posted.status, &posted.transitions)), &status, &now);
        let body = serde_json::json!({ "status": stamp(&status, &transitions, &now) });
        let name = &self.settings.node;
        match super::bounded(self.nodes.patch_status(name, &PatchParams::default(), &Patch::Strategic(body))).await {
            Ok(_) => {
                tracing::debug!(changed, "node status posted");
                Posted { status, at: Some(Instant::now()), transitions }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot post the node's status; retrying next period");
                posted
            }
        }
    }
}

/// Whether the runtime says it is ready (both conditions), and why not.
async fn runtime_readiness(cri: &Arc<Cri>) -> (bool, String) {
    let request = tonic::Request::new(v1::StatusRequest { verbose: false });
    match RuntimeService::status(&**cri, request).await {
        Ok(r) => {
            let conditions = r.into_inner().status.map(|s| s.conditions).unwrap_or_default();
            let not_ready: Vec<String> =
                conditions.iter().filter(|c| !c.status).map(|c| format!("{}=false reason:{} message:{}", c.r#type, c.reason, c.message)).collect();
            if not_ready.is_empty() { (true, String::new()) } else { (false, format!("container runtime not ready: {}", not_ready.join("; "))) }
        }
        Err(status) => (false, format!("container runtime status: {}", status.message())),
    }
}

/// Our labels that the existing Node lacks or has otherwise, as a strategic merge patch;
/// labels others set are kept. `None` when nothing differs.
pub fn label_patch(existing: &k8s::Node, desired: &k8s::Node) -> Option<serde_json::Value> {
    let have = existing.metadata.labels.clone().unwrap_or_default();
    let wanted = desired.metadata.labels.clone().unwrap_or_default();
    let differ: BTreeMap<String, String> = wanted.into_iter().filter(|(k, v)| have.get(k) != Some(v)).collect();
    (!differ.is_empty()).then(|| serde_json::json!({ "metadata": { "labels": differ } }))
}

/// When each condition last changed: kept from the last post while its status stays the
/// same, `now` for a new or changed one.
fn transitions(previous: Option<(&k8s::NodeStatus, &BTreeMap<String, Time>)>, status: &k8s::NodeStatus, now: &Time) -> BTreeMap<String, Time> {
    let mut out = BTreeMap::new();
    for c in status.conditions.iter().flatten() {
        let kept = previous.and_then(|(old, times)| {
            let same = old.conditions.iter().flatten().any(|o| o.type_ == c.type_ && o.status == c.status);
            same.then(|| times.get(&c.type_).cloned()).flatten()
        });
        out.insert(c.type_.clone(), kept.unwrap_or_else(|| now.clone()));
    }
    out
}

/// The status as posted: each condition's heartbeat `now`, its transition time from
/// `transitions` (`now` for one not there).
pub fn stamp(status: &k8s::NodeStatus, transitions: &BTreeMap<String, Time>, now: &Time) -> k8s::NodeStatus {
    let mut status = status.clone();
    for c in status.conditions.iter_mut().flatten() {
        c.last_heartbeat_time = Some(now.clone());
        c.last_transition_time = Some(transitions.get(&c.type_).cloned().unwrap_or_else(|| now.clone()));
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(labels: &[(&str, &str)], ready: &str) -> k8s::Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n", "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()},
            "status": {"conditions": [{"type": "Ready", "status": ready}, {"type": "MemoryPressure", "status": "False"}]}
        }))
        .unwrap()
    }

    fn time(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn only_differing_labels_are_patched_and_foreign_ones_kept() {
        let existing = node(&[("kubernetes.io/hostname", "n"), ("disktype", "hdd"), ("team", "x")], "True");
        let desired = node(&[("kubernetes.io/hostname", "n"), ("disktype", "ssd")], "True");
        assert_eq!(label_patch(&existing, &desired), Some(serde_json::json!({"metadata": {"labels": {"disktype": "ssd"}}})));
        assert_eq!(label_patch(&desired, &desired), None);
    }

    #[test]
    fn a_restart_keeps_the_registered_transition_times() {
        let mut registered = node(&[], "True");
        let t0 = time("2025-01-01T00:00:00Z");
        for c in registered.status.as_mut().unwrap().conditions.as_mut().unwrap() {
            (c.last_transition_time, c.last_heartbeat_time) = (Some(t0.clone()), Some(t0.clone()));
        }
        let posted = Posted::from_registered(&registered);
        assert!(posted.at.is_none(), "posted once by every run");
        let desired = node(&[], "True").status.unwrap();
        assert_eq!(posted.status, desired, "times are no change");
        let t1 = time("2025-01-01T01:00:00Z");
        assert_eq!(transitions(Some((&posted.status, &posted.transitions)), &desired, &t1)["Ready"], t0);
    }

    #[test]
    fn transition_times_move_only_when_a_condition_changes() {
        let t0 = time("2025-01-01T00:00:00Z");
        let t1 = time("2025-01-01T00:05:00Z");
        let first = node(&[], "False").status.unwrap();
        let times0 = transitions(None, &first, &t0);
        assert_eq!(times0["Ready"], t0);
        let now_ready = node(&[], "True").status.unwrap();
        let times1 = transitions(Some((&first, &times0)), &now_ready, &t1);
        assert_eq!((&times1["Ready"], &times1["MemoryPressure"]), (&t1, &t0));
        let body = serde_json::json!({ "status": stamp(&now_ready, &times1, &t1) });
        let ready = &body["status"]["conditions"][0];
        assert_eq!((ready["type"].as_str(), ready["status"].as_str()), (Some("Ready"), Some("True")));
        assert_eq!(ready["lastHeartbeatTime"], "2025-01-01T00:05:00Z");
        assert_eq!(body["status"]["conditions"][1]["lastTransitionTime"], "2025-01-01T00:00:00Z");
        assert_eq!(body["status"]["conditions"][1]["lastHeartbeatTime"], "2025-01-01T00:05:00Z");
    }
}
