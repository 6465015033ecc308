//! `PortForward`: hand out a streaming-server URL to forward ports into a pod's network.

use cri_proto::v1::{PortForwardRequest, PortForwardResponse};
use tonic::Status;

use super::{Cri, unimplemented};

impl Cri {
    pub(super) async fn port_forward(&self, _req: PortForwardRequest) -> Result<PortForwardResponse, Status> {
        unimplemented("PortForward")
    }
}
