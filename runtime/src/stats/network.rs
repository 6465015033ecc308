//! A pod's network figures: `/proc/<pid>/net/dev` of a process inside the pod's network
//! namespace (the infra process) lists that namespace's interfaces.

use cri_proto::v1;

/// Counters of one interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// The interfaces of `pid`'s network namespace, loopback left out (kubelet and cAdvisor
/// report the pod's traffic, not its talk to itself).
pub fn interfaces(pid: i32) -> std::io::Result<Vec<Interface>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev"))?;
    Ok(parse(&text).into_iter().filter(|i| i.name != "lo").collect())
}

/// `  eth0: rx_bytes rx_packets rx_errs rx_drop fifo frame compressed multicast tx_bytes
/// tx_packets tx_errs tx_drop …` after two header lines.
fn parse(text: &str) -> Vec<Interface> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let n: Vec<u64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0)).collect();
            if n.len() < 16 {
                return None;
            }
            Some(Interface {
                name: name.trim().to_string(),
                rx_bytes: n[0],
                rx_packets: n[1],
                rx_errors: n[2],
                rx_dropped: n[3],
                tx_bytes: n[8],
                tx_packets: n[9],
                tx_errors: n[10],
                tx_dropped: n[11],
            })
        })
        .collect()
}

/// CRI's NetworkUsage: every interface, and the one CNI set up as the default.
pub fn usage(timestamp: i64, interfaces: &[Interface]) -> v1::NetworkUsage {
    let value = |value| Some(v1::UInt64Value { value });
    let cri = |i: &Interface| v1::NetworkInterfaceUsage {
        name: i.name.clone(),
        rx_bytes: value(i.rx_bytes),
        rx_errors: value(i.rx_errors),
        tx_bytes: value(i.tx_bytes),
        tx_errors: value(i.tx_errors),
    };
    v1::NetworkUsage {
        timestamp,
        default_interface: interfaces.iter().find(|i| i.name == capstan_cni::DEFAULT_IFNAME).map(cri),
        interfaces: interfaces.iter().map(cri).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_columns() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
                    face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
                    lo:     140       2    0    0    0     0          0         0      140       2    0    0    0     0       0          0\n  \
                    eth0:   90210      57    1    2    0     0          0         0     1234      11    3    4    0     0       0          0\n";
        let all = parse(text);
        assert_eq!(all.len(), 2);
        let eth0 = &all[1];
        assert_eq!((eth0.name.as_str(), eth0.rx_bytes, eth0.rx_packets, eth0.rx_errors, eth0.rx_dropped), ("eth0", 90210, 57, 1, 2));
        assert_eq!((eth0.tx_bytes, eth0.tx_packets, eth0.tx_errors, eth0.tx_dropped), (1234, 11, 3, 4));
        let u = usage(5, &all[1..]);
        assert_eq!(u.default_interface.unwrap().rx_bytes.unwrap().value, 90210);
    }

    #[test]
    fn this_process_has_interfaces() {
        let own = interfaces(std::process::id() as i32).unwrap();
        assert!(own.iter().all(|i| i.name != "lo"));
    }
}
