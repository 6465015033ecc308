//! An API pod's persistentVolumeClaim volumes → `local` PersistentVolumes on this node,
//! looked up before the pod starts: the claim must be `Bound` with a `spec.volumeName`, the
//! volume must be `local` (a directory or block device, which [`capstan_volumes::Local`]
//! checks when it binds it) and its required node affinity must match this node (the
//! matcher of [`crate::agent_mode::admission`]). Any failure names the pod's volume, the
//! claim and the cause; the sync loop reports it in the pod's status and tries again on its
//! next round, so binding the claim later lets the pod start.
//!
//! Static pods may not reference claims, as kubelet refuses API objects in static pods.

use capstan_volumes::{Local, VolumeMode};
use k8s_openapi::api::core::v1 as k8s;
use kube::api::Api;

use crate::agent_mode::admission;
use crate::agent_mode::node_info::NodeInfo;
use crate::agent_mode::volumes::{ClaimSource, Claims};

/// A pod volume that names a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimUse {
    pub volume: String,
    pub claim: String,
}

pub fn uses(spec: &k8s::PodSpec) -> Vec<ClaimUse> {
    spec.volumes
        .iter()
        .flatten()
        .filter_map(|v| v.persistent_volume_claim.as_ref().map(|c| ClaimUse { volume: v.name.clone(), claim: c.claim_name.clone() }))
        .collect()
}

/// A static pod with a claim volume is refused, naming it.
pub fn refuse_static(spec: &k8s::PodSpec) -> Result<(), String> {
    match uses(spec).first() {
        None => Ok(()),
        Some(u) => Err(format!(
            "volume {:?}: persistentVolumeClaim {:?}: static pods may not reference API objects (kubelet refuses them too); use a hostPath volume",
            u.volume, u.claim
        )),
    }
}

/// Why a pod's claims could not be resolved; either way the message names the volume and
/// the claim.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// The API server did not answer as asked: worth trying again soon.
    #[error("{0}")]
    Unreachable(String),
    /// The claim or its volume cannot be used here (not bound, not local, another node's).
    #[error("{0}")]
    Unusable(String),
}

/// Fetches and checks every claim the pod uses.
pub async fn resolve(client: &kube::Client, pod: &k8s::Pod, node: &NodeInfo) -> Result<Claims, ClaimError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let Some(spec) = &pod.spec else { return Ok(Claims::new()) };
    let pvcs: Api<k8s::PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let pvs: Api<k8s::PersistentVolume> = Api::all(client.clone());
    let mut claims = Claims::new();
    for u in uses(spec) {
        if claims.contains_key(&u.claim) {
            continue;
        }
        let fail = |cause: String| format!("volume {:?}: persistentVolumeClaim {:?}: {cause}", u.volume, u.claim);
        let unreachable = |cause: String| ClaimError::Unreachable(fail(cause));
        let unusable = |cause: String| ClaimError::Unusable(fail(cause));
        let pvc = super::bounded(pvcs.get_opt(&u.claim)).await.map_err(|e| unreachable(format!("cannot get it from the API server: {e}")))?;
        let pv_name = bound_volume(pvc.as_ref(), namespace).map_err(unusable)?;
        let pv = super::bounded(pvs.get_opt(&pv_name)).await.map_err(|e| unreachable(format!("cannot get PersistentVolume {pv_name:?}: {e}")))?;
        let pv = pv.ok_or_else(|| unusable(format!("PersistentVolume {pv_name:?} not found")))?;
        let local = local_volume(&pv, namespace, &u.claim, node).map_err(unusable)?;
        claims.insert(u.claim, ClaimSource::Local(local));
    }
    Ok(claims)
}

/// The PersistentVolume a claim is bound to.
pub fn bound_volume(pvc: Option<&k8s::PersistentVolumeClaim>, namespace: &str) -> Result<String, String> {
    let pvc = pvc.ok_or_else(|| format!("not found in namespace {namespace:?}"))?;
    let phase = pvc.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let volume = pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref()).unwrap_or_default();
    match (phase, volume) {
        ("Bound", v) if !v.is_empty() => Ok(v.to_string()),
        ("Bound", _) => Err("is Bound but has no spec.volumeName".into()),
        (phase, _) => Err(format!("is not bound (phase {phase})")),
    }
}

