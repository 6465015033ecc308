//! Prometheus metrics: per-RPC latency and results (recorded by [`layer::RpcMetricsLayer`]
//! around the gRPC server), image pulls (recorded by the PullImage handler), and pods,
//! containers and lost monitors by state (read from the runtime at each scrape). Served by
//! [`http::serve`] at `[metrics] address`.

pub mod http;
pub mod layer;

use std::sync::Arc;
use std::time::Duration;

use capstan_runtime::Runtime;
use cri_proto::v1;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PullLabels {
    result: String,
}

/// 0.5 ms … ~16 s: CRI calls range from sub-millisecond status reads to image pulls.
fn rpc_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// 10 ms … ~5 min.
fn pull_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 15))
}

type Histograms = Family<MethodLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    rpc_duration: Histograms,
    rpc_results: Family<ResultLabels, Counter>,
    pulls: Family<PullLabels, Counter>,
    pull_duration: Histogram,
    pulled_bytes: Counter,
    pods: Family<StateLabels, Gauge>,
    containers: Family<StateLabels, Gauge>,
    monitors_lost: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("capstan");
        let rpc_duration: Histograms = Family::new_with_constructor(rpc_histogram);
        let rpc_results = Family::<ResultLabels, Counter>::default();
        let pulls = Family::<PullLabels, Counter>::default();
        let pull_duration = pull_histogram();
        let pulled_bytes = Counter::default();
        let pods = Family::<StateLabels, Gauge>::default();
        let containers = Family::<StateLabels, Gauge>::default();
        let monitors_lost = Gauge::default();
        registry.register("grpc_request_duration_seconds", "CRI call latency by method", rpc_duration.clone());
        registry.register("grpc_requests", "CRI calls by method and gRPC status code", rpc_results.clone());
        registry.register("image_pulls", "PullImage calls by result", pulls.clone());
        registry.register("image_pull_duration_seconds", "PullImage latency", pull_duration.clone());
        registry.register("image_pulled_bytes", "Size of the images pulled", pulled_bytes.clone());
        registry.register("pods", "Pod sandboxes by state", pods.clone());
        registry.register("containers", "Containers by state", containers.clone());
        registry.register(
            "pod_monitors_lost",
            "Ready pods whose monitor process is gone (the pod is reported NotReady; kubelet recreates it)",
            monitors_lost.clone(),
        );
        Metrics { registry, rpc_duration, rpc_results, pulls, pull_duration, pulled_bytes, pods, containers, monitors_lost }
    }

    /// One finished CRI call: `method` like `RuntimeService/Version`, `code` a gRPC code name.
    pub fn observe_rpc(&self, method: &str, code: &str, elapsed: Duration) {
        self.rpc_duration.get_or_create(&MethodLabels { method: method.into() }).observe(elapsed.as_secs_f64());
        self.rpc_results.get_or_create(&ResultLabels { method: method.into(), code: code.into() }).inc();
    }

    /// One PullImage: its duration and, when it succeeded, the image's size.
    pub fn observe_pull(&self, elapsed: Duration, size: Option<u64>) {
        let result = if size.is_some() { "success" } else { "failure" };
        self.pulls.get_or_create(&PullLabels { result: result.into() }).inc();
        self.pull_duration.observe(elapsed.as_secs_f64());
        if let Some(bytes) = size {
            self.pulled_bytes.inc_by(bytes);
        }
    }

    /// The text exposition, with the state gauges refreshed from the runtime first.
    pub fn render(&self, runtime: &Runtime) -> Result<String, std::fmt::Error> {
        self.refresh(runtime);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    fn refresh(&self, runtime: &Runtime) {
        let pods = runtime.list_pod_sandbox(None);
        for state in [v1::PodSandboxState::SandboxReady, v1::PodSandboxState::SandboxNotready] {
            let n = pods.iter().filter(|p| p.state == state as i32).count();
            self.pods.get_or_create(&StateLabels { state: state_name(state.as_str_name()) }).set(n as i64);
        }
        let containers = runtime.list_containers(None);
        for state in [
            v1::ContainerState::ContainerCreated,
            v1::ContainerState::ContainerRunning,
            v1::ContainerState::ContainerExited,
            v1::ContainerState::ContainerUnknown,
        ] {
            let n = containers.iter().filter(|c| c.state == state as i32).count();
            self.containers.get_or_create(&StateLabels { state: state_name(state.as_str_name()) }).set(n as i64);
        }
        self.monitors_lost.set(runtime.lost_monitors() as i64);
    }
}

/// `SANDBOX_READY` → `ready`, `CONTAINER_RUNNING` → `running`.
fn state_name(proto: &str) -> String {
    let short = proto.split_once('_').map_or(proto, |(_, rest)| rest);
    short.to_ascii_lowercase()
}

/// Shared by the gRPC layer, the handlers and the HTTP endpoint.
pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_and_pull_figures_appear_in_the_exposition() {
        let m = Metrics::new();
        m.observe_rpc("RuntimeService/Version", "OK", Duration::from_millis(2));
        m.observe_rpc("RuntimeService/Version", "OK", Duration::from_millis(3));
        m.observe_rpc("ImageService/PullImage", "NotFound", Duration::from_millis(30));
        m.observe_pull(Duration::from_millis(500), Some(1234));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &m.registry).unwrap();
        assert!(text.contains(r#"capstan_grpc_requests_total{method="RuntimeService/Version",code="OK"} 2"#), "{text}");
        assert!(text.contains(r#"capstan_grpc_requests_total{method="ImageService/PullImage",code="NotFound"} 1"#), "{text}");
        assert!(text.contains(r#"capstan_grpc_request_duration_seconds_count{method="RuntimeService/Version"} 2"#), "{text}");
        assert!(text.contains(r#"capstan_image_pulls_total{result="success"} 1"#), "{text}");
        assert!(text.contains("capstan_image_pulled_bytes_total 1234"), "{text}");
    }

    #[test]
    fn state_names_are_short() {
        assert_eq!(state_name("SANDBOX_NOTREADY"), "notready");
        assert_eq!(state_name("CONTAINER_RUNNING"), "running");
    }
}
