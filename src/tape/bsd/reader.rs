//! Reading BSD dump streams: real `dump` images (levels 0–9, multi-volume sets, byte-swapped
//! ones) and ours (format notes §17, reader recipe).
//!
//! Why it is built this way: the reader streams one record at a time through a buffered file,
//! so a file's data never sits in memory as a whole; only directories (bounded by the format)
//! and symlink targets are collected. It is deliberately stricter than `restore`: restore
//! resynchronises after a damaged header and treats missing blocks as holes, losing data with a
//! warning; an import must fail instead, so every header must pass its checksum and every byte
//! of every inode must be accounted for, and errors name the volume file and record index. Names
//! that could escape an extraction target are refused while directories are parsed. Volumes of
//! a multi-volume set are read in the order given; each must carry the next volume number and
//! the dump's date.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};

use super::format::{
    BitMap, DR_COMPRESSED, DR_EXTATTRIBUTES, DR_METAONLY, DR_NEWINODEFMT, DirEntry, DumpInfo,
    EXT_XATTR, FS_UFS2_MAGIC, Header, HeaderError, InodeMeta, ROOTINO, S_IFBLK, S_IFCHR, S_IFDIR,
    S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK, TP_BSIZE, TP_NINDIR, TS_ADDR, TS_BITS, TS_CLRI,
    TS_END, TS_INODE, TS_TAPE, decode_dir,
};
use super::xattr::{self, Xattrs};
use crate::error::Damaged;
use crate::error::{Error, IoContext, Result};

/// Largest map accepted (records): 64 MiB, half a billion inodes.
const MAX_MAP_RECORDS: i32 = 65536;
/// Directories at or above this size trip restore's quad-swap heuristic (§15).
const MAX_DIR_SIZE: u64 = 0x0FFF_FFFF;
/// Longest symlink target restore accepts.
const MAX_SYMLINK: u64 = 4096;

/// One inode of the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    pub ino: u32,
    pub meta: InodeMeta,
    pub kind: InodeKind,
    /// A `dump -m` record: metadata only, the content is not on this tape (no pieces).
    pub meta_only: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InodeKind {
    /// Parsed entries, "." and ".." included (first and second).
    Dir(Vec<DirEntry>),
    File,
    Symlink(Vec<u8>),
    /// FIFO, socket, char or block device (the type is in `meta.mode`, the device in `meta.rdev`).
    Special,
}

/// A piece of a regular file's content, in file order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    Data(&'a [u8]),
    Hole(u64),
}

/// The headers and data records of the inode being read.
#[derive(Clone)]
struct Cur {
    ino: u32,
    size: u64,
    produced: u64,
    count: usize,
    addr: [u8; TP_NINDIR],
    idx: usize,
    /// Are the pieces for the caller (`piece`)? False once consumed or for specials.
    open: bool,
}

/// The volume files, read record by record.
struct Source {
    volumes: Vec<PathBuf>,
    vol: usize,
    file: BufReader<File>,
    /// Records consumed from the current volume file.
    rec_in_vol: u64,
    date: i32,
    ddate: i32,
    swapped: bool,
}

impl Source {
    fn path(&self) -> &Path {
        &self.volumes[self.vol]
    }

    fn truncated(&self) -> Error {
        Error::damaged(
            Damaged::Image {
                path: self.path().to_path_buf(),
                record: Some(self.rec_in_vol),
            },
            format!(
                "{} ends at record {} before the end of the dump: the image is truncated, or the next volume of a multi-volume set is missing; give all volumes in order",
                self.path().display(),
                self.rec_in_vol
            ),
        )
    }

    /// Read one record into `buf`, moving to the next volume at the end of a file.
    fn read(&mut self, buf: &mut [u8; TP_BSIZE]) -> Result<()> {
        loop {
            let n = read_full(&mut self.file, buf).at(&self.volumes[self.vol])?;
            if n == TP_BSIZE {
                self.rec_in_vol += 1;
                return Ok(());
            }
            if n != 0 || self.vol + 1 >= self.volumes.len() {
                return Err(self.truncated());
            }
            self.next_volume()?;
        }
    }

