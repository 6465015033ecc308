//! Mount targets checked inside the container's rootfs before libcontainer mounts them.
//!
//! An image may hold a symlink where a CRI mount wants its target (`/data -> ../../../x`).
//! libcontainer resolves targets inside the rootfs (pathrs), so nothing can land outside
//! it; but when such a symlink leads nowhere inside the rootfs it can only fail with
//! "failed to prepare rootfs". Resolving each target the same way first turns that into an
//! InvalidArgument naming the mount and the symlink.

use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use cri_proto::v1;
use pathrs::Root;

use crate::{Error, Result};

/// Refuses mounts whose target passes through a symlink that resolves to nothing inside
/// `rootfs`. Targets that do not exist yet are fine (libcontainer creates them).
pub fn check(rootfs: &Path, mounts: &[v1::Mount]) -> Result<()> {
    if mounts.is_empty() {
        return Ok(());
    }
    let root = Root::open(rootfs).map_err(|e| Error::Internal(format!("cannot open rootfs {}: {e}", rootfs.display())))?;
    for m in mounts {
        let mut prefix = PathBuf::from("/");
        for part in Path::new(&m.container_path).components().skip(1) {
            prefix.push(part);
            // Missing from here on: created inside the rootfs, nothing to check.
            let Ok(handle) = root.resolve_nofollow(&prefix) else { break };
            let stat = nix::sys::stat::fstat(handle.as_fd().as_raw_fd()).map_err(|e| Error::Internal(format!("stat {}: {e}", prefix.display())))?;
            if stat.st_mode & libc::S_IFMT != libc::S_IFLNK {
                continue;
            }
            if let Err(e) = root.resolve(&prefix) {
                let target = std::fs::read_link(rootfs.join(prefix.strip_prefix("/").unwrap_or(&prefix)))
                    .map(|t| t.display().to_string())
                    .unwrap_or_default();
                return Err(Error::InvalidArgument(format!(
                    "mount at {}: {} in the image is a symlink to {target:?}, which leads nowhere inside the container's root ({e}); refusing to mount through it",
                    m.container_path,
                    prefix.display()
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(at: &str) -> v1::Mount {
        v1::Mount { container_path: at.into(), host_path: "/tmp".into(), ..Default::default() }
    }

    #[test]
    fn symlinks_that_resolve_inside_are_fine_and_dangling_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("run")).unwrap();
        std::os::unix::fs::symlink("/run", r.join("varrun")).unwrap();
        std::os::unix::fs::symlink("../../../../../../etc", r.join("escape")).unwrap();
        check(r, &[mount("/varrun/x"), mount("/new/dir"), mount("/run")]).unwrap();
        let err = check(r, &[mount("/escape/x")]).unwrap_err().to_string();
        assert!(err.contains("/escape") && err.contains("../../../../../../etc") && err.contains("refusing"), "{err}");
    }
}
