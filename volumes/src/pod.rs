//! A pod's volumes directory, laid out like kubelet's
//! (`<pods_dir>/<pod uid>/volumes/<plugin>/<volume name>`), and the setup/teardown calls
//! that dispatch to each volume type.
//!
//! Both directions are idempotent, because the caller retries until the pod's volumes
//! match its spec (as kubelet's volume manager does): setting up a volume already set up
//! succeeds without doing anything, and tearing down one that is gone succeeds too.
//!
//! Every call blocks (mount(2), umount(2), `mount -t nfs` up to its deadline): async callers
//! run them on a blocking thread (`tokio::task::spawn_blocking`).

use std::path::{Path, PathBuf};

use crate::empty_dir::{self, EmptyDir};
use crate::host_path::HostPath;
use crate::local::{self, Local};
use crate::nfs::{self, Nfs, NfsDefaults};
use crate::{Error, Result};

/// A volume of a pod spec: its name and where its data comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Volume {
    pub name: String,
    pub source: VolumeSource,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VolumeSource {
    EmptyDir(EmptyDir),
    HostPath(HostPath),
    Nfs(Nfs),
    Local(Local),
}

impl VolumeSource {
    /// The plugin directory name, kubelet's (`/` escaped as `~`), so operators find their way.
    /// `None` for hostPath, which lives where it is.
    pub fn plugin(&self) -> Option<&'static str> {
        match self {
            VolumeSource::EmptyDir(_) => Some(EMPTY_DIR),
            VolumeSource::HostPath(_) => None,
            VolumeSource::Nfs(_) => Some(NFS),
            VolumeSource::Local(_) => Some(LOCAL),
        }
    }
}

const EMPTY_DIR: &str = "kubernetes.io~empty-dir";
const NFS: &str = "kubernetes.io~nfs";
const LOCAL: &str = "kubernetes.io~local-volume";

impl Volume {
    pub fn new(name: impl Into<String>, source: VolumeSource) -> Volume {
        Volume { name: name.into(), source }
    }
}

/// The volumes of one pod.
#[derive(Debug, Clone)]
pub struct PodVolumes {
    uid: String,
    dir: PathBuf,
    nfs: NfsDefaults,
}

impl PodVolumes {
    /// The volumes of pod `uid` under `pods_dir` (created if missing, then resolved, so the
    /// paths we compare with `/proc/self/mountinfo` are the kernel's).
    pub fn new(pods_dir: &Path, uid: &str) -> Result<PodVolumes> {
        check_name("pod uid", uid)?;
        std::fs::create_dir_all(pods_dir).map_err(Error::io("cannot create", pods_dir))?;
        let pods_dir = std::fs::canonicalize(pods_dir).map_err(Error::io("cannot resolve", pods_dir))?;
        Ok(PodVolumes { uid: uid.to_string(), dir: pods_dir.join(uid).join("volumes"), nfs: NfsDefaults::default() })
    }

    /// The node's NFS settings (default version, mount deadline).
    pub fn with_nfs_defaults(mut self, nfs: NfsDefaults) -> PodVolumes {
        self.nfs = nfs;
        self
    }

    /// `<pods_dir>/<uid>/volumes`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the volume's files are on the node: the source of the containers' mounts.
    pub fn path(&self, volume: &Volume) -> Result<PathBuf> {
        check_name("volume name", &volume.name)?;
        Ok(match &volume.source {
            VolumeSource::HostPath(h) => h.path.clone(),
            VolumeSource::EmptyDir(_) => self.dir.join(EMPTY_DIR).join(&volume.name),
            VolumeSource::Nfs(_) => self.dir.join(NFS).join(&volume.name),
            VolumeSource::Local(_) => self.dir.join(LOCAL).join(&volume.name),
        })
    }

    /// Makes the volume ready and returns [`PodVolumes::path`].
    pub fn setup(&self, volume: &Volume) -> Result<PathBuf> {
        let path = self.path(volume)?;
        let _span = tracing::info_span!("volume_setup", pod_uid = %self.uid, volume = %volume.name).entered();
        match &volume.source {
            VolumeSource::EmptyDir(e) => e.setup(&path)?,
            VolumeSource::HostPath(h) => return h.setup(),
            VolumeSource::Nfs(n) => n.setup(&path, &self.nfs)?,
            VolumeSource::Local(l) => l.setup(&path)?,
        }
        tracing::debug!(path = %path.display(), "volume ready");
        Ok(path)
    }

    /// Undoes [`PodVolumes::setup`]. `force` is for a pod being deleted whose NFS server
    /// (or disk) is gone: busy mounts are then forced and detached instead of reported.
    pub fn teardown(&self, volume: &Volume, force: bool) -> Result<()> {
        let path = self.path(volume)?;
        let _span = tracing::info_span!("volume_teardown", pod_uid = %self.uid, volume = %volume.name).entered();
        teardown_at(volume.source.plugin(), &path, force)
    }

    /// Tears down every volume found under the pod's directory, spec or no spec (after a
    /// restart the spec may be gone), then removes the directory. The first error is
    /// returned after trying all of them.
    pub fn teardown_all(&self, force: bool) -> Result<()> {
        let _span = tracing::info_span!("volumes_teardown_all", pod_uid = %self.uid).entered();
        let mut first_error = None;
        for plugin in [EMPTY_DIR, NFS, LOCAL] {
            let plugin_dir = self.dir.join(plugin);
            let entries = match std::fs::read_dir(&plugin_dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("cannot list", plugin_dir)(e)),
            };
            for entry in entries.flatten() {
                if let Err(e) = teardown_at(Some(plugin), &entry.path(), force) {
                    first_error.get_or_insert(e);
                }
            }
            if let Err(e) = remove_if_empty(&plugin_dir) {
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        remove_if_empty(&self.dir)
    }
}

fn teardown_at(plugin: Option<&str>, path: &Path, force: bool) -> Result<()> {
    match plugin {
        Some(EMPTY_DIR) => empty_dir::teardown(path),
        Some(NFS) => nfs::teardown(path, force),
        Some(LOCAL) => local::teardown(path, force),
        // hostPath: nothing was made for the pod.
        _ => Ok(()),
    }
}

fn remove_if_empty(dir: &Path) -> Result<()> {
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("cannot remove", dir)(e)),
    }
}

/// Names become path components: no separators, no `.`/`..`, nothing empty.
fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Error::InvalidArgument(format!("{what} {name:?} cannot be a directory name")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_kubelets_layout() {
        let dir = tempfile::tempdir().unwrap();
        let pods = PodVolumes::new(dir.path(), "uid-1").unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap().join("uid-1/volumes");
        let cache = Volume::new("cache", VolumeSource::EmptyDir(EmptyDir::disk()));
        assert_eq!(pods.path(&cache).unwrap(), base.join("kubernetes.io~empty-dir/cache"));
        let host = Volume::new("logs", VolumeSource::HostPath(HostPath::new("/var/log", Default::default())));
        assert_eq!(pods.path(&host).unwrap(), PathBuf::from("/var/log"));
    }

    #[test]
    fn names_cannot_escape_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(PodVolumes::new(dir.path(), ".."), Err(Error::InvalidArgument(_))));
        let pods = PodVolumes::new(dir.path(), "uid").unwrap();
        for name in ["", "..", "a/b"] {
            let v = Volume::new(name, VolumeSource::EmptyDir(EmptyDir::disk()));
            assert!(matches!(pods.setup(&v), Err(Error::InvalidArgument(_))), "{name:?}");
        }
    }
}
