//! `PodSandboxStatus`: state, IPs, namespaces of one pod.

use cri_proto::v1::{PodSandboxStatusRequest, PodSandboxStatusResponse};
use tonic::Status;

use super::{Cri, to_status};

impl Cri {
    pub(super) fn pod_sandbox_status(&self, req: PodSandboxStatusRequest) -> Result<PodSandboxStatusResponse, Status> {
        self.runtime.pod_sandbox_status(&req.pod_sandbox_id, req.verbose).map_err(to_status)
    }
}
