//! The files a pod's containers share: `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf`
//! (from `dns_config`), and a `/dev/shm` tmpfs of the pod's own.

use std::path::Path;

use cri_proto::v1;
use nix::mount::MsFlags;

use super::store::SandboxRecord;
use crate::{Error, Result};

/// Size of the pod's /dev/shm, Docker's and containerd's default.
const SHM_SIZE: &str = "size=65536k";

/// Writes hostname, hosts and resolv.conf into the pod dir.
pub fn write_pod_files(record: &SandboxRecord) -> Result<()> {
    let host_network = !record.namespaces.network;
    let hostname = if host_network || record.config.hostname.is_empty() {
        nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
    } else {
        record.config.hostname.clone()
    };
    write(&record.hostname_file(), &format!("{hostname}\n"))?;
    let hosts = if host_network {
        std::fs::read_to_string("/etc/hosts").unwrap_or_else(|_| default_hosts(&hostname))
    } else {
        default_hosts(&hostname)
    };
    write(&record.hosts_file(), &hosts)?;
    let resolv = match &record.config.dns_config {
        Some(dns) if !(dns.servers.is_empty() && dns.searches.is_empty() && dns.options.is_empty()) => resolv_conf(dns),
        _ => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    };
    write(&record.resolv_file(), &resolv)
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(Error::io("cannot write", path))?;
    // Containers running as any user must read them.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(Error::io("cannot chmod", path))
}

fn default_hosts(hostname: &str) -> String {
    let mut hosts = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
         fe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    if !hostname.is_empty() {
        hosts.push_str(&format!("127.0.1.1\t{hostname}\n"));
    }
    hosts
}

/// resolv.conf the way kubelet's DNS policy asks for it.
pub fn resolv_conf(dns: &v1::DnsConfig) -> String {
    let mut text = String::new();
    for server in &dns.servers {
        text.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.searches.is_empty() {
        text.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    if !dns.options.is_empty() {
        text.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    text
}

/// Mounts the pod's /dev/shm tmpfs (mode 1777, nosuid, nodev, noexec).
pub fn mount_shm(record: &SandboxRecord) -> Result<()> {
    let dir = record.shm_dir();
    std::fs::create_dir_all(&dir).map_err(Error::io("cannot create", &dir))?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let data = format!("mode=1777,{SHM_SIZE}");
    nix::mount::mount(Some("shm"), &dir, Some("tmpfs"), flags, Some(data.as_str()))
        .map_err(|e| Error::Io { context: "cannot mount the pod's /dev/shm tmpfs at", path: dir, source: e.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_from_dns_config() {
        let dns = v1::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["default.svc.cluster.local".into(), "svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(&dns),
            "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local\noptions ndots:5\n"
        );
    }

    #[test]
    fn hosts_name_the_pod() {
        let hosts = default_hosts("web-0");
        assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(hosts.ends_with("127.0.1.1\tweb-0\n"));
    }
}
