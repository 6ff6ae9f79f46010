//! The BSD dump format codec: writes streams the stock Linux `restore` (0.4b47) lists and
//! extracts, and reads real `dump` images back (docs/BSD-DUMP.md).
//!
//! Why it is built this way: the format is a flat sequence of 1024-byte records with no index,
//! so both sides stream. `format` holds the pure encodings (header, checksum, bitmaps,
//! directory entries), `xattr` those of the extended-attribute records, `writer` enforces the
//! record order restore depends on and splits volumes like `dump -M`, `reader` verifies every
//! header and refuses damaged or unsafe input instead of resynchronising as restore does,
//! because an import must fail rather than lose data silently.

pub mod format;
pub mod reader;
pub mod writer;
pub mod xattr;

pub use format::{BitMap, DirEntry, DumpInfo, InodeMeta};
pub use reader::{DumpReader, Inode, InodeKind, Piece, paths};
pub use writer::{DumpWriter, Target, WriteSummary, remove_partial, volume_path};
pub use xattr::Xattrs;
