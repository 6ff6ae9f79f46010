//! Coda's merge: record a synthetic level 0 for a point in time. Every manifest is complete, so
//! the new dump shares the manifest of the dump current at that time and no data is copied;
//! it owns every chunk it references (its chain is itself), so a later export of it carries
//! the whole tree.

use crate::catalog::DumpRecord;
use crate::pack::BlobKind;
use crate::record::ScanTotals;
use crate::spool::Spool;
use crate::store::{ChunkReader, StoreWriter};
use crate::{ChunkId, Error, Result};

pub fn merge(spool: &Spool, volume: &str, at: i64) -> Result<DumpRecord> {
    spool.known_volume(volume)?;
    let src = spool.catalog.dump_at(volume, at)?.ok_or_else(|| {
        Error::usage(format!("volume {volume} has no dump at or before that time; `reel list {volume}` shows its dumps"))
    })?;
    let started = std::time::Instant::now();
    let mut store = StoreWriter::new(spool)?;
    store.catalog().clean_uncommitted()?;
    let id = store.catalog().next_dump_id()?;
    let reader = ChunkReader::new(spool)?;
    store.record_owned(
        id,
        &[],
        &src.manifest_chunks()
            .iter()
            .map(|(c, _)| *c)
            .collect::<Vec<_>>(),
    )?;
    let manifest = reader.manifest(&src)?;
    let mut refs: Vec<ChunkId> = Vec::new();
    for e in manifest {
        refs.extend(e?.chunks().map(|(c, _)| c));
        if refs.len() >= 65_536 {
            store.record_owned(id, &[], &refs)?;
            refs.clear();
        }
    }
    store.record_owned(id, &[], &refs)?;
    let (owned_chunks, owned_bytes) = store.fold_owned(id)?;
    let mut rec = DumpRecord {
        id,
        level: 0,
        requested_level: 0,
        base: None,
        chain: vec![],
        merged_from: Some(src.id),
        totals: ScanTotals {
            read_bytes: 0,
            new_chunks: 0,
            stored_bytes: 0,
            new_raw_bytes: 0,
            ..src.totals
        },
        owned_chunks,
        owned_bytes,
        warnings: vec![],
        ..src.clone()
    };
    rec.duration_ns = started.elapsed().as_nanos() as u64;
    let blob = rec.encode();
    store.put_one(store.keys().chunk_id(&blob), &blob, BlobKind::DumpRecord)?;
    let stats = store.finish(|txn, stats| {
        rec.totals.stored_bytes = stats.stored_bytes;
        txn.record_dump(&rec)?;
        txn.set_next_dump_id(id + 1)
    })?;
    rec.totals.stored_bytes = stats.stored_bytes;
    Ok(rec)
}
