//! Test images built at test time from Debian's `busybox-static`, pushed to a [`Registry`]
//! with the same wire format any registry client would use (distribution v2 API).

use std::collections::BTreeMap;
use std::io::Write;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};

use crate::registry::Registry;

pub const BUSYBOX: &str = "/bin/busybox";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// One entry of a layer tarball.
#[derive(Debug, Clone)]
pub enum Entry {
    File { path: String, data: Vec<u8>, mode: u32, uid: u64, gid: u64 },
    Dir { path: String, mode: u32 },
    Symlink { path: String, target: String },
    Hardlink { path: String, target: String },
}

/// A layer: either entries the builder tars up, or a raw (uncompressed) tarball the test
/// crafted itself, e.g. a hostile one with `../` paths.
#[derive(Debug, Clone)]
pub enum Layer {
    Entries(Vec<Entry>),
    RawTar(Vec<u8>),
}

/// A layer as pushed: compressed bytes and both digests.
#[derive(Debug, Clone)]
pub struct BuiltLayer {
    pub gzip: Vec<u8>,
    /// Digest of the compressed blob (what the manifest names).
    pub digest: String,
    /// Digest of the uncompressed tar (the config's rootfs.diff_ids).
    pub diff_id: String,
}

#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub layers: Vec<BuiltLayer>,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
}

/// What a push left in the registry.
#[derive(Debug, Clone)]
pub struct PushedImage {
    /// `127.0.0.1:PORT/repo` (no tag).
    pub name: String,
    /// `name:tag` for every tag pushed.
    pub references: Vec<String>,
    /// The manifest digest (`sha256:…`): `name@digest` pulls the same image.
    pub manifest_digest: String,
    /// Length of the manifest in bytes (an index entry names it).
    pub manifest_size: usize,
    /// The config digest, which is the CRI image id.
    pub config_digest: String,
    pub layer_digests: Vec<String>,
    /// Compressed layers plus config, the size containerd and kubelet report.
    pub size: u64,
}

impl PushedImage {
    pub fn by_digest(&self) -> String {
        format!("{}@{}", self.name, self.manifest_digest)
    }
}

#[derive(Debug, Clone, Default)]
pub struct ImageBuilder {
    layers: Vec<Layer>,
    user: Option<String>,
    env: Vec<String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    workdir: Option<String>,
    stop_signal: Option<String>,
    labels: BTreeMap<String, String>,
}

