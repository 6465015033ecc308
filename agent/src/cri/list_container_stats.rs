//! `ListContainerStats`: stats of the containers a filter (id, pod id, labels) selects.

use cri_proto::v1::{ListContainerStatsRequest, ListContainerStatsResponse};
use tonic::Status;

use super::{Cri, to_status};

impl Cri {
    pub(super) async fn list_container_stats(&self, req: ListContainerStatsRequest) -> Result<ListContainerStatsResponse, Status> {
        let stats = self.runtime.list_container_stats(req.filter).await.map_err(to_status)?;
        Ok(ListContainerStatsResponse { stats })
    }
}
