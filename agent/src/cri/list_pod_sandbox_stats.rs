//! `ListPodSandboxStats`: stats of every pod matching a filter.

use cri_proto::v1::{ListPodSandboxStatsRequest, ListPodSandboxStatsResponse};
use tonic::Status;

use super::{Cri, unimplemented};

impl Cri {
    pub(super) async fn list_pod_sandbox_stats(&self, _req: ListPodSandboxStatsRequest) -> Result<ListPodSandboxStatsResponse, Status> {
        unimplemented("ListPodSandboxStats")
    }
}
