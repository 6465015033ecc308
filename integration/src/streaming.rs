//! Clients for the streaming server's URLs, the way kubectl and kubelet connect: an HTTP/1.1
//! upgrade to SPDY/3.1 (then our SPDY framing as the client side) or to WebSocket.

use std::net::SocketAddr;

use capstan_runtime::streaming::spdy::{Connection, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// `http://127.0.0.1:port/exec/<token>` → (address, path).
pub fn split_url(url: &str) -> (SocketAddr, String) {
    let rest = url.strip_prefix("http://").unwrap_or_else(|| panic!("not an http URL: {url}"));
    let slash = rest.find('/').unwrap_or(rest.len());
    (rest[..slash].parse().unwrap_or_else(|e| panic!("bad address in {url}: {e}")), rest[slash..].to_string())
}

/// The upgrade request kubectl sends, by hand; then a SPDY client connection. Panics unless
/// the server answers 101 with `protocol`.
pub async fn spdy_connect(url: &str, protocol: &str) -> Connection {
    let (addr, path) = split_url(url);
    let mut tcp = TcpStream::connect(addr).await.expect("connect to the streaming server");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: {protocol}\r\nContent-Length: 0\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.expect("send the upgrade");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(tcp.read(&mut b).await.expect("read the upgrade answer"), 1, "connection closed during upgrade");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains(&format!("x-stream-protocol-version: {protocol}")), "{head}");
    Connection::new(tcp, Role::Client)
}

/// A WebSocket to `url` (its `http://` made `ws://`, `query` appended) with `protocol` as
/// the only offered subprotocol.
pub async fn websocket_connect(url: &str, query: &str, protocol: &str) -> WebSocketStream<TcpStream> {
    let (addr, _) = split_url(url);
    let mut request = format!("{}{query}", url.replacen("http://", "ws://", 1)).into_client_request().expect("a WebSocket request");
    request.headers_mut().insert("Sec-WebSocket-Protocol", protocol.parse().expect("a header value"));
    let tcp = TcpStream::connect(addr).await.expect("connect to the streaming server");
    let (ws, response) = tokio_tungstenite::client_async(request, tcp).await.expect("WebSocket handshake");
    let chosen = response.headers().get("Sec-WebSocket-Protocol").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert_eq!(chosen, protocol, "the server chose another subprotocol");
    ws
}
