//! The runtime's one error type. Each variant says which gRPC code it becomes; the mapping
//! itself lives at the gRPC edge (`agent/src/cri/error.rs`).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is wrong (missing metadata, malformed reference, bad path).
    #[error("{0}")]
    InvalidArgument(String),
    /// The named object does not exist.
    #[error("{kind} {id:?} not found")]
    NotFound { kind: &'static str, id: String },
    /// An object with the same identity exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The object is in a state that does not allow the call.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A registry refused our credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// A remote (registry, plugin) could not be reached or answered with an error.
    #[error("{0}")]
    Unavailable(String),
    /// A call took longer than its deadline.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// A filesystem operation failed.
    #[error("{context} {path}: {source}")]
    Io { context: &'static str, path: PathBuf, source: std::io::Error },
    /// Anything else: a bug or an unexpected system state.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// Shorthand for wrapping an `io::Error` with what we were doing and to which path.
    pub fn io(context: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { context, path, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
