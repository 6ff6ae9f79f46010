//! The chunk index: where each chunk is (`ChunkLoc`, 33 bytes a row), read point by point on
//! the dump's and the restore's hot paths and front to back by gc, check and purge. Its rows
//! live in sorted runs (`chunk_runs`).

use std::cell::RefMut;

use redb::{ReadOnlyTable, ReadableTable, Table, WriteTransaction};

use super::chunk_runs::{FilterCache, Lsm, Merged, Source, TOMBSTONE, View, rows_of, start_key};
use super::tables::{CHUNK_BLOCKS, CHUNK_FILTERS, META, open_optional};
use super::{Reader, Writer};
use crate::crypto::Keys;
use crate::error::Damaged;
use crate::pack::{BlobEntry, BlobKind};
use crate::{ChunkId, Error, Result};

/// Where a chunk lives: a blob of its own, or a slice of a frame blob (`crate::frame`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkLoc {
    pub pack_no: u64,
    /// Offset of the stored bytes of the blob holding the chunk (its own, or its frame's).
    pub offset: u64,
    /// Stored length of that blob.
    pub stored_len: u32,
    /// The chunk's raw length.
    pub raw_len: u32,
    /// Whether that blob is zstd-compressed.
    pub compressed: bool,
    /// Kind of the chunk (`Data`, `Manifest`, `DumpRecord`).
    pub kind: BlobKind,
    /// For a chunk inside a frame: the frame's raw length and the chunk's offset in it.
    pub frame: Option<FrameSlot>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameSlot {
    pub raw_len: u32,
    pub inner: u32,
}

impl ChunkLoc {
    /// The location of blob `e` of pack `pack_no`, as a chunk of its own.
    pub fn of_blob(pack_no: u64, e: &BlobEntry) -> ChunkLoc {
        ChunkLoc {
            pack_no,
            offset: e.offset,
            stored_len: e.stored_len,
            raw_len: e.raw_len,
            compressed: e.compressed,
            kind: e.kind,
            frame: None,
        }
    }

    /// The location of the data chunk at `inner` (`raw_len` bytes) inside the frame blob this
    /// locates.
    pub fn in_frame(&self, inner: u32, raw_len: u32) -> ChunkLoc {
        ChunkLoc {
            raw_len,
            kind: BlobKind::Data,
            frame: Some(FrameSlot {
                raw_len: self.raw_len,
                inner,
            }),
            ..*self
        }
    }

    /// pack no u64 | offset u64 | stored len u32 | raw len u32 | flags u8 (bit 0 compressed,
    /// bit 1 in a frame, bits 4-7 kind) | frame raw len u32 | offset in frame u32 (both 0 when
    /// not in a frame). Little-endian.
    pub fn encode(&self) -> [u8; 33] {
        let mut b = [0u8; 33];
        b[0..8].copy_from_slice(&self.pack_no.to_le_bytes());
        b[8..16].copy_from_slice(&self.offset.to_le_bytes());
        b[16..20].copy_from_slice(&self.stored_len.to_le_bytes());
        b[20..24].copy_from_slice(&self.raw_len.to_le_bytes());
        b[24] = u8::from(self.compressed)
            | (u8::from(self.frame.is_some()) << 1)
            | ((self.kind as u8) << 4);
        if let Some(f) = self.frame {
            b[25..29].copy_from_slice(&f.raw_len.to_le_bytes());
            b[29..33].copy_from_slice(&f.inner.to_le_bytes());
        }
        b
    }

    pub fn decode(b: &[u8; 33]) -> Result<ChunkLoc> {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let kind = match BlobKind::from_u8(b[24] >> 4) {
            Some(k) if k != BlobKind::Frame => k,
            _ => {
                return Err(Error::damaged(
                    Damaged::Catalog,
                    format!(
                        "catalog: chunk index entry has unknown blob kind {}",
                        b[24] >> 4
                    ),
                ));
            }
        };
        Ok(ChunkLoc {
            pack_no: u64_at(0),
            offset: u64_at(8),
            stored_len: u32_at(16),
            raw_len: u32_at(20),
            compressed: b[24] & 1 == 1,
            kind,
            frame: (b[24] & 2 == 2).then(|| FrameSlot {
                raw_len: u32_at(25),
                inner: u32_at(29),
            }),
        })
    }

