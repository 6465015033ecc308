//! `ReopenContainerLog`: kubelet rotated the log file; the monitor opens a new one.

use cri_proto::v1::{ReopenContainerLogRequest, ReopenContainerLogResponse};
use tonic::Status;

use super::{Cri, to_status};

impl Cri {
    pub(super) async fn reopen_container_log(&self, req: ReopenContainerLogRequest) -> Result<ReopenContainerLogResponse, Status> {
        self.runtime.reopen_container_log(&req.container_id).await.map_err(to_status)?;
        Ok(ReopenContainerLogResponse {})
    }
}
