//! `crictl exec -it` / `crictl attach` end to end: CRI Exec and Attach hand out URLs on the
//! real daemon's streaming server; clients written here speak SPDY/3.1 (kubectl's and
//! kubelet's default) and WebSocket (v5/v4 channel protocols) to them, and the sessions
//! run inside real containers through the pod's monitor.

use std::time::Duration;

use capstan_integration::daemon::{Daemon, DaemonOptions};
use capstan_integration::image::ImageBuilder;
use capstan_integration::pods::Cleanup;
use capstan_integration::registry::Registry;
use capstan_integration::streaming::{spdy_connect, websocket_connect};
use capstan_runtime::streaming::spdy::Headers;
use cri_proto::RuntimeServiceClient;
use cri_proto::v1;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tonic::transport::Channel;

type Rt = RuntimeServiceClient<Channel>;

struct Env {
    _registry: Registry,
    daemon: Daemon,
    rt: Rt,
    image: String,
}

async fn env() -> Env {
    let registry = Registry::start().await;
    let image = ImageBuilder::busybox().push(&registry, "stream/busybox", &["1"]).await.references[0].clone();
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let spec = v1::ImageSpec { image: image.clone(), ..Default::default() };
    daemon.image_client().await.pull_image(v1::PullImageRequest { image: Some(spec), auth: None, sandbox_config: None }).await.unwrap();
    let rt = daemon.runtime_client().await;
    Env { _registry: registry, daemon, rt, image }
}

