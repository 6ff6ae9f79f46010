//! Opening the catalog file: creating it, refusing a damaged or newer one with a message that
//! says what to do, catching redb's panics on damaged pages, and compaction.

use std::path::{Path, PathBuf};

use redb::{
    ConcurrencyMode, ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition,
};

use std::sync::Arc;

use super::tables::*;
use super::{Catalog, Handle, TUNING, chunk_runs};
use crate::error::Damaged;
use crate::{Error, Result};

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
        Error::damaged(
            Damaged::Catalog,
            format!(
                "catalog {} is damaged ({what}); rebuild it from the packs with `reel rebuild-catalog`",
                path.display()
            ),
        )
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
    /// Create a new, empty catalog. The file must not exist: reel makes it (mode 0600, like
    /// every file of a spool) and hands it to redb, which would otherwise create it with the
    /// umask's mode before the first page lands.
    pub fn create(path: &Path) -> Result<Catalog> {
        let file = crate::fsutil::new_file_options()
            .read(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let backend = redb::backends::FileBackend::new(file).map_err(|e| open_error(path, e))?;
        let db = builder()
            .create_with_backend(backend)
            .map_err(|e| open_error(path, e))?;
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
            txn.open_table(CHUNK_BLOCKS)?;
            txn.open_table(CHUNK_FILTERS)?;
            txn.open_table(OWNED)?;
            txn.open_table(CLONES)?;
        }
        txn.commit()?;
        Ok(Catalog::new(Handle::Write(Arc::new(db)), path))
    }

    fn new(handle: Handle, path: &Path) -> Catalog {
        Catalog {
            handle,
            path: path.to_path_buf(),
            filters: Default::default(),
            tuning: TUNING,
        }
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
        let cat = Catalog::new(Handle::Write(Arc::new(db)), path);
        if cat.check_format()? == Format::NeedsUpgrade {
            cat.upgrade()?;
        }
        Ok(cat)
    }

    /// Open for reading. A catalog left needing repair by a killed writer is repaired first
    /// (which needs the write side, so `repair` is called to take the spool lock).
    pub fn open_read(path: &Path, repair: impl Fn() -> Result<()>) -> Result<Catalog> {
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
        let cat = Catalog::new(Handle::Read(db), path);
        if cat.check_format()? == Format::NeedsUpgrade {
            // Upgraded by a writer, under the spool lock, then read.
            drop(cat);
            repair()?;
            let db = guard_open(path, || builder().open_read_only(path))?;
            let cat = Catalog::new(Handle::Read(db), path);
            cat.check_format()?;
            return Ok(cat);
        }
        Ok(cat)
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

    /// For tests of compaction: write `bytes` (rounded up to MiB) into a scratch table, then
    /// delete it, each in a transaction of its own, so the file has that much free space.
    #[doc(hidden)]
    pub fn fill_and_free(&self, bytes: u64) -> Result<()> {
        let scratch: TableDefinition<u64, &[u8]> = TableDefinition::new("scratch");
        let value = vec![7u8; 1 << 20];
        let w = self.writer()?;
        {
            let mut t = w.txn.open_table(scratch)?;
            for i in 0..bytes.div_ceil(1 << 20) {
                t.insert(i, value.as_slice())?;
            }
        }
        w.commit()?;
        let w = self.writer()?;
        w.txn.delete_table(scratch)?;
        w.commit()
    }

    /// Give back the space of pages freed by earlier transactions (redb keeps them for reuse;
    /// after a large dump the file can be twice its live size). Writer only.
    pub fn compact(&mut self) -> Result<bool> {
        match &mut self.handle {
            Handle::Write(db) => Arc::get_mut(db)
                .ok_or_else(|| Error::Catalog("compaction with a write transaction open".into()))?
                .compact()
                .map_err(|e| {
                    Error::Catalog(format!("{}: compaction failed: {e}", self.path.display()))
                }),
            Handle::Read(_) => Ok(false),
        }
    }

    /// Check the format entry, and read the first and last row of every table, so that a
    /// damaged file is found here, with a clear message, rather than in the middle of a
    /// command. redb may panic on a damaged page: that is caught and reported the same way.
    fn check_format(&self) -> Result<Format> {
        match guarded(|| self.check_format_inner()) {
            Ok(r) => r,
            Err(msg) => Err(self.damaged(msg)),
        }
    }

    fn check_format_inner(&self) -> Result<Format> {
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
        let format = if v == 1 {
            Format::NeedsUpgrade
        } else {
            Format::Current
        };
        if v != CATALOG_VERSION && v != 1 {
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
            .and_then(|()| touch(&txn, CHUNKS_V1))
            .and_then(|()| touch(&txn, CHUNK_BLOCKS))
            .and_then(|()| touch(&txn, CHUNK_FILTERS))
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
        Ok(format)
    }

    /// Bring a format 1 catalog to the current format, in one transaction: its chunk index
    /// becomes the base run (`chunk_runs`).
    fn upgrade(&self) -> Result<()> {
        let w = self.writer()?;
        w.txn.open_table(CHUNK_FILTERS)?;
        chunk_runs::adopt_table(&w.txn, CHUNKS_V1, &self.filters)?;
        w.txn
            .open_table(META)?
            .insert(META_FORMAT, CATALOG_VERSION.to_le_bytes().as_slice())?;
        w.commit()?;
        tracing::info!(
            "catalog {} upgraded to format {CATALOG_VERSION}",
            self.path.display()
        );
        Ok(())
    }
}

/// What `check_format` found.
#[derive(Debug, PartialEq, Eq)]
enum Format {
    Current,
    /// Format 1: readable once `Catalog::upgrade` has run.
    NeedsUpgrade,
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
        Err(msg) => Err(Error::damaged(
            Damaged::Catalog,
            format!(
                "catalog {} is damaged (it could not be opened: {msg}); rebuild it from the packs with `reel rebuild-catalog`",
                path.display()
            ),
        )),
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

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableTableMetadata;

    #[test]
    fn compacts_only_after_the_growth_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let mut cat = Catalog::create(&dir.path().join("catalog.redb")).unwrap();
        let before = cat.file_len();
        assert!(before > 0);
        // Grow the file, then free most of it: a compaction has something to give back.
        let key = |i: u32| *blake3::hash(&i.to_le_bytes()).as_bytes();
        let txn = cat.writer().unwrap();
        {
            let mut t = txn.txn.open_table(CHUNKS_V1).unwrap();
            for i in 0..40_000 {
                t.insert(key(i), [7u8; 33]).unwrap();
            }
        }
        txn.commit().unwrap();
        let txn = cat.writer().unwrap();
        {
            let mut t = txn.txn.open_table(CHUNKS_V1).unwrap();
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
        let txn = cat.reader().unwrap();
        assert_eq!(txn.txn.open_table(CHUNKS_V1).unwrap().len().unwrap(), 1_000);
    }

    /// A catalog as format 1 wrote it: `chunks` one B-tree, `format` 1.
    fn format_1_catalog(path: &Path, rows: u32) -> Vec<([u8; 32], [u8; 33])> {
        let cat = Catalog::create(path).unwrap();
        let w = cat.writer().unwrap();
        let mut want = Vec::new();
        {
            w.txn.delete_table(CHUNK_BLOCKS).unwrap();
            w.txn.delete_table(CHUNK_FILTERS).unwrap();
            let mut t = w.txn.open_table(CHUNKS_V1).unwrap();
            for i in 0..rows {
                let k = *blake3::hash(&i.to_le_bytes()).as_bytes();
                let mut v = [0u8; 33];
                v[..4].copy_from_slice(&i.to_le_bytes());
                t.insert(k, v).unwrap();
                want.push((k, v));
            }
            w.txn
                .open_table(META)
                .unwrap()
                .insert(META_FORMAT, 1u32.to_le_bytes().as_slice())
                .unwrap();
        }
        w.txn.commit().unwrap();
        want.sort();
        want
    }

    #[test]
    fn a_format_1_catalog_is_upgraded_when_opened_and_keeps_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.redb");
        let want = format_1_catalog(&path, 5_000);
        // A reader has a writer upgrade it first (the spool passes one that takes its lock).
        let upgraded = std::cell::Cell::new(0);
        let cat = Catalog::open_read(&path, || {
            upgraded.set(upgraded.get() + 1);
            drop(Catalog::open_write(&path)?);
            Ok(())
        })
        .unwrap();
        assert_eq!(upgraded.get(), 1);
        let r = cat.reader().unwrap();
        let rows: Vec<([u8; 32], [u8; 33])> = r
            .chunk_rows()
            .unwrap()
            .map(|row| {
                let (id, loc) = row.unwrap();
                (id.0, loc.encode())
            })
            .collect();
        assert!(rows == want, "rows differ after the upgrade");
        assert!(matches!(r.txn.open_table(CHUNKS_V1), Err(e) if table_missing(&e)));
        drop(r);
        drop(cat);
        // Now format 2: opening it again upgrades nothing.
        Catalog::open_read(&path, || panic!("no second upgrade")).unwrap();
    }
}
