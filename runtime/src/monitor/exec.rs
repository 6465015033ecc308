//! Exec sessions: a process started in a running container with libcontainer's tenant
//! builder (it joins the container's namespaces and cgroup and runs as the container's
//! process does: user, capabilities, environment, working directory, rlimits), its pipes or
//! terminal in the monitor's poll loop, its exit reaped like a container's.
//!
//! The process is a session leader (libcontainer's init calls `setsid`), so a timeout or a
//! daemon that went away kills its whole process group: `sh -c 'sleep 30; …'` leaves no
//! `sleep` behind.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use cri_proto::monitor::frame::{CHUNK, Frame};
use cri_proto::monitor::{ContainerPhase, ErrorCode, ExecProcess, SessionEnd};
use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use super::containers::{Failure, Input, Output, dev_null, internal, output, receive_pty, set_nonblocking};
use super::launch::{self, Stdio};
use super::logs::Stream;
use super::server::{Monitor, Session, not_found};

/// How long output may still arrive after the process exited (a terminal flushes late; a
/// background child may hold a pipe open).
const DRAIN: Duration = Duration::from_millis(500);

pub struct Exec {
    pub container: String,
    pub pid: Pid,
    /// The session's connection; `None` once the daemon went away.
    pub conn: Option<u64>,
    pub stdin: Option<Input>,
    /// stdout and stderr pipes, or the terminal.
    pub outputs: Vec<Output>,
    /// Which outputs the daemon asked for (others are read and dropped).
    wanted: (bool, bool),
    /// The terminal master, for resizes.
    terminal: Option<File>,
    deadline: Option<Instant>,
    timeout_ms: u64,
    timed_out: bool,
    exit: Option<(WaitStatus, Instant)>,
}

