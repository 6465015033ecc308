//! A desired pod → CRI calls on our own runtime: admission (nodeSelector, node affinity),
//! the sandbox in its QoS cgroup, image pulls by `imagePullPolicy`, init containers in
//! order, then the app containers, the restart loop of `restartPolicy` with kubelet's
//! back-off (the first restart at once, then 10 s doubling to 5 min, reset after 10 min of
//! running), probe workers per running container and the kills they order, and the
//! graceful stop of a pod that goes.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_volumes::PodVolumes;
use cri_proto::v1;
use cri_proto::{ImageService, RuntimeService};
use k8s_openapi::api::core::v1 as k8s;
use tonic::Request;

use super::admission::{self, Rejection};
use super::downward::PodFields;
use super::init_containers::{self, Init, Step};
use super::desired::DesiredPod;
use super::node_info::NodeInfo;
use super::prober::{Probers, Target};
use super::{AgentError, env, probes, qos, quantity, status, termination, volumes};
use crate::cri::Cri;

/// Kubelet's labels on sandboxes and containers.
pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
pub const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
pub const GRACE_PERIOD: &str = "io.kubernetes.pod.terminationGracePeriod";
/// Marks what agent mode made, so it can find its own pods again.
pub const MANAGED_BY: &str = "capstan.io/agent";

const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// A container (init or app) of a running pod, as the restart loop tracks it.
#[derive(Debug, Default)]
pub struct Tracked {
    pub id: Option<String>,
    pub restarts: u32,
    /// The wait before the next restart; `None`: the next restart is at once.
    pub backoff: Option<Duration>,
    /// Set while a restart waits for its back-off.
    pub not_before: Option<Instant>,
    pub started: Option<Instant>,
    /// Exited and not to be restarted (restartPolicy says so).
    pub done: bool,
    /// Why the last attempt failed before it ran (image pull, create), for the status.
    pub waiting_reason: Option<String>,
    pub waiting_message: Option<String>,
    /// The current instance's CRI status as the last sync read it.
    pub status: Option<v1::ContainerStatus>,
    /// How the previous instance ended: the status's `lastState`.
    pub last_terminated: Option<k8s::ContainerStateTerminated>,
    /// The current instance's probe workers.
    pub probers: Option<Probers>,
    /// A probe-ordered stop under way.
    pub killing: Option<tokio::task::JoinHandle<()>>,
    /// Why the current instance was killed, for `lastState` once it has exited.
    pub kill_message: Option<String>,
    /// A sidecar init container that has started once (it no longer holds init up).
    pub started_once: bool,
}

impl Tracked {
    /// What the current instance's probes say; `None` without probe workers for it (none
    /// declared, or not started yet: the first sync after the start makes them).
    pub fn probe_results(&self) -> Option<probes::Results> {
        let id = self.id.as_deref()?;
        self.probers.as_ref().filter(|p| p.container_id == id).map(Probers::results)
    }

    /// Running, and the startup probe `c` declares (if any) passed.
    pub fn started(&self, c: &k8s::Container) -> bool {
        self.status.as_ref().is_some_and(|s| s.state == v1::ContainerState::ContainerRunning as i32)
            && (c.startup_probe.is_none() || self.probe_results().is_some_and(|r| r.started))
    }
}

/// A pod agent mode runs (or refused to).
pub struct RunningPod {
    pub source: DesiredPod,
    pub node: Arc<NodeInfo>,
    /// Empty for a pod refused at admission: it never had a sandbox.
    pub sandbox_id: String,
    pub sandbox_config: v1::PodSandboxConfig,
    pub volumes: PodVolumes,
    pub volume_paths: HashMap<String, PathBuf>,
    /// Init and app containers, by name (names are unique across both).
    pub containers: BTreeMap<String, Tracked>,
    pub pod_dir: PathBuf,
    pub started_at: std::time::SystemTime,
    /// The sandbox's IPs (none without CNI or on the host network).
    pub pod_ips: Vec<String>,
    /// Why admission refused the pod.
    pub rejection: Option<Rejection>,
    /// Every init container has done its part; app containers may run.
    pub initialized: bool,
    /// An init container failed under restartPolicy Never: the pod has failed.
    pub init_failed: bool,
    /// The graceful stop of the pod's containers, once removal has begun.
    pub terminating: Option<tokio::task::JoinHandle<()>>,
}

fn cri_err(call: &'static str) -> impl FnOnce(tonic::Status) -> AgentError {
    move |status| AgentError::Cri { call, status }
}

fn tracked_containers(spec: &k8s::PodSpec) -> BTreeMap<String, Tracked> {
    spec.init_containers.iter().flatten().chain(&spec.containers).map(|c| (c.name.clone(), Tracked::default())).collect()
}

