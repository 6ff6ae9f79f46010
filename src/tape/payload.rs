//! What a reel tape carries, as a directory of files (what `restore -x` extracts from a tape
//! image; the BSD dump codec in `crate::tape::bsd` wraps it into a dump stream):
//!
//! ```text
//! reel/LABEL             "key: value" text: who the tape is, for people with no reel
//! reel/CATALOG           JSON: the dumps it holds (full records), their chains by id and by
//!                        (volume, time), and per dump the chunks it owns that are on the tape
//! reel/packs/<hex>.pack  the packs, pack format v1 exactly as in a spool
//! ```
//!
//! Why it is built this way:
//! - A tape carries what each dump *owns* (docs/DESIGN.md, "Levels under deduplication"), each
//!   chunk once per image, packed dump by dump in time order, each dump's manifest chunks
//!   first and then its file chunks in manifest order: a restore reads the tape front to back.
//!   With a media set, chunks already on earlier tapes of the set are left out too.
//! - The packs are ordinary spool packs (same framing and compression, ≤ 32 MiB), so import
//!   verifies them with the spool's own readers and adopts them by copying, and a pack's name
//!   (the blake3 of its bytes) proves the copy.
//! - The CATALOG is JSON because it must be readable in decades with any tool. Dumps are named
//!   by (volume, time) besides their ids, so another spool can resolve bases and chains; ids
//!   in it are the exporting spool's.
//! - Export streams: chunk bytes pass through one frame (≤ 4 MiB) and one pack writer at a
//!   time. What grows with the tape is only the list of chunk ids (32 bytes each), which the
//!   CATALOG must name anyway.
//! - Import verifies the whole payload before it changes anything, then follows the spool's
//!   write order (pack copied to tmp/, fsynced, renamed, directory fsynced; catalog rows and
//!   the dump records committed in one transaction last). It is idempotent: dumps are matched
//!   by (volume, time), packs by name, tapes by label.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use crate::catalog::{self, CHUNKS, ChunkLoc, DumpRecord, OWNED, PACK_IDS};
use crate::error::IoContext;
use crate::frame;
use crate::fsutil::fsync_dir;
use crate::manifest::ManifestReader;
use crate::pack::{
    self, BLOB_HEADER_LEN, BlobKind, EncodedBlob, FOOTER_LEN, INDEX_ENTRY_LEN, PACK_TARGET_SIZE,
    PackId, PackReader, PackWriter,
};
use crate::progress::Progress;
use crate::spool::{Spool, validate_volume_name};
use crate::store::{ChunkReader, StoreWriter, stored_share};
use crate::tape::media::{self, TapeRecord};
use crate::timefmt::format_rfc3339;
use crate::{ChunkId, Entry, EntryKind, Error, Result};

/// Version of the payload layout (LABEL and CATALOG `format`).
pub const PAYLOAD_FORMAT: u32 = 1;
/// Top directory of a payload.
pub const PAYLOAD_DIR: &str = "reel";
pub const LABEL_FILE: &str = "reel/LABEL";
pub const CATALOG_FILE: &str = "reel/CATALOG";
pub const PACKS_DIR: &str = "reel/packs";
/// A payload pack never exceeds this many bytes (index and footer included).
pub const PACK_MAX: u64 = PACK_TARGET_SIZE;
/// What the whole-file baseline counts for each directory: one 1 KiB directory block, as
/// BSD dump writes every directory at every level.
pub const DIR_BLOCK: u64 = 1024;
/// Staging area inside the payload while packs are written; removed at the end.
const STAGE_DIR: &str = "reel/.stage";

// ---------------------------------------------------------------------------------------------
// CATALOG (serde structs; field names are part of the tape format, see docs/FORMAT.md)

/// 32 bytes written as 64 lower-case hex digits (chunk and pack ids).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct HexId(pub [u8; 32]);

impl Serialize for HexId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&ChunkId(self.0).to_hex())
    }
}

impl<'de> Deserialize<'de> for HexId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ChunkId::from_hex(&s)
            .map(|c| HexId(c.0))
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not 64 hex digits")))
    }
}

/// A dump named the way any spool can resolve it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct DumpRef {
    pub volume: String,
    pub time_ns: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestChunk {
    pub id: HexId,
    pub len: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TapePack {
    /// The pack's file name without `.pack`: the blake3 of its bytes.
    pub name: HexId,
    pub size: u64,
    pub blobs: u64,
    pub chunks: u64,
}

/// One dump on the tape: its full `DumpRecord` (ids are the exporting spool's), its chain by
/// (volume, time), and what the tape holds of it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TapeDump {
    pub id: u64,
    pub volume: String,
    pub time_ns: i64,
    /// `time_ns` in RFC 3339, for people.
    pub time: String,
    pub level: u8,
    pub requested_level: u8,
    pub base: Option<u64>,
    pub base_ref: Option<DumpRef>,
    pub chain: Vec<u64>,
    pub chain_refs: Vec<DumpRef>,
    pub merged_from: Option<u64>,
    pub merged_from_ref: Option<DumpRef>,
    pub source: String,
    pub scan_started_ns: i64,
    pub duration_ns: u64,
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub logical_bytes: u64,
    pub read_bytes: u64,
    pub new_chunks: u64,
    pub stored_bytes: u64,
    pub owned_chunks: u64,
    pub owned_bytes: u64,
    pub manifest: Vec<ManifestChunk>,
    pub manifest_bytes: u64,
    pub warnings: Vec<String>,
    /// Pack bytes (blob headers and stored bytes) written for this dump.
    pub tape_bytes: u64,
    /// What a whole-file dump at this level would have written: the sizes of the files whose
    /// content changed since the base (all files at level 0) plus `DIR_BLOCK` per directory.
    pub whole_file_bytes: u64,
    /// Labels of the tapes a restore of this dump needs, oldest first (this tape included).
    pub tapes_needed: Vec<String>,
    /// The tape's packs holding chunks of `chunks`.
    pub packs: Vec<HexId>,
    /// The chunks this dump owns that are on this tape (some may have been written for an
    /// earlier dump of the image that owns them too).
    pub chunks: Vec<HexId>,
}

/// The parsed CATALOG file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TapeCatalog {
    pub format: u32,
    pub label: String,
    pub created_ns: i64,
    pub created: String,
    pub media_set: Option<String>,
    pub sequence: u32,
    pub reel_version: String,
    /// In the order they are on the tape.
    pub packs: Vec<TapePack>,
    /// In time order.
    pub dumps: Vec<TapeDump>,
}

impl TapeDump {
    /// Where to find what this dump needs besides tape `label`, for an error telling the admin
    /// what to import first: "tape A, B", or "the tape holding it" when no other is named.
    fn other_tapes(&self, label: &str) -> String {
        let elsewhere: Vec<&str> = self
            .tapes_needed
            .iter()
            .filter(|l| l.as_str() != label)
            .map(String::as_str)
            .collect();
        if elsewhere.is_empty() {
            "the tape holding it".to_string()
        } else {
            format!("tape {}", elsewhere.join(", "))
        }
    }

