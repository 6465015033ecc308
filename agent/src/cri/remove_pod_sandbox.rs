//! `RemovePodSandbox`: removes the pod and everything in it (stopping it first). Idempotent.

use cri_proto::v1::{RemovePodSandboxRequest, RemovePodSandboxResponse};
use tonic::Status;

use super::{Cri, to_status};

impl Cri {
    pub(super) async fn remove_pod_sandbox(&self, req: RemovePodSandboxRequest) -> Result<RemovePodSandboxResponse, Status> {
        self.runtime.remove_pod_sandbox(&req.pod_sandbox_id).await.map_err(to_status)?;
        Ok(RemovePodSandboxResponse {})
    }
}
