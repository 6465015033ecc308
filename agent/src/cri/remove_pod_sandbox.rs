//! `RemovePodSandbox`: removes the pod and everything in it (stopping it first). Idempotent.

use cri_proto::v1::{RemovePodSandboxRequest, RemovePodSandboxResponse};
use tonic::Status;

use super::{Cri, to_completion};

impl Cri {
    pub(super) async fn remove_pod_sandbox(&self, req: RemovePodSandboxRequest) -> Result<RemovePodSandboxResponse, Status> {
        let runtime = self.runtime.clone();
        to_completion(async move { runtime.remove_pod_sandbox(&req.pod_sandbox_id).await }).await?;
        Ok(RemovePodSandboxResponse {})
    }
}
