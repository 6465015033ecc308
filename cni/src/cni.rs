//! The [`Cni`] handle: where configurations, plugins and cached results live, and the plumbing
//! shared by ADD, CHECK and DEL (one file each).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::cache;
use crate::exec::{self, Invocation};
use crate::{Attachment, CniCommand, CniError, ConfigError, NetworkConfigList, NetworkResult};

/// Plugin directories searched when the configuration names none: the upstream location
/// first, then Debian's (`containernetworking-plugins` installs into `/usr/lib/cni`).
pub const DEFAULT_BIN_DIRS: [&str; 2] = ["/opt/cni/bin", "/usr/lib/cni"];

/// How long one plugin call may take before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The runtime side of CNI for one node. Every call is synchronous (it runs plugin processes
/// and waits): call it from `spawn_blocking`. The conf dir is read on every call, so a network
/// add-on that installs its configuration later is picked up without a restart.
///
/// ```no_run
/// use capstan_cni::{Attachment, Cni};
/// let cni = Cni::new("/etc/cni/net.d", Cni::default_bin_dirs(), "/var/lib/capstan/cni-results");
/// let att = Attachment::new("4f1c0a", "/run/netns/pod-4f1c0a").with_pod("default", "web", "uid-1");
/// let result = cni.add(&att)?;
/// println!("pod IPs: {:?}", result.pod_ips(&att.ifname));
/// cni.del(&att)?;
/// # Ok::<(), capstan_cni::CniError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Cni {
    conf_dir: PathBuf,
    bin_dirs: Vec<PathBuf>,
    cache_dir: PathBuf,
    timeout: Duration,
}

impl Cni {
    /// `cache_dir` holds one file per attachment; it must survive daemon restarts (a state
    /// dir such as `<root>/cni-results`) and is created on first use.
    pub fn new(conf_dir: impl Into<PathBuf>, bin_dirs: Vec<PathBuf>, cache_dir: impl Into<PathBuf>) -> Self {
        Cni { conf_dir: conf_dir.into(), bin_dirs, cache_dir: cache_dir.into(), timeout: DEFAULT_TIMEOUT }
    }

    /// [`DEFAULT_BIN_DIRS`] as paths.
    pub fn default_bin_dirs() -> Vec<PathBuf> {
        DEFAULT_BIN_DIRS.iter().map(PathBuf::from).collect()
    }

    /// Sets the limit for each plugin call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn conf_dir(&self) -> &Path {
        &self.conf_dir
    }

    pub fn bin_dirs(&self) -> &[PathBuf] {
        &self.bin_dirs
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// The network pods are attached to: the first valid file of the conf dir.
    pub fn network(&self) -> Result<NetworkConfigList, CniError> {
        Ok(crate::load_default_network(&self.conf_dir)?)
    }

    /// Whether pods can be networked (CRI `NetworkReady`): a configuration exists and every
    /// plugin it names, IPAM included, is installed. The error's message is the reason to show.
    pub fn status(&self) -> Result<NetworkConfigList, CniError> {
        let list = self.network()?;
        for plugin in list.plugin_types() {
            exec::find_plugin(&self.bin_dirs, &plugin)?;
        }
        Ok(list)
    }

    /// The result of the last successful ADD of this attachment, if it is still attached;
    /// this is how pod IPs are recovered after a daemon restart.
    pub fn cached_result(&self, att: &Attachment) -> Result<Option<NetworkResult>, CniError> {
        att.validate()?;
        for (path, entry) in cache::find(&self.cache_dir, &att.container_id, &att.ifname)? {
            match entry {
                Ok(entry) => return parse_result(&entry.network, CniCommand::Add, entry.result).map(Some),
                Err(reason) => tracing::warn!(path = %path.display(), reason, "ignoring unreadable CNI result cache"),
            }
        }
        Ok(None)
    }

    /// Brings up `lo` in the pod's namespace with the `loopback` plugin. Network add-ons do
    /// not include it in their lists, so runtimes run it on their own; there is nothing to
    /// delete (it goes away with the namespace).
    pub fn add_loopback(&self, container_id: &str, netns: &Path) -> Result<(), CniError> {
        let mut att = Attachment::new(container_id, netns);
        att.ifname = "lo".into();
        att.validate()?;
        require_netns(&att.netns)?;
        let list = NetworkConfigList::from_value(
            serde_json::json!({"cniVersion": "0.3.1", "name": "cni-loopback", "type": "loopback"}),
            Path::new("(built-in loopback)"),
        )?;
        let netns = att.netns.to_string_lossy().into_owned();
        let plugin = &list.plugins[0];
        self.invoke(&list, plugin, CniCommand::Add, &att, &netns, None, &att.cni_args_string(), &BTreeMap::new())?;
        Ok(())
    }

    /// Runs one plugin of `list` with the per-plugin configuration the spec prescribes.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn invoke(
        &self,
        list: &NetworkConfigList,
        plugin: &Value,
        command: CniCommand,
        att: &Attachment,
        netns: &str,
        prev_result: Option<&Value>,
        cni_args: &str,
        runtime_config: &BTreeMap<String, Value>,
    ) -> Result<Vec<u8>, CniError> {
        let plugin_type = plugin_type(list, plugin)?;
        let path = exec::find_plugin(&self.bin_dirs, plugin_type)?;
        let stdin = plugin_config(list, plugin, prev_result, runtime_config);
        let cni_path = self.bin_dirs.iter().map(|d| d.to_string_lossy()).collect::<Vec<_>>().join(":");
        let inv = Invocation {
            command,
            container_id: &att.container_id,
            netns,
            ifname: &att.ifname,
            cni_args,
            cni_path: &cni_path,
        };
        exec::run(&path, plugin_type, &inv, stdin, self.timeout)
    }

    /// Checks up front that every plugin of the list exists, so ADD does not half-run.
    pub(crate) fn require_plugins(&self, list: &NetworkConfigList) -> Result<(), CniError> {
        for plugin in list.plugin_types() {
            exec::find_plugin(&self.bin_dirs, &plugin)?;
        }
        Ok(())
    }
}

