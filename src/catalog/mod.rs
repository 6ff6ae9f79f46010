//! The catalog: a redb database of volumes' dumps, packs, the chunk index and the chunks each
//! dump owns. It is an index over the packs, not the only copy of the truth: every dump record
//! and manifest is also stored in packs (see docs/FORMAT.md, "Catalog").
//!
//! One writer at a time (the spool lock guarantees it); readers open the file read-only in
//! redb's `SingleWriter` mode, so `list`, `ls` and `restore` work while a dump runs and see only
//! committed dumps.
//!
//! The catalog is an API: its tables are private to this module, and the rest of reel calls
//! named operations on a [`Reader`] (a read transaction) or a [`Writer`] (the write
//! transaction), so a caller does several operations in one transaction and commits where
//! crash safety needs it. Loops over many rows take a handle that opens a table once
//! ([`ChunkIndex`], [`ChunkIndexMut`], [`Ownership`], [`OwnedIndex`], [`TapeIndex`]).
//!
//! Its files, by job: `tables` (definitions and `meta` keys), `open` (opening, damage,
//! compaction), `chunks` (the chunk index), `dumps` (dumps, volumes' dump index, owned chunks),
//! `owned_runs` (a dump's owned chunks while it is written),
//! `packs`, `meta` (counters), `clones`, `media` (tapes, tape chunks, plain exports) and
//! `doomed` (pack files waiting for readers).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, WriteTransaction};

mod chunk_runs;
mod chunks;
mod clones;
mod doomed;
mod dumps;
mod media;
mod meta;
mod open;
mod owned_runs;
mod packs;
mod tables;

pub use chunk_runs::{TUNING, Tuning};
pub use chunks::{ChunkIndex, ChunkIndexMut, ChunkLoc, ChunkRows, FrameSlot};
pub use dumps::{OwnedIndex, OwnedRows, Ownership};
pub use media::TapeIndex;
pub use open::{COMPACT_AFTER_GROWTH, install_damage_report_hook};
pub use owned_runs::{OwnedStaging, owned_slices};
pub use tables::CATALOG_VERSION;

/// The catalog's records (`crate::record`), by the names its operations use.
pub use crate::record::{DumpRecord, PackRecord};

use crate::error::Damaged;
use crate::record::CloneRecord;
use crate::{Error, Result};

/// Read access, shared by the writer's and the readers' handles.
enum Handle {
    /// Shared with the writer, whose commit goes on to merge the chunk index's runs.
    Write(Arc<Database>),
    Read(ReadOnlyDatabase),
}

pub struct Catalog {
    handle: Handle,
    path: PathBuf,
    /// The chunk index's Bloom filters, loaded once per run and shared by all transactions.
    filters: Arc<chunk_runs::FilterCache>,
    tuning: Tuning,
}

/// A read transaction: the catalog as it was committed when it began, however long it is held.
pub struct Reader<'c> {
    txn: ReadTransaction,
    catalog: &'c Catalog,
}

/// The write transaction. Nothing it does is seen until [`Writer::commit`]; dropped before
/// that, it leaves the catalog as it was (the crash-safe write order rests on this). There is
/// one at a time (redb waits for the previous one to end).
pub struct Writer {
    txn: WriteTransaction,
    db: Arc<Database>,
    filters: Arc<chunk_runs::FilterCache>,
    tuning: Tuning,
    /// The chunk index's rows this transaction added, loaded on first use.
    lsm: RefCell<Option<chunk_runs::Lsm>>,
}

impl Writer {
    /// Commit; then, if the chunk index's newer runs have grown enough, merge them into its base,
    /// a slice per transaction (`chunk_runs`). The commit stands whether or not the merge does.
    pub fn commit(self) -> Result<()> {
        let merge = match self.lsm.into_inner() {
            Some(mut lsm) => {
                lsm.settle(&self.txn, &self.filters)?;
                chunk_runs::merge_due(&lsm.view.state, &self.tuning)
            }
            None => false,
        };
        self.txn.commit()?;
        if merge {
            chunk_runs::merge(&self.db, &self.filters, &self.tuning)?;
        }
        Ok(())
    }
}

impl Catalog {
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn damaged(&self, what: impl std::fmt::Display) -> Error {
        Error::damaged(
            Damaged::Catalog,
            format!(
                "catalog {} is damaged ({what}); rebuild it from the packs with `reel rebuild-catalog`",
                self.path.display()
            ),
        )
    }

    /// A read transaction.
    pub fn reader(&self) -> Result<Reader<'_>> {
        Ok(Reader {
            txn: self.read()?,
            catalog: self,
        })
    }

    /// The write transaction (the writer's handle only).
    pub fn writer(&self) -> Result<Writer> {
        let Handle::Write(db) = &self.handle else {
            return Err(Error::Spool("catalog opened read-only".into()));
        };
        Ok(Writer {
            txn: db.begin_write()?,
            db: Arc::clone(db),
            filters: Arc::clone(&self.filters),
            tuning: self.tuning,
            lsm: RefCell::new(None),
        })
    }

    /// Set when and how much the chunk index merges (tests shrink it to exercise merges).
    #[doc(hidden)]
    pub fn set_tuning(&mut self, tuning: Tuning) {
        self.tuning = tuning;
    }

    /// When and how much the chunk index merges and owned rows are staged.
    pub fn tuning(&self) -> Tuning {
        self.tuning
    }

    fn read(&self) -> Result<ReadTransaction> {
        Ok(match &self.handle {
            Handle::Write(db) => db.begin_read()?,
            Handle::Read(db) => db.begin_read()?,
        })
    }

    // ----- single reads, each in a read transaction of its own -----

    pub fn dump(&self, id: u64) -> Result<Option<DumpRecord>> {
        self.reader()?.dump(id)
    }

    /// Every dump of `volume` (or of all volumes), in time order per volume.
    pub fn dumps(&self, volume: Option<&str>) -> Result<Vec<DumpRecord>> {
        self.reader()?.dumps(volume)
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

    /// The latest clone of `volume`, if any.
    pub fn clone_of(&self, volume: &str) -> Result<Option<CloneRecord>> {
        self.reader()?.clone_of(volume)
    }

    pub fn next_dump_id(&self) -> Result<u64> {
        self.reader()?.next_dump_id()
    }

    /// All packs: (number, record).
    pub fn packs(&self) -> Result<Vec<(u64, PackRecord)>> {
        self.reader()?.packs()
    }

    pub fn chunk_count(&self) -> Result<u64> {
        self.reader()?.chunk_index()?.row_count()
    }

    /// How many chunks a dump owns, and their stored bytes.
    pub fn owned_summary(&self, dump: u64) -> Result<(u64, u64)> {
        self.reader()?.owned_summary(dump)
    }
}