impl Monitor {
    /// Starts `req` in its container; the connection becomes the session.
    pub(super) fn exec(&mut self, conn: u64, req: ExecProcess) -> Result<(), Failure> {
        let ctr = self.containers.get(&req.id).ok_or_else(|| not_found(&req.id))?;
        if ctr.record.phase != ContainerPhase::Running {
            return Err((ErrorCode::FailedPrecondition, format!("container {:?} is not running", req.id)));
        }
        if req.args.first().is_none_or(|a| a.is_empty()) {
            return Err((ErrorCode::InvalidArgument, "exec needs a command".into()));
        }
        let mut process = ctr.process.clone().ok_or_else(|| internal("the container's spec has no process"))?;
        process.set_args(Some(req.args.clone()));
        process.set_terminal(Some(req.tty));
        process.set_console_size(None);
        let seccomp = launch::TenantSeccomp::prepare(&mut process, ctr.seccomp.as_ref());
        let process_path = self.config.pod_dir.join(format!("exec-{conn}.json"));
        // A scratch file for the launcher only: no need for an atomic, synced write.
        let json = serde_json::to_vec(&process).map_err(|e| internal(format!("cannot encode the exec process: {e}")))?;
        std::fs::write(&process_path, json).map_err(|e| internal(format!("cannot write {}: {e}", process_path.display())))?;
        let started = self.launch_exec(conn, &req, &process_path, seccomp);
        let _ = std::fs::remove_file(&process_path);
        remove_tenant_sockets(&self.youki_root().join(&req.id));
        let (pid, stdin, outputs, terminal) = started?;
        let deadline = req.timeout_ms.filter(|ms| *ms > 0).map(|ms| Instant::now() + Duration::from_millis(ms));
        tracing::info!(container_id = %req.id, %pid, args = ?req.args, tty = req.tty, timeout_ms = ?req.timeout_ms, "exec started");
        let exec = Exec {
            container: req.id,
            pid,
            conn: Some(conn),
            stdin: stdin.map(Input::new),
            outputs,
            wanted: (req.stdout, req.stderr),
            terminal,
            deadline,
            timeout_ms: req.timeout_ms.unwrap_or(0),
            timed_out: false,
            exit: None,
        };
        self.execs.insert(conn, exec);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session = Some(Session::Exec);
        }
        Ok(())
    }

    /// Sets up stdio and runs the tenant launcher; returns the pid, the monitor's stdin end,
    /// the outputs and the terminal master.
    fn launch_exec(&self, conn: u64, req: &ExecProcess, process: &std::path::Path, seccomp: launch::TenantSeccomp) -> Result<ExecIo, Failure> {
        let root = self.youki_root();
        if req.tty {
            let name = format!("exec-{conn}.sock");
            let _ = std::fs::remove_file(&name);
            // Bound by name relative to the pod dir (the cwd): absolute paths may be too long.
            let listener = UnixListener::bind(&name).map_err(|e| internal(format!("console socket: {e}")))?;
            let socket = self.config.pod_dir.join(&name);
            let pid = launch::exec(&root, &req.id, process, Stdio::Console { socket }, seccomp);
            let master = pid.as_ref().ok().map(|_| receive_pty(&listener));
            let _ = std::fs::remove_file(&name);
            let pid = pid.map_err(exec_failed)?;
            let terminal = || -> Result<ExecIo, String> {
                let master = master.unwrap_or_else(|| Err("no terminal".into()))?;
                set_nonblocking(master.file.as_raw_fd()).map_err(|e| format!("terminal: {e}"))?;
                let terminal = master.file.try_clone().map_err(|e| format!("terminal: {e}"))?;
                let stdin = req.stdin.then(|| terminal.try_clone()).transpose().map_err(|e| format!("terminal: {e}"))?;
                Ok((pid, stdin, vec![master], Some(terminal)))
            };
            // The process runs already: it must not outlive a set-up that failed.
            return terminal().map_err(|e| {
                kill_group(pid);
                internal(e)
            });
        }
        let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| internal(format!("pipe: {e}")));
        let (stdin_r, stdin_w) = if req.stdin { pipe().map(|(r, w)| (r, Some(File::from(w))))? } else { (dev_null()?, None) };
        let mut outputs = Vec::new();
        let mut out_end = |wanted: bool, stream: Stream| -> Result<OwnedFd, Failure> {
            if !wanted {
                return dev_null();
            }
            let (r, w) = pipe()?;
            outputs.push(output(r, stream));
            Ok(w)
        };
        let stdout = out_end(req.stdout, Stream::Stdout)?;
        let stderr = out_end(req.stderr, Stream::Stderr)?;
        let pid = launch::exec(&root, &req.id, process, Stdio::Pipes { stdin: stdin_r, stdout, stderr }, seccomp);
        let pid = pid.map_err(exec_failed)?;
        for fd in outputs.iter().map(|o| o.file.as_raw_fd()).chain(stdin_w.as_ref().map(|f| f.as_raw_fd())) {
            set_nonblocking(fd).map_err(|e| {
                kill_group(pid);
                internal(format!("exec pipe: {e}"))
            })?;
        }
        Ok((pid, stdin_w, outputs, None))
    }

    /// Reaps an exec'd process; `false` when `pid` is not one.
    pub(super) fn exec_exited(&mut self, pid: Pid, status: WaitStatus) -> bool {
        let Some((&id, exec)) = self.execs.iter_mut().find(|(_, e)| e.pid == pid && e.exit.is_none()) else { return false };
        exec.exit = Some((status, Instant::now()));
        exec.deadline = None;
        tracing::info!(container_id = %exec.container, %pid, ?status, "exec exited");
        // What it wrote last is in the pipes now.
        for index in 0..exec.outputs.len() {
            self.read_exec_output(id, index);
        }
        true
    }

    /// Sends what one exec output has to the daemon (or drops it if not wanted).
    pub(super) fn read_exec_output(&mut self, id: u64, index: usize) {
        use std::io::Read;
        let Some(exec) = self.execs.get_mut(&id) else { return };
        let Some(out) = exec.outputs.get_mut(index) else { return };
        let stream = out.splitter_stream();
        let wanted = if stream == Stream::Stdout { exec.wanted.0 } else { exec.wanted.1 };
        let mut frames = Vec::new();
        let mut buf = vec![0u8; CHUNK];
        // Bounded per wake-up; the rest comes with the next poll.
        for _ in 0..16 {
            match out.file.read(&mut buf) {
                Ok(n) if n > 0 => {
                    if wanted {
                        frames.push(match stream {
                            Stream::Stdout => Frame::Stdout(buf[..n].to_vec()),
                            Stream::Stderr => Frame::Stderr(buf[..n].to_vec()),
                        });
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // End of stream; EIO is how a terminal reports its other side closed.
                _ => {
                    out.closed = true;
                    break;
                }
            }
        }
        if let Some(conn) = exec.conn {
            for frame in frames {
                self.queue(conn, &frame);
            }
        }
    }

    /// Writes pending stdin to an exec'd process.
    pub(super) fn flush_exec_stdin(&mut self, id: u64) {
        if let Some(exec) = self.execs.get_mut(&id)
            && let Some(stdin) = &mut exec.stdin
            && !stdin.flush()
        {
            exec.stdin = None;
        }
    }

    /// A frame from an exec session's daemon.
    pub(super) fn exec_frame(&mut self, id: u64, frame: Frame) {
        let Some(exec) = self.execs.get_mut(&id) else { return };
        match frame {
            Frame::Stdin(data) => {
                if let Some(stdin) = &mut exec.stdin {
                    stdin.pending.extend_from_slice(&data);
                }
            }
            Frame::CloseStdin => {
                if let Some(stdin) = &mut exec.stdin {
                    stdin.close_after = true;
                }
            }
            Frame::Resize { width, height } => {
                if let Some(terminal) = &exec.terminal {
                    resize(terminal, width, height);
                }
            }
            other => tracing::debug!(?other, "ignoring a frame the daemon should not send"),
        }
        self.flush_exec_stdin(id);
    }

    /// Whether an exec's stdin has enough queued that its connection should not be read.
    pub(super) fn exec_input_full(&self, id: u64) -> bool {
        self.execs.get(&id).and_then(|e| e.stdin.as_ref()).is_some_and(|i| i.pending.len() > super::server::BACKLOG)
    }

    /// The daemon closed the session's connection: an exec that still runs is killed.
    pub(super) fn exec_disconnected(&mut self, id: u64) {
        let Some(exec) = self.execs.get_mut(&id) else { return };
        exec.conn = None;
        if exec.exit.is_none() {
            tracing::info!(container_id = %exec.container, pid = %exec.pid, "exec session closed early; killing the process");
            kill_group(exec.pid);
        }
    }

    /// Timeouts of exec'd processes that ran out.
    pub(super) fn fire_exec_deadlines(&mut self, now: Instant) {
        for exec in self.execs.values_mut() {
            if exec.deadline.is_some_and(|d| d <= now) {
                exec.deadline = None;
                exec.timed_out = true;
                tracing::info!(container_id = %exec.container, pid = %exec.pid, timeout_ms = exec.timeout_ms, "exec timed out; killing it");
                kill_group(exec.pid);
            }
        }
    }

    pub(super) fn exec_deadlines(&self) -> impl Iterator<Item = Instant> + '_ {
        self.execs.values().filter_map(|e| e.deadline.or(e.exit.map(|(_, at)| at + DRAIN)))
    }

    /// Ends the sessions of execs that exited and whose output is drained (or took too long).
    pub(super) fn finish_execs(&mut self) {
        let now = Instant::now();
        let done: Vec<u64> = self
            .execs
            .iter()
            .filter(|(_, e)| e.exit.is_some_and(|(_, at)| e.outputs.iter().all(|o| o.closed) || now >= at + DRAIN))
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            let Some(exec) = self.execs.remove(&id) else { continue };
            let Some((status, _)) = exec.exit else { continue };
            let end = if exec.timed_out {
                SessionEnd::TimedOut
            } else {
                SessionEnd::Exited { exit_code: launch::exit_code(status).unwrap_or(255) }
            };
            if let Some(conn) = exec.conn {
                self.queue(conn, &Frame::End(end));
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.closing = true;
                }
            }
        }
    }

    /// At shutdown: every exec is killed and forgotten.
    pub(super) fn kill_execs(&mut self) {
        for exec in self.execs.values().filter(|e| e.exit.is_none()) {
            kill_group(exec.pid);
        }
        self.execs.clear();
    }
}

