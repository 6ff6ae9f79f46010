//! Ingesting old BSD dump images (levels 0-9, multi-volume sets, as the stock `dump` writes
//! them) as dumps of a volume, so a shelf of old tapes moves into the deduplicated spool
//! (issue 4, "Plain-tree dumps and old dumps").
//!
//! Why it is built this way: a BSD incremental is not a complete view — it carries the
//! changed inodes, the directories, and the map of inodes in use — while every reel dump is a
//! complete manifest. So each image is applied the way `restore -r` applies it
//! (docs/BSD-DUMP.md §11) onto a staging copy of the volume as of the previous image, and the
//! staging tree is then dumped with the ordinary dump phase ([`dump_tree`]) at the image's date
//! and level; deduplication, ownership and the level rules are therefore exactly those of a
//! live dump, and nothing in the catalog is special about an ingested dump.
//!
//! The staging area `SPOOL/tmp/ingest-NAME/` holds two things:
//! - `pool/INO`: one node per non-directory inode in use (file, symlink, FIFO, device), with
//!   its metadata applied. An inode not dumped by an incremental but still in use keeps its
//!   pool node untouched; a dumped one gets a new node renamed over the old; an inode not in
//!   use any more is unlinked.
//! - `tree/`: rebuilt for each image from the directory records (kept across images: an
//!   incremental dumps only directories on the way to changed inodes) by creating the
//!   directories and hard-linking every name to its pool node. Several names of one inode
//!   thus become one inode in the tree, which the scanner records as hard links.
//!
//! The pool never enters the scanned tree. The staging area is removed when the command ends,
//! so a chain must be ingested in one command (level 0 first). Every image is checked before
//! any is applied: its headers, the chain (`c_ddate` of an incremental = `c_date` of the image
//! before it) and the dates (later than the volume's latest dump), so a wrong command line
//! commits nothing. A truncated or corrupt image is found while it is read, before its dump is
//! written: the images before it stay ingested (each is a complete dump), nothing of it is.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::bsd::format::{S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG};
use super::bsd::{DirEntry, DumpInfo, DumpReader, InodeKind, InodeMeta, Piece, Xattrs, paths};
use crate::dirfd::{self, Dir};
use crate::dump::{DumpOptions, DumpOutcome, dump_tree};
use crate::error::Damaged;
use crate::error::{Error, IoContext, Result};
use crate::progress::Progress;
use crate::spool::{Spool, validate_volume_name};
use crate::timefmt::format_rfc3339;
use crate::tree_writer::{TreeWriter, is_root};
use crate::types::{Entry, EntryKind};

/// The root directory's inode number in every BSD dump.
const ROOTINO: u32 = 2;

/// One image argument: its volume files in order, and how to name it in messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub volumes: Vec<PathBuf>,
}

impl Image {
    /// The image's name for messages: its first volume file (and how many there are).
    pub fn display(&self) -> String {
        match self.volumes.as_slice() {
            [one] => one.display().to_string(),
            [first, ..] => format!("{} (+{} volumes)", first.display(), self.volumes.len() - 1),
            [] => "(no file)".to_string(),
        }
    }
}

/// What one ingested image became.
#[derive(Clone, Debug)]
pub struct IngestReport {
    pub image: String,
    /// The image's header: level, date (`c_date`), base date (`c_ddate`), label, host, ...
    pub info: DumpInfo,
    /// Inodes read from the image (directories included).
    pub inodes: u64,
    /// Names the volume has as of this image (the root left out).
    pub names: u64,
    /// Things the staging tree could not keep (owners when not root, devices when not root).
    pub warnings: Vec<String>,
    pub outcome: DumpOutcome,
}

/// Turn an IMAGE argument into volume files (`tape::locate::image_volumes`): `a,b,c`, an
/// existing file, or a prefix whose `PREFIX.001`, … or `PREFIX001`, … exist, as `restore -M -f
/// PREFIX` reads them.
pub fn image_volumes(arg: &str) -> Result<Image> {
    Ok(Image {
        volumes: crate::tape::locate::image_volumes(std::path::Path::new(arg))?,
    })
}

