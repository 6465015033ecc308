//! The streaming server end to end on loopback: a test backend whose exec runs real local
//! processes (`/bin/sh -c ...`), driven by a SPDY client built on our framing and by a
//! tokio-tungstenite WebSocket client, the way kubelet/kubectl and crictl drive it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capstan_runtime::streaming::cache::StreamRequest;
use capstan_runtime::streaming::server::{StreamingOptions, StreamingServer};
use capstan_runtime::streaming::spdy::{Connection, Headers, Role};
use capstan_runtime::streaming::{Backend, Session, SessionEnd, StreamOptions, TerminalSize};
use capstan_runtime::{Error, Result};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Runs exec'd commands as local processes; port-forward reaches 127.0.0.1.
#[derive(Default)]
struct LocalBackend {
    sizes: Mutex<Option<mpsc::UnboundedSender<TerminalSize>>>,
}

impl Backend for LocalBackend {
    async fn exec(&self, _container_id: &str, cmd: Vec<String>, options: StreamOptions) -> Result<Session> {
        let pipe = |on: bool| if on { std::process::Stdio::piped() } else { std::process::Stdio::null() };
        let mut child = Command::new(&cmd[0])
            .args(&cmd[1..])
            .stdin(pipe(options.stdin))
            .stdout(pipe(options.stdout))
            .stderr(pipe(options.stderr && !options.tty))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::Internal(e.to_string()))?;
        let resize = self.sizes.lock().unwrap().clone().filter(|_| options.tty);
        Ok(Session {
            stdin: child.stdin.take().map(|s| Box::new(s) as _),
            stdout: child.stdout.take().map(|s| Box::new(s) as _),
            stderr: child.stderr.take().map(|s| Box::new(s) as _),
            resize,
            end: Box::pin(async move {
                match child.wait().await {
                    Ok(status) => SessionEnd::Exited(status.code().unwrap_or(255)),
                    Err(e) => SessionEnd::Failed(e.to_string()),
                }
            }),
        })
    }

    async fn attach(&self, container_id: &str, _options: StreamOptions) -> Result<Session> {
        Err(Error::NotFound { kind: "container", id: container_id.into() })
    }

    async fn port_forward(&self, _pod_id: &str, port: u16) -> Result<TcpStream> {
        TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| Error::Unavailable(e.to_string()))
    }
}

async fn server_with(ttl: Duration) -> (StreamingServer, Arc<LocalBackend>) {
    let backend = Arc::new(LocalBackend::default());
    let options = StreamingOptions { token_ttl: ttl, ..Default::default() };
    (StreamingServer::start(options, backend.clone()).await.unwrap(), backend)
}

async fn server() -> (StreamingServer, Arc<LocalBackend>) {
    server_with(Duration::from_secs(60)).await
}

fn exec(script: &str, stdin: bool, tty: bool) -> StreamRequest {
    StreamRequest::Exec {
        container_id: "c".into(),
        cmd: vec!["/bin/sh".into(), "-c".into(), script.into()],
        options: StreamOptions { tty, stdin, stdout: true, stderr: !tty },
    }
}

/// Splits `http://127.0.0.1:port/path?query` into address and path.
fn split_url(url: &str) -> (SocketAddr, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let slash = rest.find('/').unwrap();
    (rest[..slash].parse().unwrap(), rest[slash..].to_string())
}

/// Upgrades to SPDY/3.1 offering `protocols`; returns the connection and the negotiated
/// protocol, or the HTTP status and body of a refusal.
async fn spdy_connect(url: &str, protocols: &[&str]) -> std::result::Result<(Connection, String), (u16, String)> {
    let (addr, path) = split_url(url);
    spdy_handshake(TcpStream::connect(addr).await.unwrap(), addr, &path, protocols).await
}

