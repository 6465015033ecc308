//! Against Debian's real plugins (`containernetworking-plugins` in /usr/lib/cni): bridge +
//! host-local + portmap in network namespaces made with `ip netns add`. Needs root.
//!
//! Every test owns a uniquely named bridge, subnet, netns, IPAM dir and container ids; its
//! [`Net`] guard removes them and any iptables chains that appeared during the test, even when
//! the test fails. Tests hold one lock: portmap's shared chains must not be torn down under a
//! test that is still using them.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use capstan_cni::{Attachment, Cni, CniCommand, CniError, PortMapping, Protocol};
use serde_json::json;

static SERIAL: Mutex<()> = Mutex::new(());

fn sh(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn unique() -> u32 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    nanos ^ std::process::id().rotate_left(16)
}

/// One test's network: a netns, a bridge name, a /24, temp dirs, and the iptables state from
/// before the test.
struct Net {
    name: String,
    ns: String,
    subnet: [u8; 3],
    dir: tempfile::TempDir,
    container_ids: Vec<String>,
    chains_before: [BTreeSet<String>; 2],
    _serial: std::sync::MutexGuard<'static, ()>,
}

const IPTABLES: [&str; 2] = ["iptables", "ip6tables"];
const DEBIAN_PLUGINS: &str = "/usr/lib/cni";

/// Debian 12 ships plugins 1.1.1, whose portmap fails CHECK for every pod with port mappings:
/// it looks for the IPv4 rules in ip6tables as well (containernetworking/plugins#819, fixed
/// in a later upstream release).
fn portmap_check_is_broken() -> bool {
    let (_, v) = sh("dpkg-query", &["-W", "-f=${Version}", "containernetworking-plugins"]);
    v.starts_with("0.") || v.starts_with("1.0.") || v.starts_with("1.1.")
}

impl Net {
    fn new() -> Net {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let r = unique();
        let name = format!("capt{r:08x}");
        let routes = sh("ip", &["-4", "route", "show"]).1;
        let mut subnet = [10, 200 + (r % 50) as u8, (r >> 8) as u8];
        while routes.contains(&format!("{}.{}.{}.", subnet[0], subnet[1], subnet[2])) {
            subnet[2] = subnet[2].wrapping_add(1);
        }
        let chains_before = IPTABLES.map(nat_chains);
        let net = Net {
            ns: format!("{name}-ns"),
            name,
            subnet,
            dir: tempfile::tempdir().unwrap(),
            container_ids: Vec::new(),
            chains_before,
            _serial: serial,
        };
        let (ok, out) = sh("ip", &["netns", "add", &net.ns]);
        assert!(ok, "ip netns add: {out}");
        for sub in ["conf", "cache", "ipam"] {
            std::fs::create_dir(net.dir.path().join(sub)).unwrap();
        }
        net
    }

    fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.ns))
    }

    fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }

    fn cni(&self) -> Cni {
        // Debian's plugins only, so the test knows which versions ran.
        Cni::new(self.dir.path().join("conf"), vec![PathBuf::from(DEBIAN_PLUGINS)], self.dir.path().join("cache"))
    }

    fn gateway(&self) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 1)
    }

    /// The IPv6 /64 used when a test asks for dual stack (a ULA prefix).
    fn subnet6(&self) -> String {
        let [_, b, c] = self.subnet;
        format!("fd00:ca:{b:x}:{c:x}::/64")
    }

    /// bridge (gateway, no masquerade) + host-local in a private dataDir + `extra` plugins;
    /// IPv4 only, or IPv4 and IPv6.
    fn write_conflist(&self, dual_stack: bool, extra: &[serde_json::Value]) {
        let [a, b, c] = self.subnet;
        let mut ranges = vec![json!([{"subnet": format!("{a}.{b}.{c}.0/24")}])];
        let mut routes = vec![json!({"dst": "0.0.0.0/0"})];
        if dual_stack {
            ranges.push(json!([{"subnet": self.subnet6()}]));
            routes.push(json!({"dst": "::/0"}));
        }
        let mut plugins = vec![json!({
            "type": "bridge",
            "bridge": self.name,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": ranges,
                "routes": routes,
                "dataDir": self.ipam_dir(),
            }
        })];
        plugins.extend_from_slice(extra);
        let list = json!({"cniVersion": "1.0.0", "name": self.name, "plugins": plugins});
        std::fs::write(self.dir.path().join("conf").join("10-capstan-test.conflist"), list.to_string()).unwrap();
    }

    fn attachment(&mut self, suffix: &str) -> Attachment {
        let id = format!("{}{suffix}", self.name);
        self.container_ids.push(id.clone());
        Attachment::new(id, self.netns_path()).with_pod("default", "web", "0b7c9a6e-uid")
    }

    /// The IPv4 addresses on `dev` inside the netns, as `a.b.c.d/len`.
    fn ns_addrs(&self, dev: &str) -> Vec<String> {
        self.ns_addrs_of("-4", "inet", dev)
    }

    /// The global IPv6 addresses on `dev` inside the netns.
    fn ns_addrs6(&self, dev: &str) -> Vec<String> {
        self.ns_addrs_of("-6", "inet6", dev).into_iter().filter(|a| !a.starts_with("fe80")).collect()
    }

    fn ns_addrs_of(&self, family: &str, word: &str, dev: &str) -> Vec<String> {
        let (ok, out) = sh("ip", &["-n", &self.ns, family, "-o", "addr", "show", "dev", dev]);
        if !ok {
            return Vec::new();
        }
        out.lines().filter_map(|l| l.split_whitespace().skip_while(|w| *w != word).nth(1)).map(String::from).collect()
    }

    fn nat_rules(&self) -> String {
        IPTABLES.iter().map(|t| sh(&format!("{t}-save"), &["-t", "nat"]).1).collect()
    }

    /// Files host-local keeps per reserved address, named after the address.
    fn reserved_ips(&self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(self.ipam_dir().join(&self.name)) else { return Vec::new() };
        dir.flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = sh("ip", &["netns", "del", &self.ns]);
        if sh("ip", &["link", "show", &self.name]).0 {
            let _ = sh("ip", &["link", "del", &self.name]);
        }
        for (i, tool) in IPTABLES.iter().enumerate() {
            remove_new_chains(tool, &self.chains_before[i], &self.container_ids);
        }
    }
}

