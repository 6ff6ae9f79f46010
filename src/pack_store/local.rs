//! [`LocalDir`]: packs as files of a local directory, `packs/ab/<hex>.pack`.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{PackInfo, PackStore, StagedPack, range_len, truncated, unix_ns};
use crate::crypto::Keys;
use crate::error::{Error, IoContext, Result};
use crate::pack::{self, PackId, PackReader};

/// Packs as files of a local directory (a spool's `packs/`): `ab/<hex>.pack`, `ab` the first
/// two hex digits of the name (`crate::pack::pack_path`).
///
/// `put` fsyncs the staged file, renames it into place (the tmp directory must be on the same
/// filesystem) and fsyncs the directory; reads are `pread`s on an open file; `delete` removes
/// the files and fsyncs their directories once.
#[derive(Clone, Debug)]
pub struct LocalDir {
    dir: PathBuf,
}

impl LocalDir {
    pub fn new(dir: impl Into<PathBuf>) -> LocalDir {
        LocalDir { dir: dir.into() }
    }

    /// The directory the packs are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl PackStore for LocalDir {
    fn put(&self, pack: StagedPack) -> Result<()> {
        pack::place(pack, &self.dir).map(drop)
    }

    fn open(&self, id: &PackId, keys: &Keys) -> Result<PackReader> {
        PackReader::open(&self.location(id), keys)
    }

    fn read_ranges(&self, id: &PackId, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>> {
        let path = self.location(id);
        let file = File::open(&path).at(&path)?;
        ranges
            .iter()
            .map(|r| {
                let mut buf = vec![0u8; range_len(r)?];
                match file.read_exact_at(&mut buf, r.start) {
                    Ok(()) => Ok(buf),
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        Err(truncated(&path, buf.len(), r.start))
                    }
                    Err(e) => Err(Error::io(&path, e)),
                }
            })
            .collect()
    }

    fn list_info(&self) -> Result<Vec<PackInfo>> {
        let mut out = Vec::new();
        for (id, path) in pack::list_packs(&self.dir)? {
            match fs::metadata(&path) {
                // The file's mtime: when its bytes were written (a pack is never modified).
                Ok(m) => out.push(PackInfo {
                    id,
                    size: m.len(),
                    put_ns: m.modified().map_or(0, unix_ns),
                }),
                // Deleted since it was listed.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Ok(out)
    }

    fn delete(&self, ids: &[PackId]) -> Result<()> {
        let mut first_error = None;
        let mut parents = BTreeSet::new();
        for id in ids {
            let path = self.location(id);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    first_error.get_or_insert(Error::io(&path, e));
                }
            }
            parents.extend(path.parent().map(Path::to_path_buf));
        }
        for p in parents.iter().filter(|p| p.is_dir()) {
            if let Err(e) = crate::fsutil::fsync_dir(p) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn exists(&self, id: &PackId) -> Result<bool> {
        let path = self.location(id);
        match fs::symlink_metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    fn location(&self, id: &PackId) -> PathBuf {
        pack::pack_path(&self.dir, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack_store::tests::{conformance, staged, tmp_is_empty};

    fn dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let tmp = root.path().join("tmp");
        let packs = root.path().join("packs");
        fs::create_dir_all(&tmp).unwrap();
        fs::create_dir_all(&packs).unwrap();
        (root, tmp, packs)
    }

    #[test]
    fn a_local_dir_keeps_every_promise() {
        let (_root, tmp, packs) = dirs();
        conformance(&LocalDir::new(&packs), &tmp);
    }

    /// The files and paths are those of `pack::place` and `pack::pack_path`: the bytes staged,
    /// named by their blake3, under `ab/`; `list` agrees with `pack::list_packs`.
    #[test]
    fn packs_are_the_files_a_spool_has_always_had() {
        let (_root, tmp, packs) = dirs();
        let store = LocalDir::new(&packs);
        let (s, _, bytes) = staged(&tmp, &[b"one", b"two"]);
        let id = *s.id();
        store.put(s).unwrap();
        let path = pack::pack_path(&packs, &id);
        assert_eq!(store.location(&id), path);
        assert_eq!(fs::read(&path).unwrap(), bytes);
        assert_eq!(*blake3::hash(&bytes).as_bytes(), id.0);
        assert_eq!(pack::list_packs(&packs).unwrap(), vec![(id, path.clone())]);
        assert_eq!(store.list().unwrap(), vec![(id, bytes.len() as u64)]);
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        assert_eq!(
            store.list_info().unwrap(),
            vec![PackInfo {
                id,
                size: bytes.len() as u64,
                put_ns: unix_ns(mtime)
            }]
        );
        // Deleting a file another way first is no error.
        fs::remove_file(&path).unwrap();
        store.delete(&[id]).unwrap();
        assert!(!store.exists(&id).unwrap());
    }

    /// A put that fails (here: the packs directory is a file) leaves nothing behind: no staged
    /// file, no pack.
    #[test]
    fn a_failed_put_leaves_nothing() {
        let (root, tmp, _) = dirs();
        let not_a_dir = root.path().join("not-a-dir");
        fs::write(&not_a_dir, b"").unwrap();
        let store = LocalDir::new(&not_a_dir);
        let (s, _, _) = staged(&tmp, &[b"x"]);
        let id = *s.id();
        let err = store.put(s).unwrap_err().to_string();
        assert!(err.contains("not-a-dir"), "{err}");
        assert!(tmp_is_empty(&tmp));
        assert!(!store.exists(&id).unwrap_or(false));
    }
}