/// A non-directory inode of the volume as of the images applied so far.
struct Node {
    meta: InodeMeta,
    /// Not in the pool: a device node that needs root to create (a warning was given).
    skipped: bool,
}

/// The volume as of the last applied image (see the module documentation).
struct Staging {
    pool: PathBuf,
    /// The pool's handle: its nodes are made, renamed and linked by name in it.
    pool_dir: Dir,
    tree: PathBuf,
    dirs: BTreeMap<u32, Vec<DirEntry>>,
    dir_meta: BTreeMap<u32, InodeMeta>,
    dir_xattrs: BTreeMap<u32, Xattrs>,
    nodes: BTreeMap<u32, Node>,
    as_root: bool,
}

fn kind_of(mode: u32) -> EntryKind {
    match mode & S_IFMT {
        S_IFDIR => EntryKind::Dir,
        S_IFREG => EntryKind::File,
        S_IFLNK => EntryKind::Symlink,
        S_IFIFO => EntryKind::Fifo,
        S_IFCHR => EntryKind::CharDev,
        S_IFBLK => EntryKind::BlockDev,
        _ => EntryKind::Socket,
    }
}

fn entry_of(meta: &InodeMeta, target: Vec<u8>) -> Entry {
    Entry {
        kind: kind_of(meta.mode),
        mode: meta.mode & 0o7777,
        uid: meta.uid,
        gid: meta.gid,
        mtime_ns: meta.mtime_ns,
        size: meta.size,
        rdev: meta.rdev,
        target,
        ..Entry::default()
    }
}

/// Remove a tree we made, by handle, even where it holds read-only directories (a normal user
/// cannot unlink inside a 0555 directory).
fn remove_tree(path: &Path) -> Result<()> {
    dirfd::remove_tree(path).at(path)
}

impl Staging {
    fn new(dir: &Path) -> Result<Staging> {
        remove_tree(dir)?;
        let pool = dir.join("pool");
        let tree = dir.join("tree");
        crate::fsutil::create_dir_all(&pool).at(&pool)?;
        let pool_dir = Dir::open(&pool).at(&pool)?;
        Ok(Staging {
            pool,
            pool_dir,
            tree,
            dirs: BTreeMap::new(),
            dir_meta: BTreeMap::new(),
            dir_xattrs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            as_root: is_root(),
        })
    }

    fn pool_path(&self, ino: u32) -> PathBuf {
        self.pool.join(ino.to_string())
    }

    fn pool_name(ino: u32) -> Vec<u8> {
        ino.to_string().into_bytes()
    }

    /// Forget everything (a level 0, or an image with no base date).
    fn clear(&mut self) -> Result<()> {
        for ino in std::mem::take(&mut self.nodes).into_keys() {
            self.unlink_pool(ino)?;
        }
        self.dirs.clear();
        self.dir_meta.clear();
        self.dir_xattrs.clear();
        Ok(())
    }

