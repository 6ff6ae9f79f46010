//! `reel diff`: two dated dumps of a tree with known changes between them, compared through
//! the CLI (text and JSON), and the `backup` side through a clone record put in the catalog.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{Rng, Spool, set_mtime};

const T: i64 = 1_790_000_000; // a fixed mtime for every directory

fn write(p: &Path, data: &[u8]) {
    fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

/// Directory mtimes move whenever a child is added or removed; pin them so the diff names
/// only the changes the test makes on purpose.
fn pin_dirs(root: &Path) {
    for d in ["", "keep", "olddir", "newdir"] {
        let p = root.join(d);
        if p.exists() {
            set_mtime(&p, T, 0);
        }
    }
}

fn tree(root: &Path) {
    let mut rng = Rng::new(7);
    fs::create_dir_all(root.join("keep")).expect("mkdir");
    fs::create_dir_all(root.join("olddir")).expect("mkdir");
    write(&root.join("keep/same.txt"), b"unchanged\n");
    write(&root.join("gone.txt"), b"to be removed\n");
    write(&root.join("data.bin"), &rng.bytes(100_000));
    write(&root.join("mode.txt"), b"chmod me\n");
    write(&root.join("touched.txt"), b"touch me\n");
    write(
        &root.join("olddir/inner.txt"),
        b"moves with its directory\n",
    );
    for f in [
        "keep/same.txt",
        "gone.txt",
        "data.bin",
        "mode.txt",
        "touched.txt",
    ] {
        set_mtime(&root.join(f), T - 100, 0);
    }
    pin_dirs(root);
}

fn change(root: &Path) {
    write(&root.join("new.txt"), b"added\n");
    fs::remove_file(root.join("gone.txt")).expect("rm");
    // Same size, same mtime, different bytes: only the extents tell.
    let mut data = fs::read(root.join("data.bin")).expect("read");
    data[50_000] ^= 0xff;
    write(&root.join("data.bin"), &data);
    set_mtime(&root.join("data.bin"), T - 100, 0);
    fs::set_permissions(root.join("mode.txt"), fs::Permissions::from_mode(0o600)).expect("chmod");
    set_mtime(&root.join("touched.txt"), T + 5000, 0);
    fs::rename(root.join("olddir"), root.join("newdir")).expect("rename");
    pin_dirs(root);
}

fn diff_json(spool: &Spool, a: &str, b: &str) -> serde_json::Value {
    let out = spool.run(["diff", "v", a, b, "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("diff --json: {e}\n{out}"))
}

fn changes(v: &serde_json::Value) -> BTreeMap<String, (String, Vec<String>)> {
    v["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            let what = c["what"]
                .as_array()
                .expect("what")
                .iter()
                .map(|w| w.as_str().expect("str").to_string())
                .collect();
            (
                c["path"].as_str().expect("path").to_string(),
                (c["change"].as_str().expect("change").to_string(), what),
            )
        })
        .collect()
}

fn expected() -> BTreeMap<String, (String, Vec<String>)> {
    let c = |k: &str, w: &[&str]| (k.to_string(), w.iter().map(|s| s.to_string()).collect());
    BTreeMap::from([
        ("new.txt".into(), c("added", &[])),
        ("gone.txt".into(), c("removed", &[])),
        ("data.bin".into(), c("changed", &["content"])),
        ("mode.txt".into(), c("changed", &["mode"])),
        ("touched.txt".into(), c("changed", &["mtime"])),
        ("olddir".into(), c("removed", &[])),
        ("olddir/inner.txt".into(), c("removed", &[])),
        ("newdir".into(), c("added", &[])),
        ("newdir/inner.txt".into(), c("added", &[])),
    ])
}

fn two_dumps() -> (tempfile::TempDir, Spool) {
    let vol = tempfile::tempdir().expect("tmp");
    tree(vol.path());
    let spool = common::spool_with_full_dump(vol.path());
    change(vol.path());
    spool.run(["dump", "v", "--level", "1", "--date", "2026-11-02"]);
    (vol, spool)
}

#[test]
fn diff_names_exactly_the_changes() {
    let (_vol, spool) = two_dumps();
    let v = diff_json(&spool, "2026-11-01", "2026-11-02");
    assert_eq!(changes(&v), expected(), "{v:#}");
    assert_eq!(
        v["summary"],
        serde_json::json!({"added": 3, "removed": 3, "changed": 3})
    );
    let ids = spool.list_json();
    let ids: Vec<u64> = ids
        .as_array()
        .expect("list")
        .iter()
        .map(|d| d["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(v["from"]["id"].as_u64(), Some(ids[0]));
    assert_eq!(v["to"]["id"].as_u64(), Some(ids[1]));

    // The other way round, added and removed swap.
    let back = changes(&diff_json(&spool, "2026-11-02", "2026-11-01"));
    assert_eq!(back["new.txt"].0, "removed");
    assert_eq!(back["gone.txt"].0, "added");

    // Text form: one line per change in path order, then the counts.
    let text = spool.run(["diff", "v", "2026-11-01", "2026-11-02"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.contains(&"+ new.txt"), "{text}");
    assert!(lines.contains(&"- gone.txt"), "{text}");
    assert!(lines.contains(&"M data.bin (content)"), "{text}");
    assert!(lines.contains(&"M mode.txt (mode)"), "{text}");
    assert_eq!(
        lines.last(),
        Some(&"3 added, 3 removed, 3 changed"),
        "{text}"
    );
    let pos = |l: &str| lines.iter().position(|x| *x == l).expect(l);
    assert!(pos("+ newdir") < pos("+ newdir/inner.txt"));
}

#[test]
fn a_dump_against_itself_is_empty() {
    let (_vol, spool) = two_dumps();
    for day in ["2026-11-01", "2026-11-02"] {
        let v = diff_json(&spool, day, day);
        assert_eq!(v["changes"], serde_json::json!([]), "{v:#}");
        assert_eq!(
            v["summary"],
            serde_json::json!({"added": 0, "removed": 0, "changed": 0})
        );
    }
    let text = spool.run(["diff", "v", "2026-11-02", "2026-11-02"]);
    assert_eq!(text, "0 added, 0 removed, 0 changed\n");
}

#[test]
fn bad_times_and_missing_dumps_are_usage_errors() {
    let (_vol, spool) = two_dumps();
    let (code, err) = spool.fail(["diff", "v", "2026-10-01", "2026-11-02"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no dump at or before"), "{err}");
    let (code, err) = spool.fail(["diff", "v", "yesterday-ish", "2026-11-02"]);
    assert_eq!(code, 2, "{err}");
    let (code, err) = spool.fail(["diff", "v", "2026-11-01", "backup"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no clone"), "{err}");
    let (code, _) = spool.fail(["diff", "nosuch", "2026-11-01", "2026-11-02"]);
    assert_ne!(code, 0);
}

/// Put a clone record for volume `v` into the catalog, as the clone phase would.
fn put_clone(spool: &Spool, view: reel::record::CloneView, dumped: Option<u64>) {
    let s = reel::spool::Spool::open(spool.path(), reel::spool::Access::Write).expect("open");
    let rec = reel::record::CloneRecord {
        version: reel::record::CLONE_RECORD_VERSION,
        volume: "v".into(),
        time_ns: 1_793_000_000_000_000_000,
        method: reel::spool::CloneMethod::Store,
        frozen_ns: 0,
        scan_started_ns: 0,
        source: "/nowhere".into(),
        view,
        dumped,
        totals: Default::default(),
        warnings: Vec::new(),
    };
    let w = s.catalog.writer().expect("write");
    w.put_clone(&rec).expect("put");
    w.commit().expect("commit");
}

#[test]
fn backup_reads_the_latest_clone() {
    let (_vol, spool) = two_dumps();
    let latest = {
        let s = reel::spool::Spool::open(spool.path(), reel::spool::Access::Read).expect("open");
        s.catalog
            .latest_dump("v")
            .expect("catalog")
            .expect("a dump")
    };
    // A `store` clone is a manifest: here, the second day's.
    put_clone(
        &spool,
        reel::record::CloneView::Manifest {
            chunks: latest.manifest.clone(),
            bytes: latest.manifest_bytes,
        },
        None,
    );
    let v = diff_json(&spool, "2026-11-01", "backup");
    assert_eq!(changes(&v), expected(), "{v:#}");
    assert_eq!(v["to"]["backup"], serde_json::json!(true));
    assert!(diff_json(&spool, "backup", "2026-11-02")["changes"] == serde_json::json!([]));

    // A directory clone not dumped yet: refused, saying what to do.
    put_clone(
        &spool,
        reel::record::CloneView::Dir {
            path: "/srv/clones/v".into(),
            statmap: None,
        },
        None,
    );
    let (code, err) = spool.fail(["diff", "v", "2026-11-01", "backup"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("/srv/clones/v") && err.contains("reel dump v"),
        "{err}"
    );
}
