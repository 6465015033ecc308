//! The RuntimeService trait, dispatching each call to the file that owns it.

use cri_proto::v1::*;
use tonic::{Request, Response, Status};

use std::pin::Pin;
use futures::Stream;

use super::Cri;

/// The stream `GetContainerEvents` answers with.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<ContainerEventResponse, Status>> + Send>>;

#[tonic::async_trait]
impl cri_proto::RuntimeService for Cri {
    type GetContainerEventsStream = EventStream;

    async fn version(&self, _request: Request<VersionRequest>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(self.version()))
    }

    async fn run_pod_sandbox(&self, request: Request<RunPodSandboxRequest>) -> Result<Response<RunPodSandboxResponse>, Status> {
        self.run_pod_sandbox(request.into_inner()).await.map(Response::new)
    }

    async fn stop_pod_sandbox(&self, request: Request<StopPodSandboxRequest>) -> Result<Response<StopPodSandboxResponse>, Status> {
        self.stop_pod_sandbox(request.into_inner()).await.map(Response::new)
    }

    async fn remove_pod_sandbox(&self, request: Request<RemovePodSandboxRequest>) -> Result<Response<RemovePodSandboxResponse>, Status> {
        self.remove_pod_sandbox(request.into_inner()).await.map(Response::new)
    }

    async fn pod_sandbox_status(&self, request: Request<PodSandboxStatusRequest>) -> Result<Response<PodSandboxStatusResponse>, Status> {
        self.pod_sandbox_status(request.into_inner()).map(Response::new)
    }

    async fn list_pod_sandbox(&self, request: Request<ListPodSandboxRequest>) -> Result<Response<ListPodSandboxResponse>, Status> {
        Ok(Response::new(self.list_pod_sandbox(request.into_inner())))
    }

    async fn create_container(&self, request: Request<CreateContainerRequest>) -> Result<Response<CreateContainerResponse>, Status> {
        self.create_container(request.into_inner()).await.map(Response::new)
    }

    async fn start_container(&self, request: Request<StartContainerRequest>) -> Result<Response<StartContainerResponse>, Status> {
        self.start_container(request.into_inner()).await.map(Response::new)
    }

    async fn stop_container(&self, request: Request<StopContainerRequest>) -> Result<Response<StopContainerResponse>, Status> {
        self.stop_container(request.into_inner()).await.map(Response::new)
    }

    async fn remove_container(&self, request: Request<RemoveContainerRequest>) -> Result<Response<RemoveContainerResponse>, Status> {
        self.remove_container(request.into_inner()).await.map(Response::new)
    }

    async fn list_containers(&self, request: Request<ListContainersRequest>) -> Result<Response<ListContainersResponse>, Status> {
        Ok(Response::new(self.list_containers(request.into_inner())))
    }

    async fn container_status(&self, request: Request<ContainerStatusRequest>) -> Result<Response<ContainerStatusResponse>, Status> {
        self.container_status(request.into_inner()).map(Response::new)
    }

    async fn update_container_resources(&self, request: Request<UpdateContainerResourcesRequest>) -> Result<Response<UpdateContainerResourcesResponse>, Status> {
        self.update_container_resources(request.into_inner()).await.map(Response::new)
    }

    async fn reopen_container_log(&self, request: Request<ReopenContainerLogRequest>) -> Result<Response<ReopenContainerLogResponse>, Status> {
        self.reopen_container_log(request.into_inner()).await.map(Response::new)
    }

    async fn exec_sync(&self, request: Request<ExecSyncRequest>) -> Result<Response<ExecSyncResponse>, Status> {
        self.exec_sync(request.into_inner()).await.map(Response::new)
    }

    async fn exec(&self, request: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        self.exec(request.into_inner()).await.map(Response::new)
    }

    async fn attach(&self, request: Request<AttachRequest>) -> Result<Response<AttachResponse>, Status> {
        self.attach(request.into_inner()).await.map(Response::new)
    }

    async fn port_forward(&self, request: Request<PortForwardRequest>) -> Result<Response<PortForwardResponse>, Status> {
        self.port_forward(request.into_inner()).await.map(Response::new)
    }

    async fn container_stats(&self, request: Request<ContainerStatsRequest>) -> Result<Response<ContainerStatsResponse>, Status> {
        self.container_stats(request.into_inner()).await.map(Response::new)
    }

    async fn list_container_stats(&self, request: Request<ListContainerStatsRequest>) -> Result<Response<ListContainerStatsResponse>, Status> {
        self.list_container_stats(request.into_inner()).await.map(Response::new)
    }

    async fn pod_sandbox_stats(&self, request: Request<PodSandboxStatsRequest>) -> Result<Response<PodSandboxStatsResponse>, Status> {
        self.pod_sandbox_stats(request.into_inner()).await.map(Response::new)
    }

    async fn list_pod_sandbox_stats(&self, request: Request<ListPodSandboxStatsRequest>) -> Result<Response<ListPodSandboxStatsResponse>, Status> {
        self.list_pod_sandbox_stats(request.into_inner()).await.map(Response::new)
    }

    async fn update_runtime_config(&self, request: Request<UpdateRuntimeConfigRequest>) -> Result<Response<UpdateRuntimeConfigResponse>, Status> {
        self.update_runtime_config(request.into_inner()).await.map(Response::new)
    }

    async fn status(&self, request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(self.status(request.into_inner())))
    }

    async fn checkpoint_container(&self, request: Request<CheckpointContainerRequest>) -> Result<Response<CheckpointContainerResponse>, Status> {
        self.checkpoint_container(request.into_inner()).await.map(Response::new)
    }

    async fn get_container_events(&self, request: Request<GetEventsRequest>) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        self.get_container_events(request.into_inner()).await.map(Response::new)
    }

    async fn list_metric_descriptors(&self, request: Request<ListMetricDescriptorsRequest>) -> Result<Response<ListMetricDescriptorsResponse>, Status> {
        self.list_metric_descriptors(request.into_inner()).await.map(Response::new)
    }

    async fn list_pod_sandbox_metrics(&self, request: Request<ListPodSandboxMetricsRequest>) -> Result<Response<ListPodSandboxMetricsResponse>, Status> {
        self.list_pod_sandbox_metrics(request.into_inner()).await.map(Response::new)
    }

    async fn runtime_config(&self, _request: Request<RuntimeConfigRequest>) -> Result<Response<RuntimeConfigResponse>, Status> {
        Ok(Response::new(self.runtime_config()))
    }

}
