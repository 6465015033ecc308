//! `ListPodSandboxMetrics`: cAdvisor-style metric values per pod and container.

use cri_proto::v1::{ListPodSandboxMetricsRequest, ListPodSandboxMetricsResponse};
use tonic::Status;

use super::{Cri, to_status};

impl Cri {
    pub(super) async fn list_pod_sandbox_metrics(&self, _req: ListPodSandboxMetricsRequest) -> Result<ListPodSandboxMetricsResponse, Status> {
        let pod_metrics = self.runtime.list_pod_sandbox_metrics().await.map_err(to_status)?;
        Ok(ListPodSandboxMetricsResponse { pod_metrics })
    }
}
