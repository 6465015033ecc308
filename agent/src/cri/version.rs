//! `Version`: who we are. kubelet logs it at start and crictl prints it.

use cri_proto::v1::VersionResponse;

use super::Cri;

pub const RUNTIME_NAME: &str = "capstan";

impl Cri {
    pub(super) fn version(&self) -> VersionResponse {
        VersionResponse {
            // The kubelet-runtime API version; crictl shows it as "Version".
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: cri_proto::RUNTIME_API_VERSION.into(),
        }
    }
}
