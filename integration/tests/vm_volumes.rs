//! The VM lane's volume tests: real NFS from the guest kernel's nfsd (exported at
//! `CAPSTAN_NFS_EXPORT` on `CAPSTAN_NFS_SERVER`, see integration/vm/guest/nfs-server.sh),
//! a local PV on a loop-backed ext4 device, and an NFS volume used by a container through
//! the daemon. Runs only in the guest (`CAPSTAN_VM=1`); elsewhere each test says why it
//! skips. Run with `bash integration/vm/lane.sh vm_volumes`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use capstan_integration::pods::{OnePod, Volumes, cri_mount, mountinfo_at};
use capstan_volumes::{Error, Local, Nfs, NfsDefaults, PodVolumes, Volume, VolumeSource};

/// The NFS server and export, or `None` (with the reason printed) outside the VM lane.
fn nfs_server() -> Option<(String, PathBuf)> {
    if std::env::var_os("CAPSTAN_VM").is_none() {
        eprintln!("skipped: VM lane only (CAPSTAN_VM unset); run `bash integration/vm/lane.sh vm_volumes`");
        return None;
    }
    match (std::env::var("CAPSTAN_NFS_SERVER"), std::env::var("CAPSTAN_NFS_EXPORT")) {
        (Ok(server), Ok(export)) => Some((server, PathBuf::from(export))),
        _ => {
            eprintln!("skipped: no NFS server in this guest (run.sh without --nfs)");
            None
        }
    }
}

/// The NFS tests one at a time: a dead server's test must not slow the others' mounts.
static NFS_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn nfs_lock() -> std::sync::MutexGuard<'static, ()> {
    NFS_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Another loopback address for the "dead server" tests: the kernel keeps one NFS client
/// per server address, so a server that dies at 127.0.0.2 leaves 127.0.0.1's mounts alone.
fn other_loopback(server: &str) -> String {
    if server == "127.0.0.1" { "127.0.0.2".into() } else { server.into() }
}

/// Setup of an NFS mount under TCG emulation can take a few seconds; a dead server's
/// deadline is kept short so its test stays quick.
fn defaults(timeout: Duration) -> NfsDefaults {
    NfsDefaults { version: None, mount_timeout: timeout }
}

/// A file in the export, removed on drop.
struct ExportFile(PathBuf);

impl Drop for ExportFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn errno_of(e: &std::io::Error) -> Option<nix::Error> {
    e.raw_os_error().map(nix::Error::from_raw)
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines().filter(|l| l.split(' ').nth(4).is_some_and(|p| Path::new(p).starts_with(dir))).map(String::from).collect()
}


#[test]
fn nfs_volume_writes_reach_the_export_and_read_only_refuses() {
    let Some((server, export)) = nfs_server() else { return };
    let _serial = nfs_lock();
    let pods_dir = tempfile::Builder::new().prefix("capstan-vmvol-").tempdir().unwrap();
    let volumes = Volumes(PodVolumes::new(pods_dir.path(), "uid-nfs").unwrap().with_nfs_defaults(defaults(Duration::from_secs(120))));
    let export_str = export.display().to_string();
    let rw = Volume::new("share", VolumeSource::Nfs(Nfs::new(&server, &export_str, false)));
    let t = Instant::now();
    let path = volumes.0.setup(&rw).unwrap();
    let line = mountinfo_at(&path).pop().unwrap_or_else(|| panic!("nothing mounted at {}", path.display()));
    eprintln!("nfs mounted in {:?}: {line}", t.elapsed());
    assert!(line.contains(" - nfs") && line.contains(&format!("{server}:{export_str}")), "{line}");

    let name = format!("vm-volumes-{}", std::process::id());
    let _file = ExportFile(export.join(&name));
    std::fs::write(path.join(&name), "written through nfs\n").unwrap();
    assert_eq!(std::fs::read_to_string(export.join(&name)).unwrap(), "written through nfs\n");
    volumes.0.setup(&rw).unwrap();
    assert_eq!(mountinfo_at(&path).len(), 1, "setting up again mounts nothing more");

    let ro = Volume::new("share-ro", VolumeSource::Nfs(Nfs::new(&server, &export_str, true)));
    let ro_path = volumes.0.setup(&ro).unwrap();
    assert_eq!(std::fs::read_to_string(ro_path.join(&name)).unwrap(), "written through nfs\n");
    let err = std::fs::write(ro_path.join("refused"), "x").unwrap_err();
    assert_eq!(errno_of(&err), Some(nix::Error::EROFS), "{err}");
    assert!(!export.join("refused").exists());

    volumes.0.teardown(&ro, false).unwrap();
    volumes.0.teardown(&rw, false).unwrap();
    assert!(mountinfo_at(&path).is_empty() && mountinfo_at(&ro_path).is_empty());
    assert!(!path.exists() && !ro_path.exists());
    volumes.0.teardown(&rw, false).unwrap();
    volumes.0.teardown_all(false).unwrap();
    assert!(mounts_under(pods_dir.path()).is_empty());
    assert!(export.join(&name).exists(), "teardown keeps the server's data");
}

