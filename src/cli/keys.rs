//! Where the key of an encrypted spool (or tape) comes from: the master key itself
//! (`--key-file`), or a passphrase that opens one of the spool's key files
//! (`--password-file`, `--password-command`, `REEL_PASSWORD`, a prompt on the terminal), in
//! that order (docs/KEYS.md "Passphrase sources"). The sources are global options, set once
//! per run by [`set_sources`]; every command that opens a spool gets its key through
//! [`unlock`] or [`master_from_sources`].
//!
//! A passphrase is never printed and lives in zeroized memory. The prompt uses `rpassword`,
//! which turns the terminal's echo off on /dev/tty and restores it, also on Ctrl-C: getting
//! that right by hand (termios, signals) is what the crate is made and kept for.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use clap::Args;
use reel::crypto::keyfile::{KdfParams, KeyFile};
use reel::crypto::{Fingerprint, MasterKey};
use reel::keyring::KeyRing;
use reel::{Error, Result};
use zeroize::Zeroizing;

/// The key sources every command takes (global options).
#[derive(Args, Clone, Debug, Default)]
pub struct KeyOpts {
    /// Read the passphrase of an encrypted spool from the first line of FILE.
    #[arg(
        long,
        global = true,
        env = "REEL_PASSWORD_FILE",
        value_name = "FILE",
        hide_env_values = true
    )]
    password_file: Option<PathBuf>,
    /// Run CMD through `sh -c` and take the first line it prints as the passphrase.
    #[arg(
        long,
        global = true,
        env = "REEL_PASSWORD_COMMAND",
        value_name = "CMD",
        hide_env_values = true
    )]
    password_command: Option<String>,
    /// Open with the master key itself: FILE holds `reel key export`'s text (no passphrase
    /// needed; its fingerprint must be the spool's or tape's).
    #[arg(
        long,
        global = true,
        env = "REEL_KEY_FILE",
        value_name = "FILE",
        hide_env_values = true
    )]
    key_file: Option<PathBuf>,
}

/// What this run was given, and what it learnt: the passphrase once read (a prompt is asked
/// once per run), the master key once unlocked, and the key file that opened it.
struct Session {
    opts: KeyOpts,
    passphrase: Mutex<Option<Zeroizing<String>>>,
    master: Mutex<Option<MasterKey>>,
    opened: Mutex<Option<String>>,
}

static SESSION: OnceLock<Session> = OnceLock::new();

fn session() -> &'static Session {
    SESSION.get_or_init(|| Session {
        opts: KeyOpts::default(),
        passphrase: Mutex::new(None),
        master: Mutex::new(None),
        opened: Mutex::new(None),
    })
}

/// Record the run's key options (from the command line and environment). Call once, first.
pub fn set_sources(opts: &KeyOpts) {
    let _ = SESSION.set(Session {
        opts: opts.clone(),
        passphrase: Mutex::new(None),
        master: Mutex::new(None),
        opened: Mutex::new(None),
    });
}

/// Was the master key given for this run (`--key-file`, `REEL_KEY_FILE`)?
pub fn key_file_given() -> bool {
    session().opts.key_file.is_some()
}

/// The id of the key file whose passphrase opened the spool in this run; `None` when the
/// master key came from `--key-file` or nothing was opened yet.
pub fn opened_key() -> Option<String> {
    session().opened.lock().ok()?.clone()
}

/// The options and variables to name when a key is needed and none was given.
pub const SOURCES_HELP: &str = "set REEL_PASSWORD, or give --password-file FILE (REEL_PASSWORD_FILE) or --password-command CMD (REEL_PASSWORD_COMMAND), or open with the exported master key: --key-file FILE (REEL_KEY_FILE)";

/// The master key for an encrypted spool or tape from this run's sources. `want` is the
/// fingerprint of the key needed (the spool's reel.toml, a tape's LABEL), checked whatever
/// the source. With `--key-file`, that file's key; otherwise a passphrase, which needs `ring`
/// (the key files of a spool with that key): a tape read without a spool can be opened only
/// by `--key-file`. Within one run the key is unlocked once (argon2id is slow on purpose).
pub fn master_from_sources(ring: Option<&KeyRing>, want: Option<Fingerprint>) -> Result<MasterKey> {
    let s = session();
    if let Some(want) = want
        && let Ok(cached) = s.master.lock()
        && let Some(m) = cached.as_ref()
        && m.fingerprint() == want
    {
        return Ok(MasterKey::from_bytes(*m.as_bytes()));
    }
    let master = if let Some(path) = &s.opts.key_file {
        read_key_file(path, want)?
    } else {
        let Some(ring) = ring else {
            return Err(Error::Key(format!(
                "{} can be opened only with its master key here (no spool's key files are at hand for a passphrase): give --key-file FILE (REEL_KEY_FILE) with `reel key export`'s text, or --spool of a spool with the same key",
                match want {
                    Some(fp) => format!("key {fp}"),
                    None => "the key".to_string(),
                }
            )));
        };
        let pass = passphrase(want)?;
        let (master, id) = ring.unlock_with_id(pass.as_bytes())?;
        if let Some(want) = want
            && master.fingerprint() != want
        {
            return Err(Error::Key(format!(
                "the passphrase opens key file {id} of key {}, but key {want} is needed: {} holds key files of another key",
                master.fingerprint(),
                ring.dir().display()
            )));
        }
        if let Ok(mut o) = s.opened.lock() {
            *o = Some(id);
        }
        master
    };
    if let Ok(mut c) = s.master.lock() {
        *c = Some(MasterKey::from_bytes(*master.as_bytes()));
    }
    Ok(master)
}

