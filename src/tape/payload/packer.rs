//! The packer: chunks into frames, frames and blobs into packs of at most `PACK_MAX` bytes,
//! packs sealed and named by their hash, as a spool's packs are.

use std::fs;
use std::path::PathBuf;

use crate::error::IoContext;
use crate::frame;
use crate::pack::{
    self, BLOB_HEADER_LEN, BlobKind, EncodedBlob, FOOTER_LEN, INDEX_ENTRY_LEN, PACK_TARGET_SIZE,
    PackWriter,
};
use crate::tape::payload::format::{HexId, TapePack};
use crate::{ChunkId, Result};

/// A payload pack never exceeds this many bytes (index and footer included).
pub const PACK_MAX: u64 = PACK_TARGET_SIZE;

/// Frames and packs of the payload being written.
pub(super) struct Packer {
    pub(super) stage: PathBuf,
    pub(super) packs_dir: PathBuf,
    pub(super) level: i32,
    pub(super) writer: Option<PackWriter>,
    /// Chunks in this writer (frames count their chunks).
    pub(super) writer_chunks: u64,
    pub(super) frame: frame::Builder,
    pub(super) finished: Vec<TapePack>,
    /// Blob bytes written since the last `take_section`.
    pub(super) section: u64,
}

impl Packer {
    /// Index of the pack the next blob goes to.
    pub(super) fn add_blob(
        &mut self,
        id: ChunkId,
        kind: BlobKind,
        blob: &EncodedBlob,
        chunks: u64,
    ) -> Result<u32> {
        let need = (BLOB_HEADER_LEN + blob.data.len() + INDEX_ENTRY_LEN + FOOTER_LEN) as u64;
        if let Some(w) = &self.writer {
            let index = (INDEX_ENTRY_LEN * w.blob_count()) as u64;
            if w.blob_count() > 0 && w.size() + index + need > PACK_MAX {
                self.seal()?;
            }
        }
        if self.writer.is_none() {
            self.writer = Some(PackWriter::create(&self.stage)?);
            self.writer_chunks = 0;
        }
        let w = self.writer.as_mut().expect("writer open");
        w.add(id, kind, blob)?;
        self.writer_chunks += chunks;
        self.section += (BLOB_HEADER_LEN + blob.data.len()) as u64;
        Ok(self.finished.len() as u32)
    }

    /// Queue a data chunk for the current frame; returns the frame's chunks and pack index
    /// when queuing it closed the previous frame.
    pub(super) fn put_data(
        &mut self,
        id: ChunkId,
        raw: &[u8],
    ) -> Result<Option<(u32, Vec<ChunkId>)>> {
        let mut flushed = None;
        if !self.frame.fits(raw.len()) {
            flushed = self.flush_frame()?;
        }
        self.frame.push(id, raw);
        Ok(flushed)
    }

    pub(super) fn flush_frame(&mut self) -> Result<Option<(u32, Vec<ChunkId>)>> {
        if self.frame.is_empty() {
            return Ok(None);
        }
        let frame = std::mem::take(&mut self.frame);
        let ids: Vec<ChunkId> = frame.slots().into_iter().map(|s| s.0).collect();
        let (frame_id, raw) = frame.into_named();
        let blob = pack::encode_blob(&raw, self.level);
        let idx = self.add_blob(frame_id, BlobKind::Frame, &blob, ids.len() as u64)?;
        Ok(Some((idx, ids)))
    }

    pub(super) fn seal(&mut self) -> Result<()> {
        let Some(w) = self.writer.take() else {
            return Ok(());
        };
        let blobs = w.blob_count() as u64;
        let done = w.finish(&self.stage.join("sealed"))?;
        let hex = done.id.to_hex();
        let dest = self.packs_dir.join(format!("{hex}.pack"));
        fs::rename(&done.path, &dest).at(&dest)?;
        self.finished.push(TapePack {
            name: HexId(done.id.0),
            size: done.size,
            blobs,
            chunks: self.writer_chunks,
        });
        Ok(())
    }
}
