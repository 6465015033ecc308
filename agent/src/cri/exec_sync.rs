//! `ExecSync`: run a command in a container and return its output (kubelet's exec probes).

use std::time::Duration;

use cri_proto::v1::{ExecSyncRequest, ExecSyncResponse};
use tonic::Status;

use super::{Cri, to_status};

impl Cri {
    /// `timeout` is in seconds; 0 (or less) means none.
    pub(super) async fn exec_sync(&self, req: ExecSyncRequest) -> Result<ExecSyncResponse, Status> {
        let timeout = Duration::from_secs(u64::try_from(req.timeout).unwrap_or(0));
        let out = self.runtime.exec_sync(&req.container_id, req.cmd, timeout).await.map_err(to_status)?;
        Ok(ExecSyncResponse { stdout: out.stdout, stderr: out.stderr, exit_code: out.exit_code })
    }
}
