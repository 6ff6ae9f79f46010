//! The `--json` documents of the commands that report, and `reel info`: each document parsed
//! with serde_json, its fields present with their types, and the values that can be known
//! checked against what was dumped (volume names, counts, sizes, the host, ratios of data of
//! known duplication and compressibility). docs/CLI.md documents every field; these tests
//! keep the convention it opens with: `volume` for a volume, RFC 3339 times, durations in
//! seconds, `reel_version` in every top-level object.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use serde_json::Value;

/// `reel ARGS...` with `TZ=UTC`, which must succeed, its standard output parsed as JSON.
fn json(spool: &Spool, args: &[&str]) -> Value {
    let out = run_ok(spool.cmd().env("TZ", "UTC").args(args));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("reel {args:?}: {e}\n{out}"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The host name the kernel gives (what `hostname` prints).
fn host() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// `v[k]` as an integer; panics naming the field when it is missing or another type.
fn int(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} is not an integer: {v}"))
}

fn num(v: &Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("{k} is not a number: {v}"))
}

fn string<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} is not a string: {v}"))
}

/// `v[k]` is an RFC 3339 time.
fn is_time(v: &Value, k: &str) {
    let t = string(v, k);
    assert!(
        chrono::DateTime::parse_from_rfc3339(t).is_ok(),
        "{k} = {t:?} is not RFC 3339"
    );
}

/// A top-level object document names the reel that printed it.
fn has_version(v: &Value) {
    assert_eq!(
        v["reel_version"].as_str(),
        Some(env!("CARGO_PKG_VERSION")),
        "reel_version: {v}"
    );
}

/// Volume `v` of four copies of one 256 KiB random file (dedup about 4, no compression)
/// and volume `t` of 2 MiB of word-like text (no dedup, compresses well).
fn dup_and_text(work: &Path) -> Spool {
    let mut rng = Rng::new(0x150);
    let dup = work.join("dup");
    fs::create_dir_all(&dup).unwrap();
    let r = rng.bytes(256 << 10);
    for i in 0..4 {
        fs::write(dup.join(format!("copy{i}")), &r).unwrap();
    }
    let text = work.join("text");
    fs::create_dir_all(&text).unwrap();
    fs::write(text.join("words.txt"), rng.text(2 << 20)).unwrap();
    let spool = Spool::new();
    spool.add_volume("v", &dup);
    spool.add_volume("t", &text);
    spool
}

/// The dedup and compression ratios from a dump's text summary: "dedup x.xx×, compression
/// y.yy×".
fn summary_ratios(out: &str) -> (f64, f64) {
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("ratios"))
        .unwrap_or_else(|| panic!("no ratios line: {out}"));
    let after = |word: &str| -> f64 {
        let rest = &line[line.find(word).unwrap_or_else(|| panic!("{line}")) + word.len()..];
        rest[..rest.find('\u{d7}').unwrap()].parse().unwrap()
    };
    (after("dedup "), after("compression "))
}

