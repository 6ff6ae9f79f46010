//! Tape export and import end to end: the stock `restore` lists and extracts reel's images,
//! an empty spool that imports them restores every dump exactly, and bad images are refused
//! with nothing half-imported.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// A spool with volume `v`: a level 0 and a level 1 a day later; the days' trees are kept.
fn two_days(work: &Path) -> Spool {
    let vol = work.join("vol");
    rich_tree(&vol);
    snapshot(&vol, &work.join("day1"));
    let spool = spool_with_full_dump(&vol);
    mutate_day(&vol, 1);
    snapshot(&vol, &work.join("day2"));
    spool.run(["dump", "v", "--level", "1", "--date", "2026-11-02"]);
    spool
}

#[test]
fn an_exported_tape_imports_into_an_empty_spool_and_restores_exactly() {
    let work = tempfile::tempdir().unwrap();
    let spool = two_days(work.path());
    let img = work.path().join("week.tape");
    let out = spool.run(["export", "--to", img.to_str().unwrap(), "--label", "WEEK1"]);
    assert!(out.contains("tape WEEK1"), "{out}");
    // Everything is on tape now: a second export has nothing to write.
    let again = spool.run(["export", "--to", work.path().join("x").to_str().unwrap()]);
    assert!(again.contains("nothing to export"), "{again}");
    let tapes: serde_json::Value = serde_json::from_str(&spool.run(["tapes", "--json"])).unwrap();
    assert_eq!(tapes.as_array().unwrap().len(), 1, "{tapes}");

    let verify = spool.run(["verify-tape", img.to_str().unwrap()]);
    assert!(verify.contains("WEEK1"), "{verify}");

    let fresh = Spool::new();
    fresh.run(["import", img.to_str().unwrap()]);
    assert_eq!(fresh.list_json().as_array().unwrap().len(), 2);
    fresh.restore_two_days_equal(work.path(), "fresh-r", &[]);
    fresh.run(["check", "--read-data"]);
    // Importing the same tape again adds nothing.
    fresh.run(["import", img.to_str().unwrap()]);
    assert_eq!(fresh.list_json().as_array().unwrap().len(), 2);
}

#[test]
fn the_stock_restore_lists_and_extracts_a_reel_tape() {
    if !have_restore() {
        println!("skipped: restore not installed (apt-get install dump)");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let spool = two_days(work.path());
    let img = work.path().join("t.dump");
    spool.run(["export", "--to", img.to_str().unwrap(), "--label", "T1"]);
    let list = Command::new("restore")
        .args(["-t", "-f"])
        .arg(&img)
        .env("TZ", "UTC")
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&list.stdout);
    for name in ["./reel/LABEL", "./reel/CATALOG", "./reel/packs/"] {
        assert!(
            listing.contains(name),
            "restore -t lacks {name}:\n{listing}"
        );
    }
    let x = work.path().join("x");
    stock_extract(&img, &x);
    // What restore extracted is itself importable.
    let fresh = Spool::new();
    fresh.run(["import", x.to_str().unwrap()]);
    fresh.restore_two_days_equal(work.path(), "x-r", &[]);
}

#[test]
fn a_split_tape_restores_with_restore_m_and_imports() {
    let work = tempfile::tempdir().unwrap();
    let spool = two_days(work.path());
    let img = work.path().join("split");
    spool.run([
        "export",
        "--to",
        img.to_str().unwrap(),
        "--capacity",
        "2M",
        "--label",
        "S",
    ]);
    let vols: Vec<_> = (1..=9)
        .map(|i| work.path().join(format!("split.{i:03}")))
        .filter(|p| p.exists())
        .collect();
    assert!(vols.len() >= 2, "{vols:?}");
    if have_restore() {
        let x = work.path().join("mx");
        std::fs::create_dir(&x).unwrap();
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo n | restore -x -a -y -M -b 10 -f {}.",
                img.display()
            ))
            .current_dir(&x)
            .output()
            .unwrap();
        assert!(x.join("reel/CATALOG").exists(), "{st:?}");
    }
    // A missing middle volume is refused, and nothing is imported.
    let fresh = Spool::new();
    let (code, err) = fresh.fail(["import", vols[0].to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("volume") || err.contains("truncated"), "{err}");
    assert_eq!(fresh.list_json().as_array().unwrap().len(), 0);
    // The prefix names the whole set.
    fresh.run(["import", img.to_str().unwrap()]);
    fresh.restore_two_days_equal(work.path(), "split-r", &[]);
}

