//! The chunk store: deduplicating writes into packs, and reads back out of them.
//!
//! Writing follows the crash-safe order of DESIGN.md: a pack is written under tmp/, fsynced and
//! renamed into packs/ before the catalog transaction that indexes its chunks commits. The
//! index entries of the pack being written live in the open write transaction, so lookups see
//! them at once, and a crash simply forgets them along with the unfinished pack.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use crate::catalog::{self, CHUNKS, Catalog, ChunkLoc, FrameSlot, OWNED};
use crate::frame;
use crate::pack::{self, BlobKind, EncodedBlob, PACK_TARGET_SIZE, PackReader, PackWriter};
use crate::spool::Spool;
use crate::{ChunkId, Error, Result};

/// What a writing session added to the spool.
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreStats {
    pub new_chunks: u64,
    pub new_raw_bytes: u64,
    /// Bytes of the packs written (what the spool grew by).
    pub stored_bytes: u64,
    pub packs: u64,
}

pub struct StoreWriter<'a> {
    spool: &'a Spool,
    txn: Option<WriteTransaction>,
    pack: Option<(u64, PackWriter)>,
    level: i32,
    pub stats: StoreStats,
}

impl<'a> StoreWriter<'a> {
    pub fn new(spool: &'a Spool) -> Result<StoreWriter<'a>> {
        Ok(StoreWriter {
            spool,
            txn: Some(spool.catalog.write()?),
            pack: None,
            level: spool.settings.compression_level,
            stats: StoreStats::default(),
        })
    }

    /// The open write transaction (it also carries this session's other catalog rows).
    pub fn txn(&self) -> &WriteTransaction {
        self.txn.as_ref().expect("transaction open until finish")
    }

    /// For each id: is it not in the store yet?
    pub fn missing(&self, ids: &[ChunkId]) -> Result<Vec<bool>> {
        let t = self.txn().open_table(CHUNKS)?;
        ids.iter().map(|id| Ok(t.get(id.0)?.is_none())).collect()
    }

    /// Store chunks the spool lacks; `chunks` holds (id, raw bytes). New data chunks are
    /// grouped into frames (`crate::frame`) and compressed on all cores; appends stay in order
    /// on this thread. Returns how many were new.
    pub fn put_batch(&mut self, chunks: &[(ChunkId, &[u8])], kind: BlobKind) -> Result<u64> {
        let ids: Vec<ChunkId> = chunks.iter().map(|c| c.0).collect();
        let missing = self.missing(&ids)?;
        let mut seen = HashSet::new();
        let new: Vec<(ChunkId, &[u8])> = chunks
            .iter()
            .zip(missing)
            .filter(|(c, m)| *m && seen.insert(c.0))
            .map(|(c, _)| *c)
            .collect();
        let level = self.level;
        if kind != BlobKind::Data {
            let encoded: Vec<EncodedBlob> = new
                .par_iter()
                .map(|(_, raw)| pack::encode_blob(raw, level))
                .collect();
            for ((id, raw), blob) in new.iter().zip(encoded) {
                self.append(*id, kind, &blob, None)?;
                self.count_new(raw.len());
            }
            return Ok(new.len() as u64);
        }
        // Consecutive new chunks, up to FRAME_RAW_MAX raw bytes per frame.
        let mut groups: Vec<&[(ChunkId, &[u8])]> = Vec::new();
        let (mut start, mut size) = (0usize, frame::EMPTY_FRAME);
        for (i, (_, raw)) in new.iter().enumerate() {
            if i > start && size + frame::cost(raw.len()) > frame::FRAME_RAW_MAX {
                groups.push(&new[start..i]);
                start = i;
                size = frame::EMPTY_FRAME;
            }
            size += frame::cost(raw.len());
        }
        if start < new.len() {
            groups.push(&new[start..]);
        }
        // Build, hash and compress the frames on all cores; only the appends are serial.
        let frames: Vec<(ChunkId, u32, Vec<u32>, EncodedBlob)> = groups
            .par_iter()
            .map(|g| {
                let (raw, offsets) = frame::build(g);
                let blob = pack::encode_blob(&raw, level);
                (ChunkId::of(&raw), raw.len() as u32, offsets, blob)
            })
            .collect();
        for (group, (frame_id, raw_len, offsets, blob)) in groups.iter().zip(frames) {
            let slots: Vec<(ChunkId, u32, FrameSlot)> = group
                .iter()
                .zip(offsets)
                .map(|((id, data), inner)| (*id, data.len() as u32, FrameSlot { raw_len, inner }))
                .collect();
            self.append_frame(frame_id, &blob, &slots)?;
            for (_, data) in group.iter() {
                self.count_new(data.len());
            }
        }
        Ok(new.len() as u64)
    }

    fn count_new(&mut self, raw_len: usize) {
        self.stats.new_chunks += 1;
        self.stats.new_raw_bytes += raw_len as u64;
    }

    /// Store one blob (a dump record, say) whether or not its id exists: callers dedup first.
    pub fn put_one(&mut self, id: ChunkId, raw: &[u8], kind: BlobKind) -> Result<()> {
        let blob = pack::encode_blob(raw, self.level);
        self.append(id, kind, &blob, None)
    }

    /// Append a frame blob and index each chunk inside it.
    fn append_frame(
        &mut self,
        frame_id: ChunkId,
        blob: &EncodedBlob,
        slots: &[(ChunkId, u32, FrameSlot)],
    ) -> Result<()> {
        self.append(frame_id, BlobKind::Frame, blob, Some(slots))
    }

    /// Append one blob; index it under its own id, or (a frame) each chunk in `slots`.
    fn append(
        &mut self,
        id: ChunkId,
        kind: BlobKind,
        blob: &EncodedBlob,
        slots: Option<&[(ChunkId, u32, FrameSlot)]>,
    ) -> Result<()> {
        if self.pack.is_none() {
            let txn = self.txn();
            let no = catalog::get_meta_u64(txn, "next_pack_no")?;
            catalog::set_meta_u64(txn, "next_pack_no", no + 1)?;
            self.pack = Some((no, PackWriter::create(&self.spool.tmp_dir())?));
        }
        let (no, writer) = self.pack.as_mut().expect("pack open");
        let entry = writer.add(id, kind, blob)?;
        let loc = ChunkLoc {
            pack_no: *no,
            offset: entry.offset,
            stored_len: entry.stored_len,
            raw_len: entry.raw_len,
            compressed: entry.compressed,
            kind,
            frame: None,
        };
        crate::failpoint::hit("chunk-appended"); // once per blob (a frame is one blob)
        let full = writer.size() >= PACK_TARGET_SIZE;
        {
            let mut table = self.txn().open_table(CHUNKS)?;
            match slots {
                None => {
                    table.insert(id.0, loc.encode())?;
                }
                Some(slots) => {
                    for (cid, len, slot) in slots {
                        let l = ChunkLoc {
                            raw_len: *len,
                            kind: BlobKind::Data,
                            frame: Some(*slot),
                            ..loc
                        };
                        table.insert(cid.0, l.encode())?;
                    }
                }
            }
        }
        if full {
            self.seal_pack()?;
            self.commit_and_reopen()?;
        }
        Ok(())
    }

    /// Make the open pack durable under packs/ and record it in the transaction.
    fn seal_pack(&mut self) -> Result<()> {
        if let Some((no, writer)) = self.pack.take() {
            let done = writer.finish(&self.spool.packs_dir())?;
            crate::failpoint::hit("pack-renamed");
            catalog::insert_pack(
                self.txn(),
                no,
                &done.id,
                done.size,
                &done.entries,
                crate::timefmt::now_ns(),
            )?;
            self.stats.stored_bytes += done.size;
            self.stats.packs += 1;
        }
        Ok(())
    }

    fn commit_and_reopen(&mut self) -> Result<()> {
        let txn = self.txn.take().expect("transaction open");
        txn.commit()?;
        crate::failpoint::hit("pack-committed");
        self.txn = Some(self.spool.catalog.write()?);
        Ok(())
    }

    /// Record that `dump` owns those of `refs` that no dump of `chain` (its ancestors) owns,
    /// and that it does not own already. Returns (chunks, stored bytes) newly owned.
    pub fn record_owned(
        &mut self,
        dump: u64,
        chain: &[u64],
        refs: &[ChunkId],
    ) -> Result<(u64, u64)> {
        let txn = self.txn();
        let mut owned = txn.open_table(OWNED)?;
        let chunks = txn.open_table(CHUNKS)?;
        let (mut n, mut bytes) = (0u64, 0u64);
        'refs: for id in refs {
            if owned.get((dump, id.0))?.is_some() {
                continue;
            }
            for a in chain {
                if owned.get((*a, id.0))?.is_some() {
                    continue 'refs;
                }
            }
            let stored = match chunks.get(id.0)? {
                Some(loc) => stored_share(&ChunkLoc::decode(&loc.value())?),
                // Purged from the spool after export: owned, but its bytes are on tape only.
                None if !crate::tape::media::tapes_of_chunk(&self.spool.catalog.read()?, id)?
                    .is_empty() =>
                {
                    0
                }
                None => {
                    return Err(Error::corrupt(format!(
                        "chunk {} is referenced but not in the chunk index",
                        id.short()
                    )));
                }
            };
            owned.insert((dump, id.0), stored)?;
            n += 1;
            bytes += u64::from(stored);
        }
        Ok((n, bytes))
    }

