//! NVIDIA GPU discovery from the node's device nodes and the driver's procfs files, all read
//! below a configurable root so tests can build a fake tree with `mknod`'d char devices.
//!
//! A GPU is a character device `/dev/nvidia<N>`; its model, PCI bus id and UUID come from
//! `/proc/driver/nvidia/gpus/<bus id>/information` (matched by its "Device Minor" line).
//! `/dev/nvidiactl` and `/dev/nvidia-uvm*` are the driver's control nodes every GPU
//! container also needs.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// One GPU found on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpu {
    /// N of `/dev/nvidia<N>`: the device plugin's device id and the CDI device name.
    pub index: u32,
    /// The device node as seen on the host (`/dev/nvidia0`), without the discovery root.
    pub dev_path: PathBuf,
    pub major: u64,
    pub minor: u64,
    /// "Tesla T4"; empty when the driver's information file is missing.
    pub model: String,
    /// PCI location, e.g. `0000:00:1e.0`.
    pub bus_id: String,
    pub uuid: String,
}

/// GPUs and control nodes found under a root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuInventory {
    /// Sorted by index.
    pub gpus: Vec<Gpu>,
    /// `/dev/nvidiactl`, `/dev/nvidia-uvm`, `/dev/nvidia-uvm-tools` that exist (host paths).
    pub control_nodes: Vec<PathBuf>,
}

impl GpuInventory {
    /// The model of the first GPU, which GFD reports as the node's product.
    pub fn product(&self) -> Option<&str> {
        self.gpus.iter().map(|g| g.model.as_str()).find(|m| !m.is_empty())
    }
}

/// Finds the GPUs under `root` (`/` on a real node). A missing `/dev` or procfs directory
/// means no GPU, not an error: most nodes have none.
pub fn discover(root: &Path) -> std::io::Result<GpuInventory> {
    let dev = root.join("dev");
    let mut inventory = GpuInventory::default();
    let entries = match std::fs::read_dir(&dev) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(inventory),
        Err(e) => return Err(e),
    };
    let infos = read_informations(root);
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(meta) = char_device(&entry.path()) else { continue };
        let host_path = Path::new("/dev").join(&name);
        if let Some(index) = gpu_index(&name) {
            let (major, minor) = (nix::sys::stat::major(meta.rdev()), nix::sys::stat::minor(meta.rdev()));
            let info = infos.iter().find(|i| i.minor == Some(minor)).cloned().unwrap_or_default();
            inventory.gpus.push(Gpu {
                index,
                dev_path: host_path,
                major,
                minor,
                model: info.model,
                bus_id: info.bus_id,
                uuid: info.uuid,
            });
        } else if name == "nvidiactl" || name.starts_with("nvidia-uvm") {
            inventory.control_nodes.push(host_path);
        }
    }
    inventory.gpus.sort_by_key(|g| g.index);
    inventory.control_nodes.sort();
    Ok(inventory)
}

/// Whether `/dev/nvidia<index>` is still a character device under `root`: the device
/// plugin's health check.
pub fn is_present(root: &Path, gpu: &Gpu) -> bool {
    let rel = gpu.dev_path.strip_prefix("/").unwrap_or(&gpu.dev_path);
    char_device(&root.join(rel)).is_some()
}

fn char_device(path: &Path) -> Option<std::fs::Metadata> {
    std::fs::metadata(path).ok().filter(|m| m.file_type().is_char_device())
}

/// `nvidia<digits>` → the digits; `nvidiactl`, `nvidia-uvm`, `nvidia-modeset` are not GPUs.
fn gpu_index(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("nvidia")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[derive(Debug, Clone, Default)]
struct Information {
    minor: Option<u64>,
    model: String,
    bus_id: String,
    uuid: String,
}

fn read_informations(root: &Path) -> Vec<Information> {
    let dir = root.join("proc/driver/nvidia/gpus");
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path().join("information")).ok()?;
            let mut info = parse_information(&text);
            if info.bus_id.is_empty() {
                info.bus_id = e.file_name().to_string_lossy().into_owned();
            }
            Some(info)
        })
        .collect()
}

