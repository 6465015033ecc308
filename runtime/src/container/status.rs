//! ContainerStatus, and the one place that turns the monitor's record plus the monitor's
//! liveness into a CRI state.

use std::collections::HashMap;

use cri_proto::monitor::ContainerPhase;
use cri_proto::v1;

use super::store::Container;
use crate::{Result, Runtime};

/// The identity the container's process runs as, kept beside the record when the spec is
/// built: kubelet checks it against the pod's runAsUser/supplemental groups policy.
const USER_FILE: &str = "user.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct RunAs {
    uid: i64,
    gid: i64,
    supplemental_groups: Vec<i64>,
}

pub(super) fn save_user(dir: &std::path::Path, spec: &oci_spec::runtime::Spec) -> Result<()> {
    let Some(user) = spec.process().as_ref().map(|p| p.user()) else { return Ok(()) };
    let run_as = RunAs {
        uid: i64::from(user.uid()),
        gid: i64::from(user.gid()),
        supplemental_groups: user.additional_gids().iter().flatten().map(|g| i64::from(*g)).collect(),
    };
    let path = dir.join(USER_FILE);
    crate::atomic::replace_json(&path, &run_as).map_err(crate::Error::io("cannot write", &path))
}

/// `None` for containers created before the file existed (or when it cannot be read).
fn load_user(dir: &std::path::Path) -> Option<v1::ContainerUser> {
    let text = std::fs::read(dir.join(USER_FILE)).ok()?;
    let run_as: RunAs = serde_json::from_slice(&text).ok()?;
    Some(v1::ContainerUser {
        linux: Some(v1::LinuxContainerUser { uid: run_as.uid, gid: run_as.gid, supplemental_groups: run_as.supplemental_groups }),
    })
}

/// Reason given when the pod's monitor died before the container's exit was recorded.
pub const MONITOR_LOST: &str = "MonitorLost";

/// A container's state as CRI reports it.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub state: i32,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub pid: Option<i32>,
}

impl Runtime {
    pub fn observe(&self, c: &Container) -> Observed {
        let Some(s) = c.record.runtime_status() else {
            // Being created (or a create that crashed and awaits cleanup).
            return Observed { state: v1::ContainerState::ContainerUnknown as i32, ..Default::default() };
        };
        // A container never started has nothing the monitor could have lost.
        let launched = super::store::launched(Some(&s));
        let mut o = Observed {
            state: match s.phase {
                ContainerPhase::Created => v1::ContainerState::ContainerCreated,
                ContainerPhase::Running => v1::ContainerState::ContainerRunning,
                ContainerPhase::Exited => v1::ContainerState::ContainerExited,
            } as i32,
            started_at: s.started_at,
            finished_at: s.finished_at,
            exit_code: s.exit_code,
            reason: s.reason,
            message: s.message,
            pid: s.pid.filter(|_| s.phase != ContainerPhase::Exited),
        };
        let pod = self.sandboxes.get(&c.record.pod_id).map(|p| p.record());
        let monitor = pod.as_ref().and_then(|p| p.monitor.clone());
        if launched && s.phase != ContainerPhase::Exited && !monitor.as_ref().is_some_and(crate::monitor::is_alive) {
            o.state = v1::ContainerState::ContainerExited as i32;
            o.exit_code = 255;
            o.finished_at = o.finished_at.max(o.started_at);
            o.reason = MONITOR_LOST.into();
            o.message = format!(
                "the pod's capstan-monitor{} is gone; the container's real exit status is unknown",
                monitor.map(|m| format!(" (pid {})", m.pid)).unwrap_or_default()
            );
            o.pid = None;
        }
        o
    }

    pub fn container_status(&self, id: &str, verbose: bool) -> Result<v1::ContainerStatusResponse> {
        let c = self.containers.find(id)?;
        let r = &c.record;
        let o = self.observe(&c);
        let mut info = HashMap::new();
        if verbose {
            let detail = serde_json::json!({ "pid": o.pid, "dir": r.dir, "cgroup": r.cgroup, "stopSignal": r.stop_signal });
            info.insert("info".to_string(), detail.to_string());
        }
        let status = v1::ContainerStatus {
            id: r.id.clone(),
            metadata: Some(r.metadata()),
            state: o.state,
            created_at: r.created_at,
            started_at: o.started_at,
            finished_at: o.finished_at,
            exit_code: o.exit_code,
            image: Some(v1::ImageSpec { image: r.image.clone(), ..Default::default() }),
            image_ref: r.image_ref.clone(),
            reason: o.reason,
            message: o.message,
            labels: r.config.labels.clone(),
            annotations: r.config.annotations.clone(),
            mounts: r.config.mounts.clone(),
            log_path: r.log_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            resources: super::update::status_resources(&c),
            image_id: r.image_id.clone(),
            user: c.user.get().cloned().or_else(|| {
                let user = load_user(&r.dir)?;
                Some(c.user.get_or_init(|| user).clone())
            }),
        };
        Ok(v1::ContainerStatusResponse { status: Some(status), info })
    }
}
