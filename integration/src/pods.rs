//! Pods for tests: a registry with busybox and a daemon that pulled it ([`Env`]), pods
//! removed on drop even after a panic ([`Cleanup`]), one pod that runs scripts to their end
//! ([`OnePod`]), and a CNI bridge network of the test's own ([`BridgeNet`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::daemon::{Daemon, DaemonOptions};
use crate::image::ImageBuilder;
use crate::registry::Registry;
use cri_proto::RuntimeServiceClient;
use cri_proto::v1;
use tonic::transport::Channel;

pub type Rt = RuntimeServiceClient<Channel>;

/// Removes the listed pods when dropped, even after a panic.
pub struct Cleanup {
    socket: PathBuf,
    pub pods: Vec<String>,
}

impl Cleanup {
    pub fn new(daemon: &Daemon) -> Cleanup {
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
                for pod in pods {
                    remove_pod(&socket, &pod).await;
                }
            });
        })
        .join();
    }
}

/// Stops and removes one pod for a [`Cleanup`], on a fresh connection per attempt: a
/// dropped connection must not leave the pod (and its mounts) behind. Failures are printed.
async fn remove_pod(socket: &Path, pod: &str) {
    for attempt in 1..=3 {
        let result = async {
            let channel = cri_proto::unix::connect(socket).await.map_err(|e| e.to_string())?;
            let mut client = RuntimeServiceClient::new(channel);
            let id = pod.to_string();
            client.stop_pod_sandbox(v1::StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await.map_err(|e| e.to_string())?;
            client.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: id }).await.map_err(|e| e.to_string())?;
            Ok::<(), String>(())
        }
        .await;
        match result {
            Ok(()) => return,
            Err(e) => eprintln!("cleanup: removing pod {pod} failed (attempt {attempt}): {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A CNI bridge (plus host-local IPAM in the daemon's scratch dir) of the test's own; the
/// bridge is deleted on drop. No masquerading and no portmap: it adds no iptables rules.
pub struct BridgeNet {
    pub bridge: String,
    pub subnet_prefix: String,
}

impl BridgeNet {
    pub fn new(daemon: &Daemon) -> BridgeNet {
        let r = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() ^ std::process::id();
        let bridge = format!("cstat{:08x}", r);
        let routes = String::from_utf8_lossy(&std::process::Command::new("ip").args(["-4", "route", "show"]).output().unwrap().stdout).into_owned();
        let mut third = (r >> 8) as u8;
        while routes.contains(&format!("10.245.{third}.")) {
            third = third.wrapping_add(1);
        }
        let list = serde_json::json!({"cniVersion": "1.0.0", "name": "statsnet", "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": format!("10.245.{third}.0/24")}]],
                      "dataDir": daemon.scratch().join("ipam")}}
        ]});
        std::fs::write(daemon.cni_conf_dir().join("10-statsnet.conflist"), list.to_string()).unwrap();
        BridgeNet { bridge, subnet_prefix: format!("10.245.{third}.") }
    }
}

impl Drop for BridgeNet {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["link", "del", &self.bridge]).output();
    }
}

/// A registry with busybox, a daemon that pulled it, a client and cleanup.
pub struct Env {
    // Drop order: pods go while the daemon still runs.
    pub cleanup: Cleanup,
    pub rt: Rt,
    pub daemon: Daemon,
    _registry: Registry,
    pub busybox: String,
}

impl Env {
    pub async fn start() -> Env {
        let registry = Registry::start().await;
        let busybox = ImageBuilder::busybox().push(&registry, "stats/busybox", &["1"]).await.references[0].clone();
        let daemon = Daemon::start(DaemonOptions::default()).await;
        let mut img = daemon.image_client().await;
        let spec = v1::ImageSpec { image: busybox.clone(), ..Default::default() };
        img.pull_image(v1::PullImageRequest { image: Some(spec), auth: None, sandbox_config: None })
            .await
            .unwrap_or_else(|e| panic!("pull {busybox}: {e}"));
        let rt = daemon.runtime_client().await;
        let cleanup = Cleanup { socket: daemon.socket(), pods: Vec::new() };
        Env { cleanup, rt, daemon, _registry: registry, busybox }
    }

