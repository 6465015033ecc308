//! CNI 1.0 plugin invocation for pod networks.
//!
//! Loads network configuration lists from a conf dir, finds plugins in bin dirs, and runs
//! ADD/CHECK/DEL/STATUS the way the CNI spec's runtime side describes.

pub mod config;

pub use config::{ConfigError, NetworkConfigList, load_default_network};
