//! Versioned records: the persisted structs of the catalog (dump, clone, forget, pack, tape and
//! plain-export records, and the clone method they and `reel.toml` name), encoded with
//! postcard, each carrying its version so a newer format is refused with a message instead of
//! misread, and an older layout a type still reads is upgraded as it is read
//! (`Versioned::read_older`). FORMAT.md has their fields.

use serde::Serialize;
use serde::de::DeserializeOwned;

use serde::Deserialize;

use crate::error::Damaged;
use crate::error::{Error, Result};
use crate::types::ChunkId;

/// The version every record is written with, and the one this reel reads, unless its type
/// says otherwise (`Versioned::VERSION`).
pub const RECORD_VERSION: u32 = 1;

/// The version tape records are written with; version 1 is still read (`TapeRecordV1`).
pub const TAPE_RECORD_VERSION: u32 = 2;

/// The version dump records are written with; version 1 is still read (`DumpRecordV1`).
pub const DUMP_RECORD_VERSION: u32 = 2;

/// The version clone records are written with; version 1 is still read (`CloneRecordV1`).
pub const CLONE_RECORD_VERSION: u32 = 2;

/// A record type: what it is called in messages, and how one is named.
pub trait Versioned: Serialize + DeserializeOwned {
    /// What it is, for messages ("dump record").
    const KIND: &'static str;
    /// The version this reel writes and reads.
    const VERSION: u32 = RECORD_VERSION;
    /// The version it carries.
    fn version(&self) -> u32;
    /// Which one, for messages ("12", "of volume home"); empty when nothing names it.
    fn named(&self) -> String;
    /// A record of an older layout this reel still reads, in the current layout; None when
    /// `b` is not one (then it is decoded as the current layout).
    fn read_older(_b: &[u8]) -> Option<postcard::Result<Self>> {
        None
    }
}

/// The `Versioned` impl of a record type with a `version` field, and its `encode` and
/// `decode`: `versioned!(Type, "what it is", |r| which one)`.
macro_rules! versioned {
    ($t:ident, $kind:literal, |$r:ident| $named:expr) => {
        impl Versioned for $t {
            const KIND: &'static str = $kind;
            fn version(&self) -> u32 {
                self.version
            }
            fn named(&self) -> String {
                let $r = self;
                $named
            }
        }

        impl $t {
            pub fn encode(&self) -> Vec<u8> {
                encode(self)
            }

            pub fn decode(b: &[u8]) -> Result<$t> {
                decode(b)
            }
        }
    };
}

/// The record's bytes.
pub fn encode<T: Versioned>(r: &T) -> Vec<u8> {
    postcard::to_allocvec(r).unwrap_or_else(|e| panic!("a {} serialises: {e}", T::KIND))
}

/// A record from its bytes; damage and a version this reel does not read are errors that say
/// so.
pub fn decode<T: Versioned>(b: &[u8]) -> Result<T> {
    decode_or(b, |e| {
        Error::damaged(
            Damaged::Catalog,
            format!(
                "catalog: a {} does not decode ({e}); run `reel check`",
                T::KIND
            ),
        )
    })
}

/// [`decode`], with the caller's words for bytes that do not decode (`damaged` gets postcard's
/// error).
pub fn decode_or<T: Versioned>(
    b: &[u8],
    damaged: impl FnOnce(postcard::Error) -> Error,
) -> Result<T> {
    let r: T = match T::read_older(b) {
        Some(r) => r.map_err(damaged)?,
        None => postcard::from_bytes(b).map_err(damaged)?,
    };
    if r.version() != T::VERSION {
        let named = r.named();
        return Err(Error::damaged(
            Damaged::Catalog,
            format!(
                "{}{}{named} has version {}, this reel reads version {}: upgrade reel",
                T::KIND,
                if named.is_empty() { "" } else { " " },
                r.version(),
                T::VERSION
            ),
        ));
    }
    Ok(r)
}

