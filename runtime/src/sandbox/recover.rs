//! Start-up recovery after a crash: whatever a lifecycle call had begun but not finished
//! when the daemon died is undone before the first CRI call is served, so no client ever
//! sees it half-made. Kubelet never got an id for any of it, so nobody else would clean it.

use super::stop::Teardown;
use super::store::SandboxState;
use crate::Runtime;

impl Runtime {
    /// Finishes container removals left in the trash, unwinds pods still `Creating`,
    /// containers the monitor never created (no status file) or whose pod is gone, and
    /// removes record directories holding no record.
    pub async fn recover(&self) {
        // First what RemoveContainer had moved out of sight: it needs the pods' monitors.
        self.sweep_trash().await;
        for sandbox in self.sandboxes.all() {
            if sandbox.record().state != SandboxState::Creating {
                continue;
            }
            tracing::warn!(pod_id = %sandbox.id, "RunPodSandbox did not finish before the daemon stopped; undoing it");
            let _exclusive = sandbox.lock.write().await;
            if let Err(e) = self.destroy_sandbox(&sandbox, Teardown::BestEffort).await {
                tracing::error!(pod_id = %sandbox.id, error = %e, "cannot undo an unfinished RunPodSandbox");
            }
        }
        for c in self.containers.all() {
            let orphan = self.sandboxes.get(&c.record.pod_id).is_none();
            if c.record.runtime_status().is_some() && !orphan {
                continue;
            }
            tracing::warn!(container_id = %c.record.id, pod_id = %c.record.pod_id, orphan, "CreateContainer did not finish before the daemon stopped; undoing it");
            let _lock = c.lock.lock().await;
            if let Err(e) = self.forget_container(&c).await {
                tracing::error!(container_id = %c.record.id, error = %e, "cannot undo an unfinished CreateContainer");
            }
        }
        let (root, state) = (self.options().root_dir.clone(), self.options().state_dir.clone());
        let known: std::collections::HashSet<String> =
            self.sandboxes.all().iter().map(|s| s.id.clone()).chain(self.containers.all().iter().map(|c| c.record.id.clone())).collect();
        let swept = tokio::task::spawn_blocking(move || {
            // A crash between creating a directory and writing its record leaves the
            // directory alone; a pod dir in the state dir outlives no record.
            for dir in [root.join("pods"), root.join("containers"), state.join("pods")] {
                let Ok(entries) = std::fs::read_dir(&dir) else { continue };
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if known.contains(&name) || name == crate::container::store::TRASH_DIR {
                        continue;
                    }
                    tracing::warn!(path = %entry.path().display(), "removing a directory no record owns");
                    if let Err(e) = crate::mounts::remove_dir_all(&entry.path()) {
                        tracing::error!(path = %entry.path().display(), error = %e, "cannot remove");
                    }
                }
            }
        })
        .await;
        if let Err(e) = swept {
            tracing::error!(error = %e, "recovery sweep failed");
        }
    }
}
