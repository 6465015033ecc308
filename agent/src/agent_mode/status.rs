//! Pod status from the runtime: phase, conditions, init and app container statuses with
//! restart counts, last states, readiness from the probes, and the pod's and node's IPs,
//! as a v1 `PodStatus`. It is written next to the pod (`<root>/agent/pods/<uid>/status.json`)
//! for operators and tests; API pods' is also sent to the API server
//! ([`super::api::pod_status`]).

use std::collections::HashMap;

use cri_proto::v1;
use k8s_openapi::api::core::v1 as k8s;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::desired::DesiredPod;
use super::init_containers;
use super::node_info::NodeInfo;
use super::pod_sync::{RunningPod, Tracked};
use super::qos;

/// Builds the pod's status from what the sync loop tracks and the CRI statuses.
pub fn pod_status(pod: &RunningPod, cri: &HashMap<String, v1::ContainerStatus>) -> k8s::PodStatus {
    let spec = pod.source.pod.spec.clone().unwrap_or_default();
    let mut status = k8s::PodStatus {
        start_time: pod.started_at.duration_since(std::time::UNIX_EPOCH).ok().and_then(|d| time(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))),
        qos_class: Some(qos::class(&spec).name().into()),
        host_ip: pod.node.host_ips.first().cloned(),
        host_ips: (!pod.node.host_ips.is_empty()).then(|| pod.node.host_ips.iter().map(|ip| k8s::HostIP { ip: ip.clone() }).collect()),
        ..Default::default()
    };
    if let Some(r) = &pod.rejection {
        status.phase = Some("Failed".into());
        status.reason = Some(r.reason.clone());
        status.message = Some(r.message.clone());
        return status;
    }
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let inits = spec.init_containers.clone().unwrap_or_default();
    let init_statuses: Vec<_> = inits.iter().map(|c| container_status(c, pod.containers.get(&c.name), cri.get(&c.name), true, pod.initialized)).collect();
    let statuses: Vec<_> = spec.containers.iter().map(|c| container_status(c, pod.containers.get(&c.name), cri.get(&c.name), false, pod.initialized)).collect();
    status.phase = Some(phase(pod, &statuses, policy).into());
    let incomplete: Vec<&str> = if pod.initialized {
        Vec::new()
    } else {
        let states: Vec<_> = inits
            .iter()
            .map(|c| {
                let t = pod.containers.get(&c.name);
                let state = match cri.get(&c.name) {
                    None => init_containers::State::NotStarted,
                    Some(s) if s.state == v1::ContainerState::ContainerExited as i32 => init_containers::State::Exited { code: s.exit_code },
                    Some(_) => init_containers::State::Running { started: t.is_some_and(|t| t.started(c)) },
                };
                init_containers::Init { sidecar: c.restart_policy.as_deref() == Some("Always"), state, started_once: t.is_some_and(|t| t.started_once) }
            })
            .collect();
        init_containers::incomplete(&states).into_iter().map(|i| inits[i].name.as_str()).collect()
    };
    // Sidecars count for readiness like app containers; regular init containers do not.
    let sidecar = |name: &str| inits.iter().any(|c| c.name == name && c.restart_policy.as_deref() == Some("Always"));
    let unready: Vec<&str> =
        init_statuses.iter().filter(|s| sidecar(&s.name)).chain(&statuses).filter(|s| !s.ready).map(|s| s.name.as_str()).collect();
    let condition = |type_: &str, ok: bool, reason: &str, what: &str, names: &[&str]| k8s::PodCondition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: (!ok).then(|| reason.to_string()),
        message: (!ok).then(|| format!("containers with {what} status: [{}]", names.join(" "))),
        ..Default::default()
    };
    status.conditions = Some(vec![
        condition("PodScheduled", true, "", "", &[]),
        condition("Initialized", pod.initialized, "ContainersNotInitialized", "incomplete", &incomplete),
        condition("ContainersReady", unready.is_empty(), "ContainersNotReady", "unready", &unready),
        condition("Ready", unready.is_empty(), "ContainersNotReady", "unready", &unready),
    ]);
    status.init_container_statuses = (!init_statuses.is_empty()).then_some(init_statuses);
    status.container_statuses = Some(statuses);
    // A host-network pod's IPs are the node's, as kubelet reports them.
    let pod_ips = if spec.host_network.unwrap_or(false) { &pod.node.host_ips } else { &pod.pod_ips };
    status.pod_ip = pod_ips.first().cloned();
    status.pod_ips = (!pod_ips.is_empty()).then(|| pod_ips.iter().map(|ip| k8s::PodIP { ip: ip.clone() }).collect());
    status
}

