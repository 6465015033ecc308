//! Agent mode's pod workers against the real daemon (`[agent] enabled`, static manifests,
//! a 1 s sync, node label `disktype=ssd` from `[node] labels`) with a CNI bridge of the
//! test's own, so pods have IPs the daemon's host reaches:
//! - a Deployment-style web pod: a sidecar and two init containers in order, each
//!   appending to a shared emptyDir (the app sees the three lines, then writes its own;
//!   the sidecar keeps running beside it); busybox httpd serving a
//!   memory emptyDir; a hostPath; env from fieldRef and resourceFieldRef; a downwardAPI
//!   volume; a readiness httpGet to the pod IP (Ready, then not once the file goes); a
//!   tcpSocket readiness probe on a port that opens 4 s late; the Burstable QoS parent in
//!   the cgroup path; a nodeSelector that matches;
//! - a liveness exec probe that starts failing after 3 s: the container is stopped with the
//!   pod's grace period and restarted (restart count, lastState);
//! - an init container failing under restartPolicy Never: the pod fails, no app container;
//! - a nodeSelector the node does not match: refused, never run, the label named;
//! - removal with terminationGracePeriodSeconds: SIGTERM first (a trap writes a file), a
//!   container ignoring it is killed once the grace period is over;
//! - afterwards no sandbox, container, mount, pod directory or pod cgroup is left.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use capstan_integration::agent::{self, Unmount, mounts_below};
use capstan_integration::daemon::{Daemon, DaemonOptions};
use capstan_integration::image::ImageBuilder;
use capstan_integration::pods::{BridgeNet, Cleanup, Rt};
use capstan_integration::registry::Registry;
use cri_proto::v1;
use serde_json::Value;

const NODE: &str = "workernode";

/// Where a cgroup (relative to the hierarchy root) lives: the memory controller's
/// directory on v1, the unified root on v2.
fn cgroup_dir(rel: &str) -> PathBuf {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        Path::new("/sys/fs/cgroup").join(rel)
    } else {
        Path::new("/sys/fs/cgroup/memory").join(rel)
    }
}

