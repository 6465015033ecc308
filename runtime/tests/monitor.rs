//! The real `capstan-monitor` process driving real containers (libcontainer, namespaces,
//! cgroups) with a busybox rootfs built here from Debian's busybox-static. Needs root and
//! the binaries built (`cargo build --workspace --bins`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use capstan_runtime::monitor::client;
use cri_proto::monitor::{
    ContainerPhase, ContainerRecord, CreateContainer, MonitorConfig, MonitorInfo, PodNamespaces, Request, Response,
};
use oci_spec::runtime::{
    LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, RootBuilder,
    Spec,
};

fn monitor_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("capstan-monitor");
    assert!(bin.exists(), "{} missing: run `cargo build --workspace --bins` first", bin.display());
    bin
}

/// A pod dir, its monitor and the cgroup parent the test owns; torn down on drop.
struct Pod {
    dir: tempfile::TempDir,
    info: MonitorInfo,
    cgroup_parent: PathBuf,
}

impl Pod {
    async fn start(namespaces: PodNamespaces) -> Pod {
        // Short base dir: the pod dir is also where the rootfs and logs go.
        let dir = tempfile::Builder::new().prefix("capstan-mon-").tempdir().unwrap();
        let cgroup_parent = PathBuf::from(format!("/capstan-test-{}-{}", std::process::id(), rand_suffix()));
        let config = MonitorConfig {
            pod_id: "testpod".into(),
            pod_dir: dir.path().to_path_buf(),
            namespaces,
            hostname: "testpod-host".into(),
            sysctls: [("net.ipv4.ip_unprivileged_port_start".to_string(), "80".to_string())].into(),
            infra_cgroup: Some(cgroup_parent.join("infra")),
            log_level: "debug".into(),
        };
        let info = client::spawn(&monitor_binary(), &config).await.expect("monitor starts");
        Pod { dir, info, cgroup_parent }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    async fn call(&self, request: Request) -> capstan_runtime::Result<Response> {
        client::call(self.path(), &request, Duration::from_secs(30)).await
    }

    /// Writes a bundle for `args` and creates the container.
    async fn create(&self, id: &str, args: &[&str], memory_limit: Option<i64>) -> ContainerRecord {
        self.create_with(id, args, memory_limit, false).await
    }

    async fn create_with(&self, id: &str, args: &[&str], memory_limit: Option<i64>, tty: bool) -> ContainerRecord {
        let bundle = self.path().join("bundles").join(id);
        std::fs::create_dir_all(&bundle).unwrap();
        let rootfs = busybox_rootfs(&bundle.join("rootfs"));
        let mut spec = spec(&rootfs, args, &self.info, &self.cgroup_parent.join(id), memory_limit);
        if tty {
            let mut process = spec.process().clone().unwrap();
            process.set_terminal(Some(true));
            spec.set_process(Some(process));
        }
        spec.save(bundle.join("config.json")).unwrap();
        let request = CreateContainer {
            id: id.into(),
            bundle,
            status_path: self.path().join(format!("{id}.status.json")),
            log_path: Some(self.path().join("logs").join(format!("{id}.log"))),
            description: String::new(),
            stdin: false,
            stdin_once: false,
        };
        match self.call(Request::Create(request)).await.expect("create") {
            Response::Container(r) => r,
            other => panic!("unexpected {other:?}"),
        }
    }

    async fn status(&self, id: &str) -> ContainerRecord {
        match self.call(Request::Status { id: id.into() }).await.expect("status") {
            Response::Container(r) => r,
            other => panic!("unexpected {other:?}"),
        }
    }

    async fn wait_exit(&self, id: &str) -> ContainerRecord {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = self.status(id).await;
            if r.phase == ContainerPhase::Exited {
                return r;
            }
            assert!(Instant::now() < deadline, "{id} did not exit: {r:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log(&self, id: &str) -> String {
        std::fs::read_to_string(self.path().join("logs").join(format!("{id}.log"))).unwrap_or_default()
    }

    fn monitor_log(&self) -> String {
        std::fs::read_to_string(self.path().join("monitor.log")).unwrap_or_default()
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        // A test that failed half-way: ask the monitor to tear the pod down, else kill it.
        if capstan_runtime::monitor::is_alive(&self.info) {
            use std::io::{BufRead, Write};
            let sock = std::os::unix::net::UnixStream::connect(self.path().join("monitor.sock"));
            if let Ok(mut s) = sock {
                let _ = s.set_read_timeout(Some(Duration::from_secs(15)));
                let _ = s.write_all(b"{\"op\":\"shutdown\"}\n");
                let _ = std::io::BufReader::new(s).read_line(&mut String::new());
            }
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.info.pid), nix::sys::signal::SIGKILL);
        }
        for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            remove_cgroup_tree(&h.path().join(self.cgroup_parent.strip_prefix("/").unwrap()));
        }
    }
}

