//! Exec sessions for the streaming server (`kubectl exec`, `crictl exec -it`): a process in
//! a running container, run by the pod's monitor, with the streams the client asked for.

use std::sync::Arc;

use cri_proto::monitor::{ExecProcess, Request};
use cri_proto::v1;

use super::store::Container;
use crate::monitor::{client, session};
use crate::sandbox::SandboxRecord;
use crate::streaming::{Session, StreamOptions};
use crate::{Error, Result, Runtime};

impl Runtime {
    /// Starts `cmd` in the container. Dropping the session's `end` before the process ended
    /// kills it (and its process group).
    #[tracing::instrument(name = "exec", skip(self, cmd), fields(container_id = %container_id))]
    pub async fn exec_session(&self, container_id: &str, cmd: Vec<String>, options: StreamOptions) -> Result<Session> {
        if cmd.first().is_none_or(|c| c.is_empty()) {
            return Err(Error::InvalidArgument("exec needs a command".into()));
        }
        let (c, pod) = self.running_container(container_id)?;
        tracing::info!(container_id = %c.record.id, pod_id = %pod.id, ?cmd, tty = options.tty, "exec session");
        let request = Request::Exec(ExecProcess {
            id: c.record.id.clone(),
            args: cmd,
            tty: options.tty,
            stdin: options.stdin,
            stdout: options.stdout,
            stderr: options.stderr && !options.tty,
            timeout_ms: None,
        });
        let (reader, writer) = client::open_session(&pod.pod_dir, &request).await?;
        Ok(session::start(reader, writer, options))
    }

    /// The container and its pod, if the container is running (and its monitor alive).
    pub(crate) fn running_container(&self, id: &str) -> Result<(Arc<Container>, SandboxRecord)> {
        let c = self.containers.find(id)?;
        if self.observe(&c).state != v1::ContainerState::ContainerRunning as i32 {
            return Err(Error::FailedPrecondition(format!("container {} is not running", c.record.id)));
        }
        let pod = self.sandboxes.find(&c.record.pod_id)?.record();
        Ok((c, pod))
    }
}
