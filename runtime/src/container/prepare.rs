//! What CreateContainer needs from the image store (resolve an image, mount a rootfs) and
//! from the OCI spec builder. These are the seams to `crate::image` and `crate::spec`.

use std::path::{Path, PathBuf};

use cri_proto::v1;
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::Spec;

use crate::sandbox::SandboxRecord;
use crate::{Error, Result, Runtime};

/// An image resolved from the reference in a ContainerConfig.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The image id (config digest).
    pub id: String,
    /// A digested reference (`repo@sha256:…`) when the store knows one, else the reference.
    pub reference: String,
    pub config: ImageConfiguration,
}

/// Everything the OCI spec of a container is built from.
pub struct SpecContext<'a> {
    pub container_id: &'a str,
    pub config: &'a v1::ContainerConfig,
    pub pod: &'a SandboxRecord,
    pub image: &'a ResolvedImage,
    pub rootfs: &'a Path,
    pub cgroup: &'a Path,
}

impl Runtime {
    pub(crate) fn resolve_image(&self, reference: &str) -> Result<ResolvedImage> {
        Err(Error::FailedPrecondition(format!("cannot resolve image {reference:?}: the image store is not available yet")))
    }

    /// Mounts the container's root filesystem under `container_dir`; returns its path.
    pub(crate) fn mount_rootfs(&self, image: &ResolvedImage, container_dir: &Path) -> Result<PathBuf> {
        let _ = (image, container_dir);
        Err(Error::FailedPrecondition("the image store is not available yet".into()))
    }

    pub(crate) fn unmount_rootfs(&self, container_dir: &Path) -> Result<()> {
        crate::mounts::unmount_under(container_dir)
    }

    pub(crate) fn build_spec(&self, ctx: &SpecContext<'_>) -> Result<Spec> {
        let _ = ctx;
        Err(Error::FailedPrecondition("the OCI spec builder is not available yet".into()))
    }
}

/// The signal StopContainer sends first: the image's `StopSignal`, else SIGTERM.
pub fn stop_signal(image: &ImageConfiguration) -> Result<i32> {
    let name = image.config().as_ref().and_then(|c| c.stop_signal().clone()).unwrap_or_default();
    if name.is_empty() {
        return Ok(libc::SIGTERM);
    }
    parse_signal(&name).ok_or_else(|| Error::InvalidArgument(format!("image StopSignal {name:?} is not a signal")))
}

/// `SIGTERM`, `TERM`, `term` or `15`.
fn parse_signal(name: &str) -> Option<i32> {
    use nix::sys::signal::Signal;
    if let Ok(n) = name.parse::<i32>() {
        return Signal::try_from(n).ok().map(|s| s as i32);
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    full.parse::<Signal>().ok().map(|s| s as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_signals_parse_in_every_spelling() {
        assert_eq!(parse_signal("SIGQUIT"), Some(libc::SIGQUIT));
        assert_eq!(parse_signal("int"), Some(libc::SIGINT));
        assert_eq!(parse_signal("9"), Some(libc::SIGKILL));
        assert_eq!(parse_signal("SIGNOPE"), None);
        assert_eq!(stop_signal(&ImageConfiguration::default()).unwrap(), libc::SIGTERM);
    }
}
