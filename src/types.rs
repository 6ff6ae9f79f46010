//! Plain data types shared by the scanner, the manifest codec, the dump and the restore.
//!
//! No I/O here: these are the values that cross module boundaries.

use std::fmt;

/// A chunk's name: the blake3 hash of its raw (uncompressed) bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ChunkId(pub [u8; 32]);

/// Hashed by its first 8 bytes: the id is a blake3 hash already, uniform in every bit, so
/// feeding all 32 bytes (and their length) to a hasher is wasted work. Equality still compares
/// all 32.
impl std::hash::Hash for ChunkId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(prefix));
    }
}

/// A set of chunk ids, hashed cheaply ([`IdHasher`]); the dump keeps a few such per chunk.
pub type ChunkSet = std::collections::HashSet<ChunkId, IdHashBuilder>;
/// A map keyed by chunk ids, hashed cheaply ([`IdHasher`]).
pub type ChunkMap<V> = std::collections::HashMap<ChunkId, V, IdHashBuilder>;

/// Builds [`IdHasher`]s with a key drawn once per process.
#[derive(Clone)]
pub struct IdHashBuilder(u64);

impl Default for IdHashBuilder {
    fn default() -> IdHashBuilder {
        use std::hash::BuildHasher;
        static KEY: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        IdHashBuilder(
            *KEY.get_or_init(|| std::collections::hash_map::RandomState::new().hash_one(0u64)),
        )
    }
}

impl std::hash::BuildHasher for IdHashBuilder {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(self.0)
    }
}

/// One multiply for a key that is random already (a chunk id's prefix), instead of SipHash. The
/// secret key keeps someone who writes files to a volume from choosing chunks that land in one
/// bucket of the dump's sets (blake3 preimages are out of reach, but low bits are not).
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for part in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..part.len()].copy_from_slice(part);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }
}

impl ChunkId {
    /// Hash raw chunk bytes into their id.
    pub fn of(data: &[u8]) -> ChunkId {
        ChunkId(*blake3::hash(data).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Parse 64 hex digits.
    pub fn from_hex(s: &str) -> Option<ChunkId> {
        Some(ChunkId(unhex(s)?.try_into().ok()?))
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

/// Is `path` `top` or inside it (the empty `top` is the volume root)?
pub fn is_under(path: &[u8], top: &[u8]) -> bool {
    top.is_empty() || path == top || (path.starts_with(top) && path.get(top.len()) == Some(&b'/'))
}

/// The paths a command selects (normalised, `""` for the whole volume), for testing every
/// entry of a manifest against them in time that grows with the entry's depth, not with the
/// number of paths: a glob pattern may expand to thousands of them.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    tops: std::collections::HashSet<Vec<u8>>,
    /// Every proper ancestor of a selected path (`""` included).
    ancestors: std::collections::HashSet<Vec<u8>>,
    all: bool,
}

impl Selection {
    pub fn new(paths: &[Vec<u8>]) -> Selection {
        let mut s = Selection {
            all: paths.is_empty() || paths.iter().any(|p| p.is_empty()),
            ..Selection::default()
        };
        for p in paths {
            s.tops.insert(p.clone());
            for (i, &c) in p.iter().enumerate() {
                if c == b'/' {
                    s.ancestors.insert(p[..i].to_vec());
                }
            }
            if !p.is_empty() {
                s.ancestors.insert(Vec::new());
            }
        }
        s
    }

    /// (inside a selected path or an ancestor of one, only an ancestor of one).
    pub fn test(&self, path: &[u8]) -> (bool, bool) {
        if self.all || self.top_of(path).is_some() {
            return (true, false);
        }
        if self.ancestors.contains(path) {
            return (true, true);
        }
        (false, false)
    }

    /// The selected path `path` is, or is inside (the nearest), if any.
    pub fn top_of<'a>(&self, path: &'a [u8]) -> Option<&'a [u8]> {
        if self.tops.contains(path) {
            return Some(path);
        }
        let mut end = path.len();
        while let Some(i) = path[..end].iter().rposition(|&c| c == b'/') {
            if self.tops.contains(&path[..i]) {
                return Some(&path[..i]);
            }
            end = i;
        }
        None
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

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Hex (either case) to bytes; `None` unless every character is a hex digit and there is an
/// even number of them.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|p| {
            let d = |c: u8| (c as char).to_digit(16);
            Some((d(p[0])? * 16 + d(p[1])?) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    /// The plain definition `Selection` must agree with: a scan of every filter.
    fn selected(entry_path: &[u8], filters: &[Vec<u8>]) -> (bool, bool) {
        if filters.is_empty() {
            return (true, false);
        }
        for f in filters {
            if is_under(entry_path, f) {
                return (true, false);
            }
            if is_under(f, entry_path) {
                return (true, true);
            }
        }
        (false, false)
    }

    /// `Selection::test` answers as `selected` does, for paths of every relation to the
    /// selected ones.
    #[test]
    fn a_selection_answers_as_selected_does() {
        let sets: Vec<Vec<Vec<u8>>> = vec![
            vec![],
            vec![b"".to_vec()],
            vec![b"a/b".to_vec()],
            vec![b"a/b".to_vec(), b"c".to_vec(), b"a/bc/d".to_vec()],
        ];
        let paths: [&[u8]; 11] = [
            b"",
            b"a",
            b"a/b",
            b"a/b/x",
            b"a/bc",
            b"a/bc/d",
            b"a/bc/d/e",
            b"ab",
            b"c",
            b"c/z",
            b"d",
        ];
        for filters in &sets {
            let sel = Selection::new(filters);
            for p in paths {
                assert_eq!(
                    sel.test(p),
                    selected(p, filters),
                    "{:?} against {filters:?}",
                    String::from_utf8_lossy(p)
                );
            }
        }
    }

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

    #[test]
    fn chunk_sets_tell_apart_ids_that_share_the_hashed_prefix() {
        let a = ChunkId([7; 32]);
        let mut b = a;
        b.0[31] = 8;
        let mut set = ChunkSet::default();
        assert!(set.insert(a));
        assert!(set.insert(b));
        assert!(!set.insert(a));
        assert_eq!(set.len(), 2);
        assert!(set.remove(&b) && set.contains(&a) && !set.contains(&b));
    }

    #[test]
    fn ids_that_share_their_low_bits_still_spread_over_buckets() {
        use std::hash::BuildHasher;
        // Crafted chunks can share the low bits of their id's prefix: the bucket (the low bits of
        // the hash) must still depend on the rest.
        let build = IdHashBuilder::default();
        let buckets: std::collections::HashSet<u64> = (0u32..4096)
            .map(|i| {
                let mut id = ChunkId::of(&i.to_le_bytes());
                id.0[0] = 0;
                id.0[1] = 0;
                build.hash_one(id) & 0xfff
            })
            .collect();
        // 4096 ids thrown at random into 4096 buckets fill about 2590 of them.
        assert!(buckets.len() > 2400, "{} buckets", buckets.len());
    }
}