/// The chain names of the nat table.
fn nat_chains(tool: &str) -> BTreeSet<String> {
    let (_, out) = sh(&format!("{tool}-save"), &["-t", "nat"]);
    out.lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

/// The `-A` rules of one chain, in rule-number order.
fn chain_rules(tool: &str, chain: &str) -> Vec<String> {
    let (_, out) = sh(tool, &["-w", "-t", "nat", "-S", chain]);
    out.lines().filter(|l| l.starts_with("-A ")).map(String::from).collect()
}

/// Removes what the test left in the nat table: rules naming our container ids, and chains
/// that did not exist before the test. Chains portmap shares between containers
/// (`CNI-HOSTPORT-*`) stay when a rule of someone else's container appeared meanwhile.
fn remove_new_chains(tool: &str, before: &BTreeSet<String>, ours: &[String]) {
    let after = nat_chains(tool);
    let new: Vec<&String> = after.difference(before).collect();
    let rules: Vec<(String, Vec<String>)> = after.iter().map(|c| (c.clone(), chain_rules(tool, c))).collect();
    let mentions_ours = |r: &str| ours.iter().any(|id| r.contains(&format!("id: \\\"{id}\\\"")));
    let foreign = rules.iter().flat_map(|(_, rs)| rs).any(|r| r.contains("id: \\\"") && !mentions_ours(r));
    let doomed: Vec<&String> = new.into_iter().filter(|c| !(foreign && c.starts_with("CNI-HOSTPORT-"))).collect();
    for (chain, chain_rules) in &rules {
        for (n, rule) in chain_rules.iter().enumerate().rev() {
            let jumps_to_doomed =
                doomed.iter().any(|d| rule.ends_with(&format!("-j {d}")) || rule.contains(&format!("-j {d} ")));
            if mentions_ours(rule) || jumps_to_doomed {
                let _ = sh(tool, &["-w", "-t", "nat", "-D", chain, &(n + 1).to_string()]);
            }
        }
    }
    for chain in &doomed {
        let _ = sh(tool, &["-w", "-t", "nat", "-F", chain]);
    }
    for chain in &doomed {
        let _ = sh(tool, &["-w", "-t", "nat", "-X", chain]);
    }
}

fn free_port() -> u16 {
    for i in 0..100 {
        let port = 30000 + ((unique() as u16 ^ i) % 9000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

/// A TCP server inside the netns: a thread that joins the namespace (setns only moves the
/// calling thread), answers `conns` connections with a greeting and reports their peers.
fn serve_in_netns(netns: &Path, port: u16, conns: usize) -> std::thread::JoinHandle<Result<Vec<SocketAddr>, String>> {
    let netns = netns.to_path_buf();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let listener = (|| {
            let ns = std::fs::File::open(&netns).map_err(|e| e.to_string())?;
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())?;
            let l = TcpListener::bind(("0.0.0.0", port)).map_err(|e| e.to_string())?;
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            Ok::<_, String>(l)
        })();
        let _ = ready_tx.send(listener.is_ok());
        let listener = listener?;
        let mut peers = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        while peers.len() < conns {
            match listener.accept() {
                Ok((mut s, peer)) => {
                    s.set_nonblocking(false).map_err(|e| e.to_string())?;
                    s.write_all(b"hello from the pod\n").map_err(|e| e.to_string())?;
                    peers.push(peer);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(format!("accept: {e} after {} connections", peers.len())),
            }
        }
        Ok(peers)
    });
    assert!(ready_rx.recv().unwrap_or(false), "listener in netns failed: {:?}", handle.join());
    handle
}

fn greeting(addr: SocketAddr) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| format!("read from {addr}: {e}"))?;
    Ok(text)
}

fn sysctl(path: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/{path}")).unwrap_or_default().trim().to_string()
}