fn web_manifest(image: &str, host: &Path) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  labels: {{app: web, tier: front}}
spec:
  restartPolicy: Always
  terminationGracePeriodSeconds: 3
  nodeSelector: {{disktype: ssd}}
  serviceAccountName: web-sa
  initContainers:
  - name: sidecar
    image: {image}
    restartPolicy: Always
    command: ["sh", "-c", "echo sidecar >> /work/order; while true; do sleep 1; done"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  - name: init-a
    image: {image}
    command: ["sh", "-c", "echo a >> /work/order; sleep 1"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  - name: init-b
    image: {image}
    command: ["sh", "-c", "grep -qx a /work/order && echo b >> /work/order"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  containers:
  - name: server
    image: {image}
    command: ["sh", "-c"]
    args: ["echo app >> /work/order; echo ok > /www/ready.txt; echo $POD_NAME > /host/hello; exec httpd -f -p 8080 -h /www"]
    env:
    - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    - {{name: POD_NAMESPACE, valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}}}
    - {{name: POD_UID, valueFrom: {{fieldRef: {{fieldPath: metadata.uid}}}}}}
    - {{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
    - {{name: NODE_NAME, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}
    - {{name: SA, valueFrom: {{fieldRef: {{fieldPath: spec.serviceAccountName}}}}}}
    - {{name: APP, valueFrom: {{fieldRef: {{fieldPath: "metadata.labels['app']"}}}}}}
    - {{name: MEM_LIMIT_MI, valueFrom: {{resourceFieldRef: {{resource: limits.memory, divisor: 1Mi}}}}}}
    - {{name: CPU_REQUEST_M, valueFrom: {{resourceFieldRef: {{resource: requests.cpu, divisor: 1m}}}}}}
    - {{name: URL, value: "http://$(POD_IP):8080/"}}
    resources:
      requests: {{cpu: 100m, memory: 16Mi}}
      limits: {{cpu: 500m, memory: 64Mi}}
    readinessProbe:
      httpGet: {{path: /ready.txt, port: 8080}}
      periodSeconds: 1
      failureThreshold: 1
    volumeMounts:
    - {{name: www, mountPath: /www}}
    - {{name: work, mountPath: /work}}
    - {{name: host, mountPath: /host}}
    - {{name: podinfo, mountPath: /etc/podinfo}}
  - name: late
    image: {image}
    command: ["sh", "-c", "sleep 4; httpd -p 9090 -h /www; while true; do sleep 1; done"]
    readinessProbe:
      tcpSocket: {{port: 9090}}
      periodSeconds: 1
    volumeMounts: [{{name: www, mountPath: /www}}]
  - name: stopper
    image: {image}
    command: ["sh", "-c", "trap 'echo term > /host/term-seen; exit 0' TERM; while true; do sleep 0.2; done"]
    volumeMounts: [{{name: host, mountPath: /host}}]
  volumes:
  - {{name: work, emptyDir: {{}}}}
  - {{name: www, emptyDir: {{medium: Memory, sizeLimit: 8Mi}}}}
  - {{name: host, hostPath: {{path: {host}, type: DirectoryOrCreate}}}}
  - name: podinfo
    downwardAPI:
      items:
      - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}
      - {{path: name, fieldRef: {{fieldPath: metadata.name}}}}
      - {{path: mem, mode: 256, resourceFieldRef: {{containerName: server, resource: limits.memory, divisor: 1Mi}}}}
"#,
        host = host.display()
    )
}

fn liveness_manifest(image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: liveness}}
spec:
  restartPolicy: Always
  terminationGracePeriodSeconds: 2
  containers:
  - name: flaky
    image: {image}
    command: ["sh", "-c", "touch /tmp/healthy; sleep 3; rm /tmp/healthy; while true; do sleep 1; done"]
    livenessProbe:
      exec: {{command: ["cat", "/tmp/healthy"]}}
      periodSeconds: 1
      failureThreshold: 2
    resources:
      limits: {{cpu: 100m, memory: 32Mi}}
"#
    )
}

fn init_fails_manifest(image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: init-fails}}
spec:
  restartPolicy: Never
  initContainers:
  - {{name: bad, image: {image}, command: ["sh", "-c", "echo failing; exit 3"]}}
  containers:
  - {{name: never, image: {image}, command: ["sleep", "600"]}}
"#
    )
}

fn picky_manifest(image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: picky}}
spec:
  nodeSelector: {{disktype: hdd}}
  containers:
  - {{name: c, image: {image}, command: ["sleep", "600"]}}
"#
    )
}

struct Test {
    cleanup: Cleanup,
    rt: Rt,
    _unmount: Unmount,
    net: BridgeNet,
    daemon: Daemon,
    _registry: Registry,
    manifests: tempfile::TempDir,
}

/// After a failed assertion: the manifests go first so the agent stops (re)making pods,
/// it gets a few seconds to remove them itself, and whatever sandbox is still listed is
/// handed to [`Cleanup`].
impl Drop for Test {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for entry in std::fs::read_dir(self.manifests.path()).into_iter().flatten().flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        let socket = self.daemon.socket();
        let left = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let mut client = cri_proto::RuntimeServiceClient::new(cri_proto::unix::connect(&socket).await.ok()?);
                let mut ids = Vec::new();
                for _ in 0..50 {
                    ids = client.list_pod_sandbox(v1::ListPodSandboxRequest { filter: None }).await.ok()?.into_inner().items;
                    if ids.is_empty() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Some(ids.into_iter().map(|s| s.id).collect::<Vec<_>>())
            })
        })
        .join()
        .ok()
        .flatten()
        .unwrap_or_default();
        for id in left {
            if !self.cleanup.pods.contains(&id) {
                self.cleanup.pods.push(id);
            }
        }
    }
}

