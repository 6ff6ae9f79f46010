//! The catalog: a redb database of volumes' dumps, packs, the chunk index and the chunks each
//! dump owns. It is an index over the packs, not the only copy of the truth: every dump record
//! and manifest is also stored in packs (see docs/FORMAT.md, "Catalog").
//!
//! One writer at a time (the spool lock guarantees it); readers open the file read-only in
//! redb's `SingleWriter` mode, so `list`, `ls` and `restore` work while a dump runs and see only
//! committed dumps.

use std::path::{Path, PathBuf};

use redb::{
    ConcurrencyMode, Database, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, TableDefinition, WriteTransaction,
};

use crate::pack::{BlobEntry, BlobKind, PackId};
use crate::record::CloneRecord;
use crate::{ChunkId, Error, Result};

/// Version of the catalog's table layout; bumped when a table or record changes shape.
pub const CATALOG_VERSION: u32 = 1;

/// Small settings: `format` (u32), `next_dump_id` (u64), `next_pack_no` (u64).
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Dump id -> postcard `DumpRecord`.
pub const DUMPS: TableDefinition<u64, &[u8]> = TableDefinition::new("dumps");
/// (volume, time ns, dump id) -> (): the dumps of a volume in time order.
pub const VOLUME_DUMPS: TableDefinition<(&str, i64, u64), ()> =
    TableDefinition::new("volume_dumps");
/// Pack number -> postcard `PackRecord`.
pub const PACKS: TableDefinition<u64, &[u8]> = TableDefinition::new("packs");
/// Pack id (blake3 of the file) -> pack number.
pub const PACK_IDS: TableDefinition<[u8; 32], u64> = TableDefinition::new("pack_ids");
/// Chunk id -> location, 33 bytes (see `ChunkLoc::encode`).
pub const CHUNKS: TableDefinition<[u8; 32], [u8; 33]> = TableDefinition::new("chunks");
/// (dump id, chunk id) -> stored len: the chunks a dump owns (referenced by it and by no
/// earlier dump of its chain). What an export of that dump writes to tape.
/// volume → its latest clone (a `CloneRecord`). One per volume: a new clone replaces it.
pub const CLONES: TableDefinition<&str, &[u8]> = TableDefinition::new("clones");
pub const OWNED: TableDefinition<(u64, [u8; 32]), u32> = TableDefinition::new("owned");

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
                return Err(Error::corrupt(format!(
                    "catalog: chunk index entry has unknown blob kind {}",
                    b[24] >> 4
                )));
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

    /// Decompress a frame's stored bytes (framed chunks only), checking its length. The
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
                Error::corrupt(format!(
                    "frame does not decompress ({e}); the pack holding it is damaged"
                ))
            })?;
        } else {
            raw.clear();
            raw.extend_from_slice(stored);
        }
        if raw.len() != f.raw_len as usize {
            return Err(Error::corrupt(
                "frame has the wrong length; the pack holding it is damaged",
            ));
        }
        Ok(())
    }

    /// Turn the stored bytes of the chunk's blob into the chunk's verified raw bytes.
    pub fn decode_chunk(&self, id: ChunkId, stored: &[u8]) -> Result<Vec<u8>> {
        match self.frame {
            None => crate::pack::decode_blob(&self.blob_entry(id), stored),
            Some(f) => crate::frame::slice(&self.decode_frame(stored)?, &id, f.inner, self.raw_len),
        }
    }
}

pub use crate::record::{DumpRecord, PackRecord};

/// Read access, shared by the writer's and the readers' handles.
pub enum Handle {
    Write(Database),
    Read(ReadOnlyDatabase),
}

pub struct Catalog {
    handle: Handle,
    path: PathBuf,
}

/// A writing command (dump, backup, nightly, ingest) compacts the catalog when it grew the
/// file by this much. redb reuses freed pages in later transactions, so the space a smaller
/// session leaves free is not lost; and a compaction costs as much as the commit before it
/// (25-30 ms after a first full dump of 300 MiB, whose catalog it takes from 9 to 6 MB).
pub const COMPACT_AFTER_GROWTH: u64 = 64 << 20;

fn builder() -> redb::Builder {
    let mut b = redb::Builder::new();
    b.set_concurrency_mode(ConcurrencyMode::SingleWriter);
    // The chunk index is looked up at random; a bounded cache keeps memory flat on big spools.
    // 16 MiB: a dump of 200,000 files is as fast with it as with 128 MiB (misses are reads from
    // the page cache, where a catalog just written stays) and 30 MB smaller.
    b.set_cache_size(16 << 20);
    b
}

