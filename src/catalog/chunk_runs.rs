//! The chunk index as a log-structured merge of sorted runs (docs/FORMAT.md, "The chunk index").
//!
//! Chunk ids are hashes, so rows inserted into one B-tree land on random leaves: every commit of
//! a dump rewrote (copy-on-write) most of the tree, and the file grew with the square of the
//! volume. Here a commit appends its new rows as one sorted *run* of blocks whose keys only grow,
//! so it touches the right edge of the tree and nothing else. Runs are merged into one *base*
//! run in key-range slices, each slice its own transaction that frees the input blocks it
//! consumed, so the file never holds much more than its live rows. Every run has a Bloom filter
//! in memory: most lookups of a new chunk end there, without a read.
//!
//! Order of precedence, newest first: the writer's uncommitted rows (`Mem`), the `newer` runs
//! (newest first), then the base — or, while a merge is under way, the merge's output for ids
//! below its cursor and its inputs (newest first) for the others. A removed chunk is a
//! tombstone row until the merge into the base drops it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::tables::{CHUNK_BLOCKS, CHUNK_FILTERS, META, META_CHUNK_INDEX};
use crate::error::Damaged;
use crate::{Error, Result};

/// A row: chunk id and its encoded location (`ChunkLoc::encode`), or `TOMBSTONE`.
pub(super) type Row = ([u8; 32], [u8; 33]);

/// The value of a removed chunk's row (byte 24 of a location is never 0xff).
pub(super) const TOMBSTONE: [u8; 33] = [0xff; 33];

const ROW_LEN: usize = 65;
/// Rows per block: 56 x 65 = 3,640 bytes, so a block and its key fit one 4 KiB page.
const BLOCK_ROWS: usize = 56;
/// Bloom filter bits per row: about 0.1% false positives with 11 hashes (2 bytes a chunk in
/// memory). With an index larger than the page cache every false positive is a disk read: at
/// 10 bits (1%) a first dump on one disk would spend more time on them than on its data
/// (docs/SCALE.md).
const FILTER_BITS_PER_ROW: usize = 16;
const FILTER_HASHES: u32 = 11;
/// Version of the filter bytes; tied to the exact fastbloom release (Cargo.toml pins it), whose
/// bit positions for a hash are not promised across releases. A filter of another version is
/// ignored (lookups read blocks) until the next merge rewrites it.
const FILTER_VERSION: u8 = 1;

/// When and how much to merge. Tests shrink them to exercise every path on small indexes.
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    /// Uncommitted rows the writer holds in memory before writing them as a run.
    pub mem_rows: usize,
    /// Merge into the base once the newer runs hold this share (1/n) of the base's rows ...
    pub merge_fraction: u64,
    /// ... or once there are this many of them.
    pub max_runs: usize,
    /// Rows of input per merge transaction (also per slice of a dump's owned-rows fold).
    pub slice_rows: u64,
    /// Owned rows a writing session holds in memory before staging them as a run
    /// (`owned_runs`).
    pub owned_mem_rows: usize,
}

pub const TUNING: Tuning = Tuning {
    mem_rows: 1 << 18,
    merge_fraction: 4,
    max_runs: 12,
    slice_rows: 1 << 17,
    owned_mem_rows: 1 << 17,
};

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct Run {
    pub id: u64,
    pub rows: u64,
}

/// A merge of runs into a new base, done up to (not including) ids whose first 8 bytes are
/// `next_lo`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct Merge {
    pub into: Run,
    /// Oldest first; the old base, if any, is the first.
    pub inputs: Vec<Run>,
    pub next_lo: u64,
    /// Slices in all (the key space is cut into this many equal ranges of the first 8 bytes).
    pub slices: u64,
}

/// What `meta`'s `chunk_index` key holds (postcard).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct State {
    pub next_run: u64,
    pub base: Option<Run>,
    /// Runs newer than the base (and than any merge's inputs), oldest first.
    pub newer: Vec<Run>,
    pub merge: Option<Merge>,
}

