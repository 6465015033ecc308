//! The integration harness: the real `capstan` daemon as a process, a real OCI registry
//! (Debian's `docker-registry`) on 127.0.0.1, and test images built from Debian's
//! `busybox-static` at test time. Nothing is mocked; everything started is stopped on drop.

pub mod agent;
pub mod apiserver;
pub mod daemon;
pub mod image;
pub mod pods;
pub mod registry;
pub mod streaming;

use std::path::PathBuf;

/// Where the workspace's binaries are: next to the test executable's `deps/` directory, so
/// the harness finds `target/<profile>/capstan` whatever the profile or target dir.
/// `CAPSTAN_BIN_DIR` overrides it (the VM lane runs prebuilt binaries from elsewhere).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CAPSTAN_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("test executable has a directory");
    let dir = if deps.ends_with("deps") { deps.parent().unwrap_or(deps) } else { deps };
    dir.to_path_buf()
}

/// Whether this process runs as root; tests that need it say so and skip otherwise.
pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// [`is_root`], printing why the test is skipped when not.
pub fn root_or_skip(why: &str) -> bool {
    if is_root() {
        return true;
    }
    eprintln!("skipped: {why}");
    false
}

/// Files (not directories) below `dir`, relative to it and sorted, for "nothing left
/// behind" checks; symlinks count as files and are not followed.
pub fn files_below(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap_or(&e.path()).display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// A free TCP port on 127.0.0.1 for a server a test starts.
///
/// Chosen below the kernel's ephemeral range: a port from `bind(0)` can be taken, in the
/// window before the server binds it, by any outgoing connection of a parallel test (each
/// gets an ephemeral source port), and the server then fails with "address already in
/// use". Below the range only another test's server can collide; callers that start a
/// server retry on that (see [`registry::Registry`]).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|p| p.parse::<u32>().ok())
        })
        .unwrap_or(32768);
    let (low, high) = (10_000u32, ephemeral_low.max(10_001));
    // Spread parallel test processes apart: pid and clock pick the start, a counter the step.
    let seed = std::process::id().wrapping_mul(2_654_435_761).wrapping_add(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()),
    );
    for _ in 0..1000 {
        let step = NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(7919);
        let port = low + seed.wrapping_add(step) % (high - low);
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}
