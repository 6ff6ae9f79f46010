//! The rules every manifest entry obeys, run by the writer before encoding and by the reader
//! after decoding: safe relative paths, strict path order, parents listed earlier as
//! directories, kind-specific rules.

use crate::error::Damaged;
use crate::error::{Error, Result};
use crate::types::{Entry, EntryKind, path_cmp};

use super::{MAX_PATH_LEN, MAX_XATTR_NAME_LEN, MAX_XATTR_VALUE_LEN, ManifestStats};

/// Check that a relative path is safe to join under a restore target: non-empty components,
/// none "." or "..", no NUL, no leading/trailing/double '/'. The empty path is the volume root
/// and passes; the manifest allows it only for the first entry.
pub fn validate_path(path: &[u8]) -> Result<()> {
    match path_problem(path) {
        None => Ok(()),
        Some(why) => Err(Error::damaged(
            Damaged::Entry(path.to_vec()),
            format!("unsafe path '{}': {why}", String::from_utf8_lossy(path)),
        )),
    }
}

fn path_problem(path: &[u8]) -> Option<&'static str> {
    if path.is_empty() {
        return None;
    }
    if path.contains(&0) {
        return Some("contains a NUL byte");
    }
    if path[0] == b'/' {
        return Some("is absolute (starts with '/')");
    }
    if path[path.len() - 1] == b'/' {
        return Some("ends with '/'");
    }
    for comp in path.split(|&c| c == b'/') {
        match comp {
            b"" => return Some("has an empty component ('//')"),
            b"." => return Some("has a '.' component"),
            b".." => return Some("has a '..' component"),
            _ => {}
        }
    }
    None
}

/// The parent of a validated non-root path ("" for top-level names).
fn parent_of(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&c| c == b'/') {
        Some(i) => &path[..i],
        None => b"",
    }
}

/// Is `anc` the directory `dir` or one of its ancestors? (Both are validated paths.)
fn is_ancestor_or_self(anc: &[u8], dir: &[u8]) -> bool {
    anc.is_empty()
        || anc == dir
        || (dir.len() > anc.len() && dir.starts_with(anc) && dir[anc.len()] == b'/')
}

pub(super) fn lossy(p: &[u8]) -> String {
    if p.is_empty() {
        "/".to_string()
    } else {
        String::from_utf8_lossy(p).into_owned()
    }
}

/// The single set of rules every manifest entry obeys, run by the writer before encoding and
/// by the reader after decoding.
///
/// Memory: the previous path and the deepest open directory. The open directories form a
/// chain root -> deepest (the entries come depth-first), so the deepest one's path stands for
/// the whole stack: each of its prefixes was admitted as a `Dir`.
#[derive(Default)]
pub(super) struct Validator {
    prev: Vec<u8>,
    open_dir: Vec<u8>,
    pub(super) stats: ManifestStats,
}

impl Validator {
    /// Check `e` against the entries admitted so far; on success record it. On failure nothing
    /// changes and the reason is returned (the caller adds where).
    pub(super) fn admit(&mut self, e: &Entry) -> std::result::Result<(), String> {
        let parent = if self.stats.entries == 0 {
            if !e.path.is_empty() || e.kind != EntryKind::Dir {
                return Err(format!(
                    "the first entry must be the root directory (empty path, kind Dir), \
                     found {:?} '{}'",
                    e.kind,
                    lossy(&e.path)
                ));
            }
            None
        } else {
            if e.path.is_empty() {
                return Err("a second root entry (empty path)".into());
            }
            if e.path.len() > MAX_PATH_LEN {
                return Err(format!("path longer than {MAX_PATH_LEN} bytes"));
            }
            if let Some(why) = path_problem(&e.path) {
                return Err(format!("unsafe path: {why}"));
            }
            match path_cmp(&self.prev, &e.path) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Err("duplicate path".into()),
                std::cmp::Ordering::Greater => {
                    return Err(format!(
                        "out of order: comes after '{}' but sorts before it",
                        lossy(&self.prev)
                    ));
                }
            }
            let parent = parent_of(&e.path);
            // Every ancestor of `open_dir` is an admitted Dir; anything else (a symlink, a file,
            // a name never listed, a directory whose subtree is closed) cannot be a parent.
            if !is_ancestor_or_self(parent, &self.open_dir) {
                return Err(format!(
                    "parent '{}' is not a directory listed before this entry \
                     (missing, or not a directory)",
                    lossy(parent)
                ));
            }
            Some(parent)
        };

