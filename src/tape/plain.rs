//! Plain-tree exports: a dump's tree written as a real BSD dump at a level, so that the stock
//! `restore -r` of the level 0 and then each later level rebuilds the volume with no reel at
//! all (`reel export-plain`; docs/BSD-DUMP.md §5, §11, §16).
//!
//! Why it is built this way:
//! * **Levels are between plain exports, not between dumps.** `restore -r` checks that an
//!   incremental's `c_ddate` equals the `c_date` of what it restored before, so the base of a
//!   level N plain export is the latest earlier *plain export* of the volume with a lower level,
//!   and each export is recorded in the catalog (its `plain_exports` table) with its
//!   `c_date`, its dump and its inode map.
//! * **Inode numbers follow paths across a chain.** restore identifies files by inode number;
//!   a file renumbered between levels is lost unless it is dumped again. Each export stores its
//!   whole path → inode map; an incremental numbers every path its base had with the base's
//!   number, and gives new paths numbers above the highest number any plain export of the
//!   volume ever used (numbers are never reused, so restore never sees one number mean two
//!   files). Hard links share the number of their group's first name. A renamed file gets a
//!   new number, which restore handles as delete + add. A level 0 starts a new chain and
//!   numbers densely in path order (root = 2, then 3, 4, ...).
//! * **What an incremental carries** (the simplest rule restore is verified with, §11): the full
//!   in-use map, every directory, and every non-directory that is new, renumbered, changed
//!   (kind, size, content, mode, owner, mtime, target, rdev, xattrs; compared by a merge-join of
//!   the two manifests in path order) or whose link count changed.
//! * **Memory.** The path → inode map and the directories' entries are held in memory (restore
//!   itself holds the same); file content streams from the chunk store into the writer. Files
//!   are written in ascending inode order as the format requires: the manifest is read a second
//!   time and entries that come out of order are held until their turn (for a level 0 none
//!   are, for an incremental only changed files can be).
//! * **Only a complete image counts**: the record (and so the map) is committed after the
//!   writer finished; a failed export removes its partial image files.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use crate::catalog::DumpRecord;
use crate::error::Damaged;
use crate::manifest::ManifestReader;
pub use crate::record::PlainRecord;
use crate::spool::Spool;
use crate::store::ChunkReader;
use crate::tape::bsd::format::{
    S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFREG, S_IFSOCK, dtype_of_mode,
};
use crate::tape::bsd::{
    BitMap, DirEntry, DumpInfo, DumpWriter, InodeMeta, Target, WriteSummary, xattr,
};
use crate::types::path_cmp;
use crate::{Entry, EntryKind, Error, Extent, Result};

const ROOTINO: u32 = 2;
/// A path → inode map, for lookups.
type PathInodes = HashMap<Vec<u8>, u32>;
/// Magic of an encoded inode map (`encode_inode_map`).
const MAP_MAGIC: &[u8; 8] = b"REELIMP1";

impl PlainRecord {
    /// The decoded path → inode map.
    pub fn inode_map(&self) -> Result<Vec<(Vec<u8>, u32)>> {
        decode_inode_map(&self.inodes).map_err(|why| {
            Error::damaged(Damaged::Catalog, format!(
                "catalog: the inode map of plain export {} of volume {} is damaged ({why}); export a new level 0",
                self.seq, self.volume
            ))
        })
    }
}

/// Encode a path → inode map given in path order, front-coded, little-endian:
/// magic `REELIMP1`, count u32; per entry: bytes shared with the previous path u16, suffix
/// length u16, suffix, inode u32.
pub fn encode_inode_map(map: &[(Vec<u8>, u32)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + map.len() * 16);
    out.extend_from_slice(MAP_MAGIC);
    out.extend_from_slice(&(map.len() as u32).to_le_bytes());
    let mut prev: &[u8] = &[];
    for (path, ino) in map {
        let shared = prev
            .iter()
            .zip(path.iter())
            .take_while(|(a, b)| a == b)
            .count()
            .min(u16::MAX as usize);
        let suffix = &path[shared..];
        out.extend_from_slice(&(shared as u16).to_le_bytes());
        // Manifest paths are at most 4095 bytes (restore's limit), well below u16.
        out.extend_from_slice(&(suffix.len().min(u16::MAX as usize) as u16).to_le_bytes());
        out.extend_from_slice(&suffix[..suffix.len().min(u16::MAX as usize)]);
        out.extend_from_slice(&ino.to_le_bytes());
        prev = path;
    }
    out
}

