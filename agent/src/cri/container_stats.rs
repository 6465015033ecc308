//! `ContainerStats`: cpu, memory, writable layer and process figures of one container.

use cri_proto::v1::{ContainerStatsRequest, ContainerStatsResponse};
use tonic::Status;

use super::{Cri, unimplemented};

impl Cri {
    pub(super) async fn container_stats(&self, _req: ContainerStatsRequest) -> Result<ContainerStatsResponse, Status> {
        unimplemented("ContainerStats")
    }
}
