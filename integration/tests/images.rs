//! ImageService on the real daemon against a real registry (Debian's docker-registry on
//! 127.0.0.1) with images built at test time from busybox-static: pulls by tag, digest and
//! index, tags, mirrors, auth, corruption, hostile layers, usage, restarts, concurrency.

use std::path::Path;
use std::time::Duration;

use capstan_integration::daemon::{Daemon, DaemonOptions};
use capstan_integration::files_below;
use capstan_integration::image::{Entry, ImageBuilder, Layer, PushedImage, push_index, raw_tar};
use capstan_integration::registry::Registry;
use cri_proto::ImageServiceClient;
use cri_proto::v1;
use tonic::Code;
use tonic::transport::Channel;

type Images = ImageServiceClient<Channel>;

fn spec(image: &str) -> Option<v1::ImageSpec> {
    Some(v1::ImageSpec { image: image.into(), ..Default::default() })
}

async fn pull(client: &mut Images, image: &str, auth: Option<v1::AuthConfig>) -> Result<String, tonic::Status> {
    let req = v1::PullImageRequest { image: spec(image), auth, sandbox_config: None };
    client.pull_image(req).await.map(|r| r.into_inner().image_ref)
}

async fn status(client: &mut Images, image: &str) -> Option<v1::Image> {
    let req = v1::ImageStatusRequest { image: spec(image), verbose: false };
    client.image_status(req).await.expect("ImageStatus").into_inner().image
}

async fn list(client: &mut Images) -> Vec<v1::Image> {
    client.list_images(v1::ListImagesRequest { filter: None }).await.expect("ListImages").into_inner().images
}

async fn remove(client: &mut Images, image: &str) {
    client.remove_image(v1::RemoveImageRequest { image: spec(image) }).await.expect("RemoveImage");
}

async fn fs_usage(client: &mut Images) -> (u64, u64) {
    let info = client.image_fs_info(v1::ImageFsInfoRequest {}).await.expect("ImageFsInfo").into_inner();
    let fs = &info.image_filesystems[0];
    (fs.used_bytes.as_ref().map_or(0, |v| v.value), fs.inodes_used.as_ref().map_or(0, |v| v.value))
}