/// Decode `encode_inode_map`'s output; the error says what is wrong.
pub fn decode_inode_map(b: &[u8]) -> std::result::Result<Vec<(Vec<u8>, u32)>, String> {
    let mut at = 0usize;
    let mut take = |n: usize| -> std::result::Result<&[u8], String> {
        let s = b
            .get(at..at + n)
            .ok_or_else(|| format!("truncated at byte {at}"))?;
        at += n;
        Ok(s)
    };
    if take(8)? != MAP_MAGIC {
        return Err("bad magic".into());
    }
    let count = u32::from_le_bytes(take(4)?.try_into().map_err(|_| "count")?) as usize;
    let mut out: Vec<(Vec<u8>, u32)> = Vec::with_capacity(count.min(1 << 20));
    for i in 0..count {
        let shared = u16::from_le_bytes(take(2)?.try_into().map_err(|_| "shared")?) as usize;
        let len = u16::from_le_bytes(take(2)?.try_into().map_err(|_| "len")?) as usize;
        let prev = out.last().map(|p| p.0.as_slice()).unwrap_or(&[]);
        if shared > prev.len() {
            return Err(format!(
                "entry {i} shares more bytes than the previous path has"
            ));
        }
        let mut path = prev[..shared].to_vec();
        path.extend_from_slice(take(len)?);
        let ino = u32::from_le_bytes(take(4)?.try_into().map_err(|_| "ino")?);
        if ino < ROOTINO {
            return Err(format!("entry {i} has inode {ino}"));
        }
        out.push((path, ino));
    }
    if at != b.len() {
        return Err(format!("{} trailing bytes", b.len() - at));
    }
    Ok(out)
}

/// The plain exports of `volume`, oldest first.
pub fn plain_exports(spool: &Spool, volume: &str) -> Result<Vec<PlainRecord>> {
    spool.catalog.reader()?.plain_exports(volume)
}

/// What `export_plain` did.
#[derive(Clone, Debug)]
pub struct PlainSummary {
    /// The record committed to the catalog.
    pub record: PlainRecord,
    pub written: WriteSummary,
    /// Directories and non-directories written.
    pub dirs: u64,
    pub files: u64,
    /// Bytes of file content written (logical sizes of the files dumped).
    pub file_bytes: u64,
    /// Set when a level N became a level 0 because no lower plain export exists.
    pub note: Option<String>,
}

/// Is this a regular-file name (a file or a further name of one)?
fn file_class(k: EntryKind) -> bool {
    matches!(k, EntryKind::File | EntryKind::HardLink)
}

fn same_class(a: EntryKind, b: EntryKind) -> bool {
    a == b || (file_class(a) && file_class(b))
}

/// The comparison of §11: did the entry change since the base dump?
fn changed(now: &Entry, base: &Entry) -> bool {
    now.kind != base.kind
        || now.size != base.size
        || now.extents != base.extents
        || now.mode != base.mode
        || now.uid != base.uid
        || now.gid != base.gid
        || now.mtime_ns != base.mtime_ns
        || now.target != base.target
        || now.rdev != base.rdev
        || now.xattrs != base.xattrs
}

fn type_bits(k: EntryKind) -> u32 {
    match k {
        EntryKind::Dir => S_IFDIR,
        EntryKind::File | EntryKind::HardLink => S_IFREG,
        EntryKind::Symlink => S_IFLNK,
        EntryKind::Fifo => S_IFIFO,
        EntryKind::CharDev => S_IFCHR,
        EntryKind::BlockDev => S_IFBLK,
        EntryKind::Socket => S_IFSOCK,
    }
}

