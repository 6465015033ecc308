//! Exec, attach and port-forward sessions, and the streaming server that carries them to
//! kubelet and crictl.
//!
//! The CRI `Exec`/`Attach`/`PortForward` calls only hand out a URL; the client then connects
//! to the streaming server, which speaks Kubernetes' remote-command and port-forward
//! protocols (SPDY/3.1 or WebSocket) and drives a [`Backend`]. The runtime is the backend in
//! the daemon; tests may plug in another one.

pub mod backend;
pub mod cache;
mod portforward;
mod remotecommand;
pub mod server;
pub mod spdy;
mod websocket;

use std::future::Future;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::Result;

/// Terminal size from the client's resize channel, in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    pub width: u16,
    pub height: u16,
}

/// Which streams the client asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamOptions {
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// How a session ended, as the remote-command error channel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// The process exited with this code (128 + signal when killed).
    Exited(i32),
    /// The session could not go on (the container went away, the monitor failed).
    Failed(String),
}

pub type BoxedReader = Box<dyn AsyncRead + Send + Unpin>;
pub type BoxedWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// A running exec or attach: the process' streams as asked for in [`StreamOptions`]
/// (`stderr` is always `None` with a tty), a way to resize its terminal, and its end.
/// Dropping `stdin` closes the process' stdin. Dropping the whole session does not kill
/// an attached container; an exec'd process is killed when its session is dropped before
/// it ended.
pub struct Session {
    pub stdin: Option<BoxedWriter>,
    pub stdout: Option<BoxedReader>,
    pub stderr: Option<BoxedReader>,
    pub resize: Option<mpsc::UnboundedSender<TerminalSize>>,
    pub end: Pin<Box<dyn Future<Output = SessionEnd> + Send>>,
}

/// What the streaming server needs from the runtime.
pub trait Backend: Send + Sync + 'static {
    /// Runs `cmd` in a running container.
    fn exec(&self, container_id: &str, cmd: Vec<String>, options: StreamOptions) -> impl Future<Output = Result<Session>> + Send;
    /// Connects to a running container's own stdio (stdin only if the container was
    /// created with `stdin = true`).
    fn attach(&self, container_id: &str, options: StreamOptions) -> impl Future<Output = Result<Session>> + Send;
    /// A TCP connection to `localhost:port` inside the pod's network namespace.
    fn port_forward(&self, pod_id: &str, port: u16) -> impl Future<Output = Result<tokio::net::TcpStream>> + Send;
}
