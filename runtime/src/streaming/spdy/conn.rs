//! A SPDY/3.1 connection over any byte stream: a reader task that decodes frames and hands
//! each stream's data to its reader, and a writer task that encodes frames in the order
//! they were queued (header compression depends on that order).
//!
//! Flow control is not enforced, like moby/spdystream (which Kubernetes' clients and kubelet
//! use): it neither sends WINDOW_UPDATE nor honours it, so we ignore it too. Back-pressure
//! comes from bounded queues instead: a slow stream reader stalls the connection's reader.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::frame::{self, Decoder, Encoder, Frame, Headers};

/// Frames queued for the writer; a full queue makes writers wait.
const OUT_QUEUE: usize = 64;
/// Data frames buffered per stream before the connection's reader waits for its consumer.
const STREAM_QUEUE: usize = 64;
/// Largest data frame we send; clients allocate per frame, so keep them modest.
const MAX_DATA_FRAME: usize = 32 * 1024;

/// Which side opened the TCP connection: clients use odd stream ids, servers even.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

enum Outgoing {
    Frame(Frame),
    /// Send GOAWAY, flush and shut the write side.
    Close,
}

struct Shared {
    /// Senders for the data of streams the peer may still send on.
    inbound: Mutex<HashMap<u32, mpsc::Sender<Bytes>>>,
    last_peer_stream: AtomicU32,
    /// Set once nothing more can come from the peer (EOF, error, GOAWAY).
    ended: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    fn take(&self, id: u32) -> Option<mpsc::Sender<Bytes>> {
        crate::sandbox::store::lock(&self.inbound).remove(&id)
    }
    fn get(&self, id: u32) -> Option<mpsc::Sender<Bytes>> {
        crate::sandbox::store::lock(&self.inbound).get(&id).cloned()
    }
}

/// One SPDY connection. Dropping it aborts both tasks; [`Connection::close`] ends it
/// politely (GOAWAY, flush) after everything queued was written.
pub struct Connection {
    role: Role,
    out: mpsc::Sender<Outgoing>,
    shared: Arc<Shared>,
    incoming: mpsc::Receiver<Stream>,
    next_id: AtomicU32,
    reader: JoinHandle<()>,
    writer: Option<JoinHandle<()>>,
}

/// A stream: its headers, what the peer sends on it, and a handle to send on it.
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    pub reader: StreamReader,
    pub writer: StreamWriter,
}

/// What the peer sends on a stream; `None` once it half-closed (FIN), reset the stream or
/// the connection ended.
pub struct StreamReader {
    rx: mpsc::Receiver<Bytes>,
}

impl StreamReader {
    pub async fn recv(&mut self) -> Option<Bytes> {
        loop {
            match self.rx.recv().await {
                Some(b) if b.is_empty() => continue,
                other => return other,
            }
        }
    }

    /// The underlying queue (never yields empty chunks).
    pub fn into_receiver(self) -> mpsc::Receiver<Bytes> {
        self.rx
    }

    /// Reads everything until the peer half-closes.
    pub async fn read_to_end(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        while let Some(b) = self.recv().await {
            all.extend_from_slice(&b);
        }
        all
    }
}

/// Sends on a stream. Errors mean the connection is gone.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    out: mpsc::Sender<Outgoing>,
}

fn gone() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "SPDY connection closed")
}

impl StreamWriter {
    async fn send(&self, frame: Frame) -> std::io::Result<()> {
        self.out.send(Outgoing::Frame(frame)).await.map_err(|_| gone())
    }

    /// Accepts the stream (SYN_REPLY); the peer's client waits for this.
    pub async fn reply(&self) -> std::io::Result<()> {
        self.send(Frame::SynReply { stream_id: self.id, flags: 0, headers: Headers::new() }).await
    }

    pub async fn write(&self, data: &[u8]) -> std::io::Result<()> {
        for chunk in data.chunks(MAX_DATA_FRAME) {
            self.send(Frame::Data { stream_id: self.id, flags: 0, data: Bytes::copy_from_slice(chunk) }).await?;
        }
        Ok(())
    }

    /// Half-closes our side (an empty data frame with FIN).
    pub async fn close(&self) -> std::io::Result<()> {
        self.send(Frame::Data { stream_id: self.id, flags: frame::FLAG_FIN, data: Bytes::new() }).await
    }

    pub async fn reset(&self, status: u32) -> std::io::Result<()> {
        self.send(Frame::RstStream { stream_id: self.id, status }).await
    }
}

