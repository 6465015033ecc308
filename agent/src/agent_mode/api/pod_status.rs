//! An API pod's status on the API server: the status [`crate::agent_mode::status`] builds
//! for every pod (addresses included), sent as a strategic merge patch of
//! `pods/<name>/status` — kubelet's kind of patch, under which the API server merges
//! `conditions` by type, so conditions others set (readiness gates, DisruptionTarget)
//! survive. The patch carries `metadata.uid`, which the API server takes as a
//! precondition: a pod deleted and made again under the same name is not given the old
//! pod's status. A patch goes out only when the status changed since the last one the
//! server accepted.

use std::collections::HashMap;

use k8s_openapi::api::core::v1 as k8s;
use kube::api::{Api, Patch, PatchParams};

use super::status_code;
use crate::agent_mode::desired::DesiredPod;

pub struct Reporter {
    client: kube::Client,
    /// The last body the API server accepted, by pod uid.
    sent: HashMap<String, serde_json::Value>,
}

impl Reporter {
    pub fn new(client: kube::Client) -> Reporter {
        Reporter { client, sent: HashMap::new() }
    }

    /// Sends `status` for `pod` (running, or failing to start) if it differs from what was
    /// last accepted; `true` when it was sent and accepted now.
    #[tracing::instrument(skip_all, fields(pod = %pod.name(), namespace = %pod.namespace(), uid = %pod.uid))]
    pub async fn report(&mut self, pod: &DesiredPod, status: &k8s::PodStatus) -> bool {
        let body = patch_body(&pod.uid, status);
        if self.sent.get(&pod.uid) == Some(&body) {
            return false;
        }
        let pods: Api<k8s::Pod> = Api::namespaced(self.client.clone(), pod.namespace());
        match super::bounded(pods.patch_status(pod.name(), &PatchParams::default(), &Patch::Strategic(&body))).await {
            Ok(_) => {
                tracing::debug!(phase = status.phase.as_deref().unwrap_or_default(), "pod status sent");
                self.sent.insert(pod.uid.clone(), body);
                return true;
            }
            // Gone, or a new pod by that name (uid precondition): the watch will say so.
            Err(e) if matches!(status_code(&e), Some(404 | 409)) => tracing::debug!(error = %e, "pod status not taken"),
            Err(e) => tracing::warn!(error = %e, "cannot send the pod's status; retrying next sync"),
        }
        false
    }

    /// Drops what was sent for pods no longer desired nor run (a pod that never started
    /// is never removed, so [`Reporter::forget`] is not called for it).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.sent.retain(|uid, _| keep(uid));
    }

    /// Drops what was sent for a pod that is no longer run here.
    pub fn forget(&mut self, uid: &str) {
        self.sent.remove(uid);
    }
}

/// The strategic merge patch body: the uid precondition and the whole status.
pub fn patch_body(uid: &str, status: &k8s::PodStatus) -> serde_json::Value {
    serde_json::json!({ "metadata": { "uid": uid }, "status": status })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_has_the_uid_and_the_whole_status() {
        let status: k8s::PodStatus = serde_json::from_value(serde_json::json!({
            "phase": "Running", "hostIP": "192.0.2.10", "podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}],
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": true, "restartCount": 2,
                                   "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}}}]
        }))
        .unwrap();
        let body = patch_body("uid-1", &status);
        assert_eq!(body["metadata"], serde_json::json!({"uid": "uid-1"}));
        let s = &body["status"];
        assert_eq!((s["hostIP"].as_str(), s["podIP"].as_str(), s["phase"].as_str()), (Some("192.0.2.10"), Some("10.244.0.5"), Some("Running")));
        assert_eq!(s["containerStatuses"][0]["restartCount"], 2);
        // The same status gives the same body (nothing is re-sent); a change shows.
        assert_eq!(patch_body("uid-1", &status.clone()), body);
        let no_ip = k8s::PodStatus { pod_ip: None, pod_ips: None, ..status };
        assert_ne!(patch_body("uid-1", &no_ip), body);
    }
}
