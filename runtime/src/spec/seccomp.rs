//! Seccomp: CRI's `RuntimeDefault`, `Unconfined` and `Localhost` profiles.
//!
//! # Our `RuntimeDefault`
//!
//! An allow-list, written for Capstan (grouped by what the calls are for, not copied from
//! any other runtime's JSON):
//!
//! - Everything an ordinary program needs is allowed unconditionally.
//! - Calls that only make sense with a capability (mount with CAP_SYS_ADMIN, reboot with
//!   CAP_SYS_BOOT, ...) are allowed when the container has that capability and otherwise
//!   answer **EPERM**, the error the kernel would give.
//! - A few calls reach kernel state that is not namespaced and are refused even with
//!   capabilities (keyrings, kexec, swap, userfaultfd without CAP_SYS_PTRACE ...): EPERM.
//! - Anything else answers **ENOSYS**. runc makes unknown, newer syscalls return ENOSYS so
//!   that libc falls back to older calls (`clone3` → `clone`, `faccessat2` → `faccessat`);
//!   libcontainer has no such stub, so ENOSYS is our default action instead of EPERM.
//!
//! `clone` is allowed only without namespace flags unless the container has CAP_SYS_ADMIN;
//! `clone3` passes its flags in memory seccomp cannot read, so it gets ENOSYS (and libc
//! falls back to `clone`). `personality` is limited to the harmless personas, `socket`
//! refuses AF_VSOCK (not namespaced).
//!
//! Privileged containers run unconfined, as with containerd and CRI-O.

use std::path::Path;

use cri_proto::v1;
use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder, LinuxSeccompOperator,
    LinuxSyscall,
};

use super::capabilities::ContainerCaps;
use crate::{Error, Result};

/// A Localhost profile larger than this is refused rather than read.
const MAX_PROFILE: u64 = 4 << 20;

/// The profile a container asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Profile {
    Unconfined,
    RuntimeDefault,
    /// An OCI seccomp JSON file on the node (kubelet passes an absolute path).
    Localhost(String),
}

/// Which profile the security context asks for. No profile at all (crictl without a
/// seccomp field) means unconfined, as in kubelet before `SeccompDefault`.
#[allow(deprecated)] // seccomp_profile_path: old clients still send it.
pub fn requested_profile(sc: &v1::LinuxContainerSecurityContext) -> Result<Profile> {
    if let Some(p) = &sc.seccomp {
        return match v1::security_profile::ProfileType::try_from(p.profile_type) {
            Ok(v1::security_profile::ProfileType::RuntimeDefault) => Ok(Profile::RuntimeDefault),
            Ok(v1::security_profile::ProfileType::Unconfined) => Ok(Profile::Unconfined),
            Ok(v1::security_profile::ProfileType::Localhost) => Ok(Profile::Localhost(p.localhost_ref.clone())),
            Err(_) => Err(Error::InvalidArgument(format!("seccomp profile type {} is not known", p.profile_type))),
        };
    }
    // The deprecated string form.
    match sc.seccomp_profile_path.as_str() {
        "" | "unconfined" => Ok(Profile::Unconfined),
        "runtime/default" | "docker/default" => Ok(Profile::RuntimeDefault),
        other => match other.strip_prefix("localhost/") {
            Some(path) => Ok(Profile::Localhost(path.to_string())),
            None => Err(Error::InvalidArgument(format!("seccomp_profile_path {other:?} is not understood"))),
        },
    }
}

/// `linux.seccomp` for the container, or `None` for unconfined.
pub fn container_seccomp(sc: &v1::LinuxContainerSecurityContext, caps: &ContainerCaps) -> Result<Option<LinuxSeccomp>> {
    if sc.privileged {
        return Ok(None);
    }
    let profile = match requested_profile(sc)? {
        Profile::Unconfined => return Ok(None),
        Profile::RuntimeDefault => runtime_default(caps)?,
        Profile::Localhost(path) => load_localhost(Path::new(&path))?,
    };
    Ok(Some(for_libcontainer(profile)?))
}

