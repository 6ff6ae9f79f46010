//! The packer: chunks into frames, frames and blobs into packs of at most `PACK_MAX` bytes
//! (`crate::frame_packer`), packs finished and named by their hash, as a spool's packs are
//! (blobs and index sealed under an encrypted spool's keys by the pack writer), and placed
//! under `reel/packs/`.

use std::fs;
use std::path::PathBuf;

use crate::catalog::ChunkLoc;
use crate::crypto::Keys;
use crate::error::IoContext;
use crate::frame_packer::{Chunks, FramePacker, PackSink, Rollover};
use crate::pack::{self, BLOB_HEADER_LEN, BlobEntry, BlobKind, PACK_TARGET_SIZE, PackWriter};
use crate::tape::payload::format::{HexId, TapePack};
use crate::{ChunkId, Result};

/// A payload pack never exceeds this many bytes (index and footer included).
pub const PACK_MAX: u64 = PACK_TARGET_SIZE;

/// Frames and packs of the payload being written.
pub(super) struct Packer {
    frames: FramePacker<PackWriter>,
    out: Placer,
}

/// Where the payload's packs go: staged and sealed in `stage`, then renamed into `packs_dir`.
struct Placer {
    /// The spool's keys: an encrypted spool's tape carries sealed packs.
    keys: Keys,
    stage: PathBuf,
    packs_dir: PathBuf,
    /// Chunks in the open pack (frames count their chunks).
    chunks: u64,
    finished: Vec<TapePack>,
    /// Blob bytes written since the last `take_section`.
    section: u64,
    /// The pack index and chunks of the blob placed last.
    last: Option<(u32, Vec<ChunkId>)>,
}

impl Packer {
    pub(super) fn new(stage: PathBuf, packs_dir: PathBuf, level: i32, keys: &Keys) -> Packer {
        Packer {
            frames: FramePacker::new(level, Rollover::Below(PACK_MAX), keys),
            out: Placer {
                keys: keys.clone(),
                stage,
                packs_dir,
                chunks: 0,
                finished: Vec::new(),
                section: 0,
                last: None,
            },
        }
    }

    /// The compression level of the blobs.
    pub(super) fn level(&self) -> i32 {
        self.frames.level()
    }

    /// Blob bytes written since the last call.
    pub(super) fn take_section(&mut self) -> u64 {
        std::mem::take(&mut self.out.section)
    }

    /// Index of the pack the blob went to.
    pub(super) fn add_blob(&mut self, id: ChunkId, kind: BlobKind, raw: &[u8]) -> Result<u32> {
        let blob = pack::encode_blob(raw, self.level());
        self.frames
            .append(&mut self.out, id, kind, blob, Chunks::Own)?;
        Ok(self.out.last.take().expect("a blob placed").0)
    }

    /// Queue a data chunk for the current frame; returns the frame's chunks and pack index
    /// when queuing it closed the previous frame.
    pub(super) fn put_data(
        &mut self,
        id: ChunkId,
        raw: &[u8],
    ) -> Result<Option<(u32, Vec<ChunkId>)>> {
        self.frames.put_data(&mut self.out, id, raw)?;
        Ok(self.out.last.take())
    }

    pub(super) fn flush_frame(&mut self) -> Result<Option<(u32, Vec<ChunkId>)>> {
        self.frames.flush(&mut self.out)?;
        Ok(self.out.last.take())
    }

    /// Seal the last pack; the payload's packs, in the order written.
    pub(super) fn finish(&mut self) -> Result<Vec<TapePack>> {
        self.frames.seal(&mut self.out)?;
        Ok(std::mem::take(&mut self.out.finished))
    }
}

impl PackSink for Placer {
    type Pack = PackWriter;

    fn open(&mut self) -> Result<(u64, PackWriter)> {
        self.chunks = 0;
        Ok((
            self.finished.len() as u64,
            PackWriter::create(&self.stage, &self.keys)?,
        ))
    }

    fn placed(&mut self, entry: &BlobEntry, chunks: Vec<(ChunkId, ChunkLoc)>) -> Result<()> {
        self.chunks += chunks.len() as u64;
        self.section += (BLOB_HEADER_LEN + entry.stored_len as usize) as u64;
        let no = chunks.first().map_or(0, |c| c.1.pack_no) as u32;
        self.last = Some((no, chunks.into_iter().map(|c| c.0).collect()));
        Ok(())
    }

    fn seal(&mut self, _: u64, w: PackWriter) -> Result<()> {
        let blobs = w.blob_count() as u64;
        let done = w.finish(&self.stage.join("sealed"))?;
        let hex = done.id.to_hex();
        let dest = self.packs_dir.join(format!("{hex}.pack"));
        fs::rename(&done.path, &dest).at(&dest)?;
        self.finished.push(TapePack {
            name: HexId(done.id.0),
            size: done.size,
            blobs,
            chunks: self.chunks,
        });
        Ok(())
    }
}
