//! The manifest codec: a dump's full namespace as one compact, self-checking byte stream.
//!
//! A manifest lists every entry of a volume in path order (`types::path_cmp`), root first. It
//! is written as one stream that the dump cuts into content-defined chunks, so the encoding is
//! built for three things (the byte-level format is in docs/FORMAT.md, "Manifest stream format"):
//!
//! * **Small and stable.** Hand-written records with LEB128 varints, paths stored as (bytes
//!   shared with the previous path, suffix), times and inode numbers stored as deltas, and
//!   mode/uid/gid stored only when they differ from the previous entry. An unchanged stretch of
//!   the tree encodes to the same bytes every day, so its chunks dedup across dumps. A typical
//!   small file with one chunk costs about 58 bytes, 32 of which are the chunk id.
//! * **Streaming.** Writer and reader hold one record, the previous path and the deepest open
//!   directory: memory is bounded by path length (tree depth), never by entry count. Lengths
//!   read from the stream are capped and buffers grow only as bytes actually arrive, so a
//!   crafted length cannot make the reader allocate gigabytes.
//! * **A gatekeeper for restore.** Manifests can come from tapes or a damaged catalog. Every
//!   entry is checked by one function (`Validator::admit`) that the writer also runs, so we
//!   never write what we cannot read: safe relative paths, strict path order, every parent a
//!   directory listed earlier (so "a" as a symlink followed by "a/x" cannot make a restore
//!   write through the symlink), kind-specific rules. A trailer carries the entry count and a
//!   blake3 of every byte before it, so truncation and bit rot are caught even when each record
//!   still parses.
//!
//! Entries are yielded before the trailer is checked (that is what streaming means): a consumer
//! must not treat the manifest as good until the iterator has returned `None` without an
//! error. The restore plans from a full read before it writes anything, which gives that.

use std::io::{self, BufReader, BufWriter, Read, Write};

use crate::error::{Error, Result};
use crate::types::{ChunkId, Entry, EntryKind, Extent, path_cmp};

/// The format version this code writes and the only one it reads.
pub const MANIFEST_VERSION: u32 = 1;
/// The first 8 bytes of every manifest stream.
pub const MANIFEST_MAGIC: [u8; 8] = *b"REELMAN\0";

/// Longest path (and hard-link target / symlink target) a manifest may hold, in bytes.
pub const MAX_PATH_LEN: usize = 1 << 20;
/// Longest extended-attribute name, in bytes.
pub const MAX_XATTR_NAME_LEN: usize = 1 << 16;
/// Longest extended-attribute value, in bytes.
pub const MAX_XATTR_VALUE_LEN: usize = 1 << 24;

/// Record type of the trailer; entry records use their `EntryKind` number (1..=8).
const TAG_TRAILER: u8 = 0;

// Field-presence flags of an entry record. A field whose flag is clear takes its default.
/// `mode` present; else the previous entry's mode.
const F_MODE: u64 = 1 << 0;
/// `uid` present; else the previous entry's uid.
const F_UID: u64 = 1 << 1;
/// `gid` present; else the previous entry's gid.
const F_GID: u64 = 1 << 2;
/// `size` present; else 0.
const F_SIZE: u64 = 1 << 3;
/// extent list present; else empty.
const F_EXTENTS: u64 = 1 << 4;
/// `target` present; else empty.
const F_TARGET: u64 = 1 << 5;
/// xattr list present; else empty.
const F_XATTRS: u64 = 1 << 6;
/// `rdev` present; else 0.
const F_RDEV: u64 = 1 << 7;
/// Every flag version 1 knows. Unknown flags are refused, not skipped: dropping a field we
/// do not understand could restore a file wrongly without anyone noticing.
const F_KNOWN_V1: u64 = 0xff;

const EXT_HOLE: u8 = 0;
const EXT_CHUNK: u8 = 1;

/// Size of the stream header: magic + u32 LE version.
const HEADER_LEN: u64 = 12;

/// Counts over the entries written or read so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ManifestStats {
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub others: u64,
    /// Sum of `File` sizes (holes included), saturating.
    pub logical_bytes: u64,
}

// ---------------------------------------------------------------------------------------------
// Varints

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
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

fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_varint(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

// ---------------------------------------------------------------------------------------------
// Path safety and entry validation (shared by writer and reader)

/// Check that a relative path is safe to join under a restore target: non-empty components,
/// none "." or "..", no NUL, no leading/trailing/double '/'. The empty path is the volume root
/// and passes; the manifest allows it only for the first entry.
pub fn validate_path(path: &[u8]) -> Result<()> {
    match path_problem(path) {
        None => Ok(()),
        Some(why) => Err(Error::corrupt(format!(
            "unsafe path '{}': {why}",
            String::from_utf8_lossy(path)
        ))),
    }
}

fn path_problem(path: &[u8]) -> Option<&'static str> {
    if path.is_empty() {
        return None;
    }
    if path.contains(&0) {
        return Some("contains a NUL byte");
    }
    if path[0] == b'/' {
        return Some("is absolute (starts with '/')");
    }
    if path[path.len() - 1] == b'/' {
        return Some("ends with '/'");
    }
    for comp in path.split(|&c| c == b'/') {
        match comp {
            b"" => return Some("has an empty component ('//')"),
            b"." => return Some("has a '.' component"),
            b".." => return Some("has a '..' component"),
            _ => {}
        }
    }
    None
}

/// The parent of a validated non-root path ("" for top-level names).
fn parent_of(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&c| c == b'/') {
        Some(i) => &path[..i],
        None => b"",
    }
}

/// Is `anc` the directory `dir` or one of its ancestors? (Both are validated paths.)
fn is_ancestor_or_self(anc: &[u8], dir: &[u8]) -> bool {
    anc.is_empty()
        || anc == dir
        || (dir.len() > anc.len() && dir.starts_with(anc) && dir[anc.len()] == b'/')
}

