//! Where packs live in a directory: `packs/ab/<hex>.pack`, and listing what is there.

use std::fs;
use std::path::{Path, PathBuf};

use super::format::PackId;
use super::writer::StagedPack;
use crate::error::{Error, IoContext, Result};
use crate::fsutil::fsync_dir;

/// Where a finished pack lives: `packs_dir/ab/<hex>.pack`, `ab` the first two hex digits.
pub fn pack_path(packs_dir: &Path, id: &PackId) -> PathBuf {
    let hex = id.to_hex();
    packs_dir.join(&hex[..2]).join(format!("{hex}.pack"))
}

/// Make `staged` durable as a pack of `packs_dir`: fsync it, rename it to [`pack_path`] and
/// fsync that directory (creating it, and fsyncing `packs_dir`, first if it is new). Returns the
/// pack's path.
///
/// On error before the rename the tmp file is removed; on an error after it (fsync of the
/// directory) the renamed file is removed again, since nothing names it yet, unless a file of
/// that name (the same bytes) was there before.
pub fn place(staged: StagedPack, packs_dir: &Path) -> Result<PathBuf> {
    staged.sync()?;
    let path = pack_path(packs_dir, staged.id());
    let dir = path.parent().unwrap_or(packs_dir).to_path_buf();
    if !dir.is_dir() {
        crate::fsutil::create_dir_all(&dir).at(&dir)?;
        // Make the new `ab` entry itself durable.
        fsync_dir(packs_dir)?;
    }
    // If the target exists it has the same name, hence the same bytes: replacing it is
    // harmless and atomic.
    let existed = path.exists();
    fs::rename(staged.path(), &path).map_err(|e| {
        Error::io(
            &path,
            std::io::Error::new(
                e.kind(),
                format!("rename from {}: {e}", staged.path().display()),
            ),
        )
    })?;
    staged.moved();
    if let Err(e) = fsync_dir(&dir) {
        if !existed {
            let _ = fs::remove_file(&path);
        }
        return Err(e);
    }
    Ok(path)
}

/// Every `*.pack` under `packs_dir/??/`, with the id parsed from its file name, sorted by id.
///
/// Files whose names are not `<64 hex digits>.pack` inside the directory named by their first
/// two digits (and leftover non-directories under `packs_dir`) are skipped with a tracing
/// warning: they are not packs this spool wrote. A missing `packs_dir` gives an empty list.
pub fn list_packs(packs_dir: &Path) -> Result<Vec<(PackId, PathBuf)>> {
    let top = match fs::read_dir(packs_dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(packs_dir, e)),
    };
    let mut out = Vec::new();
    for sub in top {
        let sub = sub.at(packs_dir)?;
        let sub_path = sub.path();
        let sub_name = sub.file_name().to_string_lossy().into_owned();
        if !sub.file_type().at(&sub_path)?.is_dir() {
            tracing::warn!(path = %sub_path.display(), "not a pack directory; skipped");
            continue;
        }
        if sub_name.len() != 2 || !sub_name.bytes().all(|b| b.is_ascii_hexdigit()) {
            tracing::warn!(path = %sub_path.display(), "unexpected directory in packs; skipped");
            continue;
        }
        for f in fs::read_dir(&sub_path).at(&sub_path)? {
            let f = f.at(&sub_path)?;
            let path = f.path();
            let name = f.file_name().to_string_lossy().into_owned();
            let id = name
                .strip_suffix(".pack")
                .filter(|hex| hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
                .and_then(PackId::from_hex)
                .filter(|id| id.to_hex()[..2] == sub_name);
            match id {
                Some(id) if f.file_type().at(&path)?.is_file() => out.push((id, path)),
                _ => tracing::warn!(path = %path.display(), "not a pack file name; skipped"),
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::BlobKind;
    use crate::pack::tests::{spool, write_pack};

    #[test]
    fn list_packs_skips_foreign_names() {
        let s = spool();
        let a = write_pack(&s, &[(BlobKind::Data, b"one".to_vec())]);
        let b = write_pack(&s, &[(BlobKind::Data, b"two".to_vec())]);
        let dir = a.path.parent().unwrap();
        fs::write(dir.join("notes.txt"), b"x").unwrap();
        fs::write(dir.join(format!("{}.pack", "0".repeat(64))), b"x").unwrap(); // wrong dir
        fs::write(s.packs.join("stray"), b"x").unwrap();
        fs::create_dir_all(s.packs.join("zz")).unwrap();
        let mut want = vec![(a.id, a.path), (b.id, b.path)];
        want.sort();
        assert_eq!(list_packs(&s.packs).unwrap(), want);
        assert!(list_packs(&s.packs.join("missing")).unwrap().is_empty());
    }
}
