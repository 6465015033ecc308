//! Hostile registries, images and requests against the real daemon: each is refused (or
//! survived) with a clear error, and nothing outside the pod or the store is touched.
//!
//! - a registry that stalls or drops the connection half-way through a blob, or never
//!   answers at all (a proxy of the test's own in front of the real registry): the pull
//!   fails within the configured stall timeout, keeps nothing, and the same image pulls
//!   from a good registry right after;
//! - a full disk during a pull (the store on a small tmpfs): ResourceExhausted naming the
//!   disk, no torn store, and the pull succeeds once there is space;
//! - a full disk under a container's log: the container keeps running, the log keeps only
//!   whole records, and logging resumes by itself when space returns;
//! - layers with hardlinks leading out, entries with huge declared sizes, manifests whose
//!   sizes lie; device nodes from an image that the container cannot open;
//! - mount targets behind symlinks that point out of the rootfs; log directories and mount
//!   sources outside what the runtime allows.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use capstan_integration::daemon::{Daemon, DaemonOptions};
use capstan_integration::files_below;
use capstan_integration::image::{BuiltImage, Entry, ImageBuilder, Layer, RawEntry, push_built, raw_tar, raw_tar_of, sha256};
use capstan_integration::pods::{Env, container, cri_mount, mountinfo_at};
use capstan_integration::registry::Registry;
use cri_proto::v1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::Code;

fn root_or_skip() -> bool {
    capstan_integration::root_or_skip("needs root (mounts, namespaces)")
}

fn spec(image: &str) -> Option<v1::ImageSpec> {
    Some(v1::ImageSpec { image: image.into(), ..Default::default() })
}

async fn pull(daemon: &Daemon, image: &str) -> Result<String, tonic::Status> {
    let request = v1::PullImageRequest { image: spec(image), auth: None, sandbox_config: None };
    daemon.image_client().await.pull_image(request).await.map(|r| r.into_inner().image_ref)
}

async fn image_ids(daemon: &Daemon) -> Vec<String> {
    let list = daemon.image_client().await.list_images(v1::ListImagesRequest { filter: None }).await.expect("ListImages");
    list.into_inner().images.into_iter().map(|i| i.id).collect()
}

/// What a failed pull might leave in the store: ingest files, blobs, snapshots (named or
/// half-made).
fn store_contents(daemon: &Daemon) -> Vec<String> {
    let images = daemon.root().join("images");
    let mut found: Vec<String> = files_below(&images.join("blobs")).into_iter().map(|f| format!("blobs/{f}")).collect();
    found.extend(files_below(&images.join("ingest")).into_iter().map(|f| format!("ingest/{f}")));
    if let Ok(entries) = std::fs::read_dir(images.join("snapshots")) {
        found.extend(entries.flatten().map(|e| format!("snapshots/{}", e.file_name().to_string_lossy())));
    }
    found.sort();
    found
}

// ---------------------------------------------------------------------------------------
// A registry that misbehaves: a proxy in front of the real one.

#[derive(Debug, Clone, Copy, PartialEq)]
enum Sabotage {
    /// Accepts the request for the target and never answers.
    Silent,
    /// Sends the headers and half the body, then goes quiet with the connection open.
    StallHalfWay,
    /// Sends the headers and half the body, then closes the connection.
    DropHalfWay,
}

/// Forwards every request to `upstream` (one request per connection), except requests
/// whose path contains `target`, which it sabotages.
struct Proxy {
    addr: SocketAddr,
    sabotaged: Arc<AtomicUsize>,
}

impl Proxy {
    async fn start(upstream: SocketAddr, target: String, mode: Sabotage) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let sabotaged = Arc::new(AtomicUsize::new(0));
        let hits = Arc::clone(&sabotaged);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (target, hits) = (target.clone(), Arc::clone(&hits));
                tokio::spawn(async move {
                    let _ = serve(client, upstream, &target, mode, &hits).await;
                });
            }
        });
        Proxy { addr, sabotaged }
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }
}