fn open_error(path: &Path, e: redb::DatabaseError) -> Error {
    let damaged = |what: String| {
        Error::Corrupt(format!(
            "catalog {} is damaged ({what}); rebuild it from the packs with `reel rebuild-catalog`",
            path.display()
        ))
    };
    match e {
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(msg)) => damaged(msg),
        // redb reports a file that is not a database (garbage, an empty file) and a short
        // read (a truncated file) as I/O errors of these kinds: damage, not an I/O problem.
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            damaged(io.to_string())
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => Error::io(path, io),
        redb::DatabaseError::UpgradeRequired(v) => Error::Catalog(format!(
            "{}: written in redb file format {v}, which this reel does not read; open it with the reel that wrote it",
            path.display()
        )),
        redb::DatabaseError::Storage(other) => damaged(other.to_string()),
        other => Error::Catalog(format!("{}: {other}", path.display())),
    }
}

impl Catalog {
    /// Create a new, empty catalog.
    pub fn create(path: &Path) -> Result<Catalog> {
        let db = builder().create(path).map_err(|e| open_error(path, e))?;
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            meta.insert(META_FORMAT, CATALOG_VERSION.to_le_bytes().as_slice())?;
            meta.insert(META_NEXT_DUMP_ID, 1u64.to_le_bytes().as_slice())?;
            meta.insert(META_NEXT_PACK_NO, 1u64.to_le_bytes().as_slice())?;
            txn.open_table(DUMPS)?;
            txn.open_table(VOLUME_DUMPS)?;
            txn.open_table(PACKS)?;
            txn.open_table(PACK_IDS)?;
            txn.open_table(CHUNKS)?;
            txn.open_table(OWNED)?;
            txn.open_table(CLONES)?;
        }
        txn.commit()?;
        Ok(Catalog {
            handle: Handle::Write(db),
            path: path.to_path_buf(),
        })
    }

    /// Open for writing. The caller holds the spool's write lock.
    pub fn open_write(path: &Path) -> Result<Catalog> {
        if !path.exists() {
            return Err(Error::Spool(format!(
                "catalog {} is missing; rebuild it from the packs with `reel rebuild-catalog`",
                path.display()
            )));
        }
        let db = guard_open(path, || builder().open(path))?;
        let cat = Catalog {
            handle: Handle::Write(db),
            path: path.to_path_buf(),
        };
        cat.check_format()?;
        Ok(cat)
    }

    /// Open for reading. A catalog left needing repair by a killed writer is repaired first
    /// (which needs the write side, so `repair` is called to take the spool lock).
    pub fn open_read(path: &Path, repair: impl FnOnce() -> Result<()>) -> Result<Catalog> {
        if !path.exists() {
            return Err(Error::Spool(format!(
                "catalog {} is missing; rebuild it from the packs with `reel rebuild-catalog`",
                path.display()
            )));
        }
        let db = match guard_open(path, || builder().open_read_only(path)) {
            Ok(db) => db,
            Err(Error::Catalog(m)) if m.contains("repair") => {
                repair()?;
                guard_open(path, || builder().open_read_only(path))?
            }
            Err(e) => return Err(e),
        };
        let cat = Catalog {
            handle: Handle::Read(db),
            path: path.to_path_buf(),
        };
        cat.check_format()?;
        Ok(cat)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The catalog file's length in bytes (0 if it cannot be read).
    pub fn file_len(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// `compact` if the file grew by at least `growth` bytes from `before` (its length when
    /// the command began); returns whether it compacted. Writing commands use
    /// [`COMPACT_AFTER_GROWTH`].
    pub fn compact_if_grown(&mut self, before: u64, growth: u64) -> Result<bool> {
        if self.file_len() < before.saturating_add(growth) {
            return Ok(false);
        }
        self.compact()
    }

    /// Give back the space of pages freed by earlier transactions (redb keeps them for reuse;
    /// after a large dump the file can be twice its live size). Writer only.
    pub fn compact(&mut self) -> Result<bool> {
        match &mut self.handle {
            Handle::Write(db) => db.compact().map_err(|e| {
                Error::Catalog(format!("{}: compaction failed: {e}", self.path.display()))
            }),
            Handle::Read(_) => Ok(false),
        }
    }

    /// Check the format entry, and read the first and last row of every table, so that a
    /// damaged file is found here, with a clear message, rather than in the middle of a
    /// command. redb may panic on a damaged page: that is caught and reported the same way.
    fn check_format(&self) -> Result<()> {
        match guarded(|| self.check_format_inner()) {
            Ok(r) => r,
            Err(msg) => Err(self.damaged(msg)),
        }
    }

    fn check_format_inner(&self) -> Result<()> {
        let txn = self.read().map_err(|e| self.damaged(e))?;
        let meta = txn.open_table(META).map_err(|e| self.damaged(e))?;
        let v = meta
            .get(META_FORMAT)
            .map_err(|e| self.damaged(e))?
            .map(|g| g.value().to_vec())
            .ok_or_else(|| self.damaged("no format entry"))?;
        let v = u32::from_le_bytes(
            v.as_slice()
                .try_into()
                .map_err(|_| self.damaged("bad format entry"))?,
        );
        if v != CATALOG_VERSION {
            return Err(Error::Spool(format!(
                "catalog {} has format {v}; this reel reads format {CATALOG_VERSION}",
                self.path.display()
            )));
        }
        fn touch<K: redb::Key + 'static, V: redb::Value + 'static>(
            txn: &ReadTransaction,
            def: TableDefinition<K, V>,
        ) -> std::result::Result<(), String> {
            let t = match txn.open_table(def) {
                Ok(t) => t,
                // Tables added without a format change may not exist yet.
                Err(e) if table_missing(&e) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            };
            t.len().map_err(|e| e.to_string())?;
            t.first().map_err(|e| e.to_string())?;
            t.last().map_err(|e| e.to_string())?;
            Ok(())
        }
        let r = touch(&txn, META)
            .and_then(|()| touch(&txn, DUMPS))
            .and_then(|()| touch(&txn, VOLUME_DUMPS))
            .and_then(|()| touch(&txn, PACKS))
            .and_then(|()| touch(&txn, PACK_IDS))
            .and_then(|()| touch(&txn, CHUNKS))
            .and_then(|()| touch(&txn, OWNED))
            .and_then(|()| touch(&txn, CLONES))
            .and_then(|()| touch(&txn, TAPES))
            .and_then(|()| touch(&txn, PLAIN_EXPORTS))
            .and_then(|()| touch(&txn, DOOMED));
        r.map_err(|e| self.damaged(e))?;
        match txn.open_multimap_table(TAPE_CHUNKS) {
            Ok(t) => {
                t.len().map_err(|e| self.damaged(e))?;
            }
            Err(e) if table_missing(&e) => {}
            Err(e) => return Err(self.damaged(e)),
        }
        Ok(())
    }

    fn damaged(&self, what: impl std::fmt::Display) -> Error {
        Error::Corrupt(format!(
            "catalog {} is damaged ({what}); rebuild it from the packs with `reel rebuild-catalog`",
            self.path.display()
        ))
    }

    pub fn read(&self) -> Result<ReadTransaction> {
        Ok(match &self.handle {
            Handle::Write(db) => db.begin_read()?,
            Handle::Read(db) => db.begin_read()?,
        })
    }

    pub fn write(&self) -> Result<WriteTransaction> {
        match &self.handle {
            Handle::Write(db) => Ok(db.begin_write()?),
            Handle::Read(_) => Err(Error::Spool("catalog opened read-only".into())),
        }
    }

    // ----- dumps -----

    pub fn dump(&self, id: u64) -> Result<Option<DumpRecord>> {
        let txn = self.read()?;
        let t = txn.open_table(DUMPS)?;
        match t.get(id)? {
            Some(v) => Ok(Some(DumpRecord::decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// Every dump of `volume` (or of all volumes), in time order per volume.
    pub fn dumps(&self, volume: Option<&str>) -> Result<Vec<DumpRecord>> {
        let txn = self.read()?;
        let idx = txn.open_table(VOLUME_DUMPS)?;
        let dumps = txn.open_table(DUMPS)?;
        let mut out = Vec::new();
        let iter = match volume {
            Some(v) => idx.range((v, i64::MIN, 0u64)..=(v, i64::MAX, u64::MAX))?,
            None => idx.range::<(&str, i64, u64)>(..)?,
        };
        for item in iter {
            let (k, _) = item?;
            let (_, _, id) = k.value();
            let rec = dumps
                .get(id)?
                .ok_or_else(|| self.damaged(format!("dump {id} is indexed but has no record")))?;
            out.push(DumpRecord::decode(rec.value())?);
        }
        Ok(out)
    }

    pub fn latest_dump(&self, volume: &str) -> Result<Option<DumpRecord>> {
        Ok(self.dumps(Some(volume))?.pop())
    }

    /// The dump current at `at`: the latest dump of the volume at or before that time.
    pub fn dump_at(&self, volume: &str, at: i64) -> Result<Option<DumpRecord>> {
        Ok(self
            .dumps(Some(volume))?
            .into_iter()
            .rfind(|d| d.time_ns <= at))
    }

    /// The latest clone of `volume`, if any. Catalogs made before clones existed have no
    /// table yet: no clone.
    pub fn clone_of(&self, volume: &str) -> Result<Option<CloneRecord>> {
        let txn = self.read()?;
        let t = match txn.open_table(CLONES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        match t.get(volume)? {
            Some(v) => Ok(Some(CloneRecord::decode(v.value())?)),
            None => Ok(None),
        }
    }

    pub fn meta_u64(txn: &ReadTransaction, key: &str) -> Result<u64> {
        let meta = txn.open_table(META)?;
        parse_meta_u64(key, meta.get(key)?.as_ref().map(|v| v.value()))
    }

    pub fn next_dump_id(&self) -> Result<u64> {
        Self::meta_u64(&self.read()?, META_NEXT_DUMP_ID)
    }

    // ----- packs and chunks -----

    pub fn chunk(&self, txn: &ReadTransaction, id: &ChunkId) -> Result<Option<ChunkLoc>> {
        let t = txn.open_table(CHUNKS)?;
        match t.get(id.0)? {
            Some(v) => Ok(Some(ChunkLoc::decode(&v.value())?)),
            None => Ok(None),
        }
    }

    pub fn pack(&self, txn: &ReadTransaction, no: u64) -> Result<Option<PackRecord>> {
        let t = txn.open_table(PACKS)?;
        match t.get(no)? {
            Some(v) => Ok(Some(crate::record::decode_or(v.value(), |e| {
                self.damaged(format!("pack record {no} does not decode: {e}"))
            })?)),
            None => Ok(None),
        }
    }

    /// All packs: (number, record).
    pub fn packs(&self) -> Result<Vec<(u64, PackRecord)>> {
        let txn = self.read()?;
        let t = txn.open_table(PACKS)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            let rec: PackRecord = crate::record::decode_or(v.value(), |e| {
                self.damaged(format!("pack record {} does not decode: {e}", k.value()))
            })?;
            out.push((k.value(), rec));
        }
        Ok(out)
    }

    pub fn chunk_count(&self) -> Result<u64> {
        let txn = self.read()?;
        Ok(txn.open_table(CHUNKS)?.len()?)
    }

    /// Sum and count of the chunks a dump owns.
    pub fn owned_summary(&self, dump: u64) -> Result<(u64, u64)> {
        let txn = self.read()?;
        let t = txn.open_table(OWNED)?;
        let (mut n, mut bytes) = (0u64, 0u64);
        for item in t.range((dump, [0u8; 32])..=(dump, [0xffu8; 32]))? {
            let (_, v) = item?;
            n += 1;
            bytes += u64::from(v.value());
        }
        Ok((n, bytes))
    }
}

/// Record a finished pack and the locations of its blobs in `txn`.
pub fn insert_pack(
    txn: &WriteTransaction,
    no: u64,
    id: &PackId,
    size: u64,
    entries: &[BlobEntry],
    now: i64,
) -> Result<()> {
    let rec = PackRecord {
        id: id.0,
        size,
        blobs: entries.len() as u64,
        created_ns: now,
    };
    txn.open_table(PACKS)?.insert(no, rec.encode().as_slice())?;
    txn.open_table(PACK_IDS)?.insert(id.0, no)?;
    Ok(())
}

/// Keys of the `meta` table (FORMAT.md, "Tables").
pub const META_FORMAT: &str = "format";
pub const META_NEXT_DUMP_ID: &str = "next_dump_id";
pub const META_NEXT_PACK_NO: &str = "next_pack_no";
pub const META_PURGES: &str = "purges";

/// Take the next pack number (and advance it): every pack the catalog names has its own.
pub fn take_pack_number(txn: &WriteTransaction) -> Result<u64> {
    let no = get_meta_u64(txn, META_NEXT_PACK_NO)?;
    set_meta_u64(txn, META_NEXT_PACK_NO, no + 1)?;
    Ok(no)
}

/// The id the next dump will get.
pub fn next_dump_id(txn: &WriteTransaction) -> Result<u64> {
    get_meta_u64(txn, META_NEXT_DUMP_ID)
}

/// How many times packs were purged from the spool after export (0 if never): while it is 0,
/// every indexed chunk is on the spool.
pub fn purges(txn: &WriteTransaction) -> u64 {
    get_meta_u64(txn, META_PURGES).unwrap_or(0)
}

/// Count one more purge.
pub fn count_purge(txn: &WriteTransaction) -> Result<()> {
    set_meta_u64(txn, META_PURGES, purges(txn) + 1)
}

pub fn set_meta_u64(txn: &WriteTransaction, key: &str, v: u64) -> Result<()> {
    txn.open_table(META)?
        .insert(key, v.to_le_bytes().as_slice())?;
    Ok(())
}

pub fn get_meta_u64(txn: &WriteTransaction, key: &str) -> Result<u64> {
    let meta = txn.open_table(META)?;
    parse_meta_u64(key, meta.get(key)?.as_ref().map(|v| v.value()))
}

fn parse_meta_u64(key: &str, v: Option<&[u8]>) -> Result<u64> {
    let v = v.ok_or_else(|| Error::corrupt(format!("catalog: meta entry {key} missing")))?;
    let b: [u8; 8] = v
        .try_into()
        .map_err(|_| Error::corrupt(format!("catalog: meta entry {key} is not a u64")))?;
    Ok(u64::from_le_bytes(b))
}

/// Insert a committed dump's record and index entry.
pub fn insert_dump(txn: &WriteTransaction, rec: &DumpRecord) -> Result<()> {
    txn.open_table(DUMPS)?
        .insert(rec.id, rec.encode().as_slice())?;
    txn.open_table(VOLUME_DUMPS)?
        .insert((rec.volume.as_str(), rec.time_ns, rec.id), ())?;
    Ok(())
}

/// Record `rec` as its volume's latest clone (replacing the previous one).
pub fn put_clone(txn: &WriteTransaction, rec: &CloneRecord) -> Result<()> {
    txn.open_table(CLONES)?
        .insert(rec.volume.as_str(), rec.encode().as_slice())?;
    Ok(())
}

/// Forget the clone of `volume`.
pub fn remove_clone(txn: &WriteTransaction, volume: &str) -> Result<()> {
    txn.open_table(CLONES)?.remove(volume)?;
    Ok(())
}

/// Drop owned-chunk rows left by dumps that never committed (ids >= next_dump_id): a killed
/// dump may have committed some of its packs, with their rows, but never its record.
pub fn clean_uncommitted(txn: &WriteTransaction) -> Result<u64> {
    let next = next_dump_id(txn)?;
    let mut t = txn.open_table(OWNED)?;
    let mut n = 0u64;
    t.retain_in((next, [0u8; 32])..=(u64::MAX, [0xffu8; 32]), |_, _| {
        n += 1;
        false
    })?;
    Ok(n)
}

/// redb may panic on a damaged file; turn that into a clear error instead.
fn guard_open<T>(path: &Path, f: impl FnOnce() -> Result<T, redb::DatabaseError>) -> Result<T> {
    remember_opened(path);
    match guarded(f) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(redb::DatabaseError::RepairAborted)) => Err(Error::Catalog(format!(
            "{}: needs repair after an interrupted write",
            path.display()
        ))),
        Ok(Err(e)) => Err(open_error(path, e)),
        Err(msg) => Err(Error::Corrupt(format!(
            "catalog {} is damaged (it could not be opened: {msg}); rebuild it from the packs with `reel rebuild-catalog`",
            path.display()
        ))),
    }
}

thread_local! {
    /// Set while `guarded` runs: a panic there is caught and reported by the caller.
    static GUARDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The catalog file most recently opened, for the damage hook's message.
static OPENED: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// Run `f`, turning a panic into `Err(message)` without the panic being printed.
fn guarded<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    GUARDED.with(|g| g.set(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(false));
    r.map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "redb panicked".to_string())
    })
}

/// Name the catalog a damage report should name (the last one opened).
fn remember_opened(path: &Path) {
    if let Ok(mut p) = OPENED.lock() {
        *p = Some(path.to_path_buf());
    }
}

/// For programs (the `reel` binary), not for library users: a damaged page can also be met in
/// the middle of a command, far from any open, and redb then panics. This installs, once, a
/// panic hook that for a panic inside redb prints what happened and what to do (naming the
/// catalog file) and exits with status 1, like any other error; redb is crash-safe, so
/// stopping there loses no committed data. Panics elsewhere go to the previous hook; panics
/// inside `guarded` are left to it.
pub fn install_damage_report_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARDED.with(|g| g.get()) {
                return;
            }
            let in_redb = info
                .location()
                .is_some_and(|l| l.file().contains("redb"));
            if !in_redb {
                return prev(info);
            }
            let file = OPENED
                .lock()
                .ok()
                .and_then(|p| p.clone())
                .map_or_else(|| "catalog.redb".to_string(), |p| p.display().to_string());
            let what = info
                .payload()
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            eprintln!(
                "reel: catalog {file} is damaged (the database failed inside: {what}); rebuild it from the packs with `reel rebuild-catalog`"
            );
            std::process::exit(1);
        }));
    });
}

