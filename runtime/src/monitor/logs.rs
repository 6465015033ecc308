//! The CRI container log format kubelet reads (`kubectl logs`):
//!
//! ```text
//! 2024-05-01T10:00:00.123456789Z stdout F a whole line
//! 2024-05-01T10:00:00.123456789Z stderr P the first part of a long line…
//! ```
//!
//! `F` ends a line (its newline is not written), `P` is a piece of a line that continues in
//! the next record of the same stream: a line longer than [`MAX_LINE`], or output that ended
//! without a newline.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Longest piece written as one record, like containerd's default (16 KiB).
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Splits one stream's bytes into records; keeps the unfinished line between reads.
#[derive(Debug)]
pub struct LineSplitter {
    stream: Stream,
    pending: Vec<u8>,
}

impl LineSplitter {
    pub fn new(stream: Stream) -> Self {
        LineSplitter { stream, pending: Vec::new() }
    }

    pub fn stream(&self) -> Stream {
        self.stream
    }

    /// Appends the records `data` completes to `out`, stamped with `timestamp`.
    pub fn push(&mut self, data: &[u8], timestamp: &str, out: &mut Vec<u8>) {
        self.pending.extend_from_slice(data);
        let mut start = 0;
        while let Some(pos) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos;
            // A line longer than MAX_LINE goes out in MAX_LINE pieces, the last one full.
            let mut piece = start;
            while end - piece > MAX_LINE {
                record(out, timestamp, self.stream, 'P', &self.pending[piece..piece + MAX_LINE]);
                piece += MAX_LINE;
            }
            record(out, timestamp, self.stream, 'F', &self.pending[piece..end]);
            start = end + 1;
        }
        while self.pending.len() - start >= MAX_LINE {
            record(out, timestamp, self.stream, 'P', &self.pending[start..start + MAX_LINE]);
            start += MAX_LINE;
        }
        self.pending.drain(..start);
    }

    /// At end of stream: output without a final newline is written as a partial record,
    /// so the log reproduces the bytes exactly.
    pub fn finish(&mut self, timestamp: &str, out: &mut Vec<u8>) {
        if !self.pending.is_empty() {
            record(out, timestamp, self.stream, 'P', &self.pending);
            self.pending.clear();
        }
    }
}

fn record(out: &mut Vec<u8>, timestamp: &str, stream: Stream, tag: char, msg: &[u8]) {
    out.extend_from_slice(timestamp.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.name().as_bytes());
    out.push(b' ');
    out.push(tag as u8);
    out.push(b' ');
    out.extend_from_slice(msg);
    out.push(b'\n');
}

/// RFC 3339 with nanoseconds in UTC, fixed width so records sort as text.
pub fn timestamp_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// A container's log file, opened for appending; reopened after kubelet rotates it.
#[derive(Debug)]
pub struct LogFile {
    path: Option<PathBuf>,
    file: Option<File>,
    /// The file's length as far as we wrote it, to cut off a record a failed write tore.
    len: u64,
    /// Bytes of records lost since writes started failing (a full disk), for one warning
    /// when it starts and one when it ends instead of one per line.
    lost: u64,
}

impl LogFile {
    /// Opens (creating it and its parent directories) `path`; `None` discards output.
    pub fn open(path: Option<&Path>) -> std::io::Result<Self> {
        let mut log = LogFile { path: path.map(Path::to_path_buf), file: None, len: 0, lost: 0 };
        log.reopen()?;
        Ok(log)
    }

    pub fn reopen(&mut self) -> std::io::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(path)?;
        self.len = file.metadata()?.len();
        self.file = Some(file);
        Ok(())
    }

    /// Writes whole records at once (O_APPEND keeps records from interleaving). A full disk
    /// must not stop the container: its records are dropped, a torn one is cut off so the
    /// file stays parseable, and logging resumes by itself once there is space again.
    pub fn write(&mut self, records: &[u8]) {
        if records.is_empty() {
            return;
        }
        let Some(file) = &mut self.file else { return };
        match file.write_all(records) {
            Ok(()) => {
                self.len += records.len() as u64;
                if self.lost > 0 {
                    tracing::warn!(path = ?self.path, lost_bytes = self.lost, "container log writable again; records were lost while it was not");
                    self.lost = 0;
                }
            }
            Err(e) => {
                if let Err(cut) = file.set_len(self.len) {
                    tracing::debug!(path = ?self.path, error = %cut, "cannot cut off a torn log record");
                }
                if self.lost == 0 {
                    tracing::warn!(path = ?self.path, error = %e, "cannot write container log; dropping records until it can");
                }
                self.lost += records.len() as u64;
            }
        }
    }

    /// Bytes of records dropped since writes last succeeded.
    pub fn lost_bytes(&self) -> u64 {
        self.lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(out: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(out).lines().map(str::to_string).collect()
    }

    #[test]
    fn a_failing_disk_drops_records_without_stopping() {
        // /dev/full fails every write with ENOSPC, as a full filesystem does.
        let mut log = LogFile::open(Some(Path::new("/dev/full"))).unwrap();
        log.write(b"T stdout F one\n");
        log.write(b"T stdout F two\n");
        assert_eq!(log.lost_bytes(), 30);
    }

    #[test]
    fn whole_lines_are_full_records_and_pieces_wait() {
        let mut s = LineSplitter::new(Stream::Stdout);
        let mut out = Vec::new();
        s.push(b"hello\nwor", "T", &mut out);
        assert_eq!(lines(&out), vec!["T stdout F hello"]);
        out.clear();
        s.push(b"ld\n\n", "T2", &mut out);
        assert_eq!(lines(&out), vec!["T2 stdout F world", "T2 stdout F "]);
        out.clear();
        s.push(b"no newline", "T3", &mut out);
        assert!(out.is_empty());
        s.finish("T4", &mut out);
        assert_eq!(lines(&out), vec!["T4 stdout P no newline"]);
    }

    #[test]
    fn long_lines_are_split_into_partial_records() {
        let mut s = LineSplitter::new(Stream::Stderr);
        let mut out = Vec::new();
        let mut data = vec![b'a'; MAX_LINE * 2 + 5];
        data.push(b'\n');
        s.push(&data, "T", &mut out);
        let got = lines(&out);
        assert_eq!(got.len(), 3);
        assert!(got[0].starts_with("T stderr P aaa") && got[0].len() == "T stderr P ".len() + MAX_LINE);
        assert!(got[1].starts_with("T stderr P "));
        assert_eq!(got[2], "T stderr F aaaaa");
        // Without a newline, a full piece is written as soon as it is complete.
        out.clear();
        s.push(&vec![b'b'; MAX_LINE + 1], "U", &mut out);
        assert_eq!(lines(&out).len(), 1);
        s.finish("V", &mut out);
        assert_eq!(lines(&out)[1], "V stderr P b");
    }

    #[test]
    fn timestamps_are_rfc3339_nanos() {
        let ts = timestamp_now();
        assert_eq!(ts.len(), "2024-05-01T10:00:00.123456789Z".len(), "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
        assert!(chrono::DateTime::parse_from_rfc3339(&ts).is_ok());
    }
}