#[test]
fn an_unreachable_nfs_server_fails_setup_in_bounded_time() {
    let Some((server, export)) = nfs_server() else { return };
    let _serial = nfs_lock();
    let server = other_loopback(&server);
    let pods_dir = tempfile::Builder::new().prefix("capstan-vmvol-").tempdir().unwrap();
    let deadline = Duration::from_secs(8);
    let volumes = Volumes(PodVolumes::new(pods_dir.path(), "uid-dead").unwrap().with_nfs_defaults(defaults(deadline)));
    // A server that accepts connections and never answers, and a port nobody listens on.
    let hung = std::net::TcpListener::bind((server.as_str(), 0)).unwrap();
    let closed = std::net::TcpListener::bind((server.as_str(), 0)).unwrap().local_addr().unwrap().port();
    for (what, port) in [("hung", hung.local_addr().unwrap().port()), ("refusing", closed)] {
        let mut nfs = Nfs::new(&server, export.display().to_string(), false);
        nfs.mount_options = vec![format!("port={port}"), "vers=4.2".into()];
        let v = Volume::new(what, VolumeSource::Nfs(nfs));
        let t = Instant::now();
        let err = volumes.0.setup(&v).unwrap_err();
        let took = t.elapsed();
        eprintln!("{what} server: failed after {took:?}: {err}");
        assert!(took < deadline + Duration::from_secs(10), "{what}: took {took:?}");
        assert!(matches!(&err, Error::Timeout { .. } | Error::MountCommand { .. }), "{what}: {err}");
        assert!(err.to_string().contains(&format!("{server}:{}", export.display())), "{err}");
        assert!(!volumes.0.path(&v).unwrap().exists(), "{what}: directory left behind");
    }
    assert!(mounts_under(pods_dir.path()).is_empty());
    // The hung one cannot answer before the deadline: that one must be our timeout.
    let mut nfs = Nfs::new(&server, export.display().to_string(), false);
    nfs.mount_options = vec![format!("port={}", hung.local_addr().unwrap().port()), "vers=4.2".into()];
    let err = volumes.0.setup(&Volume::new("hung-again", VolumeSource::Nfs(nfs))).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    volumes.0.teardown_all(false).unwrap();
}

#[test]
fn local_pv_on_a_loop_ext4_device_in_the_guest() {
    if std::env::var_os("CAPSTAN_VM").is_none() {
        eprintln!("skipped: VM lane only (CAPSTAN_VM unset); the host lane has volumes/tests/mounts.rs");
        return;
    }
    let dir = tempfile::Builder::new().prefix("capstan-vmvol-").tempdir().unwrap();
    let image = dir.path().join("pv.img");
    std::fs::File::create(&image).unwrap().set_len(32 << 20).unwrap();
    let out = Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image).output().unwrap();
    assert!(out.status.success(), "mkfs.ext4: {}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new("losetup").args(["-f", "--show"]).arg(&image).output().unwrap();
    assert!(out.status.success(), "losetup: {}", String::from_utf8_lossy(&out.stderr));
    let lo = Loop(PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()));
    let volumes = Volumes(PodVolumes::new(&dir.path().join("pods"), "uid-pv").unwrap());

    let rw = Volume::new("pv", VolumeSource::Local(Local::new(&lo.0, false)));
    let path = volumes.0.setup(&rw).unwrap();
    assert!(mountinfo_at(&path).iter().any(|l| l.contains(" - ext4 ")), "{:?}", mountinfo_at(&path));
    std::fs::write(path.join("data"), "on the pv").unwrap();
    let ro = Volume::new("pv-ro", VolumeSource::Local(Local::new(&lo.0, true)));
    let ro_path = volumes.0.setup(&ro).unwrap();
    assert_eq!(std::fs::read_to_string(ro_path.join("data")).unwrap(), "on the pv");
    let err = std::fs::write(ro_path.join("x"), "x").unwrap_err();
    assert_eq!(errno_of(&err), Some(nix::Error::EROFS), "{err}");
    volumes.0.teardown_all(false).unwrap();
    assert!(mounts_under(dir.path()).is_empty(), "{:?}", mounts_under(dir.path()));
}

/// A loop device, detached on drop (after the volumes using it are torn down).
struct Loop(PathBuf);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