/// What a dump or a clone saw of the tree and added to the spool. Both records carry it in
/// the same place, so one encoding and one JSON form (flattened on a tape's CATALOG) serve
/// both; postcard writes a nested struct field by field, so the record bytes are those of
/// the fields written out in the record.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScanTotals {
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub logical_bytes: u64,
    /// File bytes actually read (unchanged files are not read).
    pub read_bytes: u64,
    pub new_chunks: u64,
    /// Bytes of packs added to the spool.
    pub stored_bytes: u64,
    /// Uncompressed bytes of the chunks added (`new_chunks`): the data after deduplication,
    /// before compression, so a dump's dedup and compression ratios can be told apart. 0 in a
    /// record read from version 1, and absent (read as 0) from a tape written before it.
    #[serde(default)]
    pub new_raw_bytes: u64,
}

/// `ScanTotals` as version 1 records lay it out (no `new_raw_bytes`).
#[derive(Clone, Copy, Serialize, Deserialize)]
struct ScanTotalsV1 {
    entries: u64,
    files: u64,
    dirs: u64,
    logical_bytes: u64,
    read_bytes: u64,
    new_chunks: u64,
    stored_bytes: u64,
}

impl From<ScanTotalsV1> for ScanTotals {
    fn from(t: ScanTotalsV1) -> ScanTotals {
        ScanTotals {
            entries: t.entries,
            files: t.files,
            dirs: t.dirs,
            logical_bytes: t.logical_bytes,
            read_bytes: t.read_bytes,
            new_chunks: t.new_chunks,
            stored_bytes: t.stored_bytes,
            new_raw_bytes: 0,
        }
    }
}

/// The version a record starts with, when `b` starts with `version`.
fn is_version(b: &[u8], version: u32) -> bool {
    postcard::take_from_bytes::<u32>(b).is_ok_and(|(v, _)| v == version)
}

/// One dump: the catalog row, also stored as a `DumpRecord` blob in the dump's last pack.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DumpRecord {
    /// Record layout version (`DUMP_RECORD_VERSION`).
    pub version: u32,
    pub id: u64,
    pub volume: String,
    /// The dump's recorded time (the clone's time), epoch nanoseconds.
    pub time_ns: i64,
    pub level: u8,
    /// The level asked for; differs from `level` when no lower dump existed.
    pub requested_level: u8,
    pub base: Option<u64>,
    /// Ancestors from the level 0 up to the base (empty for a level 0).
    pub chain: Vec<u64>,
    /// For a synthetic level 0 made by `merge`: the dump whose manifest it records.
    pub merged_from: Option<u64>,
    /// The volume path that was read.
    pub source: String,
    /// When the scan started (the same-second rule of change detection compares with it).
    pub scan_started_ns: i64,
    pub duration_ns: u64,
    pub totals: ScanTotals,
    pub owned_chunks: u64,
    /// Compressed size of the chunks this dump owns.
    pub owned_bytes: u64,
    /// The manifest stream, as chunks in order.
    pub manifest: Vec<([u8; 32], u32)>,
    pub manifest_bytes: u64,
    /// Files that changed while they were read, and similar notices, by name.
    pub warnings: Vec<String>,
    /// The name of the host that made the dump (`gethostname`): the one that read the tree
    /// (a `merge` keeps its source dump's). None in a record read from version 1 or imported
    /// from a tape written before records had it.
    pub host: Option<String>,
}

/// Dump record version 1: version 2 without `totals.new_raw_bytes` and `host`.
#[derive(Serialize, Deserialize)]
struct DumpRecordV1 {
    version: u32,
    id: u64,
    volume: String,
    time_ns: i64,
    level: u8,
    requested_level: u8,
    base: Option<u64>,
    chain: Vec<u64>,
    merged_from: Option<u64>,
    source: String,
    scan_started_ns: i64,
    duration_ns: u64,
    totals: ScanTotalsV1,
    owned_chunks: u64,
    owned_bytes: u64,
    manifest: Vec<([u8; 32], u32)>,
    manifest_bytes: u64,
    warnings: Vec<String>,
}

