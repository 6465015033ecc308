//! GPU health for ListAndWatch: a GPU whose device node is gone (driver unloaded, device
//! fallen off the bus) is reported Unhealthy, so kubelet stops allocating it.

use std::path::PathBuf;
use std::time::Duration;

use cri_proto::deviceplugin::v1beta1 as api;
use tokio::sync::watch;

use crate::node::gpu::{self, Gpu};

/// The device list as kubelet sees it.
pub fn devices(root: &std::path::Path, gpus: &[Gpu]) -> Vec<api::Device> {
    gpus.iter()
        .map(|g| api::Device {
            id: g.index.to_string(),
            health: if gpu::is_present(root, g) { api::HEALTHY } else { api::UNHEALTHY }.into(),
            topology: None,
        })
        .collect()
}

/// Checks the device nodes every `every`; the receiver sees a new list only when a health
/// changed.
pub fn spawn_poller(
    root: PathBuf,
    gpus: Vec<Gpu>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) -> watch::Receiver<Vec<api::Device>> {
    let (tx, rx) = watch::channel(devices(&root, &gpus));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            let now = devices(&root, &gpus);
            tx.send_if_modified(|current| {
                if *current == now {
                    return false;
                }
                for d in &now {
                    tracing::warn!(gpu = %d.id, health = %d.health, "GPU health");
                }
                *current = now;
                true
            });
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_vanished_device_node_turns_unhealthy_and_is_streamed() {
        let root = tempfile::tempdir().unwrap();
        gpu::tests::fake_tree(root.path());
        let inv = gpu::discover(root.path()).unwrap();
        let (_stop_tx, stop) = watch::channel(false);
        let mut rx = spawn_poller(root.path().to_path_buf(), inv.gpus, Duration::from_millis(20), stop);
        assert!(rx.borrow_and_update().iter().all(|d| d.health == api::HEALTHY));
        std::fs::remove_file(root.path().join("dev/nvidia1")).unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.changed()).await.unwrap().unwrap();
        let now = rx.borrow().clone();
        assert_eq!(now.iter().map(|d| (d.id.as_str(), d.health.as_str())).collect::<Vec<_>>(), vec![("0", "Healthy"), ("1", "Unhealthy")]);
    }
}
