//! A container's environment, as kubelet builds it: `envFrom` first, then each `env`
//! entry (a later one wins on a clash): a `value` with `$(VAR)` references to earlier
//! entries expanded; `valueFrom.fieldRef` and `resourceFieldRef` through the downward API;
//! `configMapKeyRef` and `secretKeyRef` from the objects fetched with the pod
//! ([`config_data`]). A required reference that cannot be met is a
//! `CreateContainerConfigError` with the reason, an optional one is left unset.

use cri_proto::v1;
use k8s_openapi::api::core::v1 as k8s;

use super::config_data::{self, ConfigData, KeyRef};
use super::downward::{self, PodFields, Use};

pub fn container_env(fields: &PodFields, config: &ConfigData, c: &k8s::Container) -> Result<Vec<v1::KeyValue>, String> {
    let mut envs = config_data::env_from(c, config)?;
    for e in c.env.iter().flatten() {
        let value = match config_data::key_ref(e, config)? {
            KeyRef::Value(value) => Some(value),
            KeyRef::Skip => None,
            KeyRef::Other => match &e.value_from {
                None => Some(expand(e.value.as_deref().unwrap_or_default(), &envs)),
                Some(from) => Some(value_from(fields, c, from).map_err(|m| format!("env {:?}: {m}", e.name))?),
            },
        };
        if let Some(value) = value {
            envs.push(v1::KeyValue { key: e.name.clone(), value });
        }
    }
    config_data::last_wins(&mut envs);
    Ok(envs)
}

/// A `fieldRef` or `resourceFieldRef` (the ConfigMap and Secret ones are [`config_data::key_ref`]'s).
fn value_from(fields: &PodFields, c: &k8s::Container, from: &k8s::EnvVarSource) -> Result<String, String> {
    if let Some(f) = &from.field_ref {
        return fields.field_ref(&f.field_path, Use::Env);
    }
    if let Some(r) = &from.resource_field_ref {
        let spec = fields.pod.spec.clone().unwrap_or_default();
        let container = r.container_name.as_deref().filter(|n| !n.is_empty()).unwrap_or(&c.name);
        return downward::resource_field_ref(&spec, container, &r.resource, r.divisor.as_ref().map(|d| d.0.as_str()), fields.node);
    }
    if from.file_key_ref.is_some() {
        return Err("fileKeyRef is not supported in agent mode".into());
    }
    Err("valueFrom names no source".into())
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
        let env: Vec<(String, String)> = container_env(&fields, &ConfigData::default(), c).unwrap().into_iter().map(|kv| (kv.key, kv.value)).collect();
        let want = [("POD", "web-n1"), ("IP", "10.1.2.3"), ("APP", "web"), ("CPU", "500"), ("URL", "http://10.1.2.3:80/web-n1")];
        assert_eq!(env, want.map(|(k, v)| (k.to_string(), v.to_string())));
        // A required Secret reference that was not found fails the container.
        let mut c = c.clone();
        c.env = Some(serde_json::from_value(serde_json::json!([{"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}])).unwrap());
        let e = container_env(&fields, &ConfigData::default(), &c).unwrap_err();
        assert!(e.contains("\"S\"") && e.contains("secret \"s\" not found"), "{e}");
    }

    /// envFrom comes first, `env` after it and over it; `$(VAR)` sees both.
    #[test]
    fn env_from_and_key_refs_mix_with_the_rest() {
        let pod: k8s::Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c",
            "envFrom": [{"configMapRef": {"name": "cfg"}}],
            "env": [
                {"name": "MODE", "value": "override"},
                {"name": "KEY", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "MODE"}}},
                {"name": "BOTH", "value": "$(HOST)/$(KEY)"}
            ]}]}}))
        .unwrap();
        let cm: k8s::ConfigMap = serde_json::from_value(serde_json::json!({"data": {"MODE": "api", "HOST": "db"}})).unwrap();
        let config = ConfigData { config_maps: [("cfg".to_string(), Some(cm))].into(), ..Default::default() };
        let node = NodeInfo::default();
        let fields = PodFields { pod: &pod, pod_ips: &[], node: &node };
        let env: Vec<(String, String)> =
            container_env(&fields, &config, &pod.spec.as_ref().unwrap().containers[0]).unwrap().into_iter().map(|kv| (kv.key, kv.value)).collect();
        let want = [("HOST", "db"), ("MODE", "override"), ("KEY", "api"), ("BOTH", "db/api")];
        assert_eq!(env, want.map(|(k, v)| (k.to_string(), v.to_string())));
    }
}
