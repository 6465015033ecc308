//! Pods and containers under a pure cgroup v2 hierarchy (the VM lane's guest): where the
//! cgroups go with and without a kubelet-style `cgroup_parent`, what is removed with the pod,
//! how CRI resources land in the v2 files, pids.max and the OOM killer.
//!
//! Runs only in the VM lane (`CAPSTAN_VM=1`); elsewhere each test says why it skips.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use capstan_integration::daemon::{Daemon, DaemonOptions};
use capstan_integration::image::ImageBuilder;
use capstan_integration::registry::Registry;
use cri_proto::v1;
use cri_proto::{ImageServiceClient, RuntimeServiceClient};
use tonic::transport::Channel;

type Rt = RuntimeServiceClient<Channel>;

const ROOT: &str = "/sys/fs/cgroup";

/// Whether to skip, printing why: the host lane has no pure cgroup v2.
fn skip(test: &str) -> bool {
    if std::env::var_os("CAPSTAN_VM").is_none() {
        eprintln!("{test}: skipped: needs the VM lane's pure cgroup v2 guest (CAPSTAN_VM=1, integration/vm/lane.sh)");
        return true;
    }
    assert!(capstan_integration::is_root(), "{test}: the VM lane runs tests as root");
    assert!(Path::new(ROOT).join("cgroup.controllers").exists(), "{test}: the guest must mount cgroup2 at {ROOT}");
    assert!(!Path::new(ROOT).join("memory").is_dir(), "{test}: a v1 memory hierarchy is mounted; the lane promises pure v2");
    false
}

/// `/sys/fs/cgroup` + a cgroup path such as `/capstan/<pod>/<container>`.
fn dir(cgroup: &str) -> PathBuf {
    Path::new(ROOT).join(cgroup.trim_start_matches('/'))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())).trim().to_string()
}

fn file(cgroup: &str, name: &str) -> String {
    read(&dir(cgroup).join(name))
}

