//! The BSD dump on-tape structures: the 1024-byte header record, its checksum, the inode
//! bitmaps and the 4.4BSD directory stream (docs/BSD-DUMP.md, §2–§8).
//!
//! Why it is built this way: the header is decoded into a plain struct (not read in place), so
//! the writer and the reader share one explicit little-endian encoder/decoder and every field
//! is named once. Reading also accepts byte-swapped (big-endian) images, as restore does, by
//! decoding every integer through one `swapped` switch; text and `c_addr` are byte arrays and
//! never swapped. No I/O happens here.

use crate::error::{Error, Result};

/// Size of every record, header or data (`TP_BSIZE`).
pub const TP_BSIZE: usize = 1024;
/// Pieces (1 KiB each) one TS_INODE/TS_ADDR header can describe (`TP_NINDIR`).
pub const TP_NINDIR: usize = 512;
/// Magic of the "new" 4.4BSD format (`NFS_MAGIC`).
pub const NFS_MAGIC: i32 = 60012;
/// Magic of the old 4.2/4.3BSD format: recognised, not supported.
pub const OFS_MAGIC: i32 = 60011;
/// Magic of FreeBSD UFS2 dumps: recognised, not supported.
pub const FS_UFS2_MAGIC: i32 = 0x1954_0119;
/// The 256 header words must sum to this (mod 2³²).
pub const CHECKSUM: i32 = 84446;
/// Root directory inode.
pub const ROOTINO: u32 = 2;
/// Directory entries never cross a boundary of this many bytes.
pub const DIRBLKSIZ: usize = 512;
/// Default tape blocking factor (records per tape block).
pub const DEFAULT_NTREC: u32 = 10;

pub const TS_TAPE: i32 = 1;
pub const TS_INODE: i32 = 2;
pub const TS_BITS: i32 = 3;
pub const TS_ADDR: i32 = 4;
pub const TS_END: i32 = 5;
pub const TS_CLRI: i32 = 6;

pub const DR_NEWHEADER: i32 = 0x0001;
pub const DR_NEWINODEFMT: i32 = 0x0002;
pub const DR_COMPRESSED: i32 = 0x0080;
pub const DR_METAONLY: i32 = 0x0100;
pub const DR_EXTATTRIBUTES: i32 = 0x8000;
/// `c_extattributes` of a record holding Linux extended attributes (§10).
pub const EXT_XATTR: i32 = 3;

/// File type bits of `st_mode`.
pub const S_IFMT: u32 = 0o170000;
pub const S_IFIFO: u32 = 0o010000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFBLK: u32 = 0o060000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFSOCK: u32 = 0o140000;

/// Directory entry types (`d_type`).
pub const DT_UNKNOWN: u8 = 0;
pub const DT_FIFO: u8 = 1;
pub const DT_CHR: u8 = 2;
pub const DT_DIR: u8 = 4;
pub const DT_BLK: u8 = 6;
pub const DT_REG: u8 = 8;
pub const DT_LNK: u8 = 10;
pub const DT_SOCK: u8 = 12;

/// The `d_type` that goes with a full `st_mode`.
pub fn dtype_of_mode(mode: u32) -> u8 {
    match mode & S_IFMT {
        S_IFIFO => DT_FIFO,
        S_IFCHR => DT_CHR,
        S_IFDIR => DT_DIR,
        S_IFBLK => DT_BLK,
        S_IFREG => DT_REG,
        S_IFLNK => DT_LNK,
        S_IFSOCK => DT_SOCK,
        _ => DT_UNKNOWN,
    }
}

/// Dump-level information of a stream (TS_TAPE header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpInfo {
    pub level: u8,
    /// `c_date`: when the dump was made, Unix seconds (signed 32-bit on tape).
    pub date: i64,
    /// `c_ddate`: `c_date` of the dump this one is based on; 0 for a level 0.
    pub ddate: i64,
    pub label: String,
    pub host: String,
    pub filesys: String,
    pub dev: String,
    /// Records per tape block (default 10).
    pub ntrec: u32,
}

