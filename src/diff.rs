//! What changed between two views of a volume: a streaming merge-join of two manifests.
//!
//! Why it is built this way: every manifest is complete and sorted in [`path_cmp`] order (the
//! writer and the reader both enforce it), so two of them can be compared like two sorted
//! files: one entry of each side in memory at a time, whatever the size of the volume. A path
//! on one side only is added or removed; a path on both sides is changed when any of the
//! attributes a user would notice differs, and [`Change::what`] names those attributes.
//!
//! Content is compared by extents (chunk ids and holes), not by size or mtime, so a rewrite
//! that keeps the size is still reported, and a file that was only touched is reported as
//! `mtime` alone. Hard links: a `HardLink` entry names the earlier path it shares an inode
//! with; a change of that pairing (a file that became or stopped being another name of an
//! earlier file, or now names a different one) is `link`, not `type`. The content of a
//! hard-link group is reported at the group's first name, where the chunks are recorded.

use std::cmp::Ordering;
use std::iter::Peekable;

use crate::Result;
use crate::types::{Entry, EntryKind, path_cmp};

/// How one path differs between the two sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// Only in the newer view.
    Added,
    /// Only in the older view.
    Removed,
    /// In both, with some attribute different.
    Changed,
}

impl ChangeKind {
    /// The word used in `--json` output.
    pub fn word(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Removed => "removed",
            ChangeKind::Changed => "changed",
        }
    }
}

/// One changed path. `what` is empty for added and removed paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub path: Vec<u8>,
    pub kind: ChangeKind,
    /// For `Changed`: which attributes differ, in a fixed order: "type", "content", "size",
    /// "mode", "owner", "mtime", "xattrs", "target", "link", "device".
    pub what: Vec<&'static str>,
}

/// Counts of a finished diff.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub added: u64,
    pub removed: u64,
    pub changed: u64,
}

impl Summary {
    pub fn count(&mut self, c: &Change) {
        match c.kind {
            ChangeKind::Added => self.added += 1,
            ChangeKind::Removed => self.removed += 1,
            ChangeKind::Changed => self.changed += 1,
        }
    }
}

/// A regular file and a further name of one are the same thing to a user ("a file"); the
/// difference between them is reported as `link`.
fn same_type(a: EntryKind, b: EntryKind) -> bool {
    let file = |k| matches!(k, EntryKind::File | EntryKind::HardLink);
    a == b || (file(a) && file(b))
}

/// The attributes that differ between two entries of the same path (empty when none do).
pub fn compare(old: &Entry, new: &Entry) -> Vec<&'static str> {
    let mut what = Vec::new();
    if !same_type(old.kind, new.kind) {
        // Nothing else is comparable across types.
        what.push("type");
        return what;
    }
    let both_files = old.kind == EntryKind::File && new.kind == EntryKind::File;
    if both_files && old.extents != new.extents {
        what.push("content");
    }
    if both_files && old.size != new.size {
        what.push("size");
    }
    if old.mode != new.mode {
        what.push("mode");
    }
    if (old.uid, old.gid) != (new.uid, new.gid) {
        what.push("owner");
    }
    if old.mtime_ns != new.mtime_ns {
        what.push("mtime");
    }
    if old.xattrs != new.xattrs {
        what.push("xattrs");
    }
    if old.kind == EntryKind::Symlink && old.target != new.target {
        what.push("target");
    }
    fn linked(e: &Entry) -> Option<&[u8]> {
        (e.kind == EntryKind::HardLink).then_some(e.target.as_slice())
    }
    if linked(old) != linked(new) {
        what.push("link");
    }
    if matches!(old.kind, EntryKind::CharDev | EntryKind::BlockDev) && old.rdev != new.rdev {
        what.push("device");
    }
    what
}

/// The changes from `old` to `new`, in path order. Both inputs must yield entries in
/// [`path_cmp`] order (a `ManifestReader` does, and rejects a manifest that does not); the
/// first error of either side is yielded and ends the diff.
pub struct Diff<A: Iterator<Item = Result<Entry>>, B: Iterator<Item = Result<Entry>>> {
    old: Peekable<A>,
    new: Peekable<B>,
    failed: bool,
}

/// Compare two entry streams; see [`Diff`].
pub fn diff<A, B>(old: A, new: B) -> Diff<A::IntoIter, B::IntoIter>
where
    A: IntoIterator<Item = Result<Entry>>,
    B: IntoIterator<Item = Result<Entry>>,
{
    Diff {
        old: old.into_iter().peekable(),
        new: new.into_iter().peekable(),
        failed: false,
    }
}

