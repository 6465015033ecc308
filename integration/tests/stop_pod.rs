//! StopPodSandbox runs CNI DEL while the pod's monitor shuts down, on a netns pin of the
//! daemon's own (`ns/net-del`). When DEL fails the call reports it, the pod is not ready
//! any more (its containers and infra are gone), and the pin stays so that kubelet's retry
//! can still enter the netns: the retry's DEL then releases the address and the veth.

use std::path::{Path, PathBuf};

use capstan_integration::pods::{self, BridgeNet, Env};
use cri_proto::v1;

fn is_nsfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// host-local's data dir with a file standing in its place (DEL fails); put back on
/// `unblock` or on drop, so a failed assertion still lets the pod be removed.
struct BlockedIpam {
    dir: PathBuf,
    away: PathBuf,
}

impl BlockedIpam {
    fn new(dir: PathBuf) -> BlockedIpam {
        let away = dir.with_extension("away");
        std::fs::rename(&dir, &away).expect("move the IPAM dir away");
        std::fs::write(&dir, b"not a directory").expect("block the IPAM dir");
        BlockedIpam { dir, away }
    }

    fn unblock(&self) -> std::io::Result<()> {
        if self.away.exists() {
            std::fs::remove_file(&self.dir)?;
            std::fs::rename(&self.away, &self.dir)?;
        }
        Ok(())
    }
}

impl Drop for BlockedIpam {
    fn drop(&mut self) {
        let _ = self.unblock();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_del_keeps_the_netns_for_the_retry() {
    if !capstan_integration::root_or_skip("pods need root (namespaces, mounts, cgroups)") {
        return;
    }
    let mut env = Env::start().await;
    let net = BridgeNet::new(&env.daemon);
    let (pod, _) = env.pod("del-retry").await;
    let hold = env
        .daemon
        .state()
        .join("pods")
        .join(&pod)
        .join("ns/net-del");

    // host-local cannot open its data dir while a file stands in its place: DEL fails.
    let blocked = BlockedIpam::new(env.daemon.scratch().join("ipam"));
    let err = env
        .rt
        .stop_pod_sandbox(v1::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .expect_err("StopPodSandbox with a failing CNI DEL");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("pod network teardown failed"),
        "{err:?}"
    );
    let status = env.pod_status(&pod).await;
    assert_eq!(
        status.state,
        v1::PodSandboxState::SandboxNotready as i32,
        "the infra is gone: not ready"
    );
    assert!(
        is_nsfs(&hold),
        "the daemon's netns pin must outlive the failed DEL"
    );
    let reserved = std::fs::read_dir(blocked.away.join("statsnet"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .parse::<std::net::IpAddr>()
                .is_ok()
        })
        .count();
    assert_eq!(
        reserved, 1,
        "the address stays reserved while DEL has not succeeded"
    );

    blocked.unblock().expect("restore the IPAM dir");
    env.rt
        .stop_pod_sandbox(v1::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("retried StopPodSandbox: {e}\n{}", env.daemon.log()));
    assert!(!hold.exists(), "the pin goes with a successful DEL");
    let left = net.leftovers(&env.daemon);
    assert!(
        left.is_empty(),
        "DEL on the retry released nothing: {left:#?}"
    );
    env.remove_pod(&pod).await;
    let left = pods::wait_no_leftovers(&env.daemon, std::slice::from_ref(&pod)).await;
    assert!(left.is_empty(), "left behind: {left:#?}");
}
