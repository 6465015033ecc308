//! Foundation: the daemon's identity, readiness conditions, config handling and socket
//! ownership, checked against the real binary over its real socket.

use std::process::Stdio;

use capstan_integration::daemon::{Daemon, DaemonOptions, capstan_bin};
use cri_proto::v1;
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn version_names_capstan_and_cri_v1() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let v = daemon.runtime_client().await.version(v1::VersionRequest::default()).await.unwrap().into_inner();
    assert_eq!(v.runtime_name, "capstan");
    assert_eq!(v.runtime_api_version, "v1");
    assert_eq!(v.runtime_version, env!("CARGO_PKG_VERSION"));
}

fn condition<'a>(status: &'a v1::StatusResponse, kind: &str) -> &'a v1::RuntimeCondition {
    let conditions = &status.status.as_ref().expect("status").conditions;
    conditions.iter().find(|c| c.r#type == kind).unwrap_or_else(|| panic!("no {kind} in {conditions:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn status_reports_network_not_ready_until_a_cni_config_appears() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let mut client = daemon.runtime_client().await;
    let status = client.status(v1::StatusRequest { verbose: false }).await.unwrap().into_inner();
    assert!(condition(&status, "RuntimeReady").status);
    let net = condition(&status, "NetworkReady");
    assert!(!net.status, "no CNI config yet: {net:?}");
    assert_eq!(net.reason, "NetworkPluginNotReady");
    assert!(net.message.contains("no CNI network config"), "{net:?}");
    assert!(status.info.is_empty(), "info only when verbose");

    std::fs::write(
        daemon.cni_conf_dir().join("10-test.conflist"),
        r#"{"cniVersion":"1.0.0","name":"testnet","plugins":[{"type":"loopback"}]}"#,
    )
    .unwrap();
    let status = client.status(v1::StatusRequest { verbose: true }).await.unwrap().into_inner();
    assert!(condition(&status, "NetworkReady").status, "{status:?}");
    let config: serde_json::Value = serde_json::from_str(&status.info["config"]).expect("config is JSON");
    assert_eq!(config["socket"], daemon.socket().display().to_string());
    let cni: serde_json::Value = serde_json::from_str(&status.info["cni"]).expect("cni is JSON");
    assert_eq!(cni["network"], "testnet");
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_config_reports_the_configured_cgroup_driver() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let rc = daemon.runtime_client().await.runtime_config(v1::RuntimeConfigRequest {}).await.unwrap().into_inner();
    assert_eq!(rc.linux.unwrap().cgroup_driver, v1::CgroupDriver::Cgroupfs as i32);

    let options = DaemonOptions { config_toml: "[cgroup]\ndriver = \"systemd\"\n".into(), ..Default::default() };
    let daemon = Daemon::start(options).await;
    let rc = daemon.runtime_client().await.runtime_config(v1::RuntimeConfigRequest {}).await.unwrap().into_inner();
    assert_eq!(rc.linux.unwrap().cgroup_driver, v1::CgroupDriver::Systemd as i32);
}

#[tokio::test(flavor = "multi_thread")]
async fn unserved_calls_are_unimplemented_and_named() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let mut client = daemon.runtime_client().await;
    let err = client
        .checkpoint_container(v1::CheckpointContainerRequest { container_id: "x".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("CheckpointContainer"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_daemon_on_the_same_socket_is_refused() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let out = daemon.command().stdin(Stdio::null()).output().unwrap();
    assert!(!out.status.success(), "second daemon must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already serving"), "{stderr}");
    assert!(stderr.contains(&daemon.socket().display().to_string()), "{stderr}");
    // The first one is unharmed.
    daemon.runtime_client().await.version(v1::VersionRequest::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_cleanly_and_removes_the_socket() {
    let mut daemon = Daemon::start(DaemonOptions::default()).await;
    let status = daemon.stop().expect("daemon was running");
    assert!(status.success(), "exit status {status}; log:\n{}", daemon.log());
    assert!(!daemon.socket().exists(), "socket left behind");
    assert!(daemon.log().contains("SIGTERM"), "{}", daemon.log());
    // And it starts again on the same directories.
    daemon.restart().await;
}

#[test]
fn an_unknown_config_key_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[images]\nsandbox_imag = \"x\"\n").unwrap();
    let out = std::process::Command::new(capstan_bin()).arg("--config").arg(&config).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sandbox_imag"), "{stderr}");
    assert!(stderr.contains(&config.display().to_string()), "{stderr}");
}

#[test]
fn a_missing_explicit_config_file_is_an_error() {
    let out = std::process::Command::new(capstan_bin()).args(["--config", "/nonexistent/capstan.toml"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/capstan.toml"));
}

#[test]
fn config_default_prints_a_file_the_daemon_accepts() {
    let out = std::process::Command::new(capstan_bin()).args(["config", "default"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("socket = \"/run/capstan/capstan.sock\""), "{text}");
    assert!(text.lines().filter(|l| l.starts_with('#')).count() > 5, "the default config is commented");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, &text).unwrap();
    let shown = std::process::Command::new(capstan_bin()).arg("--config").arg(&path).args(["config", "show"]).output().unwrap();
    assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
}

#[test]
fn version_command_and_help() {
    let out = std::process::Command::new(capstan_bin()).arg("version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = std::process::Command::new(capstan_bin()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--config", "--socket", "--root", "--state", "--log-level"] {
        assert!(help.contains(flag), "--help lacks {flag}: {help}");
    }
}

/// With no config file at all the daemon runs on its embedded defaults (only the paths
/// are moved so the test does not touch the host's /run/capstan).
#[tokio::test(flavor = "multi_thread")]
async fn runs_with_no_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("capstan.sock");
    let mut child = tokio::process::Command::new(capstan_bin())
        .env_remove("CAPSTAN_CONFIG")
        .arg("--socket")
        .arg(&socket)
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .kill_on_drop(true)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let version = loop {
        if let Ok(channel) = cri_proto::unix::connect(&socket).await
            && let Ok(v) = cri_proto::RuntimeServiceClient::new(channel).version(v1::VersionRequest::default()).await
        {
            break v.into_inner();
        }
        assert!(std::time::Instant::now() < deadline, "no answer on {}", socket.display());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(version.runtime_name, "capstan");
    let _ = child.kill().await;
}
