//! Crash consistency against the real daemon: it is started with `CAPSTAN_CRASH_AT` naming
//! one crash point (runtime/src/crashpoint.rs) or a random one, driven through a pod
//! lifecycle until it kills itself with SIGKILL, restarted without the variable, and then
//! must list everything it acknowledged, show nothing half-made, let the lifecycle be
//! finished through CRI, and leave nothing behind (mounts, monitors, cgroups, veths, IPAM
//! reservations, records). `CAPSTAN_CRASH_LIFECYCLES` sets how many lifecycles run.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use capstan_integration::pods::{self, BridgeNet, Env};
use cri_proto::v1;

/// Every crash point a pod lifecycle reaches, in order (see runtime/src/crashpoint.rs).
const LIFECYCLE_POINTS: &[&str] = &[
    "run_pod_sandbox:after_record",
    "run_pod_sandbox:after_pod_files",
    "run_pod_sandbox:after_monitor",
    "run_pod_sandbox:after_network",
    "run_pod_sandbox:after_ready",
    "create_container:after_record",
    "create_container:after_rootfs",
    "create_container:after_bundle",
    "create_container:after_status",
    "start_container:after_monitor_create",
    "start_container:before_start",
    "start_container:after_start",
    "stop_container:before_stop",
    "stop_container:after_stop",
    "remove_container:after_stop",
    "remove_container:after_trash",
    "remove_container:after_monitor_remove",
    "remove_container:after_unmount",
    "remove_container:after_dir_removed",
    "stop_pod_sandbox:after_kill_containers",
    "stop_pod_sandbox:after_network",
    "stop_pod_sandbox:after_monitor",
    "stop_pod_sandbox:after_record",
    "remove_pod_sandbox:after_stop",
    "remove_pod_sandbox:after_containers",
    "remove_pod_sandbox:after_pod_dir",
    "remove_pod_sandbox:after_record_removed",
];
const PULL_POINTS: &[&str] = &["pull_image:after_blobs", "pull_image:before_record", "pull_image:after_record"];

#[derive(Default)]
struct Figures {
    lifecycles: usize,
    crashes: usize,
    leaks: usize,
}

/// What the client was told exists before the daemon died (a pod or container whose
/// removal was under way may be listed or not).
#[derive(Default)]
struct Acked {
    pods: BTreeSet<String>,
    containers: BTreeSet<String>,
    /// Whose removal was asked for: listed or not, in any state.
    removing: BTreeSet<String>,
}

/// Result of one call: `Ok` answered, `Err(true)` the daemon died under it.
async fn outcome<T>(env: &mut Env, call: &str, r: Result<tonic::Response<T>, tonic::Status>) -> Result<T, bool> {
    match r {
        Ok(r) => Ok(r.into_inner()),
        Err(status) => {
            assert!(
                env.daemon.wait_exit(Duration::from_secs(5)).await,
                "{call} failed but the daemon did not crash: {status:?}\n{}",
                env.daemon.log()
            );
            Err(true)
        }
    }
}

/// One lifecycle: pod, container started, stopped, removed, pod stopped, removed. Stops at
/// the first call the daemon died under; returns whether it did.
async fn lifecycle(env: &mut Env, name: &str, acked: &mut Acked) -> bool {
    let config = env.sandbox_config(name);
    let run = v1::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
    let r = env.rt.run_pod_sandbox(run).await;
    let Ok(pod) = outcome(env, "RunPodSandbox", r).await.map(|r| r.pod_sandbox_id) else { return true };
    acked.pods.insert(pod.clone());
    env.cleanup.pods.push(pod.clone());
    let c = pods::container("c", &env.busybox, &["sleep", "3600"]);
    let create = v1::CreateContainerRequest { pod_sandbox_id: pod.clone(), config: Some(c), sandbox_config: Some(config) };
    let r = env.rt.create_container(create).await;
    let Ok(id) = outcome(env, "CreateContainer", r).await.map(|r| r.container_id) else { return true };
    acked.containers.insert(id.clone());
    let r = env.rt.start_container(v1::StartContainerRequest { container_id: id.clone() }).await;
    if outcome(env, "StartContainer", r).await.is_err() {
        return true;
    }
    let r = env.rt.stop_container(v1::StopContainerRequest { container_id: id.clone(), timeout: 1 }).await;
    if outcome(env, "StopContainer", r).await.is_err() {
        return true;
    }
    // From here the container may be gone if the daemon dies before answering.
    acked.containers.remove(&id);
    acked.removing.insert(id.clone());
    let r = env.rt.remove_container(v1::RemoveContainerRequest { container_id: id.clone() }).await;
    if outcome(env, "RemoveContainer", r).await.is_err() {
        return true;
    }
    let r = env.rt.stop_pod_sandbox(v1::StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await;
    if outcome(env, "StopPodSandbox", r).await.is_err() {
        return true;
    }
    acked.pods.remove(&pod);
    acked.removing.insert(pod.clone());
    let r = env.rt.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: pod.clone() }).await;
    if outcome(env, "RemovePodSandbox", r).await.is_err() {
        return true;
    }
    env.cleanup.pods.retain(|p| p != &pod);
    false
}

