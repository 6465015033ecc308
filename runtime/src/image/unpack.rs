//! Unpacking one layer tarball into a snapshot directory, in the form overlayfs reads.
//!
//! - Whiteouts (`.wh.name`) become character devices 0/0 named `name`; opaque markers
//!   (`.wh..wh..opq`) become `trusted.overlay.opaque=y` on their directory.
//! - Regular files, directories, symlinks, hardlinks, devices and fifos keep their mode
//!   (setuid bits included), owner, mtime and extended attributes (PAX `SCHILY.xattr.*`).
//! - Nothing is ever written outside the snapshot: entry names with `..` or a leading `/`
//!   are refused, parent directories are opened with `openat2(RESOLVE_BENEATH)` so a
//!   symlink that leads out of the snapshot (absolute, or `../` too far) fails the unpack,
//!   and the final component is never followed (files are created `O_EXCL|O_NOFOLLOW`,
//!   metadata is set with `AT_SYMLINK_NOFOLLOW` or on the opened file).
//!
//! Each layer is unpacked on its own (not on top of its parents), so a snapshot is shared by
//! every image with that layer. Layer tars name real paths, so this matches what a
//! stacked unpack produces.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};
use xattr::FileExt;

use super::store::Usage;

/// Why a layer could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The layer tries to write outside its snapshot.
    #[error("entry {entry:?} {reason}; refusing to unpack it")]
    Escape { entry: String, reason: String },
    /// The layer is malformed (bad tar, bad compression, impossible entry).
    #[error("{0}")]
    Invalid(String),
    /// Reading the layer stream failed.
    #[error("cannot read layer: {0}")]
    Read(std::io::Error),
    /// Writing the snapshot failed (our disk, not the layer).
    #[error("cannot unpack entry {entry:?}: {source}")]
    Write { entry: String, source: std::io::Error },
}

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Wraps `reader` in the decompressor its first bytes call for: gzip, zstd, or none (a
/// plain tar). Sniffing rather than trusting the media type copes with mislabelled layers.
pub fn decompressor<'a>(reader: impl Read + 'a) -> std::io::Result<Box<dyn Read + 'a>> {
    let mut reader = BufReader::with_capacity(256 * 1024, reader);
    let head = reader.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(reader)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(reader)?))
    } else {
        Ok(Box::new(reader))
    }
}

/// Unpacks the (uncompressed) tar stream `reader` into the existing, empty `dest`, then
/// reads the stream to its end so the caller's digest covers every byte.
pub fn extract(reader: impl Read, dest: &Path) -> Result<(), UnpackError> {
    let mut archive = tar::Archive::new(reader);
    let mut x = Extractor::new(dest)?;
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let mut entry = entry.map_err(UnpackError::Read)?;
        x.entry(&mut entry)?;
    }
    x.finish()?;
    let mut rest = archive.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(UnpackError::Read)?;
    Ok(())
}

/// Metadata of one entry, with PAX overrides applied.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

struct Extractor {
    root: OwnedFd,
    /// The last parent directory opened (entries come grouped by directory).
    cache: Option<(PathBuf, OwnedFd)>,
    /// Directories and their mtimes, set last (creating entries inside changes them).
    dirs: Vec<(PathBuf, i64)>,
}

impl Extractor {
    fn new(dest: &Path) -> Result<Extractor, UnpackError> {
        let root = File::open(dest)
            .map_err(|e| UnpackError::Write { entry: dest.display().to_string(), source: e })?;
        Ok(Extractor { root: root.into(), cache: None, dirs: Vec::new() })
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let Some(rel) = clean_path(&raw, &shown)? else { return Ok(()) };
        let meta = read_meta(entry)?;
        let kind = entry.header().entry_type();
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        let name = rel.file_name().map(OsStr::to_os_string).unwrap_or_default();
        let parent_fd = self.open_parent(&parent, &shown)?;
        let err = |source: std::io::Error| UnpackError::Write { entry: shown.clone(), source };

        if let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if name == OPAQUE_MARKER {
                let dir = open_dir(parent_fd, ".").map_err(err)?;
                File::from(dir).set_xattr(OPAQUE_XATTR, b"y").map_err(err)?;
            } else if !hidden.starts_with(WHITEOUT_PREFIX.as_bytes()) && !hidden.is_empty() {
                let hidden = OsStr::from_bytes(hidden);
                self.clear(parent_fd, hidden, false).map_err(err)?;
                nix::sys::stat::mknodat(Some(parent_fd), hidden, SFlag::S_IFCHR, Mode::empty(), 0)
                    .map_err(|e| err(e.into()))?;
            }
            // Other `.wh..wh.*` names are aufs bookkeeping with no meaning here.
            return Ok(());
        }

