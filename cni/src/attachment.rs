//! What the runtime tells plugins about one pod: identity, netns, interface and the
//! capability arguments (`runtimeConfig`) such as port mappings.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::CniError;

/// The container interface name kubelet's runtimes use.
pub const DEFAULT_IFNAME: &str = "eth0";

/// One pod sandbox's attachment to the network. `container_id` is the sandbox id: plugins key
/// their state (IPAM reservations, iptables chains) on it, so ADD, CHECK and DEL must use the same.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attachment {
    /// `CNI_CONTAINERID`, also sent as `K8S_POD_INFRA_CONTAINER_ID`.
    pub container_id: String,
    /// `CNI_NETNS`: path of the pod's pinned network namespace.
    pub netns: PathBuf,
    /// `CNI_IFNAME`: the interface to create inside the pod.
    pub ifname: String,
    /// `K8S_POD_NAMESPACE`, `K8S_POD_NAME`, `K8S_POD_UID`; empty values are not sent.
    pub pod_namespace: String,
    pub pod_name: String,
    pub pod_uid: String,
    /// Extra `CNI_ARGS` pairs, after the Kubernetes ones.
    pub extra_args: Vec<(String, String)>,
    /// The `portMappings` capability (used by `portmap`). Mappings without a host port are
    /// skipped: they only document the container port.
    pub port_mappings: Vec<PortMapping>,
    /// The `bandwidth` capability (used by `bandwidth`).
    pub bandwidth: Option<Bandwidth>,
    /// The `dns` capability, for plugins that configure DNS.
    pub dns: Option<DnsCapability>,
    /// Any other capability, by its key, for plugins that declare it.
    pub capabilities: BTreeMap<String, serde_json::Value>,
}

impl Attachment {
    /// An attachment of `container_id`'s netns on the default interface `eth0`.
    pub fn new(container_id: impl Into<String>, netns: impl Into<PathBuf>) -> Self {
        Attachment {
            container_id: container_id.into(),
            netns: netns.into(),
            ifname: DEFAULT_IFNAME.into(),
            ..Default::default()
        }
    }

    /// Sets the Kubernetes pod identity sent in `CNI_ARGS`.
    pub fn with_pod(mut self, namespace: &str, name: &str, uid: &str) -> Self {
        self.pod_namespace = namespace.into();
        self.pod_name = name.into();
        self.pod_uid = uid.into();
        self
    }

    /// Sets the port mappings sent to plugins declaring the `portMappings` capability.
    pub fn with_port_mappings(mut self, mappings: Vec<PortMapping>) -> Self {
        self.port_mappings = mappings;
        self
    }

    /// Rejects values plugins would misread: the spec restricts container ids and interface
    /// names, and `CNI_ARGS` cannot carry `;` or `=` inside values.
    pub(crate) fn validate(&self) -> Result<(), CniError> {
        let bad = |m: String| Err(CniError::InvalidAttachment(m));
        let id = &self.container_id;
        let id_ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !id_ok {
            return bad(format!("container id {id:?} must be alphanumeric (with _ . -) and start alphanumeric"));
        }
        let ifname = &self.ifname;
        let if_ok = !ifname.is_empty()
            && ifname.len() < 16
            && ifname != "."
            && ifname != ".."
            && !ifname.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
        if !if_ok {
            return bad(format!("interface name {ifname:?} is not a valid Linux interface name"));
        }
        for (k, v) in self.cni_args() {
            if k.is_empty() || k.contains([';', '=']) || v.contains([';', '=']) {
                return bad(format!("CNI_ARGS pair {k}={v} contains ';' or '='"));
            }
        }
        Ok(())
    }

