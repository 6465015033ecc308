//! The monitor's containers: create, start, stop, remove, and what happens when one exits.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cri_proto::monitor::{ContainerPhase, ContainerRecord, CreateContainer, ErrorCode, Response, reason};
use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use super::launch::{self, Stdio};
use super::logs::{LineSplitter, LogFile, Stream, timestamp_now};
use super::server::{Monitor, Reply, not_found};
use crate::cgroups;

/// One container as the monitor tracks it.
pub struct Ctr {
    pub record: ContainerRecord,
    status_path: PathBuf,
    cgroup: Option<PathBuf>,
    oom_before: u64,
    pub log: LogFile,
    pub outputs: Vec<Output>,
    /// Connections waiting for this container to exit (Stop requests).
    pub waiters: Vec<u64>,
    pub kill_deadline: Option<Instant>,
    /// The container's process as its spec gives it: the template of every exec.
    pub process: Option<oci_spec::runtime::Process>,
    /// Its seccomp profile, which libcontainer's tenant builder would leave out of execs.
    pub seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
    pub tty: bool,
    /// Where attached stdin goes: the write end of the container's stdin pipe, or the
    /// terminal; `None` without CRI `stdin` (or after `stdin_once` closed it).
    pub stdin: Option<Input>,
    pub stdin_once: bool,
    /// Attached sessions (see `attach.rs`).
    pub attached: Vec<super::attach::Attached>,
}

/// A stdin the monitor writes to without blocking; what does not fit waits here.
pub struct Input {
    pub file: File,
    pub pending: Vec<u8>,
    /// Close once `pending` is written.
    pub close_after: bool,
}

impl Input {
    pub fn new(file: File) -> Self {
        Input { file, pending: Vec::new(), close_after: false }
    }

