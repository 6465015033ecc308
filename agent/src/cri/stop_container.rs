//! `StopContainer`: StopSignal, `timeout` seconds, then SIGKILL. Stopping a stopped
//! container is no error.

use cri_proto::v1::{StopContainerRequest, StopContainerResponse};
use tonic::Status;

use super::{Cri, to_completion};

impl Cri {
    pub(super) async fn stop_container(&self, req: StopContainerRequest) -> Result<StopContainerResponse, Status> {
        let runtime = self.runtime.clone();
        to_completion(async move { runtime.stop_container(&req.container_id, req.timeout).await }).await?;
        Ok(StopContainerResponse {})
    }
}
