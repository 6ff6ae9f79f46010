//! Every file reel writes for itself is created 0600 and every folder 0700: the spool (settings,
//! catalog, locks, packs, tmp/ and what is staged there, logs and nightly reports, clones/,
//! keys/), rebuild-catalog's new catalog, tape images and split volumes, and the payload a tape
//! carries. The commands run with umask 000, so a file or folder made with the default modes
//! shows as 0666 or 0777: the modes come from reel's own calls, not from the caller's umask.
//! What a restore writes into a user's tree keeps the modes the dump recorded, whatever the
//! umask.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// `reel --spool SPOOL` run with umask `umask` and the environment `env`.
fn reel_in(spool: &Path, umask: u32, env: &[(&str, &str)]) -> Command {
    let mut c = reel();
    c.arg("--spool").arg(spool);
    for (k, v) in env {
        c.env(k, v);
    }
    // SAFETY: umask(2) only, between fork and exec; it cannot fail and allocates nothing.
    unsafe {
        c.pre_exec(move || {
            libc::umask(umask as libc::mode_t);
            Ok(())
        });
    }
    c
}

/// A spool driven with umask 000 (and `REEL_PASSWORD` for an encrypted one).
struct Run {
    spool: PathBuf,
    env: Vec<(&'static str, &'static str)>,
}

impl Run {
    fn cmd(&self) -> Command {
        reel_in(&self.spool, 0, &self.env)
    }
    fn ok(&self, args: &[&str]) -> String {
        run_ok(self.cmd().args(args))
    }
    /// The command, killed by the failpoint `point` (`REEL_FAILPOINT`) where it stops.
    fn killed_at(&self, point: &str, args: &[&str]) {
        let out = self
            .cmd()
            .args(args)
            .env("REEL_FAILPOINT", point)
            .output()
            .unwrap();
        assert!(
            out.status.code().is_none(),
            "{args:?} was to be killed at {point}: {out:?}"
        );
    }
}

/// The mode bits of every file and folder under `root` (relative paths; `""` is `root`
/// itself) that is not a regular file of mode 0600 or a folder of mode 0700. A folder `skip`
/// names is neither checked nor entered (a directory clone: a copy of the volume, with its
/// modes). Also returns how many entries were checked.
fn offenders(root: &Path, skip: &dyn Fn(&Path) -> bool) -> (Vec<String>, BTreeMap<String, u32>) {
    let mut bad = Vec::new();
    let mut seen = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = root.join(&rel);
        let md = fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mode = md.mode() & 0o7777;
        let shown = rel.display().to_string();
        seen.insert(shown.clone(), mode);
        let ft = md.file_type();
        if ft.is_dir() {
            if mode != 0o700 {
                bad.push(format!("folder {shown:?} has mode {mode:04o}, not 0700"));
            }
            for e in fs::read_dir(&path).unwrap() {
                let child = rel.join(e.unwrap().file_name());
                if !skip(&child) {
                    stack.push(child);
                }
            }
        } else if ft.is_file() {
            if mode != 0o600 {
                bad.push(format!("file {shown:?} has mode {mode:04o}, not 0600"));
            }
        } else {
            bad.push(format!("{shown:?} is neither a file nor a folder ({ft:?})"));
        }
    }
    (bad, seen)
}

/// Assert everything under `root` is private (see [`offenders`]), naming each offender, and
/// that every path `expect` gives (a glob-free prefix match: `packs/` means some entry under
/// packs/; `""` is the root) was among what was checked, so the walk saw what the step made.
fn assert_private(step: &str, root: &Path, skip: &dyn Fn(&Path) -> bool, expect: &[&str]) {
    let (bad, seen) = offenders(root, skip);
    let missing: Vec<&&str> = expect
        .iter()
        .filter(|want| !seen.keys().any(|k| k.starts_with(**want)))
        .collect();
    assert!(
        missing.is_empty(),
        "{step}: expected {missing:?} under {}; saw {:?}",
        root.display(),
        seen.keys().collect::<Vec<_>>()
    );
    assert!(
        bad.is_empty(),
        "{step}: {} entr{} under {} not private:\n  {}",
        bad.len(),
        if bad.len() == 1 { "y" } else { "ies" },
        root.display(),
        bad.join("\n  ")
    );
}

fn no_skip(_: &Path) -> bool {
    false
}

