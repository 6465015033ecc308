//! Kubernetes' port-forward protocol.
//!
//! Over SPDY (`portforward.k8s.io`) the client opens a pair of streams per forwarded
//! connection, `streamtype` data and error, both carrying `port` and a `requestid` that pairs
//! them; any number of pairs share one SPDY connection. Over WebSocket the ports are named
//! in the URL (`?port=80&port=443`); port i gets channel 2i for data and 2i+1 for errors,
//! and the server opens each channel by sending the port as a little-endian u16.
//!
//! Errors are reported as text on the error stream; the data stream ends (FIN) when the
//! pod side closes the connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::Backend;
use super::spdy::{self, Connection, Stream};
use super::websocket::{WsOut, WsProtocol};

pub(crate) const SPDY_PROTOCOLS: &[&str] = &["portforward.k8s.io"];
/// A pair must be complete this long after its first stream (kubelet's streamCreationTimeout).
const PAIR_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Pair {
    data: Option<Stream>,
    error: Option<Stream>,
    since: Option<Instant>,
}

/// Serves one SPDY port-forward connection until the client closes it.
pub(crate) async fn serve_spdy<B: Backend>(backend: Arc<B>, pod_id: String, mut conn: Connection) {
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let stream = tokio::select! {
            s = conn.accept() => match s { Some(s) => s, None => break },
            _ = tick.tick() => {
                expire(&mut pairs).await;
                continue;
            }
        };
        let (port, kind) = match validate(&stream) {
            Ok(v) => v,
            Err(message) => {
                tracing::debug!(pod_id, %message, "refusing a port-forward stream");
                let _ = stream.writer.reset(spdy::frame::RST_PROTOCOL_ERROR).await;
                continue;
            }
        };
        if stream.writer.reply().await.is_err() {
            break;
        }
        let request_id = request_id(&stream, kind);
        let pair = pairs.entry(request_id.clone()).or_default();
        pair.since.get_or_insert_with(Instant::now);
        let slot = if kind == "data" { &mut pair.data } else { &mut pair.error };
        if slot.is_some() {
            let message = format!("error processing stream for request {request_id}: {kind} stream already assigned");
            if let Some(e) = &pair.error {
                let _ = e.writer.write(message.as_bytes()).await;
            }
            let _ = stream.writer.reset(spdy::frame::RST_PROTOCOL_ERROR).await;
            continue;
        }
        *slot = Some(stream);
        if pair.data.is_some() && pair.error.is_some()
            && let Some(Pair { data: Some(data), error: Some(error), .. }) = pairs.remove(&request_id)
        {
            tokio::spawn(forward_spdy(backend.clone(), pod_id.clone(), port, data, error));
        }
    }
    conn.close().await;
}

fn validate(stream: &Stream) -> Result<(u16, &'static str), String> {
    let port = stream.headers.get("port").ok_or("\"port\" header is required")?;
    let port: u16 = port.parse().map_err(|_| format!("unable to parse {port:?} as a port"))?;
    if port == 0 {
        return Err("port must be > 0".into());
    }
    match stream.headers.get("streamtype") {
        Some("data") => Ok((port, "data")),
        Some("error") => Ok((port, "error")),
        Some(other) => Err(format!("invalid stream type {other:?}")),
        None => Err("\"streamtype\" header is required".into()),
    }
}

/// Old clients send no `requestid`: their error and data streams have consecutive odd ids.
fn request_id(stream: &Stream, kind: &str) -> String {
    match stream.headers.get("requestid") {
        Some(id) if !id.is_empty() => id.to_string(),
        _ if kind == "data" => stream.id.saturating_sub(2).to_string(),
        _ => stream.id.to_string(),
    }
}

async fn expire(pairs: &mut HashMap<String, Pair>) {
    let stale: Vec<String> =
        pairs.iter().filter(|(_, p)| p.since.is_some_and(|t| t.elapsed() > PAIR_TIMEOUT)).map(|(k, _)| k.clone()).collect();
    for id in stale {
        if let Some(pair) = pairs.remove(&id) {
            tracing::debug!(request_id = id, "port-forward stream pair incomplete; dropping it");
            if let Some(e) = pair.error {
                let _ = e.writer.write(format!("timed out waiting for the streams of request {id}").as_bytes()).await;
                let _ = e.writer.close().await;
            }
            if let Some(d) = pair.data {
                let _ = d.writer.close().await;
            }
        }
    }
}

