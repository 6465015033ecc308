//! Exec and attach sessions through a real `capstan-monitor`: the daemon-side session
//! (`monitor::client::open_session` + `monitor::session::start`, what `Runtime::exec_session`
//! and `attach_session` return) against real containers (libcontainer, namespaces, cgroups,
//! terminals) with a busybox rootfs. Needs root and the binaries built
//! (`cargo build --workspace --bins`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use capstan_runtime::monitor::{client, session};
use capstan_runtime::streaming::{BoxedReader, Session, SessionEnd, StreamOptions, TerminalSize};
use cri_proto::monitor::frame::Frame;
use cri_proto::monitor::{
    AttachStreams, ContainerPhase, ContainerRecord, CreateContainer, ExecProcess, MonitorConfig, MonitorInfo,
    PodNamespaces, Request, Response,
};
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, RootBuilder, Spec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn monitor_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("capstan-monitor");
    assert!(bin.exists(), "{} missing: run `cargo build --workspace --bins` first", bin.display());
    bin
}

/// A pod dir with its monitor and the cgroup parent the test owns; torn down on drop.
struct Pod {
    dir: tempfile::TempDir,
    info: MonitorInfo,
    cgroup_parent: PathBuf,
}

/// How a test container is made.
#[derive(Default, Clone, Copy)]
struct Opts {
    tty: bool,
    stdin: bool,
    stdin_once: bool,
    /// A seccomp profile that refuses mkdir with EPERM.
    no_mkdir: bool,
    no_new_privs: bool,
}

impl Pod {
    async fn start() -> Pod {
        let dir = tempfile::Builder::new().prefix("capstan-exec-").tempdir().unwrap();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let cgroup_parent = PathBuf::from(format!("/capstan-exectest-{}-{nanos}", std::process::id()));
        let config = MonitorConfig {
            pod_id: "execpod".into(),
            pod_dir: dir.path().to_path_buf(),
            namespaces: PodNamespaces { network: true, ipc: true, uts: true, pid: false },
            hostname: "execpod".into(),
            sysctls: Default::default(),
            infra_cgroup: Some(cgroup_parent.join("infra")),
            log_level: std::env::var("EXEC_TEST_LOG").unwrap_or_else(|_| "info".into()),
        };
        let info = client::spawn(&monitor_binary(), &config).await.expect("monitor starts");
        Pod { dir, info, cgroup_parent }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    async fn call(&self, request: Request) -> capstan_runtime::Result<Response> {
        client::call(self.path(), &request, Duration::from_secs(30)).await
    }

    /// Creates and starts a container running `args`.
    async fn run(&self, id: &str, args: &[&str], opts: Opts) -> ContainerRecord {
        let bundle = self.path().join("bundles").join(id);
        std::fs::create_dir_all(&bundle).unwrap();
        let rootfs = busybox_rootfs(&bundle.join("rootfs"));
        let mut spec = spec(&rootfs, args, &self.info, &self.cgroup_parent.join(id));
        let mut process = spec.process().clone().unwrap();
        process.set_terminal(Some(opts.tty));
        process.set_env(Some(vec!["PATH=/bin".into(), "GREETING=hello from the spec".into()]));
        process.set_cwd("/srv".into());
        process.set_no_new_privileges(opts.no_new_privs.then_some(true));
        spec.set_process(Some(process));
        if opts.no_mkdir {
            let mut linux = spec.linux().clone().unwrap();
            linux.set_seccomp(Some(no_mkdir()));
            spec.set_linux(Some(linux));
        }
        spec.save(bundle.join("config.json")).unwrap();
        let request = CreateContainer {
            id: id.into(),
            bundle,
            status_path: self.path().join(format!("{id}.status.json")),
            log_path: Some(self.log_path(id)),
            description: String::new(),
            stdin: opts.stdin,
            stdin_once: opts.stdin_once,
        };
        self.call(Request::Create(request)).await.expect("create");
        match self.call(Request::Start { id: id.into() }).await.expect("start") {
            Response::Container(r) => r,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn log_path(&self, id: &str) -> PathBuf {
        self.path().join("logs").join(format!("{id}.log"))
    }

    async fn status(&self, id: &str) -> ContainerRecord {
        match self.call(Request::Status { id: id.into() }).await.expect("status") {
            Response::Container(r) => r,
            other => panic!("unexpected {other:?}"),
        }
    }

    async fn exec(&self, id: &str, args: &[&str], options: StreamOptions) -> capstan_runtime::Result<Session> {
        let request = Request::Exec(ExecProcess {
            id: id.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            tty: options.tty,
            stdin: options.stdin,
            stdout: options.stdout,
            stderr: options.stderr,
            timeout_ms: None,
        });
        let (r, w) = client::open_session(self.path(), &request).await?;
        Ok(session::start(r, w, options))
    }

    async fn attach(&self, id: &str, options: StreamOptions) -> Session {
        let request = Request::Attach(AttachStreams {
            id: id.into(),
            tty: options.tty,
            stdin: options.stdin,
            stdout: options.stdout,
            stderr: options.stderr,
        });
        let (r, w) = client::open_session(self.path(), &request).await.expect("attach");
        session::start(r, w, options)
    }

    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.info.pid)).unwrap().count()
    }

