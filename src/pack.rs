//! Pack files: immutable files of many zstd-compressed blobs with an index at the end.
//!
//! Why it is built this way (the byte layout is specified in docs/FORMAT.md, "Pack format"):
//! - Packs are self-describing. Every blob carries a small header (magic, kind, flags, chunk
//!   id, lengths, and a check over the header), and the file ends with an index plus a
//!   fixed-size footer. A lost catalog can be rebuilt from the indexes; a pack whose index or
//!   footer is damaged can still be salvaged blob by blob by walking the headers
//!   ([`PackReader::scan`]), resynchronising on the next valid header after damage.
//! - A pack is named by the blake3 of its whole bytes, so `check --read-data` can verify a pack
//!   without the catalog, and two packs with the same name are the same bytes.
//! - Writing: bytes go to `SPOOL/tmp/`, hashed as they are written; `finish` appends index and
//!   footer, fsyncs the file, renames it into `packs/ab/`, and fsyncs that directory. Only after
//!   that may a catalog transaction name the pack. A crash leaves either a stray tmp file or a
//!   complete pack that nothing names; both are for `check` to find.
//! - Reading uses `pread` (`read_exact_at`), so one open [`PackReader`] can be shared by many
//!   restore threads.
//! - Every integer is little-endian, encoded explicitly; every field offset is a named constant.

use std::cell::RefCell;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Damaged;
use crate::error::{Error, IoContext, Result};
use crate::types::ChunkId;

// ---------------------------------------------------------------------------------------------
// Format constants. Changing any of these is a format change: bump VERSION and document it.

/// First 8 bytes of every pack.
pub const FILE_MAGIC: [u8; 8] = *b"REELPAK\0";
/// Last 8 bytes of every complete pack (distinct from the file magic, so a truncated pack is
/// never mistaken for a complete one).
pub const FOOTER_MAGIC: [u8; 8] = *b"REELEND\0";
/// First 4 bytes of every blob header.
pub const BLOB_MAGIC: [u8; 4] = *b"RBLB";
/// The pack format version this code writes. Version 1 named a frame by the blake3 of all its
/// raw bytes, version 2 by that of its header and chunk table (`frame::id`).
pub const VERSION: u32 = 2;
/// The oldest pack format version this code still reads.
pub const OLDEST_VERSION: u32 = 1;

// File header.
const FH_MAGIC: usize = 0; // [u8; 8]
const FH_VERSION: usize = 8; // u32
const FH_FLAGS: usize = 12; // u32, 0 in v1
pub const FILE_HEADER_LEN: usize = 16;

// Blob header; the stored bytes follow it directly.
const BH_MAGIC: usize = 0; // [u8; 4]
const BH_KIND: usize = 4; // u8
const BH_FLAGS: usize = 5; // u8
const BH_RESERVED: usize = 6; // u16, 0
const BH_RAW_LEN: usize = 8; // u32
const BH_STORED_LEN: usize = 12; // u32
const BH_ID: usize = 16; // [u8; 32]
const BH_CHECK: usize = 48; // [u8; 8]: first 8 bytes of blake3(header[0..48])
pub const BLOB_HEADER_LEN: usize = 56;

// Index entry; the index is `blob_count` of these, in file order.
const IE_ID: usize = 0; // [u8; 32]
const IE_OFFSET: usize = 32; // u64, of the stored bytes
const IE_STORED_LEN: usize = 40; // u32
const IE_RAW_LEN: usize = 44; // u32
const IE_KIND: usize = 48; // u8
const IE_FLAGS: usize = 49; // u8
const IE_RESERVED: usize = 50; // u16, 0
pub const INDEX_ENTRY_LEN: usize = 52;

// Footer: the last FOOTER_LEN bytes of the file.
const FT_INDEX_OFFSET: usize = 0; // u64
const FT_BLOB_COUNT: usize = 8; // u64
const FT_INDEX_HASH: usize = 16; // [u8; 32]: blake3 of the index bytes
const FT_VERSION: usize = 48; // u32
const FT_RESERVED: usize = 52; // u32, 0
const FT_MAGIC: usize = 56; // [u8; 8]
pub const FOOTER_LEN: usize = 64;

/// Blob flag: the stored bytes are one zstd frame.
const FLAG_ZSTD: u8 = 0x01;
const KNOWN_FLAGS: u8 = FLAG_ZSTD;

/// A writer starts a new pack once the current one reaches this size.
pub const PACK_TARGET_SIZE: u64 = 32 << 20;

// Little-endian field access on in-memory buffers whose length the caller has checked.
fn get_u16(b: &[u8], off: usize) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[off..off + 2]);
    u16::from_le_bytes(a)
}
fn get_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}
fn get_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}
fn get_32(b: &[u8], off: usize) -> [u8; 32] {
    let mut a = [0u8; 32];
    a.copy_from_slice(&b[off..off + 32]);
    a
}

// ---------------------------------------------------------------------------------------------
// Ids, kinds, entries

/// A pack's name: the blake3 hash of the whole pack file.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackId(pub [u8; 32]);

impl PackId {
    pub fn to_hex(&self) -> String {
        ChunkId(self.0).to_hex()
    }

    /// Parse 64 hex digits.
    pub fn from_hex(s: &str) -> Option<PackId> {
        ChunkId::from_hex(s).map(|c| PackId(c.0))
    }

    /// Short form for messages.
    pub fn short(&self) -> String {
        ChunkId(self.0).short()
    }
}

impl fmt::Display for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PackId({})", self.short())
    }
}

/// What a blob holds. All kinds are named by the blake3 of their raw bytes, except frames,
/// named by that of their header and chunk table (`frame::id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum BlobKind {
    /// A chunk of file content.
    Data = 0,
    /// A piece of a dump's manifest.
    Manifest = 1,
    /// A dump record (so the catalog can be rebuilt from packs).
    DumpRecord = 2,
    /// Several data chunks compressed together (see `crate::frame`): compression works on
    /// up to 4 MiB instead of one 8 KiB chunk, while dedup stays per chunk.
    Frame = 3,
    /// A `ForgetRecord` (`crate::catalog`): dumps that `prune` removed, so a catalog rebuilt
    /// from the packs does not bring them back. Never collected by gc.
    Forget = 4,
}

impl BlobKind {
    pub fn from_u8(v: u8) -> Option<BlobKind> {
        Some(match v {
            0 => BlobKind::Data,
            1 => BlobKind::Manifest,
            2 => BlobKind::DumpRecord,
            3 => BlobKind::Frame,
            4 => BlobKind::Forget,
            _ => return None,
        })
    }
}

/// Where one blob lives in its pack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobEntry {
    pub id: ChunkId,
    pub kind: BlobKind,
    pub compressed: bool,
    /// Offset of the stored bytes (just after the blob header).
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
}

impl BlobEntry {
    fn flags(&self) -> u8 {
        if self.compressed { FLAG_ZSTD } else { 0 }
    }

    /// Offset just past the stored bytes.
    fn end(&self) -> u64 {
        self.offset + u64::from(self.stored_len)
    }
}

fn encode_blob_header(e: &BlobEntry) -> [u8; BLOB_HEADER_LEN] {
    let mut h = [0u8; BLOB_HEADER_LEN];
    h[BH_MAGIC..BH_MAGIC + 4].copy_from_slice(&BLOB_MAGIC);
    h[BH_KIND] = e.kind as u8;
    h[BH_FLAGS] = e.flags();
    h[BH_RESERVED..BH_RESERVED + 2].copy_from_slice(&0u16.to_le_bytes());
    h[BH_RAW_LEN..BH_RAW_LEN + 4].copy_from_slice(&e.raw_len.to_le_bytes());
    h[BH_STORED_LEN..BH_STORED_LEN + 4].copy_from_slice(&e.stored_len.to_le_bytes());
    h[BH_ID..BH_ID + 32].copy_from_slice(&e.id.0);
    let check = blake3::hash(&h[..BH_CHECK]);
    h[BH_CHECK..BH_CHECK + 8].copy_from_slice(&check.as_bytes()[..8]);
    h
}

