//! GetContainerEvents: CRI `ContainerEventResponse`s for kubelet's evented PLEG, broadcast to
//! every subscriber.
//!
//! The lifecycle code reports what it did (one line in each of container create, start,
//! stop, remove and sandbox run, stop, remove); sandboxes are reported with their own id as
//! `container_id`, as kubelet expects. A container that exits on its own is noticed through
//! inotify on its directory: the pod's monitor atomically renames a new `status.json` into
//! it. Each id's events only move forward (created → started → stopped → deleted), so a
//! stop seen both by StopContainer and by the watcher is sent once, and a container that
//! exited before its STARTED was sent gets STARTED first.
//!
//! The broadcast is bounded: a subscriber that falls behind loses the oldest events (and
//! is told how many), the runtime never waits for it.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use cri_proto::monitor::ContainerPhase;
use cri_proto::v1;
use cri_proto::v1::ContainerEventType as Kind;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::sync::broadcast;

use crate::Runtime;
use crate::container::ContainerStore;
use crate::sandbox::SandboxStore;
use crate::sandbox::store::lock;

/// Events kept for a slow subscriber before it starts losing the oldest.
const CAPACITY: usize = 1024;
/// The file the monitor replaces on every change of a container's state.
const STATUS_FILE: &str = "status.json";

pub struct Events {
    tx: broadcast::Sender<v1::ContainerEventResponse>,
    /// The last event sent for each live container and sandbox id.
    sent: Mutex<HashMap<String, Kind>>,
    /// Held from deciding an event to sending it, so threads cannot reorder events.
    order: Mutex<()>,
    inotify: Option<Arc<Inotify>>,
    watches: Mutex<HashMap<WatchDescriptor, String>>,
    watching: AtomicBool,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("subscribers", &self.tx.receiver_count()).finish()
    }
}

impl Events {
    /// Starts from what the stores say, so a restarted daemon does not announce old news.
    pub fn new(containers: &ContainerStore, sandboxes: &SandboxStore) -> Events {
        let inotify = match Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC) {
            Ok(i) => Some(Arc::new(i)),
            Err(e) => {
                tracing::warn!(error = %e, "inotify unavailable: container exits are noticed by polling every second");
                None
            }
        };
        let events = Events {
            tx: broadcast::channel(CAPACITY).0,
            sent: Mutex::default(),
            order: Mutex::default(),
            inotify,
            watches: Mutex::default(),
            watching: AtomicBool::new(false),
        };
        for s in sandboxes.all() {
            let ready = crate::sandbox::status::cri_state(&s.record()) == v1::PodSandboxState::SandboxReady;
            lock(&events.sent).insert(s.id.clone(), if ready { Kind::ContainerStartedEvent } else { Kind::ContainerStoppedEvent });
        }
        for c in containers.all() {
            let kind = match c.record.runtime_status().map(|s| s.phase) {
                Some(ContainerPhase::Created) | None => Kind::ContainerCreatedEvent,
                Some(ContainerPhase::Running) => Kind::ContainerStartedEvent,
                Some(ContainerPhase::Exited) => Kind::ContainerStoppedEvent,
            };
            lock(&events.sent).insert(c.record.id.clone(), kind);
            if kind != Kind::ContainerStoppedEvent {
                events.watch(&c.record.id, &c.record.dir);
            }
        }
        events
    }

    /// Watches a container's directory for new status records.
    fn watch(&self, id: &str, dir: &Path) {
        let Some(inotify) = &self.inotify else { return };
        match inotify.add_watch(dir, AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CLOSE_WRITE) {
            Ok(wd) => {
                lock(&self.watches).insert(wd, id.to_string());
            }
            Err(e) => tracing::warn!(container_id = %id, error = %e, "cannot watch the container's status; its exit is only seen on the next lifecycle call"),
        }
    }

    /// The events to send to move `id` to `kind`: nothing if it is there already (or, for
    /// a deletion, was never announced).
    fn advance(&self, id: &str, kind: Kind, started: bool) -> Vec<Kind> {
        let mut sent = lock(&self.sent);
        let last = sent.get(id).copied();
        if last.is_some_and(|l| l as i32 >= kind as i32) || (last.is_none() && kind == Kind::ContainerDeletedEvent) {
            return Vec::new();
        }
        let mut out = Vec::new();
        if kind == Kind::ContainerStoppedEvent && last == Some(Kind::ContainerCreatedEvent) && started {
            out.push(Kind::ContainerStartedEvent);
        }
        out.push(kind);
        if kind == Kind::ContainerDeletedEvent {
            sent.remove(id);
        } else {
            sent.insert(id.to_string(), kind);
        }
        out
    }
}

