//! `UpdateRuntimeConfig`: kubelet tells the runtime the node's pod CIDR.

use cri_proto::v1::{UpdateRuntimeConfigRequest, UpdateRuntimeConfigResponse};
use tonic::Status;

use super::{Cri, unimplemented};

impl Cri {
    pub(super) async fn update_runtime_config(&self, _req: UpdateRuntimeConfigRequest) -> Result<UpdateRuntimeConfigResponse, Status> {
        unimplemented("UpdateRuntimeConfig")
    }
}