/// Parse a blob header found at file offset `at`; `None` if it is not a valid header.
fn decode_blob_header(h: &[u8], at: u64) -> Option<BlobEntry> {
    if h.len() < BLOB_HEADER_LEN || h[BH_MAGIC..BH_MAGIC + 4] != BLOB_MAGIC {
        return None;
    }
    let check = blake3::hash(&h[..BH_CHECK]);
    if h[BH_CHECK..BH_CHECK + 8] != check.as_bytes()[..8] {
        return None;
    }
    let kind = BlobKind::from_u8(h[BH_KIND])?;
    let flags = h[BH_FLAGS];
    if flags & !KNOWN_FLAGS != 0 || get_u16(h, BH_RESERVED) != 0 {
        return None;
    }
    let e = BlobEntry {
        id: ChunkId(get_32(h, BH_ID)),
        kind,
        compressed: flags & FLAG_ZSTD != 0,
        offset: at + BLOB_HEADER_LEN as u64,
        stored_len: get_u32(h, BH_STORED_LEN),
        raw_len: get_u32(h, BH_RAW_LEN),
    };
    (e.compressed || e.stored_len == e.raw_len).then_some(e)
}

fn encode_index_entry(e: &BlobEntry, out: &mut Vec<u8>) {
    let mut b = [0u8; INDEX_ENTRY_LEN];
    b[IE_ID..IE_ID + 32].copy_from_slice(&e.id.0);
    b[IE_OFFSET..IE_OFFSET + 8].copy_from_slice(&e.offset.to_le_bytes());
    b[IE_STORED_LEN..IE_STORED_LEN + 4].copy_from_slice(&e.stored_len.to_le_bytes());
    b[IE_RAW_LEN..IE_RAW_LEN + 4].copy_from_slice(&e.raw_len.to_le_bytes());
    b[IE_KIND] = e.kind as u8;
    b[IE_FLAGS] = e.flags();
    b[IE_RESERVED..IE_RESERVED + 2].copy_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&b);
}

struct Footer {
    index_offset: u64,
    blob_count: u64,
    index_hash: [u8; 32],
    version: u32,
    reserved: u32,
    magic: [u8; 8],
}

fn encode_footer(index_offset: u64, blob_count: u64, index_hash: &[u8; 32]) -> [u8; FOOTER_LEN] {
    let mut f = [0u8; FOOTER_LEN];
    f[FT_INDEX_OFFSET..FT_INDEX_OFFSET + 8].copy_from_slice(&index_offset.to_le_bytes());
    f[FT_BLOB_COUNT..FT_BLOB_COUNT + 8].copy_from_slice(&blob_count.to_le_bytes());
    f[FT_INDEX_HASH..FT_INDEX_HASH + 32].copy_from_slice(index_hash);
    f[FT_VERSION..FT_VERSION + 4].copy_from_slice(&VERSION.to_le_bytes());
    f[FT_RESERVED..FT_RESERVED + 4].copy_from_slice(&0u32.to_le_bytes());
    f[FT_MAGIC..FT_MAGIC + 8].copy_from_slice(&FOOTER_MAGIC);
    f
}

fn decode_footer(f: &[u8]) -> Footer {
    let mut magic = [0u8; 8];
    magic.copy_from_slice(&f[FT_MAGIC..FT_MAGIC + 8]);
    Footer {
        index_offset: get_u64(f, FT_INDEX_OFFSET),
        blob_count: get_u64(f, FT_BLOB_COUNT),
        index_hash: get_32(f, FT_INDEX_HASH),
        version: get_u32(f, FT_VERSION),
        reserved: get_u32(f, FT_RESERVED),
        magic,
    }
}

// ---------------------------------------------------------------------------------------------
// Blob encoding

/// A blob ready to be appended to a pack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedBlob {
    pub data: Vec<u8>,
    pub compressed: bool,
    pub raw_len: u32,
}

thread_local! {
    // zstd contexts are costly to create (allocations of several MiB at higher levels); with
    // 16 KiB chunks a fresh context per call would dominate. One per thread and level.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// zstd's window for the levels reel uses: 4 MiB, a whole frame (`frame::FRAME_RAW_MAX`).
/// Levels 1-16 would use 0.5-2 MiB for a frame of that size (level 2: 1 MiB), and miss every
/// repeat further back: with the whole frame in view, Rust sources stored 5% smaller and
/// compressed 4% faster (fewer, longer matches); binaries and the benchmark's text 0.1-0.3%
/// smaller, at the same speed (docs/PERFORMANCE.md). Inputs smaller than the window get a
/// window of their own size from zstd, as before; levels 17 and up keep their larger windows.
const WINDOW_LOG: u32 = 22;

/// zstd's hash table at level 2 (the default): 2^15 entries (128 KiB) rather than zstd's 2^16.
/// Level 2's match finder spends most of the dump's CPU time probing that table; half the
/// table finds slightly fewer matches, faster. Measured (docs/PERFORMANCE.md): real sources
/// and binaries 1.0% larger and 6-8% faster, the benchmark's text 3.7% larger and 15-20%
/// faster. Decoders do not depend on it.
const LEVEL2_HASH_LOG: u32 = 15;

fn zstd_compress(raw: &[u8], level: i32) -> Option<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().map(|(l, _)| *l) != Some(level) {
            let mut z = zstd::bulk::Compressor::new(level).ok()?;
            if level < 17 {
                z.set_parameter(zstd::stream::raw::CParameter::WindowLog(WINDOW_LOG))
                    .ok()?;
            }
            if level == 2 {
                z.set_parameter(zstd::stream::raw::CParameter::HashLog(LEVEL2_HASH_LOG))
                    .ok()?;
            }
            *c = Some((level, z));
        }
        let mut out = c.as_mut()?.1.compress(raw).ok()?;
        // The buffer was sized for the worst case (more than the raw length); what waits to be
        // appended should hold only what compressing gave.
        out.shrink_to_fit();
        Some(out)
    })
}

thread_local! {
    static PROBE: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
}

/// Already-compressed or random data costs zstd as much time as text and gains nothing. For a
/// large blob, compress four 8 KiB samples at level 1 first: if none of them shrinks by 1/32,
/// the blob is stored raw without spending a full compression on it.
fn looks_incompressible(raw: &[u8]) -> bool {
    const SAMPLE: usize = 8 << 10;
    if raw.len() < 16 * SAMPLE {
        return false;
    }
    let step = raw.len() / 4;
    PROBE.with(|p| {
        let mut p = p.borrow_mut();
        if p.is_none() {
            *p = zstd::bulk::Compressor::new(1).ok();
        }
        let Some(z) = p.as_mut() else {
            return false;
        };
        (0..4).all(|i| {
            let sample = &raw[i * step..i * step + SAMPLE];
            z.compress(sample)
                .is_ok_and(|c| c.len() > SAMPLE - SAMPLE / 32)
        })
    })
}

/// Blobs claiming up to this raw size are decompressed into a buffer allocated up front (every
/// blob reel writes: chunks are at most 16 MiB). A larger claim comes from a damaged or crafted
/// length field, and the zstd crate would size its buffer from the claim (or from the frame
/// header's own claim), so there the buffer grows only as output actually arrives
/// (docs/FUZZING.md, `regress-raw-len-4gib`).
const BULK_DECOMPRESS_MAX: usize = 16 << 20;

fn zstd_decompress(stored: &[u8], raw_len: usize) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    zstd_decompress_into(stored, raw_len, &mut out)?;
    Ok(out)
}

/// Decompress into `out` (cleared first), with this thread's reused zstd context: a restore
/// decompresses thousands of frames, and a fresh context and buffer for each cost an
/// allocation of the frame's size and the context's set-up every time.
pub(crate) fn zstd_decompress_into(
    stored: &[u8],
    raw_len: usize,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    out.clear();
    if raw_len > BULK_DECOMPRESS_MAX {
        use std::io::Read;
        zstd::stream::read::Decoder::with_buffer(stored)?
            .take(raw_len as u64 + 1)
            .read_to_end(out)?;
        return Ok(());
    }
    out.reserve(raw_len);
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        match d.as_mut() {
            Some(d) => d.decompress_to_buffer(stored, out).map(drop),
            None => {
                *out = zstd::bulk::decompress(stored, raw_len)?;
                Ok(())
            }
        }
    })
}

