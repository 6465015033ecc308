//! The streaming server: HTTP/1.1 (optionally TLS) on its own port, serving
//! `/exec/<token>`, `/attach/<token>` and `/portforward/<token>` by upgrading the
//! connection to SPDY/3.1 or WebSocket, as kubelet (proxying the API server) and crictl ask.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role as WsRole;

use super::Backend;
use super::cache::{DEFAULT_CAPACITY, StreamRequest, TokenCache};
use super::spdy::{Connection, Role};
use super::websocket::{self, WsProtocol};
use super::{portforward, remotecommand};
use crate::{Error, Result};

/// Where and how the server listens.
#[derive(Debug, Clone)]
pub struct StreamingOptions {
    pub address: IpAddr,
    /// 0 picks a free port at start (containerd's default too).
    pub port: u16,
    /// PEM certificate chain and key; both or neither.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// How long a URL stays valid before its client connects.
    pub token_ttl: Duration,
}

impl Default for StreamingOptions {
    fn default() -> Self {
        StreamingOptions { address: Ipv4Addr::LOCALHOST.into(), port: 0, tls: None, token_ttl: Duration::from_secs(60) }
    }
}

/// The running server; hands out URLs for validated CRI requests.
pub struct StreamingServer {
    cache: Arc<TokenCache>,
    base_url: String,
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

type Body = Full<Bytes>;

struct State<B> {
    backend: Arc<B>,
    cache: Arc<TokenCache>,
    stop: watch::Receiver<bool>,
}

impl StreamingServer {
    /// Binds and starts serving in the background.
    pub async fn start<B: Backend>(options: StreamingOptions, backend: Arc<B>) -> Result<StreamingServer> {
        let tls = match &options.tls {
            Some((cert, key)) => Some(tls_acceptor(cert, key)?),
            None => None,
        };
        let listener = TcpListener::bind((options.address, options.port))
            .await
            .map_err(|e| Error::Unavailable(format!("cannot listen on {}:{} for streaming: {e}", options.address, options.port)))?;
        let local_addr = listener.local_addr().map_err(|e| Error::Internal(format!("streaming listener address: {e}")))?;
        let base_url = base_url(local_addr, tls.is_some());
        let cache = Arc::new(TokenCache::new(options.token_ttl, DEFAULT_CAPACITY));
        let (stop, stop_rx) = watch::channel(false);
        let state = Arc::new(State { backend, cache: cache.clone(), stop: stop_rx });
        let task = tokio::spawn(accept_loop(listener, tls, state));
        tracing::info!(url = %base_url, tls = options.tls.is_some(), "streaming server listening");
        Ok(StreamingServer { cache, base_url, local_addr, stop, task: Mutex::new(Some(task)) })
    }

    /// The URL for `request`, valid once and for the token lifetime.
    pub fn url(&self, request: StreamRequest) -> Result<String> {
        let kind = request.kind();
        let token = self.cache.insert(request)?;
        Ok(format!("{}/{kind}/{token}", self.base_url))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and ends every open session.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = crate::sandbox::store::lock(&self.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// An unspecified bind address is advertised as loopback: kubelet on this node proxies the
/// stream, so loopback reaches us; set an explicit address for clients on other hosts.
fn base_url(addr: SocketAddr, tls: bool) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}", SocketAddr::new(ip, addr.port()))
}

fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<tokio_rustls::TlsAcceptor> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
        Error::InvalidArgument(format!("streaming TLS {what} {}: {e}", path.display()))
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| bad("certificate", cert, &e))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("key", key, &e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(format!("TLS setup: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| bad("certificate/key pair", cert, &e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn accept_loop<B: Backend>(listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>, state: Arc<State<B>>) {
    let mut stop = state.stop.clone();
    loop {
        let (tcp, peer) = tokio::select! {
            () = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "streaming server accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let tls = tls.clone();
        let mut stop = state.stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stopped(&mut stop) => {}
                () = serve_connection(tcp, tls, state) => {}
            }
            tracing::trace!(%peer, "streaming connection done");
        });
    }
}

async fn serve_connection<B: Backend>(tcp: tokio::net::TcpStream, tls: Option<tokio_rustls::TlsAcceptor>, state: Arc<State<B>>) {
    let _ = tcp.set_nodelay(true);
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(route(req, state)) }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(30));
    let result = match tls {
        Some(acceptor) => match tokio::time::timeout(Duration::from_secs(30), acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => http.serve_connection(TokioIo::new(stream), service).with_upgrades().await,
            Ok(Err(e)) => return tracing::debug!(error = %e, "streaming TLS handshake failed"),
            Err(_) => return tracing::debug!("streaming TLS handshake timed out"),
        },
        None => http.serve_connection(TokioIo::new(tcp), service).with_upgrades().await,
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "streaming HTTP connection ended with an error");
    }
}

