//! The monitor's single-threaded event loop: one `poll` over the SIGCHLD pipe, the control
//! socket, the daemon's connections, every container's output and stdin, and the pipes or
//! terminals of exec sessions.
//!
//! A connection carries request lines until an exec or attach turns it into a session
//! (`cri_proto::monitor` docs); session output is queued per connection and written as the
//! socket takes it, so a slow daemon never blocks the loop.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Instant;

use cri_proto::monitor::{ErrorCode, MonitorConfig, MonitorInfo, PROTOCOL_VERSION, Request, Response};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::containers::Ctr;
use super::exec::Exec;
use super::infra::Infra;
use super::signals::ChildSignals;

/// Longest request line accepted; anything longer is a confused client.
const MAX_REQUEST: usize = 1 << 20;

pub struct Monitor {
    pub(super) config: MonitorConfig,
    pub(super) info: MonitorInfo,
    pub(super) infra: Infra,
    pub(super) signals: ChildSignals,
    pub(super) listener: UnixListener,
    pub(super) containers: BTreeMap<String, Ctr>,
    /// Exec sessions by the id of the connection that started them.
    pub(super) execs: BTreeMap<u64, Exec>,
    pub(super) conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    exit: bool,
    /// When the loop, idle since, gives memory back (`trim.rs`); `None` once it has.
    trim_due: Option<Instant>,
}

pub(super) struct Conn {
    stream: UnixStream,
    input: Vec<u8>,
    /// Session bytes not yet taken by the socket.
    pub(super) out: Vec<u8>,
    pub(super) session: Option<Session>,
    /// The session has ended: close once `out` is written.
    pub(super) closing: bool,
}

/// What a connection turned into.
#[derive(Clone, PartialEq, Eq)]
pub(super) enum Session {
    /// An exec, keyed by this connection's id in [`Monitor::execs`].
    Exec,
    /// Attached to this container.
    Attach(String),
}

/// Queued session output beyond which the loop stops reading what produces it.
pub(super) const BACKLOG: usize = 1 << 20;

/// What a poll slot belongs to.
#[derive(Clone)]
enum Slot {
    Signals,
    Listener,
    Conn(u64),
    Output(String, usize),
    Stdin(String),
    ExecOutput(u64, usize),
    ExecStdin(u64),
}

pub(super) type Reply = Result<Option<Response>, (ErrorCode, String)>;

impl Monitor {
    pub fn new(config: MonitorConfig, info: MonitorInfo, infra: Infra, signals: ChildSignals, listener: UnixListener) -> Self {
        Monitor {
            config,
            info,
            infra,
            signals,
            listener,
            containers: BTreeMap::new(),
            execs: BTreeMap::new(),
            conns: BTreeMap::new(),
            next_conn: 0,
            exit: false,
            trim_due: Some(Instant::now() + super::trim::IDLE),
        }
    }

