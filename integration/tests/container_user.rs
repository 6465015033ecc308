//! ContainerStatus.user: the identity the container's process really runs as (kubelet
//! compares it with the pod's runAsUser/runAsGroup/supplementalGroups).

use capstan_integration::pods::{Env, container};
use cri_proto::v1;

#[tokio::test(flavor = "multi_thread")]
async fn container_status_reports_the_uid_gid_and_groups_the_process_has() {
    let mut env = Env::start().await;
    let pod = env.pod("user").await;
    let mut config = container("who", &env.busybox, &["sh", "-c", "id"]);
    config.linux = Some(v1::LinuxContainerConfig {
        security_context: Some(v1::LinuxContainerSecurityContext {
            run_as_user: Some(v1::Int64Value { value: 1234 }),
            run_as_group: Some(v1::Int64Value { value: 5678 }),
            supplemental_groups: vec![100, 200],
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = env.run(&pod, config).await;
    let status = env.wait_exited(&id).await;
    assert_eq!(status.exit_code, 0, "{status:?}");
    let user = status.user.and_then(|u| u.linux).expect("ContainerStatus.user.linux");
    assert_eq!((user.uid, user.gid), (1234, 5678));
    for g in [100, 200] {
        assert!(user.supplemental_groups.contains(&g), "{user:?}");
    }
    // What the process itself saw.
    let log = std::fs::read_to_string(&status.log_path).unwrap_or_else(|e| panic!("{}: {e}", status.log_path));
    assert!(log.contains("uid=1234") && log.contains("gid=5678") && log.contains("100") && log.contains("200"), "{log}");
}
