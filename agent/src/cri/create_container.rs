//! `CreateContainer`: a container in a ready pod, created but not started.

use cri_proto::v1::{CreateContainerRequest, CreateContainerResponse};
use tonic::Status;

use super::{Cri, to_completion};

impl Cri {
    pub(super) async fn create_container(&self, req: CreateContainerRequest) -> Result<CreateContainerResponse, Status> {
        let config = req.config.ok_or_else(|| Status::invalid_argument("CreateContainer needs a container config"))?;
        // The pod's own record is authoritative; `sandbox_config` is kubelet's copy of it.
        let runtime = self.runtime.clone();
        let id = to_completion(async move { runtime.create_container(&req.pod_sandbox_id, config).await }).await?;
        Ok(CreateContainerResponse { container_id: id })
    }
}
