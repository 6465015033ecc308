//! Warning events about an API pod (`FailedMount` when its volumes cannot be set up), as
//! kubelet records them: a core/v1 Event in the pod's namespace naming the pod, with this
//! node as the source. Best effort: a failed post is logged, never retried.

use k8s_openapi::api::core::v1 as k8s;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};

use crate::agent_mode::desired::DesiredPod;

/// Posts a Warning event about `pod`.
pub async fn warn(client: &kube::Client, pod: &DesiredPod, node: &str, reason: &str, message: &str) {
    let event = event(pod, node, reason, message, super::now());
    let events: Api<k8s::Event> = Api::namespaced(client.clone(), pod.namespace());
    match super::bounded(events.create(&PostParams::default(), &event)).await {
        Ok(_) => tracing::debug!(pod = %pod.name(), reason, "event posted"),
        Err(e) => tracing::warn!(pod = %pod.name(), reason, error = %e, "cannot post the pod's event"),
    }
}

/// The event: named like kubelet's (`<pod>.<hex nanoseconds>`), counted once.
pub fn event(pod: &DesiredPod, node: &str, reason: &str, message: &str, now: k8s_openapi::jiff::Timestamp) -> k8s::Event {
    let nanos = u128::try_from(now.as_nanosecond()).unwrap_or_default();
    k8s::Event {
        metadata: ObjectMeta { name: Some(format!("{}.{nanos:x}", pod.name())), namespace: Some(pod.namespace().to_string()), ..Default::default() },
        involved_object: k8s::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(pod.name().to_string()),
            namespace: Some(pod.namespace().to_string()),
            uid: Some(pod.uid.clone()),
            ..Default::default()
        },
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        type_: Some("Warning".into()),
        source: Some(k8s::EventSource { component: Some("kubelet".into()), host: Some(node.to_string()) }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        reporting_component: Some("kubelet".into()),
        reporting_instance: Some(node.to_string()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_pod_and_the_node() {
        let pod: k8s::Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "db", "namespace": "t", "uid": "u1"}})).unwrap();
        let pod = DesiredPod::from_api(pod);
        let now = k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let e = serde_json::to_value(event(&pod, "n1", "FailedMount", "volume \"data\": x", now)).unwrap();
        assert_eq!(e["metadata"]["name"], format!("db.{:x}", 1_700_000_000_000_000_000u128));
        assert_eq!(e["involvedObject"], serde_json::json!({"apiVersion": "v1", "kind": "Pod", "name": "db", "namespace": "t", "uid": "u1"}));
        assert_eq!((e["reason"].as_str(), e["type"].as_str(), e["source"]["host"].as_str()), (Some("FailedMount"), Some("Warning"), Some("n1")));
    }
}
