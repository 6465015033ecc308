//! CRI PortForward (and the Exec/Attach URL checks) against the real daemon: a pod whose
//! container serves HTTP on 127.0.0.1 inside the pod's own network namespace, reached through
//! the daemon's streaming server over SPDY/3.1 and over WebSocket.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use capstan_integration::daemon::{Daemon, DaemonOptions};
use capstan_integration::image::ImageBuilder;
use capstan_integration::registry::Registry;
use capstan_integration::streaming::{spdy_connect, split_url};
use capstan_runtime::streaming::spdy::Headers;
use cri_proto::RuntimeServiceClient;
use cri_proto::v1;
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tonic::Code;
use tonic::transport::Channel;

type Rt = RuntimeServiceClient<Channel>;

/// Removes the pod when dropped, even when the test panicked half-way.
struct PodGuard {
    socket: PathBuf,
    pod: Option<String>,
}

impl Drop for PodGuard {
    fn drop(&mut self) {
        let Some(pod) = self.pod.take() else { return };
        let socket = self.socket.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let Ok(channel) = cri_proto::unix::connect(&socket).await else { return };
                let mut client = RuntimeServiceClient::new(channel);
                let _ = client.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: pod }).await;
            });
        })
        .join();
    }
}

fn pod_config(daemon: &Daemon) -> v1::PodSandboxConfig {
    v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata { name: "pf".into(), uid: "uid-pf".into(), namespace: "test".into(), attempt: 0 }),
        hostname: "pf".into(),
        log_directory: daemon.scratch().join("logs/pf").display().to_string(),
        ..Default::default()
    }
}

fn container(image: &str, port: u16) -> v1::ContainerConfig {
    // Listens on the pod's loopback only: reachable through the pod's netns, not the host's.
    let script = format!(
        "mkdir -p /tmp/www && echo hello-from-the-pod > /tmp/www/index.html && exec httpd -f -p 127.0.0.1:{port} -h /tmp/www"
    );
    v1::ContainerConfig {
        metadata: Some(v1::ContainerMetadata { name: "web".into(), attempt: 0 }),
        image: Some(v1::ImageSpec { image: image.into(), ..Default::default() }),
        command: vec!["sh".into(), "-c".into(), script],
        log_path: "web/0.log".into(),
        ..Default::default()
    }
}

const GET: &[u8] = b"GET /index.html HTTP/1.0\r\n\r\n";

/// One forwarded connection over SPDY: (what the pod answered, what the error stream said).
async fn fetch_over_spdy(rt: &mut Rt, pod: &str, port: u16) -> (String, String) {
    let url = rt
        .port_forward(v1::PortForwardRequest { pod_sandbox_id: pod.into(), port: vec![i32::from(port)] })
        .await
        .unwrap()
        .into_inner()
        .url;
    let conn = spdy_connect(&url, "portforward.k8s.io").await;
    let headers = |t: &str| Headers::new().with("streamType", t).with("port", &port.to_string()).with("requestID", "0");
    let mut error = conn.open(headers("error"), true).await.unwrap();
    let mut data = conn.open(headers("data"), false).await.unwrap();
    data.writer.write(GET).await.unwrap();
    let (answer, error) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(data.reader.read_to_end(), error.reader.read_to_end())
    })
    .await
    .expect("port-forward over SPDY hung");
    conn.close().await;
    (String::from_utf8_lossy(&answer).into_owned(), String::from_utf8_lossy(&error).into_owned())
}

