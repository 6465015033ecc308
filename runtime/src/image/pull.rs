//! PullImage: resolve the reference on the configured hosts (mirrors first), pick the
//! linux/<this arch> manifest from an index, fetch the config, then every layer (up to
//! `max_concurrent_downloads` at once, each unpacked while it downloads), verify every
//! digest, and only then record the image.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use cri_proto::v1;
use futures::StreamExt;
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::{Arch, ImageConfiguration, ImageIndex, ImageManifest, Os};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::hosts::{self, Endpoint};
use super::layer::{self, Source, Wanted};
use super::reference::ImageRef;
use super::store::{Content, ImageRecord, LayerRecord};
use super::{Inner, ImageStore};
use crate::{Error, Result};

const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const INDEX_TYPES: &[&str] =
    &["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"];
/// Configs are JSON of a few KiB; anything this large is not one.
const MAX_CONFIG_BYTES: u64 = 32 << 20;

/// Registry credentials from a CRI `AuthConfig`.
#[derive(Clone)]
pub struct Credentials {
    auth: RegistryAuth,
    /// The registry the credentials were issued for (empty: the image's own).
    server_address: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // RegistryAuth's Debug redacts secrets.
        f.debug_struct("Credentials").field("auth", &self.auth).field("server_address", &self.server_address).finish()
    }
}

impl Credentials {
    pub fn anonymous() -> Self {
        Credentials { auth: RegistryAuth::Anonymous, server_address: String::new() }
    }

    /// `registry_token` (bearer), `username`/`password`, or `auth` (base64 `user:password`).
    pub fn from_cri(auth: Option<&v1::AuthConfig>) -> Result<Self> {
        let Some(a) = auth else { return Ok(Self::anonymous()) };
        let server_address = a.server_address.trim_start_matches("https://").trim_start_matches("http://");
        let server_address = server_address.trim_end_matches('/').to_string();
        let auth = if !a.registry_token.is_empty() {
            RegistryAuth::Bearer(a.registry_token.clone())
        } else if !a.username.is_empty() || !a.password.is_empty() {
            RegistryAuth::Basic(a.username.clone(), a.password.clone())
        } else if !a.auth.is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(a.auth.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| Error::InvalidArgument("AuthConfig.auth is not base64 of user:password".into()))?;
            let (user, password) = decoded
                .split_once(':')
                .ok_or_else(|| Error::InvalidArgument("AuthConfig.auth is not base64 of user:password".into()))?;
            RegistryAuth::Basic(user.to_string(), password.to_string())
        } else if !a.identity_token.is_empty() {
            return Err(Error::InvalidArgument(
                "AuthConfig.identity_token (OAuth refresh token) is not supported; use username/password or registry_token".into(),
            ));
        } else {
            RegistryAuth::Anonymous
        };
        Ok(Credentials { auth, server_address })
    }

    /// A short fingerprint, so concurrent pulls with different credentials do not share.
    pub(crate) fn fingerprint(&self) -> String {
        let text = match &self.auth {
            RegistryAuth::Anonymous => String::new(),
            RegistryAuth::Basic(u, p) => format!("basic:{u}:{p}"),
            RegistryAuth::Bearer(t) => format!("bearer:{t}"),
        };
        hex::encode(&Sha256::digest(format!("{text}@{}", self.server_address))[..8])
    }

    /// Credentials go to the image's registry, and to a mirror only if issued for it.
    fn for_endpoint(&self, endpoint: &Endpoint) -> RegistryAuth {
        if endpoint.upstream || self.server_address == endpoint.host {
            self.auth.clone()
        } else {
            RegistryAuth::Anonymous
        }
    }
}

/// A manifest chosen for this platform, with the digests that name it.
struct Resolved {
    manifest: ImageManifest,
    manifest_bytes: Vec<u8>,
    manifest_digest: String,
    index: Option<(String, Vec<u8>)>,
}

