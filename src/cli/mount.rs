//! `reel mount NAME DIR`: every dump of a volume, read-only, through FUSE (`reel::mount`).
//! Built without the `mount` feature, the command exists and says so.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use reel::Result;

use super::Ctx;

#[derive(Args)]
pub struct MountArgs {
    /// The volume.
    name: String,
    /// An existing empty directory to mount on.
    dir: PathBuf,
    /// Let other users browse too (needs `user_allow_other` in /etc/fuse.conf unless root);
    /// file modes are enforced by the kernel either way.
    #[arg(long)]
    allow_other: bool,
    #[command(flatten)]
    tapes: super::restore::TapeArgs,
}

#[cfg(feature = "mount")]
pub fn run(ctx: &Ctx, a: MountArgs) -> Result<ExitCode> {
    use reel::spool::Access;

    // The spool lives as long as the mount, which is the rest of this process.
    let spool: &'static reel::spool::Spool = Box::leak(Box::new(ctx.open(Access::Read)?));
    let (folders, note) = reel::mount::folders(spool, &a.name)?;
    if let Some(note) = note {
        eprintln!("reel: {note}");
    }
    // The tapes the volume's dumps need that are among those given are staged for the life
    // of the mount; a file whose data is on a tape not given reads as EIO, and the log names
    // the tape.
    let sources = a.tapes.sources();
    let (packs, _staged, missing) = if sources.is_empty() {
        Default::default()
    } else {
        let labels = reel::mount::tapes_needed(spool, &a.name)?;
        reel::tape::locate::stage_tapes(spool, &labels, &sources, false)?
    };
    if !missing.is_empty() {
        eprintln!(
            "reel: tapes {} hold data of {} and are not among the images given: files with data \
             on them read as errors",
            missing.join(", "),
            a.name
        );
    }
    let n = folders.len();
    let dir = a.dir.clone();
    reel::mount::serve(
        spool,
        folders,
        &packs,
        &a.dir,
        &a.name,
        a.allow_other,
        || {
            eprintln!(
                "reel: volume {} mounted read-only at {} ({n} folders); Ctrl-C unmounts",
                a.name,
                dir.display()
            );
        },
    )?;
    eprintln!("reel: unmounted {}", a.dir.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "mount"))]
pub fn run(_ctx: &Ctx, a: MountArgs) -> Result<ExitCode> {
    let _ = (a.name, a.dir, a.allow_other, a.tapes);
    Err(reel::Error::usage(
        "this reel was built without FUSE support (cargo feature `mount`); rebuild with \
         default features to use `reel mount`",
    ))
}
