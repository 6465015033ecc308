//! Starting and stopping the real daemon with private root, state and socket.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cri_proto::{ImageServiceClient, RuntimeServiceClient};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tonic::transport::Channel;

/// How the test wants the daemon configured.
#[derive(Debug, Clone, Default)]
pub struct DaemonOptions {
    /// Extra TOML written into the daemon's config file (after the harness's own keys, so
    /// it may add sections such as `[images]`; it must not repeat `socket`/`root`/`state`).
    pub config_toml: String,
    /// Extra command-line arguments.
    pub args: Vec<String>,
    /// CNI conf dir; defaults to an empty directory (NetworkReady=false).
    pub cni_conf_dir: Option<PathBuf>,
    /// The `capstan` binary; defaults to [`capstan_bin`] (an installed package's
    /// `/usr/bin/capstan` in the packaging tests).
    pub binary: Option<PathBuf>,
    /// Extra environment for the daemon (e.g. `NOTIFY_SOCKET`).
    pub env: Vec<(String, String)>,
}

/// A running `capstan` daemon. Dropping it kills the daemon (SIGTERM, then SIGKILL) and
/// removes its directories.
pub struct Daemon {
    dir: tempfile::TempDir,
    options: DaemonOptions,
    child: Option<Child>,
}

impl Daemon {
    /// Starts a daemon and waits until it answers `Version` on its socket.
    pub async fn start(options: DaemonOptions) -> Daemon {
        let dir = tempfile::Builder::new().prefix("capstan-it-").tempdir().expect("tempdir");
        let mut daemon = Daemon { dir, options, child: None };
        std::fs::create_dir_all(daemon.cni_conf_dir()).expect("cni conf dir");
        daemon.spawn().await;
        daemon
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run/capstan.sock")
    }
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.options.cni_conf_dir.clone().unwrap_or_else(|| self.dir.path().join("cni"))
    }
    /// A scratch directory that lives as long as the daemon (for pod log dirs and such).
    pub fn scratch(&self) -> PathBuf {
        self.dir.path().join("scratch")
    }

    /// The daemon's log so far, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn write_config(&self) {
        // Pod log directories of the tests live in the daemon's own temp dir (scratch).
        let security = if self.options.config_toml.contains("[security]") {
            String::new()
        } else {
            format!("[security]\nlog_roots = [{:?}, \"/var/log/pods\"]\n\n", self.dir.path())
        };
        let config = format!(
            "socket = {:?}\nroot = {:?}\nstate = {:?}\n\n[cni]\nconf_dir = {:?}\n\n{security}{}\n",
            self.socket(),
            self.root(),
            self.state(),
            self.cni_conf_dir(),
            self.options.config_toml,
        );
        std::fs::write(self.config_path(), config).expect("write daemon config");
    }

    /// The command line the harness runs (tests that check CLI behaviour reuse it).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(self.options.binary.clone().unwrap_or_else(capstan_bin));
        cmd.arg("--config").arg(self.config_path()).args(&self.options.args);
        cmd.envs(self.options.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    async fn spawn(&mut self) {
        self.write_config();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("daemon log file");
        let child = self
            .command()
            .env("RUST_LOG", std::env::var("CAPSTAN_TEST_LOG").unwrap_or_else(|_| "debug".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", self.command().get_program()));
        self.child = Some(child);
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + ready_timeout();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("capstan exited during start-up ({status}); log:\n{}", self.log());
            }
            if self.socket().exists()
                && let Ok(channel) = cri_proto::unix::connect(self.socket()).await
            {
                let mut client = RuntimeServiceClient::new(channel);
                if client.version(cri_proto::v1::VersionRequest::default()).await.is_ok() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "capstan did not become ready in {:?}; log:\n{}", ready_timeout(), self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn channel(&self) -> Channel {
        cri_proto::unix::connect(self.socket()).await.expect("connect to capstan socket")
    }
    pub async fn runtime_client(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel().await)
    }
    pub async fn image_client(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel().await)
    }

    /// Kills the daemon with SIGKILL (a crash): pods must survive it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the daemon with SIGTERM and returns its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    /// Sets (or, with `None`, removes) a variable of the daemon's environment for the next
    /// start (crash tests start it with `CAPSTAN_CRASH_AT` and restart it without).
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.options.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.options.env.push((key.to_string(), v.to_string()));
        }
    }

    /// Waits up to `within` for the daemon process to exit by itself; true when it has.
    pub async fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            match self.child.as_mut().map(|c| c.try_wait()) {
                None | Some(Ok(Some(_))) | Some(Err(_)) => return true,
                Some(Ok(None)) if Instant::now() >= deadline => return false,
                Some(Ok(None)) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// Starts the daemon again on the same directories (after `kill9` or `stop`).
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        self.spawn().await;
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How long the daemon may take to answer after start: software emulation in the VM lane
/// runs 5-15 times slower than the host.
fn ready_timeout() -> Duration {
    if std::env::var_os("CAPSTAN_VM").is_some() { Duration::from_secs(120) } else { Duration::from_secs(20) }
}

/// The `capstan` binary under test.
pub fn capstan_bin() -> PathBuf {
    let bin = crate::bin_dir().join("capstan");
    assert!(
        bin.exists(),
        "{} does not exist: build the binaries first (cargo build --workspace --bins)",
        bin.display()
    );
    bin
}

/// Reads a file the daemon wrote, with a helpful panic.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