    pub fn sandbox_config(&self, name: &str) -> v1::PodSandboxConfig {
        v1::PodSandboxConfig {
            metadata: Some(v1::PodSandboxMetadata { name: name.into(), uid: format!("uid-{name}"), namespace: "stats".into(), attempt: 0 }),
            hostname: name.into(),
            log_directory: self.daemon.scratch().join("logs").join(name).display().to_string(),
            labels: [("app".to_string(), name.to_string())].into(),
            ..Default::default()
        }
    }

    pub async fn pod(&mut self, name: &str) -> (String, v1::PodSandboxConfig) {
        let config = self.sandbox_config(name);
        let id = self
            .rt
            .run_pod_sandbox(v1::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() })
            .await
            .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", self.daemon.log()))
            .into_inner()
            .pod_sandbox_id;
        self.cleanup.pods.push(id.clone());
        (id, config)
    }

    pub async fn create(&mut self, pod: &(String, v1::PodSandboxConfig), config: v1::ContainerConfig) -> String {
        let request = v1::CreateContainerRequest { pod_sandbox_id: pod.0.clone(), config: Some(config), sandbox_config: Some(pod.1.clone()) };
        match self.rt.create_container(request).await {
            Ok(r) => r.into_inner().container_id,
            Err(e) => panic!("CreateContainer: {e}\n{}", self.daemon.log()),
        }
    }

    pub async fn run(&mut self, pod: &(String, v1::PodSandboxConfig), config: v1::ContainerConfig) -> String {
        let id = self.create(pod, config).await;
        self.rt
            .start_container(v1::StartContainerRequest { container_id: id.clone() })
            .await
            .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", self.daemon.log()));
        id
    }

    pub async fn status(&mut self, id: &str) -> v1::ContainerStatus {
        self.rt
            .container_status(v1::ContainerStatusRequest { container_id: id.into(), verbose: false })
            .await
            .expect("ContainerStatus")
            .into_inner()
            .status
            .expect("status")
    }

    pub async fn pod_status(&mut self, id: &str) -> v1::PodSandboxStatus {
        self.rt
            .pod_sandbox_status(v1::PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: false })
            .await
            .expect("PodSandboxStatus")
            .into_inner()
            .status
            .expect("status")
    }

    pub async fn wait_exited(&mut self, id: &str) -> v1::ContainerStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.status(id).await;
            if s.state == v1::ContainerState::ContainerExited as i32 {
                return s;
            }
            assert!(Instant::now() < deadline, "container {id} did not exit: {s:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn container_stats(&mut self, id: &str) -> v1::ContainerStats {
        self.rt
            .container_stats(v1::ContainerStatsRequest { container_id: id.into() })
            .await
            .unwrap_or_else(|e| panic!("ContainerStats: {e}\n{}", self.daemon.log()))
            .into_inner()
            .stats
            .expect("stats")
    }

    pub async fn remove_pod(&mut self, id: &str) {
        self.rt.stop_pod_sandbox(v1::StopPodSandboxRequest { pod_sandbox_id: id.into() }).await.unwrap();
        self.rt.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: id.into() }).await.unwrap();
        self.cleanup.pods.retain(|p| p != id);
    }
}

pub fn container(name: &str, image: &str, command: &[&str]) -> v1::ContainerConfig {
    v1::ContainerConfig {
        metadata: Some(v1::ContainerMetadata { name: name.into(), attempt: 0 }),
        image: Some(v1::ImageSpec { image: image.into(), ..Default::default() }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}/0.log"),
        labels: [("container".to_string(), name.to_string())].into(),
        ..Default::default()
    }
}

pub fn with_resources(mut c: v1::ContainerConfig, r: v1::LinuxContainerResources) -> v1::ContainerConfig {
    c.linux.get_or_insert_with(Default::default).resources = Some(r);
    c
}

/// A container's cgroup file: `<mount>/capstan/<pod>/<container>/<file>` (v1 passes the
/// controller's directory as `mount`, v2 `/sys/fs/cgroup`).
pub fn cgroup_file(mount: &str, pod: &str, container: &str, file: &str) -> String {
    let path = Path::new(mount).join("capstan").join(pod).join(container).join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().to_string()
}