impl Test {
    fn pods_dir(&self) -> PathBuf {
        self.daemon.root().join("agent/pods")
    }

    async fn sandboxes(&mut self, pod_name: &str) -> Vec<v1::PodSandbox> {
        agent::sandboxes(&mut self.rt, &mut self.cleanup, pod_name).await
    }

    async fn wait_sandbox(&mut self, pod_name: &str) -> v1::PodSandbox {
        agent::wait_sandbox(&mut self.rt, &mut self.cleanup, &self.daemon, pod_name, None).await
    }

    async fn containers(&mut self, sandbox: &str) -> HashMap<String, v1::Container> {
        let filter = v1::ContainerFilter { pod_sandbox_id: sandbox.into(), ..Default::default() };
        let list = self.rt.list_containers(v1::ListContainersRequest { filter: Some(filter) }).await.unwrap().into_inner().containers;
        list.into_iter().map(|c| (c.metadata.clone().unwrap().name, c)).collect()
    }

    async fn exec(&mut self, container: &str, cmd: &[&str]) -> (i32, String) {
        let request = v1::ExecSyncRequest { container_id: container.into(), cmd: cmd.iter().map(|s| s.to_string()).collect(), timeout: 10 };
        let r = self.rt.exec_sync(request).await.unwrap().into_inner();
        (r.exit_code, String::from_utf8_lossy(&r.stdout).into_owned() + &String::from_utf8_lossy(&r.stderr))
    }

    fn status(&self, uid: &str) -> Value {
        let path = self.pods_dir().join(uid).join("status.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap(),
            Err(_) => Value::Null,
        }
    }

    /// Polls the pod's status file until `check` holds.
    async fn wait_status(&self, uid: &str, what: &str, secs: u64, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.status(uid);
            if check(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "{what}: {s:#}\nlog:\n{}", self.daemon.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn container<'a>(status: &'a Value, list: &str, name: &str) -> &'a Value {
    status[list].as_array().and_then(|a| a.iter().find(|c| c["name"] == name)).unwrap_or(&Value::Null)
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"].as_array().and_then(|a| a.iter().find(|c| c["type"] == type_)).unwrap_or(&Value::Null)
}

/// The log without its colours.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut rest = log;
    while let Some(i) = rest.find('\x1b') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        rest = rest.find('m').map_or("", |end| &rest[end + 1..]);
    }
    out.push_str(rest);
    out
}