        use tar::EntryType as T;
        match kind {
            T::Directory => {
                self.clear(parent_fd, &name, true).map_err(err)?;
                match nix::sys::stat::mkdirat(Some(parent_fd), name.as_os_str(), Mode::from_bits_truncate(0o700)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(err(e.into())),
                }
                let dir = File::from(open_dir(parent_fd, &name).map_err(err)?);
                apply_fd_meta(&dir, &meta).map_err(err)?;
                self.dirs.push((rel.clone(), meta.mtime));
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                self.clear(parent_fd, &name, false).map_err(err)?;
                let fd = nix::fcntl::openat(
                    Some(parent_fd),
                    name.as_os_str(),
                    OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| err(e.into()))?;
                // SAFETY: `fd` was just returned by openat and is owned by nobody else.
                let mut file = unsafe { File::from_raw_fd(fd) };
                std::io::copy(entry, &mut file).map_err(UnpackError::Read)?;
                apply_fd_meta(&file, &meta).map_err(err)?;
                set_times(parent_fd, &name, meta.mtime).map_err(err)?;
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| UnpackError::Invalid(format!("symlink {shown:?} has no target")))?
                    .into_owned();
                self.clear(parent_fd, &name, false).map_err(err)?;
                nix::unistd::symlinkat(OsStr::from_bytes(&target), Some(parent_fd), name.as_os_str())
                    .map_err(|e| err(e.into()))?;
                apply_path_meta(parent_fd, &name, &meta, false).map_err(err)?;
            }
            T::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| UnpackError::Invalid(format!("hardlink {shown:?} has no target")))?
                    .into_owned();
                let target_shown = String::from_utf8_lossy(&target).into_owned();
                let target_rel = clean_path(&target, &target_shown).map_err(|e| match e {
                    UnpackError::Escape { reason, .. } => {
                        escape(&shown, &format!("is a hardlink to {target_shown:?}, which {reason}"))
                    }
                    e => e,
                })?;
                let Some(target_rel) = target_rel else {
                    return Err(UnpackError::Invalid(format!("hardlink {shown:?} points at the layer root")));
                };
                let target_parent = target_rel.parent().map(Path::to_path_buf).unwrap_or_default();
                let target_name = target_rel.file_name().map(OsStr::to_os_string).unwrap_or_default();
                // Opened separately: the cache holds one directory at a time.
                let tp = open_beneath(self.root.as_raw_fd(), &target_parent).map_err(|e| match e {
                    Errno::EXDEV | Errno::ELOOP => escape(&shown, "links to a file through a symlink that leaves the layer"),
                    e => UnpackError::Invalid(format!("hardlink {shown:?}: target {target_shown:?}: {e}")),
                })?;
                let parent_fd = self.open_parent(&parent, &shown)?;
                self.clear(parent_fd, &name, false).map_err(err)?;
                nix::unistd::linkat(
                    Some(tp.as_raw_fd()),
                    target_name.as_os_str(),
                    Some(parent_fd),
                    name.as_os_str(),
                    nix::fcntl::AtFlags::empty(),
                )
                .map_err(|e| UnpackError::Invalid(format!("hardlink {shown:?} -> {target_shown:?}: {e}")))?;
            }
            T::Char | T::Block | T::Fifo => {
                let (kind, dev) = match kind {
                    T::Fifo => (SFlag::S_IFIFO, 0),
                    k => {
                        let h = entry.header();
                        let major = h.device_major().ok().flatten().unwrap_or(0) as u64;
                        let minor = h.device_minor().ok().flatten().unwrap_or(0) as u64;
                        let sflag = if k == T::Char { SFlag::S_IFCHR } else { SFlag::S_IFBLK };
                        (sflag, nix::sys::stat::makedev(major, minor))
                    }
                };
                self.clear(parent_fd, &name, false).map_err(err)?;
                nix::sys::stat::mknodat(Some(parent_fd), name.as_os_str(), kind, Mode::from_bits_truncate(0o600), dev)
                    .map_err(|e| err(e.into()))?;
                apply_path_meta(parent_fd, &name, &meta, true).map_err(err)?;
            }
            other => tracing::debug!(entry = %shown, kind = ?other, "tar entry type skipped"),
        }
        Ok(())
    }

    /// Opens the parent directory of an entry, creating missing directories (mode 0755).
    fn open_parent(&mut self, parent: &Path, shown: &str) -> Result<RawFd, UnpackError> {
        if parent.as_os_str().is_empty() {
            return Ok(self.root.as_raw_fd());
        }
        if let Some((path, fd)) = &self.cache
            && path == parent
        {
            return Ok(fd.as_raw_fd());
        }
        let fd = match open_beneath(self.root.as_raw_fd(), parent) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => self.create_dirs(parent, shown)?,
            Err(e) => return Err(parent_error(e, parent, shown)),
        };
        let raw = fd.as_raw_fd();
        self.cache = Some((parent.to_path_buf(), fd));
        Ok(raw)
    }

    fn create_dirs(&self, parent: &Path, shown: &str) -> Result<OwnedFd, UnpackError> {
        let mut prefix = PathBuf::new();
        let mut dir: Option<OwnedFd> = None;
        for component in parent.components() {
            let at = dir.as_ref().map(|d| d.as_raw_fd()).unwrap_or(self.root.as_raw_fd());
            prefix.push(component);
            match nix::sys::stat::mkdirat(Some(at), component.as_os_str(), Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(UnpackError::Write { entry: shown.to_string(), source: e.into() }),
            }
            // Re-resolved from the root: the component may be a symlink, which must stay inside.
            dir = Some(open_beneath(self.root.as_raw_fd(), &prefix).map_err(|e| parent_error(e, &prefix, shown))?);
        }
        dir.ok_or_else(|| UnpackError::Invalid(format!("entry {shown:?} has an empty parent")))
    }

    /// Makes room for a new entry: removes what is there, except a directory that a new
    /// directory entry merges into.
    fn clear(&mut self, parent: RawFd, name: &OsStr, keep_dir: bool) -> std::io::Result<()> {
        let stat = match nix::sys::stat::fstatat(Some(parent), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let is_dir = stat.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if is_dir && keep_dir {
            return Ok(());
        }
        if is_dir {
            // The cached directory may be inside what goes away.
            self.cache = None;
            let path = PathBuf::from(format!("/proc/self/fd/{parent}")).join(name);
            std::fs::remove_dir_all(path)
        } else {
            nix::unistd::unlinkat(Some(parent), name, nix::unistd::UnlinkatFlags::NoRemoveDir).map_err(Into::into)
        }
    }

    /// Directory mtimes last: entries created inside a directory change its mtime.
    fn finish(&mut self) -> Result<(), UnpackError> {
        self.cache = None;
        for (rel, mtime) in std::mem::take(&mut self.dirs).into_iter().rev() {
            let shown = rel.display().to_string();
            let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
            let name = rel.file_name().map(OsStr::to_os_string).unwrap_or_default();
            let Ok(fd) = open_beneath_or_root(self.root.as_raw_fd(), &parent) else { continue };
            let at = fd.as_ref().map(|f| f.as_raw_fd()).unwrap_or(self.root.as_raw_fd());
            set_times(at, &name, mtime).map_err(|source| UnpackError::Write { entry: shown, source })?;
        }
        Ok(())
    }
}

