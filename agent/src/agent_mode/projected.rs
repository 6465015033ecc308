//! Files that kubelet projects into a volume (downwardAPI here; configMap and secret use
//! the same layout), written the way kubelet's atomic writer does so a container never
//! sees half an update: the files go into a fresh `..<timestamp>` directory, `..data`
//! is switched to it with one rename, and each top-level name is a symlink through
//! `..data`. Blocking: call from a blocking thread.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path};

/// One file of the volume: a relative path, its bytes, its mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Kubelet's mode for projected files that name none (`defaultMode`'s default).
pub const DEFAULT_MODE: u32 = 0o644;

const DATA: &str = "..data";

/// Replaces the volume's content at `dir` (which exists) with `files`.
pub fn write(dir: &Path, files: &[File]) -> Result<(), String> {
    let mut top = BTreeSet::new();
    for f in files {
        let path = Path::new(&f.path);
        let ok = !f.path.is_empty()
            && !f.path.starts_with("..")
            && path.components().all(|c| matches!(c, Component::Normal(_)));
        if !ok {
            return Err(format!("item path {:?} must be relative, without '..', and not start with '..'", f.path));
        }
        if let Some(Component::Normal(first)) = path.components().next() {
            top.insert(first.to_string_lossy().into_owned());
        }
    }
    let io = |what: &str, p: &Path| {
        let (what, p) = (what.to_string(), p.display().to_string());
        move |e: std::io::Error| format!("{what} {p}: {e}")
    };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let version = format!("..{nanos}");
    let staged = dir.join(&version);
    std::fs::create_dir(&staged).map_err(io("cannot create", &staged))?;
    for f in files {
        let target = staged.join(&f.path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io("cannot create", parent))?;
        }
        std::fs::write(&target, &f.data).map_err(io("cannot write", &target))?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(f.mode & 0o7777)).map_err(io("cannot chmod", &target))?;
    }
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755)).map_err(io("cannot chmod", &staged))?;
    // Switch `..data` in one step.
    let old = std::fs::read_link(dir.join(DATA)).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&version, &tmp).map_err(io("cannot link", &tmp))?;
    std::fs::rename(&tmp, dir.join(DATA)).map_err(io("cannot switch", &dir.join(DATA)))?;
    for name in &top {
        let link = dir.join(name);
        if std::fs::read_link(&link).is_err() {
            std::os::unix::fs::symlink(Path::new(DATA).join(name), &link).map_err(io("cannot link", &link))?;
        }
    }
    // What the previous version had and this one has not.
    for entry in std::fs::read_dir(dir).map_err(io("cannot list", dir))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !top.contains(&name) && std::fs::read_link(entry.path()).is_ok() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if let Some(old) = old.filter(|o| o != Path::new(&version)) {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_appear_through_data_and_updates_swap_whole() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let f = |path: &str, data: &str, mode| File { path: path.into(), data: data.into(), mode };
        write(d, &[f("name", "web", 0o644), f("sub/labels", "app=\"web\"", 0o600)]).unwrap();
        assert_eq!(std::fs::read_to_string(d.join("name")).unwrap(), "web");
        assert_eq!(std::fs::read_to_string(d.join("sub/labels")).unwrap(), "app=\"web\"");
        assert_eq!(std::fs::read_link(d.join("name")).unwrap(), Path::new("..data/name"));
        let mode = std::fs::metadata(d.join("sub/labels")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let first = std::fs::read_link(d.join(DATA)).unwrap();
        write(d, &[f("name", "web2", 0o644)]).unwrap();
        assert_eq!(std::fs::read_to_string(d.join("name")).unwrap(), "web2");
        assert!(!d.join("sub").exists(), "a name no longer projected goes");
        assert!(!d.join(first).exists(), "the previous version goes");
        for bad in ["../x", "/etc/x", "..hidden", "a/../../b", ""] {
            assert!(write(d, &[f(bad, "", 0o644)]).is_err(), "{bad}");
        }
    }
}
