//! `ListMetricDescriptors`: the cAdvisor-style metrics Capstan reports.

use cri_proto::v1::{ListMetricDescriptorsRequest, ListMetricDescriptorsResponse};
use tonic::Status;

use super::{Cri, unimplemented};

impl Cri {
    pub(super) async fn list_metric_descriptors(&self, _req: ListMetricDescriptorsRequest) -> Result<ListMetricDescriptorsResponse, Status> {
        unimplemented("ListMetricDescriptors")
    }
}
