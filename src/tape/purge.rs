//! `reel purge --exported`: free the spool of packs whose data is on tape and needed no more.
//!
//! A pack goes when it holds file data, each of its file-data chunks is recorded on some tape
//! (`tape_chunks`), and none of them is referenced by a volume's latest dump or latest clone:
//! those are the next dump's base (its unchanged files keep their chunks) and the users'
//! `.backup` view, and a purge that took them would make the next night read and store the
//! whole volume again. The latest state is marked from those manifests, as gc marks (8-byte
//! prefixes: a false match keeps a pack, the safe direction). A pack of manifests and records
//! alone has nothing to free and stays.
//!
//! A purged pack's manifest and dump-record chunks stay on the spool: they are copied into a
//! new pack first, so `ls`, `list`, the restore plan and `check` work without tapes, and a
//! restore reads tapes only for file data. Order, for crash safety: the new pack is written
//! and fsynced, then one transaction indexes it, forgets the old packs and their chunks and
//! records the old packs in `doomed`, as gc does. Their files are deleted afterwards by gc's
//! own `delete_doomed`, and only while no reader holds the readers lock: a `restore`, `cat`,
//! `mount` or `export-plain` that opened the catalog before the commit may still read them.
//! With a reader in they stay doomed, and the next purge or gc deletes them. A crash before
//! the commit leaves a pack no catalog entry names (`check` lists it as unreferenced,
//! harmless); after it, doomed files that the next purge or gc deletes.

use std::collections::{HashMap, HashSet};

use crate::catalog::{DumpRecord, PackRecord};
use crate::error::Damaged;
use crate::gc::{Doomed, MarkSet, delete_doomed, doomed_waiting};
use crate::manifest::ManifestReader;
use crate::pack::{BlobKind, PackId};
use crate::record::CloneView;
use crate::spool::Spool;
use crate::store::{ChunkReader, StoreWriter};
use crate::{ChunkId, Error, Result};

#[derive(Clone, Debug, Default)]
pub struct PurgeSummary {
    /// (pack number, pack id, bytes) of the packs removed (or that would be, with dry run).
    pub packs: Vec<(u64, PackId, u64)>,
    pub chunks: u64,
    pub bytes: u64,
    /// Packs kept although old enough because some file-data chunk in them is on no tape.
    pub kept: u64,
    /// Packs kept, all on tape, because a volume's latest dump or latest clone references
    /// data in them; and their bytes.
    pub latest: u64,
    pub latest_bytes: u64,
    /// Pack files deleted by this run, this run's and those an earlier purge or gc left
    /// waiting; and the packs out of the catalog whose files wait for readers (restore, cat,
    /// mount, export-plain) to finish (with dry run: those waiting now).
    pub doomed: Doomed,
}

/// Every chunk that the latest dump of each volume and each `store` clone reference, their
/// manifests' own chunks included.
fn latest_refs(spool: &Spool) -> Result<MarkSet> {
    let mut manifests: Vec<(Vec<(ChunkId, u32)>, String)> = Vec::new();
    {
        let catalog = spool.catalog.reader()?;
        let mut latest: HashMap<String, DumpRecord> = HashMap::new();
        for d in catalog.dumps_by_id()? {
            if latest.get(&d.volume).is_none_or(|l| l.time_ns < d.time_ns) {
                latest.insert(d.volume.clone(), d);
            }
        }
        for d in latest.into_values() {
            let what = format!(
                "manifest of dump {} (the latest of volume {})",
                d.id, d.volume
            );
            manifests.push((d.manifest_chunks(), what));
        }
        for c in catalog.clones()? {
            if let CloneView::Manifest { chunks, .. } = c.view {
                let chunks = chunks.iter().map(|(id, n)| (ChunkId(*id), *n)).collect();
                manifests.push((
                    chunks,
                    format!("manifest of the clone of volume {}", c.volume),
                ));
            }
        }
    }
    let reader = ChunkReader::new(spool)?;
    let mut set = MarkSet::default();
    for (chunks, what) in manifests {
        let stop = |e: Error| {
            Error::damaged(
                Damaged::Manifest {
                    dump: None,
                    offset: None,
                },
                format!(
                    "purge cannot read the {what} ({e}); it must know what the latest dumps and clones reference, so it removed nothing: run `reel check`"
                ),
            )
        };
        for (id, _) in &chunks {
            set.add(id);
        }
        for e in ManifestReader::new(reader.stream(chunks, what.clone())).map_err(stop)? {
            for (id, _) in e.map_err(stop)?.chunks() {
                set.add(&id);
            }
        }
    }
    set.compact();
    Ok(set)
}

