//! GPUs on the real daemon: CDI devices in CreateContainer, the built-in kubelet device
//! plugin, and `capstan node-labels`.
//!
//! There is no real GPU and no real kubelet on this machine. The "GPUs" are character
//! devices the tests `mknod` in a temp dir (with /dev/null's major:minor, so they are safe
//! to open) beside fake `/proc/driver/nvidia/gpus/*/information` files; kubelet is played
//! by the test, serving the `Registration` service on a unix socket. The wire format is the
//! real one: both sides use the v1beta1 device-plugin protobuf API (`cri_proto::deviceplugin`)
//! with kubelet's package, service names and field numbers.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use capstan_integration::daemon::{Daemon, DaemonOptions};
use capstan_integration::image::ImageBuilder;
use capstan_integration::registry::Registry;
use cri_proto::deviceplugin::v1beta1 as api;
use cri_proto::v1;
use cri_proto::{ImageServiceClient, RuntimeServiceClient};
use tokio::sync::mpsc;
use tonic::Code;
use tonic::transport::Channel;

type Rt = RuntimeServiceClient<Channel>;

fn mknod_char(path: &Path, major: u64, minor: u64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    nix::sys::stat::mknod(
        path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(major, minor),
    )
    .unwrap();
}

/// /dev/null's numbers: a node that can be opened and written without harm.
fn null_numbers() -> (u64, u64) {
    let rdev = std::fs::metadata("/dev/null").unwrap().rdev();
    (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev))
}

/// A fake NVIDIA node under `root`: two GPUs, the control node, the driver's info files.
fn fake_gpu_tree(root: &Path) {
    let (major, minor) = null_numbers();
    for name in ["nvidia0", "nvidia1", "nvidiactl"] {
        mknod_char(&root.join("dev").join(name), major, minor);
    }
    for (bus, index) in [("0000:00:1e.0", 0), ("0000:00:1f.0", 1)] {
        let dir = root.join("proc/driver/nvidia/gpus").join(bus);
        std::fs::create_dir_all(&dir).unwrap();
        let info = format!(
            "Model: \t\t Tesla T4\nIRQ: \t\t 40\nGPU UUID: \t GPU-fake-{index}\nBus Location: \t {bus}\nDevice Minor: \t {minor}\n",
            minor = minor + index
        );
        std::fs::write(dir.join("information"), info).unwrap();
    }
}

/// A CDI spec of `kind` with one device `name`: the node `host` appears at `path` in the
/// container, with an env var and a read-only bind mount of `driver_dir`.
fn cdi_spec(kind: &str, name: &str, host: &Path, path: &str, driver_dir: &Path) -> String {
    serde_json::json!({
        "cdiVersion": "0.6.0",
        "kind": kind,
        "devices": [{
            "name": name,
            "containerEdits": {
                "env": [format!("FAKE_GPU={name}")],
                "deviceNodes": [{"path": path, "hostPath": host}],
                "mounts": [{"hostPath": driver_dir, "containerPath": "/usr/lib/fakegpu", "type": "bind", "options": ["ro", "bind"]}]
            }
        }]
    })
    .to_string()
}

/// Removes the listed pods when dropped, even when the test panicked half-way.
struct Cleanup {
    socket: PathBuf,
    pods: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (socket, pods) = (self.socket.clone(), std::mem::take(&mut self.pods));
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let Ok(channel) = cri_proto::unix::connect(&socket).await else { return };
                let mut client = RuntimeServiceClient::new(channel);
                for pod in pods {
                    let _ = client.stop_pod_sandbox(v1::StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await;
                    let _ = client.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: pod }).await;
                }
            });
        })
        .join();
    }
}

/// A daemon with the busybox test image pulled and a client.
struct Env {
    cleanup: Cleanup,
    rt: Rt,
    daemon: Daemon,
    _registry: Registry,
    busybox: String,
}