/// Resolves once shutdown was asked for (the guard `wait_for` returns is not `Send`).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn plain(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(message.into() + "\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

fn route<B: Backend>(req: Request<Incoming>, state: Arc<State<B>>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and POST are served");
    }
    let mut parts = req.uri().path().trim_start_matches('/').split('/');
    let (Some(kind), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
        return plain(StatusCode::NOT_FOUND, "not found");
    };
    if !matches!(kind, "exec" | "attach" | "portforward") {
        return plain(StatusCode::NOT_FOUND, "not found");
    }
    // Single use: consumed before anything else can fail.
    let Some(request) = state.cache.consume(token) else {
        return plain(StatusCode::NOT_FOUND, "streaming token not found or expired: ask the CRI for a new URL");
    };
    if request.kind() != kind {
        return plain(StatusCode::NOT_FOUND, "streaming token not found or expired: ask the CRI for a new URL");
    }
    if is_websocket(req.headers()) {
        websocket_upgrade(req, request, state)
    } else {
        spdy_upgrade(req, request, state)
    }
}

fn header_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

fn connection_upgrades(headers: &HeaderMap) -> bool {
    header_values(headers, "connection").iter().any(|v| v.eq_ignore_ascii_case("upgrade"))
}

fn is_websocket(headers: &HeaderMap) -> bool {
    connection_upgrades(headers) && header_values(headers, "upgrade").iter().any(|v| v.eq_ignore_ascii_case("websocket"))
}

fn spdy_upgrade<B: Backend>(mut req: Request<Incoming>, request: StreamRequest, state: Arc<State<B>>) -> Response<Body> {
    let upgrade_ok =
        connection_upgrades(req.headers()) && header_values(req.headers(), "upgrade").iter().any(|v| v.eq_ignore_ascii_case("SPDY/3.1"));
    if !upgrade_ok {
        return plain(StatusCode::BAD_REQUEST, "unable to upgrade: missing upgrade headers in request (SPDY/3.1 or websocket)");
    }
    let supported = match request {
        StreamRequest::PortForward { .. } => portforward::SPDY_PROTOCOLS,
        _ => remotecommand::SPDY_PROTOCOLS,
    };
    let protocol = match spdy_protocol(req.headers(), supported) {
        Ok(p) => p,
        Err(message) => {
            let mut resp = plain(StatusCode::FORBIDDEN, message);
            if let Ok(v) = HeaderValue::from_str(&supported.join(",")) {
                resp.headers_mut().insert("x-supported-stream-protocol-versions", v);
            }
            return resp;
        }
    };
    let negotiated = protocol.clone();
    after_upgrade(&mut req, state, move |io, state| async move {
        let conn = Connection::new(io, Role::Server);
        match request {
            StreamRequest::PortForward { pod_id, .. } => portforward::serve_spdy(state.backend.clone(), pod_id, conn).await,
            request => remotecommand::serve_spdy(&*state.backend, request, &negotiated, conn).await,
        }
    });
    let mut resp = switching("SPDY/3.1");
    if let Ok(v) = HeaderValue::from_str(&protocol)
        && !protocol.is_empty()
    {
        resp.headers_mut().insert("x-stream-protocol-version", v);
    }
    resp
}

/// The first protocol the client offers that we speak. A client that names none gets the
/// oldest behaviour (""), as in Kubernetes; one that names only unknown ones is refused.
fn spdy_protocol(headers: &HeaderMap, supported: &[&str]) -> std::result::Result<String, String> {
    let offered = header_values(headers, "x-stream-protocol-version");
    if offered.is_empty() {
        return Ok(String::new());
    }
    match offered.iter().find(|o| supported.contains(&o.as_str())) {
        Some(p) => Ok(p.clone()),
        None => Err(format!(
            "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {supported:?}"
        )),
    }
}