    /// The `CNI_ARGS` pairs: `IgnoreUnknown=1` first so plugins that do not know the
    /// Kubernetes keys accept them.
    pub(crate) fn cni_args(&self) -> Vec<(String, String)> {
        let mut args = vec![("IgnoreUnknown".to_string(), "1".to_string())];
        for (k, v) in [
            ("K8S_POD_NAMESPACE", &self.pod_namespace),
            ("K8S_POD_NAME", &self.pod_name),
            ("K8S_POD_INFRA_CONTAINER_ID", &self.container_id),
            ("K8S_POD_UID", &self.pod_uid),
        ] {
            if !v.is_empty() {
                args.push((k.to_string(), v.clone()));
            }
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// The `CNI_ARGS` value: `K=V` pairs joined by `;`.
    pub(crate) fn cni_args_string(&self) -> String {
        self.cni_args().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(";")
    }

    /// Every capability argument this attachment carries, by capability key. Each plugin gets
    /// only the keys it declares in its `capabilities`.
    pub(crate) fn runtime_config(&self) -> BTreeMap<String, serde_json::Value> {
        let mut rc = self.capabilities.clone();
        let ports: Vec<&PortMapping> = self.port_mappings.iter().filter(|p| p.host_port != 0).collect();
        if !ports.is_empty() {
            rc.insert("portMappings".into(), serde_json::json!(ports));
        }
        if let Some(bw) = &self.bandwidth {
            rc.insert("bandwidth".into(), serde_json::json!(bw));
        }
        if let Some(dns) = &self.dns {
            rc.insert("dns".into(), serde_json::json!(dns));
        }
        rc
    }
}

/// A host port forwarded to a pod port (the `portMappings` capability).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
    /// Only this host address; `None` means every address.
    #[serde(rename = "hostIP", skip_serializing_if = "Option::is_none", default)]
    pub host_ip: Option<IpAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

/// Traffic shaping for the pod (the `bandwidth` capability): rates in bits per second,
/// bursts in bits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    pub ingress_rate: u64,
    pub ingress_burst: u64,
    pub egress_rate: u64,
    pub egress_burst: u64,
}

/// The pod's DNS settings (the `dns` capability).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsCapability {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_args_carry_the_pod_identity() {
        let a = Attachment::new("abc123", "/run/netns/x").with_pod("default", "web", "u-1");
        assert_eq!(
            a.cni_args_string(),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=u-1"
        );
        a.validate().unwrap();
    }

    #[test]
    fn invalid_values_are_rejected() {
        let mut a = Attachment::new("../etc", "/run/netns/x");
        assert!(a.validate().is_err());
        a.container_id = "ok".into();
        a.ifname = "a-very-long-interface".into();
        assert!(a.validate().is_err());
        a.ifname = "eth0".into();
        a.pod_name = "x;y".into();
        assert!(a.validate().is_err());
    }

    #[test]
    fn runtime_config_skips_ports_without_host_port() {
        let a = Attachment::new("c", "/n").with_port_mappings(vec![
            PortMapping { host_port: 0, container_port: 80, protocol: Protocol::Tcp, host_ip: None },
            PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Udp,
                host_ip: Some("127.0.0.1".parse().unwrap()),
            },
        ]);
        let rc = a.runtime_config();
        assert_eq!(
            rc["portMappings"],
            serde_json::json!([{"hostPort":8080,"containerPort":80,"protocol":"udp","hostIP":"127.0.0.1"}])
        );
        assert!(Attachment::new("c", "/n").runtime_config().is_empty());
    }

    #[test]
    fn bandwidth_and_dns_use_the_capability_keys() {
        let mut a = Attachment::new("c", "/n");
        a.bandwidth = Some(Bandwidth { ingress_rate: 1000, ingress_burst: 10, egress_rate: 2000, egress_burst: 20 });
        a.dns =
            Some(DnsCapability { servers: vec!["10.96.0.10".into()], searches: vec!["svc".into()], options: vec![] });
        let rc = a.runtime_config();
        assert_eq!(
            rc["bandwidth"],
            serde_json::json!({"ingressRate": 1000, "ingressBurst": 10, "egressRate": 2000, "egressBurst": 20})
        );
        assert_eq!(rc["dns"], serde_json::json!({"servers": ["10.96.0.10"], "searches": ["svc"], "options": []}));
    }
}
