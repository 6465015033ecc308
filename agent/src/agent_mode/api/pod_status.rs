//! An API pod's status on the API server: the status [`crate::agent_mode::status`] builds
//! for every pod, plus the addresses only the node knows (hostIP, podIP(s) from the
//! sandbox), sent as a strategic merge patch of `pods/<name>/status` — kubelet's kind of
//! patch, under which the API server merges `conditions` by type, so conditions others set
//! (readiness gates, DisruptionTarget) survive. The patch carries `metadata.uid`, which
//! the API server takes as a precondition: a pod deleted and made again under the same name
//! is not given the old pod's status. A patch goes out only when the status changed since
//! the last one the server accepted.

use std::collections::HashMap;
use std::sync::Arc;

use cri_proto::RuntimeService;
use cri_proto::v1;
use k8s_openapi::api::core::v1 as k8s;
use kube::api::{Api, Patch, PatchParams};

use super::status_code;
use crate::agent_mode::pod_sync::RunningPod;
use crate::cri::Cri;

pub struct Reporter {
    client: kube::Client,
    host_ip: tokio::sync::watch::Receiver<Option<String>>,
    /// The last body the API server accepted, by pod uid.
    sent: HashMap<String, serde_json::Value>,
}

impl Reporter {
    pub fn new(client: kube::Client, host_ip: tokio::sync::watch::Receiver<Option<String>>) -> Reporter {
        Reporter { client, host_ip, sent: HashMap::new() }
    }

    /// Sends `status` for `pod` if it differs from what was last accepted.
    #[tracing::instrument(skip_all, fields(pod = %pod.source.name(), namespace = %pod.source.namespace(), uid = %pod.source.uid))]
    pub async fn report(&mut self, cri: &Arc<Cri>, pod: &RunningPod, status: k8s::PodStatus) {
        let host_ip = self.host_ip.borrow().clone();
        let host_network = pod.source.pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
        let pod_ips = if host_network { host_ip.iter().cloned().collect() } else { sandbox_ips(cri, &pod.sandbox_id).await };
        let status = with_addresses(status, host_ip, pod_ips);
        let body = patch_body(&pod.source.uid, &status);
        if self.sent.get(&pod.source.uid) == Some(&body) {
            return;
        }
        let pods: Api<k8s::Pod> = Api::namespaced(self.client.clone(), pod.source.namespace());
        match super::bounded(pods.patch_status(pod.source.name(), &PatchParams::default(), &Patch::Strategic(&body))).await {
            Ok(_) => {
                tracing::debug!(phase = status.phase.as_deref().unwrap_or_default(), "pod status sent");
                self.sent.insert(pod.source.uid.clone(), body);
            }
            // Gone, or a new pod by that name (uid precondition): the watch will say so.
            Err(e) if matches!(status_code(&e), Some(404 | 409)) => tracing::debug!(error = %e, "pod status not taken"),
            Err(e) => tracing::warn!(error = %e, "cannot send the pod's status; retrying next sync"),
        }
    }

    /// Drops what was sent for a pod that is no longer run here.
    pub fn forget(&mut self, uid: &str) {
        self.sent.remove(uid);
    }
}

/// The sandbox's addresses, the primary first.
async fn sandbox_ips(cri: &Arc<Cri>, sandbox_id: &str) -> Vec<String> {
    let request = tonic::Request::new(v1::PodSandboxStatusRequest { pod_sandbox_id: sandbox_id.into(), verbose: false });
    let Ok(response) = RuntimeService::pod_sandbox_status(&**cri, request).await else { return Vec::new() };
    let Some(network) = response.into_inner().status.and_then(|s| s.network) else { return Vec::new() };
    std::iter::once(network.ip).chain(network.additional_ips.into_iter().map(|i| i.ip)).filter(|ip| !ip.is_empty()).collect()
}

/// Adds `hostIP(s)` and `podIP(s)` as kubelet reports them.
pub fn with_addresses(mut status: k8s::PodStatus, host_ip: Option<String>, pod_ips: Vec<String>) -> k8s::PodStatus {
    if let Some(ip) = host_ip {
        status.host_ips = Some(vec![k8s::HostIP { ip: ip.clone() }]);
        status.host_ip = Some(ip);
    }
    if let Some(first) = pod_ips.first() {
        status.pod_ip = Some(first.clone());
        status.pod_ips = Some(pod_ips.into_iter().map(|ip| k8s::PodIP { ip }).collect());
    }
    status
}

/// The strategic merge patch body: the uid precondition and the whole status.
pub fn patch_body(uid: &str, status: &k8s::PodStatus) -> serde_json::Value {
    serde_json::json!({ "metadata": { "uid": uid }, "status": status })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_has_the_uid_the_addresses_and_the_status() {
        let base: k8s::PodStatus = serde_json::from_value(serde_json::json!({
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": true, "restartCount": 2,
                                   "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}}}]
        }))
        .unwrap();
        let status = with_addresses(base.clone(), Some("192.0.2.10".into()), vec!["10.244.0.5".into(), "fd00::5".into()]);
        let body = patch_body("uid-1", &status);
        assert_eq!(body["metadata"], serde_json::json!({"uid": "uid-1"}));
        let s = &body["status"];
        assert_eq!((s["hostIP"].as_str(), s["podIP"].as_str()), (Some("192.0.2.10"), Some("10.244.0.5")));
        assert_eq!(s["hostIPs"], serde_json::json!([{"ip": "192.0.2.10"}]));
        assert_eq!(s["podIPs"], serde_json::json!([{"ip": "10.244.0.5"}, {"ip": "fd00::5"}]));
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["containerStatuses"][0]["restartCount"], 2);
        // The same status gives the same body (nothing is re-sent); a change shows.
        assert_eq!(patch_body("uid-1", &with_addresses(base.clone(), Some("192.0.2.10".into()), vec!["10.244.0.5".into(), "fd00::5".into()])), body);
        let no_ip = patch_body("uid-1", &with_addresses(base, Some("192.0.2.10".into()), Vec::new()));
        assert_ne!(no_ip, body);
        assert!(no_ip["status"].get("podIP").is_none());
    }
}