impl Versioned for DumpRecord {
    const KIND: &'static str = "dump record";
    const VERSION: u32 = DUMP_RECORD_VERSION;
    fn version(&self) -> u32 {
        self.version
    }
    fn named(&self) -> String {
        self.id.to_string()
    }
    fn read_older(b: &[u8]) -> Option<postcard::Result<DumpRecord>> {
        is_version(b, 1).then(|| {
            postcard::from_bytes::<DumpRecordV1>(b).map(|r| DumpRecord {
                version: DUMP_RECORD_VERSION,
                id: r.id,
                volume: r.volume,
                time_ns: r.time_ns,
                level: r.level,
                requested_level: r.requested_level,
                base: r.base,
                chain: r.chain,
                merged_from: r.merged_from,
                source: r.source,
                scan_started_ns: r.scan_started_ns,
                duration_ns: r.duration_ns,
                totals: r.totals.into(),
                owned_chunks: r.owned_chunks,
                owned_bytes: r.owned_bytes,
                manifest: r.manifest,
                manifest_bytes: r.manifest_bytes,
                warnings: r.warnings,
                host: None,
            })
        })
    }
}

impl DumpRecord {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    pub fn decode(b: &[u8]) -> Result<DumpRecord> {
        decode(b)
    }

    pub fn manifest_chunks(&self) -> Vec<(ChunkId, u32)> {
        self.manifest
            .iter()
            .map(|(id, len)| (ChunkId(*id), *len))
            .collect()
    }

    /// A record with the given identity and chain and nothing else, for unit tests of the
    /// logic that reads only levels, times and chains.
    #[cfg(test)]
    pub(crate) fn sample(id: u64, level: u8, time_ns: i64, chain: Vec<u64>) -> DumpRecord {
        DumpRecord {
            version: DUMP_RECORD_VERSION,
            id,
            volume: "v".into(),
            time_ns,
            level,
            requested_level: level,
            base: chain.last().copied(),
            chain,
            merged_from: None,
            source: String::new(),
            scan_started_ns: 0,
            duration_ns: 0,
            totals: ScanTotals::default(),
            owned_chunks: 0,
            owned_bytes: 0,
            manifest: vec![],
            manifest_bytes: 0,
            warnings: vec![],
            host: None,
        }
    }

    /// The chain from the level 0 up to and including this dump.
    pub fn full_chain(&self) -> Vec<u64> {
        let mut c = self.chain.clone();
        c.push(self.id);
        c
    }
}

/// How a clone is taken (docs/DESIGN.md, "The three phases"). Named in `reel.toml` and in every
/// clone record.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CloneMethod {
    /// Straight into the content store: only files whose stat data changed are read.
    #[default]
    Store,
    /// A copy-on-write copy of the tree under clones/ (btrfs, xfs).
    Reflink,
    /// A plain copy of the tree under clones/.
    Copy,
    /// The admin's snapshot command prints the path of a read-only view.
    Hook,
}

impl CloneMethod {
    pub const ALL: [CloneMethod; 4] = [
        CloneMethod::Store,
        CloneMethod::Reflink,
        CloneMethod::Copy,
        CloneMethod::Hook,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CloneMethod::Store => "store",
            CloneMethod::Reflink => "reflink",
            CloneMethod::Copy => "copy",
            CloneMethod::Hook => "hook",
        }
    }

    pub(crate) fn is_default(&self) -> bool {
        *self == CloneMethod::Store
    }
}

impl std::fmt::Display for CloneMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for CloneMethod {
    type Err = Error;
    fn from_str(s: &str) -> Result<CloneMethod> {
        CloneMethod::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                Error::usage(format!(
                    "unknown clone method {s:?}: use store, reflink, copy or hook"
                ))
            })
    }
}

/// Where a clone's tree can be read.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum CloneView {
    /// `store` method: the clone is a manifest in the spool (chunks in packs).
    Manifest {
        chunks: Vec<([u8; 32], u32)>,
        bytes: u64,
    },
    /// `reflink`, `copy`, `hook`: a read-only directory tree. `statmap` (reflink and copy)
    /// is a manifest file of the volume's own stat data (inode, ctime) for the same paths,
    /// so change detection and the dump see the volume, not the copy.
    Dir {
        path: String,
        statmap: Option<String>,
    },
}

