//! A reel tape image: the payload directory (label, catalog, packs; see `payload`) carried as
//! the files of a level 0 BSD dump, so that the stock `restore -t` lists it and `restore -x`
//! extracts it, and `reel import` reads it back.
//!
//! The image's tree is fixed: `/reel` (inode 3) holding `LABEL`, `CATALOG` and `packs/`
//! (inode 4) with the packs. Directories come first, as the format requires; files follow in
//! the order the payload lists them (label, catalog, then packs in the order a restore reads
//! them), so one pass front to back reads everything in the right order.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::Damaged;
use crate::error::IoContext;
use crate::tape::bsd::{
    BitMap, DirEntry, DumpInfo, DumpReader, DumpWriter, InodeKind, InodeMeta, Piece, Target,
    WriteSummary,
};
use crate::{Error, Result};

const ROOT: u32 = 2;
const REEL_DIR: u32 = 3;
const PACKS_DIR: u32 = 4;
const FIRST_FILE: u32 = 5;
const DT_DIR: u8 = 4;
/// The payload's folders and files as the image records them, owner-only like the spool they
/// come from: `restore -x` of a reel tape makes them so.
const DIR_MODE: u32 = 0o040000 | crate::fsutil::DIR_MODE;
const FILE_MODE: u32 = 0o100000 | crate::fsutil::FILE_MODE;
const DT_REG: u8 = 8;

fn meta(mode: u32, size: u64, now_ns: i64) -> InodeMeta {
    InodeMeta {
        mode,
        uid: 0,
        gid: 0,
        nlink: 1,
        size,
        atime_ns: now_ns,
        mtime_ns: now_ns,
        ctime_ns: now_ns,
        rdev: 0,
    }
}

/// Write the payload in `dir` (its `files`, relative paths under `reel/`) as a BSD dump to
/// `target`.
pub fn write_image(
    dir: &Path,
    files: &[PathBuf],
    label: &str,
    target: Target,
    ntrec: u32,
) -> Result<WriteSummary> {
    let now_ns = crate::timefmt::now_ns();
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let info = DumpInfo {
        level: 0,
        date: now_ns.div_euclid(1_000_000_000),
        ddate: 0,
        label: label.chars().take(15).collect(),
        host,
        filesys: "reel tape".into(),
        dev: "reel".into(),
        ntrec,
    };
    // Names: LABEL and CATALOG under reel/, packs under reel/packs/.
    let mut top = Vec::new();
    let mut packs = Vec::new();
    for (i, rel) in files.iter().enumerate() {
        let ino = FIRST_FILE + i as u32;
        let name = rel
            .file_name()
            .ok_or_else(|| Error::usage(format!("payload file {} has no name", rel.display())))?;
        let entry = DirEntry {
            name: std::os::unix::ffi::OsStrExt::as_bytes(name).to_vec(),
            ino,
            dtype: DT_REG,
        };
        if rel.parent().and_then(|p| p.file_name()) == Some(std::ffi::OsStr::new("packs")) {
            packs.push(entry);
        } else {
            top.push(entry);
        }
    }
    top.push(DirEntry {
        name: b"packs".to_vec(),
        ino: PACKS_DIR,
        dtype: DT_DIR,
    });
    let maxino = FIRST_FILE + files.len() as u32;
    let mut used = BitMap::new(maxino);
    for ino in ROOT..maxino {
        used.set(ino);
    }
    let mut w = DumpWriter::create(target, info, maxino, &used, &used)?;
    w.dir(
        ROOT,
        ROOT,
        &meta(DIR_MODE, 0, now_ns),
        &[DirEntry {
            name: b"reel".to_vec(),
            ino: REEL_DIR,
            dtype: DT_DIR,
        }],
    )?;
    w.dir(REEL_DIR, ROOT, &meta(DIR_MODE, 0, now_ns), &top)?;
    w.dir(PACKS_DIR, REEL_DIR, &meta(DIR_MODE, 0, now_ns), &packs)?;
    for (i, rel) in files.iter().enumerate() {
        let path = dir.join(rel);
        let mut f = File::open(&path).at(&path)?;
        let size = f.metadata().at(&path)?.len();
        w.file(
            FIRST_FILE + i as u32,
            &meta(FILE_MODE, size, now_ns),
            &mut f,
            &[],
        )?;
    }
    w.finish()
}

