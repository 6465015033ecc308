//! The one place where runtime errors become gRPC status codes.

use capstan_runtime::Error;
use tonic::{Code, Status};

pub fn to_status(error: Error) -> Status {
    let code = match &error {
        Error::InvalidArgument(_) => Code::InvalidArgument,
        Error::NotFound { .. } => Code::NotFound,
        Error::AlreadyExists(_) => Code::AlreadyExists,
        Error::FailedPrecondition(_) => Code::FailedPrecondition,
        Error::Unauthenticated(_) => Code::Unauthenticated,
        Error::Unavailable(_) => Code::Unavailable,
        Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
        Error::Io { source, .. } if out_of_space(source) => Code::ResourceExhausted,
        Error::Io { .. } | Error::Internal(_) => Code::Internal,
    };
    if code == Code::Internal {
        tracing::error!(error = %error, "internal error");
    }
    Status::new(code, error.to_string())
}

/// A full disk or an exhausted quota: the node's condition, not a bug of ours.
fn out_of_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(nix::libc::ENOSPC | nix::libc::EDQUOT)) || e.kind() == std::io::ErrorKind::StorageFull
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages() {
        let s = to_status(Error::NotFound { kind: "pod sandbox", id: "abc".into() });
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(s.message(), "pod sandbox \"abc\" not found");
        assert_eq!(to_status(Error::InvalidArgument("x".into())).code(), Code::InvalidArgument);
        assert_eq!(to_status(Error::Unauthenticated("x".into())).code(), Code::Unauthenticated);
        let full = Error::Io { context: "cannot write", path: "/x".into(), source: std::io::Error::from_raw_os_error(nix::libc::ENOSPC) };
        let s = to_status(full);
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(s.message().contains("No space left on device") && s.message().contains("/x"), "{}", s.message());
    }
}
