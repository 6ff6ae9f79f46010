//! Writing a payload directory: each dump's section (manifest chunks, then file chunks in
//! manifest order) through the packer, the whole-file baseline, then LABEL and CATALOG.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::catalog::{self, DumpRecord, OwnedIndex, TapeIndex};
use crate::error::Damaged;
use crate::error::IoContext;
use crate::fsutil::fsync_dir;
use crate::pack::{BlobKind, PackId};
use crate::progress::Progress;
use crate::record::TAPE_RECORD_VERSION;
use crate::spool::Spool;
use crate::store::ChunkReader;
use crate::tape::media::{self, TapeRecord};
use crate::tape::payload::format::{
    CATALOG_FILE, ChainRefs, DumpRef, HexId, LABEL_FILE, OnTape, PACKS_DIR, PAYLOAD_DIR,
    PAYLOAD_FORMAT, TapeCatalog, TapeDump, catalog_chunks, label_text, read_catalog,
    validate_label,
};
use crate::tape::payload::key::{TapeKey, catalog_aad};
use crate::tape::payload::packer::Packer;
use crate::tape::payload::plan::{ExportPlan, on_set_tape};
use crate::timefmt::format_rfc3339;
use crate::{ChunkId, Entry, EntryKind, Error, Result};

/// What the whole-file baseline counts for each directory: one 1 KiB directory block, as
/// BSD dump writes every directory at every level.
pub const DIR_BLOCK: u64 = 1024;
/// Staging area inside the payload while packs are written; removed at the end.
pub(super) const STAGE_DIR: &str = "reel/.stage";

/// What `write_payload` wrote.
#[derive(Clone, Debug)]
pub struct PayloadSummary {
    pub label: String,
    pub media_set: Option<String>,
    pub sequence: u32,
    pub created_ns: i64,
    /// Relative to the payload directory, in the order the tape should hold them: LABEL,
    /// CATALOG, packs.
    pub files: Vec<PathBuf>,
    /// Bytes of all those files.
    pub bytes: u64,
    /// Chunks written (each once).
    pub chunks: u64,
    pub packs: Vec<PackId>,
    /// Per dump (time order): dump id, pack bytes written for it.
    pub per_dump: Vec<(u64, u64)>,
    /// Per dump: dump id, what a whole-file dump at the same level would have written.
    pub whole_file: Vec<(u64, u64)>,
    pub whole_file_bytes: u64,
}

const PENDING: u32 = u32::MAX;

/// Per-dump state while its section is written.
#[derive(Default)]
struct Section {
    mine: HashSet<[u8; 32]>,
    chunks: Vec<HexId>,
    packs: BTreeSet<u32>,
    /// Chunks of this section waiting in the open frame.
    pending: Vec<ChunkId>,
}

struct Writer<'r, 's> {
    reader: &'r ChunkReader<'s>,
    catalog: &'r catalog::Reader<'r>,
    owned: OwnedIndex,
    on_tapes: TapeIndex,
    set_tapes: &'r [String],
    packer: Packer,
    /// Every chunk written to the image: the pack index it is in (`PENDING` while in the
    /// open frame).
    written: HashMap<[u8; 32], u32>,
    progress: &'r dyn Progress,
}

impl Writer<'_, '_> {
    /// Put chunk `id` on the tape for dump `d` if `d` owns it and it is not there yet.
    fn consider(&mut self, d: &DumpRecord, id: ChunkId, sec: &mut Section) -> Result<()> {
        if sec.mine.contains(&id.0) || !self.owned.owns(d.id, &id)? {
            return Ok(());
        }
        sec.mine.insert(id.0);
        if let Some(&idx) = self.written.get(&id.0) {
            sec.chunks.push(HexId(id.0));
            if idx != PENDING {
                sec.packs.insert(idx);
            }
            return Ok(());
        }
        if on_set_tape(&self.on_tapes, self.set_tapes, &id)? {
            return Ok(());
        }
        let what = || format!("dump {} of volume {}", d.id, d.volume);
        let loc = self.reader.locate_required(&id, &what)?;
        let raw = self.reader.read(&id, &what)?;
        self.progress.advance(raw.len() as u64);
        sec.chunks.push(HexId(id.0));
        if loc.kind == BlobKind::Data {
            self.written.insert(id.0, PENDING);
            sec.pending.push(id);
            if let Some((idx, ids)) = self.packer.put_data(id, &raw)? {
                self.settle(sec, idx, &ids);
            }
        } else {
            let idx = self.packer.add_blob(id, loc.kind, &raw)?;
            self.written.insert(id.0, idx);
            sec.packs.insert(idx);
        }
        Ok(())
    }

