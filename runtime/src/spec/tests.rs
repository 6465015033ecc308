//! Whole-spec tests: the pieces put together the way CreateContainer does.

use std::path::{Path, PathBuf};

use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder};
use oci_spec::runtime::{Capability, LinuxNamespaceType};

use super::*;

struct Fixture {
    rootfs: tempfile::TempDir,
    image: ImageConfiguration,
    paths: NamespacePaths,
    files: SandboxFiles,
    host: HostFacts,
}

impl Fixture {
    fn new() -> Fixture {
        let rootfs = tempfile::tempdir().unwrap();
        std::fs::create_dir(rootfs.path().join("etc")).unwrap();
        std::fs::write(rootfs.path().join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nweb:x:101:102::/srv:/bin/sh\n").unwrap();
        std::fs::write(rootfs.path().join("etc/group"), "root:x:0:\nweb:x:102:\nwww-data:x:33:web\n").unwrap();
        let config = ConfigBuilder::default()
            .user("web".to_string())
            .entrypoint(vec!["/bin/httpd".to_string()])
            .cmd(vec!["-f".to_string()])
            .env(vec!["PATH=/bin".to_string(), "MODE=image".to_string()])
            .working_dir("/srv".to_string())
            .build()
            .unwrap();
        let image = ImageConfigurationBuilder::default().config(config).build().unwrap();
        let paths = NamespacePaths {
            network: Some("/run/capstan/pods/p/ns/net".into()),
            ipc: Some("/run/capstan/pods/p/ns/ipc".into()),
            uts: Some("/run/capstan/pods/p/ns/uts".into()),
            pid: Some("/run/capstan/pods/p/ns/pid".into()),
        };
        let files = SandboxFiles {
            hosts: Some("/run/capstan/pods/p/hosts".into()),
            resolv_conf: Some("/run/capstan/pods/p/resolv.conf".into()),
            hostname: Some("/run/capstan/pods/p/hostname".into()),
            shm: Some("/run/capstan/pods/p/shm".into()),
        };
        let host = HostFacts { cgroup_v2: false, swap_accounting: true, recursive_readonly: true, oom_score_adj_min: -500, cap_last_cap: 40 };
        Fixture { rootfs, image, paths, files, host }
    }

    fn build(&self, config: &v1::ContainerConfig, pod: &v1::PodSandboxConfig) -> Result<Spec> {
        build_container_spec(&ContainerSpecInput {
            config,
            pod,
            image: &self.image,
            rootfs: self.rootfs.path(),
            namespaces: &self.paths,
            cgroups_path: Path::new("/kubepods/podx/c1"),
            files: &self.files,
            host: &self.host,
            pids_limit: Some(4096),
        })
    }
}

fn pod() -> v1::PodSandboxConfig {
    v1::PodSandboxConfig { hostname: "web-0".into(), ..Default::default() }
}

fn container(sc: v1::LinuxContainerSecurityContext) -> v1::ContainerConfig {
    v1::ContainerConfig {
        metadata: Some(v1::ContainerMetadata { name: "web".into(), attempt: 0 }),
        envs: vec![v1::KeyValue { key: "MODE".into(), value: "pod".into() }],
        tty: true,
        linux: Some(v1::LinuxContainerConfig {
            resources: Some(v1::LinuxContainerResources {
                memory_limit_in_bytes: 32 << 20,
                cpu_shares: 256,
                oom_score_adj: -998,
                ..Default::default()
            }),
            security_context: Some(sc),
        }),
        ..Default::default()
    }
}

#[test]
fn a_typical_container() {
    let f = Fixture::new();
    let sc = v1::LinuxContainerSecurityContext {
        seccomp: Some(v1::SecurityProfile { profile_type: 0, localhost_ref: String::new() }),
        ..Default::default()
    };
    let spec = f.build(&container(sc), &pod()).unwrap();
    let process = spec.process().as_ref().unwrap();
    assert_eq!(process.args().as_deref().unwrap(), ["/bin/httpd", "-f"]);
    let env = process.env().as_deref().unwrap();
    assert!(env.contains(&"MODE=pod".to_string()) && env.contains(&"PATH=/bin".to_string()));
    assert!(env.contains(&"HOSTNAME=web-0".to_string()) && env.contains(&"HOME=/srv".to_string()));
    assert_eq!(process.cwd(), Path::new("/srv"));
    assert_eq!(process.terminal(), Some(true));
    let user = process.user();
    assert_eq!((user.uid(), user.gid()), (101, 102));
    assert_eq!(user.additional_gids().as_deref().unwrap(), [102, 33]);
    assert_eq!(process.oom_score_adj(), Some(-500), "clamped to what we may set");
    assert_eq!(process.no_new_privileges(), None);
    assert_eq!(process.rlimits(), &None);
    assert!(process.capabilities().as_ref().unwrap().effective().as_ref().unwrap().contains(&Capability::Chown));
    assert_eq!(spec.root().as_ref().unwrap().path(), f.rootfs.path());
    assert_eq!(spec.hostname(), &None, "the pod's UTS namespace already has the name");

    let linux = spec.linux().as_ref().unwrap();
    assert_eq!(linux.cgroups_path().as_deref(), Some(Path::new("/kubepods/podx/c1")));
    let ns: Vec<_> = linux.namespaces().as_ref().unwrap().iter().map(|n| (n.typ(), n.path().clone())).collect();
    assert!(ns.contains(&(LinuxNamespaceType::Network, Some(PathBuf::from("/run/capstan/pods/p/ns/net")))));
    // No namespace options: POD for everything (CRI's zero value), as containerd reads it.
    assert!(ns.contains(&(LinuxNamespaceType::Pid, Some(PathBuf::from("/run/capstan/pods/p/ns/pid")))));
    let resources = linux.resources().as_ref().unwrap();
    assert_eq!(resources.memory().unwrap().limit(), Some(32 << 20));
    assert_eq!(resources.cpu().as_ref().unwrap().shares(), Some(256));
    assert_eq!(resources.pids().unwrap().limit(), 4096);
    assert!(!resources.devices().as_ref().unwrap()[0].allow());
    assert!(linux.seccomp().is_some());
    assert!(linux.masked_paths().as_ref().unwrap().contains(&"/proc/kcore".to_string()));
    let dests: Vec<_> = spec.mounts().as_ref().unwrap().iter().map(|m| m.destination().clone()).collect();
    assert!(dests.contains(&PathBuf::from("/etc/resolv.conf")) && dests.contains(&PathBuf::from("/dev/shm")));
}

#[test]
fn the_spec_survives_a_round_trip_through_json() {
    let f = Fixture::new();
    let spec = f.build(&container(Default::default()), &pod()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    spec.save(&path).unwrap();
    assert_eq!(Spec::load(&path).unwrap(), spec);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"ociVersion\":\"1.0.2\""));
}