    /// The pack index entry of the blob holding the chunk. For a framed chunk the id is the
    /// chunk's, not the frame's: use it to read the stored bytes, then `decode`.
    pub fn blob_entry(&self, id: ChunkId) -> BlobEntry {
        BlobEntry {
            id,
            kind: if self.frame.is_some() {
                BlobKind::Frame
            } else {
                self.kind
            },
            compressed: self.compressed,
            offset: self.offset,
            stored_len: self.stored_len,
            raw_len: self.frame.map_or(self.raw_len, |f| f.raw_len),
        }
    }

    /// Decompress a frame's opened bytes (framed chunks only; `PackReader::read_opened_into`), checking its length. The
    /// frame's own hash is not known here; `frame::slice` verifies each chunk instead.
    pub fn decode_frame(&self, stored: &[u8]) -> Result<Vec<u8>> {
        let mut raw = Vec::new();
        self.decode_frame_into(stored, &mut raw)?;
        Ok(raw)
    }

    /// [`ChunkLoc::decode_frame`] into `raw` (its old content is replaced), so a reader of
    /// many frames reuses one buffer and one zstd context.
    pub fn decode_frame_into(&self, stored: &[u8], raw: &mut Vec<u8>) -> Result<()> {
        let f = self.frame.expect("framed chunk");
        if self.compressed {
            crate::pack::zstd_decompress_into(stored, f.raw_len as usize, raw).map_err(|e| {
                Error::damaged(
                    Damaged::Frame,
                    format!("frame does not decompress ({e}); the pack holding it is damaged"),
                )
            })?;
        } else {
            raw.clear();
            raw.extend_from_slice(stored);
        }
        if raw.len() != f.raw_len as usize {
            return Err(Error::damaged(
                Damaged::Frame,
                "frame has the wrong length; the pack holding it is damaged",
            ));
        }
        Ok(())
    }

    /// Turn the opened bytes of the chunk's blob (`PackReader::read_opened_into`) into the
    /// chunk's raw bytes, verified under the spool's `keys`.
    pub fn decode_chunk(&self, keys: &Keys, id: ChunkId, opened: &[u8]) -> Result<Vec<u8>> {
        match self.frame {
            None => crate::pack::decode_opened(keys, &self.blob_entry(id), opened),
            Some(f) => {
                let raw = self.decode_frame(opened)?;
                crate::frame::slice(keys, &raw, &id, f.inner, self.raw_len)
            }
        }
    }
}

/// The chunk index opened once, for many lookups or a scan ([`Reader::chunk_index`]).
pub struct ChunkIndex {
    view: View,
    blocks: ReadOnlyTable<(u64, [u8; 32]), &'static [u8]>,
}

/// The chunk index opened once in the write transaction ([`Writer::chunk_index`]).
pub struct ChunkIndexMut<'w> {
    txn: &'w WriteTransaction,
    blocks: Table<'w, (u64, [u8; 32]), &'static [u8]>,
    lsm: RefMut<'w, Lsm>,
    cache: &'w FilterCache,
}

/// Rows of the chunk index in chunk id order: (chunk, location).
pub struct ChunkRows<'a>(Merged<'a>);

impl Iterator for ChunkRows<'_> {
    type Item = Result<(ChunkId, ChunkLoc)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            return match self.0.next()? {
                Err(e) => Some(Err(e)),
                Ok((_, v)) if v == TOMBSTONE => continue,
                Ok((id, v)) => Some(ChunkLoc::decode(&v).map(|loc| (ChunkId(id), loc))),
            };
        }
    }
}

/// A row's value as a location; None for a removed chunk.
fn location(v: Option<[u8; 33]>) -> Result<Option<ChunkLoc>> {
    match v {
        Some(v) if v != TOMBSTONE => Ok(Some(ChunkLoc::decode(&v)?)),
        _ => Ok(None),
    }
}

impl ChunkIndex {
    /// Where chunk `id` is; None when no pack of the spool holds it.
    pub fn get(&self, id: &ChunkId) -> Result<Option<ChunkLoc>> {
        location(self.view.get(&self.blocks, &id.0)?)
    }

    pub fn contains(&self, id: &ChunkId) -> Result<bool> {
        Ok(self.get(id)?.is_some())
    }

