//! The third phase, save to media: tape images in the BSD dump format (DESIGN.md, "Tape
//! images"). `bsd` is the dump-format codec (reads real `dump` images, writes images the stock
//! `restore` reads); `payload` turns dumps into what a tape carries (label, catalog, packs of
//! the chunks each dump owns) and back; `media` is the catalog of tapes.

pub mod bsd;
pub mod image;
pub mod media;
pub mod payload;
pub mod plain;
