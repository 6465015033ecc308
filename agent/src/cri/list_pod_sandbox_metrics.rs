//! `ListPodSandboxMetrics`: cAdvisor-style metric values per pod and container.

use cri_proto::v1::{ListPodSandboxMetricsRequest, ListPodSandboxMetricsResponse};
use tonic::Status;

use super::{Cri, unimplemented};

impl Cri {
    pub(super) async fn list_pod_sandbox_metrics(&self, _req: ListPodSandboxMetricsRequest) -> Result<ListPodSandboxMetricsResponse, Status> {
        unimplemented("ListPodSandboxMetrics")
    }
}
