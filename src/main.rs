//! The `reel` command: parse, call the library, print, exit. All logic lives in the library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