    fn monitor_log(&self) -> String {
        std::fs::read_to_string(self.path().join("monitor.log")).unwrap_or_default()
    }

    async fn shutdown(&self) {
        assert_eq!(self.call(Request::Shutdown).await.unwrap(), Response::Ok);
        let deadline = Instant::now() + Duration::from_secs(10);
        while capstan_runtime::monitor::is_alive(&self.info) {
            assert!(Instant::now() < deadline, "monitor did not exit");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if capstan_runtime::monitor::is_alive(&self.info) {
            use std::io::{BufRead, Write};
            if let Ok(mut s) = std::os::unix::net::UnixStream::connect(self.path().join("monitor.sock")) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(15)));
                let _ = s.write_all(b"{\"op\":\"shutdown\"}\n");
                let _ = std::io::BufReader::new(s).read_line(&mut String::new());
            }
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.info.pid), nix::sys::signal::SIGKILL);
        }
        for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            remove_cgroup_tree(&h.path().join(self.cgroup_parent.strip_prefix("/").unwrap()));
        }
    }
}

fn remove_cgroup_tree(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_cgroup_tree(&entry.path());
        }
    }
    for pid in std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default().lines() {
        if let Ok(pid) = pid.parse() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
    }
    for _ in 0..50 {
        if std::fs::remove_dir(dir).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn busybox_rootfs(root: &Path) -> PathBuf {
    for dir in ["bin", "etc", "srv"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static installed");
    for applet in ["sh", "echo", "sleep", "cat", "true", "stty", "pwd", "env", "tty", "printf", "head", "mkdir", "grep"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    root.to_path_buf()
}

fn ns(typ: LinuxNamespaceType, path: Option<&PathBuf>) -> LinuxNamespace {
    let mut b = LinuxNamespaceBuilder::default().typ(typ);
    if let Some(p) = path {
        b = b.path(p.clone());
    }
    b.build().unwrap()
}

fn spec(rootfs: &Path, args: &[&str], info: &MonitorInfo, cgroup: &Path) -> Spec {
    let mut spec = Spec::default();
    spec.set_root(Some(RootBuilder::default().path(rootfs).readonly(false).build().unwrap()));
    spec.set_hostname(None);
    let mut process = spec.process().clone().unwrap();
    process.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    spec.set_process(Some(process));
    let mut linux = spec.linux().clone().unwrap();
    let paths = &info.namespace_paths;
    linux.set_namespaces(Some(vec![
        ns(LinuxNamespaceType::Pid, None),
        ns(LinuxNamespaceType::Mount, None),
        ns(LinuxNamespaceType::Network, paths.get("network")),
        ns(LinuxNamespaceType::Ipc, paths.get("ipc")),
        ns(LinuxNamespaceType::Uts, paths.get("uts")),
    ]));
    linux.set_cgroups_path(Some(cgroup.to_path_buf()));
    spec.set_linux(Some(linux));
    spec
}

fn no_mkdir() -> oci_spec::runtime::LinuxSeccomp {
    use oci_spec::runtime::{LinuxSeccompAction, LinuxSeccompBuilder, LinuxSyscallBuilder};
    let refuse = LinuxSyscallBuilder::default()
        .names(vec!["mkdir".to_string(), "mkdirat".to_string()])
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(libc::EPERM as u32)
        .build()
        .unwrap();
    LinuxSeccompBuilder::default().default_action(LinuxSeccompAction::ScmpActAllow).syscalls(vec![refuse]).build().unwrap()
}

const PIPES: StreamOptions = StreamOptions { tty: false, stdin: false, stdout: true, stderr: true };

/// Reads a stream to its end (bounded in time).
async fn read_all(stream: Option<BoxedReader>) -> String {
    let mut stream = stream.expect("stream asked for");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut out)).await.expect("stream ends").unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads until `pattern` has been seen in what was read so far (bounded in time).
async fn read_until(stream: &mut BoxedReader, seen: &mut String, pattern: &str) {
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        while !seen.contains(pattern) {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "stream ended before {pattern:?}; got {seen:?}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await;
    assert!(found.is_ok(), "no {pattern:?} in {seen:?}");
}

async fn end_of(session: Session) -> SessionEnd {
    tokio::time::timeout(Duration::from_secs(20), session.end).await.expect("session ends")
}

/// Processes on the host whose command line is exactly `args`.
fn processes(args: &[&str]) -> Vec<i32> {
    let wanted = args.join("\0") + "\0";
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        if std::fs::read(entry.path().join("cmdline")).is_ok_and(|c| c == wanted.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

async fn wait_gone(args: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes(args).is_empty() {
        assert!(Instant::now() < deadline, "{args:?} still runs: {:?}", processes(args));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_with_pipes_runs_as_the_container_and_reports_exit_codes() {
    let pod = Pod::start().await;
    pod.run("c", &["sleep", "1000"], Opts::default()).await;

    // Output on both streams, the container's env and working directory, its exit code.
    let args = ["sh", "-c", "echo out; echo err >&2; echo \"$GREETING\"; pwd; exit 7"];
    let mut s = pod.exec("c", &args, PIPES).await.unwrap();
    assert!(s.stdin.is_none() && s.resize.is_none());
    let (out, err) = tokio::join!(read_all(s.stdout.take()), read_all(s.stderr.take()));
    assert_eq!(out, "out\nhello from the spec\n/srv\n");
    assert_eq!(err, "err\n");
    assert_eq!(end_of(s).await, SessionEnd::Exited(7));

    // stdin piped to cat; dropping the session's stdin is EOF for cat.
    let options = StreamOptions { stdin: true, ..PIPES };
    let mut s = pod.exec("c", &["cat"], options).await.unwrap();
    let mut stdin = s.stdin.take().unwrap();
    stdin.write_all(b"line one\nline two").await.unwrap();
    drop(stdin);
    assert_eq!(read_all(s.stdout.take()).await, "line one\nline two");
    assert_eq!(end_of(s).await, SessionEnd::Exited(0));

    // A command that does not exist is refused before a session starts.
    let err = pod.exec("c", &["/no/such/binary"], PIPES).await.err().expect("refused");
    assert!(matches!(err, capstan_runtime::Error::FailedPrecondition(_)), "{err:?}");
    // Not a container of this pod.
    assert!(pod.exec("nope", &["true"], PIPES).await.is_err());

    // Many execs leave no descriptors behind in the monitor (once it has seen the refused
    // sessions' connections close).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = pod.fds();
    for _ in 0..20 {
        let mut s = pod.exec("c", &["sh", "-c", "echo x; echo y >&2"], PIPES).await.unwrap();
        let (out, _) = tokio::join!(read_all(s.stdout.take()), read_all(s.stderr.take()));
        assert_eq!(out, "x\n");
        assert_eq!(end_of(s).await, SessionEnd::Exited(0));
    }
    // The monitor closes its end right after the end frame.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(pod.fds(), before, "{}", pod.monitor_log());
    // Nor files: process specs, console sockets, libcontainer's per-exec sockets.
    let mut left: Vec<String> = std::fs::read_dir(pod.path()).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    left.extend(std::fs::read_dir(pod.path().join("youki/c")).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()));
    assert!(!left.iter().any(|f| f.starts_with("exec-") || f.starts_with("tenant-")), "{left:?}");
    pod.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_timeout_and_dropped_sessions_kill_the_process_group() {
    let pod = Pod::start().await;
    pod.run("c", &["sleep", "1000"], Opts::default()).await;

    // The timeout kills the whole group: sh and the sleep it forked.
    let request = Request::Exec(ExecProcess {
        id: "c".into(),
        args: ["sh", "-c", "sleep 3011; echo never"].map(String::from).to_vec(),
        tty: false,
        stdin: false,
        stdout: true,
        stderr: true,
        timeout_ms: Some(500),
    });
    let t = Instant::now();
    let (mut r, _w) = client::open_session(pod.path(), &request).await.unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(10), client::read_frame(&mut r)).await.unwrap().unwrap();
    assert_eq!(frame, Some(Frame::End(cri_proto::monitor::SessionEnd::TimedOut)));
    assert!(t.elapsed() >= Duration::from_millis(500) && t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    wait_gone(&["sleep", "3011"]).await;
    assert_eq!(client::read_frame(&mut r).await.unwrap(), None, "the monitor closes the session");

    // Dropping a session before the process ended kills it.
    let s = pod.exec("c", &["sh", "-c", "sleep 3012; echo never"], PIPES).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while processes(&["sleep", "3012"]).is_empty() {
        assert!(Instant::now() < deadline, "sleep did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(s);
    wait_gone(&["sleep", "3012"]).await;

    // Stopping the container ends its execs too.
    let s = pod.exec("c", &["sleep", "3013"], PIPES).await.unwrap();
    pod.call(Request::Stop { id: "c".into(), signal: 9, timeout_ms: 0 }).await.unwrap();
    assert_eq!(end_of(s).await, SessionEnd::Exited(137));
    wait_gone(&["sleep", "3013"]).await;
    // And an exited container runs no more execs.
    let err = pod.exec("c", &["true"], PIPES).await.err().expect("refused");
    assert!(matches!(err, capstan_runtime::Error::FailedPrecondition(_)), "{err:?}");
    pod.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_with_a_terminal_resizes() {
    let pod = Pod::start().await;
    pod.run("c", &["sleep", "1000"], Opts::default()).await;
    let options = StreamOptions { tty: true, stdin: true, stdout: true, stderr: false };
    let mut s = pod.exec("c", &["sh"], options).await.unwrap();
    assert!(s.stderr.is_none());
    let resize = s.resize.clone().expect("a terminal can be resized");
    let mut stdin = s.stdin.take().unwrap();
    let mut stdout = s.stdout.take().unwrap();
    let mut seen = String::new();
    resize.send(TerminalSize { width: 91, height: 37 }).unwrap();
    stdin.write_all(b"tty; stty size\n").await.unwrap();
    read_until(&mut stdout, &mut seen, "37 91").await;
    assert!(seen.contains("/dev/pts/"), "{seen}");
    resize.send(TerminalSize { width: 120, height: 50 }).unwrap();
    stdin.write_all(b"stty size\n").await.unwrap();
    read_until(&mut stdout, &mut seen, "50 120").await;
    stdin.write_all(b"exit 5\n").await.unwrap();
    let rest = read_all(Some(stdout)).await;
    assert_eq!(end_of(s).await, SessionEnd::Exited(5), "{seen}{rest}");
    pod.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_streams_output_and_feeds_stdin() {
    let pod = Pod::start().await;
    // stdin_once: the first attach that detaches closes the container's stdin.
    let script = "while read l; do echo got:$l; echo warn:$l >&2; done; echo bye; exit 4";
    pod.run("once", &["sh", "-c", script], Opts { stdin: true, stdin_once: true, ..Default::default() }).await;
    let options = StreamOptions { stdin: true, ..PIPES };
    let mut s = pod.attach("once", options).await;
    let mut stdin = s.stdin.take().unwrap();
    let mut stdout = s.stdout.take().unwrap();
    let mut seen = String::new();
    stdin.write_all(b"a\n").await.unwrap();
    read_until(&mut stdout, &mut seen, "got:a\n").await;
    let mut stderr = s.stderr.take().unwrap();
    let mut seen_err = String::new();
    read_until(&mut stderr, &mut seen_err, "warn:a\n").await;
    drop(stdin);
    read_until(&mut stdout, &mut seen, "bye\n").await;
    assert_eq!(end_of(s).await, SessionEnd::Exited(4));
    assert_eq!(pod.status("once").await.phase, ContainerPhase::Exited);
    let log = std::fs::read_to_string(pod.log_path("once")).unwrap();
    assert!(log.contains("stdout F got:a") && log.contains("stderr F warn:a") && log.contains("stdout F bye"), "{log}");

    // Without stdin_once the container's stdin outlives an attach; two attaches see the same
    // output.
    pod.run("many", &["sh", "-c", "while read l; do echo got:$l; done"], Opts { stdin: true, ..Default::default() }).await;
    let mut first = pod.attach("many", options).await;
    let mut watcher = pod.attach("many", StreamOptions { stdout: true, ..Default::default() }).await;
    assert!(watcher.stdin.is_none() && watcher.stderr.is_none());
    first.stdin.take().unwrap().write_all(b"x\n").await.unwrap();
    let mut seen = String::new();
    read_until(first.stdout.as_mut().unwrap(), &mut seen, "got:x\n").await;
    drop(first);
    let mut second = pod.attach("many", options).await;
    second.stdin.as_mut().unwrap().write_all(b"y\n").await.unwrap();
    let mut seen2 = String::new();
    read_until(second.stdout.as_mut().unwrap(), &mut seen2, "got:y\n").await;
    let mut watched = String::new();
    read_until(watcher.stdout.as_mut().unwrap(), &mut watched, "got:x\ngot:y\n").await;
    assert_eq!(pod.status("many").await.phase, ContainerPhase::Running);
    // A container without CRI stdin reads /dev/null: attaching it gives no stdin effect.
    pod.call(Request::Stop { id: "many".into(), signal: 9, timeout_ms: 0 }).await.unwrap();
    assert_eq!(end_of(second).await, SessionEnd::Exited(137));
    assert_eq!(end_of(watcher).await, SessionEnd::Exited(137));
    pod.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_to_a_terminal_container_resizes_it() {
    let pod = Pod::start().await;
    pod.run("t", &["sh"], Opts { tty: true, stdin: true, ..Default::default() }).await;
    let options = StreamOptions { tty: true, stdin: true, stdout: true, stderr: false };
    let mut s = pod.attach("t", options).await;
    let resize = s.resize.clone().expect("resizable");
    resize.send(TerminalSize { width: 77, height: 22 }).unwrap();
    let mut stdin = s.stdin.take().unwrap();
    stdin.write_all(b"stty size\n").await.unwrap();
    let mut seen = String::new();
    read_until(s.stdout.as_mut().unwrap(), &mut seen, "22 77").await;
    // A mismatched terminal setting is refused.
    let request = Request::Attach(AttachStreams { id: "t".into(), tty: false, stdin: false, stdout: true, stderr: true });
    assert!(client::open_session(pod.path(), &request).await.is_err());
    stdin.write_all(b"exit 2\n").await.unwrap();
    assert_eq!(end_of(s).await, SessionEnd::Exited(2));
    pod.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_keeps_the_container_seccomp_profile_and_capabilities() {
    let pod = Pod::start().await;
    for (id, no_new_privs) in [("plain", false), ("nnp", true)] {
        pod.run(id, &["sleep", "1000"], Opts { no_mkdir: true, no_new_privs, ..Default::default() }).await;
        let mut s = pod.exec(id, &["sh", "-c", "mkdir /srv/made && echo made"], PIPES).await.unwrap();
        let (out, err) = tokio::join!(read_all(s.stdout.take()), read_all(s.stderr.take()));
        assert_eq!(out, "", "mkdir must be refused in {id}: {err}");
        assert!(err.contains("Operation not permitted"), "{id}: {err}");
        assert_eq!(end_of(s).await, SessionEnd::Exited(1));
        // The exec'd process has exactly the container's capabilities and no_new_privs.
        let caps = "grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs)' /proc/self/status; grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs)' /proc/1/status";
        let mut s = pod.exec(id, &["sh", "-c", caps], PIPES).await.unwrap();
        let out = read_all(s.stdout.take()).await;
        assert_eq!(end_of(s).await, SessionEnd::Exited(0));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 12, "{out}");
        assert_eq!(lines[..6], lines[6..], "exec vs the container's init in {id}");
        assert!(lines.contains(&if no_new_privs { "NoNewPrivs:\t1" } else { "NoNewPrivs:\t0" }), "{out}");
        assert!(!lines.iter().any(|l| l.starts_with("CapEff") && l.ends_with("1fffffffff")), "{out}");
    }
    pod.shutdown().await;
}

/// Not a benchmark proper: prints how long a whole exec of `true` takes through the monitor.
#[tokio::test(flavor = "multi_thread")]
async fn exec_latency() {
    let pod = Pod::start().await;
    pod.run("c", &["sleep", "1000"], Opts::default()).await;
    let mut times = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        let mut s = pod.exec("c", &["true"], PIPES).await.unwrap();
        let (_, _) = tokio::join!(read_all(s.stdout.take()), read_all(s.stderr.take()));
        assert_eq!(end_of(s).await, SessionEnd::Exited(0));
        times.push(t.elapsed());
    }
    times.sort();
    if std::env::var("EXEC_TEST_LOG").is_ok() {
        let log = pod.monitor_log();
        let lines: Vec<&str> = log.lines().collect();
        println!("{}", lines[lines.len().saturating_sub(80)..].join("\n"));
    }
    println!("exec of `true` through the monitor: median {:?}, max {:?}", times[times.len() / 2], times[times.len() - 1]);
    pod.shutdown().await;
}
