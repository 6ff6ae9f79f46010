//! An encrypted spool's key files: `SPOOL/keys/<id>.key`, one per passphrase, each the
//! spool's master key wrapped under it (`crypto::keyfile`). Unlocking tries the passphrase on
//! every file; adding or removing a passphrase writes or removes one file and never touches
//! packs.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::crypto::keyfile::KeyFile;
use crate::crypto::{MasterKey, unhex};
use crate::error::IoContext;
use crate::{Error, Result};

/// The folder of key files under the spool's root.
pub const KEYS_DIR: &str = "keys";

pub struct KeyRing {
    dir: PathBuf,
}

/// One file in `keys/`: its id (from its name), path, and contents or why they do not parse.
pub struct KeyEntry {
    pub id: String,
    pub path: PathBuf,
    pub file: Result<KeyFile>,
}

/// Held while key files are added or removed (`KeyRing::lock`); released when dropped.
pub struct KeysLock(#[allow(dead_code)] fs::File);

impl KeyRing {
    pub fn of_spool(root: &Path) -> KeyRing {
        KeyRing {
            dir: root.join(KEYS_DIR),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every key file, by path, in name order. A file that does not parse is an error naming
    /// it: a spool's key files are never skipped silently.
    pub fn list(&self) -> Result<Vec<(PathBuf, KeyFile)>> {
        self.entries()?
            .into_iter()
            .map(|e| e.file.map(|f| (e.path, f)))
            .collect()
    }

    /// Every `*.key` file in name order, each with its contents or the error that names what is
    /// wrong with it: one damaged file neither hides the others nor stops them opening.
    pub fn entries(&self) -> Result<Vec<KeyEntry>> {
        let mut out = Vec::new();
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io(&self.dir, e)),
        };
        let mut paths: Vec<PathBuf> = rd
            .map(|e| e.map(|e| e.path()).at(&self.dir))
            .collect::<Result<_>>()?;
        paths.retain(|p| p.extension().is_some_and(|x| x == "key"));
        paths.sort();
        for path in paths {
            let id = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let file = fs::read_to_string(&path)
                .at(&path)
                .and_then(|text| KeyFile::parse(&text, &path.display().to_string()));
            out.push(KeyEntry { id, path, file });
        }
        Ok(out)
    }

    /// Take the key files' lock (`keys/`, made if missing), waiting for another `reel key`
    /// command to finish: two removals at once must not leave the spool without a key file.
    pub fn lock(&self) -> Result<KeysLock> {
        self.make_dir()?;
        let f = fs::File::open(&self.dir).at(&self.dir)?;
        f.lock().at(&self.dir)?;
        Ok(KeysLock(f))
    }

    /// `keys/`, made 0700 if missing.
    fn make_dir(&self) -> Result<()> {
        crate::fsutil::create_dir_all(&self.dir).at(&self.dir)
    }

    /// Write a new key file (0600, never replacing one), durably: the file's data and its name
    /// are on disk when this returns.
    pub fn add(&self, kf: &KeyFile) -> Result<PathBuf> {
        self.make_dir()?;
        let path = self.path_of(&kf.id)?;
        let tmp = self.dir.join(format!(".{}.key.tmp", kf.id));
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .at(&tmp)?;
        f.write_all(kf.to_json().as_bytes()).at(&tmp)?;
        f.sync_all().at(&tmp)?;
        drop(f);
        // A hard link, not a rename: it fails rather than replace a file of the same name.
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::Key(format!("{} already exists", path.display())));
            }
            Err(e) => return Err(Error::io(&path, e)),
        }
        crate::fsutil::fsync_dir(&self.dir)?;
        Ok(path)
    }

    /// Remove key file `id` durably (its name is gone from disk when this returns).
    pub fn remove(&self, id: &str) -> Result<PathBuf> {
        let path = self.path_of(id)?;
        fs::remove_file(&path).at(&path)?;
        crate::fsutil::fsync_dir(&self.dir)?;
        Ok(path)
    }

    /// `keys/<id>.key`, for an id of 16 hex digits only (never a path elsewhere).
    fn path_of(&self, id: &str) -> Result<PathBuf> {
        if id.len() != 16 || unhex(id).is_none() {
            return Err(Error::usage(format!(
                "{id:?} is not a key file id (16 hex digits, as `reel key list` shows)"
            )));
        }
        Ok(self.dir.join(format!("{id}.key")))
    }

    /// The master key, from the first key file `passphrase` opens. Damaged files are passed
    /// over while another may still open; if none opens, the error names every file tried.
    pub fn unlock(&self, passphrase: &[u8]) -> Result<MasterKey> {
        self.unlock_with_id(passphrase).map(|(m, _)| m)
    }

    /// `unlock`, also giving the id of the key file that opened.
    pub fn unlock_with_id(&self, passphrase: &[u8]) -> Result<(MasterKey, String)> {
        let files = self.entries()?;
        if files.is_empty() {
            return Err(Error::Key(format!(
                "no key files in {}: this encrypted spool cannot be opened by passphrase; open it with its exported master key (--key-file FILE) or bring a key file back with `reel key import FILE`",
                self.dir.display()
            )));
        }
        let mut damaged = Vec::new();
        for e in &files {
            let opened = e
                .file
                .as_ref()
                .map_err(|err| Error::Key(err.to_string()))
                .and_then(|kf| kf.unwrap(passphrase, &e.path.display().to_string()));
            match (&e.file, opened) {
                (_, Ok(m)) => return Ok((m, e.id.clone())),
                (Ok(_), Err(Error::Key(_))) => {}
                (Ok(_), Err(err)) => damaged.push(err.to_string()),
                (Err(err), _) => damaged.push(err.to_string()),
            }
        }
        let mut msg = format!(
            "the passphrase opens none of the {} key file(s) in {}: wrong passphrase; nothing was changed. Give the right one, or open with the exported master key (--key-file FILE)",
            files.len(),
            self.dir.display()
        );
        for d in damaged {
            msg.push_str("; ");
            msg.push_str(&d);
        }
        Err(Error::Key(msg))
    }
}
