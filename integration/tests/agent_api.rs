//! Agent mode against an API server: the real daemon (`[agent] enabled`, a kubeconfig, a
//! 1 s sync and lease renewal) registers its Node, renews its Lease and runs the pods bound
//! to it, in the real runtime with a CNI bridge of the test's own.
//!
//! kube-apiserver cannot be installed here, so the API server is the harness's stand-in
//! ([`capstan_integration::apiserver`]): a hyper server on 127.0.0.1 in this process that
//! speaks the real REST and watch wire format (Status errors, resourceVersions, chunked
//! watch lines, 409/410 semantics) and records every request. The assertions are on those
//! requests' exact payloads, parsed back into k8s-openapi types, and on what the runtime
//! really runs (CRI ListPodSandbox/ExecSync, mounts on the host).
//!
//! Covered: Node created with labels (kubernetes.io/hostname|os|arch and the configured
//! disktype=ssd), capacity and nodeInfo, then Ready=True posted to nodes/status once the
//! network is ready; the Lease created and renewed (holder, 40 s, owned by the Node's uid,
//! renewTime increasing); pods from a list+watch with spec.nodeName running with kubelet's
//! labels and the API uid; env from a ConfigMap key (optional missing key left out) and
//! envFrom a Secret; configMap items (kubelet's `..data` layout) and a secret volume (tmpfs,
//! defaultMode 0400); status patches (strategic merge, uid precondition) with phase, podIP,
//! conditions (Ready only once the pod workers' readiness probe passes), restart counts and
//! lastState, sent only on change; a Never pod reaching Succeeded; a 410 Gone watch making
//! the agent list again; deletion through deletionTimestamp (pod stopped within its
//! deletionGracePeriodSeconds, its mounts gone, then DELETE with gracePeriodSeconds=0) and
//! through a DELETED event; persistentVolumeClaims bound to `local` PersistentVolumes (a
//! temp dir of the test, written from inside the pod), and a claim whose volume has another
//! node's affinity: no sandbox, nothing mounted, a Pending status patch whose waiting
//! message names the claim and the affinity, a FailedMount event, then the pod started once
//! the volume's affinity is fixed; and a
//! daemon restart finding its Node already there (409): labels reconciled by a patch, the
//! running pods adopted rather than restarted.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use capstan_integration::apiserver::{ApiServer, Recorded, summary, wait_for};
use capstan_integration::agent::{self, Unmount, mounts_below};
use capstan_integration::daemon::{Daemon, DaemonOptions};
use capstan_integration::image::ImageBuilder;
use capstan_integration::pods::{BridgeNet, Cleanup, Rt, mountinfo_at};
use capstan_integration::registry::Registry;
use cri_proto::v1;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1 as k8s;
use serde_json::{Value, json};

const NODE: &str = "apinode";
const NS: &str = "team";
const NODES: &str = "/api/v1/nodes";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
const STRATEGIC: &str = "application/strategic-merge-patch+json";
const PVS: &str = "/api/v1/persistentvolumes";

fn pods_path(name: &str) -> String {
    format!("/api/v1/namespaces/{NS}/pods/{name}")
}

fn mount_line(path: &Path) -> Option<String> {
    mountinfo_at(path).into_iter().next()
}

struct Test {
    // Drop order: pods go while the daemon and the bridge still exist.
    cleanup: Cleanup,
    rt: Rt,
    _unmount: Unmount,
    net: BridgeNet,
    daemon: Daemon,
    api: ApiServer,
    _registry: Registry,
    _dirs: tempfile::TempDir,
    image: String,
}

impl Drop for Test {
    /// After a failed assertion: the API pods are deleted first, so the agent removes them
    /// itself instead of making again what [`Cleanup`] removes behind its back.
    fn drop(&mut self) {
        let left: Vec<(String, String)> = self.api_pods();
        for (ns, name) in &left {
            self.api.remove_pod(ns, name);
        }
        if !left.is_empty() {
            std::thread::sleep(Duration::from_secs(4));
        }
    }
}

impl Test {
    fn api_pods(&self) -> Vec<(String, String)> {
        ["web", "crash", "job", "late", "disk", "faraway"]
            .iter()
            .filter(|n| self.api.get(&pods_path(n)).is_some())
            .map(|n| (NS.to_string(), n.to_string()))
            .collect()
    }

    async fn sandboxes(&mut self, pod_name: &str) -> Vec<v1::PodSandbox> {
        agent::sandboxes(&mut self.rt, &mut self.cleanup, pod_name).await
    }