async fn spdy_handshake<S>(mut io: S, addr: SocketAddr, path: &str, protocols: &[&str]) -> std::result::Result<(Connection, String), (u16, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let mut request = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n");
    for p in protocols {
        request += &format!("X-Stream-Protocol-Version: {p}\r\n");
    }
    request += "Content-Length: 0\r\n\r\n";
    io.write_all(request.as_bytes()).await.unwrap();
    io.flush().await.unwrap();
    // Byte by byte: nothing after the blank line may be swallowed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        if io.read(&mut b).await.unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    if status != 101 {
        // The connection stays open (keep-alive): read what arrives within a moment.
        let mut body = Vec::new();
        let mut buf = [0u8; 1024];
        while let Ok(Ok(n @ 1..)) = tokio::time::timeout(Duration::from_millis(500), io.read(&mut buf)).await {
            body.extend_from_slice(&buf[..n]);
        }
        return Err((status, head + &String::from_utf8_lossy(&body)));
    }
    let negotiated = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("x-stream-protocol-version:").map(|v| v.trim().to_string()))
        .unwrap_or_default();
    Ok((Connection::new(io, Role::Client), negotiated))
}

struct Outcome {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    error: Vec<u8>,
}

/// kubectl's order: error, stdin, stdout, stderr streams; stdin written then half-closed.
async fn spdy_exec(url: &str, protocol: &str, stdin: Option<&[u8]>) -> Outcome {
    let (conn, negotiated) = spdy_connect(url, &[protocol]).await.unwrap();
    assert_eq!(negotiated, protocol);
    let stream = |t: &str| Headers::new().with("streamType", t);
    let mut error = conn.open(stream("error"), false).await.unwrap();
    let stdin_stream = match stdin {
        Some(_) => Some(conn.open(stream("stdin"), false).await.unwrap()),
        None => None,
    };
    let mut stdout = conn.open(stream("stdout"), false).await.unwrap();
    let mut stderr = conn.open(stream("stderr"), false).await.unwrap();
    if let (Some(s), Some(data)) = (stdin_stream, stdin) {
        s.writer.write(data).await.unwrap();
        s.writer.close().await.unwrap();
    }
    let (stdout, stderr, error) = tokio::time::timeout(
        Duration::from_secs(20),
        async { tokio::join!(stdout.reader.read_to_end(), stderr.reader.read_to_end(), error.reader.read_to_end()) },
    )
    .await
    .expect("exec session did not finish");
    Outcome { stdout, stderr, error }
}

fn status(error: &[u8]) -> serde_json::Value {
    serde_json::from_slice(error).unwrap_or_else(|e| panic!("error stream {:?}: {e}", String::from_utf8_lossy(error)))
}

#[tokio::test]
async fn spdy_exec_separates_stdout_and_stderr_and_reports_success() {
    let (server, _) = server().await;
    let url = server.url(exec("echo out; echo err >&2", false, false)).unwrap();
    let out = spdy_exec(&url, "v4.channel.k8s.io", None).await;
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(status(&out.error)["status"], "Success");
    server.shutdown().await;
}

#[tokio::test]
async fn spdy_exec_feeds_stdin_and_reports_the_exit_code() {
    let (server, _) = server().await;
    let url = server.url(exec("cat; exit 3", true, false)).unwrap();
    let big: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let out = spdy_exec(&url, "v5.channel.k8s.io", Some(&big)).await;
    assert_eq!(out.stdout.len(), big.len());
    assert!(out.stdout == big, "stdin came back changed");
    let s = status(&out.error);
    assert_eq!(s["status"], "Failure");
    assert_eq!(s["reason"], "NonZeroExitCode");
    assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(s["details"]["causes"][0]["message"], "3");
    server.shutdown().await;
}

#[tokio::test]
async fn spdy_v2_reports_errors_as_text_and_success_as_nothing() {
    let (server, _) = server().await;
    let ok = spdy_exec(&server.url(exec("echo hi", false, false)).unwrap(), "v2.channel.k8s.io", None).await;
    assert_eq!(ok.stdout, b"hi\n");
    assert!(ok.error.is_empty(), "{:?}", String::from_utf8_lossy(&ok.error));
    let bad = spdy_exec(&server.url(exec("exit 5", false, false)).unwrap(), "v2.channel.k8s.io", None).await;
    let text = String::from_utf8(bad.error).unwrap();
    assert!(text.contains("non-zero exit code") && text.contains('5'), "{text}");
    server.shutdown().await;
}

