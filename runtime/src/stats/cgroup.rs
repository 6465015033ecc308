//! One reading of a cgroup's cpu, memory and pids figures through libcgroups (v1 and v2),
//! normalised to CRI's units: nanoseconds of cpu, bytes of memory.

use std::collections::HashMap;

use libcgroups::common::{AnyCgroupManager, CgroupManager};

/// Limits at or above this mean "unlimited" (v1 reports `PAGE_COUNTER_MAX` pages, v2 `max`).
const UNLIMITED: u64 = 1 << 62;

/// A cgroup's figures at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    /// Unix nanoseconds when it was read.
    pub timestamp: i64,
    pub cpu: Cpu,
    pub memory: Memory,
    /// Tasks in the cgroup and its children (`pids.current`).
    pub processes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cpu {
    pub total_ns: u64,
    pub user_ns: u64,
    pub system_ns: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    pub usage: u64,
    /// Usage minus inactive file cache: what the kernel could not reclaim easily, kubelet's
    /// eviction signal.
    pub working_set: u64,
    pub rss: u64,
    pub cache: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    pub max_usage: u64,
    pub fail_count: u64,
    /// `None` when unlimited.
    pub limit: Option<u64>,
}

impl Memory {
    /// Bytes left before the limit, when there is one.
    pub fn available(&self) -> Option<u64> {
        self.limit.map(|l| l.saturating_sub(self.working_set))
    }
}

/// Reads the cgroup `manager` drives. `v2` says which units and `memory.stat` keys apply.
pub fn read(manager: &AnyCgroupManager, v2: bool) -> Result<Sample, String> {
    let timestamp = crate::id::now_nanos();
    let stats = manager.stats().map_err(|e| e.to_string())?;
    let usage = &stats.cpu.usage;
    let cpu = if v2 {
        // cpu.stat counts microseconds.
        Cpu { total_ns: usage.usage_total * 1000, user_ns: usage.usage_user * 1000, system_ns: usage.usage_kernel * 1000 }
    } else {
        // cpuacct.usage is in nanoseconds, cpuacct.stat in clock ticks.
        let tick = 1_000_000_000 / clock_ticks_per_second();
        Cpu { total_ns: usage.usage_total, user_ns: usage.usage_user * tick, system_ns: usage.usage_kernel * tick }
    };
    let m = &stats.memory;
    let memory = memory(m.memory.usage, m.memory.limit, &m.stats, v2, m.memory.max_usage, m.memory.fail_count);
    Ok(Sample { timestamp, cpu, memory, processes: stats.pids.current })
}

/// The figures CRI and cAdvisor report, from the usage, the limit and `memory.stat`. v1
/// counts the cgroup's whole subtree under `total_*` keys; v2 keys are hierarchical already.
fn memory(usage: u64, limit: u64, stat: &HashMap<String, u64>, v2: bool, max_usage: u64, fail_count: u64) -> Memory {
    let key = |v1: &str, v2_key: &str| stat.get(if v2 { v2_key } else { v1 }).copied().unwrap_or(0);
    let inactive_file = key("total_inactive_file", "inactive_file");
    Memory {
        usage,
        working_set: usage.saturating_sub(inactive_file),
        rss: key("total_rss", "anon"),
        cache: key("total_cache", "file"),
        page_faults: key("total_pgfault", "pgfault"),
        major_page_faults: key("total_pgmajfault", "pgmajfault"),
        max_usage,
        fail_count,
        limit: (limit < UNLIMITED).then_some(limit),
    }
}

fn clock_ticks_per_second() -> u64 {
    // Safety: sysconf reads a constant of the running kernel.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn v1_working_set_subtracts_the_subtree_inactive_file() {
        let s = stat(&[("inactive_file", 1), ("total_inactive_file", 300), ("total_rss", 500), ("total_cache", 400), ("total_pgfault", 7), ("total_pgmajfault", 2)]);
        let m = memory(1000, 9_223_372_036_854_771_712, &s, false, 1200, 0);
        assert_eq!((m.usage, m.working_set, m.rss, m.cache), (1000, 700, 500, 400));
        assert_eq!((m.page_faults, m.major_page_faults), (7, 2));
        assert_eq!(m.limit, None, "v1's huge default is no limit");
        assert_eq!(m.available(), None);
    }

    #[test]
    fn v2_keys_and_a_real_limit() {
        let s = stat(&[("inactive_file", 100), ("anon", 600), ("file", 300), ("pgfault", 9), ("pgmajfault", 1)]);
        let m = memory(1000, 4096, &s, true, 0, 3);
        assert_eq!((m.working_set, m.rss, m.cache, m.page_faults, m.major_page_faults), (900, 600, 300, 9, 1));
        assert_eq!(m.available(), Some(4096 - 900));
        assert_eq!(memory(10, u64::MAX, &s, true, 0, 0).working_set, 0, "never below zero");
        assert_eq!(memory(10, u64::MAX, &s, true, 0, 0).limit, None, "v2 max");
    }
}
