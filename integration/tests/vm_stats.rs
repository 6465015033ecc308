//! Stats and UpdateContainerResources under pure cgroup v2 (memory.max, cpu.max,
//! cpu.weight, the `unified` map). Runs in the VM lane only (`CAPSTAN_VM=1`):
//! `bash integration/vm/lane.sh vm_stats`.


use std::time::Duration;

use cri_proto::v1;
use capstan_integration::pods::{Env, cgroup_file, container, value, with_resources};
use tonic::Code;

const MIB: i64 = 1 << 20;

fn in_vm() -> bool {
    if std::env::var_os("CAPSTAN_VM").is_none() {
        eprintln!("skipped: needs the VM lane's pure cgroup v2 (CAPSTAN_VM=1; bash integration/vm/lane.sh vm_stats)");
        return false;
    }
    true
}

/// cpu.weight for v1 shares, as libcgroups (after runc) maps them.
fn weight(shares: u64) -> u64 {
    let l = (shares as f64).log2();
    (10f64.powf((l * l + 125.0 * l) / 612.0 - 7.0 / 34.0)).ceil() as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_update_reaches_memory_max_cpu_max_and_cpu_weight() {
    if !in_vm() {
        return;
    }
    let mut env = Env::start().await;
    let pod = env.pod("resize2").await;
    let initial = v1::LinuxContainerResources { memory_limit_in_bytes: 64 * MIB, cpu_shares: 512, cpu_quota: 50_000, cpu_period: 100_000, ..Default::default() };
    let id = env.run(&pod, with_resources(container("resize", &env.busybox, &["sleep", "3600"]), initial.clone())).await;
    let file = |name: &str| cgroup_file("/sys/fs/cgroup", &pod.0, &id, name);
    assert_eq!(file("memory.max"), (64 * MIB).to_string());
    assert_eq!(file("cpu.weight"), weight(512).to_string());
    assert_eq!(env.status(&id).await.resources.unwrap().linux.unwrap(), initial);

    let update = v1::LinuxContainerResources {
        memory_limit_in_bytes: 128 * MIB,
        cpu_quota: 20_000,
        cpu_shares: 256,
        unified: [("memory.high".to_string(), (96 * MIB).to_string())].into(),
        ..Default::default()
    };
    let request = |linux: v1::LinuxContainerResources| v1::UpdateContainerResourcesRequest { container_id: id.clone(), linux: Some(linux), ..Default::default() };
    env.rt.update_container_resources(request(update)).await.unwrap_or_else(|e| panic!("{e}\n{}", env.daemon.log()));
    assert_eq!(file("memory.max"), (128 * MIB).to_string());
    assert_eq!(file("cpu.max"), "20000 100000");
    assert_eq!(file("cpu.weight"), weight(256).to_string());
    assert_eq!(file("memory.high"), (96 * MIB).to_string());
    let now = env.status(&id).await.resources.unwrap().linux.unwrap();
    assert_eq!((now.memory_limit_in_bytes, now.cpu_quota, now.cpu_shares, now.cpu_period), (128 * MIB, 20_000, 256, 100_000));
    assert_eq!(now.unified["memory.high"], (96 * MIB).to_string());

    let bad = v1::LinuxContainerResources { cpuset_cpus: "999".into(), ..Default::default() };
    let e = env.rt.update_container_resources(request(bad)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert_eq!(file("cpu.max"), "20000 100000");
    env.remove_pod(&pod.0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_cpu_and_memory_stats() {
    if !in_vm() {
        return;
    }
    let mut env = Env::start().await;
    let pod = env.pod("stats2").await;
    let burn = env.run(&pod, container("burn", &env.busybox, &["sh", "-c", "while :; do :; done"])).await;
    let a = env.container_stats(&burn).await;
    // Software emulation is slow: give the loop time to show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b = env.container_stats(&burn).await;
    let (ca, cb) = (a.cpu.unwrap(), b.cpu.unwrap());
    assert!(value(&cb.usage_core_nano_seconds) > value(&ca.usage_core_nano_seconds) + 100_000_000, "{ca:?} -> {cb:?}");
    assert!(value(&cb.usage_nano_cores) > 0, "{cb:?}");
    let memory = b.memory.unwrap();
    assert!(value(&memory.working_set_bytes) > 0 && value(&memory.usage_bytes) >= value(&memory.working_set_bytes), "{memory:?}");
    let linux = env.rt.pod_sandbox_stats(v1::PodSandboxStatsRequest { pod_sandbox_id: pod.0.clone() }).await.unwrap().into_inner().stats.unwrap().linux.unwrap();
    assert!(value(&linux.process.unwrap().process_count) >= 2, "burn's sh and the infra process");
    assert!(value(&linux.cpu.unwrap().usage_core_nano_seconds) >= value(&cb.usage_core_nano_seconds));
    env.remove_pod(&pod.0).await;
}
