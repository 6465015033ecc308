//! The volume types against the real kernel: tmpfs, bind mounts, loop devices with ext4,
//! hostPath checks on real sockets and devices. Needs root (skips, saying so, without it).
//! Every test removes what it mounted and detaches the loop devices it attached.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use capstan_volumes::{
    EmptyDir, Error, FileKind, HostPath, HostPathType, Local, Nfs, PodVolumes, Volume, VolumeMode, VolumeSource,
};

fn root() -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    if !root {
        eprintln!("skipped: needs root for mounts");
    }
    root
}

/// A scratch directory, resolved (mountinfo shows resolved paths).
fn scratch() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new().prefix("capstan-vol-").tempdir().unwrap();
    let path = std::fs::canonicalize(dir.path()).unwrap();
    (dir, path)
}

/// The mountinfo lines of mounts at exactly `path`.
fn mounts_at(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines().filter(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap())).map(String::from).collect()
}

/// Mountinfo lines of anything at or below `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines().filter(|l| l.split(' ').nth(4).is_some_and(|p| Path::new(p).starts_with(dir))).map(String::from).collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn errno_of(e: &std::io::Error) -> Option<nix::Error> {
    e.raw_os_error().map(nix::Error::from_raw)
}

fn write_bytes(path: &Path, n: usize) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(&vec![0x5a; n])?;
    f.sync_all()
}

/// A loop device over an image file; detached on drop.
struct Loop {
    dev: PathBuf,
}

impl Loop {
    fn new(image: &Path, size_mb: u64, ext4: bool) -> Loop {
        std::fs::File::create(image).unwrap().set_len(size_mb << 20).unwrap();
        if ext4 {
            let out = Command::new("mkfs.ext4").args(["-q", "-F"]).arg(image).output().unwrap();
            assert!(out.status.success(), "mkfs.ext4: {}", String::from_utf8_lossy(&out.stderr));
        }
        let out = Command::new("losetup").args(["-f", "--show"]).arg(image).output().unwrap();
        assert!(out.status.success(), "losetup: {}", String::from_utf8_lossy(&out.stderr));
        Loop { dev: PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()) }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// Unmounts `path` (all of its stack) on drop, for tests that mount node-side things.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        while !mounts_at(&self.0).is_empty() {
            if nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH).is_err() {
                break;
            }
        }
    }
}

/// The pod's volumes, all torn down (forced) on drop, even when the test failed half-way.
struct Pod(PodVolumes);

impl std::ops::Deref for Pod {
    type Target = PodVolumes;
    fn deref(&self) -> &PodVolumes {
        &self.0
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.0.teardown_all(true);
    }
}

fn pod_volumes(pods_dir: &Path, uid: &str) -> Pod {
    Pod(PodVolumes::new(pods_dir, uid).unwrap())
}

fn empty_dir(name: &str, e: EmptyDir) -> Volume {
    Volume::new(name, VolumeSource::EmptyDir(e))
}

#[test]
fn empty_dir_on_disk_is_a_0777_directory_whose_usage_is_measured() {
    if !root() {
        return;
    }
    let (_t, dir) = scratch();
    let pod = pod_volumes(&dir, "pod-disk");
    let v = empty_dir("cache", EmptyDir { size_limit: Some(64 << 10), ..EmptyDir::disk() });
    let path = pod.setup(&v).unwrap();
    assert_eq!(path, dir.join("pod-disk/volumes/kubernetes.io~empty-dir/cache"));
    assert_eq!(mode(&path), 0o777);
    assert!(mounts_at(&path).is_empty(), "a disk emptyDir is no mount");
    let VolumeSource::EmptyDir(e) = v.source else { unreachable!() };
    assert!(!e.over_limit(&path).unwrap());
    write_bytes(&path.join("a"), 100 << 10).unwrap();
    std::fs::hard_link(path.join("a"), path.join("b")).unwrap();
    let used = capstan_volumes::empty_dir::usage(&path).unwrap();
    // 100 KiB of data counted once despite the hard link, plus the directory itself.
    assert!((100 << 10..200 << 10).contains(&used), "usage {used}");
    assert!(e.over_limit(&path).unwrap(), "100 KiB is over a 64 KiB sizeLimit");
    // Setting up again keeps the data; tearing down removes it; again is fine.
    assert_eq!(pod.setup(&v).unwrap(), path);
    assert!(path.join("a").exists());
    pod.teardown(&v, false).unwrap();
    assert!(!path.exists());
    pod.teardown(&v, false).unwrap();
    pod.teardown_all(false).unwrap();
    assert!(!dir.join("pod-disk/volumes").exists());
}