type ExecIo = (Pid, Option<File>, Vec<Output>, Option<File>);

/// A process that could not be started is the caller's problem more often than ours (no
/// such command, not executable), so it is reported as such.
fn exec_failed(message: String) -> Failure {
    (ErrorCode::FailedPrecondition, format!("cannot exec in the container: {message}"))
}

/// libcontainer's tenant builder leaves its per-exec notify (and console) socket in the
/// container's state dir. Once the launcher is back none of them is in use (the monitor
/// runs one launcher at a time), so they all go.
fn remove_tenant_sockets(state_dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(state_dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("tenant-") && name.ends_with(".sock") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// SIGKILL to the exec'd process' group (it is a session leader), and to itself in case it
/// moved to another group.
fn kill_group(pid: Pid) {
    let _ = nix::sys::signal::killpg(pid, Signal::SIGKILL);
    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
}

/// Sets a terminal's size through its master.
pub(super) fn resize(terminal: &File, width: u16, height: u16) {
    let size = libc::winsize { ws_row: height, ws_col: width, ws_xpixel: 0, ws_ypixel: 0 };
    // Safety: TIOCSWINSZ reads one winsize from the pointer, which outlives the call.
    let rc = unsafe { libc::ioctl(terminal.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "TIOCSWINSZ failed");
    }
}
