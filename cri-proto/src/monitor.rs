//! The daemon ↔ monitor protocol.
//!
//! One `capstan-monitor` process runs per pod. The daemon talks to it over a unix stream
//! socket in the pod's state directory. Framing is one JSON document per line, both ways:
//! the daemon writes a [`Request`] line and reads a [`Response`] line; a connection may carry
//! any number of request/response pairs in order. Unknown `op`s are answered with an error,
//! so newer daemons can probe older monitors (a monitor that predates [`Request::Exec`]
//! answers it with `invalid_argument`), and new fields always have defaults, so both old
//! daemons and old monitors keep working: [`PROTOCOL_VERSION`] has stayed 1.
//!
//! ## Sessions: exec and attach
//!
//! [`Request::Exec`] and [`Request::Attach`] turn their connection into a session. The monitor
//! answers with one line as usual: an `error` ends the exchange (the connection stays in line
//! mode), `ok` means the session has started and from the next byte on both directions carry
//! [`frame`]s (`[kind u8][len u32 BE][payload]`) instead of lines. The daemon sends `stdin`,
//! `resize` and `close_stdin` frames; the monitor sends `stdout`, `stderr` and, last, one
//! `end` frame, then closes the connection. One session per connection: open a dedicated
//! connection for each.
//!
//! The monitor ends an exec when the process has exited and its output is drained, reporting
//! the exit code; a `timeout_ms` that runs out kills the process group (SIGKILL) and ends with
//! [`SessionEnd::TimedOut`]. A connection closed before the end kills the exec'd process
//! group. An attach ends when the container has exited; closing its connection just detaches.
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

/// The monitor's start-up lines on its stdout, read by the daemon that started it: at most
/// one `NetnsPinned`, then `Ready` or `Failed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Startup {
    /// The pod's network namespace is pinned at `path`: the daemon may attach the pod
    /// network (CNI ADD) while the monitor finishes starting.
    NetnsPinned { path: PathBuf },
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
    /// Run a process in a running container (its namespaces, cgroup, user, capabilities,
    /// environment and working directory); the connection becomes a session (module docs).
    Exec(ExecProcess),
    /// Connect to a running container's own stdio; the connection becomes a session.
    Attach(AttachStreams),
}

/// What [`Request::Exec`] runs and which streams the session carries. Streams not asked for
/// are `/dev/null` for the process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecProcess {
    /// The container.
    pub id: String,
    /// Command and arguments (`args[0]` looked up in the container's `PATH`).
    pub args: Vec<String>,
    /// Give the process a terminal: stdout and stderr become one stream sent as `stdout`.
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub stdout: bool,
    #[serde(default)]
    pub stderr: bool,
    /// Kill the process (group) after this long and end with [`SessionEnd::TimedOut`].
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// Which of a container's streams [`Request::Attach`] connects to. `stdin` needs a container
/// created with [`CreateContainer::stdin`]; `tty` must match the container's terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachStreams {
    pub id: String,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub stdout: bool,
    #[serde(default)]
    pub stderr: bool,
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
    /// CRI `stdin`: the container reads a pipe the monitor holds (attach writes to it) instead
    /// of `/dev/null`. With a terminal, stdin is the terminal either way.
    #[serde(default)]
    pub stdin: bool,
    /// CRI `stdin_once`: close the container's stdin when the first attach that wrote to it
    /// detaches or closes its stdin.
    #[serde(default)]
    pub stdin_once: bool,
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

impl ContainerRecord {
    /// A container created and not started: `pid` is its init once libcontainer made it.
    pub fn created(id: &str, created_at: i64, pid: Option<i32>) -> ContainerRecord {
        ContainerRecord {
            id: id.to_string(),
            phase: ContainerPhase::Created,
            pid,
            created_at,
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
        }
    }

    /// A container whose start failed: exited at `finished_at`, never started.
    pub fn exited_unstarted(
        id: &str,
        created_at: i64,
        finished_at: i64,
        exit_code: i32,
        reason: &str,
        message: String,
    ) -> ContainerRecord {
        ContainerRecord {
            phase: ContainerPhase::Exited,
            finished_at,
            exit_code,
            reason: reason.to_string(),
            message,
            ..ContainerRecord::created(id, created_at, None)
        }
    }
}

/// Reasons kubelet understands.
pub mod reason {
    pub const COMPLETED: &str = "Completed";
    pub const ERROR: &str = "Error";
    pub const OOM_KILLED: &str = "OOMKilled";
}

