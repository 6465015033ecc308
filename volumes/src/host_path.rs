//! `hostPath`: a path on the node handed to the pod as it is. Nothing is mounted under the
//! pod's volumes directory (kubelet does the same): setup checks the `type` and returns the
//! path itself; teardown has nothing to undo.
//!
//! The checks follow the Kubernetes definitions: symlinks are followed; `*OrCreate` create
//! what is missing (`DirectoryOrCreate` with its parents, mode 0755; `FileOrCreate` an empty
//! file, mode 0644, only when the parent directory exists) and otherwise check the type.

use std::fmt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// `hostPath.type`. `Unset` (the empty string) checks nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum HostPathType {
    #[default]
    #[serde(rename = "")]
    Unset,
    DirectoryOrCreate,
    Directory,
    FileOrCreate,
    File,
    Socket,
    CharDevice,
    BlockDevice,
}

impl HostPathType {
    /// Parses the Kubernetes spelling (`""`, `"DirectoryOrCreate"`, ...).
    pub fn parse(s: &str) -> Result<HostPathType> {
        Ok(match s {
            "" => HostPathType::Unset,
            "DirectoryOrCreate" => HostPathType::DirectoryOrCreate,
            "Directory" => HostPathType::Directory,
            "FileOrCreate" => HostPathType::FileOrCreate,
            "File" => HostPathType::File,
            "Socket" => HostPathType::Socket,
            "CharDevice" => HostPathType::CharDevice,
            "BlockDevice" => HostPathType::BlockDevice,
            other => return Err(Error::InvalidArgument(format!("unknown hostPath type {other:?}"))),
        })
    }

    /// The kind of file this type wants, if it checks one.
    fn wants(self) -> Option<FileKind> {
        match self {
            HostPathType::Unset => None,
            HostPathType::DirectoryOrCreate | HostPathType::Directory => Some(FileKind::Directory),
            HostPathType::FileOrCreate | HostPathType::File => Some(FileKind::File),
            HostPathType::Socket => Some(FileKind::Socket),
            HostPathType::CharDevice => Some(FileKind::CharDevice),
            HostPathType::BlockDevice => Some(FileKind::BlockDevice),
        }
    }
}

impl fmt::Display for HostPathType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            HostPathType::Unset => "\"\"",
            HostPathType::DirectoryOrCreate => "DirectoryOrCreate (a directory)",
            HostPathType::Directory => "Directory",
            HostPathType::FileOrCreate => "FileOrCreate (a regular file)",
            HostPathType::File => "File",
            HostPathType::Socket => "Socket",
            HostPathType::CharDevice => "CharDevice",
            HostPathType::BlockDevice => "BlockDevice",
        };
        f.write_str(s)
    }
}

/// What a path turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Missing,
    Directory,
    File,
    Socket,
    CharDevice,
    BlockDevice,
    Fifo,
}

impl FileKind {
    /// The kind of `path`, following symlinks (a dangling one is `Missing`).
    pub fn of(path: &Path) -> Result<FileKind> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileKind::Missing),
            Err(e) => return Err(Error::io("cannot stat", path)(e)),
        };
        let t = meta.file_type();
        Ok(if t.is_dir() {
            FileKind::Directory
        } else if t.is_file() {
            FileKind::File
        } else if t.is_socket() {
            FileKind::Socket
        } else if t.is_char_device() {
            FileKind::CharDevice
        } else if t.is_block_device() {
            FileKind::BlockDevice
        } else {
            FileKind::Fifo
        })
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Missing => "nothing (it does not exist)",
            FileKind::Directory => "a directory",
            FileKind::File => "a regular file",
            FileKind::Socket => "a socket",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Fifo => "a FIFO",
        })
    }
}

/// A `hostPath` volume source.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostPath {
    pub path: PathBuf,
    #[serde(default, rename = "type")]
    pub kind: HostPathType,
}

impl HostPath {
    pub fn new(path: impl Into<PathBuf>, kind: HostPathType) -> HostPath {
        HostPath { path: path.into(), kind }
    }

    /// Checks (and for `*OrCreate` creates) the path; returns it for the container mount.
    /// Running it again is harmless: what it created now exists with the right type.
    pub fn setup(&self) -> Result<PathBuf> {
        if !self.path.is_absolute() {
            return Err(Error::InvalidArgument(format!("hostPath {:?} must be absolute", self.path)));
        }
        let found = FileKind::of(&self.path)?;
        let found = match (self.kind, found) {
            (HostPathType::DirectoryOrCreate, FileKind::Missing) => {
                create_dir(&self.path)?;
                FileKind::of(&self.path)?
            }
            (HostPathType::FileOrCreate, FileKind::Missing) => {
                create_file(&self.path)?;
                FileKind::of(&self.path)?
            }
            (_, found) => found,
        };
        match self.kind.wants() {
            Some(wanted) if wanted != found => {
                Err(Error::HostPathType { path: self.path.clone(), expected: self.kind, found })
            }
            _ => Ok(self.path.clone()),
        }
    }
}

fn create_dir(path: &Path) -> Result<()> {
    match std::fs::DirBuilder::new().recursive(true).mode(0o755).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(Error::io("cannot create", path)(e)),
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(Error::io("cannot chmod", path))
}

/// An empty file, 0644; the parent must exist (FileOrCreate does not create directories).
fn create_file(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent()
        && !parent.is_dir()
    {
        return Err(Error::NotFound { path: parent.to_path_buf() });
    }
    // create(true) without truncate: a file created meanwhile by someone else is kept.
    let file = std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o644).open(path);
    file.map_err(Error::io("cannot create", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(Error::io("cannot chmod", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kubernetes_spellings() {
        assert_eq!(HostPathType::parse("").unwrap(), HostPathType::Unset);
        assert_eq!(HostPathType::parse("BlockDevice").unwrap(), HostPathType::BlockDevice);
        assert!(matches!(HostPathType::parse("directory"), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn the_error_names_path_and_both_types() {
        let err = Error::HostPathType { path: "/x".into(), expected: HostPathType::Socket, found: FileKind::Directory };
        assert_eq!(err.to_string(), "hostPath /x: type check failed: expected Socket, found a directory");
    }
}