fn escape(entry: &str, reason: &str) -> UnpackError {
    UnpackError::Escape { entry: entry.to_string(), reason: reason.to_string() }
}

fn parent_error(e: Errno, parent: &Path, shown: &str) -> UnpackError {
    match e {
        Errno::EXDEV | Errno::ELOOP => escape(
            shown,
            &format!("goes through {:?}, a symlink that leads outside the layer", parent.display().to_string()),
        ),
        Errno::ENOTDIR => UnpackError::Invalid(format!("entry {shown:?}: {:?} is not a directory", parent.display().to_string())),
        e => UnpackError::Write { entry: shown.to_string(), source: e.into() },
    }
}

/// Opens `path` (relative) below `root`, refusing any resolution that leaves `root`.
fn open_beneath(root: RawFd, path: &Path) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = nix::fcntl::openat2(root, path, how)?;
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn open_beneath_or_root(root: RawFd, path: &Path) -> Result<Option<OwnedFd>, Errno> {
    if path.as_os_str().is_empty() { Ok(None) } else { open_beneath(root, path).map(Some) }
}

/// Opens the directory `name` in `parent` without following a symlink.
fn open_dir(parent: RawFd, name: impl AsRef<OsStr>) -> std::io::Result<OwnedFd> {
    let fd = nix::fcntl::openat(
        Some(parent),
        name.as_ref(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An entry name as a relative path: `./` prefixes dropped; `None` for the root itself.
/// `..` and absolute names are refused.
fn clean_path(raw: &[u8], shown: &str) -> Result<Option<PathBuf>, UnpackError> {
    let path = Path::new(OsStr::from_bytes(raw));
    let mut clean = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(escape(shown, "contains '..'")),
            Component::RootDir | Component::Prefix(_) => return Err(escape(shown, "is an absolute path")),
        }
    }
    Ok((!clean.as_os_str().is_empty()).then_some(clean))
}

fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Meta, UnpackError> {
    let h = entry.header();
    let bad = |what: &str, e: std::io::Error| UnpackError::Invalid(format!("bad {what} in tar header: {e}"));
    // Blank owner and time fields (some writers leave them empty) mean 0, as GNU tar reads them.
    let mut meta = Meta {
        mode: h.mode().map_err(|e| bad("mode", e))? & 0o7777,
        uid: h.uid().unwrap_or(0) as u32,
        gid: h.gid().unwrap_or(0) as u32,
        mtime: h.mtime().unwrap_or(0) as i64,
        xattrs: Vec::new(),
    };
    if let Some(pax) = entry.pax_extensions().map_err(UnpackError::Read)? {
        for ext in pax {
            let ext = ext.map_err(UnpackError::Read)?;
            let (Ok(key), value) = (ext.key(), ext.value_bytes()) else { continue };
            let text = std::str::from_utf8(value).unwrap_or_default();
            match key {
                "uid" => meta.uid = text.parse().map_err(|_| UnpackError::Invalid(format!("bad PAX uid {text:?}")))?,
                "gid" => meta.gid = text.parse().map_err(|_| UnpackError::Invalid(format!("bad PAX gid {text:?}")))?,
                "mtime" => {
                    let secs = text.split('.').next().unwrap_or_default();
                    meta.mtime = secs.parse().unwrap_or(meta.mtime);
                }
                _ => {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        // overlayfs metadata comes from us alone: a layer must not forge
                        // redirects or opaque markers through raw xattrs.
                        if !name.starts_with("trusted.overlay.") {
                            meta.xattrs.push((OsString::from(name), value.to_vec()));
                        }
                    }
                }
            }
        }
    }
    Ok(meta)
}

