//! What a pass takes from before: the extents of files unchanged since the previous manifest
//! (its stat data serve as a cache), and for a directory clone the volume's own inodes and
//! ctimes from the clone's stat map.

use std::fs::File;
use std::path::Path;

use crate::manifest::ManifestReader;
use crate::{ChunkId, Entry, EntryKind, Error, Result};

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

/// What the previous manifest says of a file the walk met.
pub(super) enum Previous {
    /// The same file, unchanged: its extents are reused as they are.
    Unchanged(Entry),
    /// A file at the same path that changed since: its chunks are what the new version most
    /// likely repeats.
    Changed(Entry),
    /// No file at that path before.
    Absent,
}

/// Merge-join step: advance the previous manifest to `entry.path`; a file there with the
/// same identity and stat data, whose mtime was safely before the previous scan started (not
/// in the same second), is unchanged.
pub(super) fn previous<I: Iterator<Item = Result<Entry>>>(
    prev: &mut std::iter::Peekable<I>,
    entry: &Entry,
    prev_scan_ns: i64,
) -> Result<Previous> {
    let Some(p) = crate::manifest::seek(prev, &entry.path)? else {
        return Ok(Previous::Absent);
    };
    if p.kind != EntryKind::File {
        return Ok(Previous::Absent);
    }
    let same = p.ino == entry.ino
        && p.size == entry.size
        && p.mtime_ns == entry.mtime_ns
        && p.ctime_ns == entry.ctime_ns
        && p.mtime_ns.div_euclid(1_000_000_000) < prev_scan_ns.div_euclid(1_000_000_000);
    Ok(if same {
        Previous::Unchanged(p)
    } else {
        Previous::Changed(p)
    })
}

/// The chunk ids of a changed file's previous version, sorted: the chunks of the new version
/// that are among them are known to be stored (and, when the previous dump is in the new
/// dump's chain, owned by an ancestor) without asking the catalog. A file rewritten in a few
/// places repeats almost all of them, and each costs a chunk-index read otherwise, a disk read
/// once the index no longer fits in memory. This is the locality Data Domain's
/// stream-informed layout gets from a pack (Zhu, Li and Patterson, FAST 2008), taken from
/// where reel has it exactly: the file's own history.
pub(super) struct KnownChunks(Vec<ChunkId>);

/// The ids kept for one file at most (2 MiB): a file of up to about 768 MiB at the usual
/// 12 KiB chunks; the chunks of a larger file beyond these are looked up as before.
const KNOWN_MAX: usize = 1 << 16;

impl KnownChunks {
    pub(super) fn of(file: &Entry) -> Option<KnownChunks> {
        let mut ids: Vec<ChunkId> = file.chunks().map(|(id, _)| id).take(KNOWN_MAX).collect();
        if ids.is_empty() {
            return None;
        }
        ids.sort_unstable();
        ids.dedup();
        Some(KnownChunks(ids))
    }

    pub(super) fn contains(&self, id: &ChunkId) -> bool {
        self.0.binary_search(id).is_ok()
    }
}