#[test]
fn privileged_containers_need_a_privileged_pod_and_get_everything() {
    let f = Fixture::new();
    let sc = v1::LinuxContainerSecurityContext { privileged: true, ..Default::default() };
    assert!(matches!(f.build(&container(sc.clone()), &pod()), Err(Error::InvalidArgument(m)) if m.contains("privileged")));
    let mut privileged_pod = pod();
    privileged_pod.linux = Some(v1::LinuxPodSandboxConfig {
        security_context: Some(v1::LinuxSandboxSecurityContext { privileged: true, ..Default::default() }),
        ..Default::default()
    });
    let spec = f.build(&container(sc), &privileged_pod).unwrap();
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux.seccomp().is_none());
    assert!(linux.masked_paths().as_ref().unwrap().is_empty());
    assert!(linux.readonly_paths().as_ref().unwrap().is_empty());
    assert!(linux.resources().as_ref().unwrap().devices().as_ref().unwrap()[0].allow());
    assert!(linux.devices().as_ref().is_some_and(|d| !d.is_empty()));
    let caps = spec.process().as_ref().unwrap().capabilities().clone().unwrap();
    assert_eq!(caps.bounding().as_ref().unwrap().len(), 41);
}

#[test]
fn security_switches_map_across() {
    let f = Fixture::new();
    let sc = v1::LinuxContainerSecurityContext {
        readonly_rootfs: true,
        no_new_privs: true,
        run_as_user: Some(v1::Int64Value { value: 0 }),
        capabilities: Some(v1::Capability { drop_capabilities: vec!["ALL".into()], ..Default::default() }),
        ..Default::default()
    };
    let spec = f.build(&container(sc), &pod()).unwrap();
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
    let process = spec.process().as_ref().unwrap();
    assert_eq!(process.no_new_privileges(), Some(true));
    assert_eq!(process.user().uid(), 0);
    assert!(process.capabilities().as_ref().unwrap().effective().as_ref().unwrap().is_empty());
    let hosts = spec.mounts().as_ref().unwrap().iter().find(|m| m.destination() == Path::new("/etc/hosts")).unwrap();
    assert!(hosts.options().as_ref().unwrap().contains(&"ro".to_string()));
}

