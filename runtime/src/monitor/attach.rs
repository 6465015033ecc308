//! Attach sessions: a connection that receives a running container's output as it is
//! logged and feeds its stdin (the pipe or terminal the monitor holds for containers
//! created with CRI `stdin`). The log gets everything either way; several sessions may be
//! attached at once. An attach ends when the container has exited and its output is drained.

use std::time::{Duration, Instant};

use cri_proto::monitor::frame::{CHUNK, Frame};
use cri_proto::monitor::{AttachStreams, ContainerPhase, ErrorCode, SessionEnd};

use super::containers::Failure;
use super::logs::Stream;
use super::server::{BACKLOG, Monitor, Session, not_found};

/// How long after the container's exit an attach waits for the last output.
const DRAIN: Duration = Duration::from_millis(500);
/// Output queued for an attached daemon beyond which it is detached: the container must
/// not wait for a slow client, and its log has everything.
const ATTACH_BACKLOG: usize = 8 * BACKLOG;

pub struct Attached {
    pub conn: u64,
    stdin: bool,
    stdout: bool,
    stderr: bool,
}

impl Monitor {
    pub(super) fn attach(&mut self, conn: u64, req: AttachStreams) -> Result<(), Failure> {
        let ctr = self.containers.get_mut(&req.id).ok_or_else(|| not_found(&req.id))?;
        if ctr.record.phase != ContainerPhase::Running {
            return Err((ErrorCode::FailedPrecondition, format!("container {:?} is not running", req.id)));
        }
        if req.tty != ctr.tty {
            let has = if ctr.tty { "has" } else { "has no" };
            return Err((ErrorCode::InvalidArgument, format!("container {:?} {has} terminal; attach with tty={}", req.id, ctr.tty)));
        }
        // Without a stdin of its own (CRI stdin=false, or closed by stdin_once) the session's
        // stdin goes nowhere.
        let stdin = req.stdin && ctr.stdin.is_some();
        ctr.attached.push(Attached { conn, stdin, stdout: req.stdout, stderr: req.stderr && !ctr.tty });
        tracing::info!(container_id = %req.id, stdin, stdout = req.stdout, stderr = req.stderr, "attached");
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session = Some(Session::Attach(req.id));
        }
        Ok(())
    }

    /// Logs what one container output has and copies it to the attached sessions.
    pub(super) fn pump_output(&mut self, id: &str, index: usize) {
        let Some(ctr) = self.containers.get_mut(id) else { return };
        let (stream, data) = ctr.read_output(index);
        if data.is_empty() {
            return;
        }
        let targets: Vec<u64> = ctr
            .attached
            .iter()
            .filter(|a| if stream == Stream::Stdout { a.stdout } else { a.stderr })
            .map(|a| a.conn)
            .collect();
        for conn in targets {
            for chunk in data.chunks(CHUNK) {
                let frame = match stream {
                    Stream::Stdout => Frame::Stdout(chunk.to_vec()),
                    Stream::Stderr => Frame::Stderr(chunk.to_vec()),
                };
                self.queue(conn, &frame);
            }
            if self.conns.get(&conn).is_some_and(|c| c.out.len() > ATTACH_BACKLOG) {
                tracing::warn!(container_id = %id, "an attached client does not read; detaching it");
                self.drop_conn(conn);
            }
        }
    }

    /// Writes pending attach input to the container's stdin.
    pub(super) fn flush_container_stdin(&mut self, id: &str) {
        if let Some(ctr) = self.containers.get_mut(id)
            && let Some(stdin) = &mut ctr.stdin
            && !stdin.flush()
        {
            tracing::info!(container_id = %id, "container stdin closed");
            ctr.stdin = None;
        }
    }

    /// A frame from an attached daemon.
    pub(super) fn attach_frame(&mut self, id: &str, conn: u64, frame: Frame) {
        let Some(ctr) = self.containers.get_mut(id) else { return };
        let Some(attached) = ctr.attached.iter().find(|a| a.conn == conn) else { return };
        match frame {
            Frame::Stdin(data) if attached.stdin => {
                if let Some(stdin) = &mut ctr.stdin {
                    stdin.pending.extend_from_slice(&data);
                }
            }
            // Closing one session's stdin only closes the container's with stdin_once:
            // otherwise a later attach may go on writing.
            Frame::CloseStdin if attached.stdin && ctr.stdin_once => {
                if let Some(stdin) = &mut ctr.stdin {
                    stdin.close_after = true;
                }
            }
            Frame::Resize { width, height } if ctr.tty => {
                if let Some(terminal) = ctr.outputs.first() {
                    super::exec::resize(&terminal.file, width, height);
                }
            }
            _ => {}
        }
        self.flush_container_stdin(id);
    }

    /// Whether the container's stdin has enough queued that the connection should wait.
    pub(super) fn attach_input_full(&self, id: &str) -> bool {
        self.containers.get(id).and_then(|c| c.stdin.as_ref()).is_some_and(|i| i.pending.len() > BACKLOG)
    }

    /// A session's connection closed; with `stdin_once` the container's stdin closes with the
    /// first session that could write to it.
    pub(super) fn detach(&mut self, id: &str, conn: u64) {
        let Some(ctr) = self.containers.get_mut(id) else { return };
        let Some(pos) = ctr.attached.iter().position(|a| a.conn == conn) else { return };
        let attached = ctr.attached.remove(pos);
        tracing::info!(container_id = %id, "detached");
        if attached.stdin && ctr.stdin_once {
            if let Some(stdin) = &mut ctr.stdin {
                stdin.close_after = true;
            }
            self.flush_container_stdin(id);
        }
    }

    /// Ends every session attached to a container with its exit.
    pub(super) fn end_attaches(&mut self, id: &str) {
        let Some(ctr) = self.containers.get_mut(id) else { return };
        let end = match ctr.record.phase {
            ContainerPhase::Exited => SessionEnd::Exited { exit_code: ctr.record.exit_code },
            _ => SessionEnd::Failed { message: "the container went away".into() },
        };
        for attached in std::mem::take(&mut ctr.attached) {
            self.queue(attached.conn, &Frame::End(end.clone()));
            if let Some(c) = self.conns.get_mut(&attached.conn) {
                c.closing = true;
            }
        }
    }

    /// Ends the attaches of containers that exited and whose output is drained.
    pub(super) fn finish_attaches(&mut self) {
        let now = crate::id::now_nanos();
        let done: Vec<String> = self
            .containers
            .values()
            .filter(|c| !c.attached.is_empty() && c.record.phase == ContainerPhase::Exited)
            .filter(|c| c.outputs.is_empty() || now >= c.record.finished_at + DRAIN.as_nanos() as i64)
            .map(|c| c.record.id.clone())
            .collect();
        for id in done {
            self.end_attaches(&id);
        }
    }

    pub(super) fn attach_deadlines(&self) -> impl Iterator<Item = Instant> + '_ {
        let now = crate::id::now_nanos();
        self.containers
            .values()
            .filter(|c| !c.attached.is_empty() && c.record.phase == ContainerPhase::Exited)
            .map(move |c| {
                let left = (c.record.finished_at + DRAIN.as_nanos() as i64 - now).max(0);
                Instant::now() + Duration::from_nanos(left as u64)
            })
    }
}
