//! `reel init`, `reel volume ...` (add, set, list, remove), `reel merge`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use reel::schedule::Schedule;
use reel::settings::FsIdentity;
use reel::spool::{Access, CloneMethod, Spool, VolumeSettings};
use reel::timefmt::format_rfc3339;
use reel::{Error, Result};

use super::{Ctx, at_time, print_json};

#[derive(Args)]
pub struct InitArgs {
    /// Encrypt everything the spool and its tapes hold under a new random master key, wrapped
    /// under a passphrase (REEL_PASSWORD, --password-file, --password-command or a prompt).
    /// Keep `reel key export`'s output apart from the spool: without the key nothing can be
    /// read back.
    #[arg(long)]
    encrypt: bool,
    /// With --encrypt: use the master key in FILE (`reel key export`'s text) instead of a new
    /// one, to make a spool that reads the packs and tapes of a lost spool of that key.
    #[arg(long, value_name = "FILE", requires = "encrypt")]
    from_key: Option<PathBuf>,
    #[command(flatten)]
    kdf: super::keys::KdfOpts,
}

pub fn init(ctx: &Ctx, a: InitArgs) -> Result<ExitCode> {
    let dir = ctx.spool_dir()?;
    if !a.encrypt && (a.kdf.kdf_memory.is_some() || a.kdf.kdf_passes.is_some()) {
        return Err(Error::usage(
            "--kdf-memory and --kdf-passes set the cost of a key file: they go with --encrypt",
        ));
    }
    if a.encrypt {
        let params = a.kdf.params()?;
        let (master, first) = super::keys::new_master(a.from_key.as_deref(), params)?;
        Spool::init_encrypted(&dir, &master, &first)?;
        println!(
            "created encrypted spool {} (key {}); keep a copy of its key apart from it (`reel key export`)",
            dir.display(),
            master.fingerprint()
        );
    } else {
        Spool::init(&dir)?;
        println!("created spool {}", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
pub enum VolumeCmd {
    /// Add a volume: a name and the directory tree it backs up.
    Add {
        /// The volume's name (letters, digits, `.`, `_`, `-`): what every other command calls it.
        name: String,
        /// The directory tree it backs up (its root; made absolute).
        path: PathBuf,
        #[command(flatten)]
        opts: VolumeOpts,
    },
    /// Change a volume's schedule, clone method or hooks (kept in reel.toml).
    Set {
        /// The volume to change.
        name: String,
        /// Remove the volume's schedule (`reel nightly` then skips it).
        #[arg(long, conflicts_with = "schedule")]
        no_schedule: bool,
        /// Record the filesystem the volume's root is on now (after it moved to another one,
        /// for good): dumps whose root is on another filesystem are refused.
        #[arg(long)]
        record_fs: bool,
        #[command(flatten)]
        opts: VolumeOpts,
    },
    /// List the volumes.
    List {
        /// Print the result as JSON (field names in docs/CLI.md).
        #[arg(long)]
        json: bool,
    },
    /// Remove a volume (refused while it has dumps, unless --force).
    Remove {
        /// The volume to remove.
        name: String,
        /// Remove it although it has dumps (they stay in the catalog, restorable by name).
        #[arg(long)]
        force: bool,
    },
}

/// Per-volume settings shared by `volume add` and `volume set` (docs/SCHEDULES.md,
/// docs/NIGHTLY.md). An empty string for a `--*-cmd` flag removes that hook.
#[derive(Args)]
pub struct VolumeOpts {
    /// Day letters: F = level 0, I = level 1, 0-9 = that level; 7 letters start on Sunday.
    #[arg(long, value_name = "LETTERS")]
    schedule: Option<String>,
    /// How the clone is taken: store, reflink, copy or hook.
    #[arg(long, value_name = "METHOD")]
    clone: Option<String>,
    /// Run through `sh -c` before the clone (freezes the volume); "" removes it.
    #[arg(long, value_name = "CMD")]
    freeze_cmd: Option<String>,
    /// Run through `sh -c` after the clone, whatever happened; "" removes it.
    #[arg(long, value_name = "CMD")]
    thaw_cmd: Option<String>,
    /// `hook` method: prints the path of a read-only view of the volume; "" removes it.
    #[arg(long, value_name = "CMD")]
    snapshot_cmd: Option<String>,
    /// `hook` method: removes the view (its path is in REEL_SNAPSHOT); "" removes it.
    #[arg(long, value_name = "CMD")]
    release_cmd: Option<String>,
    /// Seconds a hook may run before it is killed (default 300).
    #[arg(long, value_name = "SECS")]
    hook_timeout: Option<u64>,
    /// Leave out what this gitignore line matches, from the volume's root ('alice/cache/',
    /// '*.o', '!keep.o'); repeat for several. `volume set` adds to the list.
    #[arg(long, value_name = "PATTERN")]
    exclude: Vec<String>,
    /// `volume set`: remove this pattern from the list (as listed); repeat for several.
    #[arg(long, value_name = "PATTERN")]
    no_exclude: Vec<String>,
    /// `volume set`: remove every pattern (before adding any --exclude).
    #[arg(long)]
    clear_excludes: bool,
    /// Leave out the contents of directories tagged with a valid CACHEDIR.TAG (the directory
    /// and its tag stay).
    #[arg(long, conflicts_with = "no_exclude_caches")]
    exclude_caches: bool,
    /// Dump the contents of tagged cache directories again.
    #[arg(long)]
    no_exclude_caches: bool,
    /// Dump files flagged nodump (`chattr +d`) too; by default they are left out.
    #[arg(long, conflicts_with = "honor_nodump")]
    ignore_nodump: bool,
    /// Leave out files flagged nodump again (the default).
    #[arg(long)]
    honor_nodump: bool,
}

impl VolumeOpts {
    /// The settings `v` becomes under these flags. Every flag is parsed and checked here,
    /// before anything is written, so a bad flag changes nothing.
    fn apply(&self, name: &str, v: &VolumeSettings, no_schedule: bool) -> Result<VolumeSettings> {
        let mut n = v.clone();
        if no_schedule {
            n.schedule = None;
        }
        if let Some(s) = &self.schedule {
            let parsed = Schedule::parse(s)
                .map_err(|e| Error::usage(format!("volume {name:?}: --schedule: {e}")))?;
            n.schedule = Some(parsed.to_string());
        }
        if let Some(c) = &self.clone {
            n.clone = c.parse::<CloneMethod>()?;
        }
        // An empty command clears the hook.
        let set = |flag: &Option<String>, slot: &mut Option<String>| {
            if let Some(c) = flag {
                *slot = (!c.trim().is_empty()).then(|| c.clone());
            }
        };
        set(&self.freeze_cmd, &mut n.freeze_cmd);
        set(&self.thaw_cmd, &mut n.thaw_cmd);
        set(&self.snapshot_cmd, &mut n.snapshot_cmd);
        set(&self.release_cmd, &mut n.release_cmd);
        if let Some(t) = self.hook_timeout {
            if t == 0 {
                return Err(Error::usage(format!(
                    "volume {name:?}: --hook-timeout must be at least 1 second"
                )));
            }
            n.hook_timeout = Some(t);
        }
        if self.clear_excludes {
            n.exclude.clear();
        }
        for p in &self.no_exclude {
            let before = n.exclude.len();
            n.exclude.retain(|x| x != p);
            if n.exclude.len() == before {
                return Err(Error::usage(format!(
                    "volume {name:?}: --no-exclude {p:?} is not one of its exclude patterns ({}); give it as `reel volume list` shows it",
                    if v.exclude.is_empty() {
                        "it has none".to_string()
                    } else {
                        format!("{:?}", v.exclude)
                    }
                )));
            }
        }
        for p in &self.exclude {
            reel::scan::exclude::check_pattern(p)
                .map_err(|e| Error::usage(format!("volume {name:?}: {e}")))?;
            if !n.exclude.contains(p) {
                n.exclude.push(p.clone());
            }
        }
        if self.exclude_caches {
            n.exclude_caches = true;
        }
        if self.no_exclude_caches {
            n.exclude_caches = false;
        }
        if self.ignore_nodump {
            n.ignore_nodump = true;
        }
        if self.honor_nodump {
            n.ignore_nodump = false;
        }
        n.exclusions()
            .map_err(|e| Error::usage(format!("volume {name:?}: {e}")))?;
        if n.clone == CloneMethod::Hook && n.snapshot_cmd.is_none() {
            return Err(Error::usage(format!(
                "volume {name:?}: clone method hook needs a snapshot command: add --snapshot-cmd CMD (it prints the path of a read-only view of the volume)"
            )));
        }
        Ok(n)
    }
}

/// One line describing a volume's nightly settings, for `volume add` and `volume set`.
fn describe(name: &str, v: &VolumeSettings) -> String {
    let mut s = format!(
        "volume {name}: schedule {}, clone {}",
        v.schedule.as_deref().unwrap_or("none"),
        v.clone
    );
    for (what, c) in [
        ("freeze", &v.freeze_cmd),
        ("thaw", &v.thaw_cmd),
        ("snapshot", &v.snapshot_cmd),
        ("release", &v.release_cmd),
    ] {
        if let Some(c) = c {
            s.push_str(&format!(", {what} {c:?}"));
        }
    }
    if let Some(t) = v.hook_timeout {
        s.push_str(&format!(", hook timeout {t} s"));
    }
    if !v.exclude.is_empty() {
        s.push_str(&format!(", exclude {:?}", v.exclude));
    }
    if v.exclude_caches {
        s.push_str(", excludes caches");
    }
    if v.ignore_nodump {
        s.push_str(", ignores nodump");
    }
    s
}

/// The filesystem volume `name`'s root is on now.
fn root_filesystem(spool: &Spool, name: &str) -> Result<FsIdentity> {
    FsIdentity::of_path(&spool.volume(name)?.path)
}

/// What `volume add` and `volume set --record-fs` recorded, and a word when the root is empty
/// (an empty root may be a mount point whose filesystem is not mounted yet).
fn print_filesystem(name: &str, v: &VolumeSettings, fs: Result<FsIdentity>) {
    match fs {
        Ok(fs) => println!("volume {name}: root on {fs}"),
        Err(e) => eprintln!(
            "reel: warning: volume {name}: the filesystem of its root was not recorded ({e}); its first dump records it"
        ),
    }
    if std::fs::read_dir(&v.path).is_ok_and(|mut d| d.next().is_none()) {
        println!(
            "note: the root {} is empty: if the volume's filesystem is not mounted yet, mount it and run `reel volume set {name} --record-fs`; dumps of an empty root are refused",
            v.path.display()
        );
    }
}

pub fn volume(ctx: &Ctx, cmd: VolumeCmd) -> Result<ExitCode> {
    match cmd {
        VolumeCmd::Add { name, path, opts } => {
            // Check the flags against default settings first: a bad flag adds nothing.
            let wanted = opts.apply(&name, &VolumeSettings::default(), false)?;
            let mut spool = ctx.open(Access::Write)?;
            spool.add_volume(&name, &path)?;
            // The shrink guard refuses a dump whose root is on another filesystem than this.
            let fs = root_filesystem(&spool, &name);
            let wanted = VolumeSettings {
                filesystem: fs.as_ref().ok().copied(),
                ..wanted
            };
            if wanted != VolumeSettings::default() {
                spool.update_volume(&name, |v| {
                    *v = VolumeSettings {
                        path: std::mem::take(&mut v.path),
                        ..wanted
                    };
                    Ok(())
                })?;
            }
            let v = spool.volume(&name)?;
            println!("added volume {name} at {}", v.path.display());
            println!("{}", describe(&name, v));
            print_filesystem(&name, v, fs);
        }
        VolumeCmd::Set {
            name,
            no_schedule,
            record_fs,
            opts,
        } => {
            let mut spool = ctx.open(Access::Write)?;
            let fs = record_fs.then(|| root_filesystem(&spool, &name));
            if let Some(Err(e)) = fs {
                return Err(e);
            }
            spool.update_volume(&name, |v| {
                *v = opts.apply(&name, v, no_schedule)?;
                if let Some(Ok(fs)) = &fs {
                    v.filesystem = Some(*fs);
                }
                Ok(())
            })?;
            let v = spool.volume(&name)?;
            println!("{}", describe(&name, v));
            if let Some(fs) = fs {
                print_filesystem(&name, v, fs);
            }
        }
        VolumeCmd::List { json } => {
            let spool = ctx.open(Access::Read)?;
            let mut rows = Vec::new();
            for (name, v) in &spool.settings.volumes {
                let dumps = spool.catalog.dumps(Some(name))?;
                rows.push((name, v, dumps.len(), dumps.last().map(|d| d.time_ns)));
            }
            if json {
                print_json(&serde_json::Value::Array(
                    rows.iter()
                        .map(|(n, v, c, l)| {
                            serde_json::json!({
                                "volume": n,
                                "name": n,
                                "path": v.path.display().to_string(),
                                "dumps": c,
                                "latest": l.map(format_rfc3339),
                                "schedule": v.schedule,
                                "clone": v.clone.name(),
                                "freeze_cmd": v.freeze_cmd,
                                "thaw_cmd": v.thaw_cmd,
                                "snapshot_cmd": v.snapshot_cmd,
                                "release_cmd": v.release_cmd,
                                "hook_timeout": v.hook_timeout().as_secs(),
                                "exclude": v.exclude,
                                "exclude_caches": v.exclude_caches,
                                "honor_nodump": !v.ignore_nodump,
                            })
                        })
                        .collect(),
                ));
            } else {
                println!(
                    "{:<20} {:>6}  {:<25}  {:<10}  {:<7}  PATH",
                    "VOLUME", "DUMPS", "LATEST", "SCHEDULE", "CLONE"
                );
                for (n, v, c, l) in rows {
                    println!(
                        "{n:<20} {c:>6}  {:<25}  {:<10}  {:<7}  {}",
                        l.map(format_rfc3339).unwrap_or_else(|| "-".into()),
                        v.schedule.as_deref().unwrap_or("-"),
                        v.clone.name(),
                        v.path.display()
                    );
                }
            }
        }
        VolumeCmd::Remove { name, force } => {
            let mut spool = ctx.open(Access::Write)?;
            let n = spool.remove_volume(&name, force)?;
            println!(
                "removed volume {name}{}",
                if n > 0 {
                    let (s, verb) = if n == 1 { ("", "stays") } else { ("s", "stay") };
                    format!(" (its {n} dump{s} {verb} in the catalog, restorable by name)")
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct MergeArgs {
    /// The volume.
    name: String,
    /// The point in time (RFC 3339, or YYYY-MM-DD for the end of that day).
    #[arg(long)]
    at: String,
}

pub fn merge(ctx: &Ctx, a: MergeArgs) -> Result<ExitCode> {
    let spool = ctx.open(Access::Write)?;
    let rec = reel::merge::merge(&spool, &a.name, at_time(&a.at)?)?;
    println!(
        "dump {}: synthetic level 0 of volume {} at {}, merged from dump {} (no data copied; owns {} chunks)",
        rec.id,
        rec.volume,
        format_rfc3339(rec.time_ns),
        rec.merged_from.unwrap_or_default(),
        rec.owned_chunks
    );
    Ok(ExitCode::SUCCESS)
}
