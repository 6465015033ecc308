//! A container's writable layer: what its overlay upper dir (`<container dir>/upper`, see
//! `image/rootfs.rs`) holds, by allocated blocks and inodes.

use std::path::Path;

use cri_proto::v1;

/// The upper dir of the container whose directory is `container_dir`.
pub fn upper_dir(container_dir: &Path) -> std::path::PathBuf {
    container_dir.join("upper")
}

/// Usage of the writable layer; `mountpoint` names the filesystem the layers live on.
pub fn usage(container_dir: &Path, mountpoint: &Path) -> v1::FilesystemUsage {
    let timestamp = crate::id::now_nanos();
    let upper = upper_dir(container_dir);
    let used = if upper.is_dir() { crate::image::disk_usage(&upper) } else { Default::default() };
    v1::FilesystemUsage {
        timestamp,
        fs_id: Some(v1::FilesystemIdentifier { mountpoint: mountpoint.display().to_string() }),
        used_bytes: Some(v1::UInt64Value { value: used.bytes }),
        inodes_used: Some(v1::UInt64Value { value: used.inodes }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_the_upper_dir_holds() {
        let dir = tempfile::tempdir().unwrap();
        let empty = usage(dir.path(), Path::new("/x"));
        assert_eq!(empty.used_bytes.unwrap().value, 0);
        std::fs::create_dir_all(upper_dir(dir.path()).join("etc")).unwrap();
        std::fs::write(upper_dir(dir.path()).join("etc/big"), vec![1u8; 1 << 20]).unwrap();
        let u = usage(dir.path(), Path::new("/x"));
        assert!(u.used_bytes.unwrap().value >= 1 << 20, "{u:?}");
        assert_eq!(u.inodes_used.unwrap().value, 3, "upper, etc, big");
        assert_eq!(u.fs_id.unwrap().mountpoint, "/x");
    }
}
