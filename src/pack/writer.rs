//! Writing packs: [`PackWriter`] appends blobs to a tmp file, [`ClosedPack`] is a complete
//! pack under its tmp name ([`StagedPack`], what a pack store's `put` takes, and its index
//! entries), and [`BackgroundPack`] does the writing, closing and putting on a thread of its own.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::blob::EncodedBlob;
use super::dir::place;
use super::format::{
    BLOB_HEADER_LEN, BlobEntry, BlobKind, FH_FLAGS, FH_MAGIC, FH_VERSION, FILE_HEADER_LEN,
    FILE_MAGIC, FOOTER_LEN, INDEX_ENTRY_LEN, PACK_SEALED, PackId, VERSION, blob_aad,
    encode_blob_header, encode_footer, encode_index_entry, index_aad, seal_overhead,
};
use crate::crypto::Keys;
use crate::error::{Error, IoContext, Result};
use crate::types::ChunkId;

/// A writer starts a new pack once the current one reaches this size.
pub const PACK_TARGET_SIZE: u64 = 32 << 20;

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
    /// The spool's keys: with a sealer, every blob's stored bytes and the index are sealed.
    keys: Keys,
    /// Where a borrowed blob is sealed ([`PackWriter::add`]), reused from blob to blob.
    scratch: Vec<u8>,
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
    /// Create a new pack file with a unique name in `tmp_dir` and write its header. With an
    /// encrypted spool's `keys` the pack is sealed (header flag, sealed blobs and index).
    pub fn create(tmp_dir: &Path, keys: &Keys) -> Result<PackWriter> {
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
        let file = crate::fsutil::new_file_options()
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
            keys: keys.clone(),
            scratch: Vec::new(),
        };
        let flags = if keys.is_encrypted() { PACK_SEALED } else { 0 };
        let mut h = [0u8; FILE_HEADER_LEN];
        h[FH_MAGIC..FH_MAGIC + 8].copy_from_slice(&FILE_MAGIC);
        h[FH_VERSION..FH_VERSION + 4].copy_from_slice(&VERSION.to_le_bytes());
        h[FH_FLAGS..FH_FLAGS + 4].copy_from_slice(&flags.to_le_bytes());
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

    /// Append one blob (header + stored bytes). The caller vouches that `id` is the blob's id
    /// under the spool's keys (`Keys::chunk_id` of its raw bytes, `frame::id` of a frame);
    /// readers verify it. In a sealed pack the stored bytes are sealed (copied into a reused
    /// buffer first: the blob is borrowed).
    pub fn add(&mut self, id: ChunkId, kind: BlobKind, blob: &EncodedBlob) -> Result<BlobEntry> {
        let sealed = self.keys.is_encrypted();
        let entry = next_entry(self.size, id, kind, blob, sealed)?;
        self.write(&encode_blob_header(&entry))?;
        let keys = self.keys.clone();
        match keys.sealer() {
            None => self.write(&blob.data)?,
            Some(sealer) => {
                let mut scratch = std::mem::take(&mut self.scratch);
                scratch.clear();
                sealer.seal_into(&blob_aad(&entry), &blob.data, &mut scratch)?;
                let written = self.write(&scratch);
                self.scratch = scratch;
                written?;
            }
        }
        self.entries.push(entry.clone());
        Ok(entry)
    }

    /// [`PackWriter::add`] of a blob the writer may change: in a sealed pack its bytes are
    /// sealed in place and written with their nonce and tag, without a copy.
    pub fn add_owned(
        &mut self,
        id: ChunkId,
        kind: BlobKind,
        mut blob: EncodedBlob,
    ) -> Result<BlobEntry> {
        let keys = self.keys.clone();
        let Some(sealer) = keys.sealer() else {
            return self.add(id, kind, &blob);
        };
        let entry = next_entry(self.size, id, kind, &blob, true)?;
        self.write(&encode_blob_header(&entry))?;
        let (nonce, tag) = sealer.seal_detached(&blob_aad(&entry), &mut blob.data)?;
        self.write(&nonce)?;
        self.write(&blob.data)?;
        self.write(&tag)?;
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

    /// Write index and footer, fsync, rename to [`pack_path`](super::pack_path) and fsync the
    /// directory.
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
        if let Some(sealer) = self.keys.sealer() {
            let count = self.entries.len() as u64;
            index = sealer.seal(&index_aad(count), &index)?;
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
            staged: StagedPack {
                file: Some(file),
                path: std::mem::take(&mut self.tmp_path),
                id: PackId(*self.hasher.finalize().as_bytes()),
                size: self.size,
                moved: false,
            },
            entries: std::mem::take(&mut self.entries),
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
fn next_entry(
    size: u64,
    id: ChunkId,
    kind: BlobKind,
    blob: &EncodedBlob,
    sealed: bool,
) -> Result<BlobEntry> {
    let stored_len = u32::try_from(blob.data.len())
        .ok()
        .and_then(|l| l.checked_add(seal_overhead(sealed)));
    let stored_len = stored_len.ok_or_else(|| {
        Error::usage(format!(
            "blob {} is {} bytes; a pack blob must be under 4 GiB",
            id.short(),
            blob.data.len()
        ))
    })?;
    if !blob.compressed && blob.data.len() != blob.raw_len as usize {
        return Err(Error::usage(format!(
            "blob {}: uncompressed but {} stored bytes for raw length {}",
            id.short(),
            blob.data.len(),
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
/// alone). `seal` asks for the index and footer and for the `put` that makes the pack durable
/// where packs live (a pack store's); [`SealedPack::wait`] gives the stored pack. An error of
/// the thread (a full disk) comes back from the next `add` or from `wait`. Dropped unsealed,
/// the pack's tmp file is removed.
pub struct BackgroundPack {
    jobs: Option<std::sync::mpsc::SyncSender<PackJob>>,
    thread: Option<std::thread::JoinHandle<Result<StoredPack>>>,
    size: u64,
    blobs: usize,
    sealed: bool,
}

/// What makes a staged pack durable where packs live (a pack store's `put`), run on the pack's
/// own thread. The staged file is its to move or copy; dropped, it removes itself.
pub type PutPack = Box<dyn FnOnce(StagedPack) -> Result<()> + Send>;

enum PackJob {
    Blob(ChunkId, BlobKind, EncodedBlob),
    Seal(PutPack),
}

/// Blobs handed over and not yet written, at most: a frame's blob is 1-4 MiB.
const BACKGROUND_QUEUE: usize = 4;

impl BackgroundPack {
    /// Create the pack's tmp file in `tmp_dir` (an error here is the caller's at once) and
    /// start its thread.
    pub fn start(tmp_dir: &Path, keys: &Keys) -> Result<BackgroundPack> {
        let mut writer = PackWriter::create(tmp_dir, keys)?;
        let size = writer.size();
        let (jobs, queue) = std::sync::mpsc::sync_channel(BACKGROUND_QUEUE);
        let run = move || -> Result<StoredPack> {
            for job in queue {
                match job {
                    PackJob::Blob(id, kind, blob) => {
                        writer.add_owned(id, kind, blob)?;
                    }
                    PackJob::Seal(put) => {
                        let (staged, entries) = writer.close()?.into_parts();
                        let (id, size) = (*staged.id(), staged.size());
                        put(staged)?;
                        crate::failpoint::hit("pack-renamed");
                        return Ok(StoredPack { id, size, entries });
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
            sealed: keys.is_encrypted(),
        })
    }

    /// Hand one blob over; its entry, as [`PackWriter::add`] would give it.
    pub fn add(&mut self, id: ChunkId, kind: BlobKind, blob: EncodedBlob) -> Result<BlobEntry> {
        let entry = next_entry(self.size, id, kind, &blob, self.sealed)?;
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

    /// Blobs handed over so far.
    pub fn blob_count(&self) -> usize {
        self.blobs
    }

    /// Let the thread write the index and footer and `put` the staged pack (a pack store's
    /// `put`: for a directory, fsync and rename into `packs/ab/`). Returns at once.
    pub fn seal(mut self, put: PutPack) -> Result<SealedPack> {
        let jobs = self.jobs.take();
        let sealed = jobs.is_some_and(|j| j.send(PackJob::Seal(put)).is_ok());
        if !sealed {
            return Err(self.stopped());
        }
        let size = self.size
            + (self.blobs * INDEX_ENTRY_LEN) as u64
            + u64::from(seal_overhead(self.sealed))
            + FOOTER_LEN as u64;
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
    thread: std::thread::JoinHandle<Result<StoredPack>>,
    size: u64,
}

impl SealedPack {
    /// The whole file's size (header, blobs, index and footer).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Wait until the pack is durable where packs live (its `put` returned).
    pub fn wait(self) -> Result<StoredPack> {
        self.thread
            .join()
            .unwrap_or_else(|_| Err(pack_thread_panicked()))
    }
}

/// A pack its store holds durably: its name, size and index entries.
#[derive(Clone, Debug)]
pub struct StoredPack {
    pub id: PackId,
    pub size: u64,
    pub entries: Vec<BlobEntry>,
}

/// A pack that is durable under its final name in a packs directory ([`PackWriter::finish`]).
#[derive(Clone, Debug)]
pub struct FinishedPack {
    pub id: PackId,
    pub path: PathBuf,
    pub size: u64,
    pub entries: Vec<BlobEntry>,
}

/// A pack with all its bytes written, under its tmp name: its staged file and its index
/// entries. `persist` makes it durable in a packs directory; a pack store's `put` takes the
/// staged file ([`ClosedPack::into_parts`]). Dropping it unpersisted removes the tmp file.
#[derive(Debug)]
pub struct ClosedPack {
    staged: StagedPack,
    entries: Vec<BlobEntry>,
}

impl ClosedPack {
    pub fn id(&self) -> &PackId {
        self.staged.id()
    }

    /// The whole file's size (header, blobs, index and footer).
    pub fn size(&self) -> u64 {
        self.staged.size()
    }

    pub fn entries(&self) -> &[BlobEntry] {
        &self.entries
    }

    /// The staged file (for a pack store's `put`) and the index entries (for the catalog).
    pub fn into_parts(self) -> (StagedPack, Vec<BlobEntry>) {
        (self.staged, self.entries)
    }

    /// Fsync, rename to [`pack_path`](super::pack_path) and fsync the directory ([`place`]).
    ///
    /// On error before the rename the tmp file is removed; on an error after it (fsync of the
    /// directory) the renamed file is removed again, since nothing names it yet, unless a file
    /// of that name (the same bytes) was there before.
    pub fn persist(self, packs_dir: &Path) -> Result<FinishedPack> {
        let (staged, entries) = self.into_parts();
        let (id, size) = (*staged.id(), staged.size());
        let path = place(staged, packs_dir)?;
        Ok(FinishedPack {
            id,
            path,
            size,
            entries,
        })
    }
}

/// A complete pack in a local file under its tmp name: named and sized, durable nowhere yet.
/// This is what a pack store's `put` takes; dropped before a store moved the file away
/// ([`StagedPack::moved`]), it removes the file.
#[derive(Debug)]
pub struct StagedPack {
    /// `None` only while dropping.
    file: Option<File>,
    path: PathBuf,
    id: PackId,
    size: u64,
    /// Set once the file has been moved away (renamed into place): nothing left to remove.
    moved: bool,
}

impl StagedPack {
    /// The pack's name: the blake3 of its bytes.
    pub fn id(&self) -> &PackId {
        &self.id
    }

    /// The whole file's size (header, blobs, index and footer).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The tmp file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fsync the tmp file: its bytes are on the local disk. Then drop its pages from the page
    /// cache: a pack is read again only by a restore, and a dump that kept gigabytes of them
    /// cached pushed out what the site's other programs had there (and, on a virtual machine
    /// whose memory is touched for the first time, spent more time in the kernel's copies than
    /// hashing and compressing).
    pub fn sync(&self) -> Result<()> {
        match &self.file {
            Some(f) => {
                f.sync_all().at(&self.path)?;
                // Advice only: a kernel that ignores it loses nothing.
                let _ = rustix::fs::fadvise(f, 0, None, rustix::fs::Advice::DontNeed);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// The pack's bytes, for a store that keeps them elsewhere than in a local file.
    pub fn read_all(&self) -> Result<Vec<u8>> {
        // The writer's handle is write-only: read through a handle of its own.
        let bytes = fs::read(&self.path).at(&self.path)?;
        if bytes.len() as u64 != self.size {
            return Err(Error::io(
                &self.path,
                std::io::Error::other(format!(
                    "staged pack is {} bytes, {} were written",
                    bytes.len(),
                    self.size
                )),
            ));
        }
        Ok(bytes)
    }

    /// A whole pack file written by other means under `tmp/` (a copy of a tape's pack, of any
    /// pack format), whose bytes the caller hashed to `id`. Removed on drop, as a written one.
    pub fn adopt(path: PathBuf, id: PackId) -> Result<StagedPack> {
        let opened = File::open(&path).and_then(|f| Ok((f.metadata()?.len(), f)));
        match opened {
            Ok((size, file)) => Ok(StagedPack {
                file: Some(file),
                path,
                id,
                size,
                moved: false,
            }),
            Err(e) => {
                let _ = fs::remove_file(&path);
                Err(Error::io(&path, e))
            }
        }
    }

    /// The store moved the file away (renamed it into place): it is not this one's to remove.
    pub fn moved(mut self) {
        self.moved = true;
    }
}

impl Drop for StagedPack {
    fn drop(&mut self) {
        drop(self.file.take());
        if !self.moved {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::tests::{spool, text, tmp_is_empty};
    use crate::pack::{encode_blob, list_packs};

    /// A `put` into a packs directory.
    fn into_dir(dir: &Path) -> PutPack {
        let dir = dir.to_path_buf();
        Box::new(move |staged| place(staged, &dir).map(drop))
    }

    #[test]
    fn abandon_and_drop_remove_the_tmp_file() {
        let s = spool();
        let mut w = PackWriter::create(&s.tmp, &crate::crypto::Keys::plain()).unwrap();
        w.add(ChunkId::of(b"x"), BlobKind::Data, &encode_blob(b"x", 3))
            .unwrap();
        assert!(!tmp_is_empty(&s));
        w.abandon();
        assert!(tmp_is_empty(&s));
        let w = PackWriter::create(&s.tmp, &crate::crypto::Keys::plain()).unwrap();
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
            let mut w = PackWriter::create(&s.tmp, &crate::crypto::Keys::plain()).unwrap();
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
        let mut w = PackWriter::create(&s.tmp, &crate::crypto::Keys::plain()).unwrap();
        let mut bg = BackgroundPack::start(&s.tmp, &crate::crypto::Keys::plain()).unwrap();
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
        let sealed = bg.seal(into_dir(&s.packs)).unwrap();
        let size = sealed.size();
        let done = sealed.wait().unwrap();
        let plain = w.finish(&s.packs).unwrap();
        assert_eq!(
            (done.id, done.size, &done.entries),
            (plain.id, size, &plain.entries)
        );
        assert_eq!(
            fs::read(crate::pack::pack_path(&s.packs, &done.id)).unwrap(),
            fs::read(&plain.path).unwrap()
        );
        assert!(tmp_is_empty(&s));

        // Dropped unsealed: the tmp file goes, no pack appears.
        let before = list_packs(&s.packs).unwrap().len();
        let mut bg = BackgroundPack::start(&s.tmp, &crate::crypto::Keys::plain()).unwrap();
        bg.add(ChunkId::of(b"y"), BlobKind::Data, encode_blob(b"y", 3))
            .unwrap();
        drop(bg);
        assert!(tmp_is_empty(&s));
        assert_eq!(list_packs(&s.packs).unwrap().len(), before);

        // The thread's own error (here: the packs directory is a file) comes back from wait,
        // and the tmp file is removed.
        let not_a_dir = s.tmp.parent().unwrap().join("not-a-dir");
        fs::write(&not_a_dir, b"").unwrap();
        let mut bg = BackgroundPack::start(&s.tmp, &crate::crypto::Keys::plain()).unwrap();
        bg.add(ChunkId::of(b"z"), BlobKind::Data, encode_blob(b"z", 3))
            .unwrap();
        let err = bg
            .seal(into_dir(&not_a_dir))
            .unwrap()
            .wait()
            .unwrap_err()
            .to_string();
        assert!(err.contains("not-a-dir"), "{err}");
        assert!(tmp_is_empty(&s));
    }

    /// A sealed pack reads back (index, blobs, salvage walk, frames located by a chunk) with
    /// its keys, is the size `seal` announced, shows none of its content, and is refused by a
    /// plain spool's reader as a plain pack is by a sealed spool's.
    #[test]
    fn sealed_packs_round_trip_and_are_refused_by_the_other_kind_of_spool() {
        use crate::crypto::{Keys, MasterKey};
        use crate::pack::PackReader;
        let s = spool();
        let keys = Keys::from_master(&MasterKey::generate().unwrap());
        let plain = Keys::plain();
        let raws: Vec<Vec<u8>> = vec![
            text(1, 20_000),
            crate::chunk::tests::random(2, 9000),
            Vec::new(),
        ];
        let (frame, _) = crate::frame::build(&[(keys.chunk_id(&raws[0]), &raws[0])]);
        let frame_id = crate::frame::id(&keys, &frame).unwrap();
        let mut w = PackWriter::create(&s.tmp, &keys).unwrap();
        let mut bg = BackgroundPack::start(&s.tmp, &keys).unwrap();
        let mut entries = Vec::new();
        for raw in &raws {
            let (id, blob) = (keys.chunk_id(raw), encode_blob(raw, 3));
            let a = w.add(id, BlobKind::Data, &blob).unwrap();
            assert_eq!(a, bg.add(id, BlobKind::Data, blob).unwrap());
            entries.push(a);
        }
        let blob = encode_blob(&frame, 3);
        let fe = w.add(frame_id, BlobKind::Frame, &blob).unwrap();
        bg.add(frame_id, BlobKind::Frame, blob).unwrap();
        let sealed = bg.seal(into_dir(&s.packs)).unwrap();
        let announced = sealed.size();
        let done = sealed.wait().unwrap();
        assert_eq!(done.size, announced);
        let p = w.finish(&s.packs).unwrap();
        assert_eq!(p.size, done.size);
        assert_ne!(p.id, done.id, "random nonces: two sealings differ");
        let bytes = fs::read(&p.path).unwrap();
        assert!(!bytes.windows(12).any(|w| w == &raws[0][100..112]));

        let r = PackReader::open(&p.path, &keys).unwrap();
        let index = r.read_index().unwrap();
        assert_eq!(index.len(), 4);
        for (e, raw) in index.iter().zip(&raws) {
            assert_eq!(e.stored_len as usize, encode_blob(raw, 3).data.len() + 40);
            assert_eq!(&r.read_blob(e).unwrap(), raw);
        }
        assert_eq!(r.read_blob(&index[3]).unwrap(), frame);
        assert_eq!(r.scan().unwrap().entries, index);
        // A frame located by one of its chunks: the frame's id comes from its header.
        let by_chunk = BlobEntry {
            id: keys.chunk_id(&raws[0]),
            ..fe.clone()
        };
        let opened = r.read_opened(&by_chunk).unwrap();
        let got = crate::pack::decode_opened(&keys, &fe, &opened).unwrap();
        assert_eq!(got, frame);

        let err = PackReader::open(&p.path, &plain).unwrap_err().to_string();
        assert!(err.contains("sealed"), "{err}");
        let other = Keys::from_master(&MasterKey::generate().unwrap());
        let err = PackReader::open(&p.path, &other)
            .unwrap()
            .read_index()
            .unwrap_err()
            .to_string();
        assert!(err.contains("authentication failed"), "{err}");
        let mut pw = PackWriter::create(&s.tmp, &plain).unwrap();
        pw.add(ChunkId::of(b"x"), BlobKind::Data, &encode_blob(b"x", 3))
            .unwrap();
        let plain_pack = pw.finish(&s.packs).unwrap();
        let err = PackReader::open(&plain_pack.path, &keys)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not sealed"), "{err}");
    }

    #[test]
    fn add_refuses_inconsistent_blobs() {
        let s = spool();
        let mut w = PackWriter::create(&s.tmp, &crate::crypto::Keys::plain()).unwrap();
        let bad = EncodedBlob {
            data: vec![1, 2, 3],
            compressed: false,
            raw_len: 4,
        };
        assert!(w.add(ChunkId::of(b"x"), BlobKind::Data, &bad).is_err());
    }
}
