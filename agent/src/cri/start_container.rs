//! `StartContainer`: lets a created container run.

use cri_proto::v1::{StartContainerRequest, StartContainerResponse};
use tonic::Status;

use super::{Cri, to_completion};

impl Cri {
    pub(super) async fn start_container(&self, req: StartContainerRequest) -> Result<StartContainerResponse, Status> {
        let runtime = self.runtime.clone();
        to_completion(async move { runtime.start_container(&req.container_id).await }).await?;
        Ok(StartContainerResponse {})
    }
}
