//! GetContainerEvents on the real daemon: a subscriber sees a whole pod lifecycle in order,
//! with the ids and statuses kubelet's evented PLEG needs, including the exit of a container
//! that nobody stopped.


use std::time::Duration;

use cri_proto::v1;
use cri_proto::v1::ContainerEventType as Kind;
use capstan_integration::pods::{Env, container};

type Events = tonic::Streaming<v1::ContainerEventResponse>;

async fn next(events: &mut Events, daemon: &capstan_integration::daemon::Daemon) -> v1::ContainerEventResponse {
    match tokio::time::timeout(Duration::from_secs(30), events.message()).await {
        Ok(Ok(Some(event))) => event,
        other => panic!("no event: {other:?}\n{}", daemon.log()),
    }
}

fn kind(event: &v1::ContainerEventResponse) -> Kind {
    Kind::try_from(event.container_event_type).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_lifecycle_in_order() {
    let mut env = Env::start().await;
    let mut events = env.rt.get_container_events(v1::GetEventsRequest {}).await.unwrap().into_inner();
    // A second subscriber that never reads must not hold anything up.
    let _idle = env.rt.get_container_events(v1::GetEventsRequest {}).await.unwrap().into_inner();

    let pod = env.pod("evented").await;
    let c = env.run(&pod, container("short", &env.busybox, &["sh", "-c", "sleep 1; exit 3"])).await;
    let mut seen = Vec::new();
    // The container exits on its own: STOPPED comes from the monitor's record.
    while seen.last().map(|e: &v1::ContainerEventResponse| (e.container_id.clone(), kind(e))) != Some((c.clone(), Kind::ContainerStoppedEvent)) {
        seen.push(next(&mut events, &env.daemon).await);
        assert!(seen.len() < 10, "{seen:#?}");
    }
    env.rt.remove_container(v1::RemoveContainerRequest { container_id: c.clone() }).await.unwrap();
    seen.push(next(&mut events, &env.daemon).await);
    env.remove_pod(&pod.0).await;
    seen.push(next(&mut events, &env.daemon).await);
    seen.push(next(&mut events, &env.daemon).await);

    let order: Vec<(String, Kind)> = seen.iter().map(|e| (e.container_id.clone(), kind(e))).collect();
    let p = pod.0.clone();
    assert_eq!(
        order,
        vec![
            (p.clone(), Kind::ContainerCreatedEvent),
            (p.clone(), Kind::ContainerStartedEvent),
            (c.clone(), Kind::ContainerCreatedEvent),
            (c.clone(), Kind::ContainerStartedEvent),
            (c.clone(), Kind::ContainerStoppedEvent),
            (c.clone(), Kind::ContainerDeletedEvent),
            (p.clone(), Kind::ContainerStoppedEvent),
            (p.clone(), Kind::ContainerDeletedEvent),
        ]
    );
    for e in &seen {
        let status = e.pod_sandbox_status.as_ref().unwrap_or_else(|| panic!("no pod status in {e:?}"));
        assert_eq!(status.id, p);
        assert_eq!(status.metadata.as_ref().unwrap().uid, "uid-evented", "kubelet finds the pod by its uid");
        assert!(e.created_at > 0);
    }
    assert!(seen.windows(2).all(|w| w[0].created_at <= w[1].created_at));
    // The exit as ContainerStatus tells it, in the STOPPED event.
    let stopped = &seen[4];
    let st = stopped.containers_statuses.iter().find(|s| s.id == c).expect("the container's status");
    assert_eq!((st.state, st.exit_code), (v1::ContainerState::ContainerExited as i32, 3));
    assert_eq!(seen[3].containers_statuses[0].state, v1::ContainerState::ContainerRunning as i32);
    assert!(seen[5].containers_statuses.is_empty(), "a deleted container has no status");
    assert_eq!(seen[1].pod_sandbox_status.as_ref().unwrap().state, v1::PodSandboxState::SandboxReady as i32);
    assert_eq!(seen[6].pod_sandbox_status.as_ref().unwrap().state, v1::PodSandboxState::SandboxNotready as i32);

    // Nothing more: no duplicate STOPPED from StopPodSandbox, StopContainer or the watcher.
    assert!(tokio::time::timeout(Duration::from_millis(500), events.message()).await.is_err(), "unexpected extra event");
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_container_is_reported_once_and_pod_removal_deletes_its_containers() {
    let mut env = Env::start().await;
    let mut events = env.rt.get_container_events(v1::GetEventsRequest {}).await.unwrap().into_inner();
    let pod = env.pod("stopped").await;
    let c = env.run(&pod, container("long", &env.busybox, &["sleep", "3600"])).await;
    env.rt.stop_container(v1::StopContainerRequest { container_id: c.clone(), timeout: 0 }).await.unwrap();
    env.remove_pod(&pod.0).await;
    let mut order = Vec::new();
    for _ in 0..8 {
        let e = next(&mut events, &env.daemon).await;
        order.push((e.container_id.clone(), kind(&e)));
    }
    let p = pod.0.clone();
    assert_eq!(
        order,
        vec![
            (p.clone(), Kind::ContainerCreatedEvent),
            (p.clone(), Kind::ContainerStartedEvent),
            (c.clone(), Kind::ContainerCreatedEvent),
            (c.clone(), Kind::ContainerStartedEvent),
            (c.clone(), Kind::ContainerStoppedEvent),
            (p.clone(), Kind::ContainerStoppedEvent),
            (c.clone(), Kind::ContainerDeletedEvent),
            (p.clone(), Kind::ContainerDeletedEvent),
        ]
    );
    assert!(tokio::time::timeout(Duration::from_millis(500), events.message()).await.is_err(), "unexpected extra event");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exit_during_a_daemon_restart_is_still_reported() {
    let mut env = Env::start().await;
    let pod = env.pod("restarted").await;
    let c = env.run(&pod, container("later", &env.busybox, &["sh", "-c", "sleep 4; exit 7"])).await;
    env.daemon.restart().await;
    env.rt = env.daemon.runtime_client().await;
    let mut events = env.rt.get_container_events(v1::GetEventsRequest {}).await.unwrap().into_inner();
    // What happened before the restart is not announced again; the exit after it is.
    let e = next(&mut events, &env.daemon).await;
    assert_eq!((e.container_id.as_str(), kind(&e)), (c.as_str(), Kind::ContainerStoppedEvent), "{e:?}");
    let st = e.containers_statuses.iter().find(|s| s.id == c).unwrap();
    assert_eq!(st.exit_code, 7);
    env.remove_pod(&pod.0).await;
    let rest: Vec<_> = [next(&mut events, &env.daemon).await, next(&mut events, &env.daemon).await, next(&mut events, &env.daemon).await]
        .iter()
        .map(|e| (e.container_id.clone(), kind(e)))
        .collect();
    assert_eq!(rest, vec![(pod.0.clone(), Kind::ContainerStoppedEvent), (c.clone(), Kind::ContainerDeletedEvent), (pod.0.clone(), Kind::ContainerDeletedEvent)]);
}