impl Default for DumpInfo {
    fn default() -> Self {
        DumpInfo {
            level: 0,
            date: 0,
            ddate: 0,
            label: "none".into(),
            host: String::new(),
            filesys: "an unlisted file system".into(),
            dev: String::new(),
            ntrec: DEFAULT_NTREC,
        }
    }
}

/// Inode metadata as a header carries it. `mode` is the full st_mode (type bits included).
/// Times are stored with microsecond precision; nanoseconds below that are dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct InodeMeta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    pub atime_ns: i64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    /// Linux user-space `dev_t` (as `libc::makedev` builds it) for devices, else 0.
    pub rdev: u64,
}

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub ino: u32,
    pub dtype: u8,
}

/// An inode bitmap (TS_CLRI: in use; TS_BITS: dumped). Bit for inode `i` is byte `(i-1)/8`,
/// bit `(i-1)%8`, LSB first. Inode 0 has no bit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BitMap {
    maxino: u32,
    bits: Vec<u8>,
}

impl BitMap {
    /// A map for inodes `1..maxino`, sized in whole records as it is written on tape.
    pub fn new(maxino: u32) -> BitMap {
        let bytes = (maxino as usize).div_ceil(8).div_ceil(TP_BSIZE).max(1) * TP_BSIZE;
        BitMap {
            maxino,
            bits: vec![0; bytes],
        }
    }

    /// A map read from tape: `bytes` is a whole number of records.
    pub fn from_bytes(bits: Vec<u8>) -> BitMap {
        let maxino =
            u32::try_from(bits.len().saturating_mul(8).saturating_add(1)).unwrap_or(u32::MAX);
        BitMap { maxino, bits }
    }

    /// Inode numbers must be below this.
    pub fn maxino(&self) -> u32 {
        self.maxino
    }

    /// Set the bit of `ino`. Inodes 0 and `>= maxino` are ignored (they have no bit).
    pub fn set(&mut self, ino: u32) {
        if ino == 0 || ino >= self.maxino {
            return;
        }
        let i = (ino - 1) as usize;
        if let Some(b) = self.bits.get_mut(i / 8) {
            *b |= 1 << (i % 8);
        }
    }

    pub fn get(&self, ino: u32) -> bool {
        if ino == 0 {
            return false;
        }
        let i = (ino - 1) as usize;
        self.bits
            .get(i / 8)
            .is_some_and(|b| b & (1 << (i % 8)) != 0)
    }

    /// The map as written on tape (a multiple of 1024 bytes).
    pub fn bytes(&self) -> &[u8] {
        &self.bits
    }

    /// Number of records the map takes on tape.
    pub fn records(&self) -> usize {
        self.bits.len() / TP_BSIZE
    }

    /// Inodes whose bit is set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.bits.iter().enumerate().flat_map(|(byte, &b)| {
            (0..8u32)
                .filter_map(move |bit| (b & (1 << bit) != 0).then_some(byte as u32 * 8 + bit + 1))
        })
    }

    pub fn count(&self) -> usize {
        self.bits.iter().map(|b| b.count_ones() as usize).sum()
    }
}

/// A decoded header record. Integer fields keep their on-tape widths; `c_checksum` is not
/// kept (it is computed on encode and verified on decode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub c_type: i32,
    pub c_date: i32,
    pub c_ddate: i32,
    pub c_volume: i32,
    pub c_tapea: u32,
    pub c_inumber: u32,
    pub c_magic: i32,
    // c_dinode
    pub di_mode: u16,
    pub di_nlink: i16,
    pub di_size: u64,
    pub di_atime: (u32, u32),
    pub di_mtime: (u32, u32),
    pub di_ctime: (u32, u32),
    /// `di_db[0]`, which doubles as `di_rdev`.
    pub di_rdev: u32,
    pub di_flags: u32,
    pub di_uid: u32,
    pub di_gid: u32,
    /// 16-bit uid/gid copies (old format only).
    pub di_ouid: u16,
    pub di_ogid: u16,
    pub c_count: i32,
    pub c_addr: [u8; TP_NINDIR],
    pub c_label: [u8; 16],
    pub c_level: i32,
    pub c_filesys: [u8; 64],
    pub c_dev: [u8; 64],
    pub c_host: [u8; 64],
    pub c_flags: i32,
    pub c_firstrec: i32,
    pub c_ntrec: i32,
    pub c_extattributes: i32,
}

