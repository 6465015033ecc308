//! The Node object agent mode registers: labels (kubelet's well-known ones plus
//! `capstan node-labels`' configured and discovered ones), capacity and allocatable from
//! the host, addresses, conditions from real pressure signals, and nodeInfo. The API side
//! ([`super::api::node_registration`]) posts it and keeps its status current; without a
//! kubeconfig the daemon logs it at start so an operator can see what the node reports.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1 as k8s;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use procfs::Current;

use crate::config::Config;

/// Kubelet's default hard eviction thresholds, which it also subtracts for allocatable.
const MEMORY_EVICTION: u64 = 100 << 20;
const DISK_EVICTION_PERCENT: u64 = 10;
/// Kubelet's default `maxPods`.
const MAX_PODS: u64 = 110;

/// What the host says about itself; gathered once, turned into a Node by [`node_object`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeFacts {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub cpus: u64,
    pub memory_total: u64,
    pub memory_available: u64,
    pub hugepages_2mi: u64,
    pub disk_total: u64,
    pub disk_available: u64,
    pub gpus: u64,
    pub pids_running: u64,
    pub pid_max: u64,
    pub internal_ips: Vec<String>,
    pub kernel_version: String,
    pub os_image: String,
    pub machine_id: String,
    pub boot_id: String,
    pub system_uuid: String,
    pub runtime_ready: bool,
}

/// Reads the facts from this host: /proc/meminfo, the online CPUs, the filesystem under
/// `root`, the GPUs and disk type under `node.host_root`, the interfaces' addresses.
pub fn gather(config: &Config, node_name: &str, runtime_ready: bool) -> Result<NodeFacts, String> {
    let meminfo = procfs::Meminfo::current().map_err(|e| format!("/proc/meminfo: {e}"))?;
    let disk = nix::sys::statvfs::statvfs(&config.root).map_err(|e| format!("statvfs {}: {e}", config.root.display()))?;
    let gpus = super::super::node::gpu::discover(&config.node.host_root).map(|g| g.gpus.len() as u64).unwrap_or(0);
    let uname = nix::sys::utsname::uname().map_err(|e| format!("uname: {e}"))?;
    let loadavg = read_trimmed(Path::new("/proc/loadavg"));
    let internal_ips = nix::ifaddrs::getifaddrs()
        .map(|addrs| {
            let mut ips: Vec<String> = addrs
                .filter_map(|a| a.address.and_then(|s| s.as_sockaddr_in().map(|i| i.ip())))
                .filter(|ip| !ip.is_loopback())
                .map(|ip| ip.to_string())
                .collect();
            ips.dedup();
            ips
        })
        .unwrap_or_default();
    Ok(NodeFacts {
        name: node_name.to_string(),
        labels: super::super::node::compute(config)?,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
        memory_total: meminfo.mem_total,
        memory_available: meminfo.mem_available.unwrap_or(meminfo.mem_free),
        hugepages_2mi: match (meminfo.hugepages_total, meminfo.hugepagesize) {
            (Some(n), Some(size)) if size == 2 << 20 => n * size,
            _ => 0,
        },
        disk_total: disk.blocks() * disk.fragment_size(),
        disk_available: disk.blocks_available() * disk.fragment_size(),
        gpus,
        // "1/234 ..." in the fourth field: running/total scheduling entities.
        pids_running: loadavg.split_whitespace().nth(3).and_then(|f| f.split('/').nth(1)).and_then(|n| n.parse().ok()).unwrap_or(0),
        pid_max: read_trimmed(Path::new("/proc/sys/kernel/pid_max")).parse().unwrap_or(0),
        internal_ips,
        kernel_version: uname.release().to_string_lossy().into_owned(),
        os_image: os_image(&read_trimmed(Path::new("/etc/os-release"))),
        machine_id: read_trimmed(Path::new("/etc/machine-id")),
        boot_id: read_trimmed(Path::new("/proc/sys/kernel/random/boot_id")),
        system_uuid: read_trimmed(Path::new("/sys/class/dmi/id/product_uuid")),
        runtime_ready,
    })
}

fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// `PRETTY_NAME` of os-release, kubelet's `osImage`.
fn os_image(os_release: &str) -> String {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

/// Go's spelling of the architecture, as in `kubernetes.io/arch`.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The Node as kubelet would post it.
pub fn node_object(f: &NodeFacts) -> k8s::Node {
    let mut labels = f.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), f.name.clone());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert("kubernetes.io/arch".into(), go_arch().into());
    let q = |v: u64| Quantity(v.to_string());
    let mut capacity = BTreeMap::from([
        ("cpu".to_string(), q(f.cpus)),
        ("memory".to_string(), Quantity(format!("{}Ki", f.memory_total / 1024))),
        ("ephemeral-storage".to_string(), Quantity(format!("{}Ki", f.disk_total / 1024))),
        ("pods".to_string(), q(MAX_PODS)),
        ("hugepages-2Mi".to_string(), q(f.hugepages_2mi)),
    ]);
    if f.gpus > 0 {
        capacity.insert("nvidia.com/gpu".into(), q(f.gpus));
    }
    let mut allocatable = capacity.clone();
    // Hugepages are not general memory: kubelet takes them out of allocatable memory.
    let memory = f.memory_total.saturating_sub(MEMORY_EVICTION).saturating_sub(f.hugepages_2mi);
    allocatable.insert("memory".into(), Quantity(format!("{}Ki", memory / 1024)));
    let storage = f.disk_total - f.disk_total * DISK_EVICTION_PERCENT / 100;
    allocatable.insert("ephemeral-storage".into(), q(storage));
    let condition = |type_: &str, status: bool, reason: &str, message: &str| k8s::NodeCondition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        ..Default::default()
    };
    let memory_pressure = f.memory_available < MEMORY_EVICTION;
    let disk_pressure = f.disk_total > 0 && f.disk_available * 100 < f.disk_total * DISK_EVICTION_PERCENT;
    let pid_pressure = f.pid_max > 0 && f.pids_running * 10 > f.pid_max * 9;
    let mut addresses = vec![k8s::NodeAddress { type_: "Hostname".into(), address: f.name.clone() }];
    addresses.extend(f.internal_ips.iter().map(|ip| k8s::NodeAddress { type_: "InternalIP".into(), address: ip.clone() }));
    k8s::Node {
        metadata: ObjectMeta { name: Some(f.name.clone()), labels: Some(labels), ..Default::default() },
        spec: Some(k8s::NodeSpec::default()),
        status: Some(k8s::NodeStatus {
            capacity: Some(capacity),
            allocatable: Some(allocatable),
            addresses: Some(addresses),
            conditions: Some(vec![
                condition(
                    "MemoryPressure",
                    memory_pressure,
                    if memory_pressure { "KubeletHasInsufficientMemory" } else { "KubeletHasSufficientMemory" },
                    "available memory against the 100Mi eviction threshold",
                ),
                condition(
                    "DiskPressure",
                    disk_pressure,
                    if disk_pressure { "KubeletHasDiskPressure" } else { "KubeletHasNoDiskPressure" },
                    "free space under the runtime root against the 10% eviction threshold",
                ),
                condition(
                    "PIDPressure",
                    pid_pressure,
                    if pid_pressure { "KubeletHasInsufficientPID" } else { "KubeletHasSufficientPID" },
                    "processes against 90% of pid_max",
                ),
                condition(
                    "Ready",
                    f.runtime_ready,
                    if f.runtime_ready { "KubeletReady" } else { "KubeletNotReady" },
                    if f.runtime_ready { "capstan agent is posting ready status" } else { "container runtime is not ready" },
                ),
            ]),
            node_info: Some(k8s::NodeSystemInfo {
                architecture: go_arch().into(),
                boot_id: f.boot_id.clone(),
                container_runtime_version: format!("capstan://{}", env!("CARGO_PKG_VERSION")),
                kernel_version: f.kernel_version.clone(),
                kube_proxy_version: String::new(),
                kubelet_version: format!("capstan-agent/{}", env!("CARGO_PKG_VERSION")),
                machine_id: f.machine_id.clone(),
                operating_system: "linux".into(),
                os_image: f.os_image.clone(),
                system_uuid: f.system_uuid.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> NodeFacts {
        NodeFacts {
            name: "edge-1".into(),
            labels: BTreeMap::from([("disktype".to_string(), "ssd".to_string())]),
            cpus: 4,
            memory_total: 8 << 30,
            memory_available: 6 << 30,
            hugepages_2mi: 64 << 20,
            disk_total: 100 << 30,
            disk_available: 50 << 30,
            gpus: 2,
            pids_running: 300,
            pid_max: 4_194_304,
            internal_ips: vec!["10.0.0.5".into()],
            kernel_version: "6.1.0".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            machine_id: "m".into(),
            boot_id: "b".into(),
            system_uuid: "u".into(),
            runtime_ready: true,
        }
    }

    #[test]
    fn node_json_has_labels_capacity_allocatable_conditions_and_info() {
        let json = serde_json::to_value(node_object(&facts())).unwrap();
        assert_eq!(json["apiVersion"], "v1");
        assert_eq!(json["kind"], "Node");
        let labels = &json["metadata"]["labels"];
        assert_eq!(labels["kubernetes.io/hostname"], "edge-1");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(labels["kubernetes.io/arch"], go_arch());
        assert_eq!(labels["disktype"], "ssd");
        let s = &json["status"];
        assert_eq!(
            s["capacity"],
            serde_json::json!({"cpu": "4", "memory": "8388608Ki", "ephemeral-storage": "104857600Ki", "pods": "110",
                               "hugepages-2Mi": "67108864", "nvidia.com/gpu": "2"})
        );
        // 8 GiB - 100 MiB eviction - 64 MiB hugepages; disk minus 10 %.
        assert_eq!(s["allocatable"]["memory"], format!("{}Ki", ((8u64 << 30) - (100 << 20) - (64 << 20)) / 1024));
        assert_eq!(s["allocatable"]["ephemeral-storage"], ((100u64 << 30) * 9 / 10).to_string());
        assert_eq!(s["allocatable"]["cpu"], "4");
        let conditions: BTreeMap<String, String> = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["type"].as_str().unwrap().to_string(), c["status"].as_str().unwrap().to_string()))
            .collect();
        assert_eq!(
            conditions,
            BTreeMap::from([
                ("Ready".to_string(), "True".to_string()),
                ("MemoryPressure".to_string(), "False".to_string()),
                ("DiskPressure".to_string(), "False".to_string()),
                ("PIDPressure".to_string(), "False".to_string()),
            ])
        );
        assert_eq!(s["addresses"], serde_json::json!([{"type": "Hostname", "address": "edge-1"}, {"type": "InternalIP", "address": "10.0.0.5"}]));
        let info = &s["nodeInfo"];
        assert_eq!(info["containerRuntimeVersion"], format!("capstan://{}", env!("CARGO_PKG_VERSION")));
        assert_eq!(info["osImage"], "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(info["kernelVersion"], "6.1.0");
        assert_eq!(info["operatingSystem"], "linux");
    }

    #[test]
    fn pressure_conditions_follow_the_thresholds() {
        let mut f = facts();
        f.memory_available = 50 << 20;
        f.disk_available = 5 << 30;
        f.runtime_ready = false;
        f.gpus = 0;
        let node = node_object(&f);
        let status = node.status.unwrap();
        assert!(!status.capacity.unwrap().contains_key("nvidia.com/gpu"));
        let by_type: BTreeMap<_, _> = status.conditions.unwrap().into_iter().map(|c| (c.type_.clone(), c)).collect();
        assert_eq!(by_type["MemoryPressure"].status, "True");
        assert_eq!(by_type["DiskPressure"].status, "True");
        assert_eq!(by_type["Ready"].status, "False");
        assert_eq!(by_type["Ready"].reason.as_deref(), Some("KubeletNotReady"));
    }

    #[test]
    fn this_hosts_facts_are_plausible() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            root: dir.path().to_path_buf(),
            node: crate::config::NodeConfig { host_root: dir.path().to_path_buf(), ..Default::default() },
            ..Default::default()
        };
        let f = gather(&config, "here", true).unwrap();
        assert!(f.cpus >= 1 && f.memory_total > f.memory_available && f.memory_available > 0, "{f:?}");
        assert!(f.disk_total >= f.disk_available && f.disk_total > 0, "{f:?}");
        assert!(f.pid_max > 0 && f.pids_running > 0, "{f:?}");
        assert!(!f.kernel_version.is_empty() && !f.boot_id.is_empty(), "{f:?}");
    }
}