#[tokio::test]
async fn spdy_tty_session_gets_resize_events() {
    let (server, backend) = server().await;
    let (tx, mut sizes) = mpsc::unbounded_channel();
    *backend.sizes.lock().unwrap() = Some(tx);
    let url = server.url(exec("read line; echo got $line", true, true)).unwrap();
    let (conn, _) = spdy_connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
    let stream = |t: &str| Headers::new().with("streamtype", t);
    let mut error = conn.open(stream("error"), false).await.unwrap();
    let stdin = conn.open(stream("stdin"), false).await.unwrap();
    let mut stdout = conn.open(stream("stdout"), false).await.unwrap();
    let resize = conn.open(stream("resize"), false).await.unwrap();
    // Two events, the second split across frames.
    resize.writer.write(br#"{"Width":80,"Height":24}{"Width":1"#).await.unwrap();
    resize.writer.write(br#"20,"Height":40}"#).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), sizes.recv()).await.unwrap().unwrap();
    let second = tokio::time::timeout(Duration::from_secs(10), sizes.recv()).await.unwrap().unwrap();
    assert_eq!((first.width, first.height, second.width, second.height), (80, 24, 120, 40));
    stdin.writer.write(b"x\n").await.unwrap();
    assert_eq!(stdout.reader.read_to_end().await, b"got x\n");
    assert_eq!(status(&error.reader.read_to_end().await)["status"], "Success");
    server.shutdown().await;
}

#[tokio::test]
async fn a_backend_error_is_reported_on_the_error_stream() {
    let (server, _) = server().await;
    let options = StreamOptions { stdout: true, ..Default::default() };
    let url = server.url(StreamRequest::Attach { container_id: "gone".into(), options }).unwrap();
    let (conn, _) = spdy_connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
    let mut error = conn.open(Headers::new().with("streamtype", "error"), false).await.unwrap();
    let _stdout = conn.open(Headers::new().with("streamtype", "stdout"), false).await.unwrap();
    let s = status(&error.reader.read_to_end().await);
    assert_eq!(s["status"], "Failure");
    assert!(s["message"].as_str().unwrap().contains("gone"), "{s}");
    server.shutdown().await;
}

#[tokio::test]
async fn tokens_are_single_use_expire_and_belong_to_one_kind() {
    let (server, _) = server_with(Duration::from_millis(200)).await;
    let url = server.url(exec("true", false, false)).unwrap();
    let out = spdy_exec(&url, "v4.channel.k8s.io", None).await;
    assert_eq!(status(&out.error)["status"], "Success");
    let (code, body) = spdy_connect(&url, &["v4.channel.k8s.io"]).await.err().expect("reused token accepted");
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("not found or expired"), "{body}");

    let late = server.url(exec("true", false, false)).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(spdy_connect(&late, &["v4.channel.k8s.io"]).await.err().unwrap().0, 404);

    let exec_url = server.url(exec("true", false, false)).unwrap();
    let as_attach = exec_url.replace("/exec/", "/attach/");
    assert_eq!(spdy_connect(&as_attach, &["v4.channel.k8s.io"]).await.err().unwrap().0, 404);
    // ... and that attempt used the token up.
    assert_eq!(spdy_connect(&exec_url, &["v4.channel.k8s.io"]).await.err().unwrap().0, 404);
    server.shutdown().await;
}

#[tokio::test]
async fn an_unknown_protocol_is_refused() {
    let (server, _) = server().await;
    let url = server.url(exec("true", false, false)).unwrap();
    let (code, body) = spdy_connect(&url, &["v9.channel.k8s.io"]).await.err().unwrap();
    assert_eq!(code, 403, "{body}");
    server.shutdown().await;
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn ws_connect(url: &str, protocol: &str) -> Ws {
    let (addr, _) = split_url(url);
    let mut request = url.replacen("http://", "ws://", 1).into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (ws, response) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], protocol);
    ws
}

/// Collects channel 1, 2 and 3 until the server closes.
async fn ws_collect(ws: &mut Ws) -> [Vec<u8>; 4] {
    let mut channels: [Vec<u8>; 4] = Default::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, ws.next()).await {
        match message.unwrap() {
            Message::Binary(b) => channels[usize::from(b[0])].extend_from_slice(&b[1..]),
            Message::Close(_) => break,
            _ => {}
        }
    }
    channels
}