    fn dump_ref(&self) -> DumpRef {
        DumpRef {
            volume: self.volume.clone(),
            time_ns: self.time_ns,
        }
    }

    /// The `DumpRecord` under new ids (`id`, `base`, `chain`, `merged_from` given).
    fn record(
        &self,
        id: u64,
        base: Option<u64>,
        chain: Vec<u64>,
        merged_from: Option<u64>,
    ) -> DumpRecord {
        DumpRecord {
            version: 1,
            id,
            volume: self.volume.clone(),
            time_ns: self.time_ns,
            level: self.level,
            requested_level: self.requested_level,
            base,
            chain,
            merged_from,
            source: self.source.clone(),
            scan_started_ns: self.scan_started_ns,
            duration_ns: self.duration_ns,
            entries: self.entries,
            files: self.files,
            dirs: self.dirs,
            logical_bytes: self.logical_bytes,
            read_bytes: self.read_bytes,
            new_chunks: self.new_chunks,
            stored_bytes: self.stored_bytes,
            owned_chunks: self.owned_chunks,
            owned_bytes: self.owned_bytes,
            manifest: self.manifest.iter().map(|m| (m.id.0, m.len)).collect(),
            manifest_bytes: self.manifest_bytes,
            warnings: self.warnings.clone(),
        }
    }
}

fn dump_name(volume: &str, time_ns: i64) -> String {
    format!("{volume}@{}", format_rfc3339(time_ns))
}

// ---------------------------------------------------------------------------------------------
// Planning

/// What one dump will put on the tape (an estimate from the owned rows: the tape recompresses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedDump {
    pub id: u64,
    pub chunks: u64,
    /// Stored bytes of those chunks in the spool.
    pub bytes: u64,
}

/// The dumps an export writes and what each carries.
#[derive(Clone, Debug)]
pub struct ExportPlan {
    /// In time order (across volumes; by id on equal times).
    pub dumps: Vec<DumpRecord>,
    pub chunks: u64,
    pub bytes: u64,
    /// Per dump of `dumps`, in the same order.
    pub per_dump: Vec<PlannedDump>,
    pub media_set: Option<String>,
    /// Earlier tapes of the media set: chunks on them are left out.
    pub set_tapes: Vec<String>,
}

/// Which dumps (of `volumes`, or all when empty) are not on any tape yet, and which chunks
/// each carries: the chunks it owns (catalog `owned` rows, manifest chunks included), each
/// chunk once per image; with `media_set`, leaving out chunks already on earlier tapes of that
/// set (media catalog).
pub fn plan_export(
    spool: &Spool,
    volumes: &[String],
    media_set: Option<&str>,
) -> Result<ExportPlan> {
    let mut dumps = if volumes.is_empty() {
        spool.catalog.dumps(None)?
    } else {
        let mut all = Vec::new();
        for v in volumes {
            spool.known_volume(v)?;
            all.extend(spool.catalog.dumps(Some(v))?);
        }
        all
    };
    let tapes = media::tapes(spool)?;
    let on_tape: HashSet<u64> = tapes
        .iter()
        .flat_map(|t| t.dumps.iter().map(|(d, _)| *d))
        .collect();
    dumps.retain(|d| !on_tape.contains(&d.id));
    dumps.sort_by_key(|d| (d.time_ns, d.id));
    dumps.dedup_by_key(|d| d.id);
    let set_tapes: Vec<String> = match media_set {
        Some(s) => tapes
            .iter()
            .filter(|t| t.media_set.as_deref() == Some(s))
            .map(|t| t.label.clone())
            .collect(),
        None => Vec::new(),
    };
    let txn = spool.catalog.read()?;
    let owned = txn.open_table(OWNED)?;
    let mut seen: HashSet<[u8; 32]> = HashSet::new();
    let mut plan = ExportPlan {
        dumps: Vec::new(),
        chunks: 0,
        bytes: 0,
        per_dump: Vec::new(),
        media_set: media_set.map(str::to_string),
        set_tapes,
    };
    for d in dumps {
        let mut p = PlannedDump {
            id: d.id,
            chunks: 0,
            bytes: 0,
        };
        for item in owned.range((d.id, [0u8; 32])..=(d.id, [0xffu8; 32]))? {
            let (k, v) = item?;
            let id = ChunkId(k.value().1);
            if !seen.insert(id.0) || on_set_tape(&txn, &plan.set_tapes, &id)? {
                continue;
            }
            p.chunks += 1;
            p.bytes += u64::from(v.value());
        }
        plan.chunks += p.chunks;
        plan.bytes += p.bytes;
        plan.per_dump.push(p);
        plan.dumps.push(d);
    }
    Ok(plan)
}

fn on_set_tape(txn: &redb::ReadTransaction, set: &[String], id: &ChunkId) -> Result<bool> {
    if set.is_empty() {
        return Ok(false);
    }
    Ok(media::tapes_of_chunk(txn, id)?
        .iter()
        .any(|l| set.contains(l)))
}

// ---------------------------------------------------------------------------------------------
// Writing

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

/// Tape labels are written on cartridges and into file names: keep them plain.
pub fn validate_label(label: &str) -> Result<()> {
    let ok = !label.is_empty()
        && label.len() <= 64
        && !label.starts_with(['.', '-'])
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'));
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "bad tape label {label:?}: use 1-64 letters, digits, '.', '_', '-' or ':', not starting with '.' or '-'"
        )))
    }
}

const PENDING: u32 = u32::MAX;

/// Frames and packs of the payload being written.
struct Packer {
    stage: PathBuf,
    packs_dir: PathBuf,
    level: i32,
    writer: Option<PackWriter>,
    /// Chunks in this writer (frames count their chunks).
    writer_chunks: u64,
    frame: frame::Builder,
    finished: Vec<TapePack>,
    /// Blob bytes written since the last `take_section`.
    section: u64,
}

impl Packer {
    /// Index of the pack the next blob goes to.
    fn add_blob(
        &mut self,
        id: ChunkId,
        kind: BlobKind,
        blob: &EncodedBlob,
        chunks: u64,
    ) -> Result<u32> {
        let need = (BLOB_HEADER_LEN + blob.data.len() + INDEX_ENTRY_LEN + FOOTER_LEN) as u64;
        if let Some(w) = &self.writer {
            let index = (INDEX_ENTRY_LEN * w.blob_count()) as u64;
            if w.blob_count() > 0 && w.size() + index + need > PACK_MAX {
                self.seal()?;
            }
        }
        if self.writer.is_none() {
            self.writer = Some(PackWriter::create(&self.stage)?);
            self.writer_chunks = 0;
        }
        let w = self.writer.as_mut().expect("writer open");
        w.add(id, kind, blob)?;
        self.writer_chunks += chunks;
        self.section += (BLOB_HEADER_LEN + blob.data.len()) as u64;
        Ok(self.finished.len() as u32)
    }

