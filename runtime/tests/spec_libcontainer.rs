//! Runs specs from `build_container_spec` through youki's libcontainer, the way the monitor
//! does, with a busybox rootfs: the spec must be accepted, and what it asks for must hold
//! inside the container (user and groups, fork under the RuntimeDefault seccomp profile,
//! a blocked syscall, hostname, dropped capabilities, memory limit; read-only rootfs,
//! recursive read-only mount, device, sysctl, masked and read-only paths, no_new_privs).
//!
//! Needs root (skipped otherwise) and /bin/busybox (Debian's busybox-static).

use std::io::Read;
use std::path::Path;

use capstan_runtime::spec::{self, ContainerSpecInput, HostFacts, NamespacePaths, SandboxFiles};
use cri_proto::v1;
use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder};

const SCRIPT: &str = r#"
echo "id: $(id)"
x=$(echo child); echo "fork: $x"
if unshare -U true 2>/dev/null; then echo "userns: allowed"; else echo "userns: refused"; fi
if [ -x /bin/clonetest ]; then /bin/clonetest; else echo "clone-newuser: untested"; fi
echo "hostname: $(hostname)"
grep -E "CapEff|CapBnd" /proc/self/status
echo "memory: $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max 2>/dev/null)"
echo "hosts: $(cat /etc/hosts)"
"#;

/// clone(2) with CLONE_NEWUSER, the call the profile's argument rule must catch (busybox
/// has no applet that makes it).
const CLONE_TEST: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
int main(void) {
    long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0) _exit(0);
    if (pid < 0) { printf("clone-newuser: %s\n", strerror(errno)); return 0; }
    waitpid(pid, 0, 0);
    printf("clone-newuser: ok\n");
    return 0;
}
"#;

/// Builds the clone test statically into the rootfs when a C compiler is around.
fn clone_test(dir: &Path) -> bool {
    let source = dir.join("clonetest.c");
    std::fs::write(&source, CLONE_TEST).unwrap();
    let built = std::process::Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(dir.join("rootfs/bin/clonetest"))
        .arg(&source)
        .status();
    matches!(built, Ok(s) if s.success())
}

fn rootfs(dir: &Path) {
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    for applet in ["sh", "id", "echo", "unshare", "hostname", "grep", "cat", "true"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n").unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\napp:x:1000:\nextra:x:2000:app\n").unwrap();
}

/// Creates, starts and waits for the container in a forked, single-threaded child (as the
/// monitor does); returns the exit code and what the container wrote.
fn run(bundle: &Path, id: &str) -> (i32, String) {
    let out_path = bundle.join("out.txt");
    let out = std::fs::File::create(&out_path).unwrap();
    let (r, w) = nix::unistd::pipe().unwrap();
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            drop(r);
            let code = child(bundle, id, out);
            let _ = nix::unistd::write(&w, code.as_bytes());
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(w);
            let mut answer = String::new();
            std::fs::File::from(r).read_to_string(&mut answer).unwrap();
            nix::sys::wait::waitpid(child, None).unwrap();
            let code = answer.trim().parse().unwrap_or_else(|_| panic!("container run failed: {answer}"));
            (code, std::fs::read_to_string(out_path).unwrap())
        }
    }
}

