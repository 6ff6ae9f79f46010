//! `reel mount`: every dump of a volume as a read-only FUSE file system, one folder per dump
//! (named by its local time, `YYYY-MM-DDTHH:MM:SS`, with `.ID` added when two dumps share a
//! second) plus `backup` for the latest clone when that clone is a manifest.
//!
//! Why it is built this way: a dump is a manifest (entries in path order, no directory index)
//! plus chunks in packs, and a volume may hold millions of entries, so nothing is loaded up
//! front. A directory is indexed the first time it is looked up or listed: one streaming pass
//! over its dump's manifest collects its children (the pass stops once it has left the
//! directory's subtree) and gives each an inode. A file's extent list is loaded when it is
//! opened (another pass, stopping at the file) and dropped when it is released. Reads locate
//! the extent holding an offset by binary search over the extents' start offsets; decoded
//! chunks go through a small cache because the kernel reads in 128 KiB pieces that cut
//! chunks in two.
//!
//! Memory: one node (the entry's metadata without its extents: path, names, xattrs, about
//! 200 bytes) per entry of every directory that has been listed or looked up since the
//! mount, kept until unmount (the kernel's `forget` is ignored so inode numbers stay stable);
//! the extent lists of open files; [`CHUNK_CACHE`] decoded chunks; and the chunk reader's
//! open packs and last frame. Browsing a few directories of a huge volume costs a few
//! directories; `find` over all of it costs one node per entry.
//!
//! Hard links share one inode (the inode of the group's first name), so `stat` and tools
//! that compare inodes see the group; link counts are reported as 1 (counting the names of
//! a group would need a pass over the whole manifest). A `backup` clone that is a plain
//! directory (reflink, copy and hook clones not dumped yet) is left out of the mount; it can
//! be read where it is. The set of dumps is read when the mount starts.
//!
//! Data that purge removed from the spool is read from tape images given at mount time
//! (`--tapes DIR`, `--tape IMAGE`: the tapes the volume's dumps need that are among them are
//! staged when the mount starts, [`tapes_needed`]). A read of a file whose data is on tapes
//! not given fails with EIO, since a file system cannot ask for a tape; the log names the
//! tapes once per file, so the admin knows what to mount with.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen,
    ReplyXattr, Request,
};

use crate::clone::{Tree, backup_tree};
use crate::error::Damaged;
use crate::manifest::ManifestReader;
use crate::spool::Spool;
use crate::store::ChunkReader;
use crate::types::{ChunkId, Entry, EntryKind, Extent, path_cmp};
use crate::{Error, Result};

/// Decoded chunks kept for reads that cut a chunk in two (32 KiB chunks at most by default).
pub const CHUNK_CACHE: usize = 16;

/// Attributes never change: the kernel may keep them as long as it likes.
const TTL: Duration = Duration::from_secs(3600);

/// One folder of the mount: a dump, or the latest clone.
#[derive(Clone, Debug)]
pub struct Folder {
    pub name: String,
    pub time_ns: i64,
    manifest: Vec<(ChunkId, u32)>,
    what: String,
}

/// The folders for `volume`: its dumps in time order, then `backup` when the latest clone is
/// a manifest. The second item says why a directory clone was left out, if one was.
pub fn folders(spool: &Spool, volume: &str) -> Result<(Vec<Folder>, Option<String>)> {
    spool.known_volume(volume)?;
    let dumps = spool.catalog.dumps(Some(volume))?;
    let second = |ns: i64| ns.div_euclid(1_000_000_000);
    let mut out = Vec::new();
    for d in &dumps {
        let mut name = crate::timefmt::format_short(d.time_ns).replace(' ', "T");
        if dumps
            .iter()
            .any(|o| o.id != d.id && second(o.time_ns) == second(d.time_ns))
        {
            name = format!("{name}.{}", d.id);
        }
        out.push(Folder {
            name,
            time_ns: d.time_ns,
            manifest: d.manifest_chunks(),
            what: format!("manifest of dump {}", d.id),
        });
    }
    let mut note = None;
    match backup_tree(spool, volume)? {
        Some((rec, Tree::Manifest(chunks))) => out.push(Folder {
            name: "backup".into(),
            time_ns: rec.time_ns,
            manifest: chunks,
            what: format!("manifest of the latest clone of {volume}"),
        }),
        Some((_, Tree::Dir(p))) => {
            note = Some(format!(
                "the latest clone of {volume} is the directory {} (not dumped yet); it is not \
                 in the mount: read it there",
                p.display()
            ))
        }
        None => {}
    }
    Ok((out, note))
}

