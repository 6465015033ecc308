//! One layer from bytes to committed blob and snapshot, in a blocking thread.
//!
//! The bytes come from the network (a channel fed by the async download) or from the blob
//! already on disk. In one pass they are hashed, written to an ingest file, decompressed,
//! hashed again (the diff id) and unpacked into a temporary snapshot directory. Only when
//! both digests match are the blob and the snapshot renamed into place; anything else
//! leaves nothing behind.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use sha2::{Digest, Sha256};

use super::store::{LayerRecord, Store, Usage, remove_tree, unique_suffix};
use super::unpack::{self, UnpackError};
use crate::{Error, Result};

/// Where a layer's bytes come from.
pub(crate) enum Source {
    /// Chunks from the download; an `Err` ends the stream with that error.
    Channel(tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>),
    /// The verified blob in the store.
    Blob(PathBuf),
}

/// What to produce from the bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wanted {
    pub blob: bool,
    pub snapshot: bool,
}

/// Reads, verifies and commits one layer. `origin` names where the bytes came from, for
/// error messages.
pub(crate) fn process(store: &Arc<Store>, layer: &LayerRecord, source: Source, wanted: Wanted, origin: &str) -> Result<()> {
    let (reader, ingest): (Box<dyn Read + Send>, Option<(PathBuf, File)>) = match source {
        Source::Channel(rx) => {
            let path = store.ingest_dir().join(format!("{}-{}", hex_of(&layer.digest), unique_suffix()));
            let file = File::create(&path).map_err(Error::io("cannot create", &path))?;
            (Box::new(ChannelReader { rx, buf: Bytes::new() }), Some((path, file)))
        }
        Source::Blob(path) => (Box::new(File::open(&path).map_err(Error::io("cannot open blob", &path))?), None),
    };
    let mut tee = Tee { inner: reader, out: ingest, hasher: Sha256::new(), count: 0, limit: layer.size, write_error: None };
    let result = run(store, layer, &mut tee, wanted, origin);
    if let Some((path, _)) = &tee.out {
        // Still there: the job failed before committing it.
        let _ = std::fs::remove_file(path);
    }
    result
}

fn run(store: &Arc<Store>, layer: &LayerRecord, tee: &mut Tee, wanted: Wanted, origin: &str) -> Result<()> {
    let tmp = store.snapshots_dir().join(format!(".tmp-{}-{}", hex_of(&layer.diff_id), unique_suffix()));
    let unpacked = if wanted.snapshot {
        std::fs::create_dir_all(tmp.join("fs")).map_err(Error::io("cannot create", &tmp))?;
        Some(unpack_from(tee, &tmp.join("fs")))
    } else {
        None
    };
    // Every byte goes through the hash, whatever the unpack made of them.
    let drained = std::io::copy(tee, &mut std::io::sink());
    let outcome = verify(layer, tee, drained, unpacked, origin);
    if outcome.is_err() || !wanted.snapshot {
        let _ = remove_tree(&tmp);
    }
    outcome?;
    if let Some((from, file)) = &mut tee.out {
        let path = store.blob_path(&layer.digest)?;
        file.flush().and_then(|()| file.sync_all()).map_err(Error::io("cannot write blob", &path))?;
        std::fs::rename(&*from, &path).map_err(Error::io("cannot commit blob", &path))?;
        tee.out = None;
    }
    if wanted.snapshot {
        commit_snapshot(store, layer, &tmp)?;
    }
    Ok(())
}

/// Decompresses and unpacks, returning the diff id of what was read.
fn unpack_from(tee: &mut Tee, dest: &Path) -> Result<String, UnpackError> {
    let decompressed = unpack::decompressor(&mut *tee).map_err(UnpackError::Read)?;
    let mut hashed = HashReader { inner: decompressed, hasher: Sha256::new() };
    unpack::extract(&mut hashed, dest)?;
    Ok(format!("sha256:{}", hex::encode(hashed.hasher.finalize())))
}

