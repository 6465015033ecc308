//! `Status`: the RuntimeReady and NetworkReady conditions kubelet turns into node readiness.

use std::collections::HashMap;

use cri_proto::v1::{RuntimeCondition, RuntimeStatus, StatusRequest, StatusResponse};

use super::Cri;

impl Cri {
    pub(super) fn status(&self, req: StatusRequest) -> StatusResponse {
        let runtime_ready = match self.runtime.runtime_ready() {
            Ok(()) => condition("RuntimeReady", true, "", ""),
            Err(message) => condition("RuntimeReady", false, "RuntimeDirectoriesUnusable", &message),
        };
        // kubelet keeps the node NotReady (and pods off it) while this is false.
        let network_ready = match self.runtime.network_ready() {
            Ok(_) => condition("NetworkReady", true, "", ""),
            Err(message) => condition("NetworkReady", false, "NetworkPluginNotReady", &message),
        };
        let mut info = HashMap::new();
        if req.verbose {
            // crictl info prints these values as JSON documents.
            if let Ok(config) = serde_json::to_string(&*self.config) {
                info.insert("config".to_string(), config);
            }
            let version = serde_json::json!({
                "runtimeName": super::version::RUNTIME_NAME,
                "runtimeVersion": env!("CARGO_PKG_VERSION"),
            });
            info.insert("version".to_string(), version.to_string());
            let network = match self.runtime.network_ready() {
                Ok(name) => serde_json::json!({ "network": name, "confDir": self.config.cni.conf_dir }),
                Err(e) => serde_json::json!({ "error": e, "confDir": self.config.cni.conf_dir }),
            };
            info.insert("cni".to_string(), network.to_string());
            // From UpdateRuntimeConfig; recorded only (pod addresses come from the CNI config).
            let runtime_config = serde_json::json!({ "podCIDR": self.runtime.pod_cidr().unwrap_or_default() });
            info.insert("runtimeConfig".to_string(), runtime_config.to_string());
        }
        StatusResponse {
            status: Some(RuntimeStatus { conditions: vec![runtime_ready, network_ready] }),
            info,
            runtime_handlers: Vec::new(),
            features: None,
        }
    }
}

fn condition(kind: &str, status: bool, reason: &str, message: &str) -> RuntimeCondition {
    RuntimeCondition {
        r#type: kind.into(),
        status,
        reason: reason.into(),
        message: message.into(),
    }
}
