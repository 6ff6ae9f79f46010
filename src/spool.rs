//! A spool on disk: its layout, its settings file (`reel.toml`), and the lock that lets one
//! writer at a time change it.
//!
//! ```text
//! SPOOL/
//!   reel.toml      settings and volumes (human-edited)
//!   catalog.redb   the catalog
//!   packs/ab/      immutable packs, named by the blake3 of their bytes (the spool's pack
//!                  store, `crate::pack_store::LocalDir`)
//!   tmp/           packs being written (removed when a writer opens the spool)
//!   clones/ logs/  later phases
//!   lock           flock()ed by the writer; holds its pid and command for messages
//!   locks/ keys/   the readers' and freeze locks; an encrypted spool's key files
//! ```
//!
//! Every file here is created 0600 and every folder 0700 (`crate::fsutil`); folders that
//! exist keep their modes.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::catalog::Catalog;
use crate::chunk::ChunkerParams;
use crate::crypto::keyfile::KeyFile;
use crate::crypto::{Fingerprint, Keys, MasterKey};
use crate::error::IoContext;
use crate::fsutil;
use crate::keyring::KeyRing;
use crate::pack_store::{LocalDir, PackStore};
pub use crate::settings::{
    ChunkerSettings, CloneMethod, DEFAULT_HOOK_TIMEOUT, Settings, VolumeSettings,
    validate_volume_name,
};
use crate::settings::{
    default_checkpoint_mb, default_compression, default_keep_reports_days,
    default_min_share_percent,
};
use crate::{Error, Result};

pub const SETTINGS_FILE: &str = "reel.toml";
pub const CATALOG_FILE: &str = "catalog.redb";
pub const LOCK_FILE: &str = "lock";
/// Under `locks/`: held shared by every reader, exclusively by gc while it deletes packs.
pub const READERS_LOCK_FILE: &str = "readers";

/// How a command uses the spool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Reads only; runs beside a writer.
    Read,
    /// Changes the spool; one at a time.
    Write,
}

pub struct Spool {
    root: PathBuf,
    pub settings: Settings,
    pub catalog: Catalog,
    /// Where the packs live: `packs/` ([`LocalDir`]), or the store a test gave.
    packs: Arc<dyn PackStore>,
    /// How this spool names and seals what it stores: plain, or under its master key.
    keys: Keys,
    _lock: Option<File>,
    /// Readers hold `locks/readers` shared, so gc deletes pack files only when none is reading.
    _readers: Option<File>,
}

fn settings_chunker(s: &Settings) -> ChunkerParams {
    ChunkerParams {
        min: s.chunker.min,
        avg: s.chunker.avg,
        max: s.chunker.max,
    }
}

/// How a command gets the master key of an encrypted spool: given the spool's key files and
/// the fingerprint reel.toml records, it returns the key (from a passphrase, a key file…).
pub type Unlock<'a> = &'a dyn Fn(&KeyRing, Fingerprint) -> Result<MasterKey>;

impl Spool {
    /// Make a new spool in `root` (created if missing). Refuses an existing spool and a
    /// non-empty folder that is not one.
    pub fn init(root: &Path) -> Result<Spool> {
        Self::init_with_store(root, Self::local_packs(root))
    }

    /// Make a new encrypted spool: `master` seals everything, `first` (its master key
    /// wrapped under the first passphrase) goes into `keys/`.
    pub fn init_encrypted(root: &Path, master: &MasterKey, first: &KeyFile) -> Result<Spool> {
        Self::init_keyed(root, Self::local_packs(root), Some((master, first)))
    }

    /// The spool's own pack store: its `packs/` directory.
    fn local_packs(root: &Path) -> Arc<dyn PackStore> {
        Arc::new(LocalDir::new(root.join("packs")))
    }

    /// `init`, with the packs kept in `packs` rather than in the spool's `packs/` directory
    /// (tests: an in-memory or a fault-injecting store).
    pub fn init_with_store(root: &Path, packs: Arc<dyn PackStore>) -> Result<Spool> {
        Self::init_keyed(root, packs, None)
    }

