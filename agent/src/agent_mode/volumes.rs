//! Pod volumes → the `capstan-volumes` crate: set up before the containers start under
//! `<root>/agent/pods/<uid>/volumes/...`, handed to containers as CRI mounts, torn down
//! after the pod is removed.
//!
//! Supported sources: emptyDir (disk, or `medium: Memory` with `sizeLimit`), hostPath with
//! its `type`, nfs, and `local` paths given as hostPath-like local volumes are the crate's;
//! configMap and secret (API pods) are directories of the crate filled by [`super::config_volumes`];
//! any other source is refused with the volume's name, so the pod does not start half-made.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use capstan_volumes::{EmptyDir, HostPath, HostPathType, Nfs, PodVolumes, Volume, VolumeSource};
use cri_proto::v1;
use k8s_openapi::api::core::v1 as k8s;

use super::quantity;

/// The pod's volumes as the crate sees them, by name.
pub fn convert(spec: &k8s::PodSpec) -> Result<Vec<Volume>, String> {
    let mut out = Vec::new();
    for v in spec.volumes.iter().flatten() {
        let source = if let Some(e) = &v.empty_dir {
            let size_limit = e.size_limit.as_ref().map(|q| quantity::units(&q.0)).transpose()?;
            let size_limit = size_limit.map(|s| u64::try_from(s).unwrap_or(u64::MAX));
            match e.medium.as_deref().unwrap_or_default() {
                "" => VolumeSource::EmptyDir(EmptyDir { size_limit, ..EmptyDir::disk() }),
                "Memory" => VolumeSource::EmptyDir(EmptyDir::memory(size_limit)),
                other => return Err(format!("volume {:?}: emptyDir medium {other:?} is not supported", v.name)),
            }
        } else if let Some(h) = &v.host_path {
            let kind = HostPathType::parse(h.type_.as_deref().unwrap_or_default())
                .map_err(|e| format!("volume {:?}: {e}", v.name))?;
            VolumeSource::HostPath(HostPath::new(&h.path, kind))
        } else if let Some(n) = &v.nfs {
            VolumeSource::Nfs(Nfs::new(&n.server, &n.path, n.read_only.unwrap_or(false)))
        } else if let Some(source) = super::config_volumes::source(v) {
            source
        } else {
            return Err(format!("volume {:?}: only emptyDir, hostPath, nfs, configMap and secret are supported in agent mode", v.name));
        };
        out.push(Volume::new(&v.name, source));
    }
    Ok(out)
}

/// Sets every volume up; on a failure the ones already made are torn down again, so a
/// failed pod leaves nothing mounted. Blocking: call from a blocking thread.
pub fn setup_all(pod_volumes: &PodVolumes, volumes: &[Volume]) -> Result<HashMap<String, PathBuf>, String> {
    let mut paths = HashMap::new();
    for v in volumes {
        match pod_volumes.setup(v) {
            Ok(path) => {
                paths.insert(v.name.clone(), path);
            }
            Err(e) => {
                if let Err(t) = pod_volumes.teardown_all(true) {
                    tracing::warn!(error = %t, "cleaning up after a failed volume setup");
                }
                return Err(format!("volume {:?}: {e}", v.name));
            }
        }
    }
    Ok(paths)
}

/// A container's `volumeMounts` as CRI mounts. `subPath` must stay inside the volume; its
/// directory is created like kubelet does.
pub fn mounts(container: &k8s::Container, paths: &HashMap<String, PathBuf>) -> Result<Vec<v1::Mount>, String> {
    let mut out = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let base = paths.get(&m.name).ok_or_else(|| format!("volumeMount {:?}: no such volume", m.name))?;
        let host_path = match m.sub_path.as_deref().unwrap_or_default() {
            "" => base.clone(),
            sub => {
                let sub_path = Path::new(sub);
                if sub_path.is_absolute() || sub_path.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
                    return Err(format!("volumeMount {:?}: subPath {sub:?} must be relative and stay inside the volume", m.name));
                }
                let p = base.join(sub_path);
                if !p.exists() {
                    std::fs::create_dir_all(&p).map_err(|e| format!("subPath {}: {e}", p.display()))?;
                }
                p
            }
        };
        let propagation = match m.mount_propagation.as_deref().unwrap_or("None") {
            "None" => v1::MountPropagation::PropagationPrivate,
            "HostToContainer" => v1::MountPropagation::PropagationHostToContainer,
            "Bidirectional" => v1::MountPropagation::PropagationBidirectional,
            other => return Err(format!("volumeMount {:?}: mountPropagation {other:?} is unknown", m.name)),
        };
        out.push(v1::Mount {
            container_path: m.mount_path.clone(),
            host_path: host_path.display().to_string(),
            readonly: m.read_only.unwrap_or(false),
            propagation: propagation as i32,
            ..Default::default()
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_the_supported_sources_and_refuses_others() {
        let spec: k8s::PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [],
            "volumes": [
                {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}},
                {"name": "disk", "emptyDir": {}},
                {"name": "host", "hostPath": {"path": "/tmp/x", "type": "DirectoryOrCreate"}},
                {"name": "share", "nfs": {"server": "127.0.0.1", "path": "/export", "readOnly": true}}
            ]
        }))
        .unwrap();
        let v = convert(&spec).unwrap();
        assert_eq!(v[0].source, VolumeSource::EmptyDir(EmptyDir::memory(Some(8 << 20))));
        assert_eq!(v[1].source, VolumeSource::EmptyDir(EmptyDir::disk()));
        assert_eq!(v[2].source, VolumeSource::HostPath(HostPath::new("/tmp/x", HostPathType::DirectoryOrCreate)));
        assert_eq!(v[3].source, VolumeSource::Nfs(Nfs::new("127.0.0.1", "/export", true)));
        let bad: k8s::PodSpec =
            serde_json::from_value(serde_json::json!({"containers": [], "volumes": [{"name": "s", "persistentVolumeClaim": {"claimName": "c"}}]})).unwrap();
        assert!(convert(&bad).unwrap_err().contains("\"s\""));
    }

    #[test]
    fn sub_path_may_not_escape() {
        let c: k8s::Container = serde_json::from_value(serde_json::json!({
            "name": "c", "volumeMounts": [{"name": "v", "mountPath": "/d", "subPath": "../x"}]
        }))
        .unwrap();
        let paths = HashMap::from([("v".to_string(), PathBuf::from("/tmp"))]);
        assert!(mounts(&c, &paths).is_err());
    }
}