    /// Queue a data chunk for the current frame; returns the frame's chunks and pack index
    /// when queuing it closed the previous frame.
    fn put_data(&mut self, id: ChunkId, raw: &[u8]) -> Result<Option<(u32, Vec<ChunkId>)>> {
        let mut flushed = None;
        if !self.frame.fits(raw.len()) {
            flushed = self.flush_frame()?;
        }
        self.frame.push(id, raw);
        Ok(flushed)
    }

    fn flush_frame(&mut self) -> Result<Option<(u32, Vec<ChunkId>)>> {
        if self.frame.is_empty() {
            return Ok(None);
        }
        let frame = std::mem::take(&mut self.frame);
        let ids: Vec<ChunkId> = frame.slots().into_iter().map(|s| s.0).collect();
        let (frame_id, raw) = frame.into_named();
        let blob = pack::encode_blob(&raw, self.level);
        let idx = self.add_blob(frame_id, BlobKind::Frame, &blob, ids.len() as u64)?;
        Ok(Some((idx, ids)))
    }

    fn seal(&mut self) -> Result<()> {
        let Some(w) = self.writer.take() else {
            return Ok(());
        };
        let blobs = w.blob_count() as u64;
        let done = w.finish(&self.stage.join("sealed"))?;
        let hex = done.id.to_hex();
        let dest = self.packs_dir.join(format!("{hex}.pack"));
        fs::rename(&done.path, &dest).at(&dest)?;
        self.finished.push(TapePack {
            name: HexId(done.id.0),
            size: done.size,
            blobs,
            chunks: self.writer_chunks,
        });
        Ok(())
    }
}

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
    txn: &'r redb::ReadTransaction,
    owned: redb::ReadOnlyTable<(u64, [u8; 32]), u32>,
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
        if sec.mine.contains(&id.0) || self.owned.get((d.id, id.0))?.is_none() {
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
        if on_set_tape(self.txn, self.set_tapes, &id)? {
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
            let blob = pack::encode_blob(&raw, self.packer.level);
            let idx = self.packer.add_blob(id, loc.kind, &blob, 1)?;
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
        let manifest = ManifestReader::new(
            self.reader
                .stream(d.manifest_chunks(), format!("manifest of dump {}", d.id)),
        )?;
        for e in manifest {
            for (id, _) in e?.chunks() {
                self.consider(d, id, &mut sec)?;
            }
        }
        // Anything owned but not reached through the manifest (none for dumps reel makes;
        // kept so a tape never silently lacks an owned chunk).
        let sweep = self.txn.open_table(OWNED)?;
        for item in sweep.range((d.id, [0u8; 32])..=(d.id, [0xffu8; 32]))? {
            let (k, _) = item?;
            self.consider(d, ChunkId(k.value().1), &mut sec)?;
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
            Error::corrupt(format!(
                "dump {} names base {b}, which is not in the catalog; run `reel check`",
                d.id
            ))
        })?),
        None => None,
    };
    let mut base_entries = match &base {
        Some(b) => Some(
            ManifestReader::new(
                reader.stream(b.manifest_chunks(), format!("manifest of dump {}", b.id)),
            )?
            .peekable(),
        ),
        None => None,
    };
    let manifest = ManifestReader::new(
        reader.stream(d.manifest_chunks(), format!("manifest of dump {}", d.id)),
    )?;
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
    let mut f = File::create(path).at(path)?;
    f.write_all(data).at(path)?;
    f.sync_all().at(path)?;
    Ok(data.len() as u64)
}

/// The LABEL text.
fn label_text(cat: &TapeCatalog) -> String {
    let mut s = format!(
        "format: {}\nlabel: {}\ncreated: {}\nmedia_set: {}\nsequence: {}\nreel: {}\n",
        cat.format,
        cat.label,
        cat.created,
        cat.media_set.as_deref().unwrap_or(""),
        cat.sequence,
        cat.reel_version
    );
    for d in &cat.dumps {
        s.push_str(&format!(
            "dump: {} {} level {}\n",
            d.volume,
            format_rfc3339(d.time_ns),
            d.level
        ));
    }
    s
}

