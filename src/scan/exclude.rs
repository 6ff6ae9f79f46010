//! What a volume leaves out of its dumps: the admin's patterns, cache directories and files
//! flagged `nodump`. The walk asks here about every name it has stat data for, before it opens
//! anything, so an excluded directory is never opened, let alone descended into, and an
//! excluded entry is in no manifest.
//!
//! Patterns are gitignore lines, matched by the `ignore` crate's `gitignore` module (the
//! matcher ripgrep uses) as if they were a `.gitignore` at the volume's root: `/tmp` or
//! `alice/cache` (a `/` at the start or in the middle) is anchored at the root, `*.o` (no `/`)
//! matches at any depth, `**` crosses directories, a trailing `/` matches directories only, and
//! `!pattern` takes back what an earlier line excluded (not below an excluded directory, which
//! is never read). The crate rather than our own globs: admins write these lines for git every
//! day, and its rules (negation, directory-only, anchoring, escapes) are the ones they know.
//!
//! Cache directories (`exclude_caches`) follow the Cache Directory Tagging Specification, as
//! restic's and borg's `--exclude-caches` do: a directory holding a regular file named
//! `CACHEDIR.TAG` whose first 43 bytes are [`CACHEDIR_SIGNATURE`] keeps the directory itself
//! and its tag file (as restic does, and borg with `--keep-exclude-tags`), so a restore shows
//! the cache was there and is still marked as one; everything else in it is left out. The names
//! are read anyway to enter the directory, so the check costs nothing unless a tag is there.
//!
//! `nodump` (`chattr +d`) comes from `statx`'s attributes, which the walk's one `stat` per name
//! already returns ([`crate::dirfd::Stat::nodump`]).

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::dirfd::{Dir, Stat};
use crate::error::{Error, Result};

/// The tag file's name.
pub const CACHEDIR_TAG: &[u8] = b"CACHEDIR.TAG";
/// The first 43 bytes of a valid tag file (bford.info/cachedir).
pub const CACHEDIR_SIGNATURE: &[u8; 43] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// What the walk leaves out; see the module documentation.
#[derive(Clone, Debug, Default)]
pub struct Exclude {
    patterns: Option<Gitignore>,
    /// Leave out what cache directories hold (but the tag).
    pub caches: bool,
    /// Leave out entries flagged `nodump`.
    pub nodump: bool,
}

impl Exclude {
    /// Leave out nothing.
    pub fn nothing() -> Exclude {
        Exclude::default()
    }

    /// The rules for `patterns` (gitignore lines), cache directories and the `nodump` flag.
    /// A bad pattern is a usage error naming it.
    pub fn new(patterns: &[String], caches: bool, nodump: bool) -> Result<Exclude> {
        let patterns = if patterns.is_empty() {
            None
        } else {
            let mut b = GitignoreBuilder::new(".");
            for p in patterns {
                check_pattern(p)?;
                b.add_line(None, p).map_err(|e| bad_pattern(p, &e))?;
            }
            Some(b.build().map_err(|e| {
                Error::usage(format!(
                    "exclude patterns {patterns:?}: {e}; fix them with `reel volume set`"
                ))
            })?)
        };
        Ok(Exclude {
            patterns,
            caches,
            nodump,
        })
    }

    /// Does anything get left out? A walk with nothing to leave out asks nothing.
    pub fn is_active(&self) -> bool {
        self.patterns.is_some() || self.caches || self.nodump
    }

    /// Is the entry at `rel` (relative to the root, never the root itself), with stat data
    /// `st`, left out?
    #[inline]
    pub fn excludes(&self, rel: &[u8], st: &Stat) -> bool {
        if self.nodump && st.nodump {
            return true;
        }
        match &self.patterns {
            None => false,
            Some(g) => g
                .matched(Path::new(OsStr::from_bytes(rel)), st.is_dir())
                .is_ignore(),
        }
    }

    /// The names of directory `dir` the walk visits: all of them, or for a cache directory
    /// only its tag.
    pub fn names_to_walk(&self, dir: &Dir, names: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        if self.caches && names.iter().any(|n| n == CACHEDIR_TAG) && is_cache_dir(dir) {
            vec![CACHEDIR_TAG.to_vec()]
        } else {
            names
        }
    }
}

/// Refuse what a `.gitignore` would silently take for something else: an empty line, a comment.
pub fn check_pattern(p: &str) -> Result<()> {
    if p.trim().is_empty() {
        return Err(Error::usage(
            "an empty exclude pattern matches nothing; give a pattern such as 'alice/cache/' or '*.o'",
        ));
    }
    if p.starts_with('#') {
        return Err(Error::usage(format!(
            "exclude pattern {p:?} starts with '#', which makes it a comment in gitignore syntax; write '\\{p}' for a name that starts with '#'"
        )));
    }
    let mut b = GitignoreBuilder::new(".");
    b.add_line(None, p).map_err(|e| bad_pattern(p, &e))?;
    Ok(())
}

fn bad_pattern(p: &str, e: &ignore::Error) -> Error {
    Error::usage(format!(
        "bad exclude pattern {p:?}: {e}; patterns are gitignore lines, e.g. 'alice/cache/', '*.o', '!keep.o'"
    ))
}

/// Does `dir` hold a valid tag: a regular file `CACHEDIR.TAG` (not through a symlink) whose
/// first bytes are the signature? Anything unreadable is no tag: the directory is dumped.
pub fn is_cache_dir(dir: &Dir) -> bool {
    let Ok(f) = dir.open_read(CACHEDIR_TAG) else {
        return false;
    };
    if !crate::dirfd::fstat(&f).is_ok_and(|st| st.is_file()) {
        return false;
    }
    let mut head = [0u8; 43];
    f.take(43).read_exact(&mut head).is_ok() && &head == CACHEDIR_SIGNATURE
}