/// Reads an OCI seccomp profile (`defaultAction`, `architectures`, `syscalls`, ...).
pub fn load_localhost(path: &Path) -> Result<LinuxSeccomp> {
    use std::io::Read;
    if !path.is_absolute() {
        return Err(Error::InvalidArgument(format!("seccomp localhost profile {:?} must be an absolute path", path)));
    }
    let file = std::fs::File::open(path)
        .map_err(|e| Error::InvalidArgument(format!("seccomp localhost profile {}: {e}", path.display())))?;
    let mut text = String::new();
    file.take(MAX_PROFILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| Error::InvalidArgument(format!("seccomp localhost profile {}: {e}", path.display())))?;
    if text.len() as u64 > MAX_PROFILE {
        return Err(Error::InvalidArgument(format!("seccomp localhost profile {} is too large", path.display())));
    }
    let profile: LinuxSeccomp = serde_json::from_str(&text)
        .map_err(|e| Error::InvalidArgument(format!("seccomp localhost profile {} is not OCI seccomp JSON: {e}", path.display())))?;
    if profile.default_action() == LinuxSeccompAction::ScmpActNotify {
        return Err(Error::InvalidArgument(format!(
            "seccomp localhost profile {}: SCMP_ACT_NOTIFY cannot be the default action",
            path.display()
        )));
    }
    Ok(profile)
}

/// libcontainer 0.7 reads `SCMP_CMP_MASKED_EQ` as `(arg & valueTwo) == value`; the OCI
/// spec, runc and every published profile mean `(arg & value) == valueTwo`. We write and
/// accept profiles in the OCI meaning and swap the two here, at the one place that knows
/// which runtime consumes the spec. Without this the `clone` rule below silently degrades:
/// libseccomp masks the datum too, so `(arg & 0) == (NAMESPACES & 0)` always holds and
/// clone(CLONE_NEWUSER) gets through (shown by `tests/spec_libcontainer.rs`).
pub fn for_libcontainer(mut profile: LinuxSeccomp) -> Result<LinuxSeccomp> {
    let Some(syscalls) = profile.syscalls().clone() else { return Ok(profile) };
    let swapped = syscalls
        .into_iter()
        .map(|mut s| {
            if let Some(args) = s.args().clone() {
                let args = args
                    .into_iter()
                    .map(|a| {
                        if a.op() != LinuxSeccompOperator::ScmpCmpMaskedEq {
                            return Ok(a);
                        }
                        arg(a.index(), a.value_two().unwrap_or(0), Some(a.value()), a.op())
                    })
                    .collect::<Result<Vec<_>>>()?;
                s.set_args(Some(args));
            }
            Ok(s)
        })
        .collect::<Result<Vec<_>>>()?;
    profile.set_syscalls(Some(swapped));
    Ok(profile)
}

