//! Pull benchmark (ignored by default; `integration/bench/pull.sh` runs it in release mode):
//! a ~50 MB multi-layer image built at test time is pulled by capstan (download, verify,
//! unpack into snapshots, fsync) and copied by `skopeo copy` to a directory (download,
//! verify, write blobs), alternately, from the same local registry.

use std::time::{Duration, Instant};

use capstan_integration::daemon::{Daemon, DaemonOptions};
use capstan_integration::image::ImageBuilder;
use capstan_integration::registry::Registry;
use cri_proto::v1;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run by integration/bench/pull.sh"]
async fn pull_50mb_capstan_vs_skopeo() {
    let mib = env_usize("PULL_BENCH_MIB", 50);
    let layers = env_usize("PULL_BENCH_LAYERS", 5);
    let rounds = env_usize("PULL_BENCH_ROUNDS", 3);
    let registry = Registry::start().await;
    let builder = ImageBuilder::busybox().with_random_layers(mib, layers, 0x9e37_79b9_7f4a_7c15);
    let image = builder.push(&registry, "bench/pull", &["1"]).await;
    let reference = image.references[0].clone();
    println!(
        "image: {reference}, {} layers, {:.1} MB compressed",
        image.layer_digests.len(),
        image.size as f64 / 1e6
    );

    let daemon = Daemon::start(DaemonOptions::default()).await;
    let mut client = daemon.image_client().await;
    let skopeo_dir = tempfile::tempdir().expect("tempdir");
    let (mut capstan, mut skopeo) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let started = Instant::now();
        let pulled = client
            .pull_image(v1::PullImageRequest {
                image: Some(v1::ImageSpec { image: reference.clone(), ..Default::default() }),
                ..Default::default()
            })
            .await
            .expect("capstan pull")
            .into_inner();
        capstan.push(started.elapsed());
        assert_eq!(pulled.image_ref, image.config_digest);
        client
            .remove_image(v1::RemoveImageRequest { image: Some(v1::ImageSpec { image: reference.clone(), ..Default::default() }) })
            .await
            .expect("remove");

        let dest = skopeo_dir.path().join(format!("round{round}"));
        let started = Instant::now();
        let out = std::process::Command::new("skopeo")
            .args(["copy", "--quiet", "--insecure-policy", "--src-tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .arg(format!("dir:{}", dest.display()))
            .output()
            .expect("run skopeo");
        skopeo.push(started.elapsed());
        assert!(out.status.success(), "skopeo copy failed: {}", String::from_utf8_lossy(&out.stderr));
        let _ = std::fs::remove_dir_all(&dest);
        println!("round {round}: capstan {:.0} ms, skopeo {:.0} ms", ms(capstan[round]), ms(skopeo[round]));
    }
    let (c, s) = (median(&mut capstan), median(&mut skopeo));
    println!("median of {rounds}: capstan pull {:.0} ms, skopeo copy to dir {:.0} ms (ratio capstan/skopeo {:.2})", ms(c), ms(s), ms(c) / ms(s));
}