fn lossy(p: &[u8]) -> String {
    if p.is_empty() {
        "/".to_string()
    } else {
        String::from_utf8_lossy(p).into_owned()
    }
}

/// The single set of rules every manifest entry obeys, run by the writer before encoding and
/// by the reader after decoding.
///
/// Memory: the previous path and the deepest open directory. The open directories form a
/// chain root -> deepest (the entries come depth-first), so the deepest one's path stands for
/// the whole stack: each of its prefixes was admitted as a `Dir`.
#[derive(Default)]
struct Validator {
    prev: Vec<u8>,
    open_dir: Vec<u8>,
    stats: ManifestStats,
}

impl Validator {
    /// Check `e` against the entries admitted so far; on success record it. On failure nothing
    /// changes and the reason is returned (the caller adds where).
    fn admit(&mut self, e: &Entry) -> std::result::Result<(), String> {
        let parent = if self.stats.entries == 0 {
            if !e.path.is_empty() || e.kind != EntryKind::Dir {
                return Err(format!(
                    "the first entry must be the root directory (empty path, kind Dir), \
                     found {:?} '{}'",
                    e.kind,
                    lossy(&e.path)
                ));
            }
            None
        } else {
            if e.path.is_empty() {
                return Err("a second root entry (empty path)".into());
            }
            if e.path.len() > MAX_PATH_LEN {
                return Err(format!("path longer than {MAX_PATH_LEN} bytes"));
            }
            if let Some(why) = path_problem(&e.path) {
                return Err(format!("unsafe path: {why}"));
            }
            match path_cmp(&self.prev, &e.path) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Err("duplicate path".into()),
                std::cmp::Ordering::Greater => {
                    return Err(format!(
                        "out of order: comes after '{}' but sorts before it",
                        lossy(&self.prev)
                    ));
                }
            }
            let parent = parent_of(&e.path);
            // Every ancestor of `open_dir` is an admitted Dir; anything else (a symlink, a file,
            // a name never listed, a directory whose subtree is closed) cannot be a parent.
            if !is_ancestor_or_self(parent, &self.open_dir) {
                return Err(format!(
                    "parent '{}' is not a directory listed before this entry \
                     (missing, or not a directory)",
                    lossy(parent)
                ));
            }
            Some(parent)
        };

        if e.mode > 0o7777 {
            return Err(format!("mode {:o} has bits above 0o7777", e.mode));
        }
        self.check_kind(e)?;
        Self::check_xattrs(e)?;

