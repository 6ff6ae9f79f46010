//! Importing a verified payload: adopt the packs holding chunks the spool lacks, add the dumps
//! it does not have (bases and chains mapped to new ids), record the tape.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::catalog::{ChunkLoc, DumpRecord};
use crate::error::Damaged;
use crate::error::IoContext;
use crate::pack::{BlobKind, PackId, StagedPack};
use crate::record::{TAPE_RECORD_VERSION, TapeDumpSummary};
use crate::spool::Spool;
use crate::store::{ChunkReader, StoreWriter, stored_share};
use crate::tape::media::{self, TapeRecord};
use crate::tape::payload::format::{
    CATALOG_FILE, DumpRef, LABEL_FILE, TapeCatalog, TapeDump, catalog_chunks, dump_name, pack_file,
    tape_fingerprint,
};
use crate::tape::payload::key::{TapeKey, same_key_as_spool};
use crate::tape::payload::verify::verify_payload_with;
use crate::{ChunkId, Error, Result};

/// What an import added.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub label: String,
    /// New dumps: (new id, volume, time ns, level).
    pub dumps_added: Vec<(u64, String, i64, u8)>,
    /// Dumps of the tape the spool already had (matched by volume and time).
    pub dumps_present: u64,
    pub packs_adopted: u64,
    pub pack_bytes: u64,
    pub chunks_added: u64,
    /// Whether the tape was newly recorded in the media catalog.
    pub tape_recorded: bool,
    /// Tapes this tape's dumps also need that the media catalog does not know.
    pub tapes_also_needed: Vec<String>,
}