impl Inner {
    /// Pulls `image` and returns its id. Tries each host in order; errors that another
    /// host cannot fix (our disk, a hostile layer) end the pull at once.
    pub(super) async fn pull_uncached(self: Arc<Self>, image: ImageRef, creds: Credentials) -> Result<String> {
        if let Some(digest) = &image.digest
            && let Some(found) = self.store.find(&image.with_digest(digest))
        {
            // Content-addressed: what we hold under this digest is what the registry has.
            return Ok(found.id);
        }
        let endpoints = hosts::resolve(&self.options.registry_config_dir, &self.options.insecure_registries, &image.registry)?;
        let mut last: Option<Error> = None;
        for endpoint in endpoints.iter().filter(|e| e.pull && (e.resolve || image.digest.is_some())) {
            match self.pull_from(endpoint, &image, &creds).await {
                Ok(id) => return Ok(id),
                Err(e) => {
                    tracing::warn!(image = %image.canonical(), host = %endpoint.host, error = %e, "pull from host failed");
                    if matches!(e, Error::InvalidArgument(_) | Error::Io { .. } | Error::Internal(_)) {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            Error::InvalidArgument(format!(
                "no configured host may resolve {} (hosts.toml capabilities)",
                image.canonical()
            ))
        }))
    }

    /// One host's attempt. A failure leaves blobs or snapshots of the layers that did
    /// arrive; with this pull's lease gone, collection removes what no image needs.
    async fn pull_from(self: &Arc<Self>, endpoint: &Endpoint, image: &ImageRef, creds: &Credentials) -> Result<String> {
        let result = self.pull_from_host(endpoint, image, creds).await;
        if result.is_err() {
            let store = Arc::clone(&self.store);
            match tokio::task::spawn_blocking(move || store.gc()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cleaning up after a failed pull"),
                Err(e) => tracing::warn!(error = %e, "cleaning up after a failed pull"),
            }
        }
        result
    }

    async fn pull_from_host(self: &Arc<Self>, endpoint: &Endpoint, image: &ImageRef, creds: &Credentials) -> Result<String> {
        let started = std::time::Instant::now();
        let client = self.clients.get(endpoint, &creds.fingerprint(), self.options.max_concurrent_downloads, self.options.stall_timeout)?;
        let mut reference = image.to_client_reference();
        let direct = endpoint.host == image.registry || (image.registry == "docker.io" && endpoint.upstream);
        if !direct {
            reference.set_mirror_registry(endpoint.host.clone());
        }
        let auth = creds.for_endpoint(endpoint);
        let origin = endpoint.host.clone();
        let resolved = resolve_manifest(&client, &reference, &auth, image, &origin).await?;
        let config_desc = resolved.manifest.config();
        let config_digest = config_desc.digest().to_string();
        let layers = layer_records(&resolved.manifest)?;

        // Hold everything this image needs before looking at what is already there.
        let mut content = vec![Content::Blob(config_digest.clone()), Content::Blob(resolved.manifest_digest.clone())];
        content.extend(resolved.index.iter().map(|(d, _)| Content::Blob(d.clone())));
        for l in &layers {
            content.push(Content::Blob(l.digest.clone()));
            content.push(Content::Snapshot(l.diff_id.clone()));
        }
        let _lease = self.store.lease(content);

        let config_bytes = if self.store.has_blob(&config_digest) {
            self.store.read_blob(&config_digest)?
        } else {
            let bytes = fetch_config(&client, &reference, &auth, config_desc.size(), &config_digest, &origin).await?;
            self.store.write_blob(&config_digest, &bytes)?;
            bytes
        };
        let config: ImageConfiguration = serde_json::from_slice(&config_bytes)
            .map_err(|e| Error::InvalidArgument(format!("image config {config_digest} is not valid: {e}")))?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != layers.len() {
            return Err(Error::InvalidArgument(format!(
                "{}: the manifest has {} layers but the config lists {} diff ids",
                image.canonical(),
                layers.len(),
                diff_ids.len()
            )));
        }
        let layers: Vec<LayerRecord> =
            layers.into_iter().zip(diff_ids).map(|(l, d)| LayerRecord { diff_id: d.clone(), ..l }).collect();
        for l in &layers {
            super::reference::digest_hex(&l.diff_id)?;
        }

        let downloads = Arc::new(Semaphore::new(self.options.max_concurrent_downloads.max(1)));
        let jobs = layers.iter().map(|l| {
            let this = Arc::clone(self);
            let (client, reference, layer, downloads, origin) =
                (client.clone(), reference.clone(), l.clone(), Arc::clone(&downloads), origin.clone());
            let key = format!("{}|{}", l.digest, l.diff_id);
            let flights = Arc::clone(&self.layers);
            async move { flights.run(key, this.layer_job(client, reference, layer, downloads, origin)).await }
        });
        // Every job runs to its end even when one fails, so none commits a snapshot after
        // this pull has given up (the caller collects what a failed pull left).
        for result in futures::future::join_all(jobs).await {
            result?;
        }

        crate::crashpoint::hit("pull_image:after_blobs");
        self.store.write_blob(&resolved.manifest_digest, &resolved.manifest_bytes)?;
        if let Some((digest, bytes)) = &resolved.index {
            self.store.write_blob(digest, bytes)?;
        }
        let size = layers.iter().map(|l| l.size).sum::<u64>() + config_bytes.len() as u64;
        let top = resolved.index.as_ref().map(|(d, _)| d.clone()).unwrap_or_else(|| resolved.manifest_digest.clone());
        crate::crashpoint::hit("pull_image:before_record");
        let record = ImageRecord {
            id: config_digest.clone(),
            repo_tags: Vec::new(),
            repo_digests: Vec::new(),
            manifest_digest: resolved.manifest_digest.clone(),
            index_digest: resolved.index.as_ref().map(|(d, _)| d.clone()),
            config_size: config_bytes.len() as u64,
            layers,
            size,
            user: config.config().as_ref().and_then(|c| c.user().clone()).unwrap_or_default(),
            updated_ns: 0,
        };
        self.store.commit(record, image.tagged(), image.with_digest(&top))?;
        crate::crashpoint::hit("pull_image:after_record");
        tracing::info!(
            image = %image.canonical(), id = %config_digest, host = %origin, size,
            elapsed_ms = started.elapsed().as_millis() as u64, "image pulled"
        );
        Ok(config_digest)
    }

    /// Downloads (if missing) and unpacks (if missing) one layer.
    async fn layer_job(
        self: Arc<Self>,
        client: Client,
        reference: Reference,
        layer: LayerRecord,
        downloads: Arc<Semaphore>,
        origin: String,
    ) -> Result<()> {
        let wanted = Wanted { blob: !self.store.has_blob(&layer.digest), snapshot: !self.store.has_snapshot(&layer.diff_id) };
        if !wanted.blob && !wanted.snapshot {
            return Ok(());
        }
        let store = Arc::clone(&self.store);
        if !wanted.blob {
            let path = store.blob_path(&layer.digest)?;
            return tokio::task::spawn_blocking(move || layer::process(&store, &layer, Source::Blob(path), wanted, "the local store"))
                .await
                .map_err(|e| Error::Internal(format!("unpack task failed: {e}")))?;
        }
        let _permit = downloads.acquire_owned().await.map_err(|e| Error::Internal(e.to_string()))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(64);
        let job_layer = layer.clone();
        let job_origin = origin.clone();
        let job = tokio::task::spawn_blocking(move || layer::process(&store, &job_layer, Source::Channel(rx), wanted, &job_origin));
        let pumped = pump(&client, &reference, &layer, tx, &origin).await;
        let processed = job.await.map_err(|e| Error::Internal(format!("unpack task failed: {e}")))?;
        // A transfer that failed explains whatever the job saw.
        pumped.and(processed)
    }
}

/// Streams a blob into the channel. A digest mismatch detected by oci-client ends the
/// stream quietly: the layer job verifies every byte itself and says so clearly.
async fn pump(
    client: &Client,
    reference: &Reference,
    layer: &LayerRecord,
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    origin: &str,
) -> Result<()> {
    let desc = OciDescriptor {
        media_type: layer.media_type.clone(),
        digest: layer.digest.clone(),
        size: layer.size as i64,
        ..Default::default()
    };
    let mut stream = match client.pull_blob_stream(reference, &desc).await {
        Ok(s) => s,
        Err(e) => {
            let err = classify(e, origin, &layer.digest);
            let _ = tx.send(Err(std::io::Error::other(err.to_string()))).await;
            return Err(err);
        }
    };
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                if tx.send(Ok(bytes)).await.is_err() {
                    // The job stopped reading (it failed); its error is the one to report.
                    return Ok(());
                }
            }
            Err(e) if e.get_ref().is_some_and(|i| i.is::<oci_client::errors::DigestError>()) => return Ok(()),
            Err(e) => {
                let msg = format!("download of {} from {origin} failed: {}", layer.digest, with_causes(&e));
                let _ = tx.send(Err(std::io::Error::other(msg.clone()))).await;
                return Err(Error::Unavailable(msg));
            }
        }
    }
    Ok(())
}

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "schemaVersion", default)]
    schema_version: u32,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
}

