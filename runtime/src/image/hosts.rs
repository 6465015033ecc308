//! Where a registry's content is fetched from: containerd's `hosts.toml` directory format.
//!
//! `<registry_config_dir>/<host>/hosts.toml` (or `_default/hosts.toml` when the host has no
//! directory) lists mirrors as `[host."scheme://address[/path]"]` tables, tried in file
//! order, then the upstream `server`. Each host has `capabilities` (`pull`, `resolve`:
//! only hosts that may `resolve` are asked what a tag points at), `skip_verify` and `ca`.
//! `*.crt` files next to `hosts.toml` are extra CAs (docker's `certs.d` layout). Without
//! any file the registry itself is used over HTTPS, or plain HTTP for loopback hosts and
//! the configured `insecure_registries`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Error, Result};

/// One place to fetch from, in the form oci-client takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port][/path-prefix]` without scheme and without the trailing `/v2`.
    pub host: String,
    pub plain_http: bool,
    pub skip_verify: bool,
    /// PEM files with extra CA certificates for this host.
    pub ca_files: Vec<PathBuf>,
    /// May fetch content by digest.
    pub pull: bool,
    /// May answer which manifest a tag names.
    pub resolve: bool,
    /// This is the registry itself (not a mirror).
    pub upstream: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostsFile {
    server: Option<String>,
    capabilities: Option<Vec<String>>,
    skip_verify: Option<bool>,
    ca: Option<OneOrMany>,
    #[serde(default)]
    override_path: bool,
    #[serde(default)]
    host: toml::map::Map<String, toml::Value>,
    // Accepted for compatibility, not used: client certificates and extra headers.
    #[serde(rename = "client")]
    _client: Option<toml::Value>,
    #[serde(rename = "header")]
    _header: Option<toml::Value>,
    #[serde(rename = "dial_timeout")]
    _dial_timeout: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostEntry {
    capabilities: Option<Vec<String>>,
    skip_verify: Option<bool>,
    ca: Option<OneOrMany>,
    #[serde(default)]
    override_path: bool,
    #[serde(rename = "client")]
    _client: Option<toml::Value>,
    #[serde(rename = "header")]
    _header: Option<toml::Value>,
    #[serde(rename = "dial_timeout")]
    _dial_timeout: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// The endpoints for `registry` (as written in the image reference), mirrors first.
pub fn resolve(config_dir: &Path, insecure: &[String], registry: &str) -> Result<Vec<Endpoint>> {
    let dir = [config_dir.join(registry), config_dir.join("_default")].into_iter().find(|d| d.is_dir());
    let default_plain = is_loopback(registry) || insecure.iter().any(|h| h == registry || h == host_only(registry));
    let default_upstream = Endpoint {
        host: upstream_host(registry).to_string(),
        plain_http: default_plain,
        skip_verify: false,
        ca_files: Vec::new(),
        pull: true,
        resolve: true,
        upstream: true,
    };
    let Some(dir) = dir else { return Ok(vec![default_upstream]) };
    let certs = crt_files(&dir);
    let file = dir.join("hosts.toml");
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(vec![Endpoint { ca_files: certs, ..default_upstream }]);
        }
        Err(e) => return Err(Error::Io { context: "cannot read", path: file, source: e }),
    };
    let parsed: HostsFile = toml::from_str(&text)
        .map_err(|e| Error::InvalidArgument(format!("{}: {e}", file.display())))?;
    let mut endpoints = Vec::new();
    for (url, value) in parsed.host {
        let entry: HostEntry = value
            .try_into()
            .map_err(|e| Error::InvalidArgument(format!("{}: host {url:?}: {e}", file.display())))?;
        let caps = entry.capabilities.unwrap_or_else(all_capabilities);
        let Some(mut endpoint) = endpoint_from_url(&url, entry.override_path, &caps, &file)? else { continue };
        endpoint.skip_verify = entry.skip_verify.unwrap_or(false);
        endpoint.ca_files = ca_paths(entry.ca, &dir, &certs);
        endpoint.upstream = endpoint.host == upstream_host(registry);
        endpoints.push(endpoint);
    }
    let caps = parsed.capabilities.unwrap_or_else(all_capabilities);
    let server = match parsed.server {
        Some(url) => endpoint_from_url(&url, parsed.override_path, &caps, &file)?,
        None => Some(Endpoint { pull: has(&caps, "pull"), resolve: has(&caps, "resolve"), ..default_upstream.clone() }),
    };
    if let Some(mut server) = server {
        server.skip_verify = parsed.skip_verify.unwrap_or(false);
        server.ca_files = ca_paths(parsed.ca, &dir, &certs);
        server.upstream = true;
        endpoints.push(server);
    }
    Ok(endpoints)
}

fn all_capabilities() -> Vec<String> {
    vec!["pull".into(), "resolve".into(), "push".into()]
}

fn has(caps: &[String], cap: &str) -> bool {
    caps.iter().any(|c| c == cap)
}

