//! The end of a pod deleted through the API server: once its `deletionTimestamp` is set,
//! the agent stops and removes it, then deletes the object with `gracePeriodSeconds=0`, as
//! kubelet does, which lets the API server drop it. The uid precondition keeps a pod made
//! again under the same name from being deleted in its place.

use k8s_openapi::api::core::v1 as k8s;
use kube::api::{Api, DeleteParams, Preconditions};

use super::{ApiError, status_code};

/// Deletes the pod now; already gone (404) or replaced by a new pod (409) is done too.
pub async fn delete_now(client: &kube::Client, namespace: &str, name: &str, uid: &str) -> Result<(), ApiError> {
    let pods: Api<k8s::Pod> = Api::namespaced(client.clone(), namespace);
    match super::bounded(pods.delete(name, &params(uid))).await {
        Ok(_) => {
            tracing::info!(pod = %name, %namespace, %uid, "pod deleted from the API server");
            Ok(())
        }
        Err(e) if matches!(status_code(&e), Some(404 | 409)) => Ok(()),
        Err(e) => Err(ApiError::call(format!("delete pod {namespace}/{name}"))(e)),
    }
}

pub fn params(uid: &str) -> DeleteParams {
    DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions { uid: Some(uid.to_string()), resource_version: None }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delete_is_immediate_and_bound_to_the_uid() {
        let json = serde_json::to_value(params("u-1")).unwrap();
        assert_eq!(json, serde_json::json!({"gracePeriodSeconds": 0, "preconditions": {"uid": "u-1"}}));
    }
}