    /// Open the next volume file and check its TS_TAPE header (§12).
    fn next_volume(&mut self) -> Result<()> {
        let vol = self.vol + 1;
        let path = self.volumes[vol].clone();
        let mut file = BufReader::with_capacity(64 * 1024, File::open(&path).at(&path)?);
        let mut buf = [0u8; TP_BSIZE];
        let n = read_full(&mut file, &mut buf).at(&path)?;
        let not_volume = || {
            Error::damaged(
                Damaged::Image {
                    path: path.clone(),
                    record: Some(0),
                },
                format!(
                    "{} is not a volume of a BSD dump (no dump header in its first record)",
                    path.display()
                ),
            )
        };
        if n != TP_BSIZE {
            return Err(not_volume());
        }
        let (h, swapped) = Header::decode(&buf).map_err(|_| not_volume())?;
        if h.c_type != TS_TAPE {
            return Err(not_volume());
        }
        if h.c_date != self.date || h.c_ddate != self.ddate || swapped != self.swapped {
            return Err(Error::usage(format!(
                "{} belongs to another dump (dump date {}, expected {} as in {}): give the volumes of one dump in order",
                path.display(),
                h.c_date,
                self.date,
                self.volumes[0].display()
            )));
        }
        let expected = vol as i32 + 1;
        if h.c_volume != expected {
            return Err(Error::usage(format!(
                "{} is volume {} of the dump, but volume {expected} was expected next: give all volumes in order",
                path.display(),
                h.c_volume
            )));
        }
        self.vol = vol;
        self.file = file;
        self.rec_in_vol = 1;
        Ok(())
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A streaming BSD dump reader; see the module documentation.
pub struct DumpReader {
    src: Source,
    info: DumpInfo,
    in_use: BitMap,
    dumped: BitMap,
    new_format: bool,
    rec: [u8; TP_BSIZE],
    /// A header read ahead (the end of a file is known only by reading the next header).
    peeked: Option<Header>,
    cur: Option<Cur>,
    ended: bool,
}

impl DumpReader {
    /// Open a dump made of these volume files in order (one for a single-volume dump). Reads
    /// TS_TAPE, TS_CLRI, TS_BITS.
    pub fn open(volumes: &[PathBuf]) -> Result<DumpReader> {
        let Some(first) = volumes.first() else {
            return Err(Error::usage("no dump image given"));
        };
        let mut file = BufReader::with_capacity(64 * 1024, File::open(first).at(first)?);
        let mut rec = [0u8; TP_BSIZE];
        let n = read_full(&mut file, &mut rec).at(first)?;
        let not_dump = |why: &str| {
            Error::damaged(
                Damaged::Image {
                    path: first.clone(),
                    record: Some(0),
                },
                format!(
                    "{} is not a BSD dump image (no dump header in its first record{why})",
                    first.display()
                ),
            )
        };
        if n != TP_BSIZE {
            return Err(not_dump(": the file is shorter than one record"));
        }
        let (h, swapped) = match Header::decode(&rec) {
            Ok(x) => x,
            Err(HeaderError::BadMagic) => return Err(not_dump("")),
            Err(HeaderError::BadChecksum) => {
                return Err(not_dump(
                    ": record 0 has the dump magic but fails its checksum",
                ));
            }
            Err(HeaderError::OtherFormat(m)) => {
                let what = if m == FS_UFS2_MAGIC {
                    "a FreeBSD UFS2 dump"
                } else {
                    "an old-format (4.2/4.3BSD) dump"
                };
                return Err(Error::usage(format!(
                    "{} is {what}, which reel does not read; convert it with the stock restore first",
                    first.display()
                )));
            }
        };
        if h.c_type != TS_TAPE {
            return Err(not_dump(": record 0 is not a TS_TAPE header"));
        }
        if h.c_volume != 1 {
            return Err(Error::usage(format!(
                "{} is volume {} of a dump, not volume 1: give all volumes in order",
                first.display(),
                h.c_volume
            )));
        }
        if h.c_flags & DR_COMPRESSED != 0 {
            return Err(Error::usage(format!(
                "{} is a compressed dump (dump -z/-j), which is not supported; write the dump without compression",
                first.display()
            )));
        }
        let new_format = h.c_flags & DR_NEWINODEFMT != 0;
        if !new_format {
            return Err(Error::usage(format!(
                "{} uses the old BSD inode format (no DR_NEWINODEFMT), which is not supported",
                first.display()
            )));
        }
        let info = h.dump_info();
        let src = Source {
            volumes: volumes.to_vec(),
            vol: 0,
            file,
            rec_in_vol: 1,
            date: h.c_date,
            ddate: h.c_ddate,
            swapped,
        };
        let mut r = DumpReader {
            src,
            info,
            in_use: BitMap::new(3),
            dumped: BitMap::new(3),
            new_format,
            rec,
            peeked: None,
            cur: None,
            ended: false,
        };
        r.in_use = r.read_map(TS_CLRI, "TS_CLRI (inodes in use)")?;
        r.dumped = r.read_map(TS_BITS, "TS_BITS (inodes dumped)")?;
        Ok(r)
    }

    pub fn info(&self) -> &DumpInfo {
        &self.info
    }

    /// TS_CLRI: inodes in use when the dump was made.
    pub fn in_use(&self) -> &BitMap {
        &self.in_use
    }

    /// TS_BITS: inodes on this dump.
    pub fn dumped(&self) -> &BitMap {
        &self.dumped
    }

    /// The next inode of the stream, or None after TS_END. Attribute records (§10) that
    /// [`DumpReader::xattrs`] did not read are checked and skipped.
    #[allow(clippy::should_implement_trait)] // fallible, and `piece` borrows between calls
    pub fn next(&mut self) -> Result<Option<Inode>> {
        if self.ended {
            return Ok(None);
        }
        if let Some(cur) = self.cur.take() {
            self.skip_inode(cur)?;
        }
        loop {
            let (h, at) = self.next_header()?;
            match h.c_type {
                TS_END => {
                    self.ended = true;
                    return Ok(None);
                }
                TS_INODE if h.c_flags & DR_EXTATTRIBUTES != 0 => {
                    self.xattr_record(&h, at)?;
                }
                TS_INODE => return self.start_inode(h, at).map(Some),
                TS_ADDR => {
                    return Err(self.corrupt_at(
                        at,
                        &format!(
                            "a continuation header (TS_ADDR) of inode {} without its TS_INODE",
                            h.c_inumber
                        ),
                    ));
                }
                t => {
                    return Err(self.corrupt_at(at, &format!("an unexpected header of type {t}")));
                }
            }
        }
    }

    /// The data of the current regular file, piece by piece, until None. Calling `next`
    /// without reading skips the data.
    pub fn piece(&mut self) -> Result<Option<Piece<'_>>> {
        loop {
            let Some(cur) = self.cur.as_mut() else {
                return Ok(None);
            };
            if !cur.open || cur.produced >= cur.size {
                return Ok(None);
            }
            if cur.idx < cur.count {
                let rest = cur.size - cur.produced;
                if cur.addr[cur.idx] != 0 {
                    let n = rest.min(TP_BSIZE as u64);
                    cur.idx += 1;
                    cur.produced += n;
                    self.src.read(&mut self.rec)?;
                    return Ok(Some(Piece::Data(&self.rec[..n as usize])));
                }
                // Coalesce a run of hole pieces.
                let mut len = 0u64;
                while cur.idx < cur.count && cur.addr[cur.idx] == 0 && cur.produced < cur.size {
                    let n = (cur.size - cur.produced).min(TP_BSIZE as u64);
                    len += n;
                    cur.produced += n;
                    cur.idx += 1;
                }
                return Ok(Some(Piece::Hole(len)));
            }
            // This header's pieces are used up: a TS_ADDR of the same inode continues it.
            let (ino, produced, size) = (cur.ino, cur.produced, cur.size);
            let (h, at) = self.next_header()?;
            if h.c_type == TS_ADDR && h.c_inumber == ino {
                let count = self.count_of(&h, at)?;
                if let Some(cur) = self.cur.as_mut() {
                    cur.count = count;
                    cur.addr = h.c_addr;
                    cur.idx = 0;
                }
                continue;
            }
            // restore would assume a hole here ("Missing blocks"); an import must not.
            self.peeked = Some(h);
            return Err(self.corrupt_at(
                at,
                &format!(
                    "inode {ino}: its headers describe only {produced} of its {size} bytes (missing blocks)"
                ),
            ));
        }
    }

    /// The extended attributes of the inode `next` returned last, sorted by name: reads past
    /// the rest of its data (what [`DumpReader::piece`] has not read is skipped) and every
    /// attribute record that follows it (§10). Its data cannot be read after this.
    pub fn xattrs(&mut self) -> Result<Xattrs> {
        let Some(cur) = self.cur.take() else {
            return Ok(Vec::new());
        };
        let ino = cur.ino;
        self.skip_inode(cur)?;
        let mut out = Vec::new();
        loop {
            let (h, at) = self.next_header()?;
            if h.c_type != TS_INODE || h.c_flags & DR_EXTATTRIBUTES == 0 || h.c_inumber != ino {
                self.peeked = Some(h);
                break;
            }
            out.extend(self.xattr_record(&h, at)?);
        }
        out.sort();
        if let Some(w) = out.windows(2).find(|w| w[0].0 == w[1].0) {
            let at = self.position();
            return Err(self.corrupt_at(
                at,
                &format!(
                    "inode {ino}: extended attribute {} is recorded twice",
                    String::from_utf8_lossy(&w[0].0)
                ),
            ));
        }
        Ok(out)
    }

    /// Read one attribute record whose header is `h` and decode it; records of other kinds
    /// (Mac OS Finder data) are read and give nothing, as restore skips them. Every one of its
    /// `c_count` records is read whatever `c_addr` says, as restore does (old versions of dump
    /// wrote wrong `c_addr` bytes here).
    fn xattr_record(&mut self, h: &Header, at: (PathBuf, u64)) -> Result<Xattrs> {
        let ino = h.c_inumber;
        let count = self.count_of(h, at.clone())?;
        if h.di_size > xattr::MAX_RECORD || h.di_size > (count * TP_BSIZE) as u64 {
            return Err(self.corrupt_at(
                at,
                &format!(
                    "inode {ino}: its extended-attribute record claims {} bytes in {count} records (at most {} are read)",
                    h.di_size,
                    xattr::MAX_RECORD
                ),
            ));
        }
        let size = h.di_size as usize;
        let mut rec = Vec::with_capacity(size);
        for _ in 0..count {
            self.src.read(&mut self.rec)?;
            let n = (size - rec.len()).min(TP_BSIZE);
            rec.extend_from_slice(&self.rec[..n]);
        }
        if h.c_extattributes != EXT_XATTR {
            return Ok(Vec::new());
        }
        xattr::decode(&rec).map_err(|why| {
            self.corrupt_at(
                at,
                &format!("inode {ino}: extended-attribute record: {why}"),
            )
        })
    }

    /// Current position, for messages: (volume file, record index within it of the last
    /// record read).
    fn position(&self) -> (PathBuf, u64) {
        (
            self.src.path().to_path_buf(),
            self.src.rec_in_vol.saturating_sub(1),
        )
    }

    fn corrupt_at(&self, (path, rec): (PathBuf, u64), what: &str) -> Error {
        Error::damaged(
            Damaged::Image {
                path: path.clone(),
                record: Some(rec),
            },
            format!(
                "{}: record {rec}: {what}; the image is corrupt",
                path.display()
            ),
        )
    }

    /// The next header, read ahead or from the stream; checksum verified.
    fn next_header(&mut self) -> Result<(Header, (PathBuf, u64))> {
        if let Some(h) = self.peeked.take() {
            return Ok((h, self.position()));
        }
        self.src.read(&mut self.rec)?;
        let at = self.position();
        match Header::decode(&self.rec) {
            Ok((h, swapped)) if swapped == self.src.swapped => Ok((h, at)),
            Ok(_) => Err(self.corrupt_at(at, "a header in the other byte order")),
            Err(e) => {
                let why = match e {
                    HeaderError::BadChecksum => "header checksum mismatch",
                    _ => "a header was expected here (bad magic)",
                };
                let after = match &self.cur {
                    Some(c) => format!(" (after inode {})", c.ino),
                    None => String::new(),
                };
                Err(Error::damaged(
                    Damaged::Image {
                        path: at.0.clone(),
                        record: Some(at.1),
                    },
                    format!(
                        "{}: record {}{after}: {why}: the image is corrupt; reel does not skip damaged records",
                        at.0.display(),
                        at.1
                    ),
                ))
            }
        }
    }

    fn count_of(&self, h: &Header, at: (PathBuf, u64)) -> Result<usize> {
        usize::try_from(h.c_count)
            .ok()
            .filter(|&c| c <= TP_NINDIR)
            .ok_or_else(|| {
                self.corrupt_at(
                    at,
                    &format!(
                        "inode {} has a header with c_count {}",
                        h.c_inumber, h.c_count
                    ),
                )
            })
    }

    fn cur_of(&self, h: &Header, at: (PathBuf, u64)) -> Result<Cur> {
        Ok(Cur {
            ino: h.c_inumber,
            size: h.di_size,
            produced: 0,
            count: self.count_of(h, at)?,
            addr: h.c_addr,
            idx: 0,
            open: true,
        })
    }

    /// Skip the unread data records of `cur` and the TS_ADDR headers that continue it.
    fn skip_inode(&mut self, mut cur: Cur) -> Result<()> {
        loop {
            for i in cur.idx..cur.count {
                if cur.addr[i] != 0 {
                    self.src.read(&mut self.rec)?;
                }
            }
            let (h, at) = self.next_header()?;
            if h.c_type == TS_ADDR && h.c_inumber == cur.ino {
                cur.count = self.count_of(&h, at)?;
                cur.addr = h.c_addr;
                cur.idx = 0;
            } else {
                self.peeked = Some(h);
                return Ok(());
            }
        }
    }

    fn start_inode(&mut self, h: Header, at: (PathBuf, u64)) -> Result<Inode> {
        let ino = h.c_inumber;
        let meta = h.inode_meta(self.new_format);
        let meta_only = h.c_flags & DR_METAONLY != 0;
        let mut cur = self.cur_of(&h, at.clone())?;
        if meta_only {
            cur.open = false;
        }
        let kind = match meta.mode & S_IFMT {
            S_IFREG => InodeKind::File,
            S_IFDIR => {
                if meta.size >= MAX_DIR_SIZE {
                    return Err(self.corrupt_at(
                        at,
                        &format!("directory inode {ino} claims {} bytes", meta.size),
                    ));
                }
                self.cur = Some(cur);
                let data = self.collect(ino, "directory")?;
                let entries = decode_dir(&data, self.src.swapped).map_err(|why| {
                    self.corrupt_at(at.clone(), &format!("directory inode {ino}: {why}"))
                })?;
                if entries.first().is_none_or(|e| e.ino != ino) {
                    return Err(self.corrupt_at(
                        at,
                        &format!(
                            "directory inode {ino}: its '.' entry is missing or names another inode"
                        ),
                    ));
                }
                return Ok(Inode {
                    ino,
                    meta,
                    kind: InodeKind::Dir(entries),
                    meta_only,
                });
            }
            S_IFLNK => {
                if meta.size > MAX_SYMLINK {
                    return Err(self.corrupt_at(
                        at,
                        &format!("symlink inode {ino} claims a {}-byte target", meta.size),
                    ));
                }
                self.cur = Some(cur);
                let target = self.collect(ino, "symlink")?;
                return Ok(Inode {
                    ino,
                    meta,
                    kind: InodeKind::Symlink(target),
                    meta_only,
                });
            }
            S_IFIFO | S_IFCHR | S_IFBLK | S_IFSOCK => {
                cur.open = false;
                InodeKind::Special
            }
            _ => {
                return Err(self.corrupt_at(
                    at,
                    &format!(
                        "inode {ino} has mode {:o}, of no known file type",
                        meta.mode
                    ),
                ));
            }
        };
        self.cur = Some(cur);
        Ok(Inode {
            ino,
            meta,
            kind,
            meta_only,
        })
    }

    /// Read the whole (small) content of the current directory or symlink; holes are corrupt.
    fn collect(&mut self, ino: u32, what: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(p) = self.piece()? {
            match p {
                Piece::Data(d) => out.extend_from_slice(d),
                Piece::Hole(_) => {
                    let at = self.position();
                    return Err(self.corrupt_at(at, &format!("{what} inode {ino} has a hole")));
                }
            }
        }
        if let Some(cur) = self.cur.as_mut() {
            cur.open = false;
        }
        Ok(out)
    }

    fn read_map(&mut self, c_type: i32, what: &str) -> Result<BitMap> {
        let (h, at) = self.next_header()?;
        if h.c_type != c_type {
            return Err(self.corrupt_at(
                at,
                &format!("expected the {what} map header, found type {}", h.c_type),
            ));
        }
        if !(1..=MAX_MAP_RECORDS).contains(&h.c_count) {
            return Err(
                self.corrupt_at(at, &format!("the {what} map claims {} records", h.c_count))
            );
        }
        let mut bits = Vec::with_capacity(h.c_count as usize * TP_BSIZE);
        for _ in 0..h.c_count {
            self.src.read(&mut self.rec)?;
            bits.extend_from_slice(&self.rec);
        }
        Ok(BitMap::from_bytes(bits))
    }
}

/// Every name reachable from the root through the directories in `dirs` (inode → entries as
/// [`InodeKind::Dir`] gives them) whose inode is set in `dumped`, in `restore -t` order:
/// depth first, in on-tape entry order, the root first as `(2, "")`. Paths are relative
/// (`dir/name`); a hard link appears once per name. Directories not in `dirs` (not dumped) are
/// not entered. A directory reachable twice (a loop) is corrupt.
pub fn paths(dirs: &BTreeMap<u32, Vec<DirEntry>>, dumped: &BitMap) -> Result<Vec<(u32, Vec<u8>)>> {
    if !dirs.contains_key(&ROOTINO) {
        return Err(Error::corrupt(
            "the root directory (inode 2) is not on the dump",
        ));
    }
    let mut out = vec![(ROOTINO, Vec::new())];
    let mut seen = BTreeSet::from([ROOTINO]);
    // (directory inode, its path, index of the next entry)
    let mut stack: Vec<(u32, Vec<u8>, usize)> = vec![(ROOTINO, Vec::new(), 0)];
    while let Some((dir, prefix, i)) = stack.last_mut() {
        let entries = &dirs[dir];
        let Some(e) = entries.get(*i) else {
            stack.pop();
            continue;
        };
        *i += 1;
        if e.name == b"." || e.name == b".." {
            continue;
        }
        let mut path = prefix.clone();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(&e.name);
        if !dumped.get(e.ino) {
            continue;
        }
        out.push((e.ino, path.clone()));
        if dirs.contains_key(&e.ino) {
            if !seen.insert(e.ino) {
                return Err(Error::corrupt(format!(
                    "directory inode {} is reachable by two names ({}): the dump's directories form a loop or a directory hard link",
                    e.ino,
                    String::from_utf8_lossy(&path)
                )));
            }
            stack.push((e.ino, path, 0));
        }
    }
    Ok(out)
}
