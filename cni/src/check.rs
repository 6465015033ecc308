//! CHECK: ask every plugin whether the pod's networking is still as ADD left it.

use crate::cache;
use crate::cni::{require_netns, version_at_least};
use crate::{Attachment, Cni, CniCommand, CniError, NetworkConfigList};

impl Cni {
    /// Runs CHECK on every plugin of the network the pod was added to, in order, with the
    /// cached ADD result as `prevResult`; the first failing plugin's error is returned.
    ///
    /// The spec forbids CHECK when the list sets `disableCheck` and before version 0.4.0;
    /// those networks return `Ok` without running anything. A pod that was never added (or
    /// was deleted) is [`CniError::NotAttached`].
    pub fn check(&self, att: &Attachment) -> Result<(), CniError> {
        att.validate()?;
        let span = tracing::info_span!("cni_check", pod_id = %att.container_id, ifname = %att.ifname);
        let _enter = span.enter();
        let cached = cache::find(self.cache_dir(), &att.container_id, &att.ifname)?;
        let Some(entry) = cached.into_iter().find_map(|(_, e)| e.ok()) else {
            return Err(CniError::NotAttached { container_id: att.container_id.clone(), ifname: att.ifname.clone() });
        };
        let list = NetworkConfigList::from_value(entry.config, &entry.config_path)?;
        if list.disable_check || !version_at_least(&list.cni_version, (0, 4, 0)) {
            tracing::debug!(network = %list.name, version = %list.cni_version, "CHECK skipped for this network");
            return Ok(());
        }
        require_netns(&att.netns)?;
        let netns = att.netns.to_string_lossy();
        for plugin in &list.plugins {
            self.invoke(
                &list,
                plugin,
                CniCommand::Check,
                att,
                &netns,
                Some(&entry.result),
                &entry.cni_args,
                &entry.runtime_config,
            )?;
        }
        Ok(())
    }
}
