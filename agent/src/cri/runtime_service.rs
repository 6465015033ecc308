//! The RuntimeService trait, dispatching each call to the file that owns it.

use cri_proto::v1::*;
use tonic::{Request, Response, Status};

use std::pin::Pin;
use futures::Stream;

use super::{Cri, unimplemented};

#[tonic::async_trait]
impl cri_proto::RuntimeService for Cri {
    type GetContainerEventsStream = Pin<Box<dyn Stream<Item = Result<ContainerEventResponse, Status>> + Send>>;

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

    async fn update_container_resources(&self, _request: Request<UpdateContainerResourcesRequest>) -> Result<Response<UpdateContainerResourcesResponse>, Status> {
        unimplemented("UpdateContainerResources")
    }

    async fn reopen_container_log(&self, _request: Request<ReopenContainerLogRequest>) -> Result<Response<ReopenContainerLogResponse>, Status> {
        unimplemented("ReopenContainerLog")
    }

    async fn exec_sync(&self, _request: Request<ExecSyncRequest>) -> Result<Response<ExecSyncResponse>, Status> {
        unimplemented("ExecSync")
    }

    async fn exec(&self, _request: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        unimplemented("Exec")
    }

    async fn attach(&self, _request: Request<AttachRequest>) -> Result<Response<AttachResponse>, Status> {
        unimplemented("Attach")
    }

    async fn port_forward(&self, _request: Request<PortForwardRequest>) -> Result<Response<PortForwardResponse>, Status> {
        unimplemented("PortForward")
    }

    async fn container_stats(&self, _request: Request<ContainerStatsRequest>) -> Result<Response<ContainerStatsResponse>, Status> {
        unimplemented("ContainerStats")
    }

    async fn list_container_stats(&self, _request: Request<ListContainerStatsRequest>) -> Result<Response<ListContainerStatsResponse>, Status> {
        unimplemented("ListContainerStats")
    }

    async fn pod_sandbox_stats(&self, _request: Request<PodSandboxStatsRequest>) -> Result<Response<PodSandboxStatsResponse>, Status> {
        unimplemented("PodSandboxStats")
    }

    async fn list_pod_sandbox_stats(&self, _request: Request<ListPodSandboxStatsRequest>) -> Result<Response<ListPodSandboxStatsResponse>, Status> {
        unimplemented("ListPodSandboxStats")
    }

    async fn update_runtime_config(&self, _request: Request<UpdateRuntimeConfigRequest>) -> Result<Response<UpdateRuntimeConfigResponse>, Status> {
        unimplemented("UpdateRuntimeConfig")
    }

    async fn status(&self, request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(self.status(request.into_inner())))
    }

    async fn checkpoint_container(&self, _request: Request<CheckpointContainerRequest>) -> Result<Response<CheckpointContainerResponse>, Status> {
        unimplemented("CheckpointContainer")
    }

    async fn get_container_events(&self, _request: Request<GetEventsRequest>) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        unimplemented("GetContainerEvents")
    }

    async fn list_metric_descriptors(&self, _request: Request<ListMetricDescriptorsRequest>) -> Result<Response<ListMetricDescriptorsResponse>, Status> {
        unimplemented("ListMetricDescriptors")
    }

    async fn list_pod_sandbox_metrics(&self, _request: Request<ListPodSandboxMetricsRequest>) -> Result<Response<ListPodSandboxMetricsResponse>, Status> {
        unimplemented("ListPodSandboxMetrics")
    }

    async fn runtime_config(&self, _request: Request<RuntimeConfigRequest>) -> Result<Response<RuntimeConfigResponse>, Status> {
        Ok(Response::new(self.runtime_config()))
    }

}
