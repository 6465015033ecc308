//! `cri-bench`: drives any CRI endpoint (Capstan, containerd, CRI-O) through pod lifecycles
//! and prints per-step latency figures, so runtimes are compared with the same client.
//!
//! ```text
//! cri-bench --endpoint unix:///run/capstan/capstan.sock --image 127.0.0.1:5000/busybox:1 \
//!           --iterations 20 --parallel 20 --rss-process capstan --rss-process capstan-monitor
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Parser;
use cri_proto::v1;
use cri_proto::{ImageServiceClient, RuntimeServiceClient};
use tonic::transport::Channel;

#[derive(Debug, Parser)]
#[command(about = "Benchmark a CRI runtime: per-step latency, parallel pod start, memory")]
enum Cli {
    /// Drive one endpoint and print its figures.
    Run(Args),
    /// Merge the samples files of several runs and print medians and ratios per step.
    Compare {
        /// JSON-lines samples written by `run --samples-out`.
        file: std::path::PathBuf,
        /// The runtime the ratios are relative to (ratio = other / baseline).
        #[arg(long, default_value = "capstan")]
        baseline: String,
    },
}

#[derive(Debug, clap::Args)]
struct Args {
    /// CRI endpoint (unix:///path or a socket path).
    #[arg(long)]
    endpoint: String,
    /// Image the benchmark containers run (must provide `sleep` and `true`).
    #[arg(long)]
    image: String,
    /// Image pulled and removed in the image steps (kept distinct from --image).
    #[arg(long)]
    pull_image: Option<String>,
    /// Sequential lifecycles to time.
    #[arg(long, default_value_t = 20)]
    iterations: usize,
    /// Pods started at once in the parallel phase (0 skips it). May be repeated.
    #[arg(long)]
    parallel: Vec<usize>,
    /// Process names whose RSS is reported (idle and with the parallel pods running).
    #[arg(long)]
    rss_process: Vec<String>,
    /// Name printed in the result lines.
    #[arg(long, default_value = "runtime")]
    label: String,
    /// Directory for pod log dirs.
    #[arg(long, default_value = "/tmp/cri-bench-logs")]
    log_dir: String,
    /// Cgroup parent for the pods (empty: the runtime's default).
    #[arg(long, default_value = "")]
    cgroup_parent: String,
    /// Append the raw samples (JSON lines) here, for `compare`.
    #[arg(long)]
    samples_out: Option<std::path::PathBuf>,
}

type Steps = BTreeMap<&'static str, Vec<Duration>>;

/// How long parallel pods run before their memory is measured again.
const SETTLE: Duration = Duration::from_secs(5);

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = match Cli::parse() {
        Cli::Run(args) => args,
        Cli::Compare { file, baseline } => return compare(&file, &baseline),
    };
    let channel = cri_proto::unix::connect(cri_proto::unix::socket_path(&args.endpoint)).await?;
    let mut rt = RuntimeServiceClient::new(channel.clone());
    let mut img = ImageServiceClient::new(channel.clone());
    let version = rt.version(v1::VersionRequest::default()).await?.into_inner();
    println!("# {}: {} {}", args.label, version.runtime_name, version.runtime_version);
    // The container image must be present before timing starts.
    img.pull_image(pull_request(&args.image)).await?;
    std::fs::create_dir_all(&args.log_dir)?;

    let mut steps = Steps::new();
    for i in 0..args.iterations {
        lifecycle(&mut rt, &args, &format!("seq-{i}"), &mut steps).await?;
        if let Some(image) = &args.pull_image {
            image_steps(&mut img, image, &mut steps).await?;
        }
    }
    print_steps(&args.label, &steps);
    if let Some(path) = &args.samples_out {
        write_samples(path, &args.label, &steps)?;
    }
    print_rss(&args.label, "idle", &args.rss_process);

    for &k in &args.parallel {
        if k > 0 {
            parallel(&channel, &args, k).await?;
        }
    }
    Ok(())
}

fn pull_request(image: &str) -> v1::PullImageRequest {
    v1::PullImageRequest { image: Some(image_spec(image)), auth: None, sandbox_config: None }
}

fn image_spec(image: &str) -> v1::ImageSpec {
    v1::ImageSpec { image: image.into(), ..Default::default() }
}