    fn settle(&mut self, sec: &mut Section, idx: u32, ids: &[ChunkId]) {
        for id in ids {
            self.written.insert(id.0, idx);
        }
        sec.packs.insert(idx);
        sec.pending.clear();
    }

    /// Write dump `d`'s section; returns (its chunks, packs, whole-file bytes).
    fn dump(&mut self, d: &DumpRecord) -> Result<Section> {
        let mut sec = Section::default();
        // Manifest chunks first: a restore reads the manifest before the files.
        for (id, _) in d.manifest_chunks() {
            self.consider(d, id, &mut sec)?;
        }
        let manifest = self.reader.manifest(d)?;
        for e in manifest {
            for (id, _) in e?.chunks() {
                self.consider(d, id, &mut sec)?;
            }
        }
        // Anything owned but not reached through the manifest (none for dumps reel makes;
        // kept so a tape never silently lacks an owned chunk).
        for item in self.owned.of(d.id)? {
            let (id, _) = item?;
            self.consider(d, id, &mut sec)?;
        }
        if let Some((idx, ids)) = self.packer.flush_frame()? {
            self.settle(&mut sec, idx, &ids);
        }
        Ok(sec)
    }
}

/// Does `base` (a path-ordered manifest, advanced as we go) hold `e` with the same content?
fn same_as_base<I: Iterator<Item = Result<Entry>>>(
    base: &mut std::iter::Peekable<I>,
    e: &Entry,
) -> Result<bool> {
    Ok(crate::manifest::seek(base, &e.path)?
        .is_some_and(|b| b.kind == e.kind && b.extents == e.extents && b.size == e.size))
}

/// What a whole-file dump of `d` at its level would write: changed (or, at level 0, all)
/// files' sizes plus `DIR_BLOCK` per directory. Merge-joins `d`'s manifest with its base's.
pub fn whole_file_bytes(spool: &Spool, reader: &ChunkReader, d: &DumpRecord) -> Result<u64> {
    let base = match d.base {
        Some(b) => Some(spool.catalog.dump(b)?.ok_or_else(|| {
            Error::damaged(
                Damaged::Catalog,
                format!(
                    "dump {} names base {b}, which is not in the catalog; run `reel check`",
                    d.id
                ),
            )
        })?),
        None => None,
    };
    let mut base_entries = match &base {
        Some(b) => Some(reader.manifest(b)?.peekable()),
        None => None,
    };
    let manifest = reader.manifest(d)?;
    let mut total = 0u64;
    for e in manifest {
        let e = e?;
        match e.kind {
            EntryKind::Dir => total += DIR_BLOCK,
            EntryKind::File => {
                let same = match base_entries.as_mut() {
                    Some(b) => same_as_base(b, &e)?,
                    None => false,
                };
                if !same {
                    total += e.size;
                }
            }
            _ => {}
        }
    }
    Ok(total)
}

fn write_file(path: &Path, data: &[u8]) -> Result<u64> {
    let mut f = crate::fsutil::create_file(path).at(path)?;
    f.write_all(data).at(path)?;
    f.sync_all().at(path)?;
    Ok(data.len() as u64)
}

