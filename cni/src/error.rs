//! The one error type of this crate.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::ConfigError;

/// The CNI operation a plugin was asked to perform (`CNI_COMMAND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniCommand {
    Add,
    Check,
    Del,
}

impl CniCommand {
    /// The value of `CNI_COMMAND`.
    pub fn as_str(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Check => "CHECK",
            CniCommand::Del => "DEL",
        }
    }
}

impl fmt::Display for CniCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a CNI operation failed. The messages are meant for operators: they name the plugin,
/// the command and what the plugin said.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// No usable network configuration in the conf dir.
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// A plugin named by the configuration (`type` or `ipam.type`) is not installed.
    #[error("CNI plugin {plugin:?} not found in {}", display_dirs(dirs))]
    PluginNotFound { plugin: String, dirs: Vec<PathBuf> },

    /// The plugin reported an error in the CNI error format (`code`, `msg`, `details`).
    #[error("CNI plugin {plugin} {command} failed: {msg}{} (code {code})", details_suffix(details))]
    Plugin { plugin: String, command: CniCommand, code: u64, msg: String, details: String },

    /// The plugin failed without a CNI error on stdout (crashed, killed, or printed garbage).
    #[error("CNI plugin {plugin} {command} failed ({status}): {output}")]
    PluginFailed { plugin: String, command: CniCommand, status: String, output: String },

    /// The plugin did not finish in time; it and its children were killed.
    #[error("CNI plugin {plugin} {command} did not finish within {timeout:?} and was killed")]
    Timeout { plugin: String, command: CniCommand, timeout: Duration },

    /// The plugin binary exists but could not be started.
    #[error("cannot run CNI plugin {path}: {source}")]
    Spawn { path: PathBuf, source: std::io::Error },

    /// ADD succeeded but its stdout is not a CNI result.
    #[error("CNI plugin {plugin} {command} returned an invalid result: {reason}")]
    InvalidResult { plugin: String, command: CniCommand, reason: String },

    /// The caller's attachment cannot be handed to plugins (bad id, interface name, netns).
    #[error("invalid CNI attachment: {0}")]
    InvalidAttachment(String),

    /// CHECK needs the result of a previous ADD and there is none.
    #[error("container {container_id} ({ifname}) is not attached to a CNI network: no cached ADD result")]
    NotAttached { container_id: String, ifname: String },

    /// Reading or writing the on-disk result cache failed.
    #[error("CNI result cache {path}: {source}")]
    Cache { path: PathBuf, source: std::io::Error },
}

impl CniError {
    /// The CNI error code, when the plugin reported one. Code 11 means "try again later".
    pub fn plugin_code(&self) -> Option<u64> {
        match self {
            CniError::Plugin { code, .. } => Some(*code),
            _ => None,
        }
    }
}

fn display_dirs(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "(no plugin directories configured)".into();
    }
    dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
}

fn details_suffix(details: &str) -> String {
    if details.is_empty() { String::new() } else { format!(": {details}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_plugin() {
        let e = CniError::PluginNotFound {
            plugin: "bridge".into(),
            dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
        };
        assert_eq!(e.to_string(), "CNI plugin \"bridge\" not found in /opt/cni/bin, /usr/lib/cni");
        let e = CniError::Plugin {
            plugin: "portmap".into(),
            command: CniCommand::Add,
            code: 7,
            msg: "invalid config".into(),
            details: String::new(),
        };
        assert_eq!(e.to_string(), "CNI plugin portmap ADD failed: invalid config (code 7)");
        assert_eq!(e.plugin_code(), Some(7));
    }
}