/// After the restart: what was acknowledged is there, nothing is half-made; then
/// everything is finished through CRI.
async fn check_and_clean(env: &mut Env, point: &str, acked: &Acked) -> Vec<String> {
    let listed = env.rt.list_pod_sandbox(v1::ListPodSandboxRequest { filter: None }).await.unwrap().into_inner().items;
    let ids: BTreeSet<String> = listed.iter().map(|p| p.id.clone()).collect();
    for pod in &acked.pods {
        assert!(ids.contains(pod), "[{point}] acknowledged pod {pod} is not listed after the crash: {listed:?}");
    }
    for p in &listed {
        let ok = [v1::PodSandboxState::SandboxReady as i32, v1::PodSandboxState::SandboxNotready as i32];
        assert!(ok.contains(&p.state), "[{point}] pod in a bad state: {p:?}");
        let s = env.rt.pod_sandbox_status(v1::PodSandboxStatusRequest { pod_sandbox_id: p.id.clone(), verbose: false }).await;
        assert!(s.is_ok(), "[{point}] PodSandboxStatus of a listed pod: {s:?}");
        // One the client never heard of is a RunPodSandbox whose answer the crash ate:
        // it finished, so it is ready (an unfinished one is undone at start-up).
        if !acked.pods.contains(&p.id) && !acked.removing.contains(&p.id) {
            assert_eq!(p.state, ok[0], "[{point}] half-made pod visible: {p:?}");
        }
    }
    let containers = env.rt.list_containers(v1::ListContainersRequest { filter: None }).await.unwrap().into_inner().containers;
    let cids: BTreeSet<String> = containers.iter().map(|c| c.id.clone()).collect();
    for c in &acked.containers {
        assert!(cids.contains(c), "[{point}] acknowledged container {c} is not listed: {containers:?}");
    }
    for c in &containers {
        assert!(ids.contains(&c.pod_sandbox_id), "[{point}] container {} of an unlisted pod", c.id);
        let valid = [v1::ContainerState::ContainerCreated, v1::ContainerState::ContainerRunning, v1::ContainerState::ContainerExited];
        assert!(valid.iter().any(|s| *s as i32 == c.state), "[{point}] half-made container visible: {c:?}");
        if !acked.containers.contains(&c.id) && !acked.removing.contains(&c.id) {
            assert_eq!(c.state, v1::ContainerState::ContainerCreated as i32, "[{point}] half-made container visible: {c:?}");
        }
        let s = env.status(&c.id).await;
        assert_eq!(s.state, c.state, "[{point}] status and list disagree");
    }
    // Finish the lifecycle as kubelet would: containers stopped and removed, pods too.
    for c in &containers {
        env.rt.stop_container(v1::StopContainerRequest { container_id: c.id.clone(), timeout: 0 }).await.unwrap_or_else(|e| {
            panic!("[{point}] StopContainer after the crash: {e}\n{}", env.daemon.log())
        });
        env.rt.remove_container(v1::RemoveContainerRequest { container_id: c.id.clone() }).await.unwrap_or_else(|e| {
            panic!("[{point}] RemoveContainer after the crash: {e}\n{}", env.daemon.log())
        });
    }
    for p in &listed {
        env.rt.stop_pod_sandbox(v1::StopPodSandboxRequest { pod_sandbox_id: p.id.clone() }).await.unwrap_or_else(|e| {
            panic!("[{point}] StopPodSandbox after the crash: {e}\n{}", env.daemon.log())
        });
        env.rt.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: p.id.clone() }).await.unwrap_or_else(|e| {
            panic!("[{point}] RemovePodSandbox after the crash: {e}\n{}", env.daemon.log())
        });
        env.cleanup.pods.retain(|x| x != &p.id);
    }
    listed.into_iter().map(|p| p.id).collect()
}

