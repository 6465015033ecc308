//! Arbitrary bytes as a layer blob (gzip, zstd or plain tar): unpacking fails cleanly or
//! succeeds, and never writes outside the snapshot directory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let scratch = tempfile::tempdir().expect("tempdir");
    let dest = scratch.path().join("snapshot");
    std::fs::create_dir(&dest).expect("snapshot dir");
    let stream = match capstan_runtime::image::unpack::decompressor(data) {
        Ok(s) => s,
        Err(_) => return,
    };
    let _ = capstan_runtime::image::unpack::extract(stream, &dest);
    let outside: Vec<_> = std::fs::read_dir(scratch.path()).expect("scratch").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(outside, vec![std::ffi::OsString::from("snapshot")], "the layer wrote beside its snapshot");
});
