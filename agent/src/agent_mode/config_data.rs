//! ConfigMap and Secret data in an API pod: env `valueFrom.configMapKeyRef` /
//! `secretKeyRef`, `envFrom`, and the files of `configMap` / `secret` volumes. The objects
//! are fetched before the pod starts ([`super::api::config_objects`]); everything here is
//! pure lookups over what was fetched, with kubelet's rules for `optional`.

use std::collections::{BTreeMap, BTreeSet};

use cri_proto::v1;
use k8s_openapi::api::core::v1 as k8s;

use super::projected::{self, File};

/// The objects an API pod references, by name in its namespace; `None`: not found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigData {
    pub config_maps: BTreeMap<String, Option<k8s::ConfigMap>>,
    pub secrets: BTreeMap<String, Option<k8s::Secret>>,
}

/// The names of the ConfigMaps and Secrets a pod spec references.
#[derive(Debug, Default, PartialEq)]
pub struct References {
    pub config_maps: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
}

pub fn references(spec: &k8s::PodSpec) -> References {
    let mut r = References::default();
    for c in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
        for e in c.env.iter().flatten() {
            if let Some(s) = &e.value_from {
                r.config_maps.extend(s.config_map_key_ref.as_ref().map(|k| k.name.clone()));
                r.secrets.extend(s.secret_key_ref.as_ref().map(|k| k.name.clone()));
            }
        }
        for f in c.env_from.iter().flatten() {
            r.config_maps.extend(f.config_map_ref.as_ref().map(|k| k.name.clone()));
            r.secrets.extend(f.secret_ref.as_ref().map(|k| k.name.clone()));
        }
    }
    for v in spec.volumes.iter().flatten() {
        r.config_maps.extend(v.config_map.as_ref().map(|c| c.name.clone()));
        r.secrets.extend(v.secret.as_ref().and_then(|s| s.secret_name.clone()));
    }
    r.config_maps.retain(|n| !n.is_empty());
    r.secrets.retain(|n| !n.is_empty());
    r
}

/// One object's data as bytes by key (a ConfigMap's `data` and `binaryData`, a Secret's
/// decoded `data`); `None` when the object was not found.
fn config_map_data(data: &ConfigData, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
    let cm = data.config_maps.get(name)?.as_ref()?;
    let mut out: BTreeMap<String, Vec<u8>> = cm.binary_data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect();
    out.extend(cm.data.iter().flatten().map(|(k, v)| (k.clone(), v.clone().into_bytes())));
    Some(out)
}

fn secret_data(data: &ConfigData, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
    let secret = data.secrets.get(name)?.as_ref()?;
    let mut out: BTreeMap<String, Vec<u8>> = secret.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect();
    // The API server folds stringData into data; a fake or old server may not.
    for (k, v) in secret.string_data.iter().flatten() {
        out.entry(k.clone()).or_insert_with(|| v.clone().into_bytes());
    }
    Some(out)
}

/// One env var's value from a key reference.
#[derive(Debug, PartialEq)]
pub enum KeyRef {
    /// Not a configMapKeyRef or secretKeyRef: a literal value or another source.
    Other,
    /// Optional and missing: the variable is left out.
    Skip,
    Value(String),
}

/// Resolves `valueFrom.configMapKeyRef` / `secretKeyRef`. A missing object or key is an
/// error unless the reference is `optional` (kubelet: CreateContainerConfigError).
pub fn key_ref(e: &k8s::EnvVar, data: &ConfigData) -> Result<KeyRef, String> {
    let Some(from) = &e.value_from else { return Ok(KeyRef::Other) };
    let (kind, name, key, optional, values) = if let Some(r) = &from.config_map_key_ref {
        ("configmap", &r.name, &r.key, r.optional, config_map_data(data, &r.name))
    } else if let Some(r) = &from.secret_key_ref {
        ("secret", &r.name, &r.key, r.optional, secret_data(data, &r.name))
    } else {
        return Ok(KeyRef::Other);
    };
    let optional = optional.unwrap_or(false);
    match values {
        None if optional => Ok(KeyRef::Skip),
        None => Err(format!("env {:?}: {kind} {name:?} not found", e.name)),
        Some(values) => match values.get(key) {
            Some(bytes) => Ok(KeyRef::Value(String::from_utf8_lossy(bytes).into_owned())),
            None if optional => Ok(KeyRef::Skip),
            None => Err(format!("env {:?}: key {key:?} not found in {kind} {name:?}", e.name)),
        },
    }
}

