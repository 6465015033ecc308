//! The CRI v1 gRPC edge: one file per call, each thin (decode, validate, call the runtime,
//! map errors in `error.rs`).

mod attach;
mod checkpoint_container;
mod container_stats;
mod container_status;
mod create_container;
mod error;
mod exec;
mod exec_sync;
mod get_container_events;
mod image_fs_info;
mod image_service;
mod image_status;
mod list_container_stats;
mod list_containers;
mod list_images;
mod list_metric_descriptors;
mod list_pod_sandbox;
mod list_pod_sandbox_metrics;
mod list_pod_sandbox_stats;
mod pod_sandbox_stats;
mod pod_sandbox_status;
mod port_forward;
mod pull_image;
mod remove_container;
mod remove_image;
mod remove_pod_sandbox;
mod reopen_container_log;
mod run_pod_sandbox;
mod runtime_config;
mod runtime_service;
mod start_container;
mod status;
mod stop_container;
mod stop_pod_sandbox;
mod update_container_resources;
mod update_runtime_config;
mod version;

use std::sync::Arc;

use capstan_runtime::Runtime;
use capstan_runtime::streaming::cache::StreamRequest;
use capstan_runtime::streaming::server::StreamingServer;

use crate::config::Config;
use crate::metrics::SharedMetrics;

#[allow(unused_imports)] // used by the handlers that call the runtime
pub use error::to_status;

/// The object behind both CRI services.
pub struct Cri {
    runtime: Arc<Runtime>,
    config: Arc<Config>,
    metrics: SharedMetrics,
    /// Hands out the Exec/Attach/PortForward URLs; absent only in tests without one.
    streaming: Option<Arc<StreamingServer>>,
}

impl Cri {
    pub fn new(runtime: Arc<Runtime>, config: Arc<Config>, metrics: SharedMetrics) -> Self {
        Cri { runtime, config, metrics, streaming: None }
    }

    pub fn with_streaming(mut self, streaming: Arc<StreamingServer>) -> Self {
        self.streaming = Some(streaming);
        self
    }

    /// The runtime behind the services, for agent mode's probes of pods without an IP
    /// (a connection inside the pod's netns has no CRI call).
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// A streaming URL for an already validated request.
    fn streaming_url(&self, request: StreamRequest) -> Result<String, tonic::Status> {
        let server = self.streaming.as_ref().ok_or_else(|| tonic::Status::unavailable("the streaming server is not running"))?;
        server.url(request).map_err(to_status)
    }
}

/// Runs a lifecycle step as its own task. tonic drops a handler's future when the client
/// goes away (kubelet's call timeout, a killed crictl); a step cut off half-way would leave
/// mounts, cgroups or a half-made pod behind, so it finishes whatever the client does.
/// (PullImage needs no wrapper: pulls already run as shared tasks of their own.)
async fn to_completion<T, F>(step: F) -> Result<T, tonic::Status>
where
    T: Send + 'static,
    F: std::future::Future<Output = capstan_runtime::Result<T>> + Send + 'static,
{
    match tokio::spawn(step).await {
        Ok(result) => result.map_err(to_status),
        Err(e) => Err(tonic::Status::internal(format!("the runtime task failed: {e}"))),
    }
}