fn child(bundle: &Path, id: &str, out: std::fs::File) -> String {
    use libcontainer::container::Container;
    use libcontainer::container::builder::ContainerBuilder;
    use libcontainer::syscall::syscall::SyscallType;
    let result = (|| -> Result<String, String> {
        nix::sys::prctl::set_child_subreaper(true).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let null = std::fs::File::open("/dev/null").map_err(|e| e.to_string())?;
        let state = bundle.join("state");
        let container = ContainerBuilder::new(id.to_string(), SyscallType::Linux)
            .with_root_path(&state)
            .map_err(|e| e.to_string())?
            .with_stdin(null)
            .with_stdout(out)
            .with_stderr(err)
            .as_init(bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .map_err(|e| format!("create: {e:?}"))?;
        let pid = container.pid().ok_or("no pid")?;
        let mut container = Container::load(state.join(id)).map_err(|e| e.to_string())?;
        container.start().map_err(|e| format!("start: {e:?}"))?;
        let status = nix::sys::wait::waitpid(pid, None).map_err(|e| e.to_string())?;
        Ok(match status {
            nix::sys::wait::WaitStatus::Exited(_, code) => code.to_string(),
            other => format!("{other:?}"),
        })
    })();
    // Whatever happened, leave no cgroup or state behind.
    let deleted = Container::load(bundle.join("state").join(id)).map(|mut c| c.delete(true));
    match (result, deleted) {
        (Ok(code), Ok(Ok(()))) => code,
        (Ok(_), Ok(Err(e))) => format!("delete: {e:?}"),
        (Ok(_), Err(e)) => format!("load for delete: {e:?}"),
        (Err(e), _) => e,
    }
}

type Tweak<'a> = &'a dyn Fn(&mut v1::ContainerConfig, &mut v1::PodSandboxConfig);

fn build(dir: &Path, id: &str, sc: v1::LinuxContainerSecurityContext, script: &str, tweak: Tweak<'_>) -> oci_spec::runtime::Spec {
    let image_config = ConfigBuilder::default().cmd(vec!["/bin/sh".to_string(), "-c".to_string(), script.to_string()]).build().unwrap();
    let image = ImageConfigurationBuilder::default().config(image_config).build().unwrap();
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost pod-hosts-file\n").unwrap();
    let files = SandboxFiles { hosts: Some(hosts), ..Default::default() };
    let mut config = v1::ContainerConfig {
        linux: Some(v1::LinuxContainerConfig {
            resources: Some(v1::LinuxContainerResources { memory_limit_in_bytes: 48 << 20, ..Default::default() }),
            security_context: Some(v1::LinuxContainerSecurityContext {
                namespace_options: Some(v1::NamespaceOption { pid: v1::NamespaceMode::Container as i32, ..Default::default() }),
                ..sc
            }),
        }),
        ..Default::default()
    };
    let mut pod = v1::PodSandboxConfig { hostname: "spec-test".into(), ..Default::default() };
    tweak(&mut config, &mut pod);
    let cgroup = std::path::PathBuf::from(format!("/capstan-spec-test-{id}"));
    spec::build_container_spec(&ContainerSpecInput {
        config: &config,
        pod: &pod,
        image: &image,
        rootfs: &dir.join("rootfs"),
        namespaces: &NamespacePaths::default(),
        cgroups_path: &cgroup,
        files: &files,
        host: HostFacts::get(),
        pids_limit: Some(64),
    })
    .unwrap()
}

fn line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_else(|| panic!("no {key:?} in output:\n{out}")).trim()
}

