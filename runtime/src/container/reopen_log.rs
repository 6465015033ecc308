//! ReopenContainerLog: after kubelet renamed a container's log file (rotation), the pod's
//! monitor opens a new one at the same path. Lines written before the reopen land in the
//! renamed file, later ones in the new file; none are lost. Only a running container has a
//! log being written.

use cri_proto::monitor::Request;

use crate::monitor::client;
use crate::{Error, Result, Runtime};

impl Runtime {
    #[tracing::instrument(name = "reopen_container_log", skip(self), fields(container_id = %id))]
    pub async fn reopen_container_log(&self, id: &str) -> Result<()> {
        let c = self.containers.find(id)?;
        let sandbox = self.sandboxes.find(&c.record.pod_id)?;
        let _shared = sandbox.lock.read().await;
        let _lock = c.lock.lock().await;
        let pod = sandbox.record();
        if self.observe(&c).state != cri_proto::v1::ContainerState::ContainerRunning as i32 {
            return Err(Error::FailedPrecondition(format!("container {} is not running: its log is not being written", c.record.id)));
        }
        client::call(&pod.pod_dir, &Request::ReopenLog { id: c.record.id.clone() }, client::CALL_TIMEOUT).await?;
        tracing::info!(container_id = %c.record.id, log_path = ?c.record.log_path, "container log reopened");
        Ok(())
    }
}