async fn forward_spdy<B: Backend>(backend: Arc<B>, pod_id: String, port: u16, data: Stream, error: Stream) {
    match backend.port_forward(&pod_id, port).await {
        Ok(tcp) => {
            tracing::debug!(pod_id, port, "port-forward connection open");
            let out = data.writer.clone();
            splice(tcp, data.reader.into_receiver(), |chunk| {
                let out = out.clone();
                async move { out.write(&chunk).await }
            })
            .await;
        }
        Err(e) => {
            let message = format!("error forwarding port {port} to pod {pod_id}: {e}");
            tracing::info!(pod_id, port, error = %e, "port-forward failed");
            let _ = error.writer.write(message.as_bytes()).await;
        }
    }
    let _ = data.writer.close().await;
    let _ = error.writer.close().await;
}

/// Copies client → pod until the client half-closes (then half-closes the TCP connection),
/// and pod → client until the pod closes; the pod's close ends the forward.
async fn splice<F, Fut>(tcp: TcpStream, mut from_client: mpsc::Receiver<Bytes>, to_client: F)
where
    F: Fn(Bytes) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>>,
{
    let (mut rd, mut wr) = tcp.into_split();
    let upstream = tokio::spawn(async move {
        while let Some(chunk) = from_client.recv().await {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
        // Keep the write half (and so the socket) until the pod side is done.
        std::future::pending::<()>().await;
    });
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to_client(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                    break;
                }
            }
        }
    }
    upstream.abort();
}

/// Serves one WebSocket port-forward connection for `ports`.
pub(crate) async fn serve_ws<B: Backend, S>(backend: Arc<B>, pod_id: String, ports: Vec<u16>, protocol: WsProtocol, ws: S)
where
    S: futures::Stream<Item = Result<tokio_tungstenite::tungstenite::Message, tokio_tungstenite::tungstenite::Error>>
        + futures::Sink<tokio_tungstenite::tungstenite::Message, Error = tokio_tungstenite::tungstenite::Error>
        + Send
        + Unpin
        + 'static,
{
    let data_channels: Vec<u8> = (0..ports.len()).map(|i| (2 * i) as u8).collect();
    let (out, mut inputs, tasks) = super::websocket::start(ws, protocol, &data_channels);
    let mut forwards = Vec::new();
    for (i, &port) in ports.iter().enumerate() {
        let (data_ch, error_ch) = ((2 * i) as u8, (2 * i + 1) as u8);
        let _ = out.write(data_ch, &port.to_le_bytes()).await;
        let _ = out.write(error_ch, &port.to_le_bytes()).await;
        let Some(input) = inputs.remove(&data_ch) else { continue };
        forwards.push(tokio::spawn(forward_ws(backend.clone(), pod_id.clone(), port, input, out.clone(), data_ch, error_ch)));
    }
    for f in forwards {
        let _ = f.await;
    }
    tasks.close(out).await;
}

async fn forward_ws<B: Backend>(
    backend: Arc<B>,
    pod_id: String,
    port: u16,
    input: mpsc::Receiver<Bytes>,
    out: WsOut,
    data_ch: u8,
    error_ch: u8,
) {
    match backend.port_forward(&pod_id, port).await {
        Ok(tcp) => {
            splice(tcp, input, |chunk| {
                let out = out.clone();
                async move { out.write(data_ch, &chunk).await }
            })
            .await
        }
        Err(e) => {
            let message = format!("error forwarding port {port} to pod {pod_id}: {e}");
            tracing::info!(pod_id, port, error = %e, "port-forward failed");
            let _ = out.write(error_ch, message.as_bytes()).await;
        }
    }
}

/// Ports named in a WebSocket URL: `port=80&port=443` or `port=80,443`.
pub(crate) fn ports_from_query(query: Option<&str>) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for pair in query.unwrap_or_default().split('&') {
        let Some(value) = pair.strip_prefix("port=") else { continue };
        for p in value.split(',') {
            match p.parse::<u16>() {
                Ok(port) if port > 0 => ports.push(port),
                _ => return Err(format!("unable to parse {p:?} as a port")),
            }
        }
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_in_the_query() {
        assert_eq!(ports_from_query(Some("port=80&port=443,8080&x=1")).unwrap(), vec![80, 443, 8080]);
        assert_eq!(ports_from_query(None).unwrap(), Vec::<u16>::new());
        assert!(ports_from_query(Some("port=0")).is_err());
        assert!(ports_from_query(Some("port=http")).is_err());
    }
}