async fn leaks(env: &Env, net: &BridgeNet, pods: &[String]) -> Vec<String> {
    let mut left = pods::wait_no_leftovers(&env.daemon, pods).await;
    left.extend(net.leftovers(&env.daemon));
    left
}

/// Pull crash points: the image is removed, pulled under the crash point, and after the
/// restart it is either there and whole or absent, and a pull succeeds.
async fn crash_pull(env: &mut Env, point: &str) -> bool {
    let image = env.busybox.clone();
    let spec = || Some(v1::ImageSpec { image: image.clone(), ..Default::default() });
    let mut img = env.daemon.image_client().await;
    img.remove_image(v1::RemoveImageRequest { image: spec() }).await.unwrap();
    env.daemon.set_env("CAPSTAN_CRASH_AT", Some(point));
    env.daemon.restart().await;
    let mut img = env.daemon.image_client().await;
    let r = img.pull_image(v1::PullImageRequest { image: spec(), auth: None, sandbox_config: None }).await;
    let crashed = r.is_err();
    assert!(!crashed || env.daemon.wait_exit(Duration::from_secs(5)).await, "[{point}] pull failed without a crash: {r:?}");
    env.daemon.set_env("CAPSTAN_CRASH_AT", None);
    env.daemon.restart().await;
    let mut img = env.daemon.image_client().await;
    let status = img.image_status(v1::ImageStatusRequest { image: spec(), verbose: false }).await.unwrap().into_inner();
    if let Some(i) = &status.image {
        assert!(!i.id.is_empty() && i.size > 0, "[{point}] image listed but not whole: {i:?}");
    }
    img.pull_image(v1::PullImageRequest { image: spec(), auth: None, sandbox_config: None })
        .await
        .unwrap_or_else(|e| panic!("[{point}] pull after the crash: {e}\n{}", env.daemon.log()));
    env.rt = env.daemon.runtime_client().await;
    crashed
}