impl<A, B> Iterator for Diff<A, B>
where
    A: Iterator<Item = Result<Entry>>,
    B: Iterator<Item = Result<Entry>>,
{
    type Item = Result<Change>;

    fn next(&mut self) -> Option<Result<Change>> {
        if self.failed {
            return None;
        }
        loop {
            // Surface an error from either side before comparing.
            for side in [self.old.peek(), self.new.peek()] {
                if let Some(Err(_)) = side {
                    self.failed = true;
                }
            }
            if self.failed {
                let e = match self.old.peek() {
                    Some(Err(_)) => self.old.next(),
                    _ => self.new.next(),
                };
                return match e {
                    Some(Err(e)) => Some(Err(e)),
                    _ => None,
                };
            }
            let order = match (self.old.peek(), self.new.peek()) {
                (None, None) => return None,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(Ok(a)), Some(Ok(b))) => path_cmp(&a.path, &b.path),
                _ => unreachable!("errors were handled above"),
            };
            let change = match order {
                Ordering::Less => {
                    let Some(Ok(a)) = self.old.next() else {
                        unreachable!("peeked")
                    };
                    Change {
                        path: a.path,
                        kind: ChangeKind::Removed,
                        what: Vec::new(),
                    }
                }
                Ordering::Greater => {
                    let Some(Ok(b)) = self.new.next() else {
                        unreachable!("peeked")
                    };
                    Change {
                        path: b.path,
                        kind: ChangeKind::Added,
                        what: Vec::new(),
                    }
                }
                Ordering::Equal => {
                    let (Some(Ok(a)), Some(Ok(b))) = (self.old.next(), self.new.next()) else {
                        unreachable!("peeked")
                    };
                    let what = compare(&a, &b);
                    if what.is_empty() {
                        continue;
                    }
                    Change {
                        path: b.path,
                        kind: ChangeKind::Changed,
                        what,
                    }
                }
            };
            return Some(Ok(change));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use crate::types::{ChunkId, Extent};

    fn file(path: &str, data: &[u8]) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind: EntryKind::File,
            mode: 0o644,
            mtime_ns: 1_000,
            size: data.len() as u64,
            extents: vec![Extent::Chunk {
                id: ChunkId::of(data),
                len: data.len() as u32,
            }],
            ..Entry::default()
        }
    }

    fn dir(path: &str) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind: EntryKind::Dir,
            mode: 0o755,
            ..Entry::default()
        }
    }

    fn run(a: Vec<Entry>, b: Vec<Entry>) -> Vec<(String, ChangeKind, Vec<&'static str>)> {
        diff(a.into_iter().map(Ok), b.into_iter().map(Ok))
            .map(|c| {
                let c = c.expect("no error");
                (String::from_utf8(c.path).expect("utf8"), c.kind, c.what)
            })
            .collect()
    }

    #[test]
    fn identical_sides_give_nothing() {
        let t = vec![dir(""), dir("a"), file("a/x", b"x"), file("b", b"b")];
        assert!(run(t.clone(), t).is_empty());
        assert!(run(vec![], vec![]).is_empty());
    }

    #[test]
    fn merge_join_follows_path_order_not_byte_order() {
        // `a/b` sorts before `a.b` in manifest order (but after it as plain bytes).
        let old = vec![dir(""), dir("a"), file("a/b", b"1"), file("a.b", b"2")];
        let new = vec![dir(""), dir("a"), file("a.b", b"2"), file("c", b"3")];
        assert_eq!(
            run(old, new),
            vec![
                ("a/b".into(), ChangeKind::Removed, vec![]),
                ("c".into(), ChangeKind::Added, vec![]),
            ]
        );
    }

    #[test]
    fn attributes_are_named() {
        let a = file("f", b"hello");
        let mut b = file("f", b"jello");
        assert_eq!(compare(&a, &b), vec!["content"]);
        b = file("f", b"hello!");
        assert_eq!(compare(&a, &b), vec!["content", "size"]);
        b = a.clone();
        b.mode = 0o600;
        b.uid = 7;
        b.mtime_ns = 2_000;
        b.xattrs = vec![(b"user.x".to_vec(), b"1".to_vec())];
        assert_eq!(compare(&a, &b), vec!["mode", "owner", "mtime", "xattrs"]);
        // A hole where data was is a content change even at the same size.
        b = a.clone();
        b.extents = vec![Extent::Hole(5)];
        assert_eq!(compare(&a, &b), vec!["content"]);
        // Type changes say only that.
        let mut d = dir("f");
        d.mtime_ns = 5;
        assert_eq!(compare(&a, &d), vec!["type"]);
    }

    #[test]
    fn symlinks_links_and_devices() {
        let link = |t: &str| Entry {
            path: b"l".to_vec(),
            kind: EntryKind::Symlink,
            target: t.as_bytes().to_vec(),
            size: t.len() as u64,
            ..Entry::default()
        };
        assert_eq!(compare(&link("a"), &link("bb")), vec!["target"]);
        let hard = |t: &str| Entry {
            path: b"h".to_vec(),
            kind: EntryKind::HardLink,
            target: t.as_bytes().to_vec(),
            ..Entry::default()
        };
        assert_eq!(compare(&hard("a"), &hard("b")), vec!["link"]);
        let mut f = file("h", b"");
        f.mode = 0;
        f.mtime_ns = 0;
        assert_eq!(compare(&f, &hard("a")), vec!["link"]);
        let dev = |rdev| Entry {
            path: b"d".to_vec(),
            kind: EntryKind::CharDev,
            rdev,
            ..Entry::default()
        };
        assert_eq!(compare(&dev(1), &dev(2)), vec!["device"]);
    }

    #[test]
    fn an_error_on_either_side_ends_the_diff() {
        let old = vec![Ok(dir("")), Err(Error::corrupt("bad old"))];
        let new = vec![Ok(dir("")), Ok(file("x", b"x"))];
        let got: Vec<_> = diff(old, new).collect();
        assert_eq!(got.len(), 1);
        assert!(matches!(&got[0], Err(Error::Corrupt { msg: m, .. }) if m == "bad old"));
        let old = vec![Ok(dir(""))];
        let new = vec![Err(Error::corrupt("bad new")), Ok(dir(""))];
        let got: Vec<_> = diff(old, new).collect();
        assert_eq!(got.len(), 1);
        assert!(got[0].is_err());
    }

    #[test]
    fn summary_counts() {
        let old = vec![dir(""), file("a", b"a"), file("b", b"b")];
        let new = vec![dir(""), file("b", b"B"), file("c", b"c")];
        let mut s = Summary::default();
        for c in diff(old.into_iter().map(Ok), new.into_iter().map(Ok)) {
            s.count(&c.expect("ok"));
        }
        assert_eq!(
            s,
            Summary {
                added: 1,
                removed: 1,
                changed: 1
            }
        );
    }
}
