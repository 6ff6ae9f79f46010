//! The clone phase: freeze a volume, take a read-only clone, thaw it, and say how long it was
//! frozen (DESIGN.md, "The three phases").
//!
//! `hook` runs the admin's commands, `freeze` holds the freeze lock and catches signals so
//! that a volume is never left frozen, `copy` makes directory clones (reflink and copy
//! methods). A volume has one clone at a time: the latest, its users' "yesterday" view.

pub mod copy;
pub mod freeze;
pub mod hook;

use std::path::PathBuf;

use crate::catalog::{CloneRecord, CloneView};
use crate::spool::Spool;
use crate::{ChunkId, Result};

/// Where the tree of a volume's latest clone can be read.
#[derive(Clone, Debug)]
pub enum Tree {
    /// A manifest in the spool (a `store` clone, or any clone that has been dumped).
    Manifest(Vec<(ChunkId, u32)>),
    /// A read-only directory (a `reflink`, `copy` or `hook` clone not dumped yet).
    Dir(PathBuf),
}

/// The latest clone of `volume` and where to read it, or None when it has none.
pub fn backup_tree(spool: &Spool, volume: &str) -> Result<Option<(CloneRecord, Tree)>> {
    let Some(rec) = spool.catalog.clone_of(volume)? else {
        return Ok(None);
    };
    let tree = match (&rec.view, rec.dumped) {
        (CloneView::Manifest { chunks, .. }, _) => {
            Tree::Manifest(chunks.iter().map(|(id, n)| (ChunkId(*id), *n)).collect())
        }
        (CloneView::Dir { .. }, Some(d)) if spool.catalog.dump(d)?.is_some() => {
            let d = spool.catalog.dump(d)?.expect("checked");
            Tree::Manifest(d.manifest_chunks())
        }
        (CloneView::Dir { path, .. }, _) => Tree::Dir(PathBuf::from(path)),
    };
    Ok(Some((rec, tree)))
}