#[test]
fn dump_json_has_the_record_the_host_and_separate_ratios() {
    let work = tempfile::tempdir().unwrap();
    let spool = dup_and_text(work.path());
    let d = json(
        &spool,
        &[
            "dump",
            "v",
            "--level",
            "0",
            "--date",
            "2026-11-01",
            "--json",
        ],
    );
    has_version(&d);
    assert_eq!(string(&d, "volume"), "v");
    assert_eq!(int(&d, "level"), 0);
    assert_eq!(int(&d, "files"), 4);
    assert_eq!(int(&d, "logical_bytes"), 4 * (256 << 10));
    assert_eq!(string(&d, "host"), host());
    assert_eq!(d["promoted"], false);
    assert!(d["from_clone"].is_null());
    is_time(&d, "time");
    assert!(num(&d, "elapsed_seconds") > 0.0 && num(&d, "duration_seconds") > 0.0);
    // After dedup: one copy of the file (and the manifest), before compression.
    let raw = int(&d, "new_raw_bytes");
    assert!(
        (256 << 10..(256 << 10) + 8192).contains(&raw),
        "new_raw_bytes {raw}"
    );
    let dedup = num(&d, "dedup_ratio");
    let compression = num(&d, "compression_ratio");
    assert!((3.8..=4.0).contains(&dedup), "dedup {dedup}");
    assert!(
        (0.9..=1.05).contains(&compression),
        "compression {compression}"
    );
    assert!(
        d.get("name").is_none(),
        "a volume is `volume`, never `name`"
    );

    // The text volume: nothing repeats, and it compresses.
    let out = run_ok(
        spool
            .cmd()
            .args(["dump", "t", "--level", "0", "--date", "2026-11-01"]),
    );
    let (dedup, compression) = summary_ratios(&out);
    assert!((0.95..=1.01).contains(&dedup), "{out}");
    assert!(compression > 2.0, "{out}");
    let text = spool.run(["show", "2"]);
    assert!(
        text.contains(&format!("host         {}\n", host())),
        "{text}"
    );
    let shown = json(&spool, &["show", "2", "--json"]);
    has_version(&shown);
    assert_eq!(string(&shown, "host"), host());
    assert_eq!(string(&shown, "volume"), "t");
    assert!(int(&shown, "new_raw_bytes") >= 2 << 20);
    // The summary's figures are the record's.
    let want = int(&shown, "logical_bytes") as f64 / int(&shown, "new_raw_bytes") as f64;
    assert!((dedup - want).abs() < 0.006, "{dedup} vs {want}");
}

#[test]
fn info_json_separates_dedup_from_compression_and_counts_tape_only_bytes() {
    let work = tempfile::tempdir().unwrap();
    let spool = dup_and_text(work.path());
    spool.run(["dump", "v", "--level", "0", "--date", "2026-11-01"]);
    spool.run(["dump", "t", "--level", "0", "--date", "2026-11-01"]);
    let i = json(&spool, &["info", "--json"]);
    has_version(&i);
    let vols = i["volumes"].as_array().unwrap();
    let names: Vec<&str> = vols.iter().map(|v| string(v, "volume")).collect();
    assert_eq!(names, ["t", "v"]);
    let list = spool.list_json();
    for v in vols {
        let dumps = v["dumps"].as_array().unwrap();
        assert_eq!(dumps.len(), 1);
        let d = &dumps[0];
        let rec = list
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == d["id"])
            .unwrap();
        for k in [
            "logical_bytes",
            "new_raw_bytes",
            "stored_bytes",
            "owned_bytes",
        ] {
            assert_eq!(d[k], rec[k], "{k} of dump {}", d["id"]);
        }
        assert_eq!(int(d, "tape_only_bytes"), 0);
        assert_eq!(string(d, "host"), host());
        is_time(d, "time");
        assert_eq!(v["totals"]["logical_bytes"], d["logical_bytes"]);
        let (dedup, compression) = (num(d, "dedup_ratio"), num(d, "compression_ratio"));
        if string(v, "volume") == "v" {
            assert!((3.8..=4.0).contains(&dedup) && compression < 1.05, "{d}");
        } else {
            assert!(dedup < 1.01 && compression > 2.0, "{d}");
        }
    }
    let sp = &i["spool"];
    assert_eq!(int(sp, "dumps"), 2);
    assert_eq!(
        int(sp, "logical_bytes"),
        4 * (256 << 10) + (2 << 20),
        "{sp}"
    );
    assert_eq!(int(sp, "pack_bytes"), dir_size(&spool.path().join("packs")));
    assert!(int(sp, "packs") >= 2);
    assert_eq!(
        int(sp, "catalog_bytes"),
        fs::metadata(spool.path().join("catalog.redb"))
            .unwrap()
            .len()
    );
    assert_eq!(int(sp, "tapes"), 0);
    // One volume: its dumps only; the spool's totals stay the whole spool's.
    let one = json(&spool, &["info", "v", "--json"]);
    assert_eq!(one["volumes"].as_array().unwrap().len(), 1);
    assert_eq!(one["spool"]["dumps"], 2);
    let text = spool.run(["du", "v"]);
    assert!(
        text.contains("volume v: 1 dumps")
            && text.contains("dedup 3.")
            && text.contains("spool: 2 dumps"),
        "{text}"
    );

    // Data purged after an export is on tape only: the 2nd day's dump of this history.
    let work = tempfile::tempdir().unwrap();
    let spool = replaced_file_days(work.path());
    let img = work.path().join("t1.img");
    spool.run(["export", "--to", s(&img), "--label", "T1"]);
    spool.run(["purge", "--exported"]);
    let i = json(&spool, &["info", "--json"]);
    let dumps = i["volumes"][0]["dumps"].as_array().unwrap();
    let tape_only: Vec<u64> = dumps.iter().map(|d| int(d, "tape_only_bytes")).collect();
    assert_eq!(tape_only[0], 0, "{i}");
    assert_eq!(tape_only[2], 0, "{i}");
    // Its 2 MiB of random bytes went; its manifest stays on the spool.
    assert!(
        tape_only[1] >= 2 << 20 && tape_only[1] <= int(&dumps[1], "owned_bytes"),
        "{i}"
    );
    assert_eq!(int(&i["spool"], "tape_only_bytes"), tape_only[1]);
    assert_eq!(int(&i["spool"], "tapes"), 1);
}

