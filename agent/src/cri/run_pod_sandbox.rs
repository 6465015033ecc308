//! `RunPodSandbox`: creates the pod's namespaces, monitor, files and network; returns its id.

use cri_proto::v1::{RunPodSandboxRequest, RunPodSandboxResponse};
use tonic::Status;

use super::{Cri, to_status};

impl Cri {
    pub(super) async fn run_pod_sandbox(&self, req: RunPodSandboxRequest) -> Result<RunPodSandboxResponse, Status> {
        let config = req.config.ok_or_else(|| Status::invalid_argument("RunPodSandbox needs a sandbox config"))?;
        let id = self.runtime.run_pod_sandbox(config, req.runtime_handler).await.map_err(to_status)?;
        Ok(RunPodSandboxResponse { pod_sandbox_id: id })
    }
}
