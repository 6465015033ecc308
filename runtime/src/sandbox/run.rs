//! RunPodSandbox: validate → reserve the name → record (creating) → log dir, pod files,
//! /dev/shm → monitor (infra process, pinned namespaces, pod cgroup) → CNI ADD → ready.
//! Any failure unwinds what was done, through the same teardown RemovePodSandbox uses.

use std::path::Path;

use cri_proto::monitor::{MonitorConfig, PodNamespaces};
use cri_proto::v1;
use tracing::Instrument;

use super::stop::Teardown;
use super::store::{Sandbox, SandboxRecord, SandboxState};
use crate::cgroups::PodCgroups;
use crate::monitor::client;
use crate::{Error, Result, Runtime};

impl Runtime {
    pub async fn run_pod_sandbox(&self, config: v1::PodSandboxConfig, runtime_handler: String) -> Result<String> {
        let meta = validate(&config, &runtime_handler)?;
        let id = crate::id::new_id()?;
        let span = tracing::info_span!("run_pod_sandbox", pod_id = %id, pod = %format!("{}/{}", meta.namespace, meta.name));
        async {
            tracing::debug!("creating pod sandbox");
            self.sandboxes.reserve(&meta, &id)?;
            let sandbox = match self.plan_sandbox(&id, config, runtime_handler).and_then(|r| self.sandboxes.insert(r)) {
                Ok(s) => s,
                Err(e) => {
                    self.sandboxes.release(&meta, &id);
                    return Err(e);
                }
            };
            let _exclusive = sandbox.lock.write().await;
            crate::crashpoint::hit("run_pod_sandbox:after_record");
            match self.create_sandbox(&sandbox).await {
                Ok(()) => {
                    crate::crashpoint::hit("run_pod_sandbox:after_ready");
                    tracing::info!("pod sandbox ready");
                    self.sandbox_event(&id, v1::ContainerEventType::ContainerCreatedEvent);
                    Ok(id.clone())
                }
                Err(e) => {
                    tracing::warn!(error = %e, "RunPodSandbox failed; undoing what was done");
                    // Best effort: kubelet never learns this id, so nobody would retry.
                    if let Err(undo) = self.destroy_sandbox(&sandbox, Teardown::BestEffort).await {
                        tracing::error!(error = %undo, "could not undo a failed RunPodSandbox completely");
                    }
                    Err(e)
                }
            }
        }
        .instrument(span)
        .await
    }

    /// The record of a pod about to be created: namespaces, cgroups, directories.
    fn plan_sandbox(&self, id: &str, config: v1::PodSandboxConfig, runtime_handler: String) -> Result<SandboxRecord> {
        let linux = config.linux.clone().unwrap_or_default();
        let namespaces = pod_namespaces(&linux);
        for key in linux.sysctls.keys() {
            if !crate::monitor::sysctl_is_namespaced(key, &namespaces) {
                return Err(Error::InvalidArgument(format!(
                    "sysctl {key:?} is not namespaced for this pod (or not allowed at all): it would change the host"
                )));
            }
        }
        self.host_paths.check_log_directory(&config.log_directory)?;
        let cgroups = PodCgroups::plan(self.options().cgroup_driver, &linux.cgroup_parent, id)?;
        // Decided now so the one record written before any work knows what to undo.
        let log_dir_created = !config.log_directory.is_empty() && !Path::new(&config.log_directory).exists();
        Ok(SandboxRecord {
            id: id.to_string(),
            config,
            runtime_handler,
            state: SandboxState::Creating,
            created_at: crate::id::now_nanos(),
            pod_dir: self.options().state_dir.join("pods").join(id),
            namespaces,
            cgroups,
            monitor: None,
            network: None,
            log_dir_created,
        })
    }