/// The variables of a container's `envFrom`, in order (a later source wins on a clash);
/// keys that are not valid variable names are skipped, as kubelet does.
pub fn env_from(c: &k8s::Container, data: &ConfigData) -> Result<Vec<v1::KeyValue>, String> {
    let mut out = Vec::new();
    for f in c.env_from.iter().flatten() {
        let prefix = f.prefix.clone().unwrap_or_default();
        let (kind, name, optional, values) = if let Some(r) = &f.config_map_ref {
            ("configmap", &r.name, r.optional, config_map_data(data, &r.name))
        } else if let Some(r) = &f.secret_ref {
            ("secret", &r.name, r.optional, secret_data(data, &r.name))
        } else {
            continue;
        };
        let Some(values) = values else {
            if optional.unwrap_or(false) {
                continue;
            }
            return Err(format!("envFrom: {kind} {name:?} not found"));
        };
        for (key, value) in values {
            let var = format!("{prefix}{key}");
            if !is_env_name(&var) {
                tracing::warn!(container = %c.name, %kind, %name, key = %key, "envFrom: not a valid variable name; skipped");
                continue;
            }
            out.push(v1::KeyValue { key: var, value: String::from_utf8_lossy(&value).into_owned() });
        }
    }
    Ok(out)
}

/// Keeps the last of each variable: `env` is appended after `envFrom` and overrides it.
pub fn last_wins(envs: &mut Vec<v1::KeyValue>) {
    let mut seen = BTreeSet::new();
    let mut kept: Vec<v1::KeyValue> = envs.drain(..).rev().filter(|kv| seen.insert(kv.key.clone())).collect();
    kept.reverse();
    *envs = kept;
}

fn is_env_name(s: &str) -> bool {
    !s.is_empty() && !s.starts_with(|c: char| c.is_ascii_digit()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// The files of a `configMap` or `secret` volume (`None` for any other kind), for
/// [`super::projected::write`] (which also checks that item paths stay inside the volume):
/// every key, or only `items` with their paths and modes. A missing object gives an empty
/// volume when `optional`, an error otherwise; so does an item naming a missing key.
pub fn volume_files(v: &k8s::Volume, data: &ConfigData) -> Option<Result<Vec<File>, String>> {
    let source = if let Some(c) = &v.config_map {
        Source { kind: "configmap", name: c.name.clone(), items: &c.items, default_mode: c.default_mode, optional: c.optional, values: config_map_data(data, &c.name) }
    } else if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let values = secret_data(data, &name);
        Source { kind: "secret", name, items: &s.items, default_mode: s.default_mode, optional: s.optional, values }
    } else {
        return None;
    };
    Some(source.files(&v.name))
}

/// A configMap or secret volume source with the object's data.
struct Source<'a> {
    kind: &'static str,
    name: String,
    items: &'a Option<Vec<k8s::KeyToPath>>,
    default_mode: Option<i32>,
    optional: Option<bool>,
    values: Option<BTreeMap<String, Vec<u8>>>,
}

