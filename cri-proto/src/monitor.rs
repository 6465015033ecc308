//! The daemon ↔ monitor protocol.
//!
//! One `capstan-monitor` process runs per pod. The daemon talks to it over a unix stream
//! socket in the pod's state directory. Framing is one JSON document per line, both ways:
//! the daemon writes a [`Request`] line and reads a [`Response`] line; a connection may carry
//! any number of request/response pairs in order. Unknown `op`s are answered with an error,
//! so newer daemons can probe older monitors (exec and attach come later as new ops).
//!
//! The monitor also persists each container's [`ContainerRecord`] as JSON (atomic
//! write) at the path the daemon gave in [`CreateContainer::status_path`], so a daemon that
//! restarted, or finds the monitor gone, still knows what happened.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Bumped when a change is not backwards compatible; [`Response::Pong`] reports it.
pub const PROTOCOL_VERSION: u32 = 1;

/// What the daemon writes to `<pod state dir>/monitor.json` before starting the monitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitorConfig {
    pub pod_id: String,
    /// The pod's state directory: the socket, pinned namespaces and youki state live here.
    pub pod_dir: PathBuf,
    /// New namespaces the pod gets; what is not new is the host's.
    pub namespaces: PodNamespaces,
    /// Hostname set in the pod's new UTS namespace.
    pub hostname: String,
    /// Namespaced sysctls applied inside the pod's namespaces before any container starts.
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    /// cgroupfs path (relative to each hierarchy's root) the infra process is placed in.
    pub infra_cgroup: Option<PathBuf>,
    /// `tracing` filter for the monitor's own log (`<pod dir>/monitor.log`).
    #[serde(default = "default_log_level")]
    pub log_level: String,
}

fn default_log_level() -> String {
    "info".into()
}

/// Which namespaces are created for the pod (and so shared by its containers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNamespaces {
    pub network: bool,
    pub ipc: bool,
    pub uts: bool,
    pub pid: bool,
}

impl PodNamespaces {
    pub fn any(&self) -> bool {
        self.network || self.ipc || self.uts || self.pid
    }
}

/// The monitor's first line on its stdout, read by the daemon that started it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Startup {
    Ready(MonitorInfo),
    Failed { message: String },
}

/// Who the monitor is; also persisted at `<pod dir>/monitor.state` so a restarted daemon can
/// tell whether the monitor is still the same live process (pid plus start time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorInfo {
    pub pid: i32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22): guards against
    /// pid reuse.
    pub start_time: u64,
    /// The pod infra process holding the namespaces, if any were created.
    pub infra_pid: Option<i32>,
    /// Pinned namespace files (`net`, `ipc`, `uts`, `pid`) by kind.
    pub namespace_paths: BTreeMap<String, PathBuf>,
}

/// A request from the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Liveness and identity.
    Ping,
    /// Create a container (libcontainer create: namespaces, cgroup, rootfs set up, process
    /// waiting to exec). Its stdio are held by the monitor from here on.
    Create(CreateContainer),
    /// Let a created container exec its process.
    Start { id: String },
    /// Send `signal` to the container's init; after `timeout_ms` kill everything in its
    /// cgroup with SIGKILL. Answered once the container has exited.
    Stop { id: String, signal: i32, timeout_ms: u64 },
    /// Delete a container's runtime state (cgroup, youki state); it must have exited.
    Remove { id: String },
    /// The current record of one container.
    Status { id: String },
    /// Reopen a container's log file (after log rotation).
    ReopenLog { id: String },
    /// Kill every container, remove the infra process and pinned namespaces, then exit.
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateContainer {
    pub id: String,
    /// OCI bundle: `config.json` (with `root.path` set) inside. `process.terminal` there
    /// decides between pipes and a terminal (stdout and stderr become one stream, logged as
    /// `stdout`).
    pub bundle: PathBuf,
    /// Where the monitor keeps the container's [`ContainerRecord`].
    pub status_path: PathBuf,
    /// CRI log file (absolute); `None` discards output.
    pub log_path: Option<PathBuf>,
    /// Free-form labels echoed in the monitor's log (pod name, container name).
    #[serde(default)]
    pub description: String,
}

/// The monitor's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Pong { version: u32, info: MonitorInfo },
    Ok,
    Container(ContainerRecord),
    Error { code: ErrorCode, message: String },
}

/// Error classes the daemon maps onto its own error type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    Internal,
}

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerPhase {
    Created,
    Running,
    Exited,
}

/// A container's runtime facts, kept by the monitor. Times are Unix nanoseconds (CRI's unit),
/// 0 when not reached yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub phase: ContainerPhase,
    /// Host pid of the container's init while it runs.
    pub pid: Option<i32>,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    /// Exit status; 128 + signal number when killed by a signal.
    pub exit_code: i32,
    /// `Completed`, `Error`, `OOMKilled`, or empty while running.
    pub reason: String,
    pub message: String,
}

/// Reasons kubelet understands.
pub mod reason {
    pub const COMPLETED: &str = "Completed";
    pub const ERROR: &str = "Error";
    pub const OOM_KILLED: &str = "OOMKilled";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_json_lines() {
        let stop = Request::Stop { id: "c1".into(), signal: 15, timeout_ms: 2000 };
        let line = serde_json::to_string(&stop).unwrap();
        assert_eq!(line, r#"{"op":"stop","id":"c1","signal":15,"timeout_ms":2000}"#);
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), stop);
        assert!(serde_json::from_str::<Request>(r#"{"op":"exec","id":"c1"}"#).is_err());
        let err = Response::Error { code: ErrorCode::NotFound, message: "x".into() };
        let line = serde_json::to_string(&err).unwrap();
        assert_eq!(line, r#"{"result":"error","code":"not_found","message":"x"}"#);
    }
}
