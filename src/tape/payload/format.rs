//! The on-tape layout of a payload: the file names, the CATALOG's JSON types (field names are
//! part of the tape format, docs/FORMAT.md) and how reel's dump records map to them, the
//! LABEL text, and reading both back.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::crypto::{Fingerprint, Keys};
use crate::error::Damaged;
use crate::error::IoContext;
use crate::record::{DumpRecord, ScanTotals, TapeDumpSummary};
use crate::tape::payload::key::{TapeKey, catalog_aad};
use crate::timefmt::format_rfc3339;
use crate::{ChunkId, Error, Result};

/// Version of the payload layout (LABEL and CATALOG `format`).
pub const PAYLOAD_FORMAT: u32 = 1;
/// Top directory of a payload.
pub const PAYLOAD_DIR: &str = "reel";
pub const LABEL_FILE: &str = "reel/LABEL";
pub const CATALOG_FILE: &str = "reel/CATALOG";
pub const PACKS_DIR: &str = "reel/packs";
/// The LABEL key naming the fingerprint of the key a tape is sealed under.
pub const KEY_FINGERPRINT: &str = "key_fingerprint";

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
    /// Written as the record's fields (`entries`, `files`, … `stored_bytes`).
    #[serde(flatten)]
    pub totals: ScanTotals,
    pub owned_chunks: u64,
    pub owned_bytes: u64,
    pub manifest: Vec<ManifestChunk>,
    pub manifest_bytes: u64,
    pub warnings: Vec<String>,
    /// The host that made the dump; absent (null) on a tape written before records had it.
    #[serde(default)]
    pub host: Option<String>,
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
    /// The fingerprint of the key the tape is sealed under (16 hex digits), as LABEL's
    /// `key_fingerprint`; absent on a tape from a plain spool, whose CATALOG is plain JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<String>,
    /// In the order they are on the tape.
    pub packs: Vec<TapePack>,
    /// In time order.
    pub dumps: Vec<TapeDump>,
}

/// A dump's chain by (volume, time), which another spool can resolve to its own ids.
pub(super) struct ChainRefs {
    pub base: Option<DumpRef>,
    pub chain: Vec<DumpRef>,
    pub merged_from: Option<DumpRef>,
}

/// What a tape holds of one dump.
pub(super) struct OnTape {
    pub tape_bytes: u64,
    pub whole_file_bytes: u64,
    pub tapes_needed: Vec<String>,
    pub packs: Vec<HexId>,
    pub chunks: Vec<HexId>,
}

impl TapeDump {
    /// The CATALOG form of `d`; `record` maps it back.
    pub(super) fn from_record(d: &DumpRecord, refs: ChainRefs, on_tape: OnTape) -> TapeDump {
        TapeDump {
            id: d.id,
            volume: d.volume.clone(),
            time_ns: d.time_ns,
            time: format_rfc3339(d.time_ns),
            level: d.level,
            requested_level: d.requested_level,
            base: d.base,
            base_ref: refs.base,
            chain: d.chain.clone(),
            chain_refs: refs.chain,
            merged_from: d.merged_from,
            merged_from_ref: refs.merged_from,
            source: d.source.clone(),
            scan_started_ns: d.scan_started_ns,
            duration_ns: d.duration_ns,
            totals: d.totals,
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
            host: d.host.clone(),
            tape_bytes: on_tape.tape_bytes,
            whole_file_bytes: on_tape.whole_file_bytes,
            tapes_needed: on_tape.tapes_needed,
            packs: on_tape.packs,
            chunks: on_tape.chunks,
        }
    }

