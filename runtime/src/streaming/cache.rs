//! Single-use tokens for streaming requests.
//!
//! The CRI call (validated by the daemon) is remembered under a random token that goes into
//! the URL; the first connection to that URL consumes it. Tokens expire (kubelet and
//! containerd use one minute) and the cache is bounded, so a client that asks for URLs and
//! never connects cannot grow it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;

use super::StreamOptions;
use crate::{Error, Result};

/// How many unconsumed tokens may exist at once (kubelet's limit too).
pub const DEFAULT_CAPACITY: usize = 1000;

/// What a token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamRequest {
    Exec { container_id: String, cmd: Vec<String>, options: StreamOptions },
    Attach { container_id: String, options: StreamOptions },
    /// `ports` from the CRI request; WebSocket clients name theirs in the URL instead.
    PortForward { pod_id: String, ports: Vec<u16> },
}

impl StreamRequest {
    /// The URL path segment this request is served under.
    pub fn kind(&self) -> &'static str {
        match self {
            StreamRequest::Exec { .. } => "exec",
            StreamRequest::Attach { .. } => "attach",
            StreamRequest::PortForward { .. } => "portforward",
        }
    }
}

#[derive(Debug)]
pub struct TokenCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<String, (Instant, StreamRequest)>>,
}

impl TokenCache {
    pub fn new(ttl: Duration, capacity: usize) -> TokenCache {
        TokenCache { ttl, capacity, entries: Mutex::default() }
    }

    /// Stores `request` and returns its token. `Unavailable` when the cache is full of
    /// tokens that are still valid.
    pub fn insert(&self, request: StreamRequest) -> Result<String> {
        let token = random_token()?;
        let now = Instant::now();
        let mut entries = crate::sandbox::store::lock(&self.entries);
        entries.retain(|_, (expires, _)| *expires > now);
        if entries.len() >= self.capacity {
            return Err(Error::Unavailable(format!(
                "{} streaming requests are waiting for their client to connect; try again later",
                entries.len()
            )));
        }
        entries.insert(token.clone(), (now + self.ttl, request));
        Ok(token)
    }

    /// Takes the request out: a token works once, and not after it expired.
    pub fn consume(&self, token: &str) -> Option<StreamRequest> {
        let (expires, request) = crate::sandbox::store::lock(&self.entries).remove(token)?;
        (expires > Instant::now()).then_some(request)
    }

    pub fn len(&self) -> usize {
        crate::sandbox::store::lock(&self.entries).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// 128 random bits, URL-safe.
fn random_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: writes at most the remaining length into our own buffer.
        let n = unsafe { libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::Internal(format!("getrandom failed: {e}")));
        }
        filled += n as usize;
    }
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec() -> StreamRequest {
        StreamRequest::Exec { container_id: "c1".into(), cmd: vec!["sh".into()], options: StreamOptions::default() }
    }

    #[test]
    fn a_token_works_once() {
        let cache = TokenCache::new(Duration::from_secs(60), 10);
        let token = cache.insert(exec()).unwrap();
        assert_eq!(token.len(), 22);
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{token}");
        assert_eq!(cache.consume(&token), Some(exec()));
        assert_eq!(cache.consume(&token), None);
        assert_eq!(cache.consume("never-issued"), None);
    }

    #[test]
    fn tokens_are_distinct() {
        let cache = TokenCache::new(Duration::from_secs(60), 100);
        let tokens: std::collections::HashSet<_> = (0..50).map(|_| cache.insert(exec()).unwrap()).collect();
        assert_eq!(tokens.len(), 50);
    }

    #[test]
    fn an_expired_token_is_refused() {
        let cache = TokenCache::new(Duration::from_millis(30), 10);
        let token = cache.insert(exec()).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.consume(&token), None);
    }

    #[test]
    fn the_cache_is_bounded_but_expired_entries_make_room() {
        let cache = TokenCache::new(Duration::from_millis(50), 2);
        cache.insert(exec()).unwrap();
        cache.insert(exec()).unwrap();
        assert!(matches!(cache.insert(exec()), Err(Error::Unavailable(_))));
        std::thread::sleep(Duration::from_millis(80));
        cache.insert(exec()).unwrap();
        assert_eq!(cache.len(), 1);
    }
}
