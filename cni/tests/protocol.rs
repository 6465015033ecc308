//! The runtime side of the execution protocol, seen from real plugin processes: small shell
//! plugins record the environment and stdin they get and print canned results or errors.
//! They run against the host netns path but touch nothing in it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use capstan_cni::{Attachment, Cni, CniCommand, CniError, PortMapping, Protocol};
use serde_json::{Value, json};

const NETNS: &str = "/proc/self/ns/net";

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["bin", "conf", "cache", "rec"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        Fixture { dir }
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    fn cni(&self) -> Cni {
        Cni::new(self.path("conf"), vec![self.path("bin")], self.path("cache"))
    }

    /// A plugin that records `CNI_*` variables, stdin and the call order, and on ADD prints
    /// `result` (its own canned result).
    fn recording_plugin(&self, name: &str, result: &Value) {
        let rec = self.path("rec");
        std::fs::write(rec.join(format!("{name}.result")), result.to_string()).unwrap();
        let script = format!(
            "#!/bin/sh\nd={rec}\nn={name}\ncat > \"$d/$CNI_COMMAND-$n.stdin\"\n\
             env | grep '^CNI_' | sort > \"$d/$CNI_COMMAND-$n.env\"\n\
             echo \"$CNI_COMMAND $n\" >> \"$d/log\"\n\
             if [ \"$CNI_COMMAND\" = ADD ]; then cat \"$d/$n.result\"; fi\n",
            rec = rec.display()
        );
        self.plugin(name, &script);
    }

    fn plugin(&self, name: &str, script: &str) {
        use std::os::unix::fs::PermissionsExt;
        let p = self.path("bin").join(name);
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn conflist(&self, list: &Value) {
        std::fs::write(self.path("conf").join("10-test.conflist"), list.to_string()).unwrap();
    }

    fn recorded(&self, file: &str) -> String {
        std::fs::read_to_string(self.path("rec").join(file)).unwrap_or_default()
    }

    fn recorded_json(&self, file: &str) -> Value {
        serde_json::from_str(&self.recorded(file)).unwrap()
    }
}

fn result_a() -> Value {
    json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "br0"}, {"name": "eth0", "sandbox": NETNS}],
        "ips": [{"interface": 1, "address": "10.77.0.5/24", "gateway": "10.77.0.1"}]})
}

fn result_b() -> Value {
    let mut r = result_a();
    r["dns"] = json!({"nameservers": ["10.77.0.10"]});
    r
}

fn attachment() -> Attachment {
    Attachment::new("sandbox1", NETNS).with_pod("kube-system", "dns-0", "uid-42").with_port_mappings(vec![
        PortMapping { host_port: 8053, container_port: 53, protocol: Protocol::Udp, host_ip: None },
    ])
}