/// How a session ended; the payload of the last frame (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "end", rename_all = "snake_case")]
pub enum SessionEnd {
    /// The process (exec) or the container (attach) exited: the status, or 128 + signal.
    Exited { exit_code: i32 },
    /// The exec outlived its `timeout_ms` and was killed.
    TimedOut,
    /// The session could not go on (the process could not be started, the container was
    /// removed, the daemon sent garbage).
    Failed { message: String },
}

/// The binary framing of a session: `[kind u8][len u32 big-endian][len bytes of payload]`.
pub mod frame {
    use super::SessionEnd;

    /// Largest payload accepted; larger frames mean a confused peer. Senders split data
    /// into chunks of at most [`CHUNK`].
    pub const MAX_PAYLOAD: usize = 1 << 20;
    /// Data chunk size senders use.
    pub const CHUNK: usize = 64 * 1024;
    pub const HEADER: usize = 5;

    /// Frame kinds on the wire.
    pub mod kind {
        /// Daemon → monitor: bytes for the process' stdin.
        pub const STDIN: u8 = 1;
        /// Monitor → daemon: bytes the process wrote to stdout (or its terminal).
        pub const STDOUT: u8 = 2;
        /// Monitor → daemon: bytes the process wrote to stderr.
        pub const STDERR: u8 = 3;
        /// Daemon → monitor: terminal size, payload `width u16 BE, height u16 BE`.
        pub const RESIZE: u8 = 4;
        /// Daemon → monitor: no more stdin (empty payload).
        pub const CLOSE_STDIN: u8 = 5;
        /// Monitor → daemon, last: a JSON [`SessionEnd`](super::super::SessionEnd).
        pub const END: u8 = 6;
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Frame {
        Stdin(Vec<u8>),
        Stdout(Vec<u8>),
        Stderr(Vec<u8>),
        Resize { width: u16, height: u16 },
        CloseStdin,
        End(SessionEnd),
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum FrameError {
        UnknownKind(u8),
        TooLong(usize),
        BadPayload(String),
    }

    impl std::fmt::Display for FrameError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                FrameError::UnknownKind(k) => write!(f, "unknown frame kind {k}"),
                FrameError::TooLong(n) => write!(f, "frame of {n} bytes is longer than {MAX_PAYLOAD}"),
                FrameError::BadPayload(why) => write!(f, "bad frame payload: {why}"),
            }
        }
    }

    impl std::error::Error for FrameError {}

    impl Frame {
        /// Appends the frame's bytes to `out`.
        pub fn encode(&self, out: &mut Vec<u8>) {
            let end;
            let (kind, payload): (u8, &[u8]) = match self {
                Frame::Stdin(d) => (kind::STDIN, d),
                Frame::Stdout(d) => (kind::STDOUT, d),
                Frame::Stderr(d) => (kind::STDERR, d),
                Frame::Resize { width, height } => {
                    let mut b = [0u8; 4];
                    b[..2].copy_from_slice(&width.to_be_bytes());
                    b[2..].copy_from_slice(&height.to_be_bytes());
                    end = b.to_vec();
                    (kind::RESIZE, &end)
                }
                Frame::CloseStdin => (kind::CLOSE_STDIN, &[]),
                Frame::End(e) => {
                    // Serialising a plain enum of strings and integers cannot fail.
                    end = serde_json::to_vec(e).unwrap_or_default();
                    (kind::END, &end)
                }
            };
            out.push(kind);
            out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            out.extend_from_slice(payload);
        }

        pub fn to_bytes(&self) -> Vec<u8> {
            let mut out = Vec::new();
            self.encode(&mut out);
            out
        }

        /// Decodes one frame from the start of `buf`: `Ok(None)` when more bytes are needed,
        /// else the frame and how many bytes it took.
        pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
            if buf.len() < HEADER {
                return Ok(None);
            }
            let kind = buf[0];
            if !(kind::STDIN..=kind::END).contains(&kind) {
                return Err(FrameError::UnknownKind(kind));
            }
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if len > MAX_PAYLOAD {
                return Err(FrameError::TooLong(len));
            }
            let Some(payload) = buf.get(HEADER..HEADER + len) else { return Ok(None) };
            Ok(Some((Frame::from_parts(kind, payload)?, HEADER + len)))
        }

        /// A frame from its kind and payload (for readers that read the header themselves).
        pub fn from_parts(kind: u8, payload: &[u8]) -> Result<Frame, FrameError> {
            Ok(match kind {
                kind::STDIN => Frame::Stdin(payload.to_vec()),
                kind::STDOUT => Frame::Stdout(payload.to_vec()),
                kind::STDERR => Frame::Stderr(payload.to_vec()),
                kind::RESIZE => match payload {
                    [w0, w1, h0, h1] => Frame::Resize { width: u16::from_be_bytes([*w0, *w1]), height: u16::from_be_bytes([*h0, *h1]) },
                    _ => return Err(FrameError::BadPayload(format!("resize needs 4 bytes, got {}", payload.len()))),
                },
                kind::CLOSE_STDIN => Frame::CloseStdin,
                kind::END => Frame::End(serde_json::from_slice(payload).map_err(|e| FrameError::BadPayload(e.to_string()))?),
                other => return Err(FrameError::UnknownKind(other)),
            })
        }
    }

    /// Accumulates bytes from a stream and yields whole frames.
    #[derive(Debug, Default)]
    pub struct Decoder {
        buf: Vec<u8>,
    }

    impl Decoder {
        pub fn push(&mut self, data: &[u8]) {
            self.buf.extend_from_slice(data);
        }

        /// The next whole frame, if one has arrived.
        pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
            match Frame::decode(&self.buf)? {
                Some((frame, used)) => {
                    self.buf.drain(..used);
                    Ok(Some(frame))
                }
                None => Ok(None),
            }
        }

        /// Bytes received but not yet part of a whole frame.
        pub fn pending(&self) -> usize {
            self.buf.len()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::frame::{Decoder, Frame, FrameError};
    use super::*;

    #[test]
    fn requests_are_tagged_json_lines() {
        let stop = Request::Stop { id: "c1".into(), signal: 15, timeout_ms: 2000 };
        let line = serde_json::to_string(&stop).unwrap();
        assert_eq!(line, r#"{"op":"stop","id":"c1","signal":15,"timeout_ms":2000}"#);
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), stop);
        assert!(serde_json::from_str::<Request>(r#"{"op":"checkpoint","id":"c1"}"#).is_err());
        let err = Response::Error { code: ErrorCode::NotFound, message: "x".into() };
        let line = serde_json::to_string(&err).unwrap();
        assert_eq!(line, r#"{"result":"error","code":"not_found","message":"x"}"#);
    }

    #[test]
    fn old_create_requests_still_parse_and_sessions_are_tagged() {
        let old = r#"{"op":"create","id":"c","bundle":"/b","status_path":"/s","log_path":null}"#;
        let Request::Create(c) = serde_json::from_str::<Request>(old).unwrap() else { panic!() };
        assert!(!c.stdin && !c.stdin_once);
        let exec = r#"{"op":"exec","id":"c","args":["true"],"stdout":true}"#;
        let Request::Exec(e) = serde_json::from_str::<Request>(exec).unwrap() else { panic!() };
        assert_eq!((e.stdout, e.stderr, e.tty, e.timeout_ms), (true, false, false, None));
        let end = SessionEnd::Exited { exit_code: 3 };
        assert_eq!(serde_json::to_string(&end).unwrap(), r#"{"end":"exited","exit_code":3}"#);
    }

    #[test]
    fn frames_round_trip_through_a_byte_stream_split_anywhere() {
        let frames = vec![
            Frame::Stdout(b"hello".to_vec()),
            Frame::Stderr(Vec::new()),
            Frame::Stdin(vec![0, 1, 2, 255]),
            Frame::Resize { width: 132, height: 43 },
            Frame::CloseStdin,
            Frame::End(SessionEnd::Failed { message: "gone".into() }),
            Frame::End(SessionEnd::TimedOut),
        ];
        let mut wire = Vec::new();
        for f in &frames {
            f.encode(&mut wire);
        }
        assert_eq!(&wire[..10], &[2, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o']);
        // Fed in every possible chunk size, the decoder yields the same frames.
        for chunk in 1..=wire.len() {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                d.push(piece);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, frames, "chunk size {chunk}");
            assert_eq!(d.pending(), 0);
        }
    }

    #[test]
    fn bad_frames_are_errors_not_hangs() {
        assert_eq!(Frame::decode(&[9, 0, 0, 0, 0]), Err(FrameError::UnknownKind(9)));
        assert_eq!(Frame::decode(&[2, 0xff, 0, 0, 0]), Err(FrameError::TooLong(0xff00_0000)));
        assert!(matches!(Frame::decode(&[4, 0, 0, 0, 1, 7]), Err(FrameError::BadPayload(_))));
        assert!(matches!(Frame::decode(&[6, 0, 0, 0, 2, b'{', b'}']), Err(FrameError::BadPayload(_))));
        assert_eq!(Frame::decode(&[2, 0, 0, 0, 3, b'a']), Ok(None));
    }
}
