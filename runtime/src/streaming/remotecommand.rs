//! Kubernetes' remote-command protocol (exec and attach) on top of either transport: wires
//! the client's stdin/stdout/stderr/resize/error streams or channels to a backend
//! [`Session`], and reports how it ended on the error stream.
//!
//! The error stream carries a JSON `metav1.Status` from protocol v4 on (exit codes ride in
//! `details.causes` with reason `ExitCode`); older protocols carry only an error's text.

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::cache::StreamRequest;
use super::spdy::{self, Connection};
use super::websocket::{WsOut, WsProtocol};
use super::{Backend, Session, SessionEnd, StreamOptions, TerminalSize};

/// How long the client gets to open all its streams (kubelet's streamCreationTimeout).
pub(crate) const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// After the process ended, how long we keep copying output a leftover child may still hold
/// open before ending the session anyway.
const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// SPDY remote-command protocols, preferred first.
pub(crate) const SPDY_PROTOCOLS: &[&str] =
    &["v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"];

/// Channel numbers of the WebSocket protocols.
const CH_STDIN: u8 = 0;
const CH_STDOUT: u8 = 1;
const CH_STDERR: u8 = 2;
const CH_ERROR: u8 = 3;
const CH_RESIZE: u8 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusFormat {
    /// v4 and later: a JSON `metav1.Status`, success included.
    Json,
    /// v1-v3: the error's text, nothing on success.
    Text,
}

/// Where one output goes.
pub(crate) enum Sink {
    Spdy(spdy::StreamWriter),
    Ws { out: WsOut, channel: u8 },
}

impl Sink {
    async fn write(&self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Spdy(w) => w.write(data).await,
            Sink::Ws { out, channel } => out.write(*channel, data).await,
        }
    }

    async fn close(&self) {
        if let Sink::Spdy(w) = self {
            let _ = w.close().await;
        }
    }
}

/// The client's side of a session, transport-independent.
pub(crate) struct Wiring {
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    pub resize: Option<mpsc::Receiver<Bytes>>,
    pub stdout: Option<Sink>,
    pub stderr: Option<Sink>,
    pub error: Sink,
    pub format: StatusFormat,
    /// Resolves when the client went away: the session is then dropped (which kills an
    /// exec'd process) instead of running on for nobody.
    pub client_gone: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

fn options_of(request: &StreamRequest) -> StreamOptions {
    match request {
        StreamRequest::Exec { options, .. } | StreamRequest::Attach { options, .. } => *options,
        StreamRequest::PortForward { .. } => StreamOptions::default(),
    }
}

/// Serves exec/attach on an upgraded SPDY connection.
pub(crate) async fn serve_spdy<B: Backend>(backend: &B, request: StreamRequest, protocol: &str, mut conn: Connection) {
    let options = options_of(&request);
    let format = if matches!(protocol, "v5.channel.k8s.io" | "v4.channel.k8s.io") { StatusFormat::Json } else { StatusFormat::Text };
    let resize_supported = !matches!(protocol, "v2.channel.k8s.io" | "channel.k8s.io" | "");
    let mut expected = 1 + usize::from(options.stdin) + usize::from(options.stdout) + usize::from(options.stderr && !options.tty);
    if options.tty && resize_supported {
        expected += 1;
    }
    let (mut error, mut stdin, mut stdout, mut stderr, mut resize) = (None, None, None, None, None);
    let mut received = 0;
    let waited = tokio::time::timeout(STREAM_CREATION_TIMEOUT, async {
        while received < expected {
            let Some(stream) = conn.accept().await else { return false };
            if stream.writer.reply().await.is_err() {
                return false;
            }
            let slot = match stream.headers.get("streamtype").unwrap_or_default() {
                "error" => &mut error,
                "stdin" => &mut stdin,
                "stdout" => &mut stdout,
                "stderr" => &mut stderr,
                "resize" => &mut resize,
                other => {
                    tracing::debug!(stream_type = other, "ignoring a remote-command stream of unknown type");
                    continue;
                }
            };
            *slot = Some(stream);
            received += 1;
        }
        true
    })
    .await;
    let Some(error) = error.filter(|_| matches!(waited, Ok(true))) else {
        tracing::warn!(received, expected, "remote-command client did not open its streams in time; closing");
        conn.close().await;
        return;
    };
    let wiring = Wiring {
        stdin: stdin.map(|s| s.reader.into_receiver()),
        resize: resize.map(|s| s.reader.into_receiver()),
        stdout: stdout.map(|s| Sink::Spdy(s.writer)),
        stderr: stderr.map(|s| Sink::Spdy(s.writer)),
        error: Sink::Spdy(error.writer),
        format,
        client_gone: Box::pin(conn.peer_gone()),
    };
    run(backend, &request, wiring).await;
    conn.close().await;
}

/// Serves exec/attach on an upgraded WebSocket connection.
pub(crate) async fn serve_ws<B: Backend, S>(backend: &B, request: StreamRequest, protocol: WsProtocol, ws: S)
where
    S: futures::Stream<Item = Result<tokio_tungstenite::tungstenite::Message, tokio_tungstenite::tungstenite::Error>>
        + futures::Sink<tokio_tungstenite::tungstenite::Message, Error = tokio_tungstenite::tungstenite::Error>
        + Send
        + Unpin
        + 'static,
{
    let options = options_of(&request);
    let (out, mut inputs, tasks) = super::websocket::start(ws, protocol, &[CH_STDIN, CH_RESIZE]);
    // Tells the client the connection is up, on the lowest channel it writes to.
    let hello = if options.stdout {
        CH_STDOUT
    } else if options.stderr && !options.tty {
        CH_STDERR
    } else {
        CH_ERROR
    };
    let _ = out.write(hello, &[]).await;
    let sink = |wanted: bool, channel: u8| wanted.then(|| Sink::Ws { out: out.clone(), channel });
    let wiring = Wiring {
        stdin: inputs.remove(&CH_STDIN).filter(|_| options.stdin),
        resize: inputs.remove(&CH_RESIZE).filter(|_| options.tty),
        stdout: sink(options.stdout, CH_STDOUT),
        stderr: sink(options.stderr && !options.tty, CH_STDERR),
        error: Sink::Ws { out: out.clone(), channel: CH_ERROR },
        format: if protocol.json_status() { StatusFormat::Json } else { StatusFormat::Text },
        client_gone: Box::pin(tasks.peer_gone()),
    };
    run(backend, &request, wiring).await;
    tasks.close(out).await;
}

/// Starts the session, pumps its streams, and reports its end.
pub(crate) async fn run<B: Backend>(backend: &B, request: &StreamRequest, wiring: Wiring) {
    let attach = matches!(request, StreamRequest::Attach { .. });
    let started = match request {
        StreamRequest::Exec { container_id, cmd, options } => {
            tracing::info!(container_id, ?cmd, tty = options.tty, "exec session starting");
            backend.exec(container_id, cmd.clone(), *options).await
        }
        StreamRequest::Attach { container_id, options } => {
            tracing::info!(container_id, tty = options.tty, "attach session starting");
            backend.attach(container_id, *options).await
        }
        StreamRequest::PortForward { .. } => return,
    };
    let session = match started {
        Ok(s) => s,
        Err(e) => {
            report(&wiring.error, wiring.format, &SessionEnd::Failed(e.to_string()), attach).await;
            return;
        }
    };
    let Session { stdin, stdout, stderr, resize, end } = session;
    let mut background = Vec::new();
    if let (Some(mut pipe), Some(mut rx)) = (stdin, wiring.stdin) {
        background.push(tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                if pipe.write_all(&chunk).await.is_err() || pipe.flush().await.is_err() {
                    return;
                }
            }
            // The client closed stdin: so does the process' stdin.
            let _ = pipe.shutdown().await;
        }));
    }
    if let (Some(sizes), Some(rx)) = (resize, wiring.resize) {
        background.push(tokio::spawn(pump_resize(rx, sizes)));
    }
    let outputs = async {
        tokio::join!(copy_out(stdout, wiring.stdout.as_ref()), copy_out(stderr, wiring.stderr.as_ref()));
    };
    tokio::pin!(outputs);
    let (mut end, mut gone) = (end, wiring.client_gone);
    let ended_first = tokio::select! {
        ended = &mut end => Some(ended),
        () = &mut outputs => None,
        () = &mut gone => return client_left(background),
    };
    let ended = match ended_first {
        // The usual order: output reaches EOF when the process exits, then the end arrives.
        None => tokio::select! {
            ended = end => ended,
            () = gone => return client_left(background),
        },
        Some(ended) => {
            if tokio::time::timeout(OUTPUT_DRAIN_TIMEOUT, &mut outputs).await.is_err() {
                tracing::warn!("a process still holds the session's stdout/stderr open after it ended; closing them");
            }
            ended
        }
    };
    for task in background {
        task.abort();
    }
    report(&wiring.error, wiring.format, &ended, attach).await;
}

