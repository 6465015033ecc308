//! The pod infra process: a tiny child of the monitor (no pause image) that is born in the
//! pod's new net/ipc/uts (and pid) namespaces and holds them. Its namespaces are pinned by
//! bind-mounting `/proc/<pid>/ns/<kind>` onto files under `<pod dir>/ns/`, so CNI gets a
//! netns path and containers join the pod by path.
//!
//! The infra process dies with the monitor (`PR_SET_PDEATHSIG`): a pod whose monitor is gone
//! cannot be managed any more, and the daemon cleans it up.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use cri_proto::monitor::MonitorConfig;
use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::WaitPidFlag;
use nix::unistd::Pid;

/// Namespace kinds: the OCI name containers use and the kernel's file name under /proc.
const KINDS: [(&str, &str); 4] = [("network", "net"), ("ipc", "ipc"), ("uts", "uts"), ("pid", "pid")];

#[derive(Debug, thiserror::Error)]
pub enum InfraError {
    #[error("cannot create the pod infra process: {0}")]
    Clone(nix::Error),
    #[error("pod infra process failed: {0}")]
    Setup(String),
    #[error("cannot pin namespace {kind} at {path}: {source}")]
    Pin { kind: &'static str, path: PathBuf, source: nix::Error },
    #[error("cannot place the infra process in cgroup {path}: {message}")]
    Cgroup { path: PathBuf, message: String },
    #[error("{context} {path}: {source}")]
    Io { context: &'static str, path: PathBuf, source: std::io::Error },
}

/// The running infra process and the namespace files pinned for it.
#[derive(Debug, Default)]
pub struct Infra {
    pub pid: Option<Pid>,
    /// OCI namespace type → pinned file.
    pub namespace_paths: BTreeMap<String, PathBuf>,
    cgroup: Option<PathBuf>,
}

impl Infra {
    /// Starts the infra process and pins its namespaces; on failure nothing is left. It is
    /// not in its cgroup yet: see [`Infra::place_in_cgroup`].
    pub fn create(config: &MonitorConfig) -> Result<Infra, InfraError> {
        let ns = config.namespaces;
        if !ns.any() {
            return Ok(Infra::default());
        }
        let mut infra = Infra::default();
        let result = infra.setup(config);
        if let Err(e) = result {
            infra.destroy();
            return Err(e);
        }
        Ok(infra)
    }

    /// Moves the infra process into the pod's infra cgroup; on failure nothing is left.
    /// A step of its own, after the namespaces are pinned: on cgroup v1 the move waits for
    /// an RCU grace period (milliseconds), and the daemon attaches the network meanwhile.
    pub fn place_in_cgroup(&mut self, config: &MonitorConfig) -> Result<(), InfraError> {
        let (Some(cgroup), Some(pid)) = (&config.infra_cgroup, self.pid) else {
            return Ok(());
        };
        self.cgroup = Some(cgroup.clone());
        let result = join_cgroup(cgroup, pid);
        if result.is_err() {
            self.destroy();
        }
        result
    }

    fn setup(&mut self, config: &MonitorConfig) -> Result<(), InfraError> {
        let pid = spawn(config)?;
        self.pid = Some(pid);
        let dir = config.pod_dir.join("ns");
        std::fs::create_dir_all(&dir).map_err(|source| InfraError::Io { context: "cannot create", path: dir.clone(), source })?;
        let wanted = [config.namespaces.network, config.namespaces.ipc, config.namespaces.uts, config.namespaces.pid];
        for ((kind, file), want) in KINDS.into_iter().zip(wanted) {
            if !want {
                continue;
            }
            let target = dir.join(file);
            std::fs::File::create(&target)
                .map_err(|source| InfraError::Io { context: "cannot create", path: target.clone(), source })?;
            // Recorded before mounting so a failure half-way still unmounts what was done.
            self.namespace_paths.insert(kind.to_string(), target.clone());
            let source = format!("/proc/{pid}/ns/{file}");
            nix::mount::mount(Some(source.as_str()), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .map_err(|source| InfraError::Pin { kind, path: target.clone(), source })?;
        }
        Ok(())
    }

    /// Kills the infra process and releases the namespaces. Idempotent; errors are logged
    /// because teardown goes on regardless.
    pub fn destroy(&mut self) {
        for path in std::mem::take(&mut self.namespace_paths).into_values() {
            crate::mounts::unpin(&path);
        }
        if let Some(pid) = self.pid.take() {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            // The monitor's reaper may have collected it already.
            let _ = nix::sys::wait::waitpid(pid, None);
        }
        if let Some(cgroup) = self.cgroup.take() {
            crate::cgroups::kill_and_remove(&cgroup);
        }
    }
}

fn join_cgroup(cgroup: &Path, pid: Pid) -> Result<(), InfraError> {
    crate::cgroups::join(cgroup, pid).map_err(|e| InfraError::Cgroup { path: cgroup.to_path_buf(), message: e.to_string() })
}


/// Clones the infra process into new namespaces and waits until it has set them up.
fn spawn(config: &MonitorConfig) -> Result<Pid, InfraError> {
    let ns = config.namespaces;
    let mut flags = CloneFlags::empty();
    flags.set(CloneFlags::CLONE_NEWNET, ns.network);
    flags.set(CloneFlags::CLONE_NEWIPC, ns.ipc);
    flags.set(CloneFlags::CLONE_NEWUTS, ns.uts);
    flags.set(CloneFlags::CLONE_NEWPID, ns.pid);
    let (ready_r, ready_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(InfraError::Clone)?;
    let mut stack = vec![0u8; 256 * 1024];
    let child = Box::new(|| infra_main(config, &ready_w));
    // Safety: the monitor is single-threaded; the child gets a copy of its memory and runs
    // only `infra_main`, which never returns into the parent's code.
    let pid = unsafe { nix::sched::clone(child, &mut stack, flags, Some(libc::SIGCHLD)) }.map_err(InfraError::Clone)?;
    drop(ready_w);
    let mut answer = String::new();
    let _ = std::fs::File::from(ready_r).read_to_string(&mut answer);
    if answer == "ok" {
        return Ok(pid);
    }
    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
    let message = if answer.is_empty() { "it exited during set-up".to_string() } else { answer };
    Err(InfraError::Setup(message))
}

/// The infra process: set the namespaces up, report, then sleep and reap until killed.
fn infra_main(config: &MonitorConfig, ready: &OwnedFd) -> isize {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let _ = nix::sys::prctl::set_name(c"capstan-pause");
    super::signals::reset_for_child();
    let mut waited = SigSet::empty();
    for sig in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        waited.add(sig);
    }
    let _ = waited.thread_block();
    let answer = match setup_namespaces(config) {
        Ok(()) => "ok".to_string(),
        Err(e) => e,
    };
    let _ = nix::unistd::write(ready, answer.as_bytes());
    if answer != "ok" {
        return 1;
    }
    // Hold nothing of the monitor's: stdio to /dev/null (stderr stays the monitor log).
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 0);
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
    }
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    // It sleeps from here on: nothing of the set-up code needs to stay mapped.
    super::trim::trim();
    loop {
        match waited.wait() {
            // As pid 1 of a shared pid namespace it inherits orphans: reap them.
            Ok(Signal::SIGCHLD) => {
                while let Ok(status) = nix::sys::wait::waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    if status == nix::sys::wait::WaitStatus::StillAlive {
                        break;
                    }
                }
            }
            Ok(_) => return 0,
            Err(_) => {}
        }
    }
}