fn is_sidecar(c: &k8s::Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Admits the pod, then makes its QoS cgroups, volumes (`claims`: its persistentVolumeClaims
/// as resolved by the API side) and sandbox; the containers follow in [`sync`]. A pod the
/// node does not fit is returned refused, without a sandbox, so its status can say why. On
/// an error nothing is left mounted and the sync loop reports the error in the pod's status
/// (a volume's as `ContainerCreating`) and tries again next round.
#[tracing::instrument(skip_all, fields(pod = %source.name(), uid = %source.uid))]
pub async fn start(cri: &Arc<Cri>, node: &Arc<NodeInfo>, pods_dir: PathBuf, source: DesiredPod, claims: &volumes::Claims) -> Result<RunningPod, AgentError> {
    let spec = source.pod.spec.clone().unwrap_or_default();
    let uid = source.uid.clone();
    let pod_dir = pods_dir.join(&uid);
    if let Err(rejection) = admission::admit(&spec, node) {
        tracing::warn!(reason = %rejection.reason, message = %rejection.message, "pod refused by admission; not run");
        let pv = PodVolumes::new(&pods_dir, &uid).map_err(|e| AgentError::Volume(e.to_string()))?;
        std::fs::create_dir_all(&pod_dir).map_err(|e| AgentError::Volume(format!("cannot create {}: {e}", pod_dir.display())))?;
        return Ok(new_pod(source, node, String::new(), Default::default(), pv, HashMap::new(), pod_dir, Some(rejection)));
    }
    let wanted = volumes::convert(&spec, claims, &source.config).map_err(AgentError::Invalid)?;
    let class = qos::class(&spec);
    let (pod, node2) = (source.pod.clone(), node.clone());
    let (pod_volumes, volume_paths) = tokio::task::spawn_blocking(move || {
        if let Err(e) = qos::ensure() {
            tracing::warn!(error = %e, "cannot make the QoS cgroups; the runtime makes the pod's parents itself");
        }
        let pv = PodVolumes::new(&pods_dir, &uid).map_err(|e| AgentError::Volume(e.to_string()))?;
        let fields = PodFields { pod: &pod, pod_ips: &[], node: &node2 };
        let paths = volumes::setup_all(&pv, &wanted, &fields).map_err(AgentError::Volume)?;
        Ok::<_, AgentError>((pv, paths))
    })
    .await
    .map_err(|e| AgentError::Internal(e.to_string()))??;
    let sandbox_config = sandbox_config(&source, &pod_dir, class);
    let request = v1::RunPodSandboxRequest { config: Some(sandbox_config.clone()), runtime_handler: String::new() };
    let sandbox_id = match RuntimeService::run_pod_sandbox(&**cri, Request::new(request)).await {
        Ok(r) => r.into_inner().pod_sandbox_id,
        Err(status) => {
            let pv = pod_volumes.clone();
            let _ = tokio::task::spawn_blocking(move || pv.teardown_all(true)).await;
            return Err(cri_err("RunPodSandbox")(status));
        }
    };
    tracing::info!(sandbox = %sandbox_id, source = %source.origin, qos = class.name(), "pod sandbox running");
    let mut pod = new_pod(source, node, sandbox_id, sandbox_config, pod_volumes, volume_paths, pod_dir, None);
    pod.pod_ips = sandbox_ips(cri, &pod.sandbox_id).await;
    Ok(pod)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn new_pod(
    source: DesiredPod,
    node: &Arc<NodeInfo>,
    sandbox_id: String,
    sandbox_config: v1::PodSandboxConfig,
    volumes: PodVolumes,
    volume_paths: HashMap<String, PathBuf>,
    pod_dir: PathBuf,
    rejection: Option<Rejection>,
) -> RunningPod {
    let spec = source.pod.spec.clone().unwrap_or_default();
    RunningPod {
        containers: tracked_containers(&spec),
        initialized: spec.init_containers.as_ref().is_none_or(|i| i.is_empty()),
        source,
        node: node.clone(),
        sandbox_id,
        sandbox_config,
        volumes,
        volume_paths,
        pod_dir,
        started_at: std::time::SystemTime::now(),
        pod_ips: Vec::new(),
        rejection,
        init_failed: false,
        terminating: None,
    }
}

/// The sandbox's IPs, primary first.
async fn sandbox_ips(cri: &Arc<Cri>, id: &str) -> Vec<String> {
    let request = v1::PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: false };
    match RuntimeService::pod_sandbox_status(&**cri, Request::new(request)).await {
        Ok(r) => r
            .into_inner()
            .status
            .and_then(|s| s.network)
            .map(|n| std::iter::once(n.ip).chain(n.additional_ips.into_iter().map(|a| a.ip)).filter(|ip| !ip.is_empty()).collect())
            .unwrap_or_default(),
        Err(e) => {
            tracing::warn!(sandbox = %id, error = %e.message(), "cannot read the sandbox's IPs");
            Vec::new()
        }
    }
}

/// Takes over a pod a previous daemon started from the same manifest content (same uid):
/// its volumes are set up again (a no-op when they still are), its containers are found
/// by name, the newest attempt of each being the current one. Any app container means the
/// pod was initialized.
#[tracing::instrument(skip_all, fields(pod = %source.name(), sandbox = %sandbox_id))]
pub async fn adopt(
    cri: &Arc<Cri>,
    node: &Arc<NodeInfo>,
    pods_dir: PathBuf,
    source: DesiredPod,
    claims: &volumes::Claims,
    sandbox_id: String,
) -> Result<RunningPod, AgentError> {
    let spec = source.pod.spec.clone().unwrap_or_default();
    let wanted = volumes::convert(&spec, claims, &source.config).map_err(AgentError::Invalid)?;
    let uid = source.uid.clone();
    let pod_dir = pods_dir.join(&uid);
    let (pod, node2) = (source.pod.clone(), node.clone());
    let (pod_volumes, volume_paths) = tokio::task::spawn_blocking(move || {
        let pv = PodVolumes::new(&pods_dir, &uid).map_err(|e| AgentError::Volume(e.to_string()))?;
        let fields = PodFields { pod: &pod, pod_ips: &[], node: &node2 };
        let mut paths = HashMap::new();
        for w in &wanted {
            paths.insert(w.volume.name.clone(), volumes::setup(&pv, w, &fields).map_err(AgentError::Volume)?);
        }
        Ok::<_, AgentError>((pv, paths))
    })
    .await
    .map_err(|e| AgentError::Internal(e.to_string()))??;
    let filter = v1::ContainerFilter { pod_sandbox_id: sandbox_id.clone(), ..Default::default() };
    let listed = RuntimeService::list_containers(&**cri, Request::new(v1::ListContainersRequest { filter: Some(filter) }))
        .await
        .map_err(cri_err("ListContainers"))?
        .into_inner()
        .containers;
    let config = sandbox_config(&source, &pod_dir, qos::class(&spec));
    let mut pod = new_pod(source, node, sandbox_id, config, pod_volumes, volume_paths, pod_dir, None);
    for c in listed {
        let Some(meta) = c.metadata else { continue };
        if let Some(t) = pod.containers.get_mut(&meta.name)
            && (t.id.is_none() || meta.attempt >= t.restarts)
        {
            t.id = Some(c.id);
            t.restarts = meta.attempt;
            t.started = Some(Instant::now());
            pod.initialized |= spec.containers.iter().any(|a| a.name == meta.name);
        }
    }
    pod.pod_ips = sandbox_ips(cri, &pod.sandbox_id).await;
    let count = pod.containers.values().filter(|t| t.id.is_some()).count();
    if pod.source.is_static() {
        tracing::info!(containers = count, "adopted a static pod from a previous run");
    } else {
        tracing::info!(containers = count, "adopted an API pod from a previous run");
    }
    Ok(pod)
}

/// Brings the containers in line with the spec: reads their state, lets probes order
/// kills, runs init containers in order, then keeps app containers (and sidecars) running
/// per their restart rules. Never waits on a probe or a grace period.
#[tracing::instrument(skip_all, fields(pod = %pod.source.name(), sandbox = %pod.sandbox_id))]
pub async fn sync(cri: &Arc<Cri>, pod: &mut RunningPod) {
    if pod.rejection.is_some() || pod.terminating.is_some() {
        return;
    }
    let spec = pod.source.pod.spec.clone().unwrap_or_default();
    let policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
    observe(cri, pod, &spec).await;
    if pod.init_failed {
        return;
    }
    let inits = spec.init_containers.clone().unwrap_or_default();
    // Sidecars that have started are kept running whatever the pod's policy.
    for c in inits.iter().filter(|c| is_sidecar(c)) {
        if pod.containers.get(&c.name).is_some_and(|t| t.started_once) {
            ensure_running(cri, pod, c, Role::Sidecar, &policy).await;
        }
    }
    if !pod.initialized {
        let states: Vec<Init> = inits.iter().map(|c| init_state(pod, c)).collect();
        match init_containers::next(&states, &policy) {
            Step::Run(i) => {
                let role = if is_sidecar(&inits[i]) { Role::Sidecar } else { Role::Init };
                ensure_running(cri, pod, &inits[i], role, &policy).await;
                return;
            }
            Step::Wait => return,
            Step::Failed(i) => {
                tracing::warn!(container = %inits[i].name, "init container failed and restartPolicy is Never: the pod has failed");
                pod.init_failed = true;
                return;
            }
            Step::Done => {
                tracing::info!("init containers done; starting the app containers");
                pod.initialized = true;
            }
        }
    }
    for c in &spec.containers {
        ensure_running(cri, pod, c, Role::App, &policy).await;
    }
}

/// What a container is to its pod, which decides whether an exit is followed by a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    App,
    Init,
    /// An init container with `restartPolicy: Always`.
    Sidecar,
}

/// App containers follow the pod's restartPolicy; an init container runs again only after
/// a failure and never under Never (the pod fails instead); a sidecar always runs again.
fn restarts(role: Role, policy: &str, exit_code: i32) -> bool {
    match role {
        Role::App => policy == "Always" || (policy == "OnFailure" && exit_code != 0),
        Role::Init => exit_code != 0 && policy != "Never",
        Role::Sidecar => true,
    }
}

fn init_state(pod: &RunningPod, c: &k8s::Container) -> Init {
    let t = pod.containers.get(&c.name);
    let state = match t.and_then(|t| t.status.as_ref()) {
        None => init_containers::State::NotStarted,
        Some(s) if s.state == v1::ContainerState::ContainerExited as i32 => init_containers::State::Exited { code: s.exit_code },
        Some(_) => init_containers::State::Running { started: t.is_some_and(|t| t.started(c)) },
    };
    Init { sidecar: is_sidecar(c), state, started_once: t.is_some_and(|t| t.started_once) }
}

/// Reads each container's current state; starts the probe workers of a new running
/// instance (and drops those of one that stopped); starts the stop a failed liveness or
/// startup probe asks for.
async fn observe(cri: &Arc<Cri>, pod: &mut RunningPod, spec: &k8s::PodSpec) {
    let pod_ip = pod.pod_ips.first().and_then(|ip| ip.parse().ok());
    for c in spec.init_containers.iter().flatten().chain(&spec.containers) {
        let Some(tracked) = pod.containers.get_mut(&c.name) else { continue };
        let Some(id) = tracked.id.clone() else { continue };
        let status = match container_status(cri, &id).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "cannot read container status");
                continue;
            }
        };
        let running = status.state == v1::ContainerState::ContainerRunning as i32;
        if running && tracked.probers.as_ref().is_none_or(|p| p.container_id != id) {
            let probes = probes::of_container(c).unwrap_or_default();
            tracked.probers = (!probes.is_empty()).then(|| {
                let started_at = std::time::UNIX_EPOCH + Duration::from_nanos(u64::try_from(status.started_at).unwrap_or(0));
                let target = Target { cri: cri.clone(), sandbox_id: pod.sandbox_id.clone(), container: c.name.clone(), container_id: id.clone(), pod_ip, started_at };
                Probers::spawn(target, probes)
            });
        } else if !running {
            tracked.probers = None;
        }
        tracked.status = Some(status);
        if tracked.killing.as_ref().is_some_and(|k| k.is_finished()) {
            tracked.killing = None;
        }
        let kill = tracked.probers.as_ref().and_then(|p| p.results().kill);
        if let Some(kill) = kill.filter(|_| running && tracked.killing.is_none() && tracked.kill_message.is_none()) {
            let grace = termination::grace_period(spec, kill.grace);
            tracing::info!(container = %c.name, id = %id, grace_secs = grace, reason = %kill.message, "killing container");
            tracked.killing = Some(termination::stop_container(cri, id.clone(), grace));
            tracked.kill_message = Some(kill.message);
        }
        if tracked.started(c) {
            tracked.started_once = true;
        }
    }
}

