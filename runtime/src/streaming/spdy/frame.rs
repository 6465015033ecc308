//! SPDY/3.1 frames on the wire: the fixed 8-byte headers, the control frames Kubernetes'
//! streaming clients send or expect, data frames, and zlib-compressed header blocks.
//!
//! Each direction of a connection has one zlib context for all its header blocks, primed
//! with [`HEADER_DICTIONARY`] and sync-flushed after every block; so every header block must
//! pass through [`Decoder`] (or [`Encoder`]) in wire order, even for frames we then ignore.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::dictionary::HEADER_DICTIONARY;

pub const VERSION: u16 = 3;
/// Last frame the sender sends on this stream (data, SYN_STREAM, SYN_REPLY, HEADERS).
pub const FLAG_FIN: u8 = 0x01;
/// SYN_STREAM: the recipient may not send on this stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// Frame lengths are 24-bit.
pub const MAX_PAYLOAD: usize = 0x00ff_ffff;
/// A decompressed header block larger than this is refused (a zlib bomb costs us nothing).
const MAX_HEADER_BLOCK: usize = 1 << 20;

/// RST_STREAM / GOAWAY status codes we send.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_REFUSED_STREAM: u32 = 3;
pub const RST_CANCEL: u32 = 5;
pub const GOAWAY_OK: u32 = 0;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

const STREAM_ID_MASK: u32 = 0x7fff_ffff;

/// Header names are lowercase on the wire; a name sent more than once has its values
/// joined with NUL in one entry, as SPDY/3 requires.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    pub fn new() -> Self {
        Headers::default()
    }

    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.0.push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split('\0').next().unwrap_or_default())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    pub id: u32,
    pub value: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream { stream_id: u32, associated_to: u32, priority: u8, slot: u8, flags: u8, headers: Headers },
    SynReply { stream_id: u32, flags: u8, headers: Headers },
    RstStream { stream_id: u32, status: u32 },
    Settings { flags: u8, entries: Vec<Setting> },
    Ping { id: u32 },
    GoAway { last_good_stream_id: u32, status: u32 },
    Headers { stream_id: u32, flags: u8, headers: Headers },
    WindowUpdate { stream_id: u32, delta: u32 },
    Data { stream_id: u32, flags: u8, data: Bytes },
    /// A control frame type SPDY/3.1 does not define: the spec says to ignore it.
    Unknown { kind: u16 },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("unsupported SPDY version {0} (only 3 is spoken)")]
    Version(u16),
    #[error("SPDY {kind} frame has a bad length {len}")]
    Length { kind: &'static str, len: usize },
    #[error("bad SPDY header block: {0}")]
    HeaderBlock(&'static str),
    #[error("SPDY header compression failed: {0}")]
    Zlib(String),
    #[error("SPDY frame payload of {0} bytes exceeds 24 bits")]
    TooLarge(usize),
}

/// Reads frames; owns the receiving direction's zlib context.
pub struct Decoder {
    inflate: Decompress,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder { inflate: Decompress::new(true) }
    }
}

