//! `ImageFsInfo`: bytes and inodes the image store really occupies (blobs, records,
//! unpacked snapshots, counted by allocated blocks).

use cri_proto::v1::{ImageFsInfoRequest, ImageFsInfoResponse};

use super::Cri;

impl Cri {
    pub(super) fn image_fs_info(&self, _req: ImageFsInfoRequest) -> ImageFsInfoResponse {
        self.runtime.images().fs_info()
    }
}
