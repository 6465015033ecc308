//! RemoveContainer: a running container is killed first; then its cgroup and libcontainer
//! state (by the monitor), rootfs, directory and name go. Removing a removed container is
//! no error.

use cri_proto::monitor::Request;

use super::store::Container;
use crate::monitor::client;
use crate::{Error, Result, Runtime};

impl Runtime {
    #[tracing::instrument(name = "remove_container", skip(self), fields(container_id = %id))]
    pub async fn remove_container(&self, id: &str) -> Result<()> {
        let c = match self.containers.find(id) {
            Ok(c) => c,
            Err(Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let sandbox = self.sandboxes.get(&c.record.pod_id);
        let _shared = match &sandbox {
            Some(s) => Some(s.lock.read().await),
            None => None,
        };
        let _lock = c.lock.lock().await;
        if let Some(s) = &sandbox {
            self.stop_locked(&s.record(), &c, 0).await?;
        }
        crate::crashpoint::hit("remove_container:after_stop");
        self.forget_container(&c).await?;
        tracing::info!(container_id = %c.record.id, "container removed");
        Ok(())
    }

    /// Deletes everything of a container; the caller holds its lock and it is not running.
    pub(crate) async fn forget_container(&self, c: &Container) -> Result<()> {
        let pod = self.sandboxes.get(&c.record.pod_id).map(|s| s.record());
        let monitor = pod.as_ref().filter(|p| p.monitor_alive());
        match monitor {
            Some(pod) => {
                client::call(&pod.pod_dir, &Request::Remove { id: c.record.id.clone() }, client::CALL_TIMEOUT).await?;
            }
            None => {
                let cgroup = c.record.cgroup.clone();
                let _ = tokio::task::spawn_blocking(move || crate::cgroups::kill_and_remove(&cgroup)).await;
            }
        }
        crate::crashpoint::hit("remove_container:after_monitor_remove");
        self.unmount_rootfs(&c.record.dir).await?;
        crate::crashpoint::hit("remove_container:after_unmount");
        self.containers.remove(c)?;
        crate::crashpoint::hit("remove_container:after_record_removed");
        self.container_event(&c.record.pod_id, &c.record.id, cri_proto::v1::ContainerEventType::ContainerDeletedEvent);
        Ok(())
    }
}
