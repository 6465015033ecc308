//! Whether the disk holding a directory spins: `queue/rotational` in sysfs of the block
//! device behind the directory's filesystem (the whole disk's, for a partition).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskType {
    Ssd,
    Hdd,
}

impl DiskType {
    /// The value of the conventional `disktype` label.
    pub fn label(self) -> &'static str {
        match self {
            DiskType::Ssd => "ssd",
            DiskType::Hdd => "hdd",
        }
    }
}

/// The disk type of the filesystem holding `dir` (or its nearest existing ancestor, so a
/// state dir not created yet still answers), looked up in `<host_root>/sys`. `None` for
/// filesystems without a block device (overlay, tmpfs, NFS) or an unreadable sysfs.
pub fn disk_type_of(dir: &Path, host_root: &Path) -> Option<DiskType> {
    let existing = dir.ancestors().find(|p| p.exists())?;
    let dev = std::fs::metadata(existing).ok()?.dev();
    disk_type(&host_root.join("sys"), nix::sys::stat::major(dev), nix::sys::stat::minor(dev))
}

/// Reads `<sys>/dev/block/<major>:<minor>/queue/rotational`, or the parent disk's for a
/// partition (partitions have no `queue` of their own).
pub fn disk_type(sys: &Path, major: u64, minor: u64) -> Option<DiskType> {
    let node = sys.join("dev/block").join(format!("{major}:{minor}")).canonicalize().ok()?;
    let candidates = [Some(node.as_path()), node.parent()];
    let text = candidates.into_iter().flatten().find_map(|d| std::fs::read_to_string(d.join("queue/rotational")).ok())?;
    match text.trim() {
        "0" => Some(DiskType::Ssd),
        "1" => Some(DiskType::Hdd),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sysfs as the kernel lays it out: /sys/dev/block/M:m is a symlink into /sys/devices,
    /// and a partition is a directory inside its disk's.
    fn fake_sys(sys: &Path, disk: &str, rotational: &str) {
        let disk_dir = sys.join("devices/pci0000:00/0000:00:10.0/block").join(disk);
        std::fs::create_dir_all(disk_dir.join("queue")).unwrap();
        std::fs::write(disk_dir.join("queue/rotational"), rotational).unwrap();
        std::fs::create_dir_all(disk_dir.join(format!("{disk}1"))).unwrap();
        std::fs::create_dir_all(sys.join("dev/block")).unwrap();
        let rel = Path::new("../../devices/pci0000:00/0000:00:10.0/block").join(disk);
        std::os::unix::fs::symlink(&rel, sys.join("dev/block/8:0")).unwrap();
        std::os::unix::fs::symlink(rel.join(format!("{disk}1")), sys.join("dev/block/8:1")).unwrap();
    }

    #[test]
    fn partitions_use_their_disks_queue() {
        let root = tempfile::tempdir().unwrap();
        fake_sys(root.path(), "sda", "0\n");
        assert_eq!(disk_type(root.path(), 8, 1), Some(DiskType::Ssd));
        assert_eq!(disk_type(root.path(), 8, 0), Some(DiskType::Ssd));
        assert_eq!(disk_type(root.path(), 8, 2), None, "unknown device");
    }

    #[test]
    fn spinning_disks_are_hdd() {
        let root = tempfile::tempdir().unwrap();
        fake_sys(root.path(), "sdb", "1\n");
        assert_eq!(disk_type(root.path(), 8, 1), Some(DiskType::Hdd));
        assert_eq!(DiskType::Hdd.label(), "hdd");
    }

    #[test]
    fn the_real_root_answers_or_says_nothing() {
        // Whatever this machine's disk is, asking must not fail; a missing dir uses its parent.
        let a = disk_type_of(Path::new("/var/lib/capstan-does-not-exist/x"), Path::new("/"));
        let b = disk_type_of(Path::new("/var/lib"), Path::new("/"));
        assert_eq!(a, b);
    }
}