/// Snapshot directories (`<root>/snapshots/<64 hex>`), temporary ones included.
fn snapshots(daemon: &Daemon) -> Vec<String> {
    std::fs::read_dir(daemon.root().join("snapshots"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "l" && n != "empty")
        .collect()
}

fn root_or_skip() -> bool {
    capstan_integration::root_or_skip("image tests unpack layers with their owners and need root")
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_by_tag_then_list_status_and_remove_round_trip() {
    if !root_or_skip() {
        return;
    }
    let registry = Registry::start().await;
    let pushed = ImageBuilder::busybox_with_users().push(&registry, "test/busybox", &["1.0"]).await;
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let mut c = daemon.image_client().await;
    let tag = format!("{}:1.0", pushed.name);

    let id = pull(&mut c, &tag, None).await.expect("pull by tag");
    assert_eq!(id, pushed.config_digest, "the image ref is the image id (config digest)");

    let images = list(&mut c).await;
    assert_eq!(images.len(), 1, "{images:?}");
    let image = &images[0];
    assert_eq!(image.id, pushed.config_digest);
    assert_eq!(image.repo_tags, vec![tag.clone()]);
    assert_eq!(image.repo_digests, vec![pushed.by_digest()]);
    assert_eq!(image.size, pushed.size, "compressed layers + config");
    assert_eq!(image.username, "app", "User from the image config");
    assert!(image.uid.is_none());
    assert!(!image.pinned);

    // Every spelling finds it: tag, repo digest, id, bare hex, short id.
    let hex = &pushed.config_digest["sha256:".len()..];
    for name in [tag.as_str(), &pushed.by_digest(), &pushed.config_digest, hex, &hex[..12]] {
        let found = status(&mut c, name).await.unwrap_or_else(|| panic!("ImageStatus {name} found nothing"));
        assert_eq!(found.id, pushed.config_digest, "{name}");
    }
    assert!(status(&mut c, &format!("{}:nope", pushed.name)).await.is_none(), "absent image: empty status");

    let verbose = c
        .image_status(v1::ImageStatusRequest { image: spec(&tag), verbose: true })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&verbose.info["info"]).expect("verbose info is JSON");
    assert_eq!(info["manifestDigest"], pushed.manifest_digest);
    assert_eq!(info["imageSpec"]["config"]["User"], "app");
    assert_eq!(info["layers"].as_array().unwrap().len(), pushed.layer_digests.len());

    // The layers are unpacked: busybox and its applet links are in the snapshots.
    let snaps = snapshots(&daemon);
    assert_eq!(snaps.len(), pushed.layer_digests.len(), "{snaps:?}");
    let has_busybox = snaps.iter().any(|s| daemon.root().join("snapshots").join(s).join("fs/bin/busybox").is_file());
    assert!(has_busybox);

    let filtered = c
        .list_images(v1::ListImagesRequest { filter: Some(v1::ImageFilter { image: spec(&tag) }) })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(filtered.len(), 1);

    remove(&mut c, &tag).await;
    assert!(status(&mut c, &pushed.config_digest).await.is_none());
    assert!(list(&mut c).await.is_empty());
    remove(&mut c, &tag).await; // absent: not an error
    remove(&mut c, &pushed.config_digest).await;
    assert!(files_below(&daemon.root().join("images/blobs")).is_empty(), "blobs collected");
    assert!(snapshots(&daemon).is_empty(), "snapshots collected");
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_by_digest_and_a_multi_tag_image() {
    if !root_or_skip() {
        return;
    }
    let registry = Registry::start().await;
    let pushed = ImageBuilder::busybox().label("v", "1").push(&registry, "multi", &["a", "b"]).await;
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let mut c = daemon.image_client().await;

    let id = pull(&mut c, &pushed.by_digest(), None).await.expect("pull by digest");
    assert_eq!(id, pushed.config_digest);
    let image = status(&mut c, &pushed.by_digest()).await.expect("status by digest");
    assert!(image.repo_tags.is_empty(), "a digest pull adds no tag: {image:?}");
    assert_eq!(image.repo_digests, vec![pushed.by_digest()]);
    // name:tag@digest pulls the digest.
    let pinned = format!("{}:whatever@{}", pushed.name, pushed.manifest_digest);
    assert_eq!(pull(&mut c, &pinned, None).await.unwrap(), pushed.config_digest);

    for tag in &pushed.references {
        assert_eq!(pull(&mut c, tag, None).await.unwrap(), pushed.config_digest);
    }
    let images = list(&mut c).await;
    assert_eq!(images.len(), 1, "one image, several names: {images:?}");
    let mut tags = images[0].repo_tags.clone();
    tags.sort();
    assert_eq!(tags, pushed.references);

    // Tag `a` moves to a new image; the old one keeps `b`.
    let newer = ImageBuilder::busybox().label("v", "2").push(&registry, "multi", &["a"]).await;
    assert_eq!(pull(&mut c, &newer.references[0], None).await.unwrap(), newer.config_digest);
    assert_eq!(status(&mut c, &newer.references[0]).await.unwrap().id, newer.config_digest);
    let old = status(&mut c, &pushed.config_digest).await.unwrap();
    assert_eq!(old.repo_tags, vec![format!("{}:b", pushed.name)]);
    assert_eq!(list(&mut c).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_index_resolves_to_the_linux_amd64_manifest() {
    if !root_or_skip() {
        return;
    }
    let registry = Registry::start().await;
    let amd64 = ImageBuilder::busybox().label("arch", "amd64").push(&registry, "multiarch", &["amd64"]).await;
    let arm64 = ImageBuilder::busybox().label("arch", "arm64").push(&registry, "multiarch", &["arm64"]).await;
    let index = push_index(&registry, "multiarch", "all", &[("linux", "arm64", &arm64), ("linux", "amd64", &amd64)]).await;
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let mut c = daemon.image_client().await;
    let id = pull(&mut c, &format!("{}:all", amd64.name), None).await.expect("pull index");
    assert_eq!(id, amd64.config_digest);
    let image = status(&mut c, &id).await.unwrap();
    assert_eq!(image.repo_digests, vec![format!("{}@{index}", amd64.name)], "repo digest names the index");
    // By the index digest too.
    assert_eq!(pull(&mut c, &format!("{}@{index}", amd64.name), None).await.unwrap(), id);
}

#[tokio::test(flavor = "multi_thread")]
async fn mirror_in_hosts_toml_serves_registry_k8s_io() {
    if !root_or_skip() {
        return;
    }
    let registry = Registry::start().await;
    let pushed = ImageBuilder::busybox().entrypoint(&["/bin/sleep", "infinity"]).push(&registry, "pause", &["3.10"]).await;
    let certs = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(certs.path().join("registry.k8s.io")).unwrap();
    std::fs::write(
        certs.path().join("registry.k8s.io/hosts.toml"),
        format!(
            "server = \"https://registry.k8s.io\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            registry.host()
        ),
    )
    .unwrap();
    let options = DaemonOptions {
        config_toml: format!("[images]\nregistry_config_dir = {:?}\n", certs.path()),
        ..Default::default()
    };
    let daemon = Daemon::start(options).await;
    let mut c = daemon.image_client().await;
    let id = pull(&mut c, "registry.k8s.io/pause:3.10", None).await.expect("pull through the mirror");
    assert_eq!(id, pushed.config_digest);
    let image = status(&mut c, "registry.k8s.io/pause:3.10").await.unwrap();
    assert_eq!(image.repo_tags, vec!["registry.k8s.io/pause:3.10".to_string()]);
    assert_eq!(image.repo_digests, vec![format!("registry.k8s.io/pause@{}", pushed.manifest_digest)]);
    assert!(image.pinned, "the configured sandbox image is pinned");
    // Not on the mirror, and the upstream is unreachable from here: an error, not a hang.
    let err = pull(&mut c, "registry.k8s.io/absent:1", None).await.unwrap_err();
    assert!(matches!(err.code(), Code::NotFound | Code::Unavailable), "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_are_required_and_checked() {
    if !root_or_skip() {
        return;
    }
    let registry = Registry::start_with_auth("alice", "s3cret").await;
    let pushed = ImageBuilder::busybox().push(&registry, "private/app", &["1"]).await;
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let mut c = daemon.image_client().await;
    let tag = &pushed.references[0];

    let err = pull(&mut c, tag, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("credentials") || err.message().contains("refused"), "{err:?}");
    let wrong = v1::AuthConfig { username: "alice".into(), password: "nope".into(), ..Default::default() };
    let err = pull(&mut c, tag, Some(wrong)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(list(&mut c).await.is_empty());

    // The `auth` field (base64 user:password), as kubelet passes docker config secrets.
    let auth = v1::AuthConfig { auth: "YWxpY2U6czNjcmV0".into(), server_address: registry.host(), ..Default::default() };
    assert_eq!(pull(&mut c, tag, Some(auth)).await.expect("pull with credentials"), pushed.config_digest);
    let right = v1::AuthConfig { username: "alice".into(), password: "s3cret".into(), ..Default::default() };
    assert_eq!(pull(&mut c, tag, Some(right)).await.unwrap(), pushed.config_digest);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_blob_is_refused_and_nothing_is_kept() {
    if !root_or_skip() {
        return;
    }
    let registry = Registry::start().await;
    let pushed = ImageBuilder::busybox().push(&registry, "corrupt", &["1"]).await;
    // Flip bytes in the middle of the busybox layer, keeping its length.
    let victim = registry.blob_path(&pushed.layer_digests[0]);
    let mut data = std::fs::read(&victim).unwrap();
    let mid = data.len() / 2;
    for b in &mut data[mid..mid + 16] {
        *b ^= 0x5a;
    }
    std::fs::write(&victim, data).unwrap();

    let daemon = Daemon::start(DaemonOptions::default()).await;
    let mut c = daemon.image_client().await;
    let err = pull(&mut c, &pushed.references[0], None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("corrupt") && err.message().contains(&pushed.layer_digests[0]), "{err:?}");
    assert!(list(&mut c).await.is_empty());
    assert!(status(&mut c, &pushed.references[0]).await.is_none());
    let layer_blob = daemon.root().join("images/blobs/sha256").join(&pushed.layer_digests[0]["sha256:".len()..]);
    assert!(!layer_blob.exists(), "the corrupt blob was not stored");
    assert!(files_below(&daemon.root().join("images/ingest")).is_empty());
    assert!(snapshots(&daemon).is_empty(), "no snapshot of a failed pull is kept: {:?}", snapshots(&daemon));
    assert!(files_below(&daemon.root().join("images/blobs")).is_empty(), "no blob of a failed pull is kept");
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_layers_are_refused_without_touching_the_host() {
    if !root_or_skip() {
        return;
    }
    let registry = Registry::start().await;
    let outside = tempfile::tempdir().unwrap();
    let outside_str = outside.path().display().to_string();
    let dotdot = ImageBuilder::busybox()
        .layer(Layer::RawTar(raw_tar(&[("../../../../../../../../tmp/capstan-pwned", tar::EntryType::Regular, b"x", "")])))
        .push(&registry, "hostile/dotdot", &["1"])
        .await;
    let symlink = ImageBuilder::busybox()
        .layer(Layer::RawTar(raw_tar(&[
            ("escape", tar::EntryType::Symlink, b"", outside_str.as_str()),
            ("escape/pwned", tar::EntryType::Regular, b"x", ""),
        ])))
        .push(&registry, "hostile/symlink", &["1"])
        .await;
    let absolute = ImageBuilder::busybox()
        .layer(Layer::RawTar(raw_tar(&[("/tmp/capstan-pwned-abs", tar::EntryType::Regular, b"x", "")])))
        .push(&registry, "hostile/absolute", &["1"])
        .await;
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let mut c = daemon.image_client().await;
    for (image, what) in [(&dotdot, "'..'"), (&symlink, "symlink"), (&absolute, "absolute")] {
        let err = pull(&mut c, &image.references[0], None).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(what) && err.message().contains("refusing"), "{what}: {err:?}");
    }
    assert!(!Path::new("/tmp/capstan-pwned").exists() && !Path::new("/tmp/capstan-pwned-abs").exists());
    assert!(!outside.path().join("pwned").exists());
    assert!(list(&mut c).await.is_empty());
    // A benign symlink to an absolute path is fine as content (it is never followed).
    let benign = ImageBuilder::busybox()
        .layer(Layer::Entries(vec![Entry::Symlink { path: "etc/mtab".into(), target: "/proc/mounts".into() }]))
        .push(&registry, "benign", &["1"])
        .await;
    pull(&mut c, &benign.references[0], None).await.expect("absolute symlink as content");
}

#[tokio::test(flavor = "multi_thread")]
async fn image_fs_info_follows_pulls_and_removals() {
    if !root_or_skip() {
        return;
    }
    let registry = Registry::start().await;
    let pushed = ImageBuilder::busybox().push(&registry, "usage", &["1"]).await;
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let mut c = daemon.image_client().await;
    let info = c.image_fs_info(v1::ImageFsInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.image_filesystems.len(), 1);
    assert_eq!(info.image_filesystems[0].fs_id.as_ref().unwrap().mountpoint, daemon.root().display().to_string());
    let (bytes0, inodes0) = fs_usage(&mut c).await;

    pull(&mut c, &pushed.references[0], None).await.unwrap();
    let (bytes1, inodes1) = fs_usage(&mut c).await;
    let busybox = std::fs::metadata("/bin/busybox").unwrap().len();
    // The compressed blob plus the unpacked binary, at least.
    assert!(bytes1 >= bytes0 + busybox + pushed.size / 2, "{bytes0} -> {bytes1}");
    let applets = std::process::Command::new("/bin/busybox").arg("--list").output().unwrap().stdout;
    let applets = String::from_utf8_lossy(&applets).lines().count() as u64;
    assert!(inodes1 >= inodes0 + applets, "{inodes0} -> {inodes1} ({applets} applet links)");

    remove(&mut c, &pushed.references[0]).await;
    let (bytes2, inodes2) = fs_usage(&mut c).await;
    assert_eq!((bytes2, inodes2), (bytes0, inodes0), "back to the empty store");
}

#[tokio::test(flavor = "multi_thread")]
async fn images_survive_restart_and_a_crash_mid_pull_leaves_no_half_image() {
    if !root_or_skip() {
        return;
    }
    let registry = Registry::start().await;
    let small = ImageBuilder::busybox().push(&registry, "keep", &["1"]).await;
    let big = big_image(24).push(&registry, "big", &["1"]).await;
    let mut daemon = Daemon::start(DaemonOptions::default()).await;
    let mut c = daemon.image_client().await;
    pull(&mut c, &small.references[0], None).await.unwrap();

    daemon.restart().await;
    let mut c = daemon.image_client().await;
    let image = status(&mut c, &small.references[0]).await.expect("kept across a graceful restart");
    assert_eq!(image.id, small.config_digest);
    assert_eq!(image.repo_digests, vec![small.by_digest()]);

    // kill -9 while a big pull is under way.
    let socket = daemon.socket();
    let reference = big.references[0].clone();
    let pulling = tokio::spawn(async move {
        let channel = cri_proto::unix::connect(&socket).await.unwrap();
        pull(&mut ImageServiceClient::new(channel), &reference, None).await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    daemon.kill9();
    let _ = pulling.await;
    daemon.restart().await;
    let mut c = daemon.image_client().await;
    assert!(status(&mut c, &small.references[0]).await.is_some(), "kept across a crash");
    match status(&mut c, &big.references[0]).await {
        // The pull may have finished before the kill: then it is whole.
        Some(image) => {
            eprintln!("the big pull finished before the kill");
            assert_eq!(image.id, big.config_digest);
        }
        None => {
            eprintln!("the big pull was interrupted by the kill");
            let names = list(&mut c).await.into_iter().map(|i| i.id).collect::<Vec<_>>();
            assert_eq!(names, vec![small.config_digest.clone()]);
        }
    }
    assert!(files_below(&daemon.root().join("images/ingest")).is_empty(), "ingest emptied on start");
    let snaps = snapshots(&daemon);
    assert!(snaps.iter().all(|s| !s.starts_with('.')), "temporary snapshots removed on start: {snaps:?}");
    // The big image pulls fine afterwards.
    assert_eq!(pull(&mut c, &big.references[0], None).await.unwrap(), big.config_digest);
}

/// Busybox plus `mib` MiB of incompressible data in four layers.
fn big_image(mib: usize) -> ImageBuilder {
    ImageBuilder::busybox().with_random_layers(mib, 4, 0x2545_f491_4f6c_dd1d)
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pulls_share_one_download_and_different_images_run_in_parallel() {
    if !root_or_skip() {
        return;
    }
    let registry = Registry::start().await;
    let one: PushedImage = big_image(8).push(&registry, "conc/one", &["1"]).await;
    let two: PushedImage = ImageBuilder::busybox().with_file("/two", b"2".to_vec(), 0o644).push(&registry, "conc/two", &["1"]).await;
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let mut joins = Vec::new();
    for i in 0..6 {
        let socket = daemon.socket();
        let reference = if i < 4 { one.references[0].clone() } else { two.references[0].clone() };
        joins.push(tokio::spawn(async move {
            let channel = cri_proto::unix::connect(&socket).await.unwrap();
            pull(&mut ImageServiceClient::new(channel), &reference, None).await
        }));
    }
    let mut ids = Vec::new();
    for j in joins {
        ids.push(j.await.unwrap().expect("concurrent pull"));
    }
    assert!(ids[..4].iter().all(|id| id == &one.config_digest));
    assert!(ids[4..].iter().all(|id| id == &two.config_digest));
    let pulled_one = daemon.log().lines().filter(|l| l.contains("image pulled") && l.contains("conc/one")).count();
    assert_eq!(pulled_one, 1, "four callers, one pull:\n{}", daemon.log());
    let mut c = daemon.image_client().await;
    assert_eq!(list(&mut c).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_schema2_manifests_pull_like_oci_ones() {
    if !root_or_skip() {
        return;
    }
    use oci_client::client::{ClientConfig, ClientProtocol};
    let registry = Registry::start().await;
    let built = ImageBuilder::busybox().label("kind", "docker").build();
    // Blobs first (pushed with an OCI manifest under another tag), then a docker manifest.
    capstan_integration::image::push_built(&built, &registry, "docker/app", &["oci"]).await;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": built.config_digest, "size": built.config.len(),
        },
        "layers": built.layers.iter().map(|l| serde_json::json!({
            "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "digest": l.digest, "size": l.gzip.len(),
        })).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let digest = capstan_integration::image::sha256(&bytes);
    let client = oci_client::Client::new(ClientConfig { protocol: ClientProtocol::Http, ..Default::default() });
    let reference: oci_client::Reference = format!("{}/docker/app:v2", registry.host()).parse().unwrap();
    client
        .push_manifest_raw(
            &reference,
            bytes,
            http::HeaderValue::from_static("application/vnd.docker.distribution.manifest.v2+json"),
        )
        .await
        .expect("push docker manifest");

    let daemon = Daemon::start(DaemonOptions::default()).await;
    let mut c = daemon.image_client().await;
    let id = pull(&mut c, &reference.whole(), None).await.expect("pull a docker schema2 image");
    assert_eq!(id, built.config_digest);
    let image = status(&mut c, &reference.whole()).await.unwrap();
    assert_eq!(image.repo_digests, vec![format!("{}/docker/app@{digest}", registry.host())]);
}