fn subdirs(path: &Path) -> BTreeSet<String> {
    std::fs::read_dir(path)
        .unwrap_or_else(|e| panic!("list {}: {e}", path.display()))
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn words(text: &str) -> BTreeSet<String> {
    text.split_whitespace().map(String::from).collect()
}

/// The v2 cgroup of a process (`0::/a/b` in /proc/<pid>/cgroup).
fn cgroup_of(pid: i64) -> String {
    let text = read(Path::new(&format!("/proc/{pid}/cgroup")));
    text.lines().find_map(|l| l.strip_prefix("0::")).unwrap_or_else(|| panic!("no v2 line for {pid}: {text}")).to_string()
}

fn procs(cgroup: &str) -> Vec<i64> {
    file(cgroup, "cgroup.procs").lines().map(|l| l.parse().unwrap()).collect()
}

/// The end of the daemon's log: all of it at debug level would flood the guest's console.
fn log_tail(daemon: &Daemon) -> String {
    let log = daemon.log();
    let start = log.char_indices().rev().nth(16 * 1024).map_or(0, |(i, _)| i);
    log[start..].to_string()
}

/// Cgroups a test made as kubelet would (parents with controllers enabled for children);
/// removed on drop, deepest first, whatever the test's outcome.
struct KubeletCgroups {
    created: Vec<PathBuf>,
}

impl KubeletCgroups {
    /// Creates each missing directory of `cgroup` and enables in it every controller it
    /// has, so its children get them (what kubelet's cgroupfs manager does for
    /// /kubepods/<qos>/pod<uid>).
    fn create(cgroup: &str) -> KubeletCgroups {
        let mut created = Vec::new();
        let mut path = PathBuf::from(ROOT);
        for part in cgroup.trim_start_matches('/').split('/') {
            path.push(part);
            if !path.exists() {
                std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
                created.push(path.clone());
            }
            for c in words(&read(&path.join("cgroup.controllers"))) {
                std::fs::write(path.join("cgroup.subtree_control"), format!("+{c}"))
                    .unwrap_or_else(|e| panic!("enable {c} in {}: {e}", path.display()));
            }
        }
        KubeletCgroups { created }
    }
}

impl Drop for KubeletCgroups {
    fn drop(&mut self) {
        for path in self.created.iter().rev() {
            if let Err(e) = std::fs::remove_dir(path) {
                eprintln!("cannot remove the test's cgroup {}: {e}", path.display());
            }
        }
    }
}

/// A registry with busybox, a daemon that pulled it, a client, and the pods to remove.
struct Env {
    pods: Vec<String>,
    rt: Rt,
    daemon: Daemon,
    _registry: Registry,
    busybox: String,
}

impl Env {
    async fn start() -> Env {
        let registry = Registry::start().await;
        let busybox = ImageBuilder::busybox().push(&registry, "cgroups/busybox", &["1"]).await.references[0].clone();
        let daemon = Daemon::start(DaemonOptions::default()).await;
        let mut img: ImageServiceClient<Channel> = daemon.image_client().await;
        let spec = v1::ImageSpec { image: busybox.clone(), ..Default::default() };
        img.pull_image(v1::PullImageRequest { image: Some(spec), auth: None, sandbox_config: None })
            .await
            .unwrap_or_else(|e| panic!("pull {busybox}: {e}"));
        let rt = daemon.runtime_client().await;
        Env { pods: Vec::new(), rt, daemon, _registry: registry, busybox }
    }

    fn pod_config(&self, name: &str, cgroup_parent: &str) -> v1::PodSandboxConfig {
        v1::PodSandboxConfig {
            metadata: Some(v1::PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "cgroups".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: self.daemon.scratch().join("logs").join(name).display().to_string(),
            linux: Some(v1::LinuxPodSandboxConfig { cgroup_parent: cgroup_parent.into(), ..Default::default() }),
            ..Default::default()
        }
    }

    async fn pod(&mut self, name: &str, cgroup_parent: &str) -> (String, v1::PodSandboxConfig) {
        let config = self.pod_config(name, cgroup_parent);
        let request = v1::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
        let id = match self.rt.run_pod_sandbox(request).await {
            Ok(r) => r.into_inner().pod_sandbox_id,
            Err(e) => panic!("RunPodSandbox {name}: {e}\n{}", log_tail(&self.daemon)),
        };
        self.pods.push(id.clone());
        (id, config)
    }

    async fn run(&mut self, pod: &(String, v1::PodSandboxConfig), name: &str, command: &str, resources: Option<v1::LinuxContainerResources>) -> String {
        let config = v1::ContainerConfig {
            metadata: Some(v1::ContainerMetadata { name: name.into(), attempt: 0 }),
            image: Some(v1::ImageSpec { image: self.busybox.clone(), ..Default::default() }),
            command: vec!["sh".into(), "-c".into(), command.into()],
            log_path: format!("{name}/0.log"),
            linux: Some(v1::LinuxContainerConfig { resources, ..Default::default() }),
            ..Default::default()
        };
        let request = v1::CreateContainerRequest { pod_sandbox_id: pod.0.clone(), config: Some(config), sandbox_config: Some(pod.1.clone()) };
        let id = match self.rt.create_container(request).await {
            Ok(r) => r.into_inner().container_id,
            Err(e) => panic!("CreateContainer {name}: {e}\n{}", log_tail(&self.daemon)),
        };
        if let Err(e) = self.rt.start_container(v1::StartContainerRequest { container_id: id.clone() }).await {
            panic!("StartContainer {name}: {e}\n{}", log_tail(&self.daemon));
        }
        id
    }

    /// ContainerStatus and its verbose info (`pid`, `cgroup`).
    async fn status(&mut self, id: &str) -> (v1::ContainerStatus, serde_json::Value) {
        let r = self.rt.container_status(v1::ContainerStatusRequest { container_id: id.into(), verbose: true }).await.expect("ContainerStatus").into_inner();
        let info = serde_json::from_str(&r.info["info"]).expect("verbose info is JSON");
        (r.status.expect("status"), info)
    }

    /// PodSandboxStatus and its verbose info (`cgroupParent`, `monitor.infra_pid`).
    async fn pod_status(&mut self, id: &str) -> (v1::PodSandboxStatus, serde_json::Value) {
        let r = self.rt.pod_sandbox_status(v1::PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: true }).await.expect("PodSandboxStatus").into_inner();
        let info = serde_json::from_str(&r.info["info"]).expect("verbose info is JSON");
        (r.status.expect("status"), info)
    }

    async fn wait_exited(&mut self, id: &str) -> v1::ContainerStatus {
        // Software emulation: everything is 5-15 times slower than on the host.
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let (s, _) = self.status(id).await;
            if s.state == v1::ContainerState::ContainerExited as i32 {
                return s;
            }
            assert!(Instant::now() < deadline, "container {id} did not exit: {s:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_log(&self, pod: &v1::PodSandboxConfig, name: &str, needle: &str) -> String {
        let path = Path::new(&pod.log_directory).join(name).join("0.log");
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            if log.contains(needle) {
                return log;
            }
            assert!(Instant::now() < deadline, "{name} never logged {needle:?}; log:\n{log}\ndaemon:\n{}", log_tail(&self.daemon));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn remove_pod(&mut self, id: &str) {
        self.rt.stop_pod_sandbox(v1::StopPodSandboxRequest { pod_sandbox_id: id.into() }).await.expect("StopPodSandbox");
        self.rt.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: id.into() }).await.expect("RemovePodSandbox");
        self.pods.retain(|p| p != id);
    }
}

impl Drop for Env {
    /// Removes the pods a failed test left, while the daemon still runs.
    fn drop(&mut self) {
        let pods = std::mem::take(&mut self.pods);
        if pods.is_empty() {
            return;
        }
        let socket = self.daemon.socket();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let Ok(channel) = cri_proto::unix::connect(&socket).await else { return };
                let mut client = RuntimeServiceClient::new(channel);
                for pod in pods {
                    let _ = client.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: pod }).await;
                }
            });
        })
        .join();
    }
}

