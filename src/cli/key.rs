//! `reel key list | add | remove | passwd | export | import`: the key files of an encrypted
//! spool and its master key on paper (docs/KEYS.md). None of them touches packs, the catalog
//! or reel.toml; they read `[encryption]` from reel.toml and work on `keys/` alone, so they
//! work on a spool whose catalog is lost, and while another command holds the spool's lock.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use reel::crypto::Fingerprint;
use reel::crypto::paper;
use reel::keyring::KeyRing;
use reel::spool::Spool;
use reel::{Error, Result};
use zeroize::Zeroizing;

use super::keys::{self, KdfOpts};
use super::{Ctx, print_json};

#[derive(Subcommand)]
pub enum KeyCmd {
    /// List the spool's key files (one per passphrase); `*` marks the one that opened it.
    List {
        /// Print the result as JSON (field names in docs/CLI.md).
        #[arg(long)]
        json: bool,
    },
    /// Add a key file: the master key under a new passphrase (REEL_NEW_PASSWORD,
    /// --new-password-file or a prompt asked twice).
    Add {
        /// A note kept in the key file and shown by `key list` (who holds the passphrase).
        #[arg(long, default_value = "")]
        comment: String,
        /// Read the new passphrase from the first line of FILE.
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
        #[command(flatten)]
        kdf: KdfOpts,
    },
    /// Remove a key file by its id (or a unique start of it). The key file that opened the
    /// spool in this run and the last key file are never removed.
    Remove {
        /// The key file's id, as `reel key list` shows it.
        id: String,
    },
    /// Change the passphrase: write a key file under the new one, then remove the one the
    /// current passphrase opened.
    Passwd {
        /// Read the new passphrase from the first line of FILE.
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
        /// A new note for the key file (default: the old file's).
        #[arg(long)]
        comment: Option<String>,
        /// argon2id cost of the new key file (default: the old file's).
        #[command(flatten)]
        kdf: KdfOpts,
    },
    /// Print the master key as text to keep on paper (and --qr as a QR code): whoever holds
    /// it reads everything; without it or a passphrase nothing can be read.
    Export {
        /// Also print a QR code of the same text.
        #[arg(long)]
        qr: bool,
    },
    /// Read the master key's text (`key export`) and write a key file for it under a new
    /// passphrase: brings back a spool whose key files are lost.
    Import {
        /// The file with the text; `-` or none reads standard input.
        file: Option<PathBuf>,
        /// A note kept in the key file.
        #[arg(long, default_value = "imported from the master key")]
        comment: String,
        /// Read the new passphrase from the first line of FILE.
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
        #[command(flatten)]
        kdf: KdfOpts,
    },
}

