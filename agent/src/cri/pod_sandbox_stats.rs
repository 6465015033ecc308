//! `PodSandboxStats`: cpu, memory, network and process figures of one pod and its containers.

use cri_proto::v1::{PodSandboxStatsRequest, PodSandboxStatsResponse};
use tonic::Status;

use super::{Cri, to_status};

impl Cri {
    pub(super) async fn pod_sandbox_stats(&self, req: PodSandboxStatsRequest) -> Result<PodSandboxStatsResponse, Status> {
        let stats = self.runtime.pod_sandbox_stats(&req.pod_sandbox_id).await.map_err(to_status)?;
        Ok(PodSandboxStatsResponse { stats: Some(stats) })
    }
}