/// Compress `raw` with zstd at `level`, keeping the raw bytes (compressed = false) when
/// compression saves less than 1/32 (~3%): incompressible data must not cost decompression
/// time on restore. Panics if `raw` is 4 GiB or more (blobs are chunks, far smaller).
pub fn encode_blob(raw: &[u8], level: i32) -> EncodedBlob {
    let raw_len = u32::try_from(raw.len()).expect("blob of 4 GiB or more");
    if !looks_incompressible(raw)
        && let Some(c) = zstd_compress(raw, level)
        && c.len() <= raw.len() - raw.len() / 32
        && !raw.is_empty()
    {
        return EncodedBlob {
            data: c,
            compressed: true,
            raw_len,
        };
    }
    EncodedBlob {
        data: raw.to_vec(),
        compressed: false,
        raw_len,
    }
}

/// Decompress (if compressed) and verify length and name: `blake3(raw) == entry.id`, or for
/// a frame `frame::id(raw) == entry.id` (its chunks' bytes are verified as they are sliced).
pub fn decode_blob(entry: &BlobEntry, stored: &[u8]) -> Result<Vec<u8>> {
    let damaged = |what: String| {
        Error::corrupt(format!(
            "chunk {}: {what}; the pack holding it is damaged",
            entry.id.short()
        ))
    };
    if stored.len() != entry.stored_len as usize {
        return Err(damaged(format!(
            "{} stored bytes where the index says {}",
            stored.len(),
            entry.stored_len
        )));
    }
    let raw = if entry.compressed {
        zstd_decompress(stored, entry.raw_len as usize)
            .map_err(|e| damaged(format!("zstd data does not decompress ({e})")))?
    } else {
        stored.to_vec()
    };
    if raw.len() != entry.raw_len as usize {
        return Err(damaged(format!(
            "{} raw bytes where the index says {}",
            raw.len(),
            entry.raw_len
        )));
    }
    let named = match entry.kind {
        // Frames written by version 1 are named by all their bytes, and keep that name when
        // gc or an export copies them into a newer pack as they are.
        BlobKind::Frame => {
            crate::frame::id(&raw) == Some(entry.id) || ChunkId::of(&raw) == entry.id
        }
        _ => ChunkId::of(&raw) == entry.id,
    };
    if !named {
        return Err(damaged("content does not match its hash".to_string()));
    }
    Ok(raw)
}

// ---------------------------------------------------------------------------------------------
// Writing

/// Where a finished pack lives: `packs_dir/ab/<hex>.pack`, `ab` the first two hex digits.
pub fn pack_path(packs_dir: &Path, id: &PackId) -> PathBuf {
    let hex = id.to_hex();
    packs_dir.join(&hex[..2]).join(format!("{hex}.pack"))
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// Appends blobs to a new pack under the spool's tmp directory.
///
/// Dropping a writer that was not finished removes its tmp file.
pub struct PackWriter {
    /// `None` only while `finish` runs.
    out: Option<BufWriter<File>>,
    tmp_path: PathBuf,
    hasher: blake3::Hasher,
    size: u64,
    /// Bytes below this offset have been handed to the kernel's writeback.
    writeback_from: u64,
    entries: Vec<BlobEntry>,
    /// Set once `close` handed the tmp file on: it is no longer this writer's to remove.
    released: bool,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Start the kernel's writeback of a pack being written every this many bytes.
const WRITEBACK_STEP: u64 = 4 << 20;

/// Ask the kernel to start writing out bytes `from..to` of `file`, without waiting, so the
/// fsync in `PackWriter::finish` finds little left to do and the writer does not stall on it.
fn start_writeback(file: &File, from: u64, to: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: plain syscall on an open descriptor; it only starts writeback. A failure is
        // harmless (finish still fsyncs), so its result is ignored.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                from as libc::off64_t,
                (to - from) as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, from, to);
}

impl PackWriter {
    /// Create a new pack file with a unique name in `tmp_dir` and write its header.
    pub fn create(tmp_dir: &Path) -> Result<PackWriter> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let name = format!(
            "pack-{}-{}-{nanos}.tmp",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let tmp_path = tmp_dir.join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp_path)
            .at(&tmp_path)?;
        let mut w = PackWriter {
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            tmp_path,
            hasher: blake3::Hasher::new(),
            size: 0,
            writeback_from: 0,
            entries: Vec::new(),
            released: false,
        };
        let mut h = [0u8; FILE_HEADER_LEN];
        h[FH_MAGIC..FH_MAGIC + 8].copy_from_slice(&FILE_MAGIC);
        h[FH_VERSION..FH_VERSION + 4].copy_from_slice(&VERSION.to_le_bytes());
        h[FH_FLAGS..FH_FLAGS + 4].copy_from_slice(&0u32.to_le_bytes());
        w.write(&h)?;
        Ok(w)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| Error::usage("pack writer used after finish"))?;
        out.write_all(bytes).at(&self.tmp_path)?;
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        if self.size - self.writeback_from >= WRITEBACK_STEP {
            out.flush().at(&self.tmp_path)?;
            start_writeback(out.get_ref(), self.writeback_from, self.size);
            self.writeback_from = self.size;
        }
        Ok(())
    }

    /// Append one blob (header + stored bytes). The caller vouches that `id` is the blake3 of
    /// the blob's raw bytes; readers verify it.
    pub fn add(&mut self, id: ChunkId, kind: BlobKind, blob: &EncodedBlob) -> Result<BlobEntry> {
        let entry = next_entry(self.size, id, kind, blob)?;
        self.write(&encode_blob_header(&entry))?;
        self.write(&blob.data)?;
        self.entries.push(entry.clone());
        Ok(entry)
    }

    /// Bytes written so far (header and blobs; index and footer come at `finish`).
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn blob_count(&self) -> usize {
        self.entries.len()
    }

    /// Write index and footer, fsync, rename to [`pack_path`] and fsync the directory.
    ///
    /// On error the pack is not left behind (see [`ClosedPack::persist`]).
    pub fn finish(self, packs_dir: &Path) -> Result<FinishedPack> {
        self.close()?.persist(packs_dir)
    }

    /// Write index and footer: the pack is complete and named, but not durable yet
    /// ([`ClosedPack::persist`]). A dump goes on filling the next pack meanwhile.
    pub fn close(mut self) -> Result<ClosedPack> {
        let index_offset = self.size;
        let mut index = Vec::with_capacity(self.entries.len() * INDEX_ENTRY_LEN);
        for e in &self.entries {
            encode_index_entry(e, &mut index);
        }
        let index_hash = blake3::hash(&index);
        let footer = encode_footer(
            index_offset,
            self.entries.len() as u64,
            index_hash.as_bytes(),
        );
        self.write(&index)?;
        self.write(&footer)?;
        let out = self
            .out
            .take()
            .ok_or_else(|| Error::usage("pack writer used after finish"))?;
        let file = out
            .into_inner()
            .map_err(|e| Error::io(&self.tmp_path, e.into_error()))?;
        // The tmp file is the closed pack's to keep or remove now.
        self.released = true;
        Ok(ClosedPack {
            file: Some(file),
            tmp_path: std::mem::take(&mut self.tmp_path),
            id: PackId(*self.hasher.finalize().as_bytes()),
            size: self.size,
            entries: std::mem::take(&mut self.entries),
            renamed: false,
        })
    }

    /// Give up on this pack: remove the tmp file, ignoring errors.
    pub fn abandon(self) {
        drop(self);
    }
}

