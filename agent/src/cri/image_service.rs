//! The ImageService trait, dispatching each call to the file that owns it.

use cri_proto::v1::*;
use tonic::{Request, Response, Status};

use super::{Cri, unimplemented};

#[tonic::async_trait]
impl cri_proto::ImageService for Cri {
    async fn list_images(&self, _request: Request<ListImagesRequest>) -> Result<Response<ListImagesResponse>, Status> {
        unimplemented("ListImages")
    }

    async fn image_status(&self, _request: Request<ImageStatusRequest>) -> Result<Response<ImageStatusResponse>, Status> {
        unimplemented("ImageStatus")
    }

    async fn pull_image(&self, _request: Request<PullImageRequest>) -> Result<Response<PullImageResponse>, Status> {
        unimplemented("PullImage")
    }

    async fn remove_image(&self, _request: Request<RemoveImageRequest>) -> Result<Response<RemoveImageResponse>, Status> {
        unimplemented("RemoveImage")
    }

    async fn image_fs_info(&self, _request: Request<ImageFsInfoRequest>) -> Result<Response<ImageFsInfoResponse>, Status> {
        unimplemented("ImageFsInfo")
    }

}