/// Write the payload directory for `plan` under `dir` (created; must not hold a payload yet):
/// packs with the chunks in the order a restore reads them, framed and compressed like the
/// spool's, then LABEL and CATALOG. Chunk bytes stream through one frame and one pack at a
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
    fs::create_dir_all(&packs_dir).at(&packs_dir)?;
    fs::create_dir_all(stage.join("sealed")).at(&stage)?;
    let created_ns = crate::timefmt::now_ns();
    progress.message(&format!("writing tape {label}"));
    progress.set_total(plan.bytes);

    let reader = ChunkReader::new(spool)?;
    let txn = spool.catalog.read()?;
    let all_tapes = media::tapes(spool)?;
    let mut w = Writer {
        reader: &reader,
        txn: &txn,
        owned: txn.open_table(OWNED)?,
        set_tapes: &plan.set_tapes,
        packer: Packer {
            stage: stage.clone(),
            packs_dir: packs_dir.clone(),
            level: spool.settings.compression_level,
            writer: None,
            writer_chunks: 0,
            frame: frame::Builder::default(),
            finished: Vec::new(),
            section: 0,
        },
        written: HashMap::new(),
        progress,
    };
    let dump_ref = |id: u64| -> Result<Option<DumpRef>> {
        Ok(spool.catalog.dump(id)?.map(|r| DumpRef {
            volume: r.volume,
            time_ns: r.time_ns,
        }))
    };
    let mut dumps = Vec::with_capacity(plan.dumps.len());
    let mut summary_per_dump = Vec::new();
    let mut whole_file = Vec::new();
    for d in &plan.dumps {
        w.packer.section = 0;
        let sec = w.dump(d)?;
        let wf = whole_file_bytes(spool, &reader, d)?;
        let mut tapes_needed = media::needed_labels(&txn, &all_tapes, &d.full_chain(), &|id| {
            w.written.contains_key(&id.0).then(|| label.to_string())
        })?;
        // This tape holds the dump's record even when all its chunks are on earlier tapes.
        if !tapes_needed.iter().any(|l| l == label) {
            tapes_needed.push(label.to_string());
        }
        let missing_ref = |id: u64| {
            Error::corrupt(format!(
                "dump {} names dump {id} in its chain, which is not in the catalog; run `reel check`",
                d.id
            ))
        };
        let base_ref = match d.base {
            Some(b) => Some(dump_ref(b)?.ok_or_else(|| missing_ref(b))?),
            None => None,
        };
        let chain_refs = d
            .chain
            .iter()
            .map(|&c| dump_ref(c)?.ok_or_else(|| missing_ref(c)))
            .collect::<Result<Vec<_>>>()?;
        let merged_from_ref = match d.merged_from {
            Some(m) => dump_ref(m)?,
            None => None,
        };
        summary_per_dump.push((d.id, w.packer.section));
        whole_file.push((d.id, wf));
        dumps.push(TapeDump {
            id: d.id,
            volume: d.volume.clone(),
            time_ns: d.time_ns,
            time: format_rfc3339(d.time_ns),
            level: d.level,
            requested_level: d.requested_level,
            base: d.base,
            base_ref,
            chain: d.chain.clone(),
            chain_refs,
            merged_from: d.merged_from,
            merged_from_ref,
            source: d.source.clone(),
            scan_started_ns: d.scan_started_ns,
            duration_ns: d.duration_ns,
            entries: d.entries,
            files: d.files,
            dirs: d.dirs,
            logical_bytes: d.logical_bytes,
            read_bytes: d.read_bytes,
            new_chunks: d.new_chunks,
            stored_bytes: d.stored_bytes,
            owned_chunks: d.owned_chunks,
            owned_bytes: d.owned_bytes,
            manifest: d
                .manifest
                .iter()
                .map(|(id, len)| ManifestChunk {
                    id: HexId(*id),
                    len: *len,
                })
                .collect(),
            manifest_bytes: d.manifest_bytes,
            warnings: d.warnings.clone(),
            tape_bytes: w.packer.section,
            whole_file_bytes: wf,
            tapes_needed,
            // Pack indexes until every pack is sealed and named (below).
            packs: sec
                .packs
                .iter()
                .map(|&i| HexId(pack_index_key(i)))
                .collect(),
            chunks: sec.chunks,
        });
    }
    w.packer.seal()?;
    let chunks = w.written.len() as u64;
    let packs = std::mem::take(&mut w.packer.finished);
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
        packs,
        dumps,
    };
    let mut bytes = write_file(&dir.join(LABEL_FILE), label_text(&cat).as_bytes())?;
    let cat_path = dir.join(CATALOG_FILE);
    {
        let f = File::create(&cat_path).at(&cat_path)?;
        let mut out = BufWriter::new(f);
        serde_json::to_writer_pretty(&mut out, &cat)
            .map_err(|e| Error::io(&cat_path, std::io::Error::other(e)))?;
        out.write_all(b"\n").at(&cat_path)?;
        let f = out
            .into_inner()
            .map_err(|e| Error::io(&cat_path, e.into_error()))?;
        f.sync_all().at(&cat_path)?;
        bytes += f.metadata().at(&cat_path)?.len();
    }
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
/// `media::record_tape` once the image is complete.
pub fn tape_record(summary: &PayloadSummary, dir: &Path) -> Result<(TapeRecord, Vec<ChunkId>)> {
    let cat = read_catalog(dir)?;
    let chunks = catalog_chunks(&cat);
    let rec = TapeRecord {
        version: 1,
        label: summary.label.clone(),
        created_ns: summary.created_ns,
        media_set: summary.media_set.clone(),
        sequence: summary.sequence,
        bytes: summary.bytes,
        volumes: 1,
        dumps: summary.per_dump.clone(),
        packs: summary.packs.iter().map(|p| p.0).collect(),
        whole_file_bytes: summary.whole_file_bytes,
    };
    Ok((rec, chunks))
}

/// Every chunk the catalog lists, once, sorted.
fn catalog_chunks(cat: &TapeCatalog) -> Vec<ChunkId> {
    let mut v: Vec<ChunkId> = cat
        .dumps
        .iter()
        .flat_map(|d| d.chunks.iter().map(|h| ChunkId(h.0)))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

// ---------------------------------------------------------------------------------------------
// Reading and verifying

fn read_catalog(dir: &Path) -> Result<TapeCatalog> {
    let path = dir.join(CATALOG_FILE);
    let f = File::open(&path).at(&path)?;
    let cat: TapeCatalog = serde_json::from_reader(BufReader::new(f)).map_err(|e| {
        Error::corrupt(format!(
            "{}: not a reel tape catalog ({e}); the tape is damaged or not a reel tape",
            path.display()
        ))
    })?;
    if cat.format != PAYLOAD_FORMAT {
        return Err(Error::corrupt(format!(
            "{}: tape format {} (this reel reads format {PAYLOAD_FORMAT}); use a newer reel",
            path.display(),
            cat.format
        )));
    }
    Ok(cat)
}

/// LABEL as key/value pairs (`dump` lines collected in order).
fn read_label(dir: &Path) -> Result<(HashMap<String, String>, Vec<String>)> {
    let path = dir.join(LABEL_FILE);
    let mut text = String::new();
    File::open(&path)
        .at(&path)?
        .take(16 << 20)
        .read_to_string(&mut text)
        .map_err(|e| Error::corrupt(format!("{}: unreadable label ({e})", path.display())))?;
    let mut keys = HashMap::new();
    let mut dumps = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let (k, v) = line
            .split_once(": ")
            .or_else(|| line.split_once(':'))
            .ok_or_else(|| {
                Error::corrupt(format!(
                    "{} line {}: not \"key: value\"; the tape is damaged or not a reel tape",
                    path.display(),
                    n + 1
                ))
            })?;
        if k == "dump" {
            dumps.push(v.to_string());
        } else {
            keys.insert(k.to_string(), v.trim().to_string());
        }
    }
    Ok((keys, dumps))
}

fn pack_file(dir: &Path, name: &HexId) -> PathBuf {
    dir.join(PACKS_DIR)
        .join(format!("{}.pack", ChunkId(name.0).to_hex()))
}

/// Read a payload directory back: parse LABEL and CATALOG, check every pack's name against
/// its bytes, every blob's chunk hash (frames: every chunk inside), the catalog's chunk lists
/// against the packs, and every manifest held on the tape as strictly as a restore reads it.
/// Changes nothing.
pub fn verify_payload(dir: &Path) -> Result<TapeCatalog> {
    Ok(verify_payload_with(dir, None)?.catalog)
}

/// A payload that `verify_payload_with` found good.
#[derive(Clone, Debug)]
pub struct VerifiedPayload {
    pub catalog: TapeCatalog,
    /// Indexes into `catalog.dumps` of the dumps whose manifest could not be read whole, and so
    /// was not checked: some of its chunks are neither on this tape nor in the spool given (a
    /// level N's manifest shares chunks with its base's, which may be on an earlier tape).
    pub manifests_elsewhere: Vec<usize>,
}

