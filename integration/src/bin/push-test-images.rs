//! `push-test-images --registry 127.0.0.1:PORT`: pushes the images the benchmarks use,
//! built from Debian's busybox-static, to a registry a script started.
//!
//! - `bench/busybox:1`: busybox, for the benchmark containers;
//! - `bench/pull:1`: busybox plus a distinct layer, for the pull/remove steps;
//! - `pause:3.10`: a pause stand-in (busybox `sleep` as PID 1) for runtimes that need one.
//! - `bench/big:1` (with `--big-mib N`): N MiB of incompressible data in several layers.

use capstan_integration::image::{ImageBuilder, push_to_host};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Registry host:port (plain HTTP).
    #[arg(long)]
    registry: String,
    /// Also push `bench/big:1` with this many MiB of random data (in 5 layers).
    #[arg(long, default_value_t = 0)]
    big_mib: usize,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = Args::parse();
    let host = args.registry.as_str();
    let busybox = ImageBuilder::busybox().build();
    let img = push_to_host(&busybox, host, None, "bench/busybox", &["1"]).await;
    println!("{}", img.references[0]);
    let pull = ImageBuilder::busybox().with_file("/bench-marker", b"pull".to_vec(), 0o644).build();
    println!("{}", push_to_host(&pull, host, None, "bench/pull", &["1"]).await.references[0]);
    let pause = ImageBuilder::busybox().entrypoint(&["/bin/sleep", "infinity"]).cmd(&[]).build();
    println!("{}", push_to_host(&pause, host, None, "pause", &["3.10"]).await.references[0]);
    if args.big_mib > 0 {
        let builder = ImageBuilder::busybox().with_random_layers(args.big_mib, 5, 0x9e37_79b9_7f4a_7c15);
        let big = builder.build();
        println!("{}", push_to_host(&big, host, None, "bench/big", &["1"]).await.references[0]);
    }
}
