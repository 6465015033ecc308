//! Serving and dialling gRPC over unix sockets, the transport kubelet and crictl use.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Strips an optional `unix://` scheme, so both `unix:///run/x.sock` and `/run/x.sock` work
/// the way crictl's `--runtime-endpoint` accepts them.
pub fn socket_path(endpoint: &str) -> PathBuf {
    PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint))
}

/// Opens a channel to a gRPC server listening on the unix socket at `path`.
///
/// The connection is made eagerly so a missing or dead socket is reported here, not on the
/// first call.
pub async fn connect(path: impl AsRef<Path>) -> Result<Channel, tonic::transport::Error> {
    let path = path.as_ref().to_path_buf();
    // The authority is ignored for unix sockets; tonic only needs a syntactically valid URI.
    Endpoint::from_static("http://capstan.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
}

/// Wraps a bound listener into the incoming-connection stream tonic's server consumes.
pub fn incoming(listener: UnixListener) -> UnixListenerStream {
    UnixListenerStream::new(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_path_accepts_both_forms() {
        assert_eq!(socket_path("unix:///run/capstan/capstan.sock"), PathBuf::from("/run/capstan/capstan.sock"));
        assert_eq!(socket_path("/tmp/a.sock"), PathBuf::from("/tmp/a.sock"));
    }
}