/// Blob digest and size first (a corrupt download explains any unpack failure), then the
/// unpack result, then the diff id.
fn verify(
    layer: &LayerRecord,
    tee: &mut Tee,
    drained: std::io::Result<u64>,
    unpacked: Option<Result<String, UnpackError>>,
    origin: &str,
) -> Result<()> {
    let what = format!("layer {}", layer.digest);
    // Our own disk failing (full, quota) explains everything after it, and is not the
    // registry's fault: it is reported as the I/O error it is (ResourceExhausted on ENOSPC).
    if let Some((e, path)) = tee.write_error.take() {
        return Err(Error::Io { context: "cannot write the download of a layer to", path, source: e });
    }
    if let Some(Err(UnpackError::Write { entry, source })) = unpacked {
        return Err(Error::Io { context: "cannot unpack a layer: writing entry", path: entry.into(), source });
    }
    if tee.count > layer.size {
        return Err(Error::Unavailable(format!(
            "{what} from {origin} is larger than the {} bytes the manifest declares; refusing it",
            layer.size
        )));
    }
    if let Err(e) = drained {
        return Err(Error::Unavailable(format!("cannot download {what} from {origin}: {e}")));
    }
    if tee.count != layer.size {
        return Err(Error::Unavailable(format!(
            "{what} from {origin} is {} bytes, but the manifest says {}; refusing it",
            tee.count, layer.size
        )));
    }
    let actual = format!("sha256:{}", hex::encode(tee.hasher.clone().finalize()));
    if actual != layer.digest {
        return Err(Error::Unavailable(format!(
            "{what} from {origin} is corrupt: its content hashes to {actual}; refusing it"
        )));
    }
    match unpacked {
        None => Ok(()),
        Some(Err(e @ UnpackError::Escape { .. })) => Err(Error::InvalidArgument(format!("{what}: {e}"))),
        Some(Err(e)) => Err(Error::InvalidArgument(format!("{what} is not a valid layer: {e}"))),
        Some(Ok(diff_id)) if diff_id != layer.diff_id => Err(Error::InvalidArgument(format!(
            "{what} unpacks to {diff_id}, but the image config says {}; refusing it",
            layer.diff_id
        ))),
        Some(Ok(_)) => Ok(()),
    }
}

/// Makes the unpacked snapshot durable and visible under its name, with its short link.
fn commit_snapshot(store: &Arc<Store>, layer: &LayerRecord, tmp: &Path) -> Result<()> {
    let usage: Usage = unpack::disk_usage(&tmp.join("fs"));
    crate::atomic::write_json(&tmp.join("usage.json"), &usage).map_err(Error::io("cannot write", tmp))?;
    // One syncfs instead of an fsync per file: the snapshot is durable before it is named.
    let dir = File::open(tmp).map_err(Error::io("cannot open", tmp))?;
    nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)).map_err(|e| Error::Io {
        context: "cannot sync",
        path: tmp.to_path_buf(),
        source: e.into(),
    })?;
    let final_dir = store.snapshot_dir(&layer.diff_id)?;
    match nix::fcntl::renameat2(None, tmp, None, &final_dir, nix::fcntl::RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => {}
        // Another pull committed the same layer first: same content, keep theirs.
        Err(nix::Error::EEXIST) | Err(nix::Error::ENOTEMPTY) => {
            remove_tree(tmp)?;
        }
        Err(e) => {
            let _ = remove_tree(tmp);
            return Err(Error::Io { context: "cannot commit snapshot", path: final_dir, source: e.into() });
        }
    }
    let link = store.snapshots_dir().join(Store::snapshot_link(&layer.diff_id)?);
    let target = format!("../{}/fs", hex_of(&layer.diff_id));
    match std::os::unix::fs::symlink(&target, &link) {
        Ok(()) => {}
        // Already there (ours, or a 64-bit prefix collision that mounts then avoid).
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::Io { context: "cannot link snapshot", path: link, source: e }),
    }
    if let Ok(dir) = File::open(store.snapshots_dir()) {
        let _ = dir.sync_all();
    }
    store.snapshot_committed(&layer.diff_id, usage);
    Ok(())
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// Passes bytes through, hashing them, copying them to the ingest file and refusing more
/// than the manifest declared (a registry must not fill the disk).
struct Tee {
    inner: Box<dyn Read + Send>,
    /// The ingest file and its path, until committed.
    out: Option<(PathBuf, File)>,
    hasher: Sha256,
    count: u64,
    limit: u64,
    /// Why writing the ingest file failed (kept: the reader above only sees "read failed").
    write_error: Option<(std::io::Error, PathBuf)>,
}

