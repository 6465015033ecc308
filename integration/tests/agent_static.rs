//! Agent mode's static pods against the real daemon (`[agent] enabled = true`, a manifest
//! directory of the test's own, a 1 s sync): pods made from manifest files, with kubelet's
//! names, labels and annotations; resources in the cgroup; two containers sharing a memory
//! emptyDir; a hostPath DirectoryOrCreate; restartPolicy OnFailure (a clean exit is not
//! restarted) and Always (restarted after back-off, counted); a sandbox stopped from outside
//! is made again; a daemon restart adopts the pods; an edited file replaces the pod, a
//! removed one removes it and every mount it had; a broken file is logged by name and
//! skipped; a static pod naming a persistentVolumeClaim is refused, naming the volume and
//! the claim, and never gets a sandbox. No CNI here: the server's readiness httpGet probe reaches its 127.0.0.1 port
//! through the pod's network namespace.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use capstan_integration::agent::{self, Unmount, mounts_below};
use capstan_integration::daemon::{Daemon, DaemonOptions};
use capstan_integration::image::ImageBuilder;
use capstan_integration::pods::{Cleanup, Rt, mountinfo_at};
use capstan_integration::registry::Registry;
use cri_proto::v1;

const NODE: &str = "testnode";

fn web_manifest(image: &str, host_dir: &Path, extra_label: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
    generation: "{extra_label}"
spec:
  restartPolicy: OnFailure
  # httpd as PID 1 ignores SIGTERM: keep replacing and removing the pod quick.
  terminationGracePeriodSeconds: 2
  containers:
  - name: server
    image: {image}
    command: ["sh", "-c"]
    args: ["echo hello-from-server > /shared/server.txt; exec httpd -f -p 127.0.0.1:8080 -h /shared"]
    readinessProbe:
      httpGet: {{path: /server.txt, port: 8080}}
      periodSeconds: 1
    env:
    - name: GREETING
      value: hi
    resources:
      requests: {{cpu: 100m, memory: 16Mi}}
      limits: {{cpu: 500m, memory: 64Mi}}
    volumeMounts:
    - {{name: shared, mountPath: /shared}}
  - name: once
    image: {image}
    command: ["sh", "-c", "until [ -f /shared/server.txt ]; do sleep 0.1; done; cat /shared/server.txt > /shared/seen-by-once.txt; echo $GREETING > /host/once-was-here"]
    env:
    - name: GREETING
      value: from-once
    volumeMounts:
    - {{name: shared, mountPath: /shared}}
    - {{name: host, mountPath: /host}}
  volumes:
  - name: shared
    emptyDir: {{medium: Memory, sizeLimit: 16Mi}}
  - name: host
    hostPath: {{path: {host}, type: DirectoryOrCreate}}
"#,
        host = host_dir.display()
    )
}

struct Test {
    cleanup: Cleanup,
    rt: Rt,
    _unmount: Unmount,
    daemon: Daemon,
    _registry: Registry,
    manifests: tempfile::TempDir,
    scratch: tempfile::TempDir,
    image: String,
}

impl Test {
    async fn sandboxes(&mut self, pod_name: &str) -> Vec<v1::PodSandbox> {
        agent::sandboxes(&mut self.rt, &mut self.cleanup, pod_name).await
    }

    async fn containers(&mut self, sandbox: &str) -> Vec<v1::Container> {
        let filter = v1::ContainerFilter { pod_sandbox_id: sandbox.into(), ..Default::default() };
        self.rt.list_containers(v1::ListContainersRequest { filter: Some(filter) }).await.unwrap().into_inner().containers
    }

    /// Waits for the one ready sandbox of `pod_name` (other than `not`).
    async fn wait_sandbox(&mut self, pod_name: &str, not: Option<&str>) -> v1::PodSandbox {
        agent::wait_sandbox(&mut self.rt, &mut self.cleanup, &self.daemon, pod_name, not).await
    }

