//! CRI requests as kubelet (or anyone on the socket) may send them: any protobuf-encoded
//! ContainerConfig and PodSandboxConfig either become an OCI spec or an error — never a
//! panic — and a spec that is produced serialises to JSON (what the monitor reads).
#![no_main]

use std::path::Path;

use arbitrary::Arbitrary;
use capstan_runtime::spec::{ContainerSpecInput, HostFacts, NamespacePaths, SandboxFiles, build_container_spec};
use cri_proto::v1;
use libfuzzer_sys::fuzz_target;
use prost::Message;

#[derive(Debug, Arbitrary)]
struct Input {
    container: Vec<u8>,
    pod: Vec<u8>,
    cgroup_v2: bool,
    image_user: Option<String>,
}

fuzz_target!(|input: Input| {
    let Ok(config) = v1::ContainerConfig::decode(&input.container[..]) else { return };
    let Ok(pod) = v1::PodSandboxConfig::decode(&input.pod[..]) else { return };
    let rootfs = tempfile::tempdir().expect("rootfs");
    std::fs::create_dir(rootfs.path().join("etc")).expect("etc");
    std::fs::write(rootfs.path().join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nweb:x:101:102::/srv:/bin/sh\n").expect("passwd");
    std::fs::write(rootfs.path().join("etc/group"), "root:x:0:\nweb:x:102:\n").expect("group");
    let mut image_config = oci_spec::image::Config::default();
    image_config.set_user(input.image_user);
    let mut image = oci_spec::image::ImageConfiguration::default();
    image.set_config(Some(image_config));
    let namespaces = NamespacePaths { network: Some("/run/capstan/p/ns/net".into()), ..Default::default() };
    let files = SandboxFiles { hosts: Some("/run/capstan/p/hosts".into()), ..Default::default() };
    let host = HostFacts { cgroup_v2: input.cgroup_v2, swap_accounting: true, recursive_readonly: true, oom_score_adj_min: 0, cap_last_cap: 40 };
    let spec = build_container_spec(&ContainerSpecInput {
        config: &config,
        pod: &pod,
        image: &image,
        rootfs: rootfs.path(),
        namespaces: &namespaces,
        cgroups_path: Path::new("/kubepods/podx/c1"),
        files: &files,
        host: &host,
        pids_limit: Some(4096),
    });
    if let Ok(spec) = spec {
        serde_json::to_vec(&spec).expect("a built spec serialises");
    }
});