impl Env {
    async fn start(config_toml: String) -> Env {
        let registry = Registry::start().await;
        let busybox = ImageBuilder::busybox().push(&registry, "gpu/busybox", &["1"]).await.references[0].clone();
        let daemon = Daemon::start(DaemonOptions { config_toml, ..Default::default() }).await;
        let mut img: ImageServiceClient<Channel> = daemon.image_client().await;
        let spec = v1::ImageSpec { image: busybox.clone(), ..Default::default() };
        img.pull_image(v1::PullImageRequest { image: Some(spec), auth: None, sandbox_config: None }).await.expect("pull");
        let rt = daemon.runtime_client().await;
        let cleanup = Cleanup { socket: daemon.socket(), pods: Vec::new() };
        Env { cleanup, rt, daemon, _registry: registry, busybox }
    }

    async fn pod(&mut self, name: &str) -> (String, v1::PodSandboxConfig) {
        let config = v1::PodSandboxConfig {
            metadata: Some(v1::PodSandboxMetadata { name: name.into(), uid: format!("uid-{name}"), namespace: "gpu".into(), attempt: 0 }),
            hostname: name.into(),
            log_directory: self.daemon.scratch().join("logs").join(name).display().to_string(),
            // Each container its own pid namespace, as pods.rs runs them (a shared pod pid
            // namespace is not what is under test here).
            linux: Some(v1::LinuxPodSandboxConfig {
                security_context: Some(v1::LinuxSandboxSecurityContext {
                    namespace_options: Some(v1::NamespaceOption { pid: v1::NamespaceMode::Container as i32, ..Default::default() }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
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

    fn container(&self, name: &str, script: &str) -> v1::ContainerConfig {
        v1::ContainerConfig {
            metadata: Some(v1::ContainerMetadata { name: name.into(), attempt: 0 }),
            image: Some(v1::ImageSpec { image: self.busybox.clone(), ..Default::default() }),
            command: vec!["sh".into(), "-c".into(), script.into()],
            log_path: format!("{name}/0.log"),
            ..Default::default()
        }
    }

    async fn create(&mut self, pod: &(String, v1::PodSandboxConfig), config: v1::ContainerConfig) -> Result<String, tonic::Status> {
        let request = v1::CreateContainerRequest { pod_sandbox_id: pod.0.clone(), config: Some(config), sandbox_config: Some(pod.1.clone()) };
        self.rt.create_container(request).await.map(|r| r.into_inner().container_id)
    }

    /// Creates, starts and waits for a container; returns its log's messages.
    async fn run_to_exit(&mut self, pod: &(String, v1::PodSandboxConfig), config: v1::ContainerConfig) -> String {
        let name = config.metadata.as_ref().unwrap().name.clone();
        let id = self.create(pod, config).await.unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", self.daemon.log()));
        self.rt.start_container(v1::StartContainerRequest { container_id: id.clone() }).await.expect("StartContainer");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.rt.container_status(v1::ContainerStatusRequest { container_id: id.clone(), verbose: false }).await.unwrap();
            let s = s.into_inner().status.unwrap();
            if s.state == v1::ContainerState::ContainerExited as i32 {
                let log = std::fs::read_to_string(Path::new(&pod.1.log_directory).join(&name).join("0.log")).unwrap_or_default();
                assert_eq!(s.exit_code, 0, "{log}");
                // CRI log lines: "<time> <stream> <tag> <message>".
                return log.lines().filter_map(|l| l.splitn(4, ' ').nth(3)).collect::<Vec<_>>().join("\n");
            }
            assert!(Instant::now() < deadline, "container {name} did not exit");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn containers_of(&mut self, pod: &str) -> usize {
        let filter = v1::ContainerFilter { pod_sandbox_id: pod.into(), ..Default::default() };
        self.rt.list_containers(v1::ListContainersRequest { filter: Some(filter) }).await.unwrap().into_inner().containers.len()
    }
}

/// What the container prints about the fake GPU: the node's type and numbers, the env, a
/// file from the mounted driver dir, and whether the device cgroup lets it write.
const PROBE: &str = "ls -l /dev/$DEV | awk '{print \"node=\" substr($1,1,1) $5 $6}'; echo \"env=$FAKE_GPU/$NVIDIA_VISIBLE_DEVICES\"; \
                     cat /usr/lib/fakegpu/version; echo hi > /dev/$DEV && echo write=ok; grep -c fakegpu /proc/mounts";

fn probe(env: &Env, name: &str, dev: &str) -> v1::ContainerConfig {
    let mut c = env.container(name, &format!("DEV={dev}; {PROBE}"));
    c.envs.push(v1::KeyValue { key: "NVIDIA_VISIBLE_DEVICES".into(), value: "unset".into() });
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn cdi_devices_reach_the_container_and_unknown_ones_are_refused() {
    if !capstan_integration::is_root() {
        eprintln!("skipped: needs root (mknod, containers)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (major, minor) = null_numbers();
    let node = tmp.path().join("dev/fakegpu0");
    mknod_char(&node, major, minor);
    let driver = tmp.path().join("driver");
    std::fs::create_dir_all(&driver).unwrap();
    std::fs::write(driver.join("version"), "fake-driver 1.0\n").unwrap();
    let cdi = tmp.path().join("cdi");
    std::fs::create_dir_all(&cdi).unwrap();
    std::fs::write(cdi.join("example.json"), cdi_spec("example.com/gpu", "0", &node, "/dev/fakegpu0", &driver)).unwrap();
    let config = format!("[cdi]\nspec_dirs = [{cdi:?}]\n[node]\nhost_root = {:?}\n", tmp.path().join("nohost"));
    let mut env = Env::start(config).await;
    let pod = env.pod("cdi").await;

    // Without CDI the container has no such node: the probe's facts come from the spec.
    let mut plain = env.container("plain", "test -e /dev/fakegpu0 && echo present || echo absent; echo env=$FAKE_GPU");
    plain.devices.push(v1::Device { container_path: "/dev/mynull".into(), host_path: "/dev/null".into(), permissions: "rw".into() });
    let out = env.run_to_exit(&pod, plain).await;
    assert_eq!(out, "absent\nenv=", "plain containers are untouched");

    let mut by_field = probe(&env, "by-field", "fakegpu0");
    by_field.cdi_devices.push(v1::CdiDevice { name: "example.com/gpu=0".into() });
    let out = env.run_to_exit(&pod, by_field).await;
    let expected = format!("node=c{major},{minor}\nenv=0/unset\nfake-driver 1.0\nwrite=ok\n1");
    assert_eq!(out, expected);

    // The annotation form device plugins used before CRI had the field.
    let mut by_annotation = probe(&env, "by-annotation", "fakegpu0");
    by_annotation.annotations.insert("cdi.k8s.io/test-plugin_gpu0".into(), "example.com/gpu=0".into());
    assert_eq!(env.run_to_exit(&pod, by_annotation).await, expected);
    assert_eq!(env.containers_of(&pod.0).await, 3);

    // An unknown device is refused by name, and nothing of the container is left.
    let mounts_before = std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().count();
    let mut unknown = env.container("unknown", "true");
    unknown.cdi_devices.push(v1::CdiDevice { name: "example.com/gpu=0".into() });
    unknown.cdi_devices.push(v1::CdiDevice { name: "example.com/gpu=9".into() });
    let err = env.create(&pod, unknown.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("example.com/gpu=9"), "{}", err.message());
    assert_eq!(env.containers_of(&pod.0).await, 3, "no container record is left");
    assert_eq!(std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().count(), mounts_before, "no rootfs left mounted");
    // The name was released: the same container can be created once the device is known.
    std::fs::write(cdi.join("more.yaml"), cdi_spec("example.com/gpu", "9", &node, "/dev/fakegpu9", &driver)).unwrap();
    env.create(&pod, unknown).await.unwrap_or_else(|e| panic!("after the spec appeared: {e}\n{}", env.daemon.log()));
}

/// Kubelet's side of registration: records every RegisterRequest.
struct FakeKubelet {
    seen: mpsc::UnboundedSender<api::RegisterRequest>,
}

#[tonic::async_trait]
impl api::registration_server::Registration for FakeKubelet {
    async fn register(&self, request: tonic::Request<api::RegisterRequest>) -> Result<tonic::Response<api::Empty>, tonic::Status> {
        let _ = self.seen.send(request.into_inner());
        Ok(tonic::Response::new(api::Empty {}))
    }
}

/// Serves the fake kubelet on `<dir>/kubelet.sock` until the handle is aborted.
fn serve_kubelet(dir: &Path, seen: mpsc::UnboundedSender<api::RegisterRequest>) -> tokio::task::JoinHandle<()> {
    let socket = dir.join(api::KUBELET_SOCKET);
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(api::registration_server::RegistrationServer::new(FakeKubelet { seen }))
            .serve_with_incoming(cri_proto::unix::incoming(listener))
            .await
            .unwrap();
    })
}

async fn next_registration(rx: &mut mpsc::UnboundedReceiver<api::RegisterRequest>, daemon: &Daemon) -> api::RegisterRequest {
    match tokio::time::timeout(Duration::from_secs(15), rx.recv()).await {
        Ok(Some(r)) => r,
        _ => panic!("capstan did not register with the fake kubelet; log:\n{}", daemon.log()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_device_plugin_registers_lists_allocates_and_registers_again() {
    if !capstan_integration::is_root() {
        eprintln!("skipped: needs root (mknod, containers)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let host = tmp.path().join("host");
    fake_gpu_tree(&host);
    let plugins = tmp.path().join("device-plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let driver = tmp.path().join("driver");
    std::fs::create_dir_all(&driver).unwrap();
    std::fs::write(driver.join("version"), "fake-driver 2.0\n").unwrap();
    let cdi = tmp.path().join("cdi");
    std::fs::create_dir_all(&cdi).unwrap();
    // What `nvidia-ctk cdi generate` would write for GPU 0 on this fake node.
    std::fs::write(cdi.join("nvidia.json"), cdi_spec("nvidia.com/gpu", "0", &host.join("dev/nvidia0"), "/dev/nvidia0", &driver)).unwrap();

    let (tx, mut registrations) = mpsc::unbounded_channel();
    let kubelet = serve_kubelet(&plugins, tx.clone());
    let config = format!(
        "[cdi]\nspec_dirs = [{cdi:?}]\n[node]\nhost_root = {host:?}\n[device_plugin]\ndir = {plugins:?}\nallocate = \"auto\"\n"
    );
    let mut env = Env::start(config).await;

    let reg = next_registration(&mut registrations, &env.daemon).await;
    assert_eq!((reg.version.as_str(), reg.resource_name.as_str()), ("v1beta1", "nvidia.com/gpu"));
    assert!(reg.options.as_ref().unwrap().get_preferred_allocation_available);
    let endpoint = plugins.join(&reg.endpoint);
    assert!(!reg.endpoint.contains('/'), "endpoint is a file name in the plugin dir: {}", reg.endpoint);

    // Kubelet dials back: options, device list, health updates.
    let mut plugin = api::device_plugin_client::DevicePluginClient::new(cri_proto::unix::connect(&endpoint).await.unwrap());
    let options = plugin.get_device_plugin_options(api::Empty {}).await.unwrap().into_inner();
    assert!(!options.pre_start_required && options.get_preferred_allocation_available);
    let mut stream = plugin.list_and_watch(api::Empty {}).await.unwrap().into_inner();
    let health = |r: api::ListAndWatchResponse| r.devices.into_iter().map(|d| (d.id, d.health)).collect::<Vec<_>>();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(health(first), vec![("0".into(), "Healthy".into()), ("1".into(), "Healthy".into())]);
    std::fs::remove_file(host.join("dev/nvidia1")).unwrap();
    let update = tokio::time::timeout(Duration::from_secs(10), stream.message()).await.expect("no health update").unwrap().unwrap();
    assert_eq!(health(update), vec![("0".into(), "Healthy".into()), ("1".into(), "Unhealthy".into())]);

    let preferred = plugin
        .get_preferred_allocation(api::PreferredAllocationRequest {
            container_requests: vec![api::ContainerPreferredAllocationRequest {
                available_device_i_ds: vec!["1".into(), "0".into()],
                must_include_device_i_ds: vec![],
                allocation_size: 1,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(preferred.container_responses[0].device_i_ds, vec!["0"]);

    // GPU 0 has a CDI spec, so it is handed out by CDI name.
    let allocate = |ids: &[&str]| api::AllocateRequest {
        container_requests: vec![api::ContainerAllocateRequest { devices_ids: ids.iter().map(|s| s.to_string()).collect() }],
    };
    let response = plugin.allocate(allocate(&["0"])).await.unwrap().into_inner();
    let one = &response.container_responses[0];
    assert_eq!(one.cdi_devices.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), vec!["nvidia.com/gpu=0"]);
    assert_eq!(one.envs.get("NVIDIA_VISIBLE_DEVICES").map(String::as_str), Some("0"));
    // GPU 1 has none: device nodes (below the discovery root) instead, with the control node.
    let response = plugin.allocate(allocate(&["1"])).await.unwrap().into_inner();
    let specs: Vec<(String, String)> =
        response.container_responses[0].devices.iter().map(|d| (d.container_path.clone(), d.host_path.clone())).collect();
    assert_eq!(
        specs,
        vec![
            ("/dev/nvidia1".into(), host.join("dev/nvidia1").display().to_string()),
            ("/dev/nvidiactl".into(), host.join("dev/nvidiactl").display().to_string()),
        ]
    );
    let err = plugin.allocate(allocate(&["7"])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    plugin.pre_start_container(api::PreStartContainerRequest { devices_ids: vec!["0".into()] }).await.unwrap();

    // Kubelet then creates the container with what Allocate said.
    let pod = env.pod("gpu").await;
    let mut c = env.container("cuda", &format!("DEV=nvidia0; {PROBE}"));
    c.cdi_devices = one.cdi_devices.iter().map(|d| v1::CdiDevice { name: d.name.clone() }).collect();
    c.envs = one.envs.iter().map(|(k, v)| v1::KeyValue { key: k.clone(), value: v.clone() }).collect();
    let (major, minor) = null_numbers();
    assert_eq!(env.run_to_exit(&pod, c).await, format!("node=c{major},{minor}\nenv=0/0\nfake-driver 2.0\nwrite=ok\n1"));

    // Kubelet restarts: its socket (and ours) are recreated; capstan registers again.
    kubelet.abort();
    let _ = kubelet.await;
    std::fs::remove_file(plugins.join(api::KUBELET_SOCKET)).unwrap();
    let _ = std::fs::remove_file(&endpoint);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(registrations.try_recv().is_err(), "no registration while kubelet is away");
    let kubelet = serve_kubelet(&plugins, tx);
    let again = next_registration(&mut registrations, &env.daemon).await;
    assert_eq!((again.resource_name.as_str(), again.endpoint.as_str()), ("nvidia.com/gpu", reg.endpoint.as_str()));
    let mut plugin = api::device_plugin_client::DevicePluginClient::new(cri_proto::unix::connect(&endpoint).await.unwrap());
    let mut stream = plugin.list_and_watch(api::Empty {}).await.unwrap().into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().devices.len(), 2);
    kubelet.abort();

    // On SIGTERM the plugin's socket goes with the daemon.
    env.rt.stop_pod_sandbox(v1::StopPodSandboxRequest { pod_sandbox_id: pod.0.clone() }).await.unwrap();
    env.rt.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: pod.0.clone() }).await.unwrap();
    env.cleanup.pods.clear();
    env.daemon.stop();
    assert!(!endpoint.exists(), "plugin socket left behind");
}

#[test]
fn node_labels_prints_configured_and_discovered_labels() {
    if !capstan_integration::is_root() {
        eprintln!("skipped: needs root (mknod)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    fake_gpu_tree(&tmp.path().join("host"));
    let config = tmp.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "root = {:?}\n[node]\nhost_root = {:?}\nlabels = {{ \"disktype\" = \"ssd\", \"node-role.kubernetes.io/gpu\" = \"\" }}\n",
            tmp.path().join("root"),
            tmp.path().join("host")
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(capstan_integration::daemon::capstan_bin())
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    let (stdout, stderr) = run(&["node-labels"]);
    assert_eq!(
        stdout,
        "disktype=ssd,feature.node.kubernetes.io/pci-10de.present=true,nvidia.com/gpu.count=2,\
         nvidia.com/gpu.present=true,nvidia.com/gpu.product=Tesla-T4\n"
    );
    assert!(stderr.contains("--overwrite node-role.kubernetes.io/gpu="), "{stderr}");
    let (yaml, _) = run(&["node-labels", "--format", "yaml"]);
    assert!(yaml.contains("kind: JoinConfiguration") && yaml.contains("name: node-labels"), "{yaml}");

    std::fs::write(&config, "[node]\nlabels = { \"bad key\" = \"x\" }\n").unwrap();
    let out = std::process::Command::new(capstan_integration::daemon::capstan_bin())
        .args(["--config".as_ref(), config.as_os_str(), "node-labels".as_ref()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad key"));
}