/// Our RuntimeDefault profile for a container with `caps`, in OCI semantics.
pub fn runtime_default(caps: &ContainerCaps) -> Result<LinuxSeccomp> {
    let mut allowed: Vec<&str> = BASE.iter().flat_map(|group| group.iter().copied()).collect();
    let mut denied: Vec<&str> = ALWAYS_DENIED.to_vec();
    for (needs, names) in GATED {
        if needs.iter().any(|c| caps.has(*c)) {
            allowed.extend_from_slice(names);
        } else {
            denied.extend_from_slice(names);
        }
    }
    let sys_admin = caps.has(Capability::SysAdmin);
    if sys_admin {
        allowed.extend_from_slice(&["clone", "clone3"]);
    }
    let mut rules = vec![syscalls(known(&allowed), LinuxSeccompAction::ScmpActAllow, None, None)];
    if !sys_admin {
        // Fork and threads, but no new namespaces: (flags & NAMESPACES) == 0.
        rules.push(syscalls(
            known(&["clone"]),
            LinuxSeccompAction::ScmpActAllow,
            None,
            Some(vec![arg(clone_flags_index(), CLONE_NAMESPACES, Some(0), LinuxSeccompOperator::ScmpCmpMaskedEq)?]),
        ));
    }
    for persona in PERSONAS {
        let cond = arg(0, persona, None, LinuxSeccompOperator::ScmpCmpEq)?;
        rules.push(syscalls(known(&["personality"]), LinuxSeccompAction::ScmpActAllow, None, Some(vec![cond])));
    }
    let not_vsock = arg(0, AF_VSOCK, None, LinuxSeccompOperator::ScmpCmpNe)?;
    rules.push(syscalls(known(&["socket"]), LinuxSeccompAction::ScmpActAllow, None, Some(vec![not_vsock])));
    let vsock = arg(0, AF_VSOCK, None, LinuxSeccompOperator::ScmpCmpEq)?;
    rules.push(syscalls(known(&["socket"]), LinuxSeccompAction::ScmpActErrno, Some(libc::EAFNOSUPPORT as u32), Some(vec![vsock])));
    rules.push(syscalls(known(&denied), LinuxSeccompAction::ScmpActErrno, Some(libc::EPERM as u32), None));
    rules.retain(|r| !r.names().is_empty());
    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(LinuxSeccompAction::ScmpActErrno);
    profile.set_default_errno_ret(Some(libc::ENOSYS as u32));
    profile.set_architectures(architectures());
    profile.set_syscalls(Some(rules));
    Ok(profile)
}

/// Only names the installed libseccomp can resolve: libcontainer logs a warning for every
/// unknown name on every container start.
fn known(names: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = names
        .iter()
        .filter(|n| libseccomp::ScmpSyscall::from_name(n).is_ok())
        .map(|n| n.to_string())
        .collect();
    out.sort();
    out.dedup();
    out
}

fn syscalls(names: Vec<String>, action: LinuxSeccompAction, errno: Option<u32>, args: Option<Vec<LinuxSeccompArg>>) -> LinuxSyscall {
    let mut s = LinuxSyscall::default();
    s.set_names(names);
    s.set_action(action);
    s.set_errno_ret(errno);
    s.set_args(args);
    s
}

fn arg(index: usize, value: u64, value_two: Option<u64>, op: LinuxSeccompOperator) -> Result<LinuxSeccompArg> {
    let mut builder = LinuxSeccompArgBuilder::default().index(index).value(value).op(op);
    if let Some(two) = value_two {
        builder = builder.value_two(two);
    }
    builder.build().map_err(|e| Error::Internal(format!("seccomp argument rule: {e}")))
}

/// The native ABI plus the compat ABIs its binaries may use; a call from an ABI not listed
/// would kill the process.
fn architectures() -> Option<Vec<Arch>> {
    match std::env::consts::ARCH {
        "x86_64" => Some(vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]),
        "aarch64" => Some(vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]),
        "riscv64" => Some(vec![Arch::ScmpArchRiscv64]),
        "s390x" => Some(vec![Arch::ScmpArchS390x, Arch::ScmpArchS390]),
        _ => None,
    }
}

/// clone(2) takes its flags first, except on s390 where the stack comes first.
fn clone_flags_index() -> usize {
    if std::env::consts::ARCH.starts_with("s390") { 1 } else { 0 }
}

/// CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
/// CLONE_NEWPID | CLONE_NEWNET (CLONE_NEWTIME's bit is the exit signal's in clone(2)).
const CLONE_NAMESPACES: u64 = 0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000;

const AF_VSOCK: u64 = 40;

/// PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and 0xffffffff (query only).
const PERSONAS: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// Allowed for everyone, by purpose. Names missing on an architecture are dropped by
/// `known` (libseccomp resolves compat names for the extra ABIs).
const BASE: [&[&str]; 12] = [
    // Files and directories.
    &[
        "open", "openat", "openat2", "creat", "close", "close_range", "read", "write", "readv", "writev", "pread64",
        "pwrite64", "preadv", "pwritev", "preadv2", "pwritev2", "lseek", "_llseek", "stat", "fstat", "lstat",
        "newfstatat", "statx", "stat64", "fstat64", "lstat64", "fstatat64", "statfs", "fstatfs", "statfs64",
        "fstatfs64", "access", "faccessat", "faccessat2", "truncate", "ftruncate", "truncate64", "ftruncate64",
        "fallocate", "getdents", "getdents64", "getcwd", "chdir", "fchdir", "rename", "renameat", "renameat2",
        "mkdir", "mkdirat", "rmdir", "link", "linkat", "unlink", "unlinkat", "symlink", "symlinkat", "readlink",
        "readlinkat", "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat",
        "chown32", "fchown32", "lchown32", "umask", "utime", "utimes", "utimensat", "utimensat_time64",
        "futimesat", "mknod", "mknodat", "sync", "syncfs", "fsync", "fdatasync", "sync_file_range",
        "sync_file_range2", "arm_sync_file_range", "fadvise64", "fadvise64_64", "arm_fadvise64_64", "readahead",
        "flock", "fcntl", "fcntl64", "dup", "dup2", "dup3", "ioctl", "sendfile", "sendfile64", "splice", "tee",
        "vmsplice", "copy_file_range", "name_to_handle_at",
    ],
    // Extended attributes.
    &[
        "getxattr", "lgetxattr", "fgetxattr", "setxattr", "lsetxattr", "fsetxattr", "listxattr", "llistxattr",
        "flistxattr", "removexattr", "lremovexattr", "fremovexattr",
    ],
    // Memory.
    &[
        "brk", "mmap", "mmap2", "munmap", "mremap", "mprotect", "msync", "mincore", "madvise", "mlock", "mlock2",
        "munlock", "mlockall", "munlockall", "remap_file_pages", "membarrier", "memfd_create", "pkey_alloc",
        "pkey_free", "pkey_mprotect", "process_madvise", "process_mrelease",
    ],
    // Processes and threads.
    &[
        "fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid", "waitpid", "getpid",
        "getppid", "gettid", "getpgid", "setpgid", "getpgrp", "getsid", "setsid", "set_tid_address",
        "set_robust_list", "get_robust_list", "rseq", "arch_prctl", "set_thread_area", "get_thread_area",
        "set_tls", "prctl", "capget", "capset", "getpriority", "setpriority", "sched_yield", "sched_getaffinity",
        "sched_setaffinity", "sched_getparam", "sched_setparam", "sched_getscheduler", "sched_setscheduler",
        "sched_get_priority_max", "sched_get_priority_min", "sched_rr_get_interval",
        "sched_rr_get_interval_time64", "sched_getattr", "sched_setattr", "getrlimit", "setrlimit", "ugetrlimit",
        "prlimit64", "getrusage", "times", "ioprio_get", "ioprio_set", "getcpu", "seccomp", "pidfd_open",
        "pidfd_send_signal", "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
        "restart_syscall",
    ],
    // Users and groups (the kernel checks CAP_SETUID/CAP_SETGID).
    &[
        "getuid", "geteuid", "getgid", "getegid", "getuid32", "geteuid32", "getgid32", "getegid32", "setuid",
        "setgid", "setuid32", "setgid32", "setreuid", "setregid", "setreuid32", "setregid32", "setresuid",
        "setresgid", "setresuid32", "setresgid32", "getresuid", "getresgid", "getresuid32", "getresgid32",
        "setfsuid", "setfsgid", "setfsuid32", "setfsgid32", "getgroups", "setgroups", "getgroups32",
        "setgroups32",
    ],
    // Signals.
    &[
        "kill", "tkill", "tgkill", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending",
        "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_sigqueueinfo", "rt_tgsigqueueinfo",
        "sigaltstack", "sigaction", "sigprocmask", "sigreturn", "sigsuspend", "sigpending", "signal", "signalfd",
        "signalfd4", "pause",
    ],
    // Waiting and events.
    &[
        "poll", "ppoll", "ppoll_time64", "select", "_newselect", "pselect6", "pselect6_time64", "epoll_create",
        "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2",
        "inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch", "futex", "futex_time64",
        "futex_waitv", "futex_wake", "futex_wait", "futex_requeue", "pipe", "pipe2",
    ],
    // Time (reading it, sleeping, timers).
    &[
        "time", "gettimeofday", "clock_gettime", "clock_gettime64", "clock_getres", "clock_getres_time64",
        "clock_nanosleep", "clock_nanosleep_time64", "nanosleep", "alarm", "getitimer", "setitimer",
        "timer_create", "timer_delete", "timer_settime", "timer_settime64", "timer_gettime", "timer_gettime64",
        "timer_getoverrun", "timerfd_create", "timerfd_settime", "timerfd_settime64", "timerfd_gettime",
        "timerfd_gettime64", "adjtimex",
    ],
    // Sockets (socket itself is filtered separately).
    &[
        "socketpair", "bind", "listen", "accept", "accept4", "connect", "getsockname", "getpeername", "sendto",
        "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "recvmmsg_time64", "shutdown", "setsockopt",
        "getsockopt", "socketcall",
    ],
    // System V and POSIX IPC (namespaced).
    &[
        "shmget", "shmat", "shmdt", "shmctl", "semget", "semop", "semtimedop", "semtimedop_time64", "semctl",
        "msgget", "msgsnd", "msgrcv", "msgctl", "ipc", "mq_open", "mq_unlink", "mq_timedsend",
        "mq_timedsend_time64", "mq_timedreceive", "mq_timedreceive_time64", "mq_notify", "mq_getsetattr",
    ],
    // Asynchronous I/O (the old interface; io_uring is left out: ENOSYS, and callers fall back).
    &["io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents", "io_pgetevents_time64"],
    // System information.
    &["uname", "sysinfo", "getrandom", "ustat", "sysfs", "cacheflush", "breakpoint"],
];