impl Decoder {
    /// Takes one whole frame off the front of `buf`, or `None` if more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let head = buf.split_to(8);
        let mut payload = buf.split_to(len).freeze();
        let flags = head[4];
        if head[0] & 0x80 == 0 {
            let stream_id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & STREAM_ID_MASK;
            return Ok(Some(Frame::Data { stream_id, flags, data: payload }));
        }
        let version = u16::from_be_bytes([head[0], head[1]]) & 0x7fff;
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let need = |name: &'static str, ok: bool| if ok { Ok(()) } else { Err(FrameError::Length { kind: name, len }) };
        let frame = match kind {
            TYPE_SYN_STREAM => {
                need("SYN_STREAM", len >= 10)?;
                let stream_id = payload.get_u32() & STREAM_ID_MASK;
                let associated_to = payload.get_u32() & STREAM_ID_MASK;
                let priority = payload.get_u8() >> 5;
                let slot = payload.get_u8();
                let headers = self.header_block(&payload)?;
                Frame::SynStream { stream_id, associated_to, priority, slot, flags, headers }
            }
            TYPE_SYN_REPLY | TYPE_HEADERS => {
                need(if kind == TYPE_SYN_REPLY { "SYN_REPLY" } else { "HEADERS" }, len >= 4)?;
                let stream_id = payload.get_u32() & STREAM_ID_MASK;
                let headers = self.header_block(&payload)?;
                if kind == TYPE_SYN_REPLY {
                    Frame::SynReply { stream_id, flags, headers }
                } else {
                    Frame::Headers { stream_id, flags, headers }
                }
            }
            TYPE_RST_STREAM => {
                need("RST_STREAM", len == 8)?;
                Frame::RstStream { stream_id: payload.get_u32() & STREAM_ID_MASK, status: payload.get_u32() }
            }
            TYPE_SETTINGS => {
                need("SETTINGS", len >= 4)?;
                let count = payload.get_u32() as usize;
                need("SETTINGS", count.checked_mul(8) == Some(len - 4))?;
                let entries = (0..count)
                    .map(|_| {
                        let word = payload.get_u32();
                        Setting { flags: (word >> 24) as u8, id: word & 0x00ff_ffff, value: payload.get_u32() }
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            TYPE_PING => {
                need("PING", len == 4)?;
                Frame::Ping { id: payload.get_u32() }
            }
            TYPE_GOAWAY => {
                need("GOAWAY", len == 8)?;
                Frame::GoAway { last_good_stream_id: payload.get_u32() & STREAM_ID_MASK, status: payload.get_u32() }
            }
            TYPE_WINDOW_UPDATE => {
                need("WINDOW_UPDATE", len == 8)?;
                Frame::WindowUpdate { stream_id: payload.get_u32() & STREAM_ID_MASK, delta: payload.get_u32() & STREAM_ID_MASK }
            }
            kind => Frame::Unknown { kind },
        };
        Ok(Some(frame))
    }

    fn header_block(&mut self, compressed: &[u8]) -> Result<Headers, FrameError> {
        let raw = self.inflate_block(compressed)?;
        parse_header_block(&raw)
    }

    fn inflate_block(&mut self, input: &[u8]) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        let mut pos = 0;
        while pos < input.len() {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(FrameError::HeaderBlock("decompressed header block is too large"));
                }
                out.reserve(out.len().max(256));
            }
            let before = self.inflate.total_in();
            let result = self.inflate.decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync);
            pos += (self.inflate.total_in() - before) as usize;
            match result {
                Ok(Status::Ok) | Ok(Status::BufError) => {
                    // BufError with input left and room in `out` would loop forever.
                    if self.inflate.total_in() == before && out.len() < out.capacity() {
                        return Err(FrameError::Zlib("header block stalled the decompressor".into()));
                    }
                }
                Ok(Status::StreamEnd) => return Err(FrameError::Zlib("peer ended its zlib stream".into())),
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate.set_dictionary(HEADER_DICTIONARY).map_err(|e| FrameError::Zlib(e.to_string()))?;
                }
                Err(e) => return Err(FrameError::Zlib(e.to_string())),
            }
        }
        Ok(out)
    }
}

fn parse_header_block(mut raw: &[u8]) -> Result<Headers, FrameError> {
    fn take<'a>(raw: &mut &'a [u8]) -> Result<&'a [u8], FrameError> {
        if raw.len() < 4 {
            return Err(FrameError::HeaderBlock("truncated length"));
        }
        let n = raw.get_u32() as usize;
        if raw.len() < n {
            return Err(FrameError::HeaderBlock("length runs past the block"));
        }
        let (s, rest) = raw.split_at(n);
        *raw = rest;
        Ok(s)
    }
    if raw.len() < 4 {
        return Err(FrameError::HeaderBlock("missing pair count"));
    }
    let count = raw.get_u32() as usize;
    // Each pair takes at least 8 bytes: a count beyond that is a lie, not a big allocation.
    if count > raw.len() / 8 {
        return Err(FrameError::HeaderBlock("pair count exceeds the block"));
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let name = std::str::from_utf8(take(&mut raw)?).map_err(|_| FrameError::HeaderBlock("name is not UTF-8"))?;
        if name.is_empty() {
            return Err(FrameError::HeaderBlock("empty header name"));
        }
        let value = String::from_utf8_lossy(take(&mut raw)?).into_owned();
        headers.push((name.to_ascii_lowercase(), value));
    }
    Ok(Headers(headers))
}

