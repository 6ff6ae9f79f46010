//! Versioned records: the persisted structs of the catalog and the media catalog (the dump
//! record here; clone, forget, tape and plain-export records beside their tables), encoded with
//! postcard, each carrying its version so
//! a newer format is refused with a message instead of misread. FORMAT.md has their fields.

use serde::Serialize;
use serde::de::DeserializeOwned;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::types::ChunkId;

/// The version every record is written with, and the one this reel reads.
pub const RECORD_VERSION: u32 = 1;

/// A record type: what it is called in messages, and how one is named.
pub trait Versioned: Serialize + DeserializeOwned {
    /// What it is, for messages ("dump record").
    const KIND: &'static str;
    /// The version it carries.
    fn version(&self) -> u32;
    /// Which one, for messages ("12", "of volume home"); empty when nothing names it.
    fn named(&self) -> String;
}

/// The record's bytes.
pub fn encode<T: Versioned>(r: &T) -> Vec<u8> {
    postcard::to_allocvec(r).unwrap_or_else(|e| panic!("a {} serialises: {e}", T::KIND))
}

/// A record from its bytes; damage and a version this reel does not read are errors that say
/// so.
pub fn decode<T: Versioned>(b: &[u8]) -> Result<T> {
    let r: T = postcard::from_bytes(b).map_err(|e| {
        Error::corrupt(format!(
            "catalog: a {} does not decode ({e}); run `reel check`",
            T::KIND
        ))
    })?;
    if r.version() != RECORD_VERSION {
        let named = r.named();
        return Err(Error::corrupt(format!(
            "{}{}{named} has version {}, this reel reads version {RECORD_VERSION}: upgrade reel",
            T::KIND,
            if named.is_empty() { "" } else { " " },
            r.version()
        )));
    }
    Ok(r)
}

/// One dump: the catalog row, also stored as a `DumpRecord` blob in the dump's last pack.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DumpRecord {
    /// Record layout version (1).
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
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub logical_bytes: u64,
    /// File bytes actually read (unchanged files are not read).
    pub read_bytes: u64,
    pub new_chunks: u64,
    /// Bytes of packs this dump added to the spool.
    pub stored_bytes: u64,
    pub owned_chunks: u64,
    /// Compressed size of the chunks this dump owns.
    pub owned_bytes: u64,
    /// The manifest stream, as chunks in order.
    pub manifest: Vec<([u8; 32], u32)>,
    pub manifest_bytes: u64,
    /// Files that changed while they were read, and similar notices, by name.
    pub warnings: Vec<String>,
}

impl Versioned for DumpRecord {
    const KIND: &'static str = "dump record";
    fn version(&self) -> u32 {
        self.version
    }
    fn named(&self) -> String {
        self.id.to_string()
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
            version: 1,
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
            entries: 0,
            files: 0,
            dirs: 0,
            logical_bytes: 0,
            read_bytes: 0,
            new_chunks: 0,
            stored_bytes: 0,
            owned_chunks: 0,
            owned_bytes: 0,
            manifest: vec![],
            manifest_bytes: 0,
            warnings: vec![],
        }
    }

    /// The chain from the level 0 up to and including this dump.
    pub fn full_chain(&self) -> Vec<u64> {
        let mut c = self.chain.clone();
        c.push(self.id);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
