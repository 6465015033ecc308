//! `ListContainers`: containers matching the filter (id, state, pod, labels).

use cri_proto::v1::{ListContainersRequest, ListContainersResponse};

use super::Cri;

impl Cri {
    pub(super) fn list_containers(&self, req: ListContainersRequest) -> ListContainersResponse {
        ListContainersResponse { containers: self.runtime.list_containers(req.filter) }
    }
}