/// Writes frames; owns the sending direction's zlib context.
pub struct Encoder {
    deflate: Compress,
    primed: bool,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder { deflate: Compress::new(Compression::default(), true), primed: false }
    }
}

impl Encoder {
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), FrameError> {
        let mut payload = BytesMut::new();
        let (kind, flags) = match frame {
            Frame::Data { stream_id, flags, data } => {
                check_len(data.len())?;
                out.put_u32(stream_id & STREAM_ID_MASK);
                out.put_u32((u32::from(*flags) << 24) | data.len() as u32);
                out.put_slice(data);
                return Ok(());
            }
            Frame::SynStream { stream_id, associated_to, priority, slot, flags, headers } => {
                payload.put_u32(stream_id & STREAM_ID_MASK);
                payload.put_u32(associated_to & STREAM_ID_MASK);
                payload.put_u8((priority & 0x07) << 5);
                payload.put_u8(*slot);
                self.header_block(headers, &mut payload)?;
                (TYPE_SYN_STREAM, *flags)
            }
            Frame::SynReply { stream_id, flags, headers } => {
                payload.put_u32(stream_id & STREAM_ID_MASK);
                self.header_block(headers, &mut payload)?;
                (TYPE_SYN_REPLY, *flags)
            }
            Frame::Headers { stream_id, flags, headers } => {
                payload.put_u32(stream_id & STREAM_ID_MASK);
                self.header_block(headers, &mut payload)?;
                (TYPE_HEADERS, *flags)
            }
            Frame::RstStream { stream_id, status } => {
                payload.put_u32(stream_id & STREAM_ID_MASK);
                payload.put_u32(*status);
                (TYPE_RST_STREAM, 0)
            }
            Frame::Settings { flags, entries } => {
                payload.put_u32(entries.len() as u32);
                for e in entries {
                    payload.put_u32((u32::from(e.flags) << 24) | (e.id & 0x00ff_ffff));
                    payload.put_u32(e.value);
                }
                (TYPE_SETTINGS, *flags)
            }
            Frame::Ping { id } => {
                payload.put_u32(*id);
                (TYPE_PING, 0)
            }
            Frame::GoAway { last_good_stream_id, status } => {
                payload.put_u32(last_good_stream_id & STREAM_ID_MASK);
                payload.put_u32(*status);
                (TYPE_GOAWAY, 0)
            }
            Frame::WindowUpdate { stream_id, delta } => {
                payload.put_u32(stream_id & STREAM_ID_MASK);
                payload.put_u32(delta & STREAM_ID_MASK);
                (TYPE_WINDOW_UPDATE, 0)
            }
            Frame::Unknown { kind } => (*kind, 0),
        };
        check_len(payload.len())?;
        out.put_u16(0x8000 | VERSION);
        out.put_u16(kind);
        out.put_u32((u32::from(flags) << 24) | payload.len() as u32);
        out.put_slice(&payload);
        Ok(())
    }

    fn header_block(&mut self, headers: &Headers, out: &mut BytesMut) -> Result<(), FrameError> {
        let mut raw = Vec::new();
        raw.put_u32(headers.0.len() as u32);
        for (name, value) in &headers.0 {
            raw.put_u32(name.len() as u32);
            raw.put_slice(name.to_ascii_lowercase().as_bytes());
            raw.put_u32(value.len() as u32);
            raw.put_slice(value.as_bytes());
        }
        if !self.primed {
            self.deflate.set_dictionary(HEADER_DICTIONARY).map_err(|e| FrameError::Zlib(e.to_string()))?;
            self.primed = true;
        }
        let mut compressed = Vec::with_capacity(raw.len() + 64);
        let mut pos = 0;
        loop {
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(&raw[pos..], &mut compressed, FlushCompress::Sync)
                .map_err(|e| FrameError::Zlib(e.to_string()))?;
            pos += (self.deflate.total_in() - before) as usize;
            // Done once all input is in and the flush fitted (zlib leaves room to spare).
            if pos == raw.len() && compressed.len() < compressed.capacity() {
                break;
            }
            compressed.reserve(compressed.capacity().max(64));
        }
        out.put_slice(&compressed);
        Ok(())
    }
}