#[tokio::test]
async fn websocket_v5_exec_with_stdin_close_signal() {
    let (server, _) = server().await;
    let url = server.url(exec("cat; echo done >&2", true, false)).unwrap();
    let mut ws = ws_connect(&url, "v5.channel.k8s.io").await;
    ws.send(Message::binary(b"\x00hello ".to_vec())).await.unwrap();
    ws.send(Message::binary(b"\x00world".to_vec())).await.unwrap();
    // v5: "I am done with stdin" — cat sees EOF and the command ends.
    ws.send(Message::binary(vec![255, 0])).await.unwrap();
    let [_, stdout, stderr, error] = ws_collect(&mut ws).await;
    assert_eq!(stdout, b"hello world");
    assert_eq!(stderr, b"done\n");
    assert_eq!(status(&error)["status"], "Success");
    server.shutdown().await;
}

#[tokio::test]
async fn websocket_v4_exec_reports_the_exit_code() {
    let (server, _) = server().await;
    let url = server.url(exec("echo out; echo err >&2; exit 7", false, false)).unwrap();
    let mut ws = ws_connect(&url, "v4.channel.k8s.io").await;
    let [_, stdout, stderr, error] = ws_collect(&mut ws).await;
    assert_eq!((stdout.as_slice(), stderr.as_slice()), (&b"out\n"[..], &b"err\n"[..]));
    let s = status(&error);
    assert_eq!(s["reason"], "NonZeroExitCode");
    assert_eq!(s["details"]["causes"][0]["message"], "7");
    server.shutdown().await;
}

#[tokio::test]
async fn websocket_base64_exec() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (server, _) = server().await;
    let url = server.url(exec("echo hi", false, false)).unwrap();
    let mut ws = ws_connect(&url, "v4.base64.channel.k8s.io").await;
    let mut stdout = Vec::new();
    while let Some(Ok(message)) = ws.next().await {
        match message {
            Message::Text(t) if t.starts_with('1') => stdout.extend(b64.decode(&t.as_bytes()[1..]).unwrap()),
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert_eq!(stdout, b"hi\n");
    server.shutdown().await;
}

/// A TCP server on loopback answering each line with "echo:" + the line, once.
async fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1024];
                let mut got = Vec::new();
                while !got.ends_with(b"\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(&[b"echo:".as_slice(), &got].concat()).await;
            });
        }
    });
    port
}

/// A loopback port nothing listens on.
async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn spdy_port_forward_carries_several_connections_and_reports_failures() {
    let (server, _) = server().await;
    let port = echo_server().await;
    let dead = closed_port().await;
    let url = server.url(StreamRequest::PortForward { pod_id: "p".into(), ports: vec![] }).unwrap();
    let (conn, negotiated) = spdy_connect(&url, &["portforward.k8s.io"]).await.unwrap();
    assert_eq!(negotiated, "portforward.k8s.io");
    let headers = |t: &str, port: u16, id: u32| {
        Headers::new().with("streamType", t).with("port", &port.to_string()).with("requestID", &id.to_string())
    };
    for request in 0..3u32 {
        let mut error = conn.open(headers("error", port, request), true).await.unwrap();
        let mut data = conn.open(headers("data", port, request), false).await.unwrap();
        data.writer.write(format!("ping {request}\n").as_bytes()).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(10), data.reader.read_to_end()).await.unwrap();
        assert_eq!(answer, format!("echo:ping {request}\n").as_bytes());
        assert!(error.reader.read_to_end().await.is_empty());
    }
    let mut error = conn.open(headers("error", dead, 9), true).await.unwrap();
    let _data = conn.open(headers("data", dead, 9), false).await.unwrap();
    let message = String::from_utf8(error.reader.read_to_end().await).unwrap();
    assert!(message.contains(&format!("error forwarding port {dead}")), "{message}");
    conn.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn websocket_port_forward_prefixes_channels_with_the_port() {
    let (server, _) = server().await;
    let port = echo_server().await;
    let url = server.url(StreamRequest::PortForward { pod_id: "p".into(), ports: vec![] }).unwrap();
    let mut ws = ws_connect(&format!("{url}?port={port}"), "v4.channel.k8s.io").await;
    let mut firsts = Vec::new();
    while firsts.len() < 2 {
        if let Message::Binary(b) = ws.next().await.unwrap().unwrap() {
            firsts.push(b.to_vec());
        }
    }
    let le = port.to_le_bytes();
    firsts.sort();
    assert_eq!(firsts, vec![vec![0, le[0], le[1]], vec![1, le[0], le[1]]]);
    ws.send(Message::binary([&[0u8][..], b"over ws\n"].concat())).await.unwrap();
    let [data, error, ..] = ws_collect(&mut ws).await;
    assert_eq!(data, b"echo:over ws\n");
    assert!(error.is_empty());
    server.shutdown().await;
}

