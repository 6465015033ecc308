//! The `DevicePlugin` gRPC service kubelet calls on our socket: the GPU list with health,
//! allocation answers, preferred allocations.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use cri_proto::deviceplugin::v1beta1 as api;
use futures::Stream;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::config::AllocateMode;
use crate::node::gpu::GpuInventory;

/// The extended resource we serve.
pub const RESOURCE_NAME: &str = "nvidia.com/gpu";
/// The CDI kind of the GPUs (`nvidia.com/gpu=<index>`), as `nvidia-ctk cdi generate` writes.
pub const CDI_KIND: &str = "nvidia.com/gpu";

/// What the service answers from.
pub struct GpuPlugin {
    pub inventory: GpuInventory,
    pub host_root: PathBuf,
    pub cdi_spec_dirs: Vec<PathBuf>,
    pub mode: AllocateMode,
    /// The device list with current health, updated by the health poller.
    pub devices: watch::Receiver<Vec<api::Device>>,
}

/// Kubelet only calls GetPreferredAllocation when told it is available; no PreStart work.
pub fn options() -> api::DevicePluginOptions {
    api::DevicePluginOptions { pre_start_required: false, get_preferred_allocation_available: true }
}

type DeviceStream = Pin<Box<dyn Stream<Item = Result<api::ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl api::device_plugin_server::DevicePlugin for GpuPlugin {
    async fn get_device_plugin_options(&self, _: Request<api::Empty>) -> Result<Response<api::DevicePluginOptions>, Status> {
        Ok(Response::new(options()))
    }

    type ListAndWatchStream = DeviceStream;

    /// The current list at once, then the whole list again whenever a device's health
    /// changes, for as long as kubelet keeps the stream open.
    async fn list_and_watch(&self, _: Request<api::Empty>) -> Result<Response<Self::ListAndWatchStream>, Status> {
        let stream = futures::stream::unfold((self.devices.clone(), true), |(mut rx, first)| async move {
            if !first {
                rx.changed().await.ok()?;
            }
            let devices = rx.borrow_and_update().clone();
            Some((Ok(api::ListAndWatchResponse { devices }), (rx, false)))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<api::PreferredAllocationRequest>,
    ) -> Result<Response<api::PreferredAllocationResponse>, Status> {
        let container_responses = request
            .into_inner()
            .container_requests
            .iter()
            .map(|r| api::ContainerPreferredAllocationResponse { device_i_ds: preferred(r) })
            .collect();
        Ok(Response::new(api::PreferredAllocationResponse { container_responses }))
    }

    async fn allocate(&self, request: Request<api::AllocateRequest>) -> Result<Response<api::AllocateResponse>, Status> {
        let use_cdi = match self.mode {
            AllocateMode::Cdi => true,
            AllocateMode::DeviceSpecs => false,
            AllocateMode::Auto => {
                let dirs = self.cdi_spec_dirs.clone();
                let known = tokio::task::spawn_blocking(move || capstan_runtime::spec::cdi::known_devices(&dirs))
                    .await
                    .map_err(|e| Status::internal(format!("CDI lookup failed: {e}")))?;
                let wanted = request.get_ref().container_requests.iter().flat_map(|r| &r.devices_ids);
                wanted.into_iter().all(|id| known.contains(&cdi_name(id)))
            }
        };
        let mut container_responses = Vec::new();
        for r in &request.get_ref().container_requests {
            container_responses.push(self.allocate_one(&r.devices_ids, use_cdi)?);
        }
        tracing::info!(requests = ?request.get_ref().container_requests, cdi = use_cdi, "allocated GPUs");
        Ok(Response::new(api::AllocateResponse { container_responses }))
    }

    async fn pre_start_container(
        &self,
        _: Request<api::PreStartContainerRequest>,
    ) -> Result<Response<api::PreStartContainerResponse>, Status> {
        Ok(Response::new(api::PreStartContainerResponse {}))
    }
}

impl GpuPlugin {
    fn allocate_one(&self, ids: &[String], use_cdi: bool) -> Result<api::ContainerAllocateResponse, Status> {
        let mut gpus = Vec::new();
        for id in ids {
            let gpu = self
                .inventory
                .gpus
                .iter()
                .find(|g| g.index.to_string() == *id)
                .ok_or_else(|| Status::invalid_argument(format!("unknown {RESOURCE_NAME} device {id:?}")))?;
            gpus.push(gpu);
        }
        let mut response = api::ContainerAllocateResponse {
            envs: HashMap::from([("NVIDIA_VISIBLE_DEVICES".to_string(), ids.join(","))]),
            ..Default::default()
        };
        if use_cdi {
            response.cdi_devices = ids.iter().map(|id| api::CdiDevice { name: cdi_name(id) }).collect();
        } else {
            let nodes = gpus.iter().map(|g| g.dev_path.as_path()).chain(self.inventory.control_nodes.iter().map(PathBuf::as_path));
            response.devices = nodes.map(|p| self.device_spec(p)).collect();
        }
        Ok(response)
    }

    /// The node at its path in the container; on the host below the discovery root.
    fn device_spec(&self, path: &Path) -> api::DeviceSpec {
        let host = self.host_root.join(path.strip_prefix("/").unwrap_or(path));
        api::DeviceSpec {
            container_path: path.display().to_string(),
            host_path: host.display().to_string(),
            permissions: "rw".into(),
        }
    }
}

/// `nvidia.com/gpu=<id>`.
pub fn cdi_name(id: &str) -> String {
    format!("{CDI_KIND}={id}")
}

/// The devices kubelet must include, then the lowest-numbered available ones, up to the
/// requested size (no topology to weigh: NUMA placement is left to kubelet's own manager).
fn preferred(r: &api::ContainerPreferredAllocationRequest) -> Vec<String> {
    let size = usize::try_from(r.allocation_size).unwrap_or(0);
    let mut chosen: Vec<String> = r.must_include_device_i_ds.iter().take(size).cloned().collect();
    let mut available: Vec<&String> = r.available_device_i_ds.iter().filter(|id| !chosen.contains(id)).collect();
    available.sort_by_key(|id| (id.parse::<u64>().unwrap_or(u64::MAX), id.to_string()));
    for id in available {
        if chosen.len() >= size {
            break;
        }
        chosen.push(id.clone());
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preferred_keeps_required_then_lowest_indexes() {
        let r = api::ContainerPreferredAllocationRequest {
            available_device_i_ds: vec!["3".into(), "10".into(), "1".into(), "2".into()],
            must_include_device_i_ds: vec!["10".into()],
            allocation_size: 3,
        };
        assert_eq!(preferred(&r), vec!["10", "1", "2"]);
    }
}
