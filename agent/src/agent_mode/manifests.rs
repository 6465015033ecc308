//! Pod source 1: the static manifest directory (kubelet's `staticPodPath`).
//!
//! Every `*.yaml`, `*.yml` and `*.json` file directly in the directory holds one v1 Pod.
//! The file's content hash names the pod's generation: a changed file is a new pod (new
//! uid), which the sync loop uses to replace the old one. A file that does not parse is
//! logged once per content and skipped; it never stops the others.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use sha2::{Digest, Sha256};

use super::desired::DesiredPod;

/// Kubelet's annotations on static pods.
pub const CONFIG_SOURCE: &str = "kubernetes.io/config.source";
pub const CONFIG_HASH: &str = "kubernetes.io/config.hash";
/// Which file a pod came from, so operators (and the tests) can tell.
pub const MANIFEST_FILE: &str = "capstan.io/manifest-file";

/// The directory, plus what was already reported about bad files (so a broken file is
/// logged when it appears or changes, not on every scan).
#[derive(Debug)]
pub struct ManifestDir {
    dir: PathBuf,
    node_name: String,
    reported: HashMap<PathBuf, String>,
}

impl ManifestDir {
    pub fn new(dir: PathBuf, node_name: String) -> ManifestDir {
        ManifestDir { dir, node_name, reported: HashMap::new() }
    }

    /// The pods the directory asks for now, by file. A missing directory asks for none.
    pub fn scan(&mut self) -> BTreeMap<PathBuf, DesiredPod> {
        let mut pods = BTreeMap::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => {
                if self.reported.insert(self.dir.clone(), e.to_string()).is_none() {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read the manifest directory");
                }
                return pods;
            }
        };
        self.reported.remove(&self.dir);
        let mut seen = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if !is_manifest(&path) || !path.is_file() {
                continue;
            }
            seen.push(path.clone());
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot read manifest");
                    continue;
                }
            };
            let hash = content_hash(&bytes, &self.node_name);
            match parse(&path, &bytes, &hash, &self.node_name) {
                Ok(pod) => {
                    self.reported.remove(&path);
                    pods.insert(path.clone(), DesiredPod::from_file(path, hash, pod));
                }
                Err(message) => {
                    if self.reported.get(&path) != Some(&hash) {
                        tracing::error!(file = %path.display(), error = %message, "invalid static pod manifest; skipped");
                        self.reported.insert(path, hash);
                    }
                }
            }
        }
        self.reported.retain(|p, _| p == &self.dir || seen.contains(p));
        pods
    }
}

/// Kubelet skips dotfiles (editors' swap files) and takes these extensions.
fn is_manifest(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return false };
    !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json"))
}

fn content_hash(bytes: &[u8], node_name: &str) -> String {
    let mut h = Sha256::new();
    h.update(bytes);
    h.update(b"\0");
    h.update(node_name.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// Parses and validates one manifest and gives it kubelet's static-pod identity: mirror
/// name `<name>-<node>`, namespace `default` when unset, uid = content hash, and the
/// `config.source`/`config.hash` annotations.
pub fn parse(path: &Path, bytes: &[u8], hash: &str, node_name: &str) -> Result<Pod, String> {
    let mut pod: Pod = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())?
    } else {
        serde_yaml::from_slice(bytes).map_err(|e| e.to_string())?
    };
    validate(&pod)?;
    let name = pod.metadata.name.clone().unwrap_or_default();
    pod.metadata.name = Some(format!("{name}-{node_name}"));
    if pod.metadata.namespace.as_deref().unwrap_or_default().is_empty() {
        pod.metadata.namespace = Some("default".into());
    }
    pod.metadata.uid = Some(hash.to_string());
    let annotations = pod.metadata.annotations.get_or_insert_with(Default::default);
    annotations.insert(CONFIG_SOURCE.into(), "file".into());
    annotations.insert(CONFIG_HASH.into(), hash.to_string());
    annotations.insert(MANIFEST_FILE.into(), path.display().to_string());
    if let Some(spec) = pod.spec.as_mut() {
        spec.node_name = Some(node_name.to_string());
    }
    Ok(pod)
}