#[test]
fn libcontainer_runs_our_specs() {
    if !nix::unistd::geteuid().is_root() || !Path::new("/bin/busybox").exists() {
        eprintln!("skipped: needs root and /bin/busybox");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    rootfs(&dir.path().join("rootfs"));
    let have_clone_test = clone_test(dir.path());
    let runtime_default = v1::SecurityProfile { profile_type: 0, localhost_ref: String::new() };
    let unconfined = v1::SecurityProfile { profile_type: 1, localhost_ref: String::new() };
    let id = format!("spec{}", std::process::id());

    // RuntimeDefault seccomp, a named user, all capabilities dropped.
    let sc = v1::LinuxContainerSecurityContext {
        run_as_username: "app".into(),
        seccomp: Some(runtime_default),
        capabilities: Some(v1::Capability { drop_capabilities: vec!["ALL".into()], ..Default::default() }),
        ..Default::default()
    };
    let spec = build(dir.path(), &id, sc, SCRIPT, &|_, _| {});
    spec.save(dir.path().join("config.json")).unwrap();
    let (code, out) = run(dir.path(), &id);
    assert_eq!(code, 0, "container failed:\n{out}");
    assert!(line(&out, "id:").starts_with("uid=1000(app) gid=1000(app) groups=1000(app),2000(extra)"), "{out}");
    assert_eq!(line(&out, "fork:"), "child", "fork must pass the clone rule:\n{out}");
    assert_eq!(line(&out, "userns:"), "refused", "{out}");
    if have_clone_test {
        assert_eq!(line(&out, "clone-newuser:"), "Function not implemented", "{out}");
    }
    assert_eq!(line(&out, "hostname:"), "spec-test");
    assert_eq!(line(&out, "CapBnd:"), "0000000000000000");
    assert_eq!(line(&out, "CapEff:"), "0000000000000000");
    assert_eq!(line(&out, "hosts:"), "127.0.0.1 localhost pod-hosts-file");
    let memory = line(&out, "memory:");
    assert!(memory.is_empty() || memory == (48u64 << 20).to_string(), "memory limit {memory}");

    // The same container unconfined: the user namespace is allowed, so the refusal above
    // was the profile's doing.
    let sc = v1::LinuxContainerSecurityContext { run_as_username: "app".into(), seccomp: Some(unconfined), ..Default::default() };
    let spec = build(dir.path(), &id, sc, SCRIPT, &|_, _| {});
    spec.save(dir.path().join("config.json")).unwrap();
    let (code, out) = run(dir.path(), &id);
    assert_eq!(code, 0, "container failed:\n{out}");
    assert_eq!(line(&out, "userns:"), "allowed", "{out}");
    if have_clone_test {
        assert_eq!(line(&out, "clone-newuser:"), "ok", "{out}");
    } else {
        eprintln!("no C compiler: clone(CLONE_NEWUSER) not tested");
    }
    // The default set bounds the process (a non-root user's effective set is empty anyway).
    let bounding = u64::from_str_radix(line(&out, "CapBnd:"), 16).unwrap();
    assert_eq!(bounding.count_ones(), 14, "{out}");
    eprintln!("{out}");

    // Locked down: root but read-only rootfs, no_new_privs with the default profile (loaded
    // after capabilities are dropped), a renamed device, a recursive read-only mount, a
    // namespaced sysctl, the default masked paths.
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let sc = v1::LinuxContainerSecurityContext {
        run_as_user: Some(v1::Int64Value { value: 0 }),
        readonly_rootfs: true,
        no_new_privs: true,
        seccomp: Some(v1::SecurityProfile { profile_type: 0, localhost_ref: String::new() }),
        ..Default::default()
    };
    let tweak = |config: &mut v1::ContainerConfig, pod: &mut v1::PodSandboxConfig| {
        config.devices = vec![v1::Device { host_path: "/dev/zero".into(), container_path: "/dev/myzero".into(), permissions: "r".into() }];
        config.mounts = vec![v1::Mount {
            container_path: "/data".into(),
            host_path: data.to_string_lossy().into_owned(),
            readonly: true,
            recursive_read_only: true,
            ..Default::default()
        }];
        pod.linux = Some(v1::LinuxPodSandboxConfig { sysctls: [("kernel.shm_rmid_forced".to_string(), "1".to_string())].into(), ..Default::default() });
    };
    let script = r#"
if touch /x 2>/dev/null; then echo "rootfs: writable"; else echo "rootfs: read-only"; fi
if touch /data/x 2>/dev/null; then echo "data: writable"; else echo "data: read-only"; fi
if touch /tmp/../dev/shm/x 2>/dev/null; then echo "shm: writable"; else echo "shm: read-only"; fi
echo "device: $(head -c 4 /dev/myzero | wc -c)"
echo "sysctl: $(cat /proc/sys/kernel/shm_rmid_forced)"
echo "timer_list: $(wc -c < /proc/timer_list)"
grep NoNewPrivs /proc/self/status
if echo 1 > /proc/sys/kernel/shm_rmid_forced 2>/dev/null; then echo "procsys: writable"; else echo "procsys: read-only"; fi
"#;
    for applet in ["touch", "head", "wc"] {
        let link = dir.path().join("rootfs/bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link).unwrap();
        }
    }
    let spec = build(dir.path(), &id, sc, script, &tweak);
    spec.save(dir.path().join("config.json")).unwrap();
    let (code, out) = run(dir.path(), &id);
    eprintln!("{out}");
    assert_eq!(code, 0, "container failed:\n{out}");
    assert_eq!(line(&out, "rootfs:"), "read-only");
    assert_eq!(line(&out, "data:"), "read-only");
    assert_eq!(line(&out, "shm:"), "writable");
    assert_eq!(line(&out, "device:"), "4");
    assert_eq!(line(&out, "sysctl:"), "1");
    // Non-empty on the host (the kernel has no /proc/kcore to test with here).
    assert_eq!(line(&out, "timer_list:"), "0", "masked");
    assert_eq!(line(&out, "NoNewPrivs:"), "1");
    assert_eq!(line(&out, "procsys:"), "read-only");
    assert!(std::fs::read_dir(&data).unwrap().next().is_none());
}
