//! The ImageService trait, dispatching each call to the file that owns it.

use cri_proto::v1::*;
use tonic::{Request, Response, Status};

use super::Cri;

#[tonic::async_trait]
impl cri_proto::ImageService for Cri {
    async fn list_images(&self, request: Request<ListImagesRequest>) -> Result<Response<ListImagesResponse>, Status> {
        Ok(Response::new(self.list_images(request.into_inner())))
    }

    async fn image_status(&self, request: Request<ImageStatusRequest>) -> Result<Response<ImageStatusResponse>, Status> {
        self.image_status(request.into_inner()).map(Response::new)
    }

    async fn pull_image(&self, request: Request<PullImageRequest>) -> Result<Response<PullImageResponse>, Status> {
        self.pull_image(request.into_inner()).await.map(Response::new)
    }

    async fn remove_image(&self, request: Request<RemoveImageRequest>) -> Result<Response<RemoveImageResponse>, Status> {
        self.remove_image(request.into_inner()).await.map(Response::new)
    }

    async fn image_fs_info(&self, request: Request<ImageFsInfoRequest>) -> Result<Response<ImageFsInfoResponse>, Status> {
        Ok(Response::new(self.image_fs_info(request.into_inner())))
    }
}
