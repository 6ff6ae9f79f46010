//! Filling frames and packs, for every writer of packs: the chunk store (a dump), a tape
//! payload and gc's rewrite.
//!
//! Data chunks go into a frame (`crate::frame`) until the next one no longer fits; a frame, or
//! any other blob, is appended to the open pack; a pack is rolled over by its [`Rollover`]
//! rule. Where the packs come from and where full ones go is the caller's [`PackSink`]: the
//! store seals them on their own threads and puts them into the spool's pack store, a tape
//! payload places them under `reel/packs/`, gc puts them into the pack store. The sink also
//! learns every chunk's location as its blob is appended, before the pack may be sealed.
//!
//! Frames are compressed where the caller likes: [`FramePacker::flush`] compresses on the
//! caller's thread; the store takes full frames ([`FramePacker::take_full`]), compresses them on
//! its pool and appends them, in order, with [`FramePacker::append`].

use crate::catalog::{ChunkLoc, FrameSlot};
use crate::crypto::{Keys, SEAL_OVERHEAD};
use crate::frame;
use crate::pack::{
    self, BLOB_HEADER_LEN, BackgroundPack, BlobEntry, BlobKind, EncodedBlob, FOOTER_LEN,
    INDEX_ENTRY_LEN, PACK_TARGET_SIZE, PackWriter,
};
use crate::{ChunkId, Result};

/// A pack being written: a [`PackWriter`] on the caller's thread, or a [`BackgroundPack`].
pub trait OpenPack {
    fn add(&mut self, id: ChunkId, kind: BlobKind, blob: EncodedBlob) -> Result<BlobEntry>;
    /// Bytes written so far (header and blobs).
    fn size(&self) -> u64;
    fn blob_count(&self) -> usize;
}

impl OpenPack for PackWriter {
    fn add(&mut self, id: ChunkId, kind: BlobKind, blob: EncodedBlob) -> Result<BlobEntry> {
        PackWriter::add(self, id, kind, &blob)
    }
    fn size(&self) -> u64 {
        PackWriter::size(self)
    }
    fn blob_count(&self) -> usize {
        PackWriter::blob_count(self)
    }
}

impl OpenPack for BackgroundPack {
    fn add(&mut self, id: ChunkId, kind: BlobKind, blob: EncodedBlob) -> Result<BlobEntry> {
        BackgroundPack::add(self, id, kind, blob)
    }
    fn size(&self) -> u64 {
        BackgroundPack::size(self)
    }
    fn blob_count(&self) -> usize {
        BackgroundPack::blob_count(self)
    }
}

/// Where a [`FramePacker`]'s packs come from and go.
pub trait PackSink {
    type Pack: OpenPack;
    /// A new pack, with the number its chunks' locations carry.
    fn open(&mut self) -> Result<(u64, Self::Pack)>;
    /// A blob was appended: its entry, and the location of each chunk in it.
    fn placed(&mut self, entry: &BlobEntry, chunks: Vec<(ChunkId, ChunkLoc)>) -> Result<()>;
    /// Pack `no` is full, or the writing is done: it is the sink's to finish.
    fn seal(&mut self, no: u64, pack: Self::Pack) -> Result<()>;
}

/// When a pack is rolled over.
#[derive(Clone, Copy, Debug)]
pub enum Rollover {
    /// Once a blob brings it to `PACK_TARGET_SIZE` (the spool's packs).
    AtTarget,
    /// Before a blob that would take the finished pack (index and footer included) past this
    /// many bytes; a pack's first blob always goes in (a tape payload's packs).
    Below(u64),
}

/// What chunks a blob holds, for their locations.
pub enum Chunks<'a> {
    /// One chunk, under the blob's own id.
    Own,
    /// A frame's chunks: (id, length, slot), as [`frame_slots`] gives them.
    Frame(&'a [(ChunkId, u32, FrameSlot)]),
    /// Chunks as some index located them: (id, length, kind, slot in a frame).
    Listed(Vec<(ChunkId, u32, BlobKind, Option<FrameSlot>)>),
}

/// Chunks into frames, frames and blobs into packs; see the module documentation.
pub struct FramePacker<P> {
    level: i32,
    /// The spool's keys: frames are named under them; the packs the sink opens seal with them.
    keys: Keys,
    rollover: Rollover,
    /// The open pack and its number.
    pack: Option<(u64, P)>,
    /// The data frame being filled.
    filling: frame::Builder,
}

impl<P: OpenPack> FramePacker<P> {
    pub fn new(level: i32, rollover: Rollover, keys: &Keys) -> FramePacker<P> {
        FramePacker {
            level,
            keys: keys.clone(),
            rollover,
            pack: None,
            filling: frame::Builder::default(),
        }
    }

    /// The keys frames are named under.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The compression level of the blobs.
    pub fn level(&self) -> i32 {
        self.level
    }