#[test]
fn bad_images_are_refused_and_nothing_is_half_imported() {
    let work = tempfile::tempdir().unwrap();
    let spool = two_days(work.path());
    let img = work.path().join("good.tape");
    spool.run(["export", "--to", img.to_str().unwrap(), "--label", "G"]);
    let bytes = std::fs::read(&img).unwrap();
    let fresh = Spool::new();
    let packs_before = std::fs::read_dir(fresh.path().join("packs"))
        .unwrap()
        .count();

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
        (
            "not a dump",
            b"this is not a dump image at all\n".repeat(100),
        ),
        ("flipped data byte", {
            let mut b = bytes.clone();
            let at = b.len() * 3 / 4;
            b[at] ^= 0x40;
            b
        }),
        ("flipped header byte", {
            let mut b = bytes.clone();
            b[1024 * 3 + 100] ^= 0x01;
            b
        }),
    ];
    for (what, data) in cases {
        let bad = work.path().join(format!("{}.tape", what.replace(' ', "_")));
        std::fs::write(&bad, &data).unwrap();
        let (code, err) = fresh.fail(["import", bad.to_str().unwrap()]);
        assert_eq!(code, 1, "{what}: {err}");
        assert!(
            err.contains(bad.file_name().unwrap().to_str().unwrap()) || err.contains("pack"),
            "{what}: the error names the image: {err}"
        );
        assert_eq!(fresh.list_json().as_array().unwrap().len(), 0, "{what}");
        assert_eq!(
            std::fs::read_dir(fresh.path().join("packs"))
                .unwrap()
                .count(),
            packs_before,
            "{what}: a pack was adopted"
        );
    }
    fresh.run(["check"]);
}

/// `reel cat ARGS...` of spool `s`, which must succeed: the file's bytes.
fn cat_bytes(s: &Spool, args: &[&str]) -> Vec<u8> {
    let out = s.cmd().arg("cat").args(args).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    out.stdout
}

