//! The runtime as the streaming server's backend.

use super::{Backend, Session, StreamOptions};
use crate::{Error, Result, Runtime};

impl Backend for Runtime {
    async fn exec(&self, container_id: &str, _cmd: Vec<String>, _options: StreamOptions) -> Result<Session> {
        tracing::warn!(container_id, "exec session asked for before exec sessions are wired");
        Err(Error::FailedPrecondition("exec sessions are not wired yet".into()))
    }

    async fn attach(&self, container_id: &str, _options: StreamOptions) -> Result<Session> {
        tracing::warn!(container_id, "attach session asked for before attach sessions are wired");
        Err(Error::FailedPrecondition("attach sessions are not wired yet".into()))
    }

    async fn port_forward(&self, pod_id: &str, port: u16) -> Result<tokio::net::TcpStream> {
        self.port_forward_stream(pod_id, port).await
    }
}