/// Read a tape image (its volumes in order) and write its files under `dir`, which must be
/// empty: `reel/LABEL`, `reel/CATALOG`, `reel/packs/*`. Anything else in the image (another
/// tree, a name that could escape, a device) is refused: it is not a reel tape.
pub fn extract_image(volumes: &[PathBuf], dir: &Path) -> Result<()> {
    let what = volumes
        .first()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let not_reel = |why: &str| {
        Error::damaged(
            Damaged::Image {
                path: volumes.first().cloned().unwrap_or_default(),
                record: None,
            },
            format!(
                "{what} is a BSD dump but not a reel tape ({why}); to read a plain dump into the spool use `reel ingest-dump`"
            ),
        )
    };
    let mut r = DumpReader::open(volumes)?;
    // inode -> relative path of the file to write, from the directories.
    let mut names: std::collections::HashMap<u32, PathBuf> = std::collections::HashMap::new();
    let mut dirs: std::collections::HashMap<u32, PathBuf> = std::collections::HashMap::new();
    dirs.insert(ROOT, PathBuf::new());
    while let Some(inode) = r.next()? {
        match &inode.kind {
            InodeKind::Dir(entries) => {
                let Some(here) = dirs.get(&inode.ino).cloned() else {
                    return Err(not_reel("a directory outside the tree"));
                };
                for e in entries {
                    if e.name == b"." || e.name == b".." {
                        continue;
                    }
                    let name = std::str::from_utf8(&e.name)
                        .map_err(|_| not_reel("a name that is not UTF-8"))?;
                    let allowed = match here.to_str() {
                        Some("") => name == "reel",
                        Some("reel") => matches!(name, "LABEL" | "CATALOG" | "packs"),
                        Some("reel/packs") => {
                            name.ends_with(".pack")
                                && name.len() == 69
                                && name[..64].bytes().all(|b| b.is_ascii_hexdigit())
                        }
                        _ => false,
                    };
                    if !allowed {
                        return Err(not_reel(&format!("unexpected entry {name:?}")));
                    }
                    let path = here.join(name);
                    if e.dtype == DT_DIR {
                        dirs.insert(e.ino, path);
                    } else {
                        names.insert(e.ino, path);
                    }
                }
            }
            InodeKind::File => {
                let Some(rel) = names.get(&inode.ino) else {
                    return Err(not_reel("a file no directory names"));
                };
                let path = dir.join(rel);
                if let Some(parent) = path.parent() {
                    crate::fsutil::create_dir_all(parent).at(parent)?;
                }
                let mut out = std::io::BufWriter::new(crate::fsutil::create_file(&path).at(&path)?);
                let mut written = 0u64;
                while let Some(p) = r.piece()? {
                    match p {
                        Piece::Data(b) => {
                            out.write_all(b).at(&path)?;
                            written += b.len() as u64;
                        }
                        Piece::Hole(n) => {
                            out.write_all(&vec![0u8; n as usize]).at(&path)?;
                            written += n;
                        }
                    }
                }
                if written != inode.meta.size {
                    return Err(Error::damaged(
                        Damaged::Image {
                            path: volumes.first().cloned().unwrap_or_default(),
                            record: None,
                        },
                        format!(
                            "{what}: {} holds {written} bytes, its header says {}",
                            rel.display(),
                            inode.meta.size
                        ),
                    ));
                }
                out.into_inner()
                    .map_err(|e| Error::io(&path, e.into_error()))?
                    .sync_all()
                    .at(&path)?;
            }
            _ => return Err(not_reel("a symlink or special file")),
        }
    }
    if !dir.join("reel/LABEL").exists() || !dir.join("reel/CATALOG").exists() {
        return Err(not_reel("no reel/LABEL or reel/CATALOG"));
    }
    Ok(())
}
