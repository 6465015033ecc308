//! ListMetricDescriptors and ListPodSandboxMetrics: the cAdvisor metric names kubelet's
//! `/metrics/cadvisor` endpoint serves when it takes them from the runtime
//! (`PodAndContainerStatsFromCRI`). CRI values are integers, so `*_seconds_total` counters
//! are whole seconds, as in CRI-O.

use cri_proto::v1;

use super::Sample;
use super::network::Interface;
use super::pod::PodReading;
use crate::{Result, Runtime};

/// Label keys of per-container metrics, in the order of `Metric.label_values`.
const CONTAINER_LABELS: &[&str] = &["container", "id", "image", "namespace", "pod"];
/// Label keys of the pod's per-interface network metrics.
const NETWORK_LABELS: &[&str] = &["interface", "namespace", "pod"];

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

#[derive(Clone, Copy, PartialEq)]
enum Family {
    Container,
    Network,
}

struct Def {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    family: Family,
}

const fn def(name: &'static str, help: &'static str, kind: Kind, family: Family) -> Def {
    Def { name, help, kind, family }
}

use Family::{Container, Network};
use Kind::{Counter, Gauge};

const DEFS: &[Def] = &[
    def("container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", Counter, Container),
    def("container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds.", Counter, Container),
    def("container_cpu_system_seconds_total", "Cumulative system cpu time consumed in seconds.", Counter, Container),
    def("container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed.", Gauge, Container),
    def("container_memory_working_set_bytes", "Current working set in bytes.", Gauge, Container),
    def("container_memory_rss", "Size of RSS in bytes.", Gauge, Container),
    def("container_memory_cache", "Number of bytes of page cache memory.", Gauge, Container),
    def("container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes.", Gauge, Container),
    def("container_memory_failcnt", "Number of memory usage hits limits.", Counter, Container),
    def("container_spec_memory_limit_bytes", "Memory limit for the container (0: none).", Gauge, Container),
    def("container_processes", "Number of processes running inside the container.", Gauge, Container),
    def("container_fs_usage_bytes", "Number of bytes consumed by the container's writable layer.", Gauge, Container),
    def("container_fs_inodes_used", "Number of inodes used by the container's writable layer.", Gauge, Container),
    def("container_network_receive_bytes_total", "Cumulative count of bytes received.", Counter, Network),
    def("container_network_transmit_bytes_total", "Cumulative count of bytes transmitted.", Counter, Network),
    def("container_network_receive_packets_total", "Cumulative count of packets received.", Counter, Network),
    def("container_network_transmit_packets_total", "Cumulative count of packets transmitted.", Counter, Network),
    def("container_network_receive_errors_total", "Cumulative count of errors encountered while receiving.", Counter, Network),
    def("container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting.", Counter, Network),
    def("container_network_receive_packets_dropped_total", "Cumulative count of packets dropped while receiving.", Counter, Network),
    def("container_network_transmit_packets_dropped_total", "Cumulative count of packets dropped while transmitting.", Counter, Network),
];

/// Every metric ListPodSandboxMetrics may return.
pub fn descriptors() -> Vec<v1::MetricDescriptor> {
    DEFS.iter()
        .map(|d| v1::MetricDescriptor {
            name: d.name.into(),
            help: d.help.into(),
            label_keys: match d.family {
                Container => CONTAINER_LABELS,
                Network => NETWORK_LABELS,
            }
            .iter()
            .map(|k| k.to_string())
            .collect(),
        })
        .collect()
}

impl Runtime {
    /// Metrics of every ready pod and its running containers.
    pub async fn list_pod_sandbox_metrics(&self) -> Result<Vec<v1::PodSandboxMetrics>> {
        let pods = self.ready_pods(|_| true);
        let readings = self.read_pods(pods).await?;
        Ok(readings.iter().map(|r| self.pod_metrics(r)).collect())
    }

