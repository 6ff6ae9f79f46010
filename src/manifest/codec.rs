//! The manifest's bytes: record tags and field flags, varints, the delta-coded record encoder,
//! record framing, header and trailer, and the counting, hashing byte source the reader
//! decodes from (docs/FORMAT.md, "Manifest stream format").

use std::io::{self, BufReader, Read};

use crate::error::Error;
use crate::types::{Entry, Extent};

use super::{MANIFEST_MAGIC, MANIFEST_VERSION};

/// Record type of the trailer; entry records use their `EntryKind` number (1..=8).
pub(super) const TAG_TRAILER: u8 = 0;

// Field-presence flags of an entry record. A field whose flag is clear takes its default.
/// `mode` present; else the previous entry's mode.
pub(super) const F_MODE: u64 = 1 << 0;
/// `uid` present; else the previous entry's uid.
pub(super) const F_UID: u64 = 1 << 1;
/// `gid` present; else the previous entry's gid.
pub(super) const F_GID: u64 = 1 << 2;
/// `size` present; else 0.
pub(super) const F_SIZE: u64 = 1 << 3;
/// extent list present; else empty.
pub(super) const F_EXTENTS: u64 = 1 << 4;
/// `target` present; else empty.
pub(super) const F_TARGET: u64 = 1 << 5;
/// xattr list present; else empty.
pub(super) const F_XATTRS: u64 = 1 << 6;
/// `rdev` present; else 0.
pub(super) const F_RDEV: u64 = 1 << 7;
/// Every flag version 1 knows. Unknown flags are refused, not skipped: dropping a field we
/// do not understand could restore a file wrongly without anyone noticing.
pub(super) const F_KNOWN_V1: u64 = 0xff;

pub(super) const EXT_HOLE: u8 = 0;
pub(super) const EXT_CHUNK: u8 = 1;

/// Size of the stream header: magic + u32 LE version.
pub(super) const HEADER_LEN: u64 = 12;

// ---------------------------------------------------------------------------------------------
// Varints

pub(super) fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Map signed to unsigned so small magnitudes of either sign stay short: 0,-1,1,-2 -> 0,1,2,3.
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(super) fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_varint(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

// ---------------------------------------------------------------------------------------------
// Record encoding

/// The values the next record is delta-coded against (all zero before the first record).
#[derive(Default)]
pub(super) struct Prev {
    pub(super) path: Vec<u8>,
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) mtime_ns: i64,
    pub(super) ino: u64,
}

impl Prev {
    pub(super) fn update(&mut self, e: &Entry) {
        self.path.clear();
        self.path.extend_from_slice(&e.path);
        self.mode = e.mode;
        self.uid = e.uid;
        self.gid = e.gid;
        self.mtime_ns = e.mtime_ns;
        self.ino = e.ino;
    }
}

/// Encode `e`'s record body (tag onwards) into `body`, delta-coded against `prev`, and advance
/// `prev`. Does not validate: callers run `Validator::admit` first.
pub(super) fn encode_entry(prev: &mut Prev, e: &Entry, body: &mut Vec<u8>) {
    body.clear();
    let mut flags = 0;
    if e.mode != prev.mode {
        flags |= F_MODE;
    }
    if e.uid != prev.uid {
        flags |= F_UID;
    }
    if e.gid != prev.gid {
        flags |= F_GID;
    }
    if e.size != 0 {
        flags |= F_SIZE;
    }
    if !e.extents.is_empty() {
        flags |= F_EXTENTS;
    }
    if !e.target.is_empty() {
        flags |= F_TARGET;
    }
    if !e.xattrs.is_empty() {
        flags |= F_XATTRS;
    }
    if e.rdev != 0 {
        flags |= F_RDEV;
    }
    body.push(e.kind as u8);
    put_varint(body, flags);
    let shared = prev
        .path
        .iter()
        .zip(&e.path)
        .take_while(|(a, b)| a == b)
        .count();
    put_varint(body, shared as u64);
    put_bytes(body, &e.path[shared..]);
    if flags & F_MODE != 0 {
        put_varint(body, e.mode.into());
    }
    if flags & F_UID != 0 {
        put_varint(body, e.uid.into());
    }
    if flags & F_GID != 0 {
        put_varint(body, e.gid.into());
    }
    // Wrapping deltas round-trip every i64/u64 value exactly.
    put_varint(body, zigzag(e.mtime_ns.wrapping_sub(prev.mtime_ns)));
    put_varint(body, zigzag(e.ctime_ns.wrapping_sub(e.mtime_ns)));
    put_varint(body, zigzag(e.ino.wrapping_sub(prev.ino) as i64));
    if flags & F_SIZE != 0 {
        put_varint(body, e.size);
    }
    if flags & F_RDEV != 0 {
        put_varint(body, e.rdev);
    }
    if flags & F_TARGET != 0 {
        put_bytes(body, &e.target);
    }
    if flags & F_XATTRS != 0 {
        put_varint(body, e.xattrs.len() as u64);
        for (n, v) in &e.xattrs {
            put_bytes(body, n);
            put_bytes(body, v);
        }
    }
    if flags & F_EXTENTS != 0 {
        put_varint(body, e.extents.len() as u64);
        for x in &e.extents {
            match x {
                Extent::Hole(len) => {
                    body.push(EXT_HOLE);
                    put_varint(body, *len);
                }
                Extent::Chunk { id, len } => {
                    body.push(EXT_CHUNK);
                    put_varint(body, u64::from(*len));
                    body.extend_from_slice(&id.0);
                }
            }
        }
    }
    prev.update(e);
}