/// Seconds since midnight of an RFC 3339 time (`...T12:34:56Z`), for differences.
fn clock(t: &Value) -> i64 {
    let s = t.as_str().unwrap_or_else(|| panic!("not a time: {t}"));
    let hms = &s[s.find('T').unwrap() + 1..s.find('T').unwrap() + 9];
    let p: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    p[0] * 3600 + p[1] * 60 + p[2]
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_workers_run_init_containers_probes_and_grace_periods() {
    if !capstan_integration::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let registry = Registry::start().await;
    let image = ImageBuilder::busybox().push(&registry, "workers/busybox", &["1"]).await.references[0].clone();
    let manifests = tempfile::Builder::new().prefix("capstan-manifests-").tempdir().unwrap();
    let manifest_dir = manifests.path().to_path_buf();
    let scratch = tempfile::Builder::new().prefix("capstan-workers-host-").tempdir().unwrap();
    let options = DaemonOptions {
        config_toml: format!(
            "[agent]\nenabled = true\nmanifest_dir = {:?}\nnode_name = {NODE:?}\nsync_period_seconds = 1\n\n[node]\nlabels = {{ \"disktype\" = \"ssd\" }}\n",
            manifests.path()
        ),
        ..Default::default()
    };
    let daemon = Daemon::start(options).await;
    let net = BridgeNet::new(&daemon);
    let rt = daemon.runtime_client().await;
    let mut t =
        Test { cleanup: Cleanup::new(&daemon), rt, _unmount: Unmount(daemon.root().join("agent")), net, daemon, _registry: registry, manifests };
    let kubepods_before = cgroup_dir("kubepods").exists();
    let subnet = t.net.subnet_prefix.clone();
    let host = scratch.path().join("host");
    let file = |name: &str| manifest_dir.join(name);
    std::fs::write(file("web.yaml"), web_manifest(&image, &host)).unwrap();
    std::fs::write(file("liveness.yaml"), liveness_manifest(&image)).unwrap();
    std::fs::write(file("init-fails.yaml"), init_fails_manifest(&image)).unwrap();
    std::fs::write(file("picky.yaml"), picky_manifest(&image)).unwrap();

    // --- The web pod: init containers, then the app; readiness; tcp probe timing.
    let web = t.wait_sandbox("web-workernode").await;
    let uid = web.metadata.clone().unwrap().uid;
    let mut late_running: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(90);
    let (status, late_ready_after) = loop {
        let s = t.status(&uid);
        let late = container(&s, "containerStatuses", "late");
        if late_running.is_none() && !late["state"]["running"].is_null() {
            late_running = Some(Instant::now());
        }
        if let Some(since) = late_running
            && late["ready"] == true
            && container(&s, "containerStatuses", "server")["ready"] == true
        {
            break (s, since.elapsed());
        }
        assert!(Instant::now() < deadline, "web never ready: {s:#}\nlog:\n{}", t.daemon.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("web: late (tcpSocket on a port opened after 4 s) ready {late_ready_after:?} after it was seen running");
    assert!(late_ready_after >= Duration::from_millis(2500), "tcp probe passed before the port opened: {late_ready_after:?}");
    assert_eq!(status["phase"], "Running", "{status:#}");
    assert_eq!(status["qosClass"], "Burstable");
    assert_eq!(condition(&status, "Initialized")["status"], "True");
    assert_eq!(condition(&status, "Ready")["status"], "True", "{status:#}");
    assert_eq!(condition(&status, "ContainersReady")["status"], "True");
    let pod_ip = status["podIP"].as_str().unwrap().to_string();
    assert!(pod_ip.starts_with(&subnet), "pod IP {pod_ip} not on the test's bridge {subnet}0/24");
    for name in ["init-a", "init-b"] {
        let init = container(&status, "initContainerStatuses", name);
        assert_eq!(init["state"]["terminated"]["exitCode"], 0, "{status:#}");
        assert_eq!(init["state"]["terminated"]["reason"], "Completed");
        assert_eq!(init["ready"], true);
    }
    let sidecar = container(&status, "initContainerStatuses", "sidecar");
    assert!(sidecar["state"]["running"].is_object() && sidecar["ready"] == true && sidecar["started"] == true, "{status:#}");
    // init-b finished before the app container started.
    let init_b_done = clock(&container(&status, "initContainerStatuses", "init-b")["state"]["terminated"]["finishedAt"]);
    let server_started = clock(&container(&status, "containerStatuses", "server")["state"]["running"]["startedAt"]);
    assert!(server_started >= init_b_done, "server started at {server_started}, init-b finished at {init_b_done}");

    let cs = t.containers(&web.id).await;
    let server_id = cs["server"].id.clone();
    let (code, order) = t.exec(&server_id, &["cat", "/work/order"]).await;
    assert_eq!((code, order.as_str()), (0, "sidecar\na\nb\napp\n"), "init containers ran in order, before the app");
    // Env from the downward API, resolved with the pod's IP and the node's name.
    let (_, env) = t.exec(&server_id, &["sh", "-c", "echo $POD_NAME $POD_NAMESPACE $POD_UID $POD_IP $NODE_NAME $SA $APP $MEM_LIMIT_MI $CPU_REQUEST_M $URL"]).await;
    assert_eq!(env.trim(), format!("web-{NODE} shop {uid} {pod_ip} {NODE} web-sa web 64 100 http://{pod_ip}:8080/"));
    // The downwardAPI volume: files, modes, read-only.
    let (_, labels) = t.exec(&server_id, &["cat", "/etc/podinfo/labels"]).await;
    assert_eq!(labels, "app=\"web\"\ntier=\"front\"");
    let (_, name) = t.exec(&server_id, &["cat", "/etc/podinfo/name", "/etc/podinfo/mem"]).await;
    assert_eq!(name, format!("web-{NODE}64"));
    let (_, mode) = t.exec(&server_id, &["stat", "-L", "-c", "%a", "/etc/podinfo/mem", "/etc/podinfo/name"]).await;
    assert_eq!(mode, "400\n644\n");
    let (code, _) = t.exec(&server_id, &["touch", "/etc/podinfo/x"]).await;
    assert_ne!(code, 0, "the downwardAPI volume must be read-only");
    // hostPath, and httpd serving the memory emptyDir on the pod IP from the host.
    assert_eq!(std::fs::read_to_string(host.join("hello")).unwrap(), format!("web-{NODE}\n"));
    let mut conn = tokio::net::TcpStream::connect((pod_ip.as_str(), 8080)).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(b"GET /ready.txt HTTP/1.0\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.") && answer.contains(" 200 ") && answer.ends_with("ok\n"), "{answer}");
    // The Burstable QoS parent: /kubepods/burstable/pod<uid>/<container>, with its limit.
    let server_cgroup = cgroup_dir(&format!("kubepods/burstable/pod{uid}/{server_id}"));
    assert!(server_cgroup.is_dir(), "{} missing", server_cgroup.display());
    let limit = std::fs::read_to_string(server_cgroup.join("memory.max")).or_else(|_| std::fs::read_to_string(server_cgroup.join("memory.limit_in_bytes")));
    assert_eq!(limit.unwrap().trim(), (64u64 << 20).to_string());

    // Readiness follows the httpGet probe: the file goes, the pod is not Ready any more.
    let (code, _) = t.exec(&server_id, &["rm", "/www/ready.txt"]).await;
    assert_eq!(code, 0);
    let removed = Instant::now();
    let s = t.wait_status(&uid, "server unready", 20, |s| container(s, "containerStatuses", "server")["ready"] == false).await;
    println!("web: readiness went False {:?} after the file was removed", removed.elapsed());
    assert_eq!(condition(&s, "Ready")["status"], "False");
    assert_eq!(condition(&s, "Ready")["message"], "containers with unready status: [server]");
    assert_eq!(container(&s, "containerStatuses", "server")["restartCount"], 0, "readiness never restarts");
    let (code, _) = t.exec(&server_id, &["sh", "-c", "echo ok > /www/ready.txt"]).await;
    assert_eq!(code, 0);
    t.wait_status(&uid, "server ready again", 20, |s| condition(s, "Ready")["status"] == "True").await;

    // --- Liveness: killed with the 2 s grace period (it ignores SIGTERM: exit 137), restarted.
    let live = t.wait_sandbox("liveness-workernode").await;
    let live_uid = live.metadata.clone().unwrap().uid;
    let s = t
        .wait_status(&live_uid, "flaky restarted after its liveness probe failed", 90, |s| {
            let c = container(s, "containerStatuses", "flaky");
            c["restartCount"].as_i64().unwrap_or(0) >= 1 && !c["lastState"]["terminated"].is_null()
        })
        .await;
    let flaky = container(&s, "containerStatuses", "flaky");
    let last = &flaky["lastState"]["terminated"];
    assert_eq!(last["exitCode"], 137, "{s:#}");
    assert!(last["message"].as_str().unwrap().contains("failed liveness probe"), "{s:#}");
    let lived = clock(&last["finishedAt"]) - clock(&last["startedAt"]);
    println!("liveness: first instance lived {lived} s (healthy 3 s, 2 failures at 1 s, 2 s grace); restartCount {}", flaky["restartCount"]);
    assert!((5..=15).contains(&lived), "killed after {lived} s");
    assert_eq!(s["qosClass"], "Guaranteed");
    let cs = t.containers(&live.id).await;
    assert_eq!(cs["flaky"].metadata.as_ref().unwrap().attempt, flaky["restartCount"].as_u64().unwrap() as u32);
    assert!(cgroup_dir(&format!("kubepods/pod{live_uid}/{}", cs["flaky"].id)).is_dir(), "Guaranteed pods go right under /kubepods");
    assert!(t.daemon.log().contains("killing container"));

    // --- A failing init container under restartPolicy Never fails the pod; nothing else runs.
    let bad = t.wait_sandbox("init-fails-workernode").await;
    let bad_uid = bad.metadata.clone().unwrap().uid;
    let s = t.wait_status(&bad_uid, "init-fails Failed", 60, |s| s["phase"] == "Failed").await;
    let init = container(&s, "initContainerStatuses", "bad");
    assert_eq!(init["state"]["terminated"]["exitCode"], 3, "{s:#}");
    assert_eq!(init["restartCount"], 0);
    assert_eq!(container(&s, "containerStatuses", "never")["state"]["waiting"]["reason"], "PodInitializing");
    assert_eq!(condition(&s, "Initialized")["status"], "False");
    assert_eq!(s["qosClass"], "BestEffort");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cs = t.containers(&bad.id).await;
    assert_eq!(cs.keys().collect::<Vec<_>>(), ["bad"], "only the init container ever ran");
    assert_eq!(cs["bad"].metadata.as_ref().unwrap().attempt, 0);

    // --- nodeSelector disktype=hdd on a disktype=ssd node: refused, never run.
    let refused: Vec<Value> = std::fs::read_dir(t.pods_dir())
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("status.json")).ok())
        .map(|b| serde_json::from_slice::<Value>(&b).unwrap())
        .filter(|s| s["reason"] == "NodeAffinity")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(refused[0]["phase"], "Failed");
    let message = refused[0]["message"].as_str().unwrap();
    assert!(message.contains("nodeSelector disktype=hdd, but the node has disktype=ssd"), "{message}");
    assert!(t.sandboxes("picky-workernode").await.is_empty(), "a refused pod got a sandbox");

    // --- Removal honours the grace period: SIGTERM first (the trap writes its file), the
    // container ignoring it goes once the 3 s are over.
    let removing = Instant::now();
    std::fs::remove_file(file("web.yaml")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !t.sandboxes("web-workernode").await.is_empty() {
        assert!(Instant::now() < deadline, "web still listed; log:\n{}", t.daemon.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = removing.elapsed();
    println!("web: removed {took:?} after its file went (grace period 3 s)");
    assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(15), "removal took {took:?}");
    assert_eq!(std::fs::read_to_string(host.join("term-seen")).unwrap(), "term\n", "SIGTERM came first");
    let log = plain(&t.daemon.log());
    assert!(log.lines().any(|l| l.contains("stopping pod") && l.contains("grace_secs=3")), "{log}");

    // --- Everything else goes too, and nothing is left behind.
    for name in ["liveness.yaml", "init-fails.yaml", "picky.yaml"] {
        std::fs::remove_file(file(name)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = t.sandboxes("liveness-workernode").await.len() + t.sandboxes("init-fails-workernode").await.len();
        let dirs = std::fs::read_dir(t.pods_dir()).unwrap().count();
        if left == 0 && dirs == 0 && mounts_below(&t.daemon.root().join("agent")).is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{left} pods, {dirs} pod dirs left; log:\n{}", t.daemon.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all = t.rt.list_containers(v1::ListContainersRequest { filter: None }).await.unwrap().into_inner().containers;
    assert!(all.is_empty(), "containers left: {all:#?}");
    for rel in [format!("kubepods/burstable/pod{uid}"), format!("kubepods/pod{live_uid}"), format!("kubepods/besteffort/pod{bad_uid}")] {
        assert!(!cgroup_dir(&rel).exists(), "{rel} left behind");
    }
    if !kubepods_before {
        assert!(!cgroup_dir("kubepods").exists(), "the QoS cgroups were not removed once empty");
    }
}