/// Reads up to the end of an HTTP head; returns the head and whatever followed it.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn serve(mut client: TcpStream, upstream: SocketAddr, target: &str, mode: Sabotage, hits: &AtomicUsize) -> std::io::Result<()> {
    let (head, _) = read_head(&mut client).await?;
    let path = head.split_whitespace().nth(1).unwrap_or_default().to_string();
    let is_get = head.starts_with("GET ");
    // One request per connection keeps the proxy simple: ask both ends to close.
    let mut request: String =
        head.trim_end().lines().filter(|l| !l.to_ascii_lowercase().starts_with("connection:")).map(|l| format!("{l}\r\n")).collect();
    request.push_str("Connection: close\r\n\r\n");
    let sabotage = is_get && path.contains(target);
    if sabotage {
        hits.fetch_add(1, Ordering::SeqCst);
        if mode == Sabotage::Silent {
            std::future::pending::<()>().await;
        }
    }
    let mut up = TcpStream::connect(upstream).await?;
    up.write_all(request.as_bytes()).await?;
    if !sabotage {
        tokio::io::copy(&mut up, &mut client).await?;
        return Ok(());
    }
    let (response_head, body) = read_head(&mut up).await?;
    let length: usize = response_head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    client.write_all(response_head.as_bytes()).await?;
    let mut sent = body.len().min(length / 2);
    client.write_all(&body[..sent]).await?;
    let mut chunk = vec![0u8; 16 * 1024];
    while sent < length / 2 {
        let n = up.read(&mut chunk[..(length / 2 - sent).min(16 * 1024)]).await?;
        if n == 0 {
            break;
        }
        client.write_all(&chunk[..n]).await?;
        sent += n;
    }
    client.flush().await?;
    if mode == Sabotage::StallHalfWay {
        std::future::pending::<()>().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_that_stalls_or_drops_mid_blob_fails_the_pull_cleanly() {
    if !root_or_skip() {
        return;
    }
    let registry = Registry::start().await;
    let upstream: SocketAddr = registry.host().parse().expect("registry host is ip:port");
    let image = ImageBuilder::busybox().with_random_layers(4, 1, 7).push(&registry, "hostile/stall", &["1"]).await;
    let big_layer = image.layer_digests.last().expect("a layer").clone();
    let daemon = Daemon::start(DaemonOptions { config_toml: "[images]\nstall_timeout_seconds = 3\n".into(), ..Default::default() }).await;

    for (mode, target, expected) in [
        (Sabotage::StallHalfWay, big_layer.clone(), "timed out"),
        (Sabotage::DropHalfWay, big_layer.clone(), ""),
        (Sabotage::Silent, "/manifests/".to_string(), "timed out"),
    ] {
        let proxy = Proxy::start(upstream, target.clone(), mode).await;
        let reference = format!("{}/hostile/stall:1", proxy.host());
        let started = Instant::now();
        let err = pull(&daemon, &reference).await.expect_err("a sabotaged pull must fail");
        let took = started.elapsed();
        eprintln!("{mode:?}: failed after {took:?}: {} {}", err.code(), err.message());
        assert!(proxy.sabotaged.load(Ordering::SeqCst) >= 1, "{mode:?}: the proxy saw the request");
        assert_eq!(err.code(), Code::Unavailable, "{mode:?}: {err:?}");
        assert!(err.message().contains(&proxy.host()), "{mode:?}: the message names the registry: {}", err.message());
        if target.starts_with("sha256:") {
            assert!(err.message().contains(&target), "{mode:?}: the message names the blob: {}", err.message());
        }
        assert!(err.message().to_lowercase().contains(expected), "{mode:?}: {}", err.message());
        assert!(took < Duration::from_secs(30), "{mode:?}: the stall timeout (3 s) ends the pull, took {took:?}");
        assert!(image_ids(&daemon).await.is_empty(), "{mode:?}: no image recorded");
        // The layer's download flight ended with the failure: nothing half-made is kept,
        // and nothing stays "in progress" to block the next pull of the same layer.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !store_contents(&daemon).is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(store_contents(&daemon).is_empty(), "{mode:?}: left {:?}", store_contents(&daemon));
    }
    let started = Instant::now();
    let id = pull(&daemon, &image.references[0]).await.expect("the same image from the good registry");
    assert_eq!(id, image.config_digest);
    assert!(started.elapsed() < Duration::from_secs(20), "the good pull is not held up by the failed ones");
}

// ---------------------------------------------------------------------------------------
// Full disks.

/// A tmpfs of the test's own; unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("tmpfs mountpoint");
        let data = format!("size={size},mode=0755");
        nix::mount::mount(Some("tmpfs"), at, Some("tmpfs"), nix::mount::MsFlags::empty(), Some(data.as_str()))
            .unwrap_or_else(|e| panic!("mount tmpfs at {}: {e}", at.display()));
        Tmpfs(at.to_path_buf())
    }

    fn resize(&self, size: &str) {
        let data = format!("size={size}");
        nix::mount::mount(None::<&str>, &self.0, None::<&str>, nix::mount::MsFlags::MS_REMOUNT, Some(data.as_str()))
            .unwrap_or_else(|e| panic!("remount {}: {e}", self.0.display()));
    }

    fn used(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.0).expect("statvfs");
        (s.blocks() - s.blocks_free()) * s.fragment_size()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pulls_onto_a_full_disk_fail_clearly_and_succeed_when_space_returns() {
    if !root_or_skip() {
        return;
    }
    let registry = Registry::start().await;
    let small = ImageBuilder::busybox().push(&registry, "hostile/small", &["1"]).await;
    let big = ImageBuilder::busybox().with_random_layers(24, 2, 11).push(&registry, "hostile/big", &["1"]).await;
    let mut daemon = Daemon::start(DaemonOptions::default()).await;
    // The store on a 16 MiB disk of its own: the daemon is stopped while it is mounted.
    daemon.stop();
    let _ = std::fs::remove_dir_all(daemon.root());
    let disk = Tmpfs::mount(&daemon.root(), "16m");
    daemon.restart().await;

    let err = pull(&daemon, &big.references[0]).await.expect_err("24 MiB of layers cannot fit in 16 MiB");
    eprintln!("full disk: {} {}", err.code(), err.message());
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("No space left on device"), "{}", err.message());
    assert!(image_ids(&daemon).await.is_empty(), "no image recorded");
    assert!(store_contents(&daemon).is_empty(), "no torn store: {:?}", store_contents(&daemon));
    assert!(disk.used() < 2 << 20, "the failed pull's bytes were given back: {} bytes in use", disk.used());

    // What fits still pulls, and the store is consistent across a restart.
    pull(&daemon, &small.references[0]).await.expect("a small image fits");
    daemon.restart().await;
    assert_eq!(image_ids(&daemon).await, vec![small.config_digest.clone()]);

    disk.resize("96m");
    pull(&daemon, &big.references[0]).await.expect("the big image once there is space");
    let mut ids = image_ids(&daemon).await;
    ids.sort();
    let mut want = vec![small.config_digest.clone(), big.config_digest.clone()];
    want.sort();
    assert_eq!(ids, want);
    daemon.stop();
}

