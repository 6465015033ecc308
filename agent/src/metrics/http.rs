//! The `/metrics` HTTP endpoint (Prometheus text format), on hyper.

use std::net::SocketAddr;
use std::sync::Arc;

use capstan_runtime::Runtime;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use super::SharedMetrics;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds `address` (so a bad address fails the daemon's start) and serves until `stop`
/// resolves.
pub async fn serve(
    address: SocketAddr,
    metrics: SharedMetrics,
    runtime: Arc<Runtime>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!(%address, "serving Prometheus metrics at /metrics");
    Ok(tokio::spawn(async move {
        tokio::pin!(stop);
        loop {
            let (stream, _) = tokio::select! {
                () = &mut stop => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics endpoint: accept failed");
                        continue;
                    }
                },
            };
            let metrics = metrics.clone();
            let runtime = runtime.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let metrics = metrics.clone();
                    let runtime = runtime.clone();
                    async move { Ok::<_, std::convert::Infallible>(respond(&req, &metrics, &runtime)) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                    tracing::debug!(error = %e, "metrics connection ended with an error");
                }
            });
        }
    }))
}

fn respond<B>(req: &http::Request<B>, metrics: &SharedMetrics, runtime: &Runtime) -> http::Response<Full<Bytes>> {
    let reply = |status: http::StatusCode, content_type: &str, body: String| {
        let mut response = http::Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(v) = http::HeaderValue::from_str(content_type) {
            response.headers_mut().insert(http::header::CONTENT_TYPE, v);
        }
        response
    };
    if req.uri().path() != "/metrics" {
        return reply(http::StatusCode::NOT_FOUND, "text/plain", "only /metrics is served here\n".into());
    }
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        return reply(http::StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET /metrics\n".into());
    }
    match metrics.render(runtime) {
        Ok(text) => reply(http::StatusCode::OK, CONTENT_TYPE, text),
        Err(e) => reply(http::StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("cannot encode metrics: {e}\n")),
    }
}
