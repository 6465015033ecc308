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

/// A free TCP port on 127.0.0.1, found by binding port 0 (the small window before the
/// server binds it is acceptable for tests).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}
