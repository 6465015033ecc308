//! Quality-of-service classes and kubelet's cgroup layout for them (cgroupfs driver):
//! Guaranteed pods under `/kubepods/pod<uid>`, Burstable under
//! `/kubepods/burstable/pod<uid>`, BestEffort under `/kubepods/besteffort/pod<uid>`; the
//! pod's sandbox gets that as its CRI `cgroup_parent` and the runtime puts the infra
//! process and every container below it.
//!
//! The class cgroups are the agent's, made before a pod starts (BestEffort's with the
//! minimum cpu weight, as kubelet does, so best-effort pods yield to the others). Agent
//! mode being the node's kubelet, it also removes them once empty after a pod goes: they
//! come back with the next pod, and a node without pods keeps no cgroups of ours.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1 as k8s;

use super::quantity;

/// The root of kubelet's pod cgroups.
pub const ROOT: &str = "/kubepods";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::Guaranteed => "Guaranteed",
            Class::Burstable => "Burstable",
            Class::BestEffort => "BestEffort",
        }
    }

    /// The class's cgroup (`/kubepods` itself for Guaranteed).
    pub fn cgroup(self) -> PathBuf {
        match self {
            Class::Guaranteed => PathBuf::from(ROOT),
            Class::Burstable => Path::new(ROOT).join("burstable"),
            Class::BestEffort => Path::new(ROOT).join("besteffort"),
        }
    }

    /// The pod's cgroup parent, kubelet's `pod<uid>` under the class.
    pub fn pod_cgroup(self, uid: &str) -> String {
        self.cgroup().join(format!("pod{uid}")).display().to_string()
    }
}

/// Kubelet's rule over every container, init containers included, counting cpu and
/// memory only: none with a request or limit → BestEffort; every one with cpu and memory
/// limits equal to its requests (an unset request is the limit) → Guaranteed; else Burstable.
pub fn class(spec: &k8s::PodSpec) -> Class {
    let mut any = false;
    let mut guaranteed = true;
    for c in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
        let r = c.resources.clone().unwrap_or_default();
        let limits = r.limits.unwrap_or_default();
        let requests = r.requests.unwrap_or_default();
        for key in ["cpu", "memory"] {
            let value = |m: &std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
                m.get(key).and_then(|q| quantity::milli(&q.0).ok())
            };
            let (limit, request) = (value(&limits), value(&requests));
            any |= limit.is_some_and(|v| v > 0) || request.is_some_and(|v| v > 0);
            match (limit, request.or(limit)) {
                (Some(l), Some(q)) if l == q && l > 0 => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        Class::BestEffort
    } else if guaranteed {
        Class::Guaranteed
    } else {
        Class::Burstable
    }
}

/// Makes the class cgroups in every hierarchy the runtime uses. Errors are returned for
/// the log only: the runtime makes a missing parent itself.
pub fn ensure() -> Result<(), String> {
    let hierarchies = capstan_runtime::cgroups::hierarchies().map_err(|e| e.to_string())?;
    for h in &hierarchies {
        for class in [Class::Burstable, Class::BestEffort] {
            let dir = h.join(rel(&class.cgroup()));
            std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
    }
    // v1: cpu.shares 2; v2: the weight kubelet derives from 2 shares.
    let besteffort = Class::BestEffort.cgroup();
    for h in &hierarchies {
        for (file, value) in [("cpu.shares", "2"), ("cpu.weight", "1")] {
            let path = h.join(rel(&besteffort)).join(file);
            if path.exists()
                && let Err(e) = std::fs::write(&path, value)
            {
                tracing::debug!(path = %path.display(), error = %e, "cannot set the best-effort cpu weight");
            }
        }
    }
    Ok(())
}

/// Removes the class cgroups that are empty (deepest first); busy or missing ones are
/// left alone. Call when a pod has gone.
pub fn tidy() {
    let Ok(hierarchies) = capstan_runtime::cgroups::hierarchies() else { return };
    for h in &hierarchies {
        for dir in [Class::Burstable.cgroup(), Class::BestEffort.cgroup(), PathBuf::from(ROOT)] {
            let path = h.join(rel(&dir));
            match std::fs::remove_dir(&path) {
                Ok(()) => tracing::debug!(path = %path.display(), "removed an empty QoS cgroup"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::trace!(path = %path.display(), error = %e, "QoS cgroup kept"),
            }
        }
    }
}

fn rel(p: &Path) -> &Path {
    p.strip_prefix("/").unwrap_or(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(containers: serde_json::Value, init: serde_json::Value) -> k8s::PodSpec {
        serde_json::from_value(serde_json::json!({"containers": containers, "initContainers": init})).unwrap()
    }

    #[test]
    fn classes_follow_kubelets_rules() {
        let c = |resources: serde_json::Value| serde_json::json!({"name": "c", "resources": resources});
        let none = serde_json::json!([]);
        assert_eq!(class(&spec(serde_json::json!([{"name": "a"}]), none.clone())), Class::BestEffort);
        let full = c(serde_json::json!({"limits": {"cpu": "1", "memory": "1Gi"}}));
        assert_eq!(class(&spec(serde_json::json!([full]), none.clone())), Class::Guaranteed);
        // Equal in value, spelled differently.
        let spelled = c(serde_json::json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1000m", "memory": "1024Mi"}}));
        assert_eq!(class(&spec(serde_json::json!([spelled]), none.clone())), Class::Guaranteed);
        assert_eq!(class(&spec(serde_json::json!([c(serde_json::json!({"requests": {"cpu": "1"}}))]), none.clone())), Class::Burstable);
        let lower = c(serde_json::json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}));
        assert_eq!(class(&spec(serde_json::json!([lower]), none.clone())), Class::Burstable);
        // An init container without resources spoils Guaranteed; other resources do not count.
        assert_eq!(class(&spec(serde_json::json!([full]), serde_json::json!([{"name": "i"}]))), Class::Burstable);
        let gpu = c(serde_json::json!({"limits": {"nvidia.com/gpu": "1"}}));
        assert_eq!(class(&spec(serde_json::json!([gpu]), none)), Class::BestEffort);
    }

    #[test]
    fn cgroup_parents_are_kubelets() {
        assert_eq!(Class::Guaranteed.pod_cgroup("u1"), "/kubepods/podu1");
        assert_eq!(Class::Burstable.pod_cgroup("u1"), "/kubepods/burstable/podu1");
        assert_eq!(Class::BestEffort.pod_cgroup("u1"), "/kubepods/besteffort/podu1");
    }
}
