//! A real OCI registry for tests: Debian's `docker-registry` (CNCF distribution) on
//! 127.0.0.1 with storage in a temp dir.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

pub struct Registry {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
    auth: Option<(String, String)>,
}

impl Registry {
    /// Starts an anonymous registry.
    pub async fn start() -> Registry {
        Self::spawn(None).await
    }

    /// Starts a registry that requires HTTP basic auth (htpasswd, bcrypt) for every call.
    pub async fn start_with_auth(user: &str, password: &str) -> Registry {
        Self::spawn(Some((user.to_string(), password.to_string()))).await
    }

    async fn spawn(auth: Option<(String, String)>) -> Registry {
        // A parallel test can bind the chosen port first; then pick another one.
        for _ in 0..5 {
            if let Some(registry) = Self::try_spawn(auth.clone()).await {
                return registry;
            }
        }
        panic!("docker-registry could not bind a free port in 5 tries");
    }

    /// `None` when the registry exited because its port was taken.
    async fn try_spawn(auth: Option<(String, String)>) -> Option<Registry> {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} is missing: install Debian's docker-registry (integration/run-tests.sh does)"
        );
        let dir = tempfile::Builder::new().prefix("capstan-registry-").tempdir().expect("tempdir");
        let port = crate::free_port();
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            storage = dir.path().join("storage").display(),
        );
        if let Some((user, password)) = &auth {
            let hash = bcrypt::hash(password, 5).expect("bcrypt");
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).expect("write htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: capstan-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("registry log");
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let mut registry = Registry { dir, port, child, auth };
        registry.wait_ready().await.then_some(registry)
    }

    /// False when the registry exited because the port was in use.
    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = self.log();
                if log.contains("address already in use") {
                    return false;
                }
                panic!("docker-registry exited ({status}): {log}");
            }
            // The port answering is not enough: it may be the other server that took it.
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() && self.child_listens() {
                return true;
            }
            assert!(Instant::now() < deadline, "docker-registry not ready in 20 s: {}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether one of the registry's own sockets is the listener on its port
    /// (`/proc/net/tcp` LISTEN entry whose inode is among the child's fds).
    fn child_listens(&self) -> bool {
        let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
            return true;
        };
        let local = format!("0100007F:{:04X}", self.port);
        let Some(inode) = table.lines().skip(1).find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() > 9 && f[1] == local && f[3] == "0A").then(|| f[9].to_string())
        }) else {
            return false;
        };
        let target = format!("socket:[{inode}]");
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|fds| {
                fds.flatten().any(|fd| {
                    std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str())
                })
            })
            .unwrap_or(false)
    }

    /// `127.0.0.1:PORT`, the registry part of image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The credentials, if the registry requires them.
    pub fn auth(&self) -> Option<(&str, &str)> {
        self.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The registry's storage root (distribution's filesystem driver layout).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Where the registry keeps the bytes of a blob (`sha256:…`), for corruption tests.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.storage_dir().join(format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
