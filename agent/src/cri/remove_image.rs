//! `RemoveImage`: drop an image (every tag and digest naming it) and the content nothing
//! else uses. Removing an absent image is not an error (CRI: RemoveImage is idempotent).

use cri_proto::v1::{RemoveImageRequest, RemoveImageResponse};
use tonic::Status;

use super::{Cri, to_status};

impl Cri {
    pub(super) async fn remove_image(&self, req: RemoveImageRequest) -> Result<RemoveImageResponse, Status> {
        let image = req.image.map(|i| i.image).unwrap_or_default();
        if image.is_empty() {
            return Err(Status::invalid_argument("RemoveImage needs an image reference"));
        }
        let images = self.runtime.images().clone();
        // Deleting snapshot trees is blocking disk work.
        tokio::task::spawn_blocking(move || images.remove(&image))
            .await
            .map_err(|e| Status::internal(format!("remove task failed: {e}")))?
            .map_err(to_status)?;
        Ok(RemoveImageResponse {})
    }
}