/// A PersistentVolume as the local volume to mount: `spec.local`, bound to this claim,
/// its node affinity matching this node. Read-only when the volume only allows
/// ReadOnlyMany (the pod volume's own `readOnly` is applied by [`crate::agent_mode::volumes`]).
pub fn local_volume(pv: &k8s::PersistentVolume, namespace: &str, claim: &str, node: &NodeInfo) -> Result<Local, String> {
    let name = pv.metadata.name.as_deref().unwrap_or_default();
    let spec = pv.spec.clone().unwrap_or_default();
    if let Some(r) = &spec.claim_ref
        && (r.name.as_deref() != Some(claim) || r.namespace.as_deref().is_some_and(|ns| ns != namespace))
    {
        let other = format!("{}/{}", r.namespace.as_deref().unwrap_or_default(), r.name.as_deref().unwrap_or_default());
        return Err(format!("PersistentVolume {name:?} is bound to claim {other}"));
    }
    let local = spec.local.as_ref().ok_or_else(|| format!("PersistentVolume {name:?} is not a local volume (only local PersistentVolumes are supported)"))?;
    let required = spec.node_affinity.as_ref().and_then(|a| a.required.as_ref());
    if let Some(mismatch) = required.and_then(|r| admission::required_affinity(r, node)) {
        return Err(format!("PersistentVolume {name:?} node affinity does not match node {:?}: {mismatch}", node.name));
    }
    let modes = spec.access_modes.clone().unwrap_or_default();
    let read_only = modes.iter().any(|m| m == "ReadOnlyMany") && !modes.iter().any(|m| m.starts_with("ReadWrite"));
    let volume_mode = if spec.volume_mode.as_deref() == Some("Block") { VolumeMode::Block } else { VolumeMode::Filesystem };
    Ok(Local { fs_type: local.fs_type.clone(), volume_mode, ..Local::new(&local.path, read_only) })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn node() -> NodeInfo {
        NodeInfo {
            name: "edge-1".into(),
            labels: BTreeMap::from([("kubernetes.io/hostname".to_string(), "edge-1".to_string())]),
            ..Default::default()
        }
    }

    fn pvc(json: serde_json::Value) -> k8s::PersistentVolumeClaim {
        serde_json::from_value(json).unwrap()
    }

    fn pv(spec: serde_json::Value) -> k8s::PersistentVolume {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "pv1"}, "spec": spec})).unwrap()
    }

    fn affinity(host: &str) -> serde_json::Value {
        serde_json::json!({"required": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [host]}]}]}})
    }

    #[test]
    fn only_bound_claims_name_a_volume() {
        let bound = pvc(serde_json::json!({"spec": {"volumeName": "pv1"}, "status": {"phase": "Bound"}}));
        assert_eq!(bound_volume(Some(&bound), "t").unwrap(), "pv1");
        let pending = pvc(serde_json::json!({"spec": {}, "status": {"phase": "Pending"}}));
        assert_eq!(bound_volume(Some(&pending), "t").unwrap_err(), "is not bound (phase Pending)");
        assert_eq!(bound_volume(Some(&pvc(serde_json::json!({"spec": {}}))), "t").unwrap_err(), "is not bound (phase Pending)");
        let no_name = pvc(serde_json::json!({"spec": {}, "status": {"phase": "Bound"}}));
        assert!(bound_volume(Some(&no_name), "t").unwrap_err().contains("no spec.volumeName"));
        assert!(bound_volume(None, "t").unwrap_err().contains("not found"));
    }

    #[test]
    fn local_volumes_with_matching_affinity_resolve() {
        let v = pv(serde_json::json!({"local": {"path": "/mnt/disks/a"}, "accessModes": ["ReadWriteOnce"], "nodeAffinity": affinity("edge-1"),
                                       "claimRef": {"namespace": "t", "name": "data"}}));
        assert_eq!(local_volume(&v, "t", "data", &node()).unwrap(), Local::new("/mnt/disks/a", false));
        // ReadOnlyMany alone mounts read-only; a block-device PV keeps its fsType.
        let v = pv(serde_json::json!({"local": {"path": "/dev/sdz", "fsType": "xfs"}, "accessModes": ["ReadOnlyMany"]}));
        let l = local_volume(&v, "t", "data", &node()).unwrap();
        assert!(l.read_only && l.fs_type.as_deref() == Some("xfs"), "{l:?}");
        let v = pv(serde_json::json!({"local": {"path": "/dev/sdz"}, "volumeMode": "Block"}));
        assert_eq!(local_volume(&v, "t", "data", &node()).unwrap().volume_mode, VolumeMode::Block);
    }

    #[test]
    fn other_volumes_nodes_and_claims_are_refused() {
        let nfs = pv(serde_json::json!({"nfs": {"server": "10.0.0.1", "path": "/x"}}));
        assert!(local_volume(&nfs, "t", "data", &node()).unwrap_err().contains("not a local volume"));
        let elsewhere = pv(serde_json::json!({"local": {"path": "/mnt/a"}, "nodeAffinity": affinity("edge-2")}));
        let e = local_volume(&elsewhere, "t", "data", &node()).unwrap_err();
        assert!(e.contains("node affinity does not match node \"edge-1\"") && e.contains("kubernetes.io/hostname In [\"edge-2\"]"), "{e}");
        let taken = pv(serde_json::json!({"local": {"path": "/mnt/a"}, "claimRef": {"namespace": "t", "name": "other"}}));
        assert!(local_volume(&taken, "t", "data", &node()).unwrap_err().contains("bound to claim t/other"));
    }

    #[test]
    fn static_pods_may_not_use_claims() {
        let spec: k8s::PodSpec = serde_json::from_value(serde_json::json!({"containers": [],
            "volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "data", "persistentVolumeClaim": {"claimName": "fast"}}]}))
        .unwrap();
        assert_eq!(uses(&spec), [ClaimUse { volume: "data".into(), claim: "fast".into() }]);
        let e = refuse_static(&spec).unwrap_err();
        assert!(e.contains("\"data\"") && e.contains("\"fast\"") && e.contains("static pods"), "{e}");
        assert!(refuse_static(&k8s::PodSpec::default()).is_ok());
    }
}
