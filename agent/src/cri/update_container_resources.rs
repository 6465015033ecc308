//! `UpdateContainerResources`: resize a running container's cgroup limits (v1 and v2).

use cri_proto::v1::{UpdateContainerResourcesRequest, UpdateContainerResourcesResponse};
use tonic::Status;

use super::{Cri, to_status};

impl Cri {
    pub(super) async fn update_container_resources(&self, req: UpdateContainerResourcesRequest) -> Result<UpdateContainerResourcesResponse, Status> {
        self.runtime.update_container_resources(&req.container_id, req.linux).await.map_err(to_status)?;
        Ok(UpdateContainerResourcesResponse {})
    }
}