#[test]
fn host_network_pods_keep_the_node_name_and_refuse_net_sysctls() {
    let f = Fixture::new();
    let sc = v1::LinuxContainerSecurityContext {
        namespace_options: Some(v1::NamespaceOption { network: v1::NamespaceMode::Node as i32, ..Default::default() }),
        ..Default::default()
    };
    let spec = f.build(&container(sc.clone()), &pod()).unwrap();
    let node = nix::unistd::gethostname().unwrap().to_string_lossy().into_owned();
    assert!(spec.process().as_ref().unwrap().env().as_ref().unwrap().contains(&format!("HOSTNAME={node}")));
    let ns = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
    assert!(!ns.iter().any(|n| matches!(n.typ(), LinuxNamespaceType::Network | LinuxNamespaceType::Uts)));
    let mut pod = pod();
    pod.linux = Some(v1::LinuxPodSandboxConfig {
        sysctls: [("net.core.somaxconn".to_string(), "1024".to_string())].into(),
        ..Default::default()
    });
    assert!(matches!(f.build(&container(sc), &pod), Err(Error::InvalidArgument(m)) if m.contains("net.core.somaxconn")));
}

#[test]
fn a_fresh_uts_namespace_gets_the_pod_hostname() {
    let mut f = Fixture::new();
    f.paths = NamespacePaths { pid: f.paths.pid.clone(), ..Default::default() };
    let spec = f.build(&container(Default::default()), &pod()).unwrap();
    assert_eq!(spec.hostname().as_deref(), Some("web-0"));
}

#[test]
fn bad_input_is_an_invalid_argument_never_a_panic() {
    let f = Fixture::new();
    let cases: Vec<(v1::ContainerConfig, &str)> = vec![
        (v1::ContainerConfig { working_dir: "relative".into(), ..container(Default::default()) }, "working_dir"),
        (
            container(v1::LinuxContainerSecurityContext { run_as_username: "nobody-here".into(), ..Default::default() }),
            "nobody-here",
        ),
        (
            container(v1::LinuxContainerSecurityContext {
                capabilities: Some(v1::Capability { add_capabilities: vec!["CAP_FLY".into()], ..Default::default() }),
                ..Default::default()
            }),
            "CAP_FLY",
        ),
        (
            v1::ContainerConfig {
                devices: vec![v1::Device { host_path: "/etc/passwd".into(), container_path: "/dev/x".into(), permissions: "rwm".into() }],
                ..container(Default::default())
            },
            "not a device",
        ),
    ];
    for (config, word) in cases {
        match f.build(&config, &pod()) {
            Err(Error::InvalidArgument(m)) => assert!(m.contains(word), "{m} should name {word}"),
            other => panic!("expected InvalidArgument naming {word}, got {other:?}"),
        }
    }
}