/// A pod that could not be started (a volume that cannot be set up, a missing ConfigMap):
/// Pending, every container waiting with the failure's reason and message, as kubelet shows
/// a pod stuck in ContainerCreating. No start time: the start is still to come, and a
/// status that does not change is not sent again.
pub fn not_started(source: &DesiredPod, node: &NodeInfo, reason: &str, message: &str) -> k8s::PodStatus {
    let spec = source.pod.spec.clone().unwrap_or_default();
    let inits = spec.init_containers.clone().unwrap_or_default();
    let waiting = |c: &k8s::Container| k8s::ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        started: Some(false),
        state: Some(k8s::ContainerState {
            waiting: Some(k8s::ContainerStateWaiting { reason: Some(reason.into()), message: Some(message.into()) }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let names = |cs: &[k8s::Container]| cs.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(" ");
    let condition = |type_: &str, ok: bool, reason: &str, what: &str, names: String| k8s::PodCondition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: (!ok).then(|| reason.to_string()),
        message: (!ok).then(|| format!("containers with {what} status: [{names}]")),
        ..Default::default()
    };
    k8s::PodStatus {
        phase: Some("Pending".into()),
        qos_class: Some(qos::class(&spec).name().into()),
        host_ip: node.host_ips.first().cloned(),
        host_ips: (!node.host_ips.is_empty()).then(|| node.host_ips.iter().map(|ip| k8s::HostIP { ip: ip.clone() }).collect()),
        conditions: Some(vec![
            condition("PodScheduled", true, "", "", String::new()),
            condition("Initialized", inits.is_empty(), "ContainersNotInitialized", "incomplete", names(&inits)),
            condition("ContainersReady", false, "ContainersNotReady", "unready", names(&spec.containers)),
            condition("Ready", false, "ContainersNotReady", "unready", names(&spec.containers)),
        ]),
        init_container_statuses: (!inits.is_empty()).then(|| inits.iter().map(waiting).collect()),
        container_statuses: Some(spec.containers.iter().map(waiting).collect()),
        ..Default::default()
    }
}

/// Kubelet's phase: Pending until initialized (Failed if an init container failed under
/// Never); then from the app containers: all exited cleanly (not under Always) →
/// Succeeded, all exited with a failure under Never → Failed, anything running or
/// restarting → Running.
fn phase(pod: &RunningPod, statuses: &[k8s::ContainerStatus], policy: &str) -> &'static str {
    if pod.init_failed {
        return "Failed";
    }
    if !pod.initialized {
        return "Pending";
    }
    let (mut running, mut failed, mut succeeded) = (0, 0, 0);
    for s in statuses {
        let state = s.state.clone().unwrap_or_default();
        match (&state.running, &state.terminated) {
            (Some(_), _) => running += 1,
            (None, Some(t)) if t.exit_code == 0 => succeeded += 1,
            (None, Some(_)) => failed += 1,
            _ => {}
        }
    }
    let total = statuses.len();
    // A container waiting for its back-off is still "Running" for the pod, as in kubelet.
    if succeeded == total && policy != "Always" {
        "Succeeded"
    } else if succeeded + failed == total && failed > 0 && policy == "Never" {
        "Failed"
    } else if running > 0 || succeeded + failed > 0 || statuses.iter().any(|s| s.restart_count > 0) {
        "Running"
    } else {
        "Pending"
    }
}

fn container_status(c: &k8s::Container, tracked: Option<&Tracked>, s: Option<&v1::ContainerStatus>, init: bool, initialized: bool) -> k8s::ContainerStatus {
    let state = container_state(tracked, s, !init && !initialized);
    let running = state.running.is_some();
    // A declared probe counts as not passed until its worker for this instance says so.
    let probes = tracked.and_then(Tracked::probe_results);
    let started = running && (c.startup_probe.is_none() || probes.as_ref().is_some_and(|r| r.started));
    let sidecar = c.restart_policy.as_deref() == Some("Always");
    // A regular init container is "ready" once it has succeeded.
    let ready = if init && !sidecar {
        state.terminated.as_ref().is_some_and(|t| t.exit_code == 0)
    } else {
        started && (c.readiness_probe.is_none() || probes.as_ref().is_some_and(|r| r.ready))
    };
    k8s::ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        image_id: s.map(|s| s.image_ref.clone()).unwrap_or_default(),
        container_id: tracked.and_then(|t| t.id.clone()).map(|id| format!("capstan://{id}")),
        restart_count: tracked.map_or(0, |t| i32::try_from(t.restarts).unwrap_or(i32::MAX)),
        ready,
        started: Some(started),
        state: Some(state),
        last_state: tracked
            .and_then(|t| t.last_terminated.clone())
            .map(|terminated| k8s::ContainerState { terminated: Some(terminated), ..Default::default() }),
        ..Default::default()
    }
}

