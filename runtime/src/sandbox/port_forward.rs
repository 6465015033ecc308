//! Port-forward's far end: a TCP connection to localhost inside the pod's network namespace.
//! Agent mode's probes use the same path for pods without an IP of their own (no CNI).
//!
//! The socket is created by a short-lived thread that joined the pod's netns; a socket keeps
//! the namespace it was created in, so the daemon can use it from any thread afterwards.
//! (A tokio blocking-pool thread must not be used: it would stay in the pod's netns.)

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use super::store::SandboxState;
use crate::{Error, Result, Runtime};

/// How long connecting to the pod's port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Runtime {
    /// Connects to `localhost:port` in the pod's network (IPv4 first, then IPv6, as kubelet
    /// does). The pod must be ready; host-network pods are reached on the host's loopback.
    #[tracing::instrument(name = "port_forward", skip(self), fields(pod_id = %pod_id))]
    pub async fn port_forward_stream(&self, pod_id: &str, port: u16) -> Result<tokio::net::TcpStream> {
        self.pod_local_stream(pod_id, port, CONNECT_TIMEOUT).await
    }

    /// [`Runtime::port_forward_stream`] with the caller's connect timeout (a probe's
    /// `timeoutSeconds`), so a silent port does not hold the caller for 10 s.
    pub async fn pod_local_stream(&self, pod_id: &str, port: u16, timeout: Duration) -> Result<tokio::net::TcpStream> {
        let sandbox = self.sandboxes.find(pod_id)?;
        let record = sandbox.record();
        if record.state != SandboxState::Ready || !record.monitor_alive() {
            return Err(Error::FailedPrecondition(format!("pod sandbox {} is not ready", record.id)));
        }
        let netns = if record.namespaces.network {
            let path = record.namespace_paths().get("network").cloned().unwrap_or_else(|| record.pod_dir.join("ns/net"));
            Some(path)
        } else {
            None
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("capstan-portfwd".into())
            .spawn(move || {
                let _ = tx.send(connect_in(netns, port, timeout));
            })
            .map_err(|e| Error::Internal(format!("cannot start a port-forward thread: {e}")))?;
        let stream = rx
            .await
            .map_err(|_| Error::Internal("port-forward thread died".into()))?
            .map_err(|e| Error::Unavailable(format!("cannot connect to port {port} in pod {}: {e}", record.id)))?;
        stream.set_nonblocking(true).map_err(|e| Error::Internal(format!("port-forward socket: {e}")))?;
        tracing::debug!(pod_id = %record.id, port, "port-forward connected");
        tokio::net::TcpStream::from_std(stream).map_err(|e| Error::Internal(format!("port-forward socket: {e}")))
    }
}

/// Runs on its own thread: joins `netns` (if any), then connects.
fn connect_in(netns: Option<PathBuf>, port: u16, timeout: Duration) -> std::io::Result<std::net::TcpStream> {
    if let Some(path) = netns {
        let file = std::fs::File::open(&path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("pod network namespace {}: {e}", path.display())))?;
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| std::io::Error::other(format!("cannot enter the pod's network namespace: {e}")))?;
    }
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match std::net::TcpStream::connect_timeout(&v4, timeout) {
        Ok(s) => Ok(s),
        Err(e4) => std::net::TcpStream::connect_timeout(&SocketAddr::from((Ipv6Addr::LOCALHOST, port)), timeout).map_err(|_| e4),
    }
}