#[test]
fn add_portmap_check_del_with_debian_plugins() {
    let mut net = Net::new();
    net.write_conflist(true, &[json!({"type": "portmap", "capabilities": {"portMappings": true}})]);
    let cni = net.cni();
    assert_eq!(cni.status().unwrap().name, net.name);
    let host_port = free_port();
    let att = net.attachment("a").with_port_mappings(vec![PortMapping {
        host_port,
        container_port: 8080,
        protocol: Protocol::Tcp,
        host_ip: None,
    }]);

    let started = Instant::now();
    let result = cni.add(&att).unwrap();
    let add_ms = started.elapsed().as_millis();
    let ip = result.ipv4("eth0").expect("an IPv4 address on eth0");
    let [a, b, c] = net.subnet;
    assert_eq!(ip.octets()[..3], [a, b, c], "{ip} is outside the subnet");
    let ip6 = result.ipv6("eth0").expect("an IPv6 address on eth0");
    assert!(
        net.subnet6().parse::<capstan_cni::IpNet>().unwrap().contains(&std::net::IpAddr::V6(ip6)),
        "{ip6} is outside the subnet"
    );
    assert_eq!(result.pod_ips("eth0"), [std::net::IpAddr::V4(ip), std::net::IpAddr::V6(ip6)], "IPv4 first");
    assert_eq!(net.ns_addrs("eth0"), [format!("{ip}/24")], "the netns really has the address");
    assert_eq!(net.ns_addrs6("eth0"), [format!("{ip6}/64")], "and the IPv6 one");
    let mut reserved = net.reserved_ips();
    reserved.sort();
    assert_eq!(reserved, [ip.to_string(), ip6.to_string()], "host-local reserved them in our dataDir");
    cni.add_loopback(&att.container_id, &net.netns_path()).unwrap();
    assert_eq!(net.ns_addrs("lo"), ["127.0.0.1/8"]);

    // portmap: 127.0.0.1:<hostPort> works because portmap sets route_localnet on the bridge
    // and masquerades the 127.0.0.1 source; the host's address on the bridge works as well.
    assert_eq!(sysctl(&format!("net/ipv4/conf/{}/route_localnet", net.name)), "1");
    let server = serve_in_netns(&net.netns_path(), 8080, 2);
    let via_localhost = greeting(SocketAddr::from(([127, 0, 0, 1], host_port)));
    let via_bridge = greeting(SocketAddr::from((net.gateway(), host_port)));
    let peers = server.join().unwrap();
    assert_eq!(via_localhost.as_deref(), Ok("hello from the pod\n"));
    assert_eq!(via_bridge.as_deref(), Ok("hello from the pod\n"));
    let peers = peers.unwrap();
    assert!(peers.iter().all(|p| p.ip() == net.gateway()), "masqueraded to the bridge address: {peers:?}");

    let started = Instant::now();
    let checked = cni.check(&att);
    let check_ms = started.elapsed().as_millis();
    match (checked, portmap_check_is_broken()) {
        (Ok(()), false) => {}
        (Err(CniError::Plugin { plugin, command: CniCommand::Check, msg, .. }), true)
            if plugin == "portmap" && msg.contains("could not check ipv6 dnat") =>
        {
            eprintln!("known portmap CHECK bug of this plugins release: {msg}");
        }
        (other, broken) => panic!("CHECK gave {other:?} (portmap CHECK known broken: {broken})"),
    }
    let cache_file = net.dir.path().join("cache").join(format!("{}-{}-eth0", net.name, att.container_id));
    assert!(cache_file.is_file(), "ADD result cached at {}", cache_file.display());
    assert!(net.nat_rules().contains(&format!("id: \\\"{}\\\"", att.container_id)), "portmap rules exist");

    let started = Instant::now();
    cni.del(&att).unwrap();
    let del_ms = started.elapsed().as_millis();
    assert!(!sh("ip", &["-n", &net.ns, "link", "show", "eth0"]).0, "eth0 is gone from the netns");
    assert!(net.reserved_ips().is_empty(), "the address was released: {:?}", net.reserved_ips());
    let nat = net.nat_rules();
    assert!(!nat.contains(&att.container_id), "portmap rules are gone:\n{nat}");
    assert!(!cache_file.exists(), "the cache is gone");
    assert!(greeting(SocketAddr::from(([127, 0, 0, 1], host_port))).is_err(), "the host port is closed");

    cni.del(&att).unwrap();
    assert!(matches!(cni.check(&att), Err(CniError::NotAttached { .. })));
    eprintln!("timings: ADD {add_ms} ms, CHECK {check_ms} ms, DEL {del_ms} ms (bridge+host-local+portmap)");
}

#[test]
fn del_after_restart_and_netns_removal_releases_everything() {
    let mut net = Net::new();
    net.write_conflist(false, &[json!({"type": "portmap", "capabilities": {"portMappings": true}})]);
    let host_port = free_port();
    let att = net.attachment("b").with_port_mappings(vec![PortMapping {
        host_port,
        container_port: 80,
        protocol: Protocol::Tcp,
        host_ip: Some("127.0.0.1".parse().unwrap()),
    }]);
    let ip = net.cni().add(&att).unwrap().ipv4("eth0").unwrap();
    assert!(net.nat_rules().contains(&att.container_id));

    // The daemon restarts (a new Cni, no memory) and the pod's netns is already gone; the
    // caller no longer knows the port mappings.
    let (ok, out) = sh("ip", &["netns", "del", &net.ns]);
    assert!(ok, "{out}");
    let restarted = net.cni();
    assert_eq!(restarted.cached_result(&att).unwrap().and_then(|r| r.ipv4("eth0")), Some(ip));
    let bare = Attachment::new(att.container_id.clone(), net.netns_path());
    restarted.del(&bare).unwrap();
    assert!(net.reserved_ips().is_empty(), "the address was released: {:?}", net.reserved_ips());
    assert!(!net.nat_rules().contains(&att.container_id), "portmap rules are gone");
    assert!(restarted.cached_result(&att).unwrap().is_none());
    restarted.del(&bare).unwrap();
}

