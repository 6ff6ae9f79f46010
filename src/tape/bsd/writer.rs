//! Writing a BSD dump stream that the stock `restore` reads (format notes §16, writer recipe).
//!
//! Why it is built this way: the writer streams. Each call emits one inode's headers and data
//! records straight into a one-tape-block buffer, so memory stays at one block plus one
//! directory, whatever the file sizes. Records go out in whole tape blocks (`ntrec` records),
//! which is what a tape drive needs and what `dump` does for files. The order rules restore
//! depends on (root first, all directories ascending, then all other inodes ascending, every
//! written inode marked dumped) are checked here, so a caller's mistake is an error, not a tape
//! that silently loses files. A capacity splits the stream into volumes exactly as `dump -M`
//! does (§12): a new volume starts with a TS_TAPE header that carries the number of data records
//! of the current inode still to come, and the stream continues mid-file.

use std::ffi::OsString;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use super::format::{
    BitMap, DR_EXTATTRIBUTES, DR_NEWHEADER, DR_NEWINODEFMT, DirEntry, DumpInfo, EXT_XATTR, Header,
    InodeMeta, ROOTINO, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK,
    TP_BSIZE, TP_NINDIR, TS_ADDR, TS_BITS, TS_CLRI, TS_END, TS_INODE, TS_TAPE, encode_dir,
};
use crate::error::{Error, IoContext, Result};

/// Where a dump stream goes.
#[derive(Clone, Debug)]
pub enum Target {
    /// One file or a tape device.
    File(PathBuf),
    /// `dump -M` style: `path.001`, `path.002`, … each at most `capacity` bytes (rounded down
    /// to whole tape blocks). `restore -M -f path.` reads them back.
    Split { path: PathBuf, capacity: u64 },
}

/// What `finish` wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteSummary {
    /// Bytes over all volumes.
    pub bytes: u64,
    /// 1024-byte records over all volumes (headers, data, padding).
    pub records: u64,
    /// The files written, in order.
    pub volumes: Vec<PathBuf>,
}

/// The name of volume `n` (1-based) of a split target: `path.001`.
pub fn volume_path(path: &Path, n: u32) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(format!(".{n:03}"));
    PathBuf::from(s)
}

