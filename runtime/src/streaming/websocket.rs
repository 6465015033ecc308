//! Kubernetes' channel protocols over WebSocket: every message belongs to a numbered
//! channel, named by its first byte (binary protocols) or first ASCII digit followed by
//! base64 (the `base64.` variants). `v5.channel.k8s.io` adds a close signal: channel 255
//! with the number of the channel the client will not write to any more.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Channel 255 in v5: "the client closed channel N".
const CLOSE_SIGNAL: u8 = 255;

/// A negotiated WebSocket subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WsProtocol {
    pub name: &'static str,
    base64: bool,
    version: u8,
}

impl WsProtocol {
    const fn new(name: &'static str, base64: bool, version: u8) -> WsProtocol {
        WsProtocol { name, base64, version }
    }

    /// v4 and later report a JSON status on the error channel.
    pub fn json_status(&self) -> bool {
        self.version >= 4
    }
}

/// Remote-command subprotocols; "" is what a client that names none gets.
pub(crate) const REMOTE_COMMAND: &[WsProtocol] = &[
    WsProtocol::new("v5.channel.k8s.io", false, 5),
    WsProtocol::new("v4.channel.k8s.io", false, 4),
    WsProtocol::new("v4.base64.channel.k8s.io", true, 4),
    WsProtocol::new("channel.k8s.io", false, 1),
    WsProtocol::new("base64.channel.k8s.io", true, 1),
    WsProtocol::new("", false, 1),
];

/// client-go's port-forward tunnel: a whole SPDY connection carried in binary messages.
pub(crate) const SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

/// Port-forward subprotocols.
pub(crate) const PORT_FORWARD: &[WsProtocol] = &[
    WsProtocol::new(SPDY_TUNNEL, false, 4),
    WsProtocol::new("v4.channel.k8s.io", false, 4),
    WsProtocol::new("v4.base64.channel.k8s.io", true, 4),
    WsProtocol::new("portforward.k8s.io", false, 4),
    WsProtocol::new("", false, 4),
];

/// Picks the first subprotocol the client offers that we speak (what Kubernetes does).
/// `None` if it offered some and we speak none of them.
pub(crate) fn negotiate(offered: &[String], supported: &[WsProtocol]) -> Option<WsProtocol> {
    if offered.is_empty() {
        return supported.iter().find(|p| p.name.is_empty()).copied();
    }
    offered.iter().find_map(|o| supported.iter().find(|p| !p.name.is_empty() && p.name == o).copied())
}

/// Sends on channels; cheap to clone.
#[derive(Clone)]
pub(crate) struct WsOut {
    tx: mpsc::Sender<Message>,
    base64: bool,
}

impl WsOut {
    pub async fn write(&self, channel: u8, data: &[u8]) -> std::io::Result<()> {
        let message = if self.base64 {
            let text = format!("{}{}", char::from(b'0'.saturating_add(channel)), base64::engine::general_purpose::STANDARD.encode(data));
            Message::text(text)
        } else {
            let mut frame = Vec::with_capacity(data.len() + 1);
            frame.push(channel);
            frame.extend_from_slice(data);
            Message::binary(frame)
        };
        self.tx
            .send(message)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "websocket closed"))
    }
}

/// The connection's two pump tasks.
pub(crate) struct WsTasks {
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
    ended: tokio::sync::watch::Receiver<bool>,
}

impl WsTasks {
    /// Resolves once the client closed the connection or it broke.
    pub fn peer_gone(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.ended.clone();
        async move {
            let _ = rx.wait_for(|ended| *ended).await.map(|_| ());
        }
    }

    /// Sends a normal close after everything queued and stops reading.
    pub async fn close(self, out: WsOut) {
        // A normal-closure code: client-go reads a close without one (1005) as an error.
        let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
        let _ = out.tx.send(Message::Close(Some(frame))).await;
        drop(out);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.writer).await;
        self.reader.abort();
    }
}

/// Splits `ws` into a channel writer and one receiver per readable channel; a receiver
/// ends when the client closes that channel (v5) or the connection.
pub(crate) fn start<S>(ws: S, protocol: WsProtocol, readable: &[u8]) -> (WsOut, HashMap<u8, mpsc::Receiver<Bytes>>, WsTasks)
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Send + Unpin + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(64);
    let mut senders = HashMap::new();
    let mut receivers = HashMap::new();
    for &ch in readable {
        let (stx, srx) = mpsc::channel(64);
        senders.insert(ch, stx);
        receivers.insert(ch, srx);
    }
    let writer = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            let closing = matches!(message, Message::Close(_));
            if sink.send(message).await.is_err() || closing {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let (ended_tx, ended) = tokio::sync::watch::channel(false);
    let reader = tokio::spawn(async move {
        // Set however the loop ends; dropping the senders ends every channel's receiver.
        let _ended = ScopeSignal(ended_tx);
        while let Some(Ok(message)) = stream.next().await {
            let (channel, data) = match message {
                Message::Binary(b) if !protocol.base64 && !b.is_empty() => (b[0], b.slice(1..)),
                Message::Text(t) if protocol.base64 && !t.is_empty() => {
                    let t = t.as_str();
                    let Some(channel) = t.as_bytes()[0].checked_sub(b'0') else { continue };
                    match base64::engine::general_purpose::STANDARD.decode(&t[1..]) {
                        Ok(data) => (channel, Bytes::from(data)),
                        Err(_) => continue,
                    }
                }
                Message::Close(_) => break,
                _ => continue,
            };
            if channel == CLOSE_SIGNAL && protocol.version >= 5 {
                if let Some(&closed) = data.first() {
                    senders.remove(&closed);
                }
                continue;
            }
            if data.is_empty() {
                continue;
            }
            if let Some(tx) = senders.get(&channel)
                && tx.send(data).await.is_err()
            {
                senders.remove(&channel);
            }
        }
    });
    (WsOut { tx, base64: protocol.base64 }, receivers, WsTasks { reader, writer, ended })
}

/// Signals on drop, also when the reader task is aborted.
struct ScopeSignal(tokio::sync::watch::Sender<bool>);

impl Drop for ScopeSignal {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

/// Turns a tunnelling WebSocket into a byte stream for [`super::spdy::Connection`]: each
/// binary message is a run of SPDY bytes; our end's EOF becomes a normal close.
pub(crate) fn tunnel<S>(ws: S) -> tokio::io::DuplexStream
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Send + Unpin + 'static,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (mut sink, mut stream) = ws.split();
    let (mut from_spdy, mut to_spdy) = tokio::io::split(theirs);
    let inbound = tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            match message {
                Message::Binary(b) if to_spdy.write_all(&b).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = to_spdy.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from_spdy.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
        let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
        let _ = sink.send(Message::Close(Some(frame))).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), inbound).await;
    });
    ours
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_the_clients_order() {
        let offer = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(negotiate(&offer(&["v4.channel.k8s.io", "v5.channel.k8s.io"]), REMOTE_COMMAND).unwrap().name, "v4.channel.k8s.io");
        assert_eq!(negotiate(&offer(&["bogus", "v5.channel.k8s.io"]), REMOTE_COMMAND).unwrap().name, "v5.channel.k8s.io");
        assert_eq!(negotiate(&offer(&[]), REMOTE_COMMAND).unwrap().name, "");
        assert!(negotiate(&offer(&["bogus"]), REMOTE_COMMAND).is_none());
        assert!(negotiate(&offer(&["v5.channel.k8s.io"]), PORT_FORWARD).is_none());
        assert!(!negotiate(&offer(&["channel.k8s.io"]), REMOTE_COMMAND).unwrap().json_status());
    }
}
