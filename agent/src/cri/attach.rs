//! `Attach`: hand out a streaming-server URL to attach to a running container's stdio.

use capstan_runtime::streaming::cache::StreamRequest;
use cri_proto::v1::{AttachRequest, AttachResponse};
use tonic::Status;

use super::Cri;
use super::exec::stream_options;

impl Cri {
    pub(super) async fn attach(&self, req: AttachRequest) -> Result<AttachResponse, Status> {
        let options = stream_options(req.tty, req.stdin, req.stdout, req.stderr)?;
        let container_id = self.running_container(&req.container_id)?;
        tracing::debug!(container_id, tty = req.tty, "attach URL requested");
        let url = self.streaming_url(StreamRequest::Attach { container_id, options })?;
        Ok(AttachResponse { url })
    }
}
