//! The runtime as the streaming server's backend: exec and attach sessions run through the
//! pod's monitor (`container/exec.rs`, `container/attach.rs`), port-forward connects inside
//! the pod's network namespace (`sandbox/port_forward.rs`).

use super::{Backend, Session, StreamOptions};
use crate::{Result, Runtime};

impl Backend for Runtime {
    async fn exec(&self, container_id: &str, cmd: Vec<String>, options: StreamOptions) -> Result<Session> {
        self.exec_session(container_id, cmd, options).await
    }

    async fn attach(&self, container_id: &str, options: StreamOptions) -> Result<Session> {
        self.attach_session(container_id, options).await
    }

    async fn port_forward(&self, pod_id: &str, port: u16) -> Result<tokio::net::TcpStream> {
        self.port_forward_stream(pod_id, port).await
    }
}