#[test]
fn clone_and_backup_json() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    rich_tree(&vol);
    let spool = Spool::new();
    spool.add_volume("v", &vol);
    let files = json(
        &spool,
        &[
            "dump",
            "v",
            "--level",
            "0",
            "--date",
            "2026-11-01",
            "--json",
        ],
    )["files"]
        .clone();

    let c = json(&spool, &["clone", "v", "--date", "2026-11-02", "--json"]);
    has_version(&c);
    assert_eq!(string(&c, "volume"), "v");
    assert_eq!(string(&c, "method"), "store");
    assert_eq!(string(&c, "view"), "manifest");
    assert!(c["path"].is_null());
    assert_eq!(c["files"], files);
    assert!(
        c["time"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-02T00:00:00")
    );
    assert!(num(&c, "frozen_seconds") >= 0.0);
    for k in [
        "new_chunks",
        "new_raw_bytes",
        "stored_bytes",
        "read_bytes",
        "entries",
    ] {
        int(&c, k);
    }

    let b = json(
        &spool,
        &[
            "backup",
            "v",
            "--level",
            "1",
            "--date",
            "2026-11-03",
            "--json",
        ],
    );
    has_version(&b);
    assert_eq!(string(&b, "volume"), "v");
    assert_eq!(string(&b["clone"], "volume"), "v");
    let d = &b["dump"];
    assert_eq!(string(d, "volume"), "v");
    assert_eq!(int(d, "level"), 1);
    assert_eq!(string(d, "from_clone"), "store");
    assert_eq!(d["files"], files);
    assert_eq!(string(d, "host"), host());
    assert!(
        d["time"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-03T00:00:00")
    );
    assert!(d.get("reel_version").is_none(), "only the top level has it");
}

#[test]
fn restore_json_and_its_dry_run() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    rich_tree(&vol);
    let spool = spool_with_full_dump(&vol);
    spool.run(["dump", "v", "--level", "1", "--date", "2026-11-02"]);
    let last = spool.last_dump();

    let plan = json(
        &spool,
        &["restore", "v", "--to", "/nowhere", "--dry-run", "--json"],
    );
    has_version(&plan);
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["id"], last["id"]);
    assert_eq!(string(&plan, "volume"), "v");
    let chain: Vec<&Value> = plan["chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["id"])
        .collect();
    let want: Vec<&Value> = last["chain"].as_array().unwrap().iter().collect();
    assert_eq!(chain, want);
    assert_eq!(plan["tapes_needed"], serde_json::json!([]));
    assert_eq!(int(&plan, "tape_only_bytes"), 0);
    is_time(&plan["chain"][0], "time");

    let target = work.path().join("r");
    let r = json(&spool, &["restore", "v", "--to", s(&target), "--json"]);
    has_version(&r);
    assert_eq!(r["dry_run"], false);
    assert_eq!(string(&r, "volume"), "v");
    assert_eq!(r["id"], last["id"]);
    assert_eq!(r["entries"], last["entries"]);
    assert_eq!(r["files"], last["files"]);
    assert_eq!(r["bytes"], last["logical_bytes"]);
    assert_eq!(string(&r, "to"), s(&target));
    assert!(num(&r, "duration_seconds") > 0.0);
    assert_trees_equal(&vol, &target);
}