    /// Seal the last pack, let `last` add the final rows (the dump record) to the same
    /// transaction, and commit: the record becomes visible only with all its data durable.
    pub fn finish(
        mut self,
        last: impl FnOnce(&WriteTransaction, &StoreStats) -> Result<()>,
    ) -> Result<StoreStats> {
        self.seal_pack()?;
        let stats = self.stats;
        let txn = self.txn.take().expect("transaction open");
        last(&txn, &stats)?;
        crate::failpoint::hit("before-record-commit");
        txn.commit()?;
        crate::failpoint::hit("record-committed");
        Ok(stats)
    }
}

impl Drop for StoreWriter<'_> {
    fn drop(&mut self) {
        if let Some((_, w)) = self.pack.take() {
            w.abandon();
        }
    }
}

/// The stored bytes a chunk accounts for: its blob, or its raw share of its frame's blob.
pub fn stored_share(loc: &ChunkLoc) -> u32 {
    match loc.frame {
        None => loc.stored_len,
        Some(f) => {
            let share =
                u64::from(loc.stored_len) * u64::from(loc.raw_len) / u64::from(f.raw_len.max(1));
            share.max(1) as u32
        }
    }
}

/// A decompressed frame, keyed by (pack number, offset).
type CachedFrame = ((u64, u64), Arc<Vec<u8>>);