/// Purge exported packs created before `cutoff_ns` (all when None).
pub fn purge_exported(
    spool: &Spool,
    cutoff_ns: Option<i64>,
    dry_run: bool,
) -> Result<PurgeSummary> {
    let catalog = spool.catalog.reader()?;
    let packs: HashMap<u64, PackRecord> = spool
        .catalog
        .packs()?
        .into_iter()
        .filter(|(_, r)| cutoff_ns.is_none_or(|c| r.created_ns < c))
        .collect();
    let latest = latest_refs(spool)?;
    // Per pack: its chunks, whether it holds file data, and what keeps it.
    let mut chunk_count: HashMap<u64, u64> = HashMap::new();
    let mut has_data: HashSet<u64> = HashSet::new();
    let mut no_tape: HashSet<u64> = HashSet::new();
    let mut in_latest: HashSet<u64> = HashSet::new();
    {
        let on_tapes = catalog.tape_index()?;
        for item in catalog.chunk_rows()? {
            let (id, loc) = item?;
            let no = loc.pack_no;
            if !packs.contains_key(&no) {
                continue;
            }
            *chunk_count.entry(no).or_default() += 1;
            if loc.kind != BlobKind::Data {
                continue;
            }
            has_data.insert(no);
            if !in_latest.contains(&no) && latest.contains(&id) {
                in_latest.insert(no);
            }
            if !no_tape.contains(&no) && on_tapes.tapes_of(&id)?.is_empty() {
                no_tape.insert(no);
            }
        }
    }
    let mut out = PurgeSummary::default();
    let mut gone: Vec<(u64, PackRecord)> = Vec::new();
    for (no, r) in packs {
        if no_tape.contains(&no) {
            out.kept += 1;
        } else if in_latest.contains(&no) {
            out.latest += 1;
            out.latest_bytes += r.size;
        } else if has_data.contains(&no) {
            gone.push((no, r));
        }
    }
    gone.sort_by_key(|(no, _)| *no);
    for (no, r) in &gone {
        out.packs.push((*no, PackId(r.id), r.size));
        out.bytes += r.size;
        out.chunks += chunk_count[no];
    }
    drop(catalog);
    if dry_run {
        out.doomed = doomed_waiting(spool)?;
        return Ok(out);
    }
    if gone.is_empty() {
        // Packs an earlier purge or gc left waiting for readers go now if they can.
        out.doomed = delete_doomed(spool)?;
        return Ok(out);
    }
    let numbers: HashSet<u64> = gone.iter().map(|(no, _)| *no).collect();
    // The chunks of the packs that go; manifests and dump records are carried over.
    let reader = ChunkReader::new(spool)?;
    let mut gone_chunks: Vec<ChunkId> = Vec::new();
    let mut carry: Vec<(ChunkId, BlobKind, Vec<u8>)> = Vec::new();
    for item in spool.catalog.reader()?.chunk_rows()? {
        let (id, loc) = item?;
        if numbers.contains(&loc.pack_no) {
            gone_chunks.push(id);
            if loc.kind != BlobKind::Data {
                let raw = reader.read(&id, &|| "a manifest kept on the spool".into())?;
                carry.push((id, loc.kind, raw));
            }
        }
    }
    drop(reader);
    let gone_numbers: Vec<u64> = gone.iter().map(|(no, _)| *no).collect();
    let gone_ids: Vec<PackId> = gone.iter().map(|(_, r)| PackId(r.id)).collect();
    let mut store = StoreWriter::new(spool)?;
    let mut chunks = store.catalog().chunk_index()?;
    for id in &gone_chunks {
        chunks.remove(id)?;
    }
    drop(chunks);
    store.catalog().forget_packs(&gone_numbers, &gone_ids)?;
    // In the transaction that forgets them: their files are deleted only when no reader can
    // still reach them through an older view of the catalog, by this run or a later one.
    store.catalog().doom_packs(&gone_ids)?;
    for (id, kind, raw) in &carry {
        store.put_one(*id, raw, *kind)?;
    }
    // Dumps check reused files against the spool once a purge has happened (dump.rs).
    store.finish(|catalog, _| catalog.count_purge())?;
    crate::failpoint::hit("purge-committed");
    out.doomed = delete_doomed(spool)?;
    Ok(out)
}