fn websocket_upgrade<B: Backend>(mut req: Request<Incoming>, request: StreamRequest, state: Arc<State<B>>) -> Response<Body> {
    let Some(accept) = req.headers().get("sec-websocket-key").map(|k| derive_accept_key(k.as_bytes())) else {
        return plain(StatusCode::BAD_REQUEST, "websocket upgrade without Sec-WebSocket-Key");
    };
    if req.headers().get("sec-websocket-version").and_then(|v| v.to_str().ok()) != Some("13") {
        return plain(StatusCode::BAD_REQUEST, "only websocket version 13 is supported");
    }
    let supported: &[WsProtocol] = match request {
        StreamRequest::PortForward { .. } => websocket::PORT_FORWARD,
        _ => websocket::REMOTE_COMMAND,
    };
    let offered = header_values(req.headers(), "sec-websocket-protocol");
    let Some(protocol) = websocket::negotiate(&offered, supported) else {
        return plain(StatusCode::BAD_REQUEST, format!("none of the websocket subprotocols {offered:?} is supported"));
    };
    let request = match ws_ports(request, req.uri().query(), protocol) {
        Ok(r) => r,
        Err(message) => return plain(StatusCode::BAD_REQUEST, message),
    };
    after_upgrade(&mut req, state, move |io, state| async move {
        let ws = WebSocketStream::from_raw_socket(io, WsRole::Server, None).await;
        match request {
            StreamRequest::PortForward { pod_id, .. } if protocol.name == websocket::SPDY_TUNNEL => {
                let conn = Connection::new(websocket::tunnel(ws), Role::Server);
                portforward::serve_spdy(state.backend.clone(), pod_id, conn).await
            }
            StreamRequest::PortForward { pod_id, ports } => {
                portforward::serve_ws(state.backend.clone(), pod_id, ports, protocol, ws).await
            }
            request => remotecommand::serve_ws(&*state.backend, request, protocol, ws).await,
        }
    });
    let mut resp = switching("websocket");
    if let Ok(v) = HeaderValue::from_str(&accept) {
        resp.headers_mut().insert("sec-websocket-accept", v);
    }
    if !protocol.name.is_empty() {
        resp.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static(protocol.name));
    }
    resp
}

/// Port-forward over WebSocket names its ports in the URL; the CRI request's are the
/// fallback. (The SPDY tunnel names them per stream instead.)
fn ws_ports(request: StreamRequest, query: Option<&str>, protocol: WsProtocol) -> std::result::Result<StreamRequest, String> {
    match request {
        StreamRequest::PortForward { pod_id, ports } if protocol.name != websocket::SPDY_TUNNEL => {
            let mut wanted = portforward::ports_from_query(query)?;
            if wanted.is_empty() {
                wanted = ports;
            }
            if wanted.is_empty() {
                return Err("query parameter \"port\" is required".into());
            }
            Ok(StreamRequest::PortForward { pod_id, ports: wanted })
        }
        other => Ok(other),
    }
}

/// Runs `session` on the connection once hyper hands it over after the 101; the server's
/// shutdown cuts it short.
fn after_upgrade<B, F, Fut>(req: &mut Request<Incoming>, state: Arc<State<B>>, session: F)
where
    B: Backend,
    F: FnOnce(TokioIo<hyper::upgrade::Upgraded>, Arc<State<B>>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => return tracing::debug!(error = %e, "streaming upgrade failed"),
        };
        let mut stop = state.stop.clone();
        tokio::select! {
            () = stopped(&mut stop) => {}
            () = session(TokioIo::new(upgraded), state.clone()) => {}
        }
    });
}

fn switching(upgrade: &'static str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    resp.headers_mut().insert(header::UPGRADE, HeaderValue::from_static(upgrade));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_reachable_address() {
        assert_eq!(base_url("0.0.0.0:1234".parse().unwrap(), false), "http://127.0.0.1:1234");
        assert_eq!(base_url("[::]:80".parse().unwrap(), true), "https://[::1]:80");
        assert_eq!(base_url("[fd00::2]:80".parse().unwrap(), false), "http://[fd00::2]:80");
        assert_eq!(base_url("10.0.0.5:9".parse().unwrap(), false), "http://10.0.0.5:9");
    }
}