fn pod_config(daemon: &Daemon, name: &str) -> v1::PodSandboxConfig {
    v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata { name: name.into(), uid: format!("uid-{name}"), namespace: "test".into(), attempt: 0 }),
        hostname: name.into(),
        log_directory: daemon.scratch().join("logs").join(name).display().to_string(),
        linux: Some(v1::LinuxPodSandboxConfig {
            security_context: Some(v1::LinuxSandboxSecurityContext {
                namespace_options: Some(v1::NamespaceOption {
                    network: v1::NamespaceMode::Node as i32,
                    pid: v1::NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A running container in a new pod: `command` as its process, `stdin` as CRI asks.
async fn running(env: &mut Env, name: &str, command: &[&str], stdin: bool, tty: bool) -> (Cleanup, String) {
    let config = pod_config(&env.daemon, name);
    let pod = env
        .rt
        .run_pod_sandbox(v1::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let mut guard = Cleanup::new(&env.daemon);
    guard.pods.push(pod.clone());
    let container = v1::ContainerConfig {
        metadata: Some(v1::ContainerMetadata { name: "main".into(), attempt: 0 }),
        image: Some(v1::ImageSpec { image: env.image.clone(), ..Default::default() }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: "main/0.log".into(),
        stdin,
        tty,
        ..Default::default()
    };
    let request = v1::CreateContainerRequest { pod_sandbox_id: pod, config: Some(container), sandbox_config: Some(config) };
    let id = env.rt.create_container(request).await.unwrap().into_inner().container_id;
    env.rt.start_container(v1::StartContainerRequest { container_id: id.clone() }).await.unwrap();
    (guard, id)
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Reads WebSocket messages into per-channel buffers until the server closes or `done`
/// says enough.
async fn collect_ws(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    done: impl Fn(&[Vec<u8>; 4]) -> bool,
) -> [Vec<u8>; 4] {
    let mut channels: [Vec<u8>; 4] = Default::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, ws.next()).await {
        match message {
            Ok(Message::Binary(b)) if !b.is_empty() && usize::from(b[0]) < 4 => channels[usize::from(b[0])].extend_from_slice(&b[1..]),
            Ok(Message::Close(_)) | Err(_) => break,
            _ => {}
        }
        if done(&channels) {
            break;
        }
    }
    channels
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_over_websocket_v5_with_stdin_and_exit_code() {
    let mut env = env().await;
    let (_guard, id) = running(&mut env, "ws-exec", &["sleep", "3600"], false, false).await;
    let request = v1::ExecRequest {
        container_id: id,
        cmd: strings(&["sh", "-c", "read line; echo got:$line; echo oops >&2; exit 4"]),
        tty: false,
        stdin: true,
        stdout: true,
        stderr: true,
    };
    let url = env.rt.exec(request).await.unwrap().into_inner().url;
    let mut ws = websocket_connect(&url, "", "v5.channel.k8s.io").await;
    ws.send(Message::binary([&[0u8][..], b"hello\n"].concat())).await.unwrap();
    // v5: closing stdin is channel 255 naming the channel.
    ws.send(Message::binary(vec![255u8, 0])).await.unwrap();
    let [_, stdout, stderr, error] = collect_ws(&mut ws, |_| false).await;
    assert_eq!(text(&stdout), "got:hello\n");
    assert_eq!(text(&stderr), "oops\n");
    let status: serde_json::Value = serde_json::from_slice(&error).unwrap_or_else(|e| panic!("error channel {:?}: {e}", text(&error)));
    assert_eq!(status["status"], "Failure", "{status}");
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    assert_eq!(status["details"]["causes"][0]["message"], "4", "{status}");

    // The token was single-use.
    let (addr, path) = capstan_integration::streaming::split_url(&url);
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_over_spdy_with_a_terminal_that_resizes() {
    let mut env = env().await;
    let (_guard, id) = running(&mut env, "spdy-exec", &["sleep", "3600"], false, false).await;
    let request = v1::ExecRequest {
        container_id: id,
        // Give the resize a moment to land before asking the terminal its size.
        cmd: strings(&["sh", "-c", "sleep 1; stty size; exit 3"]),
        tty: true,
        stdin: true,
        stdout: true,
        stderr: false,
    };
    let url = env.rt.exec(request).await.unwrap().into_inner().url;
    let conn = spdy_connect(&url, "v4.channel.k8s.io").await;
    let mut error = conn.open(Headers::new().with("streamType", "error"), true).await.unwrap();
    let stdin = conn.open(Headers::new().with("streamType", "stdin"), false).await.unwrap();
    let mut stdout = conn.open(Headers::new().with("streamType", "stdout"), true).await.unwrap();
    let resize = conn.open(Headers::new().with("streamType", "resize"), false).await.unwrap();
    resize.writer.write(br#"{"Width":123,"Height":45}"#).await.unwrap();
    let (out, err) = tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(stdout.reader.read_to_end(), error.reader.read_to_end()) })
        .await
        .expect("exec over SPDY hung");
    drop(stdin);
    conn.close().await;
    assert!(text(&out).contains("45 123"), "terminal size not applied: {:?}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&err).unwrap_or_else(|e| panic!("error stream {:?}: {e}", text(&err)));
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    assert_eq!(status["details"]["causes"][0]["message"], "3", "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_over_websocket_reaches_the_containers_own_stdio() {
    let mut env = env().await;
    let script = "while read line; do echo got:$line; done";
    let (_guard, id) = running(&mut env, "ws-attach", &["sh", "-c", script], true, false).await;
    let request = v1::AttachRequest { container_id: id.clone(), stdin: true, tty: false, stdout: true, stderr: true };
    let url = env.rt.attach(request).await.unwrap().into_inner().url;
    let mut ws = websocket_connect(&url, "", "v4.channel.k8s.io").await;
    ws.send(Message::binary([&[0u8][..], b"ping\n"].concat())).await.unwrap();
    let channels = collect_ws(&mut ws, |c| text(&c[1]).contains("got:ping")).await;
    assert!(text(&channels[1]).contains("got:ping"), "attach saw {:?}", text(&channels[1]));
    drop(ws);

    // Detaching leaves the container running; a second attach works too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = env.rt.container_status(v1::ContainerStatusRequest { container_id: id.clone(), verbose: false }).await.unwrap().into_inner();
    assert_eq!(status.status.unwrap().state, v1::ContainerState::ContainerRunning as i32);
    let request = v1::AttachRequest { container_id: id, stdin: true, tty: false, stdout: true, stderr: false };
    let url = env.rt.attach(request).await.unwrap().into_inner().url;
    let conn = spdy_connect(&url, "v4.channel.k8s.io").await;
    let _error = conn.open(Headers::new().with("streamType", "error"), true).await.unwrap();
    let stdin = conn.open(Headers::new().with("streamType", "stdin"), false).await.unwrap();
    let mut stdout = conn.open(Headers::new().with("streamType", "stdout"), true).await.unwrap();
    stdin.writer.write(b"again\n").await.unwrap();
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(chunk) = stdout.reader.recv().await {
            seen.extend_from_slice(&chunk);
            if text(&seen).contains("got:again") {
                break;
            }
        }
    })
    .await;
    assert!(text(&seen).contains("got:again"), "second attach saw {:?}", text(&seen));
    conn.close().await;
}