    fn unlink_pool(&self, ino: u32) -> Result<()> {
        match self.pool_dir.unlink(&Self::pool_name(ino)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(self.pool_path(ino), e))
            }
            _ => Ok(()),
        }
    }

    /// Forget an inode (not in use any more, or its number now names another kind of node).
    fn drop_inode(&mut self, ino: u32) -> Result<()> {
        self.dirs.remove(&ino);
        self.dir_meta.remove(&ino);
        self.dir_xattrs.remove(&ino);
        if self.nodes.remove(&ino).is_some() {
            self.unlink_pool(ino)?;
        }
        Ok(())
    }

    /// Apply one image onto the state, the way `restore -r` does; returns inodes read.
    fn apply(
        &mut self,
        r: &mut DumpReader,
        image: &str,
        warnings: &mut Vec<String>,
    ) -> Result<u64> {
        let in_use = r.in_use().clone();
        // Inodes not in use any more are gone (§11).
        let gone: Vec<u32> = self
            .dirs
            .keys()
            .chain(self.nodes.keys())
            .copied()
            .filter(|&i| !in_use.get(i))
            .collect();
        for ino in gone {
            self.drop_inode(ino)?;
        }
        let mut count = 0u64;
        while let Some(inode) = r.next()? {
            count += 1;
            let ino = inode.ino;
            match inode.kind {
                InodeKind::Dir(entries) => {
                    if self.nodes.contains_key(&ino) {
                        self.drop_inode(ino)?;
                    }
                    let xattrs = r.xattrs()?;
                    self.warn_xattrs(ino, &xattrs, image, warnings);
                    self.dirs.insert(ino, entries);
                    self.dir_meta.insert(ino, inode.meta);
                    self.dir_xattrs.insert(ino, xattrs);
                }
                kind => {
                    if self.dirs.contains_key(&ino) {
                        self.drop_inode(ino)?;
                    }
                    if inode.meta_only {
                        // dump -m: new attributes for content we already hold.
                        let node = self.nodes.get_mut(&ino).ok_or_else(|| {
                            Error::damaged(Damaged::Image { path: image.into(), record: None }, format!(
                                "{image}: inode {ino} carries metadata only (dump -m) but no earlier image of the chain holds its content; give the chain from its level 0"
                            ))
                        })?;
                        node.meta = inode.meta;
                        let xattrs = r.xattrs()?;
                        if !node.skipped {
                            let p = self.pool_path(ino);
                            let mut entry = entry_of(&inode.meta, Vec::new());
                            entry.xattrs = xattrs;
                            self.pool_dir
                                .open_node(&Self::pool_name(ino))
                                .and_then(|n| n.apply_meta(&entry, self.as_root))
                                .at(&p)?;
                        }
                        continue;
                    }
                    let skipped = self.write_node(r, ino, &inode.meta, kind, image, warnings)?;
                    self.nodes.insert(
                        ino,
                        Node {
                            meta: inode.meta,
                            skipped,
                        },
                    );
                }
            }
        }
        Ok(count)
    }

    /// Without root only `user.*` attributes can be set: say which others are left out.
    fn warn_xattrs(
        &self,
        ino: u32,
        xattrs: &[(Vec<u8>, Vec<u8>)],
        image: &str,
        warnings: &mut Vec<String>,
    ) {
        let others: Vec<String> = xattrs
            .iter()
            .filter(|(n, _)| !n.starts_with(b"user."))
            .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
            .collect();
        if !self.as_root && !others.is_empty() {
            warnings.push(format!(
                "{image}: inode {ino} has extended attributes only root can set ({}); they are left out (ingest as root to keep them)",
                others.join(", ")
            ));
        }
    }

    /// Write a non-directory inode's node into the pool (beside, then renamed over the old
    /// one). Returns true when the node was skipped (a device, not root).
    fn write_node(
        &self,
        r: &mut DumpReader,
        ino: u32,
        meta: &InodeMeta,
        kind: InodeKind,
        image: &str,
        warnings: &mut Vec<String>,
    ) -> Result<bool> {
        let target = match kind {
            InodeKind::Symlink(t) => t,
            _ => Vec::new(),
        };
        let mut entry = entry_of(meta, target);
        if matches!(entry.kind, EntryKind::CharDev | EntryKind::BlockDev) && !self.as_root {
            warnings.push(format!(
                "{image}: inode {ino} is a device node, which only root can create; it is left out (ingest as root to keep it)"
            ));
            return Ok(true);
        }
        let tmp_name = format!("{ino}.new").into_bytes();
        let tmp = self.pool.join(format!("{ino}.new"));
        if entry.kind == EntryKind::File {
            let file = TreeWriter::file(&self.pool_dir, &tmp_name, entry.size)?;
            let mut off = 0u64;
            while let Some(p) = r.piece()? {
                match p {
                    Piece::Data(d) => {
                        file.write_all_at(d, off).at(&tmp)?;
                        off += d.len() as u64;
                    }
                    // Left unwritten: create_node made the file all hole, so it stays sparse.
                    Piece::Hole(n) => off += n,
                }
            }
            if off != meta.size {
                return Err(Error::damaged(
                    Damaged::Image {
                        path: image.into(),
                        record: None,
                    },
                    format!(
                        "{image}: inode {ino} holds {off} bytes of data but its header says {}",
                        meta.size
                    ),
                ));
            }
            entry.xattrs = r.xattrs()?;
            self.warn_xattrs(ino, &entry.xattrs, image, warnings);
            // No fsync: the staging area is scratch, read back by the dump and removed; a
            // crash leaves nothing that a later run relies on.
            dirfd::apply_file_meta(&file, &entry, self.as_root).at(&tmp)?;
        } else {
            entry.xattrs = r.xattrs()?;
            self.warn_xattrs(ino, &entry.xattrs, image, warnings);
            TreeWriter::special(&self.pool_dir, &tmp_name, &entry, self.as_root)?;
        }
        let dst = self.pool_path(ino);
        self.pool_dir
            .rename(&tmp_name, &Self::pool_name(ino))
            .at(&dst)?;
        Ok(false)
    }

    /// Rebuild `tree/` from the directories and the pool; returns the number of names and
    /// how many of them were left out (device nodes, not root).
    fn build_tree(&self, in_use: &super::bsd::BitMap, image: &str) -> Result<(u64, u64)> {
        remove_tree(&self.tree)?;
        crate::fsutil::create_dir(&self.tree).at(&self.tree)?;
        if !self.dirs.contains_key(&ROOTINO) {
            return Err(Error::damaged(
                Damaged::Image {
                    path: image.into(),
                    record: None,
                },
                format!(
                    "{image}: the root directory (inode 2) is on neither this image nor an earlier one of the chain; give the chain from its level 0"
                ),
            ));
        }
        let all = paths(&self.dirs, in_use).map_err(|e| {
            e.within(
                Damaged::Image {
                    path: image.into(),
                    record: None,
                },
                |m| format!("{image}: {m}"),
            )
        })?;
        let mut tree = TreeWriter::open(&self.tree, self.as_root)?;
        let mut left_out = 0u64;
        for (ino, rel) in &all {
            if self.dirs.contains_key(ino) {
                let meta = self.dir_meta.get(ino).copied().unwrap_or_default();
                let mut entry = entry_of(&meta, Vec::new());
                entry.kind = EntryKind::Dir;
                entry.xattrs = self.dir_xattrs.get(ino).cloned().unwrap_or_default();
                entry.path = rel.clone();
                tree.dir(&entry)?;
            } else if let Some(node) = self.nodes.get(ino) {
                if node.skipped {
                    left_out += 1;
                    continue;
                }
                let (dir, name) = tree.parent_of(rel)?;
                // link(2) does not follow a symlink: the tree gets the symlink itself.
                dir.hard_link(&self.pool_dir, &Self::pool_name(*ino), name)
                    .map_err(|e| Error::io(dir.shown_child(name), e))?;
            } else {
                return Err(Error::damaged(
                    Damaged::Image {
                        path: image.into(),
                        record: None,
                    },
                    format!(
                        "{image}: {} (inode {ino}) is in use but on neither this image nor an earlier one of the chain; give the chain from its level 0, in order",
                        String::from_utf8_lossy(rel)
                    ),
                ));
            }
        }
        // Every directory after all its descendants (the writer's order), so creating entries
        // no longer changes a directory whose times are set.
        tree.finish()?;
        Ok((all.len().saturating_sub(1) as u64, left_out))
    }
}