#[test]
fn purged_dumps_restore_from_the_tapes_the_plan_names() {
    let work = tempfile::tempdir().unwrap();
    let spool = replaced_file_days(work.path());
    let tapes = work.path().join("tapes");
    std::fs::create_dir(&tapes).unwrap();
    let img = tapes.join("w1.tape");
    spool.run(["export", "--to", img.to_str().unwrap(), "--label", "W1"]);
    let before = dir_size(&spool.path().join("packs"));
    let out = spool.run(["purge", "--exported"]);
    assert!(out.contains("removed 1 packs"), "{out}");
    let after = dir_size(&spool.path().join("packs"));
    // The 2nd's big/x.bin (2 MiB of random bytes) is the data nothing current references.
    assert!(
        before - after > 1_900_000,
        "purge freed too little: {before} -> {after}"
    );
    // The catalog and the manifests stay: check is clean, ls works without tapes.
    spool.run(["check", "--read-data"]);
    assert!(
        spool
            .run(["ls", "v", "--at", "2026-11-02"])
            .contains("x.bin")
    );
    // The plan names the tape; without it the restore refuses and writes nothing.
    let plan = |at: &str| {
        spool.run([
            "restore",
            "v",
            "--at",
            at,
            "--to",
            "/nonexistent",
            "--dry-run",
        ])
    };
    let p2 = plan("2026-11-02");
    assert!(p2.contains("tapes needed, in this order: W1"), "{p2}");
    for at in ["2026-11-01", "2026-11-03"] {
        let p = plan(at);
        assert!(p.contains("no tape needed"), "{at}: {p}");
    }
    let to = work.path().join("no-tape");
    let (code, err) = spool.fail([
        "restore",
        "v",
        "--at",
        "2026-11-02",
        "--to",
        to.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("W1"), "{err}");
    assert!(!to.exists() || std::fs::read_dir(&to).unwrap().next().is_none());
    // With the tapes folder, or the tape named by label, every day comes back exactly.
    spool.restore_days_equal(
        work.path(),
        "t",
        &["--tapes", tapes.to_str().unwrap()],
        &[1, 2, 3],
    );
    // cat reads a purged file from the tape too; without it the refusal names the tape and
    // how to give it, and does not call the spool damaged.
    let (code, err) = spool.fail(["cat", "v", "--at", "2026-11-02", "big/x.bin"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("W1") && err.contains("--tapes DIR") && err.contains("--tape IMAGE"),
        "{err}"
    );
    assert!(!err.contains("reel check"), "{err}");
    let day2_x = std::fs::read(work.path().join("day2/big/x.bin")).unwrap();
    // The image itself, as restore, export-plain and mount take it: its header names the tape.
    let x = cat_bytes(
        &spool,
        &[
            "v",
            "--at",
            "2026-11-02",
            "big/x.bin",
            "--tape",
            img.to_str().unwrap(),
        ],
    );
    assert!(x == day2_x, "cat --tape IMAGE printed other bytes");
    spool.restore_equals(
        &["v", "--at", "2026-11-02", "--tape", img.to_str().unwrap()],
        &work.path().join("day2"),
        &work.path().join("by-image"),
    );
    let x = cat_bytes(
        &spool,
        &[
            "v",
            "--at",
            "2026-11-02",
            "big/x.bin",
            "--tapes",
            tapes.to_str().unwrap(),
        ],
    );
    assert!(x == day2_x);
    let arg = format!("W1={}", img.display());
    spool.restore_equals(
        &["v", "--at", "2026-11-02", "--tape", &arg],
        &work.path().join("day2"),
        &work.path().join("by-label"),
    );
    // A new full after the purge owns every chunk it references, so its own export carries
    // them all and restores with that tape alone.
    spool.run(["dump", "v", "--level", "0", "--date", "2026-11-04"]);
    let img2 = work.path().join("w2.tape");
    spool.run(["export", "--to", img2.to_str().unwrap(), "--label", "W2"]);
    let fresh = Spool::new();
    fresh.run(["import", img2.to_str().unwrap()]);
    fresh.restore_equals(
        &["v"],
        &work.path().join("day3"),
        &work.path().join("full-after-purge"),
    );
}

#[test]
fn the_night_after_a_purge_adds_only_its_changes() {
    let work = tempfile::tempdir().unwrap();
    let spool = replaced_file_days(work.path());
    let tapes = work.path().join("tapes");
    std::fs::create_dir(&tapes).unwrap();
    let img = tapes.join("n1.tape");
    spool.run(["export", "--to", img.to_str().unwrap(), "--label", "N1"]);
    let packs = spool.path().join("packs");
    let before = dir_size(&packs);
    let out = spool.run(["purge", "--exported"]);
    let after = dir_size(&packs);
    assert!(after < before, "purge freed nothing: {out}");
    // The next night changes one small file: its clone and dump add about that, not the
    // volume again (the latest dump and clone, its base, stayed on the spool).
    let vol = work.path().join("vol");
    std::fs::write(vol.join("small.txt"), b"the next night's change\n").unwrap();
    spool.run(["backup", "v", "--level", "1", "--date", "2026-11-04"]);
    let added = dir_size(&packs) - after;
    assert!(
        added < 256 << 10,
        "the night after the purge added {added} bytes (the spool held {before} before the purge)"
    );
    assert!(
        out.contains("latest dumps and clones reference"),
        "purge says what it kept: {out}"
    );
    // The purged day still restores, from its tape.
    let plan = spool.run([
        "restore",
        "v",
        "--at",
        "2026-11-02",
        "--to",
        "/nonexistent",
        "--dry-run",
    ]);
    assert!(plan.contains("tapes needed, in this order: N1"), "{plan}");
    spool.restore_days_equal(
        work.path(),
        "r",
        &["--tapes", tapes.to_str().unwrap()],
        &[2],
    );
}

#[test]
fn a_pruned_dump_stays_on_its_tape_in_the_media_catalog_and_restores_from_it() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    rich_tree(&vol);
    snapshot(&vol, &work.path().join("day1"));
    let spool = spool_with_full_dump(&vol);
    mutate_day(&vol, 1);
    snapshot(&vol, &work.path().join("day2"));
    spool.run(["dump", "v", "--level", "0", "--date", "2026-11-02"]);
    let tapes = work.path().join("tapes");
    std::fs::create_dir(&tapes).unwrap();
    let img = tapes.join("p1.tape");
    spool.run(["export", "--to", img.to_str().unwrap(), "--label", "P1"]);
    // Dump 1 leaves the catalog, and gc takes what only it referenced.
    spool.run(["prune", "--keep-last", "1"]);
    spool.run(["gc"]);
    assert_eq!(spool.list_json().as_array().unwrap().len(), 1);

    let tj: serde_json::Value = serde_json::from_str(&spool.run(["tapes", "--json"])).unwrap();
    let dumps = tj[0]["dumps"].as_array().unwrap();
    let d1 = dumps.iter().find(|d| d["id"] == 1).expect("dump 1 listed");
    assert_eq!(d1["volume"], "v", "{tj}");
    assert!(
        d1["time"].as_str().unwrap_or("").starts_with("2026-11-01"),
        "{tj}"
    );
    assert_eq!(d1["level"], 0, "{tj}");
    assert_eq!(d1["chain"], serde_json::json!([]), "{tj}");
    assert_eq!(d1["needs"], serde_json::json!(["P1"]), "{tj}");
    assert_eq!(d1["in_catalog"], false, "{tj}");
    let d2 = dumps.iter().find(|d| d["id"] == 2).expect("dump 2 listed");
    assert_eq!(d2["in_catalog"], true, "{tj}");
    let text = spool.run(["tapes"]);
    assert!(
        text.lines()
            .any(|l| l.contains("dump     1  v 2026-11-01") && l.ends_with("restore needs: P1")),
        "{text}"
    );

    // The pruned day is the one current at its date: the plan names its tape, and without
    // the tape the restore refuses.
    let plan = spool.run([
        "restore",
        "v",
        "--at",
        "2026-11-01",
        "--to",
        "/nonexistent",
        "--dry-run",
    ]);
    assert!(plan.contains("tapes needed, in this order: P1"), "{plan}");
    let to = work.path().join("no-tape");
    let (code, err) = spool.fail([
        "restore",
        "v",
        "--at",
        "2026-11-01",
        "--to",
        to.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("P1"), "{err}");
    spool.restore_equals(
        &[
            "v",
            "--at",
            "2026-11-01",
            "--tapes",
            tapes.to_str().unwrap(),
        ],
        &work.path().join("day1"),
        &work.path().join("r1"),
    );
    // ls, cat, export-plain and restore --dump reach the pruned dump too, from its tape, and
    // without the tape they name it.
    let (code, err) = spool.fail(["ls", "v", "--at", "2026-11-01"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("P1") && err.contains("--tapes DIR"), "{err}");
    let listed = spool.run([
        "ls",
        "v",
        "--at",
        "2026-11-01",
        "--tapes",
        tapes.to_str().unwrap(),
    ]);
    assert!(
        listed.contains("docs/readme.md") && !listed.contains("daily/d1"),
        "the pruned day's listing: {listed}"
    );
    let readme = cat_bytes(
        &spool,
        &[
            "v",
            "--dump",
            "1",
            "docs/readme.md",
            "--tape",
            img.to_str().unwrap(),
        ],
    );
    assert!(readme == std::fs::read(work.path().join("day1/docs/readme.md")).unwrap());
    let (code, err) = spool.fail(["cat", "v", "--dump", "1", "docs/readme.md"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("P1"), "{err}");
    spool.restore_equals(
        &["v", "--dump", "1", "--tapes", tapes.to_str().unwrap()],
        &work.path().join("day1"),
        &work.path().join("r1-by-id"),
    );
    let plain = work.path().join("day1.dump");
    let out = spool.run([
        "export-plain",
        "v",
        "--at",
        "2026-11-01",
        "--level",
        "0",
        "--to",
        plain.to_str().unwrap(),
        "--tapes",
        tapes.to_str().unwrap(),
    ]);
    assert!(out.contains("of dump 1 "), "{out}");
    // The kept day still reads from the spool alone.
    spool.restore_equals(
        &["v", "--at", "2026-11-02"],
        &work.path().join("day2"),
        &work.path().join("r2"),
    );
}

#[test]
fn a_media_set_writes_less_and_its_restore_plan_names_every_tape_it_needs() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    rich_tree(&vol);
    snapshot(&vol, &work.path().join("day1"));
    let spool = spool_with_full_dump(&vol);
    let tapes = work.path().join("tapes");
    std::fs::create_dir(&tapes).unwrap();
    let export = |label: &str| {
        let to = tapes.join(format!("{label}.tape"));
        spool.run([
            "export",
            "--to",
            to.to_str().unwrap(),
            "--label",
            label,
            "--media-set",
            "site",
        ]);
        std::fs::metadata(&to).unwrap().len()
    };
    let first = export("S1");
    // A second full of the unchanged volume: in the set, its tape carries almost nothing.
    spool.run(["dump", "v", "--level", "0", "--date", "2026-11-08"]);
    let second = export("S2");
    assert!(
        second * 20 < first,
        "media set tape {second} vs first {first}"
    );
    let tj: serde_json::Value = serde_json::from_str(&spool.run(["tapes", "--json"])).unwrap();
    // The second full's chunks are all on the set's first tape: that is what it needs.
    let needs = &tj[1]["dumps"][0]["needs"];
    assert_eq!(needs, &serde_json::json!(["S1"]), "{tj}");
    // A purge keeps what the latest dump references: it restores with no tape.
    spool.run(["purge", "--exported"]);
    let plan = spool.run(["restore", "v", "--to", "/nonexistent", "--dry-run"]);
    assert!(plan.contains("no tape needed"), "{plan}");
    spool.restore_equals(&["v"], &work.path().join("day1"), &work.path().join("r"));
}

/// `cat` of a hard link whose group's data purge removed reads the tapes holding the data of
/// the group's first name, which is where the link's bytes are.
#[test]
fn cat_of_a_purged_hard_link_reads_its_groups_tape() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    std::fs::create_dir_all(vol.join("big")).unwrap();
    let spool = Spool::new();
    spool.add_volume("v", &vol);
    let mut rng = Rng::new(0x11A4D);
    let mut days = Vec::new();
    for day in 1..=3u32 {
        // Written in place: big/z.bin stays a second name of big/x.bin.
        let bytes = rng.bytes(1 << 20);
        std::fs::write(vol.join("big/x.bin"), &bytes).unwrap();
        if day == 1 {
            std::fs::hard_link(vol.join("big/x.bin"), vol.join("big/z.bin")).unwrap();
        }
        days.push(bytes);
        let level = if day == 1 { "0" } else { "1" };
        spool.run([
            "backup",
            "v",
            "--level",
            level,
            "--date",
            &format!("2026-11-0{day}"),
        ]);
    }
    let img = work.path().join("h1.tape");
    spool.run(["export", "--to", img.to_str().unwrap(), "--label", "H1"]);
    spool.run(["purge", "--exported"]);
    let (code, err) = spool.fail(["cat", "v", "--at", "2026-11-02", "big/z.bin"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("H1"), "{err}");
    let z = cat_bytes(
        &spool,
        &[
            "v",
            "--at",
            "2026-11-02",
            "big/z.bin",
            "--tape",
            img.to_str().unwrap(),
        ],
    );
    assert!(z == days[1], "cat of the link printed other bytes");
}

/// A folder the stock `restore -x` extracted a tape into is a tape for a read of purged data,
/// in a `--tapes DIR` folder or named by `--tape`: it is known by its `reel/LABEL`.
#[test]
fn a_folder_restore_x_extracted_is_a_tape_for_a_restore() {
    if !have_restore() {
        println!("skipped: restore not installed (apt-get install dump)");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let spool = replaced_file_days(work.path());
    let img = work.path().join("w1.tape");
    spool.run(["export", "--to", img.to_str().unwrap(), "--label", "W1"]);
    spool.run(["purge", "--exported"]);
    let tapes = work.path().join("tapes");
    let x = tapes.join("w1");
    stock_extract(&img, &x);
    spool.restore_equals(
        &[
            "v",
            "--at",
            "2026-11-02",
            "--tapes",
            tapes.to_str().unwrap(),
        ],
        &work.path().join("day2"),
        &work.path().join("by-folder"),
    );
    spool.restore_equals(
        &["v", "--at", "2026-11-02", "--tape", x.to_str().unwrap()],
        &work.path().join("day2"),
        &work.path().join("by-tape"),
    );
}
