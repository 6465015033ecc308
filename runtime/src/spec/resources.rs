//! CRI `LinuxContainerResources` → OCI `linux.resources` (cgroup limits) and
//! `process.oomScoreAdj`.
//!
//! Zero means "not set" in CRI (proto3 has no presence for scalars), so only positive values
//! become limits. Memory without a swap request gets swap equal to the limit, i.e. no swap,
//! as kubelet expects; that is only written where the kernel accounts swap, because
//! libcontainer fails on a missing `memory.memsw.limit_in_bytes`.
//!
//! The OCI values keep CRI's v1 meaning on a cgroup v2 host too: libcgroups converts them when
//! it writes the v2 files, so nothing is converted here (twice would be wrong). Shares become
//! `cpu.weight` by runc's (≥ 1.3.2) mapping that keeps 1024 ↔ 100; the memory+swap limit
//! becomes `memory.swap.max` = swap − memory; quota and period become `cpu.max`. `unified`
//! entries are written last, as given, so they win over the converted values (kubelet sets
//! `memory.swap.max` that way on v2).

use std::sync::atomic::{AtomicBool, Ordering};

use cri_proto::v1;
use oci_spec::runtime::{LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxPids, LinuxResources};

use super::HostFacts;
use crate::{Error, Result};

const SWAP_MAX: &str = "memory.swap.max";

/// cgroup limits of the container. `pids_limit` comes from the runtime's configuration
/// (CRI has no per-container pids field).
pub fn container_resources(
    r: Option<&v1::LinuxContainerResources>,
    host: &HostFacts,
    pids_limit: Option<i64>,
) -> Result<LinuxResources> {
    let default = v1::LinuxContainerResources::default();
    let r = r.unwrap_or(&default);
    let mut out = LinuxResources::default();
    out.set_cpu(cpu(r)?);
    let memory = memory(r, host)?;
    let no_swap = memory.as_ref().is_some_and(|m| m.limit().is_some() && m.swap() == m.limit());
    out.set_memory(memory);
    let hugepages = hugepages(&r.hugepage_limits)?;
    out.set_hugepage_limits((!hugepages.is_empty()).then_some(hugepages));
    if !r.unified.is_empty() && !host.cgroup_v2 {
        return Err(Error::InvalidArgument(
            "resources.unified needs a cgroup v2 host; this host uses cgroup v1 controllers".into(),
        ));
    }
    for key in r.unified.keys() {
        check_unified_key(key)?;
    }
    let mut unified: std::collections::HashMap<String, String> = r.unified.clone().into_iter().collect();
    // Swap equal to the limit means no swap, i.e. `memory.swap.max` 0 on v2; libcgroups
    // skips a computed 0 as "unset" and would leave the kernel's "max". A value the client
    // gave in `unified` stays (kubelet's LimitedSwap sets it there).
    if host.cgroup_v2 && no_swap {
        unified.entry(SWAP_MAX.to_string()).or_insert_with(|| "0".to_string());
    }
    out.set_unified((!unified.is_empty()).then_some(unified));
    match pids_limit {
        Some(limit) if limit > 0 => {
            let mut pids = LinuxPids::default();
            pids.set_limit(limit);
            out.set_pids(Some(pids));
        }
        _ => {}
    }
    Ok(out)
}

