//! Recovery: finding damage and repairing what packs can give back.
//!
//! `check` verifies a spool (the catalog against the packs, every manifest, with `read_data`
//! every chunk); `repair` (`check --repair`) brings the catalog in line with the packs in the
//! pack store; `rebuild` (`rebuild-catalog`) makes a new catalog from the packs and tapes, and
//! holds the pack scanning and reference walking `repair` shares. Reading a pack's chunks back
//! from its bytes is `crate::pack_store::scan`, which the store and the tape code use too.

pub mod check;
pub mod rebuild;
pub mod repair;