/// `verify_payload`, reading the manifest chunks that are not on the tape from `spool` when
/// given (the base's chunks of an incremental whose base is on an earlier tape). Every dump's
/// manifest that can be read whole is read through [`ManifestReader`], the gatekeeper a
/// restore reads it with: unsafe paths, a broken tree, extents that do not add up to a file's
/// size, a bad trailer all fail the tape, naming the dump.
pub fn verify_payload_with(dir: &Path, spool: Option<&ChunkReader>) -> Result<VerifiedPayload> {
    let cat = read_catalog(dir)?;
    let lpath = dir.join(LABEL_FILE);
    let (label, label_dumps) = read_label(dir)?;
    let mismatch = |what: &str| {
        Error::corrupt(format!(
            "{}: {what} differs from the CATALOG's; the tape is damaged",
            lpath.display()
        ))
    };
    if label.get("format").map(String::as_str) != Some(&PAYLOAD_FORMAT.to_string()) {
        return Err(mismatch("format"));
    }
    if label.get("label") != Some(&cat.label) {
        return Err(mismatch("label"));
    }
    if label.get("media_set").map(String::as_str) != Some(cat.media_set.as_deref().unwrap_or("")) {
        return Err(mismatch("media_set"));
    }
    if label.get("sequence") != Some(&cat.sequence.to_string()) {
        return Err(mismatch("sequence"));
    }
    if label_dumps.len() != cat.dumps.len() {
        return Err(mismatch("the list of dumps"));
    }
    validate_label(&cat.label)
        .map_err(|e| Error::corrupt(format!("{}: {e}", dir.join(CATALOG_FILE).display())))?;
    // Dump records: plain names, consistent chains.
    let cpath = dir.join(CATALOG_FILE);
    for d in &cat.dumps {
        let bad = |what: &str| {
            Error::corrupt(format!(
                "{}: dump {}: {what}; the tape is damaged",
                cpath.display(),
                dump_name(&d.volume, d.time_ns)
            ))
        };
        validate_volume_name(&d.volume).map_err(|_| bad("bad volume name"))?;
        if d.level > crate::level::MAX_LEVEL
            || d.chain.len() != d.chain_refs.len()
            || d.base.is_some() != d.base_ref.is_some()
            || d.base_ref.as_ref() != d.chain_refs.last()
        {
            return Err(bad("level, base and chain do not agree"));
        }
    }
    // The packs on disk are exactly the ones listed.
    let listed: HashSet<HexId> = cat.packs.iter().map(|p| p.name).collect();
    let pdir = dir.join(PACKS_DIR);
    let mut on_disk = 0usize;
    if pdir.exists() {
        for e in fs::read_dir(&pdir).at(&pdir)? {
            let e = e.at(&pdir)?;
            let name = e.file_name().to_string_lossy().into_owned();
            let ok = name
                .strip_suffix(".pack")
                .and_then(ChunkId::from_hex)
                .is_some_and(|id| listed.contains(&HexId(id.0)));
            if !ok || !e.file_type().at(e.path())?.is_file() {
                return Err(Error::corrupt(format!(
                    "{}: not a pack the CATALOG lists; the tape is damaged or not a reel tape",
                    e.path().display()
                )));
            }
            on_disk += 1;
        }
    }
    if on_disk != cat.packs.len() {
        return Err(Error::corrupt(format!(
            "{}: the CATALOG lists {} packs but {on_disk} are present; the tape is incomplete",
            pdir.display(),
            cat.packs.len()
        )));
    }
    // Where each chunk on the tape is (pack number: the index into `paths`).
    let mut present: HashMap<[u8; 32], ChunkLoc> = HashMap::new();
    let mut paths: Vec<PathBuf> = Vec::new();
    for p in &cat.packs {
        let path = pack_file(dir, &p.name);
        let r = PackReader::open(&path)?;
        if r.hash_file()?.0 != p.name.0 {
            return Err(Error::corrupt(format!(
                "pack {}: its bytes do not match its name; the tape is damaged",
                path.display()
            )));
        }
        let (entries, chunks) = crate::store::pack_chunks(&path)?;
        if r.size() != p.size || entries.len() as u64 != p.blobs || chunks.len() as u64 != p.chunks
        {
            return Err(Error::corrupt(format!(
                "pack {}: size, blob or chunk count differs from the CATALOG's; the tape is damaged",
                path.display()
            )));
        }
        let no = paths.len() as u64;
        for (id, loc) in chunks {
            present
                .entry(id.0)
                .or_insert(ChunkLoc { pack_no: no, ..loc });
        }
        paths.push(path);
    }
    for d in &cat.dumps {
        if let Some(c) = d.chunks.iter().find(|c| !present.contains_key(&c.0)) {
            return Err(Error::corrupt(format!(
                "{}: dump {} lists chunk {} but no pack on the tape holds it; the tape is damaged",
                cpath.display(),
                dump_name(&d.volume, d.time_ns),
                ChunkId(c.0).short()
            )));
        }
        if let Some(p) = d.packs.iter().find(|p| !listed.contains(p)) {
            return Err(Error::corrupt(format!(
                "{}: dump {} names pack {} which the tape does not list",
                cpath.display(),
                dump_name(&d.volume, d.time_ns),
                ChunkId(p.0).short()
            )));
        }
    }
    let tape = TapeChunks {
        paths,
        at: present,
        open: std::cell::RefCell::new(None),
    };
    let manifests_elsewhere = check_manifests(&cat, &tape, spool)?;
    Ok(VerifiedPayload {
        catalog: cat,
        manifests_elsewhere,
    })
}

/// Chunks read back out of a payload's packs, at the locations `pack_chunks` found (pack
/// numbers index `paths`); one pack open at a time.
struct TapeChunks {
    paths: Vec<PathBuf>,
    at: HashMap<[u8; 32], ChunkLoc>,
    open: std::cell::RefCell<Option<(u64, PackReader)>>,
}

impl TapeChunks {
    /// Read and verify chunk `id`, which must be on the tape.
    fn read(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let loc = *self
            .at
            .get(&id.0)
            .ok_or_else(|| Error::corrupt(format!("chunk {} is not on the tape", id.short())))?;
        let mut open = self.open.borrow_mut();
        if open.as_ref().is_none_or(|(no, _)| *no != loc.pack_no) {
            let path = &self.paths[loc.pack_no as usize];
            *open = Some((loc.pack_no, PackReader::open(path)?));
        }
        let (_, p) = open.as_ref().expect("pack opened");
        let Some(slot) = loc.frame else {
            return p.read_blob(&loc.blob_entry(*id));
        };
        let stored = p.read_stored(&loc.blob_entry(*id))?;
        frame::slice(&loc.decode_frame(&stored)?, id, slot.inner, loc.raw_len)
    }
}

