//! A pod that shares one pid namespace among its containers (`pid: POD`, kubelet's
//! shareProcessNamespace): containers created after the namespace's pid counter has moved on
//! must still get their own /sys/fs/cgroup. On cgroup v1 hosts libcontainer 0.7 looked the
//! new init up in the host's /proc by its namespace pid and failed (or read a stranger's
//! cgroups); Capstan now lays the v1 cgroup mounts out itself.

use std::time::{Duration, Instant};

use capstan_integration::pods::{Env, container, with_resources};
use cri_proto::v1;

#[tokio::test(flavor = "multi_thread")]
async fn late_containers_in_a_shared_pid_namespace_see_their_own_cgroups() {
    let mut env = Env::start().await;
    let mut config = env.sandbox_config("sharedpid");
    config.linux = Some(v1::LinuxPodSandboxConfig {
        security_context: Some(v1::LinuxSandboxSecurityContext {
            namespace_options: Some(v1::NamespaceOption { pid: v1::NamespaceMode::Pod as i32, ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let pod_id = env
        .rt
        .run_pod_sandbox(v1::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    env.cleanup.pods.push(pod_id.clone());
    let pod = (pod_id, config);

    // Move the pod's pid counter well past the low numbers the host also uses.
    let busy = container("busy", &env.busybox, &["sh", "-c", "for i in $(seq 60); do sleep 600 & done; echo spawned; wait"]);
    env.run(&pod, busy).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let log_dir = std::path::Path::new(&pod.1.log_directory);
    while !std::fs::read_to_string(log_dir.join("busy/0.log")).unwrap_or_default().contains("spawned") {
        assert!(Instant::now() < deadline, "the busy container did not spawn its sleeps");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    for i in 0..3 {
        let name = format!("late{i}");
        let limit = (64 + i) << 20;
        let script = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; echo pid=$$";
        let resources = v1::LinuxContainerResources { memory_limit_in_bytes: limit, ..Default::default() };
        let config = with_resources(container(&name, &env.busybox, &["sh", "-c", script]), resources);
        let id = env.run(&pod, config).await;
        let status = env.wait_exited(&id).await;
        assert_eq!(status.exit_code, 0, "{status:?}");
        let log = std::fs::read_to_string(&status.log_path).unwrap();
        assert!(log.contains(&limit.to_string()), "{name} does not see its own memory limit {limit}:\n{log}");
        let pid: u32 = log.lines().find_map(|l| l.rsplit("pid=").next().filter(|_| l.contains("pid="))).and_then(|p| p.trim().parse().ok()).unwrap_or(0);
        assert!(pid > 60, "{name} ran as pid {pid}: the shared namespace was not shared\n{log}");
    }
}
