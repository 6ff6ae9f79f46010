//! The chunk store: deduplicating writes into packs, and reads back out of them.
//!
//! Writing follows the crash-safe order of docs/DESIGN.md: a pack is written under tmp/ and put
//! into the spool's pack store (`crate::pack_store`; for packs/: fsynced and renamed into place)
//! before the catalog transaction that indexes its chunks commits. The index entries of the
//! pack being written live in the open write transaction, so lookups see them at once, and a
//! crash simply forgets them along with the unfinished pack.
//!
//! New data chunks travel in frames that the thread pool hashes and compresses while the
//! writing thread goes on reading; a chunk accepted but not yet appended is in `unindexed`, so
//! lookups see it too. Frames are appended in the order they were filled.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::sync::{Arc, Mutex, mpsc};

use rayon::prelude::*;

use crate::catalog::{self, ChunkIndex, ChunkLoc, FrameSlot, Ownership};
use crate::error::Damaged;
use crate::frame;
use crate::frame_packer::{self, Chunks, FramePacker, PackSink, Rollover};
use crate::manifest::ManifestReader;
use crate::pack::{
    self, BackgroundPack, BlobEntry, BlobKind, EncodedBlob, PackId, PackReader, SealedPack,
    StoredPack,
};
use crate::pack_store::PackStore;
use crate::record::DumpRecord;
use crate::spool::Spool;
use crate::{ChunkId, ChunkMap, ChunkSet, Error, Result};

/// What a writing session added to the spool.
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreStats {
    pub new_chunks: u64,
    pub new_raw_bytes: u64,
    /// Bytes of the packs written (what the spool grew by).
    pub stored_bytes: u64,
    pub packs: u64,
    /// Chunk ids looked up in the catalog's chunk index or ownership rows (each costs a read
    /// of a page once the catalog is not in memory); a measure of what locality saves.
    pub index_lookups: u64,
}

pub struct StoreWriter<'a> {
    spool: &'a Spool,
    /// Frames and packs: the data frame being filled (it spans `put_batch` calls, so frames
    /// stay full) and the open pack.
    packer: FramePacker<BackgroundPack>,
    /// Where the packer's packs go, with the transaction that indexes their chunks.
    out: Sink<'a>,
    /// Frames handed to the thread pool for hashing and compression, in append order.
    inflight: VecDeque<PendingFrame>,
    inflight_raw: usize,
    /// Chunks accepted but not yet in the index (in the filling frame or `inflight`), so a
    /// second copy is not stored.
    unindexed: ChunkSet,
    /// Frames handed to the pool so far (those appended are `frames_sent - inflight.len()`).
    frames_sent: u64,
    /// Ownership waiting for its chunks' frames to be appended (`own_later`), in order.
    owning: VecDeque<DeferredOwn>,
    /// Rows each dump owns, not yet folded into the catalog's `owned` (`fold_owned`).
    staged: HashMap<u64, catalog::OwnedStaging>,
    /// `StoreStats::index_lookups` so far (counted by `missing`, which only reads).
    lookups: Cell<u64>,
}

/// The store's [`PackSink`]: packs numbered by the catalog, their chunks indexed in the open
/// transaction as they are appended, full ones sealed and put into the pack store on their own
/// threads, with a checkpoint commit now and then.
struct Sink<'a> {
    spool: &'a Spool,
    txn: Option<catalog::Writer>,
    stats: StoreStats,
    /// Commit after a sealed pack once enough has gathered (see `CHECKPOINT_CHUNKS`); off
    /// while `finish` seals the last pack, which its own commit names.
    checkpoints: bool,
    /// Pack bytes sealed and chunks indexed since the last commit (see `CHECKPOINT_CHUNKS`).
    since_commit: (u64, u64),
    /// Stored share (`stored_share`) of chunks appended in this session and not yet owned, so
    /// ownership, which follows right behind, need not look them up in the index again.
    fresh_shares: ChunkMap<u32>,
    /// Sealed packs being finished and put into the pack store (index, footer, `put`) on their
    /// own threads, with their numbers and sealing times. Every commit waits for them first and
    /// only then names them (`name_persisted`).
    persisting: Vec<(u64, SealedPack, i64)>,
    /// Packs durable in the pack store that no committed transaction names yet: sealed since
    /// the last commit. A writer dropped before its next commit (any error) deletes them.
    uncommitted: Vec<PackId>,
}

/// Entries in `fresh_shares` at most. A dump owns its new chunks a window behind their
/// append, far fewer than this; a session that owns nothing stops filling it here.
const FRESH_SHARES_MAX: usize = 1 << 16;

/// `record_owned` to run once the first `after` frames are appended (their stored sizes are
/// known only then).
struct DeferredOwn {
    after: u64,
    dump: u64,
    chain: Vec<u64>,
    refs: Vec<ChunkId>,
}

/// A compressed frame: its id, where its chunks sit, its blob.
type Compressed = (ChunkId, Vec<(ChunkId, u32, FrameSlot)>, EncodedBlob);

/// A frame on its way through the pool, and where its blob will arrive.
struct PendingFrame {
    raw_len: usize,
    done: mpsc::Receiver<Compressed>,
}

/// Raw bytes of frames compressing at once, at most. Deep enough that the pool keeps working
/// while this thread appends, indexes or waits for a pack's fsync (four frames: two a core);
/// bounded so memory does not grow with the volume.
const INFLIGHT_RAW_MAX: usize = 16 << 20;

/// Chunks indexed since the last commit after which the next sealed pack commits, whatever
/// `checkpoint_mb` says: the uncommitted rows are held in memory, and packs of tiny chunks
/// would otherwise gather millions of them.
const CHECKPOINT_CHUNKS: u64 = 250_000;

impl<'a> StoreWriter<'a> {
    /// The spool's keys, which every id the store is given must come from.
    pub fn keys(&self) -> &crate::crypto::Keys {
        self.spool.keys()
    }