impl State {
    pub fn load(meta: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<State> {
        match meta.get(META_CHUNK_INDEX)? {
            None => Ok(State {
                next_run: 1,
                ..State::default()
            }),
            Some(v) => postcard::from_bytes(v.value()).map_err(|e| {
                Error::damaged(
                    Damaged::Catalog,
                    format!("catalog: the chunk index's state does not decode ({e})"),
                )
            }),
        }
    }

    fn save(&self, txn: &WriteTransaction) -> Result<()> {
        let bytes = postcard::to_allocvec(self).expect("index state serialises");
        txn.open_table(META)?
            .insert(META_CHUNK_INDEX, bytes.as_slice())?;
        Ok(())
    }

    fn take_run_id(&mut self) -> u64 {
        let id = self.next_run.max(1);
        self.next_run = id + 1;
        id
    }

    /// Every run holding rows, for filter loading.
    fn runs(&self) -> impl Iterator<Item = &Run> {
        self.base
            .iter()
            .chain(&self.newer)
            .chain(self.merge.iter().flat_map(|m| m.inputs.iter()))
    }
}

/// A Bloom filter over the first 8 bytes of chunk ids (uniform: they are hashes).
pub(super) struct Filter(fastbloom::BloomFilter);

impl Filter {
    pub fn for_rows(rows: u64) -> Filter {
        let bits = (rows as usize * FILTER_BITS_PER_ROW).max(512);
        Filter(fastbloom::BloomFilter::with_num_bits(bits).hashes(FILTER_HASHES))
    }

    pub fn insert(&mut self, id: &[u8; 32]) {
        self.0.insert_hash(prefix(id));
    }

    pub fn may_contain(&self, id: &[u8; 32]) -> bool {
        self.0.contains_hash(prefix(id))
    }

