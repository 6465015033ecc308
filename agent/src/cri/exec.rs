//! `Exec`: hand out a streaming-server URL for an interactive exec. The command runs when
//! the client connects, not now.

use capstan_runtime::streaming::StreamOptions;
use capstan_runtime::streaming::cache::StreamRequest;
use cri_proto::v1::{ExecRequest, ExecResponse};
use tonic::Status;

use super::Cri;

impl Cri {
    pub(super) async fn exec(&self, req: ExecRequest) -> Result<ExecResponse, Status> {
        if req.cmd.is_empty() {
            return Err(Status::invalid_argument("cmd must not be empty"));
        }
        let options = stream_options(req.tty, req.stdin, req.stdout, req.stderr)?;
        let container_id = self.running_container(&req.container_id)?;
        tracing::debug!(container_id, cmd = ?req.cmd, tty = req.tty, "exec URL requested");
        let url = self.streaming_url(StreamRequest::Exec { container_id, cmd: req.cmd, options })?;
        Ok(ExecResponse { url })
    }

    /// The full id of a running container (the request may carry a unique prefix).
    pub(super) fn running_container(&self, id: &str) -> Result<String, Status> {
        let status = self.runtime.container_status(id, false).map_err(super::to_status)?.status.unwrap_or_default();
        if status.state != cri_proto::v1::ContainerState::ContainerRunning as i32 {
            return Err(Status::failed_precondition(format!("container {} is not running", status.id)));
        }
        Ok(status.id)
    }
}

/// The stream checks Exec and Attach share (containerd's, which kubelet relies on).
pub(super) fn stream_options(tty: bool, stdin: bool, stdout: bool, stderr: bool) -> Result<StreamOptions, Status> {
    if !stdin && !stdout && !stderr {
        return Err(Status::invalid_argument("one of stdin, stdout, or stderr must be set"));
    }
    if tty && stderr {
        return Err(Status::invalid_argument("tty and stderr cannot both be true"));
    }
    Ok(StreamOptions { tty, stdin, stdout, stderr })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_option_rules() {
        assert_eq!(stream_options(false, false, false, false).unwrap_err().code(), tonic::Code::InvalidArgument);
        assert_eq!(stream_options(true, true, true, true).unwrap_err().code(), tonic::Code::InvalidArgument);
        assert_eq!(stream_options(true, true, true, false).unwrap(), StreamOptions { tty: true, stdin: true, stdout: true, stderr: false });
        assert!(stream_options(false, true, false, false).is_ok());
    }
}
