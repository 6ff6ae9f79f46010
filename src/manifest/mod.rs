//! The manifest codec: a dump's full namespace as one compact, self-checking byte stream.
//!
//! A manifest lists every entry of a volume in path order (`types::path_cmp`), root first. It
//! is written as one stream that the dump cuts into content-defined chunks, so the encoding is
//! built for three things (the byte-level format is in docs/FORMAT.md, "Manifest stream format"):
//!
//! * **Small and stable.** Hand-written records with LEB128 varints, paths stored as (bytes
//!   shared with the previous path, suffix), times and inode numbers stored as deltas, and
//!   mode/uid/gid stored only when they differ from the previous entry. An unchanged stretch of
//!   the tree encodes to the same bytes every day, so its chunks dedup across dumps. A typical
//!   small file with one chunk costs about 58 bytes, 32 of which are the chunk id.
//! * **Streaming.** Writer and reader hold one record, the previous path and the deepest open
//!   directory: memory is bounded by path length (tree depth), never by entry count. Lengths
//!   read from the stream are capped and buffers grow only as bytes actually arrive, so a
//!   crafted length cannot make the reader allocate gigabytes.
//! * **A gatekeeper for restore.** Manifests can come from tapes or a damaged catalog. Every
//!   entry is checked by one function (`Validator::admit`) that the writer also runs, so we
//!   never write what we cannot read: safe relative paths, strict path order, every parent a
//!   directory listed earlier (so "a" as a symlink followed by "a/x" cannot make a restore
//!   write through the symlink), kind-specific rules. A trailer carries the entry count and a
//!   blake3 of every byte before it, so truncation and bit rot are caught even when each record
//!   still parses.
//!
//! Entries are yielded before the trailer is checked (that is what streaming means): a consumer
//! must not treat the manifest as good until the iterator has returned `None` without an
//! error. The restore plans from a full read before it writes anything, which gives that.

mod codec;
mod join;
mod reader;
mod validate;
mod writer;

pub use join::seek;
pub use reader::ManifestReader;
pub use validate::validate_path;
pub use writer::ManifestWriter;

/// The format version this code writes and the only one it reads.
pub const MANIFEST_VERSION: u32 = 1;
/// The first 8 bytes of every manifest stream.
pub const MANIFEST_MAGIC: [u8; 8] = *b"REELMAN\0";

/// Longest path (and hard-link target / symlink target) a manifest may hold, in bytes.
pub const MAX_PATH_LEN: usize = 1 << 20;
/// Longest extended-attribute name, in bytes.
pub const MAX_XATTR_NAME_LEN: usize = 1 << 16;
/// Longest extended-attribute value, in bytes.
pub const MAX_XATTR_VALUE_LEN: usize = 1 << 24;

