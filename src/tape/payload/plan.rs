//! Planning an export: which dumps are not on a tape yet and which chunks each carries.

use std::collections::HashSet;

use crate::catalog::{DumpRecord, TapeIndex};
use crate::spool::Spool;
use crate::tape::media;
use crate::{ChunkId, Result};

/// What one dump will put on the tape (an estimate from the owned rows: the tape recompresses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedDump {
    pub id: u64,
    pub chunks: u64,
    /// Stored bytes of those chunks in the spool.
    pub bytes: u64,
}

/// The dumps an export writes and what each carries.
#[derive(Clone, Debug)]
pub struct ExportPlan {
    /// In time order (across volumes; by id on equal times).
    pub dumps: Vec<DumpRecord>,
    pub chunks: u64,
    pub bytes: u64,
    /// Per dump of `dumps`, in the same order.
    pub per_dump: Vec<PlannedDump>,
    pub media_set: Option<String>,
    /// Earlier tapes of the media set: chunks on them are left out.
    pub set_tapes: Vec<String>,
}

/// Which dumps (of `volumes`, or all when empty) are not on any tape yet, and which chunks
/// each carries: the chunks it owns (catalog `owned` rows, manifest chunks included), each
/// chunk once per image; with `media_set`, leaving out chunks already on earlier tapes of that
/// set (media catalog).
pub fn plan_export(
    spool: &Spool,
    volumes: &[String],
    media_set: Option<&str>,
) -> Result<ExportPlan> {
    let mut dumps = if volumes.is_empty() {
        spool.catalog.dumps(None)?
    } else {
        let mut all = Vec::new();
        for v in volumes {
            spool.known_volume(v)?;
            all.extend(spool.catalog.dumps(Some(v))?);
        }
        all
    };
    let catalog = spool.catalog.reader()?;
    let tapes = media::tapes_of(&catalog)?;
    let on_tape: HashSet<u64> = tapes
        .iter()
        .flat_map(|t| t.dumps.iter().map(|(d, _)| *d))
        .collect();
    dumps.retain(|d| !on_tape.contains(&d.id));
    dumps.sort_by_key(|d| (d.time_ns, d.id));
    dumps.dedup_by_key(|d| d.id);
    let set_tapes: Vec<String> = match media_set {
        Some(s) => tapes
            .iter()
            .filter(|t| t.media_set.as_deref() == Some(s))
            .map(|t| t.label.clone())
            .collect(),
        None => Vec::new(),
    };
    let owned = catalog.owned_index()?;
    let on_tapes = catalog.tape_index()?;
    let mut seen: HashSet<[u8; 32]> = HashSet::new();
    let mut plan = ExportPlan {
        dumps: Vec::new(),
        chunks: 0,
        bytes: 0,
        per_dump: Vec::new(),
        media_set: media_set.map(str::to_string),
        set_tapes,
    };
    for d in dumps {
        let mut p = PlannedDump {
            id: d.id,
            chunks: 0,
            bytes: 0,
        };
        for item in owned.of(d.id)? {
            let (id, stored) = item?;
            if !seen.insert(id.0) || on_set_tape(&on_tapes, &plan.set_tapes, &id)? {
                continue;
            }
            p.chunks += 1;
            p.bytes += u64::from(stored);
        }
        plan.chunks += p.chunks;
        plan.bytes += p.bytes;
        plan.per_dump.push(p);
        plan.dumps.push(d);
    }
    Ok(plan)
}

pub(super) fn on_set_tape(on_tapes: &TapeIndex, set: &[String], id: &ChunkId) -> Result<bool> {
    if set.is_empty() {
        return Ok(false);
    }
    Ok(on_tapes.tapes_of(id)?.iter().any(|l| set.contains(l)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;
    use crate::tape::payload::tests::{DAY, T0, dump, export, fixture, plain_key, record};
    use crate::tape::payload::{verify_payload, write_payload};

    #[test]
    fn media_set_leaves_out_chunks_on_earlier_tapes() {
        let f = fixture();
        let (dir1, s1) = export(&f, Some("weekly"), "W-1", 1);
        record(&f, &s1, &dir1);
        // Exported dumps are not planned again.
        assert!(plan_export(&f.spool, &[], None).unwrap().dumps.is_empty());
        // A new full of an unchanged tree owns every chunk again...
        let full = dump(&f.spool, 0, T0 + 2 * DAY);
        let alone = plan_export(&f.spool, &[], None).unwrap();
        assert_eq!(alone.dumps.len(), 1);
        assert_eq!(
            alone.per_dump[0].chunks,
            f.spool.catalog.owned_summary(full.id).unwrap().0
        );
        // ...but in the media set it writes only what is not on W-1 (its changed manifest).
        let in_set = plan_export(&f.spool, &[], Some("weekly")).unwrap();
        assert!(in_set.per_dump[0].chunks <= full.manifest.len() as u64);
        assert!(in_set.per_dump[0].chunks * 10 < alone.per_dump[0].chunks);
        let plan = in_set;
        let dir2 = f.tmp.path().join("tape-W-2");
        let s2 = write_payload(
            &f.spool,
            &plan,
            "W-2",
            Some("weekly"),
            2,
            &dir2,
            &NoProgress,
        )
        .unwrap();
        assert!(s2.bytes * 5 < s1.bytes);
        let cat = verify_payload(&dir2, &plain_key()).unwrap();
        assert_eq!(cat.dumps[0].tapes_needed, ["W-1", "W-2"]);
    }
}
