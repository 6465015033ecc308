//! `PortForward`: hand out a streaming-server URL to forward ports into a ready pod's network.

use capstan_runtime::streaming::cache::StreamRequest;
use cri_proto::v1::{PodSandboxState, PortForwardRequest, PortForwardResponse};
use tonic::Status;

use super::{Cri, to_status};

impl Cri {
    pub(super) async fn port_forward(&self, req: PortForwardRequest) -> Result<PortForwardResponse, Status> {
        let ports = req
            .port
            .iter()
            .map(|&p| u16::try_from(p).ok().filter(|&p| p > 0).ok_or_else(|| Status::invalid_argument(format!("{p} is not a port"))))
            .collect::<Result<Vec<u16>, Status>>()?;
        let status = self.runtime.pod_sandbox_status(&req.pod_sandbox_id, false).map_err(to_status)?.status.unwrap_or_default();
        if status.state != PodSandboxState::SandboxReady as i32 {
            return Err(Status::failed_precondition(format!("pod sandbox {} is not ready", status.id)));
        }
        tracing::debug!(pod_id = %status.id, ?ports, "port-forward URL requested");
        let url = self.streaming_url(StreamRequest::PortForward { pod_id: status.id, ports })?;
        Ok(PortForwardResponse { url })
    }
}
