//! Pods and containers on the real daemon: namespaces, monitors, cgroups, logs, exits,
//! restarts. Every test removes what it created; `no_leftovers` checks the machine.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use capstan_integration::daemon::{Daemon, DaemonOptions};
use cri_proto::RuntimeServiceClient;
use cri_proto::v1;
use tonic::Code;
use tonic::transport::Channel;

type Rt = RuntimeServiceClient<Channel>;

/// Removes the listed pods when dropped, even when the test panicked half-way.
struct Cleanup {
    socket: PathBuf,
    pods: Vec<String>,
}

impl Cleanup {
    fn new(daemon: &Daemon) -> Cleanup {
        Cleanup { socket: daemon.socket(), pods: Vec::new() }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let socket = self.socket.clone();
        let pods = std::mem::take(&mut self.pods);
        if pods.is_empty() {
            return;
        }
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
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let dir = hierarchy.path().join("capstan");
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().contains(needle) {
                    found.push(format!("cgroup: {}", e.path().display()));
                }
            }
        }
    }
    found
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
    let infra_cgroup = Path::new("/sys/fs/cgroup/memory/capstan").join(&id).join(&id);
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
    assert!(!Path::new("/sys/fs/cgroup/memory/capstan").join(&id).exists());
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
