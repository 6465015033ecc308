//! `RunPodSandbox`: creates the pod's namespaces, monitor, files and network; returns its id.

use cri_proto::v1::{RunPodSandboxRequest, RunPodSandboxResponse};
use tonic::Status;

use super::{Cri, to_completion};

impl Cri {
    pub(super) async fn run_pod_sandbox(&self, req: RunPodSandboxRequest) -> Result<RunPodSandboxResponse, Status> {
        let config = req.config.ok_or_else(|| Status::invalid_argument("RunPodSandbox needs a sandbox config"))?;
        // Runs to its end even if kubelet gives up waiting: a pod cut off half-made would
        // hold mounts and a monitor until the next daemon start.
        let runtime = self.runtime.clone();
        let id = to_completion(async move { runtime.run_pod_sandbox(config, req.runtime_handler).await }).await?;
        Ok(RunPodSandboxResponse { pod_sandbox_id: id })
    }
}
