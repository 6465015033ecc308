//! Pods and containers on the real daemon: namespaces, monitors, cgroups, logs, exits,
//! restarts. Every test removes what it created; `no_leftovers` checks the machine.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use capstan_integration::daemon::{Daemon, DaemonOptions};
use capstan_integration::pods::Cleanup;
use cri_proto::RuntimeServiceClient;
use cri_proto::v1;
use tonic::Code;
use tonic::transport::Channel;

type Rt = RuntimeServiceClient<Channel>;

fn sandbox_config(daemon: &Daemon, name: &str) -> v1::PodSandboxConfig {
    v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "test".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: daemon.scratch().join("logs").join(name).display().to_string(),
        labels: [("app".to_string(), name.to_string()), ("suite".to_string(), "pods".to_string())].into(),
        linux: Some(v1::LinuxPodSandboxConfig {
            security_context: Some(v1::LinuxSandboxSecurityContext {
                namespace_options: Some(v1::NamespaceOption {
                    pid: v1::NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn run_pod(rt: &mut Rt, config: &v1::PodSandboxConfig, cleanup: &mut Cleanup) -> String {
    let id = rt
        .run_pod_sandbox(v1::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() })
        .await
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
    cleanup.pods.push(id.clone());
    id
}

async fn pod_status(rt: &mut Rt, id: &str) -> v1::PodSandboxStatus {
    rt.pod_sandbox_status(v1::PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: true })
        .await
        .expect("PodSandboxStatus")
        .into_inner()
        .status
        .expect("status")
}

async fn list_pods(rt: &mut Rt, filter: v1::PodSandboxFilter) -> Vec<String> {
    let items = rt
        .list_pod_sandbox(v1::ListPodSandboxRequest { filter: Some(filter) })
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items;
    items.into_iter().map(|p| p.id).collect()
}

fn ready() -> i32 {
    v1::PodSandboxState::SandboxReady as i32
}

/// Mount points, monitor processes and cgroups that still mention `needle`.
fn leftovers(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    found.extend(mountinfo.lines().filter(|l| l.contains(needle)).map(|l| format!("mount: {l}")));
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if cmdline.contains(needle) && !stat.contains(") Z ") {
            found.push(format!("process {}: {cmdline}", entry.file_name().to_string_lossy()));
        }
    }
    let hierarchies = std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten().map(|h| h.path());
    for hierarchy in std::iter::once(PathBuf::from("/sys/fs/cgroup")).chain(hierarchies) {
        cgroups_named(&hierarchy.join("capstan"), needle, &mut found);
    }
    found
}

/// Cgroups at any depth below `dir` (pods hold their containers' cgroups) whose name has `needle`.
fn cgroups_named(dir: &Path, needle: &str, found: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if e.file_name().to_string_lossy().contains(needle) {
            found.push(format!("cgroup: {}", e.path().display()));
        }
        cgroups_named(&e.path(), needle, found);
    }
}

/// Whether the host has a pure cgroup v2 hierarchy (the VM lane) rather than v1 controllers.
fn cgroup_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The directory of `cgroup` (relative) in the hierarchy of `controller` (v1), or in the one
/// v2 hierarchy.
fn cgroup_dir(controller: &str, cgroup: &str) -> PathBuf {
    let root = Path::new("/sys/fs/cgroup");
    if cgroup_v2() { root.join(cgroup) } else { root.join(controller).join(cgroup) }
}

fn assert_no_leftovers(daemon: &Daemon, pod: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = leftovers(pod);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "left behind:\n{}\ndaemon log:\n{}", left.join("\n"), daemon.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ns_inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().ino()
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_lifecycle_namespaces_files_and_cleanup() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let mut rt = daemon.runtime_client().await;
    let mut cleanup = Cleanup::new(&daemon);
    let mut config = sandbox_config(&daemon, "web");
    config.dns_config = Some(v1::DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["test.svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    let id = run_pod(&mut rt, &config, &mut cleanup).await;

    let status = pod_status(&mut rt, &id).await;
    assert_eq!(status.state, ready(), "{status:?}");
    assert_eq!(status.metadata.as_ref().unwrap().name, "web");
    assert_eq!(status.labels["app"], "web");
    assert!(status.created_at > 0);

    // The pod's namespaces are pinned and differ from the host's; its files are written.
    let pod_dir = daemon.state().join("pods").join(&id);
    for (file, host) in [("net", "/proc/self/ns/net"), ("ipc", "/proc/self/ns/ipc"), ("uts", "/proc/self/ns/uts")] {
        let pinned = pod_dir.join("ns").join(file);
        assert_ne!(ns_inode(&pinned), ns_inode(Path::new(host)), "{file} namespace is the host's");
    }
    assert_eq!(std::fs::read_to_string(pod_dir.join("hostname")).unwrap(), "web\n");
    let resolv = std::fs::read_to_string(pod_dir.join("resolv.conf")).unwrap();
    assert!(resolv.contains("nameserver 10.96.0.10") && resolv.contains("options ndots:5"), "{resolv}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(mounts.lines().any(|l| l.contains(&format!("{}/shm", pod_dir.display())) && l.contains("tmpfs")), "no shm tmpfs");
    assert!(Path::new(&config.log_directory).is_dir(), "log dir created");
    let infra_cgroup = cgroup_dir("memory", &format!("capstan/{id}/{id}"));
    assert!(infra_cgroup.join("cgroup.procs").exists(), "infra cgroup {}", infra_cgroup.display());

    // Stop: NotReady, namespaces released; idempotent.
    rt.stop_pod_sandbox(v1::StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await.unwrap();
    assert_ne!(pod_status(&mut rt, &id).await.state, ready());
    rt.stop_pod_sandbox(v1::StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await.unwrap();
    // Remove: gone, with its log dir; idempotent.
    rt.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: id.clone() }).await.unwrap();
    rt.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: id.clone() }).await.unwrap();
    let err = rt.pod_sandbox_status(v1::PodSandboxStatusRequest { pod_sandbox_id: id.clone(), verbose: false }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(!Path::new(&config.log_directory).exists(), "log dir removed");
    assert!(!pod_dir.exists());
    assert!(!cgroup_dir("memory", &format!("capstan/{id}")).exists());
    assert_no_leftovers(&daemon, &id);
}

#[tokio::test(flavor = "multi_thread")]
async fn names_are_unique_and_bad_requests_are_refused() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let mut rt = daemon.runtime_client().await;
    let mut cleanup = Cleanup::new(&daemon);
    let config = sandbox_config(&daemon, "dup");
    let id = run_pod(&mut rt, &config, &mut cleanup).await;
    let err = rt
        .run_pod_sandbox(v1::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(err.message().contains(&id), "{err:?}");
    // A new attempt is a new name.
    let mut again = config.clone();
    again.metadata.as_mut().unwrap().attempt = 1;
    let id2 = run_pod(&mut rt, &again, &mut cleanup).await;
    assert_ne!(id, id2);

    let mut no_meta = config.clone();
    no_meta.metadata = None;
    let err = rt.run_pod_sandbox(v1::RunPodSandboxRequest { config: Some(no_meta), runtime_handler: String::new() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut bad_sysctl = sandbox_config(&daemon, "sysctl");
    bad_sysctl.linux.as_mut().unwrap().sysctls = [("kernel.panic".to_string(), "1".to_string())].into();
    let err = rt.run_pod_sandbox(v1::RunPodSandboxRequest { config: Some(bad_sysctl), runtime_handler: String::new() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = rt.stop_container(v1::StopContainerRequest { container_id: "nope".into(), timeout: 0 }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    rt.remove_container(v1::RemoveContainerRequest { container_id: "nope".into() }).await.unwrap();
    rt.stop_pod_sandbox(v1::StopPodSandboxRequest { pod_sandbox_id: "nope".into() }).await.unwrap();

    // Filters: id prefix, state, labels.
    assert_eq!(list_pods(&mut rt, v1::PodSandboxFilter { id: id[..12].into(), ..Default::default() }).await, vec![id.clone()]);
    let by_label = v1::PodSandboxFilter { label_selector: [("app".to_string(), "dup".to_string())].into(), ..Default::default() };
    assert_eq!(list_pods(&mut rt, by_label).await.len(), 2);
    rt.stop_pod_sandbox(v1::StopPodSandboxRequest { pod_sandbox_id: id2.clone() }).await.unwrap();
    let ready_only = v1::PodSandboxFilter { state: Some(v1::PodSandboxStateValue { state: ready() }), ..Default::default() };
    assert_eq!(list_pods(&mut rt, ready_only).await, vec![id.clone()]);

    for pod in [&id, &id2] {
        rt.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
        assert_no_leftovers(&daemon, pod);
    }
    // The name is free again once removed.
    let id3 = run_pod(&mut rt, &config, &mut cleanup).await;
    rt.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: id3.clone() }).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn host_namespaces_when_asked() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let mut rt = daemon.runtime_client().await;
    let mut cleanup = Cleanup::new(&daemon);
    let mut config = sandbox_config(&daemon, "hostnet");
    config.linux.as_mut().unwrap().security_context.as_mut().unwrap().namespace_options = Some(v1::NamespaceOption {
        network: v1::NamespaceMode::Node as i32,
        pid: v1::NamespaceMode::Node as i32,
        ipc: v1::NamespaceMode::Node as i32,
        ..Default::default()
    });
    let id = run_pod(&mut rt, &config, &mut cleanup).await;
    assert_eq!(pod_status(&mut rt, &id).await.state, ready());
    let pod_dir = daemon.state().join("pods").join(&id);
    assert!(!pod_dir.join("ns/net").exists(), "host network pod has no netns of its own");
    let host = nix::unistd::gethostname().unwrap().to_string_lossy().into_owned();
    assert_eq!(std::fs::read_to_string(pod_dir.join("hostname")).unwrap().trim(), host);
    rt.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: id.clone() }).await.unwrap();
    assert_no_leftovers(&daemon, &id);
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_survive_kill_9_of_the_daemon() {
    let mut daemon = Daemon::start(DaemonOptions::default()).await;
    let mut rt = daemon.runtime_client().await;
    let mut cleanup = Cleanup::new(&daemon);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(run_pod(&mut rt, &sandbox_config(&daemon, &format!("survivor-{i}")), &mut cleanup).await);
    }
    daemon.kill9();
    daemon.restart().await;
    let mut rt = daemon.runtime_client().await;
    let ready_only = v1::PodSandboxFilter { state: Some(v1::PodSandboxStateValue { state: ready() }), ..Default::default() };
    let mut listed = list_pods(&mut rt, ready_only).await;
    listed.sort();
    ids.sort();
    assert_eq!(listed, ids, "daemon log:\n{}", daemon.log());
    for id in &ids {
        rt.stop_pod_sandbox(v1::StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await.unwrap();
        rt.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: id.clone() }).await.unwrap();
        assert_no_leftovers(&daemon, id);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_whose_monitor_died_is_not_ready_and_still_removable() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let mut rt = daemon.runtime_client().await;
    let mut cleanup = Cleanup::new(&daemon);
    let id = run_pod(&mut rt, &sandbox_config(&daemon, "orphan"), &mut cleanup).await;
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(daemon.state().join("pods").join(&id).join("monitor.state")).unwrap()).unwrap();
    let pid = state["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while pod_status(&mut rt, &id).await.state == ready() {
        assert!(Instant::now() < deadline, "pod still ready after its monitor died");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rt.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: id.clone() }).await.unwrap();
    assert_no_leftovers(&daemon, &id);
}

// ---------------------------------------------------------------------------------------
// Containers: these need the image store (PullImage) and the OCI spec builder.

use capstan_integration::image::ImageBuilder;
use capstan_integration::registry::Registry;
use cri_proto::ImageServiceClient;

/// A registry with the test images, a daemon that has pulled them, clients and cleanup.
struct Env {
    // Fields drop in this order: pods go while the daemon still runs.
    cleanup: Cleanup,
    rt: Rt,
    daemon: Daemon,
    _registry: Registry,
    busybox: String,
    users: String,
}

impl Env {
    async fn start() -> Env {
        let registry = Registry::start().await;
        let busybox = ImageBuilder::busybox().push(&registry, "pods/busybox", &["1"]).await.references[0].clone();
        let users = ImageBuilder::busybox_with_users().push(&registry, "pods/users", &["1"]).await.references[0].clone();
        let daemon = Daemon::start(DaemonOptions::default()).await;
        let mut img: ImageServiceClient<Channel> = daemon.image_client().await;
        for image in [&busybox, &users] {
            let spec = v1::ImageSpec { image: image.clone(), ..Default::default() };
            img.pull_image(v1::PullImageRequest { image: Some(spec), auth: None, sandbox_config: None })
                .await
                .unwrap_or_else(|e| panic!("pull {image}: {e}"));
        }
        let rt = daemon.runtime_client().await;
        let cleanup = Cleanup::new(&daemon);
        Env { cleanup, rt, daemon, _registry: registry, busybox, users }
    }

    async fn pod(&mut self, name: &str) -> (String, v1::PodSandboxConfig) {
        let config = sandbox_config(&self.daemon, name);
        let id = run_pod(&mut self.rt, &config, &mut self.cleanup).await;
        (id, config)
    }

    /// Creates and starts a container; returns its id.
    async fn run(&mut self, pod: &(String, v1::PodSandboxConfig), config: v1::ContainerConfig) -> String {
        let id = self.create(pod, config).await;
        self.rt
            .start_container(v1::StartContainerRequest { container_id: id.clone() })
            .await
            .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", self.daemon.log()));
        id
    }

    async fn create(&mut self, pod: &(String, v1::PodSandboxConfig), config: v1::ContainerConfig) -> String {
        let request = v1::CreateContainerRequest {
            pod_sandbox_id: pod.0.clone(),
            config: Some(config),
            sandbox_config: Some(pod.1.clone()),
        };
        match self.rt.create_container(request).await {
            Ok(r) => r.into_inner().container_id,
            Err(e) => panic!("CreateContainer: {e}\n{}", self.daemon.log()),
        }
    }

    async fn status(&mut self, id: &str) -> v1::ContainerStatus {
        self.rt
            .container_status(v1::ContainerStatusRequest { container_id: id.into(), verbose: false })
            .await
            .expect("ContainerStatus")
            .into_inner()
            .status
            .expect("status")
    }

    async fn wait_exited(&mut self, id: &str) -> v1::ContainerStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.status(id).await;
            if s.state == v1::ContainerState::ContainerExited as i32 {
                return s;
            }
            assert!(Instant::now() < deadline, "container {id} did not exit: {s:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn remove_pod(&mut self, id: &str) {
        self.rt.stop_pod_sandbox(v1::StopPodSandboxRequest { pod_sandbox_id: id.into() }).await.unwrap();
        self.rt.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: id.into() }).await.unwrap();
        assert_no_leftovers(&self.daemon, id);
    }
}

fn container(name: &str, image: &str, command: &[&str]) -> v1::ContainerConfig {
    v1::ContainerConfig {
        metadata: Some(v1::ContainerMetadata { name: name.into(), attempt: 0 }),
        image: Some(v1::ImageSpec { image: image.into(), ..Default::default() }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}/0.log"),
        labels: [("container".to_string(), name.to_string())].into(),
        ..Default::default()
    }
}

fn security(c: &mut v1::ContainerConfig) -> &mut v1::LinuxContainerSecurityContext {
    c.linux.get_or_insert_with(Default::default).security_context.get_or_insert_with(Default::default)
}

fn log_of(pod: &v1::PodSandboxConfig, name: &str) -> String {
    std::fs::read_to_string(Path::new(&pod.log_directory).join(name).join("0.log")).unwrap_or_default()
}

/// The messages of a CRI log (`<time> <stream> <tag> <msg>`), checking the format.
fn messages(log: &str) -> Vec<(String, String)> {
    log.lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let (ts, stream, tag) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
            assert!(chrono_like(ts), "timestamp of {line:?}");
            assert!(stream == "stdout" || stream == "stderr", "stream of {line:?}");
            assert!(tag == "F" || tag == "P", "tag of {line:?}");
            (stream.to_string(), parts.next().unwrap_or("").to_string())
        })
        .collect()
}

