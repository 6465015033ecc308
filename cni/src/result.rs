//! CNI ADD results: the 1.0 form, the 0.3/0.4 form (`ips[].version`) and the 0.1/0.2 form
//! (`ip4`, `ip6`), read into one shape that is enough to report pod IPs and DNS.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The result of ADD for a whole network configuration list (the last plugin's result).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkResult {
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
    /// The result exactly as the plugin printed it; this is what is chained as `prevResult`.
    pub raw: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    /// The netns path for interfaces inside the pod; `None` for host-side interfaces.
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// The address with its prefix length, e.g. `10.88.0.5/16`.
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`, when the plugin said which interface holds the address.
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    pub nameservers: Vec<String>,
    pub domain: Option<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl NetworkResult {
    /// Reads a plugin's stdout. Unknown fields are ignored; malformed addresses are errors.
    pub fn parse(raw: serde_json::Value) -> Result<NetworkResult, String> {
        let wire: WireResult = serde_json::from_value(raw.clone()).map_err(|e| e.to_string())?;
        let cni_version = wire.cni_version.unwrap_or_else(|| "0.1.0".into());
        let interfaces = wire
            .interfaces
            .into_iter()
            .map(|i| Interface { name: i.name, mac: non_empty(i.mac), sandbox: non_empty(i.sandbox) })
            .collect();
        let mut ips = Vec::new();
        let mut routes = Vec::new();
        for ip in wire.ips {
            ips.push(IpConfig {
                address: parse_net(&ip.address)?,
                gateway: parse_opt_ip(ip.gateway.as_deref())?,
                interface: ip.interface,
            });
        }
        // 0.1/0.2: one address per family, routes nested in it.
        for legacy in [wire.ip4, wire.ip6].into_iter().flatten() {
            ips.push(IpConfig {
                address: parse_net(&legacy.ip)?,
                gateway: parse_opt_ip(legacy.gateway.as_deref())?,
                interface: None,
            });
            routes.extend(legacy.routes);
        }
        routes.extend(wire.routes);
        let routes = routes
            .into_iter()
            .map(|r| Ok(Route { dst: parse_net(&r.dst)?, gw: parse_opt_ip(r.gw.as_deref())? }))
            .collect::<Result<Vec<_>, String>>()?;
        let dns = wire.dns.map(|d| Dns {
            nameservers: d.nameservers,
            domain: non_empty(d.domain),
            search: d.search,
            options: d.options,
        });
        Ok(NetworkResult { cni_version, interfaces, ips, routes, dns: dns.unwrap_or_default(), raw })
    }

    /// The addresses on the pod's interface `ifname`. Addresses a plugin did not tie to an
    /// interface (IPAM-style or pre-0.3 results) count as the pod's; addresses on host-side
    /// interfaces (a bridge gateway, say) and on other pod interfaces do not.
    pub fn container_ips(&self, ifname: &str) -> Vec<IpNet> {
        self.ips
            .iter()
            .filter(|ip| match ip.interface.and_then(|i| self.interfaces.get(i)) {
                Some(iface) => iface.name == ifname && iface.sandbox.is_some(),
                None => ip.interface.is_none() || self.interfaces.is_empty(),
            })
            .map(|ip| ip.address)
            .collect()
    }

    /// The pod IPs in the order CRI reports them: IPv4 first (the primary), then IPv6.
    pub fn pod_ips(&self, ifname: &str) -> Vec<IpAddr> {
        let addrs: Vec<IpAddr> = self.container_ips(ifname).iter().map(|n| n.addr()).collect();
        let (mut v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = addrs.into_iter().partition(|a| a.is_ipv4());
        v4.extend(v6);
        v4
    }

    /// The first IPv4 address on the pod's interface.
    pub fn ipv4(&self, ifname: &str) -> Option<Ipv4Addr> {
        self.container_ips(ifname).iter().find_map(|n| match n.addr() {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        })
    }

    /// The first IPv6 address on the pod's interface.
    pub fn ipv6(&self, ifname: &str) -> Option<Ipv6Addr> {
        self.container_ips(ifname).iter().find_map(|n| match n.addr() {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        })
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse().map_err(|_| format!("{s:?} is not an address with a prefix length"))
}

fn parse_opt_ip(s: Option<&str>) -> Result<Option<IpAddr>, String> {
    match s {
        None | Some("") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| format!("{s:?} is not an IP address")),
    }
}

#[derive(Deserialize)]
struct WireResult {
    #[serde(rename = "cniVersion")]
    cni_version: Option<String>,
    #[serde(default)]
    interfaces: Vec<WireInterface>,
    #[serde(default)]
    ips: Vec<WireIp>,
    #[serde(default)]
    routes: Vec<WireRoute>,
    dns: Option<WireDns>,
    ip4: Option<WireLegacyIp>,
    ip6: Option<WireLegacyIp>,
}

#[derive(Deserialize)]
struct WireInterface {
    name: String,
    mac: Option<String>,
    sandbox: Option<String>,
}

#[derive(Deserialize)]
struct WireIp {
    address: String,
    gateway: Option<String>,
    interface: Option<usize>,
}

#[derive(Deserialize)]
struct WireRoute {
    dst: String,
    gw: Option<String>,
}

#[derive(Deserialize)]
struct WireDns {
    #[serde(default)]
    nameservers: Vec<String>,
    domain: Option<String>,
    #[serde(default)]
    search: Vec<String>,
    #[serde(default)]
    options: Vec<String>,
}

#[derive(Deserialize)]
struct WireLegacyIp {
    ip: String,
    gateway: Option<String>,
    #[serde(default)]
    routes: Vec<WireRoute>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn v1_result_from_bridge() {
        let r = NetworkResult::parse(json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "9a:ef:2b:6c:4d:f9"},
                {"name": "veth76f2cd80", "mac": "82:25:de:ac:3b:19"},
                {"name": "eth0", "mac": "de:de:f2:0c:3c:48", "sandbox": "/run/netns/p"}
            ],
            "ips": [
                {"interface": 0, "address": "10.251.7.1/24"},
                {"interface": 2, "address": "fd00::5/64", "gateway": "fd00::1"},
                {"interface": 2, "address": "10.251.7.2/24", "gateway": "10.251.7.1"}
            ],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.251.7.1"}],
            "dns": {"nameservers": ["10.0.0.10"], "search": ["svc.cluster.local"]}
        }))
        .unwrap();
        assert_eq!(r.ipv4("eth0"), Some("10.251.7.2".parse().unwrap()));
        assert_eq!(r.ipv6("eth0"), Some("fd00::5".parse().unwrap()));
        let ips: Vec<String> = r.pod_ips("eth0").iter().map(|a| a.to_string()).collect();
        assert_eq!(ips, ["10.251.7.2", "fd00::5"]);
        assert_eq!(r.container_ips("eth0")[1].prefix_len(), 24);
        assert_eq!(r.routes[0].gw, Some("10.251.7.1".parse().unwrap()));
        assert_eq!(r.dns.search, ["svc.cluster.local"]);
        assert!(r.pod_ips("net1").is_empty());
    }

    #[test]
    fn v04_result_with_versions() {
        let r = NetworkResult::parse(json!({
            "cniVersion": "0.4.0",
            "interfaces": [{"name": "eth0", "sandbox": "/run/netns/p"}],
            "ips": [{"version": "4", "interface": 0, "address": "192.168.5.9/24", "gateway": "192.168.5.1"}]
        }))
        .unwrap();
        assert_eq!(r.cni_version, "0.4.0");
        assert_eq!(r.ipv4("eth0"), Some("192.168.5.9".parse().unwrap()));
        assert_eq!(r.ipv6("eth0"), None);
    }

    #[test]
    fn ipam_style_result_without_interfaces() {
        let r = NetworkResult::parse(json!({
            "cniVersion": "0.3.1",
            "ips": [{"version": "4", "address": "10.1.2.3/16"}]
        }))
        .unwrap();
        assert_eq!(r.pod_ips("eth0"), vec!["10.1.2.3".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn v02_result() {
        let r = NetworkResult::parse(json!({
            "cniVersion": "0.2.0",
            "ip4": {"ip": "10.9.0.4/16", "gateway": "10.9.0.1", "routes": [{"dst": "0.0.0.0/0"}]},
            "dns": {}
        }))
        .unwrap();
        assert_eq!(r.ipv4("eth0"), Some("10.9.0.4".parse().unwrap()));
        assert_eq!(r.routes.len(), 1);
    }

    #[test]
    fn malformed_address_is_an_error() {
        let err = NetworkResult::parse(json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1"}]})).unwrap_err();
        assert!(err.contains("10.0.0.1"), "{err}");
    }
}
