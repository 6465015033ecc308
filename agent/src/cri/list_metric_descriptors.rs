//! `ListMetricDescriptors`: the cAdvisor-style metrics ListPodSandboxMetrics reports.

use cri_proto::v1::{ListMetricDescriptorsRequest, ListMetricDescriptorsResponse};
use tonic::Status;

use super::Cri;

impl Cri {
    pub(super) async fn list_metric_descriptors(&self, _req: ListMetricDescriptorsRequest) -> Result<ListMetricDescriptorsResponse, Status> {
        Ok(ListMetricDescriptorsResponse { descriptors: capstan_runtime::stats::descriptors() })
    }
}