#[test]
fn failed_add_is_undone_with_real_plugins() {
    let mut net = Net::new();
    net.write_conflist(false, &[json!({"type": "portmap", "capabilities": {"portMappings": true}})]);
    // portmap rejects container port 0 after bridge has already attached the pod.
    let att = net.attachment("c").with_port_mappings(vec![PortMapping {
        host_port: free_port(),
        container_port: 0,
        protocol: Protocol::Tcp,
        host_ip: None,
    }]);
    let err = net.cni().add(&att).unwrap_err();
    match &err {
        CniError::Plugin { plugin, command: CniCommand::Add, msg, .. } => {
            assert_eq!(plugin, "portmap");
            assert!(!msg.is_empty());
        }
        other => panic!("expected portmap's error, got {other:?}"),
    }
    eprintln!("portmap said: {err}");
    assert!(!sh("ip", &["-n", &net.ns, "link", "show", "eth0"]).0, "bridge's eth0 was removed");
    assert!(net.reserved_ips().is_empty(), "the address was released: {:?}", net.reserved_ips());
    assert!(net.cni().cached_result(&att).unwrap().is_none());
}

#[test]
fn second_pod_gets_another_address_check_passes_and_del_leaves_the_first_alone() {
    let mut net = Net::new();
    net.write_conflist(false, &[json!({"type": "portmap", "capabilities": {"portMappings": true}})]);
    let cni = net.cni();
    let first = net.attachment("d1");
    let ip1 = cni.add(&first).unwrap().ipv4("eth0").unwrap();
    // A second pod in its own netns on the same bridge.
    let ns2 = format!("{}-2", net.ns);
    assert!(sh("ip", &["netns", "add", &ns2]).0);
    struct DelNs(String);
    impl Drop for DelNs {
        fn drop(&mut self) {
            let _ = sh("ip", &["netns", "del", &self.0]);
        }
    }
    let _ns2 = DelNs(ns2.clone());
    let mut second = net.attachment("d2");
    second.netns = PathBuf::from(format!("/run/netns/{ns2}"));
    let ip2 = cni.add(&second).unwrap().ipv4("eth0").unwrap();
    assert_ne!(ip1, ip2);
    // Pod to pod across the bridge.
    let (ok, out) = sh("ip", &["netns", "exec", &ns2, "busybox", "ping", "-c", "1", "-W", "3", &ip1.to_string()]);
    assert!(ok, "ping {ip1} from the second pod: {out}");
    // Without port mappings every plugin's CHECK passes, and CHECK notices breakage.
    cni.check(&first).unwrap();
    cni.check(&second).unwrap();
    assert!(sh("ip", &["-n", &ns2, "addr", "flush", "dev", "eth0"]).0);
    let err = cni.check(&second).unwrap_err();
    assert!(
        matches!(&err, CniError::Plugin { plugin, command: CniCommand::Check, .. } if plugin == "bridge"),
        "{err:?}"
    );
    eprintln!("CHECK after removing the pod's address: {err}");
    cni.del(&second).unwrap();
    assert_eq!(net.reserved_ips(), [ip1.to_string()]);
    assert_eq!(net.ns_addrs("eth0"), [format!("{ip1}/24")]);
    cni.del(&first).unwrap();
    assert!(net.reserved_ips().is_empty());
}
