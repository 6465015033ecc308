//! Device nodes (`linux.devices`) and the device cgroup rules (`linux.resources.devices`).
//!
//! The rules deny everything first: on cgroup v1 a new cgroup inherits its parent's list,
//! which on most hosts allows every device. Then the standard pseudo devices and ptys are
//! allowed, then each CRI device with its permissions. Privileged containers get every
//! device node of the host and an allow-all rule.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use cri_proto::v1;
use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};

use crate::{Error, Result};

/// `/dev` entries a privileged container does not get from the host: they are the
/// container's own (pts, shm, mqueue) or set up separately (console).
const HOST_DEV_SKIP: [&str; 5] = ["pts", "shm", "mqueue", "fd", "console"];

/// Character devices every container may use: null, zero, full, random, urandom, tty,
/// console, ptmx; and the pty slaves (major 136).
const STANDARD: [(i64, Option<i64>); 9] =
    [(1, Some(3)), (1, Some(5)), (1, Some(7)), (1, Some(8)), (1, Some(9)), (5, Some(0)), (5, Some(1)), (5, Some(2)), (136, None)];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerDevices {
    pub nodes: Vec<LinuxDevice>,
    pub cgroup: Vec<LinuxDeviceCgroup>,
}

pub fn container_devices(requested: &[v1::Device], privileged: bool) -> Result<ContainerDevices> {
    let mut out = ContainerDevices::default();
    if privileged {
        out.nodes = host_devices(Path::new("/dev"))?;
        out.cgroup.push(rule(true, LinuxDeviceType::A, None, None, "rwm"));
    } else {
        out.cgroup.push(rule(false, LinuxDeviceType::A, None, None, "rwm"));
        // mknod of any node is harmless without access to it.
        out.cgroup.push(rule(true, LinuxDeviceType::C, None, None, "m"));
        out.cgroup.push(rule(true, LinuxDeviceType::B, None, None, "m"));
        for (major, minor) in STANDARD {
            out.cgroup.push(rule(true, LinuxDeviceType::C, Some(major), minor, "rwm"));
        }
    }
    for device in requested {
        let access = permissions(&device.permissions)?;
        for node in requested_nodes(device)? {
            if !privileged {
                out.cgroup.push(rule(true, node.typ(), Some(node.major()), Some(node.minor()), &access));
            }
            out.nodes.retain(|n| n.path() != node.path());
            out.nodes.push(node);
        }
    }
    Ok(out)
}

/// `rwm` or a subset of it; empty means all three.
fn permissions(p: &str) -> Result<String> {
    if p.is_empty() {
        return Ok("rwm".into());
    }
    let valid = p.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) && p.len() <= 3;
    if !valid {
        return Err(Error::InvalidArgument(format!("device permissions {p:?} must be a combination of r, w and m")));
    }
    Ok(p.to_string())
}

/// One CRI device: a node, or a directory of nodes mapped below the container path.
fn requested_nodes(device: &v1::Device) -> Result<Vec<LinuxDevice>> {
    let host = Path::new(&device.host_path);
    if !host.is_absolute() {
        return Err(Error::InvalidArgument(format!("device host_path {:?} must be absolute", device.host_path)));
    }
    let container = if device.container_path.is_empty() { host } else { Path::new(&device.container_path) };
    if !container.is_absolute() {
        return Err(Error::InvalidArgument(format!("device container_path {:?} must be absolute", device.container_path)));
    }
    let meta = std::fs::metadata(host)
        .map_err(|e| Error::InvalidArgument(format!("device {}: {e}", host.display())))?;
    if meta.is_dir() {
        let nodes = host_devices(host)?;
        return Ok(nodes
            .into_iter()
            .map(|mut n| {
                let rel = n.path().strip_prefix(host).map(Path::to_path_buf).unwrap_or_default();
                n.set_path(container.join(rel));
                n
            })
            .collect());
    }
    let typ = device_type(&meta)
        .ok_or_else(|| Error::InvalidArgument(format!("device host_path {} is not a device node", host.display())))?;
    Ok(vec![node(container.to_path_buf(), typ, &meta)])
}

/// Every character or block device below `dir`, recursively, not following symlinks.
pub fn host_devices(dir: &Path) -> Result<Vec<LinuxDevice>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = std::fs::read_dir(&current).map_err(Error::io("cannot list devices in", &current))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if current == Path::new("/dev") && HOST_DEV_SKIP.iter().any(|s| entry.file_name() == *s) {
                continue;
            }
            // Nodes can vanish while we look (udev); skip them.
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            if meta.is_dir() {
                pending.push(path);
            } else if let Some(typ @ (LinuxDeviceType::C | LinuxDeviceType::B)) = device_type(&meta) {
                out.push(node(path, typ, &meta));
            }
        }
    }
    out.sort_by(|a, b| a.path().cmp(b.path()));
    Ok(out)
}

