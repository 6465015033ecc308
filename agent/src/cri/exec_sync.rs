//! `ExecSync`: run a command in a container and return its output (kubelet's exec probes).

use cri_proto::v1::{ExecSyncRequest, ExecSyncResponse};
use tonic::Status;

use super::{Cri, unimplemented};

impl Cri {
    pub(super) async fn exec_sync(&self, _req: ExecSyncRequest) -> Result<ExecSyncResponse, Status> {
        unimplemented("ExecSync")
    }
}