fn sandbox_config(args: &Args, name: &str) -> v1::PodSandboxConfig {
    v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}-{}", std::process::id()),
            namespace: "cri-bench".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: format!("{}/{name}", args.log_dir),
        linux: Some(v1::LinuxPodSandboxConfig {
            cgroup_parent: args.cgroup_parent.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(args: &Args) -> v1::ContainerConfig {
    v1::ContainerConfig {
        metadata: Some(v1::ContainerMetadata { name: "sleeper".into(), attempt: 0 }),
        image: Some(image_spec(&args.image)),
        command: vec!["sleep".into(), "3600".into()],
        log_path: "sleeper.log".into(),
        ..Default::default()
    }
}

async fn timed<T, F: std::future::Future<Output = Result<T, tonic::Status>>>(
    steps: &mut Steps,
    name: &'static str,
    f: F,
) -> Result<T, tonic::Status> {
    let start = Instant::now();
    let out = f.await.map_err(|e| tonic::Status::new(e.code(), format!("{name}: {}", e.message())))?;
    steps.entry(name).or_default().push(start.elapsed());
    Ok(out)
}

async fn lifecycle(rt: &mut RuntimeServiceClient<Channel>, args: &Args, name: &str, steps: &mut Steps) -> Result<(), tonic::Status> {
    // An empty call: the transport's floor (gRPC over the unix socket, both ends), which
    // the cheap steps (ContainerStatus, ImageStatus) cannot go below.
    timed(steps, "0 Version", rt.version(v1::VersionRequest::default())).await?;
    let config = sandbox_config(args, name);
    let pod = timed(steps, "1 RunPodSandbox", rt.run_pod_sandbox(v1::RunPodSandboxRequest {
        config: Some(config.clone()),
        runtime_handler: String::new(),
    }))
    .await?
    .into_inner()
    .pod_sandbox_id;
    let ctr = timed(steps, "2 CreateContainer", rt.create_container(v1::CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(container_config(args)),
        sandbox_config: Some(config),
    }))
    .await?
    .into_inner()
    .container_id;
    timed(steps, "3 StartContainer", rt.start_container(v1::StartContainerRequest { container_id: ctr.clone() })).await?;
    timed(steps, "4 ContainerStatus", rt.container_status(v1::ContainerStatusRequest { container_id: ctr.clone(), verbose: false })).await?;
    let exec = timed(steps, "5 ExecSync", rt.exec_sync(v1::ExecSyncRequest { container_id: ctr.clone(), cmd: vec!["true".into()], timeout: 10 })).await;
    if let Err(e) = exec {
        // Not every runtime build has ExecSync yet; the lifecycle goes on without it.
        if e.code() != tonic::Code::Unimplemented {
            return Err(e);
        }
    }
    timed(steps, "6 StopContainer", rt.stop_container(v1::StopContainerRequest { container_id: ctr.clone(), timeout: 0 })).await?;
    timed(steps, "7 RemoveContainer", rt.remove_container(v1::RemoveContainerRequest { container_id: ctr })).await?;
    timed(steps, "8 StopPodSandbox", rt.stop_pod_sandbox(v1::StopPodSandboxRequest { pod_sandbox_id: pod.clone() })).await?;
    timed(steps, "9 RemovePodSandbox", rt.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: pod })).await?;
    Ok(())
}

