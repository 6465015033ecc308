//! CNI 1.0 plugin invocation for pod networks (the runtime side of the spec).
//!
//! [`Cni`] loads the network configuration list from a conf dir, finds plugins in bin dirs and
//! runs ADD, CHECK and DEL for one [`Attachment`] (a pod's netns and interface), chaining
//! `prevResult`, passing capability arguments (`portMappings`, `bandwidth`, `dns`) in
//! `runtimeConfig`, and caching ADD results on disk so DEL works after a restart.
//!
//! Everything here is blocking (plugins are processes): async callers use `spawn_blocking`.

mod add;
mod attachment;
mod cache;
mod check;
mod cni;
pub mod config;
mod del;
mod error;
mod exec;
mod result;

pub use attachment::{Attachment, Bandwidth, DEFAULT_IFNAME, DnsCapability, PortMapping, Protocol};
pub use cni::{Cni, DEFAULT_BIN_DIRS, DEFAULT_TIMEOUT};
pub use config::{ConfigError, NetworkConfigList, load_default_network};
pub use error::{CniCommand, CniError};
pub use ipnet::IpNet;
pub use result::{Dns, Interface, IpConfig, NetworkResult, Route};
