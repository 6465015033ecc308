//! Finding and undoing mounts below a directory, so that removing a directory never
//! descends into a filesystem still mounted inside it.

use std::path::{Path, PathBuf};

use nix::mount::MntFlags;

use crate::{Error, Result};

/// Mount points at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let path = "/proc/self/mountinfo";
    let text = std::fs::read_to_string(path).map_err(Error::io("cannot read", path))?;
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    Ok(found)
}

/// Whether `path` is the root of a mount (bind mounts included). One statx call
/// (`STATX_ATTR_MOUNT_ROOT`, Linux 5.8) instead of reading mountinfo, which grows with every
/// pod; older kernels get the mountinfo answer. A missing path is no mount point.
pub fn is_mount_point(path: &Path) -> Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    const MOUNT_ROOT: u64 = 0x2000;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::InvalidArgument(format!("path {} contains a NUL byte", path.display())))?;
    // Safety: statx only writes into `stx`, a plain C struct for which zero is valid.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statx(libc::AT_FDCWD, c_path.as_ptr(), libc::AT_SYMLINK_NOFOLLOW, 0, &mut stx) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::NotFound {
            return Ok(false);
        }
        return Err(Error::Io { context: "cannot stat", path: path.to_path_buf(), source: e });
    }
    if stx.stx_attributes_mask & MOUNT_ROOT != 0 {
        return Ok(stx.stx_attributes & MOUNT_ROOT != 0);
    }
    Ok(mounts_under(path)?.iter().any(|m| m == path))
}

/// Lazily unmounts everything at or below `dir`.
pub fn unmount_under(dir: &Path) -> Result<()> {
    unmount_under_except(dir, None)
}

/// [`unmount_under`], leaving the mount at `keep` (and below it) alone.
pub fn unmount_under_except(dir: &Path, keep: Option<&Path>) -> Result<()> {
    for mount in mounts_under(dir)? {
        if keep.is_some_and(|k| mount.starts_with(k)) {
            continue;
        }
        // Stacked mounts on one point need one umount each.
        for _ in 0..8 {
            match nix::mount::umount2(&mount, MntFlags::MNT_DETACH) {
                Ok(()) => continue,
                Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => break,
                Err(e) => return Err(Error::Io { context: "cannot unmount", path: mount, source: e.into() }),
            }
        }
    }
    Ok(())
}

/// Releases a pin: lazily unmounts the bind mount at `path` (a namespace file) and removes
/// the file. Idempotent; a failure is logged, because the teardowns that call it go on.
pub fn unpin(path: &Path) {
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot unmount a pinned namespace"),
    }
    let _ = std::fs::remove_file(path);
}

/// Removes `dir` and everything below it, after unmounting whatever is mounted there.
pub fn remove_dir_all(dir: &Path) -> Result<()> {
    unmount_under(dir)?;
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io { context: "cannot remove", path: dir.to_path_buf(), source: e }),
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let value = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_escapes_are_decoded() {
        assert_eq!(unescape(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape(r"/end\04"), r"/end\04");
    }

    #[test]
    fn mount_points_are_told_apart_from_plain_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let (plain, bound) = (dir.path().join("plain"), dir.path().join("bound"));
        std::fs::create_dir_all(&plain).unwrap();
        std::fs::create_dir_all(&bound).unwrap();
        assert!(is_mount_point(Path::new("/")).unwrap());
        assert!(!is_mount_point(&plain).unwrap());
        assert!(!is_mount_point(&dir.path().join("missing")).unwrap());
        // A bind mount of the same filesystem: st_dev alone would miss it.
        nix::mount::mount(Some(&plain), &bound, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>).unwrap();
        let mounted = is_mount_point(&bound);
        let _ = nix::mount::umount2(&bound, MntFlags::MNT_DETACH);
        assert!(mounted.unwrap());
    }

    #[test]
    fn tmpfs_below_a_dir_is_unmounted_before_removal() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("a/shm");
        std::fs::create_dir_all(&inner).unwrap();
        nix::mount::mount(Some("t"), &inner, Some("tmpfs"), nix::mount::MsFlags::empty(), None::<&str>).unwrap();
        std::fs::write(inner.join("f"), b"x").unwrap();
        assert_eq!(mounts_under(dir.path()).unwrap(), vec![inner.clone()]);
        remove_dir_all(&dir.path().join("a")).unwrap();
        assert!(!dir.path().join("a").exists());
        assert!(mounts_under(dir.path()).unwrap().is_empty());
    }
}