impl Source<'_> {
    fn files(self, volume: &str) -> Result<Vec<File>, String> {
        let (kind, name) = (self.kind, &self.name);
        let optional = self.optional.unwrap_or(false);
        let mode = |m: Option<i32>| m.or(self.default_mode).and_then(|m| u32::try_from(m).ok()).unwrap_or(projected::DEFAULT_MODE);
        let Some(values) = self.values else {
            return if optional { Ok(Vec::new()) } else { Err(format!("volume {volume:?}: {kind} {name:?} not found")) };
        };
        let Some(items) = self.items else {
            return Ok(values.into_iter().map(|(k, bytes)| File { path: k, data: bytes, mode: mode(None) }).collect());
        };
        let mut files = Vec::new();
        for item in items {
            match values.get(&item.key) {
                Some(bytes) => files.push(File { path: item.path.clone(), data: bytes.clone(), mode: mode(item.mode) }),
                None if optional => {}
                None => return Err(format!("volume {volume:?}: key {:?} not found in {kind} {name:?}", item.key)),
            }
        }
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn data() -> ConfigData {
        let cm: k8s::ConfigMap =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "cfg"}, "data": {"GREETING": "hello", "app.properties": "a=1\n", "1bad": "x"}}))
                .unwrap();
        let secret = k8s::Secret {
            data: Some(BTreeMap::from([("password".to_string(), ByteString(b"s3cret".to_vec()))])),
            ..Default::default()
        };
        ConfigData {
            config_maps: BTreeMap::from([("cfg".to_string(), Some(cm)), ("gone".to_string(), None)]),
            secrets: BTreeMap::from([("sec".to_string(), Some(secret))]),
        }
    }

    fn env(json: serde_json::Value) -> k8s::EnvVar {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn key_refs_follow_kubelets_optional_rules() {
        let d = data();
        let cm = |name: &str, key: &str, optional: bool| {
            env(serde_json::json!({"name": "V", "valueFrom": {"configMapKeyRef": {"name": name, "key": key, "optional": optional}}}))
        };
        assert_eq!(key_ref(&cm("cfg", "GREETING", false), &d), Ok(KeyRef::Value("hello".into())));
        assert_eq!(key_ref(&cm("cfg", "nope", true), &d), Ok(KeyRef::Skip));
        assert_eq!(key_ref(&cm("gone", "x", true), &d), Ok(KeyRef::Skip));
        assert!(key_ref(&cm("cfg", "nope", false), &d).unwrap_err().contains("\"nope\""));
        assert!(key_ref(&cm("gone", "x", false), &d).unwrap_err().contains("not found"));
        let s = env(serde_json::json!({"name": "P", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}}));
        assert_eq!(key_ref(&s, &d), Ok(KeyRef::Value("s3cret".into())));
        assert_eq!(key_ref(&env(serde_json::json!({"name": "L", "value": "x"})), &d), Ok(KeyRef::Other));
    }

    #[test]
    fn env_from_prefixes_skips_bad_names_and_env_overrides_it() {
        let c: k8s::Container = serde_json::from_value(serde_json::json!({"name": "c", "envFrom": [
            {"configMapRef": {"name": "cfg"}}, {"secretRef": {"name": "sec"}, "prefix": "S_"}, {"configMapRef": {"name": "gone", "optional": true}}
        ]}))
        .unwrap();
        let mut envs = env_from(&c, &data()).unwrap();
        let keys: Vec<&str> = envs.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["GREETING", "app.properties", "S_password"], "1bad is no variable name");
        envs.push(v1::KeyValue { key: "GREETING".into(), value: "override".into() });
        last_wins(&mut envs);
        assert_eq!(envs.iter().map(|kv| (kv.key.as_str(), kv.value.as_str())).collect::<Vec<_>>(),
                   [("app.properties", "a=1\n"), ("S_password", "s3cret"), ("GREETING", "override")]);
        let missing: k8s::Container = serde_json::from_value(serde_json::json!({"name": "c", "envFrom": [{"secretRef": {"name": "x"}}]})).unwrap();
        assert!(env_from(&missing, &data()).is_err());
    }

    #[test]
    fn volume_files_take_items_and_modes() {
        let v: k8s::Volume = serde_json::from_value(serde_json::json!({"name": "v", "configMap": {
            "name": "cfg", "defaultMode": 0o440, "items": [{"key": "app.properties", "path": "conf/app.properties"}, {"key": "GREETING", "path": "g", "mode": 0o600}]
        }}))
        .unwrap();
        let files = volume_files(&v, &data()).unwrap().unwrap();
        assert_eq!(files, [
            File { path: "conf/app.properties".into(), data: b"a=1\n".to_vec(), mode: 0o440 },
            File { path: "g".into(), data: b"hello".to_vec(), mode: 0o600 },
        ]);
        let all: k8s::Volume = serde_json::from_value(serde_json::json!({"name": "s", "secret": {"secretName": "sec"}})).unwrap();
        assert_eq!(volume_files(&all, &data()).unwrap().unwrap(), [File { path: "password".into(), data: b"s3cret".to_vec(), mode: 0o644 }]);
        let optional: k8s::Volume = serde_json::from_value(serde_json::json!({"name": "v", "secret": {"secretName": "none", "optional": true}})).unwrap();
        assert_eq!(volume_files(&optional, &data()).unwrap().unwrap(), []);
        let required: k8s::Volume = serde_json::from_value(serde_json::json!({"name": "v", "configMap": {"name": "gone"}})).unwrap();
        assert!(volume_files(&required, &data()).unwrap().is_err());
        let other: k8s::Volume = serde_json::from_value(serde_json::json!({"name": "v", "emptyDir": {}})).unwrap();
        assert!(volume_files(&other, &data()).is_none());
        let spec: k8s::PodSpec = serde_json::from_value(serde_json::json!({"containers": [{"name": "c", "envFrom": [{"secretRef": {"name": "a"}}],
            "env": [{"name": "x", "valueFrom": {"configMapKeyRef": {"name": "b", "key": "k"}}}]}], "volumes": [v, all]}))
        .unwrap();
        let r = references(&spec);
        assert_eq!((r.config_maps.into_iter().collect::<Vec<_>>(), r.secrets.into_iter().collect::<Vec<_>>()),
                   (vec!["b".to_string(), "cfg".to_string()], vec!["a".to_string(), "sec".to_string()]));
    }
}