fn parent_of(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&c| c == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

struct DirInfo {
    parent: u32,
    meta: InodeMeta,
    entries: Vec<DirEntry>,
    /// Its attribute records (`xattr::encode`).
    xattrs: Vec<Vec<u8>>,
}

/// What pass 1 decides.
struct Plan {
    /// Path → inode of every entry, in path order (the map to record).
    map: Vec<(Vec<u8>, u32)>,
    dirs: BTreeMap<u32, DirInfo>,
    /// Non-directory inodes to write, ascending.
    files: Vec<u32>,
    used: BitMap,
    dumped: BitMap,
    max_ino: u32,
}

/// Write the tree of `dump` as a BSD dump at `level` to `target` and record the export,
/// reading file data through `reader` (which holds the packs of the tapes given for data purge
/// removed from the spool). `ntrec` is the tape blocking factor (records of 1 KiB per block).
pub fn export_plain(
    spool: &Spool,
    reader: &ChunkReader,
    dump: &DumpRecord,
    level: u8,
    target: Target,
    ntrec: u32,
) -> Result<PlainSummary> {
    if level > 9 {
        return Err(Error::usage(format!(
            "level {level} is out of range: dump levels are 0 to 9"
        )));
    }
    let volume = dump.volume.as_str();
    let history = plain_exports(spool, volume)?;
    let base = if level == 0 {
        None
    } else {
        history.iter().rev().find(|r| r.level < level)
    };
    let note = (level > 0 && base.is_none()).then(|| {
        format!(
            "volume {volume} has no plain export below level {level}: writing a level 0 instead"
        )
    });
    let real_level = if base.is_some() { level } else { 0 };
    let dump_secs = dump.time_ns.div_euclid(1_000_000_000);
    let (date, ddate) = match base {
        None => (dump_secs, 0),
        Some(b) => {
            if dump.time_ns < b.dump_time_ns {
                return Err(Error::usage(format!(
                    "dump {} of {volume} is older than dump {} that plain export {} (level {}) wrote: an incremental must not go back in time; export a level 0 instead",
                    dump.id, b.dump_id, b.seq, b.level
                )));
            }
            // restore -r needs c_date > c_ddate to tell the tapes apart.
            (dump_secs.max(b.date + 1), b.date)
        }
    };
    let high_water = history.iter().map(|r| r.max_ino).max().unwrap_or(ROOTINO);
    let manifest = |d: &DumpRecord| -> Result<_> { reader.manifest(d) };
    let base_ctx = match base {
        None => None,
        Some(b) => {
            let d = spool.catalog.dump(b.dump_id)?.ok_or_else(|| {
                Error::usage(format!(
                    "dump {} that plain export {} of {volume} (level {}) wrote is no longer in the catalog; export a new level 0",
                    b.dump_id, b.seq, b.level
                ))
            })?;
            let map: PathInodes = b.inode_map()?.into_iter().collect();
            Some((d, map))
        }
    };
    let plan = plan(
        volume,
        &mut manifest(dump)?,
        base_ctx
            .as_ref()
            .map(|(d, m)| Ok::<_, Error>((manifest(d)?, m)))
            .transpose()?,
        high_water,
        dump.time_ns,
    )?;
    let info = DumpInfo {
        level: real_level,
        date,
        ddate,
        label: volume.chars().take(15).collect(),
        host: std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default(),
        filesys: format!("reel volume {volume}"),
        dev: format!("reel dump {}", dump.id),
        ntrec,
    };
    let cleanup_target = target.clone();
    let written = write(reader, dump, &plan, target, info, &mut manifest(dump)?);
    let (written, file_bytes) = match written {
        Ok(w) => w,
        Err(e) => {
            crate::tape::bsd::remove_partial(&cleanup_target);
            return Err(e);
        }
    };
    let record = PlainRecord {
        version: 1,
        volume: volume.to_string(),
        seq: history.last().map(|r| r.seq + 1).unwrap_or(1),
        level: real_level,
        requested_level: level,
        date,
        ddate,
        base_seq: base.map(|b| b.seq),
        dump_id: dump.id,
        dump_time_ns: dump.time_ns,
        created_ns: crate::timefmt::now_ns(),
        max_ino: plan.max_ino,
        inodes_used: plan.used.count() as u64,
        inodes_dumped: plan.dumped.count() as u64,
        bytes: written.bytes,
        volumes: written.volumes.len() as u32,
        inodes: encode_inode_map(&plan.map),
    };
    let w = spool.catalog.writer()?;
    w.record_plain_export(volume, record.seq, &record)?;
    w.commit()?;
    Ok(PlainSummary {
        record,
        written,
        dirs: plan.dirs.len() as u64,
        files: plan.files.len() as u64,
        file_bytes,
        note,
    })
}

/// Pass 1: number every entry, collect the directories, decide what is dumped.
fn plan<R: Read, B: Read>(
    volume: &str,
    now: &mut ManifestReader<R>,
    base: Option<(ManifestReader<B>, &PathInodes)>,
    high_water: u32,
    time_ns: i64,
) -> Result<Plan> {
    let incremental = base.is_some();
    let (mut base_entries, base_map) = match base {
        Some((r, m)) => (Some(r.peekable()), Some(m)),
        None => (None, None),
    };
    // Link counts per inode in the base (for a changed count of names).
    let mut base_nlink: HashMap<u32, u32> = HashMap::new();
    if let Some(m) = base_map {
        for &ino in m.values() {
            *base_nlink.entry(ino).or_default() += 1;
        }
    }
    let mut next = if incremental { high_water + 1 } else { 3 };
    let mut assigned: HashMap<Vec<u8>, u32> = HashMap::new();
    let mut taken: HashMap<u32, ()> = HashMap::new();
    let mut map = Vec::new();
    let mut dirs: BTreeMap<u32, DirInfo> = BTreeMap::new();
    let mut nlink: HashMap<u32, u32> = HashMap::new();
    // Non-directory inodes and whether something about them changed.
    let mut file_inos: BTreeMap<u32, bool> = BTreeMap::new();
    let bad = |e: &Entry, why: &str| {
        Error::damaged(
            Damaged::Entry(e.path.clone()),
            format!(
                "manifest of volume {volume}: {} {why}; run `reel check`",
                e.display_path()
            ),
        )
    };
    for e in now.by_ref() {
        let e = e?;
        // The base entry at the same path, if any (merge-join in path order).
        let mut base_e = None;
        if let Some(it) = base_entries.as_mut() {
            while let Some(b) = it.next_if(|b| match b {
                Ok(b) => path_cmp(&b.path, &e.path) != std::cmp::Ordering::Greater,
                Err(_) => true,
            }) {
                let b = b?;
                if b.path == e.path {
                    base_e = Some(b);
                }
            }
        }
        let old_ino = base_map.and_then(|m| m.get(&e.path).copied());
        let ino = if e.path.is_empty() {
            if e.kind != EntryKind::Dir {
                return Err(bad(&e, "(the root) is not a directory"));
            }
            ROOTINO
        } else if e.kind == EntryKind::HardLink {
            *assigned
                .get(&e.target)
                .ok_or_else(|| bad(&e, "is a hard link to a name not seen before it"))?
        } else {
            let keep = old_ino.filter(|&n| {
                n != ROOTINO
                    && !taken.contains_key(&n)
                    && base_e.as_ref().is_some_and(|b| same_class(b.kind, e.kind))
            });
            match keep {
                Some(n) => n,
                None => {
                    let n = next;
                    next = next.checked_add(1).ok_or_else(|| {
                        Error::usage(format!(
                            "volume {volume}: plain exports have used every inode number; export a new level 0"
                        ))
                    })?;
                    n
                }
            }
        };
        taken.insert(ino, ());
        assigned.insert(e.path.clone(), ino);
        map.push((e.path.clone(), ino));
        let meta = InodeMeta {
            mode: type_bits(e.kind) | (e.mode & 0o7777),
            uid: e.uid,
            gid: e.gid,
            nlink: 1,
            size: e.size,
            atime_ns: e.mtime_ns,
            mtime_ns: e.mtime_ns,
            ctime_ns: time_ns,
            rdev: e.rdev,
        };
        if !e.path.is_empty() {
            let (parent, name) = parent_of(&e.path);
            let pino = *assigned
                .get(parent)
                .ok_or_else(|| bad(&e, "comes before its directory"))?;
            let dir = dirs
                .get_mut(&pino)
                .ok_or_else(|| bad(&e, "is inside something that is not a directory"))?;
            dir.entries.push(DirEntry {
                name: name.to_vec(),
                ino,
                dtype: dtype_of_mode(meta.mode),
            });
        }
        if e.kind == EntryKind::Dir {
            let parent = if e.path.is_empty() {
                ROOTINO
            } else {
                assigned[parent_of(&e.path).0]
            };
            dirs.insert(
                ino,
                DirInfo {
                    parent,
                    meta,
                    entries: Vec::new(),
                    xattrs: xattr_records(volume, &e)?,
                },
            );
            continue;
        }
        if file_class(e.kind) {
            *nlink.entry(ino).or_default() += 1;
        }
        let is_changed =
            !incremental || base_e.as_ref().is_none_or(|b| changed(&e, b)) || old_ino != Some(ino);
        *file_inos.entry(ino).or_default() |= is_changed;
    }
    let numbered = Numbered {
        next,
        map,
        dirs,
        nlink,
        file_inos,
    };
    finish_plan(
        volume,
        numbered,
        incremental.then_some(&base_nlink),
        high_water,
    )
}

/// Pass 1's numbering, before link counts and the inode maps.
struct Numbered {
    /// One above the highest number given.
    next: u32,
    map: Vec<(Vec<u8>, u32)>,
    dirs: BTreeMap<u32, DirInfo>,
    /// Names per non-directory inode.
    nlink: HashMap<u32, u32>,
    /// Non-directory inodes and whether something about them changed.
    file_inos: BTreeMap<u32, bool>,
}

/// Link counts, the in-use and dumped maps, and what is dumped; `base_nlink` (names per inode
/// in the base) for an incremental.
fn finish_plan(
    volume: &str,
    numbered: Numbered,
    base_nlink: Option<&HashMap<u32, u32>>,
    high_water: u32,
) -> Result<Plan> {
    let Numbered {
        next,
        map,
        mut dirs,
        nlink,
        file_inos,
    } = numbered;
    let mut used = BitMap::new(next.max(ROOTINO + 1));
    let mut dumped = BitMap::new(next.max(ROOTINO + 1));
    for &ino in dirs.keys() {
        used.set(ino);
        dumped.set(ino);
    }
    let mut files = Vec::new();
    for (&ino, &ch) in &file_inos {
        used.set(ino);
        let links = nlink.get(&ino).copied().unwrap_or(1);
        let links_changed = base_nlink.is_some_and(|b| b.get(&ino).copied().unwrap_or(0) != links);
        if ch || links_changed {
            dumped.set(ino);
            files.push(ino);
        }
    }
    // Directory link counts: 2 ("." and the parent's entry) + one ".." per subdirectory.
    let parents: Vec<u32> = dirs
        .iter()
        .filter(|(ino, _)| **ino != ROOTINO)
        .map(|(_, d)| d.parent)
        .collect();
    for d in dirs.values_mut() {
        d.meta.nlink = 2;
    }
    for p in parents {
        if let Some(d) = dirs.get_mut(&p) {
            d.meta.nlink += 1;
        }
    }
    if !dirs.contains_key(&ROOTINO) {
        return Err(Error::damaged(
            Damaged::Manifest {
                dump: None,
                offset: None,
            },
            format!("manifest of volume {volume} has no root directory; run `reel check`"),
        ));
    }
    let max_ino = next - 1;
    Ok(Plan {
        map,
        dirs,
        files,
        used,
        dumped,
        max_ino: max_ino.max(high_water),
    })
}

/// Pass 2: write the image. Returns the summary and the file bytes written.
fn write<R: Read>(
    reader: &ChunkReader,
    dump: &DumpRecord,
    plan: &Plan,
    target: Target,
    info: DumpInfo,
    manifest: &mut ManifestReader<R>,
) -> Result<(WriteSummary, u64)> {
    let maxino = plan.used.maxino();
    let mut w = DumpWriter::create(target, info, maxino, &plan.used, &plan.dumped)?;
    for (&ino, d) in &plan.dirs {
        w.dir(ino, d.parent, &d.meta, &d.entries)?;
        w.xattrs(ino, &d.meta, &d.xattrs)?;
    }
    // Non-directories in ascending inode order; entries the manifest yields early wait in
    // `pending` until every lower dumped inode is written.
    let mut by_path: HashMap<&[u8], u32> = HashMap::with_capacity(plan.map.len());
    for (p, i) in &plan.map {
        by_path.insert(p.as_slice(), *i);
    }
    let mut nlink: HashMap<u32, u32> = HashMap::new();
    for (p, i) in &plan.map {
        if !plan.dirs.contains_key(i) && !p.is_empty() {
            *nlink.entry(*i).or_default() += 1;
        }
    }
    let mut pending: BTreeMap<u32, Entry> = BTreeMap::new();
    let mut order = plan.files.iter().copied().peekable();
    let mut bytes = 0u64;
    for e in manifest.by_ref() {
        let e = e?;
        if matches!(e.kind, EntryKind::Dir | EntryKind::HardLink) {
            continue;
        }
        let Some(&ino) = by_path.get(e.path.as_slice()) else {
            return Err(Error::damaged(
                Damaged::Manifest {
                    dump: Some(dump.id),
                    offset: None,
                },
                format!(
                    "manifest of dump {} changed while it was read ({} is new); run `reel check`",
                    dump.id,
                    e.display_path()
                ),
            ));
        };
        if !plan.dumped.get(ino) {
            continue;
        }
        pending.insert(ino, e);
        while let Some(&ino) = order.peek() {
            let Some(e) = pending.remove(&ino) else { break };
            order.next();
            bytes += write_one(&mut w, reader, dump, ino, &e, nlink[&ino])?;
        }
    }
    if let Some(ino) = order.next() {
        return Err(Error::damaged(
            Damaged::Manifest {
                dump: Some(dump.id),
                offset: None,
            },
            format!(
                "manifest of dump {}: inode {ino} was planned but its entry was not found on the second read; run `reel check`",
                dump.id
            ),
        ));
    }
    Ok((w.finish()?, bytes))
}

/// The attribute records of `e`; an attribute the format cannot carry is refused by name.
fn xattr_records(volume: &str, e: &Entry) -> Result<Vec<Vec<u8>>> {
    xattr::encode(&e.xattrs).map_err(|why| {
        Error::usage(format!(
            "volume {volume}: {}: {why}, so a plain export cannot hold it",
            e.display_path()
        ))
    })
}

fn write_one(
    w: &mut DumpWriter,
    reader: &ChunkReader,
    dump: &DumpRecord,
    ino: u32,
    e: &Entry,
    nlink: u32,
) -> Result<u64> {
    let meta = InodeMeta {
        mode: type_bits(e.kind) | (e.mode & 0o7777),
        uid: e.uid,
        gid: e.gid,
        nlink,
        size: e.size,
        atime_ns: e.mtime_ns,
        mtime_ns: e.mtime_ns,
        ctime_ns: dump.time_ns,
        rdev: e.rdev,
    };
    let xattrs = xattr_records(&dump.volume, e)?;
    let bytes = match e.kind {
        EntryKind::File => {
            let mut holes = Vec::new();
            let mut off = 0u64;
            for x in &e.extents {
                if let Extent::Hole(n) = x {
                    holes.push((off, *n));
                }
                off += x.len();
            }
            if off != e.size {
                return Err(Error::damaged(
                    Damaged::Dump(dump.id),
                    format!(
                        "dump {}: {} has extents of {off} bytes but a size of {}; run `reel check`",
                        dump.id,
                        e.display_path(),
                        e.size
                    ),
                ));
            }
            let mut data = reader.stream(
                e.chunks().collect(),
                format!("file {} of dump {}", e.display_path(), dump.id),
            );
            w.file(ino, &meta, &mut data, &holes)?;
            e.size
        }
        EntryKind::Symlink => {
            w.symlink(ino, &meta, &e.target)?;
            0
        }
        _ => {
            w.special(ino, &meta)?;
            0
        }
    };
    w.xattrs(ino, &meta, &xattrs)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(path: &str, kind: EntryKind) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind,
            mode: 0o644,
            ..Entry::default()
        }
    }

    #[test]
    fn inode_map_round_trips_and_detects_damage() {
        let map = vec![
            (b"".to_vec(), 2),
            (b"a".to_vec(), 3),
            (b"a/b".to_vec(), 9),
            (b"a/bc".to_vec(), 4_000_000_000),
            (vec![0xff, b'/', 0xfe], 5),
        ];
        let enc = encode_inode_map(&map);
        assert_eq!(decode_inode_map(&enc).unwrap(), map);
        assert!(decode_inode_map(&enc[..enc.len() - 1]).is_err());
        let mut extra = enc.clone();
        extra.push(0);
        assert!(decode_inode_map(&extra).is_err());
        let mut bad = enc.clone();
        bad[0] ^= 1;
        assert!(decode_inode_map(&bad).is_err());
        assert!(decode_inode_map(&encode_inode_map(&[])).unwrap().is_empty());
    }

    #[test]
    fn change_detection_compares_what_restore_carries() {
        let a = e("f", EntryKind::File);
        let mut b = a.clone();
        b.ctime_ns = 99; // not carried: not a change
        b.ino = 1234;
        assert!(!changed(&b, &a));
        b.mode = 0o600;
        assert!(changed(&b, &a));
        let mut c = a.clone();
        c.mtime_ns = 1;
        assert!(changed(&c, &a));
        let mut x = a.clone();
        x.xattrs = vec![(b"user.day".to_vec(), b"2".to_vec())];
        assert!(changed(&x, &a));
        assert!(same_class(EntryKind::File, EntryKind::HardLink));
        assert!(!same_class(EntryKind::File, EntryKind::Symlink));
        assert_eq!(parent_of(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(parent_of(b"c"), (&b""[..], &b"c"[..]));
    }
}
