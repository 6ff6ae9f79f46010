//! Plain data types shared by the scanner, the manifest codec, the dump and the restore.
//!
//! No I/O here: these are the values that cross module boundaries.

use std::fmt;

/// A chunk's name: the blake3 hash of its raw (uncompressed) bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// Hash raw chunk bytes into their id.
    pub fn of(data: &[u8]) -> ChunkId {
        ChunkId(*blake3::hash(data).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// Parse 64 hex digits.
    pub fn from_hex(s: &str) -> Option<ChunkId> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(ChunkId(out))
    }

    /// Short form for messages.
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_string()
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", self.short())
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// What kind of namespace entry a manifest records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum EntryKind {
    Dir = 1,
    #[default]
    File = 2,
    Symlink = 3,
    /// A further name of an earlier regular file (same inode); `target` holds the earlier path.
    HardLink = 4,
    Fifo = 5,
    CharDev = 6,
    BlockDev = 7,
    Socket = 8,
}

impl EntryKind {
    pub fn from_u8(v: u8) -> Option<EntryKind> {
        Some(match v {
            1 => EntryKind::Dir,
            2 => EntryKind::File,
            3 => EntryKind::Symlink,
            4 => EntryKind::HardLink,
            5 => EntryKind::Fifo,
            6 => EntryKind::CharDev,
            7 => EntryKind::BlockDev,
            8 => EntryKind::Socket,
            _ => return None,
        })
    }

    /// The letter `ls -l` shows for this kind.
    pub fn letter(self) -> char {
        match self {
            EntryKind::Dir => 'd',
            EntryKind::File | EntryKind::HardLink => '-',
            EntryKind::Symlink => 'l',
            EntryKind::Fifo => 'p',
            EntryKind::CharDev => 'c',
            EntryKind::BlockDev => 'b',
            EntryKind::Socket => 's',
        }
    }
}

/// One piece of a regular file's content, in file order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extent {
    /// `len` bytes of hole (reads as zeros, restored as a hole).
    Hole(u64),
    /// A stored chunk of `len` raw bytes.
    Chunk { id: ChunkId, len: u32 },
}

impl Extent {
    pub fn len(&self) -> u64 {
        match self {
            Extent::Hole(n) => *n,
            Extent::Chunk { len, .. } => u64::from(*len),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One namespace entry of a dump: everything needed to rebuild it, plus the stat data that
/// change detection compares.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Entry {
    /// Path relative to the volume root, components joined by `/`; empty for the root itself.
    /// Raw bytes: names need not be UTF-8.
    pub path: Vec<u8>,
    pub kind: EntryKind,
    /// Permission bits including setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Status change time, nanoseconds since the Unix epoch (change detection only).
    pub ctime_ns: i64,
    /// Inode number at scan time (change detection only).
    pub ino: u64,
    /// Size in bytes for files (logical size, holes included) and symlinks.
    pub size: u64,
    /// Device number for character and block devices.
    pub rdev: u64,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Symlink target, or for `HardLink` the path of the entry it is another name of.
    pub target: Vec<u8>,
    /// File content for `File`; empty for every other kind.
    pub extents: Vec<Extent>,
}

impl Entry {
    /// The entry's path for display (lossy UTF-8, `/` for the root).
    pub fn display_path(&self) -> String {
        if self.path.is_empty() {
            "/".to_string()
        } else {
            String::from_utf8_lossy(&self.path).into_owned()
        }
    }

    /// Chunk references of this entry's content, in file order.
    pub fn chunks(&self) -> impl Iterator<Item = (ChunkId, u32)> + '_ {
        self.extents.iter().filter_map(|e| match e {
            Extent::Chunk { id, len } => Some((*id, *len)),
            Extent::Hole(_) => None,
        })
    }
}

/// Order of manifest paths: depth-first, siblings by name bytes. Comparing component by
/// component (not the joined bytes) keeps `a/b` before `a.b`, as a directory walk yields them.
pub fn path_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let mut ai = a.split(|&c| c == b'/').filter(|c| !c.is_empty());
    let mut bi = b.split(|&c| c == b'/').filter(|c| !c.is_empty());
    loop {
        match (ai.next(), bi.next()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => match x.cmp(y) {
                std::cmp::Ordering::Equal => continue,
                o => return o,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    #[test]
    fn path_order_is_depth_first() {
        assert_eq!(path_cmp(b"", b"a"), Ordering::Less);
        assert_eq!(path_cmp(b"a/b", b"a.b"), Ordering::Less);
        assert_eq!(path_cmp(b"a", b"a/b"), Ordering::Less);
        assert_eq!(path_cmp(b"a/z", b"b"), Ordering::Less);
        assert_eq!(path_cmp(b"b", b"a/z"), Ordering::Greater);
    }

    #[test]
    fn hex_round_trip() {
        let id = ChunkId::of(b"hello");
        assert_eq!(ChunkId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(ChunkId::from_hex("zz"), None);
    }
}
