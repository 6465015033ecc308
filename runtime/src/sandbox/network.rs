//! The pod network through CNI: ADD after the pod's netns exists, DEL when the pod stops.
//! The plugins are processes, so every CNI call runs on a blocking thread.

use std::path::{Path, PathBuf};

use capstan_cni::{Attachment, Cni, CniError, ConfigError, PortMapping, Protocol};
use cri_proto::v1;

use super::store::{PodNetwork, Sandbox, SandboxRecord};
use crate::{Error, Result, Runtime};

impl Runtime {
    fn cni(&self) -> Cni {
        let options = &self.options().cni;
        Cni::new(&options.conf_dir, options.bin_dirs.clone(), self.options().root_dir.join("cni-results"))
    }

    /// Attaches the pod's network namespace (pinned at `netns`) to the CNI network and
    /// returns what CNI reported. Host-network pods get no network of their own; on a node
    /// without any CNI config (kubelet keeps such a node NotReady) a pod gets loopback only.
    pub(crate) async fn setup_pod_network(&self, sandbox: &Sandbox, netns: Option<PathBuf>) -> Result<Option<PodNetwork>> {
        let record = sandbox.record();
        if !record.namespaces.network {
            return Ok(None);
        }
        let netns = netns
            .ok_or_else(|| Error::Internal("the pod's network namespace was not pinned".into()))?;
        let cni = self.cni();
        let list = match cni.network() {
            Ok(list) => list,
            Err(CniError::Config(ConfigError::NoConfig(dir))) => {
                tracing::warn!(pod_id = %record.id, conf_dir = %dir.display(), "no CNI network config: the pod gets loopback only");
                return Ok(None);
            }
            Err(e) => return Err(Error::FailedPrecondition(format!("pod network: {e}"))),
        };
        // Recorded before ADD so that any failure (or a crash) leads to a DEL.
        let planned = PodNetwork { network: list.name.clone(), ..Default::default() };
        sandbox.update(&self.sandboxes, |r| r.network = Some(planned.clone()))?;
        let attachment = attachment(&record, netns)?;
        let result = tokio::task::spawn_blocking(move || cni.add(&attachment))
            .await
            .map_err(|e| Error::Internal(format!("CNI task failed: {e}")))?
            .map_err(|e| Error::Unavailable(format!("pod network setup failed: {e}")))?;
        let ips: Vec<String> = result.pod_ips(capstan_cni::DEFAULT_IFNAME).iter().map(|ip| ip.to_string()).collect();
        tracing::info!(pod_id = %record.id, network = %list.name, ?ips, "pod attached to the network");
        Ok(Some(PodNetwork { network: list.name, ips }))
    }

    /// Pins the pod's netns for CNI DEL before anything else lets go of it; `None` for a pod
    /// without a network. See [`hold_netns`].
    pub(crate) fn hold_pod_netns(&self, sandbox: &Sandbox) -> Result<Option<PathBuf>> {
        let record = sandbox.record();
        if record.network.is_none() {
            return Ok(None);
        }
        hold_netns(&record.pod_dir.join("ns")).map(Some)
    }

    /// Detaches the pod from its CNI network (DEL is idempotent), entering the netns at
    /// `netns` (from [`Runtime::hold_pod_netns`], `None` for a pod without a network).
    pub(crate) async fn teardown_pod_network(&self, sandbox: &Sandbox, netns: Option<PathBuf>) -> Result<()> {
        let Some(netns) = netns else { return Ok(()) };
        let record = sandbox.record();
        let attachment = attachment(&record, netns.clone())?;
        let cni = self.cni();
        tokio::task::spawn_blocking(move || {
            cni.del(&attachment)?;
            release_netns(&netns);
            Ok::<_, CniError>(())
        })
        .await
        .map_err(|e| Error::Internal(format!("CNI task failed: {e}")))?
        .map_err(|e| Error::Unavailable(format!("pod network teardown failed: {e}")))?;
        sandbox.update(&self.sandboxes, |r| r.network = None)?;
        Ok(())
    }
}