fn time(nanos: i64) -> Option<Time> {
    if nanos > 0 { k8s_openapi::jiff::Timestamp::from_nanosecond(i128::from(nanos)).ok().map(Time) } else { None }
}

/// Running or terminated as the runtime says, except that an exited container waiting to
/// be restarted is waiting (CrashLoopBackOff), and one not created yet waits for the pod's
/// init containers or its own creation (or says why that failed).
fn container_state(tracked: Option<&Tracked>, s: Option<&v1::ContainerStatus>, initializing: bool) -> k8s::ContainerState {
    let backing_off = tracked.is_some_and(|t| t.not_before.is_some()) && s.is_some_and(|s| s.state == v1::ContainerState::ContainerExited as i32);
    match s {
        Some(s) if s.state == v1::ContainerState::ContainerRunning as i32 => k8s::ContainerState {
            running: Some(k8s::ContainerStateRunning { started_at: time(s.started_at) }),
            ..Default::default()
        },
        Some(s) if s.state == v1::ContainerState::ContainerExited as i32 && !backing_off => {
            k8s::ContainerState { terminated: Some(terminated(s, None)), ..Default::default() }
        }
        _ => {
            let (reason, message) = match tracked.and_then(|t| t.waiting_reason.clone()) {
                Some(reason) => (reason, tracked.and_then(|t| t.waiting_message.clone())),
                None if backing_off => ("CrashLoopBackOff".to_string(), None),
                None if initializing => ("PodInitializing".to_string(), None),
                None => ("ContainerCreating".to_string(), None),
            };
            k8s::ContainerState { waiting: Some(k8s::ContainerStateWaiting { reason: Some(reason), message }), ..Default::default() }
        }
    }
}