/// Counts over the entries written or read so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ManifestStats {
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub others: u64,
    /// Sum of `File` sizes (holes included), saturating.
    pub logical_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::codec::{
        F_EXTENTS, Prev, encode_entry, frame, header_bytes, put_varint, trailer_bytes,
    };
    use super::*;
    use crate::error::Result;
    use crate::types::{ChunkId, Entry, EntryKind, Extent};

    fn dir(path: impl AsRef<[u8]>) -> Entry {
        Entry {
            path: path.as_ref().to_vec(),
            kind: EntryKind::Dir,
            mode: 0o755,
            ..Entry::default()
        }
    }

    fn file(path: impl AsRef<[u8]>, data: &[u8]) -> Entry {
        let mut e = Entry {
            path: path.as_ref().to_vec(),
            kind: EntryKind::File,
            mode: 0o644,
            size: data.len() as u64,
            ..Entry::default()
        };
        if !data.is_empty() {
            e.extents.push(Extent::Chunk {
                id: ChunkId::of(data),
                len: data.len() as u32,
            });
        }
        e
    }

    fn symlink(path: impl AsRef<[u8]>, target: &str) -> Entry {
        Entry {
            path: path.as_ref().to_vec(),
            kind: EntryKind::Symlink,
            mode: 0o777,
            size: target.len() as u64,
            target: target.as_bytes().to_vec(),
            ..Entry::default()
        }
    }

    fn hardlink(path: impl AsRef<[u8]>, target: &str) -> Entry {
        Entry {
            path: path.as_ref().to_vec(),
            kind: EntryKind::HardLink,
            mode: 0o644,
            target: target.as_bytes().to_vec(),
            ..Entry::default()
        }
    }

    fn write(entries: &[Entry]) -> Vec<u8> {
        let mut w = ManifestWriter::new(Vec::new()).unwrap();
        for e in entries {
            w.push(e).unwrap();
        }
        w.finish().unwrap().0
    }

    fn read(bytes: &[u8]) -> Result<Vec<Entry>> {
        ManifestReader::new(bytes)?.collect()
    }

    /// Encode without validation, with a correct trailer: what a crafted manifest looks like.
    fn write_unchecked(entries: &[Entry], count: Option<u64>) -> Vec<u8> {
        let mut out = header_bytes().to_vec();
        let mut prev = Prev::default();
        let (mut body, mut rec) = (Vec::new(), Vec::new());
        for e in entries {
            encode_entry(&mut prev, e, &mut body);
            frame(&body, &mut rec);
            out.extend_from_slice(&rec);
        }
        let mut h = blake3::Hasher::new();
        h.update(&out);
        let t = trailer_bytes(count.unwrap_or(entries.len() as u64), &mut h);
        out.extend_from_slice(&t);
        out
    }

    fn varied() -> Vec<Entry> {
        let big = Entry {
            path: b"a/big".to_vec(),
            kind: EntryKind::File,
            mode: 0o4755,
            uid: 4_000_000_000,
            gid: 7,
            mtime_ns: i64::MAX,
            ctime_ns: i64::MIN,
            ino: u64::MAX,
            size: (1 << 40) + 3 * 1000 + 4096,
            extents: {
                let mut v = vec![Extent::Hole(1 << 40)];
                for i in 0..3000u32 {
                    v.push(Extent::Chunk {
                        id: ChunkId::of(&i.to_le_bytes()),
                        len: 1,
                    });
                }
                v.push(Extent::Hole(4096));
                v
            },
            xattrs: vec![
                (
                    b"security.selinux".to_vec(),
                    b"system_u:object_r\0".to_vec(),
                ),
                (b"user.empty".to_vec(), Vec::new()),
                (b"user.\xff\xfe".to_vec(), vec![0u8; 70_000]),
            ],
            ..Entry::default()
        };
        let mut dev = Entry {
            path: b"dev/sda".to_vec(),
            kind: EntryKind::BlockDev,
            mode: 0o660,
            rdev: (8 << 8) | 1,
            mtime_ns: -1_000_000_123,
            ctime_ns: -5,
            ino: 3,
            ..Entry::default()
        };
        let mut chr = dev.clone();
        chr.path = b"dev/tty".to_vec();
        chr.kind = EntryKind::CharDev;
        chr.rdev = u64::MAX;
        let mut fifo = dev.clone();
        fifo.path = b"dev/z-fifo".to_vec();
        fifo.kind = EntryKind::Fifo;
        fifo.rdev = 0;
        let mut sock = fifo.clone();
        sock.path = b"dev/z-sock".to_vec();
        sock.kind = EntryKind::Socket;
        dev.uid = 0;
        let mut root = dir("");
        root.mtime_ns = 1_700_000_000_123_456_789;
        root.xattrs = vec![(b"user.root".to_vec(), b"yes".to_vec())];
        vec![
            root,
            dir("a"),
            big,
            file("a/empty", b""),
            file("a/x", b"hello"),
            hardlink("a/y", "a/x"),
            dir("a.b"),
            file(b"a.b/\xc3\x28 not utf8 \xff", b"data"),
            dir("dev"),
            dev,
            chr,
            fifo,
            sock,
            symlink("link", "../../etc/passwd"),
            hardlink("z", "a/x"),
        ]
    }

    #[test]
    fn round_trip_varied() {
        let entries = varied();
        let bytes = write(&entries);
        let mut r = ManifestReader::new(&bytes[..]).unwrap();
        let back: Vec<Entry> = (&mut r).collect::<Result<_>>().unwrap();
        assert_eq!(back, entries);
        let s = *r.stats();
        assert_eq!(s.entries, entries.len() as u64);
        assert_eq!(
            (s.files, s.dirs, s.symlinks, s.hardlinks, s.others),
            (4, 4, 1, 2, 4)
        );
        assert_eq!(s.logical_bytes, (1 << 40) + 3000 + 4096 + 5 + 4);
        // Deterministic: the same entries give the same bytes (dedup across days needs it).
        assert_eq!(write(&entries), bytes);
    }

    #[test]
    fn writer_and_reader_stats_agree() {
        let entries = varied();
        let mut w = ManifestWriter::new(Vec::new()).unwrap();
        for e in &entries {
            w.push(e).unwrap();
        }
        let ws = *w.stats();
        let (bytes, fs) = w.finish().unwrap();
        assert_eq!(ws, fs);
        let mut r = ManifestReader::new(&bytes[..]).unwrap();
        for e in &mut r {
            e.unwrap();
        }
        assert_eq!(*r.stats(), fs);
    }

    /// 100k typical small files, one chunk each: measure the cost per entry.
    #[test]
    fn compact_for_many_small_files() {
        let n = 100_000u64;
        let mut w = ManifestWriter::new(Vec::new()).unwrap();
        let mut root = dir("");
        root.uid = 1000;
        root.gid = 1000;
        w.push(&root).unwrap();
        let base: i64 = 1_700_000_000_000_000_000;
        let mut entries = 1;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15; // xorshift: stable pseudo-random stat data
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for d in 0..(n / 1000) {
            let mut de = dir(format!("project{d:03}"));
            de.uid = 1000;
            de.gid = 1000;
            de.ino = 1_000_000 + d * 1001;
            w.push(&de).unwrap();
            entries += 1;
            for f in 0..1000 {
                let size = 1 + rnd() % 60_000;
                let mtime = base + (rnd() % (86_400 * 365 * 1_000_000_000)) as i64;
                let e = Entry {
                    path: format!("project{d:03}/src_file_{f:04}.rs").into_bytes(),
                    kind: EntryKind::File,
                    mode: 0o644,
                    uid: 1000,
                    gid: 1000,
                    mtime_ns: mtime,
                    ctime_ns: mtime,
                    ino: de.ino + 1 + f,
                    size,
                    extents: vec![Extent::Chunk {
                        id: ChunkId::of(&rnd().to_le_bytes()),
                        len: size as u32,
                    }],
                    ..Entry::default()
                };
                w.push(&e).unwrap();
                entries += 1;
            }
        }
        let (bytes, stats) = w.finish().unwrap();
        assert_eq!(stats.entries, entries);
        let per = bytes.len() as f64 / entries as f64;
        eprintln!(
            "manifest: {entries} entries in {} bytes = {per:.1} bytes/entry",
            bytes.len()
        );
        assert!(per < 60.0, "{per:.1} bytes/entry");
        let back = ManifestReader::new(&bytes[..]).unwrap().count();
        assert_eq!(back as u64, entries);
    }

    fn small() -> Vec<Entry> {
        vec![
            dir(""),
            dir("d"),
            file("d/f", b"abc"),
            symlink("d/l", "f"),
            hardlink("d/m", "d/f"),
            file("e", b"xyz"),
        ]
    }

    #[test]
    fn every_byte_flip_is_detected() {
        let bytes = write(&small());
        for i in 0..bytes.len() {
            for mask in [0x01u8, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= mask;
                assert!(
                    read(&b).is_err(),
                    "flip {mask:#x} at byte {i} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let bytes = write(&small());
        for cut in 0..bytes.len() {
            let err = read(&bytes[..cut]).unwrap_err().to_string();
            assert!(
                err.contains(&format!("truncated at byte {cut}")),
                "cut at {cut}: {err}"
            );
        }
        assert_eq!(read(&bytes).unwrap(), small());
    }

    #[test]
    fn trailing_bytes_magic_version_and_empty() {
        let mut bytes = write(&small());
        bytes.push(0);
        let err = read(&bytes).unwrap_err().to_string();
        assert!(err.contains("after the trailer"), "{err}");

        let mut bytes = write(&small());
        bytes[0] = b'X';
        assert!(read(&bytes).unwrap_err().to_string().contains("bad magic"));
        assert!(
            read(b"PK\x03\x04")
                .unwrap_err()
                .to_string()
                .contains("bad magic")
        );

        let mut bytes = write(&small());
        bytes[8] = 2;
        let err = read(&bytes).unwrap_err().to_string();
        assert!(err.contains("version 2 is not supported"), "{err}");

        // No entries at all: the writer refuses, the reader rejects a crafted one.
        assert!(ManifestWriter::new(Vec::new()).unwrap().finish().is_err());
        let err = read(&write_unchecked(&[], None)).unwrap_err().to_string();
        assert!(err.contains("no root entry"), "{err}");
    }

    #[test]
    fn trailer_count_must_match() {
        let e = small();
        let err = read(&write_unchecked(&e, Some(5))).unwrap_err().to_string();
        assert!(err.contains("trailer counts 5 entries"), "{err}");
        assert_eq!(read(&write_unchecked(&e, None)).unwrap(), e);
    }

    #[test]
    fn error_is_yielded_once_then_none() {
        let mut bytes = write(&small());
        let n = bytes.len();
        bytes[n - 1] ^= 1; // hash byte: every entry parses, the trailer fails
        let mut r = ManifestReader::new(&bytes[..]).unwrap();
        for _ in 0..small().len() {
            assert!(r.next().unwrap().is_ok());
        }
        let err = r.next().unwrap().unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        assert!(r.next().is_none());
        assert!(r.next().is_none());
    }

    /// Each crafted manifest is rejected by the reader, and the writer refuses the same entry.
    fn rejected(entries: Vec<Entry>, what: &str) {
        let err = read(&write_unchecked(&entries, None))
            .expect_err(what)
            .to_string();
        assert!(err.contains("manifest damaged at byte"), "{what}: {err}");
        let mut w = ManifestWriter::new(Vec::new()).unwrap();
        let refused = entries.iter().any(|e| w.push(e).is_err());
        assert!(refused, "writer accepted {what}");
    }

    #[test]
    fn crafted_manifests_are_rejected() {
        let r = || dir("");
        rejected(vec![r(), file("../x", b"a")], "dot-dot");
        rejected(
            vec![r(), dir("a"), file("a/../../x", b"a")],
            "inner dot-dot",
        );
        rejected(vec![r(), file("/abs", b"a")], "absolute");
        rejected(vec![r(), dir("a"), file("a//b", b"a")], "double slash");
        rejected(vec![r(), dir("a"), file("a/", b"a")], "trailing slash");
        rejected(vec![r(), file(".", b"a")], "dot");
        rejected(vec![r(), file("a\0b", b"a")], "NUL");
        rejected(
            vec![r(), symlink("a", "/etc"), file("a/x", b"a")],
            "under a symlink",
        );
        rejected(
            vec![r(), file("a", b"q"), file("a/x", b"a")],
            "under a file",
        );
        rejected(vec![r(), file("b", b"a"), file("a", b"a")], "out of order");
        rejected(vec![r(), dir("a"), dir("a")], "duplicate");
        rejected(vec![r(), file("a/x", b"a")], "missing parent");
        rejected(
            vec![
                r(),
                dir("a"),
                dir("a/b"),
                file("a/c", b""),
                file("a/b/x", b""),
            ],
            "back into a closed directory",
        );
        rejected(vec![file("a", b"x"), r()], "root not first");
        rejected(vec![dir("a")], "first entry not root");
        rejected(vec![file("", b"")], "root not a dir");
        rejected(vec![r(), r()], "second root");
        rejected(
            vec![r(), file("a", b"x"), hardlink("b", "c")],
            "hard link forward",
        );
        rejected(vec![r(), hardlink("b", "b")], "hard link to itself");
        rejected(
            vec![r(), file("a", b"x"), hardlink("b", "../a")],
            "hard link escapes",
        );
        rejected(
            vec![r(), file("a", b"x"), hardlink("b", "")],
            "hard link empty",
        );
        rejected(vec![r(), symlink("s", "")], "empty symlink");
        rejected(vec![r(), symlink("s", "a\0b")], "symlink NUL");
        let mut f = file("f", b"abc");
        f.size = 4;
        rejected(vec![r(), f], "size mismatch");
        let mut f = file("f", b"abc");
        f.extents.push(Extent::Hole(0));
        rejected(vec![r(), f], "empty extent");
        let mut d = dir("d");
        d.extents.push(Extent::Hole(5));
        d.size = 5;
        rejected(vec![r(), d], "extents on a dir");
        let mut f = file("f", b"");
        f.mode = 0o10644;
        rejected(vec![r(), f], "mode too big");
        let mut f = file("f", b"");
        f.target = b"x".to_vec();
        rejected(vec![r(), f], "target on a file");
        let mut f = file("f", b"");
        f.xattrs = vec![(b"user.b".to_vec(), vec![]), (b"user.a".to_vec(), vec![])];
        rejected(vec![r(), f], "unsorted xattrs");
        let mut f = file("f", b"");
        f.xattrs = vec![(Vec::new(), vec![])];
        rejected(vec![r(), f], "empty xattr name");
    }

    #[test]
    fn writer_refusal_leaves_it_usable() {
        let mut w = ManifestWriter::new(Vec::new()).unwrap();
        w.push(&dir("")).unwrap();
        let err = w.push(&file("../x", b"a")).unwrap_err().to_string();
        assert!(
            err.contains("refusing to write manifest entry #1 '../x'"),
            "{err}"
        );
        w.push(&file("ok", b"a")).unwrap();
        let (bytes, stats) = w.finish().unwrap();
        assert_eq!(stats.entries, 2);
        assert_eq!(read(&bytes).unwrap().len(), 2);
    }

    #[test]
    fn crafted_lengths_do_not_allocate() {
        // A root record whose path claims 2^62 bytes, and one claiming a huge record length.
        for claim in [1u64 << 62, u64::MAX] {
            let mut b = header_bytes().to_vec();
            let mut body = vec![EntryKind::Dir as u8, 0, 0];
            put_varint(&mut body, claim);
            let mut rec = Vec::new();
            frame(&body, &mut rec);
            b.extend_from_slice(&rec);
            let err = read(&b).unwrap_err().to_string();
            assert!(err.contains("over the limit"), "{err}");
        }
        let mut b = header_bytes().to_vec();
        put_varint(&mut b, u64::MAX);
        b.extend_from_slice(&[EntryKind::Dir as u8, 0, 0, 0x7f]);
        b.extend_from_slice(&[0; 100]);
        let err = read(&b).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");

        // Many extents claimed, few present.
        let mut b = header_bytes().to_vec();
        let mut body = vec![EntryKind::Dir as u8];
        put_varint(&mut body, F_EXTENTS);
        body.extend_from_slice(&[0, 0, 0, 0, 0]);
        put_varint(&mut body, u64::MAX);
        let mut rec = Vec::new();
        frame(&body, &mut rec);
        b.extend_from_slice(&rec);
        assert!(read(&b).is_err());
    }

    #[test]
    fn unknown_flags_and_record_types_are_refused() {
        let mut b = header_bytes().to_vec();
        let mut body = vec![EntryKind::Dir as u8];
        put_varint(&mut body, 1 << 8);
        body.extend_from_slice(&[0, 0, 0, 0, 0]);
        let mut rec = Vec::new();
        frame(&body, &mut rec);
        b.extend_from_slice(&rec);
        let err = read(&b).unwrap_err().to_string();
        assert!(err.contains("unknown field flags 0x100"), "{err}");

        let mut b = header_bytes().to_vec();
        b.extend_from_slice(&[1, 9]);
        let err = read(&b).unwrap_err().to_string();
        assert!(err.contains("unknown record type 9"), "{err}");
    }

    #[test]
    fn deep_tree_round_trips() {
        let mut entries = vec![dir("")];
        let mut p = String::new();
        for i in 0..500 {
            if !p.is_empty() {
                p.push('/');
            }
            p.push_str(&format!("d{i}"));
            entries.push(dir(&p));
        }
        entries.push(file(format!("{p}/leaf"), b"x"));
        entries.push(file("zz", b"y"));
        assert_eq!(read(&write(&entries)).unwrap(), entries);
    }
}
