//! A desired pod → CRI calls on our own runtime: the sandbox, image pulls by
//! `imagePullPolicy`, the containers, and the restart loop of `restartPolicy` with
//! kubelet's back-off (10 s doubling to 5 min, reset after 10 min of running).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_volumes::PodVolumes;
use cri_proto::v1;
use cri_proto::{ImageService, RuntimeService};
use k8s_openapi::api::core::v1 as k8s;
use tonic::Request;

use super::desired::DesiredPod;
use super::{AgentError, config_data, config_volumes, quantity, volumes};
use crate::cri::Cri;

/// Kubelet's labels on sandboxes and containers.
pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
pub const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
/// Marks what agent mode made, so it can find its own pods again.
pub const MANAGED_BY: &str = "capstan.io/agent";

const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// A container of a running pod, as the restart loop tracks it.
#[derive(Debug, Default)]
pub struct Tracked {
    pub id: Option<String>,
    pub restarts: u32,
    backoff: Option<Duration>,
    not_before: Option<Instant>,
    started: Option<Instant>,
    /// Exited and not to be restarted (restartPolicy says so).
    pub done: bool,
    /// Why the last attempt failed before it ran (image pull, create), for the status.
    pub waiting_reason: Option<String>,
    /// How the previous instance ended: the status's `lastState`.
    pub last_termination: Option<k8s::ContainerStateTerminated>,
}

/// A pod agent mode runs.
pub struct RunningPod {
    pub source: DesiredPod,
    pub sandbox_id: String,
    pub sandbox_config: v1::PodSandboxConfig,
    pub volumes: PodVolumes,
    pub volume_paths: HashMap<String, PathBuf>,
    pub containers: BTreeMap<String, Tracked>,
    pub pod_dir: PathBuf,
    pub started_at: std::time::SystemTime,
}

fn cri_err(call: &'static str) -> impl FnOnce(tonic::Status) -> AgentError {
    move |status| AgentError::Cri { call, status }
}

/// Makes the pod's volumes and sandbox; the containers follow in [`sync`].
#[tracing::instrument(skip_all, fields(pod = %source.name(), uid = %source.uid))]
pub async fn start(cri: &Arc<Cri>, pods_dir: PathBuf, source: DesiredPod) -> Result<RunningPod, AgentError> {
    let spec = source.pod.spec.clone().unwrap_or_default();
    let wanted = volumes::convert(&spec).map_err(AgentError::Invalid)?;
    let uid = source.uid.clone();
    let pod_dir = pods_dir.join(&uid);
    let (volume_spec, config) = (spec.clone(), source.config.clone());
    let (pod_volumes, volume_paths) = tokio::task::spawn_blocking(move || {
        let pv = PodVolumes::new(&pods_dir, &uid).map_err(|e| AgentError::Volume(e.to_string()))?;
        let paths = volumes::setup_all(&pv, &wanted).map_err(AgentError::Volume)?;
        if let Err(e) = config_volumes::populate(&volume_spec, &paths, &config) {
            let _ = pv.teardown_all(true);
            return Err(AgentError::Volume(e));
        }
        Ok::<_, AgentError>((pv, paths))
    })
    .await
    .map_err(|e| AgentError::Internal(e.to_string()))??;
    let sandbox_config = sandbox_config(&source, &pod_dir);
    let request = v1::RunPodSandboxRequest { config: Some(sandbox_config.clone()), runtime_handler: String::new() };
    let sandbox_id = match RuntimeService::run_pod_sandbox(&**cri, Request::new(request)).await {
        Ok(r) => r.into_inner().pod_sandbox_id,
        Err(status) => {
            let pv = pod_volumes.clone();
            let _ = tokio::task::spawn_blocking(move || pv.teardown_all(true)).await;
            return Err(cri_err("RunPodSandbox")(status));
        }
    };
    tracing::info!(sandbox = %sandbox_id, source = %source.origin, "pod sandbox running");
    let containers = spec.containers.iter().map(|c| (c.name.clone(), Tracked::default())).collect();
    Ok(RunningPod {
        source,
        sandbox_id,
        sandbox_config,
        volumes: pod_volumes,
        volume_paths,
        containers,
        pod_dir,
        started_at: std::time::SystemTime::now(),
    })
}

