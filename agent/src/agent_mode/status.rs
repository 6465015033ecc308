//! Pod status from the runtime: phase, conditions and container statuses with restart
//! counts, as a v1 `PodStatus`. It is written next to the pod
//! (`<root>/agent/pods/<uid>/status.json`) for operators and tests; API pods' is also sent
//! to the API server ([`super::api::pod_status`]).

use std::collections::HashMap;

use cri_proto::v1;
use k8s_openapi::api::core::v1 as k8s;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::pod_sync::{RunningPod, Tracked};

/// Builds the pod's status from what the restart loop tracks and the CRI statuses.
pub fn pod_status(pod: &RunningPod, cri: &HashMap<String, v1::ContainerStatus>) -> k8s::PodStatus {
    let spec = pod.source.pod.spec.clone().unwrap_or_default();
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let mut statuses = Vec::new();
    let (mut running, mut waiting, mut failed, mut succeeded) = (0, 0, 0, 0);
    for c in &spec.containers {
        let tracked = pod.containers.get(&c.name);
        let s = cri.get(&c.name);
        let state = container_state(tracked, s);
        let ready = state.running.is_some();
        match (&state.running, &state.terminated) {
            (Some(_), _) => running += 1,
            (None, Some(t)) if t.exit_code == 0 => succeeded += 1,
            (None, Some(_)) => failed += 1,
            _ => waiting += 1,
        }
        statuses.push(k8s::ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: s.map(|s| s.image_ref.clone()).unwrap_or_default(),
            container_id: tracked.and_then(|t| t.id.clone()).map(|id| format!("capstan://{id}")),
            restart_count: tracked.map_or(0, |t| i32::try_from(t.restarts).unwrap_or(i32::MAX)),
            ready,
            started: Some(ready),
            state: Some(state),
            last_state: tracked.and_then(|t| t.last_termination.clone()).map(|t| k8s::ContainerState { terminated: Some(t), ..Default::default() }),
            ..Default::default()
        });
    }
    let total = spec.containers.len();
    // A container waiting for its back-off is still "Running" for the pod, as in kubelet.
    let phase = if succeeded == total && policy != "Always" {
        "Succeeded"
    } else if succeeded + failed == total && failed > 0 && policy == "Never" {
        "Failed"
    } else if running > 0 || succeeded + failed > 0 || pod.containers.values().any(|t| t.restarts > 0) {
        "Running"
    } else {
        let _ = waiting;
        "Pending"
    };
    let all_ready = statuses.iter().all(|s| s.ready);
    let condition = |type_: &str, ok: bool| k8s::PodCondition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        ..Default::default()
    };
    k8s::PodStatus {
        phase: Some(phase.into()),
        conditions: Some(vec![
            condition("PodScheduled", true),
            condition("Initialized", true),
            condition("ContainersReady", all_ready),
            condition("Ready", all_ready),
        ]),
        container_statuses: Some(statuses),
        start_time: pod.started_at.duration_since(std::time::UNIX_EPOCH).ok().and_then(|d| time(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))),
        qos_class: Some(qos_class(&spec).into()),
        ..Default::default()
    }
}

fn time(nanos: i64) -> Option<Time> {
    if nanos > 0 { k8s_openapi::jiff::Timestamp::from_nanosecond(i128::from(nanos)).ok().map(Time) } else { None }
}