/// A volume's latest clone: the users' "yesterday" view and the input of its next dump.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CloneRecord {
    /// Record layout version (`CLONE_RECORD_VERSION`).
    pub version: u32,
    pub volume: String,
    /// When the volume was frozen; the dump made from this clone records this time.
    pub time_ns: i64,
    pub method: CloneMethod,
    /// How long the volume was frozen (freeze hook start to thaw hook end).
    pub frozen_ns: u64,
    /// When the clone's scan started (the same-second rule compares with it).
    pub scan_started_ns: i64,
    /// The volume path that was cloned.
    pub source: String,
    pub view: CloneView,
    /// The dump made from this clone, once there is one.
    pub dumped: Option<u64>,
    /// `new_chunks`, `stored_bytes` and `new_raw_bytes`: what the clone added to the spool
    /// (`store` method).
    pub totals: ScanTotals,
    pub warnings: Vec<String>,
}

/// Clone record version 1: version 2 without `totals.new_raw_bytes`.
#[derive(Serialize, Deserialize)]
struct CloneRecordV1 {
    version: u32,
    volume: String,
    time_ns: i64,
    method: CloneMethod,
    frozen_ns: u64,
    scan_started_ns: i64,
    source: String,
    view: CloneView,
    dumped: Option<u64>,
    totals: ScanTotalsV1,
    warnings: Vec<String>,
}

impl Versioned for CloneRecord {
    const KIND: &'static str = "clone record";
    const VERSION: u32 = CLONE_RECORD_VERSION;
    fn version(&self) -> u32 {
        self.version
    }
    fn named(&self) -> String {
        format!("of volume {}", self.volume)
    }
    fn read_older(b: &[u8]) -> Option<postcard::Result<CloneRecord>> {
        is_version(b, 1).then(|| {
            postcard::from_bytes::<CloneRecordV1>(b).map(|r| CloneRecord {
                version: CLONE_RECORD_VERSION,
                volume: r.volume,
                time_ns: r.time_ns,
                method: r.method,
                frozen_ns: r.frozen_ns,
                scan_started_ns: r.scan_started_ns,
                source: r.source,
                view: r.view,
                dumped: r.dumped,
                totals: r.totals.into(),
                warnings: r.warnings,
            })
        })
    }
}

impl CloneRecord {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    pub fn decode(b: &[u8]) -> Result<CloneRecord> {
        decode(b)
    }
}

/// What `prune` writes into a pack (blob kind `Forget`) besides removing the dumps from the
/// catalog: the dumps it removed, so `rebuild-catalog`, which finds dump records in the packs
/// until gc collects them, does not bring them back.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ForgetRecord {
    /// Record layout version (1).
    pub version: u32,
    /// When the prune ran, epoch nanoseconds.
    pub time_ns: i64,
    /// The removed dumps: (id, volume, dump time ns).
    pub dumps: Vec<(u64, String, i64)>,
}

versioned!(ForgetRecord, "forget record", |_r| String::new());

/// A pack the catalog names (its `packs` row).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PackRecord {
    /// blake3 of the pack file: its name.
    pub id: [u8; 32],
    pub size: u64,
    pub blobs: u64,
    pub created_ns: i64,
}

/// The pack record's layout carries no version field (the catalog's `format` versions it): it
/// is always read as the current version.
impl Versioned for PackRecord {
    const KIND: &'static str = "pack record";
    fn version(&self) -> u32 {
        RECORD_VERSION
    }
    fn named(&self) -> String {
        String::new()
    }
}

impl PackRecord {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }
}

/// One tape (one export image, possibly split into several tape volumes).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TapeRecord {
    /// Record layout version (`TAPE_RECORD_VERSION`).
    pub version: u32,
    pub label: String,
    /// When the image was written, epoch nanoseconds.
    pub created_ns: i64,
    pub media_set: Option<String>,
    /// Position in its media set (1 for the first tape); 1 without a set.
    pub sequence: u32,
    /// Bytes of the payload (label, catalog and packs).
    pub bytes: u64,
    /// Tape volumes the image was split into (`dump -M`); 1 when not split.
    pub volumes: u32,
    /// The dumps it holds, by this spool's dump id, with the pack bytes written for each.
    pub dumps: Vec<(u64, u64)>,
    /// The packs on it (blake3 of each pack file = its name).
    pub packs: Vec<[u8; 32]>,
    /// What whole-file dumps at the same levels would have written (DESIGN: tape usage).
    pub whole_file_bytes: u64,
    /// The dumps it holds as the media catalog keeps them, so the tape stays listed and its
    /// dumps restorable after prune removes them from the catalog. Empty in a record read
    /// from version 1.
    pub summaries: Vec<TapeDumpSummary>,
}