    fn init_keyed(
        root: &Path,
        packs: Arc<dyn PackStore>,
        encryption: Option<(&MasterKey, &KeyFile)>,
    ) -> Result<Spool> {
        if root.join(SETTINGS_FILE).exists() || root.join(CATALOG_FILE).exists() {
            return Err(Error::Spool(format!(
                "{} is already a reel spool; use it as it is",
                root.display()
            )));
        }
        if root.exists() {
            if !root.is_dir() {
                return Err(Error::Spool(format!(
                    "{} exists and is not a directory",
                    root.display()
                )));
            }
            if fs::read_dir(root).at(root)?.next().is_some() {
                return Err(Error::Spool(format!(
                    "{} is not empty and is not a reel spool: choose an empty or new directory",
                    root.display()
                )));
            }
        }
        Self::make_root(root)?;
        for d in ["packs", "tmp", "logs", "clones"] {
            fsutil::create_dir_all(&root.join(d)).at(root.join(d))?;
        }
        let lock = Self::lock(root, Access::Write)?;
        let settings = Settings {
            format: 1,
            chunker: ChunkerSettings::default(),
            compression_level: default_compression(),
            checkpoint_mb: default_checkpoint_mb(),
            min_share_percent: default_min_share_percent(),
            keep_reports_days: default_keep_reports_days(),
            encryption: encryption.map(|(m, _)| crate::settings::EncryptionSettings {
                fingerprint: m.fingerprint().to_string(),
            }),
            volumes: BTreeMap::new(),
        };
        let keys = match encryption {
            None => Keys::plain(),
            Some((master, first)) => {
                KeyRing::of_spool(root).add(first)?;
                Keys::from_master(master)
            }
        };
        let catalog = Catalog::create(&root.join(CATALOG_FILE))?;
        let spool = Spool {
            root: root.to_path_buf(),
            settings,
            catalog,
            packs,
            keys,
            _lock: lock,
            _readers: None,
        };
        spool.save_settings()?;
        crate::fsutil::fsync_dir(root)?;
        Ok(spool)
    }