pub fn run(ctx: &Ctx, cmd: KeyCmd) -> Result<ExitCode> {
    let root = ctx.spool_dir()?;
    let (ring, fp) = encrypted(&root)?;
    match cmd {
        KeyCmd::List { json } => list(&root, &ring, fp, json),
        KeyCmd::Add {
            comment,
            new_password_file,
            kdf,
        } => {
            let master = keys::unlock(&ring, fp)?;
            let params = kdf.params()?;
            let pass = keys::new_passphrase(new_password_file.as_deref())?;
            let kf = keys::wrap(&master, &pass, params, comment)?;
            let _lock = ring.lock()?;
            let path = ring.add(&kf)?;
            println!(
                "added key file {} ({}): the new passphrase opens spool {}",
                kf.id,
                path.display(),
                root.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        KeyCmd::Remove { id } => {
            keys::unlock(&ring, fp)?;
            let _lock = ring.lock()?;
            let entries = ring.entries()?;
            let matching: Vec<&str> = entries
                .iter()
                .map(|e| e.id.as_str())
                .filter(|i| !id.is_empty() && i.starts_with(&id.to_ascii_lowercase()))
                .collect();
            let target = match matching[..] {
                [one] => one.to_string(),
                [] => {
                    return Err(Error::usage(format!(
                        "no key file of spool {} has id {id:?}: `reel key list` shows them ({})",
                        root.display(),
                        entries
                            .iter()
                            .map(|e| e.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                _ => {
                    return Err(Error::usage(format!(
                        "{id:?} is the start of several key ids ({}): give more of it",
                        matching.join(", ")
                    )));
                }
            };
            if keys::opened_key().as_deref() == Some(target.as_str()) {
                return Err(Error::usage(format!(
                    "key file {target} is the one this passphrase opened: reel does not remove the key file in use (a mistyped id must not lock you out). Open with another passphrase (or --key-file) to remove it, or change its passphrase with `reel key passwd`"
                )));
            }
            if entries.len() == 1 {
                return Err(Error::usage(format!(
                    "key file {target} is the spool's only key file: without it no passphrase opens the spool. Add another first (`reel key add`)"
                )));
            }
            let path = ring.remove(&target)?;
            println!(
                "removed key file {target} ({}); {} key file(s) left",
                path.display(),
                entries.len() - 1
            );
            Ok(ExitCode::SUCCESS)
        }
        KeyCmd::Passwd {
            new_password_file,
            comment,
            kdf,
        } => {
            let master = keys::unlock(&ring, fp)?;
            let Some(old_id) = keys::opened_key() else {
                return Err(Error::usage(
                    "`key passwd` replaces the key file that the passphrase opened, and this run opened the spool with --key-file: use `reel key add`, then `reel key remove ID`",
                ));
            };
            let old = ring
                .entries()?
                .into_iter()
                .find(|e| e.id == old_id)
                .and_then(|e| e.file.ok())
                .ok_or_else(|| {
                    Error::Key(format!("key file {old_id} went away while reading it"))
                })?;
            let mut params = old.argon2;
            if kdf.kdf_memory.is_some() || kdf.kdf_passes.is_some() {
                params = keys::kdf_params(
                    kdf.kdf_memory.or(Some(old.argon2.memory_kib / 1024)),
                    kdf.kdf_passes.or(Some(old.argon2.passes)),
                )?;
            }
            let pass = keys::new_passphrase(new_password_file.as_deref())?;
            let kf = keys::wrap(&master, &pass, params, comment.unwrap_or(old.comment))?;
            let _lock = ring.lock()?;
            // The new file is on disk (data and name) before the old one goes: a crash between
            // leaves both, and either passphrase opens the spool.
            let path = ring.add(&kf)?;
            reel::failpoint::hit("key-passwd-added");
            ring.remove(&old_id)?;
            println!(
                "changed the passphrase: key file {} ({}) replaces {old_id}",
                kf.id,
                path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        KeyCmd::Export { qr } => {
            let master = keys::unlock(&ring, fp)?;
            let text = Zeroizing::new(paper::to_text(&master));
            print!("{}", *text);
            if qr {
                let code = qrcode::QrCode::new(text.as_bytes())
                    .map_err(|e| Error::usage(format!("cannot make a QR code of the key: {e}")))?;
                let image = code
                    .render::<qrcode::render::unicode::Dense1x2>()
                    .dark_color(qrcode::render::unicode::Dense1x2::Light)
                    .light_color(qrcode::render::unicode::Dense1x2::Dark)
                    .build();
                println!("{image}");
            }
            eprintln!(
                "reel: this is the master key of spool {}: whoever holds it reads every dump and tape of it. Keep it on paper or offline, apart from the spool and its tapes (docs/KEYS.md)",
                root.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        KeyCmd::Import {
            file,
            comment,
            new_password_file,
            kdf,
        } => {
            let params = kdf.params()?;
            let text = read_text(file.as_deref())?;
            let master = paper::parse(&text)?;
            if master.fingerprint() != fp {
                return Err(Error::Key(format!(
                    "the text holds key {}, but spool {} is encrypted with key {fp}: give the text of key {fp}",
                    master.fingerprint(),
                    root.display()
                )));
            }
            let pass = keys::new_passphrase(new_password_file.as_deref())?;
            let kf = keys::wrap(&master, &pass, params, comment)?;
            let _lock = ring.lock()?;
            let path = ring.add(&kf)?;
            println!(
                "imported key {fp}: key file {} ({}) opens spool {} with the new passphrase",
                kf.id,
                path.display(),
                root.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The key files and the fingerprint reel.toml records; refuses a plain spool.
fn encrypted(root: &Path) -> Result<(KeyRing, Fingerprint)> {
    let settings = Spool::load_settings(root)?;
    let ring = KeyRing::of_spool(root);
    let Some(enc) = settings.encryption else {
        return Err(Error::usage(format!(
            "spool {} is not encrypted: it has no keys (`reel init --encrypt` makes an encrypted spool)",
            root.display()
        )));
    };
    let fp = Fingerprint::parse(&enc.fingerprint).ok_or_else(|| {
        Error::Spool(format!(
            "{}: [encryption] fingerprint {:?} is not 16 hex digits",
            root.join(reel::spool::SETTINGS_FILE).display(),
            enc.fingerprint
        ))
    })?;
    Ok((ring, fp))
}

/// The key's text from `file`, or standard input for `-` or none.
fn read_text(file: Option<&Path>) -> Result<Zeroizing<String>> {
    let mut text = Zeroizing::new(String::new());
    match file {
        Some(p) if p != Path::new("-") => {
            *text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
        }
        _ => {
            if std::io::stdin().is_terminal() {
                eprintln!("Type or paste the master key's 6 lines, then Ctrl-D:");
            }
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| Error::io("standard input", e))?;
        }
    }
    Ok(text)
}

fn list(root: &Path, ring: &KeyRing, fp: Fingerprint, json: bool) -> Result<ExitCode> {
    keys::unlock(ring, fp)?;
    let opened = keys::opened_key();
    let entries = ring.entries()?;
    if json {
        let rows: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                let mut v = serde_json::json!({
                    "id": e.id,
                    "file": e.path.display().to_string(),
                    "opened": opened.as_deref() == Some(e.id.as_str()),
                });
                let o = v.as_object_mut().expect("object");
                match &e.file {
                    Ok(kf) => {
                        o.insert("created".into(), kf.created.clone().into());
                        o.insert("host".into(), kf.host.clone().into());
                        o.insert("comment".into(), kf.comment.clone().into());
                        o.insert(
                            "argon2".into(),
                            serde_json::to_value(kf.argon2).expect("json"),
                        );
                        o.insert("damaged".into(), serde_json::Value::Null);
                    }
                    Err(err) => {
                        o.insert("damaged".into(), err.to_string().into());
                    }
                }
                v
            })
            .collect();
        print_json(&serde_json::json!({
            "spool": root.display().to_string(),
            "fingerprint": fp.to_string(),
            "opened_by": opened,
            "keys": rows,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    println!("spool {} is encrypted with key {fp}", root.display());
    println!(
        "  {:<16}  {:<25}  {:<16}  {:<24}  COMMENT",
        "ID", "CREATED", "HOST", "ARGON2ID"
    );
    for e in &entries {
        let mark = if opened.as_deref() == Some(e.id.as_str()) {
            '*'
        } else {
            ' '
        };
        match &e.file {
            Ok(kf) => println!(
                "{mark} {:<16}  {:<25}  {:<16}  {:<24}  {}",
                e.id,
                to_seconds(&kf.created),
                kf.host,
                format!(
                    "{} MiB, {} pass{}, {} lane{}",
                    kf.argon2.memory_kib / 1024,
                    kf.argon2.passes,
                    if kf.argon2.passes == 1 { "" } else { "es" },
                    kf.argon2.lanes,
                    if kf.argon2.lanes == 1 { "" } else { "s" }
                ),
                kf.comment
            ),
            Err(err) => println!("{mark} {:<16}  DAMAGED: {err}", e.id),
        }
    }
    match opened {
        Some(id) => println!("* opened this run: key file {id}"),
        None => println!("opened this run with the master key (--key-file)"),
    }
    Ok(ExitCode::SUCCESS)
}

/// An RFC 3339 time without its fraction of a second, for the table.
fn to_seconds(t: &str) -> String {
    match t.split_once('.') {
        Some((head, rest)) => {
            let zone = rest.trim_start_matches(|c: char| c.is_ascii_digit());
            format!("{head}{zone}")
        }
        None => t.to_string(),
    }
}
