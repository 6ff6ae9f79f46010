//! Writing a manifest stream: each entry validated, then encoded and framed; a trailer with the
//! count and hash at the end.

use std::io::{BufWriter, Write};

use crate::error::Damaged;
use crate::error::{Error, Result};
use crate::types::Entry;

use super::ManifestStats;
use super::codec::{
    HEADER_LEN, Prev, encode_entry, frame, header_bytes, stream_err, trailer_bytes,
};
use super::validate::{Validator, lossy};

/// Streams entries out as a manifest. Entries must come in path order, root first; each is
/// validated by the same rules the reader applies before any byte of it is written.
pub struct ManifestWriter<W: Write> {
    out: BufWriter<W>,
    pos: u64,
    hasher: blake3::Hasher,
    prev: Prev,
    val: Validator,
    body: Vec<u8>,
    rec: Vec<u8>,
    /// An earlier write failed: the stream is cut somewhere, so refuse to go on.
    broken: bool,
}

impl<W: Write> ManifestWriter<W> {
    /// Start a manifest on `out` (writes the header).
    pub fn new(out: W) -> Result<Self> {
        let mut out = BufWriter::with_capacity(64 * 1024, out);
        let header = header_bytes();
        out.write_all(&header).map_err(stream_err)?;
        let mut hasher = blake3::Hasher::new();
        hasher.update(&header);
        Ok(ManifestWriter {
            out,
            pos: HEADER_LEN,
            hasher,
            prev: Prev::default(),
            val: Validator::default(),
            body: Vec::new(),
            rec: Vec::new(),
            broken: false,
        })
    }

    /// After a failed write the stream is incomplete: refuse to go on.
    fn refuse_if_broken(&self) -> Result<()> {
        if !self.broken {
            return Ok(());
        }
        Err(Error::damaged(
            Damaged::Manifest {
                dump: None,
                offset: Some(self.pos),
            },
            "manifest writer: an earlier write failed; this manifest is incomplete and must be \
             discarded",
        ))
    }

    /// Append one entry. A rule violation is a bug in the caller and is refused (nothing is
    /// written, the writer stays usable); an I/O error leaves the writer unusable.
    pub fn push(&mut self, e: &Entry) -> Result<()> {
        self.refuse_if_broken()?;
        self.val.admit(e).map_err(|why| {
            Error::damaged(
                Damaged::Entry(e.path.clone()),
                format!(
                    "refusing to write manifest entry #{} '{}' at byte {}: {why} \
                 (a bug in the producer of the entries; the manifest would be unreadable)",
                    self.val.stats.entries,
                    lossy(&e.path),
                    self.pos
                ),
            )
        })?;
        encode_entry(&mut self.prev, e, &mut self.body);
        frame(&self.body, &mut self.rec);
        self.hasher.update(&self.rec);
        self.pos += self.rec.len() as u64;
        if let Err(err) = self.out.write_all(&self.rec) {
            self.broken = true;
            return Err(stream_err(err));
        }
        Ok(())
    }

    pub fn stats(&self) -> &ManifestStats {
        &self.val.stats
    }

    /// Write the trailer, flush, and hand back the output.
    pub fn finish(mut self) -> Result<(W, ManifestStats)> {
        self.refuse_if_broken()?;
        if self.val.stats.entries == 0 {
            return Err(Error::damaged(
                Damaged::Manifest {
                    dump: None,
                    offset: None,
                },
                "refusing to finish a manifest with no entries: it needs at least the root \
                 directory",
            ));
        }
        let trailer = trailer_bytes(self.val.stats.entries, &mut self.hasher);
        self.out.write_all(&trailer).map_err(stream_err)?;
        let stats = self.val.stats;
        let out = self
            .out
            .into_inner()
            .map_err(|e| stream_err(e.into_error()))?;
        Ok((out, stats))
    }
}
