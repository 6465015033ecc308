//! Kubelet's device-plugin API, v1beta1 (generated from `proto/deviceplugin_v1beta1.proto`):
//! the `Registration` service kubelet serves and the `DevicePlugin` service a plugin serves,
//! with the constants of the published API.

#![allow(clippy::all, missing_docs)]

pub mod v1beta1 {
    tonic::include_proto!("v1beta1");

    /// The API version a plugin registers with.
    pub const VERSION: &str = "v1beta1";
    /// Kubelet's registration socket, in the device-plugin directory.
    pub const KUBELET_SOCKET: &str = "kubelet.sock";
    /// Kubelet's default device-plugin directory.
    pub const DEVICE_PLUGIN_PATH: &str = "/var/lib/kubelet/device-plugins";
    /// `Device.health` of a usable device.
    pub const HEALTHY: &str = "Healthy";
    /// `Device.health` of a device that must not be allocated.
    pub const UNHEALTHY: &str = "Unhealthy";
}
