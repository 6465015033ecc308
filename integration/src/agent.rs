//! What the agent-mode tests share: unmounting what a failed test left under the daemon's
//! agent directory ([`Unmount`]), and the sandboxes the agent made for a pod, each handed
//! to [`Cleanup`] as it is seen ([`sandboxes`], [`wait_sandbox`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cri_proto::v1;

use crate::daemon::Daemon;
use crate::pods::{Cleanup, Rt};

/// Unmounts whatever is left below its directory when dropped (after a failed assertion),
/// before the daemon's directories are removed.
pub struct Unmount(pub PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        for m in mounts_below(&self.0) {
            let _ = nix::mount::umount2(Path::new(&m), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// The mount points below `dir`, as mountinfo lists them.
pub fn mounts_below(dir: &Path) -> Vec<String> {
    let prefix = dir.to_str().unwrap_or_default();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(prefix))
        .map(String::from)
        .collect()
}

/// The sandboxes of the pod named `pod_name` (kubelet's `io.kubernetes.pod.name` label),
/// each added to `cleanup` so a failed test still removes it.
pub async fn sandboxes(rt: &mut Rt, cleanup: &mut Cleanup, pod_name: &str) -> Vec<v1::PodSandbox> {
    let filter = v1::PodSandboxFilter { label_selector: [("io.kubernetes.pod.name".to_string(), pod_name.to_string())].into(), ..Default::default() };
    let items = rt.list_pod_sandbox(v1::ListPodSandboxRequest { filter: Some(filter) }).await.expect("ListPodSandbox").into_inner().items;
    for s in &items {
        if !cleanup.pods.contains(&s.id) {
            cleanup.pods.push(s.id.clone());
        }
    }
    items
}

/// Waits (90 s at the most) for the one ready sandbox of `pod_name`, other than `not`; two
/// at once is a failure (the agent made the pod twice).
pub async fn wait_sandbox(rt: &mut Rt, cleanup: &mut Cleanup, daemon: &Daemon, pod_name: &str, not: Option<&str>) -> v1::PodSandbox {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let ready: Vec<_> = sandboxes(rt, cleanup, pod_name)
            .await
            .into_iter()
            .filter(|s| s.state == v1::PodSandboxState::SandboxReady as i32 && Some(s.id.as_str()) != not)
            .collect();
        if let [one] = ready.as_slice() {
            return one.clone();
        }
        assert!(ready.len() <= 1, "{} sandboxes for {pod_name}", ready.len());
        assert!(Instant::now() < deadline, "no sandbox for {pod_name}; log:\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
