//! What a reel tape carries, as a directory of files (what `restore -x` extracts from a tape
//! image; the BSD dump codec in `crate::tape::bsd` wraps it into a dump stream):
//!
//! ```text
//! reel/LABEL             "key: value" text: who the tape is, for people with no reel
//! reel/CATALOG           JSON: the dumps it holds (full records), their chains by id and by
//!                        (volume, time), and per dump the chunks it owns that are on the tape;
//!                        sealed under the spool's key when the spool is encrypted
//! reel/packs/<hex>.pack  the packs, in the pack format exactly as in a spool
//! ```
//!
//! Why it is built this way:
//! - A tape carries what each dump *owns* (docs/DESIGN.md, "Levels under deduplication"), each
//!   chunk once per image, packed dump by dump in time order, each dump's manifest chunks
//!   first and then its file chunks in manifest order: a restore reads the tape front to back.
//!   With a media set, chunks already on earlier tapes of the set are left out too.
//! - The packs are ordinary spool packs (same framing and compression, ≤ 32 MiB), so import
//!   verifies them with the spool's own readers and adopts them by copying, and a pack's name
//!   (the blake3 of its bytes) proves the copy.
//! - The CATALOG is JSON because it must be readable in decades with any tool. Dumps are named
//!   by (volume, time) besides their ids, so another spool can resolve bases and chains; ids
//!   in it are the exporting spool's.
//! - A tape from an encrypted spool is as private as the spool: LABEL (who the tape is) stays
//!   readable and names the fingerprint of the key it needs, the CATALOG (file names live in
//!   it, by the dumps' records) is sealed, bound to LABEL, and the packs are sealed packs. A
//!   reader without that key is refused by name before it reads anything else (`key`).
//! - Export streams: chunk bytes pass through one frame (≤ 4 MiB) and one pack writer at a
//!   time. What grows with the tape is only the list of chunk ids (32 bytes each), which the
//!   CATALOG must name anyway.
//! - Import verifies the whole payload before it changes anything, then follows the spool's
//!   write order (pack copied to tmp/, fsynced, renamed, directory fsynced; catalog rows and
//!   the dump records committed in one transaction last). It is idempotent: dumps are matched
//!   by (volume, time), packs by name, tapes by label.
//!
//! The code is cut by job: `format` is the on-tape layout (the CATALOG's JSON types and how
//! reel's records map to them, LABEL, reading both back); `plan` decides what an export
//! writes; `packer` fills frames and packs; `write` writes a payload directory; `verify` reads
//! one back and checks it; `import` adopts a verified payload into a spool; `key` is the key
//! a tape is read with.

mod format;
mod import;
mod key;
mod packer;
mod plan;
mod verify;
mod write;

pub use format::{
    CATALOG_FILE, DumpRef, HexId, KEY_FINGERPRINT, LABEL_FILE, ManifestChunk, PACKS_DIR,
    PAYLOAD_DIR, PAYLOAD_FORMAT, TapeCatalog, TapeDump, TapePack, read_catalog, tape_fingerprint,
    validate_label,
};
pub use import::{ImportSummary, import_payload};
pub use key::{TapeKey, same_key_as_spool};
pub use packer::PACK_MAX;
pub use plan::{ExportPlan, PlannedDump, plan_export};
pub use verify::{VerifiedPayload, verify_payload, verify_payload_with};
pub use write::{DIR_BLOCK, PayloadSummary, tape_record, whole_file_bytes, write_payload};

#[cfg(test)]
mod tests {
    use super::write::STAGE_DIR;
    use super::*;
    use crate::catalog::DumpRecord;
    use crate::dump::{DumpOptions, dump_volume};
    use crate::pack;
    use crate::progress::NoProgress;
    use crate::restore::{RestoreOptions, restore_dump};
    use crate::spool::Spool;
    use crate::tape::media;
    use std::collections::BTreeMap;
    use std::fs;
    use std::path::{Path, PathBuf};

    pub(super) const DAY: i64 = 86_400 * 1_000_000_000;
    pub(super) const T0: i64 = 1_700_000_000 * 1_000_000_000;

