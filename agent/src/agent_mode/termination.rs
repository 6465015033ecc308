//! Stopping containers the way kubelet does: the stop signal, then up to the grace period
//! (`terminationGracePeriodSeconds`, 30 s by default; a probe's own for the kill it
//! orders, an API pod's `deletionGracePeriodSeconds` once it is being deleted; never under
//! kubelet's 2 s minimum), then SIGKILL, which is CRI StopContainer's
//! `timeout`. Each stop runs as a task of its own: a container that ignores SIGTERM must
//! not hold up the sync loop for its grace period.

use std::sync::Arc;

use cri_proto::RuntimeService;
use cri_proto::v1;
use k8s_openapi::api::core::v1 as k8s;

use crate::cri::Cri;

/// Kubelet's default and floor.
const DEFAULT_GRACE: i64 = 30;
const MINIMUM_GRACE: i64 = 2;

/// The grace period for stopping the pod's containers; `own` (a probe's, a deletion's)
/// overrides the pod's.
pub fn grace_period(spec: &k8s::PodSpec, own: Option<i64>) -> i64 {
    own.or(spec.termination_grace_period_seconds).unwrap_or(DEFAULT_GRACE).max(MINIMUM_GRACE)
}

/// Starts stopping one container; the task ends once it has exited.
pub fn stop_container(cri: &Arc<Cri>, id: String, grace: i64) -> tokio::task::JoinHandle<()> {
    let cri = cri.clone();
    tokio::spawn(async move {
        let request = v1::StopContainerRequest { container_id: id.clone(), timeout: grace };
        match RuntimeService::stop_container(&*cri, tonic::Request::new(request)).await {
            Ok(_) => tracing::debug!(container = %id, grace_secs = grace, "container stopped"),
            Err(status) if status.code() == tonic::Code::NotFound => {}
            Err(status) => tracing::warn!(container = %id, error = %status.message(), "cannot stop container"),
        }
    })
}

/// Starts stopping all of them at once, each with the same grace period (kubelet stops a
/// pod's containers in parallel); the task ends when the last has exited.
pub fn stop_all(cri: &Arc<Cri>, ids: Vec<String>, grace: i64) -> tokio::task::JoinHandle<()> {
    let tasks: Vec<_> = ids.into_iter().map(|id| stop_container(cri, id, grace)).collect();
    tokio::spawn(async move {
        for t in tasks {
            let _ = t.await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_defaults_floors_and_probe_overrides() {
        let spec = |g: Option<i64>| k8s::PodSpec { termination_grace_period_seconds: g, ..Default::default() };
        assert_eq!(grace_period(&spec(None), None), 30);
        assert_eq!(grace_period(&spec(Some(5)), None), 5);
        assert_eq!(grace_period(&spec(Some(0)), None), 2);
        assert_eq!(grace_period(&spec(Some(60)), Some(3)), 3);
    }
}