/// A manifest's bytes, chunk by chunk, from the tape or else from the spool.
struct ManifestBytes<'a> {
    chunks: std::vec::IntoIter<ChunkId>,
    tape: &'a TapeChunks,
    spool: Option<&'a ChunkReader<'a>>,
    what: String,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ManifestBytes<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            let Some(id) = self.chunks.next() else {
                return Ok(0);
            };
            let got = match self.spool {
                Some(s) if !self.tape.at.contains_key(&id.0) => s.read(&id, &|| self.what.clone()),
                _ => self.tape.read(&id),
            };
            self.buf = got.map_err(std::io::Error::other)?;
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Read every dump's manifest that the tape (and `spool`) hold whole through the manifest
/// reader, to its trailer. Returns the indexes of the dumps whose manifest is partly elsewhere.
fn check_manifests(
    cat: &TapeCatalog,
    tape: &TapeChunks,
    spool: Option<&ChunkReader>,
) -> Result<Vec<usize>> {
    let mut elsewhere = Vec::new();
    for (i, d) in cat.dumps.iter().enumerate() {
        let chunks: Vec<ChunkId> = d.manifest.iter().map(|m| ChunkId(m.id.0)).collect();
        let mut whole = true;
        for id in &chunks {
            if !tape.at.contains_key(&id.0) {
                match spool {
                    Some(s) if s.locate(id)?.is_some() => {}
                    _ => whole = false,
                }
            }
        }
        if !whole {
            elsewhere.push(i);
            continue;
        }
        let name = dump_name(&d.volume, d.time_ns);
        let refused = |e: Error| {
            Error::corrupt(format!(
                "tape {}: dump {name}: its manifest is refused, as a restore would refuse it: \
                 {e}; the tape is damaged or was crafted",
                cat.label
            ))
        };
        let bytes = ManifestBytes {
            chunks: chunks.into_iter(),
            tape,
            spool,
            what: format!("manifest of dump {name}"),
            buf: Vec::new(),
            pos: 0,
        };
        for entry in ManifestReader::new(bytes).map_err(refused)? {
            entry.map_err(refused)?;
        }
    }
    Ok(elsewhere)
}

// ---------------------------------------------------------------------------------------------
// Import

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
    let mut out = File::create(&tmp).at(&tmp)?;
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
            return Err(Error::corrupt(format!(
                "pack {}: changed while it was imported (its bytes no longer match its name)",
                src.display()
            )));
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