async fn resolve_manifest(
    client: &Client,
    reference: &Reference,
    auth: &RegistryAuth,
    image: &ImageRef,
    origin: &str,
) -> Result<Resolved> {
    let (bytes, digest) = fetch_manifest(client, reference, auth, image, origin).await?;
    let probe: Probe = serde_json::from_slice(&bytes)
        .map_err(|e| Error::InvalidArgument(format!("{}: manifest is not JSON: {e}", image.canonical())))?;
    if probe.schema_version == 1 {
        return Err(Error::InvalidArgument(format!(
            "{}: docker schema 1 manifests are not supported (deprecated since 2017)",
            image.canonical()
        )));
    }
    let is_index = probe.media_type.as_deref().is_some_and(|m| INDEX_TYPES.contains(&m)) || probe.manifests.is_some();
    if !is_index {
        let manifest = parse_manifest(&bytes, image)?;
        return Ok(Resolved { manifest, manifest_bytes: bytes, manifest_digest: digest, index: None });
    }
    let index: ImageIndex = serde_json::from_slice(&bytes)
        .map_err(|e| Error::InvalidArgument(format!("{}: image index is not valid: {e}", image.canonical())))?;
    let arch = this_arch();
    let chosen = index
        .manifests()
        .iter()
        .find(|m| m.platform().as_ref().is_some_and(|p| *p.os() == Os::Linux && *p.architecture() == arch))
        .ok_or_else(|| Error::NotFound { kind: "image for this platform", id: format!("{} (linux/{arch})", image.canonical()) })?;
    let child_digest = chosen.digest().to_string();
    let child = reference.clone_with_digest(child_digest.clone());
    let (child_bytes, got) = fetch_manifest(client, &child, auth, image, origin).await?;
    if got != child_digest {
        return Err(Error::Unavailable(format!("{origin} served manifest {got} for {child_digest}")));
    }
    let manifest = parse_manifest(&child_bytes, image)?;
    Ok(Resolved { manifest, manifest_bytes: child_bytes, manifest_digest: child_digest, index: Some((digest, bytes)) })
}

