//! ADD: attach a pod to the network, plugin by plugin, each getting the previous result.

use std::time::Instant;

use serde_json::Value;

use crate::cache::{self, CacheEntry};
use crate::cni::{parse_result, plugin_type, require_netns};
use crate::{Attachment, Cni, CniCommand, CniError, NetworkConfigList, NetworkResult};

impl Cni {
    /// Attaches the pod's namespace to the default network and returns the final result.
    ///
    /// The result is cached on disk before returning, so DEL after a daemon restart still has
    /// `prevResult`. A failed ADD has already been undone (DEL of the whole list, as the spec
    /// allows for partially attached containers); calling [`Cni::del`] again is harmless.
    pub fn add(&self, att: &Attachment) -> Result<NetworkResult, CniError> {
        att.validate()?;
        require_netns(&att.netns)?;
        let list = self.network()?;
        let span = tracing::info_span!("cni_add", pod_id = %att.container_id, network = %list.name);
        let _enter = span.enter();
        self.require_plugins(&list)?;
        let started = Instant::now();
        let raw = match self.add_list(&list, att) {
            Ok(raw) => raw,
            Err((e, partial)) => {
                self.undo_add(&list, att, partial.as_ref());
                return Err(e);
            }
        };
        let result = match parse_result(&list.name, CniCommand::Add, raw.clone()) {
            Ok(result) => result,
            Err(e) => {
                self.undo_add(&list, att, Some(&raw));
                return Err(e);
            }
        };
        let entry = CacheEntry::new(
            &list.name,
            &att.container_id,
            &att.ifname,
            &att.netns,
            att.cni_args_string(),
            att.runtime_config(),
            list.raw.clone(),
            &list.path,
            raw.clone(),
        );
        if let Err(e) = cache::write(self.cache_dir(), &entry) {
            // Without the cache a later DEL could not repeat ADD's parameters: undo now.
            self.undo_add(&list, att, Some(&raw));
            return Err(e);
        }
        tracing::info!(
            ips = ?result.pod_ips(&att.ifname),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "pod attached to CNI network"
        );
        Ok(result)
    }

    /// Runs ADD on every plugin in order. On failure returns the error and the last result
    /// obtained so far (the `prevResult` for the undo).
    fn add_list(&self, list: &NetworkConfigList, att: &Attachment) -> Result<Value, (CniError, Option<Value>)> {
        let netns = att.netns.to_string_lossy();
        let cni_args = att.cni_args_string();
        let runtime_config = att.runtime_config();
        let mut prev: Option<Value> = None;
        for plugin in &list.plugins {
            let name = plugin_type(list, plugin).map_err(|e| (e, prev.clone()))?;
            let stdout = self
                .invoke(list, plugin, CniCommand::Add, att, &netns, prev.as_ref(), &cni_args, &runtime_config)
                .map_err(|e| (e, prev.clone()))?;
            let value: Value = serde_json::from_slice(&stdout).map_err(|e| {
                let reason = format!("stdout is not JSON ({e})");
                (CniError::InvalidResult { plugin: name.to_string(), command: CniCommand::Add, reason }, prev.clone())
            })?;
            if let Err(e) = parse_result(name, CniCommand::Add, value.clone()) {
                return Err((e, prev));
            }
            prev = Some(value);
        }
        // `plugins` is never empty (the loader rejects that), so `prev` is set.
        prev.ok_or_else(|| {
            let reason = "the network has no plugins".to_string();
            (CniError::InvalidResult { plugin: list.name.clone(), command: CniCommand::Add, reason }, None)
        })
    }

    /// Best-effort DEL after a failed ADD; its own errors are logged, the ADD error is what
    /// the caller needs to see.
    fn undo_add(&self, list: &NetworkConfigList, att: &Attachment, partial: Option<&Value>) {
        let netns = att.netns.to_string_lossy();
        if let Err(e) = self.del_list(list, att, &netns, partial, &att.cni_args_string(), &att.runtime_config()) {
            tracing::warn!(error = %e, "undoing a failed CNI ADD failed; the next DEL will retry");
        }
    }
}
