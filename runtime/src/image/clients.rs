//! Registry clients kept between pulls. Building one loads and parses every system root
//! certificate (several ms, most of a small pull), and a kept client also keeps its
//! connections and bearer tokens. Clients are keyed by everything that shapes them,
//! credentials included, so a token fetched with one user's credentials never serves a
//! pull made with another's (or with none).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use oci_client::Client;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};

use super::hosts::Endpoint;
use crate::{Error, Result};

const USER_AGENT: &str = concat!("capstan/", env!("CARGO_PKG_VERSION"));
/// Distinct (host, credentials) pairs a node pulls from are few; past this many the
/// cache starts over rather than grow without bound.
const MAX_CLIENTS: usize = 64;

#[derive(Default)]
pub(super) struct Clients {
    kept: Mutex<HashMap<String, Client>>,
}

impl Clients {
    /// The client for `endpoint` used with credentials `creds_fingerprint`.
    pub(super) fn get(
        &self,
        endpoint: &Endpoint,
        creds_fingerprint: &str,
        max_downloads: usize,
        stall_timeout: Duration,
    ) -> Result<Client> {
        let key = key(endpoint, creds_fingerprint, max_downloads, stall_timeout);
        if let Some(client) = self.lock().get(&key) {
            return Ok(client.clone());
        }
        let client = build(endpoint, max_downloads, stall_timeout)?;
        let mut kept = self.lock();
        if kept.len() >= MAX_CLIENTS {
            kept.clear();
        }
        Ok(kept.entry(key).or_insert(client).clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Client>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A CA file that changed on disk (its size or mtime) makes a new client.
fn key(
    endpoint: &Endpoint,
    creds_fingerprint: &str,
    max_downloads: usize,
    stall_timeout: Duration,
) -> String {
    let mut key = format!(
        "{}|{}|{}|{}|{}|{max_downloads}|{}",
        endpoint.host,
        endpoint.plain_http,
        endpoint.skip_verify,
        endpoint.upstream,
        creds_fingerprint,
        stall_timeout.as_millis()
    );
    for path in &endpoint.ca_files {
        let stamp = std::fs::metadata(path)
            .map(|m| {
                let mtime = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                format!("{}:{mtime}", m.len())
            })
            .unwrap_or_default();
        key.push_str(&format!("|{}@{stamp}", path.display()));
    }
    key
}

fn build(endpoint: &Endpoint, max_downloads: usize, stall_timeout: Duration) -> Result<Client> {
    let mut certificates = Vec::new();
    for path in &endpoint.ca_files {
        let data = std::fs::read(path).map_err(Error::io("cannot read CA file", path))?;
        certificates.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data,
        });
    }
    let config = ClientConfig {
        protocol: if endpoint.plain_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        accept_invalid_certificates: endpoint.skip_verify,
        extra_root_certificates: certificates,
        platform_resolver: None,
        max_concurrent_download: max_downloads.max(1),
        connect_timeout: Some(Duration::from_secs(30).min(stall_timeout)),
        // Per read, not per request: a slow but moving download goes on.
        read_timeout: Some(stall_timeout),
        user_agent: USER_AGENT,
        ..Default::default()
    };
    Client::try_from(config)
        .map_err(|e| Error::InvalidArgument(format!("registry client for {}: {e}", endpoint.host)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(host: &str) -> Endpoint {
        Endpoint {
            host: host.to_string(),
            plain_http: true,
            skip_verify: false,
            ca_files: Vec::new(),
            pull: true,
            resolve: true,
            upstream: true,
        }
    }

    #[test]
    fn clients_are_kept_per_host_and_credentials() {
        let clients = Clients::default();
        let t = Duration::from_secs(60);
        clients
            .get(&endpoint("a:5000"), "anon", 3, t)
            .expect("client");
        clients
            .get(&endpoint("a:5000"), "anon", 3, t)
            .expect("client");
        assert_eq!(
            clients.lock().len(),
            1,
            "the same host and credentials share a client"
        );
        clients
            .get(&endpoint("a:5000"), "alice", 3, t)
            .expect("client");
        clients
            .get(&endpoint("b:5000"), "anon", 3, t)
            .expect("client");
        assert_eq!(
            clients.lock().len(),
            3,
            "other credentials or another host get their own"
        );
    }

    #[test]
    fn a_changed_ca_file_makes_a_new_client() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "one").expect("write");
        let mut e = endpoint("a:5000");
        e.ca_files = vec![ca.clone()];
        let first = key(&e, "anon", 3, Duration::from_secs(60));
        std::fs::write(&ca, "two, longer").expect("write");
        assert_ne!(first, key(&e, "anon", 3, Duration::from_secs(60)));
    }
}
