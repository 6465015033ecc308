//! The .deb installed for real, in the VM lane's guest (a debootstrap'd Debian without
//! systemd, so the maintainer scripts take their no-systemd paths and the checks here look
//! at files and processes): install, a pod started by the packaged daemon, upgrade and
//! remove leave the pod running, purge keeps state while a pod lives and deletes it once
//! none does. The lane puts the package (built by packaging/build-deb.sh) in
//! `$CAPSTAN_BIN_DIR`. Never run on the host: it installs into the system.

use std::path::{Path, PathBuf};
use std::process::Command;

use capstan_integration::daemon::{Daemon, DaemonOptions};
use cri_proto::v1;

fn in_vm() -> bool {
    if std::env::var_os("CAPSTAN_VM").is_none() {
        println!("SKIP: installs a package into the system; runs only in the VM lane (CAPSTAN_VM=1)");
        return false;
    }
    true
}

fn package() -> PathBuf {
    let dir = PathBuf::from(std::env::var_os("CAPSTAN_BIN_DIR").expect("CAPSTAN_BIN_DIR in the VM lane"));
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .unwrap_or_else(|| panic!("no .deb in {}: the lane must share packaging/build-deb.sh's output", dir.display()))
}

fn dpkg(args: &[&str]) -> String {
    let out = Command::new("dpkg").args(args).output().expect("dpkg");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "dpkg {args:?} failed:\n{text}");
    text
}

fn monitors() -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        if std::fs::read_to_string(entry.path().join("comm")).is_ok_and(|c| c.trim() == "capstan-monitor") {
            pids.push(pid);
        }
    }
    pids
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread")]
async fn package_installs_upgrades_and_purges_around_running_pods() {
    if !in_vm() {
        return;
    }
    let deb = package();
    let deb = deb.to_str().unwrap();
    let out = dpkg(&["-i", deb]);
    println!("dpkg -i:\n{out}");
    for path in ["/usr/bin/capstan", "/usr/bin/capstan-monitor", "/lib/systemd/system/capstan.service", "/etc/capstan/config.toml"] {
        assert!(Path::new(path).exists(), "{path} not installed");
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata("/var/lib/capstan").unwrap().permissions().mode() & 0o777, 0o700);
    assert!(dpkg(&["-s", "capstan"]).contains("Status: install ok installed"));
    let version = Command::new("/usr/bin/capstan").arg("version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).contains("capstan"), "{version:?}");
    let check = Command::new("/usr/bin/capstan").arg("check").output().unwrap();
    println!("capstan check (packaged binary, guest):\n{}", String::from_utf8_lossy(&check.stdout));

    // The packaged daemon (its monitor found next to it in /usr/bin) runs a pod.
    let before = monitors();
    let options = DaemonOptions { binary: Some("/usr/bin/capstan".into()), ..Default::default() };
    let daemon = Daemon::start(options).await;
    let mut rt = daemon.runtime_client().await;
    let config = v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata { name: "deb".into(), uid: "uid-deb".into(), namespace: "test".into(), attempt: 0 }),
        hostname: "deb".into(),
        ..Default::default()
    };
    let pod = rt
        .run_pod_sandbox(v1::RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() })
        .await
        .expect("RunPodSandbox with the packaged binaries")
        .into_inner()
        .pod_sandbox_id;
    let monitor = *monitors().iter().find(|p| !before.contains(p)).expect("the pod's monitor runs");

    // An operator's change to the conffile survives an upgrade (same package, reinstalled).
    let config_path = "/etc/capstan/config.toml";
    let edited = std::fs::read_to_string(config_path).unwrap().replace("level = \"info\"", "level = \"debug\"");
    std::fs::write(config_path, &edited).unwrap();
    dpkg(&["-i", "--force-confold", deb]);
    assert_eq!(std::fs::read_to_string(config_path).unwrap(), edited, "upgrade replaced the operator's config");
    assert!(alive(monitor), "upgrade killed the pod's monitor");

    // Remove: binaries go, the pod and all state stay.
    dpkg(&["-r", "capstan"]);
    assert!(!Path::new("/usr/bin/capstan").exists());
    assert!(alive(monitor), "package removal killed the pod's monitor");
    assert!(Path::new("/var/lib/capstan").is_dir(), "remove deleted state");
    assert!(Path::new(config_path).exists(), "remove (not purge) deleted the conffile");

    // Purge while a pod lives: state is kept, and the operator is told why.
    let out = dpkg(&["-P", "capstan"]);
    assert!(out.contains("keeping /var/lib/capstan"), "{out}");
    assert!(Path::new("/var/lib/capstan").is_dir());
    assert!(alive(monitor));
    assert!(!Path::new(config_path).exists(), "purge keeps no conffile");

    // The daemon still runs from its unlinked binary: remove the pod through it.
    let status = rt.pod_sandbox_status(v1::PodSandboxStatusRequest { pod_sandbox_id: pod.clone(), verbose: false }).await.unwrap().into_inner();
    assert_eq!(status.status.unwrap().state, v1::PodSandboxState::SandboxReady as i32);
    rt.stop_pod_sandbox(v1::StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
    rt.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
    drop(daemon);
    assert!(!alive(monitor), "the removed pod's monitor still runs");

    // With no pod left, purge deletes the state.
    dpkg(&["-i", deb]);
    std::fs::write("/var/lib/capstan/marker", "x").unwrap();
    dpkg(&["-P", "capstan"]);
    assert!(!Path::new("/var/lib/capstan").exists(), "purge with no pods left kept the state");
    let status = Command::new("dpkg").args(["-s", "capstan"]).output().unwrap();
    assert!(!status.status.success(), "dpkg still knows capstan after purge");
}
