//! `GetContainerEvents`: a stream of container and sandbox lifecycle events (kubelet's
//! evented PLEG).

use cri_proto::v1::GetEventsRequest;
use tonic::Status;

use super::runtime_service::EventStream;
use super::{Cri, unimplemented};

impl Cri {
    pub(super) async fn get_container_events(&self, _req: GetEventsRequest) -> Result<EventStream, Status> {
        unimplemented("GetContainerEvents")
    }
}