/// Allowed when the container holds any of the capabilities, else EPERM.
const GATED: [(&[Capability], &[&str]); 13] = [
    (
        &[Capability::SysAdmin],
        &[
            "mount", "umount", "umount2", "unshare", "setns", "pivot_root", "sethostname", "setdomainname",
            "quotactl", "quotactl_fd", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree",
            "mount_setattr", "lookup_dcookie", "fanotify_init", "fanotify_mark",
        ],
    ),
    (&[Capability::SysAdmin, Capability::Bpf], &["bpf"]),
    (&[Capability::SysAdmin, Capability::Perfmon], &["perf_event_open"]),
    (&[Capability::SysBoot], &["reboot"]),
    (&[Capability::SysChroot], &["chroot"]),
    (&[Capability::SysModule], &["init_module", "finit_module", "delete_module"]),
    (&[Capability::SysPacct], &["acct"]),
    (&[Capability::SysPtrace], &["ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd", "userfaultfd"]),
    (&[Capability::SysRawio], &["iopl", "ioperm"]),
    (&[Capability::SysTime], &["settimeofday", "stime", "clock_settime", "clock_settime64", "clock_adjtime", "clock_adjtime64"]),
    (&[Capability::SysTtyConfig], &["vhangup"]),
    (&[Capability::Syslog], &["syslog"]),
    (
        &[Capability::SysNice],
        &["mbind", "set_mempolicy", "get_mempolicy", "migrate_pages", "move_pages", "set_mempolicy_home_node"],
    ),
];