fn this_arch() -> Arch {
    match std::env::consts::ARCH {
        "x86_64" => Arch::Amd64,
        "aarch64" => Arch::ARM64,
        "s390x" => Arch::s390x,
        "powerpc64" => Arch::PowerPC64le,
        other => Arch::Other(other.to_string()),
    }
}

fn parse_manifest(bytes: &[u8], image: &ImageRef) -> Result<ImageManifest> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::InvalidArgument(format!("{}: image manifest is not valid: {e}", image.canonical())))
}

/// Fetches a manifest and checks it against the digest it was asked for.
async fn fetch_manifest(
    client: &Client,
    reference: &Reference,
    auth: &RegistryAuth,
    image: &ImageRef,
    origin: &str,
) -> Result<(Vec<u8>, String)> {
    let (bytes, _) = client
        .pull_manifest_raw(reference, auth, MANIFEST_TYPES)
        .await
        .map_err(|e| classify(e, origin, &image.canonical()))?;
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    if let Some(want) = reference.digest()
        && want != digest
    {
        return Err(Error::Unavailable(format!(
            "manifest {want} from {origin} is corrupt: its content hashes to {digest}; refusing it"
        )));
    }
    Ok((bytes.to_vec(), digest))
}

async fn fetch_config(
    client: &Client,
    reference: &Reference,
    auth: &RegistryAuth,
    size: u64,
    digest: &str,
    origin: &str,
) -> Result<Vec<u8>> {
    if size > MAX_CONFIG_BYTES {
        return Err(Error::InvalidArgument(format!("image config {digest} is {size} bytes; refusing it")));
    }
    // The manifest fetch stored the credentials; blob calls reuse them.
    let _ = auth;
    let desc = OciDescriptor { digest: digest.to_string(), size: size as i64, ..Default::default() };
    let mut out = Vec::with_capacity(size as usize);
    let mut stream = client.pull_blob_stream(reference, &desc).await.map_err(|e| classify(e, origin, digest))?;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(b) => {
                out.extend_from_slice(&b);
                if out.len() as u64 > size {
                    return Err(Error::Unavailable(format!("config {digest} from {origin} is larger than declared")));
                }
            }
            Err(e) if e.get_ref().is_some_and(|i| i.is::<oci_client::errors::DigestError>()) => break,
            Err(e) => return Err(Error::Unavailable(format!("download of {digest} from {origin} failed: {e}"))),
        }
    }
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(&out)));
    if actual != digest {
        return Err(Error::Unavailable(format!(
            "config {digest} from {origin} is corrupt: its content hashes to {actual}; refusing it"
        )));
    }
    Ok(out)
}