/// Kills what is left in a cgroup tree the test created and removes it, deepest first.
fn remove_cgroup_tree(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_cgroup_tree(&entry.path());
        }
    }
    for pid in std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default().lines() {
        if let Ok(pid) = pid.parse() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
    }
    for _ in 0..50 {
        if std::fs::remove_dir(dir).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
}

fn busybox_rootfs(root: &Path) -> PathBuf {
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static installed");
    for applet in ["sh", "echo", "sleep", "hostname", "dd", "cat", "true", "ls", "grep", "nc", "printf"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    root.to_path_buf()
}

fn ns(typ: LinuxNamespaceType, path: Option<&PathBuf>) -> LinuxNamespace {
    let mut b = LinuxNamespaceBuilder::default().typ(typ);
    if let Some(p) = path {
        b = b.path(p.clone());
    }
    b.build().unwrap()
}

fn spec(rootfs: &Path, args: &[&str], info: &MonitorInfo, cgroup: &Path, memory_limit: Option<i64>) -> Spec {
    let mut spec = Spec::default();
    spec.set_root(Some(RootBuilder::default().path(rootfs).readonly(false).build().unwrap()));
    spec.set_hostname(None);
    let mut process = spec.process().clone().unwrap();
    process.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    spec.set_process(Some(process));
    let mut linux = spec.linux().clone().unwrap();
    let paths = &info.namespace_paths;
    linux.set_namespaces(Some(vec![
        ns(LinuxNamespaceType::Pid, None),
        ns(LinuxNamespaceType::Mount, None),
        ns(LinuxNamespaceType::Network, paths.get("network")),
        ns(LinuxNamespaceType::Ipc, paths.get("ipc")),
        ns(LinuxNamespaceType::Uts, paths.get("uts")),
    ]));
    linux.set_cgroups_path(Some(cgroup.to_path_buf()));
    if let Some(limit) = memory_limit {
        let memory = LinuxMemoryBuilder::default().limit(limit).swap(limit).build().unwrap();
        linux.set_resources(Some(LinuxResourcesBuilder::default().memory(memory).build().unwrap()));
    }
    spec.set_linux(Some(linux));
    spec
}

fn all_ns() -> PodNamespaces {
    PodNamespaces { network: true, ipc: true, uts: true, pid: false }
}

#[tokio::test(flavor = "multi_thread")]
async fn monitor_runs_containers_logs_and_records_exits() {
    let pod = Pod::start(all_ns()).await;
    for kind in ["network", "ipc", "uts"] {
        assert!(pod.info.namespace_paths.contains_key(kind), "{:?}", pod.info.namespace_paths);
    }
    assert!(pod.info.infra_pid.is_some());

    // Output, hostname from the pod's UTS namespace, exit status.
    let args = ["sh", "-c", "echo hello; echo oops >&2; hostname; printf tail; exit 3"];
    let created = pod.create("c1", &args, None).await;
    assert_eq!(created.phase, ContainerPhase::Created);
    assert!(created.pid.is_some());
    let started = match pod.call(Request::Start { id: "c1".into() }).await.unwrap() {
        Response::Container(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(started.phase, ContainerPhase::Running);
    let exited = pod.wait_exit("c1").await;
    assert_eq!((exited.exit_code, exited.reason.as_str()), (3, "Error"), "{}", pod.monitor_log());
    assert!(exited.finished_at >= exited.started_at && exited.started_at >= exited.created_at);
    let log = pod.log("c1");
    let lines: Vec<&str> = log.lines().collect();
    let body: Vec<String> = lines.iter().map(|l| l.split_once(' ').unwrap().1.to_string()).collect();
    assert!(body.contains(&"stdout F hello".to_string()), "{log}");
    assert!(body.contains(&"stderr F oops".to_string()), "{log}");
    assert!(body.contains(&"stdout F testpod-host".to_string()), "{log}");
    assert!(body.contains(&"stdout P tail".to_string()), "{log}");
    for line in &lines {
        let ts = line.split(' ').next().unwrap();
        assert!(chrono_like(ts), "bad timestamp in {line:?}");
    }
    // The record on disk says the same.
    let on_disk: ContainerRecord =
        serde_json::from_slice(&std::fs::read(pod.path().join("c1.status.json")).unwrap()).unwrap();
    assert_eq!(on_disk, exited);

    // Start twice is refused; remove works and is idempotent.
    assert!(pod.call(Request::Start { id: "c1".into() }).await.is_err());
    assert_eq!(pod.call(Request::Remove { id: "c1".into() }).await.unwrap(), Response::Ok);
    assert_eq!(pod.call(Request::Remove { id: "c1".into() }).await.unwrap(), Response::Ok);
    assert!(!pod.path().join("youki/c1").exists());

    shutdown(&pod).await;
}

fn chrono_like(ts: &str) -> bool {
    ts.len() == 30 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T' && ts.as_bytes()[19] == b'.'
}

async fn shutdown(pod: &Pod) {
    assert_eq!(pod.call(Request::Shutdown).await.unwrap(), Response::Ok);
    let deadline = Instant::now() + Duration::from_secs(10);
    while capstan_runtime::monitor::is_alive(&pod.info) {
        assert!(Instant::now() < deadline, "monitor did not exit");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(pod.path().to_str().unwrap()), "mounts left: {mounts}");
    if let Some(infra) = pod.info.infra_pid {
        assert!(!Path::new(&format!("/proc/{infra}")).exists() || proc_is_zombie(infra), "infra process left");
    }
}

fn proc_is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| s.contains(") Z ")).unwrap_or(true)
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_escalates_to_sigkill_and_containers_share_the_pod_network() {
    let pod = Pod::start(all_ns()).await;
    // A server on localhost in one container, reached from another container of the pod.
    pod.create("srv", &["sh", "-c", "echo pong | nc -l -p 8080; sleep 1000"], None).await;
    let _ = pod.call(Request::Start { id: "srv".into() }).await.unwrap();
    pod.create("cli", &["sh", "-c", "sleep 0.3; nc 127.0.0.1 8080 </dev/null"], None).await;
    let _ = pod.call(Request::Start { id: "cli".into() }).await.unwrap();
    let cli = pod.wait_exit("cli").await;
    assert_eq!(cli.exit_code, 0, "{}\n{}", pod.log("cli"), pod.monitor_log());
    assert!(pod.log("cli").contains("stdout F pong"), "{}", pod.log("cli"));

    // sh as pid 1 ignores SIGTERM: the stop timeout must end in SIGKILL (137).
    let t = Instant::now();
    let r = pod.call(Request::Stop { id: "srv".into(), signal: 15, timeout_ms: 300 }).await.unwrap();
    assert_eq!(r, Response::Ok);
    assert!(t.elapsed() >= Duration::from_millis(300), "{:?}", t.elapsed());
    let srv = pod.status("srv").await;
    assert_eq!((srv.phase, srv.exit_code), (ContainerPhase::Exited, 137), "{srv:?}");
    // Stop of an exited container is immediate.
    let r = pod.call(Request::Stop { id: "srv".into(), signal: 15, timeout_ms: 10_000 }).await.unwrap();
    assert_eq!(r, Response::Ok);
    shutdown(&pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_hog_is_oom_killed() {
    let pod = Pod::start(all_ns()).await;
    pod.create("hog", &["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"], Some(16 << 20)).await;
    let _ = pod.call(Request::Start { id: "hog".into() }).await.unwrap();
    let r = pod.wait_exit("hog").await;
    assert_eq!(r.reason, "OOMKilled", "{r:?}\n{}", pod.monitor_log());
    assert_eq!(r.exit_code, 137);
    shutdown(&pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_kills_running_containers_and_releases_everything() {
    let pod = Pod::start(PodNamespaces { pid: true, ..all_ns() }).await;
    pod.create("s", &["sleep", "1000"], None).await;
    let _ = pod.call(Request::Start { id: "s".into() }).await.unwrap();
    let pid = pod.status("s").await.pid.unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    shutdown(&pod).await;
    assert!(!Path::new(&format!("/proc/{pid}")).exists() || proc_is_zombie(pid));
    assert!(!pod.path().join("youki").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_terminal_container_logs_its_output_as_stdout() {
    let pod = Pod::start(all_ns()).await;
    pod.create_with("t", &["sh", "-c", "tty; echo to-stderr >&2; exit 0"], None, true).await;
    let _ = pod.call(Request::Start { id: "t".into() }).await.unwrap();
    let r = pod.wait_exit("t").await;
    assert_eq!((r.exit_code, r.reason.as_str()), (0, "Completed"), "{}", pod.monitor_log());
    // The output may still be in flight from the terminal after the exit.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pod.log("t").contains("to-stderr") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = pod.log("t");
    assert!(log.contains("stdout F /dev/pts/0") || log.contains("stdout F /dev/console"), "{log}");
    assert!(log.contains("stdout F to-stderr"), "terminal output is one stream: {log}");
    assert!(!log.contains(" stderr "), "{log}");
    shutdown(&pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_join_the_pod_pid_namespace_when_shared() {
    let pod = Pod::start(PodNamespaces { pid: true, ..all_ns() }).await;
    let pidns = pod.info.namespace_paths.get("pid").cloned().expect("pinned pid namespace");
    let bundle_args = ["sh", "-c", "ps -o pid,comm 2>/dev/null || ls /proc"];
    // Build the spec by hand: pid namespace joined by path.
    let bundle = pod.path().join("bundles").join("p");
    std::fs::create_dir_all(&bundle).unwrap();
    let rootfs = busybox_rootfs(&bundle.join("rootfs"));
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/ps")).unwrap();
    let mut spec = spec(&rootfs, &bundle_args, &pod.info, &pod.cgroup_parent.join("p"), None);
    let mut linux = spec.linux().clone().unwrap();
    let mut namespaces = linux.namespaces().clone().unwrap();
    namespaces.retain(|n| n.typ() != LinuxNamespaceType::Pid);
    namespaces.push(ns(LinuxNamespaceType::Pid, Some(&pidns)));
    linux.set_namespaces(Some(namespaces));
    spec.set_linux(Some(linux));
    spec.save(bundle.join("config.json")).unwrap();
    let request = CreateContainer {
        id: "p".into(),
        bundle,
        status_path: pod.path().join("p.status.json"),
        log_path: Some(pod.path().join("logs/p.log")),
        description: String::new(),
        stdin: false,
        stdin_once: false,
    };
    pod.call(Request::Create(request)).await.unwrap();
    let _ = pod.call(Request::Start { id: "p".into() }).await.unwrap();
    let r = pod.wait_exit("p").await;
    assert_eq!(r.exit_code, 0, "{}", pod.log("p"));
    // The infra process is pid 1 of the shared namespace, and the container sees it.
    let log = pod.log("p");
    assert!(log.lines().any(|l| l.contains(" 1 capstan-pause") || l.ends_with("    1 capstan-pau")), "{log}");
    shutdown(&pod).await;
}
