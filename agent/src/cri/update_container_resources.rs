//! `UpdateContainerResources`: resize a running container's cgroup limits (v1 and v2).

use cri_proto::v1::{UpdateContainerResourcesRequest, UpdateContainerResourcesResponse};
use tonic::Status;

use super::{Cri, unimplemented};

impl Cri {
    pub(super) async fn update_container_resources(&self, _req: UpdateContainerResourcesRequest) -> Result<UpdateContainerResourcesResponse, Status> {
        unimplemented("UpdateContainerResources")
    }
}