// kubectl itself as the client (client-go's SPDY and WebSocket executors, moby/spdystream),
// through a stand-in API server that answers the few reads kubectl makes and splices the
// exec/portforward upgrade to the streaming URL, the way kubelet's proxy does. Skipped
// (with a message) where kubectl is not installed.

/// Serves discovery, one pod `p` with container `c`, and hands each streaming request to
/// the next queued streaming URL.
struct FakeApiServer {
    addr: SocketAddr,
    urls: Arc<Mutex<std::collections::VecDeque<String>>>,
    seen: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
    kubeconfig: std::path::PathBuf,
}

impl FakeApiServer {
    async fn start() -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let urls: Arc<Mutex<std::collections::VecDeque<String>>> = Arc::default();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let (u, s) = (urls.clone(), seen.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(api_connection(tcp, u.clone(), s.clone()));
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: http://{addr}\n\
                 contexts:\n- name: t\n  context:\n    cluster: t\n    user: u\n    namespace: default\n\
                 current-context: t\nusers:\n- name: u\n  user: {{}}\n"
            ),
        )
        .unwrap();
        FakeApiServer { addr, urls, seen, _dir: dir, kubeconfig }
    }

    fn queue(&self, url: String) {
        self.urls.lock().unwrap().push_back(url);
    }

    fn kubectl(&self, websockets: bool) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .env("HOME", self._dir.path())
            .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", websockets.to_string())
            .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets.to_string())
            .kill_on_drop(true);
        cmd
    }

    fn seen(&self) -> String {
        format!("{} requests: {:?}", self.addr, self.seen.lock().unwrap())
    }
}

async fn read_head(tcp: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        if tcp.read(&mut b).await.ok()? == 0 {
            return None;
        }
        head.push(b[0]);
    }
    String::from_utf8(head).ok()
}

async fn api_connection(mut tcp: TcpStream, urls: Arc<Mutex<std::collections::VecDeque<String>>>, seen: Arc<Mutex<Vec<String>>>) {
    while let Some(head) = read_head(&mut tcp).await {
        let mut words = head.split(' ');
        let (method, target) = (words.next().unwrap_or_default().to_string(), words.next().unwrap_or_default().to_string());
        let upgrade = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("upgrade:").map(|v| v.trim().to_string()))
            .unwrap_or_default();
        seen.lock().unwrap().push(format!("{method} {target} upgrade={upgrade}"));
        let length: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        if tcp.read_exact(&mut body).await.is_err() {
            return;
        }
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        if path.ends_with("/exec") || path.ends_with("/portforward") || path.ends_with("/attach") {
            let Some(url) = urls.lock().unwrap().pop_front() else { return };
            let (addr, upstream_path) = split_url(&url);
            let mut upstream = TcpStream::connect(addr).await.unwrap();
            let rest = head.split_once("\r\n").map(|(_, r)| r).unwrap_or_default();
            let line = format!("{method} {upstream_path}?{query} HTTP/1.1\r\n");
            upstream.write_all([line.as_bytes(), rest.as_bytes(), &body].concat().as_slice()).await.unwrap();
            let _ = tokio::io::copy_bidirectional(&mut tcp, &mut upstream).await;
            return;
        }
        let (code, json) = match path {
            "/api" => (200, r#"{"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[]}"#.to_string()),
            "/apis" => (200, r#"{"kind":"APIGroupList","apiVersion":"v1","groups":[]}"#.to_string()),
            "/api/v1" => (
                200,
                r#"{"kind":"APIResourceList","groupVersion":"v1","resources":[
                    {"name":"pods","singularName":"pod","namespaced":true,"kind":"Pod","verbs":["get","list"],"shortNames":["po"]},
                    {"name":"pods/exec","singularName":"","namespaced":true,"kind":"PodExecOptions","verbs":["create","get"]},
                    {"name":"pods/portforward","singularName":"","namespaced":true,"kind":"PodPortForwardOptions","verbs":["create","get"]}]}"#
                    .to_string(),
            ),
            "/api/v1/namespaces/default/pods/p" => (
                200,
                r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"default","uid":"u1"},
                    "spec":{"containers":[{"name":"c","image":"busybox"}]},
                    "status":{"phase":"Running","containerStatuses":[{"name":"c","ready":true,"restartCount":0,"image":"busybox","imageID":"","state":{"running":{}}}]}}"#
                    .to_string(),
            ),
            _ => (404, r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#.to_string()),
        };
        let response = format!(
            "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
            json.len()
        );
        if tcp.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn have_kubectl() -> bool {
    let found = std::process::Command::new("kubectl").arg("version").arg("--client").output().is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipped: kubectl is not installed");
    }
    found
}