/// Lines of a CRI log that are not whole records (`<time> <stream> <P|F> <text>`).
fn torn_records(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| {
            let parts: Vec<&str> = l.splitn(4, ' ').collect();
            !(parts.len() == 4
                && parts[0].starts_with("20")
                && parts[0].contains('T')
                && parts[0].ends_with('Z')
                && matches!(parts[1], "stdout" | "stderr")
                && matches!(parts[2], "P" | "F")
                && parts[3].starts_with("line-"))
        })
        .map(String::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_log_disk_drops_records_but_not_the_container() {
    if !root_or_skip() {
        return;
    }
    let mut env = Env::start().await;
    let mut config = env.sandbox_config("fulllog");
    let logs = Tmpfs::mount(&env.daemon.scratch().join("fulllog"), "64k");
    config.log_directory = logs.0.join("pod").display().to_string();
    let request = v1::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
    let pod = env.rt.run_pod_sandbox(request).await.expect("RunPodSandbox").into_inner().pod_sandbox_id;
    env.cleanup.pods.push(pod.clone());
    let script = "i=0; while true; do echo line-$i-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; echo $i > /tmp/n.new; mv /tmp/n.new /tmp/n; i=$((i+1)); sleep 0.005; done";
    let id = env.run(&(pod.clone(), config.clone()), container("talker", &env.busybox, &["sh", "-c", script])).await;
    let log_file = logs.0.join("pod/talker/0.log");

    // Wait for the disk to fill.
    let deadline = Instant::now() + Duration::from_secs(60);
    let monitor_log = env.daemon.state().join("pods").join(&pod).join("monitor.log");
    while !std::fs::read_to_string(&monitor_log).unwrap_or_default().contains("cannot write container log") {
        assert!(Instant::now() < deadline, "the log disk never filled; monitor log:\n{}", std::fs::read_to_string(&monitor_log).unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counter = |env: &mut Env| {
        let mut rt = env.rt.clone();
        let id = id.clone();
        async move {
            let request = v1::ExecSyncRequest { container_id: id, cmd: vec!["cat".into(), "/tmp/n".into()], timeout: 10 };
            let out = rt.exec_sync(request).await.expect("ExecSync").into_inner();
            String::from_utf8_lossy(&out.stdout).trim().parse::<u64>().unwrap_or(0)
        }
    };
    let before = counter(&mut env).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let after = counter(&mut env).await;
    assert!(after > before, "the container goes on while its log disk is full ({before} → {after})");
    assert_eq!(env.status(&id).await.state, v1::ContainerState::ContainerRunning as i32);
    let full_len = std::fs::metadata(&log_file).expect("log file").len();
    assert!(torn_records(&std::fs::read_to_string(&log_file).unwrap()).is_empty(), "only whole records while full");

    // Space returns: logging resumes by itself, with whole records only.
    logs.resize("4m");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&log_file).map(|m| m.len()).unwrap_or(0) <= full_len + 4096 {
        assert!(Instant::now() < deadline, "logging did not resume after space returned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert!(torn_records(&log).is_empty(), "torn records: {:?}", torn_records(&log));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&monitor_log).unwrap_or_default().contains("container log writable again") {
        assert!(Instant::now() < deadline, "the monitor did not report the recovery");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.remove_pod(&pod).await;
}

// ---------------------------------------------------------------------------------------
// Hostile images.

#[tokio::test(flavor = "multi_thread")]
async fn hardlinks_out_huge_entries_and_lying_sizes_are_refused() {
    if !root_or_skip() {
        return;
    }
    let registry = Registry::start().await;
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let hardlink_dotdot = ImageBuilder::busybox()
        .layer(Layer::RawTar(raw_tar(&[("passwd-copy", tar::EntryType::Link, b"", "../../../../../../../../etc/passwd")])))
        .push(&registry, "hostile/hardlink-dotdot", &["1"])
        .await;
    let hardlink_abs = ImageBuilder::busybox()
        .layer(Layer::RawTar(raw_tar(&[("shadow-copy", tar::EntryType::Link, b"", "/etc/shadow")])))
        .push(&registry, "hostile/hardlink-absolute", &["1"])
        .await;
    // A tar entry that claims 1 TiB with a few bytes behind it.
    let mut huge = RawEntry::new("huge", tar::EntryType::Regular, b"tiny", "");
    huge.header.set_size(1 << 40);
    huge.header.set_cksum();
    let huge_entry = ImageBuilder::busybox().layer(Layer::RawTar(raw_tar_of(&[huge]))).push(&registry, "hostile/huge-entry", &["1"]).await;
    for (image, words) in [
        (&hardlink_dotdot, &["passwd-copy", "is a hardlink to", "contains '..'", "refusing"][..]),
        (&hardlink_abs, &["shadow-copy", "is a hardlink to", "absolute", "refusing"][..]),
        (&huge_entry, &["not a valid layer"][..]),
    ] {
        let err = pull(&daemon, &image.references[0]).await.expect_err("hostile layer");
        eprintln!("{}: {} {}", image.references[0], err.code(), err.message());
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        for w in words {
            assert!(err.message().contains(w), "{}: {w:?} in {}", image.references[0], err.message());
        }
    }

    // Manifests whose layer sizes lie, either way: the registry serves the real blob.
    let honest = ImageBuilder::busybox().with_random_layers(1, 1, 3).build();
    for (factor, words) in [(1000u64, "but the manifest says"), (0, "larger than the")] {
        let lying = with_layer_size(&honest, |real| if factor == 0 { real / 2 } else { real * factor });
        let pushed = push_built(&lying, &registry, &format!("hostile/size-x{factor}"), &["1"]).await;
        let err = pull(&daemon, &pushed.references[0]).await.expect_err("a lying size");
        eprintln!("size x{factor}: {} {}", err.code(), err.message());
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(err.message().contains(words) && err.message().contains("refusing"), "{}", err.message());
    }
    assert!(image_ids(&daemon).await.is_empty());
    assert!(store_contents(&daemon).is_empty(), "left {:?}", store_contents(&daemon));
    assert!(!Path::new("/passwd-copy").exists() && !Path::new("/shadow-copy").exists());
}

/// `image` with its last layer's declared size changed by `size` (a new manifest, pushed
/// as is: the registry serves the real blob).
fn with_layer_size(image: &BuiltImage, size: impl Fn(u64) -> u64) -> BuiltImage {
    let mut manifest: serde_json::Value = serde_json::from_slice(&image.manifest).expect("manifest json");
    let layers = manifest["layers"].as_array_mut().expect("layers");
    let last = layers.last_mut().expect("a layer");
    let real = last["size"].as_u64().expect("size");
    last["size"] = serde_json::json!(size(real));
    let bytes = serde_json::to_vec(&manifest).expect("manifest bytes");
    BuiltImage { manifest_digest: sha256(&bytes), manifest: bytes, ..image.clone() }
}

#[tokio::test(flavor = "multi_thread")]
async fn device_nodes_from_an_image_cannot_be_opened_by_the_container() {
    if !root_or_skip() {
        return;
    }
    let mut env = Env::start().await;
    // /dev/mem (1,1) and the first SCSI disk (8,0) as files of the image.
    let mut mem = RawEntry::new("evil-mem", tar::EntryType::Char, b"", "");
    mem.header.set_device_major(1).expect("major");
    mem.header.set_device_minor(1).expect("minor");
    mem.header.set_mode(0o666);
    mem.header.set_cksum();
    let mut disk = RawEntry::new("evil-disk", tar::EntryType::Block, b"", "");
    disk.header.set_device_major(8).expect("major");
    disk.header.set_device_minor(0).expect("minor");
    disk.header.set_mode(0o666);
    disk.header.set_cksum();
    let registry = Registry::start().await;
    let image = ImageBuilder::busybox().layer(Layer::RawTar(raw_tar_of(&[mem, disk]))).push(&registry, "hostile/devices", &["1"]).await;
    pull(&env.daemon, &image.references[0]).await.expect("device nodes are content, as in containerd");
    let pod = env.pod("devices").await;
    let script = "for d in /evil-mem /evil-disk; do if head -c1 $d >/dev/null 2>/tmp/err; then echo OPENED $d; else echo refused $d: $(cat /tmp/err); fi; done";
    let id = env.run(&pod, container("prober", &image.references[0], &["sh", "-c", script])).await;
    let status = env.wait_exited(&id).await;
    let log = std::fs::read_to_string(Path::new(&pod.1.log_directory).join("prober/0.log")).unwrap_or_default();
    eprintln!("{log}");
    assert_eq!(status.exit_code, 0, "{log}");
    assert!(!log.contains("OPENED"), "a device node from the image was usable: {log}");
    assert_eq!(log.matches("Operation not permitted").count(), 2, "the device cgroup refuses both: {log}");
    // The snapshots (and their setuid files and devices) are out of reach of other users.
    let snapshots = env.daemon.root().join("images/snapshots");
    let guarded = snapshots.ancestors().take_while(|p| p.starts_with(env.daemon.root())).any(|p| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).map(|m| m.permissions().mode() & 0o001 == 0).unwrap_or(false)
    });
    assert!(guarded, "some directory above the snapshots denies others traversal");
    env.remove_pod(&pod.0).await;
}

// ---------------------------------------------------------------------------------------
// Hostile paths.

#[tokio::test(flavor = "multi_thread")]
async fn mount_targets_behind_escaping_symlinks_stay_in_the_rootfs() {
    if !root_or_skip() {
        return;
    }
    let outside = tempfile::tempdir().expect("outside dir");
    let registry = Registry::start().await;
    let mut env = Env::start().await;
    let relative = format!("../../../../../../../../../..{}", outside.path().join("rel").display());
    let absolute = outside.path().join("abs").display().to_string();
    let image = ImageBuilder::busybox()
        .layer(Layer::Entries(vec![
            Entry::Symlink { path: "escape-rel".into(), target: relative },
            Entry::Symlink { path: "escape-abs".into(), target: absolute },
            Entry::Symlink { path: "inside".into(), target: "/tmp".into() },
        ]))
        .push(&registry, "hostile/symlinks", &["1"])
        .await;
    pull(&env.daemon, &image.references[0]).await.expect("pull");
    let source = tempfile::tempdir().expect("mount source");
    let pod = env.pod("symlinks").await;
    let mut c = container("writer", &image.references[0], &["sh", "-c", "echo rel > /escape-rel/data/f && echo abs > /escape-abs/data/g && ls /escape-rel/data /escape-abs/data"]);
    c.mounts = vec![cri_mount(source.path(), "/escape-rel/data"), cri_mount(source.path(), "/escape-abs/data")];
    let request = v1::CreateContainerRequest { pod_sandbox_id: pod.0.clone(), config: Some(c), sandbox_config: Some(pod.1.clone()) };
    let err = env.rt.create_container(request).await.expect_err("mount targets through dangling escaping symlinks");
    eprintln!("{} {}", err.code(), err.message());
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("/escape-rel") && err.message().contains("refusing"), "{}", err.message());
    // A symlink that resolves inside the image is followed inside it, as runc does: the
    // mount lands in the container's /tmp, not the host's.
    let name = format!("capstan-hostile-{}", std::process::id());
    let mut c = container("inside", &image.references[0], &["sh", "-c", &format!("echo hi > /inside/{name}/f && cat /tmp/{name}/f")]);
    c.mounts = vec![cri_mount(source.path(), &format!("/inside/{name}"))];
    let id = env.run(&pod, c).await;
    let code = env.wait_exited(&id).await.exit_code;
    let log = std::fs::read_to_string(Path::new(&pod.1.log_directory).join("inside/0.log")).unwrap_or_default();
    assert_eq!(code, 0, "{log}");
    assert_eq!(std::fs::read_to_string(source.path().join("f")).unwrap(), "hi\n", "the write went through the mount");
    assert!(!Path::new("/tmp").join(&name).exists(), "nothing appeared in the host's /tmp");
    // Wherever the mounts went, it was not the host's directory behind the symlinks.
    assert!(files_below(outside.path()).is_empty(), "wrote outside the rootfs: {:?}", files_below(outside.path()));
    for sub in ["rel", "abs", "rel/data", "abs/data"] {
        let p = outside.path().join(sub);
        assert!(!p.exists(), "{} was created on the host", p.display());
        assert!(mountinfo_at(&p).is_empty(), "{} is a mount point on the host", p.display());
    }
    env.remove_pod(&pod.0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn log_and_mount_paths_outside_the_allowed_roots_are_refused() {
    if !root_or_skip() {
        return;
    }
    let mut env = Env::start().await;
    let outside = tempfile::tempdir().expect("outside dir");

    // A log directory outside security.log_roots: refused before anything is made.
    let mut config = env.sandbox_config("badlogdir");
    config.log_directory = outside.path().join("pods/x").display().to_string();
    let request = v1::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
    let err = env.rt.run_pod_sandbox(request).await.expect_err("log dir outside the roots");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("log_directory") && err.message().contains("security.log_roots"), "{}", err.message());
    assert!(!outside.path().join("pods").exists(), "nothing created for a refused pod");
    let listed = env.rt.list_pod_sandbox(v1::ListPodSandboxRequest { filter: None }).await.unwrap().into_inner().items;
    assert!(listed.is_empty(), "no half-made pod: {listed:?}");

    // Inside the roots, but through a symlink that leads out.
    let sneaky = env.daemon.scratch().join("logs/sneaky");
    std::fs::create_dir_all(sneaky.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(outside.path(), &sneaky).unwrap();
    config.log_directory = sneaky.join("pod").display().to_string();
    let request = v1::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
    let err = env.rt.run_pod_sandbox(request).await.expect_err("symlinked log dir");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // A good pod whose container asks for a log file that climbs out, directly or through
    // a symlink planted in the pod's log directory.
    let pod = env.pod("logs").await;
    std::os::unix::fs::symlink(outside.path(), Path::new(&pod.1.log_directory).join("planted")).unwrap();
    for (log_path, words) in [("../../escape.log", "relative"), ("planted/0.log", "outside the pod's log directory")] {
        let mut c = container("c", &env.busybox, &["true"]);
        c.log_path = log_path.into();
        let request = v1::CreateContainerRequest { pod_sandbox_id: pod.0.clone(), config: Some(c), sandbox_config: Some(pod.1.clone()) };
        let err = env.rt.create_container(request).await.expect_err(log_path);
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(words), "{log_path}: {}", err.message());
    }
    assert!(files_below(outside.path()).is_empty(), "nothing written outside: {:?}", files_below(outside.path()));

    // Mounts of the runtime's own state: the image store, the monitors' sockets.
    for host in [env.daemon.root(), env.daemon.root().join("images"), env.daemon.state()] {
        let mut c = container("peek", &env.busybox, &["true"]);
        c.mounts = vec![cri_mount(&host, "/peek")];
        let request = v1::CreateContainerRequest { pod_sandbox_id: pod.0.clone(), config: Some(c), sandbox_config: Some(pod.1.clone()) };
        let err = env.rt.create_container(request).await.expect_err("mount of the runtime's state");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("runtime's own state"), "{}", err.message());
    }
    let containers = env.rt.list_containers(v1::ListContainersRequest { filter: None }).await.unwrap().into_inner().containers;
    assert!(containers.is_empty(), "no half-made container: {containers:?}");
    env.remove_pod(&pod.0).await;
}
