//! ExecSync on the real daemon over gRPC: output, exit codes, the container's environment,
//! timeouts that leave nothing running, the right codes for containers that cannot exec,
//! and a monitor that holds no more descriptors after many execs. Also prints ExecSync's
//! latency (kubelet runs exec probes with it).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use capstan_integration::daemon::{Daemon, DaemonOptions};
use capstan_integration::image::ImageBuilder;
use capstan_integration::registry::Registry;
use cri_proto::v1;
use cri_proto::{ImageServiceClient, RuntimeServiceClient};
use tonic::Code;
use tonic::transport::Channel;

type Rt = RuntimeServiceClient<Channel>;

/// A daemon with the busybox image pulled and one pod; the pod is removed on drop, while the
/// daemon still runs.
struct Env {
    pod: Option<(String, v1::PodSandboxConfig)>,
    rt: Rt,
    daemon: Daemon,
    _registry: Registry,
    busybox: String,
}

impl Env {
    async fn start(name: &str) -> Env {
        let registry = Registry::start().await;
        let busybox = ImageBuilder::busybox().push(&registry, "exec/busybox", &["1"]).await.references[0].clone();
        let daemon = Daemon::start(DaemonOptions::default()).await;
        let mut img: ImageServiceClient<Channel> = daemon.image_client().await;
        let spec = v1::ImageSpec { image: busybox.clone(), ..Default::default() };
        img.pull_image(v1::PullImageRequest { image: Some(spec), auth: None, sandbox_config: None }).await.expect("pull");
        let mut rt = daemon.runtime_client().await;
        let config = v1::PodSandboxConfig {
            metadata: Some(v1::PodSandboxMetadata { name: name.into(), uid: format!("uid-{name}"), namespace: "test".into(), attempt: 0 }),
            hostname: name.into(),
            log_directory: daemon.scratch().join("logs").join(name).display().to_string(),
            // A pid namespace per container: the container's command is its pid 1.
            linux: Some(v1::LinuxPodSandboxConfig {
                security_context: Some(v1::LinuxSandboxSecurityContext {
                    namespace_options: Some(v1::NamespaceOption { pid: v1::NamespaceMode::Container as i32, ..Default::default() }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let request = v1::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
        let id = rt.run_pod_sandbox(request).await.expect("RunPodSandbox").into_inner().pod_sandbox_id;
        Env { pod: Some((id, config)), rt, daemon, _registry: registry, busybox }
    }

    fn pod_id(&self) -> String {
        self.pod.as_ref().map(|p| p.0.clone()).unwrap_or_default()
    }

    /// Creates (and starts, if `start`) a container running `command`.
    async fn container(&mut self, name: &str, command: &[&str], start: bool) -> String {
        self.container_with(name, command, start, false).await
    }

    async fn container_with(&mut self, name: &str, command: &[&str], start: bool, stdin: bool) -> String {
        let (pod_id, pod_config) = self.pod.clone().unwrap();
        let config = v1::ContainerConfig {
            metadata: Some(v1::ContainerMetadata { name: name.into(), attempt: 0 }),
            image: Some(v1::ImageSpec { image: self.busybox.clone(), ..Default::default() }),
            command: command.iter().map(|s| s.to_string()).collect(),
            envs: vec![v1::KeyValue { key: "FOO".into(), value: "from the container config".into() }],
            working_dir: "/tmp".into(),
            log_path: format!("{name}/0.log"),
            stdin,
            ..Default::default()
        };
        let request = v1::CreateContainerRequest { pod_sandbox_id: pod_id, config: Some(config), sandbox_config: Some(pod_config) };
        let id = match self.rt.create_container(request).await {
            Ok(r) => r.into_inner().container_id,
            Err(e) => panic!("CreateContainer: {e}\n{}", self.daemon.log()),
        };
        if start {
            self.rt.start_container(v1::StartContainerRequest { container_id: id.clone() }).await.expect("StartContainer");
        }
        id
    }

    async fn exec(&mut self, id: &str, cmd: &[&str], timeout: i64) -> Result<v1::ExecSyncResponse, tonic::Status> {
        let request = v1::ExecSyncRequest { container_id: id.into(), cmd: cmd.iter().map(|s| s.to_string()).collect(), timeout };
        self.rt.exec_sync(request).await.map(|r| r.into_inner())
    }

    fn monitor_pid(&self) -> i32 {
        let path = self.daemon.state().join("pods").join(self.pod_id()).join("monitor.state");
        let state: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        state["pid"].as_i64().unwrap() as i32
    }

    fn monitor_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.monitor_pid())).unwrap().count()
    }

    async fn remove_pod(&mut self) {
        if let Some((id, _)) = self.pod.take() {
            self.rt.stop_pod_sandbox(v1::StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await.unwrap();
            self.rt.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: id }).await.unwrap();
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // A test that failed half-way: remove the pod from another runtime.
        let Some((pod, _)) = self.pod.take() else { return };
        let socket: PathBuf = self.daemon.socket();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let Ok(channel) = cri_proto::unix::connect(&socket).await else { return };
                let mut client = RuntimeServiceClient::new(channel);
                let _ = client.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: pod }).await;
            });
        })
        .join();
    }
}

