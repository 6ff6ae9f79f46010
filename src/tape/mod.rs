//! The third phase, save to media: tape images in the BSD dump format (docs/DESIGN.md, "Tape
//! images"). `bsd` is the dump-format codec (reads real `dump` images, writes images the stock
//! `restore` reads); `payload` turns dumps into what a tape carries (label, catalog, packs of
//! the chunks each dump owns) and back; `image` carries a payload as a dump stream; `media` is
//! the catalog of tapes; `purge` frees the spool of what is on tape; `plain` writes a volume's
//! tree itself as a BSD dump at a level; `ingest` reads old BSD dumps in as dumps.

pub mod bsd;
pub mod export;
pub mod image;
pub mod ingest;
pub mod locate;
pub mod media;
pub mod payload;
pub mod plain;
pub mod purge;