    pub fn new(spool: &'a Spool) -> Result<StoreWriter<'a>> {
        Ok(StoreWriter {
            spool,
            packer: FramePacker::new(
                spool.settings.compression_level,
                Rollover::AtTarget,
                spool.keys(),
            ),
            out: Sink {
                spool,
                txn: Some(spool.catalog.writer()?),
                stats: StoreStats::default(),
                checkpoints: true,
                since_commit: (0, 0),
                fresh_shares: ChunkMap::default(),
                persisting: Vec::new(),
                uncommitted: Vec::new(),
            },
            inflight: VecDeque::new(),
            inflight_raw: 0,
            unindexed: ChunkSet::default(),
            frames_sent: 0,
            owning: VecDeque::new(),
            staged: HashMap::new(),
            lookups: Cell::new(0),
        })
    }

    /// What this session added so far.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            index_lookups: self.lookups.get(),
            ..self.out.stats
        }
    }

    /// The open write transaction (it also carries this session's other catalog rows). Data
    /// chunks still being compressed are not in its index yet: call `settle` first to see them.
    pub fn catalog(&self) -> &catalog::Writer {
        self.out.txn()
    }

    /// For each id: is it not in the store yet (nor on its way in)?
    pub fn missing(&self, ids: &[ChunkId]) -> Result<Vec<bool>> {
        let index = self.catalog().chunk_index()?;
        ids.iter()
            .map(|id| {
                if self.unindexed.contains(id) {
                    return Ok(false);
                }
                self.lookups.set(self.lookups.get() + 1);
                Ok(!index.contains(id)?)
            })
            .collect()
    }

    /// Store chunks the spool lacks; `chunks` holds (id, raw bytes). Returns how many were new.
    ///
    /// New data chunks are copied into frames (`crate::frame`); each full frame is hashed and
    /// compressed on the thread pool while this thread goes on, and appended (in order) once
    /// done. Other kinds are compressed alone, on all cores, and appended before returning,
    /// after every data chunk accepted before them.
    pub fn put_batch(&mut self, chunks: &[(ChunkId, &[u8])], kind: BlobKind) -> Result<u64> {
        if kind == BlobKind::Data {
            return self.put_data(chunks);
        }
        let ids: Vec<ChunkId> = chunks.iter().map(|c| c.0).collect();
        let missing = self.missing(&ids)?;
        let mut seen = ChunkSet::default();
        let new: Vec<(ChunkId, &[u8])> = chunks
            .iter()
            .zip(missing)
            .filter(|(c, m)| *m && seen.insert(c.0))
            .map(|(c, _)| *c)
            .collect();
        // Data accepted earlier goes first, so manifests and records follow the data they
        // describe in the packs (they end up in a dump's last, usually small, pack).
        self.settle()?;
        let level = self.packer.level();
        let encoded: Vec<EncodedBlob> = new
            .par_iter()
            .map(|(_, raw)| pack::encode_blob(raw, level))
            .collect();
        for ((id, raw), blob) in new.iter().zip(encoded) {
            self.packer
                .append(&mut self.out, *id, kind, blob, Chunks::Own)?;
            self.count_new(raw.len());
        }
        Ok(new.len() as u64)
    }

    /// `put_batch` of data chunks. The index is asked a slice at a time, so the first frame
    /// of a large batch reaches the pool after a few lookups, not after all of them (the pool
    /// has often just run dry when a window of small files arrives).
    fn put_data(&mut self, chunks: &[(ChunkId, &[u8])]) -> Result<u64> {
        const LOOKUP_SLICE: usize = 256;
        let mut new = 0;
        for part in chunks.chunks(LOOKUP_SLICE) {
            let ids: Vec<ChunkId> = part.iter().map(|c| c.0).collect();
            let missing = self.missing(&ids)?;
            for (&(id, raw), missing) in part.iter().zip(missing) {
                // `unindexed` also catches a second copy within this slice.
                if !missing || self.unindexed.contains(&id) {
                    continue;
                }
                if let Some(full) = self.packer.take_full(raw.len()) {
                    self.send_frame(full);
                    self.append_done(false)?;
                }
                self.packer.push(id, raw);
                self.unindexed.insert(id);
                new += 1;
            }
        }
        Ok(new)
    }

    /// Hand a filled frame to the pool.
    fn send_frame(&mut self, frame: frame::Builder) {
        let raw_len = frame.raw_len();
        let level = self.packer.level();
        let keys = self.packer.keys().clone();
        let (tx, done) = mpsc::sync_channel(1);
        let work = move || {
            let _ = tx.send(frame_packer::compress(frame, level, &keys));
        };
        if rayon::current_thread_index().is_some() {
            // Called from inside the pool: waiting there for queued jobs could deadlock it.
            work();
        } else {
            rayon::spawn(move || {
                // A panic must not abort the process (rayon's default): the sender is dropped
                // instead, and `append_done` reports it.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            });
        }
        self.inflight_raw += raw_len;
        self.frames_sent += 1;
        self.inflight.push_back(PendingFrame { raw_len, done });
    }

    /// Append the frames the pool has finished, in order. Waits for all of them with `all`,
    /// and otherwise only while more than `INFLIGHT_RAW_MAX` bytes are in flight.
    fn append_done(&mut self, all: bool) -> Result<()> {
        while let Some(head) = self.inflight.front() {
            let wait = all || self.inflight_raw > INFLIGHT_RAW_MAX;
            let got = if wait {
                head.done.recv().ok()
            } else {
                match head.done.try_recv() {
                    Ok(got) => Some(got),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => None,
                }
            };
            let Some((frame_id, slots, blob)) = got else {
                return Err(Error::Spool(
                    "a compression worker failed (panicked); nothing of this session was \
                     committed, run the command again"
                        .into(),
                ));
            };
            let head = self.inflight.pop_front().expect("head frame");
            self.inflight_raw -= head.raw_len;
            self.packer.append(
                &mut self.out,
                frame_id,
                BlobKind::Frame,
                blob,
                Chunks::Frame(&slots),
            )?;
            for (id, len, _) in &slots {
                self.unindexed.remove(id);
                self.count_new(*len as usize);
            }
        }
        self.record_ready_owned()
    }

    /// Like `record_owned`, but without waiting for the chunks' frames: the rows are written
    /// once those frames are appended, so compression goes on meanwhile.
    pub fn own_later(&mut self, dump: u64, chain: &[u64], refs: Vec<ChunkId>) -> Result<()> {
        // The frame being filled may hold some of `refs`: wait for it too. It is not sent
        // early: frames cut short at every window compress worse. The next chunks fill it, or
        // `settle` sends it.
        let after = self.frames_sent + u64::from(self.packer.filling());
        self.owning.push_back(DeferredOwn {
            after,
            dump,
            chain: chain.to_vec(),
            refs,
        });
        self.record_ready_owned()
    }

    fn record_ready_owned(&mut self) -> Result<()> {
        let appended = self.frames_sent - self.inflight.len() as u64;
        while self.owning.front().is_some_and(|o| o.after <= appended) {
            let o = self.owning.pop_front().expect("front");
            self.record_owned_now(o.dump, &o.chain, o.refs)?;
        }
        Ok(())
    }

    /// Compress and append every chunk accepted so far, so the index holds them all.
    pub fn settle(&mut self) -> Result<()> {
        if let Some(frame) = self.packer.take_frame() {
            self.send_frame(frame);
        }
        self.append_done(true)
    }

    fn count_new(&mut self, raw_len: usize) {
        self.out.stats.new_chunks += 1;
        self.out.stats.new_raw_bytes += raw_len as u64;
    }

    /// Store one blob (a dump record, say) whether or not its id exists: callers dedup first.
    pub fn put_one(&mut self, id: ChunkId, raw: &[u8], kind: BlobKind) -> Result<()> {
        let blob = pack::encode_blob(raw, self.packer.level());
        self.packer
            .append(&mut self.out, id, kind, blob, Chunks::Own)
    }

    /// Record that `dump` owns those of `refs` that no dump of `chain` (its ancestors) owns.
    /// The rows are staged; `fold_owned` writes them and counts them.
    pub fn record_owned(&mut self, dump: u64, chain: &[u64], refs: &[ChunkId]) -> Result<()> {
        self.settle()?;
        self.record_owned_now(dump, chain, refs.to_vec())
    }

    fn record_owned_now(&mut self, dump: u64, chain: &[u64], mut refs: Vec<ChunkId>) -> Result<()> {
        let txn = self
            .out
            .txn
            .as_ref()
            .expect("transaction open until finish");
        let owned = txn.ownership()?;
        let mut rows = Vec::with_capacity(refs.len());
        // In key order: neighbouring lookups share the pages of the B-trees.
        refs.sort_unstable();
        refs.dedup();
        // A chunk this session stored was in no pack before, so no ancestor owns it, unless a
        // purge left an ancestor owning a chunk that is on tape only.
        let purged = txn.purges() > 0;
        let mut looked_up = 0;
        for id in &refs {
            let fresh = self.out.fresh_shares.remove(id);
            if fresh.is_none() || purged {
                looked_up += 1;
                if owned.owned_by_any(chain, id)? {
                    continue;
                }
            }
            let stored = match fresh {
                Some(share) => share,
                None => self.indexed_share(&owned, id)?,
            };
            rows.push((*id, stored));
        }
        self.lookups.set(self.lookups.get() + looked_up);
        drop(owned);
        // A chunk met again later in the volume is a second row here; staging and the fold
        // keep one.
        let staged = self.staged.entry(dump).or_default();
        staged.extend(rows);
        staged.spill_at(txn, dump, self.spool.catalog.tuning().owned_mem_rows)
    }

    /// Write the rows `record_owned` and `own_later` staged for `dump` into the catalog's
    /// `owned`, and return how many chunks it owns and their stored bytes. A fold of more than
    /// one slice commits each slice (sealing the open pack first: a commit names only finished
    /// packs), so the catalog never holds the rows twice over.
    pub fn fold_owned(&mut self, dump: u64) -> Result<(u64, u64)> {
        self.settle()?;
        let Some(mut staged) = self.staged.remove(&dump) else {
            return Ok((0, 0));
        };
        let slices = staged.slices(self.spool.catalog.tuning().slice_rows);
        if slices.len() > 1 {
            self.packer.seal(&mut self.out)?;
        }
        let mut total = (0u64, 0u64);
        for (i, slice) in slices.iter().enumerate() {
            if i > 0 {
                self.out.commit_and_reopen()?;
            }
            let (n, b) = staged.fold_slice(self.out.txn(), dump, *slice)?;
            total = (total.0 + n, total.1 + b);
        }
        Ok(total)
    }

    /// `stored_share` of an indexed chunk; 0 for one purged from the spool after export (owned,
    /// but its bytes are on tape only).
    fn indexed_share(&self, owned: &Ownership, id: &ChunkId) -> Result<u32> {
        match owned.location(id)? {
            Some(loc) => Ok(stored_share(&loc)),
            None if !self.spool.catalog.reader()?.tapes_of_chunk(id)?.is_empty() => Ok(0),
            None => Err(Error::damaged(
                Damaged::Chunk(*id),
                format!(
                    "chunk {} is referenced but not in the chunk index",
                    id.short()
                ),
            )),
        }
    }

    /// Seal the last pack, let `last` add the final rows (the dump record) to the same
    /// transaction, and commit: the record becomes visible only with all its data durable.
    pub fn finish(
        mut self,
        last: impl FnOnce(&catalog::Writer, &StoreStats) -> Result<()>,
    ) -> Result<StoreStats> {
        self.settle()?;
        self.out.checkpoints = false;
        self.packer.seal(&mut self.out)?;
        let stats = self.stats();
        let txn = self.out.txn.take().expect("transaction open");
        last(&txn, &stats)?;
        self.out.name_persisted(&txn)?;
        crate::failpoint::hit("before-record-commit");
        txn.commit()?;
        self.out.uncommitted.clear();
        crate::failpoint::hit("record-committed");
        Ok(stats)
    }
}

impl Drop for StoreWriter<'_> {
    /// Dropped before its last commit (an error, a full disk): the open pack is abandoned (its
    /// thread removes the tmp file), the transaction is rolled back, and the packs sealed since
    /// the last commit are removed, so what the session wrote and never committed takes no
    /// space. Packs of earlier checkpoints are committed and stay.
    fn drop(&mut self) {
        let _ = self.out.persisted();
        self.packer.abandon();
        drop(self.out.txn.take());
        self.out.remove_uncommitted();
    }
}