fn setup_namespaces(config: &MonitorConfig) -> Result<(), String> {
    if config.namespaces.uts && !config.hostname.is_empty() {
        nix::unistd::sethostname(&config.hostname).map_err(|e| format!("sethostname {:?}: {e}", config.hostname))?;
    }
    if config.namespaces.network {
        loopback_up().map_err(|e| format!("cannot bring up lo: {e}"))?;
    }
    for (key, value) in &config.sysctls {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).map_err(|e| format!("sysctl {key}={value}: {e}"))?;
    }
    Ok(())
}

/// `ip link set lo up` in the new network namespace: containers of the pod talk to each
/// other over localhost even before (or without) CNI's loopback plugin.
fn loopback_up() -> std::io::Result<()> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    let sock = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `key` is a sysctl that belongs to a namespace the pod owns; anything else would
/// change the host.
pub fn sysctl_is_namespaced(key: &str, ns: &cri_proto::monitor::PodNamespaces) -> bool {
    let ipc = ["kernel.shmmax", "kernel.shmall", "kernel.shmmni", "kernel.shm_rmid_forced", "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem"];
    if ipc.contains(&key) || key.starts_with("fs.mqueue.") {
        return ns.ipc;
    }
    if key.starts_with("net.") {
        return ns.network;
    }
    if key == "kernel.hostname" || key == "kernel.domainname" {
        return ns.uts;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use cri_proto::monitor::PodNamespaces;

    #[test]
    fn only_namespaced_sysctls_are_allowed() {
        let all = PodNamespaces { network: true, ipc: true, uts: true, pid: false };
        assert!(sysctl_is_namespaced("net.ipv4.ip_unprivileged_port_start", &all));
        assert!(sysctl_is_namespaced("kernel.shm_rmid_forced", &all));
        assert!(sysctl_is_namespaced("fs.mqueue.msg_max", &all));
        assert!(!sysctl_is_namespaced("kernel.panic", &all));
        assert!(!sysctl_is_namespaced("vm.swappiness", &all));
        let host_net = PodNamespaces { network: false, ..all };
        assert!(!sysctl_is_namespaced("net.ipv4.ip_forward", &host_net));
    }
}
