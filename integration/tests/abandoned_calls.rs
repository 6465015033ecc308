//! Calls whose client gives up half-way (kubelet's call timeout, a killed crictl): tonic
//! drops the handler when the client goes away, so every lifecycle step runs as a task of
//! its own and finishes anyway. Each call here is abandoned a few milliseconds in; the pod
//! or container must then reach the state the call asked for, never stay half-made, and
//! everything must remove cleanly.

use std::time::{Duration, Instant};

use capstan_integration::pods::{Env, container, wait_no_leftovers};
use cri_proto::v1;

/// Sends a call and drops it after `after` (the call keeps running in the daemon).
async fn abandon<F: std::future::Future>(after: Duration, call: F) {
    let _ = tokio::time::timeout(after, call).await;
}

async fn wait_for<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} did not happen after the client went away");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_calls_finish_when_their_client_goes_away() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (namespaces, mounts, cgroups)");
        return;
    }
    let mut env = Env::start().await;
    let config = env.sandbox_config("abandoned");
    let short = Duration::from_millis(3);

    // RunPodSandbox: the pod appears and becomes ready.
    let mut rt = env.rt.clone();
    abandon(short, rt.run_pod_sandbox(v1::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() })).await;
    let pod = wait_for("the abandoned RunPodSandbox's pod", async || {
        let items = env.rt.list_pod_sandbox(v1::ListPodSandboxRequest { filter: None }).await.ok()?.into_inner().items;
        items.into_iter().find(|p| p.state == v1::PodSandboxState::SandboxReady as i32).map(|p| p.id)
    })
    .await;
    env.cleanup.pods.push(pod.clone());

    // CreateContainer, then StartContainer: the container is created, then runs.
    let request = v1::CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(container("c", &env.busybox, &["sleep", "3600"])),
        sandbox_config: Some(config.clone()),
    };
    abandon(short, rt.create_container(request)).await;
    let id = wait_for("the abandoned CreateContainer's container", async || {
        let list = env.rt.list_containers(v1::ListContainersRequest { filter: None }).await.ok()?.into_inner().containers;
        list.into_iter().find(|c| c.state == v1::ContainerState::ContainerCreated as i32).map(|c| c.id)
    })
    .await;
    abandon(short, rt.start_container(v1::StartContainerRequest { container_id: id.clone() })).await;
    wait_for("the abandoned StartContainer's start", async || {
        (env.status(&id).await.state == v1::ContainerState::ContainerRunning as i32).then_some(())
    })
    .await;

    // StopPodSandbox, then RemovePodSandbox: the pod stops, then is gone with everything.
    abandon(short, rt.stop_pod_sandbox(v1::StopPodSandboxRequest { pod_sandbox_id: pod.clone() })).await;
    wait_for("the abandoned StopPodSandbox's stop", async || {
        let items = env.rt.list_pod_sandbox(v1::ListPodSandboxRequest { filter: None }).await.ok()?.into_inner().items;
        items.iter().any(|p| p.id == pod && p.state == v1::PodSandboxState::SandboxNotready as i32).then_some(())
    })
    .await;
    abandon(short, rt.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: pod.clone() })).await;
    wait_for("the abandoned RemovePodSandbox's removal", async || {
        let items = env.rt.list_pod_sandbox(v1::ListPodSandboxRequest { filter: None }).await.ok()?.into_inner().items;
        items.is_empty().then_some(())
    })
    .await;
    env.cleanup.pods.clear();
    let left = wait_no_leftovers(&env.daemon, std::slice::from_ref(&pod)).await;
    assert!(left.is_empty(), "left behind: {left:#?}");
}