/// A dump on a tape, as its tape record keeps it (ids are this spool's).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TapeDumpSummary {
    pub id: u64,
    pub volume: String,
    pub time_ns: i64,
    pub level: u8,
    /// Ancestors from the level 0 up to the base, as in `DumpRecord::chain`.
    pub chain: Vec<u64>,
    /// Labels of the tapes a restore of it needs, oldest first (the tape's CATALOG
    /// `tapes_needed`).
    pub tapes_needed: Vec<String>,
}

/// Tape record version 1: version 2 without `summaries`.
#[derive(Serialize, Deserialize)]
struct TapeRecordV1 {
    version: u32,
    label: String,
    created_ns: i64,
    media_set: Option<String>,
    sequence: u32,
    bytes: u64,
    volumes: u32,
    dumps: Vec<(u64, u64)>,
    packs: Vec<[u8; 32]>,
    whole_file_bytes: u64,
}

impl Versioned for TapeRecord {
    const KIND: &'static str = "tape record";
    const VERSION: u32 = TAPE_RECORD_VERSION;
    fn version(&self) -> u32 {
        self.version
    }
    fn named(&self) -> String {
        self.label.clone()
    }
    fn read_older(b: &[u8]) -> Option<postcard::Result<TapeRecord>> {
        is_version(b, 1).then(|| {
            postcard::from_bytes::<TapeRecordV1>(b).map(|r| TapeRecord {
                version: TAPE_RECORD_VERSION,
                label: r.label,
                created_ns: r.created_ns,
                media_set: r.media_set,
                sequence: r.sequence,
                bytes: r.bytes,
                volumes: r.volumes,
                dumps: r.dumps,
                packs: r.packs,
                whole_file_bytes: r.whole_file_bytes,
                summaries: Vec::new(),
            })
        })
    }
}

impl TapeRecord {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    pub fn decode(b: &[u8]) -> Result<TapeRecord> {
        decode(b)
    }

    /// What the record keeps of dump `id`, if it has a summary of it.
    pub fn summary(&self, id: u64) -> Option<&TapeDumpSummary> {
        self.summaries.iter().find(|s| s.id == id)
    }
}

/// One plain export, as the catalog records it (postcard in `plain_exports`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlainRecord {
    /// Record layout version (1).
    pub version: u32,
    pub volume: String,
    /// Position among the volume's plain exports (1 for the first).
    pub seq: u64,
    /// The level written (0 when a level N had no lower plain export to be based on).
    pub level: u8,
    pub requested_level: u8,
    /// `c_date` written on the image, Unix seconds.
    pub date: i64,
    /// `c_ddate`: the base export's `c_date`; 0 for a level 0.
    pub ddate: i64,
    /// The base export's `seq`.
    pub base_seq: Option<u64>,
    /// The dump whose tree was written.
    pub dump_id: u64,
    pub dump_time_ns: i64,
    pub created_ns: i64,
    /// Highest inode number used by this export.
    pub max_ino: u32,
    /// Inodes in use (the TS_CLRI map) and written (TS_BITS).
    pub inodes_used: u64,
    pub inodes_dumped: u64,
    /// Bytes written over all tape volumes, and how many volumes.
    pub bytes: u64,
    pub volumes: u32,
    /// The path → inode map of this export (`encode_inode_map`).
    pub inodes: Vec<u8>,
}

versioned!(PlainRecord, "plain export record", |r| format!(
    "{} of {}",
    r.seq, r.volume
));

#[cfg(test)]
mod tests {
    use super::*;

