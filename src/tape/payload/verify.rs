//! Verifying a payload directory: LABEL against CATALOG, every pack against its name, every
//! chunk list against the packs, every manifest on the tape as a restore reads it.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::catalog::ChunkLoc;
use crate::crypto::Keys;
use crate::error::Damaged;
use crate::error::IoContext;
use crate::frame;
use crate::manifest::ManifestReader;
use crate::pack::PackReader;
use crate::spool::validate_volume_name;
use crate::store::ChunkReader;
use crate::tape::payload::format::{
    CATALOG_FILE, HexId, KEY_FINGERPRINT, LABEL_FILE, PACKS_DIR, PAYLOAD_FORMAT, TapeCatalog,
    dump_name, open_catalog, pack_file, read_label, validate_label,
};
use crate::tape::payload::key::TapeKey;
use crate::{ChunkId, Error, Result};

/// Read a payload directory back with `key`: parse LABEL and open CATALOG (a tape sealed
/// under another key is refused, naming both), check every pack's name against its bytes,
/// every blob's chunk hash (frames: every chunk inside), the catalog's chunk lists against
/// the packs, and every manifest held on the tape as strictly as a restore reads it. Changes
/// nothing.
pub fn verify_payload(dir: &Path, key: &TapeKey) -> Result<TapeCatalog> {
    Ok(verify_payload_with(dir, key, None)?.catalog)
}

/// A payload that `verify_payload_with` found good.
#[derive(Clone, Debug)]
pub struct VerifiedPayload {
    pub catalog: TapeCatalog,
    /// Indexes into `catalog.dumps` of the dumps whose manifest could not be read whole, and so
    /// was not checked: some of its chunks are neither on this tape nor in the spool given (a
    /// level N's manifest shares chunks with its base's, which may be on an earlier tape).
    pub manifests_elsewhere: Vec<usize>,
    /// The keys the tape was read with: the key it is sealed under, plain for a plain tape.
    pub keys: Keys,
}

/// `verify_payload`, reading the manifest chunks that are not on the tape from `spool` when
/// given (the base's chunks of an incremental whose base is on an earlier tape), a spool's
/// reader with its keys: it is used only when they are the tape's, since chunk ids are keyed.
/// Every dump's manifest that can be read whole is read through [`ManifestReader`], the
/// gatekeeper a restore reads it with: unsafe paths, a broken tree, extents that do not add up
/// to a file's size, a bad trailer all fail the tape, naming the dump.
pub fn verify_payload_with(
    dir: &Path,
    key: &TapeKey,
    spool: Option<(&ChunkReader, &Keys)>,
) -> Result<VerifiedPayload> {
    let (cat, keys) = open_catalog(dir, key)?;
    check_label(dir, &cat)?;
    check_dump_records(dir, &cat)?;
    let listed: HashSet<HexId> = cat.packs.iter().map(|p| p.name).collect();
    check_pack_files(dir, &cat, &listed)?;
    let tape = read_packs(dir, &cat, &keys)?;
    check_dump_chunks(dir, &cat, &tape, &listed)?;
    let spool = spool
        .filter(|(_, k)| k.fingerprint() == keys.fingerprint())
        .map(|(r, _)| r);
    let manifests_elsewhere = check_manifests(&cat, &tape, spool)?;
    Ok(VerifiedPayload {
        catalog: cat,
        manifests_elsewhere,
        keys,
    })
}

/// The LABEL says what the CATALOG says.
fn check_label(dir: &Path, cat: &TapeCatalog) -> Result<()> {
    let lpath = dir.join(LABEL_FILE);
    let (label, label_dumps) = read_label(dir)?;
    let mismatch = |what: &str| {
        Error::damaged(
            Damaged::File(lpath.clone()),
            format!(
                "{}: {what} differs from the CATALOG's; the tape is damaged",
                lpath.display()
            ),
        )
    };
    if label.get("format").map(String::as_str) != Some(&PAYLOAD_FORMAT.to_string()) {
        return Err(mismatch("format"));
    }
    if label.get("label") != Some(&cat.label) {
        return Err(mismatch("label"));
    }
    if label.get("media_set").map(String::as_str) != Some(cat.media_set.as_deref().unwrap_or("")) {
        return Err(mismatch("media_set"));
    }
    if label.get("sequence") != Some(&cat.sequence.to_string()) {
        return Err(mismatch("sequence"));
    }
    if label.get(KEY_FINGERPRINT) != cat.key_fingerprint.as_ref() {
        return Err(mismatch(KEY_FINGERPRINT));
    }
    if label_dumps.len() != cat.dumps.len() {
        return Err(mismatch("the list of dumps"));
    }
    validate_label(&cat.label).map_err(|e| {
        Error::damaged(
            Damaged::File(dir.join(CATALOG_FILE)),
            format!("{}: {e}", dir.join(CATALOG_FILE).display()),
        )
    })?;
    Ok(())
}

