//! `reel purge --exported`: free the spool of packs whose every chunk is on tape.
//!
//! A pack goes when each of its file-data chunks is recorded on some tape (`tape_chunks`).
//! Its manifest and dump-record chunks stay on the spool: they are copied into a new pack
//! first, so `ls`, `list`, the restore plan and `check` work without tapes, and a restore
//! reads tapes only for file data. Order, for crash safety: the new pack is written and
//! fsynced, then one transaction indexes it and forgets the old packs and their chunks, then
//! the old files are deleted. A crash before the commit leaves a pack no catalog entry names;
//! after it, old files no entry names; `check` lists both as unreferenced (harmless).

use std::collections::{HashMap, HashSet};

use crate::catalog::PackRecord;
use crate::pack::{BlobKind, PackId};
use crate::spool::Spool;
use crate::store::{ChunkReader, StoreWriter};
use crate::{ChunkId, Result};

#[derive(Clone, Debug, Default)]
pub struct PurgeSummary {
    /// (pack number, pack id, bytes) of the packs removed (or that would be, with dry run).
    pub packs: Vec<(u64, PackId, u64)>,
    pub chunks: u64,
    pub bytes: u64,
    /// Packs kept although old enough: some chunk is on no tape, or they hold manifests.
    pub kept: u64,
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
    // A pack is purgeable until one of its chunks says otherwise.
    let mut keep: HashSet<u64> = HashSet::new();
    let mut chunk_count: HashMap<u64, u64> = HashMap::new();
    {
        let on_tapes = catalog.tape_index()?;
        for item in catalog.chunk_rows()? {
            let (id, loc) = item?;
            if !packs.contains_key(&loc.pack_no) || keep.contains(&loc.pack_no) {
                continue;
            }
            *chunk_count.entry(loc.pack_no).or_default() += 1;
            if loc.kind == BlobKind::Data && on_tapes.tapes_of(&id)?.is_empty() {
                keep.insert(loc.pack_no);
            }
        }
    }
    let mut out = PurgeSummary::default();
    let mut gone: Vec<(u64, PackRecord)> = packs
        .into_iter()
        .filter(|(no, _)| {
            let k = keep.contains(no);
            if k {
                out.kept += 1;
            }
            !k && chunk_count.contains_key(no)
        })
        .collect();
    gone.sort_by_key(|(no, _)| *no);
    for (no, r) in &gone {
        out.packs.push((*no, PackId(r.id), r.size));
        out.bytes += r.size;
        out.chunks += chunk_count[no];
    }
    drop(catalog);
    if dry_run || gone.is_empty() {
        return Ok(out);
    }
    let numbers: HashSet<u64> = gone.iter().map(|(no, _)| *no).collect();
    // The chunks of the doomed packs; manifests and dump records are carried over.
    let reader = ChunkReader::new(spool)?;
    let mut doomed: Vec<ChunkId> = Vec::new();
    let mut carry: Vec<(ChunkId, BlobKind, Vec<u8>)> = Vec::new();
    for item in spool.catalog.reader()?.chunk_rows()? {
        let (id, loc) = item?;
        if numbers.contains(&loc.pack_no) {
            doomed.push(id);
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
    for id in &doomed {
        chunks.remove(id)?;
    }
    drop(chunks);
    store.catalog().forget_packs(&gone_numbers, &gone_ids)?;
    for (id, kind, raw) in &carry {
        store.put_one(*id, raw, *kind)?;
    }
    // Dumps check reused files against the spool once a purge has happened (dump.rs).
    store.finish(|catalog, _| catalog.count_purge())?;
    // The files go only after the commit that forgets them.
    spool.pack_store().delete(&gone_ids)?;
    Ok(out)
}
