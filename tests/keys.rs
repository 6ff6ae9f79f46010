//! The keys of an encrypted spool, through the real binary: every passphrase source, the
//! master key as a key file, `reel key list | add | remove | passwd | export | import`, and
//! that a wrong key fails clearly and changes nothing (docs/KEYS.md).
//!
//! Key files here use argon2id's least cost (`--kdf-memory 8 --kdf-passes 1`) so each unlock
//! takes milliseconds.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Spool, assert_trees_equal, run_fail, run_ok, snapshot};

const PW: &str = "correct horse battery staple";
const CHEAP: [&str; 4] = ["--kdf-memory", "8", "--kdf-passes", "1"];

/// Every variable that gives reel a key, removed: each test says which source it uses.
const KEY_VARS: [&str; 5] = [
    "REEL_PASSWORD",
    "REEL_PASSWORD_FILE",
    "REEL_PASSWORD_COMMAND",
    "REEL_KEY_FILE",
    "REEL_NEW_PASSWORD",
];

/// `reel --spool DIR` with no key source in its environment.
fn bare(s: &Spool) -> Command {
    let mut c = s.cmd();
    for v in KEY_VARS {
        c.env_remove(v);
    }
    c
}

/// `reel --spool DIR` with `REEL_PASSWORD=pw`.
fn with_pw(s: &Spool, pw: &str) -> Command {
    let mut c = bare(s);
    c.env("REEL_PASSWORD", pw);
    c
}

/// A new encrypted spool whose one passphrase is `PW`.
fn encrypted() -> Spool {
    let s = Spool::empty();
    run_ok(with_pw(&s, PW).args(["init", "--encrypt"]).args(CHEAP));
    s
}

/// `reel key list --json`, opened with `pw`.
fn key_list(s: &Spool, pw: &str) -> serde_json::Value {
    let out = run_ok(with_pw(s, pw).args(["key", "list", "--json"]));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("key list --json: {e}\n{out}"))
}

fn key_ids(s: &Spool, pw: &str) -> Vec<String> {
    key_list(s, pw)["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_string())
        .collect()
}

/// Whether `pw` opens the spool (`reel list`); panics on any failure but a wrong passphrase.
fn opens(s: &Spool, pw: &str) -> bool {
    let out = with_pw(s, pw).arg("list").output().unwrap();
    if out.status.success() {
        return true;
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wrong passphrase"), "{err}");
    false
}

/// Every file and folder under `root`: path, mode, and a file's bytes.
fn tree_state(root: &Path) -> BTreeMap<PathBuf, (u32, Option<Vec<u8>>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if md.is_dir() {
                stack.push(p.clone());
                out.insert(rel, (md.permissions().mode(), None));
            } else {
                out.insert(rel, (md.permissions().mode(), Some(fs::read(&p).unwrap())));
            }
        }
    }
    out
}

/// A small volume with a file of each kind, and its copy to compare restores with.
fn volume(work: &Path) -> (PathBuf, PathBuf) {
    let vol = work.join("vol");
    fs::create_dir_all(vol.join("sub/deeper")).unwrap();
    fs::write(vol.join("hello.txt"), b"hello, reel\n").unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(vol.join("sub/big.bin"), big).unwrap();
    fs::write(vol.join("sub/deeper/note"), b"deep").unwrap();
    std::os::unix::fs::symlink("hello.txt", vol.join("link")).unwrap();
    let copy = work.join("day1");
    snapshot(&vol, &copy);
    (vol, copy)
}

/// An encrypted spool with volume `v` dumped once (2026-11-01); returns the tree's copy.
fn encrypted_with_dump(work: &Path) -> (Spool, PathBuf) {
    let s = encrypted();
    let (vol, copy) = volume(work);
    run_ok(with_pw(&s, PW).args(["volume", "add", "v"]).arg(&vol));
    run_ok(with_pw(&s, PW).args(["dump", "v", "--level", "0", "--date", "2026-11-01"]));
    (s, copy)
}