        // Admitted: update state and counts.
        let s = &mut self.stats;
        s.entries += 1;
        match e.kind {
            EntryKind::File => {
                s.files += 1;
                s.logical_bytes = s.logical_bytes.saturating_add(e.size);
            }
            EntryKind::Dir => s.dirs += 1,
            EntryKind::Symlink => s.symlinks += 1,
            EntryKind::HardLink => s.hardlinks += 1,
            _ => s.others += 1,
        }
        let new_open: &[u8] = if e.kind == EntryKind::Dir {
            &e.path
        } else {
            parent.unwrap_or(b"")
        };
        self.open_dir.clear();
        self.open_dir.extend_from_slice(new_open);
        self.prev.clear();
        self.prev.extend_from_slice(&e.path);
        Ok(())
    }

    fn check_kind(&self, e: &Entry) -> std::result::Result<(), String> {
        if e.kind != EntryKind::File && !e.extents.is_empty() {
            return Err(format!("a {:?} entry carries file extents", e.kind));
        }
        if e.target.len() > MAX_PATH_LEN {
            return Err(format!("target longer than {MAX_PATH_LEN} bytes"));
        }
        match e.kind {
            EntryKind::File => {
                if !e.target.is_empty() {
                    return Err("a File entry carries a link target".into());
                }
                let mut sum: u64 = 0;
                for (i, x) in e.extents.iter().enumerate() {
                    if x.is_empty() {
                        return Err(format!("extent {i} has length 0"));
                    }
                    sum = sum
                        .checked_add(x.len())
                        .ok_or("extent lengths overflow 64 bits")?;
                }
                if sum != e.size {
                    return Err(format!(
                        "extents cover {sum} bytes but the file size is {}",
                        e.size
                    ));
                }
            }
            EntryKind::Symlink => {
                if e.target.is_empty() {
                    return Err("symlink with an empty target".into());
                }
                if e.target.contains(&0) {
                    return Err("symlink target contains a NUL byte".into());
                }
            }
            EntryKind::HardLink => {
                if e.target.is_empty() {
                    return Err("hard link with an empty target".into());
                }
                if let Some(why) = path_problem(&e.target) {
                    return Err(format!("hard link target: {why}"));
                }
                // Cheap stand-in for "an earlier File": a full set of file paths would cost
                // memory proportional to the volume. The restore resolves the target itself.
                if path_cmp(&e.target, &e.path) != std::cmp::Ordering::Less {
                    return Err(format!(
                        "hard link to '{}', which is not an earlier path",
                        lossy(&e.target)
                    ));
                }
            }
            EntryKind::Dir
            | EntryKind::Fifo
            | EntryKind::CharDev
            | EntryKind::BlockDev
            | EntryKind::Socket => {
                if !e.target.is_empty() {
                    return Err(format!("a {:?} entry carries a link target", e.kind));
                }
            }
        }
        Ok(())
    }

    fn check_xattrs(e: &Entry) -> std::result::Result<(), String> {
        let mut prev: Option<&[u8]> = None;
        for (name, value) in &e.xattrs {
            let shown = String::from_utf8_lossy(name);
            if name.is_empty() {
                return Err("an extended attribute with an empty name".into());
            }
            if name.contains(&0) {
                return Err(format!("extended attribute name '{shown}' contains NUL"));
            }
            if name.len() > MAX_XATTR_NAME_LEN {
                return Err(format!(
                    "extended attribute name longer than {MAX_XATTR_NAME_LEN} bytes"
                ));
            }
            if value.len() > MAX_XATTR_VALUE_LEN {
                return Err(format!(
                    "extended attribute '{shown}' has a value longer than \
                     {MAX_XATTR_VALUE_LEN} bytes"
                ));
            }
            if prev.is_some_and(|p| p >= name.as_slice()) {
                return Err(format!(
                    "extended attribute '{shown}' is out of order or duplicated \
                     (names must be strictly increasing)"
                ));
            }
            prev = Some(name);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Record encoding

/// The values the next record is delta-coded against (all zero before the first record).
#[derive(Default)]
struct Prev {
    path: Vec<u8>,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime_ns: i64,
    ino: u64,
}

impl Prev {
    fn update(&mut self, e: &Entry) {
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
fn encode_entry(prev: &mut Prev, e: &Entry, body: &mut Vec<u8>) {
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
fn frame(body: &[u8], rec: &mut Vec<u8>) {
    rec.clear();
    put_varint(rec, body.len() as u64);
    rec.extend_from_slice(body);
}

fn header_bytes() -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(&MANIFEST_MAGIC);
    h[8..].copy_from_slice(&MANIFEST_VERSION.to_le_bytes());
    h
}

/// The trailer record: everything up to the hash field goes through `hasher` first, then the
/// hash of every stream byte before the hash field is appended.
fn trailer_bytes(count: u64, hasher: &mut blake3::Hasher) -> Vec<u8> {
    let mut body = vec![TAG_TRAILER];
    put_varint(&mut body, count);
    let mut rec = Vec::with_capacity(body.len() + 34);
    put_varint(&mut rec, body.len() as u64 + 32);
    rec.extend_from_slice(&body);
    hasher.update(&rec);
    rec.extend_from_slice(hasher.finalize().as_bytes());
    rec
}

// ---------------------------------------------------------------------------------------------
// Writer

/// Streams entries out as a manifest. Entries must come in path order, root first; each is
/// validated by the same rules the reader applies before any byte of it is written.
pub struct ManifestWriter<W: Write> {
    out: BufWriter<W>,
    pos: u64,
    hasher: blake3::Hasher,
    prev: Prev,
    val: Validator,
    body: Vec<u8>,
    rec: Vec<u8>,
    /// An earlier write failed: the stream is cut somewhere, so refuse to go on.
    broken: bool,
}

fn stream_err(e: io::Error) -> Error {
    Error::io("<manifest stream>", e)
}

impl<W: Write> ManifestWriter<W> {
    /// Start a manifest on `out` (writes the header).
    pub fn new(out: W) -> Result<Self> {
        let mut out = BufWriter::with_capacity(64 * 1024, out);
        let header = header_bytes();
        out.write_all(&header).map_err(stream_err)?;
        let mut hasher = blake3::Hasher::new();
        hasher.update(&header);
        Ok(ManifestWriter {
            out,
            pos: HEADER_LEN,
            hasher,
            prev: Prev::default(),
            val: Validator::default(),
            body: Vec::new(),
            rec: Vec::new(),
            broken: false,
        })
    }

    /// Append one entry. A rule violation is a bug in the caller and is refused (nothing is
    /// written, the writer stays usable); an I/O error leaves the writer unusable.
    pub fn push(&mut self, e: &Entry) -> Result<()> {
        if self.broken {
            return Err(Error::corrupt(
                "manifest writer: an earlier write failed; this manifest is incomplete \
                 and must be discarded",
            ));
        }
        self.val.admit(e).map_err(|why| {
            Error::corrupt(format!(
                "refusing to write manifest entry #{} '{}' at byte {}: {why} \
                 (a bug in the producer of the entries; the manifest would be unreadable)",
                self.val.stats.entries,
                lossy(&e.path),
                self.pos
            ))
        })?;
        encode_entry(&mut self.prev, e, &mut self.body);
        frame(&self.body, &mut self.rec);
        self.hasher.update(&self.rec);
        self.pos += self.rec.len() as u64;
        if let Err(err) = self.out.write_all(&self.rec) {
            self.broken = true;
            return Err(stream_err(err));
        }
        Ok(())
    }

    pub fn stats(&self) -> &ManifestStats {
        &self.val.stats
    }

    /// Write the trailer, flush, and hand back the output.
    pub fn finish(mut self) -> Result<(W, ManifestStats)> {
        if self.broken {
            return Err(Error::corrupt(
                "manifest writer: an earlier write failed; this manifest is incomplete \
                 and must be discarded",
            ));
        }
        if self.val.stats.entries == 0 {
            return Err(Error::corrupt(
                "refusing to finish a manifest with no entries: it needs at least the root \
                 directory",
            ));
        }
        let trailer = trailer_bytes(self.val.stats.entries, &mut self.hasher);
        self.out.write_all(&trailer).map_err(stream_err)?;
        let stats = self.val.stats;
        let out = self
            .out
            .into_inner()
            .map_err(|e| stream_err(e.into_error()))?;
        Ok((out, stats))
    }
}

// ---------------------------------------------------------------------------------------------
// Reader

/// What went wrong at the byte level, before we know how to word it.
enum Fault {
    /// The stream ended.
    Truncated,
    /// A field reaches past the end of its record.
    Overrun,
    Io(io::Error),
    Bad(String),
}

type FResult<T> = std::result::Result<T, Fault>;

/// Counting, hashing byte source with an end limit (the current record's end).
struct Src<R: Read> {
    inner: BufReader<R>,
    pos: u64,
    limit: u64,
    hasher: blake3::Hasher,
}

impl<R: Read> Src<R> {
    fn fill(&mut self, buf: &mut [u8]) -> FResult<()> {
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

    fn u8(&mut self) -> FResult<u8> {
        let mut b = [0u8; 1];
        self.fill(&mut b)?;
        Ok(b[0])
    }

    fn varint(&mut self) -> FResult<u64> {
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

    fn varint_u32(&mut self, what: &str) -> FResult<u32> {
        let v = self.varint()?;
        u32::try_from(v).map_err(|_| Fault::Bad(format!("{what} {v} does not fit 32 bits")))
    }

    /// Read `len` bytes onto `out`, growing it as bytes arrive (a crafted length costs no
    /// memory beyond what the stream really holds).
    fn bytes_into(&mut self, len: u64, out: &mut Vec<u8>) -> FResult<()> {
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

    fn bytes(&mut self, max: usize, what: &str) -> FResult<Vec<u8>> {
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

/// Merge-join step over a manifest in path order: skip the entries before `path` and take
/// the one at `path`, if there is one (later entries stay for the next call). Dumps, clones,
/// ownership and tape planning all walk two manifests side by side this way.
pub fn seek<I: Iterator<Item = Result<Entry>>>(
    entries: &mut std::iter::Peekable<I>,
    path: &[u8],
) -> Result<Option<Entry>> {
    loop {
        let ord = match entries.peek() {
            None => return Ok(None),
            Some(Err(_)) => {
                return Err(entries
                    .next()
                    .expect("peeked")
                    .expect_err("peeked an error"));
            }
            Some(Ok(e)) => path_cmp(&e.path, path),
        };
        match ord {
            std::cmp::Ordering::Less => {
                entries.next();
            }
            std::cmp::Ordering::Greater => return Ok(None),
            std::cmp::Ordering::Equal => return entries.next().transpose(),
        }
    }
}

/// Reads a manifest stream back as entries, checking every rule the writer applies, the
/// trailer's count and hash, and that nothing follows the trailer.
pub struct ManifestReader<R: Read> {
    src: Src<R>,
    prev: Prev,
    val: Validator,
    done: bool,
}

impl<R: Read> ManifestReader<R> {
    /// Open a manifest stream: reads and checks the header.
    pub fn new(input: R) -> Result<Self> {
        let mut src = Src {
            inner: BufReader::with_capacity(64 * 1024, input),
            pos: 0,
            limit: u64::MAX,
            hasher: blake3::Hasher::new(),
        };
        let mut h = [0u8; HEADER_LEN as usize];
        let got = src.fill(&mut h);
        // Check the magic on whatever arrived, so a short foreign file is called foreign.
        let have = (src.pos as usize).min(8);
        if h[..have] != MANIFEST_MAGIC[..have] {
            return Err(Error::corrupt(
                "not a reel manifest: bad magic at byte 0 (expected \"REELMAN\\0\")",
            ));
        }
        match got {
            Ok(()) => {}
            Err(Fault::Io(e)) => return Err(stream_err(e)),
            Err(_) => {
                return Err(Error::corrupt(format!(
                    "manifest truncated at byte {}: the stream ends inside the {HEADER_LEN}-byte \
                     header; this copy of the manifest is incomplete",
                    src.pos
                )));
            }
        }
        let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        if version != MANIFEST_VERSION {
            return Err(Error::corrupt(format!(
                "manifest format version {version} is not supported: this reel reads version \
                 {MANIFEST_VERSION}; use the reel release that wrote it, or a newer one"
            )));
        }
        Ok(ManifestReader {
            src,
            prev: Prev::default(),
            val: Validator::default(),
            done: false,
        })
    }

    /// Counts over the entries yielded so far (final once the iterator returned `None`).
    pub fn stats(&self) -> &ManifestStats {
        &self.val.stats
    }

    /// Word a fault found at `self.src.pos` inside the record starting at `rec_off`.
    fn fail(&self, rec_off: u64, who: &str, f: Fault) -> Error {
        let pos = self.src.pos;
        let why = match f {
            Fault::Truncated => {
                return Error::corrupt(format!(
                    "manifest truncated at byte {pos}: the stream ends inside {who} (record at \
                     byte {rec_off}); this copy of the manifest is incomplete, read it from \
                     another copy (spool or tape)"
                ));
            }
            Fault::Io(e) => return stream_err(e),
            Fault::Overrun => "a field runs past the end of its record".to_string(),
            Fault::Bad(why) => why,
        };
        damaged(pos, rec_off, who, &why)
    }

    /// Names the record being read before its path is known.
    fn after(&self, n: u64) -> String {
        if n == 0 {
            "the first record".to_string()
        } else {
            format!("record #{n} (after entry '{}')", lossy(&self.prev.path))
        }
    }

    /// Read one record: `Some(entry)`, or `None` once the trailer has verified.
    fn read_record(&mut self) -> Result<Option<Entry>> {
        let rec_off = self.src.pos;
        let n = self.val.stats.entries;
        self.src.limit = u64::MAX;
        let head = (|| -> FResult<u8> {
            let len = self.src.varint()?;
            self.src.limit = self.src.pos.saturating_add(len);
            self.src.u8()
        })();
        let tag = head.map_err(|f| self.fail(rec_off, &self.after(n), f))?;
        if tag == TAG_TRAILER {
            self.read_trailer(rec_off)?;
            return Ok(None);
        }
        let Some(kind) = EntryKind::from_u8(tag) else {
            return Err(self.fail(
                rec_off,
                &self.after(n),
                Fault::Bad(format!(
                    "unknown record type {tag} (not an entry kind 1..=8 nor the trailer 0)"
                )),
            ));
        };
        let mut e = Entry {
            kind,
            ..Entry::default()
        };
        let flags = self
            .decode_path(&mut e)
            .map_err(|f| self.fail(rec_off, &self.after(n), f))?;
        // Named only when something is wrong: formatting it for every entry cost a tenth of
        // decoding a manifest.
        let who = |e: &Entry| format!("entry #{n} '{}'", lossy(&e.path));
        if let Err(f) = self.decode_rest(flags, &mut e) {
            return Err(self.fail(rec_off, &who(&e), f));
        }
        if self.src.pos != self.src.limit {
            let unused = self.src.limit - self.src.pos;
            return Err(damaged(
                self.src.pos,
                rec_off,
                &who(&e),
                &format!("record has {unused} unused bytes at its end"),
            ));
        }
        if let Err(why) = self.val.admit(&e) {
            return Err(damaged(self.src.pos, rec_off, &who(&e), &why));
        }
        self.prev.update(&e);
        Ok(Some(e))
    }

    /// Flags and path: enough to name the entry in later errors.
    fn decode_path(&mut self, e: &mut Entry) -> FResult<u64> {
        let flags = self.src.varint()?;
        if flags & !F_KNOWN_V1 != 0 {
            return Err(Fault::Bad(format!(
                "unknown field flags {:#x} (written by a newer reel?)",
                flags & !F_KNOWN_V1
            )));
        }
        let shared = self.src.varint()?;
        if shared > self.prev.path.len() as u64 {
            return Err(Fault::Bad(format!(
                "path shares {shared} bytes with a previous path of {} bytes",
                self.prev.path.len()
            )));
        }
        let suffix = self.src.varint()?;
        if shared.saturating_add(suffix) > MAX_PATH_LEN as u64 {
            return Err(Fault::Bad(format!(
                "path of {} bytes is over the limit of {MAX_PATH_LEN}",
                shared.saturating_add(suffix)
            )));
        }
        e.path.extend_from_slice(&self.prev.path[..shared as usize]);
        self.src.bytes_into(suffix, &mut e.path)?;
        Ok(flags)
    }

    fn decode_rest(&mut self, flags: u64, e: &mut Entry) -> FResult<()> {
        let s = &mut self.src;
        e.mode = if flags & F_MODE != 0 {
            s.varint_u32("mode")?
        } else {
            self.prev.mode
        };
        e.uid = if flags & F_UID != 0 {
            s.varint_u32("uid")?
        } else {
            self.prev.uid
        };
        e.gid = if flags & F_GID != 0 {
            s.varint_u32("gid")?
        } else {
            self.prev.gid
        };
        e.mtime_ns = self.prev.mtime_ns.wrapping_add(unzigzag(s.varint()?));
        e.ctime_ns = e.mtime_ns.wrapping_add(unzigzag(s.varint()?));
        e.ino = self.prev.ino.wrapping_add(unzigzag(s.varint()?) as u64);
        if flags & F_SIZE != 0 {
            e.size = s.varint()?;
        }
        if flags & F_RDEV != 0 {
            e.rdev = s.varint()?;
        }
        if flags & F_TARGET != 0 {
            e.target = s.bytes(MAX_PATH_LEN, "link target")?;
        }
        if flags & F_XATTRS != 0 {
            let count = s.varint()?;
            for _ in 0..count {
                let name = s.bytes(MAX_XATTR_NAME_LEN, "xattr name")?;
                let value = s.bytes(MAX_XATTR_VALUE_LEN, "xattr value")?;
                e.xattrs.push((name, value));
            }
        }
        if flags & F_EXTENTS != 0 {
            let count = s.varint()?;
            // Capacity from the bytes the record can hold (>= 2 per extent), not the claim.
            let room = (s.limit - s.pos) / 2;
            e.extents.reserve(count.min(room).min(1 << 16) as usize);
            for i in 0..count {
                match s.u8()? {
                    EXT_HOLE => e.extents.push(Extent::Hole(s.varint()?)),
                    EXT_CHUNK => {
                        let len = s.varint_u32("chunk length")?;
                        let mut id = [0u8; 32];
                        s.fill(&mut id)?;
                        e.extents.push(Extent::Chunk {
                            id: ChunkId(id),
                            len,
                        });
                    }
                    t => {
                        return Err(Fault::Bad(format!(
                            "extent {i} has unknown type {t} (0 = hole, 1 = chunk)"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    fn read_trailer(&mut self, rec_off: u64) -> Result<()> {
        let who = "the trailer";
        let count = self.src.varint().map_err(|f| self.fail(rec_off, who, f))?;
        // Covers every byte of the stream before the hash field.
        let expected = self.src.hasher.finalize();
        let mut hash = [0u8; 32];
        self.src
            .fill(&mut hash)
            .map_err(|f| self.fail(rec_off, who, f))?;
        if self.src.pos != self.src.limit {
            return Err(damaged(
                self.src.pos,
                rec_off,
                who,
                "trailer record has unused bytes",
            ));
        }
        if hash != *expected.as_bytes() {
            return Err(damaged(
                self.src.pos,
                rec_off,
                who,
                "blake3 checksum mismatch: the stream's bytes are not the bytes that were \
                 written",
            ));
        }
        let entries = self.val.stats.entries;
        if count != entries {
            return Err(damaged(
                self.src.pos,
                rec_off,
                who,
                &format!("trailer counts {count} entries but the stream holds {entries}"),
            ));
        }
        if entries == 0 {
            return Err(damaged(self.src.pos, rec_off, who, "no root entry"));
        }
        self.src.limit = u64::MAX;
        let end = self.src.pos;
        match self.src.u8() {
            Err(Fault::Truncated) => Ok(()),
            Err(Fault::Io(e)) => Err(stream_err(e)),
            Err(f) => Err(self.fail(end, "the end of the stream", f)),
            Ok(_) => Err(Error::corrupt(format!(
                "manifest damaged: unexpected bytes after the trailer at byte {end}; the \
                 stream was concatenated or overwritten, read it from another copy"
            ))),
        }
    }
}

fn damaged(pos: u64, rec_off: u64, who: &str, why: &str) -> Error {
    Error::corrupt(format!(
        "manifest damaged at byte {pos} ({who}, record at byte {rec_off}): {why}; do not \
         trust this copy, read the manifest from another copy (spool or tape) or run \
         `reel check`"
    ))
}

impl<R: Read> Iterator for ManifestReader<R> {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        if self.done {
            return None;
        }
        match self.read_record() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(err) => {
                self.done = true;
                Some(Err(err))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(path: impl AsRef<[u8]>) -> Entry {
        Entry {
            path: path.as_ref().to_vec(),
            kind: EntryKind::Dir,
            mode: 0o755,
            ..Entry::default()
        }
    }

    fn file(path: impl AsRef<[u8]>, data: &[u8]) -> Entry {
        let mut e = Entry {
            path: path.as_ref().to_vec(),
            kind: EntryKind::File,
            mode: 0o644,
            size: data.len() as u64,
            ..Entry::default()
        };
        if !data.is_empty() {
            e.extents.push(Extent::Chunk {
                id: ChunkId::of(data),
                len: data.len() as u32,
            });
        }
        e
    }

    fn symlink(path: impl AsRef<[u8]>, target: &str) -> Entry {
        Entry {
            path: path.as_ref().to_vec(),
            kind: EntryKind::Symlink,
            mode: 0o777,
            size: target.len() as u64,
            target: target.as_bytes().to_vec(),
            ..Entry::default()
        }
    }

    fn hardlink(path: impl AsRef<[u8]>, target: &str) -> Entry {
        Entry {
            path: path.as_ref().to_vec(),
            kind: EntryKind::HardLink,
            mode: 0o644,
            target: target.as_bytes().to_vec(),
            ..Entry::default()
        }
    }

    fn write(entries: &[Entry]) -> Vec<u8> {
        let mut w = ManifestWriter::new(Vec::new()).unwrap();
        for e in entries {
            w.push(e).unwrap();
        }
        w.finish().unwrap().0
    }

    fn read(bytes: &[u8]) -> Result<Vec<Entry>> {
        ManifestReader::new(bytes)?.collect()
    }

    /// Encode without validation, with a correct trailer: what a crafted manifest looks like.
    fn write_unchecked(entries: &[Entry], count: Option<u64>) -> Vec<u8> {
        let mut out = header_bytes().to_vec();
        let mut prev = Prev::default();
        let (mut body, mut rec) = (Vec::new(), Vec::new());
        for e in entries {
            encode_entry(&mut prev, e, &mut body);
            frame(&body, &mut rec);
            out.extend_from_slice(&rec);
        }
        let mut h = blake3::Hasher::new();
        h.update(&out);
        let t = trailer_bytes(count.unwrap_or(entries.len() as u64), &mut h);
        out.extend_from_slice(&t);
        out
    }

    fn varied() -> Vec<Entry> {
        let big = Entry {
            path: b"a/big".to_vec(),
            kind: EntryKind::File,
            mode: 0o4755,
            uid: 4_000_000_000,
            gid: 7,
            mtime_ns: i64::MAX,
            ctime_ns: i64::MIN,
            ino: u64::MAX,
            size: (1 << 40) + 3 * 1000 + 4096,
            extents: {
                let mut v = vec![Extent::Hole(1 << 40)];
                for i in 0..3000u32 {
                    v.push(Extent::Chunk {
                        id: ChunkId::of(&i.to_le_bytes()),
                        len: 1,
                    });
                }
                v.push(Extent::Hole(4096));
                v
            },
            xattrs: vec![
                (
                    b"security.selinux".to_vec(),
                    b"system_u:object_r\0".to_vec(),
                ),
                (b"user.empty".to_vec(), Vec::new()),
                (b"user.\xff\xfe".to_vec(), vec![0u8; 70_000]),
            ],
            ..Entry::default()
        };
        let mut dev = Entry {
            path: b"dev/sda".to_vec(),
            kind: EntryKind::BlockDev,
            mode: 0o660,
            rdev: (8 << 8) | 1,
            mtime_ns: -1_000_000_123,
            ctime_ns: -5,
            ino: 3,
            ..Entry::default()
        };
        let mut chr = dev.clone();
        chr.path = b"dev/tty".to_vec();
        chr.kind = EntryKind::CharDev;
        chr.rdev = u64::MAX;
        let mut fifo = dev.clone();
        fifo.path = b"dev/z-fifo".to_vec();
        fifo.kind = EntryKind::Fifo;
        fifo.rdev = 0;
        let mut sock = fifo.clone();
        sock.path = b"dev/z-sock".to_vec();
        sock.kind = EntryKind::Socket;
        dev.uid = 0;
        let mut root = dir("");
        root.mtime_ns = 1_700_000_000_123_456_789;
        root.xattrs = vec![(b"user.root".to_vec(), b"yes".to_vec())];
        vec![
            root,
            dir("a"),
            big,
            file("a/empty", b""),
            file("a/x", b"hello"),
            hardlink("a/y", "a/x"),
            dir("a.b"),
            file(b"a.b/\xc3\x28 not utf8 \xff", b"data"),
            dir("dev"),
            dev,
            chr,
            fifo,
            sock,
            symlink("link", "../../etc/passwd"),
            hardlink("z", "a/x"),
        ]
    }

    #[test]
    fn round_trip_varied() {
        let entries = varied();
        let bytes = write(&entries);
        let mut r = ManifestReader::new(&bytes[..]).unwrap();
        let back: Vec<Entry> = (&mut r).collect::<Result<_>>().unwrap();
        assert_eq!(back, entries);
        let s = *r.stats();
        assert_eq!(s.entries, entries.len() as u64);
        assert_eq!(
            (s.files, s.dirs, s.symlinks, s.hardlinks, s.others),
            (4, 4, 1, 2, 4)
        );
        assert_eq!(s.logical_bytes, (1 << 40) + 3000 + 4096 + 5 + 4);
        // Deterministic: the same entries give the same bytes (dedup across days needs it).
        assert_eq!(write(&entries), bytes);
    }

    #[test]
    fn writer_and_reader_stats_agree() {
        let entries = varied();
        let mut w = ManifestWriter::new(Vec::new()).unwrap();
        for e in &entries {
            w.push(e).unwrap();
        }
        let ws = *w.stats();
        let (bytes, fs) = w.finish().unwrap();
        assert_eq!(ws, fs);
        let mut r = ManifestReader::new(&bytes[..]).unwrap();
        for e in &mut r {
            e.unwrap();
        }
        assert_eq!(*r.stats(), fs);
    }

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

    /// 100k typical small files, one chunk each: measure the cost per entry.
    #[test]
    fn compact_for_many_small_files() {
        let n = 100_000u64;
        let mut w = ManifestWriter::new(Vec::new()).unwrap();
        let mut root = dir("");
        root.uid = 1000;
        root.gid = 1000;
        w.push(&root).unwrap();
        let base: i64 = 1_700_000_000_000_000_000;
        let mut entries = 1;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15; // xorshift: stable pseudo-random stat data
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for d in 0..(n / 1000) {
            let mut de = dir(format!("project{d:03}"));
            de.uid = 1000;
            de.gid = 1000;
            de.ino = 1_000_000 + d * 1001;
            w.push(&de).unwrap();
            entries += 1;
            for f in 0..1000 {
                let size = 1 + rnd() % 60_000;
                let mtime = base + (rnd() % (86_400 * 365 * 1_000_000_000)) as i64;
                let e = Entry {
                    path: format!("project{d:03}/src_file_{f:04}.rs").into_bytes(),
                    kind: EntryKind::File,
                    mode: 0o644,
                    uid: 1000,
                    gid: 1000,
                    mtime_ns: mtime,
                    ctime_ns: mtime,
                    ino: de.ino + 1 + f,
                    size,
                    extents: vec![Extent::Chunk {
                        id: ChunkId::of(&rnd().to_le_bytes()),
                        len: size as u32,
                    }],
                    ..Entry::default()
                };
                w.push(&e).unwrap();
                entries += 1;
            }
        }
        let (bytes, stats) = w.finish().unwrap();
        assert_eq!(stats.entries, entries);
        let per = bytes.len() as f64 / entries as f64;
        eprintln!(
            "manifest: {entries} entries in {} bytes = {per:.1} bytes/entry",
            bytes.len()
        );
        assert!(per < 60.0, "{per:.1} bytes/entry");
        let back = ManifestReader::new(&bytes[..]).unwrap().count();
        assert_eq!(back as u64, entries);
    }

    fn small() -> Vec<Entry> {
        vec![
            dir(""),
            dir("d"),
            file("d/f", b"abc"),
            symlink("d/l", "f"),
            hardlink("d/m", "d/f"),
            file("e", b"xyz"),
        ]
    }

    #[test]
    fn every_byte_flip_is_detected() {
        let bytes = write(&small());
        for i in 0..bytes.len() {
            for mask in [0x01u8, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= mask;
                assert!(
                    read(&b).is_err(),
                    "flip {mask:#x} at byte {i} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let bytes = write(&small());
        for cut in 0..bytes.len() {
            let err = read(&bytes[..cut]).unwrap_err().to_string();
            assert!(
                err.contains(&format!("truncated at byte {cut}")),
                "cut at {cut}: {err}"
            );
        }
        assert_eq!(read(&bytes).unwrap(), small());
    }

    #[test]
    fn trailing_bytes_magic_version_and_empty() {
        let mut bytes = write(&small());
        bytes.push(0);
        let err = read(&bytes).unwrap_err().to_string();
        assert!(err.contains("after the trailer"), "{err}");

        let mut bytes = write(&small());
        bytes[0] = b'X';
        assert!(read(&bytes).unwrap_err().to_string().contains("bad magic"));
        assert!(
            read(b"PK\x03\x04")
                .unwrap_err()
                .to_string()
                .contains("bad magic")
        );

        let mut bytes = write(&small());
        bytes[8] = 2;
        let err = read(&bytes).unwrap_err().to_string();
        assert!(err.contains("version 2 is not supported"), "{err}");

        // No entries at all: the writer refuses, the reader rejects a crafted one.
        assert!(ManifestWriter::new(Vec::new()).unwrap().finish().is_err());
        let err = read(&write_unchecked(&[], None)).unwrap_err().to_string();
        assert!(err.contains("no root entry"), "{err}");
    }

    #[test]
    fn trailer_count_must_match() {
        let e = small();
        let err = read(&write_unchecked(&e, Some(5))).unwrap_err().to_string();
        assert!(err.contains("trailer counts 5 entries"), "{err}");
        assert_eq!(read(&write_unchecked(&e, None)).unwrap(), e);
    }

    #[test]
    fn error_is_yielded_once_then_none() {
        let mut bytes = write(&small());
        let n = bytes.len();
        bytes[n - 1] ^= 1; // hash byte: every entry parses, the trailer fails
        let mut r = ManifestReader::new(&bytes[..]).unwrap();
        for _ in 0..small().len() {
            assert!(r.next().unwrap().is_ok());
        }
        let err = r.next().unwrap().unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        assert!(r.next().is_none());
        assert!(r.next().is_none());
    }

    /// Each crafted manifest is rejected by the reader, and the writer refuses the same entry.
    fn rejected(entries: Vec<Entry>, what: &str) {
        let err = read(&write_unchecked(&entries, None))
            .expect_err(what)
            .to_string();
        assert!(err.contains("manifest damaged at byte"), "{what}: {err}");
        let mut w = ManifestWriter::new(Vec::new()).unwrap();
        let refused = entries.iter().any(|e| w.push(e).is_err());
        assert!(refused, "writer accepted {what}");
    }

    #[test]
    fn crafted_manifests_are_rejected() {
        let r = || dir("");
        rejected(vec![r(), file("../x", b"a")], "dot-dot");
        rejected(
            vec![r(), dir("a"), file("a/../../x", b"a")],
            "inner dot-dot",
        );
        rejected(vec![r(), file("/abs", b"a")], "absolute");
        rejected(vec![r(), dir("a"), file("a//b", b"a")], "double slash");
        rejected(vec![r(), dir("a"), file("a/", b"a")], "trailing slash");
        rejected(vec![r(), file(".", b"a")], "dot");
        rejected(vec![r(), file("a\0b", b"a")], "NUL");
        rejected(
            vec![r(), symlink("a", "/etc"), file("a/x", b"a")],
            "under a symlink",
        );
        rejected(
            vec![r(), file("a", b"q"), file("a/x", b"a")],
            "under a file",
        );
        rejected(vec![r(), file("b", b"a"), file("a", b"a")], "out of order");
        rejected(vec![r(), dir("a"), dir("a")], "duplicate");
        rejected(vec![r(), file("a/x", b"a")], "missing parent");
        rejected(
            vec![
                r(),
                dir("a"),
                dir("a/b"),
                file("a/c", b""),
                file("a/b/x", b""),
            ],
            "back into a closed directory",
        );
        rejected(vec![file("a", b"x"), r()], "root not first");
        rejected(vec![dir("a")], "first entry not root");
        rejected(vec![file("", b"")], "root not a dir");
        rejected(vec![r(), r()], "second root");
        rejected(
            vec![r(), file("a", b"x"), hardlink("b", "c")],
            "hard link forward",
        );
        rejected(vec![r(), hardlink("b", "b")], "hard link to itself");
        rejected(
            vec![r(), file("a", b"x"), hardlink("b", "../a")],
            "hard link escapes",
        );
        rejected(
            vec![r(), file("a", b"x"), hardlink("b", "")],
            "hard link empty",
        );
        rejected(vec![r(), symlink("s", "")], "empty symlink");
        rejected(vec![r(), symlink("s", "a\0b")], "symlink NUL");
        let mut f = file("f", b"abc");
        f.size = 4;
        rejected(vec![r(), f], "size mismatch");
        let mut f = file("f", b"abc");
        f.extents.push(Extent::Hole(0));
        rejected(vec![r(), f], "empty extent");
        let mut d = dir("d");
        d.extents.push(Extent::Hole(5));
        d.size = 5;
        rejected(vec![r(), d], "extents on a dir");
        let mut f = file("f", b"");
        f.mode = 0o10644;
        rejected(vec![r(), f], "mode too big");
        let mut f = file("f", b"");
        f.target = b"x".to_vec();
        rejected(vec![r(), f], "target on a file");
        let mut f = file("f", b"");
        f.xattrs = vec![(b"user.b".to_vec(), vec![]), (b"user.a".to_vec(), vec![])];
        rejected(vec![r(), f], "unsorted xattrs");
        let mut f = file("f", b"");
        f.xattrs = vec![(Vec::new(), vec![])];
        rejected(vec![r(), f], "empty xattr name");
    }

    #[test]
    fn writer_refusal_leaves_it_usable() {
        let mut w = ManifestWriter::new(Vec::new()).unwrap();
        w.push(&dir("")).unwrap();
        let err = w.push(&file("../x", b"a")).unwrap_err().to_string();
        assert!(
            err.contains("refusing to write manifest entry #1 '../x'"),
            "{err}"
        );
        w.push(&file("ok", b"a")).unwrap();
        let (bytes, stats) = w.finish().unwrap();
        assert_eq!(stats.entries, 2);
        assert_eq!(read(&bytes).unwrap().len(), 2);
    }

    #[test]
    fn crafted_lengths_do_not_allocate() {
        // A root record whose path claims 2^62 bytes, and one claiming a huge record length.
        for claim in [1u64 << 62, u64::MAX] {
            let mut b = header_bytes().to_vec();
            let mut body = vec![EntryKind::Dir as u8, 0, 0];
            put_varint(&mut body, claim);
            let mut rec = Vec::new();
            frame(&body, &mut rec);
            b.extend_from_slice(&rec);
            let err = read(&b).unwrap_err().to_string();
            assert!(err.contains("over the limit"), "{err}");
        }
        let mut b = header_bytes().to_vec();
        put_varint(&mut b, u64::MAX);
        b.extend_from_slice(&[EntryKind::Dir as u8, 0, 0, 0x7f]);
        b.extend_from_slice(&[0; 100]);
        let err = read(&b).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");

        // Many extents claimed, few present.
        let mut b = header_bytes().to_vec();
        let mut body = vec![EntryKind::Dir as u8];
        put_varint(&mut body, F_EXTENTS);
        body.extend_from_slice(&[0, 0, 0, 0, 0]);
        put_varint(&mut body, u64::MAX);
        let mut rec = Vec::new();
        frame(&body, &mut rec);
        b.extend_from_slice(&rec);
        assert!(read(&b).is_err());
    }

    #[test]
    fn unknown_flags_and_record_types_are_refused() {
        let mut b = header_bytes().to_vec();
        let mut body = vec![EntryKind::Dir as u8];
        put_varint(&mut body, 1 << 8);
        body.extend_from_slice(&[0, 0, 0, 0, 0]);
        let mut rec = Vec::new();
        frame(&body, &mut rec);
        b.extend_from_slice(&rec);
        let err = read(&b).unwrap_err().to_string();
        assert!(err.contains("unknown field flags 0x100"), "{err}");

        let mut b = header_bytes().to_vec();
        b.extend_from_slice(&[1, 9]);
        let err = read(&b).unwrap_err().to_string();
        assert!(err.contains("unknown record type 9"), "{err}");
    }

    #[test]
    fn validate_path_rules() {
        for ok in [&b""[..], b"a", b"a/b", b"...", b"a/.b", b"\xff/x"] {
            assert!(validate_path(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            &b"/"[..],
            b"/a",
            b"a/",
            b"a//b",
            b".",
            b"..",
            b"a/..",
            b"./a",
            b"a/./b",
            b"a\0",
        ] {
            assert!(validate_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn deep_tree_round_trips() {
        let mut entries = vec![dir("")];
        let mut p = String::new();
        for i in 0..500 {
            if !p.is_empty() {
                p.push('/');
            }
            p.push_str(&format!("d{i}"));
            entries.push(dir(&p));
        }
        entries.push(file(format!("{p}/leaf"), b"x"));
        entries.push(file("zz", b"y"));
        assert_eq!(read(&write(&entries)).unwrap(), entries);
    }
}
