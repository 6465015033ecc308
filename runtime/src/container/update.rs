//! UpdateContainerResources: new cgroup limits for a created or running container, written
//! straight into its cgroup through libcgroups (v1 and v2), then recorded beside the
//! container (`resources.json`) so ContainerStatus reports what is in force.
//!
//! The request is converted exactly as CreateContainer converts it
//! (`spec::resources::container_resources`), so the same values are refused and the same
//! defaults apply (swap equal to the memory limit where swap is accounted). Zero fields
//! mean "unchanged", as everywhere in CRI.

use std::path::{Path, PathBuf};

use cri_proto::v1;
use libcgroups::common::{CgroupManager, ControllerOpt};

use super::store::{Container, ContainerRecord};
use crate::{Error, Result, Runtime};

const RESOURCES_FILE: &str = "resources.json";

impl Runtime {
    #[tracing::instrument(name = "update_container_resources", skip(self, asked), fields(container_id = %id))]
    pub async fn update_container_resources(&self, id: &str, asked: Option<v1::LinuxContainerResources>) -> Result<()> {
        let c = self.containers.find(id)?;
        let sandbox = self.sandboxes.find(&c.record.pod_id)?;
        let _shared = sandbox.lock.read().await;
        let _lock = c.lock.lock().await;
        let state = self.observe(&c).state;
        let live = [v1::ContainerState::ContainerCreated as i32, v1::ContainerState::ContainerRunning as i32];
        if !live.contains(&state) {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running: there is no cgroup to update",
                c.record.id
            )));
        }
        // Nothing asked for Linux (a Windows-only request): nothing to do.
        let Some(asked) = asked else { return Ok(()) };
        let oci = crate::spec::resources::container_resources(Some(&asked), crate::spec::HostFacts::get(), None)?;
        let merged = merge(resources_in_force(&c.record), &asked);
        if !super::store::launched(c.record.runtime_status().as_ref()) {
            // No cgroup yet: the monitor creates it at StartContainer from the bundle.
            update_bundle(&c.record, &merged)?;
        } else {
            self.update_cgroup(&c.record, oci).await?;
        }
        let path = resources_path(&c.record.dir);
        crate::atomic::replace_json(&path, &merged).map_err(Error::io("cannot record the container's resources", &path))?;
        tracing::info!(container_id = %c.record.id, resources = ?merged, "container resources updated");
        Ok(())
    }

    async fn update_cgroup(&self, record: &ContainerRecord, oci: oci_spec::runtime::LinuxResources) -> Result<()> {
        let cgroup = record.cgroup.clone();
        let manager = self.stats.manager(&cgroup).map_err(|e| Error::Internal(format!("cgroup {}: {e}", cgroup.display())))?;
        tokio::task::spawn_blocking(move || {
            let opt = ControllerOpt { resources: &oci, freezer_state: None, oom_score_adj: None, disable_oom_killer: false };
            manager.apply(&opt).map_err(|e| apply_error(&cgroup, &e.to_string()))
        })
        .await
        .map_err(|e| Error::Internal(format!("cgroup update task failed: {e}")))?
    }
}

/// Puts `merged` (everything in force) into the bundle of a container not started yet;
/// device rules and the pids limit stay as created.
fn update_bundle(record: &ContainerRecord, merged: &v1::LinuxContainerResources) -> Result<()> {
    let full = crate::spec::resources::container_resources(Some(merged), crate::spec::HostFacts::get(), None)?;
    let path = record.bundle().join("config.json");
    let mut spec = oci_spec::runtime::Spec::load(&path).map_err(|e| Error::Internal(format!("cannot read {}: {e}", path.display())))?;
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut resources = linux.resources().clone().unwrap_or_default();
    resources.set_cpu(full.cpu().clone());
    resources.set_memory(*full.memory());
    resources.set_hugepage_limits(full.hugepage_limits().clone());
    resources.set_unified(full.unified().clone());
    linux.set_resources(Some(resources));
    spec.set_linux(Some(linux));
    spec.save(&path).map_err(|e| Error::Internal(format!("cannot write {}: {e}", path.display())))
}