fn date_ns(secs: i64) -> i64 {
    secs.saturating_mul(1_000_000_000)
}

/// Check every image before any is applied: readable headers, an unbroken chain, and dates
/// later than the volume's latest dump and than the image before.
fn check_images(spool: &Spool, name: &str, images: &[Image]) -> Result<Vec<DumpInfo>> {
    let latest = spool.catalog.dumps(Some(name))?.last().map(|d| d.time_ns);
    let mut infos: Vec<DumpInfo> = Vec::new();
    for (i, img) in images.iter().enumerate() {
        let shown = img.display();
        let info = DumpReader::open(&img.volumes)?.info().clone();
        let t = date_ns(info.date);
        if let Some(l) = latest.filter(|&l| t <= l) {
            return Err(Error::usage(format!(
                "{shown}: its date {} is not later than the latest dump of volume {name} ({}); reel keeps a volume's dumps in time order, so ingest old images into a new volume name",
                format_rfc3339(t),
                format_rfc3339(l)
            )));
        }
        let prev = i.checked_sub(1).map(|p| (&images[p], &infos[p]));
        if let Some((pimg, p)) = prev
            && info.date <= p.date
        {
            return Err(Error::usage(format!(
                "{shown}: its date {} is not later than that of {} given before it ({}); give the images in time order",
                format_rfc3339(t),
                pimg.display(),
                format_rfc3339(date_ns(p.date))
            )));
        }
        if info.ddate != 0 {
            let base = format_rfc3339(date_ns(info.ddate));
            match prev {
                None => {
                    return Err(Error::usage(format!(
                        "{shown}: level {} dump based on the dump of {base}, which is not given before it (a gap in the chain); give its level 0 and the levels between, in order, in the same command",
                        info.level
                    )));
                }
                Some((pimg, p)) if p.date != info.ddate => {
                    return Err(Error::usage(format!(
                        "{shown}: level {} dump based on the dump of {base}, but the image before it ({}) is of {} (a gap in the chain); give the chain in order: the level 0, then each incremental right after its base",
                        info.level,
                        pimg.display(),
                        format_rfc3339(date_ns(p.date))
                    )));
                }
                Some(_) => {}
            }
        }
        infos.push(info);
    }
    Ok(infos)
}