    /// A clone record as its fields are laid out on disk, the totals written out in place.
    #[derive(Serialize)]
    struct FlatClone {
        version: u32,
        volume: String,
        time_ns: i64,
        method: CloneMethod,
        frozen_ns: u64,
        scan_started_ns: i64,
        source: String,
        view: CloneView,
        dumped: Option<u64>,
        entries: u64,
        files: u64,
        dirs: u64,
        logical_bytes: u64,
        read_bytes: u64,
        new_chunks: u64,
        stored_bytes: u64,
        new_raw_bytes: u64,
        warnings: Vec<String>,
    }

    #[test]
    fn the_shared_totals_encode_as_the_fields_they_replace() {
        let t = ScanTotals {
            entries: 1,
            files: 2,
            dirs: 3,
            logical_bytes: 400,
            read_bytes: 500,
            new_chunks: 6,
            stored_bytes: 700,
            new_raw_bytes: 800,
        };
        let view = CloneView::Manifest {
            chunks: vec![([9; 32], 10)],
            bytes: 11,
        };
        let rec = CloneRecord {
            version: CLONE_RECORD_VERSION,
            volume: "v".into(),
            time_ns: 12,
            method: CloneMethod::Store,
            frozen_ns: 13,
            scan_started_ns: 14,
            source: "/v".into(),
            view: view.clone(),
            dumped: Some(15),
            totals: t,
            warnings: vec!["w".into()],
        };
        let flat = FlatClone {
            version: CLONE_RECORD_VERSION,
            volume: "v".into(),
            time_ns: 12,
            method: CloneMethod::Store,
            frozen_ns: 13,
            scan_started_ns: 14,
            source: "/v".into(),
            view,
            dumped: Some(15),
            entries: 1,
            files: 2,
            dirs: 3,
            logical_bytes: 400,
            read_bytes: 500,
            new_chunks: 6,
            stored_bytes: 700,
            new_raw_bytes: 800,
            warnings: vec!["w".into()],
        };
        assert_eq!(rec.encode(), postcard::to_allocvec(&flat).unwrap());
        let back: CloneRecord = decode(&rec.encode()).unwrap();
        assert_eq!(back, rec);
    }

