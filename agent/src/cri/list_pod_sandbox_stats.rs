//! `ListPodSandboxStats`: stats of the ready pods a filter (id, labels) selects.

use cri_proto::v1::{ListPodSandboxStatsRequest, ListPodSandboxStatsResponse};
use tonic::Status;

use super::{Cri, to_status};

impl Cri {
    pub(super) async fn list_pod_sandbox_stats(&self, req: ListPodSandboxStatsRequest) -> Result<ListPodSandboxStatsResponse, Status> {
        let stats = self.runtime.list_pod_sandbox_stats(req.filter).await.map_err(to_status)?;
        Ok(ListPodSandboxStatsResponse { stats })
    }
}
