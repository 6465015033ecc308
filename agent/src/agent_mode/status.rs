//! Pod status from the runtime: phase, conditions and container statuses with restart
//! counts, as a v1 `PodStatus`. With no API server in this slice it is written next to the
//! pod (`<root>/agent/pods/<uid>/status.json`) for operators and tests.

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
        Some(s) if s.state == v1::ContainerState::ContainerExited as i32 && !backing_off => k8s::ContainerState {
            terminated: Some(k8s::ContainerStateTerminated {
                exit_code: s.exit_code,
                reason: Some(s.reason.clone()).filter(|r| !r.is_empty()),
                started_at: time(s.started_at),
                finished_at: time(s.finished_at),
                ..Default::default()
            }),
            ..Default::default()
        },
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
