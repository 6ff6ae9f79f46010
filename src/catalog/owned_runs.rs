//! The chunks a dump owns, staged as sorted runs while the dump is written and folded into
//! `owned` at its end (docs/FORMAT.md, "Owning").
//!
//! Chunk ids are hashes: inserted into `owned` as the dump meets them, the rows land on random
//! leaves, and every checkpoint commit copied (copy-on-write) most of the dump's part of the
//! B-tree, so the catalog grew far past what it held. Staged, each run is one sorted batch under
//! a key prefix of its own, appended at the right edge of `owned_runs`. The fold reads the runs
//! one key-range slice at a time, writes the slice's rows into `owned` in id order and deletes
//! them from the runs; each slice can commit on its own, so the file never holds a dump's rows
//! twice over.

use super::Writer;
use super::chunk_runs::prefix;
use super::tables::{OWNED, OWNED_RUNS};
use crate::{ChunkId, Result};

/// The chunk id whose first 8 bytes are `prefix` and whose other bytes are all `fill`.
fn id_at(prefix: u64, fill: u8) -> [u8; 32] {
    let mut id = [fill; 32];
    id[..8].copy_from_slice(&prefix.to_be_bytes());
    id
}

/// Cut the id space into ranges of the ids' first 8 bytes (`lo..=hi`, in order) that hold about
/// `slice_rows` of `rows` uniformly spread ids each.
pub fn owned_slices(rows: u64, slice_rows: u64) -> Vec<(u64, u64)> {
    let n = rows.div_ceil(slice_rows.max(1)).max(1);
    let step = u64::MAX / n;
    (0..n)
        .map(|i| {
            let lo = i * step;
            let hi = if i + 1 == n { u64::MAX } else { lo + step - 1 };
            (lo, hi)
        })
        .collect()
}

/// A dump's owned rows on their way to `owned`: the newest in memory, the others staged as
/// sorted runs (`Writer::stage_owned`), so that no commit rewrites the B-tree's leaves at
/// random. An id given more than once is one row.
#[derive(Default)]
pub struct OwnedStaging {
    mem: Vec<(ChunkId, u32)>,
    runs: u32,
    /// Rows in the staged runs.
    rows: u64,
}

impl OwnedStaging {
    pub fn extend(&mut self, rows: impl IntoIterator<Item = (ChunkId, u32)>) {
        self.mem.extend(rows);
    }

    /// Stage the rows in memory as a run of `dump`'s once they are `max_rows` or more.
    pub fn spill_at(&mut self, w: &Writer, dump: u64, max_rows: usize) -> Result<()> {
        if self.mem.len() < max_rows {
            return Ok(());
        }
        self.sort();
        w.stage_owned(dump, self.runs, &self.mem)?;
        self.runs += 1;
        self.rows += self.mem.len() as u64;
        self.mem.clear();
        Ok(())
    }

    /// The key-range slices (`owned_slices`) a fold of these rows takes, `slice_rows` each.
    pub fn slices(&mut self, slice_rows: u64) -> Vec<(u64, u64)> {
        self.sort();
        owned_slices(self.rows + self.mem.len() as u64, slice_rows)
    }

    /// Fold the rows of one of `slices` into `owned` (`Writer::fold_owned`).
    pub fn fold_slice(&self, w: &Writer, dump: u64, slice: (u64, u64)) -> Result<(u64, u64)> {
        w.fold_owned(dump, self.runs, &self.mem, slice)
    }

    fn sort(&mut self) {
        self.mem.sort_by_key(|r| r.0);
        self.mem.dedup_by_key(|r| r.0);
    }
}

impl Writer {
    /// Stage `rows` (sorted by id, each id once) as run `run` of the rows `dump` owns.
    pub fn stage_owned(&self, dump: u64, run: u32, rows: &[(ChunkId, u32)]) -> Result<()> {
        let mut t = self.txn.open_table(OWNED_RUNS)?;
        for (id, stored) in rows {
            t.insert((dump, run, id.0), stored)?;
        }
        Ok(())
    }