#[test]
fn export_import_and_verify_tape_json() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    rich_tree(&vol);
    let spool = spool_with_full_dump(&vol);
    let img = work.path().join("t1.img");
    let e = json(
        &spool,
        &["export", "--to", s(&img), "--label", "T1", "--json"],
    );
    has_version(&e);
    assert_eq!(string(&e, "label"), "T1");
    assert_eq!(e["image_files"], serde_json::json!([s(&img)]));
    assert_eq!(int(&e, "bytes"), fs::metadata(&img).unwrap().len());
    let d = &e["dumps"][0];
    assert_eq!(
        (string(d, "volume"), int(d, "id"), int(d, "level")),
        ("v", 1, 0)
    );
    assert!(int(d, "bytes") > 0 && int(d, "whole_file_bytes") > 0);
    is_time(d, "time");
    let again = json(
        &spool,
        &["export", "--to", s(&work.path().join("t2.img")), "--json"],
    );
    assert!(again["label"].is_null());
    assert_eq!(again["dumps"], serde_json::json!([]));

    let v = json(&spool, &["verify-tape", s(&img), "--json"]);
    let tape = &v.as_array().expect("an array, one catalog per image")[0];
    assert_eq!(string(tape, "label"), "T1");
    assert_eq!(string(&tape["dumps"][0], "volume"), "v");
    assert_eq!(string(&tape["dumps"][0], "host"), host());
    assert_eq!(
        int(&tape["dumps"][0], "new_raw_bytes"),
        int(&spool.last_dump(), "new_raw_bytes")
    );

    let other = Spool::new();
    let i = json(&other, &["import", s(&img), "--json"]);
    has_version(&i);
    let one = &i["images"][0];
    assert_eq!(string(one, "image"), s(&img));
    assert_eq!(string(one, "label"), "T1");
    let added = one["dumps_added"].as_array().unwrap();
    assert_eq!(added.len(), 1);
    assert_eq!(string(&added[0], "volume"), "v");
    assert!(
        added[0]["time"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-01T00:00:00")
    );
    assert_eq!(int(one, "dumps_present"), 0);
    assert!(int(one, "packs_adopted") > 0 && int(one, "chunks_added") > 0);
    // The imported dump keeps the host that made it.
    assert_eq!(string(&other.last_dump(), "host"), host());
    let twice = json(&other, &["import", s(&img), "--json"]);
    assert_eq!(twice["images"][0]["dumps_added"], serde_json::json!([]));
    assert_eq!(int(&twice["images"][0], "dumps_present"), 1);
}

#[test]
fn purge_json() {
    let work = tempfile::tempdir().unwrap();
    let spool = replaced_file_days(work.path());
    spool.run(["export", "--to", s(&work.path().join("t1.img"))]);
    let dry = json(&spool, &["purge", "--exported", "--dry-run", "--json"]);
    has_version(&dry);
    assert_eq!(dry["dry_run"], true);
    assert!(int(&dry, "packs_removed") >= 1 && int(&dry, "bytes_removed") > 2 << 20);
    assert!(int(&dry, "packs_kept_latest") >= 1);
    int(&dry, "chunks_removed");
    int(&dry, "bytes_kept_latest");
    assert_eq!(int(&dry, "packs_kept_not_on_tape"), 0);
    let real = json(&spool, &["purge", "--exported", "--json"]);
    assert_eq!(real["dry_run"], false);
    assert_eq!(real["packs_removed"], dry["packs_removed"]);
    assert_eq!(real["bytes_removed"], dry["bytes_removed"]);
    let after = json(&spool, &["purge", "--exported", "--json"]);
    assert_eq!(int(&after, "packs_removed"), 0);
}

