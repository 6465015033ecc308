//! `CheckpointContainer`: checkpoint a container (needs CRIU).

use cri_proto::v1::{CheckpointContainerRequest, CheckpointContainerResponse};
use tonic::Status;

use super::{Cri, unimplemented};

impl Cri {
    pub(super) async fn checkpoint_container(&self, _req: CheckpointContainerRequest) -> Result<CheckpointContainerResponse, Status> {
        unimplemented("CheckpointContainer")
    }
}
