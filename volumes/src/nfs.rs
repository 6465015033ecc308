//! `nfs`: the kernel's NFS client, mounted by `mount -t nfs` so that `mount.nfs` (from
//! nfs-common) negotiates version, ports and security the way it does for an admin.
//!
//! Options: the PersistentVolume's `mountOptions` as given, then `ro` for `readOnly`, and
//! the node's default `vers=` when the options name no version. Nothing else is forced:
//! `nolock` would break locking for apps that need it, and `soft` can lose written data,
//! so the mount stays `hard` (the kernel default) unless the PV asks otherwise.
//!
//! A dead server must not hang setup forever: `mount` runs under a deadline
//! ([`NfsDefaults::mount_timeout`]) and is killed when it passes, giving
//! [`Error::Timeout`]; a mount that landed meanwhile is undone. Teardown unmounts normally
//! and reports a busy mount as an error (the caller retries); only `force` (the pod is being
//! deleted and the server is gone) uses `MNT_FORCE` and, failing that, a lazy `MNT_DETACH`,
//! and returns once the mount is out of the mount table while the kernel spends its RPC
//! timeouts on the dead server in a background thread. Teardown never `stat`s the mount
//! point: on a hard mount of a dead server that blocks until the server returns.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::{Error, Result, mount};

/// An `nfs` volume source.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Nfs {
    /// Host name or IP address of the server.
    pub server: String,
    /// The exported path on the server.
    pub path: String,
    #[serde(default)]
    pub read_only: bool,
    /// The PersistentVolume's `mountOptions`, passed to `mount -o` unchanged.
    #[serde(default)]
    pub mount_options: Vec<String>,
}

/// The node's NFS settings (from the agent's config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsDefaults {
    /// `vers=` used when the volume's options name no version; `None` lets mount.nfs
    /// negotiate (4.2 down to 3).
    pub version: Option<String>,
    /// How long `mount` may take before it is killed.
    pub mount_timeout: Duration,
}

impl Default for NfsDefaults {
    fn default() -> NfsDefaults {
        NfsDefaults { version: None, mount_timeout: Duration::from_secs(60) }
    }
}

/// Where util-linux's `mount` looks for the helper that `-t nfs` needs.
const HELPERS: [&str; 2] = ["/sbin/mount.nfs", "/usr/sbin/mount.nfs"];

impl Nfs {
    pub fn new(server: impl Into<String>, path: impl Into<String>, read_only: bool) -> Nfs {
        Nfs { server: server.into(), path: path.into(), read_only, mount_options: Vec::new() }
    }

    /// `server:/path`, with an IPv6 address in brackets.
    pub fn remote(&self) -> String {
        if self.server.contains(':') && !self.server.starts_with('[') {
            format!("[{}]:{}", self.server, self.path)
        } else {
            format!("{}:{}", self.server, self.path)
        }
    }

    /// The `-o` list: the PV's options, `ro`, and the default version if none is named.
    pub fn options(&self, defaults: &NfsDefaults) -> Vec<String> {
        let mut opts = self.mount_options.clone();
        if self.read_only && !opts.iter().any(|o| o == "ro") {
            opts.push("ro".into());
        }
        let names_version = opts.iter().any(|o| o.starts_with("vers=") || o.starts_with("nfsvers=") || o == "v3" || o == "v4");
        if let (false, Some(v)) = (names_version, &defaults.version) {
            opts.push(format!("vers={v}"));
        }
        opts
    }

    fn validate(&self) -> Result<()> {
        if self.server.is_empty() || self.server.contains('/') || self.server.contains(char::is_whitespace) {
            return Err(Error::InvalidArgument(format!("nfs server {:?} is not a host name or address", self.server)));
        }
        if !self.path.starts_with('/') {
            return Err(Error::InvalidArgument(format!("nfs path {:?} must be absolute", self.path)));
        }
        if self.mount_options.iter().any(|o| o.is_empty() || o.contains(',') || o.contains(char::is_whitespace)) {
            return Err(Error::InvalidArgument(format!("nfs mountOptions {:?}: one option per entry", self.mount_options)));
        }
        Ok(())
    }

    /// Mounts the export at `target`. Already mounted there: nothing to do. On any failure
    /// the target is left as it was found (no mount, the directory removed if made here).
    pub fn setup(&self, target: &Path, defaults: &NfsDefaults) -> Result<()> {
        self.validate()?;
        if !HELPERS.iter().any(|h| Path::new(h).exists()) {
            return Err(Error::MissingHelper { helper: "mount.nfs", package: "nfs-common" });
        }
        // mountinfo before any stat of the target (see `teardown`).
        if mount::is_mount_point(target)? {
            return Ok(());
        }
        let created = mount::create_dir(target, 0o750)?;
        let result = self.run_mount(target, defaults);
        if result.is_err() {
            // The kill may have come after the kernel finished the mount.
            let _ = mount::unmount(target, true);
            if created {
                let _ = mount::remove_mount_dir(target);
            }
        }
        result
    }