// The lock orders this test against the other (plain) test threads, not async tasks.
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread")]
async fn a_container_uses_an_nfs_volume_through_the_daemon() {
    let Some((server, export)) = nfs_server() else { return };
    let _serial = nfs_lock();
    let pods_dir = tempfile::Builder::new().prefix("capstan-vmvol-").tempdir().unwrap();
    let mut env = OnePod::start("nfs-pod").await;
    let volumes = Volumes(PodVolumes::new(pods_dir.path(), "uid-nfs-pod").unwrap().with_nfs_defaults(defaults(Duration::from_secs(120))));
    let export_str = export.display().to_string();
    let rw = Volume::new("share", VolumeSource::Nfs(Nfs::new(&server, &export_str, false)));
    let ro = Volume::new("share-ro", VolumeSource::Nfs(Nfs::new(&server, &export_str, true)));
    let (rw_path, ro_path) = (volumes.0.setup(&rw).unwrap(), volumes.0.setup(&ro).unwrap());
    let name = format!("from-pod-{}", std::process::id());
    let _file = ExportFile(export.join(&name));

    let script = format!(
        "echo hello over nfs >/data/{name} && cat /ro/{name}; \
         echo x >/ro/refused || echo ro-write-failed; grep -E ' /(data|ro) nfs' /proc/mounts"
    );
    let mounts = vec![cri_mount(&rw_path, "/data"), cri_mount(&ro_path, "/ro")];
    let (code, log) = env.run("nfs-writer", &script, mounts).await;
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("hello over nfs") && log.contains("ro-write-failed"), "{log}");
    assert!(log.contains("Read-only file system"), "{log}");
    assert_eq!(std::fs::read_to_string(export.join(&name)).unwrap(), "hello over nfs\n");
    assert!(!export.join("refused").exists());

    env.remove().await;
    volumes.0.teardown_all(false).unwrap();
    assert!(mounts_under(pods_dir.path()).is_empty());
}

/// A TCP proxy on a loopback address to the guest's nfsd: stopping it makes the server look dead to
/// the mounts made through it, and to no one else.
struct Proxy {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    fn start(server: &str) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind((server, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        // nfsd exports to 127.0.0.1 only, which is where the proxy connects from.
        let (s, c, upstream) = (stop.clone(), conns.clone(), "127.0.0.1:2049".to_string());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(nfsd) = std::net::TcpStream::connect(&upstream) else { continue };
                let mut held = c.lock().unwrap();
                held.push(client.try_clone().unwrap());
                held.push(nfsd.try_clone().unwrap());
                for (mut from, mut to) in [(client.try_clone().unwrap(), nfsd.try_clone().unwrap()), (nfsd, client)] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy { port, stop, conns }
    }

    /// Closes every connection and stops accepting: the "server" is gone.
    fn kill(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for conn in self.conns.lock().unwrap().drain(..) {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn forced_teardown_of_an_nfs_volume_whose_server_died() {
    let Some((server, export)) = nfs_server() else { return };
    let _serial = nfs_lock();
    let pods_dir = tempfile::Builder::new().prefix("capstan-vmvol-").tempdir().unwrap();
    let volumes = Volumes(PodVolumes::new(pods_dir.path(), "uid-died").unwrap().with_nfs_defaults(defaults(Duration::from_secs(120))));
    let server = other_loopback(&server);
    let proxy = Proxy::start(&server);
    let mut nfs = Nfs::new(&server, export.display().to_string(), false);
    nfs.mount_options = vec![format!("port={}", proxy.port), "vers=4.2".into()];
    let v = Volume::new("dying", VolumeSource::Nfs(nfs));
    let path = volumes.0.setup(&v).unwrap();
    let name = format!("before-death-{}", std::process::id());
    let _file = ExportFile(export.join(&name));
    std::fs::write(path.join(&name), "x").unwrap();
    assert!(export.join(&name).exists());

    proxy.kill();
    // In a thread: should the kernel block the unmount after all, the test fails instead
    // of hanging the lane.
    let (tx, rx) = std::sync::mpsc::channel();
    let (volumes2, v2) = (volumes.0.clone(), v.clone());
    let t = Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(volumes2.teardown(&v2, true));
    });
    let result = rx.recv_timeout(Duration::from_secs(90)).expect("forced teardown did not return within 90 s");
    eprintln!("forced teardown with the server gone: {result:?} after {:?}", t.elapsed());
    result.unwrap();
    assert!(t.elapsed() < Duration::from_secs(45), "forced teardown took {:?}", t.elapsed());
    assert!(mountinfo_at(&path).is_empty() && !path.exists());
    volumes.0.teardown_all(false).unwrap();
}
