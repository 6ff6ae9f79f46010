//! The pack format's constants and its codec: file header, blob headers, index entries and
//! footer (docs/FORMAT.md, "Pack format"); pack names, blob kinds and index entries.

use std::fmt;

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
pub(super) const FH_MAGIC: usize = 0; // [u8; 8]
pub(super) const FH_VERSION: usize = 8; // u32
pub(super) const FH_FLAGS: usize = 12; // u32: bit 0 "sealed"; 0 in v1
pub const FILE_HEADER_LEN: usize = 16;

/// File header flag: every blob's stored bytes and the index are sealed (XChaCha20-Poly1305
/// under the spool's key, `crate::crypto`). A reel that predates it refuses the pack by its
/// unknown flag.
pub(super) const PACK_SEALED: u32 = 0x1;
pub(super) const KNOWN_PACK_FLAGS: u32 = PACK_SEALED;

/// What a sealed blob's stored bytes are bound to: the domain, then its kind, flags, raw
/// length and id, so a sealed blob cannot be passed off as another or altered unnoticed.
pub(super) fn blob_aad(e: &BlobEntry) -> [u8; BLOB_AAD_LEN] {
    let mut a = [0u8; BLOB_AAD_LEN];
    let d = BLOB_AAD_DOMAIN.len();
    a[..d].copy_from_slice(BLOB_AAD_DOMAIN);
    a[d] = e.kind as u8;
    a[d + 1] = e.flags();
    a[d + 2..d + 6].copy_from_slice(&e.raw_len.to_le_bytes());
    a[d + 6..].copy_from_slice(&e.id.0);
    a
}
const BLOB_AAD_DOMAIN: &[u8] = b"reel blob 1\0";
const BLOB_AAD_LEN: usize = 12 + 1 + 1 + 4 + 32;

/// What a sealed index is bound to: the domain and the blob count the footer gives.
pub(super) fn index_aad(blob_count: u64) -> Vec<u8> {
    let mut a = b"reel pack index 1\0".to_vec();
    a.extend_from_slice(&blob_count.to_le_bytes());
    a
}

/// Bytes a sealed blob or index has beyond its plain form (nonce and tag).
pub(super) fn seal_overhead(sealed: bool) -> u32 {
    if sealed {
        crate::crypto::SEAL_OVERHEAD as u32
    } else {
        0
    }
}

// Blob header; the stored bytes follow it directly.
pub(super) const BH_MAGIC: usize = 0; // [u8; 4]
pub(super) const BH_KIND: usize = 4; // u8
pub(super) const BH_FLAGS: usize = 5; // u8
pub(super) const BH_RESERVED: usize = 6; // u16, 0
pub(super) const BH_RAW_LEN: usize = 8; // u32
pub(super) const BH_STORED_LEN: usize = 12; // u32
pub(super) const BH_ID: usize = 16; // [u8; 32]
pub(super) const BH_CHECK: usize = 48; // [u8; 8]: first 8 bytes of blake3(header[0..48])
pub const BLOB_HEADER_LEN: usize = 56;

// Index entry; the index is `blob_count` of these, in file order.
pub(super) const IE_ID: usize = 0; // [u8; 32]
pub(super) const IE_OFFSET: usize = 32; // u64, of the stored bytes
pub(super) const IE_STORED_LEN: usize = 40; // u32
pub(super) const IE_RAW_LEN: usize = 44; // u32
pub(super) const IE_KIND: usize = 48; // u8
pub(super) const IE_FLAGS: usize = 49; // u8
pub(super) const IE_RESERVED: usize = 50; // u16, 0
pub const INDEX_ENTRY_LEN: usize = 52;

// Footer: the last FOOTER_LEN bytes of the file.
pub(super) const FT_INDEX_OFFSET: usize = 0; // u64
pub(super) const FT_BLOB_COUNT: usize = 8; // u64
pub(super) const FT_INDEX_HASH: usize = 16; // [u8; 32]: blake3 of the index bytes
pub(super) const FT_VERSION: usize = 48; // u32
pub(super) const FT_RESERVED: usize = 52; // u32, 0
pub(super) const FT_MAGIC: usize = 56; // [u8; 8]
pub const FOOTER_LEN: usize = 64;

/// Blob flag: the stored bytes are one zstd frame.
pub(super) const FLAG_ZSTD: u8 = 0x01;
pub(super) const KNOWN_FLAGS: u8 = FLAG_ZSTD;

// Little-endian field access on in-memory buffers whose length the caller has checked.
pub(super) fn get_u16(b: &[u8], off: usize) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[off..off + 2]);
    u16::from_le_bytes(a)
}
pub(super) fn get_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}
pub(super) fn get_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}
pub(super) fn get_32(b: &[u8], off: usize) -> [u8; 32] {
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
    pub(super) fn flags(&self) -> u8 {
        if self.compressed { FLAG_ZSTD } else { 0 }
    }

    /// Offset just past the stored bytes.
    pub(super) fn end(&self) -> u64 {
        self.offset + u64::from(self.stored_len)
    }
}

pub(super) fn encode_blob_header(e: &BlobEntry) -> [u8; BLOB_HEADER_LEN] {
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
pub(super) fn decode_blob_header(h: &[u8], at: u64, sealed: bool) -> Option<BlobEntry> {
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
    (e.compressed || Some(e.stored_len) == e.raw_len.checked_add(seal_overhead(sealed)))
        .then_some(e)
}

pub(super) fn encode_index_entry(e: &BlobEntry, out: &mut Vec<u8>) {
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

pub(super) struct Footer {
    pub(super) index_offset: u64,
    pub(super) blob_count: u64,
    pub(super) index_hash: [u8; 32],
    pub(super) version: u32,
    pub(super) reserved: u32,
    pub(super) magic: [u8; 8],
}

pub(super) fn encode_footer(
    index_offset: u64,
    blob_count: u64,
    index_hash: &[u8; 32],
) -> [u8; FOOTER_LEN] {
    let mut f = [0u8; FOOTER_LEN];
    f[FT_INDEX_OFFSET..FT_INDEX_OFFSET + 8].copy_from_slice(&index_offset.to_le_bytes());
    f[FT_BLOB_COUNT..FT_BLOB_COUNT + 8].copy_from_slice(&blob_count.to_le_bytes());
    f[FT_INDEX_HASH..FT_INDEX_HASH + 32].copy_from_slice(index_hash);
    f[FT_VERSION..FT_VERSION + 4].copy_from_slice(&VERSION.to_le_bytes());
    f[FT_RESERVED..FT_RESERVED + 4].copy_from_slice(&0u32.to_le_bytes());
    f[FT_MAGIC..FT_MAGIC + 8].copy_from_slice(&FOOTER_MAGIC);
    f
}

pub(super) fn decode_footer(f: &[u8]) -> Footer {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_id_hex() {
        let id = PackId(*blake3::hash(b"x").as_bytes());
        assert_eq!(PackId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(id.to_string(), id.to_hex());
        assert_eq!(id.short().len(), 12);
        assert!(format!("{id:?}").contains(&id.short()));
    }
}