impl Default for Header {
    fn default() -> Self {
        Header {
            c_type: 0,
            c_date: 0,
            c_ddate: 0,
            c_volume: 1,
            c_tapea: 0,
            c_inumber: 0,
            c_magic: NFS_MAGIC,
            di_mode: 0,
            di_nlink: 0,
            di_size: 0,
            di_atime: (0, 0),
            di_mtime: (0, 0),
            di_ctime: (0, 0),
            di_rdev: 0,
            di_flags: 0,
            di_uid: 0,
            di_gid: 0,
            di_ouid: 0,
            di_ogid: 0,
            c_count: 0,
            c_addr: [0; TP_NINDIR],
            c_label: [0; 16],
            c_level: 0,
            c_filesys: [0; 64],
            c_dev: [0; 64],
            c_host: [0; 64],
            c_flags: 0,
            c_firstrec: 0,
            c_ntrec: DEFAULT_NTREC as i32,
            c_extattributes: 0,
        }
    }
}

/// Why a record is not a valid header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// `c_magic` is neither NFS_MAGIC nor its byte swap: not a header at all.
    BadMagic,
    /// The magic is right but the 256 words do not sum to CHECKSUM.
    BadChecksum,
    /// An old-format (OFS) or FreeBSD UFS2 header: valid, but a format we do not read.
    OtherFormat(i32),
}

/// Copy `s` into a NUL-terminated, zero-padded text field (cut to leave room for the NUL).
pub fn text_field<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let b = s.as_bytes();
    let n = b.len().min(N - 1);
    out[..n].copy_from_slice(&b[..n]);
    out
}

/// The text of a NUL-terminated field (lossy UTF-8).
pub fn field_text(f: &[u8]) -> String {
    let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
    String::from_utf8_lossy(&f[..end]).into_owned()
}

fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

/// Sum of the 256 words of a record, in the given byte order, wrapping.
pub fn word_sum(rec: &[u8; TP_BSIZE], swapped: bool) -> i32 {
    rec.chunks_exact(4).fold(0i32, |acc, w| {
        let w: [u8; 4] = [w[0], w[1], w[2], w[3]];
        let v = if swapped {
            i32::from_be_bytes(w)
        } else {
            i32::from_le_bytes(w)
        };
        acc.wrapping_add(v)
    })
}

impl Header {
    /// The 1024-byte little-endian record, with its checksum.
    pub fn encode(&self) -> [u8; TP_BSIZE] {
        let mut b = [0u8; TP_BSIZE];
        put32(&mut b, 0, self.c_type as u32);
        put32(&mut b, 4, self.c_date as u32);
        put32(&mut b, 8, self.c_ddate as u32);
        put32(&mut b, 12, self.c_volume as u32);
        put32(&mut b, 16, self.c_tapea);
        put32(&mut b, 20, self.c_inumber);
        put32(&mut b, 24, self.c_magic as u32);
        // 28: checksum, last.
        put16(&mut b, 32, self.di_mode);
        put16(&mut b, 34, self.di_nlink as u16);
        put16(&mut b, 36, self.di_ouid);
        put16(&mut b, 38, self.di_ogid);
        b[40..48].copy_from_slice(&self.di_size.to_le_bytes());
        put32(&mut b, 48, self.di_atime.0);
        put32(&mut b, 52, self.di_atime.1);
        put32(&mut b, 56, self.di_mtime.0);
        put32(&mut b, 60, self.di_mtime.1);
        put32(&mut b, 64, self.di_ctime.0);
        put32(&mut b, 68, self.di_ctime.1);
        put32(&mut b, 72, self.di_rdev);
        put32(&mut b, 132, self.di_flags);
        put32(&mut b, 144, self.di_uid);
        put32(&mut b, 148, self.di_gid);
        put32(&mut b, 160, self.c_count as u32);
        b[164..676].copy_from_slice(&self.c_addr);
        b[676..692].copy_from_slice(&self.c_label);
        put32(&mut b, 692, self.c_level as u32);
        b[696..760].copy_from_slice(&self.c_filesys);
        b[760..824].copy_from_slice(&self.c_dev);
        b[824..888].copy_from_slice(&self.c_host);
        put32(&mut b, 888, self.c_flags as u32);
        put32(&mut b, 892, self.c_firstrec as u32);
        put32(&mut b, 896, self.c_ntrec as u32);
        put32(&mut b, 900, self.c_extattributes as u32);
        let sum = word_sum(&b, false);
        put32(&mut b, 28, CHECKSUM.wrapping_sub(sum) as u32);
        b
    }