impl Runtime {
    /// A new subscriber's receiver. The first subscription starts the exit watcher (it needs
    /// the runtime shared).
    pub fn subscribe_events(self: &Arc<Self>) -> broadcast::Receiver<v1::ContainerEventResponse> {
        let rx = self.events.tx.subscribe();
        if !self.events.watching.swap(true, Ordering::SeqCst) {
            let weak = Arc::downgrade(self);
            match self.events.inotify.clone() {
                Some(inotify) => {
                    tokio::spawn(watch_exits(weak, inotify));
                }
                None => {
                    tokio::spawn(poll_exits(weak));
                }
            }
        }
        rx
    }

    /// Reports a container lifecycle step of container `id` in pod `pod_id`.
    pub(crate) fn container_event(&self, pod_id: &str, id: &str, kind: Kind) {
        let c = self.containers.get(id);
        if kind == Kind::ContainerCreatedEvent
            && let Some(c) = &c
        {
            self.events.watch(id, &c.record.dir);
        }
        if kind == Kind::ContainerDeletedEvent {
            self.stats.forget(id, c.as_ref().map(|c| c.record.cgroup.as_path()));
            lock(&self.events.watches).retain(|_, v| v != id);
        }
        let started = c.as_ref().and_then(|c| c.record.runtime_status()).is_some_and(|s| s.started_at > 0);
        let _order = lock(&self.events.order);
        for kind in self.events.advance(id, kind, started) {
            self.send(pod_id, id, kind, None);
        }
    }

    /// Reports a sandbox lifecycle step; RunPodSandbox's success is CREATED then STARTED.
    pub(crate) fn sandbox_event(&self, id: &str, kind: Kind) {
        let kinds: &[Kind] = match kind {
            Kind::ContainerCreatedEvent => &[Kind::ContainerCreatedEvent, Kind::ContainerStartedEvent],
            _ => &[kind],
        };
        let _order = lock(&self.events.order);
        for &kind in kinds {
            for kind in self.events.advance(id, kind, true) {
                self.send(id, id, kind, None);
            }
        }
    }

    /// The pod's status as the events carry it.
    fn pod_status(&self, id: &str) -> Option<v1::PodSandboxStatus> {
        self.pod_sandbox_status(id, false).ok().and_then(|r| r.status)
    }

    /// What the DELETED event of a sandbox needs, taken before RemovePodSandbox: kubelet
    /// wants the removed pod's status in it.
    pub(crate) fn sandbox_snapshot(&self, id: &str) -> SandboxSnapshot {
        let cgroup = self.sandboxes.get(id).map(|s| s.record().cgroups.parent);
        SandboxSnapshot { status: self.pod_status(id), cgroup }
    }

    /// Reports the removal of a sandbox whose snapshot was taken before.
    pub(crate) fn sandbox_deleted(&self, id: &str, snapshot: SandboxSnapshot) {
        self.stats.forget(&super::stats::pod_key(id), snapshot.cgroup.as_deref());
        let _order = lock(&self.events.order);
        for kind in self.events.advance(id, Kind::ContainerDeletedEvent, true) {
            self.send(id, id, kind, snapshot.status.clone());
        }
    }

    fn send(&self, pod_id: &str, id: &str, kind: Kind, pod_status: Option<v1::PodSandboxStatus>) {
        tracing::debug!(pod_id, container_id = id, ?kind, "container event");
        if self.events.tx.receiver_count() == 0 {
            return;
        }
        let mut containers: Vec<_> = self.containers.of_pod(pod_id);
        containers.sort_by_key(|c| c.record.created_at);
        let event = v1::ContainerEventResponse {
            container_id: id.to_string(),
            container_event_type: kind as i32,
            created_at: crate::id::now_nanos(),
            pod_sandbox_status: pod_status.or_else(|| self.pod_status(pod_id)),
            containers_statuses: containers
                .iter()
                .filter_map(|c| self.container_status(&c.record.id, false).ok().and_then(|r| r.status))
                .collect(),
        };
        // Err only when the last subscriber left in the meantime.
        let _ = self.events.tx.send(event);
    }

