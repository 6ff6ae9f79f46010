//! reel: levelled, deduplicated volume dumps on a spool disk, after the Coda backup design.
//!
//! The library holds everything; `src/main.rs` only parses arguments, calls in here and prints.
//! Module map: `scan` walks trees, `chunk` cuts content, `pack` stores compressed chunks,
//! `store` deduplicates into packs and reads back, `manifest` encodes a dump's namespace,
//! `catalog` indexes it all in redb, `level` picks bases, `dump` and `restore` are the two
//! pipelines, `recovery` checks and repairs, `merge` makes synthetic level 0s.

pub mod ahead;
pub mod catalog;
pub mod chunk;
pub mod clone;
pub mod crypto;
pub mod diff;
pub mod dirfd;
pub mod dump;
pub mod error;
pub mod failpoint;
pub mod frame;
pub mod frame_packer;
pub mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
pub mod gc;
pub mod keyring;
pub mod level;
pub mod manifest;
pub mod merge;
#[cfg(feature = "mount")]
pub mod mount;
pub mod nightly;
pub mod pack;
pub mod pack_store;
pub mod progress;
pub mod prune;
pub mod record;
pub mod recovery;
pub mod restore;
pub mod scan;
pub mod schedule;
pub mod select;
pub mod settings;
pub mod signal;
pub mod spool;
pub mod store;
pub mod tape;
pub mod timefmt;
pub mod tree_writer;
pub mod types;

pub use error::{Error, Result};
pub use types::{ChunkId, ChunkMap, ChunkSet, Entry, EntryKind, Extent};
