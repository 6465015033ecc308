//! A volume set up by capstan-volumes, used by a real container through the daemon: the
//! pod's memory emptyDir (tmpfs, sizeLimit 1 MiB) handed over as a CRI mount, the way
//! Capstan's agent mode will do it. The container's file shows up on the host side and
//! the tmpfs limit holds inside the container.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use capstan_integration::daemon::{Daemon, DaemonOptions};
use capstan_integration::image::ImageBuilder;
use capstan_integration::registry::Registry;
use capstan_volumes::{EmptyDir, PodVolumes, Volume, VolumeSource};
use cri_proto::RuntimeServiceClient;
use cri_proto::v1;
use tonic::transport::Channel;

/// A daemon that has pulled a busybox image, with one pod; the pod is removed on drop.
struct PodEnv {
    rt: RuntimeServiceClient<Channel>,
    pod: String,
    config: v1::PodSandboxConfig,
    image: String,
    daemon: Daemon,
    _registry: Registry,
}

impl PodEnv {
    async fn start(name: &str) -> PodEnv {
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
        PodEnv { rt, pod, config, image, daemon, _registry: registry }
    }

    /// Runs `script` in a container with `mounts` until it exits; returns its exit code
    /// and stdout+stderr.
    async fn run(&mut self, name: &str, script: &str, mounts: Vec<v1::Mount>) -> (i32, String) {
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

    async fn remove(&mut self) {
        let pod = std::mem::take(&mut self.pod);
        if pod.is_empty() {
            return;
        }
        self.rt.stop_pod_sandbox(v1::StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.expect("StopPodSandbox");
        self.rt.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
    }
}

impl Drop for PodEnv {
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

/// Tears the pod's volumes down on drop (forced), even after a failed assertion.
struct Volumes(PodVolumes);

impl Drop for Volumes {
    fn drop(&mut self) {
        let _ = self.0.teardown_all(true);
    }
}

fn mountinfo_at(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines().filter(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap())).map(String::from).collect()
}

fn cri_mount(host: &Path, container: &str) -> v1::Mount {
    v1::Mount { host_path: host.display().to_string(), container_path: container.into(), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_containers_memory_empty_dir_is_the_hosts_tmpfs_with_its_size_limit() {
    if !capstan_integration::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let pods_dir = tempfile::Builder::new().prefix("capstan-vols-").tempdir().unwrap();
    let mut env = PodEnv::start("emptydir").await;
    let volumes = Volumes(PodVolumes::new(pods_dir.path(), "uid-emptydir").unwrap());
    let v = Volume::new("scratch", VolumeSource::EmptyDir(EmptyDir::memory(Some(1 << 20))));
    let path: PathBuf = volumes.0.setup(&v).unwrap();
    assert!(mountinfo_at(&path).iter().any(|l| l.contains("size=1024k")), "{:?}", mountinfo_at(&path));

    let script = "echo hello from the pod >/data/hello && \
                  dd if=/dev/zero of=/data/big bs=1024 count=2048; echo dd-exit=$?; \
                  grep ' /data ' /proc/mounts";
    let (code, log) = env.run("writer", script, vec![cri_mount(&path, "/data")]).await;
    assert_eq!(code, 0, "{log}");
    // Inside: 2 MiB does not fit the 1 MiB tmpfs; the container sees a tmpfs at /data.
    assert!(log.contains("No space left on device") && log.contains("dd-exit=1"), "{log}");
    assert!(log.contains("tmpfs /data tmpfs") && log.contains("size=1024k"), "{log}");
    // Outside: the same files, the big one cut at the limit.
    assert_eq!(std::fs::read_to_string(path.join("hello")).unwrap(), "hello from the pod\n");
    let big = std::fs::metadata(path.join("big")).unwrap().len();
    assert!(big < 1 << 20, "big file is {big} bytes");

    env.remove().await;
    volumes.0.teardown(&v, false).unwrap();
    assert!(mountinfo_at(&path).is_empty(), "tmpfs still mounted");
    assert!(!path.exists());
    volumes.0.teardown_all(false).unwrap();
}