    /// Every row, in chunk id order.
    pub fn rows(&self) -> Result<ChunkRows<'static>> {
        let mut sources: Vec<Source<'static>> = Vec::new();
        for (run, lo, hi) in self.view.plan() {
            let start = start_key(&self.blocks, run, lo)?;
            // The read-only table's own `range` outlives it.
            let range = self.blocks.range(start..=(run, [0xffu8; 32]))?;
            sources.push(rows_of(range, run, lo, hi, true));
        }
        Ok(ChunkRows(Merged::new(sources)))
    }

    /// How many chunks are indexed (reads the whole index).
    pub fn row_count(&self) -> Result<u64> {
        let mut n = 0;
        for row in self.rows()? {
            row?;
            n += 1;
        }
        Ok(n)
    }
}

impl ChunkIndexMut<'_> {
    /// Where chunk `id` is, as this transaction sees it.
    pub fn get(&self, id: &ChunkId) -> Result<Option<ChunkLoc>> {
        location(self.lsm.get(&self.blocks, &id.0)?)
    }

    pub fn contains(&self, id: &ChunkId) -> Result<bool> {
        Ok(self.get(id)?.is_some())
    }

    /// Every row, in chunk id order.
    pub fn rows(&self) -> Result<ChunkRows<'_>> {
        let mem = self.lsm.mem.iter().map(|(k, v)| Ok((*k, *v)));
        let mut sources: Vec<Source<'_>> = vec![Box::new(mem)];
        for (run, lo, hi) in self.lsm.view.plan() {
            let start = start_key(&self.blocks, run, lo)?;
            let range = self.blocks.range(start..=(run, [0xffu8; 32]))?;
            sources.push(rows_of(range, run, lo, hi, true));
        }
        Ok(ChunkRows(Merged::new(sources)))
    }

    /// Index chunk `id` at `loc` (replacing where it was).
    pub fn insert(&mut self, id: &ChunkId, loc: &ChunkLoc) -> Result<()> {
        self.lsm
            .put(self.txn, &mut self.blocks, self.cache, (id.0, loc.encode()))
    }

    /// Index chunk `id` at `loc` unless it is indexed already (it then keeps its place).
    /// Returns whether it was new.
    pub fn insert_new(&mut self, id: &ChunkId, loc: &ChunkLoc) -> Result<bool> {
        if self.contains(id)? {
            return Ok(false);
        }
        self.insert(id, loc)?;
        Ok(true)
    }

    pub fn remove(&mut self, id: &ChunkId) -> Result<()> {
        if self.contains(id)? {
            self.lsm
                .put(self.txn, &mut self.blocks, self.cache, (id.0, TOMBSTONE))?;
        }
        Ok(())
    }
}

impl Reader<'_> {
    pub fn chunk_index(&self) -> Result<ChunkIndex> {
        let meta = self.txn.open_table(META)?;
        let filters = open_optional(&self.txn, CHUNK_FILTERS)?;
        Ok(ChunkIndex {
            view: View::load(&meta, filters.as_ref(), &self.catalog.filters)?,
            blocks: self.txn.open_table(CHUNK_BLOCKS)?,
        })
    }

    /// Where chunk `id` is; None when no pack of the spool holds it. Opens the index for this
    /// one lookup: loops take [`Reader::chunk_index`].
    pub fn chunk_location(&self, id: &ChunkId) -> Result<Option<ChunkLoc>> {
        self.chunk_index()?.get(id)
    }

    /// Every row of the chunk index, in chunk id order.
    pub fn chunk_rows(&self) -> Result<ChunkRows<'static>> {
        self.chunk_index()?.rows()
    }
}

impl Writer {
    /// The chunk index in this transaction. One handle at a time: the table is open until it
    /// is dropped.
    pub fn chunk_index(&self) -> Result<ChunkIndexMut<'_>> {
        let mut slot = self.lsm.borrow_mut();
        if slot.is_none() {
            let meta = self.txn.open_table(META)?;
            let filters = self.txn.open_table(CHUNK_FILTERS)?;
            *slot = Some(Lsm {
                view: View::load(&meta, Some(&filters), &self.filters)?,
                mem: Default::default(),
                tuning: self.tuning,
            });
        }
        Ok(ChunkIndexMut {
            txn: &self.txn,
            blocks: self.txn.open_table(CHUNK_BLOCKS)?,
            lsm: RefMut::map(slot, |s| s.as_mut().expect("loaded above")),
            cache: &self.filters,
        })
    }
}