    /// Writes what it can; `false` when the input is done (closed by request, or the
    /// reader went away) and should be dropped.
    pub fn flush(&mut self) -> bool {
        use std::io::Write;
        while !self.pending.is_empty() {
            match self.file.write(&self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        !self.close_after
    }
}

/// The monitor's read end of a container's stdout, stderr or terminal.
pub struct Output {
    pub file: File,
    splitter: LineSplitter,
    pub closed: bool,
}

impl Output {
    pub fn splitter_stream(&self) -> Stream {
        self.splitter.stream()
    }
}

pub(super) type Failure = (ErrorCode, String);

pub(super) fn internal(message: impl Into<String>) -> Failure {
    (ErrorCode::Internal, message.into())
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

impl Monitor {
    pub(super) fn create(&mut self, req: CreateContainer) -> Result<ContainerRecord, Failure> {
        if self.containers.contains_key(&req.id) {
            return Err((ErrorCode::AlreadyExists, format!("container {:?} exists in this pod", req.id)));
        }
        let spec_path = req.bundle.join("config.json");
        let spec = oci_spec::runtime::Spec::load(&spec_path)
            .map_err(|e| (ErrorCode::InvalidArgument, format!("cannot read {}: {e}", spec_path.display())))?;
        let cgroup = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone());
        let tty = spec.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false);
        let log = LogFile::open(req.log_path.as_deref())
            .map_err(|e| internal(format!("cannot open log file {:?}: {e}", req.log_path)))?;
        let (stdio, outputs, console, stdin) = if tty { self.console(&req.id)? } else { pipes(req.stdin)? };
        let created = launch::create(&self.youki_root(), &req.id, &req.bundle, stdio);
        let outputs = match (created.is_ok(), console) {
            (true, Some(listener)) => receive_pty(&listener).map(|o| vec![o]),
            _ => Ok(outputs),
        };
        let _ = std::fs::remove_file(self.console_path(&req.id));
        let pid = created.map_err(internal)?;
        let outputs = outputs.map_err(internal)?;
        for output in &outputs {
            set_nonblocking(output.file.as_raw_fd()).map_err(|e| internal(format!("output pipe: {e}")))?;
        }
        // A terminal's stdin is the terminal itself.
        let stdin = match (tty && req.stdin, stdin) {
            (true, _) => Some(outputs[0].file.try_clone().map_err(|e| internal(format!("terminal: {e}")))?),
            (false, stdin) => stdin,
        };
        if let Some(file) = &stdin {
            set_nonblocking(file.as_raw_fd()).map_err(|e| internal(format!("stdin pipe: {e}")))?;
        }
        let record = ContainerRecord::created(&req.id, now_nanos(), Some(pid.as_raw()));
        let oom_before = cgroup.as_deref().and_then(cgroups::oom_kill_count).unwrap_or(0);
        let ctr = Ctr {
            record,
            status_path: req.status_path,
            cgroup,
            oom_before,
            log,
            outputs,
            waiters: Vec::new(),
            kill_deadline: None,
            process: spec.process().clone(),
            seccomp: spec.linux().as_ref().and_then(|l| l.seccomp().clone()),
            tty,
            stdin: stdin.map(Input::new),
            stdin_once: req.stdin_once,
            attached: Vec::new(),
        };
        ctr.persist();
        tracing::info!(container_id = %req.id, %pid, description = %req.description, "container created");
        let record = ctr.record.clone();
        self.containers.insert(req.id, ctr);
        Ok(record)
    }

    fn console_path(&self, id: &str) -> PathBuf {
        self.config.pod_dir.join(console_name(id))
    }

    /// A listening console socket; libcontainer's init connects and sends the pty master.
    fn console(&self, id: &str) -> Result<Created, Failure> {
        let name = console_name(id);
        let _ = std::fs::remove_file(&name);
        // Bound by name relative to the pod dir (the cwd): absolute paths may be too long.
        let listener = UnixListener::bind(&name).map_err(|e| internal(format!("console socket: {e}")))?;
        Ok((Stdio::Console { socket: self.console_path(id) }, Vec::new(), Some(listener), None))
    }

    pub(super) fn start(&mut self, id: &str) -> Result<ContainerRecord, Failure> {
        let root = self.youki_root();
        let ctr = self.containers.get_mut(id).ok_or_else(|| not_found(id))?;
        if ctr.record.phase != ContainerPhase::Created {
            return Err((ErrorCode::FailedPrecondition, format!("container {id:?} is {:?}, not created", ctr.record.phase)));
        }
        launch::start(&root, id).map_err(|e| internal(format!("cannot start container {id:?}: {e}")))?;
        ctr.record.phase = ContainerPhase::Running;
        ctr.record.started_at = now_nanos();
        ctr.persist();
        tracing::info!(container_id = %id, "container started");
        Ok(ctr.record.clone())
    }

    /// Signals the container and answers once it has exited (see `Ctr::exited`).
    pub(super) fn stop(&mut self, conn: u64, id: &str, signal: i32, timeout_ms: u64) -> Reply {
        let root = self.youki_root();
        let ctr = self.containers.get_mut(id).ok_or_else(|| not_found(id))?;
        if ctr.record.phase == ContainerPhase::Exited {
            return Ok(Some(Response::Ok));
        }
        let signal = Signal::try_from(signal).map_err(|_| (ErrorCode::InvalidArgument, format!("bad signal {signal}")))?;
        let graceful = ctr.record.phase == ContainerPhase::Running && timeout_ms > 0 && signal != Signal::SIGKILL;
        if graceful {
            if let Some(pid) = ctr.running_pid() {
                // Not reaped yet, so the pid cannot have been reused.
                let _ = nix::sys::signal::kill(pid, signal);
            }
            let deadline = Instant::now() + Duration::from_millis(timeout_ms);
            ctr.kill_deadline = Some(ctr.kill_deadline.map_or(deadline, |d| d.min(deadline)));
        } else {
            ctr.kill_everything(&root);
        }
        ctr.waiters.push(conn);
        tracing::info!(container_id = %id, ?signal, timeout_ms, graceful, "stopping container");
        // It may have exited already; reap now rather than wait for the next poll round.
        self.reap();
        Ok(None)
    }

    pub(super) fn remove(&mut self, id: &str) -> Result<(), Failure> {
        let root = self.youki_root();
        let Some(ctr) = self.containers.get_mut(id) else { return Ok(()) };
        if ctr.record.phase != ContainerPhase::Exited {
            return Err((ErrorCode::FailedPrecondition, format!("container {id:?} has not exited; stop it first")));
        }
        launch::delete(&root, id).map_err(|e| internal(format!("cannot delete container {id:?}: {e}")))?;
        ctr.close_outputs();
        self.end_attaches(id);
        self.containers.remove(id);
        tracing::info!(container_id = %id, "container removed");
        Ok(())
    }

    /// Kills every container, waits (bounded) for them, deletes them, releases the pod's
    /// namespaces and infra process.
    pub(super) fn shutdown(&mut self) {
        let root = self.youki_root();
        for ctr in self.containers.values_mut() {
            if ctr.record.phase != ContainerPhase::Exited {
                ctr.kill_everything(&root);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.containers.values().any(|c| c.record.phase != ContainerPhase::Exited) && Instant::now() < deadline {
            self.reap();
            std::thread::sleep(Duration::from_millis(5));
        }
        for (id, ctr) in &mut self.containers {
            if let Err(e) = launch::delete(&root, id) {
                tracing::warn!(container_id = %id, error = %e, "cannot delete container at shutdown");
            }
            ctr.close_outputs();
        }
        self.containers.clear();
        self.kill_execs();
        self.infra.destroy();
        let _ = std::fs::remove_dir_all(&root);
        tracing::info!(pod_id = %self.config.pod_id, "pod shut down");
    }
}

impl Ctr {
    /// The init's pid while it has not been reaped.
    pub fn running_pid(&self) -> Option<Pid> {
        (self.record.phase != ContainerPhase::Exited).then_some(self.record.pid.map(Pid::from_raw)).flatten()
    }

    /// SIGKILL to everything in the container's cgroup, or to its init if that fails.
    pub fn kill_everything(&mut self, root: &Path) {
        if let Err(e) = launch::kill_all(root, &self.record.id, Signal::SIGKILL) {
            tracing::warn!(container_id = %self.record.id, error = %e, "cgroup-wide kill failed; killing init");
            if let Some(pid) = self.running_pid() {
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            }
        }
    }

    /// Records the exit (the caller has read the last output); returns the connections
    /// waiting for it.
    pub fn exited(&mut self, status: WaitStatus) -> Vec<u64> {
        let code = launch::exit_code(status).unwrap_or(255);
        let oom_now = self.cgroup.as_deref().and_then(cgroups::oom_kill_count).unwrap_or(0);
        let record = &mut self.record;
        record.phase = ContainerPhase::Exited;
        record.finished_at = now_nanos();
        record.exit_code = code;
        record.reason = if oom_now > self.oom_before {
            reason::OOM_KILLED
        } else if code == 0 {
            reason::COMPLETED
        } else {
            reason::ERROR
        }
        .to_string();
        if let WaitStatus::Signaled(_, sig, _) = status {
            record.message = format!("killed by {sig}");
        }
        self.kill_deadline = None;
        self.persist();
        tracing::info!(container_id = %self.record.id, exit_code = code, reason = %self.record.reason, "container exited");
        std::mem::take(&mut self.waiters)
    }

    /// Moves what is readable from one output into the log; returns the bytes read (for
    /// attached sessions) and their stream.
    pub fn read_output(&mut self, index: usize) -> (Stream, Vec<u8>) {
        let mut data = Vec::new();
        let Some(output) = self.outputs.get_mut(index) else { return (Stream::Stdout, data) };
        let stream = output.splitter.stream();
        if output.closed {
            return (stream, data);
        }
        let mut buf = vec![0u8; 64 * 1024];
        let mut records = Vec::new();
        loop {
            match output.file.read(&mut buf) {
                Ok(n) if n > 0 => {
                    output.splitter.push(&buf[..n], &timestamp_now(), &mut records);
                    if !self.attached.is_empty() {
                        data.extend_from_slice(&buf[..n]);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // End of stream; EIO is how a terminal reports its other side closed.
                _ => {
                    output.splitter.finish(&timestamp_now(), &mut records);
                    output.closed = true;
                    break;
                }
            }
            // Bound the work per wake-up so one chatty container cannot starve the rest.
            if records.len() > 256 * 1024 {
                break;
            }
        }
        self.log.write(&records);
        (stream, data)
    }

    fn close_outputs(&mut self) {
        let mut records = Vec::new();
        for output in &mut self.outputs {
            output.splitter.finish(&timestamp_now(), &mut records);
        }
        self.log.write(&records);
        self.outputs.clear();
    }

    pub fn persist(&self) {
        if let Err(e) = crate::atomic::replace_json(&self.status_path, &self.record) {
            tracing::error!(container_id = %self.record.id, path = %self.status_path.display(), error = %e, "cannot persist container status");
        }
    }
}

fn console_name(id: &str) -> String {
    format!("tty-{}.sock", &id[..id.len().min(16)])
}

/// How the container's stdio is set up: what libcontainer gets, the monitor's output ends,
/// the console socket (terminal) and the monitor's end of the stdin pipe.
type Created = (Stdio, Vec<Output>, Option<UnixListener>, Option<File>);

/// stdout and stderr pipes (the container gets the write ends); stdin is a pipe the monitor
/// writes to when asked for, else /dev/null.
fn pipes(stdin: bool) -> Result<Created, Failure> {
    let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| internal(format!("pipe: {e}")));
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (stdin, writer) = if stdin {
        let (r, w) = pipe()?;
        (r, Some(File::from(w)))
    } else {
        (dev_null()?, None)
    };
    let outputs = vec![output(out_r, Stream::Stdout), output(err_r, Stream::Stderr)];
    Ok((Stdio::Pipes { stdin, stdout: out_w, stderr: err_w }, outputs, None, writer))
}

pub(super) fn dev_null() -> Result<OwnedFd, Failure> {
    let file = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null");
    Ok(file.map_err(|e| internal(format!("/dev/null: {e}")))?.into())
}

pub(super) fn output(fd: OwnedFd, stream: Stream) -> Output {
    Output { file: File::from(fd), splitter: LineSplitter::new(stream), closed: false }
}

/// Takes the pty master libcontainer's init sent over the console socket.
pub(super) fn receive_pty(listener: &UnixListener) -> Result<Output, String> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    listener.set_nonblocking(true).map_err(|e| format!("console socket: {e}"))?;
    let (stream, _) = listener.accept().map_err(|e| format!("the container sent no terminal: {e}"))?;
    let mut name = [0u8; 64];
    let mut iov = [std::io::IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(|e| format!("cannot receive the terminal: {e}"))?;
    for cmsg in msg.cmsgs().map_err(|e| format!("cannot receive the terminal: {e}"))? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg
            && let Some(&fd) = fds.first()
        {
            // Safety: the fd was just received and belongs to no one else.
            let master = unsafe { OwnedFd::from_raw_fd(fd) };
            return Ok(output(master, Stream::Stdout));
        }
    }
    Err("the console socket carried no terminal".into())
}

pub(super) fn set_nonblocking(fd: RawFd) -> nix::Result<()> {
    use nix::fcntl::{FcntlArg, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(|_| ())
}
