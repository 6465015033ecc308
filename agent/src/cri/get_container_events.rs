//! `GetContainerEvents`: a stream of container and sandbox lifecycle events (kubelet's
//! evented PLEG). A subscriber too slow for the runtime loses the oldest events (logged);
//! kubelet's periodic relist covers what it missed.

use cri_proto::v1::GetEventsRequest;
use tokio::sync::broadcast::error::RecvError;
use tonic::Status;

use super::Cri;
use super::runtime_service::EventStream;

impl Cri {
    pub(super) async fn get_container_events(&self, _req: GetEventsRequest) -> Result<EventStream, Status> {
        let rx = self.runtime.subscribe_events();
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(event) => return Some((Ok(event), rx)),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "a GetContainerEvents subscriber fell behind; the oldest events were dropped for it");
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        });
        Ok(Box::pin(stream))
    }
}
