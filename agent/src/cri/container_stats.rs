//! `ContainerStats`: cpu, memory and writable layer figures of one container.

use cri_proto::v1::{ContainerStatsRequest, ContainerStatsResponse};
use tonic::Status;

use super::{Cri, to_status};

impl Cri {
    pub(super) async fn container_stats(&self, req: ContainerStatsRequest) -> Result<ContainerStatsResponse, Status> {
        let stats = self.runtime.container_stats(&req.container_id).await.map_err(to_status)?;
        Ok(ContainerStatsResponse { stats: Some(stats) })
    }
}