/// The daemon's pin of the pod's netns for CNI DEL (`ns/net-del`), made from the monitor's
/// (`ns/net`) or kept from an earlier DEL that failed: the monitor may then release its own
/// pins while DEL runs. With neither (the monitor and its pins are gone) DEL gets the
/// monitor's path: plugins must tolerate a missing netns.
fn hold_netns(ns_dir: &Path) -> Result<PathBuf> {
    let pin = ns_dir.join("net");
    let hold = netns_hold_path(ns_dir);
    if is_netns(&hold) {
        return Ok(hold);
    }
    // Whatever else is there (a file, a mount of something else) is not ours to keep.
    release_netns(&hold);
    if !is_netns(&pin) {
        return Ok(pin);
    }
    std::fs::File::create(&hold).map_err(Error::io("cannot create", &hold))?;
    nix::mount::mount(
        Some(&pin),
        &hold,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        Error::Internal(format!(
            "cannot pin {} at {}: {e}",
            pin.display(),
            hold.display()
        ))
    })?;
    Ok(hold)
}

/// Whether `path` is a namespace file (nsfs), i.e. a live pin.
fn is_netns(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// Drops the daemon's pin after a successful DEL (the monitor's path is left alone).
fn release_netns(netns: &Path) {
    if netns.file_name() == Some(std::ffi::OsStr::new(NETNS_HOLD)) {
        crate::mounts::unpin(netns);
    }
}

/// File name of the daemon's netns pin under `<pod dir>/ns`.
const NETNS_HOLD: &str = "net-del";

/// Where the daemon pins a pod's netns for CNI DEL, under the pod's `ns` dir.
pub(crate) fn netns_hold_path(ns_dir: &Path) -> PathBuf {
    ns_dir.join(NETNS_HOLD)
}

/// The pod as CNI plugins see it, with its `hostPort`s for `portmap`.
fn attachment(record: &SandboxRecord, netns: PathBuf) -> Result<Attachment> {
    let meta = record.metadata();
    let ports = record.config.port_mappings.iter().map(port_mapping).collect::<Result<Vec<_>>>()?;
    Ok(Attachment::new(&record.id, netns).with_pod(&meta.namespace, &meta.name, &meta.uid).with_port_mappings(ports))
}

fn port_mapping(p: &v1::PortMapping) -> Result<PortMapping> {
    let port = |value: i32, what: &str| {
        u16::try_from(value).map_err(|_| Error::InvalidArgument(format!("port mapping {what} {value} is not a port")))
    };
    let protocol = match v1::Protocol::try_from(p.protocol) {
        Ok(v1::Protocol::Tcp) => Protocol::Tcp,
        Ok(v1::Protocol::Udp) => Protocol::Udp,
        Ok(v1::Protocol::Sctp) => Protocol::Sctp,
        Err(_) => return Err(Error::InvalidArgument(format!("unknown port mapping protocol {}", p.protocol))),
    };
    let host_ip = match p.host_ip.as_str() {
        "" | "0.0.0.0" | "::" => None,
        ip => Some(ip.parse().map_err(|_| Error::InvalidArgument(format!("port mapping host_ip {ip:?} is not an address")))?),
    };
    Ok(PortMapping { host_port: port(p.host_port, "host_port")?, container_port: port(p.container_port, "container_port")?, protocol, host_ip })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_mappings_become_portmap_arguments() {
        let m = v1::PortMapping { protocol: 1, container_port: 53, host_port: 5353, host_ip: "127.0.0.1".into() };
        let p = port_mapping(&m).unwrap();
        assert_eq!((p.host_port, p.container_port, p.protocol), (5353, 53, Protocol::Udp));
        assert_eq!(p.host_ip, Some("127.0.0.1".parse().unwrap()));
        let bad = v1::PortMapping { container_port: 70000, ..m };
        assert!(matches!(port_mapping(&bad), Err(Error::InvalidArgument(_))));
    }
}