#[test]
fn add_chains_results_passes_capabilities_and_del_runs_in_reverse() {
    let f = Fixture::new();
    f.recording_plugin("rec-a", &result_a());
    f.recording_plugin("rec-b", &result_b());
    f.conflist(&json!({"cniVersion": "1.0.0", "name": "testnet", "plugins": [
        {"type": "rec-a", "ipam": {"type": "rec-a"}},
        {"type": "rec-b", "capabilities": {"portMappings": true}, "name": "overridden"}
    ]}));
    let cni = f.cni();
    assert_eq!(cni.status().unwrap().name, "testnet");
    let att = attachment();

    let result = cni.add(&att).unwrap();
    assert_eq!(result.raw, result_b(), "the list's result is the last plugin's");
    assert_eq!(result.ipv4("eth0"), Some("10.77.0.5".parse().unwrap()));
    assert_eq!(result.dns.nameservers, ["10.77.0.10"]);

    let env = f.recorded("ADD-rec-a.env");
    for line in [
        "CNI_COMMAND=ADD",
        "CNI_CONTAINERID=sandbox1",
        &format!("CNI_NETNS={NETNS}"),
        "CNI_IFNAME=eth0",
        "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=dns-0;K8S_POD_INFRA_CONTAINER_ID=sandbox1;K8S_POD_UID=uid-42",
        &format!("CNI_PATH={}", f.path("bin").display()),
    ] {
        assert!(env.lines().any(|l| l == line), "missing {line:?} in\n{env}");
    }
    let a = f.recorded_json("ADD-rec-a.stdin");
    assert_eq!((a["name"].as_str(), a["cniVersion"].as_str()), (Some("testnet"), Some("1.0.0")));
    assert!(a.get("prevResult").is_none() && a.get("runtimeConfig").is_none(), "{a}");
    let b = f.recorded_json("ADD-rec-b.stdin");
    assert_eq!(b["name"], "testnet", "the list's name replaces the plugin's");
    assert_eq!(b["prevResult"], result_a());
    assert_eq!(
        b["runtimeConfig"],
        json!({"portMappings": [{"hostPort": 8053, "containerPort": 53, "protocol": "udp"}]})
    );

    cni.check(&att).unwrap();
    let c = f.recorded_json("CHECK-rec-a.stdin");
    assert_eq!(c["prevResult"], result_b(), "CHECK gets the cached final result");

    // A restarted daemon knows nothing but the cache, and the caller may not have the ports.
    let restarted = f.cni();
    assert_eq!(restarted.cached_result(&att).unwrap().unwrap().raw, result_b());
    restarted.del(&Attachment::new("sandbox1", NETNS)).unwrap();
    let d = f.recorded_json("DEL-rec-b.stdin");
    assert_eq!(d["prevResult"], result_b());
    assert_eq!(d["runtimeConfig"], b["runtimeConfig"], "DEL repeats ADD's capability arguments");
    assert!(f.recorded("DEL-rec-b.env").contains("K8S_POD_NAME=dns-0"), "DEL repeats ADD's CNI_ARGS");
    assert_eq!(
        f.recorded("log").lines().collect::<Vec<_>>(),
        ["ADD rec-a", "ADD rec-b", "CHECK rec-a", "CHECK rec-b", "DEL rec-b", "DEL rec-a"]
    );
    assert!(restarted.cached_result(&att).unwrap().is_none(), "DEL removes the cache");
    assert!(matches!(restarted.check(&att), Err(CniError::NotAttached { .. })));

    // Second DEL: no cache, so the current network gets DEL without prevResult.
    restarted.del(&att).unwrap();
    let d = f.recorded_json("DEL-rec-a.stdin");
    assert!(d.get("prevResult").is_none(), "{d}");
}

#[test]
fn del_without_netns_passes_empty_cni_netns() {
    let f = Fixture::new();
    f.recording_plugin("rec-a", &result_a());
    f.conflist(&json!({"cniVersion": "1.0.0", "name": "testnet", "plugins": [{"type": "rec-a"}]}));
    let gone = f.path("no-such-netns");
    f.cni().del(&Attachment::new("sandbox1", &gone)).unwrap();
    assert!(f.recorded("DEL-rec-a.env").lines().any(|l| l == "CNI_NETNS="), "{}", f.recorded("DEL-rec-a.env"));
    // ADD, in contrast, refuses a path that is not a namespace.
    let err = f.cni().add(&Attachment::new("sandbox1", &gone)).unwrap_err();
    assert!(matches!(err, CniError::InvalidAttachment(_)), "{err}");
}

