//! Deduplication: what a dump adds to the spool is what changed, at sub-file granularity.

mod common;

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use common::*;

fn stored(spool: &Spool, idx: usize) -> (u64, u64, u64) {
    let d = &spool.list_json()[idx];
    (
        d["stored_bytes"].as_u64().unwrap(),
        d["logical_bytes"].as_u64().unwrap(),
        d["new_chunks"].as_u64().unwrap(),
    )
}

fn write_file(p: &Path, data: &[u8]) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

#[test]
fn second_full_of_an_unchanged_volume_adds_under_one_percent() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    rich_tree(&vol);
    let spool = spool_with_full_dump(&vol);
    spool.run(["dump", "v", "--level", "0", "--date", "2026-11-02"]);
    let (added, logical, _) = stored(&spool, 1);
    assert!(
        added * 100 < logical,
        "second level 0 added {added} of {logical} bytes"
    );
    // The same content in a second volume is stored once too.
    let vol2 = work.path().join("vol2");
    snapshot(&vol, &vol2);
    spool.add_volume("w", &vol2);
    spool.run(["dump", "w", "--level", "0", "--date", "2026-11-02"]);
    let (added, logical, _) = stored(&spool, 2);
    assert!(
        added * 100 < logical,
        "an identical volume added {added} of {logical} bytes"
    );
    // Content shared by files inside one dump is stored once.
    let vol3 = work.path().join("vol3");
    let data = Rng::new(3).bytes(4 << 20);
    for i in 0..4 {
        write_file(&vol3.join(format!("copy{i}")), &data);
    }
    spool.add_volume("x", &vol3);
    spool.run(["dump", "x", "--level", "0", "--date", "2026-11-02"]);
    let (added, _, _) = stored(&spool, 3);
    assert!(
        added < (4 << 20) + (512 << 10),
        "four copies of 4 MiB took {added} bytes"
    );
}

#[test]
fn eight_byte_insertion_in_a_100_mb_file_adds_a_few_chunks() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    let mut data = Rng::new(100).bytes(100_000_000);
    write_file(&vol.join("big.bin"), &data);
    let spool = spool_with_full_dump(&vol);
    data.splice(50_000_000..50_000_000, *b"INSERTED");
    write_file(&vol.join("big.bin"), &data);
    spool.run(["dump", "v", "--level", "1", "--date", "2026-11-02"]);
    let (added, _, new_chunks) = stored(&spool, 1);
    // A chunk or two around the insertion, the manifest's changed chunk, the dump record.
    assert!(
        new_chunks <= 6,
        "{new_chunks} new chunks for an 8-byte insertion"
    );
    assert!(added < 512 << 10, "an 8-byte insertion added {added} bytes");
    let target = work.path().join("r");
    spool.run(["restore", "v", "--to", target.to_str().unwrap()]);
    assert!(
        fs::read(target.join("big.bin")).unwrap() == data,
        "restored bytes differ"
    );
}

#[test]
fn database_file_with_one_percent_of_pages_rewritten_adds_under_five_percent() {
    const PAGES: u64 = 32_768; // 256 MiB of 8 KiB pages
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    fs::create_dir_all(&vol).unwrap();
    let db = vol.join("db.dat");
    {
        let mut f = fs::File::create(&db).unwrap();
        let mut rng = Rng::new(256);
        for p in 0..PAGES {
            // Pages of incompressible data, so compression cannot hide what the chunking costs.
            let mut page = rng.bytes(8192);
            page[..8].copy_from_slice(&p.to_le_bytes());
            f.write_all(&page).unwrap();
        }
    }
    let spool = spool_with_full_dump(&vol);
    {
        let mut f = OpenOptions::new().write(true).open(&db).unwrap();
        let mut rng = Rng::new(7);
        for _ in 0..PAGES / 100 {
            let p = rng.below(PAGES);
            f.seek(SeekFrom::Start(p * 8192)).unwrap();
            f.write_all(&rng.bytes(8192)).unwrap();
        }
    }
    spool.run(["dump", "v", "--level", "1", "--date", "2026-11-02"]);
    let (added, logical, _) = stored(&spool, 1);
    assert_eq!(logical, PAGES * 8192);
    assert!(
        added * 20 < logical,
        "rewriting 1% of the pages added {added} bytes ({:.1}% of {logical})",
        added as f64 * 100.0 / logical as f64
    );
    eprintln!(
        "1% of 8 KiB pages rewritten: added {added} bytes = {:.2}% of the file",
        added as f64 * 100.0 / logical as f64
    );
    let target = work.path().join("r");
    spool.run(["restore", "v", "--to", target.to_str().unwrap()]);
    assert!(fs::read(target.join("db.dat")).unwrap() == fs::read(&db).unwrap());
}