/// The master key of an encrypted spool, from its key files and this run's sources (the
/// `Unlock` that `Spool::open_keyed` takes).
pub fn unlock(ring: &KeyRing, fp: Fingerprint) -> Result<MasterKey> {
    master_from_sources(Some(ring), Some(fp))
}

/// The master key in `path` (`reel key export`'s text), checked against `want`.
pub fn read_key_file(path: &Path, want: Option<Fingerprint>) -> Result<MasterKey> {
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        Error::Key(format!(
            "cannot read key file {}: {e}; give the file `reel key export` wrote",
            path.display()
        ))
    })?);
    let master = reel::crypto::paper::parse(&text)
        .map_err(|e| Error::Key(format!("key file {}: {e}", path.display())))?;
    if let Some(want) = want
        && master.fingerprint() != want
    {
        return Err(Error::Key(format!(
            "key file {} holds key {}, but key {want} is needed: give the key file of key {want}",
            path.display(),
            master.fingerprint()
        )));
    }
    Ok(master)
}

/// The passphrase that opens a key file, from this run's sources in order: `--password-file`,
/// `--password-command` (the two exclude each other), `REEL_PASSWORD`, a prompt when standard
/// input is a terminal. Read once per run.
pub fn passphrase(fp: Option<Fingerprint>) -> Result<Zeroizing<String>> {
    let s = session();
    if let Ok(p) = s.passphrase.lock()
        && let Some(p) = p.as_ref()
    {
        return Ok(p.clone());
    }
    let p = read_passphrase(&s.opts, fp, false)?;
    if let Ok(mut c) = s.passphrase.lock() {
        *c = Some(p.clone());
    }
    Ok(p)
}

/// The passphrase for a new spool's first key file (`reel init --encrypt`): the same sources,
/// but a prompt asks twice.
pub fn first_passphrase() -> Result<Zeroizing<String>> {
    read_passphrase(&session().opts, None, true)
}

fn read_passphrase(
    opts: &KeyOpts,
    fp: Option<Fingerprint>,
    twice: bool,
) -> Result<Zeroizing<String>> {
    if let (Some(f), Some(c)) = (&opts.password_file, &opts.password_command) {
        return Err(Error::usage(format!(
            "both a passphrase file ({}) and a passphrase command ({c:?}) are given (by option or REEL_PASSWORD_FILE / REEL_PASSWORD_COMMAND): give one",
            f.display()
        )));
    }
    if let Some(f) = &opts.password_file {
        return from_file(f, "--password-file / REEL_PASSWORD_FILE");
    }
    if let Some(c) = &opts.password_command {
        return from_command(c);
    }
    if let Ok(p) = std::env::var("REEL_PASSWORD")
        && !p.is_empty()
    {
        return Ok(Zeroizing::new(p));
    }
    if std::io::stdin().is_terminal() {
        let what = match fp {
            Some(fp) => format!("the passphrase of key {fp}"),
            None => "a passphrase for the new key".to_string(),
        };
        return prompt(&what, twice);
    }
    Err(Error::Key(format!(
        "{} and standard input is not a terminal to ask for it: {SOURCES_HELP}",
        match fp {
            Some(fp) => format!("the spool is encrypted (key {fp}), no passphrase was given,"),
            None => "no passphrase was given".to_string(),
        }
    )))
}

/// The passphrase for a key file that `key add`, `key passwd` or `key import` writes:
/// `--new-password-file FILE`, else `REEL_NEW_PASSWORD`, else a prompt asked twice.
pub fn new_passphrase(file: Option<&Path>) -> Result<Zeroizing<String>> {
    if let Some(f) = file {
        return from_file(f, "--new-password-file");
    }
    if let Ok(p) = std::env::var("REEL_NEW_PASSWORD")
        && !p.is_empty()
    {
        return Ok(Zeroizing::new(p));
    }
    if std::io::stdin().is_terminal() {
        return prompt("the new passphrase", true);
    }
    Err(Error::usage(
        "no new passphrase was given and standard input is not a terminal to ask for it: set REEL_NEW_PASSWORD or give --new-password-file FILE",
    ))
}

/// The first line of `path` (without its line end), not empty.
fn from_file(path: &Path, what: &str) -> Result<Zeroizing<String>> {
    let text = Zeroizing::new(std::fs::read(path).map_err(|e| {
        Error::Key(format!(
            "cannot read the passphrase file {} ({what}): {e}",
            path.display()
        ))
    })?);
    first_line(&text).ok_or_else(|| {
        Error::Key(format!(
            "the passphrase file {} ({what}) has no passphrase on its first line",
            path.display()
        ))
    })
}