/// Takes over a pod a previous daemon started from the same manifest content (same uid):
/// its volumes are set up again (a no-op when they still are), its containers are found
/// by name, the newest attempt of each being the current one.
#[tracing::instrument(skip_all, fields(pod = %source.name(), sandbox = %sandbox_id))]
pub async fn adopt(cri: &Arc<Cri>, pods_dir: PathBuf, source: DesiredPod, sandbox_id: String) -> Result<RunningPod, AgentError> {
    let spec = source.pod.spec.clone().unwrap_or_default();
    let wanted = volumes::convert(&spec).map_err(AgentError::Invalid)?;
    let uid = source.uid.clone();
    let pod_dir = pods_dir.join(&uid);
    let (pod_volumes, volume_paths) = tokio::task::spawn_blocking(move || {
        let pv = PodVolumes::new(&pods_dir, &uid).map_err(|e| AgentError::Volume(e.to_string()))?;
        let mut paths = HashMap::new();
        for v in &wanted {
            paths.insert(v.name.clone(), pv.setup(v).map_err(|e| AgentError::Volume(format!("volume {:?}: {e}", v.name)))?);
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
    let mut containers: BTreeMap<String, Tracked> = spec.containers.iter().map(|c| (c.name.clone(), Tracked::default())).collect();
    for c in listed {
        let Some(meta) = c.metadata else { continue };
        if let Some(t) = containers.get_mut(&meta.name)
            && (t.id.is_none() || meta.attempt >= t.restarts)
        {
            t.id = Some(c.id);
            t.restarts = meta.attempt;
            t.started = Some(Instant::now());
        }
    }
    let count = containers.values().filter(|t| t.id.is_some()).count();
    if source.is_static() {
        tracing::info!(containers = count, "adopted a static pod from a previous run");
    } else {
        tracing::info!(containers = count, "adopted an API pod from a previous run");
    }
    Ok(RunningPod {
        sandbox_config: sandbox_config(&source, &pod_dir),
        source,
        sandbox_id,
        volumes: pod_volumes,
        volume_paths,
        containers,
        pod_dir,
        started_at: std::time::SystemTime::now(),
    })
}

/// Brings the containers in line with the spec and `restartPolicy`.
#[tracing::instrument(skip_all, fields(pod = %pod.source.name(), sandbox = %pod.sandbox_id))]
pub async fn sync(cri: &Arc<Cri>, pod: &mut RunningPod) {
    let spec = pod.source.pod.spec.clone().unwrap_or_default();
    let policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
    for container in &spec.containers {
        let Some(tracked) = pod.containers.get_mut(&container.name) else { continue };
        if tracked.done {
            continue;
        }
        if let Some(id) = tracked.id.clone() {
            let status = match container_status(cri, &id).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "cannot read container status");
                    continue;
                }
            };
            if status.state != v1::ContainerState::ContainerExited as i32 {
                if tracked.started.is_some_and(|s| s.elapsed() > BACKOFF_RESET) {
                    tracked.backoff = None;
                }
                continue;
            }
            let restart = match policy.as_str() {
                "Always" => true,
                "OnFailure" => status.exit_code != 0,
                _ => false,
            };
            if !restart {
                if !tracked.done {
                    tracing::info!(container = %container.name, exit_code = status.exit_code, "container finished; not restarted");
                }
                tracked.done = true;
                continue;
            }
            if tracked.not_before.is_none() {
                tracked.last_termination = Some(super::status::terminated(&status));
                let backoff = tracked.backoff.map_or(BACKOFF_START, |b| (b * 2).min(BACKOFF_MAX));
                tracked.backoff = Some(backoff);
                tracked.not_before = Some(Instant::now() + backoff);
                tracing::info!(container = %container.name, exit_code = status.exit_code, backoff_secs = backoff.as_secs(), "container exited; restarting after back-off");
            }
        }
        if tracked.not_before.is_some_and(|t| Instant::now() < t) {
            continue;
        }
        let attempt = if tracked.id.is_some() { tracked.restarts + 1 } else { tracked.restarts };
        match start_container(cri, pod_ctx(pod), container, attempt).await {
            Ok(new_id) => {
                let tracked = pod.containers.get_mut(&container.name).expect("tracked above");
                if let Some(old) = tracked.id.replace(new_id.clone()) {
                    // Kubelet keeps one dead instance for `logs --previous`; we keep the
                    // status in `Tracked` and drop the old container.
                    let request = v1::RemoveContainerRequest { container_id: old.clone() };
                    if let Err(e) = RuntimeService::remove_container(&**cri, Request::new(request)).await {
                        tracing::warn!(container = %old, error = %e, "cannot remove the previous instance");
                    }
                }
                tracked.restarts = attempt;
                tracked.not_before = None;
                tracked.started = Some(Instant::now());
                tracked.waiting_reason = None;
                tracing::info!(container = %container.name, id = %new_id, restarts = attempt, "container started");
            }
            Err(e) => {
                let tracked = pod.containers.get_mut(&container.name).expect("tracked above");
                let backoff = tracked.backoff.map_or(BACKOFF_START, |b| (b * 2).min(BACKOFF_MAX));
                tracked.backoff = Some(backoff);
                tracked.not_before = Some(Instant::now() + backoff);
                tracked.waiting_reason = Some(e.reason().into());
                tracing::error!(container = %container.name, error = %e, "cannot start container");
            }
        }
    }
}

/// What starting a container needs of its pod (borrowed apart from `containers`).
struct PodCtx<'a> {
    sandbox_id: &'a str,
    sandbox_config: &'a v1::PodSandboxConfig,
    volume_paths: &'a HashMap<String, PathBuf>,
    source: &'a DesiredPod,
}