/// Frames take a window's files grouped by extension, in path order within each type, so zstd
/// sees text next to text and random bytes next to random bytes (`dump::type_key`).
#[test]
fn frames_group_a_windows_files_by_type() {
    use reel::pack::{BlobKind, PackReader, list_packs};

    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    // In path order the types alternate; each file is under the chunker's minimum, so it is one
    // chunk whose id is the hash of the file.
    let mut rng = Rng::new(7);
    let names = [
        "a.txt", "b.BIN", "c.txt", "d.bin", "e", "f.Txt", "g.bin", "h",
    ];
    let mut id_of = std::collections::HashMap::new();
    for name in names {
        let data = if name.to_ascii_lowercase().ends_with(".bin") {
            rng.bytes(3000)
        } else {
            rng.text(3000)
        };
        id_of.insert(*blake3::hash(&data).as_bytes(), name);
        write_file(&vol.join(name), &data);
    }
    let spool = spool_with_full_dump(&vol);

    let mut order = Vec::new();
    for (_, path) in list_packs(&spool.path().join("packs")).unwrap() {
        let pack = PackReader::open(&path, &reel::crypto::Keys::plain()).unwrap();
        for entry in pack.read_index().unwrap() {
            if entry.kind == BlobKind::Frame {
                let raw = pack.read_blob(&entry).unwrap();
                for (id, _) in reel::frame::parse(&raw).unwrap() {
                    order.extend(id_of.get(&id.0).copied());
                }
            }
        }
    }
    assert_eq!(
        order,
        [
            "e", "h", "b.BIN", "d.bin", "g.bin", "a.txt", "c.txt", "f.Txt"
        ],
        "order of the files' chunks in the frames"
    );
}

/// A changed file's chunks that its previous version already had are known to be stored (and
/// owned in the chain) without asking the catalog: an incremental after scattered rewrites looks
/// up only its new chunks. A level 0 after it still owns every chunk it references.
#[test]
fn a_changed_files_old_chunks_need_no_catalog_lookups() {
    use reel::dump::{DumpOptions, dump_volume};
    use reel::progress::NoProgress;
    use reel::spool::Access;
    const PAGES: u64 = 4096; // 32 MiB of 8 KiB pages: read in segments
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    fs::create_dir_all(&vol).unwrap();
    let db = vol.join("db.dat");
    write_file(&db, &Rng::new(31).bytes((PAGES * 8192) as usize));
    // A file read with the window's small files.
    let mut text = Rng::new(32).text(512 << 10);
    write_file(&vol.join("notes.txt"), &text);
    let spool = spool_with_full_dump(&vol);
    let l0_chunks = spool.list_json()[0]["new_chunks"].as_u64().unwrap();
    {
        let mut f = OpenOptions::new().write(true).open(&db).unwrap();
        let mut rng = Rng::new(33);
        for _ in 0..PAGES / 100 {
            f.seek(SeekFrom::Start(rng.below(PAGES) * 8192)).unwrap();
            f.write_all(&rng.bytes(8192)).unwrap();
        }
    }
    text[300_000] ^= 1;
    write_file(&vol.join("notes.txt"), &text);

    let dump = |level: u8, reread: bool| {
        let sp = reel::spool::Spool::open(spool.path(), Access::Write).unwrap();
        let opts = DumpOptions {
            level,
            time_ns: None,
            reread,
        };
        dump_volume(&sp, "v", &opts, &NoProgress).unwrap()
    };
    let l1 = dump(1, false);
    let new = l1.record.totals.new_chunks;
    assert!(new > 0 && new * 10 < l0_chunks, "{new} of {l0_chunks} new");
    // Each new chunk is looked up once, to store it (owning it needs no lookup: it was in no
    // pack before); the manifest's chunks add a few. Without the previous versions, every chunk
    // of both files, twice.
    assert!(
        l1.index_lookups <= new + 64 && l1.index_lookups * 4 < l0_chunks,
        "{} lookups for {new} new chunks of {l0_chunks}",
        l1.index_lookups
    );
    assert_eq!(
        l1.record.owned_chunks, new,
        "a level 1 owns exactly its new chunks"
    );
    let target = work.path().join("r");
    spool.restore_equals(&["v"], &vol, &target);

    // A level 0 owns all it references, whether or not the previous manifest is used.
    let again = dump(0, false);
    let reread = dump(0, true);
    let files_owned =
        |o: &reel::dump::DumpOutcome| o.record.owned_chunks - o.record.manifest.len() as u64;
    assert_eq!(files_owned(&again), files_owned(&reread));
    assert!(files_owned(&again) * 10 > l0_chunks * 9);
}
