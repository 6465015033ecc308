//! Which namespaces a container creates, joins (the pod's, pinned by the monitor) or
//! shares with the host, and the pod's sysctls that may be set inside them.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use cri_proto::monitor::PodNamespaces;
use cri_proto::v1;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

use crate::{Error, Result};

/// The pod's pinned namespace files; `None` where the pod has none of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespacePaths {
    pub network: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    /// The pod's pid namespace (`pid: POD`), or the target container's (`pid: TARGET`).
    pub pid: Option<PathBuf>,
}

impl NamespacePaths {
    /// From the monitor's map of OCI namespace type (`network`, `ipc`, `uts`, `pid`) → file.
    pub fn from_map(map: &BTreeMap<String, PathBuf>) -> NamespacePaths {
        NamespacePaths {
            network: map.get("network").cloned(),
            ipc: map.get("ipc").cloned(),
            uts: map.get("uts").cloned(),
            pid: map.get("pid").cloned(),
        }
    }
}

/// What the container's namespaces turned out to be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerNamespaces {
    pub namespaces: Vec<LinuxNamespace>,
    pub host_network: bool,
    pub host_ipc: bool,
    pub host_pid: bool,
    /// A UTS namespace of the container's own: it needs `hostname` in the spec.
    pub own_uts: bool,
}

/// The rules, per CRI `NamespaceOption` (NODE = the host's, POD = the pod's file,
/// CONTAINER = a new one, TARGET = the file given for pid):
/// - network and ipc: NODE → host, else join the pod's file (a new one if it has none);
/// - uts follows network (host-network pods keep the node's name);
/// - pid: NODE → host, CONTAINER → new, POD/TARGET → join the given file (required);
/// - mount always new; cgroup new on a pure cgroup v2 host; user namespaces unsupported.
pub fn container_namespaces(options: &v1::NamespaceOption, paths: &NamespacePaths, cgroup_v2: bool) -> Result<ContainerNamespaces> {
    use v1::NamespaceMode as Mode;
    let mode = |value: i32, field: &str| {
        Mode::try_from(value).map_err(|_| Error::InvalidArgument(format!("namespace_options.{field} {value} is not a known mode")))
    };
    if let Some(userns) = &options.userns_options
        && (mode(userns.mode, "userns_options.mode")? == Mode::Pod || !userns.uids.is_empty() || !userns.gids.is_empty())
    {
        return Err(Error::InvalidArgument("user namespaces (hostUsers: false) are not supported".into()));
    }
    let network = mode(options.network, "network")?;
    let ipc = mode(options.ipc, "ipc")?;
    let pid = mode(options.pid, "pid")?;
    let mut out = ContainerNamespaces {
        host_network: network == Mode::Node,
        host_ipc: ipc == Mode::Node,
        host_pid: pid == Mode::Node,
        ..Default::default()
    };
    out.namespaces.push(namespace(LinuxNamespaceType::Mount, None));
    if !out.host_network {
        out.namespaces.push(namespace(LinuxNamespaceType::Network, paths.network.clone()));
        out.namespaces.push(namespace(LinuxNamespaceType::Uts, paths.uts.clone()));
        out.own_uts = paths.uts.is_none();
    }
    if !out.host_ipc {
        out.namespaces.push(namespace(LinuxNamespaceType::Ipc, paths.ipc.clone()));
    }
    match pid {
        Mode::Node => {}
        Mode::Container => out.namespaces.push(namespace(LinuxNamespaceType::Pid, None)),
        Mode::Pod | Mode::Target => {
            let path = paths.pid.clone().ok_or_else(|| {
                Error::FailedPrecondition(format!("pid namespace mode {pid:?} but no pid namespace to join"))
            })?;
            out.namespaces.push(namespace(LinuxNamespaceType::Pid, Some(path)));
        }
    }
    if cgroup_v2 {
        out.namespaces.push(namespace(LinuxNamespaceType::Cgroup, None));
    }
    Ok(out)
}

fn namespace(typ: LinuxNamespaceType, path: Option<PathBuf>) -> LinuxNamespace {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ);
    ns.set_path(path);
    ns
}

/// The pod's sysctls, each checked to belong to a namespace the container does not share
/// with the host (anything else would change the node). `net/ipv4/ip_forward` is accepted
/// and written as `net.ipv4.ip_forward`.
pub fn sysctls(pod: &v1::PodSandboxConfig, ns: &ContainerNamespaces) -> Result<HashMap<String, String>> {
    let Some(linux) = &pod.linux else { return Ok(HashMap::new()) };
    let owned = PodNamespaces { network: !ns.host_network, ipc: !ns.host_ipc, uts: !ns.host_network, pid: !ns.host_pid };
    let mut out = HashMap::new();
    for (key, value) in &linux.sysctls {
        let dotted = dotted(key);
        let well_formed = !dotted.is_empty() && dotted.split('.').all(|p| !p.is_empty() && p != "..");
        if !well_formed {
            return Err(Error::InvalidArgument(format!("sysctl {key:?} is not a valid name")));
        }
        if !crate::monitor::sysctl_is_namespaced(&dotted, &owned) {
            return Err(Error::InvalidArgument(format!(
                "sysctl {key:?} is not namespaced for this pod: setting it would change the host"
            )));
        }
        out.insert(dotted, value.clone());
    }
    Ok(out)
}