/// Remove what a failed write left: the image file, or the volumes of a split image (only
/// regular files: a tape device is left alone). Nothing half-written may look like a tape.
pub fn remove_partial(target: &Target) {
    let paths: Vec<PathBuf> = match target {
        Target::File(p) => vec![p.clone()],
        Target::Split { path, .. } => (1..1000).map(|i| volume_path(path, i)).collect(),
    };
    for p in paths {
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// A streaming BSD dump writer; see the module documentation.
pub struct DumpWriter {
    split: Option<PathBuf>,
    /// Records per volume (a multiple of `ntrec`), when splitting.
    cap_records: Option<u64>,
    tmpl: Header,
    ntrec: usize,
    file: File,
    path: PathBuf,
    /// Records of the current tape block not yet written.
    block: Vec<u8>,
    /// Records on the current volume (written or buffered).
    vol_records: u64,
    /// Records on all volumes so far: the `c_tapea` of the next record.
    total: u64,
    volume: u32,
    volumes: Vec<PathBuf>,
    /// The last header that announced data, and how many of its data records are still to
    /// come: a volume switch copies both into the new volume's TS_TAPE (§12).
    last_header: Header,
    pending_data: u32,
    maxino: u32,
    dumped: BitMap,
    in_use: BitMap,
    /// True once the first non-directory is written (no directory may follow).
    files_phase: bool,
    /// Last inode written in the current phase (ascending order is required).
    last_ino: u32,
    /// Inodes written so far.
    written: BitMap,
}

impl DumpWriter {
    /// Writes TS_TAPE, TS_CLRI (inodes in use) and TS_BITS (inodes dumped). `maxino` is the
    /// highest inode number + 1; every inode written must be set in `dumped` (and `in_use`).
    pub fn create(
        target: Target,
        info: DumpInfo,
        maxino: u32,
        in_use: &BitMap,
        dumped: &BitMap,
    ) -> Result<DumpWriter> {
        if info.ntrec == 0 || info.ntrec > 1024 {
            return Err(Error::usage(format!(
                "tape blocking factor {} is out of range (1 to 1024 records of 1 KiB)",
                info.ntrec
            )));
        }
        if maxino <= ROOTINO {
            return Err(Error::usage(format!(
                "maxino {maxino} leaves no room for the root inode 2"
            )));
        }
        let ntrec = info.ntrec as usize;
        let (split, cap_records, path) = match target {
            Target::File(p) => (None, None, p),
            Target::Split { path, capacity } => {
                let block = (ntrec * TP_BSIZE) as u64;
                let cap = capacity / block * info.ntrec as u64;
                if cap < 2 * info.ntrec as u64 {
                    return Err(Error::usage(format!(
                        "tape capacity {capacity} bytes is too small: give at least two tape blocks ({} bytes)",
                        2 * block
                    )));
                }
                let first = volume_path(&path, 1);
                (Some(path), Some(cap), first)
            }
        };
        // Both maps are written with the size maxino gives; TS_BITS must not be longer than
        // TS_CLRI (restore takes its inode limit from TS_CLRI).
        let mut used = BitMap::new(maxino);
        let mut dmp = BitMap::new(maxino);
        for ino in in_use.iter().filter(|&i| i < maxino) {
            used.set(ino);
        }
        for ino in dumped.iter() {
            if ino >= maxino {
                return Err(Error::usage(format!(
                    "inode {ino} is marked dumped but maxino is {maxino}"
                )));
            }
            dmp.set(ino);
            used.set(ino); // a dumped inode is in use, whatever the caller's map says
        }
        if !dmp.get(ROOTINO) {
            return Err(Error::usage(
                "the root directory (inode 2) must be dumped: restore cannot read a dump without it",
            ));
        }
        let mut tmpl = Header::template(&info)?;
        tmpl.c_volume = 1;
        let file = open_out(&path)?;
        let mut w = DumpWriter {
            split,
            cap_records,
            tmpl: tmpl.clone(),
            ntrec,
            file,
            path: path.clone(),
            block: Vec::with_capacity(ntrec * TP_BSIZE),
            vol_records: 0,
            total: 0,
            volume: 1,
            volumes: vec![path],
            last_header: tmpl.clone(),
            pending_data: 0,
            maxino,
            dumped: dmp,
            in_use: used,
            files_phase: false,
            last_ino: 0,
            written: BitMap::new(maxino),
        };
        let mut tape = tmpl.clone();
        tape.c_type = TS_TAPE;
        tape.c_flags = DR_NEWHEADER | DR_NEWINODEFMT;
        tape.c_count = 1;
        w.header(tape, 0)?;
        let in_use = w.in_use.clone();
        let dumped = w.dumped.clone();
        w.map(TS_CLRI, maxino - 1, &in_use)?;
        w.map(TS_BITS, ROOTINO, &dumped)?;
        Ok(w)
    }

    /// A directory (all directories first, ascending inode; the root is 2). `entries`
    /// excludes "." and ".."; the writer adds them (`parent` = ino of "..", 2 for the root).
    pub fn dir(
        &mut self,
        ino: u32,
        parent: u32,
        meta: &InodeMeta,
        entries: &[DirEntry],
    ) -> Result<()> {
        if self.files_phase {
            return Err(Error::usage(format!(
                "directory inode {ino} comes after a non-directory: write all directories first"
            )));
        }
        if self.last_ino == 0 && ino != ROOTINO {
            return Err(Error::usage(format!(
                "the first directory must be the root (inode 2), not inode {ino}"
            )));
        }
        self.check_inode(ino, meta, S_IFDIR, "a directory")?;
        for e in entries.iter().map(|e| e.ino).chain([parent]) {
            if e == 0 || e >= self.maxino {
                return Err(Error::usage(format!(
                    "directory inode {ino} names inode {e}, outside 1..{}",
                    self.maxino
                )));
            }
        }
        let data = encode_dir(ino, parent, entries)?;
        let mut meta = *meta;
        meta.size = data.len() as u64;
        let mut at = 0usize;
        self.inode(ino, &meta, &|_| false, &mut |_, rec| {
            let n = (data.len() - at).min(TP_BSIZE);
            rec[..n].copy_from_slice(&data[at..at + n]);
            at += n;
            Ok(())
        })
    }

    /// A regular file, `meta.size` bytes read from `data`; `holes`: ranges (offset, len) that
    /// are holes (zero, not stored; empty for a dense file) — `data` yields the bytes of the
    /// non-hole ranges only, in order. A 1 KiB piece wholly inside holes is written as a hole;
    /// the hole part of a partly-hole piece is written as zeros.
    pub fn file(
        &mut self,
        ino: u32,
        meta: &InodeMeta,
        data: &mut dyn Read,
        holes: &[(u64, u64)],
    ) -> Result<()> {
        self.enter_files_phase(ino)?;
        self.check_inode(ino, meta, S_IFREG, "a regular file")?;
        let holes = normalise_holes(ino, holes, meta.size)?;
        let size = meta.size;
        // Piece k is a hole iff one merged hole covers it entirely.
        let is_hole = |k: u64| {
            let (s, e) = (k * TP_BSIZE as u64, ((k + 1) * TP_BSIZE as u64).min(size));
            let i = holes.partition_point(|h| h.1 <= s);
            holes.get(i).is_some_and(|h| h.0 <= s && h.1 >= e)
        };
        let mut hi = 0usize; // cursor into holes, advancing with the pieces
        self.inode(ino, meta, &is_hole, &mut |k, rec| {
            let (s, e) = (k * TP_BSIZE as u64, ((k + 1) * TP_BSIZE as u64).min(size));
            let mut pos = s;
            while pos < e {
                while holes.get(hi).is_some_and(|h| h.1 <= pos) {
                    hi += 1;
                }
                let (end, hole) = match holes.get(hi) {
                    Some(h) if h.0 <= pos => (h.1.min(e), true),
                    Some(h) => (h.0.min(e), false),
                    None => (e, false),
                };
                let r = &mut rec[(pos - s) as usize..(end - s) as usize];
                if hole {
                    r.fill(0);
                } else {
                    read_data(ino, data, r, pos, size)?;
                }
                pos = end;
            }
            Ok(())
        })?;
        let mut extra = [0u8; 1];
        loop {
            match data.read(&mut extra) {
                Ok(0) => return Ok(()),
                Ok(_) => {
                    return Err(Error::usage(format!(
                        "inode {ino}: the data source yields more than the file's {size} bytes (the file changed while it was written?)"
                    )));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(data_error(ino, e)),
            }
        }
    }

    pub fn symlink(&mut self, ino: u32, meta: &InodeMeta, target: &[u8]) -> Result<()> {
        self.enter_files_phase(ino)?;
        self.check_inode(ino, meta, S_IFLNK, "a symlink")?;
        if target.is_empty() || target.len() > 4096 || target.contains(&0) {
            return Err(Error::usage(format!(
                "symlink inode {ino}: its target must be 1 to 4096 bytes without NUL (restore drops or refuses others)"
            )));
        }
        let mut meta = *meta;
        meta.size = target.len() as u64;
        self.inode(ino, &meta, &|_| false, &mut |k, rec| {
            let s = k as usize * TP_BSIZE;
            let n = (target.len() - s).min(TP_BSIZE);
            rec[..n].copy_from_slice(&target[s..s + n]);
            Ok(())
        })
    }

    /// FIFO, socket, char/block device (rdev in meta).
    pub fn special(&mut self, ino: u32, meta: &InodeMeta) -> Result<()> {
        self.enter_files_phase(ino)?;
        let kind = meta.mode & S_IFMT;
        if ![S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK].contains(&kind) {
            return Err(Error::usage(format!(
                "inode {ino}: mode {:o} is not a FIFO, socket or device",
                meta.mode
            )));
        }
        self.check_inode(ino, meta, kind, "a special file")?;
        let mut meta = *meta;
        meta.size = 0;
        self.inode(ino, &meta, &|_| false, &mut |_, _| Ok(()))
    }

    /// The extended attributes of the inode written last, as attribute records right after its
    /// own (§10): `records` as [`super::xattr::encode`] makes them, `meta` the inode's.
    pub fn xattrs(&mut self, ino: u32, meta: &InodeMeta, records: &[Vec<u8>]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if ino != self.last_ino || !self.written.get(ino) {
            return Err(Error::usage(format!(
                "the extended attributes of inode {ino} must follow its own records (the inode written last is {})",
                self.last_ino
            )));
        }
        for rec in records {
            let n = rec.len() / TP_BSIZE;
            if rec.is_empty() || !rec.len().is_multiple_of(TP_BSIZE) || n > TP_NINDIR {
                return Err(Error::usage(format!(
                    "inode {ino}: an attribute record of {} bytes is not a whole number of records",
                    rec.len()
                )));
            }
            let mut h = self.tmpl.clone();
            h.set_inode(ino, meta)?;
            h.c_type = TS_INODE;
            h.di_size = rec.len() as u64;
            h.c_flags |= DR_EXTATTRIBUTES;
            h.c_extattributes = EXT_XATTR;
            h.c_count = n as i32;
            h.c_addr[..n].fill(1);
            self.header(h, n as u32)?;
            for r in rec.chunks_exact(TP_BSIZE) {
                self.data(r)?;
            }
        }
        Ok(())
    }

    /// TS_END, padding to whole tape blocks, fsync; returns what was written.
    pub fn finish(mut self) -> Result<WriteSummary> {
        if self.written.count() != self.dumped.count() {
            let missing = self
                .dumped
                .iter()
                .find(|&i| !self.was_written(i))
                .unwrap_or(0);
            return Err(Error::usage(format!(
                "{} inode(s) marked dumped were never written (first: inode {missing}); restore would miss them",
                self.dumped.count() - self.written.count()
            )));
        }
        let mut end = self.tmpl.clone();
        end.c_type = TS_END;
        self.header(end.clone(), 0)?;
        while !self.vol_records.is_multiple_of(self.ntrec as u64) {
            self.header(end.clone(), 0)?;
        }
        self.flush_block()?;
        sync(&self.file, &self.path)?;
        Ok(WriteSummary {
            bytes: self.total * TP_BSIZE as u64,
            records: self.total,
            volumes: self.volumes,
        })
    }

    fn was_written(&self, ino: u32) -> bool {
        self.written.get(ino)
    }

    fn enter_files_phase(&mut self, ino: u32) -> Result<()> {
        if self.last_ino == 0 && !self.files_phase {
            return Err(Error::usage(format!(
                "inode {ino} comes before the root directory: write the directories first, starting with inode 2"
            )));
        }
        if !self.files_phase {
            self.files_phase = true;
            self.last_ino = 0;
        }
        Ok(())
    }

    fn check_inode(&mut self, ino: u32, meta: &InodeMeta, kind: u32, what: &str) -> Result<()> {
        if meta.mode & S_IFMT != kind {
            return Err(Error::usage(format!(
                "inode {ino}: mode {:o} is not {what}",
                meta.mode
            )));
        }
        if ino <= self.last_ino {
            return Err(Error::usage(format!(
                "inode {ino} written after inode {}: inodes must be written in ascending order (directories first)",
                self.last_ino
            )));
        }
        if !self.dumped.get(ino) {
            return Err(Error::usage(format!(
                "inode {ino} is not marked dumped (or is not below maxino {}): restore would not list it",
                self.maxino
            )));
        }
        self.last_ino = ino;
        self.written.set(ino);
        Ok(())
    }

    /// One inode: TS_INODE then TS_ADDR headers of at most 512 pieces each, each followed by
    /// the data records of its non-hole pieces, which `fill(piece, record)` produces.
    fn inode(
        &mut self,
        ino: u32,
        meta: &InodeMeta,
        is_hole: &dyn Fn(u64) -> bool,
        fill: &mut dyn FnMut(u64, &mut [u8; TP_BSIZE]) -> Result<()>,
    ) -> Result<()> {
        let mut h = self.tmpl.clone();
        h.set_inode(ino, meta)?;
        let pieces = meta.size.div_ceil(TP_BSIZE as u64);
        let mut k = 0u64;
        let mut first = true;
        let mut rec = [0u8; TP_BSIZE];
        while first || k < pieces {
            let n = (pieces - k).min(TP_NINDIR as u64) as usize;
            h.c_type = if first { TS_INODE } else { TS_ADDR };
            h.c_count = n as i32;
            h.c_addr = [0; TP_NINDIR];
            let mut present = 0u32;
            for i in 0..n {
                if !is_hole(k + i as u64) {
                    h.c_addr[i] = 1;
                    present += 1;
                }
            }
            self.header(h.clone(), present)?;
            for i in 0..n {
                if h.c_addr[i] != 0 {
                    rec.fill(0);
                    fill(k + i as u64, &mut rec)?;
                    self.data(&rec)?;
                }
            }
            k += n as u64;
            first = false;
        }
        Ok(())
    }

    fn map(&mut self, c_type: i32, inumber: u32, map: &BitMap) -> Result<()> {
        let mut h = self.tmpl.clone();
        h.c_type = c_type;
        h.c_inumber = inumber;
        h.c_count = map.records() as i32;
        h.di_size = map.bytes().len() as u64;
        // c_addr stays zero: restore increments these bytes (§5).
        self.header(h, map.records() as u32)?;
        for rec in map.bytes().chunks_exact(TP_BSIZE) {
            self.data(rec)?;
        }
        Ok(())
    }

    /// Write a header that `data_records` data records will follow.
    fn header(&mut self, mut h: Header, data_records: u32) -> Result<()> {
        self.make_room()?;
        h.c_volume = self.volume as i32;
        h.c_tapea = self.total as u32;
        let rec = h.encode();
        self.put(&rec)?;
        self.last_header = h;
        self.pending_data = data_records;
        Ok(())
    }

    fn data(&mut self, rec: &[u8]) -> Result<()> {
        self.make_room()?;
        self.put(rec)?;
        self.pending_data = self.pending_data.saturating_sub(1);
        Ok(())
    }

    fn put(&mut self, rec: &[u8]) -> Result<()> {
        self.block.extend_from_slice(rec);
        self.vol_records += 1;
        self.total += 1;
        if self.block.len() == self.ntrec * TP_BSIZE {
            self.flush_block()?;
        }
        Ok(())
    }

    fn flush_block(&mut self) -> Result<()> {
        if !self.block.is_empty() {
            self.file.write_all(&self.block).at(&self.path)?;
            self.block.clear();
        }
        Ok(())
    }

    /// Start the next volume when the current one is full (§12).
    fn make_room(&mut self) -> Result<()> {
        let (Some(cap), Some(base)) = (self.cap_records, self.split.clone()) else {
            return Ok(());
        };
        if self.vol_records < cap {
            return Ok(());
        }
        // cap is a multiple of ntrec, so the block was just flushed.
        self.flush_block()?;
        sync(&self.file, &self.path)?;
        self.volume += 1;
        self.path = volume_path(&base, self.volume);
        self.file = open_out(&self.path)?;
        self.volumes.push(self.path.clone());
        self.vol_records = 0;
        self.tmpl.c_volume = self.volume as i32;
        let mut tape = self.last_header.clone();
        tape.c_type = TS_TAPE;
        tape.c_volume = self.volume as i32;
        tape.c_flags = DR_NEWHEADER | DR_NEWINODEFMT;
        tape.c_tapea = self.total as u32;
        tape.c_firstrec = self.total as i32;
        tape.c_count = self.pending_data as i32;
        let rec = tape.encode();
        self.put(&rec)
    }
}

/// An image file is the spool's data: created 0600 (a file that was there is made so before it
/// is written); a tape device is written as it is.
fn open_out(path: &Path) -> Result<File> {
    crate::fsutil::create_file(path).at(path)
}

/// fsync a regular file; a tape device has nothing to sync.
fn sync(file: &File, path: &Path) -> Result<()> {
    if file.metadata().at(path)?.is_file() {
        file.sync_all().at(path)?;
    }
    Ok(())
}

fn data_error(ino: u32, e: std::io::Error) -> Error {
    Error::io(format!("<data of inode {ino}>"), e)
}

fn read_data(ino: u32, data: &mut dyn Read, buf: &mut [u8], pos: u64, size: u64) -> Result<()> {
    data.read_exact(buf).map_err(|e| {
        if e.kind() == ErrorKind::UnexpectedEof {
            Error::usage(format!(
                "inode {ino}: the data source ended near byte {pos} of {size} (the file shrank while it was written?)"
            ))
        } else {
            data_error(ino, e)
        }
    })
}

/// Sort, check and merge hole ranges into `(start, end)` pairs within `0..size`.
fn normalise_holes(ino: u32, holes: &[(u64, u64)], size: u64) -> Result<Vec<(u64, u64)>> {
    let mut v: Vec<(u64, u64)> = Vec::with_capacity(holes.len());
    for &(off, len) in holes {
        let end = off.checked_add(len).filter(|&e| e <= size).ok_or_else(|| {
            Error::usage(format!(
                "inode {ino}: hole ({off}, {len}) reaches past the file size {size}"
            ))
        })?;
        if len > 0 {
            v.push((off, end));
        }
    }
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s < last.1 => {
                return Err(Error::usage(format!(
                    "inode {ino}: holes overlap at byte {s}"
                )));
            }
            Some(last) if s == last.1 => last.1 = e,
            _ => out.push((s, e)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::format::{DT_REG, TS_TAPE};
    use super::super::reader::{DumpReader, InodeKind, Piece};
    use super::super::xattr;
    use super::*;

    fn info() -> DumpInfo {
        DumpInfo {
            date: 1_700_000_000,
            ..DumpInfo::default()
        }
    }

    fn dir_meta() -> InodeMeta {
        InodeMeta {
            mode: S_IFDIR | 0o755,
            mtime_ns: 1_600_000_000_123_456_000,
            ..InodeMeta::default()
        }
    }

    fn file_meta(size: u64) -> InodeMeta {
        InodeMeta {
            mode: S_IFREG | 0o600,
            size,
            uid: 70000,
            ..dir_meta()
        }
    }

    fn maps(inos: &[u32], maxino: u32) -> BitMap {
        let mut m = BitMap::new(maxino);
        for &i in inos {
            m.set(i);
        }
        m
    }

    fn entry(name: &str, ino: u32) -> DirEntry {
        DirEntry {
            name: name.as_bytes().to_vec(),
            ino,
            dtype: DT_REG,
        }
    }

    /// Content with no all-zero KiB.
    fn content(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8 | 1).collect()
    }

    /// All pieces of the current file, holes as zeros; and the hole byte count.
    fn slurp(r: &mut DumpReader) -> (Vec<u8>, u64) {
        let (mut out, mut holes) = (Vec::new(), 0);
        while let Some(p) = r.piece().unwrap() {
            match p {
                Piece::Data(d) => out.extend_from_slice(d),
                Piece::Hole(n) => {
                    holes += n;
                    out.resize(out.len() + n as usize, 0);
                }
            }
        }
        (out, holes)
    }

    #[test]
    fn sparse_and_multi_header_files_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("a.dump");
        let all = maps(&[2, 3, 4, 5], 6);
        let mut w = DumpWriter::create(Target::File(img.clone()), info(), 6, &all, &all).unwrap();
        w.dir(
            2,
            2,
            &dir_meta(),
            &[entry("big", 3), entry("sparse", 4), entry("empty", 5)],
        )
        .unwrap();
        // 700 KiB + 10 bytes: a TS_INODE of 512 pieces and a TS_ADDR.
        let big = content(700 * 1024 + 10);
        w.file(3, &file_meta(big.len() as u64), &mut &big[..], &[])
            .unwrap();
        // Holes: [0, 3000) (pieces 0-1 whole holes, piece 2 partly), [600 KiB, end).
        let size = 1 << 20;
        let mut sparse = vec![0u8; size];
        sparse[3000..600 * 1024].copy_from_slice(&content(600 * 1024 - 3000));
        let data = sparse[3000..600 * 1024].to_vec();
        let holes = [(0, 3000), (600 * 1024, size as u64 - 600 * 1024)];
        w.file(4, &file_meta(size as u64), &mut &data[..], &holes)
            .unwrap();
        w.file(5, &file_meta(0), &mut &b""[..], &[]).unwrap();
        let sum = w.finish().unwrap();
        assert_eq!(sum.records % 10, 0);

        let mut r = DumpReader::open(&[img]).unwrap();
        let root = r.next().unwrap().unwrap();
        let InodeKind::Dir(entries) = root.kind else {
            panic!("root is not a directory")
        };
        assert_eq!(entries.len(), 5);
        assert_eq!(root.meta.mtime_ns, 1_600_000_000_123_456_000);
        let f = r.next().unwrap().unwrap();
        assert_eq!(
            (f.ino, f.meta.uid, f.meta.size),
            (3, 70000, big.len() as u64)
        );
        assert_eq!(slurp(&mut r), (big, 0));
        let s = r.next().unwrap().unwrap();
        assert_eq!(s.ino, 4);
        let (got, hole_bytes) = slurp(&mut r);
        assert_eq!(got, sparse);
        assert_eq!(hole_bytes, 2048 + (size as u64 - 600 * 1024));
        let e = r.next().unwrap().unwrap();
        assert_eq!((e.ino, slurp(&mut r)), (5, (Vec::new(), 0)));
        assert!(r.next().unwrap().is_none());
        assert!(r.next().unwrap().is_none());
    }

    #[test]
    fn next_without_reading_skips_data() {
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("skip.dump");
        let all = maps(&[2, 3, 4, 5], 6);
        let mut w = DumpWriter::create(Target::File(img.clone()), info(), 6, &all, &all).unwrap();
        w.dir(
            2,
            2,
            &dir_meta(),
            &[entry("a", 3), entry("l", 4), entry("f", 5)],
        )
        .unwrap();
        let a = content(600 * 1024);
        w.file(3, &file_meta(a.len() as u64), &mut &a[..], &[])
            .unwrap();
        let lmeta = InodeMeta {
            mode: S_IFLNK | 0o777,
            ..dir_meta()
        };
        w.symlink(4, &lmeta, b"../target").unwrap();
        let fifo = InodeMeta {
            mode: S_IFIFO | 0o640,
            ..dir_meta()
        };
        w.special(5, &fifo).unwrap();
        w.finish().unwrap();
        let mut r = DumpReader::open(&[img]).unwrap();
        let mut seen = Vec::new();
        while let Some(i) = r.next().unwrap() {
            seen.push((i.ino, i.kind));
        }
        assert_eq!(seen[1], (3, InodeKind::File));
        assert_eq!(seen[2], (4, InodeKind::Symlink(b"../target".to_vec())));
        assert_eq!(seen[3], (5, InodeKind::Special));
    }

    /// An image with a root directory and one file (inode 3), both with attributes.
    fn image_with_xattrs(img: &Path, file_attrs: &[(Vec<u8>, Vec<u8>)]) {
        let all = maps(&[2, 3], 4);
        let mut w =
            DumpWriter::create(Target::File(img.to_path_buf()), info(), 4, &all, &all).unwrap();
        w.dir(2, 2, &dir_meta(), &[entry("f", 3)]).unwrap();
        let dir_attrs = [(b"user.dir".to_vec(), b"d".to_vec())];
        w.xattrs(2, &dir_meta(), &xattr::encode(&dir_attrs).unwrap())
            .unwrap();
        let f = content(1500);
        let meta = file_meta(1500);
        w.file(3, &meta, &mut &f[..], &[]).unwrap();
        w.xattrs(3, &meta, &xattr::encode(file_attrs).unwrap())
            .unwrap();
        w.finish().unwrap();
    }

    #[test]
    fn xattrs_round_trip_and_unread_ones_are_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("x.dump");
        let mut attrs = vec![
            (b"user.a".to_vec(), b"1".to_vec()),
            (b"user.b".to_vec(), vec![0, 255]),
            (b"user.long".to_vec(), vec![b'v'; 3000]),
            (b"user.long2".to_vec(), vec![b'w'; 3000]),
        ];
        attrs.sort();
        image_with_xattrs(&img, &attrs);
        let mut r = DumpReader::open(std::slice::from_ref(&img)).unwrap();
        r.next().unwrap().unwrap();
        assert_eq!(
            r.xattrs().unwrap(),
            vec![(b"user.dir".to_vec(), b"d".to_vec())]
        );
        let f = r.next().unwrap().unwrap();
        assert_eq!(f.ino, 3);
        // Half the data read: the rest is skipped on the way to the attributes.
        assert!(matches!(r.piece().unwrap(), Some(Piece::Data(_))));
        assert_eq!(r.xattrs().unwrap(), attrs);
        assert!(r.piece().unwrap().is_none());
        assert!(r.next().unwrap().is_none());
        // A reader that never asks sees the same inodes.
        let mut r = DumpReader::open(&[img]).unwrap();
        let mut inos = Vec::new();
        while let Some(i) = r.next().unwrap() {
            inos.push(i.ino);
        }
        assert_eq!(inos, vec![2, 3]);
    }

    #[test]
    fn malformed_or_oversized_xattr_records_are_refused_by_image_and_inode() {
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("x.dump");
        image_with_xattrs(&img, &[(b"user.c".to_vec(), b"v".to_vec())]);
        let bytes = std::fs::read(&img).unwrap();
        // The file's attribute header: the second record with DR_EXTATTRIBUTES.
        let at = bytes
            .chunks_exact(TP_BSIZE)
            .enumerate()
            .filter(|(_, r)| {
                Header::decode((*r).try_into().unwrap())
                    .is_ok_and(|(h, _)| h.c_flags & DR_EXTATTRIBUTES != 0)
            })
            .map(|(i, _)| i)
            .nth(1)
            .unwrap();
        let err_of = |patched: &[u8]| {
            let p = tmp.path().join("patched.dump");
            std::fs::write(&p, patched).unwrap();
            let mut r = DumpReader::open(&[p]).unwrap();
            let e = loop {
                match r.next() {
                    Ok(Some(_)) => match r.xattrs() {
                        Ok(_) => {}
                        Err(e) => break e,
                    },
                    Ok(None) => panic!("the patched image was read without an error"),
                    Err(e) => break e,
                }
            };
            e.to_string()
        };
        // A value size far past the record.
        let mut bad = bytes.clone();
        let data = (at + 1) * TP_BSIZE;
        bad[data + 32 + 8..data + 32 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = err_of(&bad);
        assert!(
            err.contains("patched.dump") && err.contains("inode 3") && err.contains("lies outside"),
            "{err}"
        );
        // A record that claims 1 GiB: refused before anything is allocated.
        let mut big = bytes.clone();
        let hdr: &mut [u8; TP_BSIZE] = (&mut big[at * TP_BSIZE..(at + 1) * TP_BSIZE])
            .try_into()
            .unwrap();
        let (mut h, _) = Header::decode(hdr).unwrap();
        h.di_size = 1 << 30;
        *hdr = h.encode();
        let err = err_of(&big);
        assert!(
            err.contains("patched.dump")
                && err.contains("inode 3")
                && err.contains("claims 1073741824 bytes"),
            "{err}"
        );
    }

    #[test]
    fn split_volumes_continue_mid_file() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("v");
        let all = maps(&[2, 3], 4);
        let target = Target::Split {
            path: base.clone(),
            capacity: 20 * 1024 + 500, // rounded down to two 10-record blocks
        };
        let mut w = DumpWriter::create(target, info(), 4, &all, &all).unwrap();
        w.dir(2, 2, &dir_meta(), &[entry("f", 3)]).unwrap();
        let f = content(40_000);
        w.file(3, &file_meta(40_000), &mut &f[..], &[]).unwrap();
        let sum = w.finish().unwrap();
        // TS_TAPE, CLRI+1, BITS+1, dir+1, file header: 8 records, then 40 data records:
        // 12 on volume 1, 19 on volume 2 (after its TS_TAPE), 9 and TS_END on volume 3.
        assert_eq!(sum.volumes.len(), 3);
        let vol2 = std::fs::read(&sum.volumes[1]).unwrap();
        assert_eq!(vol2.len(), 20 * 1024);
        let rec: [u8; TP_BSIZE] = vol2[..TP_BSIZE].try_into().unwrap();
        let (h, _) = Header::decode(&rec).unwrap();
        assert_eq!((h.c_type, h.c_volume, h.c_inumber), (TS_TAPE, 2, 3));
        assert_eq!((h.c_tapea, h.c_firstrec, h.c_count), (20, 20, 40 - 12));
        let vol3 = std::fs::read(&sum.volumes[2]).unwrap();
        let rec: [u8; TP_BSIZE] = vol3[..TP_BSIZE].try_into().unwrap();
        let (h, _) = Header::decode(&rec).unwrap();
        assert_eq!((h.c_volume, h.c_tapea, h.c_count), (3, 40, 9));
        let mut r = DumpReader::open(&sum.volumes).unwrap();
        r.next().unwrap();
        r.next().unwrap();
        assert_eq!(slurp(&mut r).0, f);
        assert!(r.next().unwrap().is_none());
    }

    #[test]
    fn order_and_contract_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("bad.dump");
        let all = maps(&[2, 3, 4], 5);
        let new = || DumpWriter::create(Target::File(img.clone()), info(), 5, &all, &all).unwrap();
        let msg = |r: Result<()>| r.unwrap_err().to_string();

        let mut w = new();
        assert!(msg(w.file(3, &file_meta(0), &mut &b""[..], &[])).contains("before the root"));
        let mut w = new();
        assert!(msg(w.dir(4, 2, &dir_meta(), &[])).contains("first directory must be the root"));
        let mut w = new();
        w.dir(2, 2, &dir_meta(), &[entry("x", 3), entry("y", 4)])
            .unwrap();
        w.file(4, &file_meta(0), &mut &b""[..], &[]).unwrap();
        assert!(msg(w.file(3, &file_meta(0), &mut &b""[..], &[])).contains("ascending"));
        assert!(msg(w.dir(3, 2, &dir_meta(), &[])).contains("all directories first"));
        assert!(
            w.finish()
                .unwrap_err()
                .to_string()
                .contains("never written (first: inode 3)")
        );

        let mut w = new();
        w.dir(2, 2, &dir_meta(), &[]).unwrap();
        assert!(
            msg(w.file(3, &file_meta(10), &mut &b"short"[..], &[])).contains("ended near byte")
        );
        let mut w = new();
        w.dir(2, 2, &dir_meta(), &[]).unwrap();
        assert!(msg(w.file(3, &file_meta(2), &mut &b"long"[..], &[])).contains("more than"));
        let mut w = new();
        w.dir(2, 2, &dir_meta(), &[]).unwrap();
        let holes = [(0, 5), (3, 4)];
        assert!(msg(w.file(3, &file_meta(10), &mut &b""[..], &holes)).contains("overlap"));
        let mut w = new();
        assert!(msg(w.dir(2, 2, &dir_meta(), &[entry("z", 9)])).contains("outside"));
        let not_dumped = maps(&[2], 5);
        let mut w =
            DumpWriter::create(Target::File(img.clone()), info(), 5, &all, &not_dumped).unwrap();
        w.dir(2, 2, &dir_meta(), &[]).unwrap();
        assert!(msg(w.file(3, &file_meta(0), &mut &b""[..], &[])).contains("not marked dumped"));
        let none = maps(&[], 5);
        assert!(DumpWriter::create(Target::File(img.clone()), info(), 5, &all, &none).is_err());
        let tiny = Target::Split {
            path: img.clone(),
            capacity: 15_000,
        };
        assert!(DumpWriter::create(tiny, info(), 5, &all, &all).is_err());
    }
}