pub fn value(v: &Option<v1::UInt64Value>) -> u64 {
    v.as_ref().map_or(0, |v| v.value)
}

/// A daemon that has pulled a busybox image, with one pod; the pod is removed on drop.
pub struct OnePod {
    pub rt: RuntimeServiceClient<Channel>,
    pub pod: String,
    pub config: v1::PodSandboxConfig,
    pub image: String,
    pub daemon: Daemon,
    _registry: Registry,
}

impl OnePod {
    pub async fn start(name: &str) -> OnePod {
        let registry = Registry::start().await;
        let image = ImageBuilder::busybox().push(&registry, "volumes/busybox", &["1"]).await.references[0].clone();
        let daemon = Daemon::start(DaemonOptions::default()).await;
        let spec = v1::ImageSpec { image: image.clone(), ..Default::default() };
        let pull = v1::PullImageRequest { image: Some(spec), auth: None, sandbox_config: None };
        daemon.image_client().await.pull_image(pull).await.unwrap_or_else(|e| panic!("pull {image}: {e}"));
        let mut rt = daemon.runtime_client().await;
        let config = v1::PodSandboxConfig {
            metadata: Some(v1::PodSandboxMetadata { name: name.into(), uid: format!("uid-{name}"), namespace: "test".into(), attempt: 0 }),
            hostname: name.into(),
            log_directory: daemon.scratch().join("logs").join(name).display().to_string(),
            ..Default::default()
        };
        let run = v1::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
        let pod = rt.run_pod_sandbox(run).await.expect("RunPodSandbox").into_inner().pod_sandbox_id;
        OnePod { rt, pod, config, image, daemon, _registry: registry }
    }

    /// Runs `script` in a container with `mounts` until it exits; returns its exit code
    /// and stdout+stderr.
    pub async fn run(&mut self, name: &str, script: &str, mounts: Vec<v1::Mount>) -> (i32, String) {
        let config = v1::ContainerConfig {
            metadata: Some(v1::ContainerMetadata { name: name.into(), attempt: 0 }),
            image: Some(v1::ImageSpec { image: self.image.clone(), ..Default::default() }),
            command: vec!["sh".into(), "-c".into(), script.into()],
            log_path: format!("{name}.log"),
            mounts,
            ..Default::default()
        };
        let create = v1::CreateContainerRequest {
            pod_sandbox_id: self.pod.clone(),
            config: Some(config),
            sandbox_config: Some(self.config.clone()),
        };
        let id = match self.rt.create_container(create).await {
            Ok(r) => r.into_inner().container_id,
            Err(e) => panic!("CreateContainer: {e}\n{}", self.daemon.log()),
        };
        self.rt.start_container(v1::StartContainerRequest { container_id: id.clone() }).await.expect("StartContainer");
        let deadline = Instant::now() + Duration::from_secs(if std::env::var_os("CAPSTAN_VM").is_some() { 180 } else { 30 });
        loop {
            let request = v1::ContainerStatusRequest { container_id: id.clone(), verbose: false };
            let status = self.rt.container_status(request).await.expect("ContainerStatus").into_inner().status.expect("status");
            if status.state == v1::ContainerState::ContainerExited as i32 {
                let log = std::fs::read_to_string(Path::new(&self.config.log_directory).join(format!("{name}.log")));
                return (status.exit_code, log.unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "container {name} did not exit: {status:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn remove(&mut self) {
        let pod = std::mem::take(&mut self.pod);
        if pod.is_empty() {
            return;
        }
        self.rt.stop_pod_sandbox(v1::StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.expect("StopPodSandbox");
        self.rt.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
    }
}

impl Drop for OnePod {
    fn drop(&mut self) {
        let (socket, pod) = (self.daemon.socket(), std::mem::take(&mut self.pod));
        if pod.is_empty() {
            return;
        }
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let Ok(channel) = cri_proto::unix::connect(&socket).await else { return };
                let request = v1::RemovePodSandboxRequest { pod_sandbox_id: pod };
                let _ = RuntimeServiceClient::new(channel).remove_pod_sandbox(request).await;
            });
        })
        .join();
    }
}