/// The tapes the dumps of `volume` need for data not on the spool, in the order `reel tapes`
/// lists them: those holding chunks the dumps' chains own.
pub fn tapes_needed(spool: &Spool, volume: &str) -> Result<Vec<String>> {
    let mut needed = HashSet::new();
    for d in spool.catalog.dumps(Some(volume))? {
        needed.extend(crate::tape::media::tapes_needed(spool, &d)?);
    }
    Ok(crate::tape::media::tapes(spool)?
        .into_iter()
        .map(|t| t.label)
        .filter(|l| needed.contains(l))
        .collect())
}

/// One inode. Metadata only: a file's extents are loaded on open.
struct Node {
    /// Index into `folders`; None for the mount's root.
    folder: Option<usize>,
    /// Path inside the folder's tree ("" for its root).
    path: Vec<u8>,
    entry: Entry,
    /// Bytes of stored (non-hole) content, for `st_blocks`.
    stored: u64,
    parent: u64,
    /// Children by name, once the directory has been indexed.
    children: Option<Vec<(Vec<u8>, u64)>>,
}

struct OpenFile {
    extents: Vec<Extent>,
    /// Start offset of each extent in the file.
    starts: Vec<u64>,
    size: u64,
    path: String,
}

struct State {
    reader: ChunkReader<'static>,
    folders: Vec<Folder>,
    /// Inode n is `nodes[n - 1]`; inode 1 is the mount's root.
    nodes: Vec<Node>,
    /// (folder, path) -> inode, for entries indexed so far.
    by_path: HashMap<(usize, Vec<u8>), u64>,
    /// Folder roots, once read.
    roots: Vec<Option<u64>>,
    open: HashMap<u64, Arc<OpenFile>>,
    next_fh: u64,
    cache: Vec<(ChunkId, Arc<Vec<u8>>)>,
    started: SystemTime,
    /// Files whose reads failed for want of a tape, by inode: the log names the tapes once
    /// per file, not once per 128 KiB read.
    told: HashSet<u64>,
}

/// The parent path of a manifest path ("" for top-level names).
fn parent_of(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&c| c == b'/') {
        Some(i) => &path[..i],
        None => b"",
    }
}

fn name_of(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&c| c == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// Is `path` inside the subtree of `dir` (the directory itself excluded)?
fn under(path: &[u8], dir: &[u8]) -> bool {
    if dir.is_empty() {
        return !path.is_empty();
    }
    path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
}

fn to_time(ns: i64) -> SystemTime {
    let d = Duration::new(
        ns.unsigned_abs() / 1_000_000_000,
        (ns.unsigned_abs() % 1_000_000_000) as u32,
    );
    if ns >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

/// glibc's `dev_t` (as `stat` gives it and the manifest records it) to the kernel's 32-bit
/// encoding that FUSE carries.
fn fuse_rdev(rdev: u64) -> u32 {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)) as u32
}

fn file_type(k: EntryKind) -> FileType {
    match k {
        EntryKind::Dir => FileType::Directory,
        EntryKind::File | EntryKind::HardLink => FileType::RegularFile,
        EntryKind::Symlink => FileType::Symlink,
        EntryKind::Fifo => FileType::NamedPipe,
        EntryKind::CharDev => FileType::CharDevice,
        EntryKind::BlockDev => FileType::BlockDevice,
        EntryKind::Socket => FileType::Socket,
    }
}

fn stored_bytes(e: &Entry) -> u64 {
    e.extents
        .iter()
        .map(|x| match x {
            Extent::Chunk { len, .. } => u64::from(*len),
            Extent::Hole(_) => 0,
        })
        .sum()
}

/// Map library errors to what the kernel can pass on; the details go to the log.
fn errno(e: &Error) -> Errno {
    tracing::error!("{e}");
    Errno::EIO
}

