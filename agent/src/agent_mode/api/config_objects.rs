//! Fetches the ConfigMaps and Secrets an API pod references, from the pod's namespace,
//! before the pod starts. A missing object (404) is recorded as missing, and the pod's
//! `optional` flags decide later whether that is an error; any other failure fails the
//! fetch, and the sync loop tries the pod again on its next round.

use k8s_openapi::api::core::v1 as k8s;
use kube::api::Api;

use super::ApiError;
use crate::agent_mode::config_data::{ConfigData, references};

pub async fn fetch(client: &kube::Client, pod: &k8s::Pod) -> Result<ConfigData, ApiError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let Some(spec) = &pod.spec else { return Ok(ConfigData::default()) };
    let wanted = references(spec);
    let mut data = ConfigData::default();
    let config_maps: Api<k8s::ConfigMap> = Api::namespaced(client.clone(), namespace);
    for name in wanted.config_maps {
        let found = super::bounded(config_maps.get_opt(&name)).await.map_err(ApiError::call(format!("get configmap {namespace}/{name}")))?;
        data.config_maps.insert(name, found);
    }
    let secrets: Api<k8s::Secret> = Api::namespaced(client.clone(), namespace);
    for name in wanted.secrets {
        let found = super::bounded(secrets.get_opt(&name)).await.map_err(ApiError::call(format!("get secret {namespace}/{name}")))?;
        data.secrets.insert(name, found);
    }
    Ok(data)
}
