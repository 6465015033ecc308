//! RemovePodSandbox: stop the pod if needed, remove its containers (and finish removing
//! those still in the trash), unmount /dev/shm,
//! remove the pod dir, the pod cgroups it created, the log dir it created, and the record.
//! Idempotent. Also the unwinding of a RunPodSandbox that failed half-way.

use std::path::Path;

use super::stop::Teardown;
use super::store::Sandbox;
use crate::{Error, Result, Runtime};

impl Runtime {
    #[tracing::instrument(name = "remove_pod_sandbox", skip(self), fields(pod_id = %id))]
    pub async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        let sandbox = match self.sandboxes.find(id) {
            Ok(s) => s,
            // RemovePodSandbox is idempotent: removing a removed pod succeeds.
            Err(Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let _exclusive = sandbox.lock.write().await;
        let snapshot = self.sandbox_snapshot(&sandbox.id);
        self.destroy_sandbox(&sandbox, Teardown::Strict).await?;
        crate::crashpoint::hit("remove_pod_sandbox:after_record_removed");
        self.sandbox_deleted(&sandbox.id, snapshot);
        tracing::info!(pod_id = %sandbox.id, "pod sandbox removed");
        Ok(())
    }

    /// Tears down everything the pod's record says exists; the caller holds its lock.
    pub(crate) async fn destroy_sandbox(&self, sandbox: &Sandbox, how: Teardown) -> Result<()> {
        self.stop_sandbox_locked(sandbox, how).await?;
        crate::crashpoint::hit("remove_pod_sandbox:after_stop");
        for c in self.containers.of_pod(&sandbox.id) {
            let _c = c.lock.lock().await;
            self.forget_container(&c).await?;
        }
        // Removed containers whose cleanup failed (or a crash cut short): the pod's cgroup
        // can only go after theirs.
        self.wait_removals(&sandbox.id).await;
        self.finish_trash_of(&sandbox.id).await?;
        crate::crashpoint::hit("remove_pod_sandbox:after_containers");
        let record = sandbox.record();
        let cgroups = record.cgroups.clone();
        let pod_dir = record.pod_dir.clone();
        let log_dir = record.log_dir_created.then(|| record.config.log_directory.clone());
        tokio::task::spawn_blocking(move || {
            // Unmounts /dev/shm (and anything left) before removing the directory.
            crate::mounts::remove_dir_all(&pod_dir)?;
            cgroups.remove_owned()?;
            if let Some(dir) = log_dir {
                remove_tree(Path::new(&dir))?;
            }
            Ok::<_, Error>(())
        })
        .await
        .map_err(|e| Error::Internal(format!("cleanup task failed: {e}")))??;
        crate::crashpoint::hit("remove_pod_sandbox:after_pod_dir");
        self.sandboxes.remove(sandbox)
    }
}

fn remove_tree(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io { context: "cannot remove", path: dir.to_path_buf(), source: e }),
    }
}