/// Dump records: plain names, consistent chains.
fn check_dump_records(dir: &Path, cat: &TapeCatalog) -> Result<()> {
    let cpath = dir.join(CATALOG_FILE);
    for d in &cat.dumps {
        let bad = |what: &str| {
            Error::damaged(
                Damaged::File(cpath.clone()),
                format!(
                    "{}: dump {}: {what}; the tape is damaged",
                    cpath.display(),
                    dump_name(&d.volume, d.time_ns)
                ),
            )
        };
        validate_volume_name(&d.volume).map_err(|_| bad("bad volume name"))?;
        if d.level > crate::level::MAX_LEVEL
            || d.chain.len() != d.chain_refs.len()
            || d.base.is_some() != d.base_ref.is_some()
            || d.base_ref.as_ref() != d.chain_refs.last()
        {
            return Err(bad("level, base and chain do not agree"));
        }
    }
    Ok(())
}

/// The packs on disk are exactly the ones listed.
fn check_pack_files(dir: &Path, cat: &TapeCatalog, listed: &HashSet<HexId>) -> Result<()> {
    let pdir = dir.join(PACKS_DIR);
    let mut on_disk = 0usize;
    if pdir.exists() {
        for e in fs::read_dir(&pdir).at(&pdir)? {
            let e = e.at(&pdir)?;
            let name = e.file_name().to_string_lossy().into_owned();
            let ok = name
                .strip_suffix(".pack")
                .and_then(ChunkId::from_hex)
                .is_some_and(|id| listed.contains(&HexId(id.0)));
            if !ok || !e.file_type().at(e.path())?.is_file() {
                return Err(Error::damaged(
                    Damaged::File(e.path()),
                    format!(
                        "{}: not a pack the CATALOG lists; the tape is damaged or not a reel tape",
                        e.path().display()
                    ),
                ));
            }
            on_disk += 1;
        }
    }
    if on_disk != cat.packs.len() {
        return Err(Error::damaged(
            Damaged::File(pdir.clone()),
            format!(
                "{}: the CATALOG lists {} packs but {on_disk} are present; the tape is incomplete",
                pdir.display(),
                cat.packs.len()
            ),
        ));
    }
    Ok(())
}

/// Every pack matches its name and its CATALOG entry; where each chunk on the tape is.
fn read_packs(dir: &Path, cat: &TapeCatalog, keys: &Keys) -> Result<TapeChunks> {
    let mut present: HashMap<[u8; 32], ChunkLoc> = HashMap::new();
    let mut paths: Vec<PathBuf> = Vec::new();
    for p in &cat.packs {
        let path = pack_file(dir, &p.name);
        let r = PackReader::open(&path, keys)?;
        if r.hash_file()?.0 != p.name.0 {
            return Err(Error::damaged(
                Damaged::Pack {
                    path: path.clone(),
                    offset: None,
                },
                if keys.is_encrypted() {
                    // The sealed CATALOG names the pack by the blake3 of its bytes, so a pack
                    // that does not match its name fails authentication like any sealed blob.
                    format!(
                        "pack {}: authentication failed: its bytes do not match the name the sealed CATALOG gives it; the tape was changed or is damaged",
                        path.display()
                    )
                } else {
                    format!(
                        "pack {}: its bytes do not match its name; the tape is damaged",
                        path.display()
                    )
                },
            ));
        }
        let (entries, chunks) = crate::store::open_pack_chunks(&r)?;
        if r.size() != p.size || entries.len() as u64 != p.blobs || chunks.len() as u64 != p.chunks
        {
            return Err(Error::damaged(
                Damaged::Pack {
                    path: path.clone(),
                    offset: None,
                },
                format!(
                    "pack {}: size, blob or chunk count differs from the CATALOG's; the tape is damaged",
                    path.display()
                ),
            ));
        }
        let no = paths.len() as u64;
        for (id, loc) in chunks {
            present
                .entry(id.0)
                .or_insert(ChunkLoc { pack_no: no, ..loc });
        }
        paths.push(path);
    }
    Ok(TapeChunks {
        paths,
        at: present,
        open: std::cell::RefCell::new(None),
        keys: keys.clone(),
    })
}

