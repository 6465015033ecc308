//! Agent mode's API-server half, on when `[agent] kubeconfig` is set: the node registers
//! itself ([`node_registration`]), renews its Lease ([`lease`]), runs the pods bound to it
//! ([`pod_source`]) with the ConfigMaps and Secrets they reference ([`config_objects`]) and
//! the local PersistentVolumes their claims are bound to ([`claims`]), and reports their
//! status back ([`pod_status`], with [`events`] for volumes that cannot be set up).
//!
//! Each concern is its own task or call; they share one `kube::Client` built from the
//! kubeconfig file (its current context), plain `http://` servers included.

pub mod claims;
pub mod config_objects;
pub mod events;
pub mod lease;
pub mod node_registration;
pub mod pod_deletion;
pub mod pod_source;
pub mod pod_status;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::cri::Cri;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: PathBuf, message: String },
    #[error("{what}: {source}")]
    Call { what: String, source: kube::Error },
    #[error("cannot gather the node's facts: {0}")]
    Facts(String),
}

impl ApiError {
    pub fn call(what: impl Into<String>) -> impl FnOnce(kube::Error) -> ApiError {
        let what = what.into();
        move |source| ApiError::Call { what, source }
    }

    /// The HTTP status the API server answered with, if it answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            ApiError::Call { source, .. } => status_code(source),
            ApiError::Kubeconfig { .. } | ApiError::Facts(_) => None,
        }
    }
}

/// The HTTP status of an API answer (404, 409, 410 ...).
pub fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// A client for the kubeconfig's current context.
pub async fn connect(path: &Path) -> Result<kube::Client, ApiError> {
    let fail = |message: String| ApiError::Kubeconfig { path: path.to_path_buf(), message };
    let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| fail(e.to_string()))?;
    let options = kube::config::KubeConfigOptions::default();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(|e| fail(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| fail(e.to_string()))
}

/// What the API-server tasks need to know of the agent's configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node: String,
    /// How often the Node's status is checked for a change.
    pub status_check: Duration,
    /// How often it is posted even without one.
    pub status_report: Duration,
    pub lease_renew: Duration,
    pub lease_duration_seconds: i32,
}

impl Settings {
    pub fn new(config: &Config, node: &str) -> Settings {
        let a = &config.agent;
        Settings {
            node: node.to_string(),
            status_check: Duration::from_secs(a.sync_period_seconds.max(1)),
            status_report: Duration::from_secs(a.node_status_report_seconds.max(1)),
            lease_renew: Duration::from_secs(a.lease_renew_seconds.max(1)),
            lease_duration_seconds: i32::try_from(a.lease_duration_seconds).unwrap_or(i32::MAX),
        }
    }
}

/// The sync loop's handle on the API server: the pods bound to this node, and the calls
/// that report back on them.
pub struct ApiSide {
    pub client: kube::Client,
    pub pods: Arc<pod_source::PodStore>,
    pub statuses: pod_status::Reporter,
    /// Whether the sandboxes of API pods a previous daemon left were matched against the
    /// first full list yet (they are left alone until then).
    pub recovered: bool,
}

/// Connects and starts the node, Lease and pod-source tasks; they end when `stop` turns
/// true. `None` (logged) when the kubeconfig cannot be used: static pods still run.
pub async fn start(
    config: &Config,
    node: &str,
    cri: Arc<Cri>,
    changed: Arc<tokio::sync::Notify>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Option<ApiSide> {
    let path = config.agent.kubeconfig.as_ref()?;
    let client = match connect(path).await {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "agent mode: cannot use the kubeconfig; serving static pods only, nothing is registered");
            return None;
        }
    };
    let settings = Settings::new(config, node);
    tracing::info!(kubeconfig = %path.display(), node = %node, "agent mode: registering with the API server");
    let (node_uid_tx, node_uid_rx) = tokio::sync::watch::channel(None);
    let registration = node_registration::NodeRegistration::new(client.clone(), settings.clone(), Arc::new(config.clone()), cri);
    tokio::spawn(registration.run(node_uid_tx, stop.clone()));
    tokio::spawn(lease::run(client.clone(), settings.clone(), node_uid_rx, stop.clone()));
    let pods = Arc::new(pod_source::PodStore::new(changed));
    tokio::spawn(pod_source::run(client.clone(), node.to_string(), pods.clone(), stop));
    Some(ApiSide { statuses: pod_status::Reporter::new(client.clone()), client, pods, recovered: false })
}

/// How long one API call may take: a server that accepts a request and never answers must
/// not stall the sync loop (static pods included) or the Lease. Watches are bounded by their
/// own timeout instead, once their response has begun.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// `call`, failed with a time-out error after [`CALL_TIMEOUT`].
pub async fn bounded<T>(call: impl std::future::Future<Output = Result<T, kube::Error>>) -> Result<T, kube::Error> {
    bounded_by(CALL_TIMEOUT, call).await
}

async fn bounded_by<T>(limit: Duration, call: impl std::future::Future<Output = Result<T, kube::Error>>) -> Result<T, kube::Error> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => {
            let e = std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no answer from the API server in {limit:?}"));
            Err(kube::Error::Service(Box::new(e)))
        }
    }
}

/// The current time for API objects (heartbeats, renewals), to the microsecond.
pub fn now() -> k8s_openapi::jiff::Timestamp {
    let micros = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros());
    k8s_openapi::jiff::Timestamp::from_microsecond(i64::try_from(micros).unwrap_or(i64::MAX)).unwrap_or_default()
}

/// Sleeps for `d`, or less when `stop` turns true; returns whether to stop.
pub async fn sleep_or_stop(d: Duration, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep(d) => *stop.borrow(),
        changed = stop.changed() => changed.is_err() || *stop.borrow(),
    }
}

/// Exponential back-off for retried API calls: 1 s doubling to 30 s.
#[derive(Debug, Clone, Copy)]
pub struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(Backoff::START)
    }
}

impl Backoff {
    const START: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(30);

    /// The wait before the next try; the one after is twice as long.
    pub fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Backoff::MAX);
        d
    }

    pub fn reset(&mut self) {
        self.0 = Backoff::START;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..7).map(|_| b.next().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        b.reset();
        assert_eq!(b.next().as_secs(), 1);
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let never = std::future::pending::<Result<(), kube::Error>>();
        let e = bounded_by(Duration::from_millis(10), never).await.unwrap_err();
        assert!(e.to_string().contains("no answer"), "{e}");
    }

    #[tokio::test]
    async fn a_missing_or_broken_kubeconfig_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let Err(e) = connect(&missing).await else { panic!("a missing kubeconfig was accepted") };
        assert!(e.to_string().contains("nope"), "{e}");
        let plain = dir.path().join("kubeconfig");
        std::fs::write(
            &plain,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: \"http://127.0.0.1:1\"}\n\
             users:\n- name: u\n  user: {token: t}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n",
        )
        .unwrap();
        assert!(connect(&plain).await.is_ok(), "a plain-http server is accepted");
    }
}
