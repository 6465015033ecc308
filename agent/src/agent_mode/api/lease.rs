//! The node's heartbeat: the Lease `kube-node-lease/<node>`, held by the node, renewed every
//! `lease_renew_seconds` with `leaseDurationSeconds` from the config, and owned by the Node
//! (an ownerReference with the Node's uid) so it goes when the Node is deleted — kubelet's
//! node lease controller, without its API-server fallbacks.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::{Api, PostParams};

use super::{ApiError, Settings, sleep_or_stop};

pub const NAMESPACE: &str = "kube-node-lease";

/// Waits for the Node's uid (the owner), then creates or renews the Lease until `stop`.
#[tracing::instrument(skip_all, fields(node = %settings.node))]
pub async fn run(
    client: kube::Client,
    settings: Settings,
    mut node_uid: tokio::sync::watch::Receiver<Option<String>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let uid = loop {
        if let Some(uid) = node_uid.borrow_and_update().clone() {
            break uid;
        }
        tokio::select! {
            changed = node_uid.changed() => if changed.is_err() { return },
            changed = stop.changed() => if changed.is_err() || *stop.borrow() { return },
        }
    };
    let leases: Api<Lease> = Api::namespaced(client, NAMESPACE);
    let mut current: Option<Lease> = None;
    loop {
        let mut result = renew(&leases, current.take(), &settings, &uid).await;
        // Someone else wrote the Lease since we read it: read it again and retry at once.
        if result.as_ref().err().and_then(ApiError::code) == Some(409) {
            result = renew(&leases, None, &settings, &uid).await;
        }
        match result {
            Ok(lease) => {
                tracing::trace!(resource_version = lease.metadata.resource_version.as_deref().unwrap_or_default(), "lease renewed");
                current = Some(lease);
            }
            Err(e) => tracing::warn!(error = %e, "cannot renew the node lease; retrying next period"),
        }
        if sleep_or_stop(settings.lease_renew, &mut stop).await {
            return;
        }
    }
}

/// One renewal: an update of the Lease last seen (read first when there is none), or a
/// create when there is no Lease yet.
async fn renew(leases: &Api<Lease>, current: Option<Lease>, settings: &Settings, node_uid: &str) -> Result<Lease, ApiError> {
    let node = &settings.node;
    let now = MicroTime(super::now());
    let base = match current {
        Some(lease) => lease,
        None => match super::bounded(leases.get_opt(node)).await.map_err(ApiError::call(format!("get lease {NAMESPACE}/{node}")))? {
            Some(lease) => lease,
            None => {
                let lease = renewed(Lease::default(), settings, node_uid, now);
                let created = super::bounded(leases.create(&PostParams::default(), &lease)).await.map_err(ApiError::call(format!("create lease {NAMESPACE}/{node}")));
                if created.is_ok() {
                    tracing::info!("node lease created");
                }
                return created;
            }
        },
    };
    let lease = renewed(base, settings, node_uid, now);
    super::bounded(leases.replace(node, &PostParams::default(), &lease)).await.map_err(ApiError::call(format!("update lease {NAMESPACE}/{node}")))
}

/// `lease` held by the node as of `now`, owned by the Node with `node_uid`; its
/// resourceVersion is kept, so an update fails if someone wrote it in between.
pub fn renewed(mut lease: Lease, settings: &Settings, node_uid: &str, now: MicroTime) -> Lease {
    let node = settings.node.clone();
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node.clone(),
        uid: node_uid.to_string(),
        ..Default::default()
    };
    let meta: &mut ObjectMeta = &mut lease.metadata;
    meta.name = Some(node.clone());
    meta.namespace = Some(NAMESPACE.into());
    let owners = meta.owner_references.get_or_insert_with(Vec::new);
    // A Node of this name made again has a new uid: the old reference would let the
    // garbage collector delete the Lease.
    owners.retain(|o| o.kind != "Node" || o.uid == node_uid);
    if !owners.iter().any(|o| o.kind == "Node" && o.uid == node_uid) {
        owners.push(owner);
    }
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(node);
    spec.lease_duration_seconds = Some(settings.lease_duration_seconds);
    spec.renew_time = Some(now);
    lease
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            node: "edge-1".into(),
            status_check: std::time::Duration::from_secs(10),
            status_report: std::time::Duration::from_secs(300),
            lease_renew: std::time::Duration::from_secs(10),
            lease_duration_seconds: 40,
        }
    }

    #[test]
    fn a_new_lease_is_kubelets() {
        let now = MicroTime("2025-03-04T05:06:07.123456Z".parse().unwrap());
        let json = serde_json::to_value(renewed(Lease::default(), &settings(), "node-uid", now)).unwrap();
        assert_eq!(json["apiVersion"], "coordination.k8s.io/v1");
        assert_eq!(json["kind"], "Lease");
        assert_eq!(json["metadata"]["name"], "edge-1");
        assert_eq!(json["metadata"]["namespace"], "kube-node-lease");
        assert_eq!(
            json["metadata"]["ownerReferences"],
            serde_json::json!([{"apiVersion": "v1", "kind": "Node", "name": "edge-1", "uid": "node-uid"}])
        );
        assert_eq!(json["spec"]["holderIdentity"], "edge-1");
        assert_eq!(json["spec"]["leaseDurationSeconds"], 40);
        assert_eq!(json["spec"]["renewTime"], "2025-03-04T05:06:07.123456Z", "MicroTime keeps microseconds");
    }

    #[test]
    fn a_renewal_keeps_the_version_and_fixes_a_stale_owner() {
        let old: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "edge-1", "namespace": "kube-node-lease", "resourceVersion": "7",
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "edge-1", "uid": "old"}]},
            "spec": {"holderIdentity": "edge-1", "leaseDurationSeconds": 40, "renewTime": "2025-01-01T00:00:00.000000Z"}
        }))
        .unwrap();
        let now = MicroTime("2025-01-01T00:00:10.5Z".parse().unwrap());
        let lease = renewed(old, &settings(), "new", now.clone());
        assert_eq!(lease.metadata.resource_version.as_deref(), Some("7"));
        let owners = lease.metadata.owner_references.unwrap();
        assert_eq!(owners.iter().map(|o| o.uid.as_str()).collect::<Vec<_>>(), ["new"]);
        assert_eq!(lease.spec.unwrap().renew_time, Some(now));
    }
}
