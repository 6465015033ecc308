//! Capstan as kubelet's device plugin for NVIDIA GPUs (resource `nvidia.com/gpu`, API
//! v1beta1): serve the `DevicePlugin` service on a socket in kubelet's device-plugin
//! directory, then `Register` with kubelet's `kubelet.sock` there.
//!
//! Kubelet forgets every plugin when it restarts: it wipes the directory and recreates its
//! socket. So we watch `kubelet.sock` (its inode, polled every second) and our own socket;
//! when either changes we serve again and register again. Off when no GPU is found.
//!
//! [`service`] answers the calls; [`health`] follows the device nodes.

pub mod health;
pub mod service;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cri_proto::deviceplugin::v1beta1 as api;
use tokio::sync::watch;

use crate::config::Config;
use crate::node::gpu;

/// Our socket's file name in the device-plugin directory.
pub const ENDPOINT: &str = "capstan-nvidia-gpu.sock";
/// How often the kubelet socket and the device nodes are checked.
const POLL: Duration = Duration::from_secs(1);
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the plugin when it is enabled and GPUs are found; `None` otherwise.
pub fn spawn(config: &Config, stop: watch::Receiver<bool>) -> Option<tokio::task::JoinHandle<()>> {
    if !config.device_plugin.enabled {
        return None;
    }
    let root = config.node.host_root.clone();
    let inventory = match gpu::discover(&root) {
        Ok(inv) if !inv.gpus.is_empty() => inv,
        Ok(_) => {
            tracing::info!(root = %root.display(), "no NVIDIA GPU found; the device plugin stays off");
            return None;
        }
        Err(e) => {
            tracing::warn!(root = %root.display(), error = %e, "cannot look for GPUs; the device plugin stays off");
            return None;
        }
    };
    tracing::info!(gpus = inventory.gpus.len(), product = ?inventory.product(), "NVIDIA GPUs found; serving the device plugin");
    let devices = health::spawn_poller(root.clone(), inventory.gpus.clone(), POLL, stop.clone());
    let plugin = Arc::new(service::GpuPlugin {
        inventory,
        host_root: root,
        cdi_spec_dirs: config.cdi.spec_dirs.clone(),
        mode: config.device_plugin.allocate,
        devices,
    });
    Some(tokio::spawn(run(plugin, config.device_plugin.dir.clone(), stop)))
}

/// Identity of a socket file, to notice it being recreated.
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Serve, register, and start over whenever kubelet restarts, until `stop`.
async fn run(plugin: Arc<service::GpuPlugin>, dir: PathBuf, mut stop: watch::Receiver<bool>) {
    let kubelet_sock = dir.join(api::KUBELET_SOCKET);
    let own_sock = dir.join(ENDPOINT);
    loop {
        // Wait for kubelet's socket.
        let kubelet = loop {
            if let Some(id) = identity(&kubelet_sock) {
                break id;
            }
            if sleep_or_stop(&mut stop).await {
                return;
            }
        };
        let server = match serve(plugin.clone(), &own_sock) {
            Ok(server) => server,
            Err(e) => {
                tracing::warn!(socket = %own_sock.display(), error = %e, "cannot serve the device plugin; retrying");
                if sleep_or_stop(&mut stop).await {
                    return;
                }
                continue;
            }
        };
        let own = identity(&own_sock);
        if let Err(e) = register(&kubelet_sock).await {
            tracing::warn!(kubelet = %kubelet_sock.display(), error = %e, "kubelet refused or missed the registration; retrying");
            server.abort();
            if sleep_or_stop(&mut stop).await {
                return;
            }
            continue;
        }
        tracing::info!(kubelet = %kubelet_sock.display(), resource = service::RESOURCE_NAME, "registered with kubelet");
        let registered_with = Some(kubelet);
        // Start over when kubelet's socket or ours changes.
        loop {
            if sleep_or_stop(&mut stop).await {
                server.abort();
                let _ = std::fs::remove_file(&own_sock);
                return;
            }
            if identity(&kubelet_sock) != registered_with || identity(&own_sock) != own {
                tracing::info!("kubelet's device-plugin socket changed (kubelet restarted?); registering again");
                break;
            }
        }
        // Dropping the server closes kubelet's ListAndWatch stream, which a graceful stop
        // would wait for forever.
        server.abort();
    }
}

/// Sleeps one poll interval; true when the daemon is stopping.
async fn sleep_or_stop(stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(POLL) => *stop.borrow(),
        r = stop.changed() => r.is_err() || *stop.borrow(),
    }
}

/// Binds our socket (replacing a stale one) and serves the plugin on it.
fn serve(plugin: Arc<service::GpuPlugin>, socket: &Path) -> std::io::Result<tokio::task::JoinHandle<()>> {
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = tokio::net::UnixListener::bind(socket)?;
    let server = tonic::transport::Server::builder()
        .add_service(api::device_plugin_server::DevicePluginServer::from_arc(plugin))
        .serve_with_incoming(cri_proto::unix::incoming(listener));
    Ok(tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::warn!(error = %e, "device plugin server stopped");
        }
    }))
}

/// `Registration.Register` with kubelet: our endpoint, resource and options.
async fn register(kubelet_sock: &Path) -> Result<(), String> {
    let call = async {
        let channel = cri_proto::unix::connect(kubelet_sock).await.map_err(|e| e.to_string())?;
        let mut client = api::registration_client::RegistrationClient::new(channel);
        client
            .register(api::RegisterRequest {
                version: api::VERSION.into(),
                endpoint: ENDPOINT.into(),
                resource_name: service::RESOURCE_NAME.into(),
                options: Some(service::options()),
            })
            .await
            .map_err(|s| format!("{}: {}", s.code(), s.message()))?;
        Ok(())
    };
    tokio::time::timeout(REGISTER_TIMEOUT, call).await.map_err(|_| "timed out".to_string())?
}