    /// Decode a record. Returns the header and whether the image is byte-swapped.
    pub fn decode(b: &[u8; TP_BSIZE]) -> std::result::Result<(Header, bool), HeaderError> {
        let magic_le = i32::from_le_bytes([b[24], b[25], b[26], b[27]]);
        let magic_be = i32::from_be_bytes([b[24], b[25], b[26], b[27]]);
        let swapped = if magic_le == NFS_MAGIC {
            false
        } else if magic_be == NFS_MAGIC {
            true
        } else if [OFS_MAGIC, FS_UFS2_MAGIC].contains(&magic_le) {
            return Err(HeaderError::OtherFormat(magic_le));
        } else if [OFS_MAGIC, FS_UFS2_MAGIC].contains(&magic_be) {
            return Err(HeaderError::OtherFormat(magic_be));
        } else {
            return Err(HeaderError::BadMagic);
        };
        if word_sum(b, swapped) != CHECKSUM {
            return Err(HeaderError::BadChecksum);
        }
        let r32 = |off: usize| {
            let w = [b[off], b[off + 1], b[off + 2], b[off + 3]];
            if swapped {
                u32::from_be_bytes(w)
            } else {
                u32::from_le_bytes(w)
            }
        };
        let r16 = |off: usize| {
            let w = [b[off], b[off + 1]];
            if swapped {
                u16::from_be_bytes(w)
            } else {
                u16::from_le_bytes(w)
            }
        };
        let mut size = [0u8; 8];
        size.copy_from_slice(&b[40..48]);
        let di_size = if swapped {
            u64::from_be_bytes(size)
        } else {
            u64::from_le_bytes(size)
        };
        let mut h = Header {
            c_type: r32(0) as i32,
            c_date: r32(4) as i32,
            c_ddate: r32(8) as i32,
            c_volume: r32(12) as i32,
            c_tapea: r32(16),
            c_inumber: r32(20),
            c_magic: NFS_MAGIC,
            di_mode: r16(32),
            di_nlink: r16(34) as i16,
            di_ouid: r16(36),
            di_ogid: r16(38),
            di_size,
            di_atime: (r32(48), r32(52)),
            di_mtime: (r32(56), r32(60)),
            di_ctime: (r32(64), r32(68)),
            di_rdev: r32(72),
            di_flags: r32(132),
            di_uid: r32(144),
            di_gid: r32(148),
            c_count: r32(160) as i32,
            c_level: r32(692) as i32,
            c_flags: r32(888) as i32,
            c_firstrec: r32(892) as i32,
            c_ntrec: r32(896) as i32,
            c_extattributes: r32(900) as i32,
            ..Header::default()
        };
        h.c_addr.copy_from_slice(&b[164..676]);
        h.c_label.copy_from_slice(&b[676..692]);
        h.c_filesys.copy_from_slice(&b[696..760]);
        h.c_dev.copy_from_slice(&b[760..824]);
        h.c_host.copy_from_slice(&b[824..888]);
        Ok((h, swapped))
    }

    /// The header template every record of a dump starts from (§16 step 4).
    pub fn template(info: &DumpInfo) -> Result<Header> {
        Ok(Header {
            c_date: date32(info.date, "dump date")?,
            c_ddate: date32(info.ddate, "base dump date")?,
            c_volume: 1,
            c_label: text_field(&info.label),
            c_level: i32::from(info.level),
            c_filesys: text_field(&info.filesys),
            c_dev: text_field(&info.dev),
            c_host: text_field(&info.host),
            c_flags: DR_NEWINODEFMT,
            c_ntrec: info.ntrec as i32,
            ..Header::default()
        })
    }

