//! The second half of a container's removal. [`ContainerStore::trash`] takes a container out
//! of sight in one rename; what is left (its libcontainer state and cgroup, its rootfs mount,
//! its directory) goes here, in three idempotent steps ([`finish`]):
//!
//! 1. the pod's monitor deletes the container (libcontainer state and cgroup); without a
//!    live monitor, its cgroup is killed and removed directly;
//! 2. the rootfs is unmounted (now under the trash) and the image's snapshots released;
//! 3. the directory, record included, is deleted.
//!
//! RemoveContainer answers once the container is in the trash and leaves the steps to a task
//! registered under its pod ([`PendingRemovals`]), the way containerd answers after deleting
//! metadata and leaves snapshots to its garbage collector. The same steps serve the callers
//! that need the container gone before they go on (a failed CreateContainer, RemovePodSandbox,
//! start-up recovery). Who depends on a removal being finished waits for it:
//!
//! - StopPodSandbox waits for step 1 of its pod's tasks before it shuts the monitor down
//!   (step 1 talks to the monitor); the unmount and the deletion go on meanwhile;
//! - RemovePodSandbox finishes whatever its pod still has in the trash (a task that failed)
//!   before it removes the pod's cgroup, which can only go after its children;
//! - daemon shutdown gives the tasks a few seconds;
//! - start-up finishes every entry a crash left in the trash, before the first call is
//!   served. The record moved with the directory, so an entry says all the steps need.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cri_proto::monitor::Request;
use cri_proto::v1::ContainerEventType;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::store::{Container, Trashed};
use crate::image::ImageStore;
use crate::monitor::client;
use crate::sandbox::SandboxRecord;
use crate::sandbox::store::lock;
use crate::{Error, Result, Runtime};

/// The cleanup tasks RemoveContainer left running, by pod.
#[derive(Debug, Default)]
pub struct PendingRemovals {
    tasks: Mutex<HashMap<String, Vec<Pending>>>,
}

/// One cleanup task, and whether it is past step 1 (done with the monitor).
#[derive(Debug)]
struct Pending {
    task: JoinHandle<()>,
    monitor_done: watch::Receiver<bool>,
}

impl PendingRemovals {
    fn add(&self, pod_id: &str, pending: Pending) {
        let mut tasks = lock(&self.tasks);
        let pod = tasks.entry(pod_id.to_string()).or_default();
        // A long-lived pod restarting containers must not pile up finished handles.
        pod.retain(|p| !p.task.is_finished());
        pod.push(pending);
    }

    fn take(&self, pod_id: &str) -> Vec<JoinHandle<()>> {
        lock(&self.tasks).remove(pod_id).unwrap_or_default().into_iter().map(|p| p.task).collect()
    }

    fn monitor_steps(&self, pod_id: &str) -> Vec<watch::Receiver<bool>> {
        lock(&self.tasks).get(pod_id).map(|p| p.iter().map(|p| p.monitor_done.clone()).collect()).unwrap_or_default()
    }

    fn take_all(&self) -> Vec<JoinHandle<()>> {
        lock(&self.tasks).drain().flat_map(|(_, tasks)| tasks).map(|p| p.task).collect()
    }
}

impl Runtime {
    /// Takes `c` out of sight (directory into the trash, record and name dropped) and
    /// reports it deleted. The caller holds its lock and it does not run. `None` when a
    /// concurrent removal took it first.
    pub(crate) fn trash_container(&self, c: &Arc<Container>) -> Result<Option<Trashed>> {
        let Some(trashed) = self.containers.trash(c)? else { return Ok(None) };
        crate::crashpoint::hit("remove_container:after_trash");
        self.container_event(&c.record.pod_id, &c.record.id, ContainerEventType::ContainerDeletedEvent);
        Ok(Some(trashed))
    }

    /// Deletes everything of a container before returning; the caller holds its lock and it
    /// is not running.
    pub(crate) async fn forget_container(&self, c: &Arc<Container>) -> Result<()> {
        match self.trash_container(c)? {
            Some(trashed) => finish(self.images().clone(), self.pod_record(&trashed), trashed, None).await,
            None => Ok(()),
        }
    }

    /// Finishes the removal of `trashed` in a task registered under its pod. The caller
    /// holds the pod's lock shared, so whoever takes it exclusively finds the task.
    pub(crate) fn finish_removal_later(&self, trashed: Trashed) {
        let pod_id = trashed.record.pod_id.clone();
        // Its own root span: the task outlives the call that started it.
        let span = tracing::info_span!(parent: None, "remove_container_cleanup", container_id = %trashed.record.id, pod_id = %pod_id);
        let (monitor_done, monitor_done_rx) = watch::channel(false);
        let work = finish(self.images().clone(), self.pod_record(&trashed), trashed, Some(monitor_done));
        let task = tokio::spawn(
            async move {
                match work.await {
                    Ok(()) => tracing::debug!("container cleanup finished"),
                    // Left in the trash: RemovePodSandbox or the next start-up retries it.
                    Err(e) => tracing::warn!(error = %e, "container cleanup failed; retried when its pod is removed"),
                }
            }
            .instrument(span),
        );
        self.removals.add(&pod_id, Pending { task, monitor_done: monitor_done_rx });
    }