/// Parses the driver's `Key:   value` lines.
fn parse_information(text: &str) -> Information {
    let mut info = Information::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        match key.trim() {
            "Model" => info.model = value.to_string(),
            "Bus Location" => info.bus_id = value.to_string(),
            "GPU UUID" => info.uuid = value.to_string(),
            "Device Minor" => info.minor = value.parse().ok(),
            _ => {}
        }
    }
    info
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Makes a character device node (root only; tests run as root here).
    pub(crate) fn mknod_char(path: &Path, major: u64, minor: u64) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        nix::sys::stat::mknod(
            path,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(major, minor),
        )
        .unwrap();
    }

    pub(crate) fn information(model: &str, bus: &str, minor: u32) -> String {
        format!(
            "Model: \t\t {model}\nIRQ:   \t\t 42\nGPU UUID: \t GPU-{minor:08x}-fake\nVideo BIOS: \t ??.??.??.??.??\n\
             Bus Type: \t PCIe\nDMA Size: \t 47 bits\nBus Location: \t {bus}\nDevice Minor: \t {minor}\n"
        )
    }

    /// A node with two GPUs (minors 0 and 1), the control nodes and one stray file.
    pub(crate) fn fake_tree(root: &Path) {
        mknod_char(&root.join("dev/nvidia0"), 195, 0);
        mknod_char(&root.join("dev/nvidia1"), 195, 1);
        mknod_char(&root.join("dev/nvidiactl"), 195, 255);
        mknod_char(&root.join("dev/nvidia-uvm"), 240, 0);
        mknod_char(&root.join("dev/nvidia-modeset"), 195, 254);
        std::fs::write(root.join("dev/nvidia7"), b"a regular file is no GPU").unwrap();
        for (bus, minor) in [("0000:00:1e.0", 0), ("0000:00:1f.0", 1)] {
            let dir = root.join("proc/driver/nvidia/gpus").join(bus);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("information"), information("Tesla T4", bus, minor)).unwrap();
        }
    }

    #[test]
    fn gpus_come_from_char_devices_with_procfs_details() {
        let root = tempfile::tempdir().unwrap();
        fake_tree(root.path());
        let inv = discover(root.path()).unwrap();
        assert_eq!(inv.gpus.len(), 2, "{inv:?}");
        let g1 = &inv.gpus[1];
        assert_eq!((g1.index, g1.major, g1.minor), (1, 195, 1));
        assert_eq!(g1.dev_path, PathBuf::from("/dev/nvidia1"));
        assert_eq!(g1.model, "Tesla T4");
        assert_eq!(g1.bus_id, "0000:00:1f.0");
        assert_eq!(g1.uuid, "GPU-00000001-fake");
        assert_eq!(inv.control_nodes, vec![PathBuf::from("/dev/nvidia-uvm"), PathBuf::from("/dev/nvidiactl")]);
        assert_eq!(inv.product(), Some("Tesla T4"));
        assert!(is_present(root.path(), g1));
        std::fs::remove_file(root.path().join("dev/nvidia1")).unwrap();
        assert!(!is_present(root.path(), g1));
    }

    #[test]
    fn no_dev_dir_or_no_driver_files_is_no_gpu_or_no_model() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(discover(root.path()).unwrap(), GpuInventory::default());
        mknod_char(&root.path().join("dev/nvidia3"), 195, 3);
        let inv = discover(root.path()).unwrap();
        assert_eq!(inv.gpus[0].index, 3);
        assert_eq!(inv.product(), None);
    }

    #[test]
    fn only_nvidia_digits_are_gpus() {
        assert_eq!(gpu_index("nvidia12"), Some(12));
        for name in ["nvidiactl", "nvidia-uvm", "nvidia", "nvidia-modeset", "nvidia0a"] {
            assert_eq!(gpu_index(name), None, "{name}");
        }
    }
}
