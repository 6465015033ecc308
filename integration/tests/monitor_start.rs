//! RunPodSandbox attaches the pod network (CNI ADD) while the pod's monitor finishes
//! starting: the monitor says where the netns is pinned, then moves the infra process into
//! its cgroup. A monitor that dies between the two must fail the call cleanly: the network
//! attached meanwhile is detached again, and nothing of the pod stays on the host.

use capstan_integration::pods::{self, BridgeNet, Env};
use cri_proto::v1;

#[tokio::test(flavor = "multi_thread")]
async fn a_monitor_dying_while_the_network_is_attached_leaves_nothing() {
    if !capstan_integration::root_or_skip("pods need root (namespaces, mounts, cgroups)") {
        return;
    }
    let mut env = Env::start().await;
    let net = BridgeNet::new(&env.daemon);
    env.daemon
        .set_env("CAPSTAN_CRASH_AT", Some("monitor_start:after_netns_pinned"));
    env.daemon.restart().await;
    env.rt = env.daemon.runtime_client().await;

    let config = env.sandbox_config("dies-starting");
    let err = env
        .rt
        .run_pod_sandbox(v1::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
        .expect_err("RunPodSandbox with a monitor that dies while starting");
    assert_eq!(err.code(), tonic::Code::Internal, "{err:?}");
    assert!(
        err.message().contains("pod monitor did not start"),
        "{err:?}"
    );
    let log = env.daemon.log();
    assert!(
        log.contains("pod attached to CNI network"),
        "the network was not attached while the monitor started, so this test shows nothing:\n{log}"
    );
    assert!(env.daemon.pid().is_some(), "the daemon must live on");
    let listed = env
        .rt
        .list_pod_sandbox(v1::ListPodSandboxRequest { filter: None })
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items;
    assert!(listed.is_empty(), "a failed pod is listed: {listed:?}");
    let mut left = pods::wait_no_leftovers(&env.daemon, &[]).await;
    left.extend(net.leftovers(&env.daemon));
    assert!(left.is_empty(), "left behind: {left:#?}");

    // The same network serves the next pod once monitors start normally again.
    env.daemon.set_env("CAPSTAN_CRASH_AT", None);
    env.daemon.restart().await;
    env.rt = env.daemon.runtime_client().await;
    let (pod, _) = env.pod("starts").await;
    let status = env.pod_status(&pod).await;
    let ip = status.network.map(|n| n.ip).unwrap_or_default();
    assert!(ip.starts_with(&net.subnet_prefix), "pod ip {ip:?}");
    env.remove_pod(&pod).await;
    let mut left = pods::wait_no_leftovers(&env.daemon, &[pod]).await;
    left.extend(net.leftovers(&env.daemon));
    assert!(left.is_empty(), "left behind: {left:#?}");
}
