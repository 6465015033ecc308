//! `PodSandboxStats`: cpu, memory, network and process figures of one pod.

use cri_proto::v1::{PodSandboxStatsRequest, PodSandboxStatsResponse};
use tonic::Status;

use super::{Cri, unimplemented};

impl Cri {
    pub(super) async fn pod_sandbox_stats(&self, _req: PodSandboxStatsRequest) -> Result<PodSandboxStatsResponse, Status> {
        unimplemented("PodSandboxStats")
    }
}
