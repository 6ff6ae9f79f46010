//! Progress is passed in; the library never draws it. The CLI shows a bar on a terminal and
//! nothing on a pipe.

pub trait Progress: Sync {
    /// Something to show beside the bar (a phase name, a path).
    fn message(&self, _msg: &str) {}
    /// Total bytes, when known.
    fn set_total(&self, _bytes: u64) {}
    /// Bytes processed.
    fn advance(&self, _bytes: u64) {}
    /// Entries processed.
    fn entries(&self, _n: u64) {}
}

/// Shows nothing.
pub struct NoProgress;

impl Progress for NoProgress {}
