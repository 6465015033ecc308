//! PodSandboxStats and ListPodSandboxStats (filters: id or prefix, label selector). A pod's
//! cpu, memory and process figures are those of its parent cgroup (every container and the
//! infra process are below it); its network figures those of its network namespace.

use std::path::PathBuf;
use std::sync::Arc;

use cri_proto::v1;

use super::container::{ContainerJob, read_one};
use super::network::{self, Interface};
use super::{Sample, StatsCache, pod_key};
use crate::sandbox::status::cri_state;
use crate::sandbox::{Sandbox, labels_match};
use crate::{Error, Result, Runtime};

struct PodJob {
    attributes: v1::PodSandboxAttributes,
    cgroup: PathBuf,
    live: bool,
    /// A process in the pod's own network namespace; `None` for host-network pods.
    netns_pid: Option<i32>,
    containers: Vec<ContainerJob>,
}

/// One pod's CRI stats plus the samples they came from (the metrics use more of them).
pub(crate) struct PodReading {
    pub stats: v1::PodSandboxStats,
    pub interfaces: Vec<Interface>,
    pub containers: Vec<(v1::ContainerStats, Option<Sample>)>,
}

impl Runtime {
    pub async fn pod_sandbox_stats(&self, id: &str) -> Result<v1::PodSandboxStats> {
        let sandbox = self.sandboxes.find(id)?;
        let reading = self.read_pods(vec![sandbox]).await?.pop();
        reading.map(|r| r.stats).ok_or_else(|| Error::Internal("no stats were read".into()))
    }

    /// Stats of the ready pods the filter selects (a stopped pod has nothing left to measure).
    pub async fn list_pod_sandbox_stats(&self, filter: Option<v1::PodSandboxStatsFilter>) -> Result<Vec<v1::PodSandboxStats>> {
        let filter = filter.unwrap_or_default();
        let pods = self.ready_pods(|s| {
            let r = s.record();
            r.id.starts_with(&filter.id) && labels_match(&filter.label_selector, &r.config.labels)
        });
        Ok(self.read_pods(pods).await?.into_iter().map(|r| r.stats).collect())
    }

    pub(crate) fn ready_pods(&self, select: impl Fn(&Sandbox) -> bool) -> Vec<Arc<Sandbox>> {
        let mut pods: Vec<_> = self
            .sandboxes
            .all()
            .into_iter()
            .filter(|s| cri_state(&s.record()) == v1::PodSandboxState::SandboxReady)
            .filter(|s| select(s))
            .collect();
        pods.sort_by_key(|s| s.record().created_at);
        pods
    }

    pub(crate) async fn read_pods(&self, pods: Vec<Arc<Sandbox>>) -> Result<Vec<PodReading>> {
        let jobs: Vec<PodJob> = pods.iter().map(|s| self.pod_job(s)).collect();
        let cache = self.stats.clone();
        let mountpoint = self.layers_mountpoint();
        tokio::task::spawn_blocking(move || jobs.into_iter().map(|job| read_pod(&cache, &mountpoint, job)).collect())
            .await
            .map_err(|e| Error::Internal(format!("stats task failed: {e}")))
    }

    fn pod_job(&self, sandbox: &Sandbox) -> PodJob {
        let r = sandbox.record();
        let mut containers = self.containers.of_pod(&r.id);
        containers.sort_by_key(|c| c.record.created_at);
        PodJob {
            attributes: v1::PodSandboxAttributes {
                id: r.id.clone(),
                metadata: Some(r.metadata()),
                labels: r.config.labels.clone(),
                annotations: r.config.annotations.clone(),
            },
            cgroup: r.cgroups.parent.clone(),
            live: cri_state(&r) == v1::PodSandboxState::SandboxReady,
            netns_pid: r.monitor.as_ref().and_then(|m| m.infra_pid).filter(|_| r.namespaces.network),
            containers: containers.iter().map(|c| self.container_job(c)).collect(),
        }
    }
}

fn read_pod(cache: &StatsCache, mountpoint: &std::path::Path, job: PodJob) -> PodReading {
    let id = job.attributes.id.clone();
    let containers: Vec<_> = job.containers.into_iter().map(|c| read_one(cache, mountpoint, c)).collect();
    let mut linux = v1::LinuxPodSandboxStats { containers: containers.iter().map(|(s, _)| s.clone()).collect(), ..Default::default() };
    let mut interfaces = Vec::new();
    if job.live {
        match cache.sample(&job.cgroup) {
            Ok(s) => {
                let (cpu, memory) = cache.cpu_and_memory(&pod_key(&id), &s);
                linux.cpu = Some(cpu);
                linux.memory = Some(memory);
                let process_count = Some(v1::UInt64Value { value: s.processes });
                linux.process = Some(v1::ProcessUsage { timestamp: s.timestamp, process_count });
            }
            Err(e) => tracing::debug!(pod_id = %id, error = %e, "no cgroup stats for the pod"),
        }
        if let Some(pid) = job.netns_pid {
            let timestamp = crate::id::now_nanos();
            match network::interfaces(pid) {
                Ok(found) => {
                    linux.network = Some(network::usage(timestamp, &found));
                    interfaces = found;
                }
                Err(e) => tracing::debug!(pod_id = %id, error = %e, "no network stats for the pod"),
            }
        }
    }
    let stats = v1::PodSandboxStats { attributes: Some(job.attributes), linux: Some(linux), windows: None };
    PodReading { stats, interfaces, containers }
}