fn container_state(tracked: Option<&Tracked>, s: Option<&v1::ContainerStatus>) -> k8s::ContainerState {
    let backing_off = tracked.is_some_and(|t| !t.done) && s.is_some_and(|s| s.state == v1::ContainerState::ContainerExited as i32);
    match s {
        Some(s) if s.state == v1::ContainerState::ContainerRunning as i32 => k8s::ContainerState {
            running: Some(k8s::ContainerStateRunning { started_at: time(s.started_at) }),
            ..Default::default()
        },
        Some(s) if s.state == v1::ContainerState::ContainerExited as i32 && !backing_off => {
            k8s::ContainerState { terminated: Some(terminated(s)), ..Default::default() }
        }
        _ => k8s::ContainerState {
            waiting: Some(k8s::ContainerStateWaiting {
                reason: Some(
                    tracked.and_then(|t| t.waiting_reason.clone()).unwrap_or_else(|| {
                        if backing_off { "CrashLoopBackOff".into() } else { "ContainerCreating".into() }
                    }),
                ),
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

/// An exited container as a terminated state (also the next instance's `lastState`).
pub fn terminated(s: &v1::ContainerStatus) -> k8s::ContainerStateTerminated {
    k8s::ContainerStateTerminated {
        exit_code: s.exit_code,
        reason: Some(s.reason.clone()).filter(|r| !r.is_empty()),
        started_at: time(s.started_at),
        finished_at: time(s.finished_at),
        container_id: Some(format!("capstan://{}", s.id)).filter(|_| !s.id.is_empty()),
        ..Default::default()
    }
}

/// Guaranteed when every container has equal cpu and memory requests and limits,
/// BestEffort when none has any, Burstable otherwise.
pub fn qos_class(spec: &k8s::PodSpec) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    for c in &spec.containers {
        let r = c.resources.clone().unwrap_or_default();
        let limits = r.limits.unwrap_or_default();
        let requests = r.requests.unwrap_or_default();
        any |= !limits.is_empty() || !requests.is_empty();
        for key in ["cpu", "memory"] {
            match (limits.get(key), requests.get(key).or(limits.get(key))) {
                (Some(l), Some(q)) if l == q => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(policy: &str, dir: &std::path::Path, tracked: &[(&str, Option<&str>, u32, bool)]) -> RunningPod {
        let containers: Vec<_> = tracked.iter().map(|(n, ..)| serde_json::json!({"name": n, "image": "i"})).collect();
        let manifest = serde_json::json!({"metadata": {"name": "p"}, "spec": {"restartPolicy": policy, "containers": containers}});
        RunningPod {
            source: super::super::desired::DesiredPod::from_file("/m/p.yaml".into(), "h".into(), serde_json::from_value(manifest).unwrap()),
            sandbox_id: "s".into(),
            sandbox_config: Default::default(),
            volumes: capstan_volumes::PodVolumes::new(dir, "h").unwrap(),
            volume_paths: Default::default(),
            containers: tracked
                .iter()
                .map(|(n, id, restarts, done)| {
                    let mut t = Tracked::default();
                    (t.id, t.restarts, t.done) = (id.map(String::from), *restarts, *done);
                    (n.to_string(), t)
                })
                .collect(),
            pod_dir: dir.join("h"),
            started_at: std::time::SystemTime::now(),
        }
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
        let cs = st.container_statuses.unwrap();
        assert!(cs[0].state.as_ref().unwrap().running.is_some() && cs[0].ready);
        assert_eq!(cs[1].state.as_ref().unwrap().terminated.as_ref().unwrap().exit_code, 0);
        assert_eq!(cs[0].container_id.as_deref(), Some("capstan://a"));
        // Everything finished cleanly → Succeeded (not under Always).
        let p = pod("OnFailure", dir.path(), &[("once", Some("b"), 0, true)]);
        let st = pod_status(&p, &HashMap::from([("once".into(), cri(exited, 0))]));
        assert_eq!(st.phase.as_deref(), Some("Succeeded"));
        // Never with a failure → Failed.
        let p = pod("Never", dir.path(), &[("once", Some("b"), 0, true)]);
        let st = pod_status(&p, &HashMap::from([("once".into(), cri(exited, 3))]));
        assert_eq!(st.phase.as_deref(), Some("Failed"));
        // Always, exited and waiting for its back-off: CrashLoopBackOff, restarts counted.
        let mut p = pod("Always", dir.path(), &[("crash", Some("c"), 4, false)]);
        p.containers.get_mut("crash").unwrap().last_termination = Some(terminated(&cri(exited, 3)));
        let st = pod_status(&p, &HashMap::from([("crash".into(), cri(exited, 0))]));
        assert_eq!(st.phase.as_deref(), Some("Running"));
        let cs = &st.container_statuses.unwrap()[0];
        assert_eq!(cs.restart_count, 4);
        assert_eq!(cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap().exit_code, 3, "the previous instance's end");
        assert_eq!(cs.state.as_ref().unwrap().waiting.as_ref().unwrap().reason.as_deref(), Some("CrashLoopBackOff"));
        assert!(!cs.ready);
        // Not started yet → Pending.
        let p = pod("Always", dir.path(), &[("c", None, 0, false)]);
        assert_eq!(pod_status(&p, &HashMap::new()).phase.as_deref(), Some("Pending"));
    }

    #[test]
    fn qos_classes() {
        let spec = |c: serde_json::Value| -> k8s::PodSpec { serde_json::from_value(serde_json::json!({"containers": [c]})).unwrap() };
        assert_eq!(qos_class(&spec(serde_json::json!({"name": "a"}))), "BestEffort");
        assert_eq!(
            qos_class(&spec(serde_json::json!({"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}))),
            "Guaranteed"
        );
        assert_eq!(qos_class(&spec(serde_json::json!({"name": "a", "resources": {"requests": {"cpu": "1"}}}))), "Burstable");
    }
}