/// Keeps one container running: an exited one is restarted when [`restarts`] says so
/// (after its back-off), else marked done; one without an instance is started.
async fn ensure_running(cri: &Arc<Cri>, pod: &mut RunningPod, container: &k8s::Container, role: Role, policy: &str) {
    let Some(tracked) = pod.containers.get_mut(&container.name) else { return };
    if tracked.done {
        return;
    }
    if tracked.id.is_some() {
        let Some(status) = tracked.status.clone() else { return };
        if status.state != v1::ContainerState::ContainerExited as i32 {
            if tracked.started.is_some_and(|s| s.elapsed() > BACKOFF_RESET) {
                tracked.backoff = None;
            }
            return;
        }
        if !restarts(role, policy, status.exit_code) {
            tracing::info!(container = %container.name, exit_code = status.exit_code, "container finished; not restarted");
            tracked.done = true;
            return;
        }
        if tracked.not_before.is_none() {
            tracked.last_terminated = Some(status::terminated(&status, tracked.kill_message.take()));
            let delay = tracked.backoff.unwrap_or_default();
            tracked.backoff = Some(grow(tracked.backoff));
            tracked.not_before = Some(Instant::now() + delay);
            tracing::info!(container = %container.name, exit_code = status.exit_code, backoff_secs = delay.as_secs(), "container exited; restarting");
        }
    }
    if tracked.not_before.is_some_and(|t| Instant::now() < t) {
        return;
    }
    let attempt = if tracked.id.is_some() { tracked.restarts + 1 } else { tracked.restarts };
    let result = start_container(cri, pod_ctx(pod), container, attempt).await;
    let Some(tracked) = pod.containers.get_mut(&container.name) else { return };
    match result {
        Ok(new_id) => {
            if let Some(old) = tracked.id.replace(new_id.clone()) {
                // Kubelet keeps one dead instance for `logs --previous`; we keep its end in
                // `last_terminated` and drop the old container.
                let request = v1::RemoveContainerRequest { container_id: old.clone() };
                if let Err(e) = RuntimeService::remove_container(&**cri, Request::new(request)).await {
                    tracing::warn!(container = %old, error = %e, "cannot remove the previous instance");
                }
            }
            tracked.restarts = attempt;
            tracked.not_before = None;
            tracked.started = Some(Instant::now());
            tracked.waiting_reason = None;
            tracked.waiting_message = None;
            tracked.status = None;
            tracked.probers = None;
            tracing::info!(container = %container.name, id = %new_id, restarts = attempt, "container started");
        }
        Err(e) => {
            let delay = tracked.backoff.unwrap_or(BACKOFF_START);
            tracked.backoff = Some(grow(Some(delay)));
            tracked.not_before = Some(Instant::now() + delay);
            tracked.waiting_reason = Some(e.reason().into());
            tracked.waiting_message = Some(e.to_string());
            tracing::error!(container = %container.name, error = %e, "cannot start container");
        }
    }
}

