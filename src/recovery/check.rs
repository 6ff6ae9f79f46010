//! Verification of a spool: the catalog against the packs, every dump's manifest against the
//! chunk index, and with `read_data` every chunk's bytes against its hash.
//!
//! Problems are collected, not fatal: the report lists each with the pack, dump and file it
//! touches, so the admin knows what a damaged pack costs.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;

use rayon::prelude::*;

use crate::catalog::{ChunkLoc, DumpRecord, PackRecord};
use crate::crypto::Keys;
use crate::manifest::ManifestReader;
use crate::pack::{self, BlobKind, PackId};
use crate::pack_store::PackStore;
use crate::progress::Progress;
use crate::spool::Spool;
use crate::store::ChunkReader;
use crate::{ChunkId, Result};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Problem {
    pub pack: Option<String>,
    pub dump: Option<u64>,
    pub volume: Option<String>,
    pub file: Option<String>,
    pub message: String,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CheckReport {
    pub packs: u64,
    pub chunks: u64,
    pub dumps: u64,
    pub bytes_read: u64,
    pub problems: Vec<Problem>,
    /// Packs in the pack store that the catalog does not name (left by an interrupted dump).
    pub unreferenced_packs: Vec<PathBuf>,
    /// Pack files gc took out of the catalog that wait for readers to finish (`doomed`).
    pub doomed_packs: u64,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

fn problem(pack: Option<String>, message: String) -> Problem {
    Problem {
        pack,
        dump: None,
        volume: None,
        file: None,
        message,
    }
}

/// Does a pack's own index entry describe the blob the chunk index points at?
fn index_agrees(e: &pack::BlobEntry, loc: &ChunkLoc, id: &ChunkId) -> bool {
    e.stored_len == loc.stored_len
        && e.compressed == loc.compressed
        && match loc.frame {
            None => e.id == *id && e.kind == loc.kind && e.raw_len == loc.raw_len,
            Some(f) => {
                e.kind == BlobKind::Frame
                    && e.raw_len == f.raw_len
                    && u64::from(f.inner) + u64::from(loc.raw_len) <= u64::from(f.raw_len)
            }
        }
}

pub fn check(spool: &Spool, read_data: bool, progress: &dyn Progress) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let open = spool.open_folders();
    if !open.is_empty() {
        let shown: Vec<String> = open.iter().map(|p| p.display().to_string()).collect();
        tracing::warn!(
            "spool folder{} {} can be entered by other users (an older reel made {} with the umask's mode); reel makes its folders 0700 but leaves existing ones alone: `chmod go= {}` makes them private",
            if open.len() == 1 { "" } else { "s" },
            shown.join(", "),
            if open.len() == 1 { "it" } else { "them" },
            shown.join(" ")
        );
    }
    let packs = spool.catalog.packs()?;
    report.packs = packs.len() as u64;
    let store = spool.pack_store().as_ref();
    let pack_names: HashMap<u64, String> = packs
        .iter()
        .map(|(no, r)| (*no, store.location(&PackId(r.id)).display().to_string()))
        .collect();

    progress.message("checking packs");
    progress.set_total(packs.iter().map(|(_, r)| r.size).sum());
    let indexes = check_packs(
        &packs,
        store,
        spool.keys(),
        &pack_names,
        read_data,
        progress,
        &mut report,
    );

    // The chunk index against the packs' own indexes.
    progress.message("checking the chunk index");
    let bad_chunks = check_chunk_index(spool, &pack_names, &indexes, &mut report)?;

    // Every dump's manifest, and every chunk it references.
    progress.message("checking dumps");
    check_dumps(spool, &bad_chunks, &mut report)?;

    // Packs in the store that no catalog entry names: harmless leftovers of an interrupted
    // dump.
    let known: HashSet<[u8; 32]> = packs.iter().map(|(_, r)| r.id).collect();
    let doomed = spool.catalog.reader()?.doomed_ids()?;
    for (id, _) in store.list()? {
        if doomed.contains(&id.0) {
            report.doomed_packs += 1;
        } else if !known.contains(&id.0) {
            report.unreferenced_packs.push(store.location(&id));
        }
    }
    Ok(report)
}

/// What checking one pack found.
struct PackCheck {
    no: u64,
    /// The pack's own index by offset, when it could be read.
    index: Option<HashMap<u64, pack::BlobEntry>>,
    problems: Vec<Problem>,
    /// Blobs that do not read back (`read_data` only): (offset, why).
    bad_blobs: Vec<(u64, String)>,
    bytes_read: u64,
}

/// What the packs' own indexes say, for the chunk index check.
#[derive(Default)]
struct PackIndexes {
    /// Each readable pack's own index, by offset (a frame holds many chunks at one offset).
    by_pack: HashMap<u64, HashMap<u64, pack::BlobEntry>>,
    /// Blobs found damaged by `read_data`: (pack number, offset).
    bad_blobs: HashSet<(u64, u64)>,
}

/// Check every pack in parallel; their problems go to `report`.
fn check_packs(
    packs: &[(u64, PackRecord)],
    store: &dyn PackStore,
    keys: &Keys,
    pack_names: &HashMap<u64, String>,
    read_data: bool,
    progress: &dyn Progress,
    report: &mut CheckReport,
) -> PackIndexes {
    let results: Vec<PackCheck> = packs
        .par_iter()
        .map(|(no, rec)| check_pack(*no, rec, store, keys, read_data, progress))
        .collect();
    let mut out = PackIndexes::default();
    for c in results {
        report.bytes_read += c.bytes_read;
        let name = pack_names.get(&c.no).cloned().unwrap_or_default();
        for (offset, msg) in c.bad_blobs {
            out.bad_blobs.insert((c.no, offset));
            report.problems.push(problem(
                Some(name.clone()),
                format!("blob at offset {offset}: {msg}"),
            ));
        }
        report.problems.extend(c.problems);
        if let Some(map) = c.index {
            out.by_pack.insert(c.no, map);
        }
    }
    out
}

/// Open pack `no`, compare its size with the catalog's record and read its index; with
/// `read_data`, hash the file and read every blob (frames: every chunk against its name).
fn check_pack(
    no: u64,
    rec: &PackRecord,
    store: &dyn PackStore,
    keys: &Keys,
    read_data: bool,
    progress: &dyn Progress,
) -> PackCheck {
    let id = PackId(rec.id);
    let name = store.location(&id).display().to_string();
    let mut out = PackCheck {
        no,
        index: None,
        problems: Vec::new(),
        bad_blobs: Vec::new(),
        bytes_read: 0,
    };
    let reader = match store.open(&id, keys) {
        Ok(r) => r,
        Err(e) => {
            out.problems.push(problem(
                Some(name.clone()),
                format!("pack cannot be opened: {e}"),
            ));
            return out;
        }
    };
    if reader.size() != rec.size {
        out.problems.push(problem(
            Some(name.clone()),
            format!(
                "pack is {} bytes, the catalog recorded {}",
                reader.size(),
                rec.size
            ),
        ));
    }
    let index = match reader.read_index() {
        Ok(i) => i,
        Err(e) => {
            out.problems.push(problem(
                Some(name.clone()),
                format!("pack index unreadable: {e}"),
            ));
            return out;
        }
    };
    if read_data {
        match reader.hash_file() {
            Ok(h) if h == id => {}
            Ok(h) => out.problems.push(problem(
                Some(name.clone()),
                format!(
                    "pack content hash is {}, its name says {}: the file was altered",
                    h.short(),
                    id.short()
                ),
            )),
            Err(e) => out
                .problems
                .push(problem(Some(name.clone()), format!("pack unreadable: {e}"))),
        }
        for entry in &index {
            out.bytes_read += u64::from(entry.stored_len);
            // Opened with its header (in a sealed pack the header must agree with the index
            // and the seal must hold), then decoded and verified against its id.
            let read = reader
                .read_opened(entry)
                .and_then(|opened| pack::decode_opened(keys, entry, &opened));
            match read {
                Err(e) => out.bad_blobs.push((entry.offset, e.to_string())),
                Ok(raw) if entry.kind == BlobKind::Frame => {
                    // The frame's name (its table) held; its chunks must match it.
                    let broken = crate::frame::parse(&raw).and_then(|table| {
                        table.into_iter().try_for_each(|(cid, r)| {
                            crate::frame::verified(keys, &raw, &cid, r).map(drop)
                        })
                    });
                    if let Err(e) = broken {
                        out.bad_blobs.push((entry.offset, e.to_string()));
                    }
                }
                Ok(_) => {}
            }
        }
        progress.advance(rec.size);
    }
    out.index = Some(index.into_iter().map(|e| (e.offset, e)).collect());
    out
}

/// Check every chunk index row against the pack it names. Returns the chunks known to be
/// unreadable or wrong, with the pack they are in.
fn check_chunk_index(
    spool: &Spool,
    pack_names: &HashMap<u64, String>,
    indexes: &PackIndexes,
    report: &mut CheckReport,
) -> Result<HashMap<ChunkId, String>> {
    let mut bad_chunks: HashMap<ChunkId, String> = HashMap::new();
    for row in spool.catalog.reader()?.chunk_rows()? {
        let (id, loc) = row?;
        report.chunks += 1;
        match (
            pack_names.get(&loc.pack_no),
            indexes.by_pack.get(&loc.pack_no),
        ) {
            (None, _) => {
                report.problems.push(problem(
                    None,
                    format!(
                        "chunk {} is indexed in pack number {}, which the catalog does not know",
                        id.short(),
                        loc.pack_no
                    ),
                ));
                bad_chunks.insert(id, format!("pack number {}", loc.pack_no));
            }
            (Some(name), Some(_)) if indexes.bad_blobs.contains(&(loc.pack_no, loc.offset)) => {
                bad_chunks.insert(id, name.clone());
            }
            (Some(name), Some(index)) => match index.get(&loc.offset) {
                Some(e) if index_agrees(e, &loc, &id) => {}
                _ => {
                    report.problems.push(problem(
                        Some(name.clone()),
                        format!(
                            "chunk {} is indexed in this pack but the pack's own index disagrees",
                            id.short()
                        ),
                    ));
                    bad_chunks.insert(id, name.clone());
                }
            },
            (Some(name), None) => {
                bad_chunks.insert(id, name.clone());
            }
        }
    }
    Ok(bad_chunks)
}

/// Check every dump's manifest and the chunks it references.
fn check_dumps(
    spool: &Spool,
    bad_chunks: &HashMap<ChunkId, String>,
    report: &mut CheckReport,
) -> Result<()> {
    let reader = ChunkReader::new(spool)?;
    let dumps = spool.catalog.dumps(None)?;
    report.dumps = dumps.len() as u64;
    for d in &dumps {
        let issues = check_dump(spool, &reader, d, bad_chunks)?;
        report.problems.extend(issues);
    }
    Ok(())
}

/// The problems of dump `d`: damaged manifest chunks, an unreadable manifest, and chunks that
/// are damaged, or neither indexed nor on a tape.
fn check_dump(
    spool: &Spool,
    reader: &ChunkReader,
    d: &DumpRecord,
    bad_chunks: &HashMap<ChunkId, String>,
) -> Result<BTreeSet<Problem>> {
    let mut issues: BTreeSet<Problem> = BTreeSet::new();
    let dump_problem = |pack: Option<String>, file: Option<String>, message: String| Problem {
        pack,
        dump: Some(d.id),
        volume: Some(d.volume.clone()),
        file,
        message,
    };
    for (id, _) in d.manifest_chunks() {
        if let Some(p) = bad_chunks.get(&id) {
            issues.insert(dump_problem(
                Some(p.clone()),
                None,
                format!("manifest chunk {} is damaged", id.short()),
            ));
        }
    }
    let stream = reader.stream(d.manifest_chunks(), format!("manifest of dump {}", d.id));
    let manifest = match ManifestReader::new(stream) {
        Ok(m) => Some(m),
        Err(e) => {
            issues.insert(dump_problem(
                None,
                None,
                format!("manifest unreadable: {e}"),
            ));
            None
        }
    };
    let catalog = spool.catalog.reader()?;
    let chunks = catalog.chunk_index()?;
    let tapes = catalog.tape_index()?;
    for entry in manifest.into_iter().flatten() {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                issues.insert(dump_problem(
                    None,
                    None,
                    format!("manifest unreadable: {e}"),
                ));
                break;
            }
        };
        for (id, _) in entry.chunks() {
            if let Some(p) = bad_chunks.get(&id) {
                issues.insert(dump_problem(
                    Some(p.clone()),
                    Some(entry.display_path()),
                    format!("chunk {} is damaged or missing", id.short()),
                ));
            } else if !chunks.contains(&id)? && tapes.tapes_of(&id)?.is_empty() {
                issues.insert(dump_problem(
                    None,
                    Some(entry.display_path()),
                    format!(
                        "chunk {} is neither in the chunk index nor on any tape",
                        id.short()
                    ),
                ));
            }
        }
    }
    Ok(issues)
}
