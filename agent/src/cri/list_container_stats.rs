//! `ListContainerStats`: stats of every container matching a filter.

use cri_proto::v1::{ListContainerStatsRequest, ListContainerStatsResponse};
use tonic::Status;

use super::{Cri, unimplemented};

impl Cri {
    pub(super) async fn list_container_stats(&self, _req: ListContainerStatsRequest) -> Result<ListContainerStatsResponse, Status> {
        unimplemented("ListContainerStats")
    }
}