    fn run_mount(&self, target: &Path, defaults: &NfsDefaults) -> Result<()> {
        let remote = self.remote();
        let mut cmd = Command::new("mount");
        cmd.arg("-t").arg("nfs");
        let opts = self.options(defaults);
        if !opts.is_empty() {
            cmd.arg("-o").arg(opts.join(","));
        }
        cmd.arg(&remote).arg(target).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // Its own process group: `mount` runs mount.nfs as a child, and a deadline must
        // end both (killing `mount` alone leaves mount.nfs waiting on the server).
        cmd.process_group(0);
        tracing::info!(remote, target = %target.display(), options = opts.join(","), "mounting NFS");
        let child = cmd.spawn().map_err(Error::io("cannot run mount for", target))?;
        let target = target.to_path_buf();
        match wait_deadline(child, defaults.mount_timeout) {
            Ok((status, _)) if status.success() => Ok(()),
            Ok((status, output)) => {
                Err(Error::MountCommand { fstype: "nfs", remote, target, status: status.to_string(), output })
            }
            Err(output) => {
                let output = if output.is_empty() { output } else { format!("; mount said: {output}") };
                Err(Error::Timeout { fstype: "nfs", remote, target, after: defaults.mount_timeout, output })
            }
        }
    }
}

/// Waits for `child` until `timeout`; kills its process group then. `Ok` with its status
/// and output, or `Err` with whatever it printed before it was killed.
fn wait_deadline(mut child: Child, timeout: Duration) -> Result<(std::process::ExitStatus, String), String> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok((status, output(&mut child))),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => break,
        }
    }
    let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
    // A mount(2) waiting on RPCs is killable; should it not die quickly, a thread reaps it
    // later rather than blocking the caller past its deadline.
    let grace = Instant::now() + Duration::from_secs(5);
    while Instant::now() < grace {
        if let Ok(Some(_)) = child.try_wait() {
            return Err(output(&mut child));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = output(&mut child);
    std::thread::spawn(move || child.wait());
    Err(text)
}

/// What the child wrote so far, stdout then stderr, trimmed. Reads without blocking: a
/// helper still alive (stuck in the kernel) may hold the pipes open.
fn output(child: &mut Child) -> String {
    let mut bytes = Vec::new();
    for fd in [child.stdout.as_mut().map(|o| o as &mut dyn ReadFd), child.stderr.as_mut().map(|e| e as &mut dyn ReadFd)]
        .into_iter()
        .flatten()
    {
        let nonblocking = fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
        if nonblocking.is_ok() {
            let _ = fd.read_to_end(&mut bytes);
        }
    }
    String::from_utf8_lossy(&bytes).trim().to_string()
}

/// A readable pipe end whose descriptor we can switch to non-blocking.
trait ReadFd: Read + AsRawFd {}
impl<T: Read + AsRawFd> ReadFd for T {}

/// Unmounts the export at `target` and removes the (then empty) directory. A missing target
/// is success. See the module docs for `force`.
pub fn teardown(target: &Path, force: bool) -> Result<()> {
    // mountinfo first, never a stat: stat(2) on the root of a hard NFS mount whose server
    // is dead blocks until the server comes back.
    mount::unmount(target, force)?;
    mount::remove_mount_dir(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_add_ro_and_the_default_version_only_when_missing() {
        let defaults = NfsDefaults { version: Some("4.2".into()), ..Default::default() };
        let mut nfs = Nfs::new("10.0.0.1", "/export", true);
        assert_eq!(nfs.options(&defaults), vec!["ro", "vers=4.2"]);
        nfs.mount_options = vec!["nfsvers=3".into(), "hard".into()];
        assert_eq!(nfs.options(&defaults), vec!["nfsvers=3", "hard", "ro"]);
        nfs.read_only = false;
        assert_eq!(nfs.options(&NfsDefaults::default()), vec!["nfsvers=3", "hard"]);
    }

    #[test]
    fn the_deadline_kills_the_whole_process_group() {
        // Like `mount` running mount.nfs: the grandchild must die with the child.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30 & echo $!; wait"]).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        let t = Instant::now();
        let printed = wait_deadline(cmd.spawn().unwrap(), Duration::from_millis(300)).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        let grandchild = Pid::from_raw(printed.parse().unwrap());
        let gone = Instant::now() + Duration::from_secs(5);
        while nix::sys::signal::kill(grandchild, None).is_ok() && !zombie(grandchild) {
            assert!(Instant::now() < gone, "sleep {grandchild} outlived the deadline");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn zombie(pid: Pid) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
    }

    #[test]
    fn remote_brackets_ipv6() {
        assert_eq!(Nfs::new("fd00::1", "/x", false).remote(), "[fd00::1]:/x");
        assert_eq!(Nfs::new("nfs.local", "/x", false).remote(), "nfs.local:/x");
    }

    #[test]
    fn bad_definitions_are_refused_before_mounting() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("v");
        for nfs in [Nfs::new("", "/x", false), Nfs::new("host", "relative", false), Nfs::new("a b", "/x", false)] {
            assert!(matches!(nfs.setup(&target, &NfsDefaults::default()), Err(Error::InvalidArgument(_))), "{nfs:?}");
        }
        assert!(!target.exists());
    }
}
