//! Kubelet's admission check for where a pod may run: `nodeSelector` and required node
//! affinity against this node's labels. A pod that does not fit is not run; its status
//! says `Failed`, reason `NodeAffinity`, and which label did not match (kubelet's own
//! message only says that something did not).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as k8s;

use super::node_info::NodeInfo;

/// Why a pod is refused, for its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: String,
    pub message: String,
}

pub fn admit(spec: &k8s::PodSpec, node: &NodeInfo) -> Result<(), Rejection> {
    let mismatch = node_selector(spec.node_selector.as_ref(), &node.labels).or_else(|| {
        let required = spec.affinity.as_ref()?.node_affinity.as_ref()?.required_during_scheduling_ignored_during_execution.as_ref()?;
        required_affinity(required, node)
    });
    match mismatch {
        None => Ok(()),
        Some(detail) => Err(Rejection {
            reason: "NodeAffinity".into(),
            message: format!("Pod was rejected: Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector: {detail}"),
        }),
    }
}

/// The first selector entry the labels do not satisfy.
fn node_selector(selector: Option<&BTreeMap<String, String>>, labels: &BTreeMap<String, String>) -> Option<String> {
    let (key, want) = selector?.iter().find(|(k, v)| labels.get(*k) != Some(*v))?;
    Some(match labels.get(key) {
        Some(have) => format!("nodeSelector {key}={want}, but the node has {key}={have}"),
        None => format!("nodeSelector {key}={want}, but the node has no label {key}"),
    })
}

/// Terms are ORed, a term's requirements ANDed; a term with none matches nothing. Also
/// checks a local PersistentVolume's node affinity ([`super::api::claims`]).
pub(super) fn required_affinity(required: &k8s::NodeSelector, node: &NodeInfo) -> Option<String> {
    let mut why = Vec::new();
    for term in &required.node_selector_terms {
        let exprs = term.match_expressions.iter().flatten().map(|r| (r, node.labels.get(&r.key).map(String::as_str)));
        let fields = term.match_fields.iter().flatten().map(|r| (r, (r.key == "metadata.name").then_some(node.name.as_str())));
        let mut any = false;
        let failed = exprs.chain(fields).find(|(r, value)| {
            any = true;
            !requirement(r, *value)
        });
        match (failed, any) {
            (None, true) => return None,
            (None, false) => why.push("an empty term".to_string()),
            (Some((r, value)), _) => why.push(format!(
                "{} {} {:?}, but the node has {}",
                r.key,
                r.operator,
                r.values.clone().unwrap_or_default(),
                value.map_or_else(|| format!("no {}", r.key), |v| format!("{}={v}", r.key))
            )),
        }
    }
    Some(format!("required nodeAffinity: no term matches ({})", why.join("; ")))
}

fn requirement(r: &k8s::NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|w| w == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|w| w == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => matches!((value.and_then(number), values.first().and_then(|w| number(w))), (Some(v), Some(w)) if v > w),
        "Lt" => matches!((value.and_then(number), values.first().and_then(|w| number(w))), (Some(v), Some(w)) if v < w),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeInfo {
        NodeInfo {
            name: "edge-1".into(),
            labels: BTreeMap::from([
                ("disktype".to_string(), "ssd".to_string()),
                ("kubernetes.io/hostname".to_string(), "edge-1".to_string()),
                ("cores".to_string(), "8".to_string()),
            ]),
            ..Default::default()
        }
    }

    fn spec(json: serde_json::Value) -> k8s::PodSpec {
        let mut v = json;
        v["containers"] = serde_json::json!([]);
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn node_selector_must_match_every_label() {
        assert!(admit(&spec(serde_json::json!({})), &node()).is_ok());
        assert!(admit(&spec(serde_json::json!({"nodeSelector": {"disktype": "ssd", "kubernetes.io/hostname": "edge-1"}})), &node()).is_ok());
        let r = admit(&spec(serde_json::json!({"nodeSelector": {"disktype": "hdd"}})), &node()).unwrap_err();
        assert_eq!(r.reason, "NodeAffinity");
        assert!(r.message.contains("nodeSelector disktype=hdd, but the node has disktype=ssd"), "{}", r.message);
        let r = admit(&spec(serde_json::json!({"nodeSelector": {"gpu": "a100"}})), &node()).unwrap_err();
        assert!(r.message.contains("the node has no label gpu"), "{}", r.message);
    }

    #[test]
    fn required_affinity_ors_terms_and_ands_requirements() {
        let affinity = |terms: serde_json::Value| {
            spec(serde_json::json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}))
        };
        let ok = |terms| admit(&affinity(terms), &node()).is_ok();
        assert!(ok(serde_json::json!([{"matchExpressions": [{"key": "disktype", "operator": "In", "values": ["ssd", "nvme"]}]}])));
        assert!(!ok(serde_json::json!([{"matchExpressions": [{"key": "disktype", "operator": "NotIn", "values": ["ssd"]}]}])));
        assert!(ok(serde_json::json!([{"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}, {"key": "disktype", "operator": "Exists"}]}])));
        assert!(ok(serde_json::json!([{"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}]}])));
        assert!(!ok(serde_json::json!([{"matchExpressions": [{"key": "cores", "operator": "Lt", "values": ["4"]}]}])));
        assert!(ok(serde_json::json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["edge-1"]}]}])));
        // One matching term of two is enough; an empty term matches nothing.
        assert!(ok(serde_json::json!([{"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, {"matchExpressions": [{"key": "disktype", "operator": "In", "values": ["ssd"]}]}])));
        assert!(!ok(serde_json::json!([{}])));
        let r = admit(&affinity(serde_json::json!([{"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["a100"]}]}])), &node()).unwrap_err();
        assert!(r.message.contains("gpu In [\"a100\"], but the node has no gpu"), "{}", r.message);
    }
}