    /// The dump information a TS_TAPE header carries.
    pub fn dump_info(&self) -> DumpInfo {
        DumpInfo {
            level: u8::try_from(self.c_level).unwrap_or(0),
            date: i64::from(self.c_date),
            ddate: i64::from(self.c_ddate),
            label: field_text(&self.c_label),
            host: field_text(&self.c_host),
            filesys: field_text(&self.c_filesys),
            dev: field_text(&self.c_dev),
            ntrec: u32::try_from(self.c_ntrec).unwrap_or(0),
        }
    }

    /// Fill the inode part from `meta` (§2.1). Fails on what the format cannot hold.
    pub fn set_inode(&mut self, ino: u32, meta: &InodeMeta) -> Result<()> {
        let bad = |what: &str| {
            Error::usage(format!(
                "inode {ino}: {what} cannot be written in a BSD dump header"
            ))
        };
        self.c_inumber = ino;
        self.di_mode = u16::try_from(meta.mode).map_err(|_| bad("mode"))?;
        self.di_nlink = i16::try_from(meta.nlink).unwrap_or(i16::MAX);
        self.di_size = meta.size;
        self.di_atime =
            time32(meta.atime_ns).ok_or_else(|| bad("atime (before 1970 or after 2106)"))?;
        self.di_mtime =
            time32(meta.mtime_ns).ok_or_else(|| bad("mtime (before 1970 or after 2106)"))?;
        // ctime is informational only: clamp rather than refuse.
        self.di_ctime = time32(meta.ctime_ns).unwrap_or((0, 0));
        let kind = meta.mode & S_IFMT;
        self.di_rdev = if kind == S_IFCHR || kind == S_IFBLK {
            rdev_to_tape(meta.rdev)
                .ok_or_else(|| bad("device number (major >= 4096 or minor >= 2^20)"))?
        } else {
            0
        };
        self.di_flags = 0;
        self.di_uid = meta.uid;
        self.di_gid = meta.gid;
        self.di_ouid = meta.uid as u16; // low 16 bits, as dump writes them
        self.di_ogid = meta.gid as u16;
        Ok(())
    }

    /// The inode metadata of a TS_INODE header.
    pub fn inode_meta(&self, new_format: bool) -> InodeMeta {
        let (uid, gid) = if new_format {
            (self.di_uid, self.di_gid)
        } else {
            (u32::from(self.di_ouid), u32::from(self.di_ogid))
        };
        let kind = u32::from(self.di_mode) & S_IFMT;
        InodeMeta {
            mode: u32::from(self.di_mode),
            uid,
            gid,
            nlink: u32::try_from(self.di_nlink).unwrap_or(0),
            size: self.di_size,
            atime_ns: time_ns(self.di_atime),
            mtime_ns: time_ns(self.di_mtime),
            ctime_ns: time_ns(self.di_ctime),
            rdev: if kind == S_IFCHR || kind == S_IFBLK {
                rdev_from_tape(self.di_rdev)
            } else {
                0
            },
        }
    }
}

fn date32(t: i64, what: &str) -> Result<i32> {
    i32::try_from(t).map_err(|_| {
        Error::usage(format!(
            "{what} {t} cannot be written in a BSD dump header (signed 32-bit seconds, 1901-2038)"
        ))
    })
}

/// Nanoseconds since the epoch to (seconds, microseconds), if it fits the unsigned 32-bit field.
pub fn time32(ns: i64) -> Option<(u32, u32)> {
    let secs = u32::try_from(ns.div_euclid(1_000_000_000)).ok()?;
    let usec = (ns.rem_euclid(1_000_000_000) / 1000) as u32;
    Some((secs, usec))
}

fn time_ns((secs, usec): (u32, u32)) -> i64 {
    i64::from(secs) * 1_000_000_000 + i64::from(usec.min(999_999)) * 1000
}