    /// Waits until the cleanup tasks of `pod_id`'s removed containers are done with the
    /// monitor (step 1); the caller holds the pod's lock exclusively, so no new one starts
    /// meanwhile. The tasks stay registered: RemovePodSandbox waits for their end.
    pub(crate) async fn wait_monitor_steps(&self, pod_id: &str) {
        for mut done in self.removals.monitor_steps(pod_id) {
            // An error means the task ended (or failed) without saying so: nothing to wait for.
            let _ = done.wait_for(|d| *d).await;
        }
    }

    /// Waits for the cleanup tasks of `pod_id`'s removed containers; the caller holds the
    /// pod's lock exclusively, so no new one starts meanwhile.
    pub(crate) async fn wait_removals(&self, pod_id: &str) {
        for task in self.removals.take(pod_id) {
            if let Err(e) = task.await {
                tracing::error!(pod_id, error = %e, "container cleanup task died");
            }
        }
    }

    /// Waits for every cleanup task, `limit` at most (daemon shutdown). What is not done
    /// by then is finished at the next start.
    pub async fn wait_all_removals(&self, limit: Duration) {
        let tasks = self.removals.take_all();
        if tasks.is_empty() {
            return;
        }
        let count = tasks.len();
        let all = async {
            for task in tasks {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::warn!(count, "container cleanups still running at shutdown; the next start finishes them");
        }
    }

    /// Finishes what `pod_id` still has in the trash (cleanups that failed); the caller holds
    /// the pod's lock exclusively and has waited for its tasks.
    pub(crate) async fn finish_trash_of(&self, pod_id: &str) -> Result<()> {
        let mut first_error = None;
        for (dir, record) in self.containers.trashed() {
            let Some(record) = record.filter(|r| r.pod_id == pod_id) else { continue };
            let trashed = Trashed { record, dir };
            tracing::info!(container_id = %trashed.record.id, pod_id, "finishing the removal of a container");
            if let Err(e) = finish(self.images().clone(), self.pod_record(&trashed), trashed, None).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Start-up: finishes every removal a crash (or a failed cleanup) left in the trash.
    pub(crate) async fn sweep_trash(&self) {
        for (dir, record) in self.containers.trashed() {
            let Some(record) = record else {
                tracing::warn!(path = %dir.display(), "removing a trash entry without a readable record");
                if let Err(e) = blocking(move || crate::mounts::remove_dir_all(&dir)).await {
                    tracing::error!(error = %e, "cannot remove a trash entry");
                }
                continue;
            };
            let trashed = Trashed { record, dir };
            let (id, pod_id) = (trashed.record.id.clone(), trashed.record.pod_id.clone());
            tracing::info!(container_id = %id, pod_id = %pod_id, "finishing the removal of a container the daemon was removing when it stopped");
            if let Err(e) = finish(self.images().clone(), self.pod_record(&trashed), trashed, None).await {
                tracing::error!(container_id = %id, pod_id = %pod_id, error = %e, "cannot finish removing a container; retried when its pod is removed");
            }
        }
    }

    fn pod_record(&self, trashed: &Trashed) -> Option<SandboxRecord> {
        self.sandboxes.get(&trashed.record.pod_id).map(|s| s.record())
    }
}

/// The removal steps (see the module docs); each is idempotent, so an entry interrupted
/// anywhere is finished by running them again. `pod` is the container's pod, if it has one;
/// `monitor_done` is told when step 1 is over.
async fn finish(images: ImageStore, pod: Option<SandboxRecord>, trashed: Trashed, monitor_done: Option<watch::Sender<bool>>) -> Result<()> {
    let Trashed { record, dir } = trashed;
    match pod.filter(SandboxRecord::monitor_alive) {
        // The monitor's libcontainer state names no path under the container's old
        // directory: delete needs only its own state dir.
        Some(pod) => {
            client::call(&pod.pod_dir, &Request::Remove { id: record.id.clone() }, client::CALL_TIMEOUT).await?;
        }
        None => {
            let cgroup = record.cgroup.clone();
            blocking(move || {
                crate::cgroups::kill_and_remove(&cgroup);
                Ok(())
            })
            .await?;
        }
    }
    crate::crashpoint::hit("remove_container:after_monitor_remove");
    if let Some(done) = monitor_done {
        let _ = done.send(true);
    }
    let original: PathBuf = record.dir;
    blocking(move || {
        images.unmount_moved_rootfs(&original, &dir)?;
        crate::crashpoint::hit("remove_container:after_unmount");
        crate::mounts::remove_dir_all(&dir)?;
        crate::crashpoint::hit("remove_container:after_dir_removed");
        Ok(())
    })
    .await
}

async fn blocking(work: impl FnOnce() -> Result<()> + Send + 'static) -> Result<()> {
    tokio::task::spawn_blocking(work).await.map_err(|e| Error::Internal(format!("cleanup task failed: {e}")))?
}
