//! `configMap` and `secret` volumes of API pods: the directory comes from `capstan-volumes`
//! as an emptyDir (on disk for a configMap; on a tmpfs for a secret, so secret data never
//! reaches the node's disk, as with kubelet), then the keys are written into it as files
//! (items, paths and modes from [`super::config_data::volume_files`]). The data is what was
//! fetched when the pod started; later edits of the objects do not reach the files.
//!
//! The directories sit under the pod's `kubernetes.io~empty-dir/`, so the crate's
//! `teardown_all` removes them (and unmounts the secret's tmpfs) with the pod's other volumes.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use capstan_volumes::{EmptyDir, VolumeSource};
use k8s_openapi::api::core::v1 as k8s;

use super::config_data::{ConfigData, VolumeFile, volume_files};

/// The crate's volume for a configMap or secret volume; `None` for any other kind.
pub fn source(v: &k8s::Volume) -> Option<VolumeSource> {
    if v.config_map.is_some() {
        Some(VolumeSource::EmptyDir(EmptyDir::disk()))
    } else if v.secret.is_some() {
        Some(VolumeSource::EmptyDir(EmptyDir::memory(None)))
    } else {
        None
    }
}

/// Writes the files of every configMap and secret volume of `spec` into its directory
/// (from `paths`, by volume name). Blocking: call from a blocking thread.
pub fn populate(spec: &k8s::PodSpec, paths: &HashMap<String, PathBuf>, data: &ConfigData) -> Result<(), String> {
    for v in spec.volumes.iter().flatten() {
        let Some(files) = volume_files(v, data) else { continue };
        let dir = paths.get(&v.name).ok_or_else(|| format!("volume {:?} was not set up", v.name))?;
        for file in files? {
            write(dir, &file).map_err(|e| format!("volume {:?}: {}: {e}", v.name, file.path))?;
        }
    }
    Ok(())
}

/// One file, whole or not at all (temporary name, then rename), with its mode exactly
/// (not narrowed by the daemon's umask).
fn write(dir: &Path, file: &VolumeFile) -> std::io::Result<()> {
    let path = dir.join(&file.path);
    let parent = path.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = parent.join(format!("..{name}.tmp"));
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(file.mode).open(&tmp)?;
    f.write_all(&file.data)?;
    f.sync_all()?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(file.mode))?;
    std::fs::rename(&tmp, &path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn files_land_with_their_paths_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let spec: k8s::PodSpec = serde_json::from_value(serde_json::json!({"containers": [], "volumes": [
            {"name": "cfg", "configMap": {"name": "app", "items": [{"key": "a", "path": "sub/a.conf", "mode": 0o400}]}},
            {"name": "other", "emptyDir": {}}
        ]}))
        .unwrap();
        let cm: k8s::ConfigMap = serde_json::from_value(serde_json::json!({"data": {"a": "x=1\n", "b": "unused"}})).unwrap();
        let data = ConfigData { config_maps: BTreeMap::from([("app".to_string(), Some(cm))]), ..Default::default() };
        let paths = HashMap::from([("cfg".to_string(), dir.path().to_path_buf())]);
        populate(&spec, &paths, &data).unwrap();
        let file = dir.path().join("sub/a.conf");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "x=1\n");
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o400);
        assert!(!dir.path().join("b").exists(), "only the listed items");
        assert!(matches!(source(&spec.volumes.as_ref().unwrap()[0]), Some(VolumeSource::EmptyDir(e)) if e == EmptyDir::disk()));
        assert!(source(&spec.volumes.as_ref().unwrap()[1]).is_none());
    }
}
