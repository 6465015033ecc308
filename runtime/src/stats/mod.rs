//! Container and pod stats (ContainerStats, ListContainerStats, PodSandboxStats,
//! ListPodSandboxStats) and the cAdvisor-style metrics built from them.
//!
//! cpu, memory and process figures come from the cgroups through libcgroups; the writable
//! layer is the container's overlay upper dir; pod network figures are the interfaces of
//! the pod's network namespace as its infra process sees them. `usage_nano_cores` is a
//! rate: it needs the previous sample of the same container or pod, kept in [`StatsCache`]
//! (as containerd and cAdvisor do), so the first call after a start reports none.

mod cgroup;
mod container;
mod layer;
mod metrics;
mod network;
mod pod;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cri_proto::v1;
use libcgroups::common::{AnyCgroupManager, CgroupConfig};

pub use cgroup::Sample;
pub use metrics::descriptors;

use crate::sandbox::store::lock;

/// Samples closer together than this give no new rate: the last one is reported again
/// (kubelet and a metrics scraper asking at once must not see a rate over a few µs).
const MIN_RATE_INTERVAL_NS: i64 = 100_000_000;

/// cgroup managers (built once per cgroup: libcgroups logs each construction) and the
/// previous cpu sample of every container and pod.
#[derive(Clone, Default)]
pub struct StatsCache {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    managers: Mutex<HashMap<PathBuf, Arc<AnyCgroupManager>>>,
    cpu: Mutex<HashMap<String, CpuPoint>>,
}

#[derive(Debug, Clone, Copy)]
struct CpuPoint {
    timestamp: i64,
    total_ns: u64,
    nano_cores: Option<u64>,
}

impl std::fmt::Debug for StatsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsCache").field("cpu_samples", &lock(&self.inner.cpu).len()).finish()
    }
}

impl StatsCache {
    /// Reads `cgroup` (a cgroupfs path); `Err` when it is gone or unreadable.
    pub fn sample(&self, cgroup: &Path) -> Result<Sample, String> {
        let manager = self.manager(cgroup)?;
        let v2 = crate::spec::HostFacts::get().cgroup_v2;
        cgroup::read(&manager, v2)
    }

    pub(crate) fn manager(&self, cgroup: &Path) -> Result<Arc<AnyCgroupManager>, String> {
        if let Some(m) = lock(&self.inner.managers).get(cgroup) {
            return Ok(m.clone());
        }
        let config = CgroupConfig { cgroup_path: cgroup.to_path_buf(), systemd_cgroup: false, container_name: String::new() };
        // libcgroups logs every controller this host lacks (warn) and its own choice of
        // version (info) each time: noise in the daemon's log once per container.
        let quiet = tracing::subscriber::NoSubscriber::default();
        let created = tracing::subscriber::with_default(quiet, || libcgroups::common::create_cgroup_manager(config));
        let manager = Arc::new(created.map_err(|e| e.to_string())?);
        lock(&self.inner.managers).insert(cgroup.to_path_buf(), manager.clone());
        Ok(manager)
    }

    /// The cpu rate since the previous sample of `key`, in nanocores.
    fn nano_cores(&self, key: &str, sample: &Sample) -> Option<u64> {
        let mut points = lock(&self.inner.cpu);
        let now = CpuPoint { timestamp: sample.timestamp, total_ns: sample.cpu.total_ns, nano_cores: None };
        let Some(prev) = points.get(key).copied() else {
            points.insert(key.to_string(), now);
            return None;
        };
        let elapsed = sample.timestamp - prev.timestamp;
        if (0..MIN_RATE_INTERVAL_NS).contains(&elapsed) {
            return prev.nano_cores;
        }
        // A counter that went back (a new cgroup under the same key) starts over.
        let rate = (elapsed > 0 && sample.cpu.total_ns >= prev.total_ns)
            .then(|| ((sample.cpu.total_ns - prev.total_ns) as u128 * 1_000_000_000 / elapsed as u128) as u64);
        points.insert(key.to_string(), CpuPoint { nano_cores: rate, ..now });
        rate
    }

    /// Drops what is kept for a removed container or pod.
    pub fn forget(&self, id: &str, cgroup: Option<&Path>) {
        lock(&self.inner.cpu).remove(id);
        if let Some(cgroup) = cgroup {
            lock(&self.inner.managers).remove(cgroup);
        }
    }

    /// CRI's cpu and memory messages from a sample.
    fn cpu_and_memory(&self, key: &str, sample: &Sample) -> (v1::CpuUsage, v1::MemoryUsage) {
        let value = |value| Some(v1::UInt64Value { value });
        let cpu = v1::CpuUsage {
            timestamp: sample.timestamp,
            usage_core_nano_seconds: value(sample.cpu.total_ns),
            usage_nano_cores: self.nano_cores(key, sample).map(|value| v1::UInt64Value { value }),
        };
        let m = &sample.memory;
        let memory = v1::MemoryUsage {
            timestamp: sample.timestamp,
            working_set_bytes: value(m.working_set),
            available_bytes: m.available().map(|value| v1::UInt64Value { value }),
            usage_bytes: value(m.usage),
            rss_bytes: value(m.rss),
            page_faults: value(m.page_faults),
            major_page_faults: value(m.major_page_faults),
        };
        (cpu, memory)
    }
}

/// Pods' cpu samples are kept apart from containers' (a pod id never equals a container
/// id, but the infra cgroup is named by the pod id).
pub(crate) fn pod_key(id: &str) -> String {
    format!("pod/{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(timestamp: i64, total_ns: u64) -> Sample {
        Sample { timestamp, cpu: cgroup::Cpu { total_ns, ..Default::default() }, ..Default::default() }
    }

    #[test]
    fn nano_cores_come_from_the_previous_sample() {
        let cache = StatsCache::default();
        assert_eq!(cache.nano_cores("c", &sample(1_000_000_000, 0)), None, "no rate from one sample");
        // Half a core for two seconds.
        assert_eq!(cache.nano_cores("c", &sample(3_000_000_000, 1_000_000_000)), Some(500_000_000));
        // Asked again right away: the same rate, the sample kept.
        assert_eq!(cache.nano_cores("c", &sample(3_000_001_000, 1_000_000_500)), Some(500_000_000));
        // Two full cores for one second.
        assert_eq!(cache.nano_cores("c", &sample(4_000_000_000, 3_000_000_000)), Some(2_000_000_000));
        // A counter that restarted gives no rate, then rates again.
        assert_eq!(cache.nano_cores("c", &sample(5_000_000_000, 10)), None);
        assert_eq!(cache.nano_cores("c", &sample(6_000_000_000, 250_000_010)), Some(250_000_000));
        cache.forget("c", None);
        assert_eq!(cache.nano_cores("c", &sample(7_000_000_000, 0)), None);
    }
}
