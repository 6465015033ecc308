//! Load against the real daemon: `CAPSTAN_LOAD_STREAMS` (default 20) tasks loop the whole
//! pod lifecycle while others poll List*/Status as kubelet's PLEG does, for
//! `CAPSTAN_LOAD_SECONDS` (default 45). No call may fail (a status of something removed
//! between list and status may be NotFound), every call must answer within a deadline, the
//! daemon's RSS must stay bounded, and nothing may be left behind.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use capstan_integration::pods::{self, BridgeNet, Env, Rt};
use cri_proto::v1;
use tonic::Code;

/// No single call may take longer: a deadlock shows up as a call that never answers.
const CALL_DEADLINE: Duration = Duration::from_secs(60);

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    lifecycles: AtomicU64,
    polls: AtomicU64,
    slowest_ms: AtomicU64,
}

/// Runs one call under the deadline, counting it; a failure or a timeout panics.
async fn call<T>(
    counters: &Counters,
    what: &str,
    f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    let started = Instant::now();
    let r = tokio::time::timeout(CALL_DEADLINE, f).await.unwrap_or_else(|_| panic!("{what} did not answer within {CALL_DEADLINE:?}"));
    counters.calls.fetch_add(1, Ordering::Relaxed);
    counters.slowest_ms.fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    r.map(|r| r.into_inner())
}

async fn stream(
    mut rt: Rt,
    env_config: impl Fn(&str) -> v1::PodSandboxConfig,
    image: String,
    n: usize,
    until: Instant,
    counters: Arc<Counters>,
) -> Vec<String> {
    let mut pods = Vec::new();
    let mut i = 0;
    while Instant::now() < until {
        let config = env_config(&format!("load-{n}-{i}"));
        let run = v1::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
        let pod = call(&counters, "RunPodSandbox", rt.run_pod_sandbox(run)).await.expect("RunPodSandbox").pod_sandbox_id;
        pods.push(pod.clone());
        let c = pods::container("c", &image, &["sleep", "3600"]);
        let create = v1::CreateContainerRequest { pod_sandbox_id: pod.clone(), config: Some(c), sandbox_config: Some(config) };
        let id = call(&counters, "CreateContainer", rt.create_container(create)).await.expect("CreateContainer").container_id;
        let start = v1::StartContainerRequest { container_id: id.clone() };
        call(&counters, "StartContainer", rt.start_container(start)).await.expect("StartContainer");
        let stop = v1::StopContainerRequest { container_id: id.clone(), timeout: 1 };
        call(&counters, "StopContainer", rt.stop_container(stop)).await.expect("StopContainer");
        let remove = v1::RemoveContainerRequest { container_id: id };
        call(&counters, "RemoveContainer", rt.remove_container(remove)).await.expect("RemoveContainer");
        let stop = v1::StopPodSandboxRequest { pod_sandbox_id: pod.clone() };
        call(&counters, "StopPodSandbox", rt.stop_pod_sandbox(stop)).await.expect("StopPodSandbox");
        let remove = v1::RemovePodSandboxRequest { pod_sandbox_id: pod };
        call(&counters, "RemovePodSandbox", rt.remove_pod_sandbox(remove)).await.expect("RemovePodSandbox");
        counters.lifecycles.fetch_add(1, Ordering::Relaxed);
        i += 1;
    }
    pods
}