    #[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Thing {
        version: u32,
        name: String,
    }

    impl Versioned for Thing {
        const KIND: &'static str = "thing record";
        fn version(&self) -> u32 {
            self.version
        }
        fn named(&self) -> String {
            self.name.clone()
        }
    }

    #[test]
    fn round_trips_and_refuses_other_versions_and_damage() {
        let t = Thing {
            version: RECORD_VERSION,
            name: "a".into(),
        };
        assert_eq!(decode::<Thing>(&encode(&t)).unwrap(), t);
        let newer = Thing {
            version: RECORD_VERSION + 1,
            name: "b".into(),
        };
        let e = decode::<Thing>(&encode(&newer)).unwrap_err().to_string();
        assert!(
            e.contains("thing record b has version 2") && e.contains("upgrade reel"),
            "{e}"
        );
        let e = decode::<Thing>(&[0xff]).unwrap_err().to_string();
        assert!(e.contains("thing record does not decode"), "{e}");
    }

    /// A version 1 tape record (no summaries) still reads; version 2 is version 1's fields
    /// then the summaries; a newer version is refused.
    #[test]
    fn tape_records_of_version_1_still_read_and_version_2_appends_summaries() {
        let v1 = TapeRecordV1 {
            version: 1,
            label: "T".into(),
            created_ns: 1,
            media_set: None,
            sequence: 1,
            bytes: 2,
            volumes: 1,
            dumps: vec![(4, 5)],
            packs: vec![],
            whole_file_bytes: 6,
        };
        let b1 = postcard::to_allocvec(&v1).unwrap();
        assert_eq!(b1, [1, 1, b'T', 2, 0, 1, 2, 1, 1, 4, 5, 0, 6]);
        let r = TapeRecord::decode(&b1).unwrap();
        assert_eq!(
            (r.version, r.label.as_str(), &r.dumps, r.summaries.len()),
            (2, "T", &vec![(4, 5)], 0)
        );
        let mut r2 = r.clone();
        r2.summaries = vec![TapeDumpSummary {
            id: 4,
            volume: "v".into(),
            time_ns: 3,
            level: 0,
            chain: vec![],
            tapes_needed: vec!["T".into()],
        }];
        let b2 = r2.encode();
        assert_eq!(b2[0], 2);
        assert_eq!(&b2[1..b1.len()], &b1[1..]);
        assert_eq!(&b2[b1.len()..], [1, 4, 1, b'v', 6, 0, 0, 1, 1, b'T']);
        assert_eq!(TapeRecord::decode(&b2).unwrap(), r2);
        assert_eq!(r2.summary(4).map(|s| s.volume.as_str()), Some("v"));
        let mut b3 = b2.clone();
        b3[0] = 3;
        let e = TapeRecord::decode(&b3).unwrap_err().to_string();
        assert!(
            e.contains("tape record T has version 3, this reel reads version 2"),
            "{e}"
        );
    }

    /// The records moved here keep their bytes: postcard of the fields in order.
    #[test]
    fn pack_forget_and_clone_records_keep_their_layouts() {
        let p = PackRecord {
            id: [3u8; 32],
            size: 300,
            blobs: 2,
            created_ns: -1,
        };
        let mut want = vec![3u8; 32];
        want.extend([0xac, 0x02, 2, 1]);
        assert_eq!(p.encode(), want);
        let back: PackRecord = decode(&p.encode()).unwrap();
        assert_eq!(back, p);

        let f = ForgetRecord {
            version: 1,
            time_ns: 5,
            dumps: vec![(3, "v".into(), 9)],
        };
        assert_eq!(f.encode(), [1, 10, 1, 3, 1, b'v', 18]);
        assert_eq!(ForgetRecord::decode(&f.encode()).unwrap(), f);

        let c = CloneRecord {
            version: CLONE_RECORD_VERSION,
            volume: "v".into(),
            time_ns: 1,
            method: CloneMethod::Hook,
            frozen_ns: 0,
            scan_started_ns: 0,
            source: "/v".into(),
            view: CloneView::Dir {
                path: "/c".into(),
                statmap: None,
            },
            dumped: Some(4),
            totals: ScanTotals::default(),
            warnings: vec![],
        };
        let b = c.encode();
        assert_eq!(
            &b[..6],
            [2, 1, b'v', 2, 3, 0],
            "version, volume, time, method (hook = 3)"
        );
        assert_eq!(CloneRecord::decode(&b).unwrap(), c);
        assert_eq!("copy".parse::<CloneMethod>().unwrap(), CloneMethod::Copy);
    }

    /// A dump record with every field set, for the layout tests.
    fn full_dump_record() -> DumpRecord {
        DumpRecord {
            version: DUMP_RECORD_VERSION,
            id: 3,
            volume: "v".into(),
            time_ns: 1,
            level: 1,
            requested_level: 2,
            base: Some(2),
            chain: vec![2],
            merged_from: None,
            source: "/v".into(),
            scan_started_ns: -1,
            duration_ns: 5,
            totals: ScanTotals {
                entries: 6,
                files: 7,
                dirs: 8,
                logical_bytes: 9,
                read_bytes: 10,
                new_chunks: 11,
                stored_bytes: 12,
                new_raw_bytes: 13,
            },
            owned_chunks: 14,
            owned_bytes: 15,
            manifest: vec![],
            manifest_bytes: 16,
            warnings: vec![],
            host: Some("h".into()),
        }
    }

    /// Version 2 of the dump record, byte by byte as docs/FORMAT.md lays it out: version 1's
    /// fields with `new_raw_bytes` after `stored_bytes` and `host` at the end.
    #[test]
    fn dump_record_version_2_bytes_are_as_documented() {
        let r = full_dump_record();
        let b = r.encode();
        assert_eq!(
            b,
            [
                2, // version
                3, 1, b'v', 2, // id, volume, time_ns (zigzag 1 = 2)
                1, 2, 1, 2, 1, 2,
                0, // level, requested_level, base Some(2), chain [2], merged_from None
                2, b'/', b'v', 1, 5, // source, scan_started_ns (zigzag -1 = 1), duration_ns
                6, 7, 8, 9, 10, 11, 12, 13, // totals, new_raw_bytes last
                14, 15, 0, 16,
                0, // owned_chunks, owned_bytes, manifest, manifest_bytes, warnings
                1, 1, b'h', // host Some("h")
            ]
        );
        assert_eq!(DumpRecord::decode(&b).unwrap(), r);
    }

    /// A version 1 dump record (no `new_raw_bytes`, no `host`) still reads, with those as 0 and
    /// None; a version above 2 is refused.
    #[test]
    fn dump_records_of_version_1_still_read() {
        let r = full_dump_record();
        let t = r.totals;
        let v1 = DumpRecordV1 {
            version: 1,
            id: r.id,
            volume: r.volume.clone(),
            time_ns: r.time_ns,
            level: r.level,
            requested_level: r.requested_level,
            base: r.base,
            chain: r.chain.clone(),
            merged_from: r.merged_from,
            source: r.source.clone(),
            scan_started_ns: r.scan_started_ns,
            duration_ns: r.duration_ns,
            totals: ScanTotalsV1 {
                entries: t.entries,
                files: t.files,
                dirs: t.dirs,
                logical_bytes: t.logical_bytes,
                read_bytes: t.read_bytes,
                new_chunks: t.new_chunks,
                stored_bytes: t.stored_bytes,
            },
            owned_chunks: r.owned_chunks,
            owned_bytes: r.owned_bytes,
            manifest: vec![([7; 32], 99)],
            manifest_bytes: r.manifest_bytes,
            warnings: vec!["w".into()],
        };
        let b1 = postcard::to_allocvec(&v1).unwrap();
        assert_eq!(
            &b1[..30],
            [
                1, 3, 1, b'v', 2, 1, 2, 1, 2, 1, 2, 0, 2, b'/', b'v', 1, 5, 6, 7, 8, 9, 10, 11, 12,
                14, 15, 1, 7, 7, 7
            ]
        );
        let back = DumpRecord::decode(&b1).unwrap();
        let want = DumpRecord {
            totals: ScanTotals {
                new_raw_bytes: 0,
                ..t
            },
            manifest: vec![([7; 32], 99)],
            warnings: vec!["w".into()],
            host: None,
            ..r.clone()
        };
        assert_eq!(back, want);
        // Written again, it is a version 2 record.
        assert_eq!(back.encode()[0], 2);
        let mut b3 = r.encode();
        b3[0] = 3;
        let e = DumpRecord::decode(&b3).unwrap_err().to_string();
        assert!(
            e.contains("dump record 3 has version 3, this reel reads version 2"),
            "{e}"
        );
        // Damage is still damage, in either layout.
        assert!(DumpRecord::decode(&b1[..20]).is_err());
        assert!(DumpRecord::decode(&r.encode()[..20]).is_err());
    }

    /// A version 1 clone record still reads, `new_raw_bytes` 0.
    #[test]
    fn clone_records_of_version_1_still_read() {
        let v1 = CloneRecordV1 {
            version: 1,
            volume: "v".into(),
            time_ns: 1,
            method: CloneMethod::Store,
            frozen_ns: 2,
            scan_started_ns: 3,
            source: "/v".into(),
            view: CloneView::Manifest {
                chunks: vec![],
                bytes: 4,
            },
            dumped: None,
            totals: ScanTotalsV1 {
                entries: 5,
                files: 6,
                dirs: 7,
                logical_bytes: 8,
                read_bytes: 9,
                new_chunks: 10,
                stored_bytes: 11,
            },
            warnings: vec![],
        };
        let b1 = postcard::to_allocvec(&v1).unwrap();
        assert_eq!(
            b1,
            [
                1, 1, b'v', 2, 0, 2, 6, 2, b'/', b'v', 0, 0, 4, 0, 5, 6, 7, 8, 9, 10, 11, 0
            ]
        );
        let c = CloneRecord::decode(&b1).unwrap();
        assert_eq!(
            (c.version, c.totals.stored_bytes, c.totals.new_raw_bytes),
            (2, 11, 0)
        );
        let b2 = c.encode();
        assert_eq!(b2[0], 2);
        assert_eq!(&b2[1..b1.len() - 1], &b1[1..b1.len() - 1]);
        assert_eq!(&b2[b1.len() - 1..], [0, 0], "new_raw_bytes, then warnings");
    }
}