    /// Where to find what this dump needs besides tape `label`, for an error telling the admin
    /// what to import first: "tape A, B", or "the tape holding it" when no other is named.
    pub(super) fn other_tapes(&self, label: &str) -> String {
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

    pub(super) fn dump_ref(&self) -> DumpRef {
        DumpRef {
            volume: self.volume.clone(),
            time_ns: self.time_ns,
        }
    }

    /// What the media catalog keeps of this dump (`TapeRecord::summaries`), under this
    /// spool's `id` and `chain`.
    pub fn summary(&self, id: u64, chain: Vec<u64>) -> TapeDumpSummary {
        TapeDumpSummary {
            id,
            volume: self.volume.clone(),
            time_ns: self.time_ns,
            level: self.level,
            chain,
            tapes_needed: self.tapes_needed.clone(),
        }
    }

    /// The dump's record as the tape has it (ids are the exporting spool's).
    pub fn to_record(&self) -> DumpRecord {
        self.record(self.id, self.base, self.chain.clone(), self.merged_from)
    }

    /// The `DumpRecord` under new ids (`id`, `base`, `chain`, `merged_from` given).
    pub(super) fn record(
        &self,
        id: u64,
        base: Option<u64>,
        chain: Vec<u64>,
        merged_from: Option<u64>,
    ) -> DumpRecord {
        DumpRecord {
            version: crate::record::DUMP_RECORD_VERSION,
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
            totals: self.totals,
            owned_chunks: self.owned_chunks,
            owned_bytes: self.owned_bytes,
            manifest: self.manifest.iter().map(|m| (m.id.0, m.len)).collect(),
            manifest_bytes: self.manifest_bytes,
            warnings: self.warnings.clone(),
            host: self.host.clone(),
        }
    }
}

pub(super) fn dump_name(volume: &str, time_ns: i64) -> String {
    format!("{volume}@{}", format_rfc3339(time_ns))
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

/// The LABEL text.
pub(super) fn label_text(cat: &TapeCatalog) -> String {
    let mut s = format!(
        "format: {}\nlabel: {}\ncreated: {}\nmedia_set: {}\nsequence: {}\nreel: {}\n",
        cat.format,
        cat.label,
        cat.created,
        cat.media_set.as_deref().unwrap_or(""),
        cat.sequence,
        cat.reel_version
    );
    if let Some(fp) = &cat.key_fingerprint {
        s.push_str(&format!("{KEY_FINGERPRINT}: {fp}\n"));
    }
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

/// Every chunk the catalog lists, once, sorted.
pub(super) fn catalog_chunks(cat: &TapeCatalog) -> Vec<ChunkId> {
    let mut v: Vec<ChunkId> = cat
        .dumps
        .iter()
        .flat_map(|d| d.chunks.iter().map(|h| ChunkId(h.0)))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

impl TapeCatalog {
    /// The key the tape is sealed under; None for a plain tape.
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        self.key_fingerprint.as_deref().and_then(Fingerprint::parse)
    }
}

/// The CATALOG of the payload in `dir`, opened with `key` and parsed (not verified: see
/// `verify_payload`).
pub fn read_catalog(dir: &Path, key: &TapeKey) -> Result<TapeCatalog> {
    Ok(open_catalog(dir, key)?.0)
}

/// The key a payload's LABEL says it is sealed under (None for a plain tape), and its label,
/// from LABEL alone: a command refuses a tape whose key it does not have before reading more.
pub fn tape_fingerprint(dir: &Path) -> Result<(String, Option<Fingerprint>)> {
    let label = Label::read(dir)?;
    Ok((label.name(dir), label.fingerprint(dir)?))
}

/// The CATALOG of the payload in `dir`, opened with `key` (refused when the tape needs
/// another), and the keys the tape is read with (plain for a plain tape).
pub(super) fn open_catalog(dir: &Path, key: &TapeKey) -> Result<(TapeCatalog, Keys)> {
    let label = Label::read(dir)?;
    let needs = label.fingerprint(dir)?;
    let keys = key.for_tape(&label.name(dir), needs)?;
    let path = dir.join(CATALOG_FILE);
    let not_catalog = |e: serde_json::Error| {
        Error::damaged(
            Damaged::File(path.clone()),
            format!(
                "{}: not a reel tape catalog ({e}); the tape is damaged or not a reel tape",
                path.display()
            ),
        )
    };
    let cat: TapeCatalog = match keys.sealer() {
        None => {
            let f = File::open(&path).at(&path)?;
            serde_json::from_reader(BufReader::new(f)).map_err(not_catalog)?
        }
        Some(sealer) => {
            let sealed = std::fs::read(&path).at(&path)?;
            let plain = sealer
                .open(&catalog_aad(&label.bytes), &sealed)
                .map_err(|_| {
                    Error::damaged(
                        Damaged::File(path.clone()),
                        format!(
                            "{}: authentication failed: the sealed CATALOG was changed, or \
                             belongs to another tape (it is bound to this tape's LABEL); the \
                             tape is damaged",
                            path.display()
                        ),
                    )
                })?;
            serde_json::from_slice(&plain).map_err(not_catalog)?
        }
    };
    if cat.format != PAYLOAD_FORMAT {
        return Err(Error::damaged(
            Damaged::File(path.clone()),
            format!(
                "{}: tape format {} (this reel reads format {PAYLOAD_FORMAT}); use a newer reel",
                path.display(),
                cat.format
            ),
        ));
    }
    if cat.fingerprint() != needs {
        return Err(Error::damaged(
            Damaged::File(path.clone()),
            format!(
                "{}: the CATALOG's key fingerprint differs from the LABEL's; the tape is damaged",
                path.display()
            ),
        ));
    }
    Ok((cat, keys))
}

/// The LABEL file: its bytes (a sealed CATALOG is bound to them) and its lines.
struct Label {
    bytes: Vec<u8>,
    keys: HashMap<String, String>,
    dumps: Vec<String>,
}

impl Label {
    fn read(dir: &Path) -> Result<Label> {
        let path = dir.join(LABEL_FILE);
        let mut bytes = Vec::new();
        File::open(&path)
            .at(&path)?
            .take(16 << 20)
            .read_to_end(&mut bytes)
            .at(&path)?;
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            Error::damaged(
                Damaged::File(path.clone()),
                format!("{}: unreadable label ({e})", path.display()),
            )
        })?;
        let mut keys = HashMap::new();
        let mut dumps = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let (k, v) = line
                .split_once(": ")
                .or_else(|| line.split_once(':'))
                .ok_or_else(|| {
                    Error::damaged(
                        Damaged::File(path.clone()),
                        format!(
                            "{} line {}: not \"key: value\"; the tape is damaged or not a reel tape",
                            path.display(),
                            n + 1
                        ),
                    )
                })?;
            if k == "dump" {
                dumps.push(v.to_string());
            } else {
                keys.insert(k.to_string(), v.trim().to_string());
            }
        }
        Ok(Label { bytes, keys, dumps })
    }

    /// The tape's label as LABEL gives it, for messages (the folder when it gives none).
    fn name(&self, dir: &Path) -> String {
        self.keys
            .get("label")
            .cloned()
            .unwrap_or_else(|| dir.display().to_string())
    }

    fn fingerprint(&self, dir: &Path) -> Result<Option<Fingerprint>> {
        let Some(v) = self.keys.get(KEY_FINGERPRINT) else {
            return Ok(None);
        };
        Fingerprint::parse(v).map(Some).ok_or_else(|| {
            let path = dir.join(LABEL_FILE);
            Error::damaged(
                Damaged::File(path.clone()),
                format!(
                    "{}: {KEY_FINGERPRINT} {v:?} is not 16 hex digits; the tape is damaged",
                    path.display()
                ),
            )
        })
    }
}

/// LABEL as key/value pairs (`dump` lines collected in order).
pub(super) fn read_label(dir: &Path) -> Result<(HashMap<String, String>, Vec<String>)> {
    let l = Label::read(dir)?;
    Ok((l.keys, l.dumps))
}

pub(super) fn pack_file(dir: &Path, name: &HexId) -> PathBuf {
    dir.join(PACKS_DIR)
        .join(format!("{}.pack", ChunkId(name.0).to_hex()))
}