impl Drop for PackWriter {
    fn drop(&mut self) {
        if !self.released {
            drop(self.out.take());
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

/// The entry of `blob` appended to a pack of `size` bytes so far, once checked.
fn next_entry(size: u64, id: ChunkId, kind: BlobKind, blob: &EncodedBlob) -> Result<BlobEntry> {
    let stored_len = u32::try_from(blob.data.len()).map_err(|_| {
        Error::usage(format!(
            "blob {} is {} bytes; a pack blob must be under 4 GiB",
            id.short(),
            blob.data.len()
        ))
    })?;
    if !blob.compressed && stored_len != blob.raw_len {
        return Err(Error::usage(format!(
            "blob {}: uncompressed but {} stored bytes for raw length {}",
            id.short(),
            stored_len,
            blob.raw_len
        )));
    }
    Ok(BlobEntry {
        id,
        kind,
        compressed: blob.compressed,
        offset: size + BLOB_HEADER_LEN as u64,
        stored_len,
        raw_len: blob.raw_len,
    })
}

/// A pack written, closed and made durable by a thread of its own, for a caller that must not
/// spend its time on pack I/O: the dump's thread also looks up and indexes every chunk, and at
/// the end of a dump (or all along, for incompressible data) it is the one the pool waits for.
/// The writes, the kernel's copy of them and the blake3 of the whole file that names the pack
/// were about a third of its work there.
///
/// `add` checks a blob, hands it over and returns its entry at once (offsets follow from sizes
/// alone). `seal` asks for the index, footer, fsync and rename; [`SealedPack::wait`] gives the
/// finished pack. An error of the thread (a full disk) comes back from the next `add` or from
/// `wait`. Dropped unsealed, the pack's tmp file is removed.
pub struct BackgroundPack {
    jobs: Option<std::sync::mpsc::SyncSender<PackJob>>,
    thread: Option<std::thread::JoinHandle<Result<FinishedPack>>>,
    size: u64,
    blobs: usize,
}

enum PackJob {
    Blob(ChunkId, BlobKind, EncodedBlob),
    Seal(PathBuf),
}

/// Blobs handed over and not yet written, at most: a frame's blob is 1-4 MiB.
const BACKGROUND_QUEUE: usize = 4;

impl BackgroundPack {
    /// Create the pack's tmp file in `tmp_dir` (an error here is the caller's at once) and
    /// start its thread.
    pub fn start(tmp_dir: &Path) -> Result<BackgroundPack> {
        let mut writer = PackWriter::create(tmp_dir)?;
        let size = writer.size();
        let (jobs, queue) = std::sync::mpsc::sync_channel(BACKGROUND_QUEUE);
        let run = move || -> Result<FinishedPack> {
            for job in queue {
                match job {
                    PackJob::Blob(id, kind, blob) => {
                        writer.add(id, kind, &blob)?;
                    }
                    PackJob::Seal(packs_dir) => {
                        let done = writer.close()?.persist(&packs_dir)?;
                        crate::failpoint::hit("pack-renamed");
                        return Ok(done);
                    }
                }
            }
            // Dropped unsealed: `writer` removes the tmp file.
            Err(Error::usage("pack abandoned before it was sealed"))
        };
        let thread = std::thread::Builder::new()
            .name("reel-pack".into())
            .spawn(run)
            .map_err(|e| {
                Error::Spool(format!(
                    "cannot start a thread to write a pack ({e}); nothing of this session was \
                     committed, run the command again"
                ))
            })?;
        Ok(BackgroundPack {
            jobs: Some(jobs),
            thread: Some(thread),
            size,
            blobs: 0,
        })
    }

    /// Hand one blob over; its entry, as [`PackWriter::add`] would give it.
    pub fn add(&mut self, id: ChunkId, kind: BlobKind, blob: EncodedBlob) -> Result<BlobEntry> {
        let entry = next_entry(self.size, id, kind, &blob)?;
        let sent = match &self.jobs {
            Some(jobs) => jobs.send(PackJob::Blob(id, kind, blob)).is_ok(),
            None => false,
        };
        if !sent {
            // The thread stopped: it failed, and says why.
            return Err(self.stopped());
        }
        self.size = entry.end();
        self.blobs += 1;
        Ok(entry)
    }

    /// Bytes written so far (header and blobs; index and footer come at `seal`).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Let the thread write the index and footer, fsync the pack and rename it into
    /// `packs_dir`. Returns at once.
    pub fn seal(mut self, packs_dir: &Path) -> Result<SealedPack> {
        let jobs = self.jobs.take();
        let sealed = jobs.is_some_and(|j| j.send(PackJob::Seal(packs_dir.to_path_buf())).is_ok());
        if !sealed {
            return Err(self.stopped());
        }
        let size = self.size + (self.blobs * INDEX_ENTRY_LEN) as u64 + FOOTER_LEN as u64;
        Ok(SealedPack {
            thread: self.thread.take().expect("pack thread until sealed"),
            size,
        })
    }

    /// The error of a thread that stopped early.
    fn stopped(&mut self) -> Error {
        self.jobs = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(Err(e))) => e,
            _ => pack_thread_panicked(),
        }
    }
}

/// What a pack's thread that panicked leaves to say.
fn pack_thread_panicked() -> Error {
    Error::Spool(
        "a pack writing thread failed (panicked); nothing of this session was committed, run \
         the command again"
            .into(),
    )
}

impl Drop for BackgroundPack {
    fn drop(&mut self) {
        // Unsealed: the thread finds its queue closed, drops its writer and removes the tmp
        // file; wait for that, so no tmp file outlives the session that made it.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A pack being finished on its own thread ([`BackgroundPack::seal`]).
pub struct SealedPack {
    thread: std::thread::JoinHandle<Result<FinishedPack>>,
    size: u64,
}

impl SealedPack {
    /// The whole file's size (header, blobs, index and footer).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Wait until the pack is durable under its name.
    pub fn wait(self) -> Result<FinishedPack> {
        self.thread
            .join()
            .unwrap_or_else(|_| Err(pack_thread_panicked()))
    }
}

/// A pack that is durable under its final name.
#[derive(Clone, Debug)]
pub struct FinishedPack {
    pub id: PackId,
    pub path: PathBuf,
    pub size: u64,
    pub entries: Vec<BlobEntry>,
}

/// A pack with all its bytes written, under its tmp name: `persist` makes it durable under its
/// final name. Dropping it unpersisted removes the tmp file.
#[derive(Debug)]
pub struct ClosedPack {
    /// `None` only while `persist` runs.
    file: Option<File>,
    tmp_path: PathBuf,
    id: PackId,
    size: u64,
    entries: Vec<BlobEntry>,
    /// Set once the file has been renamed into place; the tmp path is gone then.
    renamed: bool,
}

impl ClosedPack {
    pub fn id(&self) -> &PackId {
        &self.id
    }

    /// The whole file's size (header, blobs, index and footer).
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn entries(&self) -> &[BlobEntry] {
        &self.entries
    }

    /// Fsync, rename to [`pack_path`] and fsync the directory.
    ///
    /// On error before the rename the tmp file is removed; on an error after it (fsync of the
    /// directory) the renamed file is removed again, since nothing names it yet, unless a file
    /// of that name (the same bytes) was there before.
    pub fn persist(mut self, packs_dir: &Path) -> Result<FinishedPack> {
        let file = self
            .file
            .take()
            .ok_or_else(|| Error::usage("pack persisted twice"))?;
        file.sync_all().at(&self.tmp_path)?;
        drop(file);
        let path = pack_path(packs_dir, &self.id);
        let dir = path.parent().unwrap_or(packs_dir).to_path_buf();
        if !dir.is_dir() {
            fs::create_dir_all(&dir).at(&dir)?;
            // Make the new `ab` entry itself durable.
            fsync_dir(packs_dir)?;
        }
        // If the target exists it has the same name, hence the same bytes: replacing it is
        // harmless and atomic.
        let existed = path.exists();
        fs::rename(&self.tmp_path, &path).map_err(|e| {
            Error::io(
                &path,
                std::io::Error::new(
                    e.kind(),
                    format!("rename from {}: {e}", self.tmp_path.display()),
                ),
            )
        })?;
        self.renamed = true;
        if let Err(e) = fsync_dir(&dir) {
            if !existed {
                let _ = fs::remove_file(&path);
            }
            return Err(e);
        }
        Ok(FinishedPack {
            id: self.id,
            path,
            size: self.size,
            entries: std::mem::take(&mut self.entries),
        })
    }
}

impl Drop for ClosedPack {
    fn drop(&mut self) {
        if !self.renamed {
            drop(self.file.take());
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading

/// Result of walking a pack's blob headers front to back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlobScan {
    /// Every blob with a valid header whose stored bytes lie inside the blob area. Their
    /// content is not verified: use [`decode_blob`].
    pub entries: Vec<BlobEntry>,
    /// Byte ranges of the blob area where no valid blob was found (damage, or a torn tail).
    pub damaged: Vec<Range<u64>>,
}

/// An open pack. All methods take `&self` and use positioned reads, so one reader can be shared
/// across threads.
#[derive(Debug)]
pub struct PackReader {
    file: File,
    path: PathBuf,
    size: u64,
    version: u32,
}

impl PackReader {
    /// Open a pack and check its file magic and version.
    pub fn open(path: &Path) -> Result<PackReader> {
        let file = File::open(path).at(path)?;
        let size = file.metadata().at(path)?.len();
        let mut r = PackReader {
            file,
            path: path.to_path_buf(),
            size,
            version: VERSION,
        };
        let head_len = size.min(FILE_HEADER_LEN as u64) as usize;
        let head = r.read_at(0, head_len)?;
        if head_len >= FILE_MAGIC.len() && head[FH_MAGIC..FH_MAGIC + 8] != FILE_MAGIC {
            return Err(r.corrupt("not a reel pack (bad file magic)".to_string()));
        }
        let min = (FILE_HEADER_LEN + FOOTER_LEN) as u64;
        if size < min {
            return Err(r.corrupt(format!(
                "truncated: {size} bytes, a pack has at least {min}"
            )));
        }
        let version = get_u32(&head, FH_VERSION);
        if !(OLDEST_VERSION..=VERSION).contains(&version) {
            return Err(r.corrupt(format!(
                "unknown pack version {version} (this reel reads versions {OLDEST_VERSION} to \
                 {VERSION}); use a newer reel"
            )));
        }
        r.version = version;
        let flags = get_u32(&head, FH_FLAGS);
        if flags != 0 {
            return Err(r.corrupt(format!(
                "unknown header flags {flags:#x} (damaged, or written by a newer reel)"
            )));
        }
        Ok(r)
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn corrupt(&self, what: String) -> Error {
        let object = Damaged::Pack {
            path: self.path.clone(),
            offset: None,
        };
        Error::damaged(object, format!("pack {}: {what}", self.path.display()))
    }

    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        match self.file.read_exact_at(&mut buf, offset) {
            Ok(()) => Ok(buf),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(self.corrupt(format!(
                "truncated: cannot read {len} bytes at offset {offset}"
            ))),
            Err(e) => Err(Error::io(&self.path, e)),
        }
    }

    /// Read and validate the footer and index: footer magic and version, index bounds and
    /// hash, and every entry (known kind and flags, inside the blob area, in order, not
    /// overlapping).
    pub fn read_index(&self) -> Result<Vec<BlobEntry>> {
        let damaged = "the pack is damaged; its blobs may still be salvaged from their headers";
        let f = decode_footer(&self.read_at(self.size - FOOTER_LEN as u64, FOOTER_LEN)?);
        if f.magic != FOOTER_MAGIC {
            return Err(self.corrupt(format!(
                "no valid footer at the end: the pack is truncated or damaged; {damaged}"
            )));
        }
        if f.version != self.version {
            return Err(self.corrupt(format!(
                "footer says version {} but the header says {}: {damaged}",
                f.version, self.version
            )));
        }
        if f.reserved != 0 {
            return Err(self.corrupt(format!("footer reserved field is not zero: {damaged}")));
        }
        let index_end = self.size - FOOTER_LEN as u64;
        let index_len = f
            .blob_count
            .checked_mul(INDEX_ENTRY_LEN as u64)
            .filter(|&l| l <= index_end);
        let Some(index_len) = index_len.filter(|&l| {
            f.index_offset >= FILE_HEADER_LEN as u64
                && f.index_offset.checked_add(l) == Some(index_end)
        }) else {
            return Err(self.corrupt(format!(
                "footer bounds do not fit the file (index at {}, {} blobs, file {} bytes): \
                 {damaged}",
                f.index_offset, f.blob_count, self.size
            )));
        };
        let index = self.read_at(f.index_offset, index_len as usize)?;
        if blake3::hash(&index).as_bytes() != &f.index_hash {
            return Err(self.corrupt(format!("index does not match its hash: {damaged}")));
        }
        let mut entries = Vec::with_capacity(f.blob_count as usize);
        let mut prev_end = FILE_HEADER_LEN as u64;
        for (i, b) in index.chunks_exact(INDEX_ENTRY_LEN).enumerate() {
            let bad = |why: &str| self.corrupt(format!("index entry {i}: {why}: {damaged}"));
            let kind = BlobKind::from_u8(b[IE_KIND]).ok_or_else(|| bad("unknown blob kind"))?;
            let flags = b[IE_FLAGS];
            if flags & !KNOWN_FLAGS != 0 || get_u16(b, IE_RESERVED) != 0 {
                return Err(bad("unknown flags"));
            }
            let e = BlobEntry {
                id: ChunkId(get_32(b, IE_ID)),
                kind,
                compressed: flags & FLAG_ZSTD != 0,
                offset: get_u64(b, IE_OFFSET),
                stored_len: get_u32(b, IE_STORED_LEN),
                raw_len: get_u32(b, IE_RAW_LEN),
            };
            // Blobs are laid out back to back, each after its header, before the index.
            if e.offset < prev_end + BLOB_HEADER_LEN as u64
                || e.offset.checked_add(u64::from(e.stored_len)).is_none()
                || e.end() > f.index_offset
            {
                return Err(bad("blob outside the blob area or overlapping another"));
            }
            if !e.compressed && e.stored_len != e.raw_len {
                return Err(bad("uncompressed blob with stored length != raw length"));
            }
            prev_end = e.end();
            entries.push(e);
        }
        Ok(entries)
    }

    /// [`PackReader::read_stored`] into `buf` (its old content is replaced), so a reader of
    /// many blobs reuses one buffer.
    pub fn read_stored_into(&self, entry: &BlobEntry, buf: &mut Vec<u8>) -> Result<()> {
        match entry.offset.checked_add(u64::from(entry.stored_len)) {
            Some(end) if end <= self.size => {}
            _ => return self.read_stored(entry).map(drop),
        }
        let len = entry.stored_len as usize;
        buf.clear();
        buf.resize(len, 0);
        match self.file.read_exact_at(buf, entry.offset) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(self.corrupt(format!(
                "truncated: cannot read {len} bytes at offset {}",
                entry.offset
            ))),
            Err(e) => Err(Error::io(&self.path, e)),
        }
    }

    /// The stored (possibly compressed) bytes of one blob, unverified.
    pub fn read_stored(&self, entry: &BlobEntry) -> Result<Vec<u8>> {
        match entry.offset.checked_add(u64::from(entry.stored_len)) {
            Some(end) if end <= self.size => {}
            _ => {
                return Err(self.corrupt(format!(
                    "chunk {} at offset {} (+{}) lies beyond the end of the file ({} bytes)",
                    entry.id.short(),
                    entry.offset,
                    entry.stored_len,
                    self.size
                )));
            }
        }
        self.read_at(entry.offset, entry.stored_len as usize)
    }

    /// Read one blob, decompress it and verify it against its id.
    pub fn read_blob(&self, entry: &BlobEntry) -> Result<Vec<u8>> {
        let stored = self.read_stored(entry)?;
        decode_blob(entry, &stored).map_err(|e| match e {
            Error::Corrupt { msg, .. } => self.corrupt(msg),
            e => e,
        })
    }

    /// The blake3 of the whole file: equals the pack's name unless the pack is damaged.
    pub fn hash_file(&self) -> Result<PackId> {
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0u64;
        while off < self.size {
            let want = (self.size - off).min(buf.len() as u64) as usize;
            let n = self.file.read_at(&mut buf[..want], off).at(&self.path)?;
            if n == 0 {
                return Err(self.corrupt(format!("file shrank to {off} bytes while hashing")));
            }
            hasher.update(&buf[..n]);
            off += n as u64;
        }
        Ok(PackId(*hasher.finalize().as_bytes()))
    }

    /// Walk the blob headers front to back without trusting the index (salvage, and to
    /// cross-check the index). See [`PackReader::scan`].
    pub fn scan_blobs(&self) -> Result<Vec<BlobEntry>> {
        Ok(self.scan()?.entries)
    }

    /// Walk the blob headers front to back. After a damaged header the walk resynchronises on
    /// the next valid blob header (magic plus its 8-byte check), so one bad blob does not hide
    /// the ones after it. The blob area ends at the footer's index offset when the footer looks
    /// sound, else at the end of the file. Reads the whole pack into memory (packs are about
    /// [`PACK_TARGET_SIZE`]).
    pub fn scan(&self) -> Result<BlobScan> {
        let buf = self.read_at(0, self.size as usize)?;
        let mut end = buf.len();
        if buf.len() >= FILE_HEADER_LEN + FOOTER_LEN {
            let f = decode_footer(&buf[buf.len() - FOOTER_LEN..]);
            let index_end = (buf.len() - FOOTER_LEN) as u64;
            let fits = f
                .blob_count
                .checked_mul(INDEX_ENTRY_LEN as u64)
                .and_then(|l| l.checked_add(f.index_offset))
                == Some(index_end);
            if f.magic == FOOTER_MAGIC && fits && f.index_offset >= FILE_HEADER_LEN as u64 {
                end = f.index_offset as usize;
            }
        }
        let valid_at = |pos: usize| -> Option<BlobEntry> {
            let h = buf.get(pos..pos + BLOB_HEADER_LEN)?;
            let e = decode_blob_header(h, pos as u64)?;
            (e.end() <= end as u64).then_some(e)
        };
        let mut scan = BlobScan::default();
        let mut pos = FILE_HEADER_LEN.min(end);
        while pos < end {
            if let Some(e) = valid_at(pos) {
                pos = e.end() as usize;
                scan.entries.push(e);
                continue;
            }
            // Damage: find the next valid header.
            let mut next = end;
            let mut from = pos + 1;
            while from + BLOB_MAGIC.len() <= end {
                match buf[from..end].windows(4).position(|w| w == BLOB_MAGIC) {
                    Some(i) if valid_at(from + i).is_some() => {
                        next = from + i;
                        break;
                    }
                    Some(i) => from += i + 1,
                    None => break,
                }
            }
            tracing::warn!(
                pack = %self.path.display(),
                "no valid blob in bytes {pos}..{next}; skipped"
            );
            scan.damaged.push(pos as u64..next as u64);
            pos = next;
        }
        Ok(scan)
    }
}

/// Every `*.pack` under `packs_dir/??/`, with the id parsed from its file name, sorted by id.
///
/// Files whose names are not `<64 hex digits>.pack` inside the directory named by their first
/// two digits (and leftover non-directories under `packs_dir`) are skipped with a tracing
/// warning: they are not packs this spool wrote. A missing `packs_dir` gives an empty list.
pub fn list_packs(packs_dir: &Path) -> Result<Vec<(PackId, PathBuf)>> {
    let top = match fs::read_dir(packs_dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(packs_dir, e)),
    };
    let mut out = Vec::new();
    for sub in top {
        let sub = sub.at(packs_dir)?;
        let sub_path = sub.path();
        let sub_name = sub.file_name().to_string_lossy().into_owned();
        if !sub.file_type().at(&sub_path)?.is_dir() {
            tracing::warn!(path = %sub_path.display(), "not a pack directory; skipped");
            continue;
        }
        if sub_name.len() != 2 || !sub_name.bytes().all(|b| b.is_ascii_hexdigit()) {
            tracing::warn!(path = %sub_path.display(), "unexpected directory in packs; skipped");
            continue;
        }
        for f in fs::read_dir(&sub_path).at(&sub_path)? {
            let f = f.at(&sub_path)?;
            let path = f.path();
            let name = f.file_name().to_string_lossy().into_owned();
            let id = name
                .strip_suffix(".pack")
                .filter(|hex| hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
                .and_then(PackId::from_hex)
                .filter(|id| id.to_hex()[..2] == sub_name);
            match id {
                Some(id) if f.file_type().at(&path)?.is_file() => out.push((id, path)),
                _ => tracing::warn!(path = %path.display(), "not a pack file name; skipped"),
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::tests::random;

    fn text(seed: u64, len: usize) -> Vec<u8> {
        let words = [
            "volume ", "dump ", "level ", "spool ", "chunk ", "pack\n", "tape ",
        ];
        let r = random(seed, len);
        let mut out = Vec::with_capacity(len + 8);
        let mut i = 0;
        while out.len() < len {
            out.extend_from_slice(words[r[i % len] as usize % words.len()].as_bytes());
            i += 1;
        }
        out.truncate(len);
        out
    }

    struct Spool {
        _dir: tempfile::TempDir,
        tmp: PathBuf,
        packs: PathBuf,
    }

    fn spool() -> Spool {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        let packs = dir.path().join("packs");
        fs::create_dir_all(&tmp).unwrap();
        fs::create_dir_all(&packs).unwrap();
        Spool {
            _dir: dir,
            tmp,
            packs,
        }
    }

    /// Write a pack of the given raw blobs; returns it with the raw bytes.
    fn write_pack(s: &Spool, blobs: &[(BlobKind, Vec<u8>)]) -> FinishedPack {
        let mut w = PackWriter::create(&s.tmp).unwrap();
        for (kind, raw) in blobs {
            let e = w
                .add(ChunkId::of(raw), *kind, &encode_blob(raw, 3))
                .unwrap();
            assert_eq!(e.raw_len as usize, raw.len());
        }
        assert_eq!(w.blob_count(), blobs.len());
        w.finish(&s.packs).unwrap()
    }

    fn tmp_is_empty(s: &Spool) -> bool {
        fs::read_dir(&s.tmp).unwrap().next().is_none()
    }

    #[test]
    fn pack_id_hex() {
        let id = PackId(*blake3::hash(b"x").as_bytes());
        assert_eq!(PackId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(id.to_string(), id.to_hex());
        assert_eq!(id.short().len(), 12);
        assert!(format!("{id:?}").contains(&id.short()));
    }

    #[test]
    fn encode_keeps_random_raw_and_compresses_text() {
        let r = random(1, 16 << 10);
        let e = encode_blob(&r, 3);
        assert!(!e.compressed);
        assert_eq!(e.data, r);
        let t = text(2, 16 << 10);
        let e = encode_blob(&t, 3);
        assert!(e.compressed);
        assert!(e.data.len() < t.len() / 2);
        assert_eq!(e.raw_len as usize, t.len());
        let empty = encode_blob(&[], 3);
        assert!(!empty.compressed && empty.data.is_empty());
        // Level changes reuse the thread's context correctly.
        assert!(encode_blob(&t, 1).compressed);
        assert!(encode_blob(&t, 19).compressed);
    }

    /// Level 2 compresses with the 4 MiB window and the 2^15 hash table, byte for byte what a
    /// zstd context set up that way writes, and unlike zstd's own level 2 (2^16): the tuning
    /// is applied, and the frames stay plain zstd.
    #[test]
    fn level_2_uses_the_smaller_hash_table_and_writes_plain_zstd() {
        use zstd::stream::raw::CParameter;
        // Varied text (a vocabulary of many words), where the table's size changes matches.
        let vocabulary: Vec<Vec<u8>> = random(3, 64 << 10)
            .chunks(6)
            .map(|w| w.iter().map(|b| b'a' + b % 26).chain([b' ']).collect())
            .collect();
        let picks = random(4, 1 << 20);
        let t: Vec<u8> = picks
            .chunks(2)
            .flat_map(|p| vocabulary[(p[0] as usize * 256 + p[1] as usize) % 4000].clone())
            .collect();
        let with_hash_log = |hash_log: u32| {
            let mut z = zstd::bulk::Compressor::new(2).unwrap();
            z.set_parameter(CParameter::WindowLog(WINDOW_LOG)).unwrap();
            z.set_parameter(CParameter::HashLog(hash_log)).unwrap();
            z.compress(&t).unwrap()
        };
        let e = encode_blob(&t, 2);
        assert!(e.compressed);
        assert!(e.data == with_hash_log(LEVEL2_HASH_LOG));
        assert!(
            e.data != with_hash_log(16),
            "zstd's own level 2 table was used"
        );
        assert!(zstd::bulk::decompress(&e.data, t.len()).unwrap() == t);
    }

    #[test]
    fn round_trip_many_blobs_of_each_kind() {
        let s = spool();
        let kinds = [BlobKind::Data, BlobKind::Manifest, BlobKind::DumpRecord];
        let mut blobs = Vec::new();
        for i in 0..150u64 {
            let len = (i as usize * 997) % (64 << 10);
            let raw = if i % 2 == 0 {
                random(i, len)
            } else {
                text(i, len)
            };
            blobs.push((kinds[i as usize % 3], raw));
        }
        let p = write_pack(&s, &blobs);
        assert!(tmp_is_empty(&s), "tmp file left after finish");
        assert_eq!(p.path, pack_path(&s.packs, &p.id));
        assert_eq!(p.size, fs::metadata(&p.path).unwrap().len());
        // Named by the blake3 of its bytes.
        assert_eq!(
            p.id.0,
            *blake3::hash(&fs::read(&p.path).unwrap()).as_bytes()
        );

        let r = PackReader::open(&p.path).unwrap();
        assert_eq!(r.hash_file().unwrap(), p.id);
        let index = r.read_index().unwrap();
        assert_eq!(index, p.entries);
        assert_eq!(r.scan_blobs().unwrap(), index);
        assert!(r.scan().unwrap().damaged.is_empty());
        assert!(index.iter().any(|e| e.compressed) && index.iter().any(|e| !e.compressed));
        for (e, (kind, raw)) in index.iter().zip(&blobs) {
            assert_eq!(e.kind, *kind);
            assert_eq!(&r.read_blob(e).unwrap(), raw);
        }
        assert_eq!(list_packs(&s.packs).unwrap(), vec![(p.id, p.path.clone())]);
    }

    #[test]
    fn empty_pack_is_valid() {
        let s = spool();
        let p = write_pack(&s, &[]);
        let r = PackReader::open(&p.path).unwrap();
        assert!(r.read_index().unwrap().is_empty());
        assert!(r.scan_blobs().unwrap().is_empty());
        assert_eq!(r.size(), (FILE_HEADER_LEN + FOOTER_LEN) as u64);
    }

    #[test]
    fn flipped_byte_anywhere_is_detected() {
        let s = spool();
        let blobs = vec![
            (BlobKind::Data, text(1, 600)),
            (BlobKind::Manifest, random(2, 300)),
            (BlobKind::DumpRecord, text(3, 200)),
        ];
        let p = write_pack(&s, &blobs);
        let good = fs::read(&p.path).unwrap();
        let index_offset = p.entries.last().unwrap().end() as usize;
        let bad_path = s.tmp.join("bad.pack");
        let mut harmless = 0;
        for i in 0..good.len() {
            let mut bytes = good.clone();
            bytes[i] ^= 0x20;
            fs::write(&bad_path, &bytes).unwrap();
            let r = match PackReader::open(&bad_path) {
                Err(e) => {
                    assert!(i < FILE_HEADER_LEN, "byte {i}: open failed: {e}");
                    continue;
                }
                Ok(r) => r,
            };
            assert!(
                i >= FILE_HEADER_LEN,
                "byte {i}: file header damage not seen"
            );
            assert_ne!(r.hash_file().unwrap(), p.id, "byte {i}");
            if i >= index_offset {
                let e = r.read_index().unwrap_err().to_string();
                assert!(e.contains("damaged"), "byte {i}: {e}");
                continue;
            }
            let index = r.read_index().unwrap();
            let hit = index
                .iter()
                .find(|e| (e.offset..e.end()).contains(&(i as u64)));
            match hit {
                Some(e) => {
                    match r.read_blob(e) {
                        Err(err) => {
                            let err = err.to_string();
                            assert!(
                                err.contains(&e.id.short()) && err.contains("damaged"),
                                "{err}"
                            );
                        }
                        // zstd frames have a few redundant bits: a flip there still decodes
                        // to the verified original content, so no data is lost; only the
                        // pack hash (asserted above) sees it.
                        Ok(raw) => {
                            assert!(e.compressed, "byte {i}: raw blob damage not detected");
                            assert_eq!(ChunkId::of(&raw), e.id);
                            harmless += 1;
                        }
                    }
                }
                None => {
                    // A blob header: the index is fine, the header walk sees the damage.
                    let scan = r.scan().unwrap();
                    assert_eq!(scan.entries.len(), 2, "byte {i}");
                    assert_eq!(scan.damaged.len(), 1, "byte {i}");
                }
            }
        }
        assert!(harmless < 5, "{harmless} flips went unseen by decode_blob");
    }

    #[test]
    fn frames_are_named_by_their_table_and_version_1_names_still_read() {
        let (a, b) = (text(1, 5000), text(2, 7000));
        let ids = [ChunkId::of(&a), ChunkId::of(&b)];
        let (raw, offsets) = crate::frame::build(&[(ids[0], &a), (ids[1], &b)]);
        let name = crate::frame::id(&raw).unwrap();
        let v1_name = ChunkId::of(&raw);
        assert_ne!(name, v1_name);
        let blob = encode_blob(&raw, 3);
        let entry = |id, stored: &[u8]| BlobEntry {
            id,
            kind: BlobKind::Frame,
            compressed: false,
            offset: 0,
            stored_len: stored.len() as u32,
            raw_len: raw.len() as u32,
        };
        for id in [name, v1_name] {
            let e = BlobEntry {
                compressed: blob.compressed,
                ..entry(id, &blob.data)
            };
            assert_eq!(decode_blob(&e, &blob.data).unwrap(), raw);
        }
        // A byte of the table changes the name: the frame is refused.
        let mut bad = raw.clone();
        bad[12] ^= 1;
        let err = decode_blob(&entry(name, &bad), &bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not match its hash"), "{err}");
        // A byte of a chunk does not: that chunk is refused when sliced, the other reads.
        let mut bad = raw.clone();
        bad[offsets[1] as usize + 100] ^= 1;
        let got = decode_blob(&entry(name, &bad), &bad).unwrap();
        assert_eq!(
            crate::frame::slice(&got, &ids[0], offsets[0], 5000).unwrap(),
            a
        );
        let err = crate::frame::slice(&got, &ids[1], offsets[1], 7000).unwrap_err();
        assert!(err.to_string().contains("does not match its hash"), "{err}");
    }

    #[test]
    fn truncated_or_foreign_files_are_refused() {
        let s = spool();
        let blobs: Vec<_> = (0..5).map(|i| (BlobKind::Data, text(i, 5000))).collect();
        let p = write_pack(&s, &blobs);
        let good = fs::read(&p.path).unwrap();
        let cut_path = s.tmp.join("cut.pack");
        for len in [
            0,
            5,
            16,
            79,
            80,
            good.len() / 2,
            good.len() - 64,
            good.len() - 1,
        ] {
            fs::write(&cut_path, &good[..len]).unwrap();
            let err = match PackReader::open(&cut_path) {
                Err(e) => e,
                Ok(r) => r.read_index().unwrap_err(),
            };
            assert!(err.to_string().contains("truncated"), "len {len}: {err}");
        }
        // Salvage from a pack torn inside its fourth blob keeps the first three.
        let torn = p.entries[3].offset as usize + 10;
        fs::write(&cut_path, &good[..torn]).unwrap();
        let scan = PackReader::open(&cut_path).unwrap().scan().unwrap();
        assert_eq!(scan.entries, p.entries[..3].to_vec());
        assert_eq!(scan.damaged.len(), 1);

        fs::write(&cut_path, random(9, 4096)).unwrap();
        let err = PackReader::open(&cut_path).unwrap_err().to_string();
        assert!(err.contains("not a reel pack"), "{err}");

        let mut v3 = good.clone();
        v3[FH_VERSION..FH_VERSION + 4].copy_from_slice(&3u32.to_le_bytes());
        fs::write(&cut_path, &v3).unwrap();
        let err = PackReader::open(&cut_path).unwrap_err().to_string();
        assert!(err.contains("unknown pack version 3"), "{err}");
        // Version 1 packs (frames named by all their bytes) still read.
        let mut v1 = good.clone();
        let ft = good.len() - FOOTER_LEN + FT_VERSION;
        v1[FH_VERSION..FH_VERSION + 4].copy_from_slice(&1u32.to_le_bytes());
        v1[ft..ft + 4].copy_from_slice(&1u32.to_le_bytes());
        fs::write(&cut_path, &v1).unwrap();
        let index = PackReader::open(&cut_path).unwrap().read_index().unwrap();
        assert_eq!(index, p.entries);
        // Header and footer must agree.
        v1[FH_VERSION..FH_VERSION + 4].copy_from_slice(&2u32.to_le_bytes());
        fs::write(&cut_path, &v1).unwrap();
        let err = PackReader::open(&cut_path)
            .unwrap()
            .read_index()
            .unwrap_err();
        assert!(err.to_string().contains("footer says version 1"), "{err}");
    }

    #[test]
    fn scan_resyncs_after_a_damaged_blob() {
        let s = spool();
        let blobs: Vec<_> = (0..6).map(|i| (BlobKind::Data, random(i, 3000))).collect();
        let p = write_pack(&s, &blobs);
        let mut bytes = fs::read(&p.path).unwrap();
        // Wreck the header and the body of blob 2.
        let e = &p.entries[2];
        let start = e.offset as usize - BLOB_HEADER_LEN;
        bytes[start..start + 100].fill(0xEE);
        let bad = s.tmp.join("bad.pack");
        fs::write(&bad, &bytes).unwrap();
        let scan = PackReader::open(&bad).unwrap().scan().unwrap();
        let mut want = p.entries.clone();
        want.remove(2);
        assert_eq!(scan.entries, want);
        assert_eq!(
            scan.damaged,
            vec![start as u64..p.entries[3].offset - BLOB_HEADER_LEN as u64]
        );
    }

    #[test]
    fn abandon_and_drop_remove_the_tmp_file() {
        let s = spool();
        let mut w = PackWriter::create(&s.tmp).unwrap();
        w.add(ChunkId::of(b"x"), BlobKind::Data, &encode_blob(b"x", 3))
            .unwrap();
        assert!(!tmp_is_empty(&s));
        w.abandon();
        assert!(tmp_is_empty(&s));
        let w = PackWriter::create(&s.tmp).unwrap();
        assert!(!tmp_is_empty(&s));
        drop(w);
        assert!(tmp_is_empty(&s));
        assert!(list_packs(&s.packs).unwrap().is_empty());
    }

    #[test]
    fn a_closed_pack_is_named_before_it_persists_and_removed_if_dropped() {
        let s = spool();
        let blobs = [b"first".to_vec(), b"second".to_vec()];
        let fill = || {
            let mut w = PackWriter::create(&s.tmp).unwrap();
            for raw in &blobs {
                w.add(ChunkId::of(raw), BlobKind::Data, &encode_blob(raw, 3))
                    .unwrap();
            }
            w
        };
        // Dropped before persisting: the tmp file goes, no pack appears.
        let closed = fill().close().unwrap();
        assert!(!tmp_is_empty(&s), "close keeps the tmp file");
        drop(closed);
        assert!(tmp_is_empty(&s));
        assert!(list_packs(&s.packs).unwrap().is_empty());
        // Persisted: the name and entries known at close are the finished pack's.
        let closed = fill().close().unwrap();
        let (id, size, entries) = (*closed.id(), closed.size(), closed.entries().to_vec());
        assert_eq!(
            list_packs(&s.packs).unwrap().len(),
            0,
            "not in place before persist"
        );
        let done = closed.persist(&s.packs).unwrap();
        assert!(tmp_is_empty(&s));
        assert_eq!((done.id, done.size, done.entries), (id, size, entries));
        assert_eq!(fs::metadata(&done.path).unwrap().len(), size);
        assert_eq!(
            *blake3::hash(&fs::read(&done.path).unwrap()).as_bytes(),
            id.0
        );
    }

    #[test]
    fn a_background_pack_is_the_pack_a_writer_makes_and_its_errors_come_back() {
        let s = spool();
        let blobs: Vec<Vec<u8>> = (0..6u64)
            .map(|i| text(i, 3000 + 700 * i as usize))
            .collect();
        let mut w = PackWriter::create(&s.tmp).unwrap();
        let mut bg = BackgroundPack::start(&s.tmp).unwrap();
        for raw in &blobs {
            let blob = encode_blob(raw, 3);
            let a = w.add(ChunkId::of(raw), BlobKind::Data, &blob).unwrap();
            let b = bg.add(ChunkId::of(raw), BlobKind::Data, blob).unwrap();
            assert_eq!(a, b, "entries follow from sizes alone");
            assert_eq!(w.size(), bg.size());
        }
        // A blob the writer would refuse is refused at once, and the pack goes on.
        let bad = EncodedBlob {
            data: vec![1, 2, 3],
            compressed: false,
            raw_len: 4,
        };
        assert!(bg.add(ChunkId::of(b"x"), BlobKind::Data, bad).is_err());
        let sealed = bg.seal(&s.packs).unwrap();
        let size = sealed.size();
        let done = sealed.wait().unwrap();
        let plain = w.finish(&s.packs).unwrap();
        assert_eq!(
            (done.id, done.size, &done.entries),
            (plain.id, size, &plain.entries)
        );
        assert_eq!(
            fs::read(&done.path).unwrap(),
            fs::read(&plain.path).unwrap()
        );
        assert!(tmp_is_empty(&s));

        // Dropped unsealed: the tmp file goes, no pack appears.
        let before = list_packs(&s.packs).unwrap().len();
        let mut bg = BackgroundPack::start(&s.tmp).unwrap();
        bg.add(ChunkId::of(b"y"), BlobKind::Data, encode_blob(b"y", 3))
            .unwrap();
        drop(bg);
        assert!(tmp_is_empty(&s));
        assert_eq!(list_packs(&s.packs).unwrap().len(), before);

        // The thread's own error (here: the packs directory is a file) comes back from wait,
        // and the tmp file is removed.
        let not_a_dir = s.tmp.parent().unwrap().join("not-a-dir");
        fs::write(&not_a_dir, b"").unwrap();
        let mut bg = BackgroundPack::start(&s.tmp).unwrap();
        bg.add(ChunkId::of(b"z"), BlobKind::Data, encode_blob(b"z", 3))
            .unwrap();
        let err = bg.seal(&not_a_dir).unwrap().wait().unwrap_err().to_string();
        assert!(err.contains("not-a-dir"), "{err}");
        assert!(tmp_is_empty(&s));
    }

    #[test]
    fn add_refuses_inconsistent_blobs() {
        let s = spool();
        let mut w = PackWriter::create(&s.tmp).unwrap();
        let bad = EncodedBlob {
            data: vec![1, 2, 3],
            compressed: false,
            raw_len: 4,
        };
        assert!(w.add(ChunkId::of(b"x"), BlobKind::Data, &bad).is_err());
    }

    #[test]
    fn list_packs_skips_foreign_names() {
        let s = spool();
        let a = write_pack(&s, &[(BlobKind::Data, b"one".to_vec())]);
        let b = write_pack(&s, &[(BlobKind::Data, b"two".to_vec())]);
        let dir = a.path.parent().unwrap();
        fs::write(dir.join("notes.txt"), b"x").unwrap();
        fs::write(dir.join(format!("{}.pack", "0".repeat(64))), b"x").unwrap(); // wrong dir
        fs::write(s.packs.join("stray"), b"x").unwrap();
        fs::create_dir_all(s.packs.join("zz")).unwrap();
        let mut want = vec![(a.id, a.path), (b.id, b.path)];
        want.sort();
        assert_eq!(list_packs(&s.packs).unwrap(), want);
        assert!(list_packs(&s.packs.join("missing")).unwrap().is_empty());
    }
}
