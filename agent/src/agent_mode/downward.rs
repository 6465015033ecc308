//! The downward API: a pod's own fields (`fieldRef`) and its containers' resources
//! (`resourceFieldRef`) as strings, for env vars and `downwardAPI` volume files, with
//! kubelet's rules: which paths each may use, the `key="value"` format of whole label and
//! annotation maps, requests defaulting to limits and limits to the node's allocatable,
//! divisors rounding up.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as k8s;

use super::node_info::NodeInfo;
use super::quantity;

/// Where a reference is used: env vars may read status fields, volumes whole maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    Env,
    Volume,
}

/// What `fieldRef` reads: the pod, its IPs (known once the sandbox has its network), the node.
pub struct PodFields<'a> {
    pub pod: &'a k8s::Pod,
    pub pod_ips: &'a [String],
    pub node: &'a NodeInfo,
}

impl PodFields<'_> {
    pub fn field_ref(&self, path: &str, used: Use) -> Result<String, String> {
        let meta = &self.pod.metadata;
        let spec = self.pod.spec.clone().unwrap_or_default();
        let labels = meta.labels.clone().unwrap_or_default();
        let annotations = meta.annotations.clone().unwrap_or_default();
        if let Some((map, key)) = subscript(path) {
            return match map {
                "metadata.labels" => Ok(labels.get(key).cloned().unwrap_or_default()),
                "metadata.annotations" => Ok(annotations.get(key).cloned().unwrap_or_default()),
                _ => Err(format!("fieldRef {path:?} is not supported")),
            };
        }
        let value = match (path, used) {
            ("metadata.name", _) => meta.name.clone().unwrap_or_default(),
            ("metadata.namespace", _) => meta.namespace.clone().unwrap_or_default(),
            ("metadata.uid", _) => meta.uid.clone().unwrap_or_default(),
            ("metadata.labels", Use::Volume) => format_map(&labels),
            ("metadata.annotations", Use::Volume) => format_map(&annotations),
            ("spec.nodeName", Use::Env) => spec.node_name.clone().unwrap_or_else(|| self.node.name.clone()),
            ("spec.serviceAccountName", Use::Env) => spec.service_account_name.clone().unwrap_or_default(),
            ("status.hostIP", Use::Env) => self.node.host_ips.first().cloned().unwrap_or_default(),
            ("status.hostIPs", Use::Env) => self.node.host_ips.join(","),
            ("status.podIP", Use::Env) => self.pod_ips.first().cloned().unwrap_or_default(),
            ("status.podIPs", Use::Env) => self.pod_ips.join(","),
            _ => {
                let place = if used == Use::Env { "an env var" } else { "a downwardAPI volume" };
                return Err(format!("fieldRef {path:?} is not supported in {place}"));
            }
        };
        Ok(value)
    }
}

/// `metadata.labels['app']` → (`metadata.labels`, `app`).
fn subscript(path: &str) -> Option<(&str, &str)> {
    let (map, rest) = path.split_once('[')?;
    let key = rest.strip_suffix(']')?;
    let key = key.strip_prefix('\'').and_then(|k| k.strip_suffix('\'')).or_else(|| key.strip_prefix('"').and_then(|k| k.strip_suffix('"')))?;
    Some((map, key))
}

/// Kubelet's format for a whole map: sorted `key="value"` lines, values quoted Go-style.
fn format_map(map: &BTreeMap<String, String>) -> String {
    map.iter().map(|(k, v)| format!("{k}={}", go_quote(v))).collect::<Vec<_>>().join("\n")
}

fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A container's resource (`limits.cpu`, `requests.memory`, ...) over `divisor` (default 1),
/// rounded up. An unset request is the limit (API defaulting), an unset limit the node's
/// allocatable amount (kubelet's rule), an unset request with no limit 0.
pub fn resource_field_ref(spec: &k8s::PodSpec, container: &str, resource: &str, divisor: Option<&str>, node: &NodeInfo) -> Result<String, String> {
    let c = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == container)
        .ok_or_else(|| format!("resourceFieldRef: no container named {container:?}"))?;
    let (kind, name) = resource.split_once('.').ok_or_else(|| format!("resourceFieldRef: unknown resource {resource:?}"))?;
    let supported = matches!(name, "cpu" | "memory" | "ephemeral-storage") || name.starts_with("hugepages-");
    if !supported || !matches!(kind, "limits" | "requests") {
        return Err(format!("resourceFieldRef: unsupported resource {resource:?}"));
    }
    let r = c.resources.clone().unwrap_or_default();
    let get = |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>| m.as_ref().and_then(|m| m.get(name)).map(|q| q.0.clone());
    let value = if kind == "limits" {
        get(&r.limits).or_else(|| node.allocatable.get(name).cloned())
    } else {
        get(&r.requests).or_else(|| get(&r.limits))
    };
    let value = value.unwrap_or_else(|| "0".into());
    let divisor = divisor.filter(|d| !d.is_empty()).unwrap_or("1");
    let ceil_div = |a: u128, b: u128| if b == 0 { Err(format!("resourceFieldRef: divisor {divisor:?} is zero")) } else { Ok(a.div_ceil(b)) };
    let out = if name == "cpu" {
        ceil_div(quantity::milli(&value)?, quantity::milli(divisor)?)?
    } else {
        ceil_div(quantity::units(&value)?, quantity::units(divisor)?)?
    };
    Ok(out.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> k8s::Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-n1", "namespace": "edge", "uid": "u1",
                         "labels": {"app": "web", "tier": "front"}, "annotations": {"note": "say \"hi\"\n"}},
            "spec": {"nodeName": "n1", "serviceAccountName": "sa", "containers": [
                {"name": "c", "resources": {"requests": {"cpu": "250m", "memory": "32Mi"}, "limits": {"cpu": "1500m", "memory": "64Mi"}}},
                {"name": "bare"}
            ]}
        }))
        .unwrap()
    }

    fn node() -> NodeInfo {
        NodeInfo {
            name: "n1".into(),
            host_ips: vec!["10.0.0.5".into(), "fd00::5".into()],
            allocatable: BTreeMap::from([("cpu".to_string(), "4".to_string()), ("memory".to_string(), "2Gi".to_string())]),
            ..Default::default()
        }
    }

    #[test]
    fn field_refs_read_metadata_spec_and_status() {
        let (pod, node) = (pod(), node());
        let ips = vec!["10.88.0.7".to_string()];
        let f = PodFields { pod: &pod, pod_ips: &ips, node: &node };
        let env = |p| f.field_ref(p, Use::Env).unwrap();
        assert_eq!(env("metadata.name"), "web-n1");
        assert_eq!(env("metadata.namespace"), "edge");
        assert_eq!(env("metadata.uid"), "u1");
        assert_eq!(env("metadata.labels['app']"), "web");
        assert_eq!(env("metadata.labels['missing']"), "");
        assert_eq!(env("metadata.annotations['note']"), "say \"hi\"\n");
        assert_eq!(env("spec.nodeName"), "n1");
        assert_eq!(env("spec.serviceAccountName"), "sa");
        assert_eq!(env("status.podIP"), "10.88.0.7");
        assert_eq!(env("status.podIPs"), "10.88.0.7");
        assert_eq!(env("status.hostIP"), "10.0.0.5");
        assert_eq!(env("status.hostIPs"), "10.0.0.5,fd00::5");
        // Whole maps only in volumes, status only in env.
        assert!(f.field_ref("metadata.labels", Use::Env).is_err());
        assert!(f.field_ref("status.podIP", Use::Volume).is_err());
        assert!(f.field_ref("spec.bogus", Use::Env).is_err());
        assert_eq!(f.field_ref("metadata.labels", Use::Volume).unwrap(), "app=\"web\"\ntier=\"front\"");
        assert!(f.field_ref("metadata.annotations", Use::Volume).unwrap().ends_with("note=\"say \\\"hi\\\"\\n\""));
    }

    #[test]
    fn resource_refs_use_defaults_and_divisors() {
        let (spec, node) = (pod().spec.unwrap(), node());
        let r = |c, res, div| resource_field_ref(&spec, c, res, div, &node);
        assert_eq!(r("c", "limits.cpu", None).unwrap(), "2", "1.5 cores round up");
        assert_eq!(r("c", "limits.cpu", Some("1m")).unwrap(), "1500");
        assert_eq!(r("c", "requests.cpu", Some("1m")).unwrap(), "250");
        assert_eq!(r("c", "limits.memory", None).unwrap(), (64u64 << 20).to_string());
        assert_eq!(r("c", "requests.memory", Some("1Mi")).unwrap(), "32");
        // No limits: the node's allocatable; no requests either: 0.
        assert_eq!(r("bare", "limits.cpu", None).unwrap(), "4");
        assert_eq!(r("bare", "limits.memory", Some("1Mi")).unwrap(), "2048");
        assert_eq!(r("bare", "requests.memory", None).unwrap(), "0");
        assert!(r("nope", "limits.cpu", None).is_err());
        assert!(r("c", "limits.gpu", None).is_err());
        assert!(r("c", "limits.cpu", Some("0")).is_err());
    }
}
