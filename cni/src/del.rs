//! DEL: detach a pod, plugins in reverse order. Idempotent, as the spec asks: a missing
//! namespace, a missing cache entry or a second call are not errors.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::cache;
use crate::cni::{is_netns, version_at_least};
use crate::{Attachment, Cni, CniCommand, CniError, ConfigError, NetworkConfigList};

impl Cni {
    /// Detaches the pod from every network it was added to (found through the result
    /// cache), repeating ADD's configuration, arguments and capability values, with the cached
    /// result as `prevResult`. Without a cache entry (ADD never finished, or the cache was
    /// lost) DEL runs on the current network so plugins still release what they hold.
    ///
    /// A namespace that no longer exists is passed as an empty `CNI_NETNS`: plugins then
    /// release what lives outside it (IP reservations, iptables rules).
    pub fn del(&self, att: &Attachment) -> Result<(), CniError> {
        att.validate()?;
        let span = tracing::info_span!("cni_del", pod_id = %att.container_id, ifname = %att.ifname);
        let _enter = span.enter();
        let netns = if is_netns(&att.netns) { att.netns.to_string_lossy().into_owned() } else { String::new() };
        let cached = cache::find(self.cache_dir(), &att.container_id, &att.ifname)?;
        let mut deleted_cached = false;
        for (path, entry) in &cached {
            let Ok(entry) = entry else { continue };
            let list = NetworkConfigList::from_value(entry.config.clone(), &entry.config_path)?;
            let mut runtime_config = entry.runtime_config.clone();
            for (k, v) in att.runtime_config() {
                runtime_config.entry(k).or_insert(v);
            }
            self.del_list(&list, att, &netns, Some(&entry.result), &entry.cni_args, &runtime_config)?;
            cache::remove(path)?;
            deleted_cached = true;
            tracing::info!(network = %list.name, "pod detached from CNI network");
        }
        if deleted_cached {
            return Ok(());
        }
        match self.network() {
            Ok(list) => self.del_list(&list, att, &netns, None, &att.cni_args_string(), &att.runtime_config())?,
            Err(CniError::Config(ConfigError::NoConfig(_))) => {
                tracing::info!("no CNI network configured and no cached result: nothing to delete");
            }
            Err(e) => return Err(e),
        }
        // Unreadable cache files of this attachment: DEL has run, they have no further use.
        for (path, entry) in &cached {
            if let Err(reason) = entry {
                tracing::warn!(path = %path.display(), reason, "removing unreadable CNI result cache");
                cache::remove(path)?;
            }
        }
        Ok(())
    }

    /// Runs DEL on every plugin of `list` in reverse order. A failing plugin does not stop
    /// the others (each releases what it can); the first error is returned.
    pub(crate) fn del_list(
        &self,
        list: &NetworkConfigList,
        att: &Attachment,
        netns: &str,
        prev_result: Option<&Value>,
        cni_args: &str,
        runtime_config: &BTreeMap<String, Value>,
    ) -> Result<(), CniError> {
        // prevResult on DEL arrived with spec 0.4.0; older plugins would reject it.
        let prev = prev_result.filter(|_| version_at_least(&list.cni_version, (0, 4, 0)));
        let mut first_error = None;
        for plugin in list.plugins.iter().rev() {
            if let Err(e) = self.invoke(list, plugin, CniCommand::Del, att, netns, prev, cni_args, runtime_config) {
                tracing::warn!(network = %list.name, error = %e, "CNI DEL failed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