#[test]
fn init_takes_its_passphrase_from_each_source_and_the_same_source_opens_it() {
    let work = tempfile::tempdir().unwrap();
    let pwfile = work.path().join("pw");
    fs::write(&pwfile, "from a file\nsecond line is not part of it\n").unwrap();
    let cmd_line = "echo 'from a command'; echo second".to_string();
    type Source<'a> = (&'a str, &'a dyn Fn(&mut Command));
    let sources: [Source; 5] = [
        ("REEL_PASSWORD", &|c| {
            c.env("REEL_PASSWORD", "from the environment");
        }),
        ("--password-file", &|c| {
            c.arg("--password-file").arg(&pwfile);
        }),
        ("REEL_PASSWORD_FILE", &|c| {
            c.env("REEL_PASSWORD_FILE", &pwfile);
        }),
        ("--password-command", &|c| {
            c.arg("--password-command").arg(&cmd_line);
        }),
        ("REEL_PASSWORD_COMMAND", &|c| {
            c.env("REEL_PASSWORD_COMMAND", &cmd_line);
        }),
    ];
    for (name, give) in sources {
        let s = Spool::empty();
        let mut init = bare(&s);
        give(&mut init);
        run_ok(init.args(["init", "--encrypt"]).args(CHEAP));
        // The same source opens it, after the subcommand too (global options).
        let mut list = bare(&s);
        list.args(["key", "list", "--json"]);
        give(&mut list);
        let v: serde_json::Value = serde_json::from_str(&run_ok(&mut list)).unwrap();
        let keys = v["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1, "{name}: {v}");
        assert_eq!(keys[0]["argon2"]["memory_kib"], 8192, "{name}: {v}");
        assert_eq!(keys[0]["argon2"]["passes"], 1, "{name}: {v}");
        assert_eq!(v["opened_by"], keys[0]["id"], "{name}: {v}");
        // The passphrase is what the source gave: its first line, nothing else.
        let want = match name {
            "REEL_PASSWORD" => "from the environment",
            "--password-file" | "REEL_PASSWORD_FILE" => "from a file",
            _ => "from a command",
        };
        assert!(opens(&s, want), "{name}");
        assert!(!opens(&s, &format!("{want}\n")), "{name}");
        // A wrong passphrase from the same kind of source fails.
        let (_, err) = run_fail(
            bare(&s)
                .arg("--password-command")
                .arg("echo wrong")
                .arg("list"),
        );
        assert!(err.contains("wrong passphrase"), "{name}: {err}");
    }
}

#[test]
fn a_file_or_command_goes_before_reel_password_and_both_together_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let s = encrypted();
    let pwfile = work.path().join("pw");
    fs::write(&pwfile, PW).unwrap();
    run_ok(
        with_pw(&s, "not it")
            .arg("--password-file")
            .arg(&pwfile)
            .arg("list"),
    );
    run_ok(
        with_pw(&s, "not it")
            .arg("--password-command")
            .arg(format!("echo '{PW}'"))
            .arg("list"),
    );
    let (code, err) = run_fail(
        with_pw(&s, PW)
            .env("REEL_PASSWORD_FILE", &pwfile)
            .arg("--password-command")
            .arg(format!("echo '{PW}'"))
            .arg("list"),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("give one"), "{err}");
}

#[test]
fn a_failing_password_command_is_named_with_its_exit_status() {
    let s = encrypted();
    let (_, err) = run_fail(
        bare(&s)
            .args(["--password-command", "echo oops >&2; exit 7"])
            .arg("list"),
    );
    assert!(err.contains("echo oops >&2; exit 7"), "{err}");
    assert!(err.contains("exit status: 7"), "{err}");
    let (_, err) = run_fail(bare(&s).args(["--password-command", "true", "list"]));
    assert!(err.contains("printed no passphrase"), "{err}");
}