#[test]
fn memory_empty_dir_is_a_tmpfs_of_size_limit_and_refuses_more() {
    if !root() {
        return;
    }
    let (_t, dir) = scratch();
    let pod = pod_volumes(&dir, "pod-mem");
    let v = empty_dir("scratch", EmptyDir::memory(Some(1 << 20)));
    let path = pod.setup(&v).unwrap();
    let lines = mounts_at(&path);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains(" - tmpfs tmpfs ") && lines[0].contains("size=1024k"), "{}", lines[0]);
    assert!(lines[0].contains("nosuid") && lines[0].contains("nodev"), "{}", lines[0]);
    assert_eq!(mode(&path), 0o777);
    // 512 KiB fits, 2 MiB does not.
    write_bytes(&path.join("small"), 512 << 10).unwrap();
    let err = write_bytes(&path.join("big"), 2 << 20).unwrap_err();
    assert_eq!(errno_of(&err), Some(nix::Error::ENOSPC), "{err}");
    // Setting up again does not stack a second tmpfs.
    pod.setup(&v).unwrap();
    assert_eq!(mounts_at(&path).len(), 1);
    pod.teardown(&v, false).unwrap();
    assert!(mounts_at(&path).is_empty());
    assert!(!path.exists());
    pod.teardown(&v, false).unwrap();

    // Without a limit: tmpfs's own default size; a zero limit is refused, not unlimited.
    let unlimited = empty_dir("unlimited", EmptyDir::memory(None));
    let path = pod.setup(&unlimited).unwrap();
    assert_eq!(mounts_at(&path).len(), 1);
    let zero = empty_dir("zero", EmptyDir::memory(Some(0)));
    assert!(matches!(pod.setup(&zero), Err(Error::InvalidArgument(_))));
    pod.teardown_all(false).unwrap();
    assert!(mounts_under(&dir).is_empty());
    assert!(!pod.dir().exists());
}

#[test]
fn teardown_refuses_to_delete_into_a_mount_inside_the_volume() {
    if !root() {
        return;
    }
    let (_t, dir) = scratch();
    let pod = pod_volumes(&dir, "pod-busy");
    let v = empty_dir("data", EmptyDir::disk());
    let path = pod.setup(&v).unwrap();
    // Something (a container's bidirectional mount, say) mounted inside the volume.
    let precious = dir.join("precious");
    std::fs::create_dir(&precious).unwrap();
    std::fs::write(precious.join("keep"), "x").unwrap();
    std::fs::create_dir(path.join("inner")).unwrap();
    nix::mount::mount(Some(&precious), &path.join("inner"), None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>)
        .unwrap();
    let guard = Unmount(path.join("inner"));
    let err = pod.teardown(&v, false).unwrap_err();
    assert!(matches!(&err, Error::Busy { mounts, .. } if mounts.contains("inner")), "{err}");
    assert!(precious.join("keep").exists());
    drop(guard);
    pod.teardown(&v, false).unwrap();
    assert!(!path.exists() && precious.join("keep").exists());
}

