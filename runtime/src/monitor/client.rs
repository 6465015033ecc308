//! The daemon's side of the monitor: starting one, and talking to it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use cri_proto::monitor::frame::{self, Frame};
use cri_proto::monitor::{ErrorCode, MonitorConfig, MonitorInfo, Request, Response, Startup};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::{CONFIG_FILE, LOG_FILE, SOCKET_FILE, STATE_FILE};
use crate::{Error, Result};

/// How long a monitor may take to come up (it creates namespaces and an infra process).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Default deadline of a request that does not wait for a container.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The `capstan-monitor` binary: `$CAPSTAN_MONITOR`, else next to the running executable.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CAPSTAN_MONITOR") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent().unwrap_or(Path::new("/usr/bin")).join("capstan-monitor")
}

/// Writes the monitor's config, starts it, and waits until it is ready.
pub async fn spawn(binary: &Path, config: &MonitorConfig) -> Result<MonitorInfo> {
    start(binary, config).await?.ready().await
}

/// Writes the monitor's config and starts it; the caller follows its start-up lines with
/// [`Starting::netns`] and [`Starting::ready`].
pub async fn start(binary: &Path, config: &MonitorConfig) -> Result<Starting> {
    let dir = &config.pod_dir;
    let config_path = dir.join(CONFIG_FILE);
    crate::atomic::replace_json(&config_path, config).map_err(Error::io("cannot write", &config_path))?;
    let log_path = dir.join(LOG_FILE);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(Error::io("cannot open", &log_path))?;
    let mut child = tokio::process::Command::new(binary)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| Error::Internal(format!("cannot start the pod monitor {}: {e}", binary.display())))?;
    let stdout = child.stdout.take().ok_or_else(|| Error::Internal("monitor stdout missing".into()))?;
    Ok(Starting {
        lines: BufReader::new(stdout).lines(),
        child: Some(child),
        log_path,
        deadline: tokio::time::Instant::now() + START_TIMEOUT,
        wants_netns: config.namespaces.network,
        ready: None,
    })
}

/// A monitor on its way up. Dropped before it is ready, it is killed.
pub struct Starting {
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    child: Option<tokio::process::Child>,
    log_path: PathBuf,
    deadline: tokio::time::Instant,
    wants_netns: bool,
    /// `Ready` read while waiting for the netns (a monitor that pins none).
    ready: Option<MonitorInfo>,
}

impl Starting {
    /// The pod's pinned network namespace, as soon as the monitor has it; `None` for a pod
    /// without a network namespace of its own.
    pub async fn netns(&mut self) -> Result<Option<PathBuf>> {
        if !self.wants_netns {
            return Ok(None);
        }
        match self.next().await {
            Ok(Startup::NetnsPinned { path }) => Ok(Some(path)),
            Ok(Startup::Ready(info)) => {
                let path = info.namespace_paths.get("network").cloned();
                self.ready = Some(info);
                Ok(path)
            }
            Ok(Startup::Failed { message }) => Err(self.fail(message).await),
            Err(why) => Err(self.fail(why).await),
        }
    }

    /// Waits for `Ready`. On failure the monitor is killed and gone when this returns, so
    /// it pins nothing more while the caller cleans up.
    pub async fn ready(mut self) -> Result<MonitorInfo> {
        let info = match self.ready.take() {
            Some(info) => Ok(info),
            None => loop {
                match self.next().await {
                    Ok(Startup::Ready(info)) => break Ok(info),
                    // An older monitor's order, or a repeated line: nothing to do with it.
                    Ok(Startup::NetnsPinned { .. }) => continue,
                    Ok(Startup::Failed { message }) => break Err(message),
                    Err(why) => break Err(why),
                }
            },
        };
        match info {
            Ok(info) => {
                // Reap the monitor when it exits while this daemon lives; after a daemon
                // restart it is init's child.
                if let Some(mut child) = self.child.take() {
                    tokio::spawn(async move {
                        let _ = child.wait().await;
                    });
                }
                Ok(info)
            }
            Err(why) => Err(self.fail(why).await),
        }
    }

    /// The next start-up line, or why there is none.
    async fn next(&mut self) -> std::result::Result<Startup, String> {
        let line = match tokio::time::timeout_at(self.deadline, self.lines.next_line()).await {
            Err(_) => return Err(format!("no answer in {} s", START_TIMEOUT.as_secs())),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(None)) => return Err("it exited without a word".into()),
            Ok(Ok(Some(line))) => line,
        };
        serde_json::from_str::<Startup>(line.trim())
            .map_err(|e| format!("unreadable start-up line {line:?}: {e}"))
    }

    /// Kills the monitor, waits until it is gone, and says why it did not start.
    async fn fail(&mut self, why: String) -> Error {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
        Error::Internal(format!("pod monitor did not start: {why} (see {})", self.log_path.display()))
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = child.wait().await;
                });
            }
        }
    }
}

/// The identity the monitor wrote when it started; `None` when it never started.
pub fn read_info(pod_dir: &Path) -> Option<MonitorInfo> {
    crate::atomic::read_json(&pod_dir.join(STATE_FILE)).ok()
}

