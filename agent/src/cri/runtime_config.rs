//! `RuntimeConfig`: kubelet reads the cgroup driver from here instead of its own flag.

use capstan_runtime::CgroupDriver;
use cri_proto::v1;

use super::Cri;

impl Cri {
    pub(super) fn runtime_config(&self) -> v1::RuntimeConfigResponse {
        let driver = match self.config.cgroup.driver {
            CgroupDriver::Systemd => v1::CgroupDriver::Systemd,
            CgroupDriver::Cgroupfs => v1::CgroupDriver::Cgroupfs,
        };
        v1::RuntimeConfigResponse {
            linux: Some(v1::LinuxRuntimeConfiguration { cgroup_driver: driver as i32 }),
        }
    }
}