#[test]
fn host_path_types_are_checked_as_kubernetes_defines_them() {
    if !root() {
        return;
    }
    let (_t, dir) = scratch();
    let check = |path: &Path, kind: HostPathType| HostPath::new(path, kind).setup();
    let wrong = |path: &Path, kind: HostPathType, found: FileKind| match check(path, kind) {
        Err(Error::HostPathType { path: p, expected, found: f }) => {
            assert_eq!((p.as_path(), expected, f), (path, kind, found));
            let msg = Error::HostPathType { path: p, expected, found: f }.to_string();
            assert!(msg.contains(path.to_str().unwrap()) && msg.contains(&expected.to_string()), "{msg}");
        }
        other => panic!("{} as {kind:?}: {other:?}", path.display()),
    };

    // "": no check, not even existence.
    assert_eq!(check(&dir.join("nothing"), HostPathType::Unset).unwrap(), dir.join("nothing"));
    assert!(!dir.join("nothing").exists());

    // DirectoryOrCreate: creates with parents, 0755; an existing file is the wrong type.
    let made = dir.join("a/b/c");
    check(&made, HostPathType::DirectoryOrCreate).unwrap();
    assert_eq!(mode(&made), 0o755);
    check(&made, HostPathType::DirectoryOrCreate).unwrap();
    std::fs::write(dir.join("file"), "x").unwrap();
    wrong(&dir.join("file"), HostPathType::DirectoryOrCreate, FileKind::File);

    // Directory: must exist; symlinks are followed.
    check(&made, HostPathType::Directory).unwrap();
    std::os::unix::fs::symlink(&made, dir.join("link")).unwrap();
    check(&dir.join("link"), HostPathType::Directory).unwrap();
    wrong(&dir.join("missing"), HostPathType::Directory, FileKind::Missing);
    wrong(&dir.join("file"), HostPathType::Directory, FileKind::File);

    // FileOrCreate: an empty 0644 file, but only in an existing directory.
    let f = dir.join("new-file");
    check(&f, HostPathType::FileOrCreate).unwrap();
    assert_eq!((mode(&f), std::fs::metadata(&f).unwrap().len()), (0o644, 0));
    std::fs::write(&f, "kept").unwrap();
    check(&f, HostPathType::FileOrCreate).unwrap();
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "kept", "an existing file is not truncated");
    let orphan = dir.join("no-parent/f");
    assert!(matches!(check(&orphan, HostPathType::FileOrCreate), Err(Error::NotFound { path }) if path == dir.join("no-parent")));
    assert!(!dir.join("no-parent").exists());
    wrong(&made, HostPathType::FileOrCreate, FileKind::Directory);

    // File.
    check(&f, HostPathType::File).unwrap();
    wrong(&made, HostPathType::File, FileKind::Directory);
    wrong(&dir.join("missing"), HostPathType::File, FileKind::Missing);

    // Socket: a real listening unix socket.
    let sock = dir.join("s.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    check(&sock, HostPathType::Socket).unwrap();
    wrong(&f, HostPathType::Socket, FileKind::File);

    // CharDevice: /dev/null.
    check(Path::new("/dev/null"), HostPathType::CharDevice).unwrap();
    wrong(&sock, HostPathType::CharDevice, FileKind::Socket);

    // BlockDevice: a loop device.
    let lo = Loop::new(&dir.join("blk.img"), 8, false);
    check(&lo.dev, HostPathType::BlockDevice).unwrap();
    wrong(Path::new("/dev/null"), HostPathType::BlockDevice, FileKind::CharDevice);
    wrong(&lo.dev, HostPathType::CharDevice, FileKind::BlockDevice);

    // Through PodVolumes: the path itself, nothing under the pod directory.
    let pod = pod_volumes(&dir.join("pods"), "pod-host");
    let v = Volume::new("h", VolumeSource::HostPath(HostPath::new(&made, HostPathType::Directory)));
    assert_eq!(pod.setup(&v).unwrap(), made);
    assert!(!pod.dir().exists());
    pod.teardown(&v, false).unwrap();
    assert!(made.exists());
}

