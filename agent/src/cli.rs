//! Command-line interface. Flags override the config file, which overrides the defaults.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "capstan",
    version,
    about = "Capstan: a Kubernetes CRI runtime and node agent",
    long_about = "Capstan serves the Kubernetes CRI v1 API (RuntimeService and ImageService) on a \
                  unix socket for kubelet and crictl.\n\nWith no command, runs the daemon."
)]
pub struct Cli {
    /// Config file (TOML); default /etc/capstan/config.toml, used only if it exists.
    #[arg(long, global = true, value_name = "FILE", env = "CAPSTAN_CONFIG")]
    pub config: Option<PathBuf>,
    /// CRI socket to serve on (overrides `socket`).
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Persistent state directory (overrides `root`).
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Runtime state directory (overrides `state`).
    #[arg(long, global = true, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Log level or tracing filter (overrides `log.level`).
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log format (overrides `log.format`).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// CNI configuration directory (overrides `cni.conf_dir`).
    #[arg(long, global = true, value_name = "DIR")]
    pub cni_conf_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (the default).
    Daemon,
    /// Print version information.
    Version,
    /// Preflight checks: kernel features, cgroups, CNI, socket, disk, other runtimes.
    Check,
    /// Print this node's labels (configured `node.labels` plus discovered GPU and disk facts)
    /// as kubelet's `--node-labels` value, or as a kubeadm JoinConfiguration fragment.
    NodeLabels {
        #[arg(long, value_enum, default_value = "flag")]
        format: crate::node::LabelFormat,
    },
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the full default configuration, with comments.
    Default,
    /// Print the effective configuration (file plus flags) as TOML.
    Show,
}

impl Cli {
    /// Applies the flags on top of a loaded config.
    pub fn apply(&self, config: &mut Config) {
        if let Some(v) = &self.socket {
            config.socket = v.clone();
        }
        if let Some(v) = &self.root {
            config.root = v.clone();
        }
        if let Some(v) = &self.state {
            config.state = v.clone();
        }
        if let Some(v) = &self.log_level {
            config.log.level = v.clone();
        }
        if let Some(v) = self.log_format {
            config.log.format = v;
        }
        if let Some(v) = &self.cni_conf_dir {
            config.cni.conf_dir = v.clone();
        }
    }
}
