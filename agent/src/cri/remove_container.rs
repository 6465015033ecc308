//! `RemoveContainer`: kills it if running, then removes it. Removing a removed container
//! is no error.

use cri_proto::v1::{RemoveContainerRequest, RemoveContainerResponse};
use tonic::Status;

use super::{Cri, to_completion};

impl Cri {
    pub(super) async fn remove_container(&self, req: RemoveContainerRequest) -> Result<RemoveContainerResponse, Status> {
        let runtime = self.runtime.clone();
        to_completion(async move { runtime.remove_container(&req.container_id).await }).await?;
        Ok(RemoveContainerResponse {})
    }
}