    fn pod_metrics(&self, reading: &PodReading) -> v1::PodSandboxMetrics {
        let attributes = reading.stats.attributes.clone().unwrap_or_default();
        let meta = attributes.metadata.clone().unwrap_or_default();
        let timestamp = crate::id::now_nanos();
        let metrics = reading
            .interfaces
            .iter()
            .flat_map(|i| network_metrics(i, &[i.name.as_str(), meta.namespace.as_str(), meta.name.as_str()], timestamp))
            .collect();
        let container_metrics = reading
            .containers
            .iter()
            .filter_map(|(stats, sample)| {
                let sample = sample.as_ref()?;
                let c = stats.attributes.as_ref()?;
                let image = self.containers.get(&c.id).map(|c| c.record.image.clone()).unwrap_or_default();
                let name = c.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
                let labels = [name.as_str(), c.id.as_str(), image.as_str(), meta.namespace.as_str(), meta.name.as_str()];
                let layer = stats.writable_layer.as_ref();
                let fs = (
                    layer.and_then(|l| l.used_bytes.as_ref()).map_or(0, |v| v.value),
                    layer.and_then(|l| l.inodes_used.as_ref()).map_or(0, |v| v.value),
                );
                Some(v1::ContainerMetrics { container_id: c.id.clone(), metrics: container_values(sample, fs, &labels) })
            })
            .collect();
        v1::PodSandboxMetrics { pod_sandbox_id: attributes.id, metrics, container_metrics }
    }
}

fn metric(name: &str, timestamp: i64, labels: &[&str], value: u64) -> v1::Metric {
    let kind = DEFS.iter().find(|d| d.name == name).map_or(Kind::Gauge, |d| d.kind);
    v1::Metric {
        name: name.into(),
        timestamp,
        metric_type: match kind {
            Kind::Counter => v1::MetricType::Counter,
            Kind::Gauge => v1::MetricType::Gauge,
        } as i32,
        label_values: labels.iter().map(|l| l.to_string()).collect(),
        value: Some(v1::UInt64Value { value }),
    }
}

fn container_values(s: &Sample, (fs_bytes, fs_inodes): (u64, u64), labels: &[&str]) -> Vec<v1::Metric> {
    let t = s.timestamp;
    let m = &s.memory;
    [
        ("container_cpu_usage_seconds_total", s.cpu.total_ns / 1_000_000_000),
        ("container_cpu_user_seconds_total", s.cpu.user_ns / 1_000_000_000),
        ("container_cpu_system_seconds_total", s.cpu.system_ns / 1_000_000_000),
        ("container_memory_usage_bytes", m.usage),
        ("container_memory_working_set_bytes", m.working_set),
        ("container_memory_rss", m.rss),
        ("container_memory_cache", m.cache),
        ("container_memory_max_usage_bytes", m.max_usage),
        ("container_memory_failcnt", m.fail_count),
        ("container_spec_memory_limit_bytes", m.limit.unwrap_or(0)),
        ("container_processes", s.processes),
        ("container_fs_usage_bytes", fs_bytes),
        ("container_fs_inodes_used", fs_inodes),
    ]
    .into_iter()
    .map(|(name, value)| metric(name, t, labels, value))
    .collect()
}

fn network_metrics(i: &Interface, labels: &[&str], t: i64) -> Vec<v1::Metric> {
    [
        ("container_network_receive_bytes_total", i.rx_bytes),
        ("container_network_transmit_bytes_total", i.tx_bytes),
        ("container_network_receive_packets_total", i.rx_packets),
        ("container_network_transmit_packets_total", i.tx_packets),
        ("container_network_receive_errors_total", i.rx_errors),
        ("container_network_transmit_errors_total", i.tx_errors),
        ("container_network_receive_packets_dropped_total", i.rx_dropped),
        ("container_network_transmit_packets_dropped_total", i.tx_dropped),
    ]
    .into_iter()
    .map(|(name, value)| metric(name, t, labels, value))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_has_a_descriptor_with_matching_labels() {
        let descriptors = descriptors();
        let sample = Sample::default();
        let labels = ["c", "id", "img", "ns", "pod"];
        let mut values = container_values(&sample, (1, 2), &labels);
        values.extend(network_metrics(&Interface { name: "eth0".into(), ..Default::default() }, &["eth0", "ns", "pod"], 1));
        assert_eq!(values.len(), descriptors.len(), "one value per descriptor");
        for v in &values {
            let d = descriptors.iter().find(|d| d.name == v.name).unwrap_or_else(|| panic!("{} has no descriptor", v.name));
            assert_eq!(d.label_keys.len(), v.label_values.len(), "{}", v.name);
            let counter = v.name.ends_with("_total") || v.name == "container_memory_failcnt";
            assert_eq!(v.metric_type == v1::MetricType::Counter as i32, counter, "{}", v.name);
        }
    }
}