fn pod_ctx(pod: &RunningPod) -> PodCtx<'_> {
    PodCtx { sandbox_id: &pod.sandbox_id, sandbox_config: &pod.sandbox_config, volume_paths: &pod.volume_paths, source: &pod.source }
}

async fn start_container(cri: &Arc<Cri>, pod: PodCtx<'_>, c: &k8s::Container, attempt: u32) -> Result<String, AgentError> {
    let image = ensure_image(cri, c).await?;
    let mounts = volumes::mounts(c, pod.volume_paths).map_err(AgentError::Invalid)?;
    let config = container_config(pod.source, pod.sandbox_config, c, &image, mounts, attempt)?;
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
/// taken as ready, so a passing error does not replace the pod.
pub async fn sandbox_ready(cri: &Arc<Cri>, id: &str) -> bool {
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

fn sandbox_config(source: &DesiredPod, pod_dir: &std::path::Path) -> v1::PodSandboxConfig {
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

fn container_config(
    source: &DesiredPod,
    sandbox: &v1::PodSandboxConfig,
    c: &k8s::Container,
    image: &str,
    mounts: Vec<v1::Mount>,
    attempt: u32,
) -> Result<v1::ContainerConfig, AgentError> {
    let spec = source.pod.spec.clone().unwrap_or_default();
    let mut labels = base_labels(source);
    labels.insert(CONTAINER_NAME.into(), c.name.clone());
    let annotations = HashMap::from([(RESTART_COUNT.to_string(), attempt.to_string())]);
    let mut envs = config_data::env_from(c, &source.config).map_err(AgentError::Invalid)?;
    for e in c.env.iter().flatten() {
        match config_data::key_ref(e, &source.config).map_err(AgentError::Invalid)? {
            config_data::KeyRef::Value(value) => {
                envs.push(v1::KeyValue { key: e.name.clone(), value });
                continue;
            }
            config_data::KeyRef::Skip => continue,
            config_data::KeyRef::Other => {}
        }
        if e.value_from.is_some() {
            tracing::warn!(container = %c.name, env = %e.name, "env valueFrom is not supported in agent mode; skipped");
            continue;
        }
        envs.push(v1::KeyValue { key: e.name.clone(), value: e.value.clone().unwrap_or_default() });
    }
    config_data::last_wins(&mut envs);
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
        command: c.command.iter().flatten().map(|a| expand(a, &envs)).collect(),
        args: c.args.iter().flatten().map(|a| expand(a, &envs)).collect(),
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

/// Kubernetes' `$(VAR)` references in command and args: a defined variable is replaced,
/// `$$` is a literal `$`, anything else (undefined, unclosed) stays as written.
fn expand(arg: &str, envs: &[v1::KeyValue]) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(body) = rest.strip_prefix("$(")
            && let Some(end) = body.find(')')
            && let Some(kv) = envs.iter().rev().find(|kv| kv.key == body[..end])
        {
            out.push_str(&kv.value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
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

/// Stops and removes the pod's sandbox (its containers go with it), then its volumes and
/// directory. Volumes stay (and are retried next sync) if the sandbox could not go.
#[tracing::instrument(skip_all, fields(pod = %pod.source.name(), sandbox = %pod.sandbox_id))]
pub async fn remove(cri: &Arc<Cri>, pod: &RunningPod) -> Result<(), AgentError> {
    let id = pod.sandbox_id.clone();
    // Already gone (removed behind our back) is what we want.
    let gone_ok = |r: Result<(), tonic::Status>| match r {
        Err(status) if status.code() != tonic::Code::NotFound => Err(status),
        _ => Ok(()),
    };
    gone_ok(RuntimeService::stop_pod_sandbox(&**cri, Request::new(v1::StopPodSandboxRequest { pod_sandbox_id: id.clone() })).await.map(|_| ()))
        .map_err(cri_err("StopPodSandbox"))?;
    gone_ok(RuntimeService::remove_pod_sandbox(&**cri, Request::new(v1::RemovePodSandboxRequest { pod_sandbox_id: id })).await.map(|_| ()))
        .map_err(cri_err("RemovePodSandbox"))?;
    let volumes = pod.volumes.clone();
    let dir = pod.pod_dir.clone();
    tokio::task::spawn_blocking(move || {
        volumes.teardown_all(true).map_err(|e| AgentError::Volume(e.to_string()))?;
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
    Ok(())
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
    fn command_references_expand_like_kubernetes() {
        let envs = vec![
            v1::KeyValue { key: "NAME".into(), value: "web".into() },
            v1::KeyValue { key: "PORT".into(), value: "80".into() },
        ];
        assert_eq!(expand("--name=$(NAME):$(PORT)", &envs), "--name=web:80");
        assert_eq!(expand("$$(NAME) $(UNSET) $(NAME", &envs), "$(NAME) $(UNSET) $(NAME");
        assert_eq!(expand("cost $5 $", &envs), "cost $5 $");
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
