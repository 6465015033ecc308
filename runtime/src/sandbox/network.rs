//! The pod network through CNI: ADD after the pod's netns exists, DEL when the pod stops.

use super::store::{PodNetwork, Sandbox};
use crate::{Result, Runtime};

impl Runtime {
    /// Attaches the pod's network namespace to the CNI network. Host-network pods and nodes
    /// without a CNI config get no network of their own (loopback only).
    pub(crate) async fn setup_pod_network(&self, sandbox: &Sandbox) -> Result<()> {
        let record = sandbox.record();
        if !record.namespaces.network {
            return Ok(());
        }
        let Some(netns) = record.namespace_paths().get("network").cloned() else {
            return Err(crate::Error::Internal("the pod's network namespace was not pinned".into()));
        };
        let list = match capstan_cni::load_default_network(&self.options().cni.conf_dir) {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(pod_id = %record.id, error = %e, "no CNI network: the pod gets loopback only");
                return Ok(());
            }
        };
        // Recorded before ADD so that any failure (or a crash) leads to a DEL.
        sandbox.update(&self.sandboxes, |r| r.network = Some(PodNetwork { network: list.name.clone(), ..Default::default() }))?;
        tracing::warn!(pod_id = %record.id, netns = %netns.display(), network = %list.name, "CNI ADD is not wired yet; the pod gets loopback only");
        Ok(())
    }

    /// Detaches the pod from its CNI network; a pod that never had one is fine.
    pub(crate) async fn teardown_pod_network(&self, sandbox: &Sandbox) -> Result<()> {
        let record = sandbox.record();
        let Some(_network) = &record.network else { return Ok(()) };
        sandbox.update(&self.sandboxes, |r| r.network = None)?;
        Ok(())
    }
}
