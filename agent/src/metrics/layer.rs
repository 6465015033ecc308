//! A tower layer around the gRPC server that times every CRI call and counts its result.
//!
//! tonic sends a failed unary call as a "trailers-only" response: `grpc-status` is in the
//! response headers. A successful call's status comes later in the trailers, so a response
//! whose headers carry no `grpc-status` counts as `OK` (for GetContainerEvents that means
//! "the stream was opened").

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tower::{Layer, Service};

use super::SharedMetrics;

#[derive(Clone)]
pub struct RpcMetricsLayer {
    metrics: SharedMetrics,
}

impl RpcMetricsLayer {
    pub fn new(metrics: SharedMetrics) -> Self {
        RpcMetricsLayer { metrics }
    }
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics { inner, metrics: self.metrics.clone() }
    }
}

#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    metrics: SharedMetrics,
}

impl<S, B, R> Service<http::Request<B>> for RpcMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    R: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = method_name(request.uri().path());
        let started = Instant::now();
        let response = self.inner.call(request);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let response = response.await;
            let code = match &response {
                Ok(r) => r
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or("OK", code_name),
                // The transport failed before any gRPC status existed.
                Err(_) => "Unavailable",
            };
            metrics.observe_rpc(&method, code, started.elapsed());
            response
        })
    }
}

/// `/runtime.v1.RuntimeService/Version` → `RuntimeService/Version`.
fn method_name(path: &str) -> String {
    let path = path.trim_start_matches('/');
    match path.split_once('/') {
        Some((service, method)) => {
            let service = service.rsplit('.').next().unwrap_or(service);
            format!("{service}/{method}")
        }
        None => path.to_string(),
    }
}

fn code_name(code: i32) -> &'static str {
    match tonic::Code::from_i32(code) {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "Canceled",
        tonic::Code::Unknown => "Unknown",
        tonic::Code::InvalidArgument => "InvalidArgument",
        tonic::Code::DeadlineExceeded => "DeadlineExceeded",
        tonic::Code::NotFound => "NotFound",
        tonic::Code::AlreadyExists => "AlreadyExists",
        tonic::Code::PermissionDenied => "PermissionDenied",
        tonic::Code::ResourceExhausted => "ResourceExhausted",
        tonic::Code::FailedPrecondition => "FailedPrecondition",
        tonic::Code::Aborted => "Aborted",
        tonic::Code::OutOfRange => "OutOfRange",
        tonic::Code::Unimplemented => "Unimplemented",
        tonic::Code::Internal => "Internal",
        tonic::Code::Unavailable => "Unavailable",
        tonic::Code::DataLoss => "DataLoss",
        tonic::Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_drop_the_package() {
        assert_eq!(method_name("/runtime.v1.RuntimeService/Version"), "RuntimeService/Version");
        assert_eq!(method_name("/runtime.v1.ImageService/PullImage"), "ImageService/PullImage");
        assert_eq!(code_name(5), "NotFound");
        assert_eq!(code_name(99), "Unknown");
    }
}