impl Connection {
    pub fn new<T>(io: T, role: Role) -> Connection
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read_half, write_half) = tokio::io::split(io);
        let (out, out_rx) = mpsc::channel(OUT_QUEUE);
        let (incoming_tx, incoming) = mpsc::channel(16);
        let shared = Arc::new(Shared {
            inbound: Mutex::default(),
            last_peer_stream: AtomicU32::new(0),
            ended: tokio::sync::watch::Sender::new(false),
        });
        let writer = tokio::spawn(write_loop(write_half, out_rx));
        let reader = tokio::spawn(read_loop(read_half, role, shared.clone(), out.clone(), incoming_tx));
        let first = if role == Role::Client { 1 } else { 2 };
        Connection { role, out, shared, incoming, next_id: AtomicU32::new(first), reader, writer: Some(writer) }
    }

    /// The next stream the peer opened, or `None` once the connection ended.
    pub async fn accept(&mut self) -> Option<Stream> {
        self.incoming.recv().await
    }

    /// Opens a stream (SYN_STREAM); `fin` half-closes our side at once.
    pub async fn open(&self, headers: Headers, fin: bool) -> std::io::Result<Stream> {
        let id = self.next_id.fetch_add(2, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        crate::sandbox::store::lock(&self.shared.inbound).insert(id, tx);
        let flags = if fin { frame::FLAG_FIN } else { 0 };
        let syn = Frame::SynStream { stream_id: id, associated_to: 0, priority: 0, slot: 0, flags, headers: headers.clone() };
        self.out.send(Outgoing::Frame(syn)).await.map_err(|_| gone())?;
        Ok(Stream { id, headers, reader: StreamReader { rx }, writer: StreamWriter { id, out: self.out.clone() } })
    }

    /// Resolves once the peer can send nothing more: it went away, broke the protocol or
    /// said GOAWAY.
    pub fn peer_gone(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.shared.ended.subscribe();
        async move {
            let _ = rx.wait_for(|ended| *ended).await.map(|_| ());
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// Sends GOAWAY after everything already queued, waits (briefly) for it to be written,
    /// and stops reading.
    pub async fn close(mut self) {
        let _ = self.out.send(Outgoing::Close).await;
        if let Some(writer) = self.writer.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
        }
        self.reader.abort();
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
        if let Some(w) = &self.writer {
            w.abort();
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut io: W, mut rx: mpsc::Receiver<Outgoing>) {
    let mut encoder = Encoder::default();
    let mut buf = BytesMut::new();
    let mut closing = false;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        // Coalesce whatever is already queued into one write.
        while let Some(item) = next.take() {
            let frame = match item {
                Outgoing::Frame(f) => f,
                Outgoing::Close => {
                    closing = true;
                    Frame::GoAway { last_good_stream_id: 0, status: frame::GOAWAY_OK }
                }
            };
            if let Err(e) = encoder.encode(&frame, &mut buf) {
                tracing::warn!(error = %e, "dropping a SPDY frame that cannot be encoded");
            }
            if closing || buf.len() > 64 * 1024 {
                break;
            }
            next = rx.try_recv().ok();
        }
        if io.write_all(&buf).await.is_err() || io.flush().await.is_err() {
            return;
        }
        buf.clear();
        if closing {
            break;
        }
    }
    let _ = io.shutdown().await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut io: R,
    role: Role,
    shared: Arc<Shared>,
    out: mpsc::Sender<Outgoing>,
    incoming: mpsc::Sender<Stream>,
) {
    let mut decoder = Decoder::default();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    'read: loop {
        loop {
            let frame = match decoder.decode(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    // The zlib context is now unusable: the connection cannot go on.
                    tracing::debug!(error = %e, "SPDY protocol error; closing the connection");
                    let goaway = Frame::GoAway { last_good_stream_id: 0, status: frame::RST_PROTOCOL_ERROR };
                    let _ = out.send(Outgoing::Frame(goaway)).await;
                    break 'read;
                }
            };
            if !handle_frame(frame, role, &shared, &out, &incoming).await {
                break 'read;
            }
        }
        match io.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    // Every reader sees the end; no new streams.
    crate::sandbox::store::lock(&shared.inbound).clear();
    shared.ended.send_replace(true);
}

/// Returns false when the connection should stop reading.
async fn handle_frame(
    frame: Frame,
    role: Role,
    shared: &Shared,
    out: &mpsc::Sender<Outgoing>,
    incoming: &mpsc::Sender<Stream>,
) -> bool {
    let peer_parity = if role == Role::Server { 1 } else { 0 };
    match frame {
        Frame::SynStream { stream_id, flags, headers, .. } => {
            let last = shared.last_peer_stream.load(Ordering::Relaxed);
            if stream_id == 0 || stream_id % 2 != peer_parity || stream_id <= last {
                let rst = Frame::RstStream { stream_id, status: frame::RST_PROTOCOL_ERROR };
                return out.send(Outgoing::Frame(rst)).await.is_ok();
            }
            shared.last_peer_stream.store(stream_id, Ordering::Relaxed);
            let (tx, rx) = mpsc::channel(STREAM_QUEUE);
            if flags & frame::FLAG_FIN == 0 {
                crate::sandbox::store::lock(&shared.inbound).insert(stream_id, tx);
            }
            let writer = StreamWriter { id: stream_id, out: out.clone() };
            let stream = Stream { id: stream_id, headers, reader: StreamReader { rx }, writer };
            if incoming.send(stream).await.is_err() {
                shared.take(stream_id);
                let rst = Frame::RstStream { stream_id, status: frame::RST_REFUSED_STREAM };
                return out.send(Outgoing::Frame(rst)).await.is_ok();
            }
        }
        Frame::Data { stream_id, flags, data } => {
            if !data.is_empty()
                && let Some(tx) = shared.get(stream_id)
            {
                // A reader that went away just loses the data.
                let _ = tx.send(data).await;
            }
            if flags & frame::FLAG_FIN != 0 {
                shared.take(stream_id);
            }
        }
        Frame::SynReply { stream_id, flags, .. } | Frame::Headers { stream_id, flags, .. } => {
            if flags & frame::FLAG_FIN != 0 {
                shared.take(stream_id);
            }
        }
        Frame::RstStream { stream_id, .. } => {
            shared.take(stream_id);
        }
        Frame::Ping { id } => {
            // Echo the peer's pings; ours (none yet) would come back with our parity.
            if id % 2 == peer_parity {
                return out.send(Outgoing::Frame(Frame::Ping { id })).await.is_ok();
            }
        }
        Frame::GoAway { .. } => return false,
        Frame::Settings { .. } | Frame::WindowUpdate { .. } | Frame::Unknown { .. } => {}
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn streams_carry_data_both_ways_and_fin_ends_a_reader() {
        let (a, b) = tokio::io::duplex(1024);
        let client = Connection::new(a, Role::Client);
        let mut server = Connection::new(b, Role::Server);
        let mut c1 = client.open(Headers::new().with("streamType", "stdin"), false).await.unwrap();
        let c3 = client.open(Headers::new().with("streamtype", "error"), true).await.unwrap();
        assert_eq!((c1.id, c3.id), (1, 3));
        let mut s1 = server.accept().await.unwrap();
        let mut s3 = server.accept().await.unwrap();
        assert_eq!(s1.headers.get("StreamType"), Some("stdin"));
        assert_eq!(s3.reader.recv().await, None, "SYN_STREAM with FIN: nothing to read");
        // Larger than one frame and than the duplex buffer.
        let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let send = {
            let w = c1.writer.clone();
            let big = big.clone();
            tokio::spawn(async move {
                w.write(&big).await.unwrap();
                w.close().await.unwrap();
            })
        };
        assert_eq!(s1.reader.read_to_end().await, big);
        send.await.unwrap();
        s1.writer.reply().await.unwrap();
        s1.writer.write(b"back").await.unwrap();
        s1.writer.close().await.unwrap();
        assert_eq!(c1.reader.read_to_end().await, b"back");
        s3.writer.write(b"x").await.unwrap();
        server.close().await;
        // The client sees GOAWAY: its readers end and no stream arrives.
        let mut client = client;
        assert!(client.accept().await.is_none());
    }

    #[tokio::test]
    async fn pings_are_echoed_and_bad_stream_ids_reset() {
        let (a, b) = tokio::io::duplex(4096);
        let _server = Connection::new(b, Role::Server);
        let (mut rd, mut wr) = tokio::io::split(a);
        let mut enc = Encoder::default();
        let mut buf = BytesMut::new();
        enc.encode(&Frame::Ping { id: 7 }, &mut buf).unwrap();
        // Even ids are the server's to open: a client using one gets RST_STREAM.
        let syn = Frame::SynStream { stream_id: 2, associated_to: 0, priority: 0, slot: 0, flags: 0, headers: Headers::new() };
        enc.encode(&syn, &mut buf).unwrap();
        wr.write_all(&buf).await.unwrap();
        let mut dec = Decoder::default();
        let mut got = BytesMut::new();
        let mut frames = Vec::new();
        while frames.len() < 2 {
            rd.read_buf(&mut got).await.unwrap();
            while let Some(f) = dec.decode(&mut got).unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames[0], Frame::Ping { id: 7 });
        assert_eq!(frames[1], Frame::RstStream { stream_id: 2, status: frame::RST_PROTOCOL_ERROR });
    }
}