/// Slash-separated names swap the roles of `.` and `/` (an interface `eth0.100` stays whole).
fn dotted(key: &str) -> String {
    if !key.contains('/') {
        return key.to_string();
    }
    key.chars()
        .map(|c| match c {
            '/' => '.',
            '.' => '/',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use v1::NamespaceMode as Mode;

    fn options(network: Mode, pid: Mode, ipc: Mode) -> v1::NamespaceOption {
        v1::NamespaceOption { network: network as i32, pid: pid as i32, ipc: ipc as i32, ..Default::default() }
    }

    fn pod_paths() -> NamespacePaths {
        NamespacePaths {
            network: Some("/run/pod/ns/net".into()),
            ipc: Some("/run/pod/ns/ipc".into()),
            uts: Some("/run/pod/ns/uts".into()),
            pid: Some("/run/pod/ns/pid".into()),
        }
    }

    fn kinds(ns: &ContainerNamespaces) -> Vec<(LinuxNamespaceType, Option<PathBuf>)> {
        ns.namespaces.iter().map(|n| (n.typ(), n.path().clone())).collect()
    }

    #[test]
    fn pod_namespaces_are_joined_by_path() {
        let ns = container_namespaces(&options(Mode::Pod, Mode::Pod, Mode::Pod), &pod_paths(), false).unwrap();
        assert_eq!(
            kinds(&ns),
            vec![
                (LinuxNamespaceType::Mount, None),
                (LinuxNamespaceType::Network, Some("/run/pod/ns/net".into())),
                (LinuxNamespaceType::Uts, Some("/run/pod/ns/uts".into())),
                (LinuxNamespaceType::Ipc, Some("/run/pod/ns/ipc".into())),
                (LinuxNamespaceType::Pid, Some("/run/pod/ns/pid".into())),
            ]
        );
        assert!(!ns.own_uts && !ns.host_network);
    }

    #[test]
    fn container_pid_and_host_namespaces() {
        let ns = container_namespaces(&options(Mode::Node, Mode::Container, Mode::Node), &pod_paths(), true).unwrap();
        assert_eq!(
            kinds(&ns),
            vec![(LinuxNamespaceType::Mount, None), (LinuxNamespaceType::Pid, None), (LinuxNamespaceType::Cgroup, None)]
        );
        assert!(ns.host_network && ns.host_ipc && !ns.host_pid);
        let host_pid = container_namespaces(&options(Mode::Pod, Mode::Node, Mode::Pod), &pod_paths(), false).unwrap();
        assert!(host_pid.host_pid);
        assert!(!host_pid.namespaces.iter().any(|n| n.typ() == LinuxNamespaceType::Pid));
    }

    #[test]
    fn missing_paths_mean_new_namespaces_except_for_a_shared_pid() {
        let ns = container_namespaces(&options(Mode::Pod, Mode::Container, Mode::Pod), &NamespacePaths::default(), false).unwrap();
        assert!(ns.namespaces.iter().all(|n| n.path().is_none()));
        assert!(ns.own_uts);
        let err = container_namespaces(&options(Mode::Pod, Mode::Target, Mode::Pod), &NamespacePaths::default(), false);
        assert!(matches!(err, Err(Error::FailedPrecondition(_))));
    }

    #[test]
    fn user_namespaces_and_unknown_modes_are_refused() {
        let mut o = options(Mode::Pod, Mode::Container, Mode::Pod);
        o.userns_options = Some(v1::UserNamespace { mode: Mode::Pod as i32, ..Default::default() });
        assert!(matches!(container_namespaces(&o, &pod_paths(), false), Err(Error::InvalidArgument(m)) if m.contains("user namespaces")));
        o.userns_options = Some(v1::UserNamespace { mode: Mode::Node as i32, ..Default::default() });
        assert!(container_namespaces(&o, &pod_paths(), false).is_ok());
        o.network = 42;
        assert!(matches!(container_namespaces(&o, &pod_paths(), false), Err(Error::InvalidArgument(m)) if m.contains("network")));
    }

    fn pod_with(sysctls: &[(&str, &str)]) -> v1::PodSandboxConfig {
        v1::PodSandboxConfig {
            linux: Some(v1::LinuxPodSandboxConfig {
                sysctls: sysctls.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn namespaced_sysctls_pass_and_host_ones_are_refused() {
        let ns = container_namespaces(&options(Mode::Pod, Mode::Container, Mode::Pod), &pod_paths(), false).unwrap();
        let ok = sysctls(&pod_with(&[("net.ipv4.ip_unprivileged_port_start", "0"), ("kernel.shm_rmid_forced", "1"), ("net/ipv4/conf/eth0.100/rp_filter", "1")]), &ns).unwrap();
        assert_eq!(ok["net.ipv4.ip_unprivileged_port_start"], "0");
        assert_eq!(ok["net.ipv4.conf.eth0/100.rp_filter"], "1");
        assert_eq!(ok.len(), 3);
        for bad in ["kernel.panic", "vm.swappiness", "net..x", ""] {
            assert!(matches!(sysctls(&pod_with(&[(bad, "1")]), &ns), Err(Error::InvalidArgument(_))), "{bad}");
        }
        let host_net = container_namespaces(&options(Mode::Node, Mode::Container, Mode::Pod), &pod_paths(), false).unwrap();
        assert!(sysctls(&pod_with(&[("net.ipv4.ip_forward", "1")]), &host_net).is_err());
        assert!(sysctls(&pod_with(&[("kernel.msgmax", "65536")]), &host_net).is_ok());
    }
}