    async fn wait_sandbox(&mut self, pod_name: &str) -> v1::PodSandbox {
        agent::wait_sandbox(&mut self.rt, &mut self.cleanup, &self.daemon, pod_name, None).await
    }

    async fn wait_no_sandbox(&mut self, pod_name: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.sandboxes(pod_name).await.is_empty() {
            assert!(Instant::now() < deadline, "{pod_name} still has a sandbox; log:\n{}", self.daemon.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn running_container(&mut self, sandbox: &str, name: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let filter = v1::ContainerFilter { pod_sandbox_id: sandbox.into(), ..Default::default() };
            let cs = self.rt.list_containers(v1::ListContainersRequest { filter: Some(filter) }).await.unwrap().into_inner().containers;
            if let Some(c) = cs.iter().find(|c| c.metadata.as_ref().unwrap().name == name && c.state == v1::ContainerState::ContainerRunning as i32) {
                return c.id.clone();
            }
            assert!(Instant::now() < deadline, "{name} not running in {sandbox}: {cs:#?}\nlog:\n{}", self.daemon.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn exec(&mut self, container: &str, script: &str) -> String {
        let request = v1::ExecSyncRequest { container_id: container.into(), cmd: vec!["sh".into(), "-c".into(), script.into()], timeout: 10 };
        let r = self.rt.exec_sync(request).await.unwrap().into_inner();
        assert_eq!(r.exit_code, 0, "{script}: {}", String::from_utf8_lossy(&r.stderr));
        String::from_utf8_lossy(&r.stdout).into_owned()
    }

    fn pod(&self, name: &str, restart: &str, script: &str) -> Value {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": {"app": name}},
            // `sleep` as PID 1 ignores SIGTERM: a short grace period keeps removals quick.
            "spec": {"nodeName": NODE, "restartPolicy": restart, "terminationGracePeriodSeconds": 2, "containers": [
                {"name": "main", "image": self.image, "command": ["sh", "-c", script]}
            ]},
            "status": {"phase": "Pending"}
        });
        // What the test hands the server must be a valid v1 Pod.
        serde_json::to_value(serde_json::from_value::<k8s::Pod>(pod).unwrap()).unwrap()
    }

    fn uid(&self, path: &str) -> String {
        self.api.get(path).unwrap_or_else(|| panic!("no {path}"))["metadata"]["uid"].as_str().unwrap().to_string()
    }
}

/// A claim bound to a `local` PersistentVolume at `path` whose required node affinity names
/// `host`, as the local static provisioner and the PV controller leave them.
fn local_claim(api: &ApiServer, claim: &str, pv: &str, path: &Path, host: &str) {
    let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local-storage", "volumeName": pv, "resources": {"requests": {"storage": "1Gi"}}},
        "status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}}});
    let volume = json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Retain",
                 "storageClassName": "local-storage", "local": {"path": path}, "claimRef": {"kind": "PersistentVolumeClaim", "namespace": NS, "name": claim},
                 "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [host]}]}]}}},
        "status": {"phase": "Bound"}});
    // Valid v1 objects, as the real server would hold them.
    let pvc = serde_json::to_value(serde_json::from_value::<k8s::PersistentVolumeClaim>(pvc).unwrap()).unwrap();
    let volume = serde_json::to_value(serde_json::from_value::<k8s::PersistentVolume>(volume).unwrap()).unwrap();
    api.create(&format!("/api/v1/namespaces/{NS}/persistentvolumeclaims"), pvc);
    api.create(PVS, volume);
}

/// A pod whose container `main` mounts claim `claim` at /data.
fn with_claim(mut pod: Value, claim: &str) -> Value {
    pod["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
    pod["spec"]["volumes"] = json!([{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]);
    pod
}

fn status_patches<'a>(requests: &'a [Recorded], pod: &str) -> Vec<&'a Recorded> {
    let path = format!("{}/status", pods_path(pod));
    requests.iter().filter(|r| r.is("PATCH", &path) && r.status == 200).collect()
}

/// The pod status of a status patch, typed.
fn patched_status(r: &Recorded) -> k8s::PodStatus {
    serde_json::from_value(r.body["status"].clone()).unwrap_or_else(|e| panic!("not a PodStatus ({e}): {:#}", r.body))
}

fn condition(conditions: &Option<Vec<k8s::PodCondition>>, kind: &str) -> Option<String> {
    conditions.iter().flatten().find(|c| c.type_ == kind).map(|c| c.status.clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_registers_renews_and_runs_api_pods() {
    if !capstan_integration::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let registry = Registry::start().await;
    let image = ImageBuilder::busybox().push(&registry, "agent-api/busybox", &["1"]).await.references[0].clone();
    let api = ApiServer::start().await;
    let dirs = tempfile::Builder::new().prefix("capstan-agent-api-").tempdir().unwrap();
    let manifests = dirs.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let kubeconfig = dirs.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig("system:node:apinode")).unwrap();
    // The ConfigMap and Secret the web pod reads, as `kubectl create` would make them.
    let cm = k8s::ConfigMap {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta { name: Some("app-config".into()), ..Default::default() },
        data: Some(BTreeMap::from([("greeting".into(), "hello-from-configmap".into()), ("app.properties".into(), "mode=api\n".into())])),
        ..Default::default()
    };
    api.create(&format!("/api/v1/namespaces/{NS}/configmaps"), serde_json::to_value(&cm).unwrap());
    let secret = k8s::Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta { name: Some("app-secret".into()), ..Default::default() },
        data: Some(BTreeMap::from([("password".into(), k8s_openapi::ByteString(b"s3cret".to_vec()))])),
        ..Default::default()
    };
    api.create(&format!("/api/v1/namespaces/{NS}/secrets"), serde_json::to_value(&secret).unwrap());
    // Local PersistentVolumes: one on this node, one (so far) on another.
    let (here, far) = (dirs.path().join("disk-here"), dirs.path().join("disk-far"));
    std::fs::create_dir(&here).unwrap();
    std::fs::create_dir(&far).unwrap();
    local_claim(&api, "data", "local-here", &here, NODE);
    local_claim(&api, "far", "local-far", &far, "othernode");

    let options = DaemonOptions {
        config_toml: format!(
            "[agent]\nenabled = true\nmanifest_dir = {manifests:?}\nnode_name = {NODE:?}\nsync_period_seconds = 1\nkubeconfig = {kubeconfig:?}\n\
             lease_renew_seconds = 1\nlease_duration_seconds = 40\n\n[node.labels]\ndisktype = \"ssd\"\n"
        ),
        ..Default::default()
    };
    let started = Instant::now();
    let daemon = Daemon::start(options).await;
    let net = BridgeNet::new(&daemon);
    let rt = daemon.runtime_client().await;
    let mut t = Test {
        cleanup: Cleanup::new(&daemon),
        rt,
        _unmount: Unmount(daemon.root().join("agent")),
        net,
        daemon,
        api,
        _registry: registry,
        _dirs: dirs,
        image,
    };

    // The Node: created once, with kubelet's labels, our configured one, capacity and info.
    let create = wait_for(&t.api, "POST nodes", Duration::from_secs(30), |r| r.iter().find(|r| r.is("POST", NODES)).cloned()).await;
    let registered_after = create.at - started;
    assert_eq!(create.status, 201);
    let node: k8s::Node = serde_json::from_value(create.body.clone()).unwrap();
    assert_eq!(node.metadata.name.as_deref(), Some(NODE));
    let labels = node.metadata.labels.clone().unwrap();
    assert_eq!(labels.get("kubernetes.io/hostname").map(String::as_str), Some(NODE));
    assert_eq!(labels.get("kubernetes.io/os").map(String::as_str), Some("linux"));
    assert!(labels.get("kubernetes.io/arch").is_some_and(|a| !a.is_empty()), "{labels:?}");
    assert_eq!(labels.get("disktype").map(String::as_str), Some("ssd"));
    let status = node.status.clone().unwrap();
    let capacity = status.capacity.clone().unwrap();
    let cpus: u64 = capacity["cpu"].0.parse().unwrap();
    assert_eq!(cpus, std::thread::available_parallelism().unwrap().get() as u64);
    assert!(capacity["memory"].0.ends_with("Ki"), "{capacity:?}");
    assert_eq!(capacity["pods"].0, "110");
    let stamped = status.conditions.iter().flatten().all(|c| c.last_heartbeat_time.is_some() && c.last_transition_time.is_some());
    assert!(stamped, "conditions without times: {:?}", status.conditions);
    let info = status.node_info.clone().unwrap();
    assert!(info.container_runtime_version.starts_with("capstan://"), "{info:?}");
    assert_eq!((info.operating_system.as_str(), info.kernel_version.is_empty()), ("linux", false));
    let node_uid = t.uid(&format!("{NODES}/{NODE}"));

    // Ready=True reaches nodes/status once the bridge network is ready (a change: posted
    // without waiting for the 5 min report period).
    let ready_post = wait_for(&t.api, "Ready=True in nodes/status", Duration::from_secs(30), |r| {
        r.iter()
            .find(|r| {
                r.is("PATCH", &format!("{NODES}/{NODE}/status"))
                    && serde_json::from_value::<k8s::NodeStatus>(r.body["status"].clone())
                        .ok()
                        .and_then(|s| s.conditions)
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .cloned()
    })
    .await;
    assert_eq!(ready_post.content_type, STRATEGIC);
    let stored = t.api.get(&format!("{NODES}/{NODE}")).unwrap();
    let ready = stored["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap().clone();
    assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("True"), Some("KubeletReady")), "{ready:#}");
    assert!(ready["lastHeartbeatTime"].is_string() && ready["lastTransitionTime"].is_string(), "{ready:#}");

    // The Lease: created, then renewed every second with a later renewTime each time.
    let writes = wait_for(&t.api, "lease created and renewed twice", Duration::from_secs(30), |r| {
        let w: Vec<Recorded> = r
            .iter()
            .filter(|r| (r.is("POST", LEASES) || r.is("PUT", &format!("{LEASES}/{NODE}"))) && r.status < 300)
            .cloned()
            .collect();
        (w.len() >= 3).then_some(w)
    })
    .await;
    assert_eq!(writes[0].method, "POST", "{}", summary(&t.api.requests()));
    let mut renew_times = Vec::new();
    for w in &writes {
        let lease: Lease = serde_json::from_value(w.body.clone()).unwrap();
        let spec = lease.spec.clone().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some(NODE));
        assert_eq!(spec.lease_duration_seconds, Some(40));
        let owners = lease.metadata.owner_references.clone().unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!((owners[0].kind.as_str(), owners[0].name.as_str(), owners[0].uid.as_str()), ("Node", NODE, node_uid.as_str()));
        assert_eq!(owners[0].api_version, "v1");
        renew_times.push(spec.renew_time.unwrap().0);
    }
    assert!(renew_times.windows(2).all(|w| w[0] < w[1]), "renewTime must increase: {renew_times:?}");
    // Microseconds on the wire (MicroTime).
    let raw = writes[1].body["spec"]["renewTime"].as_str().unwrap();
    assert_eq!(raw.len(), "2025-01-01T00:00:00.000000Z".len(), "{raw}");

    // Pods bound to the node.
    let mut web = t.pod("web", "Always", "echo \"$GREETING\" > /out/greeting; exec sleep 3600");
    web["spec"]["containers"][0]["env"] = json!([
        {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "greeting"}}},
        {"name": "MAYBE", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "absent", "optional": true}}},
        {"name": "LITERAL", "value": "plain"}
    ]);
    web["spec"]["containers"][0]["envFrom"] = json!([{"secretRef": {"name": "app-secret"}, "prefix": "SECRET_"}]);
    // The pod workers serve API pods too: ready only once its readiness probe passes.
    web["spec"]["containers"][0]["readinessProbe"] = json!({"exec": {"command": ["cat", "/out/ready"]}, "periodSeconds": 1});
    web["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "config", "mountPath": "/etc/app"}, {"name": "creds", "mountPath": "/etc/creds"}, {"name": "out", "mountPath": "/out"}]);
    web["spec"]["volumes"] = json!([
        {"name": "config", "configMap": {"name": "app-config", "items": [{"key": "app.properties", "path": "conf/app.properties"}]}},
        {"name": "creds", "secret": {"secretName": "app-secret", "defaultMode": 0o400}},
        {"name": "out", "emptyDir": {}}
    ]);
    let pods = format!("/api/v1/namespaces/{NS}/pods");
    let crash = t.pod("crash", "Always", "echo crashing; exit 3");
    let job = t.pod("job", "Never", "echo done; exit 0");
    let elsewhere = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "elsewhere", "namespace": NS},
                           "spec": {"nodeName": "othernode", "containers": [{"name": "c", "image": t.image}]}});
    let disk = with_claim(t.pod("disk", "Always", "echo written-in-pod > /data/hello; exec sleep 3600"), "data");
    let faraway = with_claim(t.pod("faraway", "Always", "echo far > /data/hello; exec sleep 3600"), "far");
    let pods_created = Instant::now();
    for pod in [crash, web, job, elsewhere, disk, faraway] {
        t.api.create(&pods, pod);
    }
    let web_uid = t.uid(&pods_path("web"));

    // The web pod runs in the real runtime with kubelet's labels and the API uid.
    let web_sb = t.wait_sandbox("web").await;
    let sandbox_after = pods_created.elapsed();
    let meta = web_sb.metadata.clone().unwrap();
    assert_eq!((meta.name.as_str(), meta.namespace.as_str(), meta.uid.as_str()), ("web", NS, web_uid.as_str()));
    assert_eq!(web_sb.labels.get("io.kubernetes.pod.uid"), Some(&web_uid));
    assert_eq!(web_sb.labels.get("io.kubernetes.pod.namespace").map(String::as_str), Some(NS));
    assert_eq!(web_sb.labels.get("capstan.io/agent").map(String::as_str), Some("api"));
    assert_eq!(web_sb.labels.get("app").map(String::as_str), Some("web"));
    assert!(t.sandboxes("elsewhere").await.is_empty(), "a pod of another node was run");
    let main = t.running_container(&web_sb.id, "main").await;

    // ConfigMap and Secret data inside the container.
    let env = t.exec(&main, "echo \"$GREETING/$SECRET_password/${MAYBE-unset}/$LITERAL\"").await;
    assert_eq!(env, "hello-from-configmap/s3cret/unset/plain\n");
    assert_eq!(t.exec(&main, "cat /out/greeting").await, "hello-from-configmap\n", "the container's own view of the env");
    assert_eq!(t.exec(&main, "cat /etc/app/conf/app.properties").await, "mode=api\n");
    // Through the `..data` link (the name itself is a symlink).
    assert_eq!(t.exec(&main, "cat /etc/creds/password; stat -L -c ' %a' /etc/creds/password").await, "s3cret 400\n");
    let pods_dir = std::fs::canonicalize(t.daemon.root().join("agent/pods")).unwrap();
    let creds = pods_dir.join(&web_uid).join("volumes/kubernetes.io~empty-dir/creds");
    let line = mount_line(&creds).unwrap_or_else(|| panic!("secret volume {} is not a mount", creds.display()));
    assert!(line.contains(" - tmpfs "), "secret not on tmpfs: {line}");
    // kubelet's atomic layout: each top-level name a link through `..data` to a version dir.
    let layout = t.exec(&main, "readlink /etc/app/conf; readlink /etc/app/..data; cat /etc/app/..data/conf/app.properties").await;
    let lines: Vec<&str> = layout.lines().collect();
    assert!(lines.len() == 3 && lines[0] == "..data/conf" && lines[1].starts_with("..") && lines[2] == "mode=api", "{layout}");

    // Running but not Ready while the readiness probe fails; the condition names the container.
    let unready = wait_for(&t.api, "web Running, not Ready", Duration::from_secs(30), |r| {
        status_patches(r, "web").into_iter().find(|p| {
            let s = patched_status(p);
            s.phase.as_deref() == Some("Running") && s.container_statuses.iter().flatten().any(|c| c.started == Some(true) && !c.ready)
        }).cloned()
    })
    .await;
    let ready = patched_status(&unready).conditions.into_iter().flatten().find(|c| c.type_ == "Ready").expect("Ready condition");
    assert_eq!((ready.status.as_str(), ready.message.as_deref()), ("False", Some("containers with unready status: [main]")));
    t.exec(&main, "touch /out/ready").await;

    // The status patch: strategic merge, uid precondition, phase, addresses, conditions.
    let patch = wait_for(&t.api, "web Running with podIP", Duration::from_secs(30), |r| {
        status_patches(r, "web").into_iter().find(|p| {
            let s = patched_status(p);
            s.phase.as_deref() == Some("Running") && s.pod_ip.is_some() && s.container_statuses.iter().flatten().all(|c| c.ready)
        }).cloned()
    })
    .await;
    assert_eq!(patch.content_type, STRATEGIC);
    assert_eq!(patch.body["metadata"]["uid"].as_str(), Some(web_uid.as_str()));
    let s = patched_status(&patch);
    assert!(s.pod_ip.as_deref().unwrap().starts_with(&t.net.subnet_prefix), "{s:?}");
    assert_eq!(s.pod_ips.as_ref().unwrap()[0].ip, s.pod_ip.clone().unwrap());
    let host_ip = s.host_ip.clone().expect("hostIP");
    assert!(host_ip.parse::<std::net::Ipv4Addr>().is_ok(), "{host_ip}");
    assert!(s.start_time.is_some());
    for kind in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        assert_eq!(condition(&s.conditions, kind).as_deref(), Some("True"), "{kind}: {s:?}");
    }
    let cs = &s.container_statuses.as_ref().unwrap()[0];
    assert_eq!((cs.name.as_str(), cs.ready, cs.restart_count), ("main", true, 0));
    assert!(cs.state.as_ref().unwrap().running.is_some(), "{cs:?}");
    assert_eq!(cs.container_id.as_deref(), Some(format!("capstan://{main}").as_str()));
    // Stored by the server: the pod object carries the status now.
    assert_eq!(t.api.get(&pods_path("web")).unwrap()["status"]["phase"], "Running");
    // Nothing changes, nothing is sent: three more syncs, no new patch.
    let before = status_patches(&t.api.requests(), "web").len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let web_patches = status_patches(&t.api.requests(), "web").len();
    assert_eq!(web_patches, before, "status re-sent without a change:\n{}", summary(&t.api.requests()));

    // restartPolicy Never, exit 0: Succeeded.
    wait_for(&t.api, "job Succeeded", Duration::from_secs(60), |r| {
        status_patches(r, "job").into_iter().find(|p| {
            let s = patched_status(p);
            let exit = s.container_statuses.iter().flatten().filter_map(|c| c.state.as_ref()?.terminated.as_ref()).map(|t| t.exit_code).next();
            s.phase.as_deref() == Some("Succeeded") && exit == Some(0)
        }).cloned()
    })
    .await;

    // Always, exit 3: restarted (the first time at once, then after back-off), counted,
    // lastState kept.
    let crash_patch = wait_for(&t.api, "crash restarted with lastState", Duration::from_secs(60), |r| {
        status_patches(r, "crash").into_iter().find(|p| patched_status(p).container_statuses.iter().flatten().any(|c| c.restart_count >= 1)).cloned()
    })
    .await;
    let cs = patched_status(&crash_patch).container_statuses.unwrap()[0].clone();
    let last = cs.last_state.as_ref().and_then(|l| l.terminated.clone()).unwrap_or_else(|| panic!("no lastState: {cs:?}"));
    assert_eq!((last.exit_code, last.reason.as_deref()), (3, Some("Error")));

    // A claim bound to a local PV on this node: the pod's writes land in the PV's directory.
    let claims_started = Instant::now();
    let disk_sb = t.wait_sandbox("disk").await;
    let disk_main = t.running_container(&disk_sb.id, "main").await;
    assert_eq!(t.exec(&disk_main, "cat /data/hello").await, "written-in-pod\n");
    assert_eq!(std::fs::read_to_string(here.join("hello")).unwrap(), "written-in-pod\n", "the write reached the PV's directory");
    let disk_uid = t.uid(&pods_path("disk"));
    let bound = pods_dir.join(&disk_uid).join("volumes/kubernetes.io~local-volume/data");
    assert!(mount_line(&bound).is_some(), "local PV not bound at {}", bound.display());
    // A claim whose PV has another node's affinity: Pending, the cause in the containers'
    // waiting message, a FailedMount event, no sandbox and nothing mounted; retried.
    let far_uid = t.uid(&pods_path("faraway"));
    let pending = wait_for(&t.api, "faraway Pending with the volume's cause", Duration::from_secs(30), |r| {
        status_patches(r, "faraway").into_iter().map(patched_status).find(|s| s.phase.as_deref() == Some("Pending"))
    })
    .await;
    let waiting = pending.container_statuses.as_ref().unwrap()[0].state.clone().unwrap().waiting.expect("waiting");
    let message = waiting.message.clone().unwrap_or_default();
    assert_eq!(waiting.reason.as_deref(), Some("ContainerCreating"), "{waiting:?}");
    for part in ["volume \"data\"", "persistentVolumeClaim \"far\"", "\"local-far\" node affinity does not match node \"apinode\"", "othernode"] {
        assert!(message.contains(part), "{part:?} not in {message:?}");
    }
    assert_eq!(condition(&pending.conditions, "Ready").as_deref(), Some("False"));
    let event = wait_for(&t.api, "FailedMount event", Duration::from_secs(10), |r| {
        r.iter().find(|r| r.is("POST", &format!("/api/v1/namespaces/{NS}/events")) && r.body["involvedObject"]["name"] == "faraway").cloned()
    })
    .await;
    let event: k8s::Event = serde_json::from_value(event.body).unwrap();
    assert_eq!((event.reason.as_deref(), event.type_.as_deref()), (Some("FailedMount"), Some("Warning")));
    assert_eq!((event.involved_object.uid.as_deref(), event.message.as_deref()), (Some(far_uid.as_str()), Some(message.as_str())));
    wait_for(&t.api, "faraway's claim looked up again", Duration::from_secs(10), |r| {
        (r.iter().filter(|r| r.is("GET", &format!("{PVS}/local-far"))).count() >= 2).then_some(())
    })
    .await;
    assert!(t.sandboxes("faraway").await.is_empty(), "faraway got a sandbox");
    assert!(mounts_below(&pods_dir.join(&far_uid)).is_empty(), "{:?}", mounts_below(&pods_dir.join(&far_uid)));
    let failed_patches = status_patches(&t.api.requests(), "faraway").len();
    assert_eq!(failed_patches, 1, "the unchanged failure was re-sent:\n{}", summary(&t.api.requests()));
    // The volume's affinity fixed: the next sync starts the pod.
    t.api.update(&format!("{PVS}/local-far"), |pv| {
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] = json!([NODE]);
    });
    let far_sb = t.wait_sandbox("faraway").await;
    let far_main = t.running_container(&far_sb.id, "main").await;
    assert_eq!(t.exec(&far_main, "cat /data/hello").await, "far\n");
    assert_eq!(std::fs::read_to_string(far.join("hello")).unwrap(), "far\n");
    let claims_took = claims_started.elapsed();

    // 410 Gone on the watch: the agent lists again and still sees new pods.
    let lists = |r: &[Recorded]| r.iter().filter(|r| r.is("GET", "/api/v1/pods") && !r.query.contains_key("watch")).count();
    let lists_before = lists(&t.api.requests());
    assert!(t.api.expire_watches() >= 1, "no watch open");
    t.api.create(&pods, t.pod("late", "Always", "exec sleep 3600"));
    wait_for(&t.api, "a list after 410", Duration::from_secs(30), |r| (lists(r) > lists_before).then_some(())).await;
    let late = t.wait_sandbox("late").await;
    assert!(t.daemon.log().contains("410 Gone"), "410 not logged");
    let selectors: Vec<_> = t.api.requests().iter().filter(|r| r.path == "/api/v1/pods").map(|r| r.query["fieldSelector"].clone()).collect();
    assert!(selectors.iter().all(|f| f == &format!("spec.nodeName={NODE}")), "{selectors:?}");

    // Deleted with a grace period (deletionTimestamp): the agent stops and removes the pod,
    // its volumes with it, then deletes the object at once.
    t.api.mark_deleting(NS, "web");
    let delete = wait_for(&t.api, "DELETE web", Duration::from_secs(60), |r| r.iter().find(|r| r.is("DELETE", &pods_path("web"))).cloned()).await;
    assert_eq!(delete.body["gracePeriodSeconds"], 0, "{:#}", delete.body);
    assert_eq!(delete.body["preconditions"]["uid"].as_str(), Some(web_uid.as_str()));
    assert!(t.sandboxes("web").await.is_empty(), "DELETE sent before the sandbox was removed");
    assert!(mount_line(&creds).is_none(), "secret tmpfs left mounted");
    assert!(!pods_dir.join(&web_uid).exists(), "web's pod directory left");
    assert!(t.api.get(&pods_path("web")).is_none());

    // Deleted at once (a DELETED event): removed, and no DELETE of our own.
    let crash_uid = t.uid(&pods_path("crash"));
    t.api.remove_pod(NS, "crash");
    t.wait_no_sandbox("crash").await;
    assert!(!t.api.requests().iter().any(|r| r.is("DELETE", &pods_path("crash"))));
    let deadline = Instant::now() + Duration::from_secs(10);
    while pods_dir.join(&crash_uid).exists() {
        assert!(Instant::now() < deadline, "crash's pod directory left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A daemon restart meets its own Node (409): our labels are patched back on, a label
    // someone else set stays; the Lease goes on; the running pod is adopted.
    t.api.update(&format!("{NODES}/{NODE}"), |n| {
        n["metadata"]["labels"]["disktype"] = json!("hdd");
        n["metadata"]["labels"]["team"] = json!("edge");
    });
    let ready_since = |node: &Value| {
        node["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap()["lastTransitionTime"].clone()
    };
    let ready_since_before = ready_since(&t.api.get(&format!("{NODES}/{NODE}")).unwrap());
    let before_restart = t.api.requests().len();
    t.daemon.restart().await;
    t.rt = t.daemon.runtime_client().await;
    let after = |r: &[Recorded]| r[before_restart..].to_vec();
    let patch = wait_for(&t.api, "node label patch after 409", Duration::from_secs(30), |r| {
        after(r).into_iter().find(|r| r.is("PATCH", &format!("{NODES}/{NODE}")))
    })
    .await;
    let since = after(&t.api.requests());
    let posts: Vec<u16> = since.iter().filter(|r| r.is("POST", NODES)).map(|r| r.status).collect();
    assert_eq!(posts, [409]);
    assert!(since.iter().any(|r| r.is("GET", &format!("{NODES}/{NODE}")) && r.status == 200));
    assert_eq!(patch.content_type, STRATEGIC);
    assert_eq!(patch.body, json!({"metadata": {"labels": {"disktype": "ssd"}}}), "only the differing label");
    let labels = t.api.get(&format!("{NODES}/{NODE}")).unwrap()["metadata"]["labels"].clone();
    assert_eq!((labels["disktype"].as_str(), labels["team"].as_str()), (Some("ssd"), Some("edge")));
    assert_eq!(t.uid(&format!("{NODES}/{NODE}")), node_uid, "the same Node");
    // The restarted agent posts its status at once, Ready's transition time carried over.
    let status_post = wait_for(&t.api, "node status after restart", Duration::from_secs(30), |r| {
        after(r).into_iter().find(|r| r.is("PATCH", &format!("{NODES}/{NODE}/status")))
    })
    .await;
    assert_eq!(ready_since(&status_post.body), ready_since_before, "Ready did not change, nor may its lastTransitionTime");
    let renewal = wait_for(&t.api, "lease renewed after restart", Duration::from_secs(30), |r| {
        after(r).into_iter().find(|r| r.is("PUT", &format!("{LEASES}/{NODE}")) && r.status == 200)
    })
    .await;
    assert_eq!(renewal.body["metadata"]["ownerReferences"][0]["uid"].as_str(), Some(node_uid.as_str()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(t.wait_sandbox("late").await.id, late.id, "the late pod was replaced by the restart");
    assert!(t.daemon.log().contains("adopted an API pod from a previous run"));

    // Everything goes: sandboxes, mounts, pod directories, bridge ports, IP reservations.
    assert_eq!(t.wait_sandbox("disk").await.id, disk_sb.id, "the pod with a claim was replaced by the restart");
    for name in ["late", "job", "disk", "faraway"] {
        t.api.remove_pod(NS, name);
    }
    for name in ["late", "job", "disk", "faraway"] {
        t.wait_no_sandbox(name).await;
    }
    // The PVs' directories outlive the pods (Retain), unmounted.
    assert!(here.join("hello").exists() && mounts_below(&here).is_empty() && mounts_below(&far).is_empty());
    let all = t.rt.list_pod_sandbox(v1::ListPodSandboxRequest { filter: None }).await.unwrap().into_inner().items;
    assert!(all.is_empty(), "sandboxes left: {all:#?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !mounts_below(&t.daemon.root().join("agent")).is_empty() || std::fs::read_dir(&pods_dir).unwrap().next().is_some() {
        assert!(Instant::now() < deadline, "left behind: mounts {:?}, dirs in {}", mounts_below(&t.daemon.root().join("agent")), pods_dir.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(t.net.leftovers(&t.daemon).is_empty(), "{:?}", t.net.leftovers(&t.daemon));

    // Figures for the record.
    let requests = t.api.requests();
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for r in &requests {
        let kind = if r.path.starts_with(LEASES) {
            "lease"
        } else if r.path.ends_with("/status") && r.path.contains("/pods/") {
            "pods/status"
        } else if r.path.ends_with("/status") {
            "nodes/status"
        } else if r.path.starts_with(NODES) {
            "nodes"
        } else if r.path == "/api/v1/pods" {
            if r.query.contains_key("watch") { "pods watch" } else { "pods list" }
        } else if r.path.contains("/configmaps/") || r.path.contains("/secrets/") {
            "configmaps+secrets"
        } else if r.path.contains("/persistentvolumeclaims/") || r.path.starts_with(PVS) {
            "claims+volumes"
        } else if r.path.ends_with("/events") {
            "events"
        } else {
            "pods"
        };
        *by_kind.entry(format!("{kind} {}", r.method)).or_default() += 1;
    }
    if std::env::var_os("AGENT_API_REQUESTS").is_some() {
        for r in &requests {
            eprintln!("{:>8.3}s {} {} {} -> {} {}", (r.at - started).as_secs_f64(), r.method, r.path, r.content_type, r.status, r.body);
        }
    }
    eprintln!(
        "agent_api figures: node registered {registered_after:?} after daemon start; web sandbox ready {sandbox_after:?} after the pod was \
         created; claims checked, failure seen and fixed in {claims_took:?}; web status patches {web_patches}; requests by kind {by_kind:?}; total {}",
        requests.len()
    );
}
