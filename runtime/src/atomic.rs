//! Crash-safe record files: write to a temp file in the same directory, rename it over the
//! old one. A crash of the daemon leaves the old or the new record, never a torn one.
//!
//! Two strengths. [`write_file`]/[`write_json`] also fsync the file and the directory, so
//! the record survives a power loss: image content, pod records (they own IP reservations
//! and network set-up that outlive a reboot). [`replace_file`]/[`replace_json`] skip the
//! fsyncs, for state that means nothing after a reboot (a container's record and status,
//! a monitor's files, a rootfs hold: no container survives a reboot, and start-up recovery
//! removes what a lost or empty record leaves behind). The page cache survives a daemon
//! crash, so both are equally safe against that; the fsyncs were most of CreateContainer.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Replaces `path` with `data` atomically and durably (mode 0600).
pub fn write_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write(path, data, true)
}

/// Replaces `path` with `data` atomically, not durably (mode 0600).
pub fn replace_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write(path, data, false)
}

fn write(path: &Path, data: &[u8], durable: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // pid + counter: concurrent writers (threads or processes) never share a temp file.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{seq}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)?;
        file.write_all(data)?;
        if durable {
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if durable {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Serialises `value` as pretty JSON and writes it atomically and durably.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let data = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    write_file(path, &data)
}

/// Serialises `value` as pretty JSON and writes it atomically, not durably.
pub fn replace_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let data = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    replace_file(path, &data)
}

/// Reads a JSON record; a malformed file is `InvalidData` naming the parse error.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> std::io::Result<T> {
    let data = std::fs::read(path)?;
    serde_json::from_slice(&data).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        write_json(&path, &vec![1, 2]).unwrap();
        write_json(&path, &vec![3]).unwrap();
        assert_eq!(read_json::<Vec<i32>>(&path).unwrap(), vec![3]);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("r.json")]);
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(read_json::<Vec<i32>>(&path).unwrap_err().kind(), std::io::ErrorKind::InvalidData);
    }
}