/// An exited container as a terminated state, also the next instance's `lastState`;
/// `message` (why the agent killed it: a failed probe) goes before the runtime's.
pub fn terminated(s: &v1::ContainerStatus, message: Option<String>) -> k8s::ContainerStateTerminated {
    k8s::ContainerStateTerminated {
        exit_code: s.exit_code,
        reason: Some(s.reason.clone()).filter(|r| !r.is_empty()),
        message: message.or_else(|| Some(s.message.clone()).filter(|m| !m.is_empty())),
        started_at: time(s.started_at),
        finished_at: time(s.finished_at),
        container_id: Some(format!("capstan://{}", s.id)).filter(|_| !s.id.is_empty()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::agent_mode::admission::Rejection;
    use crate::agent_mode::desired::DesiredPod;
    use crate::agent_mode::node_info::NodeInfo;
    use crate::agent_mode::pod_sync::new_pod;

    /// A pod with `tracked` containers (name, id, restarts, done) and `init` init containers.
    fn pod_with(policy: &str, dir: &std::path::Path, init: &[&str], tracked: &[(&str, Option<&str>, u32, bool)]) -> RunningPod {
        let containers: Vec<_> =
            tracked.iter().filter(|(n, ..)| !init.contains(n)).map(|(n, ..)| serde_json::json!({"name": n, "image": "i"})).collect();
        let inits: Vec<_> = init.iter().map(|n| serde_json::json!({"name": n, "image": "i"})).collect();
        let manifest = serde_json::json!({"metadata": {"name": "p"}, "spec": {"restartPolicy": policy, "containers": containers, "initContainers": inits}});
        let source = DesiredPod::from_file("/m/p.yaml".into(), "h".into(), serde_json::from_value(manifest).unwrap());
        let node = Arc::new(NodeInfo { host_ips: vec!["10.0.0.5".into()], ..Default::default() });
        let volumes = capstan_volumes::PodVolumes::new(dir, "h").unwrap();
        let mut pod = new_pod(source, &node, "s".into(), Default::default(), volumes, Default::default(), dir.join("h"), None);
        for (n, id, restarts, done) in tracked {
            let t = pod.containers.get_mut(*n).unwrap();
            (t.id, t.restarts, t.done) = (id.map(String::from), *restarts, *done);
        }
        pod
    }

    fn pod(policy: &str, dir: &std::path::Path, tracked: &[(&str, Option<&str>, u32, bool)]) -> RunningPod {
        pod_with(policy, dir, &[], tracked)
    }

    fn cri(state: v1::ContainerState, exit_code: i32) -> v1::ContainerStatus {
        v1::ContainerStatus { state: state as i32, exit_code, started_at: 1_700_000_000_000_000_000, ..Default::default() }
    }

    #[test]
    fn phase_and_container_states_follow_the_restart_policy() {
        let dir = tempfile::tempdir().unwrap();
        let exited = v1::ContainerState::ContainerExited;
        let running = v1::ContainerState::ContainerRunning;
        // OnFailure: a server running and a finished helper → Running, helper terminated.
        let p = pod("OnFailure", dir.path(), &[("server", Some("a"), 0, false), ("once", Some("b"), 0, true)]);
        let st = pod_status(&p, &HashMap::from([("server".into(), cri(running, 0)), ("once".into(), cri(exited, 0))]));
        assert_eq!(st.phase.as_deref(), Some("Running"));
        assert_eq!(st.host_ip.as_deref(), Some("10.0.0.5"));
        let cs = st.container_statuses.unwrap();
        assert!(cs[0].state.as_ref().unwrap().running.is_some() && cs[0].ready);
        assert_eq!(cs[1].state.as_ref().unwrap().terminated.as_ref().unwrap().exit_code, 0);
        assert_eq!(cs[0].container_id.as_deref(), Some("capstan://a"));
        // Not ready: the conditions name it.
        let conditions = st.conditions.unwrap();
        let ready = conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!((ready.status.as_str(), ready.message.as_deref()), ("False", Some("containers with unready status: [once]")));
        // Everything finished cleanly → Succeeded (not under Always).
        let p = pod("OnFailure", dir.path(), &[("once", Some("b"), 0, true)]);
        let st = pod_status(&p, &HashMap::from([("once".into(), cri(exited, 0))]));
        assert_eq!(st.phase.as_deref(), Some("Succeeded"));
        // Never with a failure → Failed.
        let p = pod("Never", dir.path(), &[("once", Some("b"), 0, true)]);
        let st = pod_status(&p, &HashMap::from([("once".into(), cri(exited, 3))]));
        assert_eq!(st.phase.as_deref(), Some("Failed"));
        // Always, exited and waiting for its back-off: CrashLoopBackOff, restarts counted,
        // the previous end in lastState.
        let mut p = pod("Always", dir.path(), &[("crash", Some("c"), 4, false)]);
        let t = p.containers.get_mut("crash").unwrap();
        t.not_before = Some(std::time::Instant::now());
        t.last_terminated = Some(k8s::ContainerStateTerminated { exit_code: 137, reason: Some("Error".into()), ..Default::default() });
        let st = pod_status(&p, &HashMap::from([("crash".into(), cri(exited, 0))]));
        assert_eq!(st.phase.as_deref(), Some("Running"));
        let cs = &st.container_statuses.unwrap()[0];
        assert_eq!(cs.restart_count, 4);
        assert_eq!(cs.state.as_ref().unwrap().waiting.as_ref().unwrap().reason.as_deref(), Some("CrashLoopBackOff"));
        assert_eq!(cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap().exit_code, 137);
        assert!(!cs.ready);
        // Not started yet → Pending.
        let p = pod("Always", dir.path(), &[("c", None, 0, false)]);
        assert_eq!(pod_status(&p, &HashMap::new()).phase.as_deref(), Some("Pending"));
    }

    #[test]
    fn init_containers_hold_the_pod_in_pending_until_done() {
        let dir = tempfile::tempdir().unwrap();
        let exited = v1::ContainerState::ContainerExited;
        let running = v1::ContainerState::ContainerRunning;
        let p = pod_with("Always", dir.path(), &["first", "second"], &[("first", Some("a"), 0, false), ("second", Some("b"), 0, false), ("app", None, 0, false)]);
        let st = pod_status(&p, &HashMap::from([("first".into(), cri(exited, 0)), ("second".into(), cri(running, 0))]));
        assert_eq!(st.phase.as_deref(), Some("Pending"));
        let init = st.init_container_statuses.unwrap();
        assert!(init[0].ready && init[0].state.as_ref().unwrap().terminated.is_some());
        assert!(!init[1].ready && init[1].state.as_ref().unwrap().running.is_some());
        let app = &st.container_statuses.unwrap()[0];
        assert_eq!(app.state.as_ref().unwrap().waiting.as_ref().unwrap().reason.as_deref(), Some("PodInitializing"));
        let conditions = st.conditions.unwrap();
        let initialized = conditions.iter().find(|c| c.type_ == "Initialized").unwrap();
        assert_eq!(initialized.status, "False");
        assert_eq!(initialized.reason.as_deref(), Some("ContainersNotInitialized"));
        assert_eq!(initialized.message.as_deref(), Some("containers with incomplete status: [second]"));
        // A failed init container under Never fails the pod.
        let mut p = pod_with("Never", dir.path(), &["first"], &[("first", Some("a"), 0, true), ("app", None, 0, false)]);
        p.init_failed = true;
        let st = pod_status(&p, &HashMap::from([("first".into(), cri(exited, 1))]));
        assert_eq!(st.phase.as_deref(), Some("Failed"));
        assert_eq!(st.init_container_statuses.unwrap()[0].state.as_ref().unwrap().terminated.as_ref().unwrap().exit_code, 1);
    }

    /// Between a container's start and the first sync after it no probe worker exists yet:
    /// a declared readiness probe must still keep it unready.
    #[test]
    fn declared_probes_count_as_not_passed_until_run() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "probed", "image": "i", "readinessProbe": {"tcpSocket": {"port": 80}}},
            {"name": "plain", "image": "i"}
        ]}});
        let source = DesiredPod::from_file("/m/p.yaml".into(), "h".into(), serde_json::from_value(manifest).unwrap());
        let volumes = capstan_volumes::PodVolumes::new(dir.path(), "h").unwrap();
        let mut p = new_pod(source, &Arc::new(NodeInfo::default()), "s".into(), Default::default(), volumes, Default::default(), dir.path().join("h"), None);
        for (name, id) in [("probed", "a"), ("plain", "b")] {
            p.containers.get_mut(name).unwrap().id = Some(id.into());
        }
        let running = cri(v1::ContainerState::ContainerRunning, 0);
        let st = pod_status(&p, &HashMap::from([("probed".into(), running.clone()), ("plain".into(), running)]));
        let cs = st.container_statuses.unwrap();
        assert_eq!((cs[0].name.as_str(), cs[0].ready, cs[0].started), ("probed", false, Some(true)));
        assert_eq!((cs[1].name.as_str(), cs[1].ready), ("plain", true));
    }

    #[test]
    fn pods_that_cannot_start_are_pending_with_the_cause() {
        let manifest = serde_json::json!({"metadata": {"name": "db"}, "spec": {"containers": [{"name": "main", "image": "i"}]}});
        let source = DesiredPod::from_api(serde_json::from_value(manifest).unwrap());
        let node = NodeInfo { host_ips: vec!["10.0.0.5".into()], ..Default::default() };
        let st = not_started(&source, &node, "ContainerCreating", "volume \"data\": not bound");
        assert_eq!((st.phase.as_deref(), st.host_ip.as_deref(), st.start_time.as_ref()), (Some("Pending"), Some("10.0.0.5"), None));
        let waiting = st.container_statuses.unwrap()[0].state.clone().unwrap().waiting.unwrap();
        assert_eq!((waiting.reason.as_deref(), waiting.message.as_deref()), (Some("ContainerCreating"), Some("volume \"data\": not bound")));
        assert_eq!(condition_status(&st.conditions, "Ready"), Some("False".into()));
        assert_eq!(condition_status(&st.conditions, "Initialized"), Some("True".into()));
    }

    fn condition_status(conditions: &Option<Vec<k8s::PodCondition>>, kind: &str) -> Option<String> {
        conditions.iter().flatten().find(|c| c.type_ == kind).map(|c| c.status.clone())
    }

    #[test]
    fn refused_pods_are_failed_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = pod("Always", dir.path(), &[("c", None, 0, false)]);
        p.rejection = Some(Rejection { reason: "NodeAffinity".into(), message: "nodeSelector disktype=hdd".into() });
        let st = pod_status(&p, &HashMap::new());
        assert_eq!((st.phase.as_deref(), st.reason.as_deref()), (Some("Failed"), Some("NodeAffinity")));
        assert!(st.container_statuses.is_none());
    }
}
