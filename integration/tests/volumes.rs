//! A volume set up by capstan-volumes, used by a real container through the daemon: the
//! pod's memory emptyDir (tmpfs, sizeLimit 1 MiB) handed over as a CRI mount, the way
//! Capstan's agent mode will do it. The container's file shows up on the host side and
//! the tmpfs limit holds inside the container.

use std::path::PathBuf;

use capstan_integration::pods::{OnePod, Volumes, cri_mount, mountinfo_at};
use capstan_volumes::{EmptyDir, PodVolumes, Volume, VolumeSource};


#[tokio::test(flavor = "multi_thread")]
async fn a_containers_memory_empty_dir_is_the_hosts_tmpfs_with_its_size_limit() {
    if !capstan_integration::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let pods_dir = tempfile::Builder::new().prefix("capstan-vols-").tempdir().unwrap();
    let mut env = OnePod::start("emptydir").await;
    let volumes = Volumes(PodVolumes::new(pods_dir.path(), "uid-emptydir").unwrap());
    let v = Volume::new("scratch", VolumeSource::EmptyDir(EmptyDir::memory(Some(1 << 20))));
    let path: PathBuf = volumes.0.setup(&v).unwrap();
    assert!(mountinfo_at(&path).iter().any(|l| l.contains("size=1024k")), "{:?}", mountinfo_at(&path));

    let script = "echo hello from the pod >/data/hello && \
                  dd if=/dev/zero of=/data/big bs=1024 count=2048; echo dd-exit=$?; \
                  grep ' /data ' /proc/mounts";
    let (code, log) = env.run("writer", script, vec![cri_mount(&path, "/data")]).await;
    assert_eq!(code, 0, "{log}");
    // Inside: 2 MiB does not fit the 1 MiB tmpfs; the container sees a tmpfs at /data.
    assert!(log.contains("No space left on device") && log.contains("dd-exit=1"), "{log}");
    assert!(log.contains("tmpfs /data tmpfs") && log.contains("size=1024k"), "{log}");
    // Outside: the same files, the big one cut at the limit.
    assert_eq!(std::fs::read_to_string(path.join("hello")).unwrap(), "hello from the pod\n");
    let big = std::fs::metadata(path.join("big")).unwrap().len();
    assert!(big < 1 << 20, "big file is {big} bytes");

    env.remove().await;
    volumes.0.teardown(&v, false).unwrap();
    assert!(mountinfo_at(&path).is_empty(), "tmpfs still mounted");
    assert!(!path.exists());
    volumes.0.teardown_all(false).unwrap();
}
