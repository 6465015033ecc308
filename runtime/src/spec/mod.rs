//! The OCI runtime spec (`config.json`) of a container, built from its CRI
//! `ContainerConfig`, the pod's `PodSandboxConfig`, the image config and what the pod
//! already set up (namespaces, shared files, cgroup). Pure apart from reading the image's
//! `/etc/passwd` and `/etc/group`, host device nodes and mount propagation, and a
//! localhost seccomp profile.
//!
//! One file per concern: [`user`], [`capabilities`], [`seccomp`], [`mounts`], [`resources`],
//! [`devices`], [`namespaces`], [`process`]; [`HostFacts`] holds what depends on the host.
//!
//! Mapped from CRI: command/args/env/working dir, tty, users and groups, capabilities,
//! privileged, `readonly_rootfs`, `no_new_privs`, masked/readonly paths, seccomp, mounts,
//! devices, resources, `oom_score_adj`, namespaces, sysctls. Ignored on purpose: AppArmor
//! (not on this host), SELinux options and relabelling (no SELinux), Windows fields. CDI
//! devices are applied afterwards by [`cdi`], which reads the node's CDI spec files.

pub mod capabilities;
mod cgroup_mounts;
pub mod cdi;
pub mod devices;
mod host;
pub mod mounts;
pub mod namespaces;
pub mod process;
pub mod resources;
pub mod seccomp;
pub mod user;

use std::path::Path;

use cri_proto::v1;
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{Linux, Process, Root, Spec, User};

pub use host::HostFacts;
pub use mounts::SandboxFiles;
pub use namespaces::NamespacePaths;

use crate::{Error, Result};

/// OCI runtime spec version we write.
pub const OCI_VERSION: &str = "1.0.2";

/// Everything a container's spec is built from.
#[derive(Debug, Clone, Copy)]
pub struct ContainerSpecInput<'a> {
    pub config: &'a v1::ContainerConfig,
    pub pod: &'a v1::PodSandboxConfig,
    pub image: &'a ImageConfiguration,
    /// The mounted root filesystem (its /etc/passwd and /etc/group are read).
    pub rootfs: &'a Path,
    pub namespaces: &'a NamespacePaths,
    /// `linux.cgroupsPath`, e.g. `/kubepods/besteffort/pod<uid>/<container id>`.
    pub cgroups_path: &'a Path,
    pub files: &'a SandboxFiles,
    pub host: &'a HostFacts,
    /// The runtime's configured pids limit, if any (CRI has no per-container field).
    pub pids_limit: Option<i64>,
}