    /// Fold the rows `dump` owns whose ids' first 8 bytes are in `lo..=hi` into `owned`: those
    /// of its staged runs `0..runs`, which are deleted, and those of `mem` (sorted by id, staged
    /// after the runs). An id staged more than once is one row, with the value staged first.
    /// Returns how many rows were new to `owned` and their stored bytes.
    pub fn fold_owned(
        &self,
        dump: u64,
        runs: u32,
        mem: &[(ChunkId, u32)],
        (lo, hi): (u64, u64),
    ) -> Result<(u64, u64)> {
        let (from, to) = (id_at(lo, 0), id_at(hi, 0xff));
        let in_range = |rows: &[(ChunkId, u32)]| {
            let start = rows.partition_point(|r| prefix(&r.0.0) < lo);
            let end = rows.partition_point(|r| prefix(&r.0.0) <= hi);
            rows[start..end].to_vec()
        };
        let mut rows = Vec::new();
        let mut staged = self.txn.open_table(OWNED_RUNS)?;
        for run in 0..runs {
            for item in staged.extract_from_if((dump, run, from)..=(dump, run, to), |_, _| true)? {
                let (k, v) = item?;
                rows.push((ChunkId(k.value().2), v.value()));
            }
        }
        rows.extend(in_range(mem));
        // The runs are each in id order; a slice is small enough to sort whole (stably: the
        // row staged first is kept).
        rows.sort_by_key(|r| r.0);
        rows.dedup_by_key(|r| r.0);
        let mut owned = self.txn.open_table(OWNED)?;
        let (mut n, mut bytes) = (0u64, 0u64);
        for (id, stored) in &rows {
            if owned.insert((dump, id.0), stored)?.is_none() {
                n += 1;
                bytes += u64::from(*stored);
            }
        }
        Ok((n, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use redb::ReadableTableMetadata;

    fn id(i: u32) -> ChunkId {
        ChunkId::of(&i.to_le_bytes())
    }

    /// Runs with copies of one another fold, slice by slice over several commits, into one
    /// `owned` row per chunk with the first value staged, and leave nothing staged; what an
    /// interrupted dump staged is dropped by `clean_uncommitted`.
    #[test]
    fn staged_runs_fold_into_owned_and_leave_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let cat = Catalog::create(&tmp.path().join("catalog.redb")).unwrap();
        let run = |ids: std::ops::Range<u32>, stored: u32| {
            let mut rows: Vec<(ChunkId, u32)> = ids.map(|i| (id(i), stored)).collect();
            rows.sort_by_key(|r| r.0);
            rows
        };
        let w = cat.writer().unwrap();
        w.stage_owned(5, 0, &run(0..300, 1)).unwrap();
        w.stage_owned(5, 1, &run(200..500, 2)).unwrap();
        w.set_next_dump_id(6).unwrap();
        w.commit().unwrap();
        let mem = run(450..520, 3);
        let mut total = (0, 0);
        for slice in owned_slices(870, 100) {
            let w = cat.writer().unwrap();
            let (n, b) = w.fold_owned(5, 2, &mem, slice).unwrap();
            w.commit().unwrap();
            total = (total.0 + n, total.1 + b);
        }
        // Ids 0..520, each once; the value of the lowest run that holds it.
        assert_eq!(total, (520, 300 + 200 * 2 + 20 * 3));
        assert_eq!(cat.owned_summary(5).unwrap(), total);
        let r = cat.reader().unwrap();
        let owned = r.owned_index().unwrap();
        assert!(owned.owns(5, &id(250)).unwrap() && !owned.owns(5, &id(520)).unwrap());
        assert_eq!(r.txn.open_table(OWNED_RUNS).unwrap().len().unwrap(), 0);
        drop((owned, r));

        // Staged rows of a dump that never committed go with the next session's cleanup.
        let w = cat.writer().unwrap();
        w.stage_owned(6, 0, &run(0..50, 1)).unwrap();
        w.commit().unwrap();
        let w = cat.writer().unwrap();
        assert_eq!(w.clean_uncommitted().unwrap(), 50);
        w.commit().unwrap();
        assert_eq!(cat.owned_summary(6).unwrap(), (0, 0));
        assert_eq!(cat.owned_summary(5).unwrap(), total);
    }

    #[test]
    fn slices_cover_the_id_space_in_order() {
        for (rows, per) in [(0, 10), (1, 10), (10, 10), (11, 10), (1_000_003, 4_096)] {
            let s = owned_slices(rows, per);
            assert_eq!(s.len() as u64, rows.div_ceil(per).max(1));
            assert_eq!(s[0].0, 0);
            assert_eq!(s.last().unwrap().1, u64::MAX);
            for w in s.windows(2) {
                assert_eq!(w[0].1 + 1, w[1].0);
            }
        }
    }
}