#[tokio::test(flavor = "multi_thread")]
async fn crashes_at_every_step_lose_nothing_and_leak_nothing() {
    if !capstan_integration::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let wanted: usize = std::env::var("CAPSTAN_CRASH_LIFECYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let mut env = Env::start().await;
    let net = BridgeNet::new(&env.daemon);
    env.daemon.restart().await;
    env.rt = env.daemon.runtime_client().await;
    let started = Instant::now();
    let mut figures = Figures::default();
    let mut all_pods: Vec<String> = Vec::new();
    let mut uncrashed = 0;
    for point in PULL_POINTS {
        figures.crashes += usize::from(crash_pull(&mut env, point).await);
    }
    let mut i = 0;
    while figures.lifecycles < wanted {
        // Every named point once, then random points (seeded by the lifecycle number).
        let (point, plan) = match LIFECYCLE_POINTS.get(i) {
            Some(p) => (p.to_string(), p.to_string()),
            None => (format!("random#{i}"), format!("random:{i}:6")),
        };
        env.daemon.set_env("CAPSTAN_CRASH_AT", Some(&plan));
        env.daemon.restart().await;
        env.rt = env.daemon.runtime_client().await;
        let mut acked = Acked::default();
        let crashed = lifecycle(&mut env, &format!("crash-{i}"), &mut acked).await;
        figures.lifecycles += 1;
        if crashed {
            figures.crashes += 1;
            let log = env.daemon.log();
            assert!(log.contains("capstan crashpoint"), "[{point}] the daemon died without a crash point:\n{log}");
        } else {
            // A named point every lifecycle reaches must fire.
            assert!(plan.starts_with("random:"), "[{point}] the lifecycle never reached the crash point");
            uncrashed += 1;
        }
        env.daemon.set_env("CAPSTAN_CRASH_AT", None);
        env.daemon.restart().await;
        env.rt = env.daemon.runtime_client().await;
        let listed = check_and_clean(&mut env, &point, &acked).await;
        all_pods.extend(listed);
        // Pods the client never learnt of (the crash came first) are named in the log.
        all_pods.extend(pod_ids_in(&env.daemon.log()));
        all_pods.sort();
        all_pods.dedup();
        let left = leaks(&env, &net, &all_pods).await;
        figures.leaks += left.len();
        if !left.is_empty() {
            panic!("[{point}] left behind after the crash and cleanup:\n{}\ndaemon log:\n{}", left.join("\n"), env.daemon.log());
        }
        // Keep the daemon log from growing without bound over hundreds of restarts.
        let _ = std::fs::write(env.daemon.log_path(), "");
        i += 1;
    }
    println!(
        "crash figures: lifecycles run {}, crashes injected {} ({} lifecycles ran to their end under a random plan), \
         pull crash points {}, leaks found {}, in {:.0?}",
        figures.lifecycles,
        figures.crashes,
        uncrashed,
        PULL_POINTS.len(),
        figures.leaks,
        started.elapsed()
    );
}

/// A monitor killed with SIGKILL: its containers are reported exited with a clear reason,
/// the pod NotReady, and removing the pod cleans everything up.
#[tokio::test(flavor = "multi_thread")]
async fn a_monitor_killed_with_sigkill_loses_nothing() {
    if !capstan_integration::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut env = Env::start().await;
    let net = BridgeNet::new(&env.daemon);
    env.daemon.restart().await;
    env.rt = env.daemon.runtime_client().await;
    let pod = env.pod("monitor-kill").await;
    let running = env.run(&pod, pods::container("running", &env.busybox, &["sleep", "3600"])).await;
    let created = env.create(&pod, pods::container("created", &env.busybox, &["true"])).await;
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.daemon.state().join("pods").join(&pod.0).join("monitor.state")).unwrap()).unwrap();
    let monitor = state["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(monitor), nix::sys::signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = env.status(&running).await;
        if s.state == v1::ContainerState::ContainerExited as i32 {
            assert_eq!((s.reason.as_str(), s.exit_code), ("MonitorLost", 255), "{s:?}");
            assert!(s.message.contains(&monitor.to_string()), "the message names the monitor: {s:?}");
            break;
        }
        assert!(Instant::now() < deadline, "container not reported exited: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Created but never started: the monitor held nothing of it (it is created at
    // StartContainer), so nothing was lost; it cannot start in a pod without a monitor.
    let s = env.status(&created).await;
    assert_eq!((s.state, s.reason.as_str()), (v1::ContainerState::ContainerCreated as i32, ""), "{s:?}");
    let start = env.rt.start_container(v1::StartContainerRequest { container_id: created.clone() }).await;
    assert_eq!(start.as_ref().map_err(|e| e.code()).err(), Some(tonic::Code::FailedPrecondition), "{start:?}");
    let listed = env.rt.list_containers(v1::ListContainersRequest { filter: None }).await.unwrap().into_inner().containers;
    assert_eq!(listed.len(), 2, "no container is lost: {listed:?}");
    let p = env.rt.pod_sandbox_status(v1::PodSandboxStatusRequest { pod_sandbox_id: pod.0.clone(), verbose: false }).await;
    let p = p.unwrap().into_inner().status.unwrap();
    assert_eq!(p.state, v1::PodSandboxState::SandboxNotready as i32, "{p:?}");
    // The same after a daemon restart.
    env.daemon.restart().await;
    env.rt = env.daemon.runtime_client().await;
    assert_eq!(env.status(&running).await.reason, "MonitorLost");
    env.remove_pod(&pod.0).await;
    let mut left = pods::wait_no_leftovers(&env.daemon, std::slice::from_ref(&pod.0)).await;
    left.extend(net.leftovers(&env.daemon));
    println!("monitor SIGKILL: the running container reported exited (MonitorLost), the created one still created, pod NotReady, leaks found {}", left.len());
    assert!(left.is_empty(), "left behind:\n{}\n{}", left.join("\n"), env.daemon.log());
}

/// Every `pod_id=<64 hex>` the daemon logged.
fn pod_ids_in(log: &str) -> Vec<String> {
    log.split("pod_id=")
        .skip(1)
        .map(|rest| rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect::<String>())
        .filter(|id| id.len() == 64)
        .collect()
}
