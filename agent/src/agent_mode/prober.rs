//! Probe workers: one task per probe of a running container instance, so a slow probe
//! never holds the sync loop. Each waits `initialDelaySeconds` from the container's start,
//! then runs its handler every `periodSeconds` within `timeoutSeconds`, and publishes
//! threshold-crossing results in the instance's shared [`Results`]. The sync loop reads
//! them (kills on a liveness/startup failure, `ready` for the status); the workers end
//! when the instance's [`Probers`] is dropped.
//!
//! Where the probes go: exec through CRI ExecSync; httpGet and tcpSocket to the probe's
//! `host`, else the pod IP, else (a pod without an IP: no CNI, host network) to localhost
//! inside the pod's network namespace through the runtime's port-forward path.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use cri_proto::RuntimeService;
use cri_proto::v1;
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::probes::{Action, Counter, Outcome, Probe, Results};
use crate::cri::Cri;

/// The User-Agent of kubelet's HTTP probes, which servers sometimes key on.
const USER_AGENT: &str = "kube-probe/1.34";
/// Longest probe output quoted in a failure message.
const MAX_MESSAGE: usize = 256;

/// What the probes of one container instance reach.
pub struct Target {
    pub cri: Arc<Cri>,
    pub sandbox_id: String,
    pub container: String,
    pub container_id: String,
    pub pod_ip: Option<IpAddr>,
    /// The instance's start (CRI `started_at`), from which `initialDelaySeconds` counts.
    pub started_at: SystemTime,
}