/// `scheme://host[:port][/path]` → an endpoint; `None` (with a warning) for what oci-client
/// cannot address (a path that must not end in `/v2`).
fn endpoint_from_url(url: &str, override_path: bool, caps: &[String], file: &Path) -> Result<Option<Endpoint>> {
    let (plain_http, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (false, rest)
    } else if url.contains("://") {
        return Err(Error::InvalidArgument(format!("{}: {url:?}: only http and https are supported", file.display())));
    } else {
        (false, url)
    };
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, String::new()));
    if host.is_empty() {
        return Err(Error::InvalidArgument(format!("{}: {url:?} names no host", file.display())));
    }
    let path = path.trim_end_matches('/');
    // oci-client always appends `/v2/…`: a path is a prefix before it.
    let prefix = match path.strip_suffix("/v2") {
        Some(p) => p.to_string(),
        None if override_path && !path.is_empty() => {
            tracing::warn!(url, file = %file.display(), "override_path to a path not ending in /v2 is not supported; host skipped");
            return Ok(None);
        }
        None => path.to_string(),
    };
    Ok(Some(Endpoint {
        host: format!("{host}{prefix}"),
        plain_http,
        skip_verify: false,
        ca_files: Vec::new(),
        pull: has(caps, "pull"),
        resolve: has(caps, "resolve"),
        upstream: false,
    }))
}

/// `ca` entries are absolute or relative to the host directory; with none, the `*.crt` files.
fn ca_paths(ca: Option<OneOrMany>, dir: &Path, certs: &[PathBuf]) -> Vec<PathBuf> {
    match ca {
        Some(ca) => ca.into_vec().into_iter().map(|p| dir.join(p)).collect(),
        None => certs.to_vec(),
    }
}

fn crt_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "crt"))
        .collect();
    files.sort();
    files
}

/// Docker Hub's registry API lives on a different host than its name.
fn upstream_host(registry: &str) -> &str {
    if registry == "docker.io" { "registry-1.docker.io" } else { registry }
}

fn host_only(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match registry.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => registry,
    }
}

/// localhost, 127.0.0.0/8 and ::1 may be plain HTTP without configuration, as Docker allows.
pub fn is_loopback(registry: &str) -> bool {
    let host = host_only(registry);
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, host: &str, text: &str) {
        std::fs::create_dir_all(dir.join(host)).unwrap();
        std::fs::write(dir.join(host).join("hosts.toml"), text).unwrap();
    }

    #[test]
    fn defaults_without_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let e = resolve(dir.path(), &[], "docker.io").unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].host, "registry-1.docker.io");
        assert!(!e[0].plain_http && e[0].upstream && e[0].resolve);
        assert!(resolve(dir.path(), &[], "127.0.0.1:5000").unwrap()[0].plain_http);
        assert!(resolve(dir.path(), &[], "127.8.0.3:80").unwrap()[0].plain_http);
        assert!(resolve(dir.path(), &[], "localhost:5000").unwrap()[0].plain_http);
        assert!(!resolve(dir.path(), &[], "quay.io").unwrap()[0].plain_http);
        let insecure = vec!["reg.lan:5000".to_string(), "other.lan".to_string()];
        assert!(resolve(dir.path(), &insecure, "reg.lan:5000").unwrap()[0].plain_http);
        assert!(resolve(dir.path(), &insecure, "other.lan:443").unwrap()[0].plain_http);
        assert!(!resolve(dir.path(), &insecure, "reg.lan:6000").unwrap()[0].plain_http);
    }

    #[test]
    fn mirrors_in_file_order_then_server() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "registry.k8s.io",
            r#"
server = "https://registry.k8s.io"

[host."http://127.0.0.1:5000"]
  capabilities = ["pull", "resolve"]

[host."https://b.example/v2"]
  capabilities = ["pull"]
  skip_verify = true
  ca = "/etc/ca.pem"

[host."https://a.example/prefix"]
"#,
        );
        let e = resolve(dir.path(), &[], "registry.k8s.io").unwrap();
        let hosts: Vec<_> = e.iter().map(|e| e.host.as_str()).collect();
        assert_eq!(hosts, ["127.0.0.1:5000", "b.example", "a.example/prefix", "registry.k8s.io"]);
        assert!(e[0].plain_http && e[0].resolve && !e[0].upstream);
        assert!(!e[1].resolve && e[1].pull && e[1].skip_verify);
        assert_eq!(e[1].ca_files, [PathBuf::from("/etc/ca.pem")]);
        assert!(e[3].upstream && !e[3].plain_http);
    }

    #[test]
    fn default_dir_applies_to_hosts_without_their_own() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "_default", "[host.\"http://127.0.0.1:9\"]\ncapabilities = [\"pull\"]\n");
        let e = resolve(dir.path(), &[], "quay.io").unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].host, "127.0.0.1:9");
        assert_eq!(e[1].host, "quay.io");
        // A host with its own directory but no hosts.toml: upstream with its *.crt files.
        std::fs::create_dir_all(dir.path().join("ghcr.io")).unwrap();
        std::fs::write(dir.path().join("ghcr.io/ca.crt"), "pem").unwrap();
        let e = resolve(dir.path(), &[], "ghcr.io").unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].ca_files, [dir.path().join("ghcr.io/ca.crt")]);
    }

    #[test]
    fn malformed_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "x.io", "serverr = 1\n");
        assert!(matches!(resolve(dir.path(), &[], "x.io"), Err(Error::InvalidArgument(m)) if m.contains("hosts.toml")));
        write(dir.path(), "y.io", "[host.\"ftp://m\"]\n");
        assert!(resolve(dir.path(), &[], "y.io").is_err());
    }
}
