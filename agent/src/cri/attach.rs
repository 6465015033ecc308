//! `Attach`: hand out a streaming-server URL to attach to a container's stdio.

use cri_proto::v1::{AttachRequest, AttachResponse};
use tonic::Status;

use super::{Cri, unimplemented};

impl Cri {
    pub(super) async fn attach(&self, _req: AttachRequest) -> Result<AttachResponse, Status> {
        unimplemented("Attach")
    }
}
