//! `StopPodSandbox`: kills the pod's containers and tears its network down. Idempotent.

use cri_proto::v1::{StopPodSandboxRequest, StopPodSandboxResponse};
use tonic::Status;

use super::{Cri, to_status};

impl Cri {
    pub(super) async fn stop_pod_sandbox(&self, req: StopPodSandboxRequest) -> Result<StopPodSandboxResponse, Status> {
        self.runtime.stop_pod_sandbox(&req.pod_sandbox_id).await.map_err(to_status)?;
        Ok(StopPodSandboxResponse {})
    }
}