/// What the test checks of one running pod: the infra process in `<parent>/<pod id>`, each
/// container's init in `<parent>/<container id>`, nothing else there, and the status calls.
async fn check_placement(env: &mut Env, pod: &str, containers: &[&str], want_parent: &str) {
    let (status, info) = env.pod_status(pod).await;
    assert_eq!(status.state, v1::PodSandboxState::SandboxReady as i32, "{status:?}");
    assert_eq!(info["cgroupParent"].as_str(), Some(want_parent), "{info}");
    let infra = info["monitor"]["infra_pid"].as_i64().unwrap_or_else(|| panic!("no infra pid: {info}"));
    let infra_cgroup = format!("{want_parent}/{pod}");
    assert_eq!(cgroup_of(infra), infra_cgroup, "the infra process is in the pod's cgroup");
    assert_eq!(procs(&infra_cgroup), vec![infra], "{infra_cgroup} holds the infra process only");
    assert_eq!(read(Path::new(&format!("/proc/{infra}/comm"))), "capstan-pause");
    let mut expected: BTreeSet<String> = containers.iter().map(|c| c.to_string()).collect();
    expected.insert(pod.to_string());
    assert_eq!(subdirs(&dir(want_parent)), expected, "the pod's cgroups under {want_parent}");
    for id in containers {
        let (s, info) = env.status(id).await;
        assert_eq!(s.state, v1::ContainerState::ContainerRunning as i32, "{s:?}");
        let cgroup = format!("{want_parent}/{id}");
        assert_eq!(info["cgroup"].as_str(), Some(cgroup.as_str()), "{info}");
        let pid = info["pid"].as_i64().unwrap_or_else(|| panic!("no pid: {info}"));
        assert_eq!(cgroup_of(pid), cgroup, "container {id}'s init");
        let members = procs(&cgroup);
        assert!(members.contains(&pid), "{cgroup}/cgroup.procs {members:?} lacks the init {pid}");
        for p in members {
            assert_eq!(cgroup_of(p), cgroup);
        }
        // The limits need the controllers: enabled in every parent down to the container.
        let have = words(&file(&cgroup, "cgroup.controllers"));
        for c in ["cpu", "memory", "pids"] {
            assert!(have.contains(c), "{c} missing in {cgroup}: {have:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_cgroups_go_under_the_parent_and_only_capstans_are_removed() {
    if skip("placement") {
        return;
    }
    let mut env = Env::start().await;
    let kube_root = format!("capstan-vmtest-kubepods-{}", std::process::id());

    // kubelet's layout: it made /kubepods/burstable/pod<uid> and enabled the controllers.
    let parent = format!("/{kube_root}/burstable/pod-uid-a");
    let kubelet = KubeletCgroups::create(&parent);
    let kubelet_subtree = file(&parent, "cgroup.subtree_control");
    let pod = env.pod("kubelet-parent", &parent).await;
    let c1 = env.run(&pod, "one", "sleep 3600", None).await;
    let c2 = env.run(&pod, "two", "sleep 3600", None).await;
    check_placement(&mut env, &pod.0, &[&c1, &c2], &parent).await;
    // RemoveContainer's cleanup (a task it leaves behind) takes the container's cgroup with
    // it, promptly; the pod's stay.
    env.rt.remove_container(v1::RemoveContainerRequest { container_id: c2.clone() }).await.expect("RemoveContainer");
    let deadline = Instant::now() + Duration::from_secs(5);
    while dir(&format!("{parent}/{c2}")).exists() {
        assert!(Instant::now() < deadline, "{c2}'s cgroup outlived RemoveContainer's cleanup");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check_placement(&mut env, &pod.0, &[&c1], &parent).await;
    env.remove_pod(&pod.0).await;
    assert!(dir(&parent).is_dir(), "kubelet's pod cgroup was removed");
    assert!(subdirs(&dir(&parent)).is_empty(), "cgroups left under {parent}: {:?}", subdirs(&dir(&parent)));
    assert_eq!(file(&parent, "cgroup.subtree_control"), kubelet_subtree, "kubelet's cgroup changed");

    // A parent kubelet did not make (part of it): Capstan makes the rest and removes it again.
    let partial = format!("/{kube_root}/made-by-capstan/pod-uid-b");
    let pod = env.pod("partial-parent", &partial).await;
    let c = env.run(&pod, "one", "sleep 3600", None).await;
    check_placement(&mut env, &pod.0, &[&c], &partial).await;
    for made in [format!("/{kube_root}/made-by-capstan"), partial.clone()] {
        let enabled = words(&file(&made, "cgroup.subtree_control"));
        assert!(enabled.contains("memory") && enabled.contains("cpu") && enabled.contains("pids"), "{made}: {enabled:?}");
    }
    env.remove_pod(&pod.0).await;
    assert!(!dir(&format!("/{kube_root}/made-by-capstan")).exists(), "the parents Capstan made are removed");
    assert!(dir(&format!("/{kube_root}")).is_dir(), "kubelet's root stays");

    // No cgroup_parent: /capstan/<pod id>, controllers enabled in the parents it made.
    let pod = env.pod("default-parent", "").await;
    let c = env.run(&pod, "one", "sleep 3600", None).await;
    let default_parent = format!("/capstan/{}", pod.0);
    check_placement(&mut env, &pod.0, &[&c], &default_parent).await;
    for made in ["/capstan", default_parent.as_str()] {
        let enabled = words(&file(made, "cgroup.subtree_control"));
        assert!(enabled.contains("memory") && enabled.contains("cpu") && enabled.contains("pids"), "{made}: {enabled:?}");
    }
    env.remove_pod(&pod.0).await;
    assert!(!dir(&default_parent).exists(), "{default_parent} is left behind");
    drop(kubelet);
    assert!(!dir(&format!("/{kube_root}")).exists());
}

/// The huge page sizes this kernel offers, spelled as kubelet does (`2MB`, `1GB`).
fn hugepage_sizes() -> Vec<String> {
    let sizes = std::fs::read_dir("/sys/kernel/mm/hugepages").map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default();
    sizes
        .iter()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("hugepages-")?.strip_suffix("kB")?.parse::<u64>().ok())
        .map(|kb| match kb {
            kb if kb % (1 << 20) == 0 => format!("{}GB", kb >> 20),
            kb if kb % (1 << 10) == 0 => format!("{}MB", kb >> 10),
            kb => format!("{kb}KB"),
        })
        .collect()
}

/// runc's (≥ 1.3.2, opencontainers/cgroups ≥ 0.0.3) and Kubernetes' current mapping of cgroup
/// v1 shares [2, 262144] onto v2 weight [1, 10000], keeping 1024 ↔ 100.
fn weight_of_shares(shares: u64) -> u64 {
    let l = (shares as f64).log2();
    (10f64.powf((l * l + 125.0 * l) / 612.0 - 7.0 / 34.0)).ceil() as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn cri_resources_land_in_the_v2_files() {
    if skip("resources") {
        return;
    }
    assert_eq!((weight_of_shares(1024), weight_of_shares(512), weight_of_shares(2)), (100, 59, 1));
    let mut env = Env::start().await;
    let pod = env.pod("limits", "").await;
    let hugetlb = words(&file("/", "cgroup.controllers")).contains("hugetlb") && Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").is_dir();
    if !hugetlb {
        eprintln!("resources: hugepage limits not checked: this kernel has no hugetlb controller or no 2 MiB pages");
    }
    let unified: BTreeMap<String, String> = [("pids.max", "20"), ("memory.high", "50331648")].into_iter().map(|(k, v)| (k.into(), v.into())).collect();
    let limits = v1::LinuxContainerResources {
        memory_limit_in_bytes: 64 << 20,
        memory_swap_limit_in_bytes: 96 << 20,
        cpu_quota: 50_000,
        cpu_period: 100_000,
        cpu_shares: 1024,
        cpuset_cpus: "0".into(),
        cpuset_mems: "0".into(),
        unified: unified.clone().into_iter().collect(),
        hugepage_limits: if hugetlb { vec![v1::HugepageLimit { page_size: "2MB".into(), limit: 4 << 20 }] } else { Vec::new() },
        ..Default::default()
    };
    let full = env.run(&pod, "full", "sleep 3600", Some(limits)).await;
    // kubelet's shape for a container without hugepages: every size the node has, limit 0.
    let sizes = if hugetlb { hugepage_sizes() } else { Vec::new() };
    let plain = v1::LinuxContainerResources {
        memory_limit_in_bytes: 32 << 20,
        cpu_shares: 512,
        hugepage_limits: sizes.iter().map(|s| v1::HugepageLimit { page_size: s.clone(), limit: 0 }).collect(),
        ..Default::default()
    };
    let plain = env.run(&pod, "plain", "sleep 3600", Some(plain)).await;
    let cg = |id: &str| format!("/capstan/{}/{id}", pod.0);

    assert_eq!(file(&cg(&full), "memory.max"), (64u64 << 20).to_string());
    assert_eq!(file(&cg(&full), "cpu.max"), "50000 100000");
    assert_eq!(file(&cg(&full), "cpu.weight"), weight_of_shares(1024).to_string());
    assert_eq!(file(&cg(&full), "cpuset.cpus"), "0");
    assert_eq!(file(&cg(&full), "cpuset.mems"), "0");
    for (key, value) in &unified {
        assert_eq!(&file(&cg(&full), key), value, "unified {key}");
    }
    if hugetlb {
        assert_eq!(file(&cg(&full), "hugetlb.2MB.max"), (4u64 << 20).to_string());
        for size in &sizes {
            assert_eq!(file(&cg(&plain), &format!("hugetlb.{size}.max")), "0", "{size}");
        }
    }
    assert_eq!(file(&cg(&plain), "memory.max"), (32u64 << 20).to_string());
    assert_eq!(file(&cg(&plain), "cpu.weight"), weight_of_shares(512).to_string());
    assert_eq!(file(&cg(&plain), "cpu.max"), "max 100000", "no quota asked");
    if dir(&cg(&full)).join("memory.swap.max").exists() {
        // CRI's swap limit counts memory plus swap (v1's memsw); v2's swap.max is swap alone.
        assert_eq!(file(&cg(&full), "memory.swap.max"), (32u64 << 20).to_string());
        // No swap asked: none at all, as kubelet expects.
        assert_eq!(file(&cg(&plain), "memory.swap.max"), "0");
    } else {
        eprintln!("resources: memory.swap.max not checked: this kernel does not account swap (no memory.swap.max)");
    }
    env.remove_pod(&pod.0).await;
    assert!(!dir(&format!("/capstan/{}", pod.0)).exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn pids_max_from_unified_stops_a_fork_loop() {
    if skip("pids") {
        return;
    }
    let mut env = Env::start().await;
    let pod = env.pod("forks", "").await;
    let limit = 12;
    let resources = v1::LinuxContainerResources { unified: [("pids.max".to_string(), limit.to_string())].into(), ..Default::default() };
    // The subshell forks until the kernel refuses (ash then gives up on it); the container's
    // own shell survives and holds on without forking again.
    let script = "( i=0; while [ $i -lt 100 ]; do sleep 3600 & i=$((i+1)); done ); echo loop-ended; exec sleep 3600";
    let c = env.run(&pod, "forker", script, Some(resources)).await;
    let log = env.wait_log(&pod.1, "forker", "loop-ended").await;
    assert!(log.contains("can't fork"), "the fork loop never hit the limit:\n{log}");
    let cgroup = format!("/capstan/{}/{c}", pod.0);
    assert_eq!(file(&cgroup, "pids.max"), limit.to_string());
    let current: u64 = file(&cgroup, "pids.current").parse().unwrap();
    let members = procs(&cgroup);
    assert!(current <= limit && members.len() as u64 <= limit, "pids.current {current}, {} processes: over {limit}", members.len());
    assert!(members.len() > 2, "the loop started hardly anything: {members:?}");
    let events = file(&cgroup, "pids.events");
    let refused: u64 = events.lines().find_map(|l| l.strip_prefix("max ")).unwrap_or("0").parse().unwrap();
    assert!(refused > 0, "pids.events counts no refused fork: {events}");
    let (s, _) = env.status(&c).await;
    assert_eq!(s.state, v1::ContainerState::ContainerRunning as i32, "the container outlives its failed forks: {s:?}");
    env.remove_pod(&pod.0).await;
    assert!(!dir(&format!("/capstan/{}", pod.0)).exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn exceeding_memory_max_is_reported_as_oom_killed() {
    if skip("oom") {
        return;
    }
    let mut env = Env::start().await;
    let pod = env.pod("oom", "").await;
    let resources = v1::LinuxContainerResources { memory_limit_in_bytes: 16 << 20, ..Default::default() };
    // tail keeps the last "line" in memory: 64 MiB without a newline.
    let c = env.run(&pod, "hog", "head -c 64m /dev/zero | tail", Some(resources)).await;
    let cgroup = format!("/capstan/{}/{c}", pod.0);
    let s = env.wait_exited(&c).await;
    assert_eq!((s.reason.as_str(), s.exit_code), ("OOMKilled", 137), "{s:?}\ndaemon:\n{}", log_tail(&env.daemon));
    assert!(s.finished_at >= s.started_at && s.started_at > 0, "{s:?}");
    // The monitor releases an exited container's cgroup at once (as containerd deletes the
    // task on exit); the kernel's own count stays in the pod's cgroup, whose memory.events
    // counts its whole subtree on v2.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while dir(&cgroup).exists() {
        assert!(std::time::Instant::now() < deadline, "the exited container's cgroup {cgroup} was not released");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let events = file(&format!("/capstan/{}", pod.0), "memory.events");
    let kills: u64 = events.lines().find_map(|l| l.strip_prefix("oom_kill ")).unwrap_or("0").parse().unwrap();
    assert!(kills >= 1, "the pod's memory.events counts no OOM kill: {events}");
    // kubelet on v2 also asks for memory.oom.group (the whole container goes at once).
    let group = v1::LinuxContainerResources {
        memory_limit_in_bytes: 16 << 20,
        unified: [("memory.oom.group".to_string(), "1".to_string())].into(),
        ..Default::default()
    };
    let grouped = env.run(&pod, "group", "sleep 3600 & head -c 64m /dev/zero | tail; wait", Some(group)).await;
    assert_eq!(file(&format!("/capstan/{}/{grouped}", pod.0), "memory.oom.group"), "1");
    let s = env.wait_exited(&grouped).await;
    assert_eq!((s.reason.as_str(), s.exit_code), ("OOMKilled", 137), "{s:?}");
    // A container within its limit is not called OOMKilled.
    let fine = v1::LinuxContainerResources { memory_limit_in_bytes: 64 << 20, ..Default::default() };
    let ok = env.run(&pod, "fine", "head -c 1m /dev/zero | tail >/dev/null; exit 3", Some(fine)).await;
    let s = env.wait_exited(&ok).await;
    assert_eq!((s.reason.as_str(), s.exit_code), ("Error", 3), "{s:?}");
    env.remove_pod(&pod.0).await;
    assert!(!dir(&format!("/capstan/{}", pod.0)).exists());
}

/// Pods without a parent share `/capstan`: the first ones to start race to create it, the
/// last ones to go race to remove it while others start. Every start must still succeed.
#[tokio::test(flavor = "multi_thread")]
async fn pods_sharing_the_default_parent_start_and_go_concurrently() {
    if skip("concurrent") {
        return;
    }
    let mut env = Env::start().await;
    let mut previous: Vec<String> = Vec::new();
    for round in 0..5 {
        // This round's pods start while the previous round's are removed.
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..(if round < 4 { 6 } else { 0 }) {
            let config = env.pod_config(&format!("crowd-{round}-{i}"), "");
            let mut rt = env.rt.clone();
            tasks.spawn(async move {
                let r = rt.run_pod_sandbox(v1::RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() }).await;
                (true, r.map(|r| r.into_inner().pod_sandbox_id).map_err(|e| e.message().to_string()))
            });
        }
        for id in std::mem::take(&mut previous) {
            let mut rt = env.rt.clone();
            tasks.spawn(async move {
                let r = rt.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: id.clone() }).await;
                (false, r.map(|_| id).map_err(|e| e.message().to_string()))
            });
        }
        let mut failures = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined.unwrap() {
                (true, Ok(id)) => {
                    env.pods.push(id.clone());
                    previous.push(id);
                }
                (false, Ok(id)) => {
                    env.pods.retain(|p| p != &id);
                    assert!(!dir(&format!("/capstan/{id}")).exists(), "/capstan/{id} is left behind");
                }
                (started, Err(e)) => failures.push(format!("{}: {e}", if started { "RunPodSandbox" } else { "RemovePodSandbox" })),
            }
        }
        assert!(failures.is_empty(), "round {round}: {failures:#?}\ndaemon:\n{}", log_tail(&env.daemon));
        for id in &previous {
            let infra = dir(&format!("/capstan/{id}/{id}"));
            assert!(infra.join("cgroup.procs").exists(), "{}", infra.display());
        }
    }
}