fn device_type(meta: &std::fs::Metadata) -> Option<LinuxDeviceType> {
    let ft = meta.file_type();
    if ft.is_char_device() {
        Some(LinuxDeviceType::C)
    } else if ft.is_block_device() {
        Some(LinuxDeviceType::B)
    } else if ft.is_fifo() {
        Some(LinuxDeviceType::P)
    } else {
        None
    }
}

fn node(path: PathBuf, typ: LinuxDeviceType, meta: &std::fs::Metadata) -> LinuxDevice {
    let rdev = meta.rdev();
    let mut node = LinuxDevice::default();
    node.set_path(path);
    node.set_typ(typ);
    node.set_major(nix::sys::stat::major(rdev) as i64);
    node.set_minor(nix::sys::stat::minor(rdev) as i64);
    node.set_file_mode(Some(meta.mode() & 0o777));
    node.set_uid(Some(meta.uid()));
    node.set_gid(Some(meta.gid()));
    node
}

fn rule(allow: bool, typ: LinuxDeviceType, major: Option<i64>, minor: Option<i64>, access: &str) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(allow);
    r.set_typ(Some(typ));
    r.set_major(major);
    r.set_minor(minor);
    r.set_access(Some(access.to_string()));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(host: &str, container: &str, permissions: &str) -> v1::Device {
        v1::Device { host_path: host.into(), container_path: container.into(), permissions: permissions.into() }
    }

    #[test]
    fn defaults_deny_first_then_allow_the_standard_devices() {
        let out = container_devices(&[], false).unwrap();
        assert!(out.nodes.is_empty());
        assert_eq!(out.cgroup[0].to_string(), "a *:* rwm");
        assert!(!out.cgroup[0].allow());
        let allowed: Vec<String> = out.cgroup[1..].iter().map(|r| r.to_string()).collect();
        for rule in ["c *:* m", "b *:* m", "c 1:3 rwm", "c 1:9 rwm", "c 5:2 rwm", "c 136:* rwm"] {
            assert!(allowed.contains(&rule.to_string()), "{rule} missing from {allowed:?}");
        }
        assert!(out.cgroup[1..].iter().all(|r| r.allow()));
    }

    #[test]
    fn a_host_device_is_stat_ed_and_allowed_with_its_permissions() {
        let out = container_devices(&[device("/dev/null", "/dev/mynull", "rw")], false).unwrap();
        let node = &out.nodes[0];
        assert_eq!(node.path(), Path::new("/dev/mynull"));
        assert_eq!((node.typ(), node.major(), node.minor()), (LinuxDeviceType::C, 1, 3));
        assert_eq!(node.file_mode(), Some(0o666));
        assert_eq!(out.cgroup.last().unwrap().to_string(), "c 1:3 rw");
    }

    #[test]
    fn bad_devices_are_invalid_arguments() {
        for (d, word) in [
            (device("/etc/hostname", "/dev/x", "rwm"), "not a device"),
            (device("dev/null", "/dev/x", "rwm"), "absolute"),
            (device("/dev/null", "x", "rwm"), "absolute"),
            (device("/dev/null", "/dev/x", "rwx"), "combination"),
            (device("/dev/does-not-exist", "/dev/x", ""), "does-not-exist"),
        ] {
            match container_devices(&[d], false) {
                Err(Error::InvalidArgument(m)) => assert!(m.contains(word), "{m}"),
                other => panic!("expected InvalidArgument with {word:?}, got {other:?}"),
            }
        }
    }

    #[test]
    fn privileged_gets_host_devices_and_allow_all() {
        let out = container_devices(&[], true).unwrap();
        assert_eq!(out.cgroup.len(), 1);
        assert_eq!(out.cgroup[0].to_string(), "a *:* rwm");
        assert!(out.cgroup[0].allow());
        assert!(out.nodes.iter().any(|n| n.path() == Path::new("/dev/null")));
        assert!(out.nodes.iter().all(|n| !n.path().starts_with("/dev/pts")));
    }

    #[test]
    fn a_directory_of_devices_maps_below_the_container_path() {
        // /dev/pts is skipped only at /dev's top level; asked for explicitly it maps.
        let out = container_devices(&[device("/dev/pts", "/dev/hostpts", "r")], false).unwrap();
        assert!(out.nodes.iter().all(|n| n.path().starts_with("/dev/hostpts")));
        assert!(out.nodes.iter().any(|n| n.path() == Path::new("/dev/hostpts/ptmx")));
    }
}