#[test]
fn local_directory_is_bind_mounted_and_read_only_means_erofs() {
    if !root() {
        return;
    }
    let (_t, dir) = scratch();
    let node = dir.join("node-disk");
    std::fs::create_dir(&node).unwrap();
    std::fs::write(node.join("existing"), "from the node").unwrap();
    let pod = pod_volumes(&dir.join("pods"), "pod-local");

    let rw = Volume::new("rw", VolumeSource::Local(Local::new(&node, false)));
    let path = pod.setup(&rw).unwrap();
    assert_eq!(mounts_at(&path).len(), 1, "bind mount at {}", path.display());
    assert_eq!(std::fs::read_to_string(path.join("existing")).unwrap(), "from the node");
    std::fs::write(path.join("from-pod"), "hi").unwrap();
    assert_eq!(std::fs::read_to_string(node.join("from-pod")).unwrap(), "hi");
    pod.setup(&rw).unwrap();
    assert_eq!(mounts_at(&path).len(), 1, "setup again stacks nothing");

    let ro = Volume::new("ro", VolumeSource::Local(Local::new(&node, true)));
    let ro_path = pod.setup(&ro).unwrap();
    let err = std::fs::write(ro_path.join("nope"), "x").unwrap_err();
    assert_eq!(errno_of(&err), Some(nix::Error::EROFS), "{err}");
    assert!(mounts_at(&ro_path)[0].split(' ').nth(5).unwrap().starts_with("ro"), "{:?}", mounts_at(&ro_path));
    // The node's directory stays writable.
    std::fs::write(node.join("still-rw"), "x").unwrap();

    // Missing path, wrong kind, volumeMode Block: refused without leaving a directory.
    let missing = Volume::new("missing", VolumeSource::Local(Local::new(dir.join("gone"), false)));
    assert!(matches!(pod.setup(&missing), Err(Error::NotFound { .. })));
    let file = Volume::new("file", VolumeSource::Local(Local::new(node.join("existing"), false)));
    assert!(matches!(pod.setup(&file), Err(Error::InvalidArgument(_))));
    let block = Local { volume_mode: VolumeMode::Block, ..Local::new(&node, false) };
    assert!(matches!(pod.setup(&Volume::new("block", VolumeSource::Local(block))), Err(Error::Unsupported(_))));
    for name in ["missing", "file", "block"] {
        assert!(!pod.dir().join("kubernetes.io~local-volume").join(name).exists(), "{name} left a directory");
    }

    // A busy mount (a file open in it): a plain teardown refuses and keeps it mounted,
    // a forced one detaches it lazily.
    let held = std::fs::File::open(path.join("existing")).unwrap();
    let err = pod.teardown(&rw, false).unwrap_err();
    assert_eq!(err.errno(), Some(nix::Error::EBUSY), "{err}");
    assert_eq!(mounts_at(&path).len(), 1);
    pod.teardown(&rw, true).unwrap();
    assert!(mounts_at(&path).is_empty() && !path.exists());
    drop(held);
    pod.teardown(&rw, false).unwrap();
    pod.teardown_all(false).unwrap();
    assert!(mounts_under(&dir).is_empty(), "{:?}", mounts_under(&dir));
    assert!(!pod.dir().exists());
    assert_eq!(std::fs::read_to_string(node.join("from-pod")).unwrap(), "hi", "teardown keeps the data");
}