fn check_len(len: usize) -> Result<(), FrameError> {
    if len > MAX_PAYLOAD { Err(FrameError::TooLarge(len)) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().fold(Headers::new(), |h, (n, v)| h.with(n, v))
    }

    fn round_trip(frames: &[Frame]) -> Vec<Frame> {
        let (mut enc, mut dec) = (Encoder::default(), Decoder::default());
        let mut wire = BytesMut::new();
        for f in frames {
            enc.encode(f, &mut wire).unwrap();
        }
        let mut out = Vec::new();
        while let Some(f) = dec.decode(&mut wire).unwrap() {
            out.push(f);
        }
        assert!(wire.is_empty(), "{} bytes left over", wire.len());
        out
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        // zlib names a preset dictionary by its Adler-32; SPDY/3 peers expect this one.
        let (mut a, mut b) = (1u32, 0u32);
        for &byte in HEADER_DICTIONARY {
            a = (a + u32::from(byte)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!(HEADER_DICTIONARY.len(), 1423);
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[test]
    fn every_frame_type_round_trips() {
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 7,
                slot: 0,
                flags: FLAG_FIN,
                headers: headers(&[("streamtype", "error"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::SynReply { stream_id: 1, flags: 0, headers: Headers::new() },
            Frame::Headers { stream_id: 3, flags: FLAG_FIN, headers: headers(&[("x", "a\0b")]) },
            Frame::RstStream { stream_id: 5, status: RST_CANCEL },
            Frame::Settings { flags: 1, entries: vec![Setting { flags: 1, id: 7, value: 65536 }, Setting { flags: 0, id: 4, value: 100 }] },
            Frame::Ping { id: 0xdead_beef },
            Frame::GoAway { last_good_stream_id: 9, status: GOAWAY_OK },
            Frame::WindowUpdate { stream_id: 0, delta: 4096 },
            Frame::Data { stream_id: 7, flags: FLAG_FIN, data: Bytes::from_static(b"hello") },
            Frame::Data { stream_id: 9, flags: 0, data: Bytes::new() },
        ];
        assert_eq!(round_trip(&frames), frames);
    }

    #[test]
    fn header_blocks_share_one_zlib_context_across_frames() {
        // The same headers again compress to fewer bytes (zlib remembers them), and a fresh
        // decoder that skipped the first block could not read the second.
        let h = headers(&[("streamtype", "stdout"), ("x-custom-header", "some long value that repeats")]);
        let mut enc = Encoder::default();
        let (mut first, mut second) = (BytesMut::new(), BytesMut::new());
        enc.encode(&Frame::SynStream { stream_id: 1, associated_to: 0, priority: 0, slot: 0, flags: 0, headers: h.clone() }, &mut first).unwrap();
        enc.encode(&Frame::SynStream { stream_id: 3, associated_to: 0, priority: 0, slot: 0, flags: 0, headers: h.clone() }, &mut second).unwrap();
        assert!(second.len() < first.len(), "{} vs {}", second.len(), first.len());
        let mut dec = Decoder::default();
        let mut wire = first.clone();
        wire.extend_from_slice(&second);
        let a = dec.decode(&mut wire).unwrap().unwrap();
        let b = dec.decode(&mut wire).unwrap().unwrap();
        for (f, id) in [(a, 1), (b, 3)] {
            assert_eq!(f, Frame::SynStream { stream_id: id, associated_to: 0, priority: 0, slot: 0, flags: 0, headers: h.clone() });
        }
        assert!(Decoder::default().decode(&mut second).is_err(), "second block alone must not decode");
    }

    #[test]
    fn decodes_a_header_block_compressed_by_another_zlib() {
        // Produced by CPython's zlib (compressobj(zdict=dictionary) + Z_SYNC_FLUSH) for the
        // block {"streamtype": "error"}: checks our inflate + dictionary against a foreign
        // deflate, not just against ourselves.
        let block = hex::decode(GOLDEN_BLOCK).unwrap();
        let mut wire = BytesMut::new();
        wire.put_u16(0x8000 | VERSION);
        wire.put_u16(TYPE_SYN_REPLY);
        wire.put_u32(4 + block.len() as u32);
        wire.put_u32(1);
        wire.put_slice(&block);
        let frame = Decoder::default().decode(&mut wire).unwrap().unwrap();
        assert_eq!(frame, Frame::SynReply { stream_id: 1, flags: 0, headers: headers(&[("streamtype", "error")]) });
    }
    const GOLDEN_BLOCK: &str = include_str!("golden_block.hex");

    #[test]
    fn partial_frames_wait_for_more_bytes() {
        let mut wire = BytesMut::new();
        Encoder::default().encode(&Frame::Ping { id: 3 }, &mut wire).unwrap();
        let mut dec = Decoder::default();
        for cut in 0..wire.len() {
            let mut part = BytesMut::from(&wire[..cut]);
            assert_eq!(dec.decode(&mut part).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let control = |kind: u16, payload: &[u8]| {
            let mut b = BytesMut::new();
            b.put_u16(0x8000 | VERSION);
            b.put_u16(kind);
            b.put_u32(payload.len() as u32);
            b.put_slice(payload);
            b
        };
        let cases: Vec<(&str, BytesMut)> = vec![
            ("version 2", {
                let mut b = control(TYPE_PING, &[0, 0, 0, 1]);
                b[1] = 2;
                b
            }),
            ("short SYN_STREAM", control(TYPE_SYN_STREAM, &[0, 0, 0, 1])),
            ("long PING", control(TYPE_PING, &[0; 5])),
            ("RST_STREAM of 4", control(TYPE_RST_STREAM, &[0; 4])),
            ("SETTINGS count lies", control(TYPE_SETTINGS, &[0, 0, 0, 9, 0, 0, 0, 0])),
            ("SETTINGS count overflows", control(TYPE_SETTINGS, &[0xff, 0xff, 0xff, 0xff])),
            ("garbage header block", control(TYPE_SYN_REPLY, &[0, 0, 0, 1, 0x78, 0xbb, 1, 2, 3, 4, 5])),
            ("not zlib at all", control(TYPE_HEADERS, &[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff])),
        ];
        for (what, mut wire) in cases {
            assert!(Decoder::default().decode(&mut wire).is_err(), "{what} was accepted");
        }
        // Well-compressed but lying block contents.
        for raw in [&[0u8, 0, 0, 2, 0, 0, 0, 1, b'a'][..], &[0, 0, 0, 1, 0, 0, 0, 9, b'a', 0, 0, 0, 0], &[0, 0], &[0xff, 0xff, 0xff, 0xff]] {
            assert!(parse_header_block(raw).is_err(), "{raw:?}");
        }
        // Random bytes: whatever they decode to, no panic.
        let mut seed = 0x1234_5678u32;
        for _ in 0..2000 {
            let mut wire = BytesMut::new();
            for _ in 0..(seed % 64) {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                wire.put_u8((seed >> 24) as u8);
            }
            if wire.len() > 4 {
                wire[0] |= 0x80;
                wire[1] = 3;
            }
            let _ = Decoder::default().decode(&mut wire);
        }
    }

    #[test]
    fn oversized_payload_is_refused_when_encoding() {
        let data = Bytes::from(vec![0u8; MAX_PAYLOAD + 1]);
        let err = Encoder::default().encode(&Frame::Data { stream_id: 1, flags: 0, data }, &mut BytesMut::new()).unwrap_err();
        assert_eq!(err, FrameError::TooLarge(MAX_PAYLOAD + 1));
    }
}
