//! The daemon's configuration: one TOML file whose every field has a default.
//!
//! `default.toml` beside this file is the documented default config that
//! `capstan config default` prints; a unit test keeps it equal to `Config::default()`, so the
//! docs, the file and the code cannot drift apart.

use std::path::{Path, PathBuf};

use capstan_runtime::CgroupDriver;
use serde::{Deserialize, Serialize};

/// Where the daemon looks for its config file when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/capstan/config.toml";

/// The commented default config file.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub socket: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub log: LogConfig,
    pub cgroup: CgroupConfig,
    pub cni: CniConfig,
    pub images: ImagesConfig,
    pub metrics: MetricsConfig,
    pub streaming: StreamingConfig,
    pub cdi: CdiConfig,
    pub node: NodeConfig,
    pub device_plugin: DevicePluginConfig,
    pub agent: AgentConfig,
    pub security: SecurityConfig,
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port` serving `/metrics`; empty turns the endpoint off.
    pub address: String,
}

/// CDI (Container Device Interface) spec files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CdiConfig {
    /// Directories of CDI spec files (`*.json`, `*.yaml`); on a name clash the later wins.
    pub spec_dirs: Vec<PathBuf>,
}

impl Default for CdiConfig {
    fn default() -> Self {
        CdiConfig { spec_dirs: capstan_runtime::spec::cdi::DEFAULT_SPEC_DIRS.iter().map(PathBuf::from).collect() }
    }
}

/// What `capstan node-labels` reports about this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Static labels, e.g. `{ "disktype" = "ssd" }`; they win over discovered ones.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Where device nodes, procfs and sysfs are looked at for GPUs and disks (`/`).
    pub host_root: PathBuf,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig { labels: Default::default(), host_root: "/".into() }
    }
}

/// How allocated GPUs reach a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AllocateMode {
    /// CDI names when a CDI spec defines `nvidia.com/gpu=<index>`, else device specs.
    #[default]
    Auto,
    /// CDI device names only (`nvidia.com/gpu=<index>`).
    Cdi,
    /// Device nodes only (`/dev/nvidia<index>` plus the control nodes).
    DeviceSpecs,
}

/// The built-in kubelet device plugin for NVIDIA GPUs (resource `nvidia.com/gpu`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DevicePluginConfig {
    /// Serve the plugin; it stays off anyway while no GPU is found.
    pub enabled: bool,
    /// Kubelet's device-plugin directory (holds `kubelet.sock`).
    pub dir: PathBuf,
    pub allocate: AllocateMode,
}

impl Default for DevicePluginConfig {
    fn default() -> Self {
        DevicePluginConfig {
            enabled: true,
            dir: cri_proto::deviceplugin::v1beta1::DEVICE_PLUGIN_PATH.into(),
            allocate: AllocateMode::Auto,
        }
    }
}

/// Agent mode: Capstan as the node agent where no kubelet runs: static pods from a
/// directory and, with a kubeconfig, the Node, its Lease and the pods bound to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    pub enabled: bool,
    /// kubelet's `staticPodPath`: one v1 Pod per `*.yaml`, `*.yml` or `*.json` file.
    pub manifest_dir: PathBuf,
    /// The node's name in static pods' names (`<pod>-<node>`); unset: the hostname.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// How often the manifest directory is read and pods are reconciled.
    pub sync_period_seconds: u64,
    /// The API server to register with; unset: static pods only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// How often the node's Lease is renewed (kubelet: 10 s).
    pub lease_renew_seconds: u64,
    /// The Lease's `leaseDurationSeconds` (kubelet: 40 s).
    pub lease_duration_seconds: u64,
    /// The Node's status is posted on change and at least this often (kubelet: 5 min).
    pub node_status_report_seconds: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            enabled: false,
            manifest_dir: "/etc/capstan/manifests".into(),
            node_name: None,
            sync_period_seconds: 10,
            kubeconfig: None,
            lease_renew_seconds: 10,
            lease_duration_seconds: 40,
            node_status_report_seconds: 300,
        }
    }
}

impl AgentConfig {
    fn validate(&self) -> Result<(), String> {
        if self.sync_period_seconds == 0 {
            return Err("agent.sync_period_seconds must be at least 1".into());
        }
        if let Some(name) = &self.node_name
            && (name.is_empty() || name.len() > 63 || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'))
        {
            return Err(format!("agent.node_name must be a lowercase DNS name, got {name:?}"));
        }
        if let Some(path) = &self.kubeconfig
            && !path.is_absolute()
        {
            return Err(format!("agent.kubeconfig must be an absolute path, got {:?}", path.display()));
        }
        if self.lease_renew_seconds == 0 {
            return Err("agent.lease_renew_seconds must be at least 1".into());
        }
        // A lease renewed less often than it lasts would lapse between renewals.
        if self.lease_duration_seconds <= self.lease_renew_seconds || i32::try_from(self.lease_duration_seconds).is_err() {
            return Err(format!(
                "agent.lease_duration_seconds must be more than agent.lease_renew_seconds ({}), got {}",
                self.lease_renew_seconds, self.lease_duration_seconds
            ));
        }
        if self.node_status_report_seconds == 0 {
            return Err("agent.node_status_report_seconds must be at least 1".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CgroupConfig {
    pub driver: CgroupDriver,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CniConfig {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImagesConfig {
    pub sandbox_image: String,
    pub registry_config_dir: PathBuf,
    pub insecure_registries: Vec<String>,
    pub max_concurrent_downloads: usize,
    pub stall_timeout_seconds: u64,
}

/// Limits on the host paths CRI requests may point the runtime at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Directories pods' `log_directory` may be below (the runtime's root always may).
    pub log_roots: Vec<PathBuf>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig { log_roots: vec!["/var/log/pods".into()] }
    }
}

/// The server kubelet and crictl connect to for exec, attach and port-forward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamingConfig {
    pub address: String,
    pub port: u16,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub token_ttl_seconds: u64,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig { address: "127.0.0.1".into(), port: 0, tls_cert: None, tls_key: None, token_ttl_seconds: 60 }
    }
}

impl StreamingConfig {
    /// The runtime's view; `Err` says which key is wrong.
    pub fn options(&self) -> Result<capstan_runtime::streaming::server::StreamingOptions, String> {
        let address = self
            .address
            .parse()
            .map_err(|_| format!("streaming.address must be an IP address, got {:?}", self.address))?;
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => return Err("streaming.tls_cert and streaming.tls_key must be set together".into()),
        };
        if self.token_ttl_seconds == 0 {
            return Err("streaming.token_ttl_seconds must be at least 1".into());
        }
        Ok(capstan_runtime::streaming::server::StreamingOptions {
            address,
            port: self.port,
            tls,
            token_ttl: std::time::Duration::from_secs(self.token_ttl_seconds),
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: "/run/capstan/capstan.sock".into(),
            root: "/var/lib/capstan".into(),
            state: "/run/capstan".into(),
            log: LogConfig::default(),
            cgroup: CgroupConfig::default(),
            cni: CniConfig::default(),
            images: ImagesConfig::default(),
            metrics: MetricsConfig::default(),
            streaming: StreamingConfig::default(),
            cdi: CdiConfig::default(),
            node: NodeConfig::default(),
            device_plugin: DevicePluginConfig::default(),
            agent: AgentConfig::default(),
            security: SecurityConfig::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into(), format: LogFormat::Text }
    }
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            conf_dir: "/etc/cni/net.d".into(),
            bin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
        }
    }
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig {
            sandbox_image: "registry.k8s.io/pause:3.10".into(),
            registry_config_dir: "/etc/capstan/certs.d".into(),
            insecure_registries: Vec::new(),
            max_concurrent_downloads: 3,
            stall_timeout_seconds: 60,
        }
    }
}

impl Config {
    /// Parses a config file's text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        config.validate().map_err(|message| ConfigError::Parse { path: path.to_path_buf(), message })?;
        Ok(config)
    }

    /// Loads the config: an explicit path must exist; the default path may be absent, in
    /// which case the embedded defaults apply.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let path = explicit.unwrap_or(Path::new(DEFAULT_CONFIG_PATH));
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read { path: path.to_path_buf(), source }),
        }
    }

    fn validate(&self) -> Result<(), String> {
        if !self.metrics.address.is_empty() && self.metrics.address.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!("metrics.address must be host:port (an IP address and a port), got {:?}", self.metrics.address));
        }
        for (key, path) in
            [("socket", &self.socket), ("root", &self.root), ("state", &self.state), ("agent.manifest_dir", &self.agent.manifest_dir)]
        {
            if !path.is_absolute() {
                return Err(format!("{key} must be an absolute path, got {:?}", path.display()));
            }
        }
        crate::node::labels::validate_all(&self.node.labels).map_err(|e| format!("node.labels: {e}"))?;
        if self.images.stall_timeout_seconds == 0 {
            return Err("images.stall_timeout_seconds must be at least 1".into());
        }
        if let Some(bad) = self.security.log_roots.iter().find(|p| !p.is_absolute()) {
            return Err(format!("security.log_roots must be absolute paths, got {:?}", bad.display()));
        }
        if self.images.max_concurrent_downloads == 0 {
            return Err("images.max_concurrent_downloads must be at least 1".into());
        }
        self.streaming.options()?;
        self.agent.validate()
    }

    /// The runtime's share of the configuration.
    pub fn runtime_options(&self) -> capstan_runtime::RuntimeOptions {
        capstan_runtime::RuntimeOptions {
            root_dir: self.root.clone(),
            state_dir: self.state.clone(),
            cgroup_driver: self.cgroup.driver,
            cni: capstan_runtime::CniOptions {
                conf_dir: self.cni.conf_dir.clone(),
                bin_dirs: self.cni.bin_dirs.clone(),
            },
            images: capstan_runtime::ImageOptions {
                sandbox_image: self.images.sandbox_image.clone(),
                registry_config_dir: self.images.registry_config_dir.clone(),
                insecure_registries: self.images.insecure_registries.clone(),
                max_concurrent_downloads: self.images.max_concurrent_downloads,
                stall_timeout: std::time::Duration::from_secs(self.images.stall_timeout_seconds),
            },
            cdi_spec_dirs: self.cdi.spec_dirs.clone(),
            log_roots: self.security.log_roots.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_file_matches_code_defaults() {
        let parsed = Config::parse(DEFAULT_TOML, Path::new("default.toml")).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn every_default_field_is_documented_in_the_file() {
        // Serialising the defaults and parsing the file must give the same key set; a field
        // added to the struct but not to default.toml would otherwise slip through.
        let from_code = toml::Value::try_from(Config::default()).unwrap();
        let from_file: toml::Value = toml::from_str(DEFAULT_TOML).unwrap();
        assert_eq!(from_code, from_file);
    }

    #[test]
    fn unknown_key_is_named_in_the_error() {
        let err = Config::parse("[cni]\nconf_dirr = \"/x\"\n", Path::new("c.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("conf_dirr"), "{msg}");
        assert!(msg.contains("c.toml"), "{msg}");
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let c = Config::parse("root = \"/tmp/r\"\n[cgroup]\ndriver = \"systemd\"\n", Path::new("c")).unwrap();
        assert_eq!(c.root, PathBuf::from("/tmp/r"));
        assert_eq!(c.cgroup.driver, CgroupDriver::Systemd);
        assert_eq!(c.state, PathBuf::from("/run/capstan"));
    }

    #[test]
    fn relative_paths_and_bad_values_are_rejected() {
        assert!(Config::parse("root = \"var/lib\"\n", Path::new("c")).unwrap_err().to_string().contains("root"));
        assert!(Config::parse("[cgroup]\ndriver = \"cgroupv3\"\n", Path::new("c")).is_err());
    }

    #[test]
    fn agent_section_is_checked() {
        let c = Config::parse("[agent]\nenabled = true\nnode_name = \"edge-1\"\nsync_period_seconds = 2\n", Path::new("c")).unwrap();
        assert!(c.agent.enabled);
        assert_eq!((c.agent.node_name.as_deref(), c.agent.sync_period_seconds), (Some("edge-1"), 2));
        assert_eq!(c.agent.manifest_dir, PathBuf::from("/etc/capstan/manifests"));
        assert!(!Config::default().agent.enabled, "agent mode is off by default");
        let c = Config::parse(
            "[agent]\nkubeconfig = \"/etc/capstan/kubeconfig\"\nlease_renew_seconds = 1\nlease_duration_seconds = 5\n",
            Path::new("c"),
        )
        .unwrap();
        assert_eq!(c.agent.kubeconfig.as_deref(), Some(Path::new("/etc/capstan/kubeconfig")));
        assert_eq!((c.agent.lease_renew_seconds, c.agent.lease_duration_seconds, c.agent.node_status_report_seconds), (1, 5, 300));
        assert_eq!(Config::default().agent.kubeconfig, None, "no API server unless configured");
        for bad in [
            "manifest_dir = \"m\"",
            "sync_period_seconds = 0",
            "node_name = \"Edge_1\"",
            "kubeconfig = \"kubeconfig\"",
            "lease_renew_seconds = 0",
            "lease_duration_seconds = 10",
            "node_status_report_seconds = 0",
        ] {
            let err = Config::parse(&format!("[agent]\n{bad}\n"), Path::new("c")).unwrap_err().to_string();
            assert!(err.contains("agent."), "{bad}: {err}");
        }
        let err = Config::parse("[agent]\nlease_renew = 3\n", Path::new("c")).unwrap_err().to_string();
        assert!(err.contains("lease_renew"), "{err}");
    }

    #[test]
    fn streaming_section_is_checked() {
        let c = Config::parse("[streaming]\naddress = \"::1\"\nport = 10010\n", Path::new("c")).unwrap();
        let o = c.streaming.options().unwrap();
        assert_eq!((o.address.to_string(), o.port, o.tls.is_none()), ("::1".to_string(), 10010, true));
        for bad in ["address = \"localhost\"", "tls_cert = \"/c.pem\"", "token_ttl_seconds = 0"] {
            let err = Config::parse(&format!("[streaming]\n{bad}\n"), Path::new("c")).unwrap_err().to_string();
            assert!(err.contains("streaming."), "{bad}: {err}");
        }
    }

    #[test]
    fn gpu_and_label_sections_parse_and_bad_labels_are_refused() {
        let c = Config::parse(
            "[node]\nlabels = { \"disktype\" = \"ssd\" }\nhost_root = \"/tmp/fake\"\n\
             [cdi]\nspec_dirs = [\"/x\"]\n[device_plugin]\nallocate = \"device-specs\"\n",
            Path::new("c"),
        )
        .unwrap();
        assert_eq!(c.node.labels.get("disktype").map(String::as_str), Some("ssd"));
        assert_eq!(c.runtime_options().cdi_spec_dirs, vec![PathBuf::from("/x")]);
        assert_eq!(c.device_plugin.allocate, AllocateMode::DeviceSpecs);
        let err = Config::parse("[node]\nlabels = { \"bad key!\" = \"x\" }\n", Path::new("c")).unwrap_err();
        assert!(err.to_string().contains("bad key!"), "{err}");
    }

    #[test]
    fn missing_explicit_file_is_an_error_but_missing_default_is_not() {
        assert!(Config::load(Some(Path::new("/nonexistent/capstan.toml"))).is_err());
    }
}
