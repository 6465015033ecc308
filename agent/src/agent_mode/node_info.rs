//! What pods need to know of their node: its name and labels (nodeSelector, node
//! affinity), its addresses (`status.hostIP`) and allocatable resources (the limit a
//! `resourceFieldRef` reports for a container without one). Taken from the Node object
//! agent mode computes ([`super::node::node_object`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as k8s;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// InternalIP addresses, first one first (kubelet's `status.hostIP`).
    pub host_ips: Vec<String>,
    /// Allocatable resources as quantities (`cpu`, `memory`, `ephemeral-storage`, ...).
    pub allocatable: BTreeMap<String, String>,
}

impl NodeInfo {
    pub fn from_node(node: &k8s::Node) -> NodeInfo {
        let status = node.status.clone().unwrap_or_default();
        NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            host_ips: status.addresses.iter().flatten().filter(|a| a.type_ == "InternalIP").map(|a| a.address.clone()).collect(),
            allocatable: status.allocatable.unwrap_or_default().into_iter().map(|(k, q)| (k, q.0)).collect(),
        }
    }

    /// When the host's facts cannot be read: the labels every node has.
    pub fn minimal(name: &str) -> NodeInfo {
        let labels = BTreeMap::from([
            ("kubernetes.io/hostname".to_string(), name.to_string()),
            ("kubernetes.io/os".to_string(), "linux".to_string()),
            ("kubernetes.io/arch".to_string(), super::node::go_arch().to_string()),
        ]);
        NodeInfo { name: name.to_string(), labels, ..Default::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_from_the_node_object() {
        let node: k8s::Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "labels": {"disktype": "ssd"}},
            "status": {"addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.5"}],
                       "allocatable": {"cpu": "4", "memory": "1024Ki"}}
        }))
        .unwrap();
        let info = NodeInfo::from_node(&node);
        assert_eq!(info.name, "n1");
        assert_eq!(info.labels["disktype"], "ssd");
        assert_eq!(info.host_ips, ["10.0.0.5"]);
        assert_eq!(info.allocatable["cpu"], "4");
        assert_eq!(NodeInfo::minimal("n2").labels["kubernetes.io/hostname"], "n2");
    }
}
