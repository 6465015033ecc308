//! What an idle monitor gives back. There is one monitor per pod, so its resident size is
//! the per-pod cost. Most of it is code it ran once: start-up (config, logging, the infra
//! process) maps pages of the binary, libc and the loader — and the kernel maps up to 64 KiB
//! around every page it faults in. None of that is needed while the monitor sleeps in
//! `poll`.
//!
//! So once the loop has been idle for [`IDLE`], the monitor drops its page-table entries for
//! clean, private, read-only file mappings (code and read-only data: the page cache keeps the
//! pages, and the next use maps them again with a minor fault) and returns free heap to the
//! kernel (`malloc_trim`). Mappings holding any anonymous page (relocated data, the GOT after
//! RELRO) are left alone: dropping those would lose what was written to them.

use std::time::Duration;

/// How long the loop must have nothing to do before it trims.
pub const IDLE: Duration = Duration::from_secs(2);

/// One mapping of `/proc/self/smaps`.
struct Mapping {
    start: usize,
    end: usize,
    droppable: bool,
    anonymous_kb: u64,
}

impl Mapping {
    /// `start-end perms offset dev inode [path]`: file-backed (inode ≠ 0), private, not
    /// writable.
    fn parse(header: &str) -> Option<Mapping> {
        let mut fields = header.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let perms = fields.next()?.as_bytes();
        let inode = fields.nth(2)?;
        let droppable = perms.len() == 4 && perms[1] == b'-' && perms[3] == b'p' && inode != "0";
        Some(Mapping {
            start: usize::from_str_radix(start, 16).ok()?,
            end: usize::from_str_radix(end, 16).ok()?,
            droppable,
            anonymous_kb: 0,
        })
    }
}

/// Ranges of clean, read-only, private file mappings in `smaps` text.
fn clean_file_ranges(smaps: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut current: Option<Mapping> = None;
    let finish = |m: Option<Mapping>, out: &mut Vec<(usize, usize)>| {
        if let Some(m) = m.filter(|m| m.droppable && m.anonymous_kb == 0 && m.end > m.start) {
            out.push((m.start, m.end - m.start));
        }
    };
    for line in smaps.lines() {
        // Header lines start with the address range; field lines with a capitalised name.
        if line.as_bytes().first().is_some_and(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) && line.contains('-') {
            finish(current.take(), &mut out);
            current = Mapping::parse(line);
        } else if let (Some(m), Some(value)) = (current.as_mut(), line.strip_prefix("Anonymous:")) {
            m.anonymous_kb = value.trim().trim_end_matches("kB").trim().parse().unwrap_or(u64::MAX);
        }
    }
    finish(current, &mut out);
    out
}

/// Returns free heap to the kernel, then drops the idle process' clean file pages; returns
/// the bytes of mappings dropped. The dropping comes last: code run after it maps its pages
/// (and, through fault-around, their neighbours) again.
pub fn trim() -> usize {
    // Safety: plain libc call; returns free arena memory to the kernel.
    unsafe { libc::malloc_trim(0) };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else { return 0 };
    let ranges = clean_file_ranges(&smaps);
    drop(smaps);
    let mut dropped = 0;
    for (start, len) in ranges {
        // Safety: the range is a whole private, read-only file mapping without anonymous
        // pages; MADV_DONTNEED only unmaps its pages, which fault back in from the file.
        if unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) } == 0 {
            dropped += len;
        }
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0100000 r--p 00000000 fd:01 1234 /usr/bin/capstan-monitor
Rss:                 400 kB
Anonymous:             0 kB
55d0c0100000-55d0c0400000 r-xp 00100000 fd:01 1234 /usr/bin/capstan-monitor
Anonymous:             0 kB
55d0c0400000-55d0c0410000 r--p 00400000 fd:01 1234 /usr/bin/capstan-monitor
Anonymous:            64 kB
55d0c0410000-55d0c0420000 rw-p 00410000 fd:01 1234 /usr/bin/capstan-monitor
Anonymous:            64 kB
55d0c1000000-55d0c1100000 rw-p 00000000 00:00 0 [heap]
Anonymous:           128 kB
7f0000000000-7f0000001000 r-xp 00000000 00:00 0 [vdso]
Anonymous:             0 kB
7f0000010000-7f0000020000 r--s 00000000 fd:01 99 /some/shared/file
Anonymous:             0 kB
";

    #[test]
    fn only_clean_private_read_only_file_mappings_are_dropped() {
        assert_eq!(clean_file_ranges(SMAPS), vec![(0x55d0c0000000, 0x100000), (0x55d0c0100000, 0x300000)]);
    }

    #[test]
    fn trimming_keeps_the_process_working() {
        // The test binary's own code is dropped and must fault back in.
        let dropped = trim();
        assert!(dropped > 0, "nothing was dropped");
        let v: Vec<u64> = (0..1000).collect();
        assert_eq!(v.iter().sum::<u64>(), 499_500);
        assert!(format!("{:?}", std::path::Path::new("/x")).contains('x'));
    }
}
