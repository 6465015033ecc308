//! The harness itself: the registry serves what the image builder pushed.

use capstan_integration::image::{ImageBuilder, push_index};
use capstan_integration::registry::Registry;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

fn client() -> Client {
    Client::new(ClientConfig { protocol: ClientProtocol::Http, ..Default::default() })
}

#[tokio::test(flavor = "multi_thread")]
async fn pushed_images_can_be_read_back_from_the_registry() {
    let registry = Registry::start().await;
    let image = ImageBuilder::busybox().push(&registry, "test/busybox", &["1.0", "latest"]).await;
    assert_eq!(image.references.len(), 2);
    for r in &image.references {
        let reference: Reference = r.parse().unwrap();
        let (_manifest, digest) = client().pull_manifest(&reference, &RegistryAuth::Anonymous).await.unwrap();
        assert_eq!(digest, image.manifest_digest, "{r}");
    }
    assert!(registry.blob_path(&image.config_digest).exists());
    // The busybox binary is in there, so the image is runnable.
    assert!(image.size > 500_000, "busybox layer is small: {}", image.size);

    // An index may only name manifests of its own repository.
    let users = ImageBuilder::busybox_with_users().push(&registry, "test/multi", &["arm64"]).await;
    let amd64 = ImageBuilder::busybox().push(&registry, "test/multi", &["amd64"]).await;
    let index = push_index(&registry, "test/multi", "latest", &[("linux", "arm64", &users), ("linux", "amd64", &amd64)]).await;
    let reference: Reference = format!("{}/test/multi:latest", registry.host()).parse().unwrap();
    let (raw, digest) = client().pull_manifest_raw(&reference, &RegistryAuth::Anonymous, &["application/vnd.oci.image.index.v1+json"]).await.unwrap();
    assert_eq!(digest, index);
    assert!(String::from_utf8_lossy(&raw).contains(&image.manifest_digest));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_auth_registry_refuses_anonymous_pulls() {
    let registry = Registry::start_with_auth("alice", "s3cret").await;
    let image = ImageBuilder::busybox().push(&registry, "private/busybox", &["1"]).await;
    let reference: Reference = image.references[0].parse().unwrap();
    assert!(client().pull_manifest(&reference, &RegistryAuth::Anonymous).await.is_err());
    let auth = RegistryAuth::Basic("alice".into(), "s3cret".into());
    let (_, digest) = client().pull_manifest(&reference, &auth).await.unwrap();
    assert_eq!(digest, image.manifest_digest);
}