    /// A container's status record changed: report an exit (or a start) it shows.
    pub(crate) fn status_changed(&self, id: &str) {
        let Some(c) = self.containers.get(id) else { return };
        let kind = match c.record.runtime_status().map(|s| s.phase) {
            Some(ContainerPhase::Exited) => Kind::ContainerStoppedEvent,
            Some(ContainerPhase::Running) => Kind::ContainerStartedEvent,
            _ => return,
        };
        self.container_event(&c.record.pod_id, id, kind);
    }

    /// Looks at every container (after an inotify overflow, or without inotify).
    fn rescan(&self) {
        for c in self.containers.all() {
            self.status_changed(&c.record.id);
        }
    }
}

/// A removed sandbox as its DELETED event reports it.
pub(crate) struct SandboxSnapshot {
    status: Option<v1::PodSandboxStatus>,
    cgroup: Option<std::path::PathBuf>,
}

/// The inotify descriptor, for tokio's readiness.
struct Fd(Arc<Inotify>);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

async fn watch_exits(runtime: Weak<Runtime>, inotify: Arc<Inotify>) {
    // Safety: `Fd` holds the inotify instance (and so its descriptor) for as long as the
    // AsyncFd lives, and always names that one descriptor.
    let registered = unsafe { tokio::io::unix::AsyncFd::register_with_interest(Fd(inotify), tokio::io::Interest::READABLE) };
    let fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            tracing::error!(error = %e, "cannot wait on inotify; polling container status instead");
            return poll_exits(runtime).await;
        }
    };
    loop {
        let Ok(mut ready) = fd.readable().await else { return };
        let events = match ready.get_inner().0.read_events() {
            Ok(events) => events,
            Err(nix::Error::EAGAIN) => {
                ready.clear_ready();
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "reading inotify failed; polling container status instead");
                return poll_exits(runtime).await;
            }
        };
        let Some(rt) = runtime.upgrade() else { return };
        for event in events {
            if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                rt.rescan();
            } else if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                lock(&rt.events.watches).remove(&event.wd);
            } else if event.name.as_deref().is_some_and(|n| n == STATUS_FILE) {
                let id = lock(&rt.events.watches).get(&event.wd).cloned();
                if let Some(id) = id {
                    rt.status_changed(&id);
                }
            }
        }
    }
}

async fn poll_exits(runtime: Weak<Runtime>) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let Some(rt) = runtime.upgrade() else { return };
        rt.rescan();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> Events {
        Events {
            tx: broadcast::channel(4).0,
            sent: Mutex::default(),
            order: Mutex::default(),
            inotify: None,
            watches: Mutex::default(),
            watching: AtomicBool::new(false),
        }
    }

    #[test]
    fn events_only_move_forward() {
        let e = events();
        assert!(e.advance("c", Kind::ContainerDeletedEvent, false).is_empty(), "never announced");
        assert_eq!(e.advance("c", Kind::ContainerCreatedEvent, false), vec![Kind::ContainerCreatedEvent]);
        assert!(e.advance("c", Kind::ContainerCreatedEvent, false).is_empty());
        // Exited before STARTED went out: STARTED first.
        assert_eq!(e.advance("c", Kind::ContainerStoppedEvent, true), vec![Kind::ContainerStartedEvent, Kind::ContainerStoppedEvent]);
        assert!(e.advance("c", Kind::ContainerStartedEvent, true).is_empty(), "no going back");
        assert!(e.advance("c", Kind::ContainerStoppedEvent, true).is_empty(), "StopContainer and the watcher: once");
        assert_eq!(e.advance("c", Kind::ContainerDeletedEvent, true), vec![Kind::ContainerDeletedEvent]);
        assert!(e.advance("c", Kind::ContainerDeletedEvent, true).is_empty());
        // A container stopped before it was started has no STARTED.
        e.advance("d", Kind::ContainerCreatedEvent, false);
        assert_eq!(e.advance("d", Kind::ContainerStoppedEvent, false), vec![Kind::ContainerStoppedEvent]);
    }

    #[tokio::test]
    async fn slow_subscribers_lose_the_oldest_and_never_block() {
        let e = events();
        let mut rx = e.tx.subscribe();
        for i in 0..10 {
            let _ = e.tx.send(v1::ContainerEventResponse { container_id: i.to_string(), ..Default::default() });
        }
        assert!(matches!(rx.recv().await, Err(broadcast::error::RecvError::Lagged(6))));
        assert_eq!(rx.recv().await.unwrap().container_id, "6");
    }
}
