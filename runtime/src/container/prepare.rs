//! What CreateContainer needs from the image store (resolve an image, mount a rootfs) and
//! from the OCI spec builder (`crate::image`, `crate::spec`), adapted to the pod's record.

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
    pub config: &'a v1::ContainerConfig,
    pub pod: &'a SandboxRecord,
    pub image: &'a ResolvedImage,
    pub rootfs: &'a Path,
    pub cgroup: &'a Path,
}

impl Runtime {
    pub(crate) fn resolve_image(&self, reference: &str) -> Result<ResolvedImage> {
        let info = self.images().lookup(reference)?;
        Ok(ResolvedImage { id: info.id, reference: info.reference, config: info.config })
    }

    /// Mounts the container's root filesystem under `container_dir`; returns its path.
    pub(crate) async fn mount_rootfs(&self, image: &ResolvedImage, container_dir: &Path) -> Result<PathBuf> {
        let (images, id, dir) = (self.images().clone(), image.id.clone(), container_dir.to_path_buf());
        tokio::task::spawn_blocking(move || images.mount_rootfs(&id, &dir))
            .await
            .map_err(|e| Error::Internal(format!("rootfs task failed: {e}")))?
    }

    pub(crate) fn build_spec(&self, ctx: &SpecContext<'_>) -> Result<Spec> {
        let pod = ctx.pod;
        let namespaces = crate::spec::NamespacePaths::from_map(&pod.namespace_paths());
        let files = crate::spec::SandboxFiles {
            hosts: Some(pod.hosts_file()),
            resolv_conf: Some(pod.resolv_file()),
            hostname: Some(pod.hostname_file()),
            // A host-IPC pod shares the host's /dev/shm, like its IPC objects.
            shm: Some(if pod.namespaces.ipc { pod.shm_dir() } else { PathBuf::from("/dev/shm") }),
        };
        let input = crate::spec::ContainerSpecInput {
            config: ctx.config,
            pod: &pod.config,
            image: &ctx.image.config,
            rootfs: ctx.rootfs,
            namespaces: &namespaces,
            cgroups_path: ctx.cgroup,
            files: &files,
            host: crate::spec::HostFacts::get(),
            pids_limit: None,
        };
        let mut spec = crate::spec::build_container_spec(&input)?;
        let cdi_devices = crate::spec::cdi::requested_devices(ctx.config, &pod.config)?;
        crate::spec::cdi::inject(&mut spec, &cdi_devices, &self.options().cdi_spec_dirs)?;
        Ok(spec)
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
