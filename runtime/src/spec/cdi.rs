//! CDI (Container Device Interface) devices: the fully qualified names a container asks for
//! (`vendor.com/class=name`), resolved against the CDI spec files on the node and applied to
//! the container's OCI spec (device nodes with their device-cgroup rules, mounts, env, hooks,
//! additional GIDs).
//!
//! Requests come from CRI `ContainerConfig.cdi_devices` and, as containerd accepts them, from
//! `cdi.k8s.io/*` annotations of the container and of its pod (how device plugins asked
//! before CRI had the field). Parsing, spec validation and the edits themselves are the
//! `container-device-interface` crate's; this file decides which devices are wanted and
//! turns failures into our error kinds.

use std::collections::HashMap;
use std::path::PathBuf;

use container_device_interface::annotations::parse_annotations;
use container_device_interface::cache::Cache;
use container_device_interface::spec_dirs::with_spec_dirs;
use cri_proto::v1;
use oci_spec::runtime::Spec;

use crate::{Error, Result};

/// Where CDI spec files are read from when the config does not say: static specs first,
/// generated ones second (a later directory wins a name clash, as in the CDI spec).
pub const DEFAULT_SPEC_DIRS: [&str; 2] = ["/etc/cdi", "/var/run/cdi"];

/// The CDI device names a container asks for, in request order without repeats: the CRI
/// field first, then the container's annotations, then the pod's.
pub fn requested_devices(config: &v1::ContainerConfig, pod: &v1::PodSandboxConfig) -> Result<Vec<String>> {
    let mut names: Vec<String> = config.cdi_devices.iter().map(|d| d.name.clone()).collect();
    for annotations in [&config.annotations, &pod.annotations] {
        // Sorted so the order (and so the spec) does not depend on HashMap iteration.
        let mut sorted: Vec<(&String, &String)> = annotations.iter().collect();
        sorted.sort();
        for (key, value) in sorted {
            let one: HashMap<String, String> = HashMap::from([(key.clone(), value.clone())]);
            let (_, devices) = parse_annotations(&one)
                .map_err(|e| Error::InvalidArgument(format!("annotation {key}: {e}")))?;
            names.extend(devices);
        }
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    Ok(names)
}

/// Every fully qualified device name the spec files in `spec_dirs` define (empty when a
/// spec file is broken: the CDI crate then loads none).
pub fn known_devices(spec_dirs: &[PathBuf]) -> Vec<String> {
    let mut cache = cache_for(spec_dirs);
    if let Err(e) = cache.refresh() {
        tracing::warn!(error = %e, "some CDI spec files could not be loaded");
    }
    cache.list_devices()
}

fn cache_for(spec_dirs: &[PathBuf]) -> Cache {
    let dirs: Vec<String> = spec_dirs.iter().map(|d| d.display().to_string()).collect();
    let dir_refs: Vec<&str> = dirs.iter().map(String::as_str).collect();
    let mut cache = Cache::new(Vec::new(), HashMap::new(), HashMap::new());
    cache.configure(vec![with_spec_dirs(&dir_refs)]);
    cache
}

/// Applies the edits of every requested CDI device to `spec`. A device no spec file defines
/// is `InvalidArgument` naming it; a spec whose edits cannot be applied on this node (its
/// host device node is missing, say) is `FailedPrecondition`. Nothing is read when the
/// container asks for no CDI device.
pub fn inject(spec: &mut Spec, devices: &[String], spec_dirs: &[PathBuf]) -> Result<()> {
    if devices.is_empty() {
        return Ok(());
    }
    let dirs: Vec<String> = spec_dirs.iter().map(|d| d.display().to_string()).collect();
    let mut cache = cache_for(spec_dirs);
    // The crate stops scanning at the first broken spec file; its error then goes with the
    // "unknown device" answer so the operator sees why.
    let refresh_error = cache.refresh().err().map(|e| e.to_string());
    if let Some(e) = &refresh_error {
        tracing::warn!(error = %e, dirs = ?dirs, "some CDI spec files could not be loaded");
    }
    let unknown: Vec<&str> =
        devices.iter().filter(|d| cache.get_device(d).is_none()).map(String::as_str).collect();
    if !unknown.is_empty() {
        let why = refresh_error.map(|e| format!("; CDI spec errors: {e}")).unwrap_or_default();
        return Err(Error::InvalidArgument(format!(
            "unknown CDI device {} (no spec in {} defines it{why})",
            unknown.join(", "),
            dirs.join(", ")
        )));
    }
    cache
        .inject_devices(Some(spec), devices.to_vec())
        .map_err(|e| Error::FailedPrecondition(format!("cannot apply CDI devices {}: {e}", devices.join(", "))))?;
    tracing::debug!(devices = ?devices, "CDI devices injected");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxDeviceType, Process, User};
    use std::os::unix::fs::MetadataExt;

    fn spec_file(dir: &std::path::Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    /// A base spec as the builder makes it: a process with a user, default linux section.
    fn base_spec() -> Spec {
        let mut spec = Spec::default();
        let mut p = Process::default();
        let mut u = User::default();
        u.set_uid(0);
        u.set_gid(0);
        p.set_user(u);
        p.set_env(Some(vec!["PATH=/bin".into()]));
        spec.set_process(Some(p));
        spec.set_hooks(None);
        spec
    }

    const GPU_SPEC: &str = r#"
cdiVersion: "0.7.0"
kind: "example.com/gpu"
containerEdits:
  env: ["VENDOR_SHARED=1"]
devices:
  - name: "0"
    containerEdits:
      env: ["FAKE_GPU=0"]
      deviceNodes:
        - path: "/dev/fakegpu0"
          hostPath: "/dev/null"
      mounts:
        - hostPath: "/etc/hostname"
          containerPath: "/usr/lib/fakegpu/libfake.so"
          options: ["ro", "bind"]
      hooks:
        - hookName: "createContainer"
          path: "/usr/bin/true"
          args: ["true", "hook"]
      additionalGids: [4242]
  - name: "1"
    containerEdits:
      env: ["FAKE_GPU=1"]
"#;

    #[test]
    fn device_nodes_mounts_env_hooks_and_gids_are_applied() {
        let dir = tempfile::tempdir().unwrap();
        spec_file(dir.path(), "gpu.yaml", GPU_SPEC);
        let mut spec = base_spec();
        inject(&mut spec, &["example.com/gpu=0".into()], &[dir.path().to_path_buf()]).unwrap();

        let process = spec.process().as_ref().unwrap();
        let env = process.env().as_ref().unwrap();
        assert!(env.contains(&"FAKE_GPU=0".to_string()), "{env:?}");
        assert!(env.contains(&"VENDOR_SHARED=1".to_string()), "spec-wide edits apply too: {env:?}");
        assert!(env.contains(&"PATH=/bin".to_string()), "existing env kept: {env:?}");
        assert!(process.user().additional_gids().as_ref().unwrap().contains(&4242));

        let linux = spec.linux().as_ref().unwrap();
        let node = linux.devices().as_ref().unwrap().iter().find(|d| d.path().to_str() == Some("/dev/fakegpu0")).unwrap();
        let null = std::fs::metadata("/dev/null").unwrap().rdev();
        assert_eq!(node.typ(), LinuxDeviceType::C);
        assert_eq!((node.major() as u64, node.minor() as u64), (libc::major(null) as u64, libc::minor(null) as u64));
        let rules = linux.resources().as_ref().unwrap().devices().as_ref().unwrap();
        let rule = rules.iter().find(|r| r.major() == Some(node.major()) && r.minor() == Some(node.minor())).unwrap();
        assert!(rule.allow());
        assert_eq!(rule.access().as_deref(), Some("rwm"));

        let mount = spec.mounts().as_ref().unwrap().iter().find(|m| m.destination().to_str() == Some("/usr/lib/fakegpu/libfake.so")).unwrap();
        assert_eq!(mount.source().as_ref().unwrap().to_str(), Some("/etc/hostname"));

        let hooks = spec.hooks().as_ref().unwrap().create_container().as_ref().unwrap();
        assert_eq!(hooks[0].path().to_str(), Some("/usr/bin/true"));
    }

    #[test]
    fn a_device_only_gets_its_own_edits() {
        let dir = tempfile::tempdir().unwrap();
        spec_file(dir.path(), "gpu.yaml", GPU_SPEC);
        let mut spec = base_spec();
        inject(&mut spec, &["example.com/gpu=1".into()], &[dir.path().to_path_buf()]).unwrap();
        let env = spec.process().as_ref().unwrap().env().clone().unwrap();
        assert!(env.contains(&"FAKE_GPU=1".to_string()));
        assert!(!env.contains(&"FAKE_GPU=0".to_string()));
        let devices = spec.linux().as_ref().and_then(|l| l.devices().clone()).unwrap_or_default();
        assert!(devices.iter().all(|d| d.path().to_str() != Some("/dev/fakegpu0")));
    }

    #[test]
    fn an_unknown_device_is_an_invalid_argument_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        spec_file(dir.path(), "gpu.yaml", GPU_SPEC);
        let mut spec = base_spec();
        let before = serde_json::to_string(&spec).unwrap();
        let err = inject(&mut spec, &["example.com/gpu=0".into(), "example.com/gpu=7".into()], &[dir.path().to_path_buf()])
            .unwrap_err();
        match err {
            Error::InvalidArgument(m) => {
                assert!(m.contains("example.com/gpu=7"), "{m}");
                assert!(!m.contains("gpu=0,"), "only the unknown one is named: {m}");
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
        assert_eq!(serde_json::to_string(&spec).unwrap(), before, "a refused request leaves the spec alone");
    }

    #[test]
    fn a_broken_spec_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        spec_file(dir.path(), "broken.yaml", "cdiVersion: \"0.6.0\"\nkind: nonsense\n");
        let err = inject(&mut base_spec(), &["example.com/gpu=0".into()], &[dir.path().to_path_buf()]).unwrap_err();
        assert!(err.to_string().contains("CDI spec errors"), "{err}");
    }

    #[test]
    fn a_missing_host_device_is_a_failed_precondition() {
        let dir = tempfile::tempdir().unwrap();
        let text = GPU_SPEC.replace("hostPath: \"/dev/null\"", "hostPath: \"/dev/does-not-exist-capstan\"");
        spec_file(dir.path(), "gpu.yaml", &text);
        let err = inject(&mut base_spec(), &["example.com/gpu=0".into()], &[dir.path().to_path_buf()]).unwrap_err();
        assert!(matches!(err, Error::FailedPrecondition(_)), "{err:?}");
    }

    #[test]
    fn known_devices_lists_qualified_names() {
        let dir = tempfile::tempdir().unwrap();
        spec_file(dir.path(), "gpu.yaml", GPU_SPEC);
        assert_eq!(known_devices(&[dir.path().to_path_buf()]), vec!["example.com/gpu=0", "example.com/gpu=1"]);
        assert!(known_devices(&[dir.path().join("missing")]).is_empty());
    }

    #[test]
    fn no_request_reads_nothing() {
        let mut spec = base_spec();
        inject(&mut spec, &[], &[PathBuf::from("/nonexistent")]).unwrap();
    }

    #[test]
    fn requests_come_from_the_field_and_container_and_pod_annotations() {
        let mut config = v1::ContainerConfig {
            cdi_devices: vec![v1::CdiDevice { name: "example.com/gpu=0".into() }],
            ..Default::default()
        };
        config.annotations.insert("cdi.k8s.io/plugin_dev".into(), "example.com/gpu=1,example.com/gpu=0".into());
        config.annotations.insert("other/annotation".into(), "not=a/device".into());
        let mut pod = v1::PodSandboxConfig::default();
        pod.annotations.insert("cdi.k8s.io/pod".into(), "vendor.io/nic=eth1".into());
        let names = requested_devices(&config, &pod).unwrap();
        assert_eq!(names, vec!["example.com/gpu=0", "example.com/gpu=1", "vendor.io/nic=eth1"]);
    }

    #[test]
    fn a_malformed_annotation_device_is_an_invalid_argument() {
        let mut config = v1::ContainerConfig::default();
        config.annotations.insert("cdi.k8s.io/x".into(), "gpu0".into());
        let err = requested_devices(&config, &v1::PodSandboxConfig::default()).unwrap_err();
        assert!(matches!(&err, Error::InvalidArgument(m) if m.contains("gpu0")), "{err:?}");
    }

    #[test]
    fn annotation_requests_resolve_like_field_requests() {
        let dir = tempfile::tempdir().unwrap();
        spec_file(dir.path(), "gpu.json", &serde_json::to_string(&serde_json::json!({
            "cdiVersion": "0.6.0",
            "kind": "example.com/gpu",
            "devices": [{"name": "a", "containerEdits": {"env": ["FROM_JSON=1"]}}]
        })).unwrap());
        let mut config = v1::ContainerConfig::default();
        config.annotations.insert("cdi.k8s.io/plugin".into(), "example.com/gpu=a".into());
        let names = requested_devices(&config, &v1::PodSandboxConfig::default()).unwrap();
        let mut spec = base_spec();
        inject(&mut spec, &names, &[dir.path().to_path_buf()]).unwrap();
        assert!(spec.process().as_ref().unwrap().env().as_ref().unwrap().contains(&"FROM_JSON=1".to_string()));
    }
}