    /// Is a frame being filled?
    pub fn filling(&self) -> bool {
        !self.filling.is_empty()
    }

    /// The filling frame, if a chunk of `len` bytes no longer fits in it.
    pub fn take_full(&mut self, len: usize) -> Option<frame::Builder> {
        if self.filling.fits(len) {
            return None;
        }
        Some(std::mem::take(&mut self.filling))
    }

    /// The filling frame, if it holds any chunk.
    pub fn take_frame(&mut self) -> Option<frame::Builder> {
        (!self.filling.is_empty()).then(|| std::mem::take(&mut self.filling))
    }

    /// Put a chunk into the filling frame (call `take_full` first).
    pub fn push(&mut self, id: ChunkId, raw: &[u8]) {
        self.filling.push(id, raw);
    }

    /// Put a data chunk into the filling frame; a frame it does not fit in is compressed and
    /// appended first.
    pub fn put_data<S: PackSink<Pack = P>>(
        &mut self,
        sink: &mut S,
        id: ChunkId,
        raw: &[u8],
    ) -> Result<()> {
        if let Some(frame) = self.take_full(raw.len()) {
            self.append_frame(sink, frame)?;
        }
        self.push(id, raw);
        Ok(())
    }

    /// Compress and append the filling frame, if any.
    pub fn flush<S: PackSink<Pack = P>>(&mut self, sink: &mut S) -> Result<()> {
        match self.take_frame() {
            Some(frame) => self.append_frame(sink, frame),
            None => Ok(()),
        }
    }

    /// Compress `frame` here and append it.
    pub fn append_frame<S: PackSink<Pack = P>>(
        &mut self,
        sink: &mut S,
        frame: frame::Builder,
    ) -> Result<()> {
        let (id, slots, blob) = compress(frame, self.level, &self.keys);
        self.append(sink, id, BlobKind::Frame, blob, Chunks::Frame(&slots))
    }

    /// Append one blob to the open pack (opening one, or rolling over, as the rule says) and
    /// tell the sink where its chunks are.
    pub fn append<S: PackSink<Pack = P>>(
        &mut self,
        sink: &mut S,
        id: ChunkId,
        kind: BlobKind,
        blob: EncodedBlob,
        chunks: Chunks,
    ) -> Result<()> {
        if let (Rollover::Below(max), Some((_, p))) = (self.rollover, &self.pack) {
            // A sealed pack's blobs and index are each SEAL_OVERHEAD bytes longer.
            let sealing = if self.keys.is_encrypted() {
                2 * SEAL_OVERHEAD
            } else {
                0
            };
            let need =
                (BLOB_HEADER_LEN + blob.data.len() + INDEX_ENTRY_LEN + FOOTER_LEN + sealing) as u64;
            let index = (INDEX_ENTRY_LEN * p.blob_count()) as u64;
            if p.blob_count() > 0 && p.size() + index + need > max {
                self.seal(sink)?;
            }
        }
        if self.pack.is_none() {
            self.pack = Some(sink.open()?);
        }
        let (no, p) = self.pack.as_mut().expect("pack open");
        let entry = p.add(id, kind, blob)?;
        let full = matches!(self.rollover, Rollover::AtTarget) && p.size() >= PACK_TARGET_SIZE;
        let base = ChunkLoc::of_blob(*no, &entry);
        let located = match chunks {
            Chunks::Own => vec![(id, base)],
            Chunks::Frame(slots) => slots
                .iter()
                .map(|&(cid, raw_len, slot)| (cid, base.in_frame(slot.inner, raw_len)))
                .collect(),
            Chunks::Listed(list) => list
                .into_iter()
                .map(|(cid, raw_len, kind, frame)| {
                    let loc = ChunkLoc {
                        raw_len,
                        kind,
                        frame,
                        ..base
                    };
                    (cid, loc)
                })
                .collect(),
        };
        sink.placed(&entry, located)?;
        if full {
            self.seal(sink)?;
        }
        Ok(())
    }

    /// Hand the open pack, if any, to the sink.
    pub fn seal<S: PackSink<Pack = P>>(&mut self, sink: &mut S) -> Result<()> {
        match self.pack.take() {
            Some((no, p)) => sink.seal(no, p),
            None => Ok(()),
        }
    }

    /// Drop the open pack unsealed (its writer removes its tmp file).
    pub fn abandon(&mut self) {
        drop(self.pack.take());
    }
}

/// Name (under `keys`) and compress a frame: (its id, where each chunk sits in it, the blob).
/// A worker thread may do this.
pub fn compress(
    frame: frame::Builder,
    level: i32,
    keys: &Keys,
) -> (ChunkId, Vec<(ChunkId, u32, FrameSlot)>, EncodedBlob) {
    let slots = frame_slots(&frame);
    let (id, raw) = frame.into_named(keys);
    (id, slots, pack::encode_blob(&raw, level))
}

