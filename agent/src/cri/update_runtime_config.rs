//! `UpdateRuntimeConfig`: kubelet tells the runtime the node's pod CIDR. It is recorded and
//! shown by verbose `Status`; the CNI config's own IPAM ranges still decide pod addresses.

use cri_proto::v1::{UpdateRuntimeConfigRequest, UpdateRuntimeConfigResponse};
use tonic::Status;

use super::{Cri, to_status};

impl Cri {
    pub(super) async fn update_runtime_config(&self, req: UpdateRuntimeConfigRequest) -> Result<UpdateRuntimeConfigResponse, Status> {
        let pod_cidr = req.runtime_config.and_then(|c| c.network_config).map(|n| n.pod_cidr).unwrap_or_default();
        self.runtime.update_pod_cidr(&pod_cidr).map_err(to_status)?;
        Ok(UpdateRuntimeConfigResponse {})
    }
}