/// Never for containers, whatever their capabilities: non-namespaced kernel state.
const ALWAYS_DENIED: [&str; 12] = [
    "add_key", "request_key", "keyctl", "kexec_load", "kexec_file_load", "swapon", "swapoff", "nfsservctl",
    "uselib", "modify_ldt", "_sysctl", "open_by_handle_at",
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn caps(list: &[Capability]) -> ContainerCaps {
        ContainerCaps { granted: list.iter().copied().collect(), ambient: HashSet::new() }
    }

    fn default_caps() -> ContainerCaps {
        caps(&super::super::capabilities::DEFAULT)
    }

    /// Action and errno a call without argument conditions gets, by the rules in order.
    fn plain_action(profile: &LinuxSeccomp, name: &str) -> (LinuxSeccompAction, Option<u32>) {
        profile
            .syscalls()
            .iter()
            .flatten()
            .find(|s| s.args().is_none() && s.names().iter().any(|n| n == name))
            .map(|s| (s.action(), s.errno_ret()))
            .unwrap_or((profile.default_action(), profile.default_errno_ret()))
    }

    #[allow(deprecated)] // seccomp_profile_path is what old clients send.
    fn sc(profile: Option<(i32, &str)>, path: &str) -> v1::LinuxContainerSecurityContext {
        v1::LinuxContainerSecurityContext {
            seccomp: profile.map(|(t, r)| v1::SecurityProfile { profile_type: t, localhost_ref: r.into() }),
            seccomp_profile_path: path.into(),
            ..Default::default()
        }
    }

    #[test]
    fn profile_choice_follows_cri() {
        use v1::security_profile::ProfileType as T;
        assert_eq!(requested_profile(&sc(None, "")).unwrap(), Profile::Unconfined);
        assert_eq!(requested_profile(&sc(Some((T::RuntimeDefault as i32, "")), "")).unwrap(), Profile::RuntimeDefault);
        assert_eq!(requested_profile(&sc(Some((T::Unconfined as i32, "")), "")).unwrap(), Profile::Unconfined);
        assert_eq!(requested_profile(&sc(Some((T::Localhost as i32, "/p.json")), "")).unwrap(), Profile::Localhost("/p.json".into()));
        assert_eq!(requested_profile(&sc(None, "runtime/default")).unwrap(), Profile::RuntimeDefault);
        assert_eq!(requested_profile(&sc(None, "localhost//x.json")).unwrap(), Profile::Localhost("/x.json".into()));
        assert!(requested_profile(&sc(None, "weird")).is_err());
        assert!(requested_profile(&sc(Some((7, "")), "")).is_err());
    }

    #[test]
    fn default_profile_allows_ordinary_programs_and_refuses_privileged_calls() {
        let p = runtime_default(&default_caps()).unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(libc::ENOSYS as u32));
        for name in ["read", "openat", "execve", "futex", "epoll_wait", "chroot", "setuid", "exit_group"] {
            assert_eq!(plain_action(&p, name).0, LinuxSeccompAction::ScmpActAllow, "{name}");
        }
        for name in ["mount", "unshare", "kexec_load", "init_module", "keyctl", "reboot", "bpf", "ptrace", "swapon"] {
            assert_eq!(plain_action(&p, name), (LinuxSeccompAction::ScmpActErrno, Some(libc::EPERM as u32)), "{name}");
        }
        // Unknown and left-out calls get ENOSYS so libc falls back.
        assert_eq!(plain_action(&p, "io_uring_setup").1, Some(libc::ENOSYS as u32));
        assert_eq!(plain_action(&p, "clone3").1, Some(libc::ENOSYS as u32));
    }

    #[test]
    fn capabilities_open_their_syscalls() {
        let p = runtime_default(&caps(&[Capability::SysAdmin, Capability::SysPtrace])).unwrap();
        for name in ["mount", "unshare", "setns", "clone", "clone3", "ptrace", "bpf"] {
            assert_eq!(plain_action(&p, name).0, LinuxSeccompAction::ScmpActAllow, "{name}");
        }
        assert_eq!(plain_action(&p, "reboot").0, LinuxSeccompAction::ScmpActErrno);
        assert_eq!(plain_action(&p, "keyctl").0, LinuxSeccompAction::ScmpActErrno);
    }

    #[test]
    fn clone_without_sys_admin_is_limited_to_no_namespaces() {
        let p = runtime_default(&default_caps()).unwrap();
        let clone: Vec<&LinuxSyscall> = p.syscalls().iter().flatten().filter(|s| s.names().iter().any(|n| n == "clone")).collect();
        assert_eq!(clone.len(), 1);
        let a = &clone[0].args().clone().unwrap()[0];
        assert_eq!((a.op(), a.value(), a.value_two()), (LinuxSeccompOperator::ScmpCmpMaskedEq, CLONE_NAMESPACES, Some(0)));
        // For libcontainer the two are swapped.
        let lc = for_libcontainer(p).unwrap();
        let a = lc.syscalls().iter().flatten().find(|s| s.names().iter().any(|n| n == "clone")).unwrap().args().clone().unwrap()[0];
        assert_eq!((a.value(), a.value_two()), (0, Some(CLONE_NAMESPACES)));
    }

    #[test]
    fn every_name_is_known_to_libseccomp_and_listed_once_per_action() {
        let p = runtime_default(&default_caps()).unwrap();
        let plain: Vec<&LinuxSyscall> = p.syscalls().iter().flatten().filter(|s| s.args().is_none()).collect();
        let mut seen = HashSet::new();
        for rule in &plain {
            for name in rule.names() {
                assert!(libseccomp::ScmpSyscall::from_name(name).is_ok(), "{name}");
                assert!(seen.insert(name.clone()), "{name} has two unconditional rules");
            }
        }
        assert!(seen.len() > 250, "only {} syscalls in the profile", seen.len());
    }

    #[test]
    fn privileged_and_unconfined_have_no_filter() {
        use v1::security_profile::ProfileType as T;
        let privileged = v1::LinuxContainerSecurityContext { privileged: true, ..sc(Some((T::RuntimeDefault as i32, "")), "") };
        assert!(container_seccomp(&privileged, &default_caps()).unwrap().is_none());
        assert!(container_seccomp(&sc(Some((T::Unconfined as i32, "")), ""), &default_caps()).unwrap().is_none());
        assert!(container_seccomp(&sc(Some((T::RuntimeDefault as i32, "")), ""), &default_caps()).unwrap().is_some());
    }

    #[test]
    fn localhost_profiles_are_read_and_checked() {
        use v1::security_profile::ProfileType as T;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("profile.json");
        std::fs::write(
            &path,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
                "syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":1},
                            {"names":["clone"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":268435456,"valueTwo":268435456,"op":"SCMP_CMP_MASKED_EQ"}]}]}"#,
        )
        .unwrap();
        let ctx = sc(Some((T::Localhost as i32, path.to_str().unwrap())), "");
        let p = container_seccomp(&ctx, &default_caps()).unwrap().unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActAllow);
        assert_eq!(plain_action(&p, "mkdir"), (LinuxSeccompAction::ScmpActErrno, Some(1)));
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(container_seccomp(&ctx, &default_caps()), Err(Error::InvalidArgument(m)) if m.contains("profile.json")));
        let missing = sc(Some((T::Localhost as i32, "/nonexistent/p.json")), "");
        assert!(matches!(container_seccomp(&missing, &default_caps()), Err(Error::InvalidArgument(_))));
        let relative = sc(Some((T::Localhost as i32, "p.json")), "");
        assert!(matches!(container_seccomp(&relative, &default_caps()), Err(Error::InvalidArgument(m)) if m.contains("absolute")));
    }
}
