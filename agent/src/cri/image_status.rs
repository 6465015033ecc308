//! `ImageStatus`: one image by tag, digest or id. An absent image is an empty answer, not
//! an error (kubelet asks before every pull). `verbose` adds `info["info"]`: JSON with the
//! manifest digest, layers, chain id, snapshot paths and the OCI config.

use cri_proto::v1::{ImageStatusRequest, ImageStatusResponse};
use tonic::Status;

use super::{Cri, to_status};

impl Cri {
    pub(super) fn image_status(&self, req: ImageStatusRequest) -> Result<ImageStatusResponse, Status> {
        let image = req.image.map(|i| i.image).unwrap_or_default();
        if image.is_empty() {
            return Err(Status::invalid_argument("ImageStatus needs an image reference"));
        }
        Ok(match self.runtime.images().status(&image, req.verbose).map_err(to_status)? {
            Some((image, info)) => ImageStatusResponse { image: Some(image), info },
            None => ImageStatusResponse::default(),
        })
    }
}