#[test]
fn a_wrong_passphrase_fails_clearly_and_leaves_the_spool_byte_for_byte_as_it_was() {
    let work = tempfile::tempdir().unwrap();
    let (s, _) = encrypted_with_dump(work.path());
    let before = tree_state(s.path());
    let target = work.path().join("restored");
    let commands: Vec<Vec<&str>> = vec![
        vec!["list"],
        vec!["dump", "v", "--level", "1"],
        vec!["restore", "v", "--to", target.to_str().unwrap()],
        vec!["check"],
        vec!["gc"],
        vec!["prune", "--keep-last", "1"],
        vec!["volume", "add", "w", "/tmp"],
        vec!["key", "list"],
        vec!["key", "add"],
        vec!["key", "passwd"],
        vec!["key", "export"],
        vec!["rebuild-catalog"],
    ];
    for args in &commands {
        let (code, err) = run_fail(
            with_pw(&s, "wrong horse")
                .env("REEL_NEW_PASSWORD", "another")
                .args(args),
        );
        assert_ne!(code, 0);
        assert!(err.contains("wrong passphrase"), "{args:?}: {err}");
        assert!(
            !err.contains("wrong horse"),
            "the passphrase was printed: {err}"
        );
        assert_eq!(tree_state(s.path()), before, "{args:?} changed the spool");
        // No passphrase at all, and no terminal to ask on: the sources are named.
        let (_, err) = run_fail(bare(&s).args(args));
        for name in [
            "REEL_PASSWORD",
            "--password-file",
            "--password-command",
            "--key-file",
            "not a terminal",
        ] {
            assert!(err.contains(name), "{args:?}: {name} not in: {err}");
        }
        assert_eq!(tree_state(s.path()), before, "{args:?} changed the spool");
    }
    assert!(!target.exists());
}

