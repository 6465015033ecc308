//! `ListPodSandbox`: pods matching the filter (id prefix, state, labels).

use cri_proto::v1::{ListPodSandboxRequest, ListPodSandboxResponse};

use super::Cri;

impl Cri {
    pub(super) fn list_pod_sandbox(&self, req: ListPodSandboxRequest) -> ListPodSandboxResponse {
        ListPodSandboxResponse { items: self.runtime.list_pod_sandbox(req.filter) }
    }
}
