//! Tapes from an encrypted spool: the stock `restore` still lists and extracts the image, yet
//! the image holds neither file contents nor file names in the clear; LABEL names the key, the
//! CATALOG is sealed and bound to its tape; every command that reads a tape refuses one under
//! another key, naming both keys, before it writes anything; `export-plain` asks before it
//! writes a readable tree.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const PASS_A: &str = "correct horse battery staple";
const PASS_B: &str = "another spool's passphrase";
/// In a file's contents only: must never be found in an encrypted spool's image.
const CONTENT_MARKER: &[u8] = b"CONTENT-MARKER-7f3a9c1e5d2b4680-do-not-leak";
/// In a file's name only; shares no run of letters with another name, so no compressor
/// turns part of it into a back-reference in the plain control.
const NAME_MARKER: &str = "QZ7XW4LP9RV2JK8NY3HT6GB5MC1D";

/// A spool whose every command runs with its passphrase in `REEL_PASSWORD` (none for a plain
/// spool).
struct Keyed {
    spool: Spool,
    pass: Option<&'static str>,
}

impl Keyed {
    /// `reel init --encrypt` with `pass`, or a plain `reel init` without.
    fn new(pass: Option<&'static str>) -> Keyed {
        let k = Keyed {
            spool: Spool::empty(),
            pass,
        };
        match pass {
            Some(_) => k.run(["init", "--encrypt"]),
            None => k.run(["init"]),
        };
        k
    }

    fn cmd(&self) -> Command {
        let mut c = self.spool.cmd();
        match self.pass {
            Some(p) => c.env("REEL_PASSWORD", p),
            None => c.env_remove("REEL_PASSWORD"),
        };
        c
    }

    fn run<const N: usize>(&self, args: [&str; N]) -> String {
        run_ok(self.cmd().args(args))
    }

    fn fail<const N: usize>(&self, args: [&str; N]) -> (i32, String) {
        run_fail(self.cmd().args(args))
    }

    fn path(&self) -> &Path {
        self.spool.path()
    }

    /// Day 2 of `purged_encrypted`'s volume (purged from the spool) restores exactly from the
    /// tapes in `tapes`.
    fn restores_day2_from(&self, work: &Path, tapes: &Path) {
        let to = work.join("r2");
        self.run([
            "restore",
            "v",
            "--at",
            "2026-11-02",
            "--to",
            to.to_str().unwrap(),
            "--tapes",
            tapes.to_str().unwrap(),
        ]);
        assert_trees_equal(&work.join("day2"), &to);
    }

    /// The key's fingerprint, as reel.toml records it.
    fn fingerprint(&self) -> String {
        let toml = fs::read_to_string(self.path().join("reel.toml")).unwrap();
        toml.lines()
            .find_map(|l| l.strip_prefix("fingerprint = \""))
            .map(|l| l.trim_end_matches('"').to_string())
            .unwrap_or_else(|| panic!("no fingerprint in reel.toml:\n{toml}"))
    }