    fn encode(&self) -> Vec<u8> {
        let words = self.0.as_slice();
        let mut out = Vec::with_capacity(5 + words.len() * 8);
        out.push(FILTER_VERSION);
        out.extend_from_slice(&self.0.num_hashes().to_le_bytes());
        for w in words {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// None for a filter of another version or of bad length (the run is then read without one).
    fn decode(b: &[u8]) -> Option<Filter> {
        if b.len() < 13 || b[0] != FILTER_VERSION || !(b.len() - 5).is_multiple_of(8) {
            return None;
        }
        let hashes = u32::from_le_bytes(b[1..5].try_into().ok()?);
        let words = b[5..]
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")))
            .collect();
        Some(Filter(
            fastbloom::BloomFilter::from_vec(words).hashes(hashes),
        ))
    }
}

pub(super) fn prefix(id: &[u8; 32]) -> u64 {
    u64::from_be_bytes(id[..8].try_into().expect("8 bytes"))
}

/// Filters by run id, shared by a catalog's transactions (a run never changes once written).
#[derive(Default)]
pub(super) struct FilterCache(Mutex<HashMap<u64, Arc<Filter>>>);

impl FilterCache {
    /// The filters of `state`'s runs, loaded where not cached; runs that are gone leave the cache.
    fn filters_of(
        &self,
        state: &State,
        table: Option<&impl ReadableTable<u64, &'static [u8]>>,
    ) -> Result<HashMap<u64, Arc<Filter>>> {
        let mut cache = self.0.lock().expect("filter cache");
        let live: Vec<u64> = state.runs().map(|r| r.id).collect();
        cache.retain(|id, _| {
            live.contains(id) || state.merge.as_ref().is_some_and(|m| m.into.id == *id)
        });
        let mut out = HashMap::new();
        for id in live {
            if let Some(f) = cache.get(&id) {
                out.insert(id, Arc::clone(f));
                continue;
            }
            let Some(t) = table else { continue };
            if let Some(f) = t.get(id)?.and_then(|v| Filter::decode(v.value())) {
                let f = Arc::new(f);
                cache.insert(id, Arc::clone(&f));
                out.insert(id, f);
            }
        }
        Ok(out)
    }

    fn put(&self, id: u64, f: Arc<Filter>) {
        self.0.lock().expect("filter cache").insert(id, f);
    }
}

/// The index as one transaction sees it: its state and the filters of its runs.
pub(super) struct View {
    pub state: State,
    filters: HashMap<u64, Arc<Filter>>,
}

impl View {
    pub fn load(
        meta: &impl ReadableTable<&'static str, &'static [u8]>,
        filters: Option<&impl ReadableTable<u64, &'static [u8]>>,
        cache: &FilterCache,
    ) -> Result<View> {
        let state = State::load(meta)?;
        let filters = cache.filters_of(&state, filters)?;
        Ok(View { state, filters })
    }

    /// The committed row of `id` (a location or `TOMBSTONE`), or None when no run has one:
    /// the first run of `plan` that covers it and holds it.
    pub fn get(&self, blocks: &impl Blocks, id: &[u8; 32]) -> Result<Option<[u8; 33]>> {
        let p = prefix(id);
        for (run, lo, hi) in self.plan() {
            if (lo..=hi).contains(&p)
                && let Some(v) = self.probe(blocks, run, id)?
            {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// The row of `id` in `run`, asking its filter first (a merge's new base has none yet).
    fn probe(&self, blocks: &impl Blocks, run: u64, id: &[u8; 32]) -> Result<Option<[u8; 33]>> {
        match self.filters.get(&run) {
            Some(f) if !f.may_contain(id) => Ok(None),
            _ => find(blocks, run, id),
        }
    }

    /// What to read for every committed row, newest first: (run, lo, hi), the run's rows
    /// whose ids' first 8 bytes are in `lo..=hi`. Lookups and scans both follow it.
    pub fn plan(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        let newer = (self.state.newer.iter().rev()).map(|r| (r.id, 0, u64::MAX));
        let merge = self.state.merge.iter().flat_map(|m| {
            let done = (m.next_lo > 0).then(|| (m.into.id, 0, m.next_lo - 1));
            let rest = m.inputs.iter().rev().map(|r| (r.id, m.next_lo, u64::MAX));
            done.into_iter().chain(rest)
        });
        // The base is read only when no merge is under way (a merge's inputs include it).
        let base = (self.state.base.iter())
            .filter(|_| self.state.merge.is_none())
            .map(|r| (r.id, 0, u64::MAX));
        newer.chain(merge).chain(base)
    }
}

/// Read access to the blocks table, in a read or the write transaction.
pub(super) trait Blocks: ReadableTable<(u64, [u8; 32]), &'static [u8]> {}
impl<T: ReadableTable<(u64, [u8; 32]), &'static [u8]>> Blocks for T {}

/// The row of `id` in run `run`, if it has one: one B-tree descent to the block that would hold
/// it (the last whose first id is not above it), then a binary search.
fn find(blocks: &impl Blocks, run: u64, id: &[u8; 32]) -> Result<Option<[u8; 33]>> {
    let mut r = blocks.range((run, [0u8; 32])..=(run, *id))?;
    let Some(item) = r.next_back() else {
        return Ok(None);
    };
    let (_, v) = item?;
    let block = v.value();
    check_block(block, run)?;
    let (rows, _) = block.as_chunks::<ROW_LEN>();
    Ok(rows
        .binary_search_by(|row| row[..32].cmp(&id[..]))
        .ok()
        .map(|i| rows[i][32..].try_into().expect("33 bytes")))
}

fn check_block(block: &[u8], run: u64) -> Result<()> {
    if block.is_empty()
        || !block.len().is_multiple_of(ROW_LEN)
        || block.len() > BLOCK_ROWS * ROW_LEN
    {
        return Err(Error::damaged(
            Damaged::Catalog,
            format!(
                "catalog: a block of chunk-index run {run} has {} bytes, not a whole number of rows",
                block.len()
            ),
        ));
    }
    Ok(())
}

/// Rows of one source in id order.
pub(super) type Source<'a> = Box<dyn Iterator<Item = Result<Row>> + 'a>;

/// The key of the block of run `run` that may hold the first id starting with `lo`: the last
/// block whose first id is not above it.
pub(super) fn start_key(blocks: &impl Blocks, run: u64, lo: u64) -> Result<(u64, [u8; 32])> {
    let mut lo_key = [0u8; 32];
    lo_key[..8].copy_from_slice(&lo.to_be_bytes());
    Ok(
        match blocks.range((run, [0u8; 32])..=(run, lo_key))?.next_back() {
            Some(item) => (run, item?.0.value().1),
            None => (run, [0u8; 32]),
        },
    )
}

/// The rows in `range` (blocks of run `run`, from `start_key`) whose ids' first 8 bytes are in
/// `lo..=hi`, in id order; `keep_tombstones` false drops removed chunks.
pub(super) fn rows_of<'a>(
    range: redb::Range<'a, (u64, [u8; 32]), &'static [u8]>,
    run: u64,
    lo: u64,
    hi: u64,
    keep_tombstones: bool,
) -> Source<'a> {
    let rows = range
        .flat_map(move |item| -> Vec<Result<Row>> {
            let block = match item {
                Ok((_, v)) => v,
                Err(e) => return vec![Err(e.into())],
            };
            let block = block.value();
            if let Err(e) = check_block(block, run) {
                return vec![Err(e)];
            }
            block
                .chunks_exact(ROW_LEN)
                .map(|r| {
                    Ok((
                        r[..32].try_into().expect("32 bytes"),
                        r[32..].try_into().expect("33 bytes"),
                    ))
                })
                .collect()
        })
        .filter(move |row| match row {
            Ok((id, v)) => prefix(id) >= lo && (keep_tombstones || *v != TOMBSTONE),
            Err(_) => true,
        })
        .take_while(move |row| match row {
            Ok((id, _)) => prefix(id) <= hi,
            Err(_) => true,
        });
    Box::new(rows)
}

/// `rows_of` run `run` in the write transaction.
fn run_rows<'a>(blocks: &'a BlocksMut, run: u64, lo: u64, hi: u64) -> Result<Source<'a>> {
    let start = start_key(blocks, run, lo)?;
    let range = blocks.range(start..=(run, [0xffu8; 32]))?;
    Ok(rows_of(range, run, lo, hi, true))
}

/// Rows of several sources (newest first), each in id order, merged into one in id order:
/// where two have a row for an id, the newest wins.
pub(super) struct Merged<'a> {
    sources: Vec<std::iter::Peekable<Source<'a>>>,
}

impl<'a> Merged<'a> {
    pub fn new(sources: Vec<Source<'a>>) -> Merged<'a> {
        Merged {
            sources: sources.into_iter().map(|s| s.peekable()).collect(),
        }
    }
}

impl Iterator for Merged<'_> {
    type Item = Result<Row>;