impl State {
    fn node(&self, ino: u64) -> Option<&Node> {
        ino.checked_sub(1).and_then(|i| self.nodes.get(i as usize))
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let n = self.node(ino)?;
        let e = &n.entry;
        let t = if n.folder.is_none() {
            self.started
        } else {
            to_time(e.mtime_ns)
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size: e.size,
            blocks: n.stored.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind: file_type(e.kind),
            perm: (e.mode & 0o7777) as u16,
            nlink: if e.kind == EntryKind::Dir { 2 } else { 1 },
            uid: e.uid,
            gid: e.gid,
            rdev: fuse_rdev(e.rdev),
            flags: 0,
            blksize: 4096,
        })
    }

    fn manifest(&self, folder: usize) -> Result<ManifestReader<crate::store::ChunkStream<'_>>> {
        let f = &self.folders[folder];
        ManifestReader::new(self.reader.stream(f.manifest.clone(), f.what.clone()))
    }

    fn push(&mut self, folder: usize, mut entry: Entry, parent: u64) -> u64 {
        let stored = stored_bytes(&entry);
        entry.extents = Vec::new();
        let path = entry.path.clone();
        self.nodes.push(Node {
            folder: Some(folder),
            path: path.clone(),
            entry,
            stored,
            parent,
            children: None,
        });
        let ino = self.nodes.len() as u64;
        self.by_path.insert((folder, path), ino);
        ino
    }

    /// The inode of a folder's root directory (reads the manifest's first entry).
    fn folder_root(&mut self, folder: usize) -> Result<u64> {
        if let Some(ino) = self.roots[folder] {
            return Ok(ino);
        }
        let first = self.manifest(folder)?.next().transpose()?;
        let root = match first {
            Some(e) if e.path.is_empty() && e.kind == EntryKind::Dir => e,
            _ => {
                return Err(Error::damaged(
                    Damaged::Entry(Vec::new()),
                    format!(
                        "{} does not start with its root directory; run `reel check`",
                        self.folders[folder].what
                    ),
                ));
            }
        };
        let ino = self.push(folder, root, 1);
        self.roots[folder] = Some(ino);
        Ok(ino)
    }

    /// Index a directory's children (once): one pass over its manifest, stopping after the
    /// directory's subtree. Hard links get the inode of the name they link to.
    fn index(&mut self, ino: u64) -> Result<()> {
        let Some(n) = self.node(ino) else {
            return Err(Error::usage(format!("no inode {ino}")));
        };
        if n.children.is_some() {
            return Ok(());
        }
        let Some(folder) = n.folder else {
            let mut kids = Vec::new();
            for i in 0..self.folders.len() {
                let root = self.folder_root(i)?;
                kids.push((self.folders[i].name.as_bytes().to_vec(), root));
            }
            self.nodes[0].children = Some(kids);
            return Ok(());
        };
        let dir = n.path.clone();
        let mut found = Vec::new();
        for e in self.manifest(folder)? {
            let e = e?;
            if under(&e.path, &dir) {
                if parent_of(&e.path) == dir.as_slice() {
                    found.push(e);
                }
            } else if path_cmp(&e.path, &dir) == std::cmp::Ordering::Greater {
                break; // past the subtree: path order puts all of it before this entry
            }
        }
        // Other entries first, and the directory marked indexed before any hard link is
        // resolved: resolving walks from the folder's root and may come back here.
        let mut kids = Vec::with_capacity(found.len());
        let mut links = Vec::new();
        for e in found {
            let name = name_of(&e.path).to_vec();
            if e.kind == EntryKind::HardLink {
                links.push((name, e));
            } else {
                kids.push((name, self.push(folder, e, ino)));
            }
        }
        self.nodes[(ino - 1) as usize].children = Some(kids);
        for (name, e) in links {
            let target = self.lookup_path(folder, &e.target)?.ok_or_else(|| {
                Error::damaged(
                    Damaged::Entry(e.path.clone()),
                    format!(
                        "hard link {} in {} names {}, which is not there; run `reel check`",
                        e.display_path(),
                        self.folders[folder].what,
                        String::from_utf8_lossy(&e.target)
                    ),
                )
            })?;
            self.by_path.insert((folder, e.path), target);
            let kids = self.nodes[(ino - 1) as usize]
                .children
                .get_or_insert_default();
            // Keep name order (readdir offsets index this list).
            let at = kids.partition_point(|(n, _)| n.as_slice() < name.as_slice());
            kids.insert(at, (name, target));
        }
        Ok(())
    }

    /// The inode of `path` in a folder, indexing the directories on the way.
    fn lookup_path(&mut self, folder: usize, path: &[u8]) -> Result<Option<u64>> {
        if let Some(ino) = self.by_path.get(&(folder, path.to_vec())) {
            return Ok(Some(*ino));
        }
        let mut ino = self.folder_root(folder)?;
        for name in path.split(|&c| c == b'/').filter(|c| !c.is_empty()) {
            match self.child(ino, name)? {
                Some(c) => ino = c,
                None => return Ok(None),
            }
        }
        Ok(Some(ino))
    }

    fn child(&mut self, dir: u64, name: &[u8]) -> Result<Option<u64>> {
        if self.node(dir).map(|n| n.entry.kind) != Some(EntryKind::Dir) {
            return Ok(None);
        }
        self.index(dir)?;
        let kids = self.nodes[(dir - 1) as usize].children.as_ref();
        Ok(kids.and_then(|k| k.iter().find(|(n, _)| n == name).map(|(_, i)| *i)))
    }

    /// Load a file's extents for reading (one pass, stopping at the file).
    fn open_file(&mut self, ino: u64) -> Result<Option<OpenFile>> {
        let Some(n) = self.node(ino) else {
            return Ok(None);
        };
        let (Some(folder), EntryKind::File) = (n.folder, n.entry.kind) else {
            return Ok(None);
        };
        let path = n.path.clone();
        let mut found = None;
        for e in self.manifest(folder)? {
            let e = e?;
            match path_cmp(&e.path, &path) {
                std::cmp::Ordering::Less => continue,
                std::cmp::Ordering::Equal => found = Some(e),
                std::cmp::Ordering::Greater => {}
            }
            break;
        }
        let Some(e) = found else {
            return Err(Error::damaged(
                Damaged::Entry(path.clone()),
                format!(
                    "{} vanished from {} while mounted",
                    String::from_utf8_lossy(&path),
                    self.folders[folder].what
                ),
            ));
        };
        let mut starts = Vec::with_capacity(e.extents.len());
        let mut at = 0u64;
        for x in &e.extents {
            starts.push(at);
            at += x.len();
        }
        Ok(Some(OpenFile {
            path: format!("{}/{}", self.folders[folder].name, e.display_path()),
            extents: e.extents,
            starts,
            size: at,
        }))
    }

    fn chunk(&mut self, id: ChunkId, what: &str) -> Result<Arc<Vec<u8>>> {
        if let Some(i) = self.cache.iter().position(|(c, _)| *c == id) {
            let hit = self.cache.remove(i);
            self.cache.push(hit.clone());
            return Ok(hit.1);
        }
        let data = Arc::new(self.reader.read(&id, &|| format!("file {what}"))?);
        if self.cache.len() >= CHUNK_CACHE {
            self.cache.remove(0);
        }
        self.cache.push((id, data.clone()));
        Ok(data)
    }

    fn read(&mut self, f: &OpenFile, offset: u64, size: u32) -> Result<Vec<u8>> {
        let end = f.size.min(offset.saturating_add(u64::from(size)));
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        // The extent holding `offset`: the last one starting at or before it.
        let mut i = f.starts.partition_point(|&s| s <= offset).saturating_sub(1);
        let mut pos = offset;
        while pos < end && i < f.extents.len() {
            let x = &f.extents[i];
            let start = f.starts[i];
            let from = (pos - start) as usize;
            let to = (end.min(start + x.len()) - start) as usize;
            match x {
                Extent::Hole(_) => out.resize(out.len() + (to - from), 0),
                Extent::Chunk { id, .. } => {
                    let data = self.chunk(*id, &f.path)?;
                    let piece = data.get(from..to).ok_or_else(|| {
                        Error::damaged(
                            Damaged::Chunk(*id),
                            format!(
                                "chunk {} of {} is shorter than its manifest says",
                                id.short(),
                                f.path
                            ),
                        )
                    })?;
                    out.extend_from_slice(piece);
                }
            }
            pos = start + to as u64;
            i += 1;
        }
        Ok(out)
    }
}

