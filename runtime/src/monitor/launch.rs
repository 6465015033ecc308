//! Creating containers with libcontainer, in a short-lived child of the monitor.
//!
//! libcontainer changes the calling process while it creates a container: it writes the
//! container's `oom_score_adj` into `/proc/self` (which root without CAP_SYS_RESOURCE can
//! never lower again), makes the process non-dumpable and changes directory. Running it in
//! a forked child keeps the monitor itself clean; the container's init still ends up as the
//! monitor's child because the monitor is the subreaper of everything below it.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities, LinuxSeccomp, Process, Spec};
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use nix::fcntl::OFlag;
use nix::sys::wait::WaitStatus;
use nix::unistd::{ForkResult, Pid};

/// The container's standard streams as the monitor hands them over.
pub enum Stdio {
    /// Pipes (or /dev/null) the monitor holds the other ends of.
    Pipes { stdin: OwnedFd, stdout: OwnedFd, stderr: OwnedFd },
    /// A terminal: libcontainer sends the pty master over this console socket.
    Console { socket: PathBuf },
}

/// Runs libcontainer's create for `id` (bundle at `bundle`, state under `root`) in a forked
/// child; returns the pid of the container's init, which waits for [`start`].
pub fn create(root: &Path, id: &str, bundle: &Path, stdio: Stdio) -> Result<Pid, String> {
    in_child(stdio, |stdio| build(root, id, bundle, stdio))
}

/// Starts `process` (an OCI process JSON file) in the running container `id` with
/// libcontainer's tenant builder, in a forked child: it joins the container's namespaces
/// and cgroup. Returns the new process' pid once it has exec'd; a failure to exec (say, no
/// such command) is an error here.
pub fn exec(root: &Path, id: &str, process: &Path, stdio: Stdio, seccomp: TenantSeccomp) -> Result<Pid, String> {
    in_child(stdio, |stdio| build_tenant(root, id, process, stdio, seccomp))
}

/// Runs `work` in a forked child and returns the pid it reports.
fn in_child(stdio: Stdio, work: impl FnOnce(Stdio) -> Result<Pid, String>) -> Result<Pid, String> {
    let (result_r, result_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // Safety: the monitor is single-threaded, so the child may run arbitrary code.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(result_r);
            super::signals::reset_for_child();
            let answer = match work(stdio) {
                Ok(pid) => format!("ok {pid}"),
                Err(e) => e,
            };
            let _ = nix::unistd::write(&result_w, answer.as_bytes());
            // Skip Rust's exit path: destructors of the monitor's state belong to the monitor.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(result_w);
            drop(stdio);
            // Wait for the launcher, not for EOF: the container's init inherited the pipe's
            // write end and keeps it until it execs, i.e. until `start`. The launcher wrote
            // its answer before exiting, so it is in the pipe now.
            let status = nix::sys::wait::waitpid(child, None);
            let mut bytes = Vec::new();
            let mut file = std::fs::File::from(result_r);
            let _ = nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
            // Ends in WouldBlock once the answer is read; the bytes read so far are kept.
            let _ = file.read_to_end(&mut bytes);
            let answer = String::from_utf8_lossy(&bytes).into_owned();
            if let Some(pid) = answer.strip_prefix("ok ") {
                return pid.trim().parse::<i32>().map(Pid::from_raw).map_err(|e| format!("bad pid {pid:?}: {e}"));
            }
            if answer.is_empty() {
                return Err(format!("the container launcher died ({status:?})"));
            }
            Err(answer)
        }
    }
}

fn build_tenant(root: &Path, id: &str, process: &Path, stdio: Stdio, seccomp: TenantSeccomp) -> Result<Pid, String> {
    let builder = ContainerBuilder::new(id.to_string(), SyscallType::Linux)
        .with_root_path(root)
        .map_err(|e| chain(&e))?;
    let builder = with_stdio(builder, stdio);
    let builder = match seccomp.0 {
        Some(executor) => builder.with_executor(executor),
        None => builder,
    };
    builder
        .as_tenant()
        .with_process(Some(process))
        .with_detach(true)
        .build()
        .map_err(|e| chain(&e))
}

fn with_stdio(builder: ContainerBuilder, stdio: Stdio) -> ContainerBuilder {
    match stdio {
        Stdio::Pipes { stdin, stdout, stderr } => builder.with_stdin(stdin).with_stdout(stdout).with_stderr(stderr),
        Stdio::Console { socket } => builder.with_console_socket(Some(socket)),
    }
}