impl PackSink for Sink<'_> {
    type Pack = BackgroundPack;

    fn open(&mut self) -> Result<(u64, BackgroundPack)> {
        let no = self.txn().take_pack_number()?;
        Ok((
            no,
            BackgroundPack::start(&self.spool.tmp_dir(), self.spool.keys())?,
        ))
    }

    /// Index the blob's chunks in the open transaction.
    fn placed(&mut self, _: &BlobEntry, mut chunks: Vec<(ChunkId, ChunkLoc)>) -> Result<()> {
        crate::failpoint::hit("chunk-appended"); // once per blob (a frame is one blob)
        {
            let txn = self.txn.as_ref().expect("transaction open until finish");
            let mut table = txn.chunk_index()?;
            // In key order: neighbouring inserts walk the same pages of the B-tree.
            if chunks.len() > 1 {
                chunks.sort_unstable_by_key(|c| c.0);
            }
            for (id, loc) in &chunks {
                table.insert(id, loc)?;
                if self.fresh_shares.len() < FRESH_SHARES_MAX {
                    self.fresh_shares.insert(*id, stored_share(loc));
                }
            }
        }
        self.since_commit.1 += chunks.len() as u64;
        Ok(())
    }

    /// Seal the pack: its thread writes the index and footer and puts it into the pack store
    /// while this one goes on (`persisted` waits for it). Then commit, if a checkpoint is due.
    fn seal(&mut self, no: u64, pack: BackgroundPack) -> Result<()> {
        let store = Arc::clone(self.spool.pack_store());
        let sealed = pack.seal(Box::new(move |staged| store.put(staged)))?;
        self.stats.stored_bytes += sealed.size();
        self.stats.packs += 1;
        self.since_commit.0 += sealed.size();
        self.persisting.push((no, sealed, crate::timefmt::now_ns()));
        let (bytes, chunks) = self.since_commit;
        if self.checkpoints
            && (bytes >= self.spool.settings.checkpoint_mb << 20 || chunks >= CHECKPOINT_CHUNKS)
        {
            self.commit_and_reopen()?;
        }
        Ok(())
    }
}