/// Linux `dev_t` to the 32-bit on-tape `di_rdev` (§8): bits 0–7 minor low, 8–19 major,
/// 20–31 minor bits 8–19.
pub fn rdev_to_tape(rdev: u64) -> Option<u32> {
    let major = libc::major(rdev as libc::dev_t);
    let minor = libc::minor(rdev as libc::dev_t);
    if major >= 4096 || minor >= (1 << 20) {
        return None;
    }
    Some((minor & 0xff) | (major << 8) | ((minor & !0xff) << 12))
}

/// The 32-bit on-tape `di_rdev` back to a Linux `dev_t`.
pub fn rdev_from_tape(x: u32) -> u64 {
    let major = (x >> 8) & 0xfff;
    let minor = (x & 0xff) | ((x >> 12) & 0xfff00);
    libc::makedev(major, minor) as u64
}

/// Minimal size of a directory entry with a name of `namlen` bytes (`DIRSIZ`).
fn dirsiz(namlen: usize) -> usize {
    8 + ((namlen + 1 + 3) & !3)
}

/// Is `name` acceptable as a directory entry other than "." and ".."? (non-empty, ≤ 255 bytes,
/// no '/' and no NUL, not "." or "..": a name that could escape a target is refused).
pub fn check_name(name: &[u8]) -> std::result::Result<(), &'static str> {
    if name.is_empty() {
        Err("an empty name")
    } else if name.len() > 255 {
        Err("a name longer than 255 bytes")
    } else if name.contains(&b'/') {
        Err("a name containing '/'")
    } else if name.contains(&0) {
        Err("a name containing a NUL byte")
    } else if name == b"." || name == b".." {
        Err("a '.' or '..' entry in the wrong place")
    } else {
        Ok(())
    }
}

/// Encode a directory stream (§7): ".", "..", then `entries`; entries never cross a 512-byte
/// boundary (the last entry of a block is enlarged to it) and the stream is padded to a
/// multiple of 512 by enlarging the last entry, as Linux dump does.
pub fn encode_dir(ino: u32, parent: u32, entries: &[DirEntry]) -> Result<Vec<u8>> {
    let mut out: Vec<u8> = Vec::new();
    // Offset of the previous entry's start, to enlarge it when closing a block.
    let mut last: Option<usize> = None;
    let all = [
        DirEntry {
            name: b".".to_vec(),
            ino,
            dtype: DT_DIR,
        },
        DirEntry {
            name: b"..".to_vec(),
            ino: parent,
            dtype: DT_DIR,
        },
    ];
    for (i, e) in all.iter().chain(entries.iter()).enumerate() {
        if i >= 2 {
            check_name(&e.name).map_err(|why| {
                Error::usage(format!(
                    "directory inode {ino}: entry {:?} is {why}",
                    String::from_utf8_lossy(&e.name)
                ))
            })?;
        }
        if e.ino == 0 {
            return Err(Error::usage(format!(
                "directory inode {ino}: entry {:?} has inode number 0",
                String::from_utf8_lossy(&e.name)
            )));
        }
        let size = dirsiz(e.name.len());
        let room = DIRBLKSIZ - out.len() % DIRBLKSIZ;
        if size > room {
            close_block(&mut out, last);
        }
        last = Some(out.len());
        out.extend_from_slice(&e.ino.to_le_bytes());
        out.extend_from_slice(&(size as u16).to_le_bytes());
        out.push(e.dtype);
        out.push(e.name.len() as u8);
        out.extend_from_slice(&e.name);
        out.resize(last.unwrap_or(0) + size, 0);
    }
    if !out.len().is_multiple_of(DIRBLKSIZ) {
        close_block(&mut out, last);
    }
    if out.len() >= 0x0FFF_FFFF {
        return Err(Error::usage(format!(
            "directory inode {ino} is too large for a BSD dump ({} bytes of entries)",
            out.len()
        )));
    }
    Ok(out)
}

/// Enlarge the entry at `last` so that it ends at the next 512-byte boundary.
fn close_block(out: &mut Vec<u8>, last: Option<usize>) {
    let end = out.len().div_ceil(DIRBLKSIZ) * DIRBLKSIZ;
    if let Some(at) = last {
        let reclen = (end - at) as u16;
        out[at + 4..at + 6].copy_from_slice(&reclen.to_le_bytes());
    }
    out.resize(end, 0);
}