    fn next(&mut self) -> Option<Result<Row>> {
        let mut best: Option<(usize, [u8; 32])> = None;
        for (i, s) in self.sources.iter_mut().enumerate() {
            match s.peek() {
                None => {}
                Some(Err(_)) => return s.next(),
                Some(Ok((id, _))) if best.is_none_or(|(_, b)| *id < b) => best = Some((i, *id)),
                Some(Ok(_)) => {}
            }
        }
        let (i, id) = best?;
        let row = self.sources[i].next();
        // Older sources' rows for the same id are shadowed.
        for s in &mut self.sources[i + 1..] {
            if matches!(s.peek(), Some(Ok((other, _))) if *other == id) {
                s.next();
            }
        }
        row
    }
}

/// Writes a run's blocks in id order, and its filter.
struct RunWriter {
    id: u64,
    block: Vec<u8>,
    first: [u8; 32],
    rows: u64,
    filter: Filter,
}

impl RunWriter {
    fn new(id: u64, expected_rows: u64) -> RunWriter {
        RunWriter {
            id,
            block: Vec::with_capacity(BLOCK_ROWS * ROW_LEN),
            first: [0; 32],
            rows: 0,
            filter: Filter::for_rows(expected_rows),
        }
    }

    fn push(&mut self, t: &mut BlocksMut, row: &Row) -> Result<()> {
        if self.block.is_empty() {
            self.first = row.0;
        }
        self.block.extend_from_slice(&row.0);
        self.block.extend_from_slice(&row.1);
        self.filter.insert(&row.0);
        self.rows += 1;
        if self.block.len() == BLOCK_ROWS * ROW_LEN {
            self.flush(t)?;
        }
        Ok(())
    }

    fn flush(&mut self, t: &mut BlocksMut) -> Result<()> {
        if !self.block.is_empty() {
            t.insert((self.id, self.first), self.block.as_slice())?;
            self.block.clear();
        }
        Ok(())
    }

    /// Write the last block and the filter (also into the cache); returns the run and its
    /// filter.
    fn finish(
        mut self,
        txn: &WriteTransaction,
        t: &mut BlocksMut,
        cache: &FilterCache,
    ) -> Result<(Run, Arc<Filter>)> {
        self.flush(t)?;
        txn.open_table(CHUNK_FILTERS)?
            .insert(self.id, self.filter.encode().as_slice())?;
        let filter = Arc::new(self.filter);
        cache.put(self.id, Arc::clone(&filter));
        let run = Run {
            id: self.id,
            rows: self.rows,
        };
        Ok((run, filter))
    }

