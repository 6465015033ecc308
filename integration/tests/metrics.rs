//! The Prometheus endpoint scraped while the test drives the real daemon: the RPC counts
//! it made, error codes, and pods by state.

use std::time::Duration;

use capstan_integration::daemon::{Daemon, DaemonOptions};
use capstan_integration::free_port;
use cri_proto::v1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn scrape(port: u16, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect to the metrics endpoint");
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut response)).await.expect("scrape timed out").unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    (head.to_string(), body.to_string())
}

/// The value of the sample whose line starts with `series ` (0 when absent).
fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap_or_else(|_| panic!("bad sample {series}: {v}")))
}

#[tokio::test(flavor = "multi_thread")]
async fn scraped_metrics_count_the_calls_this_test_made() {
    let port = free_port();
    let options = DaemonOptions { config_toml: format!("[metrics]\naddress = \"127.0.0.1:{port}\"\n"), ..Default::default() };
    let daemon = Daemon::start(options).await;
    let mut rt = daemon.runtime_client().await;

    let (head, before) = scrape(port, "/metrics").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/openmetrics-text"), "{head}");
    let version_ok = r#"capstan_grpc_requests_total{method="RuntimeService/Version",code="OK"}"#;
    let status_missing = r#"capstan_grpc_requests_total{method="RuntimeService/PodSandboxStatus",code="NotFound"}"#;

    for _ in 0..3 {
        rt.version(v1::VersionRequest::default()).await.unwrap();
    }
    let err = rt
        .pod_sandbox_status(v1::PodSandboxStatusRequest { pod_sandbox_id: "no-such-pod".into(), verbose: false })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // A pod on the host network needs no CNI config.
    let config = v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata { name: "metrics".into(), uid: "uid-metrics".into(), namespace: "test".into(), attempt: 0 }),
        linux: Some(v1::LinuxPodSandboxConfig {
            security_context: Some(v1::LinuxSandboxSecurityContext {
                namespace_options: Some(v1::NamespaceOption { network: v1::NamespaceMode::Node as i32, ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pod = rt
        .run_pod_sandbox(v1::RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;

    let (_, after) = scrape(port, "/metrics").await;
    let removed = async {
        rt.stop_pod_sandbox(v1::StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
        rt.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
    };
    removed.await;

    assert_eq!(sample(&after, version_ok) - sample(&before, version_ok), 3.0, "Version calls:\n{after}");
    assert_eq!(sample(&after, status_missing) - sample(&before, status_missing), 1.0, "{after}");
    assert_eq!(sample(&after, r#"capstan_grpc_requests_total{method="RuntimeService/RunPodSandbox",code="OK"}"#), 1.0, "{after}");
    assert_eq!(sample(&after, r#"capstan_grpc_request_duration_seconds_count{method="RuntimeService/RunPodSandbox"}"#), 1.0);
    assert_eq!(sample(&after, r#"capstan_pods{state="ready"}"#), 1.0, "{after}");
    assert_eq!(sample(&after, "capstan_pod_monitors_lost"), 0.0, "{after}");

    let (_, last) = scrape(port, "/metrics").await;
    assert_eq!(sample(&last, r#"capstan_pods{state="ready"}"#), 0.0, "{last}");
    let (head, _) = scrape(port, "/other").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
}