/// Every chunk and pack a dump names is on the tape.
fn check_dump_chunks(
    dir: &Path,
    cat: &TapeCatalog,
    tape: &TapeChunks,
    listed: &HashSet<HexId>,
) -> Result<()> {
    let cpath = dir.join(CATALOG_FILE);
    for d in &cat.dumps {
        if let Some(c) = d.chunks.iter().find(|c| !tape.at.contains_key(&c.0)) {
            return Err(Error::damaged(
                Damaged::File(cpath.clone()),
                format!(
                    "{}: dump {} lists chunk {} but no pack on the tape holds it; the tape is damaged",
                    cpath.display(),
                    dump_name(&d.volume, d.time_ns),
                    ChunkId(c.0).short()
                ),
            ));
        }
        if let Some(p) = d.packs.iter().find(|p| !listed.contains(p)) {
            return Err(Error::damaged(
                Damaged::File(cpath.clone()),
                format!(
                    "{}: dump {} names pack {} which the tape does not list",
                    cpath.display(),
                    dump_name(&d.volume, d.time_ns),
                    ChunkId(p.0).short()
                ),
            ));
        }
    }
    Ok(())
}

/// Chunks read back out of a payload's packs, at the locations `pack_chunks` found (pack
/// numbers index `paths`); one pack open at a time.
struct TapeChunks {
    paths: Vec<PathBuf>,
    at: HashMap<[u8; 32], ChunkLoc>,
    open: std::cell::RefCell<Option<(u64, PackReader)>>,
    keys: Keys,
}

impl TapeChunks {
    /// Read and verify chunk `id`, which must be on the tape.
    fn read(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let loc = *self.at.get(&id.0).ok_or_else(|| {
            Error::damaged(
                Damaged::Chunk(*id),
                format!("chunk {} is not on the tape", id.short()),
            )
        })?;
        let mut open = self.open.borrow_mut();
        if open.as_ref().is_none_or(|(no, _)| *no != loc.pack_no) {
            let path = &self.paths[loc.pack_no as usize];
            *open = Some((loc.pack_no, PackReader::open(path, &self.keys)?));
        }
        let (_, p) = open.as_ref().expect("pack opened");
        let Some(slot) = loc.frame else {
            return p.read_blob(&loc.blob_entry(*id));
        };
        let opened = p.read_opened(&loc.blob_entry(*id))?;
        frame::slice(
            &self.keys,
            &loc.decode_frame(&opened)?,
            id,
            slot.inner,
            loc.raw_len,
        )
    }
}