#[test]
fn plugin_error_json_is_typed_and_failed_add_is_undone() {
    let f = Fixture::new();
    f.recording_plugin("rec-a", &result_a());
    f.plugin(
        "fails",
        "#!/bin/sh\ncat >/dev/null\nif [ \"$CNI_COMMAND\" = DEL ]; then exit 0; fi\n\
         echo '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"no free leases\",\"details\":\"pool 10.77.0.0/24 is full\"}'\nexit 1\n",
    );
    f.conflist(&json!({"cniVersion": "1.0.0", "name": "testnet", "plugins": [{"type": "rec-a"}, {"type": "fails"}]}));
    let cni = f.cni();
    let err = cni.add(&attachment()).unwrap_err();
    match &err {
        CniError::Plugin { plugin, command, code, msg, details } => {
            assert_eq!((plugin.as_str(), *command, *code), ("fails", CniCommand::Add, 11));
            assert_eq!(msg, "no free leases");
            assert_eq!(details, "pool 10.77.0.0/24 is full");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(err.to_string().contains("no free leases"), "{err}");
    assert_eq!(f.recorded("log").lines().collect::<Vec<_>>(), ["ADD rec-a", "DEL rec-a"], "ADD was undone");
    let undo = f.recorded_json("DEL-rec-a.stdin");
    assert_eq!(undo["prevResult"], result_a(), "the undo passes the partial result");
    assert!(cni.cached_result(&attachment()).unwrap().is_none(), "a failed ADD caches nothing");
}

#[test]
fn unstructured_failure_keeps_stderr() {
    let f = Fixture::new();
    f.plugin("crashes", "#!/bin/sh\ncat >/dev/null\necho 'panic: runtime error: nil map' >&2\nexit 2\n");
    f.conflist(&json!({"cniVersion": "1.0.0", "name": "testnet", "plugins": [{"type": "crashes"}]}));
    let err = f.cni().add(&attachment()).unwrap_err();
    assert!(matches!(err, CniError::PluginFailed { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("crashes") && msg.contains("nil map") && msg.contains("exit status: 2"), "{msg}");
}

#[test]
fn garbage_result_is_invalid() {
    let f = Fixture::new();
    f.plugin("garbage", "#!/bin/sh\ncat >/dev/null\necho 'not json'\n");
    f.conflist(&json!({"cniVersion": "1.0.0", "name": "testnet", "plugins": [{"type": "garbage"}]}));
    let err = f.cni().add(&attachment()).unwrap_err();
    assert!(matches!(err, CniError::InvalidResult { .. }), "{err:?}");
}

#[test]
fn missing_plugin_is_named_before_anything_runs() {
    let f = Fixture::new();
    f.recording_plugin("rec-a", &result_a());
    f.conflist(&json!({"cniVersion": "1.0.0", "name": "testnet", "plugins": [
        {"type": "rec-a", "ipam": {"type": "capstan-missing-ipam"}}, {"type": "rec-a"}]}));
    let cni = f.cni();
    let reason = cni.status().unwrap_err().to_string();
    assert!(
        reason.contains("\"capstan-missing-ipam\"") && reason.contains(&f.path("bin").display().to_string()),
        "{reason}"
    );
    let err = cni.add(&attachment()).unwrap_err();
    assert!(matches!(&err, CniError::PluginNotFound { plugin, .. } if plugin == "capstan-missing-ipam"), "{err:?}");
    assert_eq!(f.recorded("log"), "", "no plugin ran");
}

#[test]
fn no_config_is_not_ready_and_del_is_fine() {
    let f = Fixture::new();
    let cni = f.cni();
    let reason = cni.status().unwrap_err().to_string();
    assert!(reason.contains("no CNI network config"), "{reason}");
    cni.del(&attachment()).unwrap();
}

#[test]
fn check_is_skipped_when_disabled_or_before_0_4() {
    let f = Fixture::new();
    f.recording_plugin("rec-a", &result_a());
    for list in [
        json!({"cniVersion": "1.0.0", "name": "testnet", "disableCheck": true, "plugins": [{"type": "rec-a"}]}),
        json!({"cniVersion": "0.3.1", "name": "testnet", "plugins": [{"type": "rec-a"}]}),
    ] {
        f.conflist(&list);
        let cni = f.cni();
        cni.add(&attachment()).unwrap();
        cni.check(&attachment()).unwrap();
        cni.del(&attachment()).unwrap();
    }
    assert!(!f.recorded("log").contains("CHECK"), "{}", f.recorded("log"));
    // 0.3.1 plugins do not get prevResult on DEL.
    assert!(f.recorded_json("DEL-rec-a.stdin").get("prevResult").is_none());
}

#[test]
fn hung_plugin_and_its_children_are_killed_at_the_timeout() {
    let f = Fixture::new();
    let pidfile = f.path("rec").join("child.pid");
    f.plugin("hangs", &format!("#!/bin/sh\nsleep 300 &\necho $! > {}\nsleep 300\n", pidfile.display()));
    f.conflist(&json!({"cniVersion": "1.0.0", "name": "testnet", "plugins": [{"type": "hangs"}]}));
    let cni = f.cni().with_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let err = cni.add(&attachment()).unwrap_err();
    assert!(matches!(err, CniError::Timeout { .. }), "{err:?}");
    // Two timeouts at most: ADD, then the undo's DEL of the same hanging plugin.
    assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(pid), "the plugin's child {pid} survived");
}

/// Running, not merely a zombie waiting for whoever inherited it.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
