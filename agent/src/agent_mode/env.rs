//! A container's environment, as kubelet builds it: each `value` with `$(VAR)` references
//! to earlier entries expanded; `valueFrom.fieldRef` and `resourceFieldRef` through the
//! downward API. configMap and secret references need the API server: a required one is
//! a `CreateContainerConfigError` with the reason, an optional one is left unset.

use cri_proto::v1;
use k8s_openapi::api::core::v1 as k8s;

use super::downward::{self, PodFields, Use};

pub fn container_env(fields: &PodFields, c: &k8s::Container) -> Result<Vec<v1::KeyValue>, String> {
    let mut envs: Vec<v1::KeyValue> = Vec::new();
    for e in c.env.iter().flatten() {
        let value = match &e.value_from {
            None => Some(expand(e.value.as_deref().unwrap_or_default(), &envs)),
            Some(from) => value_from(fields, c, from).map_err(|m| format!("env {:?}: {m}", e.name))?,
        };
        if let Some(value) = value {
            envs.push(v1::KeyValue { key: e.name.clone(), value });
        }
    }
    Ok(envs)
}

/// `None`: an optional reference that cannot be resolved; the variable stays unset.
fn value_from(fields: &PodFields, c: &k8s::Container, from: &k8s::EnvVarSource) -> Result<Option<String>, String> {
    if let Some(f) = &from.field_ref {
        return fields.field_ref(&f.field_path, Use::Env).map(Some);
    }
    if let Some(r) = &from.resource_field_ref {
        let spec = fields.pod.spec.clone().unwrap_or_default();
        let container = r.container_name.as_deref().filter(|n| !n.is_empty()).unwrap_or(&c.name);
        return downward::resource_field_ref(&spec, container, &r.resource, r.divisor.as_ref().map(|d| d.0.as_str()), fields.node).map(Some);
    }
    // ConfigMaps and Secrets come from the API server, which static pods do not have; the
    // API pod source replaces this arm with real look-ups.
    let (kind, optional) = match (&from.config_map_key_ref, &from.secret_key_ref) {
        (Some(r), _) => ("configMapKeyRef", r.optional),
        (None, Some(r)) => ("secretKeyRef", r.optional),
        (None, None) if from.file_key_ref.is_some() => return Err("fileKeyRef is not supported in agent mode".into()),
        (None, None) => return Err("valueFrom names no source".into()),
    };
    if optional == Some(true) {
        return Ok(None);
    }
    Err(format!("{kind} needs the API server, which static pods do not have"))
}

/// Kubernetes' `$(VAR)` references: a defined variable is replaced, `$$` is a literal `$`,
/// anything else (undefined, unclosed) stays as written.
pub fn expand(arg: &str, envs: &[v1::KeyValue]) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(body) = rest.strip_prefix("$(")
            && let Some(end) = body.find(')')
            && let Some(kv) = envs.iter().rev().find(|kv| kv.key == body[..end])
        {
            out.push_str(&kv.value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_mode::node_info::NodeInfo;

    #[test]
    fn command_references_expand_like_kubernetes() {
        let envs = vec![
            v1::KeyValue { key: "NAME".into(), value: "web".into() },
            v1::KeyValue { key: "PORT".into(), value: "80".into() },
        ];
        assert_eq!(expand("--name=$(NAME):$(PORT)", &envs), "--name=web:80");
        assert_eq!(expand("$$(NAME) $(UNSET) $(NAME", &envs), "$(NAME) $(UNSET) $(NAME");
        assert_eq!(expand("cost $5 $", &envs), "cost $5 $");
    }

    #[test]
    fn env_resolves_downward_references_in_order() {
        let pod: k8s::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-n1", "namespace": "edge", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": "500m"}}, "env": [
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
                {"name": "URL", "value": "http://$(IP):80/$(POD)"},
                {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k", "optional": true}}}
            ]}]}
        }))
        .unwrap();
        let node = NodeInfo::default();
        let ips = vec!["10.1.2.3".to_string()];
        let fields = PodFields { pod: &pod, pod_ips: &ips, node: &node };
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let env: Vec<(String, String)> = container_env(&fields, c).unwrap().into_iter().map(|kv| (kv.key, kv.value)).collect();
        let want = [("POD", "web-n1"), ("IP", "10.1.2.3"), ("APP", "web"), ("CPU", "500"), ("URL", "http://10.1.2.3:80/web-n1")];
        assert_eq!(env, want.map(|(k, v)| (k.to_string(), v.to_string())));
        // A required configMap reference cannot be met without the API server.
        let mut c = c.clone();
        c.env = Some(serde_json::from_value(serde_json::json!([{"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}])).unwrap());
        let e = container_env(&fields, &c).unwrap_err();
        assert!(e.contains("\"S\"") && e.contains("secretKeyRef needs the API server"), "{e}");
    }
}
