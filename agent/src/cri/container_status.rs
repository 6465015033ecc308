//! `ContainerStatus`: state, times, exit code and reason of one container.

use cri_proto::v1::{ContainerStatusRequest, ContainerStatusResponse};
use tonic::Status;

use super::{Cri, to_status};

impl Cri {
    pub(super) fn container_status(&self, req: ContainerStatusRequest) -> Result<ContainerStatusResponse, Status> {
        self.runtime.container_status(&req.container_id, req.verbose).map_err(to_status)
    }
}