async fn kubectl_exec(api: &FakeApiServer, server: &StreamingServer, websockets: bool) {
    api.queue(server.url(exec("echo out; echo err >&2; exit 3", false, false)).unwrap());
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        api.kubectl(websockets).args(["exec", "p", "--", "sh", "-c", "ignored: the CRI request decides"]).output(),
    )
    .await
    .expect("kubectl exec hung")
    .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "stdout {stdout:?} stderr {stderr:?} {}", api.seen());
    assert_eq!(stdout, "out\n");
    assert!(stderr.starts_with("err\n"), "{stderr:?}");

    // stdin through `-i`, to EOF.
    let options = StreamOptions { stdin: true, stdout: true, stderr: true, tty: false };
    let cmd = vec!["/bin/sh".into(), "-c".into(), "tr a-z A-Z".into()];
    api.queue(server.url(StreamRequest::Exec { container_id: "c".into(), cmd, options }).unwrap());
    let mut child = api
        .kubectl(websockets)
        .args(["exec", "-i", "p", "--", "tr"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello from kubectl\n").await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await.expect("kubectl exec -i hung").unwrap();
    assert!(out.status.success(), "{:?} {}", String::from_utf8_lossy(&out.stderr), api.seen());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO FROM KUBECTL\n");
}

#[tokio::test]
async fn kubectl_exec_over_spdy() {
    if !have_kubectl() {
        return;
    }
    let (server, _) = server().await;
    let api = FakeApiServer::start().await;
    kubectl_exec(&api, &server, false).await;
    assert!(api.seen().contains("upgrade=spdy/3.1") && !api.seen().contains("upgrade=websocket"), "{}", api.seen());
    server.shutdown().await;
}

#[tokio::test]
async fn kubectl_exec_over_websocket() {
    if !have_kubectl() {
        return;
    }
    let (server, _) = server().await;
    let api = FakeApiServer::start().await;
    kubectl_exec(&api, &server, true).await;
    assert!(api.seen().contains("upgrade=websocket") && !api.seen().contains("upgrade=spdy"), "{}", api.seen());
    server.shutdown().await;
}

#[tokio::test]
async fn kubectl_port_forward_over_spdy() {
    kubectl_port_forward(false).await;
}

/// kubectl's default since 1.31: SPDY tunnelled through a WebSocket.
#[tokio::test]
async fn kubectl_port_forward_over_a_websocket_tunnel() {
    kubectl_port_forward(true).await;
}

async fn kubectl_port_forward(websockets: bool) {
    if !have_kubectl() {
        return;
    }
    let (server, _) = server().await;
    let api = FakeApiServer::start().await;
    let remote = echo_server().await;
    api.queue(server.url(StreamRequest::PortForward { pod_id: "p".into(), ports: vec![remote] }).unwrap());
    let mut child = api
        .kubectl(websockets)
        .args(["port-forward", "pod/p", &format!(":{remote}")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // "Forwarding from 127.0.0.1:<local> -> <remote>"
    let mut stdout = child.stdout.take().unwrap();
    let mut printed = String::new();
    let local: u16 = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let mut buf = [0u8; 256];
            let n = stdout.read(&mut buf).await.unwrap();
            assert!(n > 0, "kubectl port-forward ended: {printed} {}", api.seen());
            printed.push_str(&String::from_utf8_lossy(&buf[..n]));
            if let Some(rest) = printed.split("Forwarding from 127.0.0.1:").nth(1)
                && let Some((port, _)) = rest.split_once(' ')
            {
                return port.parse().unwrap();
            }
        }
    })
    .await
    .expect("kubectl port-forward did not start");
    for i in 0..3 {
        let mut tcp = TcpStream::connect(("127.0.0.1", local)).await.unwrap();
        tcp.write_all(format!("via kubectl {i}\n").as_bytes()).await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(20), tcp.read_to_string(&mut answer)).await.expect("no answer").unwrap();
        assert_eq!(answer, format!("echo:via kubectl {i}\n"));
    }
    child.kill().await.unwrap();
    let wanted = if websockets { "upgrade=websocket" } else { "upgrade=spdy/3.1" };
    assert!(api.seen().contains(wanted) && api.seen().matches("portforward").count() == 1, "{}", api.seen());
    server.shutdown().await;
}

