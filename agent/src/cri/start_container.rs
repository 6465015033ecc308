//! `StartContainer`: lets a created container run.

use cri_proto::v1::{StartContainerRequest, StartContainerResponse};
use tonic::Status;

use super::{Cri, to_status};

impl Cri {
    pub(super) async fn start_container(&self, req: StartContainerRequest) -> Result<StartContainerResponse, Status> {
        self.runtime.start_container(&req.container_id).await.map_err(to_status)?;
        Ok(StartContainerResponse {})
    }
}
