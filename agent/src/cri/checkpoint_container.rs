//! `CheckpointContainer`: not supported. Checkpointing needs CRIU, and even where CRIU is
//! installed capstan has no checkpoint path through libcontainer yet; the answer says which
//! of the two stops it.

use std::path::Path;

use cri_proto::v1::{CheckpointContainerRequest, CheckpointContainerResponse};
use tonic::Status;

use super::Cri;

impl Cri {
    pub(super) async fn checkpoint_container(&self, req: CheckpointContainerRequest) -> Result<CheckpointContainerResponse, Status> {
        let reason = match find_criu() {
            None => "CRIU is not installed on this node (no `criu` in PATH)".to_string(),
            Some(criu) => format!("capstan does not drive CRIU ({}) yet", criu.display()),
        };
        Err(Status::unimplemented(format!("CheckpointContainer of {:?} is not supported: {reason}", req.container_id)))
    }
}

fn find_criu() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("criu")).find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
