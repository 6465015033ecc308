//! `capstan-monitor`: one process per pod that outlives the daemon.
//!
//! The daemon starts `capstan-monitor <pod dir>` after writing `<pod dir>/monitor.json`
//! ([`MonitorConfig`]). The monitor starts a session of its own (no signal aimed at the
//! daemon's process group or terminal reaches it, and `kill -9` of the daemon leaves it
//! running, re-parented to init), becomes the child subreaper of everything it starts,
//! creates the pod's infra
//! process and pinned namespaces (saying `NetnsPinned` on the stdout the daemon reads, so
//! the daemon attaches the network meanwhile), puts the infra process in its cgroup, listens
//! on `<pod dir>/monitor.sock`, and then prints its last [`Startup`] line, `Ready`. From then
//! on it serves the protocol in `cri_proto::monitor` from a single thread: libcontainer is
//! not made for threads.
//!
//! Files in the pod dir: `monitor.json` (config), `monitor.state` ([`MonitorInfo`], for a
//! restarted daemon), `monitor.sock`, `monitor.log` (its own log), `ns/{net,ipc,uts,pid}`
//! (pinned namespaces), `youki/` (libcontainer state), and for a moment while an exec starts,
//! `exec-<n>.json` (its OCI process) and `exec-<n>.sock` (its terminal's console socket).
//!
//! Exec and attach sessions (`exec.rs`, `attach.rs`) run in the same loop; the daemon's side
//! of a session is `session.rs`.

mod attach;
mod containers;
mod exec;
mod infra;
mod launch;
pub mod logs;
mod server;
mod signals;
mod trim;

pub mod client;
pub mod session;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cri_proto::monitor::{MonitorConfig, MonitorInfo, Startup};

pub use infra::sysctl_is_namespaced;

pub const CONFIG_FILE: &str = "monitor.json";
pub const STATE_FILE: &str = "monitor.state";
pub const SOCKET_FILE: &str = "monitor.sock";
pub const LOG_FILE: &str = "monitor.log";

/// Entry point of the `capstan-monitor` binary.
pub fn main() -> ExitCode {
    let Some(pod_dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: capstan-monitor <pod state dir>  (started by the capstan daemon)");
        return ExitCode::from(2);
    };
    match start(&pod_dir) {
        Ok(monitor) => {
            report(&Startup::Ready(monitor.info.clone()));
            detach_stdout();
            monitor.run();
            ExitCode::SUCCESS
        }
        Err(message) => {
            tracing::error!(%message, "monitor start-up failed");
            report(&Startup::Failed { message });
            ExitCode::FAILURE
        }
    }
}

fn start(pod_dir: &Path) -> Result<server::Monitor, String> {
    let _ = nix::unistd::setsid();
    let config: MonitorConfig = crate::atomic::read_json(&pod_dir.join(CONFIG_FILE))
        .map_err(|e| format!("cannot read {}: {e}", pod_dir.join(CONFIG_FILE).display()))?;
    init_logging(pod_dir, &config.log_level);
    std::env::set_current_dir(pod_dir).map_err(|e| format!("cannot enter {}: {e}", pod_dir.display()))?;
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("PR_SET_CHILD_SUBREAPER: {e}"))?;
    let signals = signals::ChildSignals::install().map_err(|e| format!("SIGCHLD handler: {e}"))?;
    let mut infra = infra::Infra::create(&config).map_err(|e| e.to_string())?;
    if let Some(netns) = infra.namespace_paths.get("network") {
        report(&Startup::NetnsPinned { path: netns.clone() });
        crate::crashpoint::hit_monitor("monitor_start:after_netns_pinned");
    }
    infra.place_in_cgroup(&config).map_err(|e| e.to_string())?;
    let result = listen_and_describe(&config, &infra);
    let (listener, info) = match result {
        Ok(r) => r,
        Err(e) => {
            infra.destroy();
            return Err(e);
        }
    };
    tracing::info!(pod_id = %config.pod_id, pid = info.pid, infra_pid = ?info.infra_pid, "monitor ready");
    Ok(server::Monitor::new(config, info, infra, signals, listener))
}

fn listen_and_describe(config: &MonitorConfig, infra: &infra::Infra) -> Result<(UnixListener, MonitorInfo), String> {
    std::fs::create_dir_all(config.pod_dir.join("youki")).map_err(|e| format!("youki state dir: {e}"))?;
    let _ = std::fs::remove_file(SOCKET_FILE);
    // Relative to the pod dir (our cwd): socket paths are limited to 108 bytes.
    let listener = UnixListener::bind(SOCKET_FILE).map_err(|e| format!("cannot listen on {SOCKET_FILE}: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| format!("socket: {e}"))?;
    let pid = std::process::id() as i32;
    let info = MonitorInfo {
        pid,
        start_time: process_start_time(pid).unwrap_or(0),
        infra_pid: infra.pid.map(|p| p.as_raw()),
        namespace_paths: infra.namespace_paths.clone(),
    };
    crate::atomic::replace_json(&config.pod_dir.join(STATE_FILE), &info).map_err(|e| format!("cannot write {STATE_FILE}: {e}"))?;
    Ok((listener, info))
}

/// Logs to `monitor.log` through a descriptor of its own, not stderr: libcontainer logs from
/// the container's init too, after stderr has become the container's, and those lines
/// belong in the monitor's log, not the container's.
fn init_logging(pod_dir: &Path, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(pod_dir.join(LOG_FILE));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false);
    let _ = match file {
        Ok(file) => builder.with_writer(std::sync::Mutex::new(file)).try_init(),
        Err(_) => builder.with_writer(std::io::stderr).try_init(),
    };
}

/// A start-up line for the daemon.
fn report(startup: &Startup) {
    if let Ok(mut line) = serde_json::to_vec(startup) {
        line.push(b'\n');
        let _ = std::io::stdout().write_all(&line);
        let _ = std::io::stdout().flush();
    }
}

/// Lets go of the daemon's pipe so the daemon sees EOF and holds nothing of ours.
fn detach_stdout() {
    if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 0);
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
    }
}

/// A process's start time in clock ticks since boot (`/proc/<pid>/stat` field 22); with the
/// pid it names one process for the life of the machine.
pub fn process_start_time(pid: i32) -> Option<u64> {
    stat_of(pid).map(|(_, start)| start)
}

/// State letter and start time (clock ticks since boot) from one read of `/proc/<pid>/stat`.
fn stat_of(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let state = rest.chars().next()?;
    Some((state, rest.split(' ').nth(19)?.parse().ok()?))
}

/// Whether the monitor described by `info` is still that process and alive (not a zombie).
pub fn is_alive(info: &MonitorInfo) -> bool {
    stat_of(info.pid).is_some_and(|(state, start)| state != 'Z' && state != 'X' && start == info.start_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_is_stable_and_names_this_process() {
        let pid = std::process::id() as i32;
        let t = process_start_time(pid).unwrap();
        assert_eq!(process_start_time(pid), Some(t));
        let info = MonitorInfo { pid, start_time: t, infra_pid: None, namespace_paths: Default::default() };
        assert!(is_alive(&info));
        assert!(!is_alive(&MonitorInfo { start_time: t + 1, ..info.clone() }));
        assert!(!is_alive(&MonitorInfo { pid: i32::MAX, ..info }));
    }
}