/// kubelet's PLEG: list everything, then ask the status of each.
async fn poller(mut rt: Rt, done: Arc<AtomicBool>, counters: Arc<Counters>) {
    let gone = |r: Result<(), tonic::Status>, what: &str| {
        if let Err(e) = r {
            assert_eq!(e.code(), Code::NotFound, "{what}: {e:?}");
        }
    };
    while !done.load(Ordering::Relaxed) {
        let pods = call(&counters, "ListPodSandbox", rt.list_pod_sandbox(v1::ListPodSandboxRequest { filter: None }))
            .await
            .expect("ListPodSandbox")
            .items;
        let containers = call(&counters, "ListContainers", rt.list_containers(v1::ListContainersRequest { filter: None }))
            .await
            .expect("ListContainers")
            .containers;
        for p in pods {
            let request = v1::PodSandboxStatusRequest { pod_sandbox_id: p.id, verbose: false };
            gone(call(&counters, "PodSandboxStatus", rt.pod_sandbox_status(request)).await.map(drop), "PodSandboxStatus");
        }
        for c in containers {
            let request = v1::ContainerStatusRequest { container_id: c.id, verbose: false };
            gone(call(&counters, "ContainerStatus", rt.container_status(request)).await.map(drop), "ContainerStatus");
        }
        counters.polls.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_lifecycles_with_pleg_polling() {
    if !capstan_integration::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let streams = env_number("CAPSTAN_LOAD_STREAMS", 20) as usize;
    let seconds = env_number("CAPSTAN_LOAD_SECONDS", 45);
    let mut env = Env::start().await;
    let net = BridgeNet::new(&env.daemon);
    env.daemon.restart().await;
    let pid = env.daemon.pid().unwrap();
    let rss_start = rss_kib(pid);
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let done = Arc::new(AtomicBool::new(false));
    let mut pollers = Vec::new();
    for _ in 0..4 {
        // A connection of its own, as kubelet's PLEG is a loop of its own.
        let rt = env.daemon.runtime_client().await;
        pollers.push(tokio::spawn(poller(rt, done.clone(), counters.clone())));
    }
    // Each stream gets its own connection to the socket.
    let mut tasks = Vec::new();
    for n in 0..streams {
        let rt = env.daemon.runtime_client().await;
        let configs = {
            let template = env.sandbox_config("x");
            let logs = env.daemon.scratch().join("logs");
            move |name: &str| {
                let mut c = template.clone();
                let meta = c.metadata.as_mut().unwrap();
                meta.name = name.into();
                meta.uid = format!("uid-{name}");
                c.hostname = name.into();
                c.log_directory = logs.join(name).display().to_string();
                c
            }
        };
        tasks.push(tokio::spawn(stream(rt, configs, env.busybox.clone(), n, until, counters.clone())));
    }
    // RSS once the daemon has warmed up (every stream through a lifecycle or two).
    let warm_at = started + Duration::from_secs(seconds / 4);
    tokio::time::sleep_until(warm_at.into()).await;
    let rss_warm = rss_kib(pid);
    let mut all_pods = Vec::new();
    for t in tasks {
        all_pods.extend(t.await.expect("a lifecycle stream failed"));
    }
    done.store(true, Ordering::Relaxed);
    for p in pollers {
        p.await.expect("a poller failed");
    }
    let elapsed = started.elapsed();
    let rss_end = rss_kib(pid);
    let mut left = pods::wait_no_leftovers(&env.daemon, &all_pods).await;
    left.extend(net.leftovers(&env.daemon));
    println!(
        "load figures: {streams} streams for {elapsed:.0?}: {} lifecycles ({:.1}/s), {} CRI calls, {} PLEG polls, \
         slowest call {} ms; daemon RSS start {rss_start} KiB, after warm-up {rss_warm} KiB, end {rss_end} KiB; leftovers {}",
        counters.lifecycles.load(Ordering::Relaxed),
        counters.lifecycles.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64(),
        counters.calls.load(Ordering::Relaxed),
        counters.polls.load(Ordering::Relaxed),
        counters.slowest_ms.load(Ordering::Relaxed),
        left.len(),
    );
    assert!(counters.lifecycles.load(Ordering::Relaxed) >= streams as u64, "every stream finished a lifecycle");
    assert!(left.is_empty(), "left behind:\n{}", left.join("\n"));
    assert!(rss_end <= 3 * rss_start, "daemon RSS grew from {rss_start} KiB to {rss_end} KiB (more than 3x)");
}
