//! The `store` clone method: a volume captured straight into the store by the dump's own pass
//! over a tree (`scan`), with no owner yet: its dump settles what it owns.

use crate::dump::{PrevManifest, check_share, exclusions, scan};
use crate::fsutil;
use crate::progress::Progress;
use crate::record::{CloneRecord, CloneView};
use crate::spool::{CloneMethod, Spool};
use crate::store::StoreWriter;
use crate::timefmt;
use crate::{ChunkId, Result};

/// Capture volume `name` straight into the store as its new clone (`store` method): the
/// stat cache comes from its newest manifest (latest dump, or the clone it replaces), so only
/// changed files are read. Nothing is owned yet; `dump_clone` settles that. A tree the shrink
/// guard refuses (`opts.shrink`) is not committed.
pub fn capture_clone(
    spool: &Spool,
    name: &str,
    time_ns: i64,
    opts: &super::CloneOptions,
    progress: &dyn Progress,
) -> Result<CloneRecord> {
    let reread = opts.reread;
    let vol = spool.volume(name)?;
    let root = vol.path.clone();
    fsutil::check_root(name, &root)?;
    let dumps = spool.catalog.dumps(Some(name))?;
    timefmt::check_time(name, &dumps, time_ns)?;
    let old = spool.catalog.clone_of(name)?;
    let prev = if reread {
        None
    } else {
        let from_clone = old.as_ref().and_then(|c| match &c.view {
            CloneView::Manifest { chunks, .. }
                if dumps.last().is_none_or(|d| d.time_ns < c.time_ns) =>
            {
                Some(PrevManifest {
                    chunks: chunks.iter().map(|(id, n)| (ChunkId(*id), *n)).collect(),
                    scan_started_ns: c.scan_started_ns,
                    in_chain: false,
                    label: format!("manifest of the clone of {name}"),
                })
            }
            _ => None,
        });
        from_clone.or_else(|| {
            dumps.last().map(|p| PrevManifest {
                chunks: p.manifest_chunks(),
                scan_started_ns: p.scan_started_ns,
                in_chain: false,
                label: format!("manifest of dump {}", p.id),
            })
        })
    };
    let store = StoreWriter::new(spool)?;
    progress.message(&format!("cloning {name}"));
    let exclude = exclusions(spool, name)?;
    let s = scan(spool, store, &root, exclude, prev, None, None, progress)?;
    check_share(spool, name, dumps.last(), &s.totals(), opts.shrink)?;
    let mut rec = CloneRecord {
        version: crate::record::CLONE_RECORD_VERSION,
        volume: name.to_string(),
        time_ns,
        method: CloneMethod::Store,
        frozen_ns: 0,
        scan_started_ns: s.scan_started_ns,
        source: root.display().to_string(),
        view: CloneView::Manifest {
            chunks: s.manifest_chunks.clone(),
            bytes: s.manifest_bytes,
        },
        dumped: None,
        totals: s.totals(),
        warnings: s.warnings.clone(),
    };
    s.store.finish(|txn, stats| {
        rec.totals.new_chunks = stats.new_chunks;
        rec.totals.stored_bytes = stats.stored_bytes;
        rec.totals.new_raw_bytes = stats.new_raw_bytes;
        txn.put_clone(&rec)
    })?;
    Ok(rec)
}
