//! ListContainers with its filters: id (or prefix), state, pod sandbox id, label selector.

use cri_proto::v1;

use crate::Runtime;
use crate::sandbox::labels_match;

impl Runtime {
    pub fn list_containers(&self, filter: Option<v1::ContainerFilter>) -> Vec<v1::Container> {
        let filter = filter.unwrap_or_default();
        let mut out: Vec<v1::Container> = self
            .containers
            .all()
            .iter()
            .filter(|c| filter.id.is_empty() || c.record.id.starts_with(&filter.id))
            .filter(|c| filter.pod_sandbox_id.is_empty() || c.record.pod_id.starts_with(&filter.pod_sandbox_id))
            .filter(|c| labels_match(&filter.label_selector, &c.record.config.labels))
            .map(|c| {
                let r = &c.record;
                v1::Container {
                    id: r.id.clone(),
                    pod_sandbox_id: r.pod_id.clone(),
                    metadata: Some(r.metadata()),
                    image: Some(v1::ImageSpec { image: r.image.clone(), ..Default::default() }),
                    image_ref: r.image_ref.clone(),
                    state: self.observe(c).state,
                    created_at: r.created_at,
                    labels: r.config.labels.clone(),
                    annotations: r.config.annotations.clone(),
                    image_id: r.image_id.clone(),
                }
            })
            .filter(|c| filter.state.is_none_or(|s| s.state == c.state))
            .collect();
        out.sort_by_key(|c| c.created_at);
        out
    }
}
