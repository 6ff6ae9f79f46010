//! (stub; being written)
use std::path::Path;
use std::time::Duration;

use crate::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookKind {
    Freeze,
    Thaw,
    Snapshot,
    Release,
}
pub struct HookOutput {
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}
pub fn run_hook(
    _kind: HookKind,
    _cmd: &str,
    _volume: &str,
    _path: &Path,
    _extra_env: &[(&str, &str)],
    _timeout: Duration,
    _interruptible: bool,
) -> Result<HookOutput> {
    unimplemented!()
}
