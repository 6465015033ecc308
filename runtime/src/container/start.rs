//! StartContainer: the monitor creates the container with libcontainer (namespaces, cgroup,
//! mounts; the init waits to exec) and then lets it exec its process. Both happen here, as
//! in containerd, so CreateContainer stays cheap. A start that fails leaves the container
//! exited with reason `StartError` (exit code 128, as containerd reports it), so kubelet
//! sees why and can remove it.

use cri_proto::monitor::{ContainerPhase, CreateContainer, Request};

use super::store::{Container, ContainerRecord};
use crate::monitor::client;
use crate::sandbox::SandboxRecord;
use crate::{Error, Result, Runtime};

/// CRI reason of a container whose start failed (containerd's word).
pub const START_ERROR: &str = "StartError";
const START_ERROR_EXIT_CODE: i32 = 128;

impl Runtime {
    #[tracing::instrument(name = "start_container", skip(self), fields(container_id = %id))]
    pub async fn start_container(&self, id: &str) -> Result<()> {
        let c = self.containers.find(id)?;
        let sandbox = self.sandboxes.find(&c.record.pod_id)?;
        let _shared = sandbox.lock.read().await;
        let _lock = c.lock.lock().await;
        let pod = sandbox.record();
        let status = c.record.runtime_status();
        let phase = status.as_ref().map(|s| s.phase);
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
        // A pid means the monitor created it already (a start cut short by a crash, or a
        // container made by an older daemon that created at CreateContainer).
        let created = status.as_ref().is_some_and(|s| s.pid.is_some());
        if let Err(e) = self.launch(&pod, &c, created).await {
            tracing::warn!(container_id = %c.record.id, error = %e, "StartContainer failed");
            self.record_start_error(&c, &e).await;
            return Err(e);
        }
        tracing::info!(container_id = %c.record.id, pod_id = %pod.id, "container started");
        self.container_event(&pod.id, &c.record.id, cri_proto::v1::ContainerEventType::ContainerStartedEvent);
        Ok(())
    }

    async fn launch(&self, pod: &SandboxRecord, c: &Container, created: bool) -> Result<()> {
        if !created {
            client::call(&pod.pod_dir, &Request::Create(create_request(&c.record)), client::CALL_TIMEOUT).await?;
            crate::crashpoint::hit("start_container:after_monitor_create");
        }
        crate::crashpoint::hit("start_container:before_start");
        client::call(&pod.pod_dir, &Request::Start { id: c.record.id.clone() }, client::CALL_TIMEOUT).await?;
        crate::crashpoint::hit("start_container:after_start");
        Ok(())
    }

    /// Marks a container whose start failed as exited, and drops whatever the failed
    /// launch left running (its cgroup, with anything in it).
    async fn record_start_error(&self, c: &Container, error: &Error) {
        let pod = self.sandboxes.get(&c.record.pod_id).map(|s| s.record());
        if let Some(pod) = pod.filter(|p| p.monitor_alive()) {
            // The monitor forgets it (and its libcontainer state) if it got that far.
            let _ = client::call(&pod.pod_dir, &Request::Stop { id: c.record.id.clone(), signal: libc::SIGKILL, timeout_ms: 0 }, client::CALL_TIMEOUT).await;
            let _ = client::call(&pod.pod_dir, &Request::Remove { id: c.record.id.clone() }, client::CALL_TIMEOUT).await;
        }
        let cgroup = c.record.cgroup.clone();
        let _ = tokio::task::spawn_blocking(move || crate::cgroups::kill_and_remove(&cgroup)).await;
        let now = crate::id::now_nanos();
        let status = cri_proto::monitor::ContainerRecord::exited_unstarted(
            &c.record.id,
            c.record.created_at,
            now,
            START_ERROR_EXIT_CODE,
            START_ERROR,
            error.to_string(),
        );
        let path = c.record.status_path();
        if let Err(e) = crate::atomic::replace_json(&path, &status) {
            tracing::error!(container_id = %c.record.id, path = %path.display(), error = %e, "cannot record the failed start");
        }
    }
}

/// What the monitor needs to create the container: all of it decided at CreateContainer.
fn create_request(record: &ContainerRecord) -> CreateContainer {
    CreateContainer {
        id: record.id.clone(),
        bundle: record.bundle(),
        status_path: record.status_path(),
        log_path: record.log_path.clone(),
        description: format!("{}/{}", record.pod_id, record.metadata().name),
        stdin: record.config.stdin,
        stdin_once: record.config.stdin_once,
    }
}