async fn fetch_over_websocket(rt: &mut Rt, pod: &str, port: u16) -> (String, String) {
    // Ports in the URL, as WebSocket clients send them; the CRI request names none.
    let url = rt
        .port_forward(v1::PortForwardRequest { pod_sandbox_id: pod.into(), port: vec![] })
        .await
        .unwrap()
        .into_inner()
        .url;
    let (addr, _) = split_url(&url);
    let mut request = format!("{}?port={port}", url.replacen("http://", "ws://", 1)).into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "v4.channel.k8s.io".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::client_async(request, TcpStream::connect(addr).await.unwrap()).await.unwrap();
    let mut channels: [Vec<u8>; 2] = Default::default();
    let mut opened = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, ws.next()).await {
        match message.unwrap() {
            Message::Binary(b) if opened < 2 => {
                // Each channel opens with the port, little-endian.
                assert_eq!(&b[1..], port.to_le_bytes(), "channel {} did not open with the port", b[0]);
                opened += 1;
                if opened == 2 {
                    ws.send(Message::binary([&[0u8][..], GET].concat())).await.unwrap();
                }
            }
            Message::Binary(b) => channels[usize::from(b[0])].extend_from_slice(&b[1..]),
            Message::Close(_) => break,
            _ => {}
        }
    }
    let [data, error] = channels;
    (String::from_utf8_lossy(&data).into_owned(), String::from_utf8_lossy(&error).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn port_forward_reaches_a_server_inside_the_pod_network() {
    let registry = Registry::start().await;
    let image = ImageBuilder::busybox().push(&registry, "pf/busybox", &["1"]).await.references[0].clone();
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let mut img = daemon.image_client().await;
    let spec = v1::ImageSpec { image: image.clone(), ..Default::default() };
    img.pull_image(v1::PullImageRequest { image: Some(spec), auth: None, sandbox_config: None }).await.unwrap();
    let mut rt = daemon.runtime_client().await;
    let mut guard = PodGuard { socket: daemon.socket(), pod: None };

    let config = pod_config(&daemon);
    let pod = rt
        .run_pod_sandbox(v1::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    guard.pod = Some(pod.clone());
    // A port free on the host: if the forward did not go into the pod's netns, it would
    // find nothing there.
    let port = capstan_integration::free_port();
    let request = v1::CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(container(&image, port)),
        sandbox_config: Some(config.clone()),
    };
    let cid = rt.create_container(request).await.unwrap().into_inner().container_id;
    rt.start_container(v1::StartContainerRequest { container_id: cid.clone() }).await.unwrap();

    // httpd needs a moment to listen; until then the error stream says why.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (answer, error) = loop {
        let (answer, error) = fetch_over_spdy(&mut rt, &pod, port).await;
        if error.is_empty() || Instant::now() > deadline {
            break (answer, error);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(error.is_empty(), "error stream: {error}\ndaemon log:\n{}", daemon.log());
    assert!(answer.starts_with("HTTP/1.") && answer.contains("hello-from-the-pod"), "{answer}");
    assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err(), "the port is open on the host too: the test proves nothing");

    let (answer, error) = fetch_over_websocket(&mut rt, &pod, port).await;
    assert!(error.is_empty(), "error channel: {error}");
    assert!(answer.contains("hello-from-the-pod"), "{answer}");

    // A port nobody listens on: the error stream says so, the connection stays usable.
    let (answer, error) = fetch_over_spdy(&mut rt, &pod, port + 1).await;
    assert!(answer.is_empty());
    assert!(error.contains(&format!("error forwarding port {}", port + 1)), "{error}");

    // The CRI calls' own checks.
    let status = |r: Result<tonic::Response<v1::PortForwardResponse>, tonic::Status>| r.unwrap_err().code();
    let pf = |id: &str, ports: Vec<i32>| v1::PortForwardRequest { pod_sandbox_id: id.into(), port: ports };
    assert_eq!(status(rt.port_forward(pf("no-such-pod", vec![80])).await), Code::NotFound);
    assert_eq!(status(rt.port_forward(pf(&pod, vec![70000])).await), Code::InvalidArgument);
    let exec = |cmd: &[&str], tty: bool, stderr: bool| v1::ExecRequest {
        container_id: cid.clone(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin: false,
        stdout: true,
        stderr,
    };
    let url = rt.exec(exec(&["sh"], false, true)).await.unwrap().into_inner().url;
    assert!(url.starts_with("http://127.0.0.1:") && url.contains("/exec/"), "{url}");
    assert_eq!(rt.exec(exec(&[], false, true)).await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(rt.exec(exec(&["sh"], true, true)).await.unwrap_err().code(), Code::InvalidArgument);
    let mut missing = exec(&["sh"], false, true);
    missing.container_id = "no-such-container".into();
    assert_eq!(rt.exec(missing).await.unwrap_err().code(), Code::NotFound);
    let attach = v1::AttachRequest { container_id: cid.clone(), stdout: true, ..Default::default() };
    assert!(rt.attach(attach).await.unwrap().into_inner().url.contains("/attach/"));

    // A stopped pod cannot be forwarded to.
    rt.stop_pod_sandbox(v1::StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
    assert_eq!(status(rt.port_forward(pf(&pod, vec![i32::from(port)])).await), Code::FailedPrecondition);
    let attach = v1::AttachRequest { container_id: cid.clone(), stdout: true, ..Default::default() };
    assert_eq!(rt.attach(attach).await.unwrap_err().code(), Code::FailedPrecondition);
    rt.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
    guard.pod = None;

    // A host-network pod: the forward reaches the host's own loopback.
    let mut config = pod_config(&daemon);
    config.metadata.as_mut().unwrap().name = "pf-host".into();
    config.metadata.as_mut().unwrap().uid = "uid-pf-host".into();
    config.linux = Some(v1::LinuxPodSandboxConfig {
        security_context: Some(v1::LinuxSandboxSecurityContext {
            namespace_options: Some(v1::NamespaceOption { network: v1::NamespaceMode::Node as i32, ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let pod = rt
        .run_pod_sandbox(v1::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    guard.pod = Some(pod.clone());
    let host_server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host_port = host_server.local_addr().unwrap().port();
    tokio::spawn(async move {
        if let Ok((mut s, _)) = host_server.accept().await {
            let _ = s.write_all(b"hello-from-the-host").await;
        }
    });
    let (answer, error) = fetch_over_spdy(&mut rt, &pod, host_port).await;
    assert!(error.is_empty(), "{error}");
    assert_eq!(answer, "hello-from-the-host");
    rt.stop_pod_sandbox(v1::StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
    rt.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
    guard.pod = None;
}