impl Sink<'_> {
    fn txn(&self) -> &catalog::Writer {
        self.txn.as_ref().expect("transaction open until finish")
    }
    /// Wait until every sealed pack is durable in the pack store, then name them in `txn`
    /// (`packs`, `pack_ids`): every commit does this first, so it names only durable packs.
    fn name_persisted(&mut self, txn: &catalog::Writer) -> Result<()> {
        for (no, pack, sealed_ns) in self.persisted()? {
            txn.record_pack(no, &pack.id, pack.size, &pack.entries, sealed_ns)?;
        }
        Ok(())
    }

    /// Wait until every sealed pack is durable in the pack store. Each one that is counts as
    /// uncommitted until the next commit, also when another one failed.
    fn persisted(&mut self) -> Result<Vec<(u64, StoredPack, i64)>> {
        let mut first_error = None;
        let mut done = Vec::new();
        for (no, sealed, sealed_ns) in std::mem::take(&mut self.persisting) {
            match sealed.wait() {
                Ok(pack) => {
                    self.uncommitted.push(pack.id);
                    done.push((no, pack, sealed_ns));
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(done), Err)
    }

    /// Delete the packs sealed since the last commit, for a writer that will not commit them:
    /// they hold nothing a committed row names, and left in the store no catalog would name
    /// them, so `gc` could never free their space. A pack the catalog does name is kept (a
    /// commit that reported an error may still have reached the disk), and so is every pack
    /// when the catalog cannot tell (`check --repair` sorts them out).
    fn remove_uncommitted(&mut self) {
        if self.uncommitted.is_empty() {
            return;
        }
        let named =
            |id: &PackId| -> Option<bool> { self.spool.catalog.reader().ok()?.pack_named(id).ok() };
        let store = self.spool.pack_store();
        let mut unnamed = Vec::new();
        for id in std::mem::take(&mut self.uncommitted) {
            if named(&id) == Some(false) {
                unnamed.push(id);
            } else {
                tracing::warn!(
                    "pack {} was kept: the catalog names it, or could not be read",
                    store.location(&id).display()
                );
            }
        }
        if unnamed.is_empty() {
            return;
        }
        // One batch (a remote store deletes many in a call); after an error `exists` tells which
        // are left.
        let failed = store.delete(&unnamed).err();
        for id in &unnamed {
            let path = store.location(id);
            match &failed {
                Some(e) if store.exists(id).unwrap_or(true) => {
                    tracing::warn!(
                        "cannot remove pack {}: {}",
                        path.display(),
                        io_cause(e, &path)
                    )
                }
                _ => tracing::info!("removed pack {}, which no commit names", path.display()),
            }
        }
    }

    fn commit_and_reopen(&mut self) -> Result<()> {
        let txn = self.txn.take().expect("transaction open");
        self.name_persisted(&txn)?;
        txn.commit()?;
        self.uncommitted.clear();
        self.since_commit = (0, 0);
        crate::failpoint::hit("pack-committed");
        self.txn = Some(self.spool.catalog.writer()?);
        Ok(())
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

/// What an error says about the pack at `path`: its own words when it names that path (the
/// message names the pack already), else all of it.
fn io_cause(e: &Error, path: &std::path::Path) -> String {
    match e {
        Error::Io { path: p, source } if p == path => source.to_string(),
        e => e.to_string(),
    }
}

/// A decompressed frame, keyed by (pack number, offset).
type CachedFrame = ((u64, u64), Arc<Vec<u8>>);

/// Reads chunks back: locations from the catalog, bytes from packs (opened through the pack
/// store once, kept open and shared).
pub struct ChunkReader<'a> {
    catalog: catalog::Reader<'a>,
    /// The chunk index, opened once: every chunk read looks its location up here.
    chunks: ChunkIndex,
    packs: &'a dyn PackStore,
    open: Mutex<HashMap<u64, Arc<PackReader>>>,
    last_frame: Mutex<Option<CachedFrame>>,
    /// Packs from outside the spool (read from tapes for a restore): chunk locations under
    /// pack numbers counted down from u64::MAX, which the catalog never hands out.
    extra: ChunkMap<ChunkLoc>,
    extra_packs: HashMap<u64, std::path::PathBuf>,
    /// The spool's keys: packs are opened and chunks verified with them.
    keys: crate::crypto::Keys,
}

impl<'a> ChunkReader<'a> {
    /// The keys chunks are verified with.
    pub fn keys(&self) -> &crate::crypto::Keys {
        &self.keys
    }

    pub fn new(spool: &'a Spool) -> Result<ChunkReader<'a>> {
        let catalog = spool.catalog.reader()?;
        Ok(ChunkReader {
            chunks: catalog.chunk_index()?,
            catalog,
            packs: spool.pack_store().as_ref(),
            open: Mutex::new(HashMap::new()),
            last_frame: Mutex::new(None),
            extra: ChunkMap::default(),
            extra_packs: HashMap::new(),
            keys: spool.keys().clone(),
        })
    }

    /// Also read chunks from these packs (extracted from tapes). Every chunk in them is
    /// verified against its hash first; the spool's own copy wins where both have a chunk.
    pub fn add_packs(&mut self, packs: &[std::path::PathBuf]) -> Result<()> {
        for path in packs {
            let no = u64::MAX - self.extra_packs.len() as u64;
            for (id, mut loc) in pack_chunks(path, &self.keys)?.1 {
                loc.pack_no = no;
                self.extra.entry(id).or_insert(loc);
            }
            self.extra_packs.insert(no, path.clone());
        }
        Ok(())
    }

    pub fn locate(&self, id: &ChunkId) -> Result<Option<ChunkLoc>> {
        match self.chunks.get(id)? {
            Some(loc) => Ok(Some(loc)),
            None => Ok(self.extra.get(id).copied()),
        }
    }

    /// Where chunk `id` is, or an error: `Error::OnTape` naming the tapes that hold it when
    /// the media catalog knows it (purge removed it from the spool, nothing is damaged), else
    /// a damaged chunk. `what` names the reader of the chunk (a file, a manifest).
    pub fn locate_required(&self, id: &ChunkId, what: &dyn Fn() -> String) -> Result<ChunkLoc> {
        if let Some(loc) = self.locate(id)? {
            return Ok(loc);
        }
        let tapes = self.tapes_holding(id)?;
        if tapes.is_empty() {
            return Err(Error::damaged(
                Damaged::Chunk(*id),
                format!(
                    "chunk {} of {} is not in the spool's chunk index; run `reel check` to see what is damaged",
                    id.short(),
                    what()
                ),
            ));
        }
        let msg = format!(
            "{} is on tape only (purge removed it from the spool): chunk {} is on {} {}; give \
             --tapes DIR (a folder of tape images) or --tape IMAGE to read it",
            what(),
            id.short(),
            if tapes.len() == 1 { "tape" } else { "tapes" },
            tapes.join(", ")
        );
        Err(Error::OnTape {
            chunk: *id,
            tapes,
            msg,
        })
    }

    /// The labels of the tapes the media catalog says hold `id`, oldest tape first (the
    /// order `reel tapes` lists them in).
    fn tapes_holding(&self, id: &ChunkId) -> Result<Vec<String>> {
        let mut labels = self.catalog.tape_index()?.tapes_of(id)?;
        if labels.len() > 1 {
            let mut order: Vec<_> = self
                .catalog
                .tapes()?
                .into_iter()
                .map(|t| (t.created_ns, t.sequence, t.label))
                .collect();
            order.sort();
            let rank = |l: &String| order.iter().position(|(_, _, o)| o == l);
            labels.sort_by_key(|l| (rank(l).is_none(), rank(l)));
        }
        Ok(labels)
    }

    /// The open reader of a pack, by number.
    pub fn pack(&self, no: u64) -> Result<Arc<PackReader>> {
        if let Some(p) = self.open.lock().expect("pack cache").get(&no) {
            return Ok(p.clone());
        }
        let reader = Arc::new(match self.extra_packs.get(&no) {
            Some(path) => PackReader::open(path, &self.keys)?,
            None => self.packs.open(&self.pack_id(no)?, &self.keys)?,
        });
        let mut cache = self.open.lock().expect("pack cache");
        if cache.len() >= 256 {
            cache.clear();
        }
        cache.insert(no, reader.clone());
        Ok(reader)
    }

    /// Where a pack is, by number: its file (for a pack in the spool: its store's `location`).
    pub fn pack_path(&self, no: u64) -> Result<std::path::PathBuf> {
        if let Some(p) = self.extra_packs.get(&no) {
            return Ok(p.clone());
        }
        Ok(self.packs.location(&self.pack_id(no)?))
    }

    /// The name of a pack of the spool, by number.
    fn pack_id(&self, no: u64) -> Result<PackId> {
        let rec = self.catalog.pack(no)?.ok_or_else(|| {
            Error::damaged(Damaged::Catalog, format!(
                "pack number {no} is named by the chunk index but not recorded; run `reel check`"
            ))
        })?;
        Ok(PackId(rec.id))
    }

    /// Read and verify one chunk.
    pub fn read(&self, id: &ChunkId, what: &dyn Fn() -> String) -> Result<Vec<u8>> {
        let loc = self.locate_required(id, what)?;
        let p = self.pack(loc.pack_no)?;
        let damaged = |e: Error| {
            Error::damaged(
                Damaged::Pack {
                    path: p.path().to_path_buf(),
                    offset: Some(loc.offset),
                },
                format!("{e} (in pack {}, needed by {})", p.path().display(), what()),
            )
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
                let opened = p.read_opened(&loc.blob_entry(*id)).map_err(damaged)?;
                let f = Arc::new(loc.decode_frame(&opened).map_err(damaged)?);
                *self.last_frame.lock().expect("frame cache") = Some((key, f.clone()));
                f
            }
        };
        frame::slice(&self.keys, &frame, id, slot.inner, loc.raw_len).map_err(damaged)
    }

    /// A byte stream over chunks in order (a manifest, a cat).
    /// The manifest of dump `d`, read through the gatekeeper a restore trusts.
    pub fn manifest(&'a self, d: &DumpRecord) -> Result<ManifestReader<ChunkStream<'a>>> {
        ManifestReader::new(self.stream(d.manifest_chunks(), format!("manifest of dump {}", d.id)))
    }

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

/// Reading a whole pack's chunks back (extra packs here, tape packs in `crate::tape`) is the
/// pack store's scan.
pub use crate::pack_store::scan::{PackChunks, open_pack_chunks, pack_chunks};

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[i % 4] ^ seed)
            .collect()
    }

    /// Owned rows staged as many runs (copies across runs, within a run, and in memory) fold
    /// into one row per chunk, a committed slice at a time, with the same counts and bytes as
    /// one fold from memory; the packs sealed for the slices' commits read back.
    #[test]
    fn owned_rows_staged_as_runs_fold_to_one_row_per_chunk() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spool = Spool::init(&tmp.path().join("spool")).unwrap();
        let data: Vec<Vec<u8>> = (0..200u8)
            .map(|i| chunk(i, 3000 + usize::from(i)))
            .collect();
        let ids: Vec<ChunkId> = data.iter().map(|d| ChunkId::of(d)).collect();
        let batch: Vec<(ChunkId, &[u8])> = ids
            .iter()
            .copied()
            .zip(data.iter().map(|d| &d[..]))
            .collect();
        // Everything in memory, one slice: the reference.
        let expected = {
            let mut w = StoreWriter::new(&spool).unwrap();
            w.put_batch(&batch, BlobKind::Data).unwrap();
            w.record_owned(1, &[], &ids).unwrap();
            let got = w.fold_owned(1).unwrap();
            w.finish(|_, _| Ok(())).unwrap();
            got
        };
        assert_eq!(expected.0, 200);
        spool.catalog.set_tuning(catalog::Tuning {
            owned_mem_rows: 16,
            slice_rows: 24,
            ..catalog::TUNING
        });
        let mut w = StoreWriter::new(&spool).unwrap();
        let more: Vec<Vec<u8>> = (0..40u8).map(|i| chunk(i, 9000 + usize::from(i))).collect();
        let more_ids: Vec<ChunkId> = more.iter().map(|d| ChunkId::of(d)).collect();
        let more_batch: Vec<(ChunkId, &[u8])> = more_ids
            .iter()
            .copied()
            .zip(more.iter().map(|d| &d[..]))
            .collect();
        w.put_batch(&more_batch, BlobKind::Data).unwrap();
        // Overlapping windows, in shuffled order: every chunk met two to three times.
        for start in (0..200).step_by(7).rev() {
            let end = (start + 21).min(200);
            let mut refs = ids[start..end].to_vec();
            refs.extend_from_slice(&ids[start..end.min(start + 3)]);
            w.record_owned(2, &[], &refs).unwrap();
        }
        w.own_later(2, &[], more_ids.clone()).unwrap();
        let (n, b) = w.fold_owned(2).unwrap();
        w.finish(|_, _| Ok(())).unwrap();
        assert_eq!(spool.catalog.owned_summary(2).unwrap(), (n, b));
        // The same 240 chunks owned from memory in one slice.
        spool.catalog.set_tuning(catalog::TUNING);
        let mut w = StoreWriter::new(&spool).unwrap();
        let all: Vec<ChunkId> = ids.iter().chain(&more_ids).copied().collect();
        w.record_owned(3, &[], &all).unwrap();
        let reference = w.fold_owned(3).unwrap();
        w.finish(|_, _| Ok(())).unwrap();
        assert_eq!(reference.0, 240);
        assert!(reference.1 > expected.1);
        assert_eq!((n, b), reference);
        let reader = ChunkReader::new(&spool).unwrap();
        for (id, d) in more_ids.iter().zip(&more) {
            assert_eq!(&reader.read(id, &|| "test".into()).unwrap(), d);
        }
    }

    /// Chunks still compressing count as stored: a second copy in a later batch is not
    /// written, ownership waits for the frames and then matches a synchronous count, and
    /// everything reads back after the commit.
    #[test]
    fn chunks_in_flight_dedup_own_and_read_back() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::init(&tmp.path().join("spool")).unwrap();
        // More than INFLIGHT_RAW_MAX of data, so appends overlap the pool and must wait.
        let data: Vec<Vec<u8>> = (0..48).map(|i| chunk(i, 1 << 20)).collect();
        let ids: Vec<ChunkId> = data.iter().map(|d| ChunkId::of(d)).collect();
        let batch = |r: std::ops::Range<usize>| -> Vec<(ChunkId, &[u8])> {
            r.map(|i| (ids[i], data[i].as_slice())).collect()
        };
        let mut w = StoreWriter::new(&spool).unwrap();
        assert_eq!(w.put_batch(&batch(0..40), BlobKind::Data).unwrap(), 40);
        assert!(
            w.missing(&ids[..40]).unwrap().iter().all(|m| !m),
            "chunks in flight are not missing"
        );
        w.own_later(7, &[], ids[..40].to_vec()).unwrap();
        // The same chunks again, mixed with new ones: only the new ones are stored.
        assert_eq!(w.put_batch(&batch(30..48), BlobKind::Data).unwrap(), 8);
        w.own_later(7, &[], ids[30..48].to_vec()).unwrap();
        // Copies within one batch, in one lookup slice and across slices: stored once.
        let twice: Vec<(ChunkId, &[u8])> = (0..600)
            .map(|i| {
                let raw = &b"tiny"[..i % 4];
                (ChunkId::of(raw), raw)
            })
            .collect();
        assert_eq!(w.put_batch(&twice, BlobKind::Data).unwrap(), 4);
        w.settle().unwrap();
        assert_eq!(w.stats().new_chunks, 52);
        let (owned, owned_bytes) = w.fold_owned(7).unwrap();
        assert_eq!(owned, 48, "each chunk owned once");
        assert!(owned_bytes > 0);
        // Owning the same refs again finds nothing new to own.
        w.record_owned(7, &[], &ids).unwrap();
        assert_eq!(w.fold_owned(7).unwrap(), (0, 0));
        // Dump 7 took the stored shares handed on from the appends; dump 8 owns the same chunks
        // from the index alone, and must come to the same bytes.
        assert_eq!(
            w.out.fresh_shares.len(),
            4,
            "only the shares of the four tiny chunks, which no dump owns, are left"
        );
        w.record_owned(8, &[], &ids).unwrap();
        assert_eq!(w.fold_owned(8).unwrap(), (owned, owned_bytes));
        w.finish(|_, _| Ok(())).unwrap();

        let reader = ChunkReader::new(&spool).unwrap();
        for (id, d) in ids.iter().zip(&data) {
            assert_eq!(&reader.read(id, &|| "test".into()).unwrap(), d);
        }
        // 48 MiB of chunks in frames of at most 4 MiB: every chunk stored once.
        let stored: u64 = std::fs::read_dir(spool.packs_dir())
            .unwrap()
            .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
            .map(|f| f.unwrap().metadata().unwrap().len())
            .sum();
        assert!(stored < 49 << 20, "{stored} bytes of packs for 48 MiB");
    }

    /// A writer dropped before its commit (any error on the way) takes back every pack it
    /// sealed and the one it was writing; packs an earlier checkpoint committed stay, and the
    /// catalog names exactly the packs left.
    #[test]
    fn a_writer_dropped_before_its_commit_removes_the_packs_it_sealed() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spool = Spool::init(&tmp.path().join("spool")).unwrap();
        // Incompressible, so 40 MiB seal a 32 MiB pack and start the next.
        let data: Vec<Vec<u8>> = (0..40u8)
            .map(|seed| {
                let mut v = vec![0u8; 1 << 20];
                blake3::Hasher::new()
                    .update(&[seed])
                    .finalize_xof()
                    .fill(&mut v);
                v
            })
            .collect();
        let batch: Vec<(ChunkId, &[u8])> = data
            .iter()
            .map(|d| (ChunkId::of(d), d.as_slice()))
            .collect();
        let on_disk = |s: &Spool| s.pack_store().list().unwrap();
        let tmp_files = |s: &Spool| std::fs::read_dir(s.tmp_dir()).unwrap().count();

        {
            let mut w = StoreWriter::new(&spool).unwrap();
            w.put_batch(&batch, BlobKind::Data).unwrap();
            w.settle().unwrap();
            assert_eq!(w.stats().packs, 1, "a pack was sealed");
        }
        assert_eq!(on_disk(&spool), vec![], "an uncommitted pack was left");
        assert_eq!(tmp_files(&spool), 0, "the open pack's tmp file was left");

        // Committed after every sealed pack: the first pack stays, named; the open one goes.
        spool.settings.checkpoint_mb = 0;
        {
            let mut w = StoreWriter::new(&spool).unwrap();
            w.put_batch(&batch, BlobKind::Data).unwrap();
            w.settle().unwrap();
        }
        let left = on_disk(&spool);
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(tmp_files(&spool), 0);
        assert!(
            spool
                .catalog
                .reader()
                .unwrap()
                .pack_named(&left[0].0)
                .unwrap(),
            "the pack left is named"
        );
    }

    /// `n` MiB of incompressible chunks of 1 MiB, with their ids: 40 of them seal a 32 MiB pack
    /// and start the next.
    fn noise(n: u8) -> (Vec<ChunkId>, Vec<Vec<u8>>) {
        let data: Vec<Vec<u8>> = (0..n)
            .map(|seed| {
                let mut v = vec![0u8; 1 << 20];
                blake3::Hasher::new()
                    .update(&[seed, 0xA5])
                    .finalize_xof()
                    .fill(&mut v);
                v
            })
            .collect();
        (data.iter().map(|d| ChunkId::of(d)).collect(), data)
    }

    fn batch<'d>(ids: &[ChunkId], data: &'d [Vec<u8>]) -> Vec<(ChunkId, &'d [u8])> {
        ids.iter()
            .zip(data)
            .map(|(i, d)| (*i, d.as_slice()))
            .collect()
    }

    /// The packs the catalog names, with their sizes, sorted by id.
    fn named_packs(spool: &Spool) -> Vec<(PackId, u64)> {
        let mut v: Vec<(PackId, u64)> = spool
            .catalog
            .packs()
            .unwrap()
            .into_iter()
            .map(|(_, r)| (PackId(r.id), r.size))
            .collect();
        v.sort();
        v
    }

    /// The seam between the store and where packs live: a dump's writes (frames over two
    /// packs, a manifest blob) go into an in-memory pack store, the catalog names exactly the
    /// packs in it, nothing lands in packs/, and every chunk reads back, also after the spool
    /// is opened again on the same store.
    #[test]
    fn a_spool_on_an_in_memory_pack_store_writes_and_reads_back() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("spool");
        let store = Arc::new(crate::pack_store::InMemory::new());
        let spool = Spool::init_with_store(&root, store.clone()).unwrap();
        let (ids, data) = noise(40);
        let manifest = b"a piece of a manifest ".repeat(200);
        let mut w = StoreWriter::new(&spool).unwrap();
        assert_eq!(
            w.put_batch(&batch(&ids, &data), BlobKind::Data).unwrap(),
            40
        );
        let m = [(ChunkId::of(&manifest), manifest.as_slice())];
        assert_eq!(w.put_batch(&m, BlobKind::Manifest).unwrap(), 1);
        let stats = w.finish(|_, _| Ok(())).unwrap();
        assert_eq!(stats.packs, 2);

        let listed = store.list().unwrap();
        assert_eq!(listed, named_packs(&spool));
        assert_eq!(listed.iter().map(|p| p.1).sum::<u64>(), stats.stored_bytes);
        assert!(pack::list_packs(&spool.packs_dir()).unwrap().is_empty());
        assert_eq!(std::fs::read_dir(spool.tmp_dir()).unwrap().count(), 0);

        let reader = ChunkReader::new(&spool).unwrap();
        for (id, d) in ids.iter().zip(&data) {
            assert_eq!(&reader.read(id, &|| "test".into()).unwrap(), d);
        }
        assert_eq!(reader.read(&m[0].0, &|| "test".into()).unwrap(), manifest);
        let loc = reader.locate(&ids[0]).unwrap().unwrap();
        let path = reader.pack_path(loc.pack_no).unwrap();
        assert!(path.to_string_lossy().starts_with("memory:"), "{path:?}");
        drop(reader);
        drop(spool);

        let spool = Spool::open_with_store(&root, crate::spool::Access::Read, store).unwrap();
        let reader = ChunkReader::new(&spool).unwrap();
        assert_eq!(reader.read(&ids[39], &|| "test".into()).unwrap(), data[39]);
    }

    /// Faults of the pack store reach the store's callers as errors that name the pack, and
    /// lose nothing: a put that fails fails the commit that waits for it and leaves no pack
    /// behind, the pack committed before stays and reads back, and writing the same chunks
    /// again stores only what the failed pack held. A pack that cannot be read fails the chunk
    /// reads that need it, and only those.
    #[test]
    fn pack_store_faults_fail_the_commit_or_the_read() {
        let tmp = tempfile::tempdir().unwrap();
        let inner = Arc::new(crate::pack_store::InMemory::new());
        let faulty = Arc::new(crate::pack_store::Faulty::new(inner.clone()));
        let mut spool = Spool::init_with_store(&tmp.path().join("spool"), faulty.clone()).unwrap();
        spool.settings.checkpoint_mb = 0;
        faulty.fail_put(2);
        let (ids, data) = noise(40);
        let mut w = StoreWriter::new(&spool).unwrap();
        w.put_batch(&batch(&ids, &data), BlobKind::Data).unwrap();
        let err = w.finish(|_, _| Ok(())).unwrap_err().to_string();
        assert!(err.contains("injected fault: put number 2"), "{err}");
        assert!(err.contains("memory:"), "the error names the pack: {err}");
        assert_eq!(faulty.puts(), 2);
        let listed = inner.list().unwrap();
        assert_eq!(listed.len(), 1, "only the committed pack: {listed:?}");
        assert_eq!(listed, named_packs(&spool));
        assert_eq!(std::fs::read_dir(spool.tmp_dir()).unwrap().count(), 0);

        // The committed chunks read back; the others are missing and are written again.
        let reader = ChunkReader::new(&spool).unwrap();
        let missing = StoreWriter::new(&spool).unwrap().missing(&ids).unwrap();
        let kept = missing.iter().filter(|m| !**m).count() as u64;
        assert!(kept > 0 && kept < 40, "{kept} chunks committed");
        for ((id, d), _) in ids.iter().zip(&data).zip(&missing).filter(|(_, m)| !**m) {
            assert_eq!(&reader.read(id, &|| "test".into()).unwrap(), d);
        }
        drop(reader);
        let mut w = StoreWriter::new(&spool).unwrap();
        let again = w.put_batch(&batch(&ids, &data), BlobKind::Data).unwrap();
        assert_eq!(again, 40 - kept, "only what the failed pack held");
        w.finish(|_, _| Ok(())).unwrap();
        assert_eq!(inner.list().unwrap(), named_packs(&spool));

        let first = listed[0].0;
        faulty.fail_reads_of(first);
        let reader = ChunkReader::new(&spool).unwrap();
        for (id, d) in ids.iter().zip(&data) {
            let loc = reader.locate(id).unwrap().unwrap();
            let in_first = reader.catalog.pack(loc.pack_no).unwrap().unwrap().id;
            match reader.read(id, &|| "test".into()) {
                Ok(got) => assert!(in_first != first.0 && got == *d),
                Err(e) => {
                    let e = e.to_string();
                    assert!(in_first == first.0, "{e}");
                    assert!(
                        e.contains("injected fault: read") && e.contains(&first.to_hex()),
                        "{e}"
                    );
                }
            }
        }
    }

    /// A writer dropped before its commit deletes the packs it put, through the pack store;
    /// when the store cannot delete them they stay, unnamed (as after a crash, for `check`),
    /// the catalog is untouched and a later session writes the same chunks again.
    #[test]
    fn uncommitted_packs_are_deleted_through_the_pack_store() {
        let tmp = tempfile::tempdir().unwrap();
        let inner = Arc::new(crate::pack_store::InMemory::new());
        let faulty = Arc::new(crate::pack_store::Faulty::new(inner.clone()));
        let spool = Spool::init_with_store(&tmp.path().join("spool"), faulty.clone()).unwrap();
        let (ids, data) = noise(40);
        let dropped = || {
            let mut w = StoreWriter::new(&spool).unwrap();
            w.put_batch(&batch(&ids, &data), BlobKind::Data).unwrap();
            w.settle().unwrap();
            assert_eq!(w.stats().packs, 1, "a pack was sealed");
        };
        dropped();
        assert_eq!(faulty.puts(), 1);
        assert!(
            inner.list().unwrap().is_empty(),
            "the uncommitted pack was left"
        );

        faulty.fail_deletes(true);
        dropped();
        let left = inner.list().unwrap();
        assert_eq!(
            left.len(),
            1,
            "the pack that could not be deleted: {left:?}"
        );
        assert!(named_packs(&spool).is_empty());
        assert_eq!(std::fs::read_dir(spool.tmp_dir()).unwrap().count(), 0);

        faulty.fail_deletes(false);
        let mut w = StoreWriter::new(&spool).unwrap();
        assert_eq!(
            w.put_batch(&batch(&ids, &data), BlobKind::Data).unwrap(),
            40
        );
        w.finish(|_, _| Ok(())).unwrap();
        let named = named_packs(&spool);
        assert_eq!(named.len(), 2);
        assert!(
            named.contains(&left[0]),
            "the same bytes, put again and named"
        );
        let reader = ChunkReader::new(&spool).unwrap();
        for (id, d) in ids.iter().zip(&data) {
            assert_eq!(&reader.read(id, &|| "test".into()).unwrap(), d);
        }
    }
}
