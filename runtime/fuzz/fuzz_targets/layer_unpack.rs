//! Structure-aware layer fuzzing: tars built from entries whose names and link targets are
//! drawn from a small, hostile alphabet (`..`, absolute paths, whiteouts, links to links).
//! Whatever the archive, the unpacker never creates, changes or follows anything outside
//! the snapshot directory: a sibling "victim" directory stays byte-for-byte the same.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(Vec<Part>),
    Hardlink(Vec<Part>),
    Fifo,
}

#[derive(Debug, Arbitrary)]
enum Part {
    Up,
    Root,
    A,
    B,
    Victim,
    Whiteout,
    Opaque,
    Dot,
}

#[derive(Debug, Arbitrary)]
struct Entry {
    path: Vec<Part>,
    kind: Kind,
    mode: u16,
}

fn join(parts: &[Part]) -> String {
    let mut s = String::new();
    for (i, p) in parts.iter().take(6).enumerate() {
        let piece = match p {
            Part::Up => "..",
            Part::Root => "",
            Part::A => "a",
            Part::B => "b",
            Part::Victim => "victim",
            Part::Whiteout => ".wh.a",
            Part::Opaque => ".wh..wh..opq",
            Part::Dot => ".",
        };
        if i > 0 || matches!(p, Part::Root) {
            s.push('/');
        }
        s.push_str(piece);
    }
    if s.is_empty() { "a".into() } else { s }
}

/// Writes the raw header name: `tar::Builder` would refuse the hostile names we want.
fn header(path: &str, kind: tar::EntryType, size: u64, mode: u16, link: Option<&str>) -> tar::Header {
    let mut h = tar::Header::new_old();
    let name = path.as_bytes();
    let n = name.len().min(99);
    h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
    if let Some(link) = link {
        let l = link.as_bytes();
        let n = l.len().min(99);
        h.as_old_mut().linkname[..n].copy_from_slice(&l[..n]);
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(u32::from(mode) & 0o7777);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    h
}

fn snapshot(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("victim dir") {
        let entry = entry.expect("entry");
        let meta = std::fs::symlink_metadata(entry.path()).expect("meta");
        let content = if meta.is_file() { std::fs::read(entry.path()).expect("read") } else { Vec::new() };
        out.push((entry.file_name().to_string_lossy().into_owned(), content));
    }
    out.sort();
    out
}

fuzz_target!(|entries: Vec<Entry>| {
    let mut tar = Vec::new();
    for e in entries.iter().take(16) {
        let path = join(&e.path);
        let (h, data): (tar::Header, &[u8]) = match &e.kind {
            Kind::File(d) => (header(&path, tar::EntryType::Regular, d.len().min(4096) as u64, e.mode, None), &d[..d.len().min(4096)]),
            Kind::Dir => (header(&path, tar::EntryType::Directory, 0, e.mode | 0o700, None), &[]),
            Kind::Symlink(t) => (header(&path, tar::EntryType::Symlink, 0, 0o777, Some(&join(t))), &[]),
            Kind::Hardlink(t) => (header(&path, tar::EntryType::Link, 0, 0o644, Some(&join(t))), &[]),
            Kind::Fifo => (header(&path, tar::EntryType::Fifo, 0, e.mode, None), &[]),
        };
        tar.extend_from_slice(h.as_bytes());
        tar.extend_from_slice(data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.extend_from_slice(&[0u8; 1024]);

    let scratch = tempfile::tempdir().expect("tempdir");
    let dest = scratch.path().join("snapshot");
    let victim = scratch.path().join("victim");
    std::fs::create_dir(&dest).expect("snapshot dir");
    std::fs::create_dir(&victim).expect("victim dir");
    std::fs::write(victim.join("a"), b"keep").expect("victim file");
    let before = snapshot(&victim);
    let _ = capstan_runtime::image::unpack::extract(&tar[..], &dest);
    assert_eq!(snapshot(&victim), before, "the layer changed a directory beside its snapshot");
    let mut names: Vec<_> = std::fs::read_dir(scratch.path()).expect("scratch").map(|e| e.expect("entry").file_name()).collect();
    names.sort();
    assert_eq!(names, vec![std::ffi::OsString::from("snapshot"), std::ffi::OsString::from("victim")], "the layer wrote beside its snapshot");
});
