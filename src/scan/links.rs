//! The walk's table of hard-linked files: for each inode with more than one link, the path it
//! was first yielded under, so its later links become `HardLink` entries naming that path.
//!
//! It is the one per-file structure a walk keeps for the whole tree, so it is bounded: at most
//! `IN_MEMORY` inodes are held in a map; when it is full they are written to a spill file as a
//! sorted run (the paths, then fixed-size records pointing at them) and the map starts again.
//! A spilled run keeps in memory a Bloom filter (10 bits an inode) and one key every `BLOCK`
//! records, about 1.4 bytes an inode, so a lookup that misses reads nothing in most runs and a
//! hit reads one block and one path. An inode whose links have all been seen (as many as its
//! link count) leaves the map: the usual hard links inside one volume never reach a spill.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Inodes held in the map at most (about 150 bytes each with their paths: under 10 MB).
pub(super) const IN_MEMORY: usize = 1 << 16;
/// Records of a spilled run per key kept in memory: a lookup reads one such block.
const BLOCK: usize = 128;
/// A spilled record: dev, ino, the offset of the path in the spill file, its length.
const RECORD: usize = 8 + 8 + 8 + 4;
const BLOOM_BITS_PER_KEY: usize = 10;
const BLOOM_HASHES: u32 = 7;

type Key = (u64, u64);

struct Link {
    path: Vec<u8>,
    /// Links not seen yet.
    left: u64,
}

/// A spilled run: `len` records sorted by key from byte `start` of the spill file.
struct Run {
    start: u64,
    len: usize,
    /// The key of every `BLOCK`th record.
    fences: Vec<Key>,
    bloom: Bloom,
}

pub(super) struct LinkTable {
    mem: HashMap<Key, Link>,
    max: usize,
    /// Where the spill file goes (the system's temporary directory when None).
    dir: Option<PathBuf>,
    file: Option<File>,
    end: u64,
    runs: Vec<Run>,
}

impl LinkTable {
    pub(super) fn new(max: usize) -> LinkTable {
        LinkTable {
            mem: HashMap::new(),
            max: max.max(1),
            dir: None,
            file: None,
            end: 0,
            runs: Vec::new(),
        }
    }

    /// Spill into `dir` rather than the system's temporary directory.
    pub(super) fn spill_in(&mut self, dir: &Path) {
        self.dir = Some(dir.to_path_buf());
    }

    /// The path inode `key` was first seen under; None the first time, and then `path` is
    /// recorded as its first link of `nlink`.
    pub(super) fn first_link(
        &mut self,
        key: Key,
        nlink: u64,
        path: &[u8],
    ) -> io::Result<Option<Vec<u8>>> {
        if let Some(link) = self.mem.get_mut(&key) {
            link.left = link.left.saturating_sub(1);
            if link.left == 0 {
                return Ok(self.mem.remove(&key).map(|l| l.path));
            }
            return Ok(Some(link.path.clone()));
        }
        if let Some(first) = self.spilled(key)? {
            return Ok(Some(first));
        }
        if self.mem.len() >= self.max {
            self.spill()?;
        }
        let left = nlink.saturating_sub(1).max(1);
        self.mem.insert(
            key,
            Link {
                path: path.to_vec(),
                left,
            },
        );
        Ok(None)
    }

    /// Write the map out as a sorted run and empty it.
    fn spill(&mut self) -> io::Result<()> {
        if self.file.is_none() {
            let dir = self.dir.clone().unwrap_or_else(std::env::temp_dir);
            self.file = Some(spill_file(&dir)?);
        }
        let file = self.file.as_ref().expect("spill file open");
        let mut links: Vec<(Key, Link)> = self.mem.drain().collect();
        links.sort_unstable_by_key(|l| l.0);
        let mut paths = Vec::new();
        let mut records = Vec::with_capacity(links.len() * RECORD);
        let mut bloom = Bloom::new(links.len());
        for ((dev, ino), link) in &links {
            let off = self.end + paths.len() as u64;
            let len = u32::try_from(link.path.len()).map_err(io::Error::other)?;
            paths.extend_from_slice(&link.path);
            records.extend_from_slice(&dev.to_le_bytes());
            records.extend_from_slice(&ino.to_le_bytes());
            records.extend_from_slice(&off.to_le_bytes());
            records.extend_from_slice(&len.to_le_bytes());
            bloom.insert((*dev, *ino));
        }
        file.write_all_at(&paths, self.end)?;
        self.end += paths.len() as u64;
        file.write_all_at(&records, self.end)?;
        self.runs.push(Run {
            start: self.end,
            len: links.len(),
            fences: links.iter().step_by(BLOCK).map(|l| l.0).collect(),
            bloom,
        });
        self.end += records.len() as u64;
        Ok(())
    }