    /// The spool's own folder, 0700: made so (its missing parents as the umask says, they are
    /// the admin's), or, when it exists empty, set so before anything goes into it.
    fn make_root(root: &Path) -> Result<()> {
        if root.is_dir() {
            return fs::set_permissions(root, fs::Permissions::from_mode(fsutil::DIR_MODE))
                .at(root);
        }
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).at(parent)?;
        }
        fsutil::create_dir(root).at(root)
    }

    /// Open an existing spool. `Write` takes the spool lock or fails at once, naming the holder.
    /// An encrypted spool is refused (`Error::Key`) before anything is touched: use
    /// `open_keyed`.
    pub fn open(root: &Path, access: Access) -> Result<Spool> {
        Self::open_with_store(root, access, Self::local_packs(root))
    }

    /// `open`, getting the key of an encrypted spool through `unlock` (not called for a plain
    /// spool) before anything is touched.
    pub fn open_keyed(root: &Path, access: Access, unlock: Unlock) -> Result<Spool> {
        Self::open_full(root, access, Self::local_packs(root), unlock)
    }

    /// `open`, with the packs kept in `packs` (the store the spool was made with by
    /// `init_with_store`).
    pub fn open_with_store(
        root: &Path,
        access: Access,
        packs: Arc<dyn PackStore>,
    ) -> Result<Spool> {
        Self::open_full(root, access, packs, &|_, fp| {
            Err(Error::Key(format!(
                "spool {} is encrypted (key {fp}) and no key was given: give its passphrase (REEL_PASSWORD, --password-file or --password-command)",
                root.display()
            )))
        })
    }

    fn open_full(
        root: &Path,
        access: Access,
        packs: Arc<dyn PackStore>,
        unlock: Unlock,
    ) -> Result<Spool> {
        if !root.join(SETTINGS_FILE).exists() {
            return Err(Error::Spool(format!(
                "{} is not a reel spool (no {SETTINGS_FILE}); create one with `reel --spool {} init`",
                root.display(),
                root.display()
            )));
        }
        let settings = Self::load_settings(root)?;
        settings_chunker(&settings).validate().map_err(|e| {
            Error::Spool(format!(
                "{}: chunker settings: {e}",
                root.join(SETTINGS_FILE).display()
            ))
        })?;
        let keys = Self::unlock_keys(root, &settings, unlock)?;
        let lock = Self::lock(root, access)?;
        let cat_path = root.join(CATALOG_FILE);
        let catalog = match access {
            Access::Write => {
                // Leftovers of a killed writer: packs never renamed into packs/, and the
                // staging directories of killed exports, imports and tape restores.
                if let Ok(rd) = fs::read_dir(root.join("tmp")) {
                    for e in rd.flatten() {
                        if e.file_type().is_ok_and(|t| t.is_dir()) {
                            if staging_owner_gone(&e.file_name()) {
                                let _ = fs::remove_dir_all(e.path());
                            }
                        } else {
                            let _ = fs::remove_file(e.path());
                        }
                    }
                }
                Catalog::open_write(&cat_path)?
            }
            Access::Read => Catalog::open_read(&cat_path, || {
                // Replay the interrupted commit under the writer's lock, then read.
                let _lock = Self::lock(root, Access::Write)?;
                drop(Catalog::open_write(&cat_path)?);
                Ok(())
            })?,
        };
        let readers = match access {
            Access::Read => Self::lock_readers_in(root),
            Access::Write => None,
        };
        Ok(Spool {
            root: root.to_path_buf(),
            settings,
            catalog,
            packs,
            keys,
            _lock: lock,
            _readers: readers,
        })
    }

    /// The spool's keys: plain, or the master key `unlock` gives, checked against the
    /// fingerprint reel.toml records. A spool with key files but no `[encryption]` is refused:
    /// reel.toml lost its section, and writing plain packs into it would leak.
    fn unlock_keys(root: &Path, settings: &Settings, unlock: Unlock) -> Result<Keys> {
        let ring = KeyRing::of_spool(root);
        let Some(enc) = &settings.encryption else {
            if ring.dir().exists() {
                return Err(Error::Key(format!(
                    "spool {} has key files ({}) but {SETTINGS_FILE} has no [encryption] section: restore its `[encryption] fingerprint = \"...\"` (the fingerprint `reel key list` shows) before using it",
                    root.display(),
                    ring.dir().display()
                )));
            }
            return Ok(Keys::plain());
        };
        let want = Fingerprint::parse(&enc.fingerprint).ok_or_else(|| {
            Error::Spool(format!(
                "{}: [encryption] fingerprint {:?} is not 16 hex digits",
                root.join(SETTINGS_FILE).display(),
                enc.fingerprint
            ))
        })?;
        let master = unlock(&ring, want)?;
        let got = master.fingerprint();
        if got != want {
            return Err(Error::Key(format!(
                "the key given is {got}, but spool {} is encrypted with key {want}: give this spool's key",
                root.display()
            )));
        }
        Ok(Keys::from_master(&master))
    }

    /// How this spool names and seals what it stores.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// For `rebuild-catalog` (`crate::recovery::rebuild`): the spool's settings and write lock, tmp/
    /// cleared, with the catalog `make` gives (a new file beside catalog.redb) instead of
    /// catalog.redb, which may be missing or damaged and is not opened at all.
    pub(crate) fn open_with_catalog(
        root: &Path,
        make: impl FnOnce(&Path) -> Result<Catalog>,
        unlock: Unlock,
    ) -> Result<Spool> {
        if !root.join(SETTINGS_FILE).exists() {
            return Err(Error::Spool(format!(
                "{} is not a reel spool (no {SETTINGS_FILE}); nothing to rebuild",
                root.display()
            )));
        }
        let settings = Self::load_settings(root)?;
        let keys = Self::unlock_keys(root, &settings, unlock)?;
        let lock = Self::lock(root, Access::Write)?;
        if let Ok(rd) = fs::read_dir(root.join("tmp")) {
            for e in rd.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        let catalog = make(root)?;
        Ok(Spool {
            root: root.to_path_buf(),
            settings,
            catalog,
            packs: Self::local_packs(root),
            keys,
            _lock: lock,
            _readers: None,
        })
    }

    fn lock(root: &Path, access: Access) -> Result<Option<File>> {
        if access == Access::Read {
            return Ok(None);
        }
        let path = root.join(LOCK_FILE);
        let mut f = fsutil::lock_file_options().open(&path).at(&path)?;
        match f.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = f.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(Error::Spool(format!(
                    "spool {} is busy: another reel process holds the lock {}{}; wait for it to finish (reel never waits, so two jobs cannot pile up)",
                    root.display(),
                    path.display(),
                    if holder.is_empty() {
                        String::new()
                    } else {
                        format!(" ({holder})")
                    }
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        let args: Vec<String> = std::env::args().collect();
        let _ = f.set_len(0);
        let _ = f.rewind();
        let _ = writeln!(f, "pid {}: {}", std::process::id(), args.join(" "));
        Ok(Some(f))
    }

    fn readers_lock_path(root: &Path) -> PathBuf {
        root.join("locks").join(READERS_LOCK_FILE)
    }

    /// Take the readers lock shared (waits only while gc deletes files, a moment). Best
    /// effort: a spool on read-only media or without write permission is read unlocked, as
    /// nothing can delete its packs then anyway.
    fn lock_readers_in(root: &Path) -> Option<File> {
        let path = Self::readers_lock_path(root);
        let _ = fsutil::create_dir_all(&root.join("locks"));
        let f = fsutil::lock_file_options().open(&path).ok()?;
        f.lock_shared().ok()?;
        Some(f)
    }

    /// For gc and repair, which hold the spool lock: the readers lock taken exclusively if no
    /// reader holds it (`None` if one does). Pack files may be deleted while it is held.
    pub fn try_lock_readers_out(&self) -> Result<Option<File>> {
        let path = Self::readers_lock_path(&self.root);
        fsutil::create_dir_all(&self.root.join("locks")).at(self.root.join("locks"))?;
        let f = fsutil::lock_file_options().open(&path).at(&path)?;
        match f.try_lock() {
            Ok(()) => Ok(Some(f)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
        }
    }

    /// The settings in `root`'s reel.toml, read without opening the spool (`reel key` reads
    /// `[encryption]` from it on a spool whose catalog or key files are lost).
    pub fn load_settings(root: &Path) -> Result<Settings> {
        let path = root.join(SETTINGS_FILE);
        let text = fs::read_to_string(&path).at(&path)?;
        let s: Settings =
            toml::from_str(&text).map_err(|e| Error::Spool(format!("{}: {e}", path.display())))?;
        if s.format != 1 {
            return Err(Error::Spool(format!(
                "{}: spool format {} is not known to this reel (it reads format 1)",
                path.display(),
                s.format
            )));
        }
        Ok(s)
    }

    /// Write `reel.toml` atomically (temp file, fsync, rename).
    pub fn save_settings(&self) -> Result<()> {
        let path = self.root.join(SETTINGS_FILE);
        let tmp = self.root.join("reel.toml.tmp");
        let body = format!(
            "# reel spool settings. Volumes can be edited here or with `reel volume`.\n{}",
            toml::to_string_pretty(&self.settings)
                .map_err(|e| Error::Spool(format!("cannot write settings: {e}")))?
        );
        let mut f = fsutil::create_file(&tmp).at(&tmp)?;
        f.write_all(body.as_bytes()).at(&tmp)?;
        f.sync_all().at(&tmp)?;
        fs::rename(&tmp, &path).at(&path)?;
        crate::fsutil::fsync_dir(&self.root)
    }

    /// The spool's folder and its own folders (`packs`, `tmp`, `logs`, `clones`, `locks`,
    /// `keys`) whose mode lets anyone but the owner in: left so by an older reel (which made
    /// them with the umask's mode) or by hand. reel makes every folder 0700 and never changes
    /// the mode of one that exists; `reel check` names these so the admin can.
    pub fn open_folders(&self) -> Vec<PathBuf> {
        let own = ["packs", "tmp", "logs", "clones", "locks", "keys"];
        std::iter::once(self.root.clone())
            .chain(own.iter().map(|d| self.root.join(d)))
            .filter(|p| {
                fs::symlink_metadata(p)
                    .is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o077 != 0)
            })
            .collect()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn packs_dir(&self) -> PathBuf {
        self.root.join("packs")
    }
    /// Where the spool's packs live: put, read, list and delete them through it.
    pub fn pack_store(&self) -> &Arc<dyn PackStore> {
        &self.packs
    }
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
    /// Directory clones of volume `name` (reflink and copy methods).
    pub fn clones_dir(&self, name: &str) -> PathBuf {
        self.root.join("clones").join(name)
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }
    /// The freeze lock of volume `name`: reel holds it exclusively while the volume is
    /// frozen; cooperating writers hold it shared while they write (docs/NIGHTLY.md).
    pub fn freeze_lock_path(&self, name: &str) -> PathBuf {
        self.root.join("locks").join(format!("{name}.freeze"))
    }
    /// Change one volume's settings and save them.
    pub fn update_volume(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut VolumeSettings) -> Result<()>,
    ) -> Result<()> {
        let v = self.settings.volumes.get_mut(name).ok_or_else(|| {
            Error::usage(format!(
                "no volume {name:?} in spool {}; `reel volume list` shows the volumes",
                self.root.display()
            ))
        })?;
        f(v)?;
        self.save_settings()
    }

    pub fn chunker(&self) -> ChunkerParams {
        settings_chunker(&self.settings)
    }

    pub fn volume(&self, name: &str) -> Result<&VolumeSettings> {
        self.settings.volumes.get(name).ok_or_else(|| {
            Error::usage(format!(
                "no volume {name:?} in spool {}; `reel volume list` shows the volumes",
                self.root.display()
            ))
        })
    }

    /// Volumes that have dumps, even if they were removed from the settings with --force.
    pub fn known_volume(&self, name: &str) -> Result<()> {
        if self.settings.volumes.contains_key(name) || !self.catalog.dumps(Some(name))?.is_empty() {
            Ok(())
        } else {
            self.volume(name).map(|_| ())
        }
    }

    pub fn add_volume(&mut self, name: &str, path: &Path) -> Result<()> {
        validate_volume_name(name)?;
        if self.settings.volumes.contains_key(name) {
            return Err(Error::usage(format!("volume {name:?} already exists")));
        }
        let abs = fs::canonicalize(path)
            .map_err(|e| Error::usage(format!("volume path {}: {e}", path.display())))?;
        if !abs.is_dir() {
            return Err(Error::usage(format!(
                "volume path {} is not a directory",
                abs.display()
            )));
        }
        self.settings
            .volumes
            .insert(name.to_string(), VolumeSettings::new(abs));
        self.save_settings()
    }

    pub fn remove_volume(&mut self, name: &str, force: bool) -> Result<usize> {
        self.volume(name)?;
        let n = self.catalog.dumps(Some(name))?.len();
        if n > 0 && !force {
            return Err(Error::usage(format!(
                "volume {name:?} has {n} dump{}. Removing it only stops dumping it: its dumps stay in the catalog, where list, ls, restore, export and prune still find them by name. Run again with --force to remove it",
                if n == 1 { "" } else { "s" }
            )));
        }
        self.settings.volumes.remove(name);
        self.save_settings()?;
        Ok(n)
    }
}

/// Is `name` (a directory under tmp/) the staging area `WORD-PID[-N]` of a process that no
/// longer runs? A live process's directory is left alone: readers (`verify-tape`, a restore
/// from tapes) stage there too, beside a writer.
fn staging_owner_gone(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    let pid = name.split('-').nth(1).and_then(|p| p.parse::<i32>().ok());
    match pid {
        // SAFETY: kill with signal 0 only asks whether the process exists.
        Some(pid) if pid > 0 => {
            let rc = unsafe { libc::kill(pid, 0) };
            rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
        }
        _ => false,
    }
}

/// Sniff whether a file looks like a spool's lock file (used in tests).
pub fn lock_holder(root: &Path) -> Option<String> {
    let mut s = String::new();
    File::open(root.join(LOCK_FILE))
        .ok()?
        .read_to_string(&mut s)
        .ok()?;
    Some(s.trim().to_string())
}
