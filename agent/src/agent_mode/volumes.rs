//! Pod volumes → the `capstan-volumes` crate: set up before the containers start under
//! `<root>/agent/pods/<uid>/volumes/...`, handed to containers as CRI mounts, torn down
//! after the pod is removed.
//!
//! Supported sources: emptyDir (disk, or `medium: Memory` with `sizeLimit`), hostPath with
//! its `type`, nfs, downwardAPI (files in a small tmpfs), configMap and secret (API pods:
//! the objects' data as fetched when the pod started; a configMap's files on disk, a
//! secret's on a tmpfs so its data never reaches the node's disk), all three written with
//! kubelet's `..data` layout ([`projected`]) and mounted read-only as kubelet does, and a
//! persistentVolumeClaim once whoever knows the API has resolved it to a
//! `local` PersistentVolume ([`Claims`]); any other source is refused with the volume's
//! name, so the pod does not start half-made.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use capstan_volumes::{EmptyDir, HostPath, HostPathType, Local, Nfs, PodVolumes, Volume, VolumeSource};
use cri_proto::v1;
use k8s_openapi::api::core::v1 as k8s;

use super::config_data::{self, ConfigData};
use super::downward::{self, PodFields, Use};
use super::{projected, quantity};

/// A volume as agent mode sets it up: the crate's volume, and what to write into it.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    pub volume: Volume,
    pub content: Content,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// The volume brings its own data (or starts empty).
    None,
    /// A downwardAPI volume's items, resolved when the volume is set up.
    DownwardApi { default_mode: u32, items: Vec<k8s::DownwardAPIVolumeFile> },
    /// A configMap or secret volume's files, from the objects fetched with the pod.
    Files(Vec<projected::File>),
}

/// What a persistentVolumeClaim is bound to, as resolved from the API server
/// ([`super::api::claims`]); static pods have none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimSource {
    /// A `local` PersistentVolume: a path (directory or block device) on this node.
    Local(Local),
}

/// Resolved claims, by claim name.
pub type Claims = BTreeMap<String, ClaimSource>;

/// The downwardAPI tmpfs: its files are small.
const DOWNWARD_API_SIZE: u64 = 1 << 20;

/// The pod's volumes as the crate sees them, by name, with their contents. A configMap or
/// secret that is missing (and not optional) fails here, before anything is set up.
pub fn convert(spec: &k8s::PodSpec, claims: &Claims, config: &ConfigData) -> Result<Vec<Wanted>, String> {
    let mut out = Vec::new();
    for v in spec.volumes.iter().flatten() {
        let mut content = Content::None;
        let source = if let Some(files) = config_data::volume_files(v, config) {
            content = Content::Files(files?);
            if v.secret.is_some() { VolumeSource::EmptyDir(EmptyDir::memory(None)) } else { VolumeSource::EmptyDir(EmptyDir::disk()) }
        } else if let Some(e) = &v.empty_dir {
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
        } else if let Some(d) = &v.downward_api {
            let default_mode = d.default_mode.and_then(|m| u32::try_from(m).ok()).unwrap_or(projected::DEFAULT_MODE);
            content = Content::DownwardApi { default_mode, items: d.items.clone().unwrap_or_default() };
            VolumeSource::EmptyDir(EmptyDir::memory(Some(DOWNWARD_API_SIZE)))
        } else if let Some(claim) = &v.persistent_volume_claim {
            match claims.get(&claim.claim_name) {
                Some(ClaimSource::Local(local)) => {
                    let read_only = local.read_only || claim.read_only.unwrap_or(false);
                    VolumeSource::Local(Local { read_only, ..local.clone() })
                }
                None => {
                    return Err(format!(
                        "volume {:?}: persistentVolumeClaim {:?} is not bound to a local PersistentVolume this node knows of \
                         (claims need the API server; static pods cannot use them)",
                        v.name, claim.claim_name
                    ));
                }
            }
        } else {
            return Err(format!(
                "volume {:?}: only emptyDir, hostPath, nfs, downwardAPI, configMap, secret and local persistentVolumeClaim are supported in agent mode",
                v.name
            ));
        };
        out.push(Wanted { volume: Volume::new(&v.name, source), content });
    }
    Ok(out)
}

/// Sets one volume up and writes its content. Blocking.
pub fn setup(pod_volumes: &PodVolumes, wanted: &Wanted, fields: &PodFields) -> Result<PathBuf, String> {
    let name = &wanted.volume.name;
    let path = pod_volumes.setup(&wanted.volume).map_err(|e| format!("volume {name:?}: {e}"))?;
    let written = match &wanted.content {
        Content::None => Ok(()),
        Content::DownwardApi { default_mode, items } => downward_api_files(fields, *default_mode, items).and_then(|files| projected::write(&path, &files)),
        Content::Files(files) => projected::write(&path, files),
    };
    written.map_err(|e| format!("volume {name:?}: {e}"))?;
    Ok(path)
}