        if e.mode > 0o7777 {
            return Err(format!("mode {:o} has bits above 0o7777", e.mode));
        }
        self.check_kind(e)?;
        Self::check_xattrs(e)?;

        // Admitted: update state and counts.
        let s = &mut self.stats;
        s.entries += 1;
        match e.kind {
            EntryKind::File => {
                s.files += 1;
                s.logical_bytes = s.logical_bytes.saturating_add(e.size);
            }
            EntryKind::Dir => s.dirs += 1,
            EntryKind::Symlink => s.symlinks += 1,
            EntryKind::HardLink => s.hardlinks += 1,
            _ => s.others += 1,
        }
        let new_open: &[u8] = if e.kind == EntryKind::Dir {
            &e.path
        } else {
            parent.unwrap_or(b"")
        };
        self.open_dir.clear();
        self.open_dir.extend_from_slice(new_open);
        self.prev.clear();
        self.prev.extend_from_slice(&e.path);
        Ok(())
    }

    fn check_kind(&self, e: &Entry) -> std::result::Result<(), String> {
        if e.kind != EntryKind::File && !e.extents.is_empty() {
            return Err(format!("a {:?} entry carries file extents", e.kind));
        }
        if e.target.len() > MAX_PATH_LEN {
            return Err(format!("target longer than {MAX_PATH_LEN} bytes"));
        }
        match e.kind {
            EntryKind::File => {
                if !e.target.is_empty() {
                    return Err("a File entry carries a link target".into());
                }
                let mut sum: u64 = 0;
                for (i, x) in e.extents.iter().enumerate() {
                    if x.is_empty() {
                        return Err(format!("extent {i} has length 0"));
                    }
                    sum = sum
                        .checked_add(x.len())
                        .ok_or("extent lengths overflow 64 bits")?;
                }
                if sum != e.size {
                    return Err(format!(
                        "extents cover {sum} bytes but the file size is {}",
                        e.size
                    ));
                }
            }
            EntryKind::Symlink => {
                if e.target.is_empty() {
                    return Err("symlink with an empty target".into());
                }
                if e.target.contains(&0) {
                    return Err("symlink target contains a NUL byte".into());
                }
            }
            EntryKind::HardLink => {
                if e.target.is_empty() {
                    return Err("hard link with an empty target".into());
                }
                if let Some(why) = path_problem(&e.target) {
                    return Err(format!("hard link target: {why}"));
                }
                // Cheap stand-in for "an earlier File": a full set of file paths would cost
                // memory proportional to the volume. The restore resolves the target itself.
                if path_cmp(&e.target, &e.path) != std::cmp::Ordering::Less {
                    return Err(format!(
                        "hard link to '{}', which is not an earlier path",
                        lossy(&e.target)
                    ));
                }
            }
            EntryKind::Dir
            | EntryKind::Fifo
            | EntryKind::CharDev
            | EntryKind::BlockDev
            | EntryKind::Socket => {
                if !e.target.is_empty() {
                    return Err(format!("a {:?} entry carries a link target", e.kind));
                }
            }
        }
        Ok(())
    }

    fn check_xattrs(e: &Entry) -> std::result::Result<(), String> {
        let mut prev: Option<&[u8]> = None;
        for (name, value) in &e.xattrs {
            let shown = String::from_utf8_lossy(name);
            if name.is_empty() {
                return Err("an extended attribute with an empty name".into());
            }
            if name.contains(&0) {
                return Err(format!("extended attribute name '{shown}' contains NUL"));
            }
            if name.len() > MAX_XATTR_NAME_LEN {
                return Err(format!(
                    "extended attribute name longer than {MAX_XATTR_NAME_LEN} bytes"
                ));
            }
            if value.len() > MAX_XATTR_VALUE_LEN {
                return Err(format!(
                    "extended attribute '{shown}' has a value longer than \
                     {MAX_XATTR_VALUE_LEN} bytes"
                ));
            }
            if prev.is_some_and(|p| p >= name.as_slice()) {
                return Err(format!(
                    "extended attribute '{shown}' is out of order or duplicated \
                     (names must be strictly increasing)"
                ));
            }
            prev = Some(name);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_path_rules() {
        for ok in [&b""[..], b"a", b"a/b", b"...", b"a/.b", b"\xff/x"] {
            assert!(validate_path(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            &b"/"[..],
            b"/a",
            b"a/",
            b"a//b",
            b".",
            b"..",
            b"a/..",
            b"./a",
            b"a/./b",
            b"a\0",
        ] {
            assert!(validate_path(bad).is_err(), "{bad:?}");
        }
    }
}