    /// Append the rows of `inputs` (newest first) whose ids' first 8 bytes are in `lo..=hi`,
    /// merged; `drop_tombstones` for a merge into the base, below which nothing is older. Reads
    /// `slice_rows` rows of input at a time, so memory does not grow with the runs.
    fn merge(
        &mut self,
        t: &mut BlocksMut,
        inputs: &[Run],
        (lo, hi): (u64, u64),
        drop_tombstones: bool,
        slice_rows: u64,
    ) -> Result<()> {
        let total: u64 = inputs.iter().map(|r| r.rows).sum();
        let share = (hi - lo) as f64 / u64::MAX as f64;
        let pieces = ((total as f64 * share) / slice_rows as f64).ceil().max(1.0) as u64;
        let step = ((hi - lo) / pieces).max(1);
        let mut from = lo;
        loop {
            let to = if hi - from <= step {
                hi
            } else {
                from + step - 1
            };
            let rows: Vec<Row> = {
                let sources = (inputs.iter())
                    .map(|r| run_rows(t, r.id, from, to))
                    .collect::<Result<Vec<_>>>()?;
                Merged::new(sources)
                    .filter(|r| !(drop_tombstones && matches!(r, Ok((_, v)) if *v == TOMBSTONE)))
                    .collect::<Result<_>>()?
            };
            for row in &rows {
                self.push(t, row)?;
            }
            if to == hi {
                return Ok(());
            }
            from = to + 1;
        }
    }
}

type BlocksMut<'t> = Table<'t, (u64, [u8; 32]), &'static [u8]>;

/// Delete run `run`'s blocks and filter.
fn drop_run(txn: &WriteTransaction, t: &mut BlocksMut, run: u64) -> Result<()> {
    t.retain_in((run, [0u8; 32])..=(run, [0xffu8; 32]), |_, _| false)?;
    txn.open_table(CHUNK_FILTERS)?.remove(run)?;
    Ok(())
}

/// The write transaction's side of the index: its view and the rows not yet in a run.
pub(super) struct Lsm {
    pub view: View,
    /// Uncommitted rows (a location or `TOMBSTONE`), newest of all.
    pub mem: BTreeMap<[u8; 32], [u8; 33]>,
    pub tuning: Tuning,
}

impl Lsm {
    pub fn get(&self, blocks: &impl Blocks, id: &[u8; 32]) -> Result<Option<[u8; 33]>> {
        match self.mem.get(id) {
            Some(v) => Ok(Some(*v)),
            None => self.view.get(blocks, id),
        }
    }

    /// Note a row; past `mem_rows`, write the rows held as a run of this transaction.
    pub fn put(
        &mut self,
        txn: &WriteTransaction,
        blocks: &mut BlocksMut,
        cache: &FilterCache,
        row: Row,
    ) -> Result<()> {
        self.mem.insert(row.0, row.1);
        if self.mem.len() >= self.tuning.mem_rows {
            self.spill(txn, blocks, cache)?;
        }
        Ok(())
    }

    /// Write the rows held in memory as a new run (the newest).
    pub fn spill(
        &mut self,
        txn: &WriteTransaction,
        blocks: &mut BlocksMut,
        cache: &FilterCache,
    ) -> Result<()> {
        if self.mem.is_empty() {
            return Ok(());
        }
        let mem = std::mem::take(&mut self.mem);
        let mut w = RunWriter::new(self.view.state.take_run_id(), mem.len() as u64);
        for row in mem {
            w.push(blocks, &row)?;
        }
        let (run, filter) = w.finish(txn, blocks, cache)?;
        self.view.filters.insert(run.id, filter);
        self.view.state.newer.push(run);
        Ok(())
    }

