//! RemoveContainer: a running container is killed first, before the answer (kubelet relies
//! on it being dead). Then it disappears at once: its directory is renamed into the trash,
//! its record and name are dropped, DELETED is reported, and the call answers. Its
//! libcontainer state and cgroup (by the monitor), rootfs mount and directory go in a task
//! (see `trash.rs`), the way containerd answers after deleting metadata and leaves the
//! snapshot to its garbage collector. Removing a removed container is no error.

use crate::{Error, Result, Runtime};

impl Runtime {
    #[tracing::instrument(name = "remove_container", skip(self), fields(container_id = %id))]
    pub async fn remove_container(&self, id: &str) -> Result<()> {
        let c = match self.containers.find(id) {
            Ok(c) => c,
            Err(Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let Some(sandbox) = self.sandboxes.get(&c.record.pod_id) else {
            // Its pod is gone, and with it whoever would wait for a cleanup task: finish now.
            let _lock = c.lock.lock().await;
            self.forget_container(&c).await?;
            tracing::info!(container_id = %c.record.id, "container of a removed pod removed");
            return Ok(());
        };
        let _shared = sandbox.lock.read().await;
        let _lock = c.lock.lock().await;
        self.stop_locked(&sandbox.record(), &c, 0).await?;
        crate::crashpoint::hit("remove_container:after_stop");
        // None: a concurrent removal took it while this call waited for the lock.
        if let Some(trashed) = self.trash_container(&c)? {
            self.finish_removal_later(trashed);
        }
        tracing::info!(container_id = %c.record.id, "container removed");
        Ok(())
    }
}
