//! The CRI socket: exclusive ownership, binding, serving, graceful shutdown; the streaming
//! server (exec/attach/port-forward) runs beside it and stops with it.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use capstan_runtime::streaming::server::StreamingServer;
use cri_proto::{ImageServiceServer, RuntimeServiceServer};
use nix::fcntl::{Flock, FlockArg};
use tokio::net::UnixListener;

use crate::config::Config;
use crate::cri::Cri;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "another capstan daemon is already serving {socket} (it holds {lock}{holder}); \
         stop it first or pass a different --socket"
    )]
    AlreadyRunning { socket: PathBuf, lock: PathBuf, holder: String },
    #[error("cannot lock {path}: {source}")]
    Lock { path: PathBuf, source: std::io::Error },
    #[error("cannot bind CRI socket {path}: {source}")]
    Bind { path: PathBuf, source: std::io::Error },
    #[error("cannot open the runtime: {0}")]
    Runtime(#[from] capstan_runtime::Error),
    #[error("invalid streaming configuration: {0}")]
    StreamingConfig(String),
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("cannot serve metrics on {0}: {1}")]
    Metrics(std::net::SocketAddr, std::io::Error),
}

/// Holds the socket's lock for the daemon's lifetime and removes the socket on drop.
pub struct SocketOwner {
    socket: PathBuf,
    _lock: Flock<File>,
}

impl Drop for SocketOwner {
    fn drop(&mut self) {
        // The lock file stays: removing it would race with a daemon that is starting.
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Takes exclusive ownership of `socket` and binds it.
///
/// One daemon per socket: the `<socket>.lock` file is flock'ed for the daemon's lifetime,
/// so a second instance fails at once instead of stealing the socket. A socket file left by
/// a daemon that died is stale once we hold the lock, and is removed.
pub fn bind(socket: &Path) -> Result<(UnixListener, SocketOwner), ServerError> {
    let dir = socket.parent().unwrap_or(Path::new("/"));
    capstan_runtime::create_private_dir(dir)?;
    let lock_path = lock_path(socket);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|source| ServerError::Lock { path: lock_path.clone(), source })?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let holder = std::fs::read_to_string(&lock_path)
                .ok()
                .map(|pid| pid.trim().to_string())
                .filter(|pid| !pid.is_empty())
                .map(|pid| format!(", pid {pid}"))
                .unwrap_or_default();
            return Err(ServerError::AlreadyRunning { socket: socket.to_path_buf(), lock: lock_path, holder });
        }
        Err((_, errno)) => return Err(ServerError::Lock { path: lock_path, source: errno.into() }),
    };
    // Record who holds it, for the message a second instance prints.
    let _ = lock.set_len(0).and_then(|_| write!(&mut *lock, "{}", std::process::id()));
    match std::fs::remove_file(socket) {
        Ok(()) => tracing::info!(socket = %socket.display(), "removed stale socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(ServerError::Bind { path: socket.to_path_buf(), source }),
    }
    let listener =
        UnixListener::bind(socket).map_err(|source| ServerError::Bind { path: socket.to_path_buf(), source })?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
        .map_err(|source| ServerError::Bind { path: socket.to_path_buf(), source })?;
    Ok((listener, SocketOwner { socket: socket.to_path_buf(), _lock: lock }))
}

fn lock_path(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// How long in-flight calls get to finish after SIGTERM before the daemon exits anyway.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs the daemon until SIGTERM or SIGINT, then stops accepting, lets in-flight calls
/// finish, and removes the socket.
pub async fn run(config: Config) -> Result<(), ServerError> {
    let options = config.runtime_options();
    let runtime = tokio::task::spawn_blocking(move || capstan_runtime::Runtime::open(options))
        .await
        .map_err(|e| capstan_runtime::Error::Internal(e.to_string()))??;
    // The socket's lock first: a second daemon started by mistake must fail before it
    // touches the state the running one owns.
    let (listener, owner) = bind(&config.socket)?;
    // Before serving: what a crash left half-made must never be visible.
    runtime.recover().await;
    let runtime = Arc::new(runtime);
    let runtime_ready = runtime.runtime_ready().is_ok();
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let streaming_options = config.streaming.options().map_err(ServerError::StreamingConfig)?;
    let streaming = Arc::new(StreamingServer::start(streaming_options, runtime.clone()).await?);
    let cri = Arc::new(Cri::new(runtime.clone(), Arc::new(config.clone()), metrics.clone()).with_streaming(streaming.clone()));
    tracing::info!(
        socket = %config.socket.display(),
        root = %config.root.display(),
        state = %config.state.display(),
        version = env!("CARGO_PKG_VERSION"),
        "capstan is serving CRI v1"
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        // Said here, not in the select below: whichever branch wins there, systemd must hear it.
        crate::systemd::stopping();
        let _ = stop_tx.send(true);
    });
    let graceful = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let metrics_server = match config.metrics.address.parse::<std::net::SocketAddr>() {
        Ok(address) => {
            let mut rx = stop_rx.clone();
            let stop = async move {
                let _ = rx.wait_for(|stop| *stop).await;
            };
            Some(
                crate::metrics::http::serve(address, metrics.clone(), runtime.clone(), stop)
                    .await
                    .map_err(|e| ServerError::Metrics(address, e))?,
            )
        }
        Err(_) => None, // empty: off (the config check rejects anything else)
    };
    let device_plugin = crate::device_plugin::spawn(&config, stop_rx.clone());
    let agent = crate::agent_mode::spawn(&config, cri.clone(), runtime_ready, stop_rx.clone());
    let serve = tonic::transport::Server::builder()
        .layer(crate::metrics::layer::RpcMetricsLayer::new(metrics))
        .add_service(RuntimeServiceServer::from_arc(cri.clone()))
        .add_service(ImageServiceServer::from_arc(cri))
        .serve_with_incoming_shutdown(cri_proto::unix::incoming(listener), graceful);
    crate::systemd::ready();
    // A client that never closes its connection (or a stuck stream) must not keep the
    // daemon from stopping: after the grace period it exits anyway.
    let deadline = {
        let mut rx = stop_rx;
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        }
    };
    tokio::select! {
        result = serve => result?,
        () = deadline => tracing::warn!(
            grace_secs = SHUTDOWN_GRACE.as_secs(),
            "in-flight calls or open connections outlived the grace period; exiting anyway"
        ),
    }
    if let Some(task) = metrics_server {
        task.abort();
    }
    if let Some(task) = device_plugin {
        // It saw the stop too and is removing its socket; do not wait on it for long.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), task).await;
    }
    if let Some(task) = agent {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), task).await;
    }
    streaming.shutdown().await;
    // Removed containers' cleanups (unmounts, cgroups): let them end rather than cut them
    // short; whatever is left is finished at the next start.
    runtime.wait_all_removals(std::time::Duration::from_secs(5)).await;
    drop(owner);
    tracing::info!("capstan stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; the daemon can only be stopped with SIGKILL");
        return std::future::pending().await;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutting down: no new calls, finishing in-flight ones");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_bind_is_refused_and_names_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("run/c.sock");
        let (_l, owner) = bind(&sock).unwrap();
        let err = match bind(&sock) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("second bind succeeded"),
        };
        assert!(err.contains("already serving"), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        drop(owner);
        assert!(!sock.exists(), "socket removed on drop");
        // Once released, the socket can be taken again.
        let _again = bind(&sock).unwrap();
    }

    #[tokio::test]
    async fn stale_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("c.sock");
        std::fs::write(&sock, b"stale").unwrap();
        let (_l, _o) = bind(&sock).unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::metadata(&sock).unwrap().file_type().is_socket());
    }
}
