//! CreateContainer: validate → reserve the name in the pod → resolve the image → record →
//! rootfs → OCI spec → bundle → status `Created`. A failure unwinds through the same path
//! RemoveContainer takes.
//!
//! As in containerd, nothing runs yet: the monitor's libcontainer create (namespaces,
//! cgroup, mounts, the init waiting to exec) happens in StartContainer, so an error of the
//! container's own set-up shows there, and a container that is never started costs no
//! process and no cgroup.

use std::path::{Path, PathBuf};

use cri_proto::monitor::ContainerRecord as RuntimeStatus;
use cri_proto::v1;
use tracing::Instrument;

use super::prepare::{ResolvedImage, SpecContext, stop_signal};
use super::store::{Container, ContainerRecord};
use crate::sandbox::SandboxRecord;
use crate::{Error, Result, Runtime};

impl Runtime {
    pub async fn create_container(&self, pod_id: &str, config: v1::ContainerConfig) -> Result<String> {
        let meta = config.metadata.clone().ok_or_else(|| Error::InvalidArgument("container config has no metadata".into()))?;
        if meta.name.is_empty() {
            return Err(Error::InvalidArgument("container metadata.name is empty".into()));
        }
        let image = config.image.as_ref().map(|i| i.image.clone()).unwrap_or_default();
        if image.is_empty() {
            return Err(Error::InvalidArgument("container config names no image".into()));
        }
        let sandbox = self.sandboxes.find(pod_id)?;
        let _shared = sandbox.lock.read().await;
        let pod = sandbox.record();
        if crate::sandbox::status::cri_state(&pod) != v1::PodSandboxState::SandboxReady {
            return Err(Error::FailedPrecondition(format!("pod sandbox {} is not ready", pod.id)));
        }
        let id = crate::id::new_id()?;
        let span = tracing::info_span!("create_container", container_id = %id, pod_id = %pod.id, image = %image, name = %meta.name);
        async {
            self.containers.reserve(&pod.id, &meta, &id)?;
            let (record, resolved) = match self.plan_container(&pod, &id, config, &image) {
                Ok(r) => r,
                Err(e) => {
                    self.containers.release(&pod.id, &meta, &id);
                    return Err(e);
                }
            };
            let c = match self.containers.insert(record) {
                Ok(c) => c,
                Err(e) => {
                    let _ = crate::mounts::remove_dir_all(&self.containers.dir_of(&id));
                    self.containers.release(&pod.id, &meta, &id);
                    return Err(e);
                }
            };
            let _lock = c.lock.lock().await;
            crate::crashpoint::hit("create_container:after_record");
            match self.build_container(&pod, &c, &resolved).await {
                Ok(()) => {
                    tracing::info!("container created");
                    self.container_event(&pod.id, &id, v1::ContainerEventType::ContainerCreatedEvent);
                    Ok(id.clone())
                }
                Err(e) => {
                    tracing::warn!(error = %e, "CreateContainer failed; undoing what was done");
                    if let Err(undo) = self.forget_container(&c).await {
                        tracing::error!(error = %undo, "could not undo a failed CreateContainer completely");
                    }
                    Err(e)
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Resolves the image and decides paths; creates the container directory.
    fn plan_container(
        &self,
        pod: &SandboxRecord,
        id: &str,
        config: v1::ContainerConfig,
        image: &str,
    ) -> Result<(ContainerRecord, ResolvedImage)> {
        let rules = &self.host_paths;
        let log_path = log_path(&pod.config.log_directory, &config.log_path)?;
        if let Some(file) = &log_path {
            rules.check_container_log(&pod.config.log_directory, file)?;
        }
        for m in &config.mounts {
            // A missing or relative host path is the spec builder's to report.
            if let Ok(resolved) = std::fs::canonicalize(&m.host_path) {
                rules.check_mount_source(&m.container_path, &resolved)?;
            }
        }
        let resolved = self.resolve_image(image)?;
        let dir = self.containers.dir_of(id);
        crate::create_private_dir(&dir)?;
        let record = ContainerRecord {
            id: id.to_string(),
            pod_id: pod.id.clone(),
            log_path,
            config,
            image: image.to_string(),
            image_ref: resolved.reference.clone(),
            image_id: resolved.id.clone(),
            created_at: crate::id::now_nanos(),
            dir,
            cgroup: pod.cgroups.child(id),
            stop_signal: stop_signal(&resolved.config)?,
        };
        Ok((record, resolved))
    }

    /// Rootfs, spec, bundle, and the monitor's create.
    async fn build_container(&self, pod: &SandboxRecord, c: &Container, resolved: &ResolvedImage) -> Result<()> {
        let record = &c.record;
        // The record exists before the mount, so a failure (or a crash) still unmounts.
        let rootfs = self.mount_rootfs(resolved, &record.dir).await?;
        crate::crashpoint::hit("create_container:after_rootfs");
        super::mount_targets::check(&rootfs, &record.config.mounts)?;
        let ctx = SpecContext {
            config: &record.config,
            pod,
            image: resolved,
            rootfs: &rootfs,
            cgroup: &record.cgroup,
        };
        let spec = self.build_spec(&ctx)?;
        super::status::save_user(&record.dir, &spec)?;
        let bundle = record.bundle();
        crate::create_private_dir(&bundle)?;
        let spec_path = bundle.join("config.json");
        spec.save(&spec_path).map_err(|e| Error::Internal(format!("cannot write {}: {e}", spec_path.display())))?;
        crate::crashpoint::hit("create_container:after_bundle");
        // The status file is the commit point: start-up recovery undoes a container without one.
        let status = RuntimeStatus::created(&record.id, record.created_at, None);
        let path = record.status_path();
        crate::atomic::replace_json(&path, &status).map_err(Error::io("cannot write container status", &path))?;
        crate::crashpoint::hit("create_container:after_status");
        Ok(())
    }
}

/// `log_directory/log_path`, refusing paths that climb out of the pod's log directory.
fn log_path(log_directory: &str, log_path: &str) -> Result<Option<PathBuf>> {
    if log_directory.is_empty() || log_path.is_empty() {
        return Ok(None);
    }
    let rel = Path::new(log_path);
    let escapes = rel.is_absolute() || rel.components().any(|c| matches!(c, std::path::Component::ParentDir));
    if escapes {
        return Err(Error::InvalidArgument(format!("log_path {log_path:?} must be relative to the pod's log directory")));
    }
    Ok(Some(Path::new(log_directory).join(rel)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_paths_stay_in_the_pod_log_directory() {
        assert_eq!(log_path("/var/log/pods/p", "c/0.log").unwrap(), Some(PathBuf::from("/var/log/pods/p/c/0.log")));
        assert_eq!(log_path("", "c/0.log").unwrap(), None);
        assert!(log_path("/var/log/pods/p", "../../etc/passwd").is_err());
        assert!(log_path("/var/log/pods/p", "/etc/passwd").is_err());
    }
}
