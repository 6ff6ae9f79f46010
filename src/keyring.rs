//! An encrypted spool's key files: `SPOOL/keys/<id>.key`, one per passphrase, each the
//! spool's master key wrapped under it (`crypto::keyfile`). Unlocking tries the passphrase on
//! every file; adding or removing a passphrase writes or removes one file and never touches
//! packs.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::crypto::MasterKey;
use crate::crypto::keyfile::KeyFile;
use crate::error::IoContext;
use crate::{Error, Result};

/// The folder of key files under the spool's root.
pub const KEYS_DIR: &str = "keys";

pub struct KeyRing {
    dir: PathBuf,
}

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
        for p in paths {
            let text = fs::read_to_string(&p).at(&p)?;
            let kf = KeyFile::parse(&text, &p.display().to_string())?;
            out.push((p, kf));
        }
        Ok(out)
    }

    /// Write a new key file (0600, never replacing one), durably.
    pub fn add(&self, kf: &KeyFile) -> Result<PathBuf> {
        crate::fsutil::create_dir_all(&self.dir).at(&self.dir)?;
        let path = self.dir.join(format!("{}.key", kf.id));
        let tmp = self.dir.join(format!(".{}.key.tmp", kf.id));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .at(&tmp)?;
        f.write_all(kf.to_json().as_bytes()).at(&tmp)?;
        f.sync_all().at(&tmp)?;
        drop(f);
        if path.exists() {
            let _ = fs::remove_file(&tmp);
            return Err(Error::Key(format!("{} already exists", path.display())));
        }
        fs::rename(&tmp, &path).at(&path)?;
        crate::fsutil::fsync_dir(&self.dir)?;
        Ok(path)
    }

    /// The master key, from the first key file `passphrase` opens. Damaged files are passed
    /// over while another may still open; if none opens, the error names every file tried.
    pub fn unlock(&self, passphrase: &[u8]) -> Result<MasterKey> {
        let files = self.list()?;
        if files.is_empty() {
            return Err(Error::Key(format!(
                "no key files in {}: this encrypted spool cannot be opened by passphrase; bring its master key back with `reel key import`",
                self.dir.display()
            )));
        }
        let mut damaged = Vec::new();
        for (path, kf) in &files {
            match kf.unwrap(passphrase, &path.display().to_string()) {
                Ok(m) => return Ok(m),
                Err(Error::Key(_)) => {}
                Err(e) => damaged.push(e.to_string()),
            }
        }
        let mut msg = format!(
            "the passphrase opens none of the {} key file(s) in {}: wrong passphrase",
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
