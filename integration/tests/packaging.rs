//! Packaging and operations on the host: the .deb built by `packaging/build-deb.sh` from the
//! binaries under test, its unit file checked by `systemd-analyze verify`, and the daemon's
//! `Type=notify` readiness over a real notify socket. Installing the package for real
//! (dpkg -i, upgrade, remove, purge with pods running) happens in the VM lane
//! (`vm_deb.rs`), never on the host.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use capstan_integration::bin_dir;
use capstan_integration::daemon::{Daemon, DaemonOptions};
use cri_proto::v1;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds the package into `dir` and returns its path.
fn build_deb(dir: &Path) -> PathBuf {
    let out = run(Command::new("bash")
        .arg(repo().join("packaging/build-deb.sh"))
        .arg("--bin-dir")
        .arg(bin_dir())
        .arg("--out")
        .arg(dir));
    PathBuf::from(out.lines().last().expect("build-deb.sh prints the package path"))
}

#[test]
fn deb_holds_what_a_node_needs() {
    let dir = tempfile::tempdir().unwrap();
    let deb = build_deb(dir.path());
    assert!(deb.file_name().unwrap().to_string_lossy().starts_with("capstan_"), "{deb:?}");

    let fields = run(Command::new("dpkg-deb").arg("-f").arg(&deb).args(["Package", "Version", "Architecture", "Depends"]));
    assert!(fields.contains("Package: capstan"), "{fields}");
    assert!(fields.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))), "{fields}");
    for dep in ["containernetworking-plugins", "libseccomp2", "libc6"] {
        assert!(fields.contains(dep), "Depends lacks {dep}: {fields}");
    }

    let contents = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for path in [
        "./usr/bin/capstan",
        "./usr/bin/capstan-monitor",
        "./lib/systemd/system/capstan.service",
        "./etc/capstan/config.toml",
        "./usr/share/doc/capstan/examples/crictl.yaml",
        "./usr/share/doc/capstan/examples/10-capstan-bridge.conflist",
        "./usr/share/doc/capstan/examples/kubeadm-join.yaml",
        "./usr/share/doc/capstan/examples/kubelet-10-capstan.conf",
    ] {
        assert!(contents.lines().any(|l| l.ends_with(path)), "{path} missing from the package:\n{contents}");
    }

    let control = dir.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    assert_eq!(std::fs::read_to_string(control.join("conffiles")).unwrap().trim(), "/etc/capstan/config.toml");
    for script in ["postinst", "prerm", "postrm"] {
        run(Command::new("sh").arg("-n").arg(control.join(script)));
    }

    // The packaged config is the embedded default, and the packaged daemon accepts it.
    let root = dir.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let packaged = std::fs::read_to_string(root.join("etc/capstan/config.toml")).unwrap();
    let default = run(Command::new(bin_dir().join("capstan")).args(["config", "default"]));
    assert_eq!(packaged, default);
    let shown = run(Command::new(root.join("usr/bin/capstan")).arg("--config").arg(root.join("etc/capstan/config.toml")).args(["config", "show"]));
    assert!(shown.contains("/run/capstan/capstan.sock"), "{shown}");
    let kubeadm = std::fs::read_to_string(root.join("usr/share/doc/capstan/examples/kubeadm-join.yaml")).unwrap();
    assert!(kubeadm.contains("criSocket: unix:///run/capstan/capstan.sock"), "{kubeadm}");
}

/// `systemd-analyze verify` on the packaged unit inside the extracted package, with the
/// host's targets copied in (they are what the unit orders itself against).
#[test]
fn unit_file_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        println!("SKIP: systemd-analyze is not installed (packaging/deps.sh installs systemd)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let deb = build_deb(dir.path());
    let root = dir.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let units = root.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    for entry in std::fs::read_dir("/usr/lib/systemd/system").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "target") && path.is_file() {
            std::fs::copy(&path, units.join(path.file_name().unwrap())).unwrap();
        }
    }
    let verify = |unit: &str| {
        let out = Command::new("systemd-analyze").arg(format!("--root={}", root.display())).arg("verify").arg(unit).output().unwrap();
        (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    let (ok, out) = verify("/lib/systemd/system/capstan.service");
    assert!(ok && out.trim().is_empty(), "systemd-analyze verify complained:\n{out}");

    let unit = std::fs::read_to_string(root.join("lib/systemd/system/capstan.service")).unwrap();
    for line in ["Type=notify", "KillMode=process", "Delegate=yes", "Restart=always", "Before=kubelet.service", "ExecStart=/usr/bin/capstan"] {
        assert!(unit.lines().any(|l| l.trim() == line), "unit lacks {line}:\n{unit}");
    }
    // The check is able to fail: a broken copy of the unit is reported.
    let broken = root.join("etc/systemd/system");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("broken.service"), unit.replace("Type=notify", "Type=notifyy")).unwrap();
    let (_, out) = verify("/etc/systemd/system/broken.service");
    assert!(out.contains("notifyy"), "a bad Type= went unnoticed: {out}");
}

/// Under `Type=notify` systemd considers capstan started when READY=1 arrives, and kubelet
/// (ordered after it) connects right away: the socket must answer by then.
#[tokio::test(flavor = "multi_thread")]
async fn daemon_says_ready_to_systemd_once_the_socket_answers() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let options = DaemonOptions { env: vec![("NOTIFY_SOCKET".into(), notify.display().to_string())], ..Default::default() };
    let mut daemon = Daemon::start(options).await;

    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("READY=1 from the daemon");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "READY=1");
    let version = daemon.runtime_client().await.version(v1::VersionRequest::default()).await.unwrap().into_inner();
    assert_eq!(version.runtime_name, "capstan");

    daemon.stop();
    let n = sock.recv(&mut buf).expect("STOPPING=1 on SIGTERM");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "STOPPING=1");
}