fn client_left(background: Vec<tokio::task::JoinHandle<()>>) {
    tracing::info!("streaming client went away; ending its session");
    for task in background {
        task.abort();
    }
}

async fn copy_out(from: Option<super::BoxedReader>, to: Option<&Sink>) {
    let Some(to) = to else { return };
    if let Some(mut from) = from {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
    }
    to.close().await;
}

/// Resize events are a stream of JSON objects `{"Width":..,"Height":..}`.
async fn pump_resize(mut rx: mpsc::Receiver<Bytes>, sizes: mpsc::UnboundedSender<TerminalSize>) {
    #[derive(serde::Deserialize)]
    struct Size {
        #[serde(rename = "Width")]
        width: u16,
        #[serde(rename = "Height")]
        height: u16,
    }
    let mut pending = Vec::new();
    while let Some(chunk) = rx.recv().await {
        pending.extend_from_slice(&chunk);
        let mut values = serde_json::Deserializer::from_slice(&pending).into_iter::<Size>();
        let mut consumed = 0;
        loop {
            match values.next() {
                Some(Ok(s)) => {
                    consumed = values.byte_offset();
                    if sizes.send(TerminalSize { width: s.width, height: s.height }).is_err() {
                        return;
                    }
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "bad terminal resize event; ignoring further resizes");
                    return;
                }
                None => {
                    consumed = pending.len();
                    break;
                }
            }
        }
        pending.drain(..consumed);
    }
}

/// Writes how the session ended on the error stream and closes it.
async fn report(error: &Sink, format: StatusFormat, ended: &SessionEnd, attach: bool) {
    let status = match ended {
        // Attach reports no exit code: the container's end is the container's business.
        SessionEnd::Exited(0) => json!({"metadata": {}, "status": "Success"}),
        SessionEnd::Exited(_) if attach => json!({"metadata": {}, "status": "Success"}),
        SessionEnd::Exited(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        SessionEnd::Failed(message) => json!({
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "InternalError",
            "details": {"causes": [{"message": message}]},
            "code": 500,
        }),
    };
    let body = match format {
        StatusFormat::Json => Some(status.to_string()),
        StatusFormat::Text => match status["status"].as_str() {
            Some("Success") => None,
            _ => status["message"].as_str().map(str::to_string),
        },
    };
    if let Some(body) = body {
        let _ = error.write(body.as_bytes()).await;
    }
    error.close().await;
}