/// A self-signed certificate for 127.0.0.1, made with the openssl CLI.
fn self_signed(dir: &std::path::Path) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=capstan-test", "-addext", "subjectAltName=IP:127.0.0.1"])
        // A leaf, not a CA: webpki refuses a CA certificate as a server's.
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-addext", "extendedKeyUsage=serverAuth", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .is_ok_and(|o| o.status.success());
    if !made {
        eprintln!("skipped: openssl cannot make a test certificate");
    }
    made.then_some((cert, key))
}

#[tokio::test]
async fn exec_over_tls() {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let dir = tempfile::tempdir().unwrap();
    let Some((cert, key)) = self_signed(dir.path()) else { return };
    // Mismatched files are refused at start.
    let wrong = StreamingOptions { tls: Some((cert.clone(), cert.clone())), ..Default::default() };
    assert!(StreamingServer::start(wrong, Arc::new(LocalBackend::default())).await.is_err());

    let options = StreamingOptions { tls: Some((cert.clone(), key)), ..Default::default() };
    let server = StreamingServer::start(options, Arc::new(LocalBackend::default())).await.unwrap();
    let url = server.url(exec("echo secret", false, false)).unwrap();
    let rest = url.strip_prefix("https://").expect("an https URL");
    let slash = rest.find('/').unwrap();
    let (addr, path): (SocketAddr, &str) = (rest[..slash].parse().unwrap(), &rest[slash..]);

    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(&cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(rustls::pki_types::ServerName::IpAddress(addr.ip().into()), TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    let (conn, _) = spdy_handshake(tls, addr, path, &["v4.channel.k8s.io"]).await.unwrap();
    let mut error = conn.open(Headers::new().with("streamtype", "error"), false).await.unwrap();
    let mut stdout = conn.open(Headers::new().with("streamtype", "stdout"), false).await.unwrap();
    let _stderr = conn.open(Headers::new().with("streamtype", "stderr"), false).await.unwrap();
    assert_eq!(stdout.reader.read_to_end().await, b"secret\n");
    assert_eq!(status(&error.reader.read_to_end().await)["status"], "Success");
    // Plain HTTP to the TLS port gets nowhere.
    let plain = url.replacen("https://", "http://", 1);
    let (addr, path) = split_url(&plain);
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    assert!(!answer.starts_with(b"HTTP/1.1 101"));
    server.shutdown().await;
}

/// Waits until the process whose pid the script wrote to `pid_file` is gone.
async fn wait_gone(pid_file: &std::path::Path) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let pid = loop {
        if let Ok(pid) = std::fs::read_to_string(pid_file)
            && !pid.trim().is_empty()
        {
            break pid.trim().to_string();
        }
        assert!(tokio::time::Instant::now() < deadline, "the exec'd process never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    // A zombie still has /proc/<pid>: it counts as gone.
    let alive = || std::fs::read_to_string(proc_dir.join("stat")).is_ok_and(|s| !s.contains(") Z "));
    while alive() {
        assert!(tokio::time::Instant::now() < deadline, "process {pid} outlived its client");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_client_that_goes_away_ends_the_exec() {
    let (server, _) = server().await;
    let dir = tempfile::tempdir().unwrap();
    for (i, transport) in ["spdy", "websocket"].into_iter().enumerate() {
        let pid_file = dir.path().join(format!("pid{i}"));
        let script = format!("echo $$ > {}; exec sleep 60", pid_file.display());
        let url = server.url(exec(&script, false, false)).unwrap();
        if transport == "spdy" {
            let (conn, _) = spdy_connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
            for t in ["error", "stdout", "stderr"] {
                conn.open(Headers::new().with("streamtype", t), false).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            drop(conn);
        } else {
            let ws = ws_connect(&url, "v5.channel.k8s.io").await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            drop(ws);
        }
        wait_gone(&pid_file).await;
    }
    server.shutdown().await;
}
