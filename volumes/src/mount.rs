//! The mount plumbing every volume type shares: finding mounts in `/proc/self/mountinfo`,
//! bind and remount, unmounting, and creating/removing mount-point directories.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use procfs::process::{MountInfo, Process};

use crate::{Error, Result};

/// Mounts whose mount point is `path` itself, bottom of the stack first.
pub fn mounts_at(path: &Path) -> Result<Vec<MountInfo>> {
    let wanted = escape(path);
    Ok(mountinfo()?.into_iter().filter(|m| m.mount_point == wanted).collect())
}

/// Whether something is mounted on `path` (bind mounts of the same filesystem included,
/// which comparing `st_dev` with the parent would miss).
pub fn is_mount_point(path: &Path) -> Result<bool> {
    Ok(!mounts_at(path)?.is_empty())
}

/// Mount points strictly below `dir`.
pub fn mounts_below(dir: &Path) -> Result<Vec<PathBuf>> {
    let prefix = escape(dir);
    Ok(mountinfo()?
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p != &prefix && p.starts_with(&prefix))
        .collect())
}

fn mountinfo() -> Result<Vec<MountInfo>> {
    let infos = Process::myself()
        .and_then(|p| p.mountinfo())
        .map_err(|e| Error::Io { context: "cannot read", path: "/proc/self/mountinfo".into(), source: std::io::Error::other(e) })?;
    Ok(infos.into_iter().collect())
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`; procfs keeps them so.
fn escape(path: &Path) -> PathBuf {
    let s = path.to_string_lossy();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            ' ' | '\t' | '\n' | '\\' => out.push_str(&format!("\\{:03o}", c as u32)),
            c => out.push(c),
        }
    }
    PathBuf::from(out)
}

/// Bind-mounts `source` on `target`, read-only if asked. A read-only bind needs a second
/// call (`MS_REMOUNT|MS_BIND|MS_RDONLY`): the first one ignores `MS_RDONLY`.
pub fn bind(source: &Path, target: &Path, read_only: bool) -> Result<()> {
    let what = source.display().to_string();
    nix::mount::mount(Some(source), target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|errno| Error::Mount { what: what.clone(), target: target.into(), errno })?;
    if read_only {
        let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
        if let Err(errno) = nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>) {
            // Never leave a writable bind behind a failed read-only request.
            let _ = unmount(target, false);
            return Err(Error::Mount { what: format!("{what} (read-only remount)"), target: target.into(), errno });
        }
    }
    Ok(())
}

/// How long a forced unmount waits for the mount to leave the mount table.
const FORCED_UNMOUNT_WAIT: Duration = Duration::from_secs(30);

/// Unmounts everything stacked on `target`. Without `force` a busy mount is an error, so
/// the caller (kubelet-style retry loop) tries again once the users are gone.
///
/// With `force` (the pod is being deleted and its NFS server is dead) `MNT_FORCE` first
/// aborts the RPCs in flight, and a mount still busy after that is detached lazily
/// (`MNT_DETACH`): the only case where an unmount is lazy. The kernel then destroys the
/// dead server's client state in the unmounting thread, retrying its RPCs for minutes
/// (`timeo` × `retrans`); so the unmount runs in a thread of its own and this returns as
/// soon as the mount has left the mount table, leaving that thread to finish.
pub fn unmount(target: &Path, force: bool) -> Result<()> {
    if !force {
        return unmount_now(target, false);
    }
    if !is_mount_point(target)? {
        return Ok(());
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let path = target.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(unmount_now(&path, true));
    });
    let deadline = Instant::now() + FORCED_UNMOUNT_WAIT;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(result) => return result,
            Err(RecvTimeoutError::Disconnected) => return Err(Error::Unmount { target: target.into(), errno: Errno::EIO }),
            Err(RecvTimeoutError::Timeout) if !is_mount_point(target)? => {
                tracing::warn!(target = %target.display(), "unmounted; the kernel is still tearing down the dead server's state in the background");
                return Ok(());
            }
            Err(RecvTimeoutError::Timeout) if Instant::now() > deadline => {
                return Err(Error::Unmount { target: target.into(), errno: Errno::ETIMEDOUT });
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

fn unmount_now(target: &Path, force: bool) -> Result<()> {
    // Bounded: each round removes one mount of the stack.
    for _ in 0..16 {
        if !is_mount_point(target)? {
            return Ok(());
        }
        let flags = if force { MntFlags::MNT_FORCE } else { MntFlags::empty() };
        match nix::mount::umount2(target, flags) {
            Ok(()) => continue,
            Err(Errno::EINVAL | Errno::ENOENT) => return Ok(()),
            Err(errno) if !force => return Err(Error::Unmount { target: target.into(), errno }),
            Err(errno) => {
                tracing::warn!(target = %target.display(), %errno, "forced unmount failed; detaching it lazily");
                nix::mount::umount2(target, MntFlags::MNT_DETACH)
                    .map_err(|errno| Error::Unmount { target: target.into(), errno })?;
            }
        }
    }
    Err(Error::Unmount { target: target.into(), errno: Errno::EBUSY })
}

/// Creates `dir` (and missing parents) with `mode`, unaffected by the umask. Returns
/// whether it was created here, so a failed setup removes only what it made.
pub fn create_dir(dir: &Path, mode: u32) -> Result<bool> {
    if dir.is_dir() {
        return Ok(false);
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(Error::io("cannot create", parent))?;
    }
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(Error::io("cannot create", dir)(e)),
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(Error::io("cannot chmod", dir))?;
    Ok(true)
}

/// Removes an (empty) mount-point directory; a missing one is fine. A directory that still
/// holds files after its unmount is an error, never a recursive delete: those files belong
/// to whatever was mounted there.
pub fn remove_mount_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("cannot remove", dir)(e)),
    }
}

/// Refuses to go on when something is mounted inside `dir` (a container's bidirectional
/// mount, say): removing it recursively would reach into that filesystem.
pub fn ensure_nothing_below(dir: &Path) -> Result<()> {
    let below = mounts_below(dir)?;
    if below.is_empty() {
        return Ok(());
    }
    let mounts = below.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
    Err(Error::Busy { target: dir.into(), mounts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_mountinfo() {
        assert_eq!(escape(Path::new("/a b\\c")), PathBuf::from("/a\\040b\\134c"));
        assert_eq!(escape(Path::new("/plain")), PathBuf::from("/plain"));
    }

    #[test]
    fn root_is_a_mount_point_and_a_fresh_dir_is_not() {
        assert!(is_mount_point(Path::new("/")).unwrap());
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mount_point(dir.path()).unwrap());
    }
}
