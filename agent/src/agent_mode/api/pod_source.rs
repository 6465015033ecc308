//! Pod source 2: the pods the API server binds to this node (`fieldSelector
//! spec.nodeName=<node>`), kept in a [`PodStore`] by list + watch: a full list gives the
//! resourceVersion to watch from; each watch event updates the store; a watch that ends is
//! started again from the last version seen; `410 Gone` (the version was compacted away) or
//! any other failure makes a fresh list, after a back-off for failures. Every change wakes
//! the sync loop.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};

use super::{Backoff, sleep_or_stop, status_code};

/// Under the API server's limit for one watch (kube refuses more than 295 s).
const WATCH_TIMEOUT_SECS: u32 = 290;

/// The pods bound to this node as last seen, by uid.
pub struct PodStore {
    inner: Mutex<Inner>,
    changed: Arc<tokio::sync::Notify>,
}

#[derive(Default)]
struct Inner {
    pods: BTreeMap<String, Pod>,
    /// A full list has been seen: until then an absent pod means nothing.
    synced: bool,
}

/// The store's content at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub synced: bool,
    pub pods: Vec<Pod>,
}

impl PodStore {
    pub fn new(changed: Arc<tokio::sync::Notify>) -> PodStore {
        PodStore { inner: Mutex::new(Inner::default()), changed }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        Snapshot { synced: inner.synced, pods: inner.pods.values().cloned().collect() }
    }

    /// A full list replaces what was known: pods missing from it were deleted meanwhile.
    pub fn replace(&self, node: &str, pods: Vec<Pod>) {
        let mut inner = self.lock();
        inner.pods = pods.into_iter().filter(|p| bound_to(p, node)).filter_map(|p| Some((uid(&p)?, p))).collect();
        inner.synced = true;
        drop(inner);
        self.changed.notify_one();
    }

    /// An added or modified pod (one no longer bound here counts as deleted).
    pub fn upsert(&self, node: &str, pod: Pod) {
        let Some(uid) = uid(&pod) else { return };
        let mut inner = self.lock();
        if bound_to(&pod, node) {
            inner.pods.insert(uid, pod);
        } else {
            inner.pods.remove(&uid);
        }
        drop(inner);
        self.changed.notify_one();
    }

    pub fn remove(&self, pod: &Pod) {
        if let Some(uid) = uid(pod) {
            self.lock().pods.remove(&uid);
            self.changed.notify_one();
        }
    }
}

fn uid(pod: &Pod) -> Option<String> {
    let uid = pod.metadata.uid.clone().filter(|u| !u.is_empty());
    if uid.is_none() {
        tracing::warn!(pod = pod.metadata.name.as_deref().unwrap_or_default(), "pod without a uid from the API server; ignored");
    }
    uid
}

fn bound_to(pod: &Pod, node: &str) -> bool {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
}

fn version_of(pod: &Pod) -> Option<String> {
    pod.metadata.resource_version.clone().filter(|v| !v.is_empty())
}

/// Lists and watches until `stop`.
#[tracing::instrument(skip_all, fields(node = %node))]
pub async fn run(client: kube::Client, node: String, store: Arc<PodStore>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let pods: Api<Pod> = Api::all(client);
    let selector = format!("spec.nodeName={node}");
    let mut backoff = Backoff::default();
    'list: loop {
        let list = match super::bounded(pods.list(&ListParams::default().fields(&selector))).await {
            Ok(list) => list,
            Err(e) => {
                let wait = backoff.next();
                tracing::warn!(error = %e, retry_secs = wait.as_secs(), "cannot list this node's pods");
                if sleep_or_stop(wait, &mut stop).await {
                    return;
                }
                continue;
            }
        };
        let mut version = list.metadata.resource_version.clone().unwrap_or_default();
        tracing::info!(pods = list.items.len(), resource_version = %version, "listed the pods bound to this node");
        store.replace(&node, list.items);
        loop {
            let params = WatchParams::default().fields(&selector).timeout(WATCH_TIMEOUT_SECS);
            let stream = match super::bounded(pods.watch(&params, &version)).await {
                Ok(stream) => stream,
                Err(e) => {
                    if status_code(&e) != Some(410) {
                        let wait = backoff.next();
                        tracing::warn!(error = %e, retry_secs = wait.as_secs(), "cannot watch this node's pods; listing again");
                        if sleep_or_stop(wait, &mut stop).await {
                            return;
                        }
                    }
                    continue 'list;
                }
            };
            let mut stream = std::pin::pin!(stream);
            loop {
                // The server ends a watch after its timeout; one silent for longer is a
                // connection lost without a word, and is started again.
                let silence = std::time::Duration::from_secs(u64::from(WATCH_TIMEOUT_SECS) + 30);
                let event = tokio::select! {
                    event = tokio::time::timeout(silence, stream.next()) => match event {
                        Ok(event) => event,
                        Err(_) => {
                            tracing::warn!(silent_secs = silence.as_secs(), "the pod watch went silent; watching again");
                            break;
                        }
                    },
                    changed = stop.changed() => {
                        if changed.is_err() || *stop.borrow() {
                            return;
                        }
                        continue;
                    }
                };
                match event {
                    // The server ended this watch (its timeout): the next one goes on from here.
                    None => break,
                    Some(Ok(WatchEvent::Added(pod) | WatchEvent::Modified(pod))) => {
                        version = version_of(&pod).unwrap_or(version);
                        store.upsert(&node, pod);
                        backoff.reset();
                    }
                    Some(Ok(WatchEvent::Deleted(pod))) => {
                        version = version_of(&pod).unwrap_or(version);
                        store.remove(&pod);
                    }
                    Some(Ok(WatchEvent::Bookmark(b))) => version = b.metadata.resource_version,
                    Some(Ok(WatchEvent::Error(status))) if status.code == 410 => {
                        tracing::info!(resource_version = %version, "watch version expired (410 Gone); listing again");
                        continue 'list;
                    }
                    Some(Ok(WatchEvent::Error(status))) => {
                        let wait = backoff.next();
                        tracing::warn!(code = status.code, message = %status.message, retry_secs = wait.as_secs(), "watch error; listing again");
                        if sleep_or_stop(wait, &mut stop).await {
                            return;
                        }
                        continue 'list;
                    }
                    Some(Err(e)) => {
                        let wait = backoff.next();
                        tracing::warn!(error = %e, retry_secs = wait.as_secs(), "watch failed; listing again");
                        if sleep_or_stop(wait, &mut stop).await {
                            return;
                        }
                        continue 'list;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, uid: &str, node: &str) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name, "uid": uid}, "spec": {"nodeName": node, "containers": []}}))
            .unwrap()
    }

    #[test]
    fn the_store_follows_lists_and_events() {
        let store = PodStore::new(Arc::default());
        assert!(!store.snapshot().synced);
        store.replace("n", vec![pod("a", "1", "n"), pod("elsewhere", "2", "m"), pod("b", "3", "n")]);
        let names = |s: &PodStore| s.snapshot().pods.iter().map(|p| p.metadata.name.clone().unwrap()).collect::<Vec<_>>();
        assert!(store.snapshot().synced);
        assert_eq!(names(&store), ["a", "b"]);
        store.upsert("n", pod("c", "4", "n"));
        store.remove(&pod("a", "1", "n"));
        // Rebound elsewhere: gone from here.
        store.upsert("n", pod("b", "3", "m"));
        assert_eq!(names(&store), ["c"]);
        // A re-list drops what it does not name.
        store.replace("n", vec![pod("d", "5", "n")]);
        assert_eq!(names(&store), ["d"]);
    }
}