/// Where each chunk of `frame` sits once it is built: (id, length, its slot in the raw frame).
pub fn frame_slots(frame: &frame::Builder) -> Vec<(ChunkId, u32, FrameSlot)> {
    let raw_len = frame.raw_len() as u32;
    frame
        .slots()
        .into_iter()
        .map(|(id, len, inner)| (id, len, FrameSlot { raw_len, inner }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that keeps sealed packs in a directory and every location it is told.
    struct Keep {
        tmp: tempfile::TempDir,
        opened: u64,
        placed: Vec<(ChunkId, ChunkLoc)>,
        sealed: Vec<(u64, crate::pack::FinishedPack)>,
    }

    impl PackSink for Keep {
        type Pack = PackWriter;
        fn open(&mut self) -> Result<(u64, PackWriter)> {
            self.opened += 1;
            Ok((
                self.opened,
                PackWriter::create(self.tmp.path(), &crate::crypto::Keys::plain())?,
            ))
        }
        fn placed(&mut self, _: &BlobEntry, chunks: Vec<(ChunkId, ChunkLoc)>) -> Result<()> {
            self.placed.extend(chunks);
            Ok(())
        }
        fn seal(&mut self, no: u64, pack: PackWriter) -> Result<()> {
            self.sealed
                .push((no, pack.finish(&self.tmp.path().join("packs"))?));
            Ok(())
        }
    }

    fn keep() -> Keep {
        Keep {
            tmp: tempfile::tempdir().unwrap(),
            opened: 0,
            placed: Vec::new(),
            sealed: Vec::new(),
        }
    }

    /// Under `Below`, no pack outgrows the limit (a first blob always goes in); frames hold
    /// their chunks in order, and every chunk's reported location reads it back.
    #[test]
    fn packs_stay_below_the_limit_and_locations_read_back() {
        let mut sink = keep();
        let mut p = FramePacker::new(3, Rollover::Below(10_000), &crate::crypto::Keys::plain());
        let chunks: Vec<Vec<u8>> = (0..40u32)
            .map(|i| {
                let mut v = vec![0u8; 600 + i as usize * 37];
                blake3::Hasher::new()
                    .update(&i.to_le_bytes())
                    .finalize_xof()
                    .fill(&mut v);
                v
            })
            .collect();
        for (i, c) in chunks.iter().enumerate() {
            if i % 7 == 6 {
                let blob = pack::encode_blob(c, 3);
                p.append(
                    &mut sink,
                    ChunkId::of(c),
                    BlobKind::Manifest,
                    blob,
                    Chunks::Own,
                )
                .unwrap();
            } else {
                p.put_data(&mut sink, ChunkId::of(c), c).unwrap();
                if i % 5 == 4 {
                    p.flush(&mut sink).unwrap();
                }
            }
        }
        p.flush(&mut sink).unwrap();
        p.seal(&mut sink).unwrap();
        assert!(sink.sealed.len() > 2, "{} packs", sink.sealed.len());
        let numbers: Vec<u64> = sink.sealed.iter().map(|s| s.0).collect();
        assert_eq!(numbers, (1..=sink.sealed.len() as u64).collect::<Vec<_>>());
        for (_, f) in &sink.sealed {
            assert!(f.size <= 10_000 || f.entries.len() == 1, "{}", f.size);
        }
        assert_eq!(sink.placed.len(), chunks.len());
        // Data chunks wait in their frame; a blob of its own is placed at once.
        let data: Vec<ChunkId> = (0..chunks.len())
            .filter(|i| i % 7 != 6)
            .map(|i| ChunkId::of(&chunks[i]))
            .collect();
        let placed_data: Vec<ChunkId> = sink
            .placed
            .iter()
            .filter(|(_, l)| l.frame.is_some())
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(placed_data, data, "frames keep their chunks' order");
        let placed: std::collections::HashMap<ChunkId, ChunkLoc> =
            sink.placed.iter().copied().collect();
        for c in &chunks {
            let id = &ChunkId::of(c);
            let loc = &placed[id];
            let path = &sink
                .sealed
                .iter()
                .find(|s| s.0 == loc.pack_no)
                .unwrap()
                .1
                .path;
            let r = crate::pack::PackReader::open(path, &crate::crypto::Keys::plain()).unwrap();
            let entry = loc.blob_entry(*id);
            let got = match loc.frame {
                None => r.read_blob(&entry).unwrap(),
                Some(slot) => {
                    let raw = loc.decode_frame(&r.read_stored(&entry).unwrap()).unwrap();
                    frame::slice(
                        &crate::crypto::Keys::plain(),
                        &raw,
                        id,
                        slot.inner,
                        loc.raw_len,
                    )
                    .unwrap()
                }
            };
            assert_eq!(&got, c);
        }
    }
}