    /// Nothing was written: no dump, no tape, no pack, nothing left in tmp/.
    fn is_untouched(&self) {
        assert_eq!(self.run(["list", "--json"]).trim(), "[]");
        assert_eq!(self.run(["tapes", "--json"]).trim(), "[]");
        for d in ["packs", "tmp"] {
            let left: Vec<_> = walk_files(&self.path().join(d));
            assert!(left.is_empty(), "{d}/ holds {left:?}");
        }
    }
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk_files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A tree holding both markers: the content marker amid random bytes (so no compressor can
/// hide it) and the name marker as a file's name.
fn marked_tree(vol: &Path) {
    rich_tree(vol);
    let mut rng = Rng::new(0x7A9E);
    let mut content = rng.bytes(40_000);
    content.extend_from_slice(CONTENT_MARKER);
    content.extend(rng.bytes(40_000));
    fs::write(vol.join("marked.bin"), &content).unwrap();
    fs::write(vol.join(format!("{NAME_MARKER}.txt")), b"named\n").unwrap();
}

/// A spool (encrypted under `pass`, or plain) with volume `v` of `marked_tree` at `work/vol`
/// and its level 0 of 2026-11-01.
fn marked_spool(work: &Path, pass: Option<&'static str>) -> Keyed {
    let vol = work.join("vol");
    marked_tree(&vol);
    let k = Keyed::new(pass);
    k.run(["volume", "add", "v", vol.to_str().unwrap()]);
    k.run(["dump", "v", "--level", "0", "--date", "2026-11-01"]);
    k
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_stock_restore_lists_an_encrypted_tape_whose_label_names_the_key_and_catalog_is_sealed() {
    if !have_restore() {
        println!("skipped: restore not installed (apt-get install dump)");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let a = marked_spool(work.path(), Some(PASS_A));
    let img = work.path().join("t.dump");
    a.run(["export", "--to", img.to_str().unwrap(), "--label", "T1"]);
    let list = Command::new("restore")
        .args(["-t", "-f"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(list.status.success(), "{list:?}");
    let listing = String::from_utf8_lossy(&list.stdout);
    for name in ["./reel/LABEL", "./reel/CATALOG", "./reel/packs/"] {
        assert!(
            listing.contains(name),
            "restore -t lacks {name}:\n{listing}"
        );
    }
    let x = work.path().join("x");
    stock_extract(&img, &x);
    let label = fs::read_to_string(x.join("reel/LABEL")).unwrap();
    assert!(
        label.contains(&format!("key_fingerprint: {}\n", a.fingerprint())),
        "{label}"
    );
    // The CATALOG is no JSON anyone can read: not the dump's source path, not its volume.
    let cat = fs::read(x.join("reel/CATALOG")).unwrap();
    assert!(serde_json::from_slice::<serde_json::Value>(&cat).is_err());
    let source = work.path().join("vol");
    assert!(!contains(&cat, source.to_str().unwrap().as_bytes()));
    assert!(!contains(&cat, b"\"dumps\""));
    // What restore extracted verifies under the spool's key, and says which key.
    let out = a.run(["verify-tape", x.to_str().unwrap()]);
    assert!(
        out.contains(&format!("sealed under key {}", a.fingerprint())),
        "{out}"
    );
    // A plain spool's tape names no key, and its CATALOG stays JSON.
    let p = marked_spool(&work.path().join("plain"), None);
    let pimg = work.path().join("p.dump");
    p.run(["export", "--to", pimg.to_str().unwrap(), "--label", "P1"]);
    let px = work.path().join("px");
    stock_extract(&pimg, &px);
    assert!(
        !fs::read_to_string(px.join("reel/LABEL"))
            .unwrap()
            .contains("key_fingerprint")
    );
    let v: serde_json::Value =
        serde_json::from_slice(&fs::read(px.join("reel/CATALOG")).unwrap()).unwrap();
    assert!(v.get("key_fingerprint").is_none(), "{v}");
}

/// The image, and what the stock `restore -x` extracts from it, hold neither a file's
/// contents nor its name: the packs are sealed. A plain spool's image holds both, which shows
/// the markers would be found.
#[test]
fn an_encrypted_tape_holds_no_file_contents_or_names_in_the_clear() {
    let work = tempfile::tempdir().unwrap();
    let p = marked_spool(&work.path().join("plain"), None);
    let pimg = work.path().join("p.dump");
    p.run(["export", "--to", pimg.to_str().unwrap(), "--label", "P1"]);
    let bytes = fs::read(&pimg).unwrap();
    assert!(
        contains(&bytes, CONTENT_MARKER),
        "the plain image lacks the content"
    );
    assert!(
        contains(&bytes, NAME_MARKER.as_bytes()),
        "the plain image lacks the name"
    );

    let a = marked_spool(work.path(), Some(PASS_A));
    let img = work.path().join("t.dump");
    a.run(["export", "--to", img.to_str().unwrap(), "--label", "T1"]);
    let bytes = fs::read(&img).unwrap();
    assert!(
        !contains(&bytes, CONTENT_MARKER),
        "the image holds a file's contents"
    );
    assert!(
        !contains(&bytes, NAME_MARKER.as_bytes()),
        "the image holds a file name"
    );
    if have_restore() {
        let x = work.path().join("x");
        stock_extract(&img, &x);
        for f in walk_files(&x) {
            let b = fs::read(&f).unwrap();
            assert!(
                !contains(&b, CONTENT_MARKER),
                "{} holds a file's contents",
                f.display()
            );
            assert!(
                !contains(&b, NAME_MARKER.as_bytes()),
                "{} holds a file name",
                f.display()
            );
        }
    }
}

/// An encrypted spool with volume `v` whose `big/x.bin` is rewritten each day (2026-11-01
/// level 0, then level 1s on the 2nd and 3rd), exported as tape W1 into `work/tapes/w1.tape`
/// and purged: the 2nd's data is on tape only. `work/dayN` holds each day's tree.
fn purged_encrypted(work: &Path, pass: &'static str, label: &str) -> (Keyed, PathBuf) {
    let vol = work.join("vol");
    rich_tree(&vol);
    let k = Keyed::new(Some(pass));
    k.run(["volume", "add", "v", vol.to_str().unwrap()]);
    let mut rng = Rng::new(0xB16F11E);
    fs::create_dir_all(vol.join("big")).unwrap();
    for day in 1..=3u32 {
        fs::write(vol.join("big/x.bin"), rng.bytes(2 << 20)).unwrap();
        snapshot(&vol, &work.join(format!("day{day}")));
        let level = if day == 1 { "0" } else { "1" };
        let date = format!("2026-11-{day:02}");
        k.run(["dump", "v", "--level", level, "--date", &date]);
    }
    let tapes = work.join("tapes");
    fs::create_dir_all(&tapes).unwrap();
    let img = tapes.join("w1.tape");
    k.run(["export", "--to", img.to_str().unwrap(), "--label", label]);
    let out = k.run(["purge", "--exported"]);
    assert!(out.contains("removed 1 packs"), "{out}");
    (k, img)
}

#[test]
fn verify_restore_and_import_of_an_encrypted_tape_need_its_key() {
    let work = tempfile::tempdir().unwrap();
    let (a, img) = purged_encrypted(work.path(), PASS_A, "W1");
    let fa = a.fingerprint();
    let img_s = img.to_str().unwrap();
    // With the spool's own key: verify, and a restore of purged data from the tape.
    let out = a.run(["verify-tape", img_s]);
    assert!(out.contains("tape W1 is good"), "{out}");
    let tapes = work.path().join("tapes");
    a.restores_day2_from(work.path(), &tapes);

    // Another encrypted spool: verify and import are refused naming both keys; nothing is
    // written.
    let b = Keyed::new(Some(PASS_B));
    let fb = b.fingerprint();
    assert_ne!(fa, fb);
    for args in [["verify-tape", img_s], ["import", img_s]] {
        let (_, err) = b.fail(args);
        assert!(err.contains(&fa) && err.contains(&fb), "{args:?}: {err}");
        assert!(err.contains("W1"), "{err}");
        b.is_untouched();
    }
    // A plain spool: the tape needs key A.
    let c = Keyed::new(None);
    for args in [["verify-tape", img_s], ["import", img_s]] {
        let (_, err) = c.fail(args);
        assert!(err.contains(&format!("needs key {fa}")), "{args:?}: {err}");
        c.is_untouched();
    }

    // A restore that is handed another spool's tape W1 (sealed under B's key) is refused
    // naming both keys, and writes nothing.
    let bwork = work.path().join("b");
    let (b2, bimg) = purged_encrypted(&bwork, PASS_B, "W1");
    let fb2 = b2.fingerprint();
    let to = work.path().join("wrong");
    let tape_arg = format!("W1={}", bimg.display());
    let (code, err) = a.fail([
        "restore",
        "v",
        "--at",
        "2026-11-02",
        "--to",
        to.to_str().unwrap(),
        "--tape",
        &tape_arg,
    ]);
    assert_ne!(code, 0);
    assert!(err.contains(&fa) && err.contains(&fb2), "{err}");
    assert!(!to.exists() || fs::read_dir(&to).unwrap().next().is_none());
    let (_, err) = a.fail([
        "cat",
        "v",
        "--at",
        "2026-11-02",
        "big/x.bin",
        "--tape",
        &tape_arg,
    ]);
    assert!(err.contains(&fa) && err.contains(&fb2), "{err}");

    // An encrypted spool refuses a plain tape: its packs and names would lie unsealed in it.
    let p = marked_spool(&work.path().join("plain"), None);
    let pimg = work.path().join("p.dump");
    p.run(["export", "--to", pimg.to_str().unwrap(), "--label", "P1"]);
    let (_, err) = b.fail(["import", pimg.to_str().unwrap()]);
    assert!(err.contains("not encrypted") && err.contains(&fb), "{err}");
    b.is_untouched();
}

/// An empty spool made from the tape's key (`init --encrypt --from-key` of the exported key)
/// imports it and restores from it: the flow for a lost spool (docs/TAPES.md, "Encrypted
/// tapes").
#[test]
fn an_empty_spool_with_the_tapes_key_imports_it() {
    let work = tempfile::tempdir().unwrap();
    let (a, img) = purged_encrypted(work.path(), PASS_A, "W1");
    let key = work.path().join("site.key");
    fs::write(&key, a.run(["key", "export"])).unwrap();
    let d = Keyed {
        spool: Spool::empty(),
        pass: Some(PASS_B),
    };
    d.run(["init", "--encrypt", "--from-key", key.to_str().unwrap()]);
    assert_eq!(d.fingerprint(), a.fingerprint());

    let out = d.run(["import", img.to_str().unwrap()]);
    assert!(out.contains("3 dumps added"), "{out}");
    for day in 1..=3u32 {
        let to = work.path().join(format!("d{day}"));
        d.run([
            "restore",
            "v",
            "--at",
            &format!("2026-11-{day:02}"),
            "--to",
            to.to_str().unwrap(),
        ]);
        assert_trees_equal(&work.path().join(format!("day{day}")), &to);
    }
    d.run(["check", "--read-data"]);
}

#[test]
fn a_changed_or_moved_sealed_catalog_or_a_changed_pack_fails_authentication_naming_it() {
    if !have_restore() {
        println!("skipped: restore not installed (apt-get install dump)");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let a = marked_spool(work.path(), Some(PASS_A));
    let img = work.path().join("t1.dump");
    a.run(["export", "--to", img.to_str().unwrap(), "--label", "T1"]);
    let x = work.path().join("x1");
    stock_extract(&img, &x);
    let cat = fs::read(x.join("reel/CATALOG")).unwrap();

    // A flipped byte inside the image's CATALOG.
    let mut bytes = fs::read(&img).unwrap();
    let at = bytes
        .windows(64)
        .position(|w| w == &cat[..64])
        .expect("the CATALOG's first bytes are in the image");
    bytes[at + 40] ^= 0x01;
    let bad = work.path().join("bad.dump");
    fs::write(&bad, &bytes).unwrap();
    let (_, err) = a.fail(["verify-tape", bad.to_str().unwrap()]);
    assert!(
        err.contains("authentication failed") && err.contains(bad.to_str().unwrap()),
        "{err}"
    );
    // The same in an extracted folder.
    let mut flipped = cat.clone();
    let n = flipped.len() / 2;
    flipped[n] ^= 0x80;
    fs::write(x.join("reel/CATALOG"), &flipped).unwrap();
    let (_, err) = a.fail(["verify-tape", x.to_str().unwrap()]);
    assert!(
        err.contains("authentication failed") && err.contains(x.to_str().unwrap()),
        "{err}"
    );

    // A good CATALOG moved onto another tape of the same spool and key.
    fs::write(x.join("reel/CATALOG"), &cat).unwrap();
    a.run(["verify-tape", x.to_str().unwrap()]);
    a.run(["dump", "v", "--level", "1", "--date", "2026-11-02"]);
    let img2 = work.path().join("t2.dump");
    a.run(["export", "--to", img2.to_str().unwrap(), "--label", "T2"]);
    let x2 = work.path().join("x2");
    stock_extract(&img2, &x2);
    fs::write(x2.join("reel/CATALOG"), &cat).unwrap();
    let (_, err) = a.fail(["verify-tape", x2.to_str().unwrap()]);
    assert!(err.contains("authentication failed"), "{err}");

    // A flipped byte in a pack of the tape: the sealed CATALOG names each pack by its hash.
    let pack = fs::read_dir(x.join("reel/packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .next()
        .expect("the tape has a pack");
    let mut bytes = fs::read(&pack).unwrap();
    bytes[200] ^= 0x01;
    fs::write(&pack, &bytes).unwrap();
    let (_, err) = a.fail(["verify-tape", x.to_str().unwrap()]);
    assert!(
        err.contains("authentication failed") && err.contains(pack.to_str().unwrap()),
        "{err}"
    );
}

#[test]
fn export_plain_on_an_encrypted_spool_asks_for_plaintext() {
    let work = tempfile::tempdir().unwrap();
    let a = marked_spool(work.path(), Some(PASS_A));
    let img = work.path().join("plain.dump");
    let (code, err) = a.fail([
        "export-plain",
        "v",
        "--level",
        "0",
        "--to",
        img.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--plaintext") && err.contains("outside the encryption"),
        "{err}"
    );
    assert!(!img.exists());
    a.run([
        "export-plain",
        "v",
        "--level",
        "0",
        "--to",
        img.to_str().unwrap(),
        "--plaintext",
    ]);
    // Written as before: readable by anyone, which is what the flag agreed to.
    let bytes = fs::read(&img).unwrap();
    assert!(contains(&bytes, CONTENT_MARKER) && contains(&bytes, NAME_MARKER.as_bytes()));
    if have_restore() {
        let x = work.path().join("px");
        fs::create_dir_all(&x).unwrap();
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!("restore -r -y -f {}", img.display()))
            .current_dir(&x)
            .output()
            .unwrap();
        assert!(st.status.success(), "{st:?}");
        assert_eq!(
            fs::read(x.join("marked.bin")).unwrap(),
            fs::read(work.path().join("vol/marked.bin")).unwrap()
        );
    }
}

/// `rebuild-catalog --from-tapes` reads tapes under the spool's key: its own tape is recorded
/// again, another key's tape is refused, naming both keys.
#[test]
fn rebuild_catalog_from_tapes_reads_only_tapes_under_the_spools_key() {
    let work = tempfile::tempdir().unwrap();
    let (a, img) = purged_encrypted(work.path(), PASS_A, "W1");
    let (b, bimg) = purged_encrypted(&work.path().join("b"), PASS_B, "WB");
    let tapes = img.parent().unwrap();
    fs::copy(&bimg, tapes.join("wb.tape")).unwrap();
    let out = a
        .cmd()
        .args(["rebuild-catalog", "--json", "--from-tapes"])
        .arg(tapes)
        .output()
        .unwrap();
    let r: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let recorded: Vec<&str> = r["tapes_recorded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(recorded, ["W1"], "{r}");
    let refused = r["tapes_refused"].as_array().unwrap();
    assert_eq!(refused.len(), 1, "{r}");
    let reason = refused[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&a.fingerprint()) && reason.contains(&b.fingerprint()),
        "{reason}"
    );
    // The rebuilt catalog restores the purged day from the tape it recorded.
    a.restores_day2_from(work.path(), tapes);
}

/// `verify-tape` on a plain spool reads an encrypted tape with the master key `--key-file`
/// gives (`reel key export`'s text); another key's file is refused naming both keys.
#[test]
fn verify_tape_takes_the_exported_key_from_a_key_file() {
    let work = tempfile::tempdir().unwrap();
    let (a, img) = purged_encrypted(work.path(), PASS_A, "W1");
    let b = Keyed::new(Some(PASS_B));
    let key_a = work.path().join("a.key");
    let key_b = work.path().join("b.key");
    fs::write(&key_a, a.run(["key", "export"])).unwrap();
    fs::write(&key_b, b.run(["key", "export"])).unwrap();
    let c = Keyed::new(None);
    let img_s = img.to_str().unwrap();
    let out = c.run(["verify-tape", img_s, "--key-file", key_a.to_str().unwrap()]);
    assert!(out.contains("tape W1 is good"), "{out}");
    let (_, err) = c.fail(["verify-tape", img_s, "--key-file", key_b.to_str().unwrap()]);
    assert!(
        err.contains(&a.fingerprint()) && err.contains(&b.fingerprint()),
        "{err}"
    );
    // Without it, the plain spool is told which key the tape needs.
    let (_, err) = c.fail(["verify-tape", img_s]);
    assert!(
        err.contains(&format!("needs key {}", a.fingerprint())),
        "{err}"
    );
}
