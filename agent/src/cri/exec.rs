//! `Exec`: hand out a streaming-server URL for an interactive exec.

use cri_proto::v1::{ExecRequest, ExecResponse};
use tonic::Status;

use super::{Cri, unimplemented};

impl Cri {
    pub(super) async fn exec(&self, _req: ExecRequest) -> Result<ExecResponse, Status> {
        unimplemented("Exec")
    }
}