// ----- the media catalog (tapes); see `crate::tape::media` -----

/// Tape label -> postcard `TapeRecord` (`crate::tape::media`): the tapes exports wrote or
/// imports read. Added without a format change: a catalog made before it has no tapes, and
/// reel creates the table on first write.
pub const TAPES: TableDefinition<&str, &[u8]> = TableDefinition::new("tapes");
/// Chunk id -> labels of the tapes holding it: what `purge --exported` and a restore from
/// tapes look up. Added without a format change, like `tapes`.
pub const TAPE_CHUNKS: redb::MultimapTableDefinition<[u8; 32], &str> =
    redb::MultimapTableDefinition::new("tape_chunks");

// ----- plain-tree exports; see `crate::tape::plain` -----

/// (volume, seq) -> postcard `PlainRecord` (`crate::tape::plain`): each `export-plain` image,
/// with its level, `c_date` and path → inode map (the base of the next incrementals). Added
/// without a format change, like `tapes`: a missing table means no plain exports yet.
pub const PLAIN_EXPORTS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("plain_exports");

// ----- retention -----

/// Pack id -> (): packs that gc (or repair) took out of the catalog but whose files are not
/// deleted yet, because a reader (restore, cat, mount) may still be reading them. The files go
/// when no reader holds the readers lock (`Spool::try_lock_readers_out`). Added without a
/// format change: a missing table means nothing is waiting.
pub const DOOMED: TableDefinition<[u8; 32], ()> = TableDefinition::new("doomed");