/// What the sync loop relies on; the rest is checked where it is used.
fn validate(pod: &Pod) -> Result<(), String> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    if name.is_empty() {
        return Err("metadata.name is required".into());
    }
    if !is_dns_label(name) {
        return Err(format!("metadata.name {name:?} is not a DNS label"));
    }
    let spec = pod.spec.as_ref().ok_or("spec is required")?;
    if spec.containers.is_empty() {
        return Err("spec.containers must not be empty".into());
    }
    // Init containers share the app containers' name space (their statuses are by name).
    let all = || spec.containers.iter().chain(spec.init_containers.iter().flatten());
    let mut names = std::collections::HashSet::new();
    for c in all() {
        if !is_dns_label(&c.name) {
            return Err(format!("container name {:?} is not a DNS label", c.name));
        }
        if !names.insert(c.name.as_str()) {
            return Err(format!("container name {:?} is used twice", c.name));
        }
        if c.image.as_deref().unwrap_or_default().is_empty() {
            return Err(format!("container {:?} has no image", c.name));
        }
    }
    if let Some(policy) = spec.restart_policy.as_deref()
        && !matches!(policy, "Always" | "OnFailure" | "Never")
    {
        return Err(format!("restartPolicy {policy:?} is not Always, OnFailure or Never"));
    }
    refuse_api_objects(spec)?;
    let volumes: std::collections::HashSet<&str> =
        spec.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
    for c in all() {
        for m in c.volume_mounts.iter().flatten() {
            if !volumes.contains(m.name.as_str()) {
                return Err(format!("container {:?} mounts unknown volume {:?}", c.name, m.name));
            }
        }
    }
    Ok(())
}

/// A static pod exists without the API server, so it cannot take data from its objects:
/// kubelet refuses static pods that reference ConfigMaps or Secrets too.
fn refuse_api_objects(spec: &k8s_openapi::api::core::v1::PodSpec) -> Result<(), String> {
    const WHY: &str = "static pods cannot reference API objects (kubelet refuses them too)";
    for v in spec.volumes.iter().flatten() {
        let kind = if v.config_map.is_some() {
            "configMap"
        } else if v.secret.is_some() {
            "secret"
        } else if v.projected.iter().flat_map(|p| p.sources.iter().flatten()).any(|s| s.config_map.is_some() || s.secret.is_some()) {
            "projected"
        } else {
            continue;
        };
        return Err(format!("volume {:?} is a {kind} volume: {WHY}", v.name));
    }
    for c in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
        for e in c.env.iter().flatten() {
            let source = e.value_from.as_ref();
            if source.is_some_and(|s| s.config_map_key_ref.is_some() || s.secret_key_ref.is_some()) {
                return Err(format!("container {:?} env {:?} takes its value from a ConfigMap or Secret: {WHY}", c.name, e.name));
            }
        }
        if c.env_from.as_ref().is_some_and(|f| !f.is_empty()) {
            return Err(format!("container {:?} has envFrom: {WHY}", c.name));
        }
    }
    Ok(())
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  containers:\n  - name: c\n    image: busybox\n";

    #[test]
    fn static_identity_is_kubelets() {
        let pod = parse(Path::new("/m/web.yaml"), POD.as_bytes(), "abc", "node1").unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("web-node1"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(pod.metadata.uid.as_deref(), Some("abc"));
        let a = pod.metadata.annotations.unwrap();
        assert_eq!(a[CONFIG_SOURCE], "file");
        assert_eq!(a[CONFIG_HASH], "abc");
    }

    #[test]
    fn bad_manifests_are_skipped_and_good_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("good.yaml"), POD).unwrap();
        std::fs::write(dir.path().join("kind.yaml"), POD.replace("kind: Pod", "kind: Service")).unwrap();
        std::fs::write(dir.path().join("garbage.yml"), "{{{").unwrap();
        std::fs::write(dir.path().join("noname.json"), r#"{"apiVersion":"v1","kind":"Pod","spec":{"containers":[{"name":"c","image":"i"}]}}"#).unwrap();
        std::fs::write(dir.path().join("dup.yaml"), POD.replace("image: busybox\n", "image: b\n  - name: c\n    image: b\n")).unwrap();
        std::fs::write(dir.path().join(".swap.yaml"), POD).unwrap();
        let secret_env = "    envFrom: [{secretRef: {name: s}}]\n";
        std::fs::write(dir.path().join("secret.yaml"), POD.to_string() + secret_env).unwrap();
        std::fs::write(dir.path().join("notes.txt"), POD).unwrap();
        let mut m = ManifestDir::new(dir.path().into(), "n".into());
        let pods = m.scan();
        assert_eq!(pods.keys().map(|p| p.file_name().unwrap().to_str().unwrap()).collect::<Vec<_>>(), ["good.yaml"]);
        // A changed file is a new generation.
        let before = pods.values().next().unwrap().uid.clone();
        std::fs::write(dir.path().join("good.yaml"), POD.replace("app: web", "app: web2")).unwrap();
        let after = m.scan().values().next().unwrap().uid.clone();
        assert_ne!(before, after);
    }
}