    /// Before the commit: spill, and fold the newest runs together while the one before is
    /// not more than twice their size, so there are few runs (logarithmically many).
    pub fn settle(&mut self, txn: &WriteTransaction, cache: &FilterCache) -> Result<()> {
        let mut blocks = txn.open_table(CHUNK_BLOCKS)?;
        self.spill(txn, &mut blocks, cache)?;
        while let [.., older, newest] = self.view.state.newer[..] {
            if older.rows > 2 * newest.rows {
                break;
            }
            let mut w = RunWriter::new(self.view.state.take_run_id(), older.rows + newest.rows);
            let both = [newest, older];
            w.merge(
                &mut blocks,
                &both,
                (0, u64::MAX),
                false,
                self.tuning.slice_rows,
            )?;
            let (run, filter) = w.finish(txn, &mut blocks, cache)?;
            drop_run(txn, &mut blocks, older.id)?;
            drop_run(txn, &mut blocks, newest.id)?;
            let newer = &mut self.view.state.newer;
            newer.truncate(newer.len() - 2);
            newer.push(run);
            self.view.filters.insert(run.id, filter);
        }
        self.view.state.save(txn)
    }
}

/// Is a merge into the base due (or one under way)?
pub(super) fn merge_due(state: &State, tuning: &Tuning) -> bool {
    if state.merge.is_some() {
        return true;
    }
    let newer: u64 = state.newer.iter().map(|r| r.rows).sum();
    let base = state.base.map_or(0, |r| r.rows);
    !state.newer.is_empty()
        && (newer * tuning.merge_fraction >= base || state.newer.len() > tuning.max_runs)
}

/// Start a merge of every run into a new base, unless one is under way (in `txn`, which the
/// caller commits). Returns the state.
pub(super) fn start_merge(txn: &WriteTransaction, tuning: &Tuning) -> Result<State> {
    let mut state = State::load(&txn.open_table(META)?)?;
    if state.merge.is_some() || state.newer.is_empty() {
        return Ok(state);
    }
    let inputs: Vec<Run> = (state.base.take().into_iter())
        .chain(state.newer.drain(..))
        .collect();
    let total: u64 = inputs.iter().map(|r| r.rows).sum();
    let into = Run {
        id: state.take_run_id(),
        rows: 0,
    };
    state.merge = Some(Merge {
        into,
        inputs,
        next_lo: 0,
        slices: total.div_ceil(tuning.slice_rows).max(1),
    });
    state.save(txn)?;
    Ok(state)
}

/// One slice of the merge under way, in `txn`: the inputs' rows of that key range merged
/// and appended to the new base, the input blocks wholly below the range's end deleted. The
/// last slice makes the new run the base. `filter` is the new base's filter, built as the
/// slices go (None: rebuilt from the blocks written so far, for a merge another process
/// began). Returns whether the merge is done.
pub(super) fn merge_slice(
    txn: &WriteTransaction,
    filter: &mut Option<Filter>,
    cache: &FilterCache,
    tuning: &Tuning,
) -> Result<bool> {
    let mut state = State::load(&txn.open_table(META)?)?;
    let Some(mut m) = state.merge.take() else {
        return Ok(true);
    };
    let mut blocks = txn.open_table(CHUNK_BLOCKS)?;
    let total: u64 = m.inputs.iter().map(|r| r.rows).sum();
    let mut w = RunWriter::new(m.into.id, total);
    match filter.take() {
        Some(f) => w.filter = f,
        None if m.next_lo > 0 => {
            for row in run_rows(&blocks, m.into.id, 0, u64::MAX)? {
                w.filter.insert(&row?.0);
            }
        }
        None => {}
    }
    let span = (u64::MAX / m.slices).max(1);
    let lo = m.next_lo;
    let last = u64::MAX - lo <= span;
    let hi = if last { u64::MAX } else { lo + span - 1 };
    let newest_first: Vec<Run> = m.inputs.iter().rev().copied().collect();
    w.merge(
        &mut blocks,
        &newest_first,
        (lo, hi),
        true,
        tuning.slice_rows,
    )?;
    w.flush(&mut blocks)?;
    m.into.rows += w.rows;
    if last {
        let rows = m.into.rows;
        let (run, _) = w.finish(txn, &mut blocks, cache)?;
        for input in &m.inputs {
            drop_run(txn, &mut blocks, input.id)?;
        }
        state.base = Some(Run { id: run.id, rows });
        state.save(txn)?;
        return Ok(true);
    }
    // Blocks wholly below `hi` hold nothing a later slice reads.
    for input in &m.inputs {
        drop_blocks_below(&mut blocks, input.id, hi)?;
    }
    m.next_lo = hi + 1;
    *filter = Some(w.filter);
    state.merge = Some(m);
    state.save(txn)?;
    Ok(false)
}

/// Delete the blocks of `run` whose last row's id starts below or at `hi`.
fn drop_blocks_below(blocks: &mut BlocksMut, run: u64, hi: u64) -> Result<()> {
    let mut doomed = Vec::new();
    for item in blocks.range((run, [0u8; 32])..=(run, [0xffu8; 32]))? {
        let (k, v) = item?;
        let block = v.value();
        check_block(block, run)?;
        let last: [u8; 32] = block[block.len() - ROW_LEN..][..32]
            .try_into()
            .expect("32 bytes");
        if prefix(&last) > hi {
            break;
        }
        doomed.push(k.value().1);
    }
    for first in doomed {
        blocks.remove((run, first))?;
    }
    Ok(())
}

/// Turn a table of the first layout (id -> location, one B-tree) into the base run, in `txn`.
pub(super) fn adopt_table(
    txn: &WriteTransaction,
    old: TableDefinition<[u8; 32], [u8; 33]>,
    cache: &FilterCache,
) -> Result<()> {
    let mut state = State::load(&txn.open_table(META)?)?;
    let (run, _) = {
        let t = txn.open_table(old)?;
        let n = redb::ReadableTableMetadata::len(&t)?;
        let mut blocks = txn.open_table(CHUNK_BLOCKS)?;
        let mut w = RunWriter::new(state.take_run_id(), n);
        for item in t.iter()? {
            let (k, v) = item?;
            w.push(&mut blocks, &(k.value(), v.value()))?;
        }
        w.finish(txn, &mut blocks, cache)?
    };
    state.base = Some(run);
    state.save(txn)?;
    txn.delete_table(old)?;
    Ok(())
}

/// Merge every run into a new base (or finish the merge under way), a slice per transaction,
/// so the file holds at most a few slices more than the index's rows.
pub(super) fn merge(db: &redb::Database, cache: &FilterCache, tuning: &Tuning) -> Result<()> {
    let txn = db.begin_write()?;
    start_merge(&txn, tuning)?;
    txn.commit()?;
    let mut filter = None;
    loop {
        let txn = db.begin_write()?;
        let done = merge_slice(&txn, &mut filter, cache, tuning)?;
        txn.commit()?;
        if done {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::ChunkId;
    use crate::catalog::{Catalog, ChunkLoc, Handle};
    use crate::pack::BlobKind;

    fn id(i: u64) -> ChunkId {
        ChunkId(*blake3::hash(&i.to_le_bytes()).as_bytes())
    }

    fn loc(pack_no: u64, i: u64) -> ChunkLoc {
        ChunkLoc {
            pack_no,
            offset: i,
            stored_len: 100,
            raw_len: 200,
            compressed: true,
            kind: BlobKind::Data,
            frame: None,
        }
    }

    const SMALL: Tuning = Tuning {
        mem_rows: 300,
        merge_fraction: 4,
        max_runs: 3,
        slice_rows: 250,
        owned_mem_rows: 100,
    };

    /// What a reader and the writer see is what a map given the same operations holds.
    fn assert_same(cat: &Catalog, model: &BTreeMap<ChunkId, ChunkLoc>) {
        let r = cat.reader().unwrap();
        let index = r.chunk_index().unwrap();
        let rows: Vec<(ChunkId, ChunkLoc)> = index.rows().unwrap().map(|r| r.unwrap()).collect();
        let want: Vec<(ChunkId, ChunkLoc)> = model.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(rows.len(), want.len());
        assert!(rows == want, "rows differ from the model");
        for (k, v) in model.iter().step_by(7) {
            assert_eq!(index.get(k).unwrap(), Some(*v));
        }
        for i in 0..200 {
            assert_eq!(index.get(&id(1 << 40 | i)).unwrap(), None);
        }
    }

    fn state(cat: &Catalog) -> State {
        let r = cat.reader().unwrap();
        State::load(&r.txn.open_table(META).unwrap()).unwrap()
    }

    #[test]
    fn inserts_replacements_and_removals_across_commits_merge_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let mut cat = Catalog::create(&dir.path().join("catalog.redb")).unwrap();
        cat.set_tuning(SMALL);
        let mut model = BTreeMap::new();
        let mut next = 0u64;
        let mut merges_seen = 0;
        for round in 0..40u64 {
            let w = cat.writer().unwrap();
            {
                let mut t = w.chunk_index().unwrap();
                // New rows (some rounds past `mem_rows`, so they spill inside the transaction).
                for _ in 0..(50 + (round % 5) * 100) {
                    let (k, v) = (id(next), loc(round, next));
                    t.insert(&k, &v).unwrap();
                    model.insert(k, v);
                    next += 1;
                }
                // Move some older rows (gc's rewrite), remove others.
                for i in (0..next).step_by(37 + round as usize) {
                    let k = id(i);
                    if round % 2 == 0 {
                        if model.contains_key(&k) {
                            let v = loc(1000 + round, i);
                            t.insert(&k, &v).unwrap();
                            model.insert(k, v);
                        }
                    } else {
                        t.remove(&k).unwrap();
                        model.remove(&k);
                    }
                }
                // The writer sees its own rows before the commit.
                for i in (0..next).step_by(11) {
                    assert_eq!(t.get(&id(i)).unwrap(), model.get(&id(i)).copied());
                }
                let mine: Vec<_> = t.rows().unwrap().map(|r| r.unwrap()).collect();
                assert_eq!(
                    mine,
                    model.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>()
                );
            }
            w.commit().unwrap();
            let s = state(&cat);
            assert!(s.merge.is_none(), "a commit finishes the merge it starts");
            assert!(
                s.newer.len() <= SMALL.max_runs + 1,
                "{} runs",
                s.newer.len()
            );
            if s.newer.is_empty() {
                merges_seen += 1;
            }
            assert_same(&cat, &model);
        }
        assert!(merges_seen >= 3, "{merges_seen} merges");
        // Tombstones are gone once merged: the base holds exactly the live rows.
        let s = state(&cat);
        if s.newer.is_empty() {
            assert_eq!(s.base.unwrap().rows, model.len() as u64);
        }
    }

    #[test]
    fn a_merge_stopped_between_slices_reads_right_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let mut cat = Catalog::create(&dir.path().join("catalog.redb")).unwrap();
        // No merge on commit: runs pile up.
        cat.set_tuning(Tuning {
            max_runs: 1000,
            merge_fraction: 0,
            ..SMALL
        });
        let mut model = BTreeMap::new();
        for round in 0..6u64 {
            let w = cat.writer().unwrap();
            {
                let mut t = w.chunk_index().unwrap();
                for i in round * 1000..round * 1000 + 1000 {
                    t.insert(&id(i), &loc(round, i)).unwrap();
                    model.insert(id(i), loc(round, i));
                }
                for i in (0..round * 1000).step_by(13) {
                    t.remove(&id(i)).unwrap();
                    model.remove(&id(i));
                }
            }
            w.commit().unwrap();
        }
        let Handle::Write(db) = &cat.handle else {
            unreachable!()
        };
        let txn = db.begin_write().unwrap();
        start_merge(&txn, &SMALL).unwrap();
        txn.commit().unwrap();
        // Two slices, as a process that stops there would leave it.
        let mut filter = None;
        for _ in 0..2 {
            let txn = db.begin_write().unwrap();
            assert!(!merge_slice(&txn, &mut filter, &cat.filters, &SMALL).unwrap());
            txn.commit().unwrap();
        }
        assert!(state(&cat).merge.is_some());
        assert_same(&cat, &model);
        // Another process finishes it, rebuilding the new base's filter from its blocks.
        merge(db, &FilterCache::default(), &SMALL).unwrap();
        let s = state(&cat);
        assert!(s.merge.is_none() && s.newer.is_empty());
        assert_eq!(s.base.unwrap().rows, model.len() as u64);
        assert_same(&cat, &model);
    }

    #[test]
    fn filters_answer_most_lookups_of_absent_chunks() {
        let mut f = Filter::for_rows(10_000);
        for i in 0..10_000 {
            f.insert(&id(i).0);
        }
        let back = Filter::decode(&f.encode()).unwrap();
        assert!((0..10_000).all(|i| back.may_contain(&id(i).0)));
        let false_pos = (10_000..110_000)
            .filter(|i| back.may_contain(&id(*i).0))
            .count();
        assert!(false_pos < 300, "{false_pos} false positives in 100,000");
        let mut other = f.encode();
        other[0] = FILTER_VERSION + 1;
        assert!(Filter::decode(&other).is_none());
    }
}
