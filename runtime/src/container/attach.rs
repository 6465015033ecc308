//! Attach sessions for the streaming server (`kubectl attach`, `crictl attach`): the
//! container's own output as it happens (it is logged as well) and, for containers created
//! with `stdin`, its stdin.

use cri_proto::monitor::{AttachStreams, Request};

use crate::monitor::{client, session};
use crate::streaming::{Session, StreamOptions};
use crate::{Result, Runtime};

impl Runtime {
    /// Attaches to the container's stdio. The terminal setting is the container's own, and
    /// stdin is only given when the container has one. Dropping the session detaches; the
    /// container goes on.
    #[tracing::instrument(name = "attach", skip(self), fields(container_id = %container_id))]
    pub async fn attach_session(&self, container_id: &str, options: StreamOptions) -> Result<Session> {
        let (c, pod) = self.running_container(container_id)?;
        let config = &c.record.config;
        let options = StreamOptions { tty: config.tty, stdin: options.stdin && config.stdin, ..options };
        tracing::info!(container_id = %c.record.id, pod_id = %pod.id, ?options, "attach session");
        let request = Request::Attach(AttachStreams {
            id: c.record.id.clone(),
            tty: options.tty,
            stdin: options.stdin,
            stdout: options.stdout,
            stderr: options.stderr && !options.tty,
        });
        let (reader, writer) = client::open_session(&pod.pod_dir, &request).await?;
        Ok(session::start(reader, writer, options))
    }
}
