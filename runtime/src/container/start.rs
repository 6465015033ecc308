//! StartContainer: the monitor lets the created container exec its process.

use cri_proto::monitor::{ContainerPhase, Request};

use crate::monitor::client;
use crate::{Error, Result, Runtime};

impl Runtime {
    #[tracing::instrument(name = "start_container", skip(self), fields(container_id = %id))]
    pub async fn start_container(&self, id: &str) -> Result<()> {
        let c = self.containers.find(id)?;
        let sandbox = self.sandboxes.find(&c.record.pod_id)?;
        let _shared = sandbox.lock.read().await;
        let _lock = c.lock.lock().await;
        let pod = sandbox.record();
        let phase = c.record.runtime_status().map(|s| s.phase);
        if phase != Some(ContainerPhase::Created) {
            return Err(Error::FailedPrecondition(format!(
                "container {} cannot be started: it is {}",
                c.record.id,
                phase.map_or("not created yet".to_string(), |p| format!("{p:?}").to_lowercase())
            )));
        }
        if !pod.monitor_alive() {
            return Err(Error::FailedPrecondition(format!("pod sandbox {} is not running", pod.id)));
        }
        crate::crashpoint::hit("start_container:before_start");
        client::call(&pod.pod_dir, &Request::Start { id: c.record.id.clone() }, client::CALL_TIMEOUT).await?;
        crate::crashpoint::hit("start_container:after_start");
        tracing::info!(container_id = %c.record.id, pod_id = %pod.id, "container started");
        self.container_event(&pod.id, &c.record.id, cri_proto::v1::ContainerEventType::ContainerStartedEvent);
        Ok(())
    }
}