/// Write the payload directory for `plan` under `dir` (created; must not hold a payload yet):
/// packs with the chunks in the order a restore reads them, framed, compressed and (on an
/// encrypted spool) sealed like the spool's, then LABEL and CATALOG (sealed, bound to LABEL,
/// on an encrypted spool). Chunk bytes stream through one frame and one pack at a
/// time. The spool is only read.
pub fn write_payload(
    spool: &Spool,
    plan: &ExportPlan,
    label: &str,
    media_set: Option<&str>,
    sequence: u32,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<PayloadSummary> {
    validate_label(label)?;
    if plan.media_set.as_deref() != media_set {
        return Err(Error::usage(format!(
            "tape {label}: the export was planned for media set {:?} but is written for {:?}; plan it again",
            plan.media_set, media_set
        )));
    }
    let top = dir.join(PAYLOAD_DIR);
    if top.exists() {
        return Err(Error::usage(format!(
            "{} already exists: write the payload into an empty directory",
            top.display()
        )));
    }
    let packs_dir = dir.join(PACKS_DIR);
    let stage = dir.join(STAGE_DIR);
    crate::fsutil::create_dir_all(&packs_dir).at(&packs_dir)?;
    crate::fsutil::create_dir_all(&stage.join("sealed")).at(&stage)?;
    let created_ns = crate::timefmt::now_ns();
    progress.message(&format!("writing tape {label}"));
    progress.set_total(plan.bytes);

    let reader = ChunkReader::new(spool)?;
    let catalog = spool.catalog.reader()?;
    let all_tapes = media::tapes(spool)?;
    let mut w = Writer {
        reader: &reader,
        catalog: &catalog,
        owned: catalog.owned_index()?,
        on_tapes: catalog.tape_index()?,
        set_tapes: &plan.set_tapes,
        packer: Packer::new(
            stage.clone(),
            packs_dir.clone(),
            spool.settings.compression_level,
            spool.keys(),
        ),
        written: HashMap::new(),
        progress,
    };
    let mut dumps = Vec::with_capacity(plan.dumps.len());
    let mut summary_per_dump = Vec::new();
    let mut whole_file = Vec::new();
    for d in &plan.dumps {
        w.packer.take_section();
        let sec = w.dump(d)?;
        let wf = whole_file_bytes(spool, &reader, d)?;
        let mut tapes_needed =
            media::needed_labels(w.catalog, &all_tapes, &d.full_chain(), &|id| {
                w.written.contains_key(&id.0).then(|| label.to_string())
            })?;
        // This tape holds the dump's record even when all its chunks are on earlier tapes.
        if !tapes_needed.iter().any(|l| l == label) {
            tapes_needed.push(label.to_string());
        }
        let section = w.packer.take_section();
        summary_per_dump.push((d.id, section));
        whole_file.push((d.id, wf));
        let on_tape = OnTape {
            tape_bytes: section,
            whole_file_bytes: wf,
            tapes_needed,
            // Pack indexes until every pack is sealed and named (below).
            packs: sec
                .packs
                .iter()
                .map(|&i| HexId(pack_index_key(i)))
                .collect(),
            chunks: sec.chunks,
        };
        dumps.push(TapeDump::from_record(d, chain_refs(spool, d)?, on_tape));
    }
    let packs = w.packer.finish()?;
    let chunks = w.written.len() as u64;
    drop(w);
    for d in &mut dumps {
        for p in &mut d.packs {
            let i = pack_index_of(p.0);
            p.0 = packs[i].name.0;
        }
    }
    fsync_dir(&packs_dir)?;
    fs::remove_dir_all(&stage).at(&stage)?;

    let cat = TapeCatalog {
        format: PAYLOAD_FORMAT,
        label: label.to_string(),
        created_ns,
        created: format_rfc3339(created_ns),
        media_set: media_set.map(str::to_string),
        sequence,
        reel_version: env!("CARGO_PKG_VERSION").to_string(),
        key_fingerprint: spool.keys().fingerprint().map(|fp| fp.to_string()),
        packs,
        dumps,
    };
    let label_bytes = label_text(&cat);
    let mut bytes = write_file(&dir.join(LABEL_FILE), label_bytes.as_bytes())?;
    bytes += match spool.keys().sealer() {
        None => write_catalog(&dir.join(CATALOG_FILE), &cat)?,
        Some(sealer) => {
            let path = dir.join(CATALOG_FILE);
            let mut json = serde_json::to_vec_pretty(&cat)
                .map_err(|e| Error::io(&path, std::io::Error::other(e)))?;
            json.push(b'\n');
            let sealed = sealer.seal(&catalog_aad(label_bytes.as_bytes()), &json)?;
            write_file(&path, &sealed)?
        }
    };
    fsync_dir(&top)?;
    let mut files = vec![PathBuf::from(LABEL_FILE), PathBuf::from(CATALOG_FILE)];
    for p in &cat.packs {
        files.push(Path::new(PACKS_DIR).join(format!("{}.pack", ChunkId(p.name.0).to_hex())));
        bytes += p.size;
    }
    Ok(PayloadSummary {
        label: label.to_string(),
        media_set: cat.media_set.clone(),
        sequence,
        created_ns,
        files,
        bytes,
        chunks,
        packs: cat.packs.iter().map(|p| PackId(p.name.0)).collect(),
        per_dump: summary_per_dump,
        whole_file_bytes: whole_file.iter().map(|(_, b)| b).sum(),
        whole_file,
    })
}

/// The chain of `d` by (volume, time), looked up in the spool's catalog.
fn chain_refs(spool: &Spool, d: &DumpRecord) -> Result<ChainRefs> {
    let dump_ref = |id: u64| -> Result<Option<DumpRef>> {
        Ok(spool.catalog.dump(id)?.map(|r| DumpRef {
            volume: r.volume,
            time_ns: r.time_ns,
        }))
    };
    let required = |id: u64| {
        dump_ref(id)?.ok_or_else(|| {
            Error::damaged(Damaged::Catalog, format!(
                "dump {} names dump {id} in its chain, which is not in the catalog; run `reel check`",
                d.id
            ))
        })
    };
    Ok(ChainRefs {
        base: d.base.map(required).transpose()?,
        chain: d
            .chain
            .iter()
            .map(|&c| required(c))
            .collect::<Result<_>>()?,
        merged_from: match d.merged_from {
            Some(m) => dump_ref(m)?,
            None => None,
        },
    })
}

/// Writes the CATALOG file durably; returns its size.
fn write_catalog(path: &Path, cat: &TapeCatalog) -> Result<u64> {
    let f = crate::fsutil::create_file(path).at(path)?;
    let mut out = BufWriter::new(f);
    serde_json::to_writer_pretty(&mut out, cat)
        .map_err(|e| Error::io(path, std::io::Error::other(e)))?;
    out.write_all(b"\n").at(path)?;
    let f = out
        .into_inner()
        .map_err(|e| Error::io(path, e.into_error()))?;
    f.sync_all().at(path)?;
    Ok(f.metadata().at(path)?.len())
}

// While writing, a dump's packs are known by index; these carry the index in a HexId.
fn pack_index_key(i: u32) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..4].copy_from_slice(&i.to_le_bytes());
    k
}
fn pack_index_of(k: [u8; 32]) -> usize {
    u32::from_le_bytes([k[0], k[1], k[2], k[3]]) as usize
}

/// The media-catalog record of a written payload and the chunks it holds, for
/// the catalog's `record_tape` once the image is complete; `key` is the writing spool's.
pub fn tape_record(
    summary: &PayloadSummary,
    dir: &Path,
    key: &TapeKey,
) -> Result<(TapeRecord, Vec<ChunkId>)> {
    let cat = read_catalog(dir, key)?;
    let chunks = catalog_chunks(&cat);
    let rec = TapeRecord {
        version: TAPE_RECORD_VERSION,
        label: summary.label.clone(),
        created_ns: summary.created_ns,
        media_set: summary.media_set.clone(),
        sequence: summary.sequence,
        bytes: summary.bytes,
        volumes: 1,
        dumps: summary.per_dump.clone(),
        packs: summary.packs.iter().map(|p| p.0).collect(),
        whole_file_bytes: summary.whole_file_bytes,
        // The tape was written from this spool: its ids are this spool's.
        summaries: cat
            .dumps
            .iter()
            .map(|d| d.summary(d.id, d.chain.clone()))
            .collect(),
    };
    Ok((rec, chunks))
}
