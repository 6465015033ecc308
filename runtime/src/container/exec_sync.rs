//! ExecSync: run a command in a running container and return its output and exit code
//! (kubelet's exec probes, `crictl exec -s`). The pod's monitor runs the process; the
//! timeout is enforced there too, so it holds even if this call is abandoned.

use std::path::Path;
use std::time::Duration;

use cri_proto::monitor::frame::Frame;
use cri_proto::monitor::{ExecProcess, Request, SessionEnd};

use tracing::Instrument;

use crate::monitor::client;
use crate::{Error, Result, Runtime};

/// Output kept per stream; the rest is read and dropped (a probe has no use for more).
pub const MAX_OUTPUT: usize = 16 << 20;

/// What ExecSync returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

/// How long past its own timeout the monitor may take to report the kill.
const GRACE: Duration = Duration::from_secs(10);

impl Runtime {
    /// Runs `cmd` in the container; a zero `timeout` means none. A command that outlives
    /// the timeout is killed (with its process group) and the call fails with
    /// `DeadlineExceeded`.
    #[tracing::instrument(name = "exec_sync", skip(self, cmd), fields(container_id = %container_id))]
    pub async fn exec_sync(&self, container_id: &str, cmd: Vec<String>, timeout: Duration) -> Result<ExecOutput> {
        if cmd.first().is_none_or(|c| c.is_empty()) {
            return Err(Error::InvalidArgument("ExecSync needs a command".into()));
        }
        let (c, pod) = self.running_container(container_id)?;
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let request = Request::Exec(ExecProcess {
            id: c.record.id.clone(),
            args: cmd.clone(),
            tty: false,
            stdin: false,
            stdout: true,
            stderr: true,
            timeout_ms: (timeout_ms > 0).then_some(timeout_ms),
        });
        let span = tracing::debug_span!("exec_sync", container_id = %c.record.id, pod_id = %pod.id);
        let (output, end) = collect(&pod.pod_dir, &request, &cmd, timeout).instrument(span).await?;
        match end {
            SessionEnd::Exited { exit_code } => Ok(ExecOutput { exit_code, ..output }),
            SessionEnd::TimedOut => Err(Error::DeadlineExceeded(format!(
                "command {cmd:?} timed out after {} s and was killed",
                timeout.as_secs_f64()
            ))),
            SessionEnd::Failed { message } => Err(Error::Internal(format!("exec of {cmd:?} failed: {message}"))),
        }
    }
}

/// Runs the exec session to its end, keeping its output.
async fn collect(pod_dir: &Path, request: &Request, cmd: &[String], timeout: Duration) -> Result<(ExecOutput, SessionEnd)> {
    let (mut reader, writer) = client::open_session(pod_dir, request).await?;
    let mut output = ExecOutput::default();
    let frames = async {
        loop {
            match client::read_frame(&mut reader).await? {
                Some(Frame::Stdout(data)) => append_capped(&mut output.stdout, &data),
                Some(Frame::Stderr(data)) => append_capped(&mut output.stderr, &data),
                Some(Frame::End(end)) => return Ok(end),
                Some(_) => {}
                None => return Err(Error::Unavailable("the pod monitor closed the exec session".into())),
            }
        }
    };
    let end = if timeout.is_zero() {
        frames.await
    } else {
        tokio::time::timeout(timeout + GRACE, frames)
            .await
            .map_err(|_| Error::DeadlineExceeded(format!("the pod monitor did not end {cmd:?} after {timeout:?}")))?
    };
    // Only now: closing the connection earlier would kill the command.
    drop(writer);
    Ok((output, end?))
}

fn append_capped(buf: &mut Vec<u8>, data: &[u8]) {
    let room = MAX_OUTPUT.saturating_sub(buf.len());
    buf.extend_from_slice(&data[..data.len().min(room)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_capped_per_stream() {
        let mut buf = vec![0u8; MAX_OUTPUT - 3];
        append_capped(&mut buf, b"abcdef");
        assert_eq!(buf.len(), MAX_OUTPUT);
        assert_eq!(&buf[MAX_OUTPUT - 3..], b"abc");
        append_capped(&mut buf, b"more");
        assert_eq!(buf.len(), MAX_OUTPUT);
    }
}