fn chrono_like(ts: &str) -> bool {
    ts.len() == 30 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T' && ts.as_bytes()[19] == b'.'
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_share_the_pod_network_and_ipc() {
    let mut env = Env::start().await;
    let pod = env.pod("shared").await;
    let ns = "for f in net ipc uts; do echo ns=$(readlink /proc/self/ns/$f); done";
    let server = container("server", &env.busybox, &["sh", "-c", &format!("{ns}; echo pong | nc -l -p 8080; sleep 3600")]);
    let server = env.run(&pod, server).await;
    let client_cmd = format!("{ns}; for i in 1 2 3 4 5 6 7 8 9 10; do nc 127.0.0.1 8080 </dev/null && exit 0; sleep 0.2; done; exit 1");
    let client = env.run(&pod, container("client", &env.busybox, &["sh", "-c", &client_cmd])).await;
    let status = env.wait_exited(&client).await;
    assert_eq!(status.exit_code, 0, "{}", log_of(&pod.1, "client"));
    assert!(log_of(&pod.1, "client").contains("stdout F pong"));
    // Same net, ipc and uts namespaces.
    let ns_lines = |log: String| messages(&log).into_iter().map(|(_, m)| m).filter(|m| m.starts_with("ns=")).collect::<Vec<_>>();
    let (a, b) = (ns_lines(log_of(&pod.1, "server")), ns_lines(log_of(&pod.1, "client")));
    assert_eq!(a, b, "namespaces differ");
    assert!(a.len() == 3 && a[0].starts_with("ns=net:[") && a[1].starts_with("ns=ipc:["), "{a:?}");
    // And not the host's.
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(a[0], format!("ns={}", host_net.display()));
    assert_eq!(env.status(&server).await.state, v1::ContainerState::ContainerRunning as i32);
    env.remove_pod(&pod.0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_exit_codes_and_stop_semantics() {
    let mut env = Env::start().await;
    let pod = env.pod("exits").await;
    let failing = env.run(&pod, container("failing", &env.busybox, &["sh", "-c", "echo out; echo err >&2; exit 7"])).await;
    let ok = env.run(&pod, container("ok", &env.busybox, &["true"])).await;
    let s = env.wait_exited(&failing).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (7, "Error"), "{s:?}");
    assert!(s.started_at > 0 && s.finished_at >= s.started_at, "{s:?}");
    assert_eq!(messages(&log_of(&pod.1, "failing")), vec![("stdout".into(), "out".into()), ("stderr".into(), "err".into())]);
    assert!(s.log_path.ends_with("failing/0.log"), "{s:?}");
    let s = env.wait_exited(&ok).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"));

    // A process ignoring SIGTERM is killed after the timeout; stopping again is fine.
    let stubborn = env.run(&pod, container("stubborn", &env.busybox, &["sh", "-c", "trap '' TERM; echo up; sleep 3600"])).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    env.rt.stop_container(v1::StopContainerRequest { container_id: stubborn.clone(), timeout: 1 }).await.unwrap();
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(env.status(&stubborn).await.exit_code, 137);
    env.rt.stop_container(v1::StopContainerRequest { container_id: stubborn.clone(), timeout: 1 }).await.unwrap();

    // Start of an exited container is refused; duplicate names too; filters work.
    let err = env.rt.start_container(v1::StartContainerRequest { container_id: ok.clone() }).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = env
        .rt
        .create_container(v1::CreateContainerRequest {
            pod_sandbox_id: pod.0.clone(),
            config: Some(container("ok", &env.busybox, &["true"])),
            sandbox_config: Some(pod.1.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    let list = |filter: v1::ContainerFilter| {
        let mut rt = env.rt.clone();
        async move { rt.list_containers(v1::ListContainersRequest { filter: Some(filter) }).await.unwrap().into_inner().containers }
    };
    let exited = v1::ContainerFilter { state: Some(v1::ContainerStateValue { state: v1::ContainerState::ContainerExited as i32 }), ..Default::default() };
    assert_eq!(list(exited).await.len(), 3);
    let labelled = v1::ContainerFilter { label_selector: [("container".to_string(), "ok".to_string())].into(), ..Default::default() };
    assert_eq!(list(labelled).await.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), vec![ok.clone()]);
    let by_pod = v1::ContainerFilter { pod_sandbox_id: pod.0.clone(), ..Default::default() };
    assert_eq!(list(by_pod).await.len(), 3);

    // Removing a running container stops it first; removing twice is fine.
    let running = env.run(&pod, container("running", &env.busybox, &["sleep", "3600"])).await;
    env.rt.remove_container(v1::RemoveContainerRequest { container_id: running.clone() }).await.unwrap();
    env.rt.remove_container(v1::RemoveContainerRequest { container_id: running.clone() }).await.unwrap();
    let err = env.rt.container_status(v1::ContainerStatusRequest { container_id: running.clone(), verbose: false }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_no_leftovers(&env.daemon, &running);
    env.remove_pod(&pod.0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_image_stop_signal_is_sent_first() {
    let registry = Registry::start().await;
    let image = ImageBuilder::busybox().stop_signal("SIGUSR1").push(&registry, "pods/usr1", &["1"]).await.references[0].clone();
    let mut env = Env::start().await;
    let mut img = env.daemon.image_client().await;
    let spec = v1::ImageSpec { image: image.clone(), ..Default::default() };
    img.pull_image(v1::PullImageRequest { image: Some(spec), auth: None, sandbox_config: None }).await.unwrap();
    let pod = env.pod("usr1").await;
    let script = "trap 'echo got-usr1; exit 3' USR1; echo up; while true; do sleep 0.1; done";
    let c = env.run(&pod, container("usr1", &image, &["sh", "-c", script])).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.rt.stop_container(v1::StopContainerRequest { container_id: c.clone(), timeout: 10 }).await.unwrap();
    let s = env.status(&c).await;
    assert_eq!(s.exit_code, 3, "{s:?}");
    assert!(log_of(&pod.1, "usr1").contains("stdout F got-usr1"));
    env.remove_pod(&pod.0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oom_kill_and_cgroup_limits() {
    let mut env = Env::start().await;
    let pod = env.pod("limits").await;
    let mut limited = container("limited", &env.busybox, &["sleep", "3600"]);
    limited.linux.get_or_insert_with(Default::default).resources = Some(v1::LinuxContainerResources {
        memory_limit_in_bytes: 64 << 20,
        cpu_shares: 512,
        cpu_quota: 50_000,
        cpu_period: 100_000,
        ..Default::default()
    });
    let limited = env.run(&pod, limited).await;
    let cgroup = |ctrl: &str, file: &str| {
        let path = cgroup_dir(ctrl, &format!("capstan/{}/{limited}", pod.0)).join(file);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().to_string()
    };
    if cgroup_v2() {
        // Shares 512 → weight 59 (runc's mapping; integration/tests/vm_cgroups.rs has more).
        assert_eq!(cgroup("memory", "memory.max"), (64u64 << 20).to_string());
        assert_eq!(cgroup("cpu", "cpu.weight"), "59");
        assert_eq!(cgroup("cpu", "cpu.max"), "50000 100000");
    } else {
        assert_eq!(cgroup("memory", "memory.limit_in_bytes"), (64u64 << 20).to_string());
        assert_eq!(cgroup("cpu", "cpu.shares"), "512");
        assert_eq!(cgroup("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(cgroup("cpu", "cpu.cfs_period_us"), "100000");
    }

    let mut hog = container("hog", &env.busybox, &["dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1"]);
    hog.linux.get_or_insert_with(Default::default).resources =
        Some(v1::LinuxContainerResources { memory_limit_in_bytes: 16 << 20, ..Default::default() });
    let hog = env.run(&pod, hog).await;
    let s = env.wait_exited(&hog).await;
    assert_eq!((s.reason.as_str(), s.exit_code), ("OOMKilled", 137), "{s:?}");
    env.remove_pod(&pod.0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn users_readonly_rootfs_capabilities_and_seccomp() {
    let mut env = Env::start().await;
    let pod = env.pod("secure").await;
    // The image's User (app, 1000) with its groups from /etc/group.
    let id = env.run(&pod, container("whoami", &env.users, &["id"])).await;
    env.wait_exited(&id).await;
    let log = log_of(&pod.1, "whoami");
    assert!(log.contains("uid=1000(app) gid=1000(app)") && log.contains("2000(extra)"), "{log}");

    let mut ro = container("readonly", &env.busybox, &["sh", "-c", "touch /x"]);
    security(&mut ro).readonly_rootfs = true;
    let ro = env.run(&pod, ro).await;
    assert_ne!(env.wait_exited(&ro).await.exit_code, 0);
    assert!(log_of(&pod.1, "readonly").contains("Read-only file system"), "{}", log_of(&pod.1, "readonly"));

    let mut nochown = container("nochown", &env.busybox, &["sh", "-c", "grep CapEff /proc/self/status; chown 1 /tmp"]);
    security(&mut nochown).capabilities = Some(v1::Capability { drop_capabilities: vec!["CHOWN".into()], ..Default::default() });
    let nochown = env.run(&pod, nochown).await;
    assert_ne!(env.wait_exited(&nochown).await.exit_code, 0);
    assert!(log_of(&pod.1, "nochown").contains("Operation not permitted"), "{}", log_of(&pod.1, "nochown"));

    // RuntimeDefault seccomp filters the process and refuses a user namespace; Unconfined allows it.
    let script = "grep -E '^Seccomp:' /proc/self/status; unshare -U true && echo unshare-ok";
    let mut strict = container("strict", &env.busybox, &["sh", "-c", script]);
    security(&mut strict).seccomp = Some(v1::SecurityProfile { profile_type: 0, localhost_ref: String::new() });
    let mut loose = container("loose", &env.busybox, &["sh", "-c", script]);
    security(&mut loose).seccomp = Some(v1::SecurityProfile { profile_type: 1, localhost_ref: String::new() });
    let (strict, loose) = (env.run(&pod, strict).await, env.run(&pod, loose).await);
    env.wait_exited(&strict).await;
    env.wait_exited(&loose).await;
    let (strict_log, loose_log) = (log_of(&pod.1, "strict"), log_of(&pod.1, "loose"));
    assert!(strict_log.contains("Seccomp:\t2") && !strict_log.contains("unshare-ok"), "{strict_log}");
    assert!(loose_log.contains("Seccomp:\t0") && loose_log.contains("unshare-ok"), "{loose_log}");
    env.remove_pod(&pod.0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn five_pods_survive_kill_9_and_keep_logging() {
    let mut env = Env::start().await;
    let mut pods = Vec::new();
    for i in 0..5 {
        let pod = env.pod(&format!("ticker-{i}")).await;
        let c = env.run(&pod, container("ticker", &env.busybox, &["sh", "-c", "while true; do echo tick; sleep 0.1; done"])).await;
        pods.push((pod, c));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.daemon.kill9();
    let before: Vec<usize> = pods.iter().map(|(p, _)| log_of(&p.1, "ticker").lines().count()).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    env.daemon.restart().await;
    env.rt = env.daemon.runtime_client().await;
    let running = v1::ContainerFilter {
        state: Some(v1::ContainerStateValue { state: v1::ContainerState::ContainerRunning as i32 }),
        ..Default::default()
    };
    let listed = env.rt.list_containers(v1::ListContainersRequest { filter: Some(running) }).await.unwrap().into_inner().containers;
    assert_eq!(listed.len(), 5, "{listed:?}\n{}", env.daemon.log());
    let ready_only = v1::PodSandboxFilter { state: Some(v1::PodSandboxStateValue { state: ready() }), ..Default::default() };
    assert_eq!(list_pods(&mut env.rt, ready_only).await.len(), 5);
    for ((pod, _), before) in pods.iter().zip(before) {
        let after = log_of(&pod.1, "ticker").lines().count();
        assert!(after > before + 2, "log of {} did not grow while the daemon was down: {before} -> {after}", pod.0);
    }
    for (pod, c) in &pods {
        env.rt.stop_container(v1::StopContainerRequest { container_id: c.clone(), timeout: 2 }).await.unwrap();
        env.rt.remove_container(v1::RemoveContainerRequest { container_id: c.clone() }).await.unwrap();
        env.remove_pod(&pod.0).await;
    }
}

// ---------------------------------------------------------------------------------------
// Networking with Debian's CNI plugins: bridge + host-local + portmap.

/// A test's own CNI network: a uniquely named bridge and /24; on drop the bridge goes, and
/// so do nat chains that appeared during the test (portmap's) and rules naming our pods.
struct TestNet {
    bridge: String,
    subnet: String,
    chains_before: std::collections::BTreeSet<String>,
    pods: Vec<String>,
}

fn sh(cmd: &str, args: &[&str]) -> (bool, String) {
    match std::process::Command::new(cmd).args(args).output() {
        Ok(o) => (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))),
        Err(e) => (false, e.to_string()),
    }
}

fn nat_chains() -> std::collections::BTreeSet<String> {
    sh("iptables-save", &["-t", "nat"]).1.lines().filter_map(|l| l.strip_prefix(':')).filter_map(|l| l.split_whitespace().next()).map(String::from).collect()
}

impl TestNet {
    fn new(daemon: &Daemon) -> TestNet {
        let r = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() ^ std::process::id();
        let bridge = format!("capt{:08x}", r);
        let routes = sh("ip", &["-4", "route", "show"]).1;
        let mut third = (r >> 8) as u8;
        while routes.contains(&format!("10.244.{third}.")) {
            third = third.wrapping_add(1);
        }
        let subnet = format!("10.244.{third}.0/24");
        let list = serde_json::json!({"cniVersion": "1.0.0", "name": "podnet", "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": daemon.scratch().join("ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]});
        std::fs::write(daemon.cni_conf_dir().join("10-podnet.conflist"), list.to_string()).unwrap();
        TestNet { bridge, subnet, chains_before: nat_chains(), pods: Vec::new() }
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let _ = sh("ip", &["link", "del", &self.bridge]);
        let after = nat_chains();
        let new: Vec<&String> = after.difference(&self.chains_before).collect();
        for chain in &after {
            let rules: Vec<String> = sh("iptables", &["-w", "-t", "nat", "-S", chain]).1.lines().filter(|l| l.starts_with("-A ")).map(String::from).collect();
            for (n, rule) in rules.iter().enumerate().rev() {
                let ours = self.pods.iter().any(|p| rule.contains(p.as_str()));
                let to_new = new.iter().any(|c| rule.ends_with(&format!("-j {c}")) || rule.contains(&format!("-j {c} ")));
                if ours || to_new {
                    let _ = sh("iptables", &["-w", "-t", "nat", "-D", chain, &(n + 1).to_string()]);
                }
            }
        }
        for chain in &new {
            let _ = sh("iptables", &["-w", "-t", "nat", "-F", chain]);
            let _ = sh("iptables", &["-w", "-t", "nat", "-X", chain]);
        }
    }
}

fn read_from(addr: std::net::SocketAddr) -> Result<String, String> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(3))).map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    Ok(text)
}

#[tokio::test(flavor = "multi_thread")]
async fn host_port_reaches_the_pod_and_the_pod_ip_is_reported() {
    let mut env = Env::start().await;
    let mut net = TestNet::new(&env.daemon);
    let host_port = capstan_integration::free_port();
    let mut config = sandbox_config(&env.daemon, "ported");
    config.port_mappings = vec![v1::PortMapping {
        protocol: v1::Protocol::Tcp as i32,
        container_port: 8080,
        host_port: host_port as i32,
        host_ip: String::new(),
    }];
    let id = run_pod(&mut env.rt, &config, &mut env.cleanup).await;
    net.pods.push(id.clone());
    let pod = (id.clone(), config);
    let status = pod_status(&mut env.rt, &id).await;
    let ip: std::net::Ipv4Addr = status.network.as_ref().unwrap().ip.parse().unwrap_or_else(|e| panic!("pod IP {status:?}: {e}"));
    let prefix = net.subnet.trim_end_matches("0/24");
    assert!(ip.to_string().starts_with(prefix), "{ip} not in {}", net.subnet);

    let server = "while true; do echo hello-from-pod | nc -l -p 8080; done";
    env.run(&pod, container("web", &env.busybox, &["sh", "-c", server])).await;
    // The pod IP directly, then the hostPort on the host's loopback.
    let mut last = Err(String::new());
    for _ in 0..50 {
        last = read_from((ip, 8080).into());
        if last.as_deref() == Ok("hello-from-pod\n") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last.as_deref(), Ok("hello-from-pod\n"), "pod IP {ip}:8080");
    // busybox nc serves one connection, then the loop starts the next one: retry briefly.
    let mut via_host_port = Err(String::new());
    for _ in 0..20 {
        via_host_port = read_from((std::net::Ipv4Addr::LOCALHOST, host_port).into());
        if via_host_port.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(via_host_port.as_deref(), Ok("hello-from-pod\n"), "127.0.0.1:{host_port}");
    let nat = sh("iptables-save", &["-t", "nat"]).1;
    assert!(nat.contains(&id), "portmap rules for the pod");

    // StopPodSandbox tears the network down: rules gone, address released.
    env.rt.stop_pod_sandbox(v1::StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await.unwrap();
    assert!(!sh("iptables-save", &["-t", "nat"]).1.contains(&id), "portmap rules removed by DEL");
    let veths = sh("ip", &["-o", "link", "show", "master", &net.bridge]).1;
    assert!(veths.trim().is_empty(), "veths left on the bridge: {veths}");
    assert!(pod_status(&mut env.rt, &id).await.network.unwrap_or_default().ip.is_empty());
    let reserved = std::fs::read_dir(env.daemon.scratch().join("ipam/podnet")).map(|d| d.count()).unwrap_or(0);
    assert!(reserved <= 2, "host-local keeps only its bookkeeping files: {reserved}");
    env.remove_pod(&id).await;
}

/// Nothing of this daemon's is mounted or running, and it keeps no pod or container.
fn assert_daemon_holds_nothing(daemon: &Daemon) {
    let mut left = leftovers(&daemon.state().display().to_string());
    left.extend(leftovers(&daemon.root().display().to_string()));
    assert!(left.is_empty(), "left behind:\n{}", left.join("\n"));
    for records in [daemon.root().join("pods"), daemon.state().join("pods")] {
        let n = std::fs::read_dir(&records).map(|d| d.count()).unwrap_or(0);
        assert_eq!(n, 0, "{} is not empty", records.display());
    }
    let containers = capstan_integration::pods::container_dirs(daemon);
    assert!(containers.is_empty(), "container directories left: {containers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_half_way_leave_nothing_behind() {
    let mut env = Env::start().await;
    // CNI ADD fails after the monitor, namespaces, /dev/shm and files exist.
    let broken = daemon_cni_file(&env.daemon);
    std::fs::write(&broken, r#"{"cniVersion":"1.0.0","name":"broken","plugins":[{"type":"no-such-plugin"}]}"#).unwrap();
    let config = sandbox_config(&env.daemon, "halfway");
    let err = env
        .rt
        .run_pod_sandbox(v1::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() })
        .await
        .unwrap_err();
    assert!(err.message().contains("no-such-plugin"), "{err:?}");
    assert!(list_pods(&mut env.rt, v1::PodSandboxFilter::default()).await.is_empty());
    assert!(!Path::new(&config.log_directory).exists(), "log dir created by the failed call is gone");
    assert_daemon_holds_nothing(&env.daemon);
    std::fs::remove_file(&broken).unwrap();

    // The name is free again. A container whose command does not exist fails to start (as
    // in containerd: CreateContainer runs nothing); it is left exited with the cause, and
    // nothing of the failed launch stays.
    let pod = env.pod("halfway").await;
    let request = |c: v1::ContainerConfig, pod_id: &str| v1::CreateContainerRequest {
        pod_sandbox_id: pod_id.into(),
        config: Some(c),
        sandbox_config: Some(pod.1.clone()),
    };
    let nope = env.create(&pod, container("nope", &env.busybox, &["/no/such/binary"])).await;
    let err = env.rt.start_container(v1::StartContainerRequest { container_id: nope.clone() }).await.unwrap_err();
    assert!(err.message().contains("/no/such/binary") || err.message().contains("executable"), "{err:?}");
    let s = env.status(&nope).await;
    assert_eq!((s.state, s.reason.as_str(), s.exit_code), (v1::ContainerState::ContainerExited as i32, "StartError", 128), "{s:?}");
    assert!(s.message.contains("/no/such/binary") || s.message.contains("executable"), "{s:?}");
    let cgroups: Vec<String> = leftovers(&nope).into_iter().filter(|l| l.contains("cgroup")).collect();
    assert!(cgroups.is_empty(), "the failed launch left {cgroups:?}");
    env.rt.remove_container(v1::RemoveContainerRequest { container_id: nope }).await.unwrap();
    let err = env.rt.create_container(request(container("img", "127.0.0.1:1/absent:1", &["true"]), &pod.0)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = env.rt.create_container(request(container("nopod", &env.busybox, &["true"]), "no-such-pod")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let mut no_meta = container("x", &env.busybox, &["true"]);
    no_meta.metadata = None;
    let err = env.rt.create_container(request(no_meta, &pod.0)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let listed = env.rt.list_containers(v1::ListContainersRequest { filter: None }).await.unwrap().into_inner().containers;
    assert!(listed.is_empty(), "{listed:?}");
    // The removed StartError container's directory goes in the background (`.trash`).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut containers = capstan_integration::pods::container_dirs(&env.daemon);
    while !containers.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        containers = capstan_integration::pods::container_dirs(&env.daemon);
    }
    assert!(containers.is_empty(), "container records of failed creates are gone: {containers:?}");
    // The same name works once the cause is fixed.
    let ok = env.run(&pod, container("nope", &env.busybox, &["true"])).await;
    assert_eq!(env.wait_exited(&ok).await.exit_code, 0);
    env.remove_pod(&pod.0).await;
    assert_daemon_holds_nothing(&env.daemon);
}

fn daemon_cni_file(daemon: &Daemon) -> PathBuf {
    daemon.cni_conf_dir().join("05-broken.conflist")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_monitor_means_exited_containers_and_remove_still_cleans_up() {
    let mut env = Env::start().await;
    let pod = env.pod("lost").await;
    let c = env.run(&pod, container("sleeper", &env.busybox, &["sleep", "3600"])).await;
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.daemon.state().join("pods").join(&pod.0).join("monitor.state")).unwrap()).unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(state["pid"].as_i64().unwrap() as i32), nix::sys::signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let s = loop {
        let s = env.status(&c).await;
        if s.state == v1::ContainerState::ContainerExited as i32 {
            break s;
        }
        assert!(Instant::now() < deadline, "{s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!((s.reason.as_str(), s.exit_code), ("MonitorLost", 255), "{s:?}");
    assert!(s.message.contains("monitor"), "{s:?}");
    // The sleeper itself outlived its monitor; RemovePodSandbox (without Stop) kills it.
    let cgroup = cgroup_dir("pids", &format!("capstan/{}/{c}", pod.0)).join("cgroup.procs");
    let procs = std::fs::read_to_string(&cgroup).unwrap_or_default();
    assert!(!procs.trim().is_empty(), "the container still runs: {}", cgroup.display());
    env.rt.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: pod.0.clone() }).await.unwrap();
    for pid in procs.lines() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(stat.is_empty() || stat.contains(") Z "), "process {pid} survived: {stat}");
    }
    assert_no_leftovers(&env.daemon, &pod.0);
    assert_daemon_holds_nothing(&env.daemon);
}

#[tokio::test(flavor = "multi_thread")]
async fn host_network_pods_run_containers_in_the_host_namespaces() {
    let mut env = Env::start().await;
    let mut config = sandbox_config(&env.daemon, "hostnet-c");
    config.linux.as_mut().unwrap().security_context.as_mut().unwrap().namespace_options = Some(v1::NamespaceOption {
        network: v1::NamespaceMode::Node as i32,
        pid: v1::NamespaceMode::Container as i32,
        ipc: v1::NamespaceMode::Node as i32,
        ..Default::default()
    });
    let id = run_pod(&mut env.rt, &config, &mut env.cleanup).await;
    let pod = (id.clone(), config);
    let mut c = container("ns", &env.busybox, &["sh", "-c", "readlink /proc/self/ns/net; readlink /proc/self/ns/ipc; hostname"]);
    c.linux.get_or_insert_with(Default::default).security_context = Some(v1::LinuxContainerSecurityContext {
        namespace_options: pod.1.linux.as_ref().unwrap().security_context.as_ref().unwrap().namespace_options.clone(),
        ..Default::default()
    });
    let c = env.run(&pod, c).await;
    env.wait_exited(&c).await;
    let lines: Vec<String> = messages(&log_of(&pod.1, "ns")).into_iter().map(|(_, m)| m).collect();
    let host = |ns: &str| std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap().display().to_string();
    let hostname = nix::unistd::gethostname().unwrap().to_string_lossy().into_owned();
    assert_eq!(lines, vec![host("net"), host("ipc"), hostname]);
    env.remove_pod(&id).await;
}
