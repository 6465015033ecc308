//! StopPodSandbox: kill the pod's containers (their exits are recorded), then at once tear
//! the network down (CNI DEL) and shut the monitor down (after removed containers' cleanups
//! are done with it), which removes the infra process, the pinned namespaces and the infra
//! cgroup. Idempotent: a missing or stopped pod is no error.

use std::time::Duration;

use cri_proto::monitor::Request;

use super::store::{Sandbox, SandboxRecord, SandboxState};
use crate::container::store::may_run;
use crate::monitor::client;
use crate::{Error, Result, Runtime};

/// Whether a failing network teardown stops the teardown (and is reported), or is logged
/// and passed over (undoing a RunPodSandbox nobody will retry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Teardown {
    Strict,
    BestEffort,
}

impl Runtime {
    #[tracing::instrument(name = "stop_pod_sandbox", skip(self), fields(pod_id = %id))]
    pub async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        let sandbox = match self.sandboxes.find(id) {
            Ok(s) => s,
            // StopPodSandbox is idempotent: kubelet may call it for a pod already removed.
            Err(Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let _exclusive = sandbox.lock.write().await;
        self.stop_sandbox_locked(&sandbox, Teardown::Strict).await
    }

    /// Stops the pod; the caller holds its lock exclusively.
    ///
    /// After the containers are killed, CNI DEL runs while the monitor shuts down: DEL
    /// (a plugin per network, a veth deleted in the kernel) is most of the call. The netns
    /// gets a pin of the daemon's own for DEL, so the monitor may release its pins meanwhile;
    /// that pin goes once DEL has succeeded, and stays for a retry when it failed.
    pub(crate) async fn stop_sandbox_locked(&self, sandbox: &Sandbox, how: Teardown) -> Result<()> {
        let record = sandbox.record();
        if record.monitor_alive() {
            for c in self.containers.of_pod(&record.id) {
                let _c = c.lock.lock().await;
                // Created but never started: the monitor holds nothing of it.
                if !may_run(&c.record.runtime_status()) {
                    continue;
                }
                let stop = Request::Stop { id: c.record.id.clone(), signal: libc::SIGKILL, timeout_ms: 0 };
                if let Err(e) = client::call(&record.pod_dir, &stop, client::CALL_TIMEOUT).await {
                    tracing::warn!(pod_id = %record.id, container_id = %c.record.id, error = %e, "cannot kill container");
                }
                self.status_changed(&c.record.id);
            }
        }
        crate::crashpoint::hit("stop_pod_sandbox:after_kill_containers");
        // Pinned before the monitor starts letting go of its pins.
        let netns = self.hold_pod_netns(sandbox);
        let network = async {
            let result = match netns {
                Ok(netns) => self.teardown_pod_network(sandbox, netns).await,
                Err(e) => Err(e),
            };
            crate::crashpoint::hit("stop_pod_sandbox:after_network");
            result
        };
        let monitor = async {
            // Removed containers' cleanups ask the monitor to delete them: before it goes.
            self.wait_monitor_steps(&record.id).await;
            let result = self.shutdown_monitor(&record).await;
            crate::crashpoint::hit("stop_pod_sandbox:after_monitor");
            result
        };
        let (network, monitor) = tokio::join!(network, monitor);
        let network = match network {
            Ok(()) => Ok(()),
            // A failed DEL is reported so kubelet retries the call; the network plugins
            // still hold an address or rules for this pod.
            Err(e) if how == Teardown::Strict => Err(e),
            Err(e) => {
                tracing::warn!(pod_id = %record.id, error = %e, "CNI DEL failed; going on with the teardown");
                Ok(())
            }
        };
        monitor?;
        // The containers and the infra are gone whether or not DEL worked: not ready.
        if record.state != SandboxState::NotReady {
            sandbox.update(&self.sandboxes, |r| r.state = SandboxState::NotReady)?;
            crate::crashpoint::hit("stop_pod_sandbox:after_record");
            tracing::info!(pod_id = %record.id, "pod sandbox stopped");
            self.sandbox_event(&record.id, cri_proto::v1::ContainerEventType::ContainerStoppedEvent);
        }
        network
    }

    /// Asks the monitor to tear the pod down; when it is gone (crashed, or the machine
    /// rebooted), does what it would have done.
    async fn shutdown_monitor(&self, record: &SandboxRecord) -> Result<()> {
        let info = record.monitor.clone().or_else(|| client::read_info(&record.pod_dir));
        if let Some(info) = info.filter(crate::monitor::is_alive) {
            match client::call(&record.pod_dir, &Request::Shutdown, Duration::from_secs(60)).await {
                // The monitor answers once everything is released; all it does after is exit.
                Ok(_) => return Ok(()),
                Err(e) => {
                    tracing::warn!(pod_id = %record.id, error = %e, "monitor did not shut down; killing it");
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(info.pid), nix::sys::signal::Signal::SIGKILL);
                    wait_gone(&info).await;
                }
            }
        }
        self.clean_up_without_monitor(record).await
    }

    /// Kills what is left in the pod's cgroups and releases its namespaces.
    async fn clean_up_without_monitor(&self, record: &SandboxRecord) -> Result<()> {
        let mut cgroups: Vec<_> = self.containers.of_pod(&record.id).iter().map(|c| c.record.cgroup.clone()).collect();
        cgroups.push(record.cgroups.child(&record.id));
        let ns_dir = record.pod_dir.join("ns");
        // CNI DEL may be running on the daemon's own pin; it releases that pin itself.
        let hold = super::network::netns_hold_path(&ns_dir);
        let youki = record.pod_dir.join("youki");
        tokio::task::spawn_blocking(move || {
            for cgroup in cgroups {
                crate::cgroups::kill_and_remove(&cgroup);
            }
            crate::mounts::unmount_under_except(&ns_dir, Some(&hold))?;
            let _ = std::fs::remove_dir_all(&youki);
            Ok::<_, Error>(())
        })
        .await
        .map_err(|e| Error::Internal(format!("cleanup task failed: {e}")))?
    }
}

/// Waits (bounded) until the monitor process is gone, so its mounts are released.
async fn wait_gone(info: &cri_proto::monitor::MonitorInfo) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while crate::monitor::is_alive(info) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