/// Layer descriptors of a manifest (diff ids come from the config).
fn layer_records(manifest: &ImageManifest) -> Result<Vec<LayerRecord>> {
    manifest
        .layers()
        .iter()
        .map(|l| {
            let media_type = l.media_type().to_string();
            if !media_type.contains("tar") && !media_type.contains("rootfs.diff") {
                return Err(Error::InvalidArgument(format!(
                    "layer {} has media type {media_type}, which is not a filesystem layer",
                    l.digest()
                )));
            }
            if media_type.contains("foreign") || media_type.contains("nondistributable") {
                return Err(Error::InvalidArgument(format!("layer {} is a foreign (non-distributable) layer", l.digest())));
            }
            let digest = l.digest().to_string();
            super::reference::digest_hex(&digest)?;
            Ok(LayerRecord { digest, diff_id: String::new(), size: l.size(), media_type })
        })
        .collect()
}

/// An error with its chain of causes (`error decoding response body: operation timed
/// out`): the last one usually says what really happened.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.ends_with(&text) {
            msg.push_str(&format!(": {text}"));
        }
        source = s.source();
    }
    msg
}

/// Maps a registry client error to the runtime's error kinds (and so to gRPC codes).
fn classify(error: OciDistributionError, origin: &str, what: &str) -> Error {
    use OciDistributionError as E;
    match error {
        E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => {
            Error::Unauthenticated(format!("{origin} refused access to {what}: check the pull credentials ({error})"))
        }
        E::RegistryError { ref envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes.iter().any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied)) {
                Error::Unauthenticated(format!("{origin} refused access to {what}: {error}"))
            } else if codes.iter().any(|c| {
                matches!(c, OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::BlobUnknown | OciErrorCode::NotFound)
            }) {
                Error::NotFound { kind: "image", id: format!("{what} (on {origin})") }
            } else {
                Error::Unavailable(format!("{origin}: {error}"))
            }
        }
        E::ServerError { code: 401 | 403, .. } => Error::Unauthenticated(format!("{origin} refused access to {what}: {error}")),
        E::ServerError { code: 404, .. } | E::ImageManifestNotFoundError(_) => {
            Error::NotFound { kind: "image", id: format!("{what} (on {origin})") }
        }
        E::RequestError(ref e) => Error::Unavailable(format!("cannot reach {origin} for {what}: {}", with_causes(e))),
        E::DigestError(_) => Error::Unavailable(format!("{what} from {origin} is corrupt: {error}")),
        other => Error::Unavailable(format!("{origin}: {what}: {other}")),
    }
}

