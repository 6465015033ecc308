//! Running one plugin binary: the CNI execution protocol (environment in, JSON on stdin,
//! result or error JSON on stdout) with a deadline.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Deserialize;

use crate::{CniCommand, CniError};

/// The environment of one plugin call.
pub(crate) struct Invocation<'a> {
    pub command: CniCommand,
    pub container_id: &'a str,
    /// Empty when the namespace is gone (allowed for DEL).
    pub netns: &'a str,
    pub ifname: &'a str,
    pub cni_args: &'a str,
    pub cni_path: &'a str,
}

/// Finds the executable for `plugin` (a `type`) in the first bin dir that has it.
pub(crate) fn find_plugin(bin_dirs: &[PathBuf], plugin: &str) -> Result<PathBuf, CniError> {
    let not_found = || CniError::PluginNotFound { plugin: plugin.to_string(), dirs: bin_dirs.to_vec() };
    // `type` names a file in the bin dirs, never a path elsewhere.
    if plugin.is_empty() || plugin.contains('/') || plugin == "." || plugin == ".." {
        return Err(not_found());
    }
    bin_dirs
        .iter()
        .map(|d| d.join(plugin))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .ok_or_else(not_found)
}

/// Runs the plugin at `path` and returns its stdout on success. A CNI error on stdout becomes
/// [`CniError::Plugin`]; anything else that fails becomes [`CniError::PluginFailed`]. After
/// `timeout` the plugin's whole process group (it may be running iptables) is killed.
pub(crate) fn run(
    path: &Path,
    plugin: &str,
    inv: &Invocation<'_>,
    stdin: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, CniError> {
    let started = Instant::now();
    let mut child = spawn(path, inv)?;
    let pid = child.id();
    let stdin_pipe = child.stdin.take();
    // Written from a thread: a plugin may print before it has read all of its input.
    std::thread::spawn(move || {
        if let Some(mut pipe) = stdin_pipe {
            let _ = pipe.write_all(&stdin);
        }
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(timeout) {
        Ok(Ok(output)) => output,
        Ok(Err(source)) => return Err(CniError::Spawn { path: path.to_path_buf(), source }),
        Err(_) => {
            // The group id is the plugin's pid; it stays reserved while any member lives.
            if let Ok(pgid) = i32::try_from(pid) {
                let _ = kill(Pid::from_raw(-pgid), Signal::SIGKILL);
            }
            let _ = rx.recv_timeout(Duration::from_secs(5));
            return Err(CniError::Timeout { plugin: plugin.to_string(), command: inv.command, timeout });
        }
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    tracing::debug!(
        plugin,
        command = %inv.command,
        elapsed_ms = started.elapsed().as_millis() as u64,
        status = %output.status,
        stderr = %stderr.trim(),
        "CNI plugin finished"
    );
    if output.status.success() {
        return Ok(output.stdout);
    }
    Err(failure(plugin, inv.command, &output))
}

fn spawn(path: &Path, inv: &Invocation<'_>) -> Result<std::process::Child, CniError> {
    let mut cmd = Command::new(path);
    cmd.env("CNI_COMMAND", inv.command.as_str())
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_ARGS", inv.cni_args)
        .env("CNI_PATH", inv.cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // Plugins run iptables, ip and friends by name.
    if std::env::var_os("PATH").is_none() {
        cmd.env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    }
    // ETXTBSY: the binary is still open for writing somewhere, typically because a network
    // add-on is installing it right now, or another thread forked while it was being written.
    let mut attempts = 0;
    loop {
        match cmd.spawn() {
            Ok(child) => return Ok(child),
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) && attempts < 20 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(10 * attempts));
            }
            Err(source) => return Err(CniError::Spawn { path: path.to_path_buf(), source }),
        }
    }
}

/// The error format of the spec: `{"code": n, "msg": "...", "details": "..."}` on stdout.
#[derive(Deserialize)]
struct WireError {
    code: u64,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

fn failure(plugin: &str, command: CniCommand, output: &Output) -> CniError {
    // Some plugins print the error to stderr; the spec says stdout, so try that first.
    for stream in [&output.stdout, &output.stderr] {
        if let Ok(e) = serde_json::from_slice::<WireError>(stream) {
            return CniError::Plugin {
                plugin: plugin.to_string(),
                command,
                code: e.code,
                msg: e.msg,
                details: e.details,
            };
        }
    }
    let text = if output.stderr.iter().any(|b| !b.is_ascii_whitespace()) { &output.stderr } else { &output.stdout };
    let mut text = String::from_utf8_lossy(text).trim().to_string();
    if text.len() > 4096 {
        let mut cut = 4096;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    if text.is_empty() {
        text = "no output".into();
    }
    CniError::PluginFailed { plugin: plugin.to_string(), command, status: output.status.to_string(), output: text }
}
