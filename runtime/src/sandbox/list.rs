//! ListPodSandbox with its filters: id (or unique prefix), state, label selector.

use std::collections::HashMap;

use cri_proto::v1;

use super::status::cri_state;
use crate::Runtime;

impl Runtime {
    pub fn list_pod_sandbox(&self, filter: Option<v1::PodSandboxFilter>) -> Vec<v1::PodSandbox> {
        let filter = filter.unwrap_or_default();
        let mut pods: Vec<v1::PodSandbox> = self
            .sandboxes
            .all()
            .iter()
            .map(|s| s.record())
            .filter(|r| filter.id.is_empty() || r.id.starts_with(&filter.id))
            .filter(|r| labels_match(&filter.label_selector, &r.config.labels))
            .map(|r| v1::PodSandbox {
                id: r.id.clone(),
                metadata: Some(r.metadata()),
                state: cri_state(&r) as i32,
                created_at: r.created_at,
                labels: r.config.labels.clone(),
                annotations: r.config.annotations.clone(),
                runtime_handler: r.runtime_handler.clone(),
            })
            .filter(|p| filter.state.is_none_or(|s| s.state == p.state))
            .collect();
        pods.sort_by_key(|p| p.created_at);
        pods
    }
}

/// Every selector label present with the same value.
pub fn labels_match(selector: &HashMap<String, String>, labels: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_needs_every_label() {
        let labels: HashMap<_, _> = [("app".to_string(), "web".to_string()), ("tier".into(), "fe".into())].into();
        assert!(labels_match(&HashMap::new(), &labels));
        assert!(labels_match(&[("app".to_string(), "web".to_string())].into(), &labels));
        assert!(!labels_match(&[("app".to_string(), "db".to_string())].into(), &labels));
        assert!(!labels_match(&[("zone".to_string(), "a".to_string())].into(), &labels));
    }
}