/// Sets every volume up; on a failure the ones already made are torn down again, so a
/// failed pod leaves nothing mounted. Blocking: call from a blocking thread.
pub fn setup_all(pod_volumes: &PodVolumes, wanted: &[Wanted], fields: &PodFields) -> Result<HashMap<String, PathBuf>, String> {
    let mut paths = HashMap::new();
    for w in wanted {
        match setup(pod_volumes, w, fields) {
            Ok(path) => {
                paths.insert(w.volume.name.clone(), path);
            }
            Err(e) => {
                if let Err(t) = pod_volumes.teardown_all(true) {
                    tracing::warn!(error = %t, "cleaning up after a failed volume setup");
                }
                return Err(e);
            }
        }
    }
    Ok(paths)
}

/// A downwardAPI volume's items as files: fieldRef or resourceFieldRef (which must name
/// its container here), with the item's mode or the volume's default.
fn downward_api_files(fields: &PodFields, default_mode: u32, items: &[k8s::DownwardAPIVolumeFile]) -> Result<Vec<projected::File>, String> {
    let spec = fields.pod.spec.clone().unwrap_or_default();
    let mut files = Vec::new();
    for item in items {
        let data = match (&item.field_ref, &item.resource_field_ref) {
            (Some(f), None) => fields.field_ref(&f.field_path, Use::Volume)?,
            (None, Some(r)) => {
                let container = r.container_name.as_deref().filter(|c| !c.is_empty()).ok_or_else(|| {
                    format!("item {:?}: resourceFieldRef needs a containerName in a volume", item.path)
                })?;
                downward::resource_field_ref(&spec, container, &r.resource, r.divisor.as_ref().map(|d| d.0.as_str()), fields.node)?
            }
            _ => return Err(format!("item {:?}: needs exactly one of fieldRef and resourceFieldRef", item.path)),
        };
        let mode = item.mode.and_then(|m| u32::try_from(m).ok()).unwrap_or(default_mode);
        files.push(projected::File { path: item.path.clone(), data: data.into_bytes(), mode });
    }
    Ok(files)
}

/// Sources kubelet always mounts read-only: their content is the node's to update.
fn forced_read_only(spec: &k8s::PodSpec, name: &str) -> bool {
    spec.volumes
        .iter()
        .flatten()
        .find(|v| v.name == name)
        .is_some_and(|v| v.downward_api.is_some() || v.config_map.is_some() || v.secret.is_some() || v.projected.is_some())
}