#[test]
fn local_pv_on_a_loop_ext4_device() {
    if !root() {
        return;
    }
    let (_t, dir) = scratch();
    let lo = Loop::new(&dir.join("pv.img"), 32, true);
    let pod = pod_volumes(&dir.join("pods"), "pod-pv");

    // The device itself as the local path: its ext4 is mounted in the pod's directory.
    let dev = Local { fs_type: Some("ext4".into()), ..Local::new(&lo.dev, false) };
    let v = Volume::new("pv", VolumeSource::Local(dev));
    let path = pod.setup(&v).unwrap();
    let lines = mounts_at(&path);
    assert!(lines.len() == 1 && lines[0].contains(" - ext4 ") && lines[0].contains(lo.dev.to_str().unwrap()), "{lines:?}");
    std::fs::write(path.join("data"), "on ext4").unwrap();
    pod.setup(&v).unwrap();
    assert_eq!(mounts_at(&path).len(), 1);

    // A second pod reading it read-only: EROFS there, the data visible.
    let reader = pod_volumes(&dir.join("pods"), "pod-pv-ro");
    let ro = Volume::new("pv", VolumeSource::Local(Local::new(&lo.dev, true)));
    let ro_path = reader.setup(&ro).unwrap();
    assert_eq!(std::fs::read_to_string(ro_path.join("data")).unwrap(), "on ext4");
    let err = std::fs::write(ro_path.join("x"), "x").unwrap_err();
    assert_eq!(errno_of(&err), Some(nix::Error::EROFS), "{err}");
    reader.teardown(&ro, false).unwrap();
    pod.teardown(&v, false).unwrap();
    assert!(mounts_under(&dir).is_empty(), "{:?}", mounts_under(&dir));

    // The admin's way: the disk mounted on the node, its mount point as the local path.
    let disk = dir.join("mnt/disk1");
    std::fs::create_dir_all(&disk).unwrap();
    nix::mount::mount(Some(&lo.dev), &disk, Some("ext4"), nix::mount::MsFlags::empty(), None::<&str>).unwrap();
    let node_mount = Unmount(disk.clone());
    let v = Volume::new("disk1", VolumeSource::Local(Local::new(&disk, true)));
    let path = pod.setup(&v).unwrap();
    assert_eq!(std::fs::read_to_string(path.join("data")).unwrap(), "on ext4");
    let err = std::fs::write(path.join("y"), "y").unwrap_err();
    assert_eq!(errno_of(&err), Some(nix::Error::EROFS), "{err}");
    pod.teardown_all(false).unwrap();
    assert_eq!(mounts_at(&disk).len(), 1, "the node's own mount stays");
    drop(node_mount);
    assert!(mounts_under(&dir).is_empty(), "{:?}", mounts_under(&dir));

    // A device without a filesystem: a mount error, and no directory left behind.
    let raw = Loop::new(&dir.join("raw.img"), 8, false);
    let v = Volume::new("raw", VolumeSource::Local(Local::new(&raw.dev, false)));
    let err = pod.setup(&v).unwrap_err();
    assert!(matches!(err, Error::Mount { .. }), "{err}");
    assert!(!pod.path(&v).unwrap().exists());
}

#[test]
fn nfs_setup_failure_leaves_nothing_behind() {
    if !root() {
        return;
    }
    // The host kernel has no NFS client and nothing serves 127.0.0.1:/export: whichever
    // way it fails (no mount.nfs, the mount refused, no answer in time), setup reports it
    // and cleans up. The VM lane tests real NFS.
    let (_t, dir) = scratch();
    let pod = Pod(PodVolumes::new(&dir, "pod-nfs").unwrap().with_nfs_defaults(capstan_volumes::NfsDefaults {
        version: None,
        mount_timeout: std::time::Duration::from_secs(5),
    }));
    let v = Volume::new("share", VolumeSource::Nfs(Nfs::new("127.0.0.1", "/export", false)));
    if std::env::var_os("CAPSTAN_VM").is_some() {
        eprintln!("skipped: the guest kernel has NFS (vm_volumes tests it)");
        return;
    }
    let err = pod.setup(&v).unwrap_err();
    assert!(matches!(err, Error::MissingHelper { .. } | Error::MountCommand { .. } | Error::Timeout { .. }), "{err}");
    eprintln!("nfs on the host: {err}");
    assert!(!pod.path(&v).unwrap().exists());
    assert!(mounts_under(&dir).is_empty());
    pod.teardown(&v, false).unwrap();
}