/// A manifest's bytes, chunk by chunk, from the tape or else from the spool.
struct ManifestBytes<'a> {
    chunks: std::vec::IntoIter<ChunkId>,
    tape: &'a TapeChunks,
    spool: Option<&'a ChunkReader<'a>>,
    what: String,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ManifestBytes<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            let Some(id) = self.chunks.next() else {
                return Ok(0);
            };
            let got = match self.spool {
                Some(s) if !self.tape.at.contains_key(&id.0) => s.read(&id, &|| self.what.clone()),
                _ => self.tape.read(&id),
            };
            self.buf = got.map_err(std::io::Error::other)?;
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Read every dump's manifest that the tape (and `spool`) hold whole through the manifest
/// reader, to its trailer. Returns the indexes of the dumps whose manifest is partly elsewhere.
fn check_manifests(
    cat: &TapeCatalog,
    tape: &TapeChunks,
    spool: Option<&ChunkReader>,
) -> Result<Vec<usize>> {
    let mut elsewhere = Vec::new();
    for (i, d) in cat.dumps.iter().enumerate() {
        let chunks: Vec<ChunkId> = d.manifest.iter().map(|m| ChunkId(m.id.0)).collect();
        let mut whole = true;
        for id in &chunks {
            if !tape.at.contains_key(&id.0) {
                match spool {
                    Some(s) if s.locate(id)?.is_some() => {}
                    _ => whole = false,
                }
            }
        }
        if !whole {
            elsewhere.push(i);
            continue;
        }
        let name = dump_name(&d.volume, d.time_ns);
        let refused = |e: Error| {
            Error::damaged(
                Damaged::Manifest {
                    dump: None,
                    offset: None,
                },
                format!(
                    "tape {}: dump {name}: its manifest is refused, as a restore would refuse it: \
                 {e}; the tape is damaged or was crafted",
                    cat.label
                ),
            )
        };
        let bytes = ManifestBytes {
            chunks: chunks.into_iter(),
            tape,
            spool,
            what: format!("manifest of dump {name}"),
            buf: Vec::new(),
            pos: 0,
        };
        for entry in ManifestReader::new(bytes).map_err(refused)? {
            entry.map_err(refused)?;
        }
    }
    Ok(elsewhere)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;
    use crate::spool::Spool;
    use crate::tape::payload::tests::{export, fixture, plain_key, spool_is_empty};
    use crate::tape::payload::{
        ManifestChunk, import_payload, plan_export, read_catalog, write_payload,
    };

    #[test]
    fn a_flipped_byte_fails_verify_and_import_changes_nothing() {
        let f = fixture();
        let (dir, s) = export(&f, None, "T-1", 1);
        let pack = dir.join(&s.files[2]);
        let mut b = fs::read(&pack).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0x40;
        fs::write(&pack, b).unwrap();
        assert!(matches!(
            verify_payload(&dir, &plain_key()),
            Err(Error::Corrupt { .. })
        ));
        let tmp2 = tempfile::tempdir().unwrap();
        let target = Spool::init(&tmp2.path().join("spool")).unwrap();
        assert!(import_payload(&target, &dir).is_err());
        spool_is_empty(&target);
    }

    #[test]
    fn a_catalog_naming_a_missing_chunk_fails() {
        let f = fixture();
        let (dir, _) = export(&f, None, "T-1", 1);
        let mut cat = read_catalog(&dir, &plain_key()).unwrap();
        cat.dumps[1]
            .chunks
            .push(HexId(ChunkId::of(b"not on this tape").0));
        fs::write(
            dir.join(CATALOG_FILE),
            serde_json::to_vec_pretty(&cat).unwrap(),
        )
        .unwrap();
        let err = verify_payload(&dir, &plain_key()).unwrap_err().to_string();
        assert!(err.contains("no pack on the tape holds it"), "{err}");
        let tmp2 = tempfile::tempdir().unwrap();
        let target = Spool::init(&tmp2.path().join("spool")).unwrap();
        assert!(import_payload(&target, &dir).is_err());
        spool_is_empty(&target);
        // A stray file in packs/ is refused too.
        cat.dumps[1].chunks.pop();
        fs::write(
            dir.join(CATALOG_FILE),
            serde_json::to_vec_pretty(&cat).unwrap(),
        )
        .unwrap();
        verify_payload(&dir, &plain_key()).unwrap();
        fs::write(dir.join(PACKS_DIR).join("stray"), b"x").unwrap();
        assert!(verify_payload(&dir, &plain_key()).is_err());
    }

    /// A manifest with chunks neither on the tape nor in the spool cannot be read, so it is
    /// not checked: verify says which dump, and import refuses to add that dump unchecked. A
    /// spool that holds those chunks lets verify read and check it.
    #[test]
    fn a_manifest_partly_elsewhere_is_checked_against_the_spool_or_refused_by_import() {
        let f = fixture();
        // A tape of the level 0 only, whose CATALOG names the level 1's manifest as the
        // level 0's: chunks the source spool holds and the tape does not.
        let mut plan = plan_export(&f.spool, &[], None).unwrap();
        plan.dumps.truncate(1);
        plan.per_dump.truncate(1);
        let dir = f.tmp.path().join("tape-A");
        write_payload(&f.spool, &plan, "A", None, 1, &dir, &NoProgress).unwrap();
        let mut cat = read_catalog(&dir, &plain_key()).unwrap();
        let l1 = f.spool.catalog.dumps(None).unwrap()[1].clone();
        let on_tape: HashSet<[u8; 32]> = cat.dumps[0].chunks.iter().map(|c| c.0).collect();
        assert!(l1.manifest.iter().all(|(id, _)| !on_tape.contains(id)));
        let write = |cat: &TapeCatalog| {
            fs::write(
                dir.join(CATALOG_FILE),
                serde_json::to_vec_pretty(cat).unwrap(),
            )
            .unwrap()
        };
        let manifest_of = |chunks: &[([u8; 32], u32)]| {
            chunks
                .iter()
                .map(|(id, len)| ManifestChunk {
                    id: HexId(*id),
                    len: *len,
                })
                .collect::<Vec<_>>()
        };
        cat.dumps[0].manifest = manifest_of(&l1.manifest);
        write(&cat);
        assert_eq!(
            verify_payload_with(&dir, &plain_key(), None)
                .unwrap()
                .manifests_elsewhere,
            [0]
        );
        let source = ChunkReader::new(&f.spool).unwrap();
        let v = verify_payload_with(&dir, &plain_key(), Some((&source, f.spool.keys()))).unwrap();
        assert!(v.manifests_elsewhere.is_empty(), "read from the spool");
        let tmp2 = tempfile::tempdir().unwrap();
        let target = Spool::init(&tmp2.path().join("spool")).unwrap();
        let err = import_payload(&target, &dir).unwrap_err().to_string();
        assert!(err.contains("cannot be checked"), "{err}");
        spool_is_empty(&target);

        // A chunk that is on the tape but no manifest (a data chunk of the level 0): read,
        // and refused.
        let l0 = f.spool.catalog.dumps(None).unwrap()[0].clone();
        let data = cat.dumps[0]
            .chunks
            .iter()
            .map(|c| c.0)
            .find(|c| l0.manifest.iter().all(|(id, _)| id != c))
            .unwrap();
        cat.dumps[0].manifest = manifest_of(&[(data, 1)]);
        write(&cat);
        let err = verify_payload(&dir, &plain_key()).unwrap_err().to_string();
        assert!(err.contains("its manifest is refused"), "{err}");
        assert!(import_payload(&target, &dir).is_err());
        spool_is_empty(&target);
    }
}