/// The FUSE file system over a spool's folders.
pub struct ReelFs {
    state: Mutex<State>,
}

impl ReelFs {
    /// `spool` is leaked by the caller for the life of the mount (the process); `tape_packs`
    /// are pack files staged from tapes, read for data no longer on the spool.
    pub fn new(
        spool: &'static Spool,
        folders: Vec<Folder>,
        tape_packs: &[std::path::PathBuf],
    ) -> Result<ReelFs> {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let root = Node {
            folder: None,
            path: Vec::new(),
            entry: Entry {
                kind: EntryKind::Dir,
                mode: 0o555,
                uid,
                gid,
                ..Entry::default()
            },
            stored: 0,
            parent: 1,
            children: None,
        };
        let n = folders.len();
        let mut reader = ChunkReader::new(spool)?;
        reader.add_packs(tape_packs)?;
        Ok(ReelFs {
            state: Mutex::new(State {
                reader,
                folders,
                nodes: vec![root],
                by_path: HashMap::new(),
                roots: vec![None; n],
                open: HashMap::new(),
                next_fh: 1,
                cache: Vec::new(),
                started: SystemTime::now(),
                told: HashSet::new(),
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Filesystem for ReelFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut s = self.state();
        let found = match s.node(parent.0).map(|n| n.folder) {
            None => return reply.error(Errno::ENOENT),
            Some(None) => s.index(1).map(|()| {
                s.nodes[0].children.as_ref().and_then(|k| {
                    k.iter()
                        .find(|(n, _)| n.as_slice() == name.as_bytes())
                        .map(|(_, i)| *i)
                })
            }),
            Some(Some(_)) => s.child(parent.0, name.as_bytes()),
        };
        match found {
            Ok(Some(ino)) => match s.attr(ino) {
                Some(a) => reply.entry(&TTL, &a, Generation(0)),
                None => reply.error(Errno::ENOENT),
            },
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.state().attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let s = self.state();
        match s.node(ino.0) {
            Some(n) if n.entry.kind == EntryKind::Symlink => reply.data(&n.entry.target),
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let mut s = self.state();
        match s.open_file(ino.0) {
            Ok(Some(f)) => {
                let fh = s.next_fh;
                s.next_fh += 1;
                s.open.insert(fh, Arc::new(f));
                // Dumps never change: the page cache may keep what it read.
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
            }
            Ok(None) => reply.error(Errno::EISDIR),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut s = self.state();
        let Some(f) = s.open.get(&fh.0).cloned() else {
            return reply.error(Errno::EBADF);
        };
        match s.read(&f, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e @ Error::OnTape { .. }) => {
                if s.told.insert(ino.0) {
                    tracing::error!("{e}");
                }
                reply.error(Errno::EIO)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: fuser::ReplyEmpty,
    ) {
        // Nothing is ever written.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: fuser::ReplyEmpty,
    ) {
        self.state().open.remove(&fh.0);
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut s = self.state();
        let Some(n) = s.node(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if n.entry.kind != EntryKind::Dir {
            return reply.error(Errno::ENOTDIR);
        }
        let parent = n.parent;
        if let Err(e) = s.index(ino.0) {
            return reply.error(errno(&e));
        }
        let mut all: Vec<(u64, FileType, &[u8])> = vec![
            (ino.0, FileType::Directory, b"."),
            (parent, FileType::Directory, b".."),
        ];
        let kids = s.nodes[(ino.0 - 1) as usize]
            .children
            .as_deref()
            .unwrap_or(&[]);
        for (name, child) in kids {
            let kind = s
                .node(*child)
                .map_or(FileType::RegularFile, |c| file_type(c.entry.kind));
            all.push((*child, kind, name));
        }
        for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(
                INodeNo(child),
                (i + 1) as u64,
                kind,
                OsStr::from_bytes(name),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let s = self.state();
        let Some(n) = s.node(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let Some((_, v)) = n
            .entry
            .xattrs
            .iter()
            .find(|(k, _)| k.as_slice() == name.as_bytes())
        else {
            return reply.error(Errno::NO_XATTR);
        };
        xattr_reply(v, size, reply);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let s = self.state();
        let Some(n) = s.node(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let mut names = Vec::new();
        for (k, _) in &n.entry.xattrs {
            names.extend_from_slice(k);
            names.push(0);
        }
        xattr_reply(&names, size, reply);
    }
}

fn xattr_reply(v: &[u8], size: u32, reply: ReplyXattr) {
    if size == 0 {
        reply.size(v.len() as u32);
    } else if v.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(v);
    }
}

static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
}

/// Catch SIGINT, SIGTERM and SIGHUP so the mount loop can unmount and return.
fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Mount `folders` of `spool` at `dir` read-only and serve until SIGINT, SIGTERM or SIGHUP
/// (then unmount and return Ok) or until the file system is unmounted from outside
/// (`fusermount -u`, `umount`). `ready` runs once the mount is up.
pub fn serve(
    spool: &'static Spool,
    folders: Vec<Folder>,
    tape_packs: &[std::path::PathBuf],
    dir: &Path,
    volume: &str,
    allow_other: bool,
    ready: impl FnOnce(),
) -> Result<()> {
    let fs = ReelFs::new(spool, folders, tape_packs)?;
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        MountOption::RO,
        MountOption::FSName(format!("reel:{volume}")),
        MountOption::Subtype("reel".into()),
        MountOption::DefaultPermissions,
    ];
    if allow_other {
        cfg.acl = fuser::SessionACL::All;
    }
    catch_signals();
    let session = fuser::spawn_mount(fs, dir, &cfg).map_err(|e| {
        Error::io(
            dir,
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot mount with FUSE ({e}): the directory must exist, /dev/fuse must be \
                     openable and fusermount installed (or run as root)"
                ),
            ),
        )
    })?;
    ready();
    loop {
        if SIGNAL.load(Ordering::SeqCst) != 0 {
            session.umount_and_join().at_unmount(dir)?;
            return Ok(());
        }
        if session.guard.is_finished() {
            // Unmounted from outside.
            session.join().at_unmount(dir)?;
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

trait AtUnmount {
    fn at_unmount(self, dir: &Path) -> Result<()>;
}

impl AtUnmount for std::io::Result<()> {
    fn at_unmount(self, dir: &Path) -> Result<()> {
        self.map_err(|e| {
            Error::io(
                dir,
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "unmounting failed ({e}); try `fusermount -u {}`",
                        dir.display()
                    ),
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_parent_and_name() {
        assert_eq!(parent_of(b"a/b/c"), b"a/b");
        assert_eq!(parent_of(b"a"), b"");
        assert_eq!(name_of(b"a/b/c"), b"c");
        assert_eq!(name_of(b"a"), b"a");
        assert!(under(b"a/b", b"a"));
        assert!(!under(b"a.b", b"a"));
        assert!(!under(b"a", b"a"));
        assert!(under(b"a", b""));
        assert!(!under(b"", b""));
    }

    #[test]
    fn device_numbers_reencode_for_fuse() {
        // glibc makedev(1, 3) and makedev(259, 70000).
        let glibc = |ma: u64, mi: u64| {
            ((ma & 0xfff) << 8) | ((ma & !0xfff) << 32) | (mi & 0xff) | ((mi & !0xff) << 12)
        };
        assert_eq!(fuse_rdev(glibc(1, 3)), 0x103);
        let k = fuse_rdev(glibc(259, 70000));
        // The kernel's new_decode_dev.
        let major = (k & 0xfff00) >> 8;
        let minor = (k & 0xff) | ((k >> 12) & 0xfff00);
        assert_eq!((major, minor), (259, 70000));
    }

    #[test]
    fn times_before_and_after_the_epoch() {
        assert_eq!(
            to_time(1_500_000_000),
            UNIX_EPOCH + Duration::new(1, 500_000_000)
        );
        assert_eq!(
            to_time(-1_500_000_000),
            UNIX_EPOCH - Duration::new(1, 500_000_000)
        );
    }
}