/// Import a payload directory: verify it first (nothing changes on any error), then adopt
/// the packs holding chunks the spool lacks, add the dumps the spool does not have (matched
/// by volume and time; new ids; bases and chains mapped), with the chunks each owns, and
/// record the tape in the media catalog. Importing twice adds nothing.
pub fn import_payload(spool: &Spool, dir: &Path) -> Result<ImportSummary> {
    let verified = verify_payload_with(dir, Some(&ChunkReader::new(spool)?))?;
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
    catalog::clean_uncommitted(store.txn())?;
    let existing_tape = media::tape_in(store.txn(), &cat.label)?;
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
    let mut next_id = catalog::next_dump_id(store.txn())?;
    let mut order: Vec<&TapeDump> = cat.dumps.iter().collect();
    order.sort_by_key(|d| (d.time_ns, d.id));
    let mut new_dumps: Vec<(DumpRecord, &TapeDump)> = Vec::new();
    let mut tape_dumps: Vec<(u64, u64)> = Vec::new();
    for td in order {
        if let Some(&id) = ids.get(&td.dump_ref()) {
            if known.contains_key(&td.dump_ref()) {
                summary.dumps_present += 1;
            }
            tape_dumps.push((id, td.tape_bytes));
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
    let mut placed: Vec<PathBuf> = Vec::new();
    let tape_bytes = [LABEL_FILE, CATALOG_FILE]
        .iter()
        .map(|f| fs::metadata(dir.join(f)).at(dir.join(f)).map(|m| m.len()))
        .sum::<Result<u64>>()?
        + cat.packs.iter().map(|p| p.size).sum::<u64>();
    let tape = existing_tape.is_none().then(|| TapeRecord {
        version: 1,
        label: cat.label.clone(),
        created_ns: cat.created_ns,
        media_set: cat.media_set.clone(),
        sequence: cat.sequence,
        bytes: tape_bytes,
        volumes: 1,
        dumps: tape_dumps,
        packs: tape_packs,
        whole_file_bytes: cat.dumps.iter().map(|d| d.whole_file_bytes).sum(),
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
        for p in &placed {
            let _ = fs::remove_file(p);
        }
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
    placed: &mut Vec<PathBuf>,
    summary: &mut ImportSummary,
) -> Result<()> {
    let packs_dir = spool.packs_dir();
    for p in &cat.packs {
        let id = PackId(p.name.0);
        if store.txn().open_table(PACK_IDS)?.get(id.0)?.is_some() {
            continue;
        }
        let src = pack_file(dir, &p.name);
        let (entries, chunks) = crate::store::pack_chunks(&src)?;
        let lacking: Vec<&(ChunkId, ChunkLoc)> = {
            let t = store.txn().open_table(CHUNKS)?;
            let mut v = Vec::new();
            for c in &chunks {
                if t.get(c.0.0)?.is_none() {
                    v.push(c);
                }
            }
            v
        };
        if lacking.is_empty() {
            continue;
        }
        // The spool's write order: tmp, fsync, rename, fsync the directory, then rows.
        let tmp = copy_verified(&src, &spool.tmp_dir(), &id)?;
        let dest = pack::pack_path(&packs_dir, &id);
        let sub = dest.parent().unwrap_or(&packs_dir).to_path_buf();
        if !sub.is_dir() {
            fs::create_dir_all(&sub).at(&sub)?;
            fsync_dir(&packs_dir)?;
        }
        if !dest.exists() {
            placed.push(dest.clone());
        }
        fs::rename(&tmp, &dest).at(&dest)?;
        fsync_dir(&sub)?;
        let txn = store.txn();
        let no = catalog::take_pack_number(txn)?;
        catalog::insert_pack(txn, no, &id, p.size, &entries, crate::timefmt::now_ns())?;
        let mut t = txn.open_table(CHUNKS)?;
        for (cid, loc) in lacking {
            if t.get(cid.0)?.is_none() {
                t.insert(
                    cid.0,
                    ChunkLoc {
                        pack_no: no,
                        ..*loc
                    }
                    .encode(),
                )?;
                summary.chunks_added += 1;
            }
        }
        summary.packs_adopted += 1;
        summary.pack_bytes += p.size;
    }
    // A copy of each new dump record in a pack, so the catalog stays rebuildable from packs.
    for (rec, _) in new_dumps {
        let blob = rec.encode();
        store.put_one(ChunkId::of(&blob), &blob, BlobKind::DumpRecord)?;
    }
    let record_tape = tape.is_some();
    store.finish(|txn, _| {
        let mut owned_rows = Vec::new();
        {
            let chunks_t = txn.open_table(CHUNKS)?;
            for (rec, td) in new_dumps {
                for c in &td.chunks {
                    let loc = chunks_t.get(c.0)?.ok_or_else(|| {
                        Error::corrupt(format!(
                            "chunk {} of dump {} is on the tape but did not reach the chunk index",
                            ChunkId(c.0).short(),
                            rec.id
                        ))
                    })?;
                    let share = stored_share(&ChunkLoc::decode(&loc.value())?);
                    owned_rows.push(((rec.id, c.0), share));
                }
            }
        }
        {
            let mut owned = txn.open_table(OWNED)?;
            for (k, v) in owned_rows {
                owned.insert(k, v)?;
            }
        }
        for (rec, _) in new_dumps {
            catalog::insert_dump(txn, rec)?;
        }
        catalog::set_meta_u64(txn, catalog::META_NEXT_DUMP_ID, next_id)?;
        if let Some(rec) = &tape {
            media::record_tape(txn, rec, catalog_chunks(cat).into_iter())?;
        }
        Ok(())
    })?;
    summary.tape_recorded = record_tape;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dump::{DumpOptions, dump_volume};
    use crate::progress::NoProgress;
    use crate::restore::{RestoreOptions, restore_dump};
    use std::collections::BTreeMap;

    const DAY: i64 = 86_400 * 1_000_000_000;
    const T0: i64 = 1_700_000_000 * 1_000_000_000;

    /// Deterministic bytes that compress a little (so frames and compression both run).
    fn bytes(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 4 == 0 { b'a' } else { x as u8 }
            })
            .collect()
    }

    fn build_tree(root: &Path) {
        fs::create_dir_all(root.join("sub/deep")).unwrap();
        fs::write(root.join("big"), bytes(1, 600_000)).unwrap();
        fs::write(root.join("small"), b"hello tape").unwrap();
        fs::write(root.join("sub/a"), bytes(2, 40_000)).unwrap();
        fs::write(root.join("sub/deep/b"), bytes(3, 90_000)).unwrap();
        fs::write(root.join("empty"), b"").unwrap();
    }

    /// Day 2: one file grows a tail, one is new, one is gone.
    fn change_tree(root: &Path) {
        let mut big = bytes(1, 600_000);
        big.extend(bytes(9, 20_000));
        fs::write(root.join("big"), big).unwrap();
        fs::write(root.join("sub/new"), bytes(4, 30_000)).unwrap();
        fs::remove_file(root.join("small")).unwrap();
    }

    /// Relative path -> file content (None for a directory).
    fn snapshot(root: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                let rel = p.strip_prefix(root).unwrap().to_path_buf();
                if p.is_dir() {
                    out.insert(rel, None);
                    stack.push(p);
                } else {
                    out.insert(rel, Some(fs::read(&p).unwrap()));
                }
            }
        }
        out
    }

    struct Fixture {
        tmp: tempfile::TempDir,
        spool: Spool,
        day0: BTreeMap<PathBuf, Option<Vec<u8>>>,
        day1: BTreeMap<PathBuf, Option<Vec<u8>>>,
    }

    fn dump(spool: &Spool, level: u8, t: i64) -> DumpRecord {
        let opts = DumpOptions {
            level,
            time_ns: Some(t),
            reread: false,
        };
        dump_volume(spool, "v", &opts, &NoProgress).unwrap().record
    }

    /// A spool with volume v: a level 0 on day 0 and a level 1 on day 1.
    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let vol = tmp.path().join("vol");
        build_tree(&vol);
        let mut spool = Spool::init(&tmp.path().join("spool")).unwrap();
        spool.add_volume("v", &vol).unwrap();
        let day0 = snapshot(&vol);
        dump(&spool, 0, T0);
        change_tree(&vol);
        let day1 = snapshot(&vol);
        dump(&spool, 1, T0 + DAY);
        Fixture {
            tmp,
            spool,
            day0,
            day1,
        }
    }

    fn export(f: &Fixture, set: Option<&str>, label: &str, seq: u32) -> (PathBuf, PayloadSummary) {
        let plan = plan_export(&f.spool, &[], set).unwrap();
        let dir = f.tmp.path().join(format!("tape-{label}"));
        let s = write_payload(&f.spool, &plan, label, set, seq, &dir, &NoProgress).unwrap();
        (dir, s)
    }

    fn record(f: &Fixture, s: &PayloadSummary, dir: &Path) {
        let (rec, chunks) = tape_record(s, dir).unwrap();
        let txn = f.spool.catalog.write().unwrap();
        media::record_tape(&txn, &rec, chunks.into_iter()).unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn export_verify_import_restore_round_trip() {
        let f = fixture();
        let plan = plan_export(&f.spool, &[], None).unwrap();
        assert_eq!(plan.dumps.len(), 2);
        // Each dump carries exactly what it owns; the level 1 far less than the level 0.
        for (d, p) in plan.dumps.iter().zip(&plan.per_dump) {
            assert_eq!(p.chunks, f.spool.catalog.owned_summary(d.id).unwrap().0);
        }
        assert!(plan.per_dump[1].chunks * 3 < plan.per_dump[0].chunks);

        let (dir, s) = export(&f, None, "T-1", 1);
        assert_eq!(s.files[0], PathBuf::from(LABEL_FILE));
        assert_eq!(s.files[1], PathBuf::from(CATALOG_FILE));
        assert_eq!(s.files.len(), 2 + s.packs.len());
        assert!(s.per_dump[1].1 < s.per_dump[0].1);
        // The level 1's whole-file baseline: the changed and new files plus directories.
        assert_eq!(s.whole_file[1].1, 620_000 + 30_000 + 3 * DIR_BLOCK);
        assert!(!dir.join(STAGE_DIR).exists());
        let label = fs::read_to_string(dir.join(LABEL_FILE)).unwrap();
        assert!(
            label.contains("label: T-1\n") && label.contains(" level 1\n"),
            "{label}"
        );

        let cat = verify_payload(&dir).unwrap();
        assert_eq!(cat.dumps.len(), 2);
        assert_eq!(cat.dumps[1].tapes_needed, ["T-1"]);
        assert_eq!(cat.dumps[1].base_ref.as_ref().unwrap().time_ns, T0);

        // Into an empty spool.
        let tmp2 = tempfile::tempdir().unwrap();
        let target = Spool::init(&tmp2.path().join("spool")).unwrap();
        let sum = import_payload(&target, &dir).unwrap();
        assert_eq!(sum.dumps_added.len(), 2);
        assert!(sum.tape_recorded && sum.packs_adopted == s.packs.len() as u64);
        let got = target.catalog.dumps(Some("v")).unwrap();
        assert_eq!(
            got.iter().map(|d| (d.time_ns, d.level)).collect::<Vec<_>>(),
            [(T0, 0), (T0 + DAY, 1)]
        );
        assert_eq!(got[1].base, Some(got[0].id));
        assert_eq!(got[1].chain, vec![got[0].id]);
        for (d, want) in got.iter().zip([&f.day0, &f.day1]) {
            let out = tmp2.path().join(format!("restore-{}", d.id));
            restore_dump(&target, d, &out, &RestoreOptions::default(), &NoProgress).unwrap();
            assert_eq!(&snapshot(&out), want, "dump {}", d.id);
        }
        let tapes = media::tapes(&target).unwrap();
        assert_eq!(tapes.len(), 1);
        assert!(media::dump_on_tape(&target, got[1].id).unwrap());
        assert_eq!(media::tapes_needed(&target, &got[1]).unwrap(), ["T-1"]);

        // Twice: nothing more.
        let again = import_payload(&target, &dir).unwrap();
        assert!(again.dumps_added.is_empty() && again.packs_adopted == 0);
        assert!(!again.tape_recorded);
        assert_eq!(again.dumps_present, 2);
        assert_eq!(target.catalog.dumps(None).unwrap().len(), 2);
    }

    #[test]
    fn media_set_leaves_out_chunks_on_earlier_tapes() {
        let f = fixture();
        let (dir1, s1) = export(&f, Some("weekly"), "W-1", 1);
        record(&f, &s1, &dir1);
        // Exported dumps are not planned again.
        assert!(plan_export(&f.spool, &[], None).unwrap().dumps.is_empty());
        // A new full of an unchanged tree owns every chunk again...
        let full = dump(&f.spool, 0, T0 + 2 * DAY);
        let alone = plan_export(&f.spool, &[], None).unwrap();
        assert_eq!(alone.dumps.len(), 1);
        assert_eq!(
            alone.per_dump[0].chunks,
            f.spool.catalog.owned_summary(full.id).unwrap().0
        );
        // ...but in the media set it writes only what is not on W-1 (its changed manifest).
        let in_set = plan_export(&f.spool, &[], Some("weekly")).unwrap();
        assert!(in_set.per_dump[0].chunks <= full.manifest.len() as u64);
        assert!(in_set.per_dump[0].chunks * 10 < alone.per_dump[0].chunks);
        let plan = in_set;
        let dir2 = f.tmp.path().join("tape-W-2");
        let s2 = write_payload(
            &f.spool,
            &plan,
            "W-2",
            Some("weekly"),
            2,
            &dir2,
            &NoProgress,
        )
        .unwrap();
        assert!(s2.bytes * 5 < s1.bytes);
        let cat = verify_payload(&dir2).unwrap();
        assert_eq!(cat.dumps[0].tapes_needed, ["W-1", "W-2"]);
    }

    fn spool_is_empty(s: &Spool) {
        assert!(s.catalog.dumps(None).unwrap().is_empty());
        assert!(s.catalog.packs().unwrap().is_empty());
        assert!(pack::list_packs(&s.packs_dir()).unwrap().is_empty());
        assert!(media::tapes(s).unwrap().is_empty());
    }

    #[test]
    fn a_flipped_byte_fails_verify_and_import_changes_nothing() {
        let f = fixture();
        let (dir, s) = export(&f, None, "T-1", 1);
        let pack = dir.join(&s.files[2]);
        let mut b = fs::read(&pack).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0x40;
        fs::write(&pack, b).unwrap();
        assert!(matches!(verify_payload(&dir), Err(Error::Corrupt(_))));
        let tmp2 = tempfile::tempdir().unwrap();
        let target = Spool::init(&tmp2.path().join("spool")).unwrap();
        assert!(import_payload(&target, &dir).is_err());
        spool_is_empty(&target);
    }

    #[test]
    fn a_catalog_naming_a_missing_chunk_fails() {
        let f = fixture();
        let (dir, _) = export(&f, None, "T-1", 1);
        let mut cat = read_catalog(&dir).unwrap();
        cat.dumps[1]
            .chunks
            .push(HexId(ChunkId::of(b"not on this tape").0));
        fs::write(
            dir.join(CATALOG_FILE),
            serde_json::to_vec_pretty(&cat).unwrap(),
        )
        .unwrap();
        let err = verify_payload(&dir).unwrap_err().to_string();
        assert!(err.contains("no pack on the tape holds it"), "{err}");
        let tmp2 = tempfile::tempdir().unwrap();
        let target = Spool::init(&tmp2.path().join("spool")).unwrap();
        assert!(import_payload(&target, &dir).is_err());
        spool_is_empty(&target);
        // A stray file in packs/ is refused too.
        cat.dumps[1].chunks.pop();
        fs::write(
            dir.join(CATALOG_FILE),
            serde_json::to_vec_pretty(&cat).unwrap(),
        )
        .unwrap();
        verify_payload(&dir).unwrap();
        fs::write(dir.join(PACKS_DIR).join("stray"), b"x").unwrap();
        assert!(verify_payload(&dir).is_err());
    }

    /// A manifest with chunks neither on the tape nor in the spool cannot be read, so it is
    /// not checked: verify says which dump, and import refuses to add that dump unchecked. A
    /// spool that holds those chunks lets verify read and check it.
    #[test]
    fn a_manifest_partly_elsewhere_is_checked_against_the_spool_or_refused_by_import() {
        let f = fixture();
        // A tape of the level 0 only, whose CATALOG names the level 1's manifest as the
        // level 0's: chunks the source spool holds and the tape does not.
        let mut plan = plan_export(&f.spool, &[], None).unwrap();
        plan.dumps.truncate(1);
        plan.per_dump.truncate(1);
        let dir = f.tmp.path().join("tape-A");
        write_payload(&f.spool, &plan, "A", None, 1, &dir, &NoProgress).unwrap();
        let mut cat = read_catalog(&dir).unwrap();
        let l1 = f.spool.catalog.dumps(None).unwrap()[1].clone();
        let on_tape: HashSet<[u8; 32]> = cat.dumps[0].chunks.iter().map(|c| c.0).collect();
        assert!(l1.manifest.iter().all(|(id, _)| !on_tape.contains(id)));
        let write = |cat: &TapeCatalog| {
            fs::write(
                dir.join(CATALOG_FILE),
                serde_json::to_vec_pretty(cat).unwrap(),
            )
            .unwrap()
        };
        let manifest_of = |chunks: &[([u8; 32], u32)]| {
            chunks
                .iter()
                .map(|(id, len)| ManifestChunk {
                    id: HexId(*id),
                    len: *len,
                })
                .collect::<Vec<_>>()
        };
        cat.dumps[0].manifest = manifest_of(&l1.manifest);
        write(&cat);
        assert_eq!(
            verify_payload_with(&dir, None).unwrap().manifests_elsewhere,
            [0]
        );
        let source = ChunkReader::new(&f.spool).unwrap();
        let v = verify_payload_with(&dir, Some(&source)).unwrap();
        assert!(v.manifests_elsewhere.is_empty(), "read from the spool");
        let tmp2 = tempfile::tempdir().unwrap();
        let target = Spool::init(&tmp2.path().join("spool")).unwrap();
        let err = import_payload(&target, &dir).unwrap_err().to_string();
        assert!(err.contains("cannot be checked"), "{err}");
        spool_is_empty(&target);

        // A chunk that is on the tape but no manifest (a data chunk of the level 0): read,
        // and refused.
        let l0 = f.spool.catalog.dumps(None).unwrap()[0].clone();
        let data = cat.dumps[0]
            .chunks
            .iter()
            .map(|c| c.0)
            .find(|c| l0.manifest.iter().all(|(id, _)| id != c))
            .unwrap();
        cat.dumps[0].manifest = manifest_of(&[(data, 1)]);
        write(&cat);
        let err = verify_payload(&dir).unwrap_err().to_string();
        assert!(err.contains("its manifest is refused"), "{err}");
        assert!(import_payload(&target, &dir).is_err());
        spool_is_empty(&target);
    }

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
}