/// The wait after `current`: 10 s first, doubling to 5 min.
fn grow(current: Option<Duration>) -> Duration {
    current.map_or(BACKOFF_START, |b| (b * 2).min(BACKOFF_MAX))
}

/// What starting a container needs of its pod (borrowed apart from `containers`).
struct PodCtx<'a> {
    sandbox_id: &'a str,
    sandbox_config: &'a v1::PodSandboxConfig,
    volume_paths: &'a HashMap<String, PathBuf>,
    source: &'a DesiredPod,
    fields: PodFields<'a>,
}

fn pod_ctx(pod: &RunningPod) -> PodCtx<'_> {
    PodCtx {
        sandbox_id: &pod.sandbox_id,
        sandbox_config: &pod.sandbox_config,
        volume_paths: &pod.volume_paths,
        source: &pod.source,
        fields: PodFields { pod: &pod.source.pod, pod_ips: &pod.pod_ips, node: &pod.node },
    }
}

async fn start_container(cri: &Arc<Cri>, pod: PodCtx<'_>, c: &k8s::Container, attempt: u32) -> Result<String, AgentError> {
    // A probe that cannot work is a configuration error, found before anything runs.
    probes::of_container(c).map_err(AgentError::Invalid)?;
    let image = ensure_image(cri, c).await?;
    let spec = pod.source.pod.spec.clone().unwrap_or_default();
    let mounts = volumes::mounts(&spec, c, pod.volume_paths).map_err(AgentError::Invalid)?;
    let config = container_config(&pod, c, &image, mounts, attempt)?;
    let request = v1::CreateContainerRequest {
        pod_sandbox_id: pod.sandbox_id.to_string(),
        config: Some(config),
        sandbox_config: Some(pod.sandbox_config.clone()),
    };
    let id = RuntimeService::create_container(&**cri, Request::new(request)).await.map_err(cri_err("CreateContainer"))?.into_inner().container_id;
    if let Err(status) = RuntimeService::start_container(&**cri, Request::new(v1::StartContainerRequest { container_id: id.clone() })).await {
        let _ = RuntimeService::remove_container(&**cri, Request::new(v1::RemoveContainerRequest { container_id: id })).await;
        return Err(cri_err("StartContainer")(status));
    }
    Ok(id)
}

