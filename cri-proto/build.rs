//! Generates kubelet's device-plugin API (v1beta1) from `proto/deviceplugin_v1beta1.proto`.
//! Needs `protoc` (packaging/deps.sh installs it); the CRI itself comes pre-built from k8s-cri.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/deviceplugin_v1beta1.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/deviceplugin_v1beta1.proto"], &["proto"])?;
    Ok(())
}