/// Owner, then mode (chown clears setuid bits), then xattrs, on an open file or directory.
fn apply_fd_meta(file: &File, meta: &Meta) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    nix::unistd::fchown(file.as_raw_fd(), Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid)))?;
    file.set_permissions(std::fs::Permissions::from_mode(meta.mode))?;
    for (name, value) in &meta.xattrs {
        set_xattr_tolerant(file.set_xattr(name, value), name)?;
    }
    Ok(())
}

/// The same for entries that cannot be opened (symlinks, devices), by name in `parent`.
fn apply_path_meta(parent: RawFd, name: &OsStr, meta: &Meta, chmod: bool) -> std::io::Result<()> {
    nix::unistd::fchownat(
        Some(parent),
        name,
        Some(Uid::from_raw(meta.uid)),
        Some(Gid::from_raw(meta.gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )?;
    if chmod {
        nix::sys::stat::fchmodat(
            Some(parent),
            name,
            Mode::from_bits_truncate(meta.mode),
            nix::sys::stat::FchmodatFlags::NoFollowSymlink,
        )
        .or_else(|e| if e == Errno::EOPNOTSUPP { Ok(()) } else { Err(e) })?;
    }
    let path = PathBuf::from(format!("/proc/self/fd/{parent}")).join(name);
    for (xname, value) in &meta.xattrs {
        // lsetxattr: the final component is not followed.
        set_xattr_tolerant(xattr::set(&path, xname, value), xname)?;
    }
    set_times(parent, name, meta.mtime)
}

/// Filesystems without xattr support, and user.* on symlinks, are not worth failing over.
fn set_xattr_tolerant(result: std::io::Result<()>, name: &OsStr) -> std::io::Result<()> {
    match result {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::EPERM)) => {
            tracing::debug!(xattr = ?name, error = %e, "extended attribute not kept");
            Ok(())
        }
        other => other,
    }
}

