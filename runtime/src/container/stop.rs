//! StopContainer: the image's StopSignal (default SIGTERM), `timeout` seconds, then SIGKILL
//! for everything in the container's cgroup. Stopping a stopped container is no error.

use std::time::Duration;

use cri_proto::monitor::Request;

use super::store::{Container, may_run};
use crate::monitor::client;
use crate::sandbox::SandboxRecord;
use crate::{Result, Runtime};

impl Runtime {
    #[tracing::instrument(name = "stop_container", skip(self), fields(container_id = %id))]
    pub async fn stop_container(&self, id: &str, timeout_secs: i64) -> Result<()> {
        let c = self.containers.find(id)?;
        let sandbox = self.sandboxes.find(&c.record.pod_id)?;
        let _shared = sandbox.lock.read().await;
        let _lock = c.lock.lock().await;
        self.stop_locked(&sandbox.record(), &c, timeout_secs).await
    }

    /// Stops `c`; the caller holds its lock. Returns once it has exited.
    pub(crate) async fn stop_locked(&self, pod: &SandboxRecord, c: &Container, timeout_secs: i64) -> Result<()> {
        let status = c.record.runtime_status();
        // A container never started stays created, as in containerd: nothing of it runs.
        if !may_run(&status) {
            return Ok(());
        }
        if !pod.monitor_alive() {
            // Nobody holds it any more: make sure nothing of it runs.
            let cgroup = c.record.cgroup.clone();
            let _ = tokio::task::spawn_blocking(move || crate::cgroups::kill_and_remove(&cgroup)).await;
            return Ok(());
        }
        let timeout_ms = u64::try_from(timeout_secs).unwrap_or(0).saturating_mul(1000);
        let (signal, timeout_ms) = if timeout_ms == 0 { (libc::SIGKILL, 0) } else { (c.record.stop_signal, timeout_ms) };
        tracing::info!(container_id = %c.record.id, signal, timeout_ms, "stopping container");
        let request = Request::Stop { id: c.record.id.clone(), signal, timeout_ms };
        // The monitor answers once the container has exited: the timeout, then SIGKILL.
        let deadline = Duration::from_millis(timeout_ms) + client::CALL_TIMEOUT;
        crate::crashpoint::hit("stop_container:before_stop");
        client::call(&pod.pod_dir, &request, deadline).await?;
        crate::crashpoint::hit("stop_container:after_stop");
        self.container_event(&pod.id, &c.record.id, cri_proto::v1::ContainerEventType::ContainerStoppedEvent);
        Ok(())
    }
}
