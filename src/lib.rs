//! reel: levelled, deduplicated volume dumps on a spool disk, after the Coda backup design.
//!
//! The library holds everything; `src/main.rs` only parses arguments, calls in here and prints.

pub mod error;
pub mod types;

pub use error::{Error, Result};
pub use types::{ChunkId, Entry, EntryKind, Extent};