/// Is `e` redb saying the table was never created (a catalog older than the table)?
pub fn table_missing(e: &redb::TableError) -> bool {
    matches!(e, redb::TableError::TableDoesNotExist(_))
}

/// Labels of the tapes holding chunk `id` (empty when on none, or no media catalog yet).
pub fn tapes_of_chunk(txn: &ReadTransaction, id: &ChunkId) -> Result<Vec<String>> {
    let t = match txn.open_multimap_table(TAPE_CHUNKS) {
        Ok(t) => t,
        Err(e) if table_missing(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for v in t.get(id.0)? {
        out.push(v?.value().to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacts_only_after_the_growth_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let mut cat = Catalog::create(&dir.path().join("catalog.redb")).unwrap();
        let before = cat.file_len();
        assert!(before > 0);
        // Grow the file, then free most of it: a compaction has something to give back.
        let key = |i: u32| *blake3::hash(&i.to_le_bytes()).as_bytes();
        let txn = cat.write().unwrap();
        {
            let mut t = txn.open_table(CHUNKS).unwrap();
            for i in 0..40_000 {
                t.insert(key(i), [7u8; 33]).unwrap();
            }
        }
        txn.commit().unwrap();
        let txn = cat.write().unwrap();
        {
            let mut t = txn.open_table(CHUNKS).unwrap();
            for i in 0..39_000 {
                t.remove(key(i)).unwrap();
            }
        }
        txn.commit().unwrap();
        let grown = cat.file_len();
        assert!(grown > before + (1 << 20), "{before} -> {grown}");

        assert!(!cat.compact_if_grown(before, grown - before + 1).unwrap());
        assert_eq!(
            cat.file_len(),
            grown,
            "compacted below the growth asked for"
        );
        assert!(cat.compact_if_grown(before, grown - before).unwrap());
        let compacted = cat.file_len();
        assert!(compacted < grown / 2, "{grown} -> {compacted}");
        let txn = cat.read().unwrap();
        assert_eq!(txn.open_table(CHUNKS).unwrap().len().unwrap(), 1_000);
    }
}