    /// Deterministic bytes that compress a little (so frames and compression both run).
    pub(super) fn bytes(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 4 == 0 { b'a' } else { x as u8 }
            })
            .collect()
    }

    pub(super) fn build_tree(root: &Path) {
        fs::create_dir_all(root.join("sub/deep")).unwrap();
        fs::write(root.join("big"), bytes(1, 600_000)).unwrap();
        fs::write(root.join("small"), b"hello tape").unwrap();
        fs::write(root.join("sub/a"), bytes(2, 40_000)).unwrap();
        fs::write(root.join("sub/deep/b"), bytes(3, 90_000)).unwrap();
        fs::write(root.join("empty"), b"").unwrap();
    }

    /// Day 2: one file grows a tail, one is new, one is gone.
    pub(super) fn change_tree(root: &Path) {
        let mut big = bytes(1, 600_000);
        big.extend(bytes(9, 20_000));
        fs::write(root.join("big"), big).unwrap();
        fs::write(root.join("sub/new"), bytes(4, 30_000)).unwrap();
        fs::remove_file(root.join("small")).unwrap();
    }

    /// Relative path -> file content (None for a directory).
    pub(super) fn snapshot(root: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                let rel = p.strip_prefix(root).unwrap().to_path_buf();
                if p.is_dir() {
                    out.insert(rel, None);
                    stack.push(p);
                } else {
                    out.insert(rel, Some(fs::read(&p).unwrap()));
                }
            }
        }
        out
    }

    pub(super) struct Fixture {
        pub(super) tmp: tempfile::TempDir,
        pub(super) spool: Spool,
        pub(super) day0: BTreeMap<PathBuf, Option<Vec<u8>>>,
        pub(super) day1: BTreeMap<PathBuf, Option<Vec<u8>>>,
    }

    pub(super) fn dump(spool: &Spool, level: u8, t: i64) -> DumpRecord {
        let opts = DumpOptions {
            level,
            time_ns: Some(t),
            reread: false,
        };
        dump_volume(spool, "v", &opts, &NoProgress).unwrap().record
    }

    /// A spool with volume v: a level 0 on day 0 and a level 1 on day 1.
    pub(super) fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let vol = tmp.path().join("vol");
        build_tree(&vol);
        let mut spool = Spool::init(&tmp.path().join("spool")).unwrap();
        spool.add_volume("v", &vol).unwrap();
        let day0 = snapshot(&vol);
        dump(&spool, 0, T0);
        change_tree(&vol);
        let day1 = snapshot(&vol);
        dump(&spool, 1, T0 + DAY);
        Fixture {
            tmp,
            spool,
            day0,
            day1,
        }
    }

    pub(super) fn export(
        f: &Fixture,
        set: Option<&str>,
        label: &str,
        seq: u32,
    ) -> (PathBuf, PayloadSummary) {
        let plan = plan_export(&f.spool, &[], set).unwrap();
        let dir = f.tmp.path().join(format!("tape-{label}"));
        let s = write_payload(&f.spool, &plan, label, set, seq, &dir, &NoProgress).unwrap();
        (dir, s)
    }

    pub(super) fn record(f: &Fixture, s: &PayloadSummary, dir: &Path) {
        let (rec, chunks) = tape_record(s, dir, &plain_key()).unwrap();
        let w = f.spool.catalog.writer().unwrap();
        w.record_tape(&rec.label, &rec, chunks.into_iter()).unwrap();
        w.commit().unwrap();
    }

    /// The key a plain spool reads its tapes with.
    pub(super) fn plain_key() -> TapeKey {
        TapeKey::new(crate::crypto::Keys::plain(), "the test's key")
    }

    pub(super) fn spool_is_empty(s: &Spool) {
        assert!(s.catalog.dumps(None).unwrap().is_empty());
        assert!(s.catalog.packs().unwrap().is_empty());
        assert!(pack::list_packs(&s.packs_dir()).unwrap().is_empty());
        assert!(media::tapes(s).unwrap().is_empty());
    }

    #[test]
    fn export_verify_import_restore_round_trip() {
        let f = fixture();
        let plan = plan_export(&f.spool, &[], None).unwrap();
        assert_eq!(plan.dumps.len(), 2);
        // Each dump carries exactly what it owns; the level 1 far less than the level 0.
        for (d, p) in plan.dumps.iter().zip(&plan.per_dump) {
            assert_eq!(p.chunks, f.spool.catalog.owned_summary(d.id).unwrap().0);
        }
        assert!(plan.per_dump[1].chunks * 3 < plan.per_dump[0].chunks);

        let (dir, s) = export(&f, None, "T-1", 1);
        assert_eq!(s.files[0], PathBuf::from(LABEL_FILE));
        assert_eq!(s.files[1], PathBuf::from(CATALOG_FILE));
        assert_eq!(s.files.len(), 2 + s.packs.len());
        assert!(s.per_dump[1].1 < s.per_dump[0].1);
        // The level 1's whole-file baseline: the changed and new files plus directories.
        assert_eq!(s.whole_file[1].1, 620_000 + 30_000 + 3 * DIR_BLOCK);
        assert!(!dir.join(STAGE_DIR).exists());
        let label = fs::read_to_string(dir.join(LABEL_FILE)).unwrap();
        assert!(
            label.contains("label: T-1\n") && label.contains(" level 1\n"),
            "{label}"
        );

        let cat = verify_payload(&dir, &plain_key()).unwrap();
        assert_eq!(cat.dumps.len(), 2);
        assert_eq!(cat.dumps[1].tapes_needed, ["T-1"]);
        assert_eq!(cat.dumps[1].base_ref.as_ref().unwrap().time_ns, T0);

        // Into an empty spool.
        let tmp2 = tempfile::tempdir().unwrap();
        let target = Spool::init(&tmp2.path().join("spool")).unwrap();
        let sum = import_payload(&target, &dir).unwrap();
        assert_eq!(sum.dumps_added.len(), 2);
        assert!(sum.tape_recorded && sum.packs_adopted == s.packs.len() as u64);
        let got = target.catalog.dumps(Some("v")).unwrap();
        assert_eq!(
            got.iter().map(|d| (d.time_ns, d.level)).collect::<Vec<_>>(),
            [(T0, 0), (T0 + DAY, 1)]
        );
        assert_eq!(got[1].base, Some(got[0].id));
        assert_eq!(got[1].chain, vec![got[0].id]);
        for (d, want) in got.iter().zip([&f.day0, &f.day1]) {
            let out = tmp2.path().join(format!("restore-{}", d.id));
            restore_dump(&target, d, &out, &RestoreOptions::default(), &NoProgress).unwrap();
            assert_eq!(&snapshot(&out), want, "dump {}", d.id);
        }
        let tapes = media::tapes(&target).unwrap();
        assert_eq!(tapes.len(), 1);
        assert!(media::dump_on_tape(&target, got[1].id).unwrap());
        assert_eq!(media::tapes_needed(&target, &got[1]).unwrap(), ["T-1"]);

        // Twice: nothing more.
        let again = import_payload(&target, &dir).unwrap();
        assert!(again.dumps_added.is_empty() && again.packs_adopted == 0);
        assert!(!again.tape_recorded);
        assert_eq!(again.dumps_present, 2);
        assert_eq!(target.catalog.dumps(None).unwrap().len(), 2);
    }
}
