//! `reel info [VOLUME]` (alias `du`): what takes space. Per volume and dump the logical bytes,
//! the bytes left after deduplication (the raw bytes of the chunks the dump added), after
//! compression (the pack bytes it added), the bytes it owns, and the bytes of its data that
//! only tapes still hold (purged from the spool); then the spool's totals.

use std::collections::{BTreeMap, HashSet};
use std::process::ExitCode;

use clap::Args;
use reel::Result;
use reel::catalog::DumpRecord;
use reel::spool::{Access, Spool};
use reel::tape::media;
use reel::timefmt::{format_bytes, format_short};
use serde_json::{Value, json};

use super::json::{ratio, time};
use super::{Ctx, print_json};

#[derive(Args)]
pub struct InfoArgs {
    /// Only this volume's dumps (the spool's totals are always the whole spool's).
    volume: Option<String>,
    /// Print the result as JSON (field names in docs/CLI.md).
    #[arg(long)]
    json: bool,
}

/// The space figures of one dump, or the sum over several.
#[derive(Clone, Copy, Default)]
struct Space {
    logical: u64,
    /// After dedup: raw bytes of the chunks added.
    dedup: u64,
    /// After compression: pack bytes added.
    stored: u64,
    owned: u64,
    /// Stored bytes of owned chunks no longer in the spool (purged; on tape only).
    tape_only: u64,
}

impl Space {
    fn add(&mut self, o: &Space) {
        self.logical += o.logical;
        self.dedup += o.dedup;
        self.stored += o.stored;
        self.owned += o.owned;
        self.tape_only += o.tape_only;
    }

    fn json(&self) -> Value {
        json!({
            "logical_bytes": self.logical,
            "new_raw_bytes": self.dedup,
            "stored_bytes": self.stored,
            "owned_bytes": self.owned,
            "tape_only_bytes": self.tape_only,
            "dedup_ratio": if self.dedup == 0 { Value::Null } else { ratio(self.logical, self.dedup) },
            "compression_ratio": if self.dedup == 0 { Value::Null } else { ratio(self.dedup, self.stored) },
        })
    }

    fn ratios(&self) -> String {
        if self.dedup == 0 {
            "-".into()
        } else {
            super::dump::dedup_and_compression(self.logical, self.dedup, self.stored)
        }
    }
}

/// The space of each dump: the record's figures, and what of its owned data only tapes hold.
/// Only a dump some tape holds can have lost chunks to `purge`, so only those dumps' owned
/// rows are looked up in the chunk index.
fn dump_space(spool: &Spool, dumps: &[DumpRecord]) -> Result<Vec<Space>> {
    let on_tape: HashSet<u64> = media::tapes(spool)?
        .iter()
        .flat_map(|t| t.dumps.iter().map(|(id, _)| *id))
        .collect();
    let catalog = spool.catalog.reader()?;
    let chunks = catalog.chunk_index()?;
    let owned = catalog.owned_index()?;
    let mut out = Vec::with_capacity(dumps.len());
    for d in dumps {
        let mut tape_only = 0u64;
        if on_tape.contains(&d.id) {
            for row in owned.of(d.id)? {
                let (id, stored) = row?;
                if !chunks.contains(&id)? {
                    tape_only += u64::from(stored);
                }
            }
        }
        out.push(Space {
            logical: d.totals.logical_bytes,
            dedup: d.totals.new_raw_bytes,
            stored: d.totals.stored_bytes,
            owned: d.owned_bytes,
            tape_only,
        });
    }
    Ok(out)
}

pub fn run(ctx: &Ctx, a: InfoArgs) -> Result<ExitCode> {
    let spool = ctx.open(Access::Read)?;
    if let Some(v) = &a.volume {
        spool.known_volume(v)?;
    }
    let all = spool.catalog.dumps(None)?;
    let space = dump_space(&spool, &all)?;
    let mut total = Space::default();
    // Volume name → its dumps (time order, as the catalog lists them) with their space.
    let mut volumes: BTreeMap<&str, Vec<(&DumpRecord, Space)>> = BTreeMap::new();
    for (d, s) in all.iter().zip(&space) {
        total.add(s);
        if a.volume.as_deref().is_none_or(|v| v == d.volume) {
            volumes.entry(&d.volume).or_default().push((d, *s));
        }
    }
    if let Some(v) = &a.volume {
        volumes.entry(v.as_str()).or_default();
    }
    let packs = spool.catalog.packs()?;
    let pack_bytes: u64 = packs.iter().map(|(_, p)| p.size).sum();
    let tapes = media::tapes(&spool)?;
    let tape_bytes: u64 = tapes.iter().map(|t| t.bytes).sum();
    let catalog_bytes = spool.catalog.file_len();

    if a.json {
        let vols: Vec<Value> = volumes
            .iter()
            .map(|(name, dumps)| {
                let mut sum = Space::default();
                dumps.iter().for_each(|(_, s)| sum.add(s));
                let mut v = json!({
                    "volume": name,
                    "dumps": dumps.iter().map(|(d, s)| {
                        let mut o = s.json();
                        let m = o.as_object_mut().expect("object");
                        m.insert("id".into(), d.id.into());
                        m.insert("time".into(), time(d.time_ns));
                        m.insert("level".into(), d.level.into());
                        m.insert("host".into(), d.host.clone().into());
                        o
                    }).collect::<Vec<_>>(),
                });
                v["totals"] = sum.json();
                v
            })
            .collect();
        let mut spool_totals = total.json();
        let m = spool_totals.as_object_mut().expect("object");
        m.insert("dumps".into(), all.len().into());
        m.insert("packs".into(), packs.len().into());
        m.insert("pack_bytes".into(), pack_bytes.into());
        m.insert("catalog_bytes".into(), catalog_bytes.into());
        m.insert("tapes".into(), tapes.len().into());
        m.insert("tape_bytes".into(), tape_bytes.into());
        print_json(&json!({ "volumes": vols, "spool": spool_totals }));
        return Ok(ExitCode::SUCCESS);
    }

    let row = |what: &str, s: &Space| {
        format!(
            "{what} {:>11} {:>11} {:>11} {:>11} {:>11}",
            format_bytes(s.logical),
            format_bytes(s.dedup),
            format_bytes(s.stored),
            format_bytes(s.owned),
            format_bytes(s.tape_only)
        )
    };
    for (name, dumps) in &volumes {
        println!("volume {name}: {} dumps", dumps.len());
        println!(
            "  {:>6} {:<19} {:>5} {:>11} {:>11} {:>11} {:>11} {:>11}",
            "dump", "time", "level", "logical", "dedup", "compressed", "owned", "tape only"
        );
        let mut sum = Space::default();
        for (d, s) in dumps {
            sum.add(s);
            let what = format!(
                "  {:>6} {:<19} {:>5}",
                d.id,
                format_short(d.time_ns),
                d.level
            );
            println!("{}", row(&what, s));
        }
        println!("{}", row(&format!("  {:<32}", "total"), &sum));
        println!("  {}", sum.ratios());
    }
    println!(
        "spool: {} dumps, {} logical, {} after dedup, {} after compression ({}); {} packs on disk ({}), catalog {}, {} tapes ({}), {} on tape only",
        all.len(),
        format_bytes(total.logical),
        format_bytes(total.dedup),
        format_bytes(total.stored),
        total.ratios(),
        packs.len(),
        format_bytes(pack_bytes),
        format_bytes(catalog_bytes),
        tapes.len(),
        format_bytes(tape_bytes),
        format_bytes(total.tape_only)
    );
    Ok(ExitCode::SUCCESS)
}
