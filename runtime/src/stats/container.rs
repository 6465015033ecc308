//! ContainerStats and ListContainerStats (filters: id or prefix, pod sandbox id or prefix,
//! label selector). A container that is not running has no cgroup to read: it reports its
//! attributes and writable layer only.

use std::path::PathBuf;

use cri_proto::v1;

use super::{Sample, StatsCache, layer};
use crate::container::Container;
use crate::sandbox::labels_match;
use crate::{Error, Result, Runtime};

/// What reading one container's stats needs, detached from the stores.
#[derive(Debug, Clone)]
pub(crate) struct ContainerJob {
    pub attributes: v1::ContainerAttributes,
    pub cgroup: PathBuf,
    pub dir: PathBuf,
    /// Created or running: its cgroup exists.
    pub live: bool,
}

impl Runtime {
    pub async fn container_stats(&self, id: &str) -> Result<v1::ContainerStats> {
        let c = self.containers.find(id)?;
        let job = self.container_job(&c);
        self.read_container_stats(vec![job])
            .await?
            .pop()
            .ok_or_else(|| Error::Internal("no stats were read".into()))
    }

    pub async fn list_container_stats(&self, filter: Option<v1::ContainerStatsFilter>) -> Result<Vec<v1::ContainerStats>> {
        let filter = filter.unwrap_or_default();
        let mut containers: Vec<_> = self
            .containers
            .all()
            .into_iter()
            .filter(|c| c.record.id.starts_with(&filter.id))
            .filter(|c| c.record.pod_id.starts_with(&filter.pod_sandbox_id))
            .filter(|c| labels_match(&filter.label_selector, &c.record.config.labels))
            .collect();
        containers.sort_by_key(|c| c.record.created_at);
        let jobs = containers.iter().map(|c| self.container_job(c)).collect();
        self.read_container_stats(jobs).await
    }

    pub(crate) fn container_job(&self, c: &Container) -> ContainerJob {
        let r = &c.record;
        let state = self.observe(c).state;
        let live = state == v1::ContainerState::ContainerRunning as i32 || state == v1::ContainerState::ContainerCreated as i32;
        ContainerJob {
            attributes: v1::ContainerAttributes {
                id: r.id.clone(),
                metadata: Some(r.metadata()),
                labels: r.config.labels.clone(),
                annotations: r.config.annotations.clone(),
            },
            cgroup: r.cgroup.clone(),
            dir: r.dir.clone(),
            live,
        }
    }

    /// The filesystem writable layers live on (as `FilesystemIdentifier.mountpoint`).
    pub(crate) fn layers_mountpoint(&self) -> PathBuf {
        self.options().root_dir.join("containers")
    }

    /// Reads the cgroups and upper dirs on a blocking thread.
    pub(crate) async fn read_container_stats(&self, jobs: Vec<ContainerJob>) -> Result<Vec<v1::ContainerStats>> {
        let cache = self.stats.clone();
        let mountpoint = self.layers_mountpoint();
        tokio::task::spawn_blocking(move || jobs.into_iter().map(|job| read_one(&cache, &mountpoint, job).0).collect())
            .await
            .map_err(|e| Error::Internal(format!("stats task failed: {e}")))
    }
}

/// One container's CRI stats, and the sample they came from (metrics use more of it).
pub(crate) fn read_one(cache: &StatsCache, mountpoint: &std::path::Path, job: ContainerJob) -> (v1::ContainerStats, Option<Sample>) {
    let mut stats = v1::ContainerStats {
        writable_layer: Some(layer::usage(&job.dir, mountpoint)),
        ..Default::default()
    };
    let mut sample = None;
    if job.live {
        match cache.sample(&job.cgroup) {
            Ok(s) => {
                let (cpu, memory) = cache.cpu_and_memory(&job.attributes.id, &s);
                stats.cpu = Some(cpu);
                stats.memory = Some(memory);
                sample = Some(s);
            }
            // It may have exited between the state check and the read.
            Err(e) => tracing::debug!(container_id = %job.attributes.id, error = %e, "no cgroup stats"),
        }
    }
    stats.attributes = Some(job.attributes);
    (stats, sample)
}