/// Parse a directory stream (`data` = exactly `di_size` bytes). Checks every entry as restore
/// does (reclen a multiple of 4, at least DIRSIZ, within its 512-byte block) and refuses names
/// that could escape a target; "." must come first, ".." second, and nowhere else.
/// `Err` carries a description (the caller adds the file and inode).
pub fn decode_dir(data: &[u8], swapped: bool) -> std::result::Result<Vec<DirEntry>, String> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while off < data.len() {
        let block_end = (off / DIRBLKSIZ + 1) * DIRBLKSIZ;
        if off + 8 > data.len() {
            return Err(format!(
                "entry at byte {off} is cut short by the end of the directory"
            ));
        }
        let w = |o: usize| [data[o], data[o + 1], data[o + 2], data[o + 3]];
        let ino = if swapped {
            u32::from_be_bytes(w(off))
        } else {
            u32::from_le_bytes(w(off))
        };
        let rl = [data[off + 4], data[off + 5]];
        let reclen = usize::from(if swapped {
            u16::from_be_bytes(rl)
        } else {
            u16::from_le_bytes(rl)
        });
        let dtype = data[off + 6];
        let namlen = usize::from(data[off + 7]);
        if reclen % 4 != 0 || reclen < dirsiz(namlen) || off + reclen > block_end {
            return Err(format!(
                "entry at byte {off} is mangled (record length {reclen}, name length {namlen})"
            ));
        }
        if off + 8 + namlen > data.len() {
            return Err(format!(
                "entry at byte {off}: its name runs past the end of the directory"
            ));
        }
        if ino != 0 {
            let name = data[off + 8..off + 8 + namlen].to_vec();
            let pos = out.len();
            let ok = match (pos, name.as_slice()) {
                (0, b".") | (1, b"..") => Ok(()),
                (0, _) => Err("a directory whose first entry is not '.'"),
                (1, _) => Err("a directory whose second entry is not '..'"),
                _ => check_name(&name),
            };
            ok.map_err(|why| {
                format!(
                    "entry at byte {off} ({:?}) is {why}",
                    String::from_utf8_lossy(&name)
                )
            })?;
            out.push(DirEntry { name, ino, dtype });
        }
        off += reclen;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_header() -> Header {
        let info = DumpInfo {
            level: 3,
            date: 1_795_658_571,
            ddate: 1_795_000_000,
            label: "lbl".into(),
            host: "h".into(),
            filesys: "/fs".into(),
            dev: "/dev/x".into(),
            ntrec: 10,
        };
        let mut h = Header::template(&info).unwrap();
        h.c_type = TS_INODE;
        h.set_inode(
            70,
            &InodeMeta {
                mode: S_IFREG | 0o4755,
                uid: 70000,
                gid: 70001,
                nlink: 2,
                size: 5_000_000_000,
                atime_ns: 1_000_000_000_123_456_789,
                mtime_ns: 981_173_106_000_001_000,
                ctime_ns: 5,
                rdev: 0,
            },
        )
        .unwrap();
        h.c_count = 3;
        h.c_addr[..3].copy_from_slice(&[1, 0, 1]);
        h
    }

    #[test]
    fn header_round_trip_and_checksum() {
        let h = sample_header();
        let rec = h.encode();
        assert_eq!(word_sum(&rec, false), CHECKSUM);
        let (back, swapped) = Header::decode(&rec).unwrap();
        assert!(!swapped);
        assert_eq!(back, h);
        let m = back.inode_meta(true);
        assert_eq!(m.uid, 70000);
        assert_eq!(m.mtime_ns, 981_173_106_000_001_000);
        assert_eq!(m.atime_ns, 1_000_000_000_123_456_000); // microseconds kept
        assert_eq!(back.dump_info().label, "lbl");
    }

    #[test]
    fn flipped_byte_fails_checksum() {
        let mut rec = sample_header().encode();
        rec[700] ^= 0x40;
        assert_eq!(Header::decode(&rec), Err(HeaderError::BadChecksum));
        let zero = [0u8; TP_BSIZE];
        assert_eq!(Header::decode(&zero), Err(HeaderError::BadMagic));
    }

    #[test]
    fn byte_swapped_header_decodes() {
        let h = sample_header();
        let le = h.encode();
        // Swap every integer field the way a big-endian writer would have written it.
        let mut be = le;
        let swap = |b: &mut [u8; TP_BSIZE], off: usize, n: usize| b[off..off + n].reverse();
        for off in (0..32).step_by(4).chain([
            48, 52, 56, 60, 64, 68, 72, 132, 144, 148, 160, 692, 888, 892, 896, 900,
        ]) {
            swap(&mut be, off, 4);
        }
        for off in [32, 34, 36, 38] {
            swap(&mut be, off, 2);
        }
        swap(&mut be, 40, 8);
        // Recompute the checksum in big-endian order.
        be[28..32].copy_from_slice(&[0; 4]);
        let sum = word_sum(&be, true);
        be[28..32].copy_from_slice(&CHECKSUM.wrapping_sub(sum).to_be_bytes());
        let (back, swapped) = Header::decode(&be).unwrap();
        assert!(swapped);
        assert_eq!(back, h);
    }

    #[test]
    fn bitmap_layout() {
        let mut m = BitMap::new(34);
        assert_eq!(m.bytes().len(), 1024);
        for i in [2, 7, 11, 33] {
            m.set(i);
        }
        assert_eq!(m.bytes()[0], 0x42);
        assert!(m.get(33) && !m.get(32) && !m.get(0));
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![2, 7, 11, 33]);
        let big = BitMap::new(8192 * 3 + 1);
        assert_eq!(big.records(), 4);
        assert_eq!(BitMap::from_bytes(m.bytes().to_vec()).maxino(), 8193);
    }

    #[test]
    fn rdev_encoding() {
        let d = libc::makedev(1, 3) as u64;
        assert_eq!(rdev_to_tape(d), Some(259));
        assert_eq!(rdev_from_tape(259), d);
        let d = libc::makedev(259, 70000) as u64;
        assert_eq!(rdev_from_tape(rdev_to_tape(d).unwrap()), d);
        assert_eq!(rdev_to_tape(libc::makedev(5000, 1) as u64), None);
    }

    #[test]
    fn directory_round_trip_and_blocks() {
        let mut entries = Vec::new();
        for i in 0..60 {
            entries.push(DirEntry {
                name: format!("hardlink-number-{i:02}-with-a-longish-name.txt").into_bytes(),
                ino: 27,
                dtype: DT_REG,
            });
        }
        let data = encode_dir(26, 2, &entries).unwrap();
        assert_eq!(data.len() % DIRBLKSIZ, 0);
        let back = decode_dir(&data, false).unwrap();
        assert_eq!(back.len(), 62);
        assert_eq!(back[0].name, b".");
        assert_eq!(back[1].ino, 2);
        assert_eq!(&back[2..], &entries[..]);
        // An empty directory is one 512-byte block.
        assert_eq!(encode_dir(5, 2, &[]).unwrap().len(), 512);
    }

    #[test]
    fn directory_rejects_escaping_names() {
        for bad in [&b"a/b"[..], b"", b"..", b"x\0y"] {
            let e = DirEntry {
                name: bad.to_vec(),
                ino: 3,
                dtype: DT_REG,
            };
            assert!(encode_dir(2, 2, &[e]).is_err(), "{bad:?} accepted");
        }
        // Hand-craft a stream with a '/' name: the decoder refuses it.
        let ok = DirEntry {
            name: b"abc".to_vec(),
            ino: 3,
            dtype: DT_REG,
        };
        let mut data = encode_dir(2, 2, &[ok]).unwrap();
        let at = 24 + 8; // after "." (12) and ".." (12): the name of the third entry
        assert_eq!(&data[at..at + 3], b"abc");
        data[at + 1] = b'/';
        let err = decode_dir(&data, false).unwrap_err();
        assert!(err.contains("'/'"), "{err}");
        // A mangled record length.
        let mut data = encode_dir(2, 2, &[]).unwrap();
        data[4] = 13;
        assert!(decode_dir(&data, false).unwrap_err().contains("mangled"));
    }
}