impl Read for Tee {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.limit {
            return Err(std::io::Error::other(format!("more than the {} bytes the manifest declares", self.limit)));
        }
        self.hasher.update(&buf[..n]);
        if let Some((path, out)) = &mut self.out
            && let Err(e) = out.write_all(&buf[..n])
        {
            let kind = e.kind();
            self.write_error = Some((e, path.clone()));
            return Err(std::io::Error::new(kind, "cannot write the ingest file"));
        }
        Ok(n)
    }
}

struct HashReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The blocking end of the download channel.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    buf: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.buf = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf.advance(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer_of(tar: &[u8], gz: &[u8]) -> LayerRecord {
        LayerRecord {
            digest: format!("sha256:{}", hex::encode(Sha256::digest(gz))),
            diff_id: format!("sha256:{}", hex::encode(Sha256::digest(tar))),
            size: gz.len() as u64,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        }
    }

    fn sample() -> (Vec<u8>, Vec<u8>) {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, "etc/hello", &b"hi\n"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        (tar.clone(), gz.finish().unwrap())
    }

    fn channel_of(data: Vec<u8>) -> Source {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        for chunk in data.chunks(7) {
            tx.try_send(Ok(Bytes::copy_from_slice(chunk))).ok();
        }
        // Channel capacity is small: feed the rest from a thread.
        let rest: Vec<Vec<u8>> = data.chunks(7).skip(4).map(<[u8]>::to_vec).collect();
        std::thread::spawn(move || {
            for c in rest {
                if tx.blocking_send(Ok(Bytes::from(c))).is_err() {
                    break;
                }
            }
        });
        Source::Channel(rx)
    }

    #[test]
    fn download_commits_blob_and_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let (tar, gz) = sample();
        let layer = layer_of(&tar, &gz);
        process(&store, &layer, channel_of(gz.clone()), Wanted { blob: true, snapshot: true }, "test").unwrap();
        assert_eq!(std::fs::read(store.blob_path(&layer.digest).unwrap()).unwrap(), gz);
        let fs = store.snapshot_dir(&layer.diff_id).unwrap().join("fs");
        assert_eq!(std::fs::read(fs.join("etc/hello")).unwrap(), b"hi\n");
        let link = store.snapshots_dir().join(Store::snapshot_link(&layer.diff_id).unwrap());
        assert_eq!(std::fs::canonicalize(link).unwrap(), std::fs::canonicalize(&fs).unwrap());
        assert_eq!(std::fs::read_dir(store.ingest_dir()).unwrap().count(), 0);
        // Unpacking again from the stored blob (snapshot lost) works and is idempotent.
        remove_tree(&store.snapshot_dir(&layer.diff_id).unwrap()).unwrap();
        let blob = store.blob_path(&layer.digest).unwrap();
        process(&store, &layer, Source::Blob(blob), Wanted { blob: false, snapshot: true }, "store").unwrap();
        assert!(store.has_snapshot(&layer.diff_id));
    }

    #[test]
    fn corrupt_or_oversized_downloads_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let (tar, gz) = sample();
        let layer = layer_of(&tar, &gz);
        let mut bad = gz.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xff;
        let err = process(&store, &layer, channel_of(bad), Wanted { blob: true, snapshot: true }, "reg").unwrap_err();
        assert!(matches!(&err, Error::Unavailable(m) if m.contains("corrupt")), "{err}");
        let mut long = gz.clone();
        long.extend_from_slice(b"more");
        let err = process(&store, &layer, channel_of(long), Wanted { blob: true, snapshot: true }, "reg").unwrap_err();
        assert!(matches!(&err, Error::Unavailable(m) if m.contains("bytes")), "{err}");
        // Right blob, wrong diff id in the config.
        let lying = LayerRecord { diff_id: format!("sha256:{}", "0".repeat(64)), ..layer.clone() };
        let err = process(&store, &lying, channel_of(gz), Wanted { blob: true, snapshot: true }, "reg").unwrap_err();
        assert!(matches!(&err, Error::InvalidArgument(m) if m.contains("unpacks to")), "{err}");
        assert!(!store.has_blob(&layer.digest) && !store.has_snapshot(&layer.diff_id));
        assert_eq!(std::fs::read_dir(store.ingest_dir()).unwrap().count(), 0);
        let leftovers: Vec<_> = std::fs::read_dir(store.snapshots_dir())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name() != "l")
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
