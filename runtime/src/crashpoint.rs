//! Crash injection for the crash-consistency test: `hit("name")` kills the daemon with
//! SIGKILL on the spot (no unwinding, no destructors, no flushing) when `CAPSTAN_CRASH_AT`
//! names it. The variable is read once; unset, a hit is one load of an initialised cell.
//!
//! `CAPSTAN_CRASH_AT` is either a comma list of names (`run_pod_sandbox:after_record,...`)
//! or `random:<seed>:<percent>`: every hit then crashes with that probability, drawn from
//! a generator seeded with `seed` (so a failing run can be replayed).
//!
//! The names, in the order a lifecycle reaches them (`<call>:<after which step>`):
//! - RunPodSandbox: `run_pod_sandbox:after_record` (record written, state creating),
//!   `:after_pod_files` (log dir, pod dir, hosts/resolv/hostname, shm), `:after_monitor`
//!   (monitor, infra, namespaces, pod cgroup), `:after_network` (CNI ADD),
//!   `:after_ready` (record says ready, reply not sent).
//! - CreateContainer: `create_container:after_record`, `:after_rootfs` (overlay mounted),
//!   `:after_bundle` (config.json written), `:after_status` (status `Created` written).
//! - StartContainer: `start_container:after_monitor_create` (libcontainer create),
//!   `:before_start`, `:after_start`.
//! - StopContainer: `stop_container:before_stop`, `:after_stop`.
//! - RemoveContainer: `remove_container:after_stop`, `:after_trash` (directory renamed into
//!   `containers/.trash`, out of the index; cleanup not begun), then in the cleanup task
//!   (inline when a pod or a failed create removes it): `:after_monitor_remove`,
//!   `:after_unmount`, `:after_dir_removed`.
//! - StopPodSandbox: `stop_pod_sandbox:after_kill_containers`, `:after_network`,
//!   `:after_monitor`, `:after_record`.
//! - RemovePodSandbox: `remove_pod_sandbox:after_stop`, `:after_containers`,
//!   `:after_pod_dir`, `:after_record_removed`.
//! - The pod monitor ([`hit_monitor`]): `monitor_start:after_netns_pinned` (it said where
//!   the netns is, so the daemon is attaching the network; infra not yet in its cgroup).
//! - PullImage: `pull_image:after_blobs` (config + layers), `:before_record`
//!   (manifest/index blobs written), `:after_record`.

use std::sync::Mutex;
use std::sync::OnceLock;

enum Plan {
    Off,
    Names(Vec<String>),
    /// xorshift state and the chance per hit, in percent.
    Random(Mutex<u64>, u64),
}

static PLAN: OnceLock<Plan> = OnceLock::new();

fn plan() -> &'static Plan {
    PLAN.get_or_init(|| match std::env::var("CAPSTAN_CRASH_AT") {
        Ok(v) if !v.is_empty() => parse(&v),
        _ => Plan::Off,
    })
}

fn parse(v: &str) -> Plan {
    if let Some(rest) = v.strip_prefix("random:") {
        let mut parts = rest.splitn(2, ':');
        let seed = parts.next().and_then(|s| s.parse::<u64>().ok()).unwrap_or(1);
        let percent = parts.next().and_then(|s| s.parse::<u64>().ok()).unwrap_or(10).min(100);
        // xorshift must not start at zero.
        return Plan::Random(Mutex::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1), percent);
    }
    Plan::Names(v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
}

fn fires(plan: &Plan, name: &str) -> bool {
    match plan {
        Plan::Off => false,
        Plan::Names(names) => names.iter().any(|n| n == name),
        Plan::Random(state, percent) => {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            *s ^= *s << 13;
            *s ^= *s >> 7;
            *s ^= *s << 17;
            *s % 100 < *percent
        }
    }
}

/// Crashes the process here if `CAPSTAN_CRASH_AT` says so.
pub fn hit(name: &str) {
    let plan = plan();
    if matches!(plan, Plan::Off) || !fires(plan, name) {
        return;
    }
    // stderr is unbuffered: the test reads which point fired from the daemon's log.
    eprintln!("capstan crashpoint {name}: killing the daemon with SIGKILL");
    // SAFETY: getpid and kill have no memory-safety preconditions.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

/// Like [`hit`], for a pod monitor (it inherits the daemon's environment): fires only when
/// named, never from a `random:` plan, whose crashes are the daemon's.
pub fn hit_monitor(name: &str) {
    let plan = plan();
    if !matches!(plan, Plan::Names(_)) || !fires(plan, name) {
        return;
    }
    tracing::error!("capstan crashpoint {name}: killing the monitor with SIGKILL");
    // SAFETY: getpid and kill have no memory-safety preconditions.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_random_plans() {
        let p = parse("a:b, c:d");
        assert!(fires(&p, "a:b") && fires(&p, "c:d") && !fires(&p, "a"));
        let never = parse("random:7:0");
        assert!((0..1000).all(|_| !fires(&never, "x")));
        let always = parse("random:7:100");
        assert!((0..1000).all(|_| fires(&always, "x")));
        let half = parse("random:42:50");
        let n = (0..1000).filter(|_| fires(&half, "x")).count();
        assert!((350..650).contains(&n), "{n}");
        assert!(matches!(parse(""), Plan::Names(n) if n.is_empty()));
    }
}