/// The running probe workers of one container instance; dropping it stops them.
#[derive(Debug)]
pub struct Probers {
    pub container_id: String,
    results: Arc<Mutex<Results>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Probers {
    pub fn spawn(target: Target, probes: Vec<Probe>) -> Probers {
        let results = Arc::new(Mutex::new(Results::initial(&probes)));
        let container_id = target.container_id.clone();
        let target = Arc::new(target);
        let tasks = probes.into_iter().map(|p| tokio::spawn(worker(target.clone(), p, results.clone()))).collect();
        Probers { container_id, results, tasks }
    }

    pub fn results(&self) -> Results {
        self.results.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Probers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[tracing::instrument(skip_all, fields(container = %target.container, container_id = %target.container_id, probe = probe.kind.name()))]
async fn worker(target: Arc<Target>, probe: Probe, results: Arc<Mutex<Results>>) {
    let running_for = SystemTime::now().duration_since(target.started_at).unwrap_or_default();
    if let Some(wait) = probe.initial_delay.checked_sub(running_for) {
        tokio::time::sleep(wait).await;
    }
    let mut counter = Counter::default();
    let mut tick = tokio::time::interval(probe.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let runs = results.lock().unwrap_or_else(|e| e.into_inner()).runs(probe.kind);
        if !runs {
            continue;
        }
        let (ok, message) = match run(&target, &probe).await {
            Outcome::Success => (true, String::new()),
            Outcome::Failure(m) => (false, m),
            Outcome::Error(m) => {
                tracing::debug!(error = %m, "probe errored; result ignored");
                continue;
            }
        };
        if !ok {
            tracing::debug!(message = %message, "probe failed");
        }
        if let Some(result) = counter.observe(ok, probe.success_threshold, probe.failure_threshold) {
            let changed = results.lock().unwrap_or_else(|e| e.into_inner()).apply(&probe, result, &target.container, &message);
            if changed {
                tracing::info!(success = result, message = %message, "probe result changed");
            }
        }
    }
}

/// One run of the probe's handler, bounded by its timeout.
async fn run(target: &Target, probe: &Probe) -> Outcome {
    match &probe.action {
        Action::Exec(cmd) => exec(target, cmd, probe.timeout).await,
        Action::Http { scheme, host, port, path, headers } => {
            if scheme == "HTTPS" {
                return Outcome::Failure("HTTPS probes are not supported in agent mode".into());
            }
            let url = format!("http://{}:{port}{path}", host.clone().or(target.pod_ip.map(|ip| ip.to_string())).unwrap_or_else(|| "localhost".into()));
            match tokio::time::timeout(probe.timeout, http_get(target, host.as_deref(), *port, path, headers, probe.timeout)).await {
                Err(_) => Outcome::Failure(format!("Get {url:?}: no answer within {} s", probe.timeout.as_secs())),
                Ok(Err(e)) => Outcome::Failure(format!("Get {url:?}: {e}")),
                Ok(Ok(code)) if (200..400).contains(&code) => Outcome::Success,
                Ok(Ok(code)) => Outcome::Failure(format!("HTTP probe failed with statuscode: {code}")),
            }
        }
        Action::Tcp { host, port } => match tokio::time::timeout(probe.timeout, connect(target, host.as_deref(), *port, probe.timeout)).await {
            Ok(Ok(_)) => Outcome::Success,
            Ok(Err(e)) => Outcome::Failure(format!("dial tcp port {port}: {e}")),
            Err(_) => Outcome::Failure(format!("dial tcp port {port}: no connection within {} s", probe.timeout.as_secs())),
        },
        Action::Unsupported(m) => Outcome::Failure(m.clone()),
    }
}

/// ExecSync with the probe's timeout (enforced by the pod's monitor; ours is a backstop).
async fn exec(target: &Target, cmd: &[String], timeout: Duration) -> Outcome {
    let request = v1::ExecSyncRequest {
        container_id: target.container_id.clone(),
        cmd: cmd.to_vec(),
        timeout: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
    };
    let call = RuntimeService::exec_sync(&*target.cri, tonic::Request::new(request));
    match tokio::time::timeout(timeout + Duration::from_secs(5), call).await {
        Ok(Ok(r)) => {
            let r = r.into_inner();
            if r.exit_code == 0 {
                return Outcome::Success;
            }
            let mut output = String::from_utf8_lossy(&r.stdout).into_owned() + &String::from_utf8_lossy(&r.stderr);
            if output.len() > MAX_MESSAGE {
                let cut = (0..=MAX_MESSAGE).rev().find(|i| output.is_char_boundary(*i)).unwrap_or(0);
                output.truncate(cut);
            }
            Outcome::Failure(format!("command {cmd:?} exited with {}: {}", r.exit_code, output.trim()))
        }
        Ok(Err(status)) if status.code() == tonic::Code::DeadlineExceeded => {
            Outcome::Failure(format!("command {cmd:?} timed out after {} s", timeout.as_secs()))
        }
        Ok(Err(status)) => Outcome::Error(status.message().to_string()),
        Err(_) => Outcome::Failure(format!("command {cmd:?} timed out after {} s", timeout.as_secs())),
    }
}

/// A TCP connection to the probe's target (see the module doc for which address).
async fn connect(target: &Target, host: Option<&str>, port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    match (host, target.pod_ip) {
        (Some(host), _) => TcpStream::connect((host, port)).await,
        (None, Some(ip)) => TcpStream::connect((ip, port)).await,
        (None, None) => target.cri.runtime().pod_local_stream(&target.sandbox_id, port, timeout).await.map_err(std::io::Error::other),
    }
}

/// GET over HTTP/1.1; returns the status code.
async fn http_get(target: &Target, host: Option<&str>, port: u16, path: &str, headers: &[(String, String)], timeout: Duration) -> Result<u16, String> {
    let stream = connect(target, host, port, timeout).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    let conn = AbortOnDrop(tokio::spawn(conn));
    let authority = match (host, target.pod_ip) {
        (Some(h), _) => format!("{h}:{port}"),
        (None, Some(IpAddr::V6(ip))) => format!("[{ip}]:{port}"),
        (None, Some(ip)) => format!("{ip}:{port}"),
        (None, None) => format!("localhost:{port}"),
    };
    let mut request = http::Request::get(path).header(http::header::ACCEPT, "*/*").header(http::header::USER_AGENT, USER_AGENT);
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
        request = request.header(http::header::HOST, authority);
    }
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    drop(conn);
    Ok(response.status().as_u16())
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The HTTP and TCP handlers against a listener of the test's own on 127.0.0.1 (given
    /// as the probe's `host`, so no pod or runtime is involved).
    #[tokio::test]
    async fn http_and_tcp_probes_judge_by_status_and_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                let code = if request.starts_with("GET /ok ") { "200 OK" } else if request.starts_with("GET /slow ") { "" } else { "503 Unavailable" };
                seen2.lock().unwrap().push(request);
                if code.is_empty() {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
                let _ = s.write_all(format!("HTTP/1.1 {code}\r\ncontent-length: 0\r\n\r\n").as_bytes()).await;
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let cri = Arc::new(test_cri(dir.path()));
        let target = Target {
            cri,
            sandbox_id: "none".into(),
            container: "c".into(),
            container_id: "none".into(),
            pod_ip: None,
            started_at: SystemTime::now(),
        };
        let probe = |action| Probe {
            kind: super::super::probes::Kind::Readiness,
            action,
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold: 1,
            termination_grace: None,
        };
        let http = |path: &str| {
            probe(Action::Http {
                scheme: "HTTP".into(),
                host: Some("127.0.0.1".into()),
                port,
                path: path.into(),
                headers: vec![("X-Probe".into(), "yes".into())],
            })
        };
        assert_eq!(run(&target, &http("/ok")).await, Outcome::Success);
        let Outcome::Failure(m) = run(&target, &http("/bad")).await else { panic!("503 is a failure") };
        assert!(m.contains("503"), "{m}");
        let Outcome::Failure(m) = run(&target, &http("/slow")).await else { panic!("no answer is a failure") };
        assert!(m.contains("within 1 s"), "{m}");
        let first = seen.lock().unwrap()[0].to_ascii_lowercase();
        assert!(first.contains(&format!("host: 127.0.0.1:{port}")) && first.contains("user-agent: kube-probe/") && first.contains("x-probe: yes"), "{first}");
        assert_eq!(run(&target, &probe(Action::Tcp { host: Some("127.0.0.1".into()), port })).await, Outcome::Success);
        // A port nobody listens on: refused.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let Outcome::Failure(m) = run(&target, &probe(Action::Tcp { host: Some("127.0.0.1".into()), port: closed })).await else {
            panic!("refused is a failure")
        };
        assert!(m.contains(&closed.to_string()), "{m}");
    }

    /// A Cri over a runtime in a temporary directory; the handlers above never reach it.
    fn test_cri(dir: &std::path::Path) -> Cri {
        let config = crate::config::Config { root: dir.join("root"), state: dir.join("state"), ..Default::default() };
        let runtime = Arc::new(capstan_runtime::Runtime::open(config.runtime_options()).unwrap());
        Cri::new(runtime, Arc::new(config), Default::default())
    }
}