#[test]
fn nightly_json_gives_durations_in_seconds_too() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    rich_tree(&vol);
    let spool = Spool::new();
    spool.add_volume("v", &vol);
    spool.run(["volume", "set", "v", "--schedule", "FFFFFFF"]);
    let (ok, n) = spool.nightly_json(&["--date", "2026-11-01"]);
    assert!(ok, "{n}");
    has_version(&n);
    let close = |ns: &Value, secs: &Value| {
        let (ns, secs) = (ns.as_u64().unwrap(), secs.as_f64().unwrap());
        assert!((ns as f64 / 1e9 - secs).abs() < 1e-6, "{ns} ns vs {secs} s");
    };
    close(&n["elapsed_ns"], &n["elapsed_seconds"]);
    close(&n["totals"]["dump_ns"], &n["totals"]["dump_seconds"]);
    let v = &n["volumes"][0];
    assert_eq!(string(v, "volume"), "v");
    close(&v["freeze_ns"], &v["freeze_seconds"]);
    close(&v["dump_ns"], &v["dump_seconds"]);
    is_time(&n, "started");
}

#[test]
fn volume_list_names_the_volume_volume_and_keeps_name() {
    let work = tempfile::tempdir().unwrap();
    let spool = Spool::new();
    spool.add_volume("home", work.path());
    let v = json(&spool, &["volume", "list", "--json"]);
    assert_eq!(string(&v[0], "volume"), "home");
    assert_eq!(string(&v[0], "name"), "home", "the deprecated alias stays");
}

/// The documents of commands that had `--json` before the convention carry `reel_version`
/// too (it is added where every document is printed).
#[test]
fn every_object_document_names_its_reel_version() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    rich_tree(&vol);
    let spool = spool_with_full_dump(&vol);
    spool.run(["dump", "v", "--level", "1", "--date", "2026-11-02"]);
    for args in [
        &["show", "1", "--json"][..],
        &["check", "--json"],
        &["gc", "--dry-run", "--json"],
        &["prune", "--keep-last", "1", "--dry-run", "--json"],
        &["forget", "2", "--dry-run", "--json"],
        &["diff", "v", "2026-11-01", "2026-11-02", "--json"],
        &["info", "--json"],
    ] {
        let v = json(&spool, args);
        assert!(v.is_object(), "{args:?}");
        has_version(&v);
    }
}

/// `rebuild-catalog` recomputes what a dump record's copy in its pack cannot carry
/// (`new_raw_bytes`, like `new_chunks` and `stored_bytes`) and keeps the host.
#[test]
fn a_rebuilt_catalog_keeps_new_raw_bytes_and_the_host() {
    let work = tempfile::tempdir().unwrap();
    let spool = dup_and_text(work.path());
    spool.run(["dump", "v", "--level", "0", "--date", "2026-11-01"]);
    spool.run(["dump", "t", "--level", "0", "--date", "2026-11-01"]);
    let before = spool.list_json();
    spool.run(["rebuild-catalog"]);
    let after = spool.list_json();
    let rows = |v: &Value| -> Vec<(Value, Value, Value, Value)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["id"].clone(),
                    d["new_raw_bytes"].clone(),
                    d["stored_bytes"].clone(),
                    d["host"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(rows(&after), rows(&before));
    assert!(int(&after[0], "new_raw_bytes") >= 256 << 10);
    assert_eq!(string(&after[1], "host"), host());
}