/// Reads chunks back: locations from the catalog, bytes from packs (kept open, shared).
pub struct ChunkReader<'a> {
    catalog: &'a Catalog,
    txn: ReadTransaction,
    packs_dir: std::path::PathBuf,
    open: Mutex<HashMap<u64, Arc<PackReader>>>,
    last_frame: Mutex<Option<CachedFrame>>,
    /// Packs from outside the spool (read from tapes for a restore): chunk locations under
    /// pack numbers counted down from u64::MAX, which the catalog never hands out.
    extra: HashMap<ChunkId, ChunkLoc>,
    extra_packs: HashMap<u64, std::path::PathBuf>,
}

impl<'a> ChunkReader<'a> {
    pub fn new(spool: &'a Spool) -> Result<ChunkReader<'a>> {
        Ok(ChunkReader {
            catalog: &spool.catalog,
            txn: spool.catalog.read()?,
            packs_dir: spool.packs_dir(),
            open: Mutex::new(HashMap::new()),
            last_frame: Mutex::new(None),
            extra: HashMap::new(),
            extra_packs: HashMap::new(),
        })
    }

    /// Also read chunks from these packs (extracted from tapes). Every chunk in them is
    /// verified against its hash first; the spool's own copy wins where both have a chunk.
    pub fn add_packs(&mut self, packs: &[std::path::PathBuf]) -> Result<()> {
        for path in packs {
            let no = u64::MAX - self.extra_packs.len() as u64;
            for (id, mut loc) in crate::tape::payload::pack_chunks(path)?.1 {
                loc.pack_no = no;
                self.extra.entry(id).or_insert(loc);
            }
            self.extra_packs.insert(no, path.clone());
        }
        Ok(())
    }

    pub fn locate(&self, id: &ChunkId) -> Result<Option<ChunkLoc>> {
        match self.catalog.chunk(&self.txn, id)? {
            Some(loc) => Ok(Some(loc)),
            None => Ok(self.extra.get(id).copied()),
        }
    }

    pub fn locate_required(&self, id: &ChunkId, what: &dyn Fn() -> String) -> Result<ChunkLoc> {
        self.locate(id)?.ok_or_else(|| {
            Error::corrupt(format!(
                "chunk {} of {} is not in the spool's chunk index; run `reel check` to see what is damaged",
                id.short(),
                what()
            ))
        })
    }

    /// The open reader of a pack, by number.
    pub fn pack(&self, no: u64) -> Result<Arc<PackReader>> {
        if let Some(p) = self.open.lock().expect("pack cache").get(&no) {
            return Ok(p.clone());
        }
        let path = match self.extra_packs.get(&no) {
            Some(p) => p.clone(),
            None => self.pack_path(no)?,
        };
        let reader = Arc::new(PackReader::open(&path)?);
        let mut cache = self.open.lock().expect("pack cache");
        if cache.len() >= 256 {
            cache.clear();
        }
        cache.insert(no, reader.clone());
        Ok(reader)
    }

    pub fn pack_path(&self, no: u64) -> Result<std::path::PathBuf> {
        if let Some(p) = self.extra_packs.get(&no) {
            return Ok(p.clone());
        }
        let rec = self.catalog.pack(&self.txn, no)?.ok_or_else(|| {
            Error::corrupt(format!(
                "pack number {no} is named by the chunk index but not recorded; run `reel check`"
            ))
        })?;
        Ok(pack::pack_path(&self.packs_dir, &pack::PackId(rec.id)))
    }

    /// Read and verify one chunk.
    pub fn read(&self, id: &ChunkId, what: &dyn Fn() -> String) -> Result<Vec<u8>> {
        let loc = self.locate_required(id, what)?;
        let p = self.pack(loc.pack_no)?;
        let damaged = |e: Error| {
            Error::corrupt(format!(
                "{e} (in pack {}, needed by {})",
                p.path().display(),
                what()
            ))
        };
        let Some(slot) = loc.frame else {
            return p.read_blob(&loc.blob_entry(*id)).map_err(damaged);
        };
        // The last frame read is kept, so reading a file's chunks in order decompresses each
        // frame once.
        let key = (loc.pack_no, loc.offset);
        let cached = {
            let last = self.last_frame.lock().expect("frame cache");
            last.as_ref()
                .filter(|(k, _)| *k == key)
                .map(|(_, f)| f.clone())
        };
        let frame = match cached {
            Some(f) => f,
            None => {
                let stored = p.read_stored(&loc.blob_entry(*id)).map_err(damaged)?;
                let f = Arc::new(loc.decode_frame(&stored).map_err(damaged)?);
                *self.last_frame.lock().expect("frame cache") = Some((key, f.clone()));
                f
            }
        };
        frame::slice(&frame, id, slot.inner, loc.raw_len).map_err(damaged)
    }

    /// A byte stream over chunks in order (a manifest, a cat).
    pub fn stream(&'a self, chunks: Vec<(ChunkId, u32)>, what: String) -> ChunkStream<'a> {
        ChunkStream {
            reader: self,
            chunks: chunks.into_iter(),
            buf: Vec::new(),
            pos: 0,
            what,
        }
    }
}

pub struct ChunkStream<'a> {
    reader: &'a ChunkReader<'a>,
    chunks: std::vec::IntoIter<(ChunkId, u32)>,
    buf: Vec<u8>,
    pos: usize,
    what: String,
}

impl Read for ChunkStream<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            let Some((id, _)) = self.chunks.next() else {
                return Ok(0);
            };
            let what = self.what.clone();
            self.buf = self
                .reader
                .read(&id, &move || what.clone())
                .map_err(std::io::Error::other)?;
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