    /// Runs until a `Shutdown` request has been answered.
    pub fn run(mut self) {
        while !self.exit {
            let (slots, ready) = match self.wait() {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "poll failed");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    continue;
                }
            };
            self.fire_deadlines();
            if ready.iter().any(|r| !r.is_empty()) {
                self.trim_due = Some(Instant::now() + super::trim::IDLE);
            } else if self.trim_due.is_some_and(|d| d <= Instant::now()) {
                self.trim_due = None;
                // Nothing after it but the way back to `poll`: whatever runs maps code again.
                tracing::debug!("idle: dropping clean file pages and free heap");
                super::trim::trim();
            }
            for (slot, revents) in slots.into_iter().zip(ready) {
                if revents.is_empty() {
                    continue;
                }
                match slot {
                    Slot::Signals => {
                        self.signals.drain();
                        self.reap();
                    }
                    Slot::Listener => self.accept(),
                    Slot::Conn(id) => {
                        if revents.contains(PollFlags::POLLOUT) {
                            self.flush_conn(id);
                        }
                        if revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                            self.read_conn(id);
                        }
                    }
                    Slot::Output(id, index) => self.pump_output(&id, index),
                    Slot::Stdin(id) => self.flush_container_stdin(&id),
                    Slot::ExecOutput(id, index) => self.read_exec_output(id, index),
                    Slot::ExecStdin(id) => self.flush_exec_stdin(id),
                }
            }
            for ctr in self.containers.values_mut() {
                ctr.outputs.retain(|o| !o.closed);
            }
            self.finish_sessions();
            let done: Vec<u64> = self.conns.iter().filter(|(_, c)| c.closing && c.out.is_empty()).map(|(id, _)| *id).collect();
            for id in done {
                self.drop_conn(id);
            }
        }
        tracing::info!(pod_id = %self.config.pod_id, "monitor exits");
    }

    /// Polls everything; returns the slots and what happened on each.
    fn wait(&self) -> nix::Result<(Vec<Slot>, Vec<PollFlags>)> {
        let mut slots = vec![Slot::Signals, Slot::Listener];
        let mut fds = vec![
            PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
        ];
        for (id, conn) in &self.conns {
            let mut events = PollFlags::empty();
            if !conn.closing && !self.input_full(*id, conn) {
                events |= PollFlags::POLLIN;
            }
            if !conn.out.is_empty() {
                events |= PollFlags::POLLOUT;
            }
            slots.push(Slot::Conn(*id));
            fds.push(PollFd::new(conn.stream.as_fd(), events));
        }
        for (id, ctr) in &self.containers {
            for (index, output) in ctr.outputs.iter().enumerate() {
                slots.push(Slot::Output(id.clone(), index));
                fds.push(PollFd::new(output.file.as_fd(), PollFlags::POLLIN));
            }
            if let Some(stdin) = ctr.stdin.as_ref().filter(|i| !i.pending.is_empty()) {
                slots.push(Slot::Stdin(id.clone()));
                fds.push(PollFd::new(stdin.file.as_fd(), PollFlags::POLLOUT));
            }
        }
        for (id, exec) in &self.execs {
            // Backpressure: a daemon that does not read stops the process' output.
            let backlog = self.conns.get(id).is_some_and(|c| c.out.len() > BACKLOG);
            for (index, output) in exec.outputs.iter().enumerate() {
                if !output.closed && !backlog {
                    slots.push(Slot::ExecOutput(*id, index));
                    fds.push(PollFd::new(output.file.as_fd(), PollFlags::POLLIN));
                }
            }
            if let Some(stdin) = exec.stdin.as_ref().filter(|i| !i.pending.is_empty()) {
                slots.push(Slot::ExecStdin(*id));
                fds.push(PollFd::new(stdin.file.as_fd(), PollFlags::POLLOUT));
            }
        }
        let timeout = self.next_deadline().map_or(PollTimeout::NONE, |d| {
            let ms = d.saturating_duration_since(Instant::now()).as_millis().min(60_000) as u16;
            PollTimeout::from(ms.max(1))
        });
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e),
        }
        let ready = fds.iter().map(|f| f.revents().unwrap_or(PollFlags::empty())).collect();
        Ok((slots, ready))
    }

    fn next_deadline(&self) -> Option<Instant> {
        let stops = self.containers.values().filter_map(|c| c.kill_deadline);
        stops.chain(self.session_deadlines()).chain(self.trim_due).min()
    }

    /// Stop timeouts that ran out: SIGKILL everything in the container's cgroup.
    fn fire_deadlines(&mut self) {
        let now = Instant::now();
        let root = self.youki_root();
        for ctr in self.containers.values_mut() {
            if ctr.kill_deadline.is_some_and(|d| d <= now) {
                ctr.kill_deadline = None;
                tracing::info!(container_id = %ctr.record.id, "stop timeout expired; sending SIGKILL");
                ctr.kill_everything(&root);
            }
        }
        self.fire_exec_deadlines(now);
    }

    /// Collects every child that exited: containers get their exit recorded.
    pub(super) fn reap(&mut self) {
        loop {
            let status = match nix::sys::wait::waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(nix::Error::ECHILD) => return,
                Err(nix::Error::EINTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "waitpid failed");
                    return;
                }
                Ok(status) => status,
            };
            let Some(pid) = status.pid() else { continue };
            if self.infra.pid == Some(pid) {
                tracing::error!(pod_id = %self.config.pod_id, ?status, "the pod infra process died");
                self.infra.pid = None;
                continue;
            }
            if self.exec_exited(pid, status) {
                continue;
            }
            let Some(id) = self.containers.values().find(|c| c.running_pid() == Some(pid)).map(|c| c.record.id.clone()) else {
                tracing::debug!(%pid, ?status, "reaped an orphan");
                continue;
            };
            // Whatever the process wrote before dying is in the pipes: log it first, so a
            // client that sees "exited" also sees the last lines.
            let outputs = self.containers.get(&id).map_or(0, |c| c.outputs.len());
            for index in 0..outputs {
                self.pump_output(&id, index);
            }
            let Some(ctr) = self.containers.get_mut(&id) else { continue };
            let waiters = ctr.exited(status);
            for conn in waiters {
                self.send(conn, &Response::Ok);
            }
            // The exit is recorded (OOM included) and the waiters answered: release the
            // container's youki state and cgroup now, as containerd deletes the task on exit,
            // so RemoveContainer is bookkeeping only. Remove calls it again (a no-op then).
            if let Err(e) = super::launch::delete(&self.youki_root(), &id) {
                tracing::warn!(container_id = %id, error = %e, "cannot release the exited container's runtime state yet");
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = stream.set_nonblocking(true) {
                        tracing::warn!(error = %e, "cannot use a daemon connection");
                        continue;
                    }
                    self.next_conn += 1;
                    let conn = Conn { stream, input: Vec::new(), out: Vec::new(), session: None, closing: false };
                    self.conns.insert(self.next_conn, conn);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    return;
                }
            }
        }
    }

    fn read_conn(&mut self, id: u64) {
        let mut buf = [0u8; 8192];
        let mut closed = false;
        let Some(conn) = self.conns.get_mut(&id) else { return };
        loop {
            match conn.stream.read(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => conn.input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        // One line at a time: a request may turn the rest of the input into frames.
        loop {
            let Some(conn) = self.conns.get_mut(&id) else { return };
            if conn.session.is_some() {
                self.session_input(id);
                break;
            }
            let Some(pos) = conn.input.iter().position(|&b| b == b'\n') else {
                if conn.input.len() > MAX_REQUEST {
                    closed = true;
                }
                break;
            };
            let line = conn.input.drain(..=pos).collect::<Vec<u8>>();
            self.dispatch(id, &line);
        }
        if closed {
            self.drop_conn(id);
        }
    }

    pub(super) fn drop_conn(&mut self, id: u64) {
        let Some(conn) = self.conns.remove(&id) else { return };
        for ctr in self.containers.values_mut() {
            ctr.waiters.retain(|w| *w != id);
        }
        match conn.session {
            Some(Session::Exec) => self.exec_disconnected(id),
            Some(Session::Attach(ctr)) => self.detach(&ctr, id),
            None => {}
        }
    }

    /// Queues a frame for a session connection and writes what the socket takes now.
    pub(super) fn queue(&mut self, conn: u64, frame: &cri_proto::monitor::frame::Frame) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        frame.encode(&mut c.out);
        self.flush_conn(conn);
    }

    /// Writes queued session bytes without blocking; a broken connection is dropped.
    pub(super) fn flush_conn(&mut self, id: u64) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        while !conn.out.is_empty() {
            match conn.stream.write(&conn.out) {
                Ok(n) => {
                    conn.out.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.drop_conn(id);
                    return;
                }
            }
        }
    }

    fn dispatch(&mut self, conn: u64, line: &[u8]) {
        let reply = match serde_json::from_slice::<Request>(line) {
            Ok(request) => {
                tracing::debug!(?request, "request");
                self.handle(conn, request)
            }
            Err(e) => Err((ErrorCode::InvalidArgument, format!("unknown or malformed request: {e}"))),
        };
        match reply {
            Ok(Some(response)) => self.send(conn, &response),
            Ok(None) => {}
            Err((code, message)) => {
                tracing::warn!(?code, %message, "request failed");
                self.send(conn, &Response::Error { code, message });
            }
        }
    }

    fn handle(&mut self, conn: u64, request: Request) -> Reply {
        match request {
            Request::Ping => Ok(Some(Response::Pong { version: PROTOCOL_VERSION, info: self.info.clone() })),
            Request::Create(create) => self.create(create).map(|r| Some(Response::Container(r))),
            Request::Start { id } => self.start(&id).map(|r| Some(Response::Container(r))),
            Request::Stop { id, signal, timeout_ms } => self.stop(conn, &id, signal, timeout_ms),
            Request::Remove { id } => self.remove(&id).map(|()| Some(Response::Ok)),
            Request::Status { id } => {
                let ctr = self.containers.get(&id).ok_or_else(|| not_found(&id))?;
                Ok(Some(Response::Container(ctr.record.clone())))
            }
            Request::ReopenLog { id } => {
                let ctr = self.containers.get_mut(&id).ok_or_else(|| not_found(&id))?;
                ctr.log.reopen().map_err(|e| (ErrorCode::Internal, format!("cannot reopen the log: {e}")))?;
                Ok(Some(Response::Ok))
            }
            Request::Shutdown => {
                self.shutdown();
                self.exit = true;
                Ok(Some(Response::Ok))
            }
            Request::Exec(exec) => self.exec(conn, exec).map(|()| Some(Response::Ok)),
            Request::Attach(attach) => self.attach(conn, attach).map(|()| Some(Response::Ok)),
        }
    }

    /// Writes one response line; a daemon that went away just loses it.
    pub(super) fn send(&mut self, conn: u64, response: &Response) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let mut line = match serde_json::to_vec(response) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a response");
                return;
            }
        };
        line.push(b'\n');
        // Responses are small; a full socket buffer means the daemon is stuck, so give it
        // a moment in blocking mode and then give up on the connection.
        let _ = c.stream.set_nonblocking(false);
        let _ = c.stream.set_write_timeout(Some(std::time::Duration::from_secs(2)));
        let ok = c.stream.write_all(&line).is_ok();
        let _ = c.stream.set_nonblocking(true);
        if !ok {
            self.drop_conn(conn);
        }
    }

    /// Frames from a session's daemon, as far as they have arrived.
    fn session_input(&mut self, id: u64) {
        use cri_proto::monitor::frame::Frame;
        loop {
            let Some(conn) = self.conns.get_mut(&id) else { return };
            let Some(session) = conn.session.clone() else { return };
            let frame = match Frame::decode(&conn.input) {
                Ok(Some((frame, used))) => {
                    conn.input.drain(..used);
                    frame
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "bad frame from the daemon; closing the session");
                    self.drop_conn(id);
                    return;
                }
            };
            match session {
                Session::Exec => self.exec_frame(id, frame),
                Session::Attach(ctr) => self.attach_frame(&ctr, id, frame),
            }
        }
    }

    fn input_full(&self, id: u64, conn: &Conn) -> bool {
        match &conn.session {
            Some(Session::Exec) => self.exec_input_full(id),
            Some(Session::Attach(ctr)) => self.attach_input_full(ctr),
            None => false,
        }
    }

    fn session_deadlines(&self) -> impl Iterator<Item = Instant> + '_ {
        self.exec_deadlines().chain(self.attach_deadlines())
    }

    fn finish_sessions(&mut self) {
        self.finish_execs();
        self.finish_attaches();
    }

    pub(super) fn youki_root(&self) -> std::path::PathBuf {
        self.config.pod_dir.join("youki")
    }
}

pub(super) fn not_found(id: &str) -> (ErrorCode, String) {
    (ErrorCode::NotFound, format!("container {id:?} not found in this pod's monitor"))
}
