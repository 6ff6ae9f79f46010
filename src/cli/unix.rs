//! What a Unix tool ships besides itself: shell completions (clap_complete) and man pages
//! (clap_mangen), both generated from the same definitions as `--help`, so they never drift.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use reel::{Error, Result};

#[derive(clap::Args)]
pub struct CompletionArgs {
    /// The shell to complete for.
    shell: clap_complete::Shell,
}

#[derive(clap::Args)]
pub struct ManArgs {
    /// Where to write the pages: reel.1 and reel-COMMAND.1 for each command (reel-volume-add.1
    /// for `reel volume add`). Install them under a man1 folder, e.g. /usr/local/share/man/man1.
    #[arg(value_name = "DIR")]
    out: PathBuf,
}

/// Print the completion script for a shell.
pub fn completion(a: CompletionArgs) -> Result<ExitCode> {
    let mut cmd = super::Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "reel", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

/// Write reel's man pages into a folder (made if missing).
pub fn man(a: ManArgs) -> Result<ExitCode> {
    std::fs::create_dir_all(&a.out).map_err(|e| Error::io(&a.out, e))?;
    let mut cmd = super::Cli::command();
    cmd.build();
    let mut written = 0;
    write_pages(&cmd, "reel", &a.out, &mut written)?;
    println!("wrote {written} man pages to {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}

/// The page of `cmd`, named `name`, then those of its subcommands (`name-sub`).
fn write_pages(cmd: &clap::Command, name: &str, dir: &Path, written: &mut usize) -> Result<()> {
    let page = cmd.clone().name(name.to_string());
    let path = dir.join(format!("{name}.1"));
    let mut out = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut out)
        .map_err(|e| Error::io(&path, e))?;
    std::fs::write(&path, out).map_err(|e| Error::io(&path, e))?;
    *written += 1;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}