async fn container_status(cri: &Arc<Cri>, id: &str) -> Result<v1::ContainerStatus, AgentError> {
    let request = v1::ContainerStatusRequest { container_id: id.into(), verbose: false };
    RuntimeService::container_status(&**cri, Request::new(request))
        .await
        .map_err(cri_err("ContainerStatus"))?
        .into_inner()
        .status
        .ok_or_else(|| AgentError::Internal(format!("no status for container {id}")))
}

/// Whether the sandbox still runs. Only a definite answer counts as gone: a failed call is
/// taken as ready, so a passing error does not replace the pod. A pod refused at
/// admission has no sandbox to lose.
pub async fn sandbox_ready(cri: &Arc<Cri>, id: &str) -> bool {
    if id.is_empty() {
        return true;
    }
    let request = v1::PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: false };
    match RuntimeService::pod_sandbox_status(&**cri, Request::new(request)).await {
        Ok(r) => r.into_inner().status.is_none_or(|s| s.state == v1::PodSandboxState::SandboxReady as i32),
        Err(status) => status.code() != tonic::Code::NotFound,
    }
}

/// The CRI status of every container the pod tracks.
pub async fn container_statuses(cri: &Arc<Cri>, pod: &RunningPod) -> HashMap<String, v1::ContainerStatus> {
    let mut out = HashMap::new();
    for (name, t) in &pod.containers {
        if let Some(id) = &t.id
            && let Ok(s) = container_status(cri, id).await
        {
            out.insert(name.clone(), s);
        }
    }
    out
}

