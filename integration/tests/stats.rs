//! Stats, metrics, UpdateContainerResources and ReopenContainerLog on the real daemon, on
//! this host's cgroup v1 controllers (vm_stats.rs has the v2 side).


use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use cri_proto::v1;
use capstan_integration::pods::{BridgeNet, Env, cgroup_file, container, value, with_resources};
use tonic::Code;

const MIB: u64 = 1 << 20;

async fn list_stats(env: &mut Env, filter: v1::ContainerStatsFilter) -> BTreeSet<String> {
    let stats = env.rt.list_container_stats(v1::ListContainerStatsRequest { filter: Some(filter) }).await.unwrap().into_inner().stats;
    stats.into_iter().map(|s| s.attributes.unwrap().id).collect()
}

async fn pod_stats(env: &mut Env, id: &str) -> v1::LinuxPodSandboxStats {
    let stats = env.rt.pod_sandbox_stats(v1::PodSandboxStatsRequest { pod_sandbox_id: id.into() }).await.unwrap().into_inner();
    stats.stats.unwrap().linux.unwrap()
}

fn log_path(pod: &v1::PodSandboxConfig, name: &str) -> std::path::PathBuf {
    Path::new(&pod.log_directory).join(name).join("0.log")
}

#[tokio::test(flavor = "multi_thread")]
async fn cpu_memory_writable_layer_and_filters() {
    let mut env = Env::start().await;
    let pod = env.pod("stats").await;
    let other = env.pod("other").await;
    let burn = env.run(&pod, container("burn", &env.busybox, &["sh", "-c", "while :; do :; done"])).await;
    // 48 MiB into the pod's /dev/shm tmpfs stays resident (shmem is never inactive_file),
    // 8 MiB into the container's own root filesystem lands in its writable layer.
    let fill = "sleep 4; dd if=/dev/zero of=/dev/shm/fill bs=1M count=48; dd if=/dev/zero of=/big bs=1M count=8; sync; echo filled; sleep 3600";
    let writer = env.run(&pod, container("writer", &env.busybox, &["sh", "-c", fill])).await;
    let idle = env.run(&other, container("idle", &env.busybox, &["sleep", "3600"])).await;

    let before = env.container_stats(&writer).await;
    let ws_before = value(&before.memory.as_ref().expect("memory of a running container").working_set_bytes);
    let layer_before = value(&before.writable_layer.as_ref().unwrap().used_bytes);
    assert!(!before.writable_layer.as_ref().unwrap().fs_id.as_ref().unwrap().mountpoint.is_empty());

    // cpu: the counter grows, and the second call has a rate.
    let a = env.container_stats(&burn).await.cpu.expect("cpu");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let b = env.container_stats(&burn).await.cpu.expect("cpu");
    let (used_a, used_b) = (value(&a.usage_core_nano_seconds), value(&b.usage_core_nano_seconds));
    // Loose bounds: this machine's two cores are shared with other work.
    assert!(used_b > used_a + 10_000_000, "a busy loop used {} ns of cpu in 1.5 s", used_b.saturating_sub(used_a));
    let rate = value(&b.usage_nano_cores);
    eprintln!("busy loop: {} ms of cpu in 1.5 s, usage_nano_cores {rate}", (used_b - used_a) / 1_000_000);
    assert!(rate > 10_000_000, "usage_nano_cores {rate} for a busy loop");
    assert!(rate <= 2_100_000_000, "usage_nano_cores {rate} is more than this machine's cores");
    assert!(b.timestamp > a.timestamp);

    // memory and the writable layer after the writer filled them.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(log_path(&pod.1, "writer")).unwrap_or_default().contains("filled") {
        assert!(Instant::now() < deadline, "writer did not finish: {}", env.daemon.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = env.container_stats(&writer).await;
    let memory = after.memory.unwrap();
    let ws_after = value(&memory.working_set_bytes);
    assert!(ws_after >= ws_before + 40 * MIB, "working set {ws_before} -> {ws_after}");
    assert!(value(&memory.usage_bytes) >= ws_after);
    assert!(value(&memory.page_faults) > 0);
    assert!(memory.available_bytes.is_none(), "no limit, nothing available to report");
    let layer_after = value(&after.writable_layer.as_ref().unwrap().used_bytes);
    eprintln!("writer: working set {ws_before} -> {ws_after} bytes, writable layer {layer_before} -> {layer_after} bytes");
    assert!(layer_after >= layer_before + 8 * MIB, "writable layer {layer_before} -> {layer_after}");
    assert!(value(&after.writable_layer.as_ref().unwrap().inodes_used) >= 2);
    assert_eq!(after.attributes.as_ref().unwrap().metadata.as_ref().unwrap().name, "writer");

    // ListContainerStats filters.
    let all = list_stats(&mut env, v1::ContainerStatsFilter::default()).await;
    assert_eq!(all, [&burn, &writer, &idle].into_iter().cloned().collect());
    let by_id = list_stats(&mut env, v1::ContainerStatsFilter { id: burn[..12].to_string(), ..Default::default() }).await;
    assert_eq!(by_id, [burn.clone()].into());
    let by_pod = list_stats(&mut env, v1::ContainerStatsFilter { pod_sandbox_id: pod.0.clone(), ..Default::default() }).await;
    assert_eq!(by_pod, [burn.clone(), writer.clone()].into());
    let label = |v: &str| [("container".to_string(), v.to_string())].into();
    let by_label = list_stats(&mut env, v1::ContainerStatsFilter { label_selector: label("idle"), ..Default::default() }).await;
    assert_eq!(by_label, [idle.clone()].into());
    let none = list_stats(&mut env, v1::ContainerStatsFilter { pod_sandbox_id: other.0.clone(), label_selector: label("burn"), ..Default::default() }).await;
    assert!(none.is_empty());
    let missing = env.rt.container_stats(v1::ContainerStatsRequest { container_id: "f".repeat(64) }).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // The pod: its whole cgroup, its processes, its containers.
    let linux = pod_stats(&mut env, &pod.0).await;
    assert!(value(&linux.cpu.as_ref().unwrap().usage_core_nano_seconds) >= used_b);
    assert!(value(&linux.memory.as_ref().unwrap().working_set_bytes) >= 40 * MIB);
    // At least burn's sh, writer's sh (and its sleep) and the infra process.
    assert!(value(&linux.process.as_ref().unwrap().process_count) >= 3, "{:?}", linux.process);
    assert_eq!(linux.containers.len(), 2);
    let listed = env
        .rt
        .list_pod_sandbox_stats(v1::ListPodSandboxStatsRequest {
            filter: Some(v1::PodSandboxStatsFilter { label_selector: [("app".to_string(), "other".to_string())].into(), ..Default::default() }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(listed.iter().map(|s| s.attributes.as_ref().unwrap().id.clone()).collect::<Vec<_>>(), vec![other.0.clone()]);
    let all_pods = env.rt.list_pod_sandbox_stats(v1::ListPodSandboxStatsRequest { filter: None }).await.unwrap().into_inner().stats;
    assert_eq!(all_pods.len(), 2);

    env.remove_pod(&pod.0).await;
    env.remove_pod(&other.0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_network_bytes_and_metrics() {
    let mut env = Env::start().await;
    let _net = BridgeNet::new(&env.daemon);
    let pod = env.pod("netpod").await;
    let status = env.rt.pod_sandbox_status(v1::PodSandboxStatusRequest { pod_sandbox_id: pod.0.clone(), verbose: false }).await.unwrap();
    let ip: std::net::Ipv4Addr = status.into_inner().status.unwrap().network.unwrap().ip.parse().expect("pod IP");
    let sink = env.run(&pod, container("sink", &env.busybox, &["sh", "-c", "while true; do nc -l -p 8080 >/dev/null; done"])).await;

    let eth0 = |linux: &v1::LinuxPodSandboxStats| {
        let network = linux.network.clone().expect("network stats of a pod with its own netns");
        assert!(network.interfaces.iter().all(|i| i.name != "lo"), "{network:?}");
        network.default_interface.expect("eth0")
    };
    let rx_before = value(&eth0(&pod_stats(&mut env, &pod.0).await).rx_bytes);
    // 1 MiB from the host to the pod IP.
    let mut sent = false;
    for _ in 0..50 {
        if let Ok(mut s) = std::net::TcpStream::connect_timeout(&(ip, 8080).into(), Duration::from_secs(2)) {
            s.write_all(&vec![7u8; MIB as usize]).unwrap();
            sent = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sent, "nothing listens on {ip}:8080");
    let deadline = Instant::now() + Duration::from_secs(20);
    let iface = loop {
        let iface = eth0(&pod_stats(&mut env, &pod.0).await);
        if value(&iface.rx_bytes) >= rx_before + MIB || Instant::now() > deadline {
            break iface;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(value(&iface.rx_bytes) >= rx_before + MIB, "rx {} -> {:?}", rx_before, iface.rx_bytes);
    assert!(value(&iface.tx_bytes) > 0, "the pod acknowledged what it received");
    eprintln!("eth0 after 1 MiB sent to {ip}: rx {rx_before} -> {:?}, tx {:?}", iface.rx_bytes, iface.tx_bytes);
    assert_eq!(iface.name, "eth0");

    // Metrics: the descriptors, and values for this pod and its container.
    let descriptors = env.rt.list_metric_descriptors(v1::ListMetricDescriptorsRequest {}).await.unwrap().into_inner().descriptors;
    let names: BTreeSet<_> = descriptors.iter().map(|d| d.name.as_str()).collect();
    for name in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_memory_rss",
        "container_memory_usage_bytes",
        "container_network_receive_bytes_total",
        "container_network_transmit_bytes_total",
        "container_processes",
        "container_fs_usage_bytes",
    ] {
        assert!(names.contains(name), "{name} missing from {names:?}");
    }
    let keys = |name: &str| descriptors.iter().find(|d| d.name == name).unwrap().label_keys.clone();
    assert_eq!(keys("container_memory_rss"), ["container", "id", "image", "namespace", "pod"]);
    assert_eq!(keys("container_network_receive_bytes_total"), ["interface", "namespace", "pod"]);
    let all = env.rt.list_pod_sandbox_metrics(v1::ListPodSandboxMetricsRequest {}).await.unwrap().into_inner().pod_metrics;
    let metrics = all.into_iter().find(|m| m.pod_sandbox_id == pod.0).expect("metrics of the pod");
    let rx = metrics.metrics.iter().find(|m| m.name == "container_network_receive_bytes_total").expect("network metric");
    assert_eq!(rx.label_values, ["eth0", "stats", "netpod"]);
    assert!(value(&rx.value) >= MIB && rx.timestamp > 0);
    assert_eq!(rx.metric_type, v1::MetricType::Counter as i32);
    let c = metrics.container_metrics.iter().find(|c| c.container_id == sink).expect("metrics of the container");
    let get = |name: &str| c.metrics.iter().find(|m| m.name == name).unwrap_or_else(|| panic!("{name}"));
    assert!(value(&get("container_memory_working_set_bytes").value) > 0);
    assert!(value(&get("container_memory_usage_bytes").value) >= value(&get("container_memory_working_set_bytes").value));
    assert!(value(&get("container_processes").value) >= 1);
    assert_eq!(get("container_processes").metric_type, v1::MetricType::Gauge as i32);
    assert_eq!(get("container_cpu_usage_seconds_total").metric_type, v1::MetricType::Counter as i32);
    let labels = &get("container_memory_rss").label_values;
    assert_eq!((labels[0].as_str(), labels[1].as_str(), labels[3].as_str(), labels[4].as_str()), ("sink", sink.as_str(), "stats", "netpod"));
    assert!(labels[2].contains("stats/busybox"), "{labels:?}");
    env.remove_pod(&pod.0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn update_resources_reaches_the_v1_cgroup_and_the_status() {
    let mut env = Env::start().await;
    if !Path::new("/sys/fs/cgroup/memory").is_dir() {
        eprintln!("skipped: no cgroup v1 memory controller here (vm_stats covers cgroup v2)");
        return;
    }
    let pod = env.pod("resize").await;
    let initial = v1::LinuxContainerResources {
        memory_limit_in_bytes: (64 * MIB) as i64,
        cpu_shares: 512,
        cpu_quota: 50_000,
        cpu_period: 100_000,
        ..Default::default()
    };
    let id = env.run(&pod, with_resources(container("resize", &env.busybox, &["sleep", "3600"]), initial.clone())).await;
    assert_eq!(env.status(&id).await.resources.unwrap().linux.unwrap(), initial);

    let update = v1::LinuxContainerResources { memory_limit_in_bytes: (128 * MIB) as i64, cpu_quota: 20_000, cpu_shares: 256, ..Default::default() };
    let request = |linux: v1::LinuxContainerResources| v1::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(linux),
        ..Default::default()
    };
    env.rt.update_container_resources(request(update)).await.unwrap_or_else(|e| panic!("{e}\n{}", env.daemon.log()));
    let file = |ctrl: &str, name: &str| cgroup_file(&format!("/sys/fs/cgroup/{ctrl}"), &pod.0, &id, name);
    assert_eq!(file("memory", "memory.limit_in_bytes"), (128 * MIB).to_string());
    assert_eq!(file("cpu", "cpu.cfs_quota_us"), "20000");
    assert_eq!(file("cpu", "cpu.shares"), "256");
    assert_eq!(file("cpu", "cpu.cfs_period_us"), "100000", "unset fields are left alone");
    let now = env.status(&id).await.resources.unwrap().linux.unwrap();
    assert_eq!((now.memory_limit_in_bytes, now.cpu_quota, now.cpu_shares, now.cpu_period), ((128 * MIB) as i64, 20_000, 256, 100_000));

    // Nonsense is refused, by our checks or the kernel's; the cgroup keeps its values.
    let bad = [
        v1::LinuxContainerResources { cpuset_cpus: "0-".into(), ..Default::default() },
        v1::LinuxContainerResources { cpu_quota: -5, ..Default::default() },
        v1::LinuxContainerResources { cpuset_cpus: "999".into(), ..Default::default() },
        v1::LinuxContainerResources { unified: [("memory.high".to_string(), "1".to_string())].into(), ..Default::default() },
    ];
    for linux in bad {
        let e = env.rt.update_container_resources(request(linux.clone())).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{linux:?}: {e}");
    }
    assert_eq!(file("cpu", "cpu.shares"), "256");
    let unknown = v1::UpdateContainerResourcesRequest { container_id: "e".repeat(64), linux: Some(Default::default()), ..Default::default() };
    assert_eq!(env.rt.update_container_resources(unknown).await.unwrap_err().code(), Code::NotFound);
    // Created, not started: there is no cgroup yet (the monitor makes it at StartContainer);
    // the update goes into the bundle and is in force once it starts.
    let later = env.create(&pod, with_resources(container("later", &env.busybox, &["sleep", "3600"]), initial.clone())).await;
    let update = v1::UpdateContainerResourcesRequest {
        container_id: later.clone(),
        linux: Some(v1::LinuxContainerResources { memory_limit_in_bytes: (96 * MIB) as i64, cpu_shares: 300, ..Default::default() }),
        ..Default::default()
    };
    env.rt.update_container_resources(update).await.unwrap_or_else(|e| panic!("{e}\n{}", env.daemon.log()));
    let now = env.status(&later).await.resources.unwrap().linux.unwrap();
    assert_eq!((now.memory_limit_in_bytes, now.cpu_shares, now.cpu_quota), ((96 * MIB) as i64, 300, 50_000));
    env.rt.start_container(v1::StartContainerRequest { container_id: later.clone() }).await.unwrap();
    let later_file = |ctrl: &str, name: &str| cgroup_file(&format!("/sys/fs/cgroup/{ctrl}"), &pod.0, &later, name);
    assert_eq!(later_file("memory", "memory.limit_in_bytes"), (96 * MIB).to_string());
    assert_eq!(later_file("cpu", "cpu.shares"), "300");
    assert_eq!(later_file("cpu", "cpu.cfs_quota_us"), "50000", "what the update left unset stays as created");

    let done = env.run(&pod, container("done", &env.busybox, &["true"])).await;
    env.wait_exited(&done).await;
    let exited = v1::UpdateContainerResourcesRequest { container_id: done, linux: Some(Default::default()), ..Default::default() };
    assert_eq!(env.rt.update_container_resources(exited).await.unwrap_err().code(), Code::FailedPrecondition);
    env.remove_pod(&pod.0).await;
}

/// The counters of a CRI log's lines, in order.
fn counters(log: &str) -> Vec<u64> {
    log.lines().filter_map(|l| l.splitn(4, ' ').nth(3)).map(|m| m.parse().unwrap_or_else(|_| panic!("line {m:?}"))).collect()
}

fn contiguous(v: &[u64]) -> bool {
    v.windows(2).all(|w| w[1] == w[0] + 1)
}

#[tokio::test(flavor = "multi_thread")]
async fn reopen_log_after_rotation_loses_no_line() {
    let mut env = Env::start().await;
    let pod = env.pod("rotate").await;
    let counter = "i=0; while true; do echo $i; i=$((i+1)); sleep 0.01; done";
    let id = env.run(&pod, container("counter", &env.busybox, &["sh", "-c", counter])).await;
    let log = log_path(&pod.1, "counter");
    let rotated = log.with_extension("log.1");
    let wait_lines = |path: std::path::PathBuf, n: usize| async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        while counters(&std::fs::read_to_string(&path).unwrap_or_default()).len() < n {
            assert!(Instant::now() < deadline, "{} did not reach {n} lines", path.display());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    wait_lines(log.clone(), 30).await;
    std::fs::rename(&log, &rotated).unwrap();
    // Lines go on into the renamed file until the reopen.
    tokio::time::sleep(Duration::from_millis(200)).await;
    env.rt.reopen_container_log(v1::ReopenContainerLogRequest { container_id: id.clone() }).await.unwrap();
    wait_lines(log.clone(), 30).await;
    env.rt.stop_container(v1::StopContainerRequest { container_id: id.clone(), timeout: 0 }).await.unwrap();

    let old = counters(&std::fs::read_to_string(&rotated).unwrap());
    let new = counters(&std::fs::read_to_string(&log).unwrap());
    assert_eq!(old.first(), Some(&0));
    assert!(contiguous(&old) && contiguous(&new), "gaps: old {old:?} new {new:?}");
    eprintln!("rotation: {} lines in the renamed file (0..={:?}), {} in the new one", old.len(), old.last(), new.len());
    assert_eq!(new.first().copied(), old.last().map(|l| l + 1), "the new file goes on where the old one stopped");

    let e = env.rt.reopen_container_log(v1::ReopenContainerLogRequest { container_id: id.clone() }).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    let e = env.rt.reopen_container_log(v1::ReopenContainerLogRequest { container_id: "d".repeat(64) }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    env.remove_pod(&pod.0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_config_pod_cidr_and_checkpoint() {
    let mut env = Env::start().await;
    let config = |cidr: &str| v1::UpdateRuntimeConfigRequest {
        runtime_config: Some(v1::RuntimeConfig { network_config: Some(v1::NetworkConfig { pod_cidr: cidr.into() }) }),
    };
    env.rt.update_runtime_config(config("10.244.7.0/24,fd00:10:244:7::/64")).await.unwrap();
    assert_eq!(env.rt.update_runtime_config(config("10.244.7.0")).await.unwrap_err().code(), Code::InvalidArgument);
    let info = |env: &mut Env| {
        let mut rt = env.rt.clone();
        async move { rt.status(v1::StatusRequest { verbose: true }).await.unwrap().into_inner().info }
    };
    let shown = info(&mut env).await["runtimeConfig"].clone();
    assert!(shown.contains("10.244.7.0/24,fd00:10:244:7::/64"), "{shown}");
    // Recorded: a restarted daemon still shows it.
    env.daemon.restart().await;
    env.rt = env.daemon.runtime_client().await;
    assert!(info(&mut env).await["runtimeConfig"].contains("10.244.7.0/24"));

    let e = env.rt.checkpoint_container(v1::CheckpointContainerRequest { container_id: "x".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    assert!(e.message().contains("CRIU"), "{}", e.message());
}