fn build(root: &Path, id: &str, bundle: &Path, stdio: Stdio) -> Result<Pid, String> {
    let builder = ContainerBuilder::new(id.to_string(), SyscallType::Linux)
        .with_root_path(root)
        .map_err(|e| chain(&e))?;
    let builder = with_stdio(builder, stdio);
    let container = builder
        .validate_id()
        .and_then(|b| b.as_init(bundle).with_systemd(false).with_detach(true).build())
        .map_err(|e| chain(&e))?;
    container.pid().ok_or_else(|| "libcontainer created the container but recorded no pid".to_string())
}

/// The container's seccomp profile for an exec'd process.
///
/// libcontainer's tenant builder keeps only the namespaces and cgroup of the container's
/// `linux` section, so an exec'd process would run without the container's seccomp filter.
/// This executor loads it just before the exec. Without `no_new_privs` loading a filter
/// needs CAP_SYS_ADMIN, so the process keeps CAP_SYS_ADMIN and CAP_SETPCAP through
/// libcontainer's set-up ([`TenantSeccomp::prepare`]) and drops them here, after the filter
/// is in place: the order libcontainer's init follows for containers.
#[derive(Default)]
pub struct TenantSeccomp(Option<SeccompExecutor>);

#[derive(Clone)]
pub struct SeccompExecutor {
    seccomp: LinuxSeccomp,
    /// The container's capabilities, restored after the filter is loaded.
    caps: Option<LinuxCapabilities>,
}

impl TenantSeccomp {
    /// Adapts the exec'd `process` (a copy of the container's) to `seccomp`.
    pub fn prepare(process: &mut Process, seccomp: Option<&LinuxSeccomp>) -> TenantSeccomp {
        let Some(seccomp) = seccomp else { return TenantSeccomp(None) };
        let caps = if process.no_new_privileges() == Some(true) {
            None
        } else {
            let original = process.capabilities().clone().unwrap_or_default();
            let mut raised = original.clone();
            let add = |set: &Option<Capabilities>| {
                let mut set = set.clone().unwrap_or_default();
                set.extend([Capability::SysAdmin, Capability::Setpcap]);
                Some(set)
            };
            raised.set_bounding(add(original.bounding()));
            raised.set_effective(add(original.effective()));
            raised.set_permitted(add(original.permitted()));
            process.set_capabilities(Some(raised));
            Some(original)
        };
        TenantSeccomp(Some(SeccompExecutor { seccomp: seccomp.clone(), caps }))
    }
}

impl Executor for SeccompExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        match libcontainer::seccomp::initialize_seccomp(&self.seccomp) {
            Ok(None) => {}
            Ok(Some(_)) => return Err(ExecutorError::Other("seccomp notify profiles are not supported for exec".into())),
            Err(e) => return Err(ExecutorError::Other(format!("cannot load the container's seccomp profile: {}", chain(&e)))),
        }
        if let Some(caps) = &self.caps {
            let syscall = libcontainer::syscall::syscall::create_syscall();
            libcontainer::capabilities::drop_privileges(caps, syscall.as_ref())
                .map_err(|e| ExecutorError::Other(format!("cannot drop capabilities: {e}")))?;
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

/// Lets a created container exec its process.
pub fn start(root: &Path, id: &str) -> Result<(), String> {
    let mut container = Container::load(root.join(id)).map_err(|e| chain(&e))?;
    container.start().map_err(|e| chain(&e))
}

/// Signals every process in the container's cgroup (its init may be gone already).
pub fn kill_all(root: &Path, id: &str, signal: nix::sys::signal::Signal) -> Result<(), String> {
    let mut container = Container::load(root.join(id)).map_err(|e| chain(&e))?;
    container.kill(signal, true).map_err(|e| chain(&e))
}

/// Removes the container's cgroup and libcontainer state; a missing state is no error.
pub fn delete(root: &Path, id: &str) -> Result<(), String> {
    let dir = root.join(id);
    if !dir.exists() {
        return Ok(());
    }
    let mut container = Container::load(dir).map_err(|e| chain(&e))?;
    container.delete(true).map_err(|e| chain(&e))
}

/// An error with its causes, for messages that reach the operator.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = e.source();
    }
    text
}

/// The exit code kubelet shows: the status, or 128 + signal number.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}