fn set_times(parent: RawFd, name: &OsStr, mtime: i64) -> std::io::Result<()> {
    let t = TimeSpec::new(mtime, 0);
    nix::sys::stat::utimensat(Some(parent), name, &t, &t, UtimensatFlags::NoFollowSymlink).map_err(Into::into)
}

/// Bytes (allocated blocks) and inodes below `dir`, hardlinks counted once.
pub fn disk_usage(dir: &Path) -> Usage {
    use std::os::unix::fs::MetadataExt;
    let mut usage = Usage::default();
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(meta) = std::fs::symlink_metadata(&d) {
            usage += Usage { bytes: meta.blocks() * 512, inodes: 1 };
        }
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.nlink() <= 1 || seen.insert((meta.dev(), meta.ino())) {
                usage += Usage { bytes: meta.blocks() * 512, inodes: 1 };
            }
        }
    }
    usage
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    use super::*;

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_600_000_000);
        h
    }

    /// A tar with raw names (tar::Builder refuses `..`, so hostile names are written by hand).
    /// (name, type, data, link target)
    type RawEntry<'a> = (&'a str, tar::EntryType, &'a [u8], &'a str);

    fn raw_tar(entries: &[RawEntry<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, data, link) in entries {
            let mut h = header(*kind, 0o644, data.len() as u64);
            {
                let gnu = h.as_gnu_mut().unwrap();
                gnu.name[..name.len()].copy_from_slice(name.as_bytes());
                gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    fn unpack(tar: &[u8]) -> (tempfile::TempDir, Result<(), UnpackError>) {
        let dir = tempfile::tempdir().unwrap();
        let result = extract(decompressor(tar).unwrap(), dir.path());
        (dir, result)
    }

    #[test]
    fn files_dirs_links_modes_owners_and_xattrs() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = header(tar::EntryType::Directory, 0o750, 0);
        h.set_uid(1000);
        h.set_gid(1001);
        b.append_data(&mut h, "./usr/", std::io::empty()).unwrap();
        let mut h = header(tar::EntryType::Regular, 0o4755, 5);
        b.append_data(&mut h, "usr/bin/tool", &b"hello"[..]).unwrap();
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut h, "usr/bin/alias", "tool").unwrap();
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut h, "etc-link", "/etc").unwrap();
        let mut h = header(tar::EntryType::Link, 0o644, 0);
        b.append_link(&mut h, "usr/hard", "usr/bin/tool").unwrap();
        let mut h = header(tar::EntryType::Fifo, 0o600, 0);
        b.append_data(&mut h, "run/fifo", std::io::empty()).unwrap();
        b.append_pax_extensions([("SCHILY.xattr.user.note", &b"v1"[..]), ("uid", b"70000")]).unwrap();
        let mut h = header(tar::EntryType::Regular, 0o644, 1);
        b.append_data(&mut h, "xattr-file", &b"x"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let (dir, result) = unpack(&gz.finish().unwrap());
        result.unwrap();
        let root = dir.path();
        let usr = std::fs::metadata(root.join("usr")).unwrap();
        assert_eq!((usr.mode() & 0o7777, usr.uid(), usr.gid()), (0o750, 1000, 1001));
        assert_eq!(usr.mtime(), 1_600_000_000, "directory mtime survives entries created inside it");
        let tool = std::fs::metadata(root.join("usr/bin/tool")).unwrap();
        assert_eq!(tool.permissions().mode() & 0o7777, 0o4755, "setuid kept");
        assert_eq!(std::fs::read(root.join("usr/bin/tool")).unwrap(), b"hello");
        assert_eq!(std::fs::metadata(root.join("usr/bin")).unwrap().mode() & 0o777, 0o755, "implicit parent");
        assert_eq!(std::fs::read_link(root.join("usr/bin/alias")).unwrap(), Path::new("tool"));
        assert_eq!(std::fs::read_link(root.join("etc-link")).unwrap(), Path::new("/etc"));
        assert_eq!(std::fs::metadata(root.join("usr/hard")).unwrap().ino(), tool.ino());
        assert!(std::fs::symlink_metadata(root.join("run/fifo")).unwrap().file_type().is_fifo());
        let x = std::fs::metadata(root.join("xattr-file")).unwrap();
        assert_eq!(x.uid(), 70000, "PAX uid");
        assert_eq!(xattr::get(root.join("xattr-file"), "user.note").unwrap().as_deref(), Some(&b"v1"[..]));
        let usage = disk_usage(root);
        assert!(usage.inodes >= 8 && usage.bytes > 0, "{usage:?}");
    }

    #[test]
    fn whiteouts_and_opaque_dirs_become_overlay_form() {
        let tar = raw_tar(&[
            ("etc/.wh.passwd", tarkind::REG, b"", ""),
            ("var/cache/.wh..wh..opq", tarkind::REG, b"", ""),
            ("var/cache/new", tarkind::REG, b"n", ""),
            ("x/.wh..wh.plnk", tarkind::REG, b"", ""),
        ]);
        let (dir, result) = unpack(&tar);
        result.unwrap();
        let wh = std::fs::symlink_metadata(dir.path().join("etc/passwd")).unwrap();
        assert!(wh.file_type().is_char_device());
        assert_eq!(wh.rdev(), 0);
        assert!(!dir.path().join("etc/.wh.passwd").exists());
        if nix::unistd::Uid::effective().is_root() {
            assert_eq!(xattr::get(dir.path().join("var/cache"), OPAQUE_XATTR).unwrap().as_deref(), Some(&b"y"[..]));
        }
        assert!(!dir.path().join("var/cache/.wh..wh..opq").exists());
        assert!(dir.path().join("var/cache/new").exists());
        assert_eq!(std::fs::read_dir(dir.path().join("x")).unwrap().count(), 0);
    }

    mod tarkind {
        pub const REG: tar::EntryType = tar::EntryType::Regular;
        pub const SYM: tar::EntryType = tar::EntryType::Symlink;
        pub const LNK: tar::EntryType = tar::EntryType::Link;
    }

    #[test]
    fn escapes_are_refused_and_nothing_lands_outside() {
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("pwned");
        let abs_link = outside.path().display().to_string();
        let cases: Vec<Vec<RawEntry<'_>>> = vec![
            vec![("../pwned", tarkind::REG, b"x", "")],
            vec![("a/../../pwned", tarkind::REG, b"x", "")],
            vec![("/pwned", tarkind::REG, b"x", "")],
            vec![("out", tarkind::SYM, b"", abs_link.as_str()), ("out/pwned", tarkind::REG, b"x", "")],
            vec![("up", tarkind::SYM, b"", "../../../../../../../../.."), ("up/tmp/pwned", tarkind::REG, b"x", "")],
            vec![("h", tarkind::LNK, b"", "../../etc/passwd")],
        ];
        for entries in cases {
            let (_dir, result) = unpack(&raw_tar(&entries));
            match result {
                Err(UnpackError::Escape { entry, reason }) => {
                    assert!(!entry.is_empty() && !reason.is_empty());
                }
                other => panic!("{entries:?} gave {other:?}"),
            }
            assert!(!target.exists(), "{entries:?} wrote outside");
        }
        // Symlinks inside the layer may be followed while they stay inside.
        let (dir, result) = unpack(&raw_tar(&[
            ("real/", tar::EntryType::Directory, b"", ""),
            ("alias", tarkind::SYM, b"", "real"),
            ("alias/f", tarkind::REG, b"in", ""),
        ]));
        result.unwrap();
        assert_eq!(std::fs::read(dir.path().join("real/f")).unwrap(), b"in");
    }

    #[test]
    fn later_entries_replace_earlier_ones_without_following_links() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"safe").unwrap();
        let (dir, result) = unpack(&raw_tar(&[
            ("f", tarkind::SYM, b"", victim.to_str().unwrap()),
            ("f", tarkind::REG, b"new", ""),
        ]));
        result.unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"safe");
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"new");
    }

    #[test]
    fn zstd_and_plain_tars_are_recognised_and_garbage_is_not_a_tar() {
        let tar = raw_tar(&[("z", tarkind::REG, b"zz", "")]);
        let (dir, result) = unpack(&zstd::encode_all(&tar[..], 3).unwrap());
        result.unwrap();
        assert_eq!(std::fs::read(dir.path().join("z")).unwrap(), b"zz");
        let (_dir, result) = unpack(&[0x1f, 0x8b, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(matches!(result, Err(UnpackError::Read(_))), "{result:?}");
    }
}