    async fn create_sandbox(&self, sandbox: &Sandbox) -> Result<()> {
        // The record written at insert is enough to undo every step below: teardown
        // unmounts whatever is mounted in the pod dir and finds the monitor by its state
        // file. Only the last step writes the record again (each write is an fsync).
        let record = sandbox.record();
        let log_dir = Path::new(&record.config.log_directory);
        if record.log_dir_created {
            std::fs::create_dir_all(log_dir).map_err(Error::io("cannot create log directory", log_dir))?;
        }
        create_pod_dir(&record.pod_dir)?;
        super::files::write_pod_files(&record)?;
        if record.namespaces.ipc {
            super::files::mount_shm(&record)?;
        }
        let config = MonitorConfig {
            pod_id: record.id.clone(),
            pod_dir: record.pod_dir.clone(),
            namespaces: record.namespaces,
            hostname: record.config.hostname.clone(),
            sysctls: record.config.linux.as_ref().map(|l| l.sysctls.clone().into_iter().collect()).unwrap_or_default(),
            infra_cgroup: Some(record.cgroups.child(&record.id)),
            // `CAPSTAN_MONITOR_LOG=debug` in the daemon's environment for libcontainer's detail.
            log_level: std::env::var("CAPSTAN_MONITOR_LOG").unwrap_or_else(|_| "info".into()),
        };
        crate::crashpoint::hit("run_pod_sandbox:after_pod_files");
        tracing::debug!("pod files written; starting the monitor");
        let mut starting = client::start(&client::binary(), &config).await?;
        // CNI ADD runs while the monitor finishes starting (it moves the infra process into
        // its cgroup, which waits for an RCU grace period on cgroup v1). Both run to their
        // end; whatever either did, the record written at insert lets teardown undo it.
        let netns = starting.netns().await?;
        let monitor = async {
            let info = starting.ready().await?;
            tracing::debug!(monitor_pid = info.pid, infra_pid = ?info.infra_pid, "monitor started");
            crate::crashpoint::hit("run_pod_sandbox:after_monitor");
            Ok::<_, Error>(info)
        };
        let network = async {
            let network = self.setup_pod_network(sandbox, netns).await?;
            crate::crashpoint::hit("run_pod_sandbox:after_network");
            Ok::<_, Error>(network)
        };
        let (info, network) = tokio::join!(monitor, network);
        let (info, network) = (info?, network?);
        sandbox.update(&self.sandboxes, |r| {
            r.monitor = Some(info);
            r.network = network.or(r.network.take());
            r.state = SandboxState::Ready;
        })?;
        Ok(())
    }
}

/// What kubelet must send: metadata with name, namespace and uid.
fn validate(config: &v1::PodSandboxConfig, runtime_handler: &str) -> Result<v1::PodSandboxMetadata> {
    let meta = config.metadata.clone().ok_or_else(|| Error::InvalidArgument("sandbox config has no metadata".into()))?;
    for (field, value) in [("name", &meta.name), ("namespace", &meta.namespace), ("uid", &meta.uid)] {
        if value.is_empty() {
            return Err(Error::InvalidArgument(format!("sandbox metadata.{field} is empty")));
        }
    }
    if !runtime_handler.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "unknown runtime handler {runtime_handler:?}: capstan has only the default handler (\"\")"
        )));
    }
    Ok(meta)
}

/// New namespaces for the pod per the CRI namespace options (NODE means the host's).
fn pod_namespaces(linux: &v1::LinuxPodSandboxConfig) -> PodNamespaces {
    let options = linux.security_context.as_ref().and_then(|s| s.namespace_options.clone()).unwrap_or_default();
    let node = v1::NamespaceMode::Node as i32;
    let host_network = options.network == node;
    PodNamespaces {
        network: !host_network,
        ipc: options.ipc != node,
        // A host-network pod keeps the host's name, as kubelet expects.
        uts: !host_network,
        pid: options.pid == v1::NamespaceMode::Pod as i32,
    }
}

fn create_pod_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    // 0711: containers running as any user reach the bind-mounted pod files by path.
    std::fs::DirBuilder::new().recursive(true).mode(0o711).create(dir).map_err(Error::io("cannot create", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_options_map_to_pod_namespaces() {
        let mut linux = v1::LinuxPodSandboxConfig::default();
        assert_eq!(pod_namespaces(&linux), PodNamespaces { network: true, ipc: true, uts: true, pid: true });
        linux.security_context = Some(v1::LinuxSandboxSecurityContext {
            namespace_options: Some(v1::NamespaceOption {
                network: v1::NamespaceMode::Node as i32,
                pid: v1::NamespaceMode::Container as i32,
                ipc: v1::NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(pod_namespaces(&linux), PodNamespaces::default());
    }

    #[test]
    fn metadata_is_required() {
        let mut c = v1::PodSandboxConfig::default();
        assert!(matches!(validate(&c, ""), Err(Error::InvalidArgument(_))));
        c.metadata = Some(v1::PodSandboxMetadata { name: "a".into(), namespace: "b".into(), uid: "".into(), attempt: 0 });
        let e = validate(&c, "").unwrap_err().to_string();
        assert!(e.contains("uid"), "{e}");
        c.metadata.as_mut().unwrap().uid = "u".into();
        assert!(validate(&c, "").is_ok());
        assert!(validate(&c, "kata").is_err());
    }
}
