//! `StopPodSandbox`: kills the pod's containers and tears its network down. Idempotent.

use cri_proto::v1::{StopPodSandboxRequest, StopPodSandboxResponse};
use tonic::Status;

use super::{Cri, to_completion};

impl Cri {
    pub(super) async fn stop_pod_sandbox(&self, req: StopPodSandboxRequest) -> Result<StopPodSandboxResponse, Status> {
        let runtime = self.runtime.clone();
        to_completion(async move { runtime.stop_pod_sandbox(&req.pod_sandbox_id).await }).await?;
        Ok(StopPodSandboxResponse {})
    }
}
