//! PodSandboxStatus: what kubelet's PLEG sees of a pod.

use std::collections::HashMap;

use cri_proto::v1;

use super::store::{SandboxRecord, SandboxState};
use crate::{Result, Runtime};

impl Runtime {
    pub fn pod_sandbox_status(&self, id: &str, verbose: bool) -> Result<v1::PodSandboxStatusResponse> {
        let record = self.sandboxes.find(id)?.record();
        let mut info = HashMap::new();
        if verbose {
            let detail = serde_json::json!({
                "podDir": record.pod_dir,
                "monitor": record.monitor,
                "monitorAlive": record.monitor_alive(),
                "namespaces": record.namespaces,
                "cgroupParent": record.cgroups.parent,
                "network": record.network,
            });
            info.insert("info".to_string(), detail.to_string());
        }
        Ok(v1::PodSandboxStatusResponse {
            status: Some(sandbox_status(&record)),
            info,
            containers_statuses: Vec::new(),
            timestamp: crate::id::now_nanos(),
        })
    }
}

/// Ready only while the record says so and the monitor holding the pod is alive.
pub fn cri_state(record: &SandboxRecord) -> v1::PodSandboxState {
    if record.state == SandboxState::Ready && record.monitor_alive() {
        v1::PodSandboxState::SandboxReady
    } else {
        v1::PodSandboxState::SandboxNotready
    }
}

fn sandbox_status(record: &SandboxRecord) -> v1::PodSandboxStatus {
    let options = record
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let network = record.network.as_ref().map(|n| v1::PodSandboxNetworkStatus {
        ip: n.ips.first().cloned().unwrap_or_default(),
        additional_ips: n.ips.iter().skip(1).map(|ip| v1::PodIp { ip: ip.clone() }).collect(),
    });
    v1::PodSandboxStatus {
        id: record.id.clone(),
        metadata: Some(record.metadata()),
        state: cri_state(record) as i32,
        created_at: record.created_at,
        network: Some(network.unwrap_or_default()),
        linux: Some(v1::LinuxPodSandboxStatus { namespaces: Some(v1::Namespace { options: Some(options) }) }),
        labels: record.config.labels.clone(),
        annotations: record.config.annotations.clone(),
        runtime_handler: record.runtime_handler.clone(),
    }
}