/// A container's `volumeMounts` as CRI mounts. `subPath` must stay inside the volume; its
/// directory is created like kubelet does.
pub fn mounts(spec: &k8s::PodSpec, container: &k8s::Container, paths: &HashMap<String, PathBuf>) -> Result<Vec<v1::Mount>, String> {
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
            readonly: m.read_only.unwrap_or(false) || forced_read_only(spec, &m.name),
            propagation: propagation as i32,
            ..Default::default()
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_mode::node_info::NodeInfo;

    #[test]
    fn converts_the_supported_sources_and_refuses_others() {
        let spec: k8s::PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [],
            "volumes": [
                {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}},
                {"name": "disk", "emptyDir": {}},
                {"name": "host", "hostPath": {"path": "/tmp/x", "type": "DirectoryOrCreate"}},
                {"name": "share", "nfs": {"server": "127.0.0.1", "path": "/export", "readOnly": true}},
                {"name": "info", "downwardAPI": {"defaultMode": 0o600, "items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "fast", "readOnly": true}}
            ]
        }))
        .unwrap();
        let claims = Claims::from([("fast".to_string(), ClaimSource::Local(Local::new("/mnt/disks/ssd1", false)))]);
        let v = convert(&spec, &claims, &ConfigData::default()).unwrap();
        let source = |i: usize| v[i].volume.source.clone();
        assert_eq!(source(0), VolumeSource::EmptyDir(EmptyDir::memory(Some(8 << 20))));
        assert_eq!(source(1), VolumeSource::EmptyDir(EmptyDir::disk()));
        assert_eq!(source(2), VolumeSource::HostPath(HostPath::new("/tmp/x", HostPathType::DirectoryOrCreate)));
        assert_eq!(source(3), VolumeSource::Nfs(Nfs::new("127.0.0.1", "/export", true)));
        assert_eq!(source(4), VolumeSource::EmptyDir(EmptyDir::memory(Some(DOWNWARD_API_SIZE))));
        assert!(matches!(&v[4].content, Content::DownwardApi { default_mode: 0o600, items } if items.len() == 1));
        // The claim's readOnly carries over to the local volume.
        assert_eq!(source(5), VolumeSource::Local(Local::new("/mnt/disks/ssd1", true)));
        // Unresolved claims and unsupported sources are refused by name.
        assert!(convert(&spec, &Claims::new(), &ConfigData::default()).unwrap_err().contains("\"fast\""));
        let bad: k8s::PodSpec =
            serde_json::from_value(serde_json::json!({"containers": [], "volumes": [{"name": "s", "gitRepo": {"repository": "x"}}]})).unwrap();
        assert!(convert(&bad, &Claims::new(), &ConfigData::default()).unwrap_err().contains("\"s\""));
    }

    #[test]
    fn config_map_and_secret_volumes_carry_their_files() {
        let spec: k8s::PodSpec = serde_json::from_value(serde_json::json!({"containers": [], "volumes": [
            {"name": "cfg", "configMap": {"name": "app", "items": [{"key": "a", "path": "sub/a.conf", "mode": 0o400}]}},
            {"name": "creds", "secret": {"secretName": "s"}}
        ]}))
        .unwrap();
        let cm: k8s::ConfigMap = serde_json::from_value(serde_json::json!({"data": {"a": "x=1\n", "b": "unused"}})).unwrap();
        let secret: k8s::Secret = serde_json::from_value(serde_json::json!({"data": {"password": "czNjcmV0"}})).unwrap();
        let data = ConfigData {
            config_maps: BTreeMap::from([("app".to_string(), Some(cm))]),
            secrets: BTreeMap::from([("s".to_string(), Some(secret))]),
        };
        let v = convert(&spec, &Claims::new(), &data).unwrap();
        let file = |path: &str, data: &[u8], mode| projected::File { path: path.into(), data: data.to_vec(), mode };
        assert_eq!(v[0].volume.source, VolumeSource::EmptyDir(EmptyDir::disk()));
        assert_eq!(v[0].content, Content::Files(vec![file("sub/a.conf", b"x=1\n", 0o400)]));
        // A secret's files stay off the node's disk.
        assert_eq!(v[1].volume.source, VolumeSource::EmptyDir(EmptyDir::memory(None)));
        assert_eq!(v[1].content, Content::Files(vec![file("password", b"s3cret", 0o644)]));
        // A missing object fails the conversion, naming the volume.
        assert!(convert(&spec, &Claims::new(), &ConfigData::default()).unwrap_err().contains("\"cfg\""));
        let c: k8s::Container =
            serde_json::from_value(serde_json::json!({"name": "c", "volumeMounts": [{"name": "cfg", "mountPath": "/etc/app"}]})).unwrap();
        let paths = HashMap::from([("cfg".to_string(), PathBuf::from("/tmp"))]);
        assert!(mounts(&spec, &c, &paths).unwrap()[0].readonly, "configMap is mounted read-only");
    }

    #[test]
    fn downward_api_items_become_files_and_mount_read_only() {
        let pod: k8s::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-n1", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"memory": "64Mi"}},
                                     "volumeMounts": [{"name": "info", "mountPath": "/etc/info"}]}],
                     "volumes": [{"name": "info", "downwardAPI": {}}]}
        }))
        .unwrap();
        let node = NodeInfo::default();
        let fields = PodFields { pod: &pod, pod_ips: &[], node: &node };
        let items: Vec<k8s::DownwardAPIVolumeFile> = serde_json::from_value(serde_json::json!([
            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}, "mode": 0o400},
            {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}}
        ]))
        .unwrap();
        let files = downward_api_files(&fields, projected::DEFAULT_MODE, &items).unwrap();
        let view: Vec<_> = files.iter().map(|f| (f.path.as_str(), String::from_utf8(f.data.clone()).unwrap(), f.mode)).collect();
        assert_eq!(
            view,
            [("name", "web-n1".to_string(), 0o644), ("labels", "app=\"web\"".to_string(), 0o400), ("mem", "64".to_string(), 0o644)]
        );
        let no_container: Vec<k8s::DownwardAPIVolumeFile> =
            serde_json::from_value(serde_json::json!([{"path": "m", "resourceFieldRef": {"resource": "limits.memory"}}])).unwrap();
        assert!(downward_api_files(&fields, projected::DEFAULT_MODE, &no_container).unwrap_err().contains("containerName"));
        let spec = pod.spec.clone().unwrap();
        let paths = HashMap::from([("info".to_string(), PathBuf::from("/tmp"))]);
        assert!(mounts(&spec, &spec.containers[0], &paths).unwrap()[0].readonly, "downwardAPI is mounted read-only");
    }

    #[test]
    fn sub_path_may_not_escape() {
        let c: k8s::Container = serde_json::from_value(serde_json::json!({
            "name": "c", "volumeMounts": [{"name": "v", "mountPath": "/d", "subPath": "../x"}]
        }))
        .unwrap();
        let paths = HashMap::from([("v".to_string(), PathBuf::from("/tmp"))]);
        assert!(mounts(&k8s::PodSpec::default(), &c, &paths).is_err());
    }
}