/// What the container runs with: the last update, else what it was created with.
pub fn resources_in_force(record: &ContainerRecord) -> Option<v1::LinuxContainerResources> {
    crate::atomic::read_json(&resources_path(&record.dir))
        .ok()
        .or_else(|| record.config.linux.as_ref().and_then(|l| l.resources.clone()))
}

/// ContainerStatus.resources of `c`.
pub(crate) fn status_resources(c: &Container) -> Option<v1::ContainerResources> {
    resources_in_force(&c.record).map(|linux| v1::ContainerResources { linux: Some(linux), windows: None })
}

fn resources_path(dir: &Path) -> PathBuf {
    dir.join(RESOURCES_FILE)
}

/// The kernel refusing a value is the caller's mistake (EINVAL, ERANGE), or the container's state
/// (EBUSY: a memory limit below what it uses on v1); anything else is ours.
fn apply_error(cgroup: &Path, message: &str) -> Error {
    let message = format!("cannot update cgroup {}: {message}", cgroup.display());
    if message.contains("(os error 22)") || message.contains("(os error 34)") {
        Error::InvalidArgument(message)
    } else if message.contains("(os error 16)") {
        Error::FailedPrecondition(message)
    } else {
        Error::Internal(message)
    }
}

/// `new` over `old`, field by field: unset (zero, empty) fields keep the old value.
fn merge(old: Option<v1::LinuxContainerResources>, new: &v1::LinuxContainerResources) -> v1::LinuxContainerResources {
    let mut out = old.unwrap_or_default();
    let pick = |old: &mut i64, new: i64| {
        if new != 0 {
            *old = new;
        }
    };
    pick(&mut out.cpu_period, new.cpu_period);
    pick(&mut out.cpu_quota, new.cpu_quota);
    pick(&mut out.cpu_shares, new.cpu_shares);
    pick(&mut out.memory_limit_in_bytes, new.memory_limit_in_bytes);
    pick(&mut out.memory_swap_limit_in_bytes, new.memory_swap_limit_in_bytes);
    for (old, new) in [(&mut out.cpuset_cpus, &new.cpuset_cpus), (&mut out.cpuset_mems, &new.cpuset_mems)] {
        if !new.is_empty() {
            old.clone_from(new);
        }
    }
    if !new.hugepage_limits.is_empty() {
        out.hugepage_limits.clone_from(&new.hugepage_limits);
    }
    out.unified.extend(new.unified.clone());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_fields_keep_what_is_in_force() {
        let old = v1::LinuxContainerResources {
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            memory_limit_in_bytes: 64 << 20,
            cpuset_cpus: "0".into(),
            oom_score_adj: 5,
            ..Default::default()
        };
        let new = v1::LinuxContainerResources { memory_limit_in_bytes: 128 << 20, cpu_quota: 20_000, ..Default::default() };
        let m = merge(Some(old), &new);
        assert_eq!((m.cpu_shares, m.cpu_quota, m.cpu_period), (512, 20_000, 100_000));
        assert_eq!((m.memory_limit_in_bytes, m.cpuset_cpus.as_str(), m.oom_score_adj), (128 << 20, "0", 5));
        assert_eq!(merge(None, &new), v1::LinuxContainerResources { memory_limit_in_bytes: 128 << 20, cpu_quota: 20_000, ..Default::default() });
    }

    #[test]
    fn kernel_refusals_are_classified() {
        let p = Path::new("/c");
        assert!(matches!(apply_error(p, "failed to write 0-99 to cpuset.cpus: Invalid argument (os error 22)"), Error::InvalidArgument(_)));
        assert!(matches!(apply_error(p, "write: Device or resource busy (os error 16)"), Error::FailedPrecondition(_)));
        assert!(matches!(apply_error(p, "no such file"), Error::Internal(_)));
    }
}
