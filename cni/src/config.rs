//! Loading network configuration from a CNI conf dir.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why no usable network configuration could be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no CNI network config found in {0}")]
    NoConfig(PathBuf),
    #[error("cannot read CNI conf dir {path}: {source}")]
    ReadDir { path: PathBuf, source: std::io::Error },
    #[error("cannot read CNI config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid CNI config {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// A parsed `.conflist` (or a single `.conf` promoted to a one-plugin list).
#[derive(Debug, Clone)]
pub struct NetworkConfigList {
    pub name: String,
    pub cni_version: String,
    /// Each plugin's configuration, kept as raw JSON because plugins own their own keys.
    pub plugins: Vec<serde_json::Value>,
    /// Where the configuration was loaded from.
    pub path: PathBuf,
    /// The raw list, as handed to plugins (with `name` and `cniVersion` injected per plugin).
    pub raw: serde_json::Value,
    /// `disableCheck`: the administrator asked runtimes not to run CHECK on this network.
    pub disable_check: bool,
}

impl NetworkConfigList {
    /// Every plugin binary the list needs: each plugin's `type` and, where given, its
    /// `ipam.type` (IPAM plugins are run by the main plugin from `CNI_PATH`).
    pub fn plugin_types(&self) -> Vec<String> {
        let mut types = Vec::new();
        for p in &self.plugins {
            for t in [p.get("type"), p.get("ipam").and_then(|i| i.get("type"))].into_iter().flatten() {
                if let Some(t) = t.as_str()
                    && !types.iter().any(|x| x == t)
                {
                    types.push(t.to_string());
                }
            }
        }
        types
    }

    /// Parses a list (or a single plugin configuration) already read as JSON, e.g. the copy
    /// kept with a cached result. `path` says where it came from, for messages.
    pub fn from_value(value: serde_json::Value, path: &Path) -> Result<NetworkConfigList, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid { path: path.to_path_buf(), reason };
        let raw: RawList = serde_json::from_value(value.clone()).map_err(|e| invalid(e.to_string()))?;
        let name = raw.name.ok_or_else(|| invalid("missing \"name\"".into()))?;
        let cni_version = raw.cni_version.unwrap_or_else(|| "0.2.0".into());
        let plugins = match (raw.plugins, raw.plugin_type) {
            (Some(p), _) if !p.is_empty() => p,
            (Some(_), _) => return Err(invalid("\"plugins\" is empty".into())),
            (None, Some(_)) => vec![value.clone()],
            (None, None) => return Err(invalid("neither \"plugins\" nor \"type\" given".into())),
        };
        for p in &plugins {
            if p.get("type").and_then(|t| t.as_str()).is_none() {
                return Err(invalid("a plugin has no \"type\"".into()));
            }
        }
        // The spec writes it as a string; lists in the wild also use a JSON boolean.
        let disable_check = match value.get("disableCheck") {
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::String(s)) => s.eq_ignore_ascii_case("true"),
            _ => false,
        };
        Ok(NetworkConfigList { name, cni_version, plugins, path: path.to_path_buf(), raw: value, disable_check })
    }
}

#[derive(Deserialize)]
struct RawList {
    name: Option<String>,
    #[serde(rename = "cniVersion")]
    cni_version: Option<String>,
    plugins: Option<Vec<serde_json::Value>>,
    #[serde(rename = "type")]
    plugin_type: Option<String>,
}

/// Loads the network configuration the runtime should use: the first `.conflist`, `.conf`
/// or `.json` file in `conf_dir` in lexical order, as libcni and kubelet's runtimes choose it.
pub fn load_default_network(conf_dir: &Path) -> Result<NetworkConfigList, ConfigError> {
    let entries = match std::fs::read_dir(conf_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ConfigError::NoConfig(conf_dir.to_path_buf()));
        }
        Err(source) => return Err(ConfigError::ReadDir { path: conf_dir.to_path_buf(), source }),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("conflist" | "conf" | "json")))
        .collect();
    files.sort();
    let mut last_error = None;
    for path in files {
        match load_file(&path) {
            Ok(list) => return Ok(list),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping invalid CNI config");
                last_error = Some(e);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| ConfigError::NoConfig(conf_dir.to_path_buf())))
}

/// Parses one conf file; a plain `.conf` (one plugin) becomes a list of one.
pub fn load_file(path: &Path) -> Result<NetworkConfigList, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    let invalid = |reason: String| ConfigError::Invalid { path: path.to_path_buf(), reason };
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    NetworkConfigList::from_value(value, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_dir_is_no_config() {
        let err = load_default_network(Path::new("/nonexistent/capstan-cni")).unwrap_err();
        assert!(matches!(err, ConfigError::NoConfig(_)), "{err}");
    }

    #[test]
    fn picks_first_valid_file_in_lexical_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("05-broken.conflist"), "{").unwrap();
        std::fs::write(
            dir.path().join("10-net.conflist"),
            r#"{"cniVersion":"1.0.0","name":"podnet","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("20-other.conf"), r#"{"name":"other","type":"bridge"}"#).unwrap();
        let list = load_default_network(dir.path()).unwrap();
        assert_eq!(list.name, "podnet");
        assert_eq!(list.plugins.len(), 2);
    }

    #[test]
    fn single_conf_becomes_list() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("10.conf");
        std::fs::write(&p, r#"{"cniVersion":"0.4.0","name":"n","type":"bridge"}"#).unwrap();
        let list = load_file(&p).unwrap();
        assert_eq!(list.plugins.len(), 1);
        assert_eq!(list.cni_version, "0.4.0");
        assert!(!list.disable_check);
    }

    #[test]
    fn plugin_types_include_ipam() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("10.conflist");
        std::fs::write(
            &p,
            r#"{"cniVersion":"1.0.0","name":"n","disableCheck":true,"plugins":[
                {"type":"bridge","ipam":{"type":"host-local"}},{"type":"portmap"},{"type":"bridge"}]}"#,
        )
        .unwrap();
        let list = load_file(&p).unwrap();
        assert_eq!(list.plugin_types(), ["bridge", "host-local", "portmap"]);
        assert!(list.disable_check);
    }
}