fn cpu(r: &v1::LinuxContainerResources) -> Result<Option<LinuxCpu>> {
    let mut cpu = LinuxCpu::default();
    let mut any = false;
    if r.cpu_shares > 0 {
        cpu.set_shares(Some(r.cpu_shares as u64));
        any = true;
    } else if r.cpu_shares < 0 {
        return Err(invalid("cpu_shares", r.cpu_shares));
    }
    match r.cpu_quota {
        q if q > 0 => {
            cpu.set_quota(Some(q));
            any = true;
        }
        // -1 is "no quota", like 0.
        0 | -1 => {}
        q => return Err(invalid("cpu_quota", q)),
    }
    if r.cpu_period > 0 {
        cpu.set_period(Some(r.cpu_period as u64));
        any = true;
    } else if r.cpu_period < 0 {
        return Err(invalid("cpu_period", r.cpu_period));
    }
    for (field, value) in [("cpuset_cpus", &r.cpuset_cpus), ("cpuset_mems", &r.cpuset_mems)] {
        if value.is_empty() {
            continue;
        }
        if !is_cpu_list(value) {
            return Err(Error::InvalidArgument(format!("{field} {value:?} is not a list like \"0-3,8\"")));
        }
        any = true;
        if field == "cpuset_cpus" {
            cpu.set_cpus(Some(value.clone()));
        } else {
            cpu.set_mems(Some(value.clone()));
        }
    }
    Ok(any.then_some(cpu))
}

fn memory(r: &v1::LinuxContainerResources, host: &HostFacts) -> Result<Option<LinuxMemory>> {
    if r.memory_limit_in_bytes < 0 {
        return Err(invalid("memory_limit_in_bytes", r.memory_limit_in_bytes));
    }
    if r.memory_swap_limit_in_bytes < 0 {
        return Err(invalid("memory_swap_limit_in_bytes", r.memory_swap_limit_in_bytes));
    }
    let limit = (r.memory_limit_in_bytes > 0).then_some(r.memory_limit_in_bytes);
    let asked_swap = (r.memory_swap_limit_in_bytes > 0).then_some(r.memory_swap_limit_in_bytes);
    if let (Some(limit), Some(swap)) = (limit, asked_swap)
        && swap < limit
    {
        return Err(Error::InvalidArgument(format!(
            "memory_swap_limit_in_bytes {swap} is below memory_limit_in_bytes {limit} (it counts memory plus swap)"
        )));
    }
    if limit.is_none() && asked_swap.is_none() {
        return Ok(None);
    }
    let mut memory = LinuxMemory::default();
    memory.set_limit(limit);
    if host.swap_accounting {
        memory.set_swap(asked_swap.or(limit));
    } else if asked_swap.is_some() {
        tracing::warn!("memory_swap_limit_in_bytes ignored: this kernel does not account swap in cgroups");
    }
    Ok(Some(memory))
}

fn hugepages(limits: &[v1::HugepageLimit]) -> Result<Vec<LinuxHugepageLimit>> {
    limits
        .iter()
        .map(|h| {
            if !is_page_size(&h.page_size) {
                return Err(Error::InvalidArgument(format!(
                    "hugepage_limits: page size {:?} is not like \"2MB\" or \"1GB\"",
                    h.page_size
                )));
            }
            let limit = i64::try_from(h.limit).map_err(|_| invalid("hugepage_limits.limit", h.limit))?;
            let mut out = LinuxHugepageLimit::default();
            out.set_page_size(h.page_size.clone());
            out.set_limit(limit);
            Ok(out)
        })
        .collect()
}

/// The `oom_score_adj` to ask for, raised to what this process may set.
pub fn oom_score_adj(r: Option<&v1::LinuxContainerResources>, host: &HostFacts) -> Result<Option<i32>> {
    let Some(r) = r else { return Ok(None) };
    let wanted = r.oom_score_adj;
    if !(-1000..=1000).contains(&wanted) {
        return Err(invalid("oom_score_adj", wanted));
    }
    let wanted = wanted as i32;
    if wanted >= host.oom_score_adj_min {
        return Ok(Some(wanted));
    }
    static LOGGED: AtomicBool = AtomicBool::new(false);
    if !LOGGED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            wanted,
            floor = host.oom_score_adj_min,
            "oom_score_adj raised to the runtime's own value: without CAP_SYS_RESOURCE it cannot set a lower one \
             (logged once)"
        );
    }
    Ok(Some(host.oom_score_adj_min))
}