/// Frame a record body: varint body length, then the body.
pub(super) fn frame(body: &[u8], rec: &mut Vec<u8>) {
    rec.clear();
    put_varint(rec, body.len() as u64);
    rec.extend_from_slice(body);
}

pub(super) fn header_bytes() -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(&MANIFEST_MAGIC);
    h[8..].copy_from_slice(&MANIFEST_VERSION.to_le_bytes());
    h
}

/// The trailer record: everything up to the hash field goes through `hasher` first, then the
/// hash of every stream byte before the hash field is appended.
pub(super) fn trailer_bytes(count: u64, hasher: &mut blake3::Hasher) -> Vec<u8> {
    let mut body = vec![TAG_TRAILER];
    put_varint(&mut body, count);
    let mut rec = Vec::with_capacity(body.len() + 34);
    put_varint(&mut rec, body.len() as u64 + 32);
    rec.extend_from_slice(&body);
    hasher.update(&rec);
    rec.extend_from_slice(hasher.finalize().as_bytes());
    rec
}

pub(super) fn stream_err(e: io::Error) -> Error {
    Error::io("<manifest stream>", e)
}

// ---------------------------------------------------------------------------------------------
// The reader's byte source

/// What went wrong at the byte level, before we know how to word it.
pub(super) enum Fault {
    /// The stream ended.
    Truncated,
    /// A field reaches past the end of its record.
    Overrun,
    Io(io::Error),
    Bad(String),
}

pub(super) type FResult<T> = std::result::Result<T, Fault>;

/// Counting, hashing byte source with an end limit (the current record's end).
pub(super) struct Src<R: Read> {
    pub(super) inner: BufReader<R>,
    pub(super) pos: u64,
    pub(super) limit: u64,
    pub(super) hasher: blake3::Hasher,
}

impl<R: Read> Src<R> {
    pub(super) fn fill(&mut self, buf: &mut [u8]) -> FResult<()> {
        if buf.len() as u64 > self.limit - self.pos {
            return Err(Fault::Overrun);
        }
        let mut done = 0;
        while done < buf.len() {
            match self.inner.read(&mut buf[done..]) {
                Ok(0) => return Err(Fault::Truncated),
                Ok(n) => {
                    self.hasher.update(&buf[done..done + n]);
                    done += n;
                    self.pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Fault::Io(e)),
            }
        }
        Ok(())
    }

    pub(super) fn u8(&mut self) -> FResult<u8> {
        let mut b = [0u8; 1];
        self.fill(&mut b)?;
        Ok(b[0])
    }

    pub(super) fn varint(&mut self) -> FResult<u64> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8()?;
            if i == 9 && b > 1 {
                return Err(Fault::Bad("varint overflows 64 bits".into()));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Fault::Bad("varint longer than 10 bytes".into()))
    }

    pub(super) fn varint_u32(&mut self, what: &str) -> FResult<u32> {
        let v = self.varint()?;
        u32::try_from(v).map_err(|_| Fault::Bad(format!("{what} {v} does not fit 32 bits")))
    }

    /// Read `len` bytes onto `out`, growing it as bytes arrive (a crafted length costs no
    /// memory beyond what the stream really holds).
    pub(super) fn bytes_into(&mut self, len: u64, out: &mut Vec<u8>) -> FResult<()> {
        if len > self.limit - self.pos {
            return Err(Fault::Overrun);
        }
        let mut left = len as usize; // <= limit - pos, and the caller capped it
        while left > 0 {
            let step = left.min(64 * 1024);
            let start = out.len();
            out.resize(start + step, 0);
            self.fill(&mut out[start..])?;
            left -= step;
        }
        Ok(())
    }

    pub(super) fn bytes(&mut self, max: usize, what: &str) -> FResult<Vec<u8>> {
        let len = self.varint()?;
        if len > max as u64 {
            return Err(Fault::Bad(format!(
                "{what} of {len} bytes is over the limit of {max}"
            )));
        }
        let mut v = Vec::new();
        self.bytes_into(len, &mut v)?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_and_zigzag_edges() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert!(b.len() <= 10);
            let mut s = Src {
                inner: BufReader::new(&b[..]),
                pos: 0,
                limit: u64::MAX,
                hasher: blake3::Hasher::new(),
            };
            assert_eq!(s.varint().ok(), Some(v));
        }
        for v in [0, -1, 1, i64::MIN, i64::MAX, -1_000_000_000] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!((zigzag(0), zigzag(-1), zigzag(1), zigzag(-2)), (0, 1, 2, 3));
        // 11-byte and overflowing varints are refused.
        for bad in [vec![0xffu8; 11], [vec![0xff; 9], vec![0x02]].concat()] {
            let mut s = Src {
                inner: BufReader::new(&bad[..]),
                pos: 0,
                limit: u64::MAX,
                hasher: blake3::Hasher::new(),
            };
            assert!(matches!(s.varint(), Err(Fault::Bad(_))));
        }
    }
}
