//! The daemon's side of an exec or attach session: the monitor's frames become the
//! [`Session`] the streaming server works with.
//!
//! Two tasks per session: one reads frames and feeds stdout/stderr pipes until the end
//! frame, one turns stdin and resizes into frames. The connection is closed when the
//! session ended or when its `end` future was dropped, which the monitor takes as the
//! daemon going away: an exec is killed, an attach detaches.

use cri_proto::monitor::SessionEnd as WireEnd;
use cri_proto::monitor::frame::{CHUNK, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot};

use super::client::{SessionReader, read_frame, write_frame};
use crate::streaming::{Session, SessionEnd, StreamOptions, TerminalSize};

/// Bytes buffered between the monitor's connection and the session's pipes.
const PIPE: usize = 256 * 1024;

/// Builds the session for a connection the monitor has accepted a session on.
pub fn start(reader: SessionReader, writer: OwnedWriteHalf, options: StreamOptions) -> Session {
    let pipe = |wanted: bool| wanted.then(|| tokio::io::duplex(PIPE)).unzip();
    let (stdout_user, stdout_ours) = pipe(options.stdout);
    let (stderr_user, stderr_ours) = pipe(options.stderr && !options.tty);
    let (stdin_user, stdin_ours) = pipe(options.stdin);
    let (resize_tx, resize_rx) = options.tty.then(mpsc::unbounded_channel::<TerminalSize>).unzip();
    let (end_tx, end_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    tokio::spawn(read_frames(reader, stdout_ours, stderr_ours, end_tx, done_tx));
    tokio::spawn(write_frames(writer, stdin_ours, resize_rx, done_rx));
    Session {
        stdin: stdin_user.map(|s| Box::new(s) as _),
        stdout: stdout_user.map(|s| Box::new(s) as _),
        stderr: stderr_user.map(|s| Box::new(s) as _),
        resize: resize_tx,
        end: Box::pin(async move { end_rx.await.unwrap_or_else(|_| SessionEnd::Failed("the session task ended".into())) }),
    }
}

/// Monitor → pipes, until the end frame; then the session's end.
async fn read_frames(
    mut reader: SessionReader,
    mut stdout: Option<DuplexStream>,
    mut stderr: Option<DuplexStream>,
    mut end_tx: oneshot::Sender<SessionEnd>,
    _done: oneshot::Sender<()>,
) {
    let end = loop {
        let frame = tokio::select! {
            frame = read_frame(&mut reader) => frame,
            // Nobody waits for the end any more: close the connection.
            () = end_tx.closed() => return,
        };
        let (pipe, data) = match frame {
            Ok(Some(Frame::Stdout(data))) => (&mut stdout, data),
            Ok(Some(Frame::Stderr(data))) => (&mut stderr, data),
            Ok(Some(Frame::End(end))) => break end,
            Ok(Some(_)) => continue,
            Ok(None) => break WireEnd::Failed { message: "the pod monitor closed the session".into() },
            Err(e) => break WireEnd::Failed { message: e.to_string() },
        };
        // A reader that went away just stops getting output; the process goes on.
        if let Some(p) = pipe
            && p.write_all(&data).await.is_err()
        {
            *pipe = None;
        }
    };
    // EOF on the pipes first, so readers have all output when the end arrives.
    drop((stdout, stderr));
    let _ = end_tx.send(match end {
        WireEnd::Exited { exit_code } => SessionEnd::Exited(exit_code),
        WireEnd::TimedOut => SessionEnd::Failed("timed out".into()),
        WireEnd::Failed { message } => SessionEnd::Failed(message),
    });
}

/// stdin and resizes → monitor, until the reader is done (the writer must live until then:
/// closing it would end the session).
async fn write_frames(
    mut writer: OwnedWriteHalf,
    mut stdin: Option<DuplexStream>,
    mut resize: Option<mpsc::UnboundedReceiver<TerminalSize>>,
    mut done: oneshot::Receiver<()>,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let frame = tokio::select! {
            _ = &mut done => return,
            n = read_some(&mut stdin, &mut buf), if stdin.is_some() => match n {
                0 => {
                    stdin = None;
                    Frame::CloseStdin
                }
                n => Frame::Stdin(buf[..n].to_vec()),
            },
            size = recv(&mut resize), if resize.is_some() => match size {
                Some(s) => Frame::Resize { width: s.width, height: s.height },
                None => {
                    resize = None;
                    continue;
                }
            },
        };
        if write_frame(&mut writer, &frame).await.is_err() {
            // The monitor is gone; the reader reports it.
            let _ = done.await;
            return;
        }
    }
}

/// Reads stdin; 0 at its end (the session's stdin was dropped) or on error.
async fn read_some(stdin: &mut Option<DuplexStream>, buf: &mut [u8]) -> usize {
    match stdin {
        Some(s) => s.read(buf).await.unwrap_or(0),
        None => std::future::pending().await,
    }
}

async fn recv(rx: &mut Option<mpsc::UnboundedReceiver<TerminalSize>>) -> Option<TerminalSize> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
