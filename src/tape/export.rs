//! `reel export`, in order: plan which dumps and chunks the tape carries, write the payload
//! into a scratch folder, write it as a BSD dump image, and only then record the tape in the
//! media catalog, so a tape the catalog names is always complete. A killed or failed export
//! leaves no tape in the catalog; a failed image write removes what it wrote.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::spool::Spool;
use crate::tape::bsd::{Target, WriteSummary, remove_partial};
use crate::tape::locate::Staged;
use crate::tape::payload::{self, ExportPlan, PayloadSummary};
use crate::tape::{image, media};

/// What to export, and where.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// The image: a file, or a tape device.
    pub to: PathBuf,
    /// The tape's label; `reel-YYYYMMDD-HHMMSS` (local time) when None.
    pub label: Option<String>,
    /// Split into volumes of at most this many bytes (`PATH.001`, …), like `dump -M`.
    pub capacity: Option<u64>,
    /// Records (1 KiB) per tape block (dump's `-b`).
    pub block_size: u32,
    /// Leave out chunks already on earlier tapes of this media set.
    pub media_set: Option<String>,
    /// Only these volumes (all when empty).
    pub volumes: Vec<String>,
}

/// A tape an export wrote and recorded.
pub struct Exported {
    pub label: String,
    pub plan: ExportPlan,
    pub payload: PayloadSummary,
    pub image: WriteSummary,
}

/// Export the dumps not on tape yet (see the module documentation); None when every dump is on
/// tape already and nothing was written.
pub fn export(
    spool: &Spool,
    opts: &ExportOptions,
    progress: &dyn Progress,
) -> Result<Option<Exported>> {
    for v in &opts.volumes {
        spool.known_volume(v)?;
    }
    let label = opts.label.clone().unwrap_or_else(|| {
        chrono::Local::now()
            .format("reel-%Y%m%d-%H%M%S")
            .to_string()
    });
    if media::tapes(spool)?.iter().any(|t| t.label == label) {
        return Err(Error::usage(format!(
            "a tape labelled {label} is already in the media catalog; give another --label"
        )));
    }
    let plan = payload::plan_export(spool, &opts.volumes, opts.media_set.as_deref())?;
    if plan.dumps.is_empty() {
        return Ok(None);
    }
    let target = match opts.capacity {
        Some(capacity) => Target::Split {
            path: opts.to.clone(),
            capacity,
        },
        None => Target::File(opts.to.clone()),
    };
    let scratch = Staged::scratch(spool, "export", 0)?;
    let sequence = match opts.media_set.as_deref() {
        Some(set) => media::next_sequence(spool, set)?,
        None => 1,
    };
    let written = payload::write_payload(
        spool,
        &plan,
        &label,
        opts.media_set.as_deref(),
        sequence,
        scratch.dir(),
        progress,
    )?;
    let image = match image::write_image(
        scratch.dir(),
        &written.files,
        &label,
        target.clone(),
        opts.block_size,
    ) {
        Ok(w) => w,
        Err(e) => {
            remove_partial(&target);
            return Err(e);
        }
    };
    // Only a complete image is recorded as a tape.
    let (mut rec, chunks) =
        payload::tape_record(&written, scratch.dir(), &payload::TapeKey::of_spool(spool))?;
    rec.bytes = image.bytes;
    rec.volumes = image.volumes.len() as u32;
    crate::failpoint::hit("export-image-written"); // complete image, not yet a known tape
    let w = spool.catalog.writer()?;
    w.record_tape(&rec.label, &rec, chunks.into_iter())?;
    w.commit()?;
    Ok(Some(Exported {
        label,
        plan,
        payload: written,
        image,
    }))
}