pub(crate) fn plugin_type<'a>(list: &NetworkConfigList, plugin: &'a Value) -> Result<&'a str, CniError> {
    plugin.get("type").and_then(Value::as_str).ok_or_else(|| {
        CniError::Config(ConfigError::Invalid { path: list.path.clone(), reason: "a plugin has no \"type\"".into() })
    })
}

/// One plugin's stdin: its own configuration with the list's `name` and `cniVersion`, the
/// previous result, and the capability arguments it declares (and only those).
pub(crate) fn plugin_config(
    list: &NetworkConfigList,
    plugin: &Value,
    prev_result: Option<&Value>,
    runtime_config: &BTreeMap<String, Value>,
) -> Vec<u8> {
    let mut conf = match plugin {
        Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    conf.insert("name".into(), Value::String(list.name.clone()));
    conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    if let Some(prev) = prev_result {
        conf.insert("prevResult".into(), prev.clone());
    }
    let declared = plugin.get("capabilities").and_then(Value::as_object);
    let selected: serde_json::Map<String, Value> = runtime_config
        .iter()
        .filter(|(key, _)| declared.and_then(|d| d.get(*key)).and_then(Value::as_bool) == Some(true))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !selected.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(selected));
    }
    serde_json::to_vec(&Value::Object(conf)).unwrap_or_default()
}

/// Parses stdout of a successful ADD.
pub(crate) fn parse_result(plugin: &str, command: CniCommand, raw: Value) -> Result<NetworkResult, CniError> {
    NetworkResult::parse(raw).map_err(|reason| CniError::InvalidResult { plugin: plugin.to_string(), command, reason })
}

/// Whether a CNI version string is at least `min` (major, minor, patch). Versions that do not
/// parse count as old: features gated on a version are then not used.
pub(crate) fn version_at_least(version: &str, min: (u64, u64, u64)) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u64>());
    match (parts.next(), parts.next(), parts.next().unwrap_or(Ok(0))) {
        (Some(Ok(a)), Some(Ok(b)), Ok(c)) => (a, b, c) >= min,
        _ => false,
    }
}

/// Whether `path` is a live network namespace (an nsfs file), not a leftover mount point.
pub(crate) fn is_netns(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

pub(crate) fn require_netns(path: &Path) -> Result<(), CniError> {
    if is_netns(path) {
        Ok(())
    } else {
        Err(CniError::InvalidAttachment(format!("{} is not a network namespace", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list() -> NetworkConfigList {
        NetworkConfigList::from_value(
            json!({"cniVersion": "1.0.0", "name": "podnet", "plugins": [
                {"type": "bridge", "name": "ignored", "cniVersion": "0.1.0"},
                {"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": false}}
            ]}),
            Path::new("/x.conflist"),
        )
        .unwrap()
    }

    #[test]
    fn plugin_config_injects_name_version_prev_and_declared_capabilities() {
        let list = list();
        let rc: BTreeMap<String, Value> = [
            ("portMappings".to_string(), json!([{"hostPort": 1, "containerPort": 2, "protocol": "tcp"}])),
            ("bandwidth".to_string(), json!({"ingressRate": 1})),
        ]
        .into();
        let first: Value = serde_json::from_slice(&plugin_config(&list, &list.plugins[0], None, &rc)).unwrap();
        assert_eq!(first["name"], "podnet");
        assert_eq!(first["cniVersion"], "1.0.0");
        assert!(first.get("prevResult").is_none());
        assert!(first.get("runtimeConfig").is_none(), "bridge declares no capabilities");
        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        let second: Value = serde_json::from_slice(&plugin_config(&list, &list.plugins[1], Some(&prev), &rc)).unwrap();
        assert_eq!(second["prevResult"], prev);
        assert_eq!(second["runtimeConfig"], json!({"portMappings": rc["portMappings"]}));
    }

    #[test]
    fn versions_compare() {
        assert!(version_at_least("1.0.0", (0, 4, 0)));
        assert!(version_at_least("0.4.0", (0, 4, 0)));
        assert!(!version_at_least("0.3.1", (0, 4, 0)));
        assert!(version_at_least("1.1", (1, 0, 0)));
        assert!(!version_at_least("garbage", (0, 1, 0)));
    }

    #[test]
    fn a_plain_file_is_not_a_netns() {
        assert!(!is_netns(Path::new("/etc/hostname")));
        assert!(!is_netns(Path::new("/nonexistent/netns")));
        assert!(is_netns(Path::new("/proc/self/ns/net")));
    }
}
