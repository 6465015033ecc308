//! Mount semantics for pod volumes: bind mounts handed over by kubelet (propagation,
//! read-only), and the volume types Capstan serves itself in agent mode.
//!
//! The crate knows nothing of gRPC. The runtime uses [`Propagation`] for the bind mounts
//! kubelet hands over; Capstan's agent mode sets up the pod's own volumes with
//! [`PodVolumes`] (one file per volume type: [`empty_dir`], [`host_path`], [`nfs`],
//! [`local`]) and gives the returned paths to its containers as CRI mounts.

pub mod empty_dir;
mod error;
pub mod host_path;
pub mod local;
mod mount;
pub mod nfs;
mod pod;

pub use empty_dir::{EmptyDir, Medium};
pub use error::{Error, Result};
pub use host_path::{FileKind, HostPath, HostPathType};
pub use local::{Local, VolumeMode};
pub use mount::is_mount_point;
pub use nfs::{Nfs, NfsDefaults};
pub use pod::{PodVolumes, Volume, VolumeSource};

/// How mount events propagate between the host and a container, as CRI's `MountPropagation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Propagation {
    /// No propagation in either direction (`rprivate`).
    #[default]
    Private,
    /// Host mounts appear in the container (`rslave`).
    HostToContainer,
    /// Both directions (`rshared`); kubelet only asks for this on privileged containers.
    Bidirectional,
}

impl Propagation {
    /// The mount option the OCI runtime spec expects for this propagation.
    pub fn oci_option(self) -> &'static str {
        match self {
            Propagation::Private => "rprivate",
            Propagation::HostToContainer => "rslave",
            Propagation::Bidirectional => "rshared",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propagation_maps_to_oci_options() {
        assert_eq!(Propagation::Private.oci_option(), "rprivate");
        assert_eq!(Propagation::HostToContainer.oci_option(), "rslave");
        assert_eq!(Propagation::Bidirectional.oci_option(), "rshared");
    }
}