/// Sends one request to the monitor of the pod in `pod_dir` and returns its answer;
/// error answers become [`Error`]s.
pub async fn call(pod_dir: &Path, request: &Request, timeout: Duration) -> Result<Response> {
    let exchange = async {
        let mut stream = connect(pod_dir).await?;
        let mut line = serde_json::to_vec(request).map_err(|e| Error::Internal(e.to_string()))?;
        line.push(b'\n');
        stream.write_all(&line).await.map_err(|e| lost(pod_dir, e))?;
        let mut reader = BufReader::new(stream);
        let mut answer = String::new();
        if reader.read_line(&mut answer).await.map_err(|e| lost(pod_dir, e))? == 0 {
            return Err(Error::Unavailable(format!("the pod monitor in {} closed the connection", pod_dir.display())));
        }
        serde_json::from_str::<Response>(&answer).map_err(|e| Error::Internal(format!("bad monitor answer {answer:?}: {e}")))
    };
    let response = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| Error::DeadlineExceeded(format!("the pod monitor did not answer in {} s", timeout.as_secs())))??;
    match response {
        Response::Error { code, message } => Err(answer_error(code, message)),
        other => Ok(other),
    }
}

/// A monitor's error answer as ours. The daemon only asks about containers it knows, so a
/// container the monitor does not know is a state problem, not a bad id.
fn answer_error(code: ErrorCode, message: String) -> Error {
    match code {
        ErrorCode::NotFound | ErrorCode::FailedPrecondition => Error::FailedPrecondition(message),
        ErrorCode::AlreadyExists => Error::AlreadyExists(message),
        ErrorCode::InvalidArgument => Error::InvalidArgument(message),
        ErrorCode::Internal => Error::Internal(message),
    }
}

/// The daemon's ends of a session connection, after the monitor's `ok`. Keep the writer
/// until the session has ended: closing it tells the monitor the daemon went away (which
/// kills an exec).
pub type SessionReader = BufReader<OwnedReadHalf>;

/// Opens a dedicated connection for an exec or attach `request` (see the protocol's
/// session docs) and returns it once the monitor has started the session.
pub async fn open_session(pod_dir: &Path, request: &Request) -> Result<(SessionReader, OwnedWriteHalf)> {
    let opening = async {
        let stream = connect(pod_dir).await?;
        let (reader, mut writer) = stream.into_split();
        let mut line = serde_json::to_vec(request).map_err(|e| Error::Internal(e.to_string()))?;
        line.push(b'\n');
        writer.write_all(&line).await.map_err(|e| lost(pod_dir, e))?;
        // The reader keeps whatever frames arrived behind the answer line.
        let mut reader = BufReader::new(reader);
        let mut answer = String::new();
        if reader.read_line(&mut answer).await.map_err(|e| lost(pod_dir, e))? == 0 {
            return Err(Error::Unavailable(format!("the pod monitor in {} closed the connection", pod_dir.display())));
        }
        match serde_json::from_str::<Response>(&answer) {
            Ok(Response::Ok) => Ok((reader, writer)),
            Ok(Response::Error { code, message }) => Err(answer_error(code, message)),
            Ok(other) => Err(Error::Internal(format!("unexpected monitor answer to a session request: {other:?}"))),
            Err(e) => Err(Error::Internal(format!("bad monitor answer {answer:?}: {e}"))),
        }
    };
    tokio::time::timeout(CALL_TIMEOUT, opening)
        .await
        .map_err(|_| Error::DeadlineExceeded(format!("the pod monitor did not answer in {} s", CALL_TIMEOUT.as_secs())))?
}

/// The next frame of a session; `None` when the monitor closed the connection.
pub async fn read_frame(reader: &mut SessionReader) -> Result<Option<Frame>> {
    let mut header = [0u8; frame::HEADER];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(Error::Unavailable(format!("lost the pod monitor's session: {e}"))),
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > frame::MAX_PAYLOAD {
        return Err(Error::Internal(format!("the pod monitor sent a frame of {len} bytes")));
    }
    let mut payload = vec![0u8; len];
    reader
        .read_exact(&mut payload)
        .await
        .map_err(|e| Error::Unavailable(format!("lost the pod monitor's session: {e}")))?;
    Frame::from_parts(header[0], &payload)
        .map(Some)
        .map_err(|e| Error::Internal(format!("the pod monitor sent a bad frame: {e}")))
}

/// Writes one frame to a session.
pub async fn write_frame(writer: &mut OwnedWriteHalf, frame: &Frame) -> std::io::Result<()> {
    writer.write_all(&frame.to_bytes()).await
}

fn lost(pod_dir: &Path, e: std::io::Error) -> Error {
    Error::Unavailable(format!("lost the pod monitor in {}: {e}", pod_dir.display()))
}

/// Connects to `<pod dir>/monitor.sock`, through `/proc/self/fd` when the path is longer
/// than a socket address allows.
async fn connect(pod_dir: &Path) -> Result<UnixStream> {
    let path = pod_dir.join(SOCKET_FILE);
    let unavailable = |e: std::io::Error| Error::Unavailable(format!("the pod monitor is not running ({}: {e})", path.display()));
    if path.as_os_str().len() < 100 {
        return UnixStream::connect(&path).await.map_err(unavailable);
    }
    let dir = std::fs::File::open(pod_dir).map_err(unavailable)?;
    use std::os::fd::AsRawFd;
    let short = format!("/proc/self/fd/{}/{SOCKET_FILE}", dir.as_raw_fd());
    let stream = UnixStream::connect(&short).await.map_err(unavailable);
    drop(dir);
    stream
}