#[test]
fn key_add_passwd_and_remove_change_which_passphrases_open_the_spool() {
    let work = tempfile::tempdir().unwrap();
    let s = encrypted();
    let first = key_ids(&s, PW);
    assert_eq!(first.len(), 1);
    // The last key file is never removed.
    let (code, err) = run_fail(with_pw(&s, PW).args(["key", "remove", &first[0]]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&first[0]), "{err}");

    // key add: a second passphrase, from the variable and from a file.
    run_ok(
        with_pw(&s, PW)
            .env("REEL_NEW_PASSWORD", "second one")
            .args(["key", "add", "--comment", "the night operator"])
            .args(CHEAP),
    );
    let pwfile = work.path().join("third");
    fs::write(&pwfile, "third one\n").unwrap();
    run_ok(
        with_pw(&s, "second one")
            .args(["key", "add", "--new-password-file"])
            .arg(&pwfile)
            .args(["--kdf-memory", "9", "--kdf-passes", "2"]),
    );
    for pw in [PW, "second one", "third one"] {
        assert!(opens(&s, pw), "{pw}");
    }
    let listed = key_list(&s, "third one");
    let keys = listed["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3, "{listed}");
    let by_comment = |c: &str| keys.iter().find(|k| k["comment"] == c).unwrap().clone();
    assert_eq!(
        by_comment("the night operator")["argon2"]["memory_kib"],
        8192
    );
    // The third, which opened this listing, has the cost it was given.
    let third = keys.iter().find(|k| k["opened"] == true).unwrap().clone();
    assert_eq!(third["argon2"]["memory_kib"], 9 * 1024, "{listed}");
    assert_eq!(third["argon2"]["passes"], 2, "{listed}");
    assert_eq!(third["comment"], "", "{listed}");
    let text = run_ok(with_pw(&s, PW).args(["key", "list"]));
    assert!(text.contains("the night operator"), "{text}");
    assert!(text.contains(&format!("* {}", first[0])), "{text}");

    // The minimum cost is enforced, and nothing is written.
    let (code, err) = run_fail(with_pw(&s, PW).env("REEL_NEW_PASSWORD", "cheap").args([
        "key",
        "add",
        "--kdf-memory",
        "4",
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--kdf-memory at least 8"), "{err}");
    assert_eq!(key_ids(&s, PW).len(), 3);

    // key passwd: the old passphrase fails, the new one opens, the others are untouched.
    run_ok(
        with_pw(&s, "second one")
            .env("REEL_NEW_PASSWORD", "second, changed")
            .args(["key", "passwd"]),
    );
    assert!(!opens(&s, "second one"));
    for pw in [PW, "second, changed", "third one"] {
        assert!(opens(&s, pw), "{pw}");
    }
    let after = key_list(&s, "second, changed");
    let changed = after["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["opened"] == true)
        .unwrap()
        .clone();
    assert_eq!(changed["comment"], "the night operator", "{after}");
    assert_eq!(after["keys"].as_array().unwrap().len(), 3);

    // key remove: not the file this passphrase opened; another by a unique start of its id.
    let third_id = third["id"].as_str().unwrap().to_string();
    let (code, err) = run_fail(with_pw(&s, "third one").args(["key", "remove", &third_id]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("opened"), "{err}");
    run_ok(with_pw(&s, PW).args(["key", "remove", &third_id[..6]]));
    assert!(!opens(&s, "third one"));
    assert!(opens(&s, PW));
    assert_eq!(key_ids(&s, PW).len(), 2);
    let (_, err) = run_fail(with_pw(&s, PW).args(["key", "remove", "0123456789abcdef"]));
    assert!(err.contains("no key file"), "{err}");
}

#[test]
fn key_passwd_killed_between_its_two_steps_leaves_both_passphrases_opening() {
    let s = encrypted();
    let out = with_pw(&s, PW)
        .env("REEL_NEW_PASSWORD", "the new one")
        .env("REEL_FAILPOINT", "key-passwd-added")
        .args(["key", "passwd"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), None, "not killed: {out:?}");
    assert!(opens(&s, PW));
    assert!(opens(&s, "the new one"));
    assert_eq!(key_ids(&s, PW).len(), 2);
    // Run again, it finishes the change: the old passphrase's file goes.
    run_ok(
        with_pw(&s, PW)
            .env("REEL_NEW_PASSWORD", "the new one")
            .args(["key", "passwd"]),
    );
    assert!(!opens(&s, PW));
    assert!(opens(&s, "the new one"));
    assert_eq!(key_ids(&s, "the new one").len(), 2);
}

#[test]
fn export_then_import_brings_back_a_spool_whose_key_files_are_all_lost() {
    let work = tempfile::tempdir().unwrap();
    let (s, copy) = encrypted_with_dump(work.path());
    let paper = run_ok(with_pw(&s, PW).args(["key", "export"]));
    assert_eq!(paper.lines().count(), 6, "{paper}");
    let fp = key_list(&s, PW)["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        paper.starts_with(&format!("reel master key v1 fingerprint {fp}\n")),
        "{paper}"
    );
    let qr = run_ok(with_pw(&s, PW).args(["key", "export", "--qr"]));
    assert!(qr.starts_with(&paper), "{qr}");
    assert!(qr.lines().count() > 20, "{qr}");

    fs::remove_dir_all(s.path().join("keys")).unwrap();
    let (_, err) = run_fail(with_pw(&s, PW).arg("list"));
    assert!(err.contains("no key files"), "{err}");
    assert!(err.contains("reel key import"), "{err}");

    // Typed back with a typo in line 3 (case and spacing changed too): the line is named.
    let typed = paper.to_uppercase().replace("  ", "   ");
    let mut lines: Vec<String> = typed.lines().map(String::from).collect();
    let l3 = lines[3].clone();
    let (label, digits) = l3.split_once(':').unwrap();
    let wrong_digit = if digits.as_bytes()[3] == b'7' {
        "8"
    } else {
        "7"
    };
    lines[3] = format!("{label}:{}{wrong_digit}{}", &digits[..3], &digits[4..]);
    let bad = work.path().join("typo.txt");
    fs::write(&bad, lines.join("\n")).unwrap();
    let (_, err) = run_fail(
        bare(&s)
            .env("REEL_NEW_PASSWORD", "after the loss")
            .args(["key", "import"])
            .arg(&bad),
    );
    assert!(err.contains("key line 3:"), "{err}");
    assert!(
        !err.contains("key line 2:") && !err.contains("key line 4:"),
        "{err}"
    );
    let keys_dir = s.path().join("keys");
    assert!(!keys_dir.exists() || fs::read_dir(&keys_dir).unwrap().next().is_none());

    // The right text, on standard input: a new key file under a new passphrase.
    let mut import = bare(&s);
    import
        .env("REEL_NEW_PASSWORD", "after the loss")
        .args(["key", "import", "-"])
        .args(CHEAP)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = import.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(typed.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert!(!opens(&s, PW));
    let list = run_ok(with_pw(&s, "after the loss").args(["list", "--json"]));
    assert!(list.contains("\"volume\": \"v\""), "{list}");
    let target = work.path().join("restored");
    run_ok(
        with_pw(&s, "after the loss")
            .args(["restore", "v", "--dump", "1", "--to"])
            .arg(&target),
    );
    assert_trees_equal(&copy, &target);
}

#[test]
fn the_exported_key_opens_the_spool_without_a_passphrase_and_another_key_is_named() {
    let work = tempfile::tempdir().unwrap();
    let (s, copy) = encrypted_with_dump(work.path());
    let keyfile = work.path().join("master.txt");
    fs::write(&keyfile, run_ok(with_pw(&s, PW).args(["key", "export"]))).unwrap();
    let fp = key_list(&s, PW)["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();

    // Opened by --key-file (and REEL_KEY_FILE), even with a wrong passphrase beside it.
    let target = work.path().join("restored");
    run_ok(
        with_pw(&s, "wrong")
            .arg("--key-file")
            .arg(&keyfile)
            .args(["restore", "v", "--dump", "1", "--to"])
            .arg(&target),
    );
    assert_trees_equal(&copy, &target);
    let listed = run_ok(
        bare(&s)
            .env("REEL_KEY_FILE", &keyfile)
            .args(["key", "list", "--json"]),
    );
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(v["opened_by"], serde_json::Value::Null, "{v}");
    // With the master key, the only key file can be replaced: add one, remove the old.
    let old = key_ids(&s, PW);
    run_ok(
        bare(&s)
            .arg("--key-file")
            .arg(&keyfile)
            .env("REEL_NEW_PASSWORD", "new")
            .args(["key", "add"])
            .args(CHEAP),
    );
    run_ok(
        bare(&s)
            .arg("--key-file")
            .arg(&keyfile)
            .args(["key", "remove", &old[0]]),
    );
    assert!(!opens(&s, PW));
    assert!(opens(&s, "new"));
    // key passwd needs a passphrase to know which file it replaces.
    let (_, err) = run_fail(
        bare(&s)
            .arg("--key-file")
            .arg(&keyfile)
            .env("REEL_NEW_PASSWORD", "x")
            .args(["key", "passwd"]),
    );
    assert!(err.contains("key add"), "{err}");

    // Another spool's key: both fingerprints are named, and nothing changes.
    let other = encrypted();
    let other_key = work.path().join("other.txt");
    fs::write(
        &other_key,
        run_ok(with_pw(&other, PW).args(["key", "export"])),
    )
    .unwrap();
    let other_fp = key_list(&other, PW)["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    let before = tree_state(s.path());
    let (_, err) = run_fail(bare(&s).arg("--key-file").arg(&other_key).arg("list"));
    assert!(err.contains(&fp) && err.contains(&other_fp), "{err}");
    assert_eq!(tree_state(s.path()), before);
    // A key file with a typo names the line.
    let text = fs::read_to_string(&keyfile).unwrap();
    let typo = text.replacen("check:", "chek:", 1);
    fs::write(&keyfile, typo).unwrap();
    let (_, err) = run_fail(bare(&s).arg("--key-file").arg(&keyfile).arg("list"));
    assert!(err.contains("check line"), "{err}");
}

#[test]
fn init_from_key_makes_a_spool_that_rebuilds_its_catalog_from_a_lost_spools_packs() {
    let work = tempfile::tempdir().unwrap();
    let (s, copy) = encrypted_with_dump(work.path());
    let keyfile = work.path().join("master.txt");
    fs::write(&keyfile, run_ok(with_pw(&s, PW).args(["key", "export"]))).unwrap();
    let fp = key_list(&s, PW)["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();

    let fresh = Spool::empty();
    run_ok(
        with_pw(&fresh, "new site")
            .args(["init", "--encrypt", "--from-key"])
            .arg(&keyfile)
            .args(CHEAP),
    );
    assert_eq!(key_list(&fresh, "new site")["fingerprint"], fp.as_str());
    let status = Command::new("cp")
        .arg("-a")
        .arg(s.path().join("packs/."))
        .arg(fresh.path().join("packs"))
        .status()
        .unwrap();
    assert!(status.success());
    run_ok(with_pw(&fresh, "new site").arg("rebuild-catalog"));
    let target = work.path().join("restored");
    run_ok(
        with_pw(&fresh, "new site")
            .args(["restore", "v", "--dump", "1", "--to"])
            .arg(&target),
    );
    assert_trees_equal(&copy, &target);
}

#[test]
fn a_damaged_key_file_does_not_stop_another_from_opening_the_spool() {
    // Default argon2id cost: this test also runs against a reel without --kdf-memory.
    let s = Spool::empty();
    run_ok(with_pw(&s, PW).args(["init", "--encrypt"]));
    // A key file cut short (a crash, a bad copy) sorts before the good one.
    fs::write(
        s.path().join("keys/0000000000000000.key"),
        "{\"format\": 1, \"id\"",
    )
    .unwrap();
    run_ok(with_pw(&s, PW).arg("list"));
    let (_, err) = run_fail(with_pw(&s, "wrong").arg("list"));
    assert!(err.contains("wrong passphrase"), "{err}");
    assert!(err.contains("0000000000000000.key"), "{err}");
}

/// `cmd` run by `script` on a new terminal, its input typed there line by line (a pause
/// before each, so the prompt is up); returns (success, what the terminal showed). `None`
/// when `script` (util-linux) is not installed.
fn on_a_terminal(cmd: &str, typed: &[&str]) -> Option<(bool, String)> {
    use std::io::Write;
    use std::process::Stdio;
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("`script` is not installed: the prompt is not tested");
        return None;
    }
    let mut child = Command::new("script")
        .args(["-qec", cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for line in typed {
        std::thread::sleep(std::time::Duration::from_millis(700));
        stdin.write_all(format!("{line}\r").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(700));
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let shown =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Some((out.status.success(), shown))
}

#[test]
fn on_a_terminal_the_passphrase_is_asked_without_echo_and_a_new_one_twice() {
    let s = Spool::empty();
    let exe = env!("CARGO_BIN_EXE_reel");
    let spool = s.path().display().to_string();
    let base = format!(
        "env -u REEL_PASSWORD -u REEL_PASSWORD_FILE -u REEL_PASSWORD_COMMAND -u REEL_KEY_FILE -u REEL_NEW_PASSWORD {exe} --spool {spool}"
    );
    // Two different answers: refused, nothing made.
    let Some((ok, shown)) = on_a_terminal(
        &format!("{base} init --encrypt --kdf-memory 8"),
        &["typed secret", "typed secreT"],
    ) else {
        return;
    };
    assert!(!ok, "{shown}");
    assert!(shown.contains("differ"), "{shown}");
    assert!(!s.path().join("reel.toml").exists());
    let (ok, shown) = on_a_terminal(
        &format!("{base} init --encrypt --kdf-memory 8"),
        &["typed secret", "typed secret"],
    )
    .unwrap();
    assert!(ok, "{shown}");
    assert!(shown.contains("Enter it again"), "{shown}");
    assert!(!shown.contains("typed secret"), "echoed: {shown}");
    let (ok, shown) = on_a_terminal(&format!("{base} key list"), &["typed secret"]).unwrap();
    assert!(ok, "{shown}");
    assert!(shown.contains("Enter the passphrase of key"), "{shown}");
    assert!(!shown.contains("typed secret"), "echoed: {shown}");
    assert!(opens(&s, "typed secret"));
}