/// Kubelet's default: `Always` for `:latest` or no tag, else `IfNotPresent`.
fn pull_policy(c: &k8s::Container, image: &str) -> String {
    if let Some(p) = c.image_pull_policy.clone().filter(|p| !p.is_empty()) {
        return p;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    let tagged = last.contains(':') && !last.ends_with(":latest");
    if tagged || image.contains('@') { "IfNotPresent".into() } else { "Always".into() }
}

/// Pulls the image when the policy says so; returns the image ref to create with.
async fn ensure_image(cri: &Arc<Cri>, c: &k8s::Container) -> Result<String, AgentError> {
    let image = c.image.clone().unwrap_or_default();
    let spec = v1::ImageSpec { image: image.clone(), ..Default::default() };
    let policy = pull_policy(c, &image);
    if policy != "Always" {
        let status = ImageService::image_status(&**cri, Request::new(v1::ImageStatusRequest { image: Some(spec.clone()), verbose: false }))
            .await
            .map_err(cri_err("ImageStatus"))?
            .into_inner();
        if let Some(found) = status.image {
            return Ok(found.id);
        }
        if policy == "Never" {
            return Err(AgentError::ImageNeverPull(image));
        }
    }
    let request = v1::PullImageRequest { image: Some(spec), auth: None, sandbox_config: None };
    let pulled = ImageService::pull_image(&**cri, Request::new(request)).await.map_err(cri_err("PullImage"))?;
    Ok(pulled.into_inner().image_ref)
}

fn base_labels(source: &DesiredPod) -> HashMap<String, String> {
    HashMap::from([
        (POD_NAME.to_string(), source.name().to_string()),
        (POD_NAMESPACE.to_string(), source.namespace().to_string()),
        (POD_UID.to_string(), source.uid.clone()),
        (MANAGED_BY.to_string(), source.managed_by().to_string()),
    ])
}

fn sandbox_config(source: &DesiredPod, pod_dir: &std::path::Path, class: qos::Class) -> v1::PodSandboxConfig {
    let pod = &source.pod;
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    let mut labels = base_labels(source);
    labels.extend(pod.metadata.labels.clone().unwrap_or_default());
    let annotations: HashMap<String, String> = pod.metadata.annotations.clone().unwrap_or_default().into_iter().collect();
    let hostname = if host_network {
        String::new()
    } else {
        let name = spec.hostname.clone().unwrap_or_else(|| pod.metadata.name.clone().unwrap_or_default());
        name.chars().take(63).collect()
    };
    let port_mappings = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.is_some_and(|h| h > 0))
        .map(|p| v1::PortMapping {
            protocol: protocol(p.protocol.as_deref()) as i32,
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or_default(),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect();
    let psc = spec.security_context.clone().unwrap_or_default();
    v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: source.name().to_string(),
            uid: source.uid.clone(),
            namespace: source.namespace().to_string(),
            attempt: 0,
        }),
        hostname,
        log_directory: pod_dir.join("logs").display().to_string(),
        dns_config: Some(dns_config(&spec)),
        port_mappings,
        labels,
        annotations,
        linux: Some(v1::LinuxPodSandboxConfig {
            security_context: Some(v1::LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces(&spec)),
                run_as_user: psc.run_as_user.map(|value| v1::Int64Value { value }),
                run_as_group: psc.run_as_group.map(|value| v1::Int64Value { value }),
                supplemental_groups: psc.supplemental_groups.clone().unwrap_or_default(),
                ..Default::default()
            }),
            sysctls: psc.sysctls.iter().flatten().map(|s| (s.name.clone(), s.value.clone())).collect(),
            cgroup_parent: class.pod_cgroup(&source.uid),
            ..Default::default()
        }),
        windows: None,
    }
}

fn protocol(p: Option<&str>) -> v1::Protocol {
    match p {
        Some("UDP") => v1::Protocol::Udp,
        Some("SCTP") => v1::Protocol::Sctp,
        _ => v1::Protocol::Tcp,
    }
}

fn namespaces(spec: &k8s::PodSpec) -> v1::NamespaceOption {
    let node = v1::NamespaceMode::Node as i32;
    v1::NamespaceOption {
        network: if spec.host_network.unwrap_or(false) { node } else { v1::NamespaceMode::Pod as i32 },
        pid: if spec.host_pid.unwrap_or(false) {
            node
        } else if spec.share_process_namespace.unwrap_or(false) {
            v1::NamespaceMode::Pod as i32
        } else {
            v1::NamespaceMode::Container as i32
        },
        ipc: if spec.host_ipc.unwrap_or(false) { node } else { v1::NamespaceMode::Pod as i32 },
        ..Default::default()
    }
}

/// `dnsPolicy` basics: with no cluster DNS here, `ClusterFirst` falls back to `Default` (the
/// node's resolv.conf) as kubelet does without `--cluster-dns`; `None` takes only
/// `dnsConfig`, which is appended in every case.
fn dns_config(spec: &k8s::PodSpec) -> v1::DnsConfig {
    let mut dns = v1::DnsConfig::default();
    if spec.dns_policy.as_deref() != Some("None") {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => dns.servers.extend(words.map(String::from)),
                Some("search") => dns.searches = words.map(String::from).collect(),
                Some("options") => dns.options.extend(words.map(String::from)),
                _ => {}
            }
        }
    }
    if let Some(extra) = &spec.dns_config {
        dns.servers.extend(extra.nameservers.clone().unwrap_or_default());
        dns.searches.extend(extra.searches.clone().unwrap_or_default());
        for o in extra.options.iter().flatten() {
            let name = o.name.clone().unwrap_or_default();
            dns.options.push(match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name,
            });
        }
    }
    dns
}