    /// Waits until `check` holds for the sandbox's containers, by name.
    async fn wait_containers(&mut self, sandbox: &str, what: &str, check: impl Fn(&HashMap<String, v1::Container>) -> bool) -> HashMap<String, v1::Container> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let by_name: HashMap<String, v1::Container> =
                self.containers(sandbox).await.into_iter().map(|c| (c.metadata.clone().unwrap().name, c)).collect();
            if check(&by_name) {
                return by_name;
            }
            assert!(Instant::now() < deadline, "{what}: {by_name:#?}\nlog:\n{}", self.daemon.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn exec(&mut self, container: &str, cmd: &[&str]) -> (i32, String) {
        let request = v1::ExecSyncRequest { container_id: container.into(), cmd: cmd.iter().map(|s| s.to_string()).collect(), timeout: 10 };
        let r = self.rt.exec_sync(request).await.unwrap().into_inner();
        (r.exit_code, String::from_utf8_lossy(&r.stdout).into_owned() + &String::from_utf8_lossy(&r.stderr))
    }
}

fn running(c: Option<&v1::Container>) -> bool {
    c.is_some_and(|c| c.state == v1::ContainerState::ContainerRunning as i32)
}
fn exited(c: Option<&v1::Container>) -> bool {
    c.is_some_and(|c| c.state == v1::ContainerState::ContainerExited as i32)
}

#[tokio::test(flavor = "multi_thread")]
async fn static_pods_follow_their_manifest_files() {
    if !capstan_integration::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let registry = Registry::start().await;
    let image = ImageBuilder::busybox().push(&registry, "agent/busybox", &["1"]).await.references[0].clone();
    let manifests = tempfile::Builder::new().prefix("capstan-manifests-").tempdir().unwrap();
    let scratch = tempfile::Builder::new().prefix("capstan-agent-host-").tempdir().unwrap();
    // A broken file beside the good ones: logged by name, skipped.
    std::fs::write(manifests.path().join("broken.yaml"), "apiVersion: v1\nkind: Pod\nspec: [not a spec\n").unwrap();
    // Static pods may not use API objects: a claim is refused by name.
    let claimer = manifests.path().join("claimer.yaml");
    let claimer_pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: claimer}}\nspec:\n  containers: [{{name: c, image: {image:?}, volumeMounts: [{{name: data, mountPath: /data}}]}}]\n  \
         volumes: [{{name: data, persistentVolumeClaim: {{claimName: fast}}}}]\n"
    );
    std::fs::write(&claimer, claimer_pod).unwrap();
    let options = DaemonOptions {
        config_toml: format!(
            "[agent]\nenabled = true\nmanifest_dir = {:?}\nnode_name = {NODE:?}\nsync_period_seconds = 1\n",
            manifests.path()
        ),
        ..Default::default()
    };
    let daemon = Daemon::start(options).await;
    let rt = daemon.runtime_client().await;
    let mut t = Test {
        cleanup: Cleanup::new(&daemon),
        rt,
        _unmount: Unmount(daemon.root().join("agent")),
        daemon,
        _registry: registry,
        manifests,
        scratch,
        image,
    };
    let host_dir = t.scratch.path().join("made/by/agent");
    let web_file = t.manifests.path().join("web.yaml");
    std::fs::write(&web_file, web_manifest(&t.image, &host_dir, "1")).unwrap();
    // The second pod as JSON: restartPolicy Always restarts even a clean exit.
    let crash = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "crash", "namespace": "edge"},
        "spec": {"restartPolicy": "Always", "containers": [
            {"name": "crash", "image": t.image, "command": ["sh", "-c", "echo started; exit 0"]}
        ]}
    });
    let crash_file = t.manifests.path().join("crash.json");
    std::fs::write(&crash_file, crash.to_string()).unwrap();

    // The web pod: kubelet's mirror name, labels and annotations.
    let web = t.wait_sandbox("web-testnode", None).await;
    let meta = web.metadata.clone().unwrap();
    assert_eq!((meta.name.as_str(), meta.namespace.as_str()), ("web-testnode", "default"));
    assert_eq!(web.labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(web.labels.get("io.kubernetes.pod.uid"), Some(&meta.uid));
    assert_eq!(web.annotations.get("kubernetes.io/config.source").map(String::as_str), Some("file"));
    assert_eq!(web.annotations.get("kubernetes.io/config.hash"), Some(&meta.uid));

    // `once` exits 0 and is not restarted (OnFailure); `server` keeps running.
    let cs = t.wait_containers(&web.id, "server running, once exited", |c| running(c.get("server")) && exited(c.get("once"))).await;
    let once_id = cs["once"].id.clone();
    let server_id = cs["server"].id.clone();
    assert_eq!(cs["server"].labels.get("io.kubernetes.container.name").map(String::as_str), Some("server"));
    assert_eq!(cs["server"].labels.get("io.kubernetes.pod.name").map(String::as_str), Some("web-testnode"));
    let status = t.rt.container_status(v1::ContainerStatusRequest { container_id: once_id.clone(), verbose: false }).await.unwrap();
    assert_eq!(status.into_inner().status.unwrap().exit_code, 0);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let cs = t.containers(&web.id).await;
    let once: Vec<_> = cs.iter().filter(|c| c.metadata.as_ref().unwrap().name == "once").collect();
    assert_eq!(once.len(), 1, "OnFailure restarted a clean exit: {cs:#?}");
    assert_eq!((once[0].id.as_str(), once[0].metadata.as_ref().unwrap().attempt), (once_id.as_str(), 0));

    // resources → kubelet's conversion, in the container's cgroup (under the Burstable QoS
    // parent, kubelet's layout): requests.cpu 100m → shares 102, limits.cpu 500m → quota
    // 50000/100000, limits.memory 64Mi.
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let cgroup = |controller: &str, file: &str| {
        let rel = format!("kubepods/burstable/pod{}/{server_id}/{file}", meta.uid);
        let path = if v2 { Path::new("/sys/fs/cgroup").join(rel) } else { Path::new("/sys/fs/cgroup").join(controller).join(rel) };
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().to_string()
    };
    if v2 {
        assert_eq!(cgroup("memory", "memory.max"), (64u64 << 20).to_string());
        assert_eq!(cgroup("cpu", "cpu.max"), "50000 100000");
    } else {
        assert_eq!(cgroup("memory", "memory.limit_in_bytes"), (64u64 << 20).to_string());
        assert_eq!(cgroup("cpu", "cpu.shares"), "102");
        assert_eq!(cgroup("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(cgroup("cpu", "cpu.cfs_period_us"), "100000");
    }

    // The emptyDir is one tmpfs of 16 MiB shared by both containers.
    let (code, out) = t.exec(&server_id, &["cat", "/shared/seen-by-once.txt"]).await;
    assert_eq!((code, out.as_str()), (0, "hello-from-server\n"));
    let (code, out) = t.exec(&server_id, &["wget", "-qO-", "http://127.0.0.1:8080/seen-by-once.txt"]).await;
    assert_eq!((code, out.as_str()), (0, "hello-from-server\n"), "httpd serves the other container's file");
    let (_, env) = t.exec(&server_id, &["sh", "-c", "echo $GREETING"]).await;
    assert_eq!(env, "hi\n");
    let pods_dir = t.daemon.root().join("agent/pods");
    let volume = std::fs::canonicalize(&pods_dir).unwrap().join(&meta.uid).join("volumes/kubernetes.io~empty-dir/shared");
    let line = mountinfo_at(&volume).into_iter().next().unwrap_or_else(|| panic!("{} is not a mount", volume.display()));
    assert!(line.contains(" - tmpfs ") && line.contains("size=16384k"), "{line}");
    assert_eq!(std::fs::read_to_string(volume.join("server.txt")).unwrap(), "hello-from-server\n");
    // hostPath DirectoryOrCreate made the directory; the container wrote through it.
    assert_eq!(std::fs::read_to_string(host_dir.join("once-was-here")).unwrap(), "from-once\n");

    // The status file reports the phase and container states.
    let status: serde_json::Value = serde_json::from_slice(&std::fs::read(pods_dir.join(&meta.uid).join("status.json")).unwrap()).unwrap();
    assert_eq!(status["phase"], "Running", "{status:#}");
    assert_eq!(status["qosClass"], "Burstable", "{status:#}");
    // Ready through the readiness probe (the pod has no IP: it went through its netns).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s: serde_json::Value = serde_json::from_slice(&std::fs::read(pods_dir.join(&meta.uid).join("status.json")).unwrap()).unwrap();
        let server = s["containerStatuses"].as_array().unwrap().iter().find(|c| c["name"] == "server").cloned().unwrap();
        if server["ready"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "server never ready: {s:#}\nlog:\n{}", t.daemon.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Always: a clean exit is restarted after back-off and counted.
    let crash_sb = t.wait_sandbox("crash-testnode", None).await;
    assert_eq!(crash_sb.metadata.as_ref().unwrap().namespace, "edge");
    let cs = t
        .wait_containers(&crash_sb.id, "crash restarted", |c| c.get("crash").is_some_and(|c| c.metadata.as_ref().unwrap().attempt >= 1))
        .await;
    assert_eq!(cs["crash"].annotations.get("io.kubernetes.container.restartCount").map(String::as_str), Some("1"));
    let crash_status = t.daemon.root().join("agent/pods").join(&crash_sb.metadata.as_ref().unwrap().uid).join("status.json");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&crash_status).unwrap()).unwrap();
        if s["containerStatuses"][0]["restartCount"].as_i64().unwrap_or(0) >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "restart count never reported: {s:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A sandbox stopped behind the agent's back (crictl stopp) is made again.
    t.rt.stop_pod_sandbox(v1::StopPodSandboxRequest { pod_sandbox_id: crash_sb.id.clone() }).await.unwrap();
    let crash_again = t.wait_sandbox("crash-testnode", Some(&crash_sb.id)).await;
    assert_ne!(crash_again.id, crash_sb.id);
    assert!(t.daemon.log().contains("static pod sandbox is gone or not ready"));

    // A daemon restart adopts the running static pods instead of restarting them: same
    // sandbox, same server container, and the finished `once` is still not rerun.
    t.daemon.restart().await;
    t.rt = t.daemon.runtime_client().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(t.wait_sandbox("web-testnode", None).await.id, web.id, "web pod replaced by a restart");
    let cs = t.containers(&web.id).await;
    assert_eq!(cs.len(), 2, "{cs:#?}");
    let server = cs.iter().find(|c| c.id == server_id).expect("server container kept");
    assert_eq!(server.state, v1::ContainerState::ContainerRunning as i32);
    assert!(cs.iter().any(|c| c.id == once_id), "{cs:#?}");
    assert!(t.daemon.log().contains("adopted a static pod from a previous run"));

    // Editing the file replaces the pod: a new sandbox (new uid), the old one and its
    // tmpfs gone.
    std::fs::write(&web_file, web_manifest(&t.image, &host_dir, "2")).unwrap();
    let web2 = t.wait_sandbox("web-testnode", Some(&web.id)).await;
    assert_ne!(web2.metadata.as_ref().unwrap().uid, meta.uid);
    assert_eq!(web2.labels.get("generation").map(String::as_str), Some("2"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while t.sandboxes("web-testnode").await.iter().any(|s| s.id == web.id) {
        assert!(Instant::now() < deadline, "old sandbox still listed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(mountinfo_at(&volume).is_empty(), "old emptyDir still mounted");
    assert!(!pods_dir.join(&meta.uid).exists(), "old pod directory left");
    t.wait_containers(&web2.id, "new pod's server running", |c| running(c.get("server"))).await;

    assert!(t.sandboxes("claimer-testnode").await.is_empty(), "a static pod with a claim got a sandbox");
    let refused = "volume \"data\": persistentVolumeClaim \"fast\": static pods may not reference API objects";
    assert!(t.daemon.log().contains(refused), "claim not refused by name; log:\n{}", t.daemon.log());

    // Removing the files removes everything: sandboxes, containers, mounts, directories.
    std::fs::remove_file(&claimer).unwrap();
    std::fs::remove_file(&web_file).unwrap();
    std::fs::remove_file(&crash_file).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = t.sandboxes("web-testnode").await.len() + t.sandboxes("crash-testnode").await.len();
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} static pods still listed; log:\n{}", t.daemon.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all = t.rt.list_containers(v1::ListContainersRequest { filter: None }).await.unwrap().into_inner().containers;
    assert!(all.is_empty(), "containers left: {all:#?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !mounts_below(&t.daemon.root().join("agent")).is_empty() || std::fs::read_dir(&pods_dir).unwrap().next().is_some() {
        assert!(Instant::now() < deadline, "left behind: mounts {:?}, dirs in {}", mounts_below(&t.daemon.root().join("agent")), pods_dir.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The hostPath directory is the node's: it stays.
    assert!(host_dir.is_dir());

    let log = t.daemon.log();
    assert!(log.contains("invalid static pod manifest") && log.contains("broken.yaml"), "broken manifest not reported:\n{log}");
    // Once per content and daemon run (the log spans both runs), not once per 1 s scan.
    assert_eq!(log.matches("invalid static pod manifest").count(), 2, "a broken file is reported once per content");
    // The Node the agent would register (not sent anywhere in this slice).
    let node_line = log.lines().find(|l| l.contains("this node's Node object")).expect("Node object logged");
    assert!(node_line.contains("capstan://") && node_line.contains(r#""kubernetes.io/hostname":"testnode""#), "{node_line}");
}