    /// The first path of `key` in a spilled run.
    fn spilled(&self, key: Key) -> io::Result<Option<Vec<u8>>> {
        let Some(file) = self.file.as_ref() else {
            return Ok(None);
        };
        for run in &self.runs {
            if !run.bloom.contains(key) {
                continue;
            }
            let block = match run.fences.partition_point(|f| *f <= key) {
                0 => continue,
                i => i - 1,
            };
            let first = block * BLOCK;
            let n = BLOCK.min(run.len - first);
            let mut buf = vec![0u8; n * RECORD];
            file.read_exact_at(&mut buf, run.start + (first * RECORD) as u64)?;
            for rec in buf.chunks_exact(RECORD) {
                let word = |i: usize| u64::from_le_bytes(rec[i..i + 8].try_into().expect("8"));
                if (word(0), word(8)) != key {
                    continue;
                }
                let len = u32::from_le_bytes(rec[24..28].try_into().expect("4")) as usize;
                let mut path = vec![0u8; len];
                file.read_exact_at(&mut path, word(16))?;
                return Ok(Some(path));
            }
        }
        Ok(None)
    }

    #[cfg(test)]
    fn in_memory(&self) -> usize {
        self.mem.len()
    }
}

/// A file for spilled runs that no name points to: it goes away with the walk, also when the
/// process is killed.
fn spill_file(dir: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmpfile = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir);
    if let Ok(f) = tmpfile {
        return Ok(f);
    }
    // A filesystem without O_TMPFILE: a fresh name, removed at once.
    let path = dir.join(format!(
        "reel-links-{}-{}",
        std::process::id(),
        crate::timefmt::now_ns()
    ));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(f)
}

/// A Bloom filter over keys, kept in memory only (so fastbloom's hashing may change freely).
struct Bloom(fastbloom::BloomFilter);

impl Bloom {
    fn new(keys: usize) -> Bloom {
        let bits = (keys * BLOOM_BITS_PER_KEY).max(64);
        Bloom(fastbloom::BloomFilter::with_num_bits(bits).hashes(BLOOM_HASHES))
    }

    fn insert(&mut self, key: Key) {
        self.0.insert(&key);
    }

    fn contains(&self, key: Key) -> bool {
        self.0.contains(&key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(i: u64) -> Vec<u8> {
        format!("d{}/file-{i}", i % 7).into_bytes()
    }

    /// More inodes than the map holds: it never holds more than its bound, and every later
    /// link finds its first path, spilled or not.
    #[test]
    fn bounded_and_every_link_found() {
        let dir = tempfile_dir();
        let mut t = LinkTable::new(100);
        t.spill_in(&dir);
        // Link counts of 3, so no inode leaves the map when its second link is seen.
        for i in 0..5_000u64 {
            assert_eq!(t.first_link((1, i * 13), 3, &path(i)).unwrap(), None);
            assert!(t.in_memory() <= 100);
        }
        assert!(t.runs.len() >= 49, "{} runs", t.runs.len());
        for i in (0..5_000u64).rev() {
            assert_eq!(t.first_link((1, i * 13), 3, b"x").unwrap(), Some(path(i)));
            assert!(t.in_memory() <= 100);
        }
        // Other devices and inodes were never seen.
        assert_eq!(t.first_link((2, 13), 2, b"y").unwrap(), None);
        assert_eq!(t.first_link((1, 14), 2, b"z").unwrap(), None);
        assert_eq!(t.first_link((1, 14), 2, b"w").unwrap(), Some(b"z".to_vec()));
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// An inode whose links have all been seen leaves the map: links inside the volume never
    /// fill it.
    #[test]
    fn all_links_seen_leave_the_map() {
        let mut t = LinkTable::new(10);
        for i in 0..1_000u64 {
            assert_eq!(t.first_link((1, i), 2, &path(i)).unwrap(), None);
            assert_eq!(t.first_link((1, i), 2, b"x").unwrap(), Some(path(i)));
            assert_eq!(t.in_memory(), 0);
        }
        assert!(t.runs.is_empty() && t.file.is_none());
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "reel-links-test-{}-{}",
            std::process::id(),
            crate::timefmt::now_ns()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