fn container_config(pod: &PodCtx, c: &k8s::Container, image: &str, mounts: Vec<v1::Mount>, attempt: u32) -> Result<v1::ContainerConfig, AgentError> {
    let (source, sandbox) = (pod.source, pod.sandbox_config);
    let spec = source.pod.spec.clone().unwrap_or_default();
    let mut labels = base_labels(source);
    labels.insert(CONTAINER_NAME.into(), c.name.clone());
    let annotations = HashMap::from([
        (RESTART_COUNT.to_string(), attempt.to_string()),
        (GRACE_PERIOD.to_string(), termination::grace_period(&spec, None).to_string()),
    ]);
    let envs = env::container_env(&pod.fields, &source.config, c).map_err(AgentError::Invalid)?;
    let psc = spec.security_context.clone().unwrap_or_default();
    let sc = c.security_context.clone().unwrap_or_default();
    let caps = sc.capabilities.clone().unwrap_or_default();
    let security_context = v1::LinuxContainerSecurityContext {
        capabilities: Some(v1::Capability {
            add_capabilities: caps.add.unwrap_or_default(),
            drop_capabilities: caps.drop.unwrap_or_default(),
            ..Default::default()
        }),
        privileged: sc.privileged.unwrap_or(false),
        namespace_options: sandbox.linux.as_ref().and_then(|l| l.security_context.as_ref()).and_then(|s| s.namespace_options.clone()),
        run_as_user: sc.run_as_user.or(psc.run_as_user).map(|value| v1::Int64Value { value }),
        run_as_group: sc.run_as_group.or(psc.run_as_group).map(|value| v1::Int64Value { value }),
        readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
        supplemental_groups: psc.supplemental_groups.clone().unwrap_or_default(),
        no_new_privs: sc.allow_privilege_escalation == Some(false),
        ..Default::default()
    };
    Ok(v1::ContainerConfig {
        metadata: Some(v1::ContainerMetadata { name: c.name.clone(), attempt }),
        image: Some(v1::ImageSpec { image: image.to_string(), user_specified_image: c.image.clone().unwrap_or_default(), ..Default::default() }),
        command: c.command.iter().flatten().map(|a| env::expand(a, &envs)).collect(),
        args: c.args.iter().flatten().map(|a| env::expand(a, &envs)).collect(),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs,
        mounts,
        labels,
        annotations,
        log_path: format!("{}/{attempt}.log", c.name),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(v1::LinuxContainerConfig {
            resources: Some(resources(c).map_err(AgentError::Invalid)?),
            security_context: Some(security_context),
        }),
        ..Default::default()
    })
}

/// kubelet's conversion: cpu shares from the request (the limit when no request is set,
/// 2 when neither), CFS quota from the limit over a 100 ms period, memory from the limit.
pub fn resources(c: &k8s::Container) -> Result<v1::LinuxContainerResources, String> {
    const PERIOD: i64 = 100_000;
    let r = c.resources.clone().unwrap_or_default();
    let get = |map: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>, key: &str| {
        map.as_ref().and_then(|m| m.get(key)).map(|q| q.0.clone())
    };
    let cpu_limit = get(&r.limits, "cpu").map(|q| quantity::milli(&q)).transpose()?;
    let cpu_request = match get(&r.requests, "cpu") {
        Some(q) => Some(quantity::milli(&q)?),
        None => cpu_limit,
    };
    let clamp = |v: u128| i64::try_from(v).unwrap_or(i64::MAX);
    let mut out = v1::LinuxContainerResources {
        cpu_shares: cpu_request.map_or(2, |m| clamp(m * 1024 / 1000).max(2)),
        ..Default::default()
    };
    if let Some(limit) = cpu_limit {
        out.cpu_period = PERIOD;
        out.cpu_quota = clamp(limit * PERIOD as u128 / 1000).max(1000);
    }
    if let Some(mem) = get(&r.limits, "memory") {
        out.memory_limit_in_bytes = clamp(quantity::units(&mem)?);
    }
    Ok(out)
}

