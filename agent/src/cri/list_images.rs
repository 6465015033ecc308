//! `ListImages`: every image in the store, or the one the filter names.

use cri_proto::v1::{ListImagesRequest, ListImagesResponse};

use super::Cri;

impl Cri {
    pub(super) fn list_images(&self, req: ListImagesRequest) -> ListImagesResponse {
        let filter = req.filter.and_then(|f| f.image).map(|i| i.image);
        ListImagesResponse { images: self.runtime.images().list(filter.as_deref()) }
    }
}
