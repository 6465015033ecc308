//! `PullImage`: fetch an image (mirrors, credentials from the request) and return its id.
//! Concurrent pulls of the same image share one download.

use cri_proto::v1::{PullImageRequest, PullImageResponse};
use tonic::Status;

use super::{Cri, to_status};

impl Cri {
    pub(super) async fn pull_image(&self, req: PullImageRequest) -> Result<PullImageResponse, Status> {
        let image = req.image.map(|i| i.image).unwrap_or_default();
        if image.is_empty() {
            return Err(Status::invalid_argument("PullImage needs an image reference"));
        }
        // Like containerd, the image ref returned is the image id (config digest): what
        // kubelet then passes to CreateContainer.
        let started = std::time::Instant::now();
        let pulled = self.runtime.images().pull(&image, req.auth.as_ref()).await;
        let size = match &pulled {
            Ok(id) => Some(self.runtime.images().status(id, false).ok().flatten().map_or(0, |(i, _)| i.size)),
            Err(_) => None,
        };
        self.metrics.observe_pull(started.elapsed(), size);
        let image_ref = pulled.map_err(to_status)?;
        Ok(PullImageResponse { image_ref })
    }
}