/// Removes the pod in two steps, so a grace period never holds the sync loop: the first
/// call starts stopping every container with the pod's grace period and returns
/// `Ok(false)`; once they have all stopped, a later call removes the sandbox, then the
/// volumes and directory, and returns `Ok(true)`. Volumes stay (and are retried next
/// sync) if the sandbox could not go.
#[tracing::instrument(skip_all, fields(pod = %pod.source.name(), sandbox = %pod.sandbox_id))]
pub async fn remove(cri: &Arc<Cri>, pod: &mut RunningPod) -> Result<bool, AgentError> {
    if !pod.sandbox_id.is_empty() {
        match &pod.terminating {
            None => {
                let spec = pod.source.pod.spec.clone().unwrap_or_default();
                let grace = termination::grace_period(&spec, pod.source.pod.metadata.deletion_grace_period_seconds);
                let ids: Vec<String> = pod.containers.values_mut().filter_map(|t| {
                    t.probers = None;
                    t.id.clone()
                }).collect();
                tracing::info!(containers = ids.len(), grace_secs = grace, "stopping pod");
                pod.terminating = Some(termination::stop_all(cri, ids, grace));
                return Ok(false);
            }
            Some(stopping) if !stopping.is_finished() => return Ok(false),
            Some(_) => {}
        }
    }
    let id = pod.sandbox_id.clone();
    // Already gone (removed behind our back) is what we want.
    let gone_ok = |r: Result<(), tonic::Status>| match r {
        Err(status) if status.code() != tonic::Code::NotFound => Err(status),
        _ => Ok(()),
    };
    if !id.is_empty() {
        gone_ok(RuntimeService::stop_pod_sandbox(&**cri, Request::new(v1::StopPodSandboxRequest { pod_sandbox_id: id.clone() })).await.map(|_| ()))
            .map_err(cri_err("StopPodSandbox"))?;
        gone_ok(RuntimeService::remove_pod_sandbox(&**cri, Request::new(v1::RemovePodSandboxRequest { pod_sandbox_id: id })).await.map(|_| ()))
            .map_err(cri_err("RemovePodSandbox"))?;
    }
    let volumes = pod.volumes.clone();
    let dir = pod.pod_dir.clone();
    tokio::task::spawn_blocking(move || {
        volumes.teardown_all(true).map_err(|e| AgentError::Volume(e.to_string()))?;
        qos::tidy();
        // Only logs and the status file remain, and no mounts: the volumes went first.
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(AgentError::Volume(format!("cannot remove {}: {e}", dir.display()))),
        }
    })
    .await
    .map_err(|e| AgentError::Internal(e.to_string()))??;
    tracing::info!(source = %pod.source.origin, "pod removed");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(json: serde_json::Value) -> k8s::Container {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn resources_follow_kubelets_conversion() {
        let c = container(serde_json::json!({"name": "c", "resources": {
            "requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "64Mi"}}}));
        let r = resources(&c).unwrap();
        assert_eq!((r.cpu_shares, r.cpu_quota, r.cpu_period, r.memory_limit_in_bytes), (256, 50_000, 100_000, 64 << 20));
        // Limit only: the request defaults to it.
        let c = container(serde_json::json!({"name": "c", "resources": {"limits": {"cpu": "2"}}}));
        let r = resources(&c).unwrap();
        assert_eq!((r.cpu_shares, r.cpu_quota), (2048, 200_000));
        // Best effort: minimum shares, no quota, no memory limit.
        let r = resources(&container(serde_json::json!({"name": "c"}))).unwrap();
        assert_eq!((r.cpu_shares, r.cpu_quota, r.memory_limit_in_bytes), (2, 0, 0));
        // Tiny limits keep the kernel's minimum quota.
        let c = container(serde_json::json!({"name": "c", "resources": {"limits": {"cpu": "1m"}}}));
        assert_eq!(resources(&c).unwrap().cpu_quota, 1000);
    }

    #[test]
    fn restart_rules_follow_the_role_and_policy() {
        assert!(restarts(Role::App, "Always", 0) && restarts(Role::App, "OnFailure", 1));
        assert!(!restarts(Role::App, "OnFailure", 0) && !restarts(Role::App, "Never", 1));
        assert!(restarts(Role::Init, "Always", 1) && restarts(Role::Init, "OnFailure", 1));
        assert!(!restarts(Role::Init, "Always", 0) && !restarts(Role::Init, "Never", 1));
        assert!(restarts(Role::Sidecar, "Never", 0));
    }

    /// Kubelet's crash back-off: the first restart at once (no wait recorded yet), then
    /// 10 s doubling, capped at 5 min.
    #[test]
    fn back_off_doubles_to_five_minutes() {
        let mut backoff: Option<Duration> = None;
        let mut waits = Vec::new();
        for _ in 0..7 {
            waits.push(backoff.unwrap_or_default().as_secs());
            backoff = Some(grow(backoff));
        }
        assert_eq!(waits, [0, 10, 20, 40, 80, 160, 300]);
    }

    #[test]
    fn pull_policy_defaults_like_kubelet() {
        let c = container(serde_json::json!({"name": "c"}));
        assert_eq!(pull_policy(&c, "busybox"), "Always");
        assert_eq!(pull_policy(&c, "busybox:latest"), "Always");
        assert_eq!(pull_policy(&c, "127.0.0.1:5000/busybox"), "Always");
        assert_eq!(pull_policy(&c, "127.0.0.1:5000/busybox:1"), "IfNotPresent");
        assert_eq!(pull_policy(&c, "busybox@sha256:00"), "IfNotPresent");
        let c = container(serde_json::json!({"name": "c", "imagePullPolicy": "Never"}));
        assert_eq!(pull_policy(&c, "busybox"), "Never");
    }
}
