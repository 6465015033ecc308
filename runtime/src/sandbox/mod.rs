//! Pod sandboxes: one file per CRI call, the record store, the pod's files and network.

mod files;
mod list;
mod recover;
mod network;
mod port_forward;
mod remove;
mod run;
pub mod status;
mod stop;
pub mod store;

pub use list::labels_match;
pub use store::{PodNetwork, Sandbox, SandboxRecord, SandboxState, SandboxStore};

/// After a daemon restart: says which pods' monitors are still there (the daemon talks to
/// them per call, so there is nothing else to reconnect) and which were lost.
pub fn report_monitors(store: &SandboxStore) {
    for sandbox in store.all() {
        let r = sandbox.record();
        match (r.state, r.monitor_alive()) {
            (SandboxState::NotReady, _) => {}
            (_, true) => tracing::info!(pod_id = %r.id, monitor_pid = ?r.monitor.as_ref().map(|m| m.pid), "pod monitor still running"),
            (state, false) => tracing::warn!(
                pod_id = %r.id, ?state,
                "pod monitor is gone; the pod is reported NotReady and its running containers exited (MonitorLost)"
            ),
        }
    }
}

impl crate::Runtime {
    /// Ready pods whose monitor process is gone (the metrics endpoint reports them).
    pub fn lost_monitors(&self) -> usize {
        self.sandboxes
            .all()
            .iter()
            .map(|s| s.record())
            .filter(|r| r.state == SandboxState::Ready && !r.monitor_alive())
            .count()
    }
}
