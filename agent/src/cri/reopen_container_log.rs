//! `ReopenContainerLog`: kubelet rotated the log file; the monitor opens a new one.

use cri_proto::v1::{ReopenContainerLogRequest, ReopenContainerLogResponse};
use tonic::Status;

use super::{Cri, unimplemented};

impl Cri {
    pub(super) async fn reopen_container_log(&self, _req: ReopenContainerLogRequest) -> Result<ReopenContainerLogResponse, Status> {
        unimplemented("ReopenContainerLog")
    }
}