/// Ingest `images` (in the order given) as dumps of volume `name`. A name that is not a
/// volume of the spool's settings becomes a catalog-only volume (dumps without a live path).
/// `on_done` hears about each image as soon as its dump is committed, so a failure later in
/// the list does not hide what was ingested.
pub fn ingest_dumps(
    spool: &Spool,
    name: &str,
    images: &[Image],
    progress: &dyn Progress,
    on_done: &mut dyn FnMut(&IngestReport),
) -> Result<Vec<IngestReport>> {
    validate_volume_name(name)?;
    if images.is_empty() {
        return Err(Error::usage("no dump image given"));
    }
    let infos = check_images(spool, name, images)?;
    let dir = spool.tmp_dir().join(format!("ingest-{name}"));
    let mut st = Staging::new(&dir)?;
    let result: Result<Vec<IngestReport>> = (|| {
        let mut reports = Vec::new();
        for (img, info) in images.iter().zip(&infos) {
            let shown = img.display();
            progress.message(&format!("reading {shown}"));
            let mut warnings = Vec::new();
            if !st.as_root {
                warnings.push(format!(
                    "{shown}: not running as root, so file owners are those of the ingesting user, not the image's"
                ));
            }
            let mut r = DumpReader::open(&img.volumes)?;
            if info.ddate == 0 {
                st.clear()?;
            }
            let inodes = st.apply(&mut r, &shown, &mut warnings)?;
            let (names, left_out) = st.build_tree(r.in_use(), &shown)?;
            if left_out > 0 {
                warnings.push(format!(
                    "{shown}: {left_out} device node name(s) of the volume are not in this dump (ingest as root to keep them)"
                ));
            }
            let opts = DumpOptions {
                level: info.level,
                time_ns: Some(date_ns(info.date)),
                // The staging tree's stat data says nothing about the image: read everything.
                reread: true,
            };
            let outcome = dump_tree(spool, name, &st.tree, &opts, progress)?;
            let rep = IngestReport {
                image: shown,
                info: info.clone(),
                inodes,
                names,
                warnings,
                outcome,
            };
            on_done(&rep);
            reports.push(rep);
        }
        Ok(reports)
    })();
    let cleaned = remove_tree(&dir);
    let reports = result?;
    cleaned?;
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::ffi::OsStr;
    use std::fs;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::fs::PermissionsExt;

    /// The set of names (relative paths) an applied state has; for tests.
    fn tree_names(root: &Path) -> BTreeSet<Vec<u8>> {
        fn walk(root: &Path, rel: &[u8], out: &mut BTreeSet<Vec<u8>>) {
            let dir = root.join(OsStr::from_bytes(rel));
            for e in fs::read_dir(&dir).unwrap() {
                let e = e.unwrap();
                let mut r = rel.to_vec();
                if !r.is_empty() {
                    r.push(b'/');
                }
                r.extend_from_slice(e.file_name().as_bytes());
                if e.file_type().unwrap().is_dir() {
                    walk(root, &r, out);
                }
                out.insert(r);
            }
        }
        let mut out = BTreeSet::new();
        walk(root, b"", &mut out);
        out
    }

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/bsd-dump")
            .join(name)
    }

    #[test]
    fn level1_applies_onto_level0_like_restore_r() {
        if !fixture("level0.dump").exists() {
            eprintln!("skipped: fixtures missing");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let mut st = Staging::new(&d.path().join("ingest")).unwrap();
        let mut w = Vec::new();
        let mut r0 = DumpReader::open(&[fixture("level0.dump")]).unwrap();
        st.apply(&mut r0, "level0", &mut w).unwrap();
        st.build_tree(r0.in_use(), "level0").unwrap();
        let before = tree_names(&st.tree);
        assert!(before.contains(b"empty".as_slice()));
        assert!(before.contains(b"dir1/sub/medium.txt".as_slice()));
        let l0_big = fs::metadata(st.tree.join("big.bin")).unwrap();

        let mut r1 = DumpReader::open(&[fixture("level1.dump")]).unwrap();
        st.apply(&mut r1, "level1", &mut w).unwrap();
        st.build_tree(r1.in_use(), "level1").unwrap();
        let after = tree_names(&st.tree);
        // Renamed, deleted and new names as restore -r gives them.
        assert!(!after.contains(b"empty".as_slice()));
        assert!(after.contains(b"empty-renamed".as_slice()));
        assert!(after.contains(b"dir2/newfile.txt".as_slice()));
        assert!(!after.contains(b"dir1/sub/medium.txt".as_slice()));
        // An undumped, still-used inode keeps its content (the same pool node).
        let l1_big = fs::metadata(st.tree.join("big.bin")).unwrap();
        assert_eq!((l0_big.ino(), l0_big.size()), (l1_big.ino(), l1_big.size()));
        // Names of one inode are one inode in the tree.
        let a = fs::metadata(st.tree.join("dir1/small.txt")).unwrap();
        let b = fs::metadata(st.tree.join("dir2/hardlink.txt")).unwrap();
        assert_eq!(a.ino(), b.ino());
        // Directory times are the image's, set after their content.
        let dir1 = fs::metadata(st.tree.join("dir1")).unwrap();
        assert_eq!(dir1.mtime(), st.dir_meta[&14].mtime_ns / 1_000_000_000);
    }

    #[test]
    fn remove_tree_handles_read_only_directories() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("t");
        fs::create_dir_all(t.join("a/b")).unwrap();
        fs::write(t.join("a/b/f"), b"x").unwrap();
        fs::set_permissions(t.join("a/b"), fs::Permissions::from_mode(0o555)).unwrap();
        fs::set_permissions(t.join("a"), fs::Permissions::from_mode(0o500)).unwrap();
        remove_tree(&t).unwrap();
        assert!(!t.exists());
        remove_tree(&t).unwrap();
    }
}