impl ImageStore {
    /// Pulls `reference` with `auth` and returns the image id (config digest).
    ///
    /// Concurrent pulls of the same reference with the same credentials share one
    /// download; different images pull in parallel. The pull runs in its own task, so a
    /// caller that gives up (a cancelled gRPC call) does not abort it for the others.
    pub async fn pull(&self, reference: &str, auth: Option<&v1::AuthConfig>) -> Result<String> {
        let image = ImageRef::parse(reference)?;
        let creds = Credentials::from_cri(auth)?;
        let key = format!("{}|{}", image.canonical(), creds.fingerprint());
        let inner = Arc::clone(&self.inner);
        let span = tracing::info_span!("pull_image", image = %image.canonical());
        let work = tracing::Instrument::instrument(inner.clone().pull_uncached(image, creds), span);
        inner.pulls.run(key, work).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_from_every_auth_config_form() {
        let basic = v1::AuthConfig { username: "u".into(), password: "p".into(), ..Default::default() };
        assert_eq!(Credentials::from_cri(Some(&basic)).unwrap().auth, RegistryAuth::Basic("u".into(), "p".into()));
        let b64 = v1::AuthConfig { auth: base64::engine::general_purpose::STANDARD.encode("me:s3:cret"), ..Default::default() };
        assert_eq!(Credentials::from_cri(Some(&b64)).unwrap().auth, RegistryAuth::Basic("me".into(), "s3:cret".into()));
        let token = v1::AuthConfig { registry_token: "tok".into(), username: "u".into(), ..Default::default() };
        assert_eq!(Credentials::from_cri(Some(&token)).unwrap().auth, RegistryAuth::Bearer("tok".into()));
        assert_eq!(Credentials::from_cri(None).unwrap().auth, RegistryAuth::Anonymous);
        let bad = v1::AuthConfig { auth: "!!!".into(), ..Default::default() };
        assert!(matches!(Credentials::from_cri(Some(&bad)), Err(Error::InvalidArgument(_))));
        let identity = v1::AuthConfig { identity_token: "refresh".into(), ..Default::default() };
        assert!(matches!(Credentials::from_cri(Some(&identity)), Err(Error::InvalidArgument(_))));
        assert_ne!(
            Credentials::from_cri(Some(&basic)).unwrap().fingerprint(),
            Credentials::anonymous().fingerprint()
        );
    }

    #[test]
    fn credentials_reach_mirrors_only_when_issued_for_them() {
        let a = v1::AuthConfig { username: "u".into(), password: "p".into(), ..Default::default() };
        let creds = Credentials::from_cri(Some(&a)).unwrap();
        let mirror = Endpoint {
            host: "127.0.0.1:5000".into(),
            plain_http: true,
            skip_verify: false,
            ca_files: vec![],
            pull: true,
            resolve: true,
            upstream: false,
        };
        assert_eq!(creds.for_endpoint(&mirror), RegistryAuth::Anonymous);
        assert_eq!(creds.for_endpoint(&Endpoint { upstream: true, ..mirror.clone() }), creds.auth);
        let for_mirror = v1::AuthConfig { server_address: "http://127.0.0.1:5000/".into(), ..a };
        assert_eq!(Credentials::from_cri(Some(&for_mirror)).unwrap().for_endpoint(&mirror), creds.auth);
    }

    #[test]
    fn registry_errors_map_to_cri_codes() {
        let e = classify(OciDistributionError::UnauthorizedError { url: "u".into() }, "h", "x");
        assert!(matches!(e, Error::Unauthenticated(_)));
        let e = classify(OciDistributionError::ServerError { code: 404, url: "u".into(), message: String::new() }, "h", "x");
        assert!(matches!(e, Error::NotFound { .. }));
        let e = classify(OciDistributionError::ServerError { code: 503, url: "u".into(), message: String::new() }, "h", "x");
        assert!(matches!(e, Error::Unavailable(_)));
    }
}
