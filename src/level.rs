//! Dump levels: which earlier dump a new one is based on, and the chain a restore needs.
//!
//! Level 0 is a full dump; level N is relative to the latest dump of the same volume with a
//! lower level (its base), as BSD dump and Coda define it. Because every manifest is complete,
//! the level decides only what a dump *owns* (what its tape must carry), never what it can
//! restore on its own.

use crate::record::DumpRecord;

/// Highest level accepted.
pub const MAX_LEVEL: u8 = 9;

/// The base of a level `level` dump among `dumps` (one volume's dumps in time order): the
/// latest with a lower level. None for level 0, or when no lower dump exists (the new dump
/// then becomes a level 0).
pub fn choose_base(dumps: &[DumpRecord], level: u8) -> Option<&DumpRecord> {
    if level == 0 {
        return None;
    }
    dumps.iter().rev().find(|d| d.level < level)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u64, level: u8) -> DumpRecord {
        DumpRecord::sample(id, level, id as i64, vec![])
    }

    /// The classic Tower-of-Hanoi-like sequence 0,1,2,1,3,2,1: each base is the latest lower.
    #[test]
    fn bases_follow_the_latest_lower_level() {
        let levels = [0u8, 1, 2, 1, 3, 2, 1];
        let expected_base = [None, Some(1), Some(2), Some(1), Some(4), Some(4), Some(1)];
        let mut dumps: Vec<DumpRecord> = Vec::new();
        for (i, (&l, &want)) in levels.iter().zip(&expected_base).enumerate() {
            let got = choose_base(&dumps, l).map(|d| d.id);
            assert_eq!(got, want, "dump {} at level {l}", i + 1);
            dumps.push(rec(i as u64 + 1, l));
        }
        assert!(choose_base(&[], 3).is_none());
    }
}