/// Builds the container's `config.json`. Bad input is `InvalidArgument` naming the field.
pub fn build_container_spec(input: &ContainerSpecInput<'_>) -> Result<Spec> {
    let linux_config = input.config.linux.clone().unwrap_or_default();
    let sc = linux_config.security_context.clone().unwrap_or_default();
    let pod_sc = input.pod.linux.as_ref().and_then(|l| l.security_context.clone()).unwrap_or_default();
    if sc.privileged && !pod_sc.privileged {
        return Err(Error::InvalidArgument(
            "privileged container in a pod whose sandbox is not privileged".into(),
        ));
    }
    let ns_options = sc.namespace_options.clone().or(pod_sc.namespace_options.clone()).unwrap_or_default();
    let ns = namespaces::container_namespaces(&ns_options, input.namespaces, input.host.cgroup_v2)?;
    let caps = capabilities::container_caps(&sc, input.host.cap_last_cap)?;
    let mut linux = Linux::default();
    linux.set_namespaces(Some(ns.namespaces.clone()));
    linux.set_cgroups_path(Some(input.cgroups_path.to_path_buf()));
    let sysctls = namespaces::sysctls(input.pod, &ns)?;
    linux.set_sysctl((!sysctls.is_empty()).then_some(sysctls));
    let mut resources = resources::container_resources(linux_config.resources.as_ref(), input.host, input.pids_limit)?;
    let devices = devices::container_devices(&input.config.devices, sc.privileged)?;
    resources.set_devices(Some(devices.cgroup));
    linux.set_resources(Some(resources));
    linux.set_devices((!devices.nodes.is_empty()).then_some(devices.nodes));
    linux.set_seccomp(seccomp::container_seccomp(&sc, &caps)?);
    linux.set_masked_paths(Some(mounts::masked_paths(&sc)));
    linux.set_readonly_paths(Some(mounts::readonly_paths(&sc)));
    let mount_opts = mounts::MountOptions {
        privileged: sc.privileged,
        readonly_rootfs: sc.readonly_rootfs,
        recursive_readonly: input.host.recursive_readonly,
    };
    let mut mounts = mounts::container_mounts(input.config, input.files, mount_opts)?;
    if !input.host.cgroup_v2 {
        // On v1, /sys/fs/cgroup is laid out here rather than by libcontainer (see cgroup_mounts).
        let at = mounts.mounts.iter().position(|m| m.destination() == Path::new("/sys/fs/cgroup") && m.typ().as_deref() == Some("cgroup"));
        if let Some(at) = at {
            let v1 = cgroup_mounts::v1_mounts(input.cgroups_path, mount_opts.privileged);
            mounts.mounts.splice(at..=at, v1);
        }
    }
    linux.set_rootfs_propagation(mounts.rootfs_propagation);

    let hostname = pod_hostname(input.pod, ns.host_network);
    let mut spec = Spec::default();
    spec.set_version(OCI_VERSION.to_string());
    spec.set_process(Some(container_process(input, &sc, &caps, &hostname)?));
    spec.set_root(Some(root(input.rootfs, sc.readonly_rootfs)));
    spec.set_hostname(ns.own_uts.then_some(hostname));
    spec.set_mounts(Some(mounts.mounts));
    spec.set_annotations(None);
    spec.set_linux(Some(linux));
    Ok(spec)
}

fn container_process(
    input: &ContainerSpecInput<'_>,
    sc: &v1::LinuxContainerSecurityContext,
    caps: &capabilities::ContainerCaps,
    hostname: &str,
) -> Result<Process> {
    let image_user = input.image.config().as_ref().and_then(|c| c.user().clone()).unwrap_or_default();
    let resolved = user::resolve_user(input.rootfs, &user::UserRequest::from_cri(sc, &image_user))?;
    let mut oci_user = User::default();
    oci_user.set_uid(resolved.uid);
    oci_user.set_gid(resolved.gid);
    oci_user.set_additional_gids(Some(resolved.additional_gids.clone()));
    let resources = input.config.linux.as_ref().and_then(|l| l.resources.as_ref());
    let mut p = Process::default();
    p.set_terminal(Some(input.config.tty));
    p.set_user(oci_user);
    p.set_args(Some(process::process_args(input.config, input.image)?));
    p.set_env(Some(process::process_env(input.config, input.image, hostname, &resolved.home)?));
    p.set_cwd(process::working_dir(input.config, input.image)?);
    p.set_capabilities(Some(caps.to_oci()));
    // Inherit the monitor's limits rather than oci-spec's default NOFILE=1024.
    p.set_rlimits(None);
    // libcontainer treats any `Some` as "set no_new_privs" (and loads seccomp late, after
    // capabilities are dropped), so `false` must be `None`.
    p.set_no_new_privileges(sc.no_new_privs.then_some(true));
    p.set_oom_score_adj(resources::oom_score_adj(resources, input.host)?);
    p.set_apparmor_profile(None);
    p.set_selinux_label(None);
    Ok(p)
}

fn root(rootfs: &Path, readonly: bool) -> Root {
    let mut root = Root::default();
    root.set_path(rootfs.to_path_buf());
    root.set_readonly(Some(readonly));
    root
}

/// The pod's hostname; host-network pods (and pods without one) have the node's.
fn pod_hostname(pod: &v1::PodSandboxConfig, host_network: bool) -> String {
    if !host_network && !pod.hostname.is_empty() {
        return pod.hostname.clone();
    }
    nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests;