/// A `unified` key names a file in the container's own cgroup directory (`pids.max`,
/// `memory.high`): a path would write elsewhere in the hierarchy, and the `cgroup.*` core
/// files move processes or change the tree rather than set a limit.
fn check_unified_key(key: &str) -> Result<()> {
    let refuse = |why: &str| Err(Error::InvalidArgument(format!("resources.unified key {key:?} {why}")));
    let Some((controller, name)) = key.split_once('.') else {
        return refuse("is not a cgroup v2 interface file like \"pids.max\"");
    };
    if controller.is_empty() || name.is_empty() || key.contains('/') || key.contains('\0') {
        return refuse("is not a cgroup v2 interface file like \"pids.max\"");
    }
    // cgroup.max.depth and cgroup.max.descendants are limits; the other core files are not.
    if controller == "cgroup" && !name.starts_with("max.") {
        return refuse("is a core cgroup file, not a resource limit");
    }
    Ok(())
}

fn invalid(field: &str, value: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("{field} {value} is out of range"))
}

/// `0-3,8,10-11`
fn is_cpu_list(s: &str) -> bool {
    s.split(',').all(|part| {
        let mut ends = part.splitn(2, '-');
        let first = ends.next().is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        let second = ends.next().is_none_or(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        first && second
    })
}

/// `64KB`, `2MB`, `1GB` (kubelet's spelling, the suffix of `hugetlb.<size>.limit_in_bytes`).
fn is_page_size(s: &str) -> bool {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[digits.len()..];
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && matches!(unit, "KB" | "MB" | "GB")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(v2: bool, swap: bool, oom_min: i32) -> HostFacts {
        HostFacts { cgroup_v2: v2, swap_accounting: swap, recursive_readonly: true, oom_score_adj_min: oom_min, cap_last_cap: 40 }
    }

    #[test]
    fn nothing_asked_gives_no_limits() {
        let out = container_resources(None, &host(false, true, 0), None).unwrap();
        assert_eq!(out.cpu(), &None);
        assert_eq!(out.memory(), &None);
        assert_eq!(out.pids(), &None);
        assert_eq!(oom_score_adj(None, &host(false, true, 0)).unwrap(), None);
    }

    #[test]
    fn cpu_and_cpuset_map_across() {
        let r = v1::LinuxContainerResources {
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            cpuset_cpus: "0-1,3".into(),
            cpuset_mems: "0".into(),
            ..Default::default()
        };
        let out = container_resources(Some(&r), &host(false, true, 0), Some(1024)).unwrap();
        let cpu = out.cpu().clone().unwrap();
        assert_eq!((cpu.shares(), cpu.quota(), cpu.period()), (Some(512), Some(50_000), Some(100_000)));
        assert_eq!(cpu.cpus().as_deref(), Some("0-1,3"));
        assert_eq!(cpu.mems().as_deref(), Some("0"));
        assert_eq!(out.pids().unwrap().limit(), 1024);
        let bad = v1::LinuxContainerResources { cpuset_cpus: "0-".into(), ..Default::default() };
        assert!(matches!(container_resources(Some(&bad), &host(false, true, 0), None), Err(Error::InvalidArgument(m)) if m.contains("cpuset_cpus")));
        let bad = v1::LinuxContainerResources { cpu_quota: -7, ..Default::default() };
        assert!(container_resources(Some(&bad), &host(false, true, 0), None).is_err());
    }

    #[test]
    fn memory_limit_gets_equal_swap_where_swap_is_accounted() {
        let r = v1::LinuxContainerResources { memory_limit_in_bytes: 64 << 20, ..Default::default() };
        let mem = container_resources(Some(&r), &host(false, true, 0), None).unwrap().memory().unwrap();
        assert_eq!((mem.limit(), mem.swap()), (Some(64 << 20), Some(64 << 20)));
        let mem = container_resources(Some(&r), &host(false, false, 0), None).unwrap().memory().unwrap();
        assert_eq!((mem.limit(), mem.swap()), (Some(64 << 20), None));
        let with_swap = v1::LinuxContainerResources { memory_swap_limit_in_bytes: 128 << 20, ..r.clone() };
        let mem = container_resources(Some(&with_swap), &host(true, true, 0), None).unwrap().memory().unwrap();
        assert_eq!(mem.swap(), Some(128 << 20));
        // v2: no swap is written explicitly (libcgroups would skip swap − limit = 0).
        let out = container_resources(Some(&r), &host(true, true, 0), None).unwrap();
        assert_eq!(out.unified().as_ref().unwrap()[SWAP_MAX], "0");
        assert_eq!(container_resources(Some(&with_swap), &host(true, true, 0), None).unwrap().unified(), &None);
        assert_eq!(container_resources(Some(&r), &host(true, false, 0), None).unwrap().unified(), &None);
        assert_eq!(container_resources(Some(&r), &host(false, true, 0), None).unwrap().unified(), &None);
        let limited_swap = v1::LinuxContainerResources { unified: [(SWAP_MAX.to_string(), "1048576".to_string())].into(), ..r.clone() };
        let out = container_resources(Some(&limited_swap), &host(true, true, 0), None).unwrap();
        assert_eq!(out.unified().as_ref().unwrap()[SWAP_MAX], "1048576");
        let less = v1::LinuxContainerResources { memory_swap_limit_in_bytes: 1 << 20, ..r };
        assert!(container_resources(Some(&less), &host(true, true, 0), None).is_err());
    }

    #[test]
    fn hugepages_and_unified() {
        let r = v1::LinuxContainerResources {
            hugepage_limits: vec![v1::HugepageLimit { page_size: "2MB".into(), limit: 4 << 20 }],
            unified: [("memory.high".to_string(), "1000000".to_string())].into(),
            ..Default::default()
        };
        let out = container_resources(Some(&r), &host(true, true, 0), None).unwrap();
        let huge = out.hugepage_limits().clone().unwrap();
        assert_eq!((huge[0].page_size().as_str(), huge[0].limit()), ("2MB", 4 << 20));
        assert_eq!(out.unified().as_ref().unwrap()["memory.high"], "1000000");
        assert!(matches!(container_resources(Some(&r), &host(false, true, 0), None), Err(Error::InvalidArgument(m)) if m.contains("unified")));
        let bad = v1::LinuxContainerResources {
            hugepage_limits: vec![v1::HugepageLimit { page_size: "2M".into(), limit: 1 }],
            ..Default::default()
        };
        assert!(container_resources(Some(&bad), &host(true, true, 0), None).is_err());
        for key in ["../../x.max", "pids.max/../../y", "cgroup.procs", "cgroup.subtree_control", "memory", ".max", "pids."] {
            let bad = v1::LinuxContainerResources { unified: [(key.to_string(), "1".to_string())].into(), ..Default::default() };
            assert!(matches!(container_resources(Some(&bad), &host(true, true, 0), None), Err(Error::InvalidArgument(m)) if m.contains("unified")), "{key}");
        }
        let depth = v1::LinuxContainerResources { unified: [("cgroup.max.depth".to_string(), "2".to_string())].into(), ..Default::default() };
        assert!(container_resources(Some(&depth), &host(true, true, 0), None).is_ok());
        let huge_limit = v1::LinuxContainerResources {
            hugepage_limits: vec![v1::HugepageLimit { page_size: "1GB".into(), limit: u64::MAX }],
            ..Default::default()
        };
        assert!(container_resources(Some(&huge_limit), &host(true, true, 0), None).is_err());
    }

    #[test]
    fn oom_score_adj_is_clamped_up_to_what_we_may_set() {
        let r = |v| v1::LinuxContainerResources { oom_score_adj: v, ..Default::default() };
        assert_eq!(oom_score_adj(Some(&r(-997)), &host(false, true, -1000)).unwrap(), Some(-997));
        assert_eq!(oom_score_adj(Some(&r(-997)), &host(false, true, 0)).unwrap(), Some(0));
        assert_eq!(oom_score_adj(Some(&r(1000)), &host(false, true, 0)).unwrap(), Some(1000));
        assert!(oom_score_adj(Some(&r(1001)), &host(false, true, 0)).is_err());
    }
}