/// A small volume: text and random files in a few folders, with modes of every kind.
fn volume(root: &Path, seed: u64) {
    let mut rng = Rng::new(seed);
    for (rel, len) in [
        ("a.txt", 20_000),
        ("b.bin", 700_000),
        ("sub/c.bin", 900_000),
        ("sub/deep/d.txt", 5_000),
    ] {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, rng.bytes(len)).unwrap();
    }
    fs::set_permissions(root.join("a.txt"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(root.join("sub"), fs::Permissions::from_mode(0o755)).unwrap();
}

/// One day's change: a new random file, so every dump adds packs.
fn change(root: &Path, day: u32) {
    let mut rng = Rng::new(0xC0FFEE + day as u64);
    fs::write(root.join(format!("new-{day}.bin")), rng.bytes(600_000)).unwrap();
}

/// Every command that writes into a spool or a tape folder, on a spool made with `init_args`,
/// each followed by the walk.
fn every_command_writes_private_files(init_args: &[&str], env: &[(&'static str, &'static str)]) {
    let work = tempfile::tempdir().unwrap();
    // The spool's folder and the tapes' folder are made by reel (init) and by the test.
    let run = Run {
        spool: work.path().join("site/spool"),
        env: env.to_vec(),
    };
    let spool = run.spool.clone();
    let tapes = work.path().join("tapes");
    fs::create_dir(&tapes).unwrap();
    // The test makes this folder, not reel: its mode is the test's.
    fs::set_permissions(&tapes, fs::Permissions::from_mode(0o700)).unwrap();
    let vol = work.path().join("vol");
    let cvol = work.path().join("cvol");
    volume(&vol, 1);
    volume(&cvol, 2);
    // Directory clones are copies of a volume, modes included: not the spool's own files.
    let clone_tree = |rel: &Path| {
        let parts: Vec<_> = rel.components().collect();
        parts.len() == 3
            && parts[0].as_os_str() == "clones"
            && !rel.to_string_lossy().ends_with(".statmap")
    };

    let mut init = vec!["init"];
    init.extend_from_slice(init_args);
    run.ok(&init);
    let with = |more: &[&'static str]| -> Vec<&'static str> {
        let mut v: Vec<&'static str> = vec!["", "reel.toml", "catalog.redb", "lock", "packs"];
        v.extend(more);
        v
    };
    let mut base = with(&["tmp", "logs", "clones"]);
    if init_args.contains(&"--encrypt") {
        base.push("keys/");
    }
    assert_private("init", &spool, &no_skip, &base);

    run.ok(&[
        "volume",
        "add",
        "v",
        vol.to_str().unwrap(),
        "--schedule",
        "FIIIIII",
    ]);
    run.ok(&[
        "volume",
        "add",
        "c",
        cvol.to_str().unwrap(),
        "--schedule",
        "FIIIIII",
    ]);
    run.ok(&["volume", "set", "c", "--clone", "copy"]);
    assert_private("volume add", &spool, &no_skip, &base);

    run.ok(&["dump", "v", "--level", "0", "--date", "2026-11-01"]);
    change(&vol, 2);
    run.ok(&["dump", "v", "--level", "1", "--date", "2026-11-02"]);
    // A reader takes the readers' lock.
    run.ok(&["ls", "v"]);
    let mut dumped = base.clone();
    dumped.extend(["packs/", "locks/readers"]);
    assert_private("dump levels 0 and 1", &spool, &no_skip, &dumped);

    // A dump killed while it writes leaves its pack in tmp/ as it was being written.
    change(&vol, 3);
    run.killed_at(
        "chunk-appended",
        &["dump", "v", "--level", "1", "--date", "2026-11-03"],
    );
    let mut killed = dumped.clone();
    killed.push("tmp/pack-");
    assert_private("a dump killed mid-pack", &spool, &no_skip, &killed);
    run.ok(&["dump", "v", "--level", "1", "--date", "2026-11-03"]);

    // An export killed after its image is written leaves its staged payload in tmp/.
    let img = tapes.join("w1.tape");
    run.killed_at(
        "export-image-written",
        &["export", "--to", img.to_str().unwrap(), "--label", "W1"],
    );
    let mut staged = dumped.clone();
    staged.push("tmp/export-");
    let (_, seen) = offenders(&spool, &no_skip);
    for want in ["/reel/LABEL", "/reel/CATALOG", "/reel/packs/"] {
        assert!(
            seen.keys()
                .any(|k| k.starts_with("tmp/export-") && k.contains(want)),
            "no staged {want} in tmp/: {:?}",
            seen.keys().collect::<Vec<_>>()
        );
    }
    assert_private(
        "an export killed after its image",
        &spool,
        &no_skip,
        &staged,
    );
    assert_private("the killed export's image", &tapes, &no_skip, &["w1.tape"]);

    // The image that was left is written over (its mode stays 0600); the tape is recorded.
    run.ok(&["export", "--to", img.to_str().unwrap(), "--label", "W1"]);
    assert_private("export", &spool, &no_skip, &dumped);
    assert_private("export", &tapes, &no_skip, &["w1.tape"]);

    // A split image: every volume 0600.
    change(&vol, 4);
    run.ok(&["dump", "v", "--level", "1", "--date", "2026-11-04"]);
    let split = tapes.join("w2");
    run.ok(&[
        "export",
        "--to",
        split.to_str().unwrap(),
        "--capacity",
        "256K",
        "--label",
        "W2",
    ]);
    assert!(
        tapes.join("w2.002").exists(),
        "the split export made one volume"
    );
    assert_private(
        "a split export",
        &tapes,
        &no_skip,
        &["w1.tape", "w2.001", "w2.002"],
    );
    run.ok(&[
        "verify-tape",
        img.to_str().unwrap(),
        split.to_str().unwrap(),
    ]);
    assert_private("verify-tape", &spool, &no_skip, &dumped);

    // What the stock restore extracts from a reel tape is private too: the image says so.
    if have_restore() {
        let x = work.path().join("extracted");
        fs::create_dir(&x).unwrap();
        fs::set_permissions(&x, fs::Permissions::from_mode(0o700)).unwrap();
        stock_extract(&img, &x);
        assert_private(
            "restore -x of a reel tape",
            &x,
            &no_skip,
            &["reel", "reel/LABEL", "reel/CATALOG", "reel/packs/"],
        );
    }

    // nightly: clones (a directory clone and its stat map), dumps, its saved report.
    run.ok(&["nightly", "--date", "2026-11-05"]);
    let mut nightly = dumped.clone();
    nightly.extend(["logs/nightly-", "clones/c", "clones/c/"]);
    assert_private("nightly", &spool, &clone_tree, &nightly);
    let (_, seen) = offenders(&spool, &clone_tree);
    assert!(
        seen.keys()
            .any(|k| k.starts_with("clones/c/") && k.ends_with(".statmap"))
            && seen
                .keys()
                .any(|k| k.starts_with("logs/") && k.ends_with(".json"))
            && seen
                .keys()
                .any(|k| k.starts_with("locks/") && k.ends_with(".freeze")),
        "nightly left no stat map, report or freeze lock: {:?}",
        seen.keys().collect::<Vec<_>>()
    );

    run.ok(&["prune", "--keep-last", "2"]);
    assert_private("prune", &spool, &clone_tree, &nightly);
    run.ok(&["gc", "--max-unused", "0"]);
    assert_private("gc", &spool, &clone_tree, &nightly);
    run.ok(&["purge", "--exported"]);
    assert_private("purge", &spool, &clone_tree, &nightly);
    run.ok(&["check", "--repair"]);
    assert_private("check --repair", &spool, &clone_tree, &nightly);
    // A spool made by this reel has no folder check would warn about.
    let out = run.cmd().arg("check").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("other users"),
        "{err}"
    );

    // rebuild-catalog: its new catalog while it is being built, then in place.
    run.killed_at("rebuild-built", &["rebuild-catalog"]);
    let mut rebuilding = nightly.clone();
    rebuilding.push("catalog.redb.rebuild");
    assert_private("rebuild-catalog, built", &spool, &clone_tree, &rebuilding);
    run.ok(&["rebuild-catalog"]);
    let mut rebuilt = nightly.clone();
    rebuilt.push("catalog.redb.damaged-");
    assert_private("rebuild-catalog", &spool, &clone_tree, &rebuilt);

    // import into a new spool: packs copied in from the tape.
    let fresh = Run {
        spool: work.path().join("fresh"),
        env: env.to_vec(),
    };
    let mut init = vec!["init"];
    init.extend_from_slice(init_args);
    // An encrypted spool's tapes carry packs sealed under its key: the spool they are
    // imported into is made with that key.
    let key = work.path().join("master.key");
    if init_args.contains(&"--encrypt") {
        fs::write(&key, run.ok(&["key", "export"])).unwrap();
        init.extend_from_slice(&["--from-key", key.to_str().unwrap()]);
    }
    fresh.ok(&init);
    if init_args.contains(&"--encrypt") {
        // An encrypted tape imports only into a spool with its key (docs/TAPES.md, "Encrypted
        // tapes"): the new spool takes the source spool's key file and fingerprint, as a
        // spool made from the exported key has them.
        same_key_as(&spool, &fresh.spool);
    }
    fresh.ok(&["import", img.to_str().unwrap()]);
    fresh.ok(&["import", split.to_str().unwrap()]);
    assert_private("import", &fresh.spool, &no_skip, &with(&["packs/", "tmp"]));
    // And the restore from it keeps the volume's own modes.
    let r = work.path().join("restored");
    fresh.ok(&[
        "restore",
        "v",
        "--at",
        "2026-11-02",
        "--to",
        r.to_str().unwrap(),
    ]);
    let md = |p: &str| fs::symlink_metadata(r.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(md("a.txt"), 0o644);
    assert_eq!(md("sub"), 0o755);
}

/// Give encrypted spool `to` the master key of encrypted spool `from`: its key files (copied
/// with their modes) and the fingerprint in reel.toml.
fn same_key_as(from: &Path, to: &Path) {
    let fingerprint = |root: &Path| {
        let toml = fs::read_to_string(root.join("reel.toml")).unwrap();
        toml.lines()
            .find_map(|l| l.strip_prefix("fingerprint = \""))
            .map(|l| l.trim_end_matches('"').to_string())
            .unwrap_or_else(|| panic!("no fingerprint in reel.toml:\n{toml}"))
    };
    for e in fs::read_dir(to.join("keys")).unwrap() {
        fs::remove_file(e.unwrap().path()).unwrap();
    }
    for e in fs::read_dir(from.join("keys")).unwrap() {
        let p = e.unwrap().path();
        fs::copy(&p, to.join("keys").join(p.file_name().unwrap())).unwrap();
    }
    let toml = to.join("reel.toml");
    let text = fs::read_to_string(&toml)
        .unwrap()
        .replace(&fingerprint(to), &fingerprint(from));
    fs::write(&toml, text).unwrap();
}

#[test]
fn every_file_a_plain_spool_and_its_tapes_hold_is_private() {
    every_command_writes_private_files(&[], &[]);
}

#[test]
fn every_file_an_encrypted_spool_and_its_tapes_hold_is_private() {
    every_command_writes_private_files(&["--encrypt"], &[("REEL_PASSWORD", "x")]);
}

/// A spool made by an older reel, whose folders and files have the umask's modes: they keep
/// them (reel does not change what it did not make), what reel adds is private, and `check`
/// names the open folders.
#[test]
fn an_older_spools_folders_keep_their_modes_and_new_files_are_private() {
    let work = tempfile::tempdir().unwrap();
    let spool = work.path().join("spool");
    let run = Run {
        spool: spool.clone(),
        env: vec![],
    };
    run.ok(&["init"]);
    let vol = work.path().join("vol");
    volume(&vol, 3);
    run.ok(&["volume", "add", "v", vol.to_str().unwrap()]);
    run.ok(&["dump", "v", "--level", "0", "--date", "2026-11-01"]);
    // As an older reel left it: every folder 0755, every file 0644, a stale reel.toml.tmp.
    let (_, seen) = offenders(&spool, &no_skip);
    for rel in seen.keys() {
        let p = spool.join(rel);
        let mode = if p.is_dir() { 0o755 } else { 0o644 };
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
    fs::write(spool.join("reel.toml.tmp"), b"stale").unwrap();
    fs::set_permissions(
        spool.join("reel.toml.tmp"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let old: Vec<String> = seen.keys().cloned().collect();

    change(&vol, 2);
    run.ok(&["volume", "set", "v", "--schedule", "FIIIIII"]);
    run.ok(&["dump", "v", "--level", "1", "--date", "2026-11-02"]);
    run.ok(&["nightly", "--date", "2026-11-03"]);
    let (_, now) = offenders(&spool, &no_skip);
    let mut bad = Vec::new();
    for (rel, mode) in &now {
        let is_dir = spool.join(rel).is_dir();
        let want = if rel == "reel.toml" {
            0o600 // written anew (temp file, rename) at every change
        } else if old.contains(rel) {
            if is_dir { 0o755 } else { 0o644 }
        } else if is_dir {
            0o700
        } else {
            0o600
        };
        if *mode != want {
            bad.push(format!("{rel:?}: {mode:04o}, want {want:04o}"));
        }
    }
    let new_packs = now
        .keys()
        .filter(|k| k.starts_with("packs/") && !old.contains(k))
        .count();
    assert!(new_packs > 0, "the second dump added no pack: {now:?}");
    assert!(
        now.keys().any(|k| k.starts_with("logs/nightly-")),
        "no nightly report: {now:?}"
    );
    assert!(bad.is_empty(), "modes:\n  {}", bad.join("\n  "));

    // check names the open folders and how to close them; once closed it says nothing.
    let out = run.cmd().arg("check").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    for d in ["packs", "tmp", "logs", "clones"] {
        assert!(
            err.contains(&spool.join(d).display().to_string()),
            "check does not name {d}: {err}"
        );
    }
    assert!(err.contains("chmod go= "), "{err}");
    let (_, now) = offenders(&spool, &no_skip);
    for (rel, _) in now.iter().filter(|(rel, _)| spool.join(rel).is_dir()) {
        fs::set_permissions(spool.join(rel), fs::Permissions::from_mode(0o700)).unwrap();
    }
    let out = run.cmd().arg("check").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("other users"),
        "{err}"
    );
}

/// What a restore writes keeps the dump's modes exactly, set-id and sticky bits included,
/// whatever the umask of the restoring process: the spool's modes do not leak into it.
#[test]
fn a_restore_keeps_the_exact_modes_whatever_the_umask() {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    rich_tree(&vol);
    let modes: &[(&str, u32, bool)] = &[
        ("m/f644", 0o644, false),
        ("m/f755", 0o755, false),
        ("m/f600", 0o600, false),
        ("m/f4755", 0o4755, false),
        ("m/f2711", 0o2711, false),
        ("m/d1777", 0o1777, true),
        ("m/d750", 0o750, true),
        ("m/d2775", 0o2775, true),
        ("m/d711", 0o711, true),
    ];
    let mut modes = modes.to_vec();
    if is_root() {
        // Only root reads a file nobody may read.
        modes.push(("m/f000", 0o000, false));
    }
    for (rel, mode, dir) in &modes {
        let p = vol.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        if *dir {
            fs::create_dir(&p).unwrap();
        } else {
            fs::write(&p, rel.as_bytes()).unwrap();
        }
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
    }
    fs::set_permissions(vol.join("m"), fs::Permissions::from_mode(0o755)).unwrap();
    snapshot(&vol, &work.path().join("day1"));
    let spool = work.path().join("spool");
    let run = Run {
        spool: spool.clone(),
        env: vec![],
    };
    run.ok(&["init"]);
    run.ok(&["volume", "add", "v", vol.to_str().unwrap()]);
    run.ok(&["dump", "v", "--level", "0", "--date", "2026-11-01"]);
    for umask in [0o000, 0o077, 0o022] {
        let to = work.path().join(format!("r{umask:03o}"));
        run_ok(
            reel_in(&spool, umask, &[])
                .args(["restore", "v", "--at", "2026-11-01", "--to"])
                .arg(&to),
        );
        assert_trees_equal(&work.path().join("day1"), &to);
        for (rel, mode, _) in &modes {
            let got = fs::symlink_metadata(to.join(rel)).unwrap().mode() & 0o7777;
            assert_eq!(got, *mode, "umask {umask:03o}: {rel} restored {got:04o}");
        }
        let root = fs::symlink_metadata(&to).unwrap().mode() & 0o7777;
        let want = fs::symlink_metadata(&vol).unwrap().mode() & 0o7777;
        assert_eq!(root, want, "umask {umask:03o}: the target's own mode");
    }
    // cat writes the bytes to standard output, nothing else.
    let out = run.ok(&["cat", "v", "--at", "2026-11-01", "m/f600"]);
    assert_eq!(out, "m/f600");
}
