//! The crate's one error type. Callers (the agent's pod worker) retry setups the way kubelet
//! does, so every variant says what failed and where, for the operator reading the event.

use std::path::PathBuf;
use std::time::Duration;

use crate::host_path::{FileKind, HostPathType};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The volume's definition is unusable (bad name, relative path, bad option).
    #[error("{0}")]
    InvalidArgument(String),
    /// The feature is deliberately not implemented (see the volume type's docs).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A path the volume needs on the node does not exist.
    #[error("{path} does not exist")]
    NotFound { path: PathBuf },
    /// A hostPath's `type` check failed.
    #[error("hostPath {path}: type check failed: expected {expected}, found {found}")]
    HostPathType { path: PathBuf, expected: HostPathType, found: FileKind },
    /// A filesystem operation failed.
    #[error("{context} {path}: {source}")]
    Io { context: &'static str, path: PathBuf, source: std::io::Error },
    /// mount(2) failed.
    #[error("cannot mount {what} at {target}: {errno}")]
    Mount { what: String, target: PathBuf, errno: nix::Error },
    /// umount(2) failed.
    #[error("cannot unmount {target}: {errno}")]
    Unmount { target: PathBuf, errno: nix::Error },
    /// Something is still mounted inside a directory teardown would delete.
    #[error("{target} still has mounts inside it ({mounts}); not removing it")]
    Busy { target: PathBuf, mounts: String },
    /// A mount helper program (`mount.nfs`) is not installed.
    #[error("{helper} is missing: install the {package} package")]
    MissingHelper { helper: &'static str, package: &'static str },
    /// The `mount` command ran and failed.
    #[error("mount -t {fstype} {remote} at {target} failed ({status}): {output}")]
    MountCommand { fstype: &'static str, remote: String, target: PathBuf, status: String, output: String },
    /// The `mount` command did not finish in time and was killed.
    #[error(
        "mount -t {fstype} {remote} at {target} did not finish within {after:?}: the server is unreachable or not answering{output}"
    )]
    Timeout { fstype: &'static str, remote: String, target: PathBuf, after: Duration, output: String },
}

impl Error {
    /// Shorthand for wrapping an `io::Error` with what we were doing and to which path.
    pub fn io(context: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { context, path, source }
    }

    /// The OS error behind this error, if there is one (tests match `EROFS`, `ENOSPC`...).
    pub fn errno(&self) -> Option<nix::Error> {
        match self {
            Error::Io { source, .. } => source.raw_os_error().map(nix::Error::from_raw),
            Error::Mount { errno, .. } | Error::Unmount { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