/// What the daemon of `daemon` still holds on this machine: mounts under its root or state
/// dir, processes naming them (monitors, containers), cgroups of the pods listed in `pods`
/// (ids), and records under `<root>/pods`, `<root>/containers` (and its trash), `<state>/pods`.
/// Empty when everything it made is gone.
pub fn daemon_leftovers(daemon: &Daemon, pods: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let needles = [daemon.root().display().to_string(), daemon.state().display().to_string()];
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    found.extend(mountinfo.lines().filter(|l| needles.iter().any(|n| l.contains(n.as_str()))).map(|l| format!("mount: {l}")));
    let daemon_pid = daemon.pid().map(|p| p.to_string());
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if Some(&pid) == daemon_pid.as_ref() {
            continue;
        }
        let cmdline = String::from_utf8_lossy(&std::fs::read(entry.path().join("cmdline")).unwrap_or_default()).replace('\0', " ");
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if needles.iter().any(|n| cmdline.contains(n.as_str())) && !stat.contains(") Z ") {
            found.push(format!("process {pid}: {cmdline}"));
        }
    }
    let hierarchies = std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten().map(|h| h.path());
    for hierarchy in std::iter::once(PathBuf::from("/sys/fs/cgroup")).chain(hierarchies) {
        for pod in pods {
            let dir = hierarchy.join("capstan").join(pod);
            if dir.exists() {
                found.push(format!("cgroup: {}", dir.display()));
            }
        }
    }
    for records in [daemon.root().join("pods"), daemon.state().join("pods")] {
        for e in std::fs::read_dir(&records).into_iter().flatten().flatten() {
            found.push(format!("file: {}", e.path().display()));
        }
    }
    found.extend(container_dirs(daemon).iter().map(|d| format!("file: {}", d.display())));
    found
}

/// The daemon's container directories: live ones under `<root>/containers` and removed ones
/// whose cleanup has not finished, under `<root>/containers/.trash` (the trash itself stays).
pub fn container_dirs(daemon: &Daemon) -> Vec<PathBuf> {
    let containers = daemon.root().join("containers");
    let trash = containers.join(".trash");
    let entries = |dir: &Path| std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).collect::<Vec<_>>();
    let mut found: Vec<PathBuf> = entries(&containers).into_iter().filter(|p| p != &trash).collect();
    found.extend(entries(&trash));
    found.sort();
    found
}

/// [`daemon_leftovers`] after giving exiting processes a few seconds.
pub async fn wait_no_leftovers(daemon: &Daemon, pods: &[String]) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = daemon_leftovers(daemon, pods);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl BridgeNet {
    /// Host ends of veths still attached to the bridge, and addresses host-local still
    /// holds in `daemon`'s IPAM dir: both are empty once every pod is gone.
    pub fn leftovers(&self, daemon: &Daemon) -> Vec<String> {
        let out = std::process::Command::new("ip").args(["-o", "link", "show", "master", &self.bridge]).output();
        let mut found: Vec<String> = out
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().map(|l| format!("veth: {l}")).collect())
            .unwrap_or_default();
        for net in std::fs::read_dir(daemon.scratch().join("ipam")).into_iter().flatten().flatten() {
            for e in std::fs::read_dir(net.path()).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.parse::<std::net::IpAddr>().is_ok() {
                    found.push(format!("ip reservation: {}", e.path().display()));
                }
            }
        }
        found
    }
}

/// Tears a pod's volumes down on drop (forced), even after a failed assertion.
pub struct Volumes(pub capstan_volumes::PodVolumes);

impl Drop for Volumes {
    fn drop(&mut self) {
        let _ = self.0.teardown_all(true);
    }
}

/// The mountinfo lines of mounts exactly at `path`.
pub fn mountinfo_at(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines().filter(|l| l.split(' ').nth(4) == path.to_str()).map(String::from).collect()
}

/// A CRI bind mount of `host` at `container`.
pub fn cri_mount(host: &Path, container: &str) -> v1::Mount {
    v1::Mount { host_path: host.display().to_string(), container_path: container.into(), ..Default::default() }
}