impl ImageBuilder {
    /// An image with no layers yet.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Busybox in /bin with a symlink per applet, /etc/passwd and /etc/group with root and
    /// nobody, /tmp, and `sh` as the default command.
    pub fn busybox() -> Self {
        Self::empty()
            .layer(Layer::Entries(busybox_entries()))
            .layer(Layer::Entries(vec![
                file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
                file("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
                Entry::Dir { path: "tmp".into(), mode: 0o1777 },
                Entry::Dir { path: "root".into(), mode: 0o700 },
            ]))
            .env("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .cmd(&["sh"])
    }

    /// Busybox plus users and groups: `app` (1000:1000, also in `extra` 2000) and `svc`
    /// (1001, primary group `extra`), with the image's `User` set to `app`.
    pub fn busybox_with_users() -> Self {
        Self::busybox()
            .layer(Layer::Entries(vec![
                file(
                    "etc/passwd",
                    "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n\
                     svc:x:1001:2000:svc:/home/svc:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
                ),
                file("etc/group", "root:x:0:\napp:x:1000:\nextra:x:2000:app\nnogroup:x:65534:\n"),
                Entry::Dir { path: "home".into(), mode: 0o755 },
                Entry::Dir { path: "home/app".into(), mode: 0o755 },
            ]))
            .user("app")
    }

    pub fn layer(mut self, layer: Layer) -> Self {
        self.layers.push(layer);
        self
    }

    /// Adds a file in a new top layer.
    pub fn with_file(self, path: &str, data: impl Into<Vec<u8>>, mode: u32) -> Self {
        let path = path.trim_start_matches('/').to_string();
        self.layer(Layer::Entries(vec![Entry::File { path, data: data.into(), mode, uid: 0, gid: 0 }]))
    }

    /// Adds `mib` MiB of incompressible bytes spread over `layers` new layers
    /// (`data/blob<i>`), so the image really is that large on the wire. `seed` varies the
    /// bytes, so two images built with different seeds share no layer.
    pub fn with_random_layers(mut self, mib: usize, layers: usize, seed: u64) -> Self {
        let per_layer = mib * 1024 * 1024 / layers.max(1);
        // xorshift64: fast and incompressible enough for gzip.
        let mut state = seed | 1;
        for i in 0..layers {
            let data: Vec<u8> = (0..per_layer)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            self = self.layer(Layer::Entries(vec![Entry::File {
                path: format!("data/blob{i}"),
                data,
                mode: 0o644,
                uid: 0,
                gid: 0,
            }]));
        }
        self
    }

    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.into());
        self
    }
    pub fn env(mut self, kv: &str) -> Self {
        self.env.push(kv.into());
        self
    }
    pub fn entrypoint(mut self, args: &[&str]) -> Self {
        self.entrypoint = args.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn cmd(mut self, args: &[&str]) -> Self {
        self.cmd = args.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn workdir(mut self, dir: &str) -> Self {
        self.workdir = Some(dir.into());
        self
    }
    pub fn stop_signal(mut self, signal: &str) -> Self {
        self.stop_signal = Some(signal.into());
        self
    }
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Builds the blobs and the OCI manifest without pushing them.
    pub fn build(&self) -> BuiltImage {
        let layers: Vec<BuiltLayer> = self.layers.iter().map(build_layer).collect();
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "User": self.user.clone().unwrap_or_default(),
                "Env": self.env,
                "Entrypoint": if self.entrypoint.is_empty() { serde_json::Value::Null } else { self.entrypoint.clone().into() },
                "Cmd": if self.cmd.is_empty() { serde_json::Value::Null } else { self.cmd.clone().into() },
                "WorkingDir": self.workdir.clone().unwrap_or_default(),
                "StopSignal": self.stop_signal.clone().unwrap_or_default(),
                "Labels": self.labels,
            },
            "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>() },
            "history": layers.iter().map(|_| serde_json::json!({"created_by": "capstan-integration"})).collect::<Vec<_>>(),
        });
        let config = serde_json::to_vec(&config).expect("config json");
        let config_digest = sha256(&config);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len() },
            "layers": layers.iter().map(|l| serde_json::json!({
                "mediaType": OCI_LAYER_GZIP, "digest": l.digest, "size": l.gzip.len(),
            })).collect::<Vec<_>>(),
        });
        let manifest = serde_json::to_vec(&manifest).expect("manifest json");
        let manifest_digest = sha256(&manifest);
        BuiltImage { layers, config, config_digest, manifest, manifest_digest }
    }

    /// Builds the image and pushes it to `registry` as `repo` under every tag in `tags`.
    pub async fn push(&self, registry: &Registry, repo: &str, tags: &[&str]) -> PushedImage {
        let built = self.build();
        push_built(&built, registry, repo, tags).await
    }
}

/// Pushes already-built blobs and manifest under each tag.
pub async fn push_built(built: &BuiltImage, registry: &Registry, repo: &str, tags: &[&str]) -> PushedImage {
    push_to_host(built, &registry.host(), registry.auth(), repo, tags).await
}

/// Like [`push_built`], to a registry the harness did not start (`host` is `ip:port`,
/// plain HTTP), for the benchmark scripts.
pub async fn push_to_host(built: &BuiltImage, host: &str, auth: Option<(&str, &str)>, repo: &str, tags: &[&str]) -> PushedImage {
    assert!(!tags.is_empty(), "push needs at least one tag");
    let name = format!("{host}/{repo}");
    let (client, auth) = client_for(auth);
    let first: Reference = format!("{name}:{}", tags[0]).parse().expect("reference");
    client.store_auth_if_needed(first.resolve_registry(), &auth).await;
    for layer in &built.layers {
        client.push_blob(&first, layer.gzip.clone(), &layer.digest).await.expect("push layer");
    }
    client.push_blob(&first, built.config.clone(), &built.config_digest).await.expect("push config");
    let mut references = Vec::new();
    for tag in tags {
        let reference: Reference = format!("{name}:{tag}").parse().expect("reference");
        client
            .push_manifest_raw(&reference, built.manifest.clone(), http::HeaderValue::from_static(OCI_MANIFEST))
            .await
            .expect("push manifest");
        references.push(reference.whole());
    }
    let size = built.layers.iter().map(|l| l.gzip.len() as u64).sum::<u64>() + built.config.len() as u64;
    PushedImage {
        name,
        references,
        manifest_digest: built.manifest_digest.clone(),
        manifest_size: built.manifest.len(),
        config_digest: built.config_digest.clone(),
        layer_digests: built.layers.iter().map(|l| l.digest.clone()).collect(),
        size,
    }
}