/// Copy `src` to `tmp/`, fsynced, checking its blake3 equals `id`.
fn copy_verified(src: &Path, tmp_dir: &Path, id: &PackId) -> Result<PathBuf> {
    let tmp = tmp_dir.join(format!("import-{}-{}.tmp", std::process::id(), id.to_hex()));
    let mut input = File::open(src).at(src)?;
    let mut out = crate::fsutil::create_file(&tmp).at(&tmp)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let res = (|| -> Result<()> {
        loop {
            let n = input.read(&mut buf).at(src)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).at(&tmp)?;
        }
        out.sync_all().at(&tmp)?;
        if hasher.finalize().as_bytes() != &id.0 {
            return Err(changed_while_imported(src));
        }
        Ok(())
    })();
    match res {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// What a tape pack whose bytes no longer match its name says.
fn changed_while_imported(src: &Path) -> Error {
    Error::damaged(
        Damaged::Pack {
            path: src.to_path_buf(),
            offset: None,
        },
        format!(
            "pack {}: changed while it was imported (its bytes no longer match its name)",
            src.display()
        ),
    )
}

/// Stage tape pack `src` in `tmp/` for the spool's pack store: copied as it is (any pack
/// format), fsynced, its bytes hashed to `id` on the way.
fn stage_copy(src: &Path, tmp_dir: &Path, id: &PackId) -> Result<StagedPack> {
    StagedPack::adopt(copy_verified(src, tmp_dir, id)?, *id)
}

/// Import a payload directory: verify it first (nothing changes on any error), then adopt
/// the packs holding chunks the spool lacks, add the dumps the spool does not have (matched
/// by volume and time; new ids; bases and chains mapped), with the chunks each owns, and
/// record the tape in the media catalog. Importing twice adds nothing. The tape must be
/// sealed under the spool's key (or both be plain), which is checked from LABEL first: its
/// chunk ids are those of the spool that wrote it, so only a spool with the same key can
/// use them, and a plain tape's packs would lie unsealed in an encrypted spool.
pub fn import_payload(spool: &Spool, dir: &Path) -> Result<ImportSummary> {
    let (label, tape_key) = tape_fingerprint(dir)?;
    same_key_as_spool(&label, tape_key, spool.keys(), "imported")?;
    let reader = ChunkReader::new(spool)?;
    let verified = verify_payload_with(
        dir,
        &TapeKey::of_spool(spool),
        Some((&reader, spool.keys())),
    )?;
    drop(reader);
    let cat = verified.catalog;
    let mut summary = ImportSummary {
        label: cat.label.clone(),
        ..ImportSummary::default()
    };
    let known: HashMap<DumpRef, u64> = spool
        .catalog
        .dumps(None)?
        .into_iter()
        .map(|d| {
            (
                DumpRef {
                    volume: d.volume,
                    time_ns: d.time_ns,
                },
                d.id,
            )
        })
        .collect();
    let recorded = media::tapes(spool)?;
    let store = StoreWriter::new(spool)?;
    store.catalog().clean_uncommitted()?;
    let existing_tape: Option<TapeRecord> = store.catalog().tape(&cat.label)?;
    let tape_packs: Vec<[u8; 32]> = cat.packs.iter().map(|p| p.name.0).collect();
    if let Some(t) = &existing_tape
        && t.packs != tape_packs
    {
        return Err(Error::usage(format!(
            "a different tape labelled {} is already in the media catalog; this one cannot be told apart from it",
            cat.label
        )));
    }

    // Resolve every dump before anything changes.
    let mut ids = known.clone();
    let mut next_id = store.catalog().next_dump_id()?;
    let mut order: Vec<&TapeDump> = cat.dumps.iter().collect();
    order.sort_by_key(|d| (d.time_ns, d.id));
    let mut new_dumps: Vec<(DumpRecord, &TapeDump)> = Vec::new();
    let mut tape_dumps: Vec<(u64, u64)> = Vec::new();
    let mut summaries: Vec<TapeDumpSummary> = Vec::new();
    for td in order {
        if let Some(&id) = ids.get(&td.dump_ref()) {
            if known.contains_key(&td.dump_ref()) {
                summary.dumps_present += 1;
            }
            tape_dumps.push((id, td.tape_bytes));
            let chain = td.chain_refs.iter().filter_map(|r| ids.get(r).copied());
            summaries.push(td.summary(id, chain.collect()));
            continue;
        }
        let resolve = |r: &DumpRef| {
            ids.get(r).copied().ok_or_else(|| {
                Error::usage(format!(
                    "tape {}: dump {} is based on {}, which this spool does not hold; import {} first",
                    cat.label,
                    dump_name(&td.volume, td.time_ns),
                    dump_name(&r.volume, r.time_ns),
                    td.other_tapes(&cat.label)
                ))
            })
        };
        let chain = td
            .chain_refs
            .iter()
            .map(resolve)
            .collect::<Result<Vec<_>>>()?;
        let base = td.base_ref.as_ref().map(resolve).transpose()?;
        let merged_from = td
            .merged_from_ref
            .as_ref()
            .and_then(|r| ids.get(r).copied());
        summaries.push(td.summary(next_id, chain.clone()));
        let rec = td.record(next_id, base, chain, merged_from);
        ids.insert(td.dump_ref(), next_id);
        tape_dumps.push((next_id, td.tape_bytes));
        next_id += 1;
        new_dumps.push((rec, td));
    }
    // A new dump's manifest must have been checked: its chunks on earlier tapes must be here.
    for &i in &verified.manifests_elsewhere {
        let td = &cat.dumps[i];
        if new_dumps.iter().any(|(_, t)| std::ptr::eq(*t, td)) {
            return Err(Error::usage(format!(
                "tape {}: the manifest of dump {} is partly on another tape, which this spool does not hold, so it cannot be checked; import {} first",
                cat.label,
                dump_name(&td.volume, td.time_ns),
                td.other_tapes(&cat.label)
            )));
        }
    }
    let known_labels: HashSet<&str> = recorded.iter().map(|t| t.label.as_str()).collect();
    let mut also: BTreeSet<String> = BTreeSet::new();
    for td in &cat.dumps {
        for l in &td.tapes_needed {
            if *l != cat.label && !known_labels.contains(l.as_str()) {
                also.insert(l.clone());
            }
        }
    }
    summary.tapes_also_needed = also.into_iter().collect();

    // Adopt packs, then commit rows and records in one transaction. On error, remove the
    // packs this import placed (no catalog row names them).
    let mut placed: Vec<PackId> = Vec::new();
    let tape_bytes = [LABEL_FILE, CATALOG_FILE]
        .iter()
        .map(|f| fs::metadata(dir.join(f)).at(dir.join(f)).map(|m| m.len()))
        .sum::<Result<u64>>()?
        + cat.packs.iter().map(|p| p.size).sum::<u64>();
    let tape = existing_tape.is_none().then(|| TapeRecord {
        version: TAPE_RECORD_VERSION,
        label: cat.label.clone(),
        created_ns: cat.created_ns,
        media_set: cat.media_set.clone(),
        sequence: cat.sequence,
        bytes: tape_bytes,
        volumes: 1,
        dumps: tape_dumps,
        packs: tape_packs,
        whole_file_bytes: cat.dumps.iter().map(|d| d.whole_file_bytes).sum(),
        summaries,
    });
    let res = adopt_and_commit(
        spool,
        store,
        dir,
        &cat,
        &new_dumps,
        next_id,
        tape,
        &mut placed,
        &mut summary,
    );
    if let Err(e) = res {
        let _ = spool.pack_store().delete(&placed);
        return Err(e);
    }
    summary.dumps_added = new_dumps
        .iter()
        .map(|(r, _)| (r.id, r.volume.clone(), r.time_ns, r.level))
        .collect();
    Ok(summary)
}

/// The changing half of an import (everything before it only reads).
#[allow(clippy::too_many_arguments)]
fn adopt_and_commit(
    spool: &Spool,
    mut store: StoreWriter<'_>,
    dir: &Path,
    cat: &TapeCatalog,
    new_dumps: &[(DumpRecord, &TapeDump)],
    next_id: u64,
    tape: Option<TapeRecord>,
    placed: &mut Vec<PackId>,
    summary: &mut ImportSummary,
) -> Result<()> {
    let packs = spool.pack_store();
    for p in &cat.packs {
        let id = PackId(p.name.0);
        if store.catalog().pack_named(&id)? {
            continue;
        }
        let src = pack_file(dir, &p.name);
        let (entries, chunks) = crate::store::pack_chunks(&src, spool.keys())?;
        let lacking: Vec<&(ChunkId, ChunkLoc)> = {
            let t = store.catalog().chunk_index()?;
            let mut v = Vec::new();
            for c in &chunks {
                if !t.contains(&c.0)? {
                    v.push(c);
                }
            }
            v
        };
        if lacking.is_empty() {
            continue;
        }
        // The spool's write order: the pack durable in the pack store, then rows. A pack
        // already there (a crash's leftover) is not this import's to remove on error.
        let fresh = !packs.exists(&id).unwrap_or(true);
        let staged = stage_copy(&src, &spool.tmp_dir(), &id)?;
        if fresh {
            placed.push(id);
        }
        packs.put(staged)?;
        let txn = store.catalog();
        let no = txn.take_pack_number()?;
        txn.record_pack(no, &id, p.size, &entries, crate::timefmt::now_ns())?;
        let mut t = txn.chunk_index()?;
        for (cid, loc) in lacking {
            let loc = ChunkLoc {
                pack_no: no,
                ..*loc
            };
            if t.insert_new(cid, &loc)? {
                summary.chunks_added += 1;
            }
        }
        summary.packs_adopted += 1;
        summary.pack_bytes += p.size;
    }
    // A copy of each new dump record in a pack, so the catalog stays rebuildable from packs.
    for (rec, _) in new_dumps {
        let blob = rec.encode();
        store.put_one(store.keys().chunk_id(&blob), &blob, BlobKind::DumpRecord)?;
    }
    let record_tape = tape.is_some();
    store.finish(|txn, _| {
        let mut owned_rows = Vec::new();
        {
            let chunks = txn.chunk_index()?;
            for (rec, td) in new_dumps {
                for c in &td.chunks {
                    let id = ChunkId(c.0);
                    let loc = chunks.get(&id)?.ok_or_else(|| {
                        Error::damaged(Damaged::Chunk(id), format!(
                            "chunk {} of dump {} is on the tape but did not reach the chunk index",
                            id.short(),
                            rec.id
                        ))
                    })?;
                    owned_rows.push((rec.id, id, stored_share(&loc)));
                }
            }
        }
        // In key order: each leaf of `owned` is written once, full.
        owned_rows.sort_unstable_by_key(|r| (r.0, r.1));
        {
            let mut owned = txn.ownership()?;
            for (dump, id, share) in owned_rows {
                owned.own(dump, &id, share)?;
            }
        }
        for (rec, _) in new_dumps {
            txn.record_dump(rec)?;
        }
        txn.set_next_dump_id(next_id)?;
        if let Some(rec) = &tape {
            txn.record_tape(&rec.label, rec, catalog_chunks(cat).into_iter())?;
        }
        Ok(())
    })?;
    summary.tape_recorded = record_tape;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::{self, PackWriter};
    use crate::progress::NoProgress;
    use crate::restore::{RestoreOptions, restore_dump};
    use crate::tape::payload::plan_export;
    use crate::tape::payload::tests::{export, fixture, record, snapshot, spool_is_empty};
    use crate::tape::payload::write_payload;

    #[test]
    fn a_level_1_without_its_base_is_refused_naming_the_tape() {
        let f = fixture();
        let tmp = f.tmp.path();
        // Tape 1: the level 0 only (a plan cut to its first dump).
        let mut plan = plan_export(&f.spool, &[], None).unwrap();
        plan.dumps.truncate(1);
        plan.per_dump.truncate(1);
        let s1 = write_payload(&f.spool, &plan, "A", None, 1, &tmp.join("a"), &NoProgress).unwrap();
        record(&f, &s1, &tmp.join("a"));
        let (dir2, _) = export(&f, None, "B", 1);
        let target_dir = tempfile::tempdir().unwrap();
        let target = Spool::init(&target_dir.path().join("spool")).unwrap();
        let err = import_payload(&target, &dir2).unwrap_err().to_string();
        assert!(err.contains("import tape A first"), "{err}");
        spool_is_empty(&target);
        import_payload(&target, &tmp.join("a")).unwrap();
        let sum = import_payload(&target, &dir2).unwrap();
        assert_eq!(sum.dumps_added.len(), 1);
        let d = target.catalog.dumps(None).unwrap();
        assert_eq!(media::tapes_needed(&target, &d[1]).unwrap(), ["A", "B"]);
        let out = target_dir.path().join("r");
        restore_dump(
            &target,
            &d[1],
            &out,
            &RestoreOptions::default(),
            &NoProgress,
        )
        .unwrap();
        assert_eq!(snapshot(&out), f.day1);
    }

    /// A tape's packs reach the pack store as the same bytes, under the same names, and the
    /// staging copies are gone.
    #[test]
    fn tape_packs_reach_the_pack_store_byte_for_byte() {
        let f = fixture();
        let (dir, s) = export(&f, None, "T", 1);
        assert!(!s.packs.is_empty());
        let target_dir = tempfile::tempdir().unwrap();
        let target = Spool::init(&target_dir.path().join("spool")).unwrap();
        let sum = import_payload(&target, &dir).unwrap();
        assert_eq!(sum.packs_adopted as usize, s.packs.len());
        let store = target.pack_store();
        for id in &s.packs {
            let src = pack_file(&dir, &crate::tape::payload::format::HexId(id.0));
            let want = fs::read(&src).unwrap();
            let got = store.read(id, 0..want.len() as u64).unwrap();
            assert_eq!(got, want);
        }
        assert!(fs::read_dir(target.tmp_dir()).unwrap().next().is_none());
    }

    /// A pack of an older pack format (version 1) is staged as it is, under its own name; bytes
    /// that match no name are refused and leave nothing in tmp/.
    #[test]
    fn an_older_format_pack_is_staged_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::init(&dir.path().join("spool")).unwrap();
        let mut w = PackWriter::create(&spool.tmp_dir(), &crate::crypto::Keys::plain()).unwrap();
        w.add(
            ChunkId::of(b"old"),
            BlobKind::Data,
            &pack::encode_blob(b"old", 3),
        )
        .unwrap();
        let (staged, _) = w.close().unwrap().into_parts();
        let mut bytes = staged.read_all().unwrap();
        drop(staged);
        let ft = bytes.len() - pack::FOOTER_LEN + 48;
        bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
        bytes[ft..ft + 4].copy_from_slice(&1u32.to_le_bytes());
        let id = PackId(*blake3::hash(&bytes).as_bytes());
        let src = dir.path().join("old.pack");
        fs::write(&src, &bytes).unwrap();
        let staged = stage_copy(&src, &spool.tmp_dir(), &id).unwrap();
        spool.pack_store().put(staged).unwrap();
        let path = pack::pack_path(&spool.packs_dir(), &id);
        assert_eq!(fs::read(path).unwrap(), bytes);
        let err = stage_copy(&src, &spool.tmp_dir(), &PackId([1; 32]))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("changed while it was imported"), "{err}");
        assert!(fs::read_dir(spool.tmp_dir()).unwrap().next().is_none());
    }
}