async fn image_steps(img: &mut ImageServiceClient<Channel>, image: &str, steps: &mut Steps) -> Result<(), tonic::Status> {
    timed(steps, "a PullImage", img.pull_image(pull_request(image))).await?;
    timed(steps, "b ImageStatus", img.image_status(v1::ImageStatusRequest { image: Some(image_spec(image)), verbose: false })).await?;
    timed(steps, "c RemoveImage", img.remove_image(v1::RemoveImageRequest { image: Some(image_spec(image)) })).await?;
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn print_steps(label: &str, steps: &Steps) {
    println!("{:<8} {:<20} {:>6} {:>10} {:>10} {:>10}", "runtime", "step", "n", "median_ms", "p95_ms", "max_ms");
    for (name, samples) in steps {
        let mut sorted = samples.clone();
        sorted.sort();
        println!(
            "{label:<8} {:<20} {:>6} {:>10.2} {:>10.2} {:>10.2}",
            &name[2..],
            sorted.len(),
            ms(percentile(&sorted, 0.5)),
            ms(percentile(&sorted, 0.95)),
            ms(*sorted.last().unwrap_or(&Duration::ZERO)),
        );
    }
}

/// Memory of the processes named `name`: summed RSS and PSS (KiB) and how many there are.
/// RSS counts shared code once per process; PSS splits shared pages among their users, so
/// it is the fair per-process cost.
fn memory_of(name: &str) -> (u64, u64, usize) {
    let (mut rss, mut pss, mut count) = (0, 0, 0);
    let Ok(dir) = std::fs::read_dir("/proc") else { return (0, 0, 0) };
    for entry in dir.flatten() {
        let path = entry.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let rollup = std::fs::read_to_string(path.join("smaps_rollup")).unwrap_or_default();
        let field = |key: &str| {
            rollup
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        };
        if let (Some(r), Some(p)) = (field("Rss:"), field("Pss:")) {
            rss += r;
            pss += p;
            count += 1;
        }
    }
    (rss, pss, count)
}

fn print_rss(label: &str, phase: &str, names: &[String]) {
    for name in names {
        let (rss, pss, n) = memory_of(name);
        let per = |kb: u64| if n > 0 { kb as f64 / n as f64 / 1024.0 } else { 0.0 };
        println!(
            "{label:<8} mem {phase:<12} {name:<18} procs={n:<4} rss_mib={:.1} pss_mib={:.1} per_proc_rss_mib={:.2} per_proc_pss_mib={:.2}",
            rss as f64 / 1024.0,
            pss as f64 / 1024.0,
            per(rss),
            per(pss)
        );
    }
}

async fn parallel(channel: &Channel, args: &Args, k: usize) -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..k {
        let mut rt = RuntimeServiceClient::new(channel.clone());
        let config = sandbox_config(args, &format!("par{k}-{i}"));
        let container = container_config(args);
        tasks.push(tokio::spawn(async move {
            let pod = rt
                .run_pod_sandbox(v1::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() })
                .await?
                .into_inner()
                .pod_sandbox_id;
            let ctr = rt
                .create_container(v1::CreateContainerRequest { pod_sandbox_id: pod.clone(), config: Some(container), sandbox_config: Some(config) })
                .await?
                .into_inner()
                .container_id;
            rt.start_container(v1::StartContainerRequest { container_id: ctr.clone() }).await?;
            Ok::<_, tonic::Status>((pod, ctr))
        }));
    }
    let mut pods = Vec::new();
    let mut errors = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(started)) => pods.push(started),
            Ok(Err(e)) => {
                errors += 1;
                eprintln!("parallel start error: {e}");
            }
            Err(e) => {
                errors += 1;
                eprintln!("parallel task failed: {e}");
            }
        }
    }
    let wall = start.elapsed();
    println!("{:<8} parallel k={k:<4} start_wall_ms={:.1} per_pod_ms={:.2} errors={errors}", args.label, ms(wall), ms(wall) / k as f64);
    // Three moments of a pod's life: just started; settled (a pod spends most of its life
    // idle); and just after an exec in every pod (what a liveness probe costs).
    print_rss(&args.label, &format!("with {k} pods, just started"), &args.rss_process);
    tokio::time::sleep(SETTLE).await;
    print_rss(&args.label, &format!("with {k} pods, settled {}s", SETTLE.as_secs()), &args.rss_process);
    let mut rt = RuntimeServiceClient::new(channel.clone());
    for (_, ctr) in &pods {
        let exec = v1::ExecSyncRequest { container_id: ctr.clone(), cmd: vec!["true".into()], timeout: 10 };
        if let Err(e) = rt.exec_sync(exec).await {
            eprintln!("exec in a parallel pod failed: {e}");
        }
    }
    print_rss(&args.label, &format!("with {k} pods, after an exec in each"), &args.rss_process);
    let start = Instant::now();
    for (pod, _) in pods {
        rt.stop_pod_sandbox(v1::StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await?;
        rt.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: pod }).await?;
    }
    println!("{:<8} parallel k={k:<4} teardown_wall_ms={:.1}", args.label, ms(start.elapsed()));
    Ok(())
}

fn write_samples(path: &std::path::Path, label: &str, steps: &Steps) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    for (step, samples) in steps {
        let ms: Vec<f64> = samples.iter().map(|d| ms(*d)).collect();
        writeln!(file, "{}", serde_json::json!({ "label": label, "step": &step[2..], "order": &step[..1], "ms": ms }))?;
    }
    Ok(())
}

fn compare(path: &std::path::Path, baseline: &str) -> Result<(), Box<dyn std::error::Error>> {
    // (order, step) -> label -> samples
    let mut all: BTreeMap<(String, String), BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    for line in std::fs::read_to_string(path)?.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let key = (v["order"].as_str().unwrap_or("").to_string(), v["step"].as_str().unwrap_or("").to_string());
        let label = v["label"].as_str().unwrap_or("").to_string();
        let samples = all.entry(key).or_default().entry(label).or_default();
        samples.extend(v["ms"].as_array().into_iter().flatten().filter_map(|x| x.as_f64()));
    }
    let labels: std::collections::BTreeSet<String> = all.values().flat_map(|m| m.keys().cloned()).collect();
    let others: Vec<&String> = labels.iter().filter(|l| *l != baseline).collect();
    print!("{:<20} {:>14} {:>10}", "step", format!("{baseline}_med"), "p95");
    for o in &others {
        print!(" {:>16} {:>10} {:>8}", format!("{o}_med"), "p95", "ratio");
    }
    println!();
    for ((_, step), by_label) in &all {
        let stat = |l: &str| {
            by_label.get(l).map(|v| {
                let mut v = v.clone();
                v.sort_by(f64::total_cmp);
                let at = |p: f64| v[(((v.len() - 1) as f64) * p).round() as usize];
                (at(0.5), at(0.95))
            })
        };
        let base = stat(baseline);
        match base {
            Some((m, p)) => print!("{step:<20} {m:>14.2} {p:>10.2}"),
            None => print!("{step:<20} {:>14} {:>10}", "-", "-"),
        }
        for o in &others {
            match (stat(o), base) {
                (Some((m, p)), Some((bm, _))) => print!(" {m:>16.2} {p:>10.2} {:>8.2}", m / bm),
                (Some((m, p)), None) => print!(" {m:>16.2} {p:>10.2} {:>8}", "-"),
                _ => print!(" {:>16} {:>10} {:>8}", "-", "-", "-"),
            }
        }
        println!();
    }
    Ok(())
}