/// Pushes an OCI index naming already-pushed images by platform (`("linux","amd64")`),
/// under `repo:tag`; returns the index digest. The images must have been pushed to the same
/// `repo` (a registry refuses an index naming manifests it does not hold there).
pub async fn push_index(registry: &Registry, repo: &str, tag: &str, entries: &[(&str, &str, &PushedImage)]) -> String {
    let manifests: Vec<serde_json::Value> = entries
        .iter()
        .map(|(os, arch, image)| {
            serde_json::json!({
                "mediaType": OCI_MANIFEST, "digest": image.manifest_digest, "size": image.manifest_size,
                "platform": { "os": os, "architecture": arch },
            })
        })
        .collect();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests,
    }))
    .expect("index json");
    let (client, auth) = client_for(registry.auth());
    let reference: Reference = format!("{}/{repo}:{tag}", registry.host()).parse().expect("reference");
    client.store_auth_if_needed(reference.resolve_registry(), &auth).await;
    client
        .push_manifest_raw(&reference, index.clone(), http::HeaderValue::from_static(OCI_INDEX))
        .await
        .expect("push index");
    sha256(&index)
}

fn client_for(auth: Option<(&str, &str)>) -> (Client, RegistryAuth) {
    let client = Client::new(ClientConfig { protocol: ClientProtocol::Http, ..Default::default() });
    let auth = match auth {
        Some((user, password)) => RegistryAuth::Basic(user.into(), password.into()),
        None => RegistryAuth::Anonymous,
    };
    (client, auth)
}

/// A raw tar with names written by hand: `tar::Builder` itself refuses `..`. Entries are
/// `(name, type, data, link name)`.
pub fn raw_tar(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
    let headers: Vec<RawEntry> = entries.iter().map(|(name, kind, data, link)| RawEntry::new(name, *kind, data, link)).collect();
    raw_tar_of(&headers)
}

/// One entry of [`raw_tar_of`], for the fields [`raw_tar`] does not set.
pub struct RawEntry {
    pub header: tar::Header,
    pub data: Vec<u8>,
}

impl RawEntry {
    pub fn new(name: &str, kind: tar::EntryType, data: &[u8], link: &str) -> RawEntry {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        {
            let gnu = h.as_gnu_mut().expect("gnu header");
            gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_cksum();
        RawEntry { header: h, data: data.to_vec() }
    }
}

/// Headers as given (their checksums are the caller's), each followed by its data.
pub fn raw_tar_of(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(e.header.as_bytes());
        out.extend_from_slice(&e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn file(path: &str, content: &str) -> Entry {
    Entry::File { path: path.into(), data: content.as_bytes().to_vec(), mode: 0o644, uid: 0, gid: 0 }
}

fn busybox_entries() -> Vec<Entry> {
    let data = std::fs::read(BUSYBOX)
        .unwrap_or_else(|e| panic!("{BUSYBOX}: {e}; install Debian's busybox-static (integration/run-tests.sh does)"));
    let list = std::process::Command::new(BUSYBOX).arg("--list").output().expect("busybox --list");
    let mut entries = vec![
        Entry::Dir { path: "bin".into(), mode: 0o755 },
        Entry::Dir { path: "etc".into(), mode: 0o755 },
        Entry::File { path: "bin/busybox".into(), data, mode: 0o755, uid: 0, gid: 0 },
    ];
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            entries.push(Entry::Symlink { path: format!("bin/{applet}"), target: "busybox".into() });
        }
    }
    entries
}

/// Tars and gzips a layer, returning both digests.
pub fn build_layer(layer: &Layer) -> BuiltLayer {
    let tar_bytes = match layer {
        Layer::RawTar(bytes) => bytes.clone(),
        Layer::Entries(entries) => tar_entries(entries),
    };
    let diff_id = sha256(&tar_bytes);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar_bytes).expect("gzip");
    let gzip = gz.finish().expect("gzip");
    let digest = sha256(&gzip);
    BuiltLayer { gzip, digest, diff_id }
}

fn tar_entries(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(1_700_000_000);
        match entry {
            Entry::File { path, data, mode, uid, gid } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(data.len() as u64);
                header.set_mode(*mode);
                header.set_uid(*uid);
                header.set_gid(*gid);
                builder.append_data(&mut header, path, data.as_slice()).expect("tar file");
            }
            Entry::Dir { path, mode } => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                header.set_mode(*mode);
                builder.append_data(&mut header, path, std::io::empty()).expect("tar dir");
            }
            Entry::Symlink { path, target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                header.set_mode(0o777);
                builder.append_link(&mut header, path, target).expect("tar symlink");
            }
            Entry::Hardlink { path, target } => {
                header.set_entry_type(tar::EntryType::Link);
                header.set_size(0);
                header.set_mode(0o644);
                builder.append_link(&mut header, path, target).expect("tar hardlink");
            }
        }
    }
    builder.into_inner().expect("tar finish")
}