/// The first line of `bytes` without `\n` or `\r\n`; `None` when it is empty or not UTF-8.
fn first_line(bytes: &[u8]) -> Option<Zeroizing<String>> {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return None;
    }
    Some(Zeroizing::new(std::str::from_utf8(line).ok()?.to_string()))
}

/// The first line `sh -c cmd` prints; its standard error goes to ours, its standard input is
/// ours (a command may ask on the terminal itself).
fn from_command(cmd: &str) -> Result<Zeroizing<String>> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| {
            Error::Key(format!(
                "cannot run the passphrase command {cmd:?} (--password-command / REEL_PASSWORD_COMMAND) through sh: {e}"
            ))
        })?;
    let stdout = Zeroizing::new(out.stdout);
    if !out.status.success() {
        return Err(Error::Key(format!(
            "the passphrase command {cmd:?} (--password-command / REEL_PASSWORD_COMMAND) failed ({}); no passphrase was read",
            out.status
        )));
    }
    first_line(&stdout).ok_or_else(|| {
        Error::Key(format!(
            "the passphrase command {cmd:?} (--password-command / REEL_PASSWORD_COMMAND) printed no passphrase on its first line"
        ))
    })
}

/// Ask on the terminal with echo off; `twice` asks again and compares.
fn prompt(what: &str, twice: bool) -> Result<Zeroizing<String>> {
    let ask = |p: &str| {
        rpassword::prompt_password(p)
            .map(Zeroizing::new)
            .map_err(|e| Error::Key(format!("cannot read the passphrase from the terminal: {e}")))
    };
    let first = ask(&format!("Enter {what}: "))?;
    if first.is_empty() {
        return Err(Error::usage(
            "an empty passphrase would protect nothing; give one",
        ));
    }
    if twice {
        let again = ask("Enter it again: ")?;
        if *again != *first {
            return Err(Error::usage(
                "the two passphrases typed differ; nothing was changed: run the command again",
            ));
        }
    }
    Ok(first)
}

/// argon2id's cost for a new key file: `--kdf-memory MIB` and `--kdf-passes N` over
/// `KdfParams::default()`, checked against its limits.
pub fn kdf_params(memory_mib: Option<u32>, passes: Option<u32>) -> Result<KdfParams> {
    let mut p = KdfParams::default();
    if let Some(m) = memory_mib {
        p.memory_kib = m
            .checked_mul(1024)
            .ok_or_else(|| Error::usage(format!("--kdf-memory {m} MiB is too large")))?;
    }
    if let Some(n) = passes {
        p.passes = n;
    }
    p.validate().map_err(|e| {
        Error::usage(format!(
            "{e}: give --kdf-memory at least {} (MiB) and --kdf-passes 1 to 64",
            KdfParams::MIN_MEMORY_KIB / 1024
        ))
    })?;
    Ok(p)
}

/// The `--kdf-memory` / `--kdf-passes` options of the commands that write a key file.
#[derive(Args, Clone, Debug, Default)]
pub struct KdfOpts {
    /// argon2id memory for the new key file, in MiB (default 64, least 8): what one guess at
    /// the passphrase costs an attacker, and what every unlock costs this machine.
    #[arg(long, value_name = "MIB")]
    pub kdf_memory: Option<u32>,
    /// argon2id passes for the new key file (default 3).
    #[arg(long, value_name = "N")]
    pub kdf_passes: Option<u32>,
}

impl KdfOpts {
    pub fn params(&self) -> Result<KdfParams> {
        kdf_params(self.kdf_memory, self.kdf_passes)
    }
}

/// `master` wrapped under `passphrase` as a new key file made here and now.
pub fn wrap(
    master: &MasterKey,
    passphrase: &str,
    params: KdfParams,
    comment: String,
) -> Result<KeyFile> {
    KeyFile::wrap(
        master,
        passphrase.as_bytes(),
        params,
        reel::timefmt::format_rfc3339(reel::timefmt::now_ns()),
        reel::dump::host_name().unwrap_or_default(),
        comment,
    )
}

/// The master key and first key file of a new encrypted spool (`reel init --encrypt`): a new
/// random key, or the key in `from_key` (`--from-key`, `reel key export`'s text) to make a
/// spool that reads the tapes and packs of a lost one.
pub fn new_master(from_key: Option<&Path>, params: KdfParams) -> Result<(MasterKey, KeyFile)> {
    let master = match from_key {
        Some(p) => read_key_file(p, None)?,
        None => MasterKey::generate()?,
    };
    let pass = first_passphrase()?;
    let kf = wrap(&master, &pass, params, String::new())?;
    Ok((master, kf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_is_taken_without_its_line_end() {
        assert_eq!(first_line(b"secret\nnext").unwrap().as_str(), "secret");
        assert_eq!(first_line(b"secret\r\n").unwrap().as_str(), "secret");
        assert_eq!(first_line(b" spaced \n").unwrap().as_str(), " spaced ");
        assert!(first_line(b"\nsecret").is_none());
        assert!(first_line(b"").is_none());
    }
}