/// Host processes whose command line is exactly `args`.
fn processes(args: &[&str]) -> Vec<i32> {
    let wanted = args.join("\0") + "\0";
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        if std::fs::read(entry.path().join("cmdline")).is_ok_and(|c| c == wanted.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_sync_output_exit_codes_environment_and_errors() {
    let mut env = Env::start("execsync").await;
    let id = env.container("app", &["sleep", "3600"], true).await;

    let r = env.exec(&id, &["sh", "-c", "echo out; echo err >&2; echo \"$FOO\"; pwd; exit 3"], 0).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "out\nfrom the container config\n/tmp\n");
    assert_eq!(String::from_utf8_lossy(&r.stderr), "err\n");
    assert_eq!(r.exit_code, 3);
    let r = env.exec(&id, &["true"], 5).await.unwrap();
    assert_eq!((r.exit_code, r.stdout.len(), r.stderr.len()), (0, 0, 0));
    // The exec joins the container: its hostname, its pid namespace (the sleep is pid 1).
    let r = env.exec(&id, &["sh", "-c", "hostname; cat /proc/1/cmdline"], 0).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "execsync\nsleep\u{0}3600\u{0}");
    // Large output arrives whole.
    let r = env.exec(&id, &["sh", "-c", "head -c 3000000 /dev/zero"], 0).await.unwrap();
    assert_eq!(r.stdout.len(), 3_000_000);

    // Bad requests and containers that cannot exec.
    assert_eq!(env.exec(&id, &[], 0).await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(env.exec("no-such-container", &["true"], 0).await.unwrap_err().code(), Code::NotFound);
    let created = env.container("created", &["sleep", "3600"], false).await;
    let err = env.exec(&created, &["true"], 0).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let stopped = env.container("stopped", &["sleep", "3600"], true).await;
    env.rt.stop_container(v1::StopContainerRequest { container_id: stopped.clone(), timeout: 0 }).await.unwrap();
    let err = env.exec(&stopped, &["true"], 0).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // CRI stdin: the container reads a pipe the monitor holds open (for attach), so `cat`
    // waits; without it stdin is /dev/null and `cat` ends at once.
    let reader = env.container_with("reader", &["cat"], true, true).await;
    let no_stdin = env.container_with("nostdin", &["cat"], true, false).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let state = |s: v1::ContainerStatusResponse| s.status.unwrap().state;
    let status = env.rt.container_status(v1::ContainerStatusRequest { container_id: reader.clone(), verbose: false }).await.unwrap();
    assert_eq!(state(status.into_inner()), v1::ContainerState::ContainerRunning as i32);
    let status = env.rt.container_status(v1::ContainerStatusRequest { container_id: no_stdin, verbose: false }).await.unwrap();
    assert_eq!(state(status.into_inner()), v1::ContainerState::ContainerExited as i32);
    let r = env.exec(&reader, &["sh", "-c", "readlink /proc/1/fd/0"], 0).await.unwrap();
    assert!(String::from_utf8_lossy(&r.stdout).starts_with("pipe:"), "{r:?}");

    env.remove_pod().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_sync_timeouts_kill_the_command() {
    let mut env = Env::start("exectimeout").await;
    let id = env.container("app", &["sleep", "3600"], true).await;
    let t = Instant::now();
    let err = env.exec(&id, &["sh", "-c", "sleep 3021; echo never"], 1).await.unwrap_err();
    let took = t.elapsed();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("timed out after 1 s"), "{err:?}");
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(4), "{took:?}");
    // Neither sh nor the sleep it started survive.
    let deadline = Instant::now() + Duration::from_secs(3);
    while !processes(&["sleep", "3021"]).is_empty() {
        assert!(Instant::now() < deadline, "the timed-out command still runs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A command within its timeout is unaffected.
    assert_eq!(env.exec(&id, &["sh", "-c", "sleep 0.2; exit 4"], 2).await.unwrap().exit_code, 4);
    // The pod's monitor runs execs, so a restarted daemon runs them the same.
    env.daemon.restart().await;
    env.rt = env.daemon.runtime_client().await;
    let r = env.exec(&id, &["echo", "after restart"], 5).await.unwrap();
    assert_eq!((r.stdout.as_slice(), r.exit_code), (&b"after restart\n"[..], 0));
    env.remove_pod().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn many_exec_syncs_leave_nothing_behind_and_are_fast() {
    let mut env = Env::start("execmany").await;
    let id = env.container("app", &["sleep", "3600"], true).await;
    env.exec(&id, &["true"], 0).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let fds = env.monitor_fds();
    let mut times = Vec::new();
    for i in 0..50 {
        let t = Instant::now();
        let r = env.exec(&id, &["true"], 10).await.unwrap();
        times.push(t.elapsed());
        assert_eq!(r.exit_code, 0, "exec {i}");
    }
    for _ in 0..10 {
        let r = env.exec(&id, &["sh", "-c", "echo x; echo y >&2; exit 1"], 0).await.unwrap();
        assert_eq!((r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code), (&b"x\n"[..], &b"y\n"[..], 1));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(env.monitor_fds(), fds, "descriptors left in the monitor");
    // Only the container's own process is left in it (the glob is expanded by sh itself).
    let r = env.exec(&id, &["sh", "-c", "cd /proc && echo [0-9]* && echo $$"], 0).await.unwrap();
    let out = String::from_utf8_lossy(&r.stdout).into_owned();
    let (pids, me) = out.trim().split_once('\n').unwrap();
    assert_eq!(pids, format!("1 {me}"), "pid 1 and this sh only");
    times.sort();
    println!(
        "ExecSync of `true`: median {:?}, p90 {:?}, max {:?} over {} calls",
        times[times.len() / 2],
        times[times.len() * 9 / 10],
        times[times.len() - 1],
        times.len()
    );
    env.remove_pod().await;
}
