//! UpdateRuntimeConfig: kubelet tells the runtime the node's pod CIDR(s). It is recorded
//! (`<root>/runtime-config.json`, surviving restarts) and shown in verbose Status. Nothing
//! in capstan consumes it yet: pod addresses come from the CNI config's own IPAM ranges
//! (containerd uses it to fill a CNI config template, which capstan does not have).

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Error, Result, Runtime};

const FILE: &str = "runtime-config.json";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfigRecord {
    /// As kubelet sent it: one CIDR, or an IPv4 and an IPv6 one separated by a comma.
    pub pod_cidr: String,
}

impl Runtime {
    /// Records the pod CIDR; an empty one (kubelet before the node has one) changes nothing.
    pub fn update_pod_cidr(&self, pod_cidr: &str) -> Result<()> {
        if pod_cidr.is_empty() {
            return Ok(());
        }
        for cidr in pod_cidr.split(',') {
            validate(cidr.trim())?;
        }
        let record = RuntimeConfigRecord { pod_cidr: pod_cidr.to_string() };
        if self.pod_cidr().as_deref() == Some(pod_cidr) {
            return Ok(());
        }
        let path = self.runtime_config_path();
        crate::atomic::write_json(&path, &record).map_err(Error::io("cannot record the runtime config", &path))?;
        tracing::info!(pod_cidr, "pod CIDR recorded");
        Ok(())
    }

    /// The pod CIDR kubelet last sent, if any.
    pub fn pod_cidr(&self) -> Option<String> {
        crate::atomic::read_json::<RuntimeConfigRecord>(&self.runtime_config_path()).ok().map(|r| r.pod_cidr)
    }

    fn runtime_config_path(&self) -> PathBuf {
        self.options().root_dir.join(FILE)
    }
}

fn validate(cidr: &str) -> Result<()> {
    let bad = || Error::InvalidArgument(format!("pod CIDR {cidr:?} is not an address/prefix like 10.244.1.0/24"));
    let (addr, prefix) = cidr.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_are_checked() {
        assert!(validate("10.244.1.0/24").is_ok());
        assert!(validate("fd00:10:244::/64").is_ok());
        for bad in ["10.244.1.0", "10.244.1.0/33", "x/24", "fd00::/129", ""] {
            assert!(matches!(validate(bad), Err(Error::InvalidArgument(_))), "{bad}");
        }
    }
}
