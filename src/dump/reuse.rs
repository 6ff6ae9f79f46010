//! What a pass takes from before: the extents of files unchanged since the previous manifest
//! (its stat data serve as a cache), and for a directory clone the volume's own inodes and
//! ctimes from the clone's stat map.

use std::fs::File;
use std::path::Path;

use crate::manifest::ManifestReader;
use crate::{ChunkId, Entry, EntryKind, Error, Extent, Result};

/// The manifest a scan takes its stat cache from.
pub(crate) struct PrevManifest {
    pub(crate) chunks: Vec<(ChunkId, u32)>,
    pub(crate) scan_started_ns: i64,
    /// Whether its chunks are all owned inside the new dump's chain.
    pub(crate) in_chain: bool,
    pub(crate) label: String,
}

/// The volume's own stat data for the paths of a directory clone (written by the copy), so
/// change detection and the manifest see the volume's inodes and ctimes, not the copy's.
pub(super) struct StatMap {
    entries: std::iter::Peekable<ManifestReader<std::io::BufReader<File>>>,
}

impl StatMap {
    pub(super) fn open(path: &Path) -> Result<StatMap> {
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        Ok(StatMap {
            entries: ManifestReader::new(std::io::BufReader::new(f))?.peekable(),
        })
    }

    pub(super) fn apply(&mut self, e: &mut Entry) -> Result<()> {
        if let Some(m) = crate::manifest::seek(&mut self.entries, &e.path)?
            && m.kind == e.kind
        {
            e.ino = m.ino;
            e.ctime_ns = m.ctime_ns;
        }
        Ok(())
    }
}

/// Merge-join step: advance the previous manifest to `entry.path`; if the file there has the
/// same identity and stat data, and its mtime was safely before the previous scan started
/// (not in the same second), return its extents.
pub(super) fn unchanged<I: Iterator<Item = Result<Entry>>>(
    prev: &mut std::iter::Peekable<I>,
    entry: &Entry,
    prev_scan_ns: i64,
) -> Result<Option<Vec<Extent>>> {
    let Some(p) = crate::manifest::seek(prev, &entry.path)? else {
        return Ok(None);
    };
    let same = p.kind == EntryKind::File
        && p.ino == entry.ino
        && p.size == entry.size
        && p.mtime_ns == entry.mtime_ns
        && p.ctime_ns == entry.ctime_ns
        && p.mtime_ns.div_euclid(1_000_000_000) < prev_scan_ns.div_euclid(1_000_000_000);
    Ok(same.then_some(p.extents))
}
