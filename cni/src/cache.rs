//! ADD results kept on disk, one file per attachment, so that CHECK and DEL can hand plugins
//! the `prevResult` (and the same configuration and arguments) after a daemon restart.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::CniError;

const KIND: &str = "capstan-cni-result/v1";

/// Everything DEL needs to repeat the parameters of ADD.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CacheEntry {
    pub kind: String,
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    pub netns: PathBuf,
    pub cni_args: String,
    pub runtime_config: BTreeMap<String, serde_json::Value>,
    /// The configuration list ADD ran, so DEL runs the same plugins even if the conf dir changed.
    pub config: serde_json::Value,
    pub config_path: PathBuf,
    /// The final ADD result as the last plugin printed it.
    pub result: serde_json::Value,
}

impl CacheEntry {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        network: &str,
        container_id: &str,
        ifname: &str,
        netns: &Path,
        cni_args: String,
        runtime_config: BTreeMap<String, serde_json::Value>,
        config: serde_json::Value,
        config_path: &Path,
        result: serde_json::Value,
    ) -> Self {
        CacheEntry {
            kind: KIND.into(),
            network: network.into(),
            container_id: container_id.into(),
            ifname: ifname.into(),
            netns: netns.to_path_buf(),
            cni_args,
            runtime_config,
            config,
            config_path: config_path.to_path_buf(),
            result,
        }
    }
}

/// `<dir>/<network>-<container_id>-<ifname>`; the network name is reduced to the characters
/// the spec allows so a hostile name cannot leave the directory.
pub(crate) fn path(dir: &Path, network: &str, container_id: &str, ifname: &str) -> PathBuf {
    let network: String = network
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '_' })
        .collect();
    dir.join(format!("{network}-{container_id}-{ifname}"))
}

/// Writes the entry atomically (temp file, fsync, rename, fsync dir), readable by root only.
pub(crate) fn write(dir: &Path, entry: &CacheEntry) -> Result<PathBuf, CniError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CniError::Cache { path, source }
    };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(err(dir))?;
    let target = path(dir, &entry.network, &entry.container_id, &entry.ifname);
    let file_name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
    let data =
        serde_json::to_vec_pretty(entry).map_err(|e| CniError::Cache { path: target.clone(), source: e.into() })?;
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err(&target))?;
    Ok(target)
}

/// A cache file and its parsed entry, or why it could not be read.
pub(crate) type Found = (PathBuf, Result<CacheEntry, String>);

/// The cached entries of one attachment, whatever network they were made on. A file that
/// cannot be parsed is returned as `Err(reason)` so DEL can still remove it.
pub(crate) fn find(dir: &Path, container_id: &str, ifname: &str) -> Result<Vec<Found>, CniError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(CniError::Cache { path: dir.to_path_buf(), source }),
    };
    let suffix = format!("-{container_id}-{ifname}");
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.ends_with(&suffix) {
            continue;
        }
        let path = entry.path();
        let parsed = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|data| serde_json::from_slice::<CacheEntry>(&data).map_err(|e| e.to_string()))
            .and_then(|c| {
                if c.kind == KIND && c.container_id == container_id && c.ifname == ifname {
                    Ok(c)
                } else {
                    Err(format!("belongs to {} ({}), kind {}", c.container_id, c.ifname, c.kind))
                }
            });
        // A name that merely ends the same way (another id as a suffix of this one) is not ours.
        if let Err(reason) = &parsed
            && reason.starts_with("belongs to")
        {
            continue;
        }
        found.push((path, parsed));
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

/// Removes a cache file; one that is already gone is fine (DEL is idempotent).
pub(crate) fn remove(path: &Path) -> Result<(), CniError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(CniError::Cache { path: path.to_path_buf(), source: e })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(network: &str, id: &str) -> CacheEntry {
        CacheEntry::new(
            network,
            id,
            "eth0",
            Path::new("/run/netns/x"),
            "IgnoreUnknown=1".into(),
            BTreeMap::new(),
            serde_json::json!({"name": network}),
            Path::new("/etc/cni/net.d/10.conflist"),
            serde_json::json!({"cniVersion": "1.0.0"}),
        )
    }

    #[test]
    fn write_find_remove() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cni-results");
        let p = write(&cache, &entry("pod-net", "abc")).unwrap();
        assert_eq!(p, cache.join("pod-net-abc-eth0"));
        write(&cache, &entry("other", "xabc")).unwrap();
        let found = find(&cache, "abc", "eth0").unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].1.as_ref().unwrap().network, "pod-net");
        remove(&p).unwrap();
        remove(&p).unwrap();
        assert!(find(&cache, "abc", "eth0").unwrap().is_empty());
        assert!(find(&dir.path().join("missing"), "abc", "eth0").unwrap().is_empty());
    }

    #[test]
    fn corrupt_file_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("net-abc-eth0"), "{").unwrap();
        let found = find(dir.path(), "abc", "eth0").unwrap();
        assert_eq!(found.len(), 1);
        assert!(found[0].1.is_err());
    }

    #[test]
    fn network_name_cannot_escape() {
        assert_eq!(path(Path::new("/c"), "../x", "id", "eth0"), PathBuf::from("/c/.._x-id-eth0"));
    }
}
