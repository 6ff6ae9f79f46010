//! Reading a manifest stream back: every record decoded and run through the writer's rules, the
//! trailer's count and hash checked, nothing allowed after it.

use std::io::{BufReader, Read};

use crate::error::Damaged;
use crate::error::{Error, Result};
use crate::types::{ChunkId, Entry, EntryKind, Extent};

use super::codec::{
    EXT_CHUNK, EXT_HOLE, F_EXTENTS, F_GID, F_KNOWN_V1, F_MODE, F_RDEV, F_SIZE, F_TARGET, F_UID,
    F_XATTRS, FResult, Fault, HEADER_LEN, Prev, Src, TAG_TRAILER, stream_err, unzigzag,
};
use super::validate::{Validator, lossy};
use super::{
    MANIFEST_MAGIC, MANIFEST_VERSION, MAX_PATH_LEN, MAX_XATTR_NAME_LEN, MAX_XATTR_VALUE_LEN,
    ManifestStats,
};

/// Reads a manifest stream back as entries, checking every rule the writer applies, the
/// trailer's count and hash, and that nothing follows the trailer.
pub struct ManifestReader<R: Read> {
    src: Src<R>,
    prev: Prev,
    val: Validator,
    done: bool,
}

impl<R: Read> ManifestReader<R> {
    /// Open a manifest stream: reads and checks the header.
    pub fn new(input: R) -> Result<Self> {
        let mut src = Src {
            inner: BufReader::with_capacity(64 * 1024, input),
            pos: 0,
            limit: u64::MAX,
            hasher: blake3::Hasher::new(),
        };
        let mut h = [0u8; HEADER_LEN as usize];
        let got = src.fill(&mut h);
        // Check the magic on whatever arrived, so a short foreign file is called foreign.
        let have = (src.pos as usize).min(8);
        if h[..have] != MANIFEST_MAGIC[..have] {
            return Err(Error::damaged(
                Damaged::Manifest {
                    dump: None,
                    offset: Some(0),
                },
                "not a reel manifest: bad magic at byte 0 (expected \"REELMAN\\0\")",
            ));
        }
        match got {
            Ok(()) => {}
            Err(Fault::Io(e)) => return Err(stream_err(e)),
            Err(_) => {
                return Err(Error::damaged(
                    Damaged::Manifest {
                        dump: None,
                        offset: Some(src.pos),
                    },
                    format!(
                        "manifest truncated at byte {}: the stream ends inside the {HEADER_LEN}-byte \
                     header; this copy of the manifest is incomplete",
                        src.pos
                    ),
                ));
            }
        }
        let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        if version != MANIFEST_VERSION {
            return Err(Error::damaged(
                Damaged::Manifest {
                    dump: None,
                    offset: Some(8),
                },
                format!(
                    "manifest format version {version} is not supported: this reel reads version \
                 {MANIFEST_VERSION}; use the reel release that wrote it, or a newer one"
                ),
            ));
        }
        Ok(ManifestReader {
            src,
            prev: Prev::default(),
            val: Validator::default(),
            done: false,
        })
    }

    /// Counts over the entries yielded so far (final once the iterator returned `None`).
    pub fn stats(&self) -> &ManifestStats {
        &self.val.stats
    }

    /// Word a fault found at `self.src.pos` inside the record starting at `rec_off`.
    fn fail(&self, rec_off: u64, who: &str, f: Fault) -> Error {
        let pos = self.src.pos;
        let why = match f {
            Fault::Truncated => {
                return Error::damaged(
                    Damaged::Manifest {
                        dump: None,
                        offset: Some(pos),
                    },
                    format!(
                        "manifest truncated at byte {pos}: the stream ends inside {who} (record at \
                     byte {rec_off}); this copy of the manifest is incomplete, read it from \
                     another copy (spool or tape)"
                    ),
                );
            }
            Fault::Io(e) => return stream_err(e),
            Fault::Overrun => "a field runs past the end of its record".to_string(),
            Fault::Bad(why) => why,
        };
        damaged(pos, rec_off, who, &why)
    }

    /// Names the record being read before its path is known.
    fn after(&self, n: u64) -> String {
        if n == 0 {
            "the first record".to_string()
        } else {
            format!("record #{n} (after entry '{}')", lossy(&self.prev.path))
        }
    }

    /// Read one record: `Some(entry)`, or `None` once the trailer has verified.
    fn read_record(&mut self) -> Result<Option<Entry>> {
        let rec_off = self.src.pos;
        let n = self.val.stats.entries;
        self.src.limit = u64::MAX;
        let head = (|| -> FResult<u8> {
            let len = self.src.varint()?;
            self.src.limit = self.src.pos.saturating_add(len);
            self.src.u8()
        })();
        let tag = head.map_err(|f| self.fail(rec_off, &self.after(n), f))?;
        if tag == TAG_TRAILER {
            self.read_trailer(rec_off)?;
            return Ok(None);
        }
        let Some(kind) = EntryKind::from_u8(tag) else {
            return Err(self.fail(
                rec_off,
                &self.after(n),
                Fault::Bad(format!(
                    "unknown record type {tag} (not an entry kind 1..=8 nor the trailer 0)"
                )),
            ));
        };
        let mut e = Entry {
            kind,
            ..Entry::default()
        };
        let flags = self
            .decode_path(&mut e)
            .map_err(|f| self.fail(rec_off, &self.after(n), f))?;
        // Named only when something is wrong: formatting it for every entry cost a tenth of
        // decoding a manifest.
        let who = |e: &Entry| format!("entry #{n} '{}'", lossy(&e.path));
        if let Err(f) = self.decode_rest(flags, &mut e) {
            return Err(self.fail(rec_off, &who(&e), f));
        }
        if self.src.pos != self.src.limit {
            let unused = self.src.limit - self.src.pos;
            return Err(damaged(
                self.src.pos,
                rec_off,
                &who(&e),
                &format!("record has {unused} unused bytes at its end"),
            ));
        }
        if let Err(why) = self.val.admit(&e) {
            return Err(damaged(self.src.pos, rec_off, &who(&e), &why));
        }
        self.prev.update(&e);
        Ok(Some(e))
    }

    /// Flags and path: enough to name the entry in later errors.
    fn decode_path(&mut self, e: &mut Entry) -> FResult<u64> {
        let flags = self.src.varint()?;
        if flags & !F_KNOWN_V1 != 0 {
            return Err(Fault::Bad(format!(
                "unknown field flags {:#x} (written by a newer reel?)",
                flags & !F_KNOWN_V1
            )));
        }
        let shared = self.src.varint()?;
        if shared > self.prev.path.len() as u64 {
            return Err(Fault::Bad(format!(
                "path shares {shared} bytes with a previous path of {} bytes",
                self.prev.path.len()
            )));
        }
        let suffix = self.src.varint()?;
        if shared.saturating_add(suffix) > MAX_PATH_LEN as u64 {
            return Err(Fault::Bad(format!(
                "path of {} bytes is over the limit of {MAX_PATH_LEN}",
                shared.saturating_add(suffix)
            )));
        }
        e.path.extend_from_slice(&self.prev.path[..shared as usize]);
        self.src.bytes_into(suffix, &mut e.path)?;
        Ok(flags)
    }

    fn decode_rest(&mut self, flags: u64, e: &mut Entry) -> FResult<()> {
        let s = &mut self.src;
        e.mode = if flags & F_MODE != 0 {
            s.varint_u32("mode")?
        } else {
            self.prev.mode
        };
        e.uid = if flags & F_UID != 0 {
            s.varint_u32("uid")?
        } else {
            self.prev.uid
        };
        e.gid = if flags & F_GID != 0 {
            s.varint_u32("gid")?
        } else {
            self.prev.gid
        };
        e.mtime_ns = self.prev.mtime_ns.wrapping_add(unzigzag(s.varint()?));
        e.ctime_ns = e.mtime_ns.wrapping_add(unzigzag(s.varint()?));
        e.ino = self.prev.ino.wrapping_add(unzigzag(s.varint()?) as u64);
        if flags & F_SIZE != 0 {
            e.size = s.varint()?;
        }
        if flags & F_RDEV != 0 {
            e.rdev = s.varint()?;
        }
        if flags & F_TARGET != 0 {
            e.target = s.bytes(MAX_PATH_LEN, "link target")?;
        }
        if flags & F_XATTRS != 0 {
            let count = s.varint()?;
            for _ in 0..count {
                let name = s.bytes(MAX_XATTR_NAME_LEN, "xattr name")?;
                let value = s.bytes(MAX_XATTR_VALUE_LEN, "xattr value")?;
                e.xattrs.push((name, value));
            }
        }
        if flags & F_EXTENTS != 0 {
            let count = s.varint()?;
            // Capacity from the bytes the record can hold (>= 2 per extent), not the claim.
            let room = (s.limit - s.pos) / 2;
            e.extents.reserve(count.min(room).min(1 << 16) as usize);
            for i in 0..count {
                match s.u8()? {
                    EXT_HOLE => e.extents.push(Extent::Hole(s.varint()?)),
                    EXT_CHUNK => {
                        let len = s.varint_u32("chunk length")?;
                        let mut id = [0u8; 32];
                        s.fill(&mut id)?;
                        e.extents.push(Extent::Chunk {
                            id: ChunkId(id),
                            len,
                        });
                    }
                    t => {
                        return Err(Fault::Bad(format!(
                            "extent {i} has unknown type {t} (0 = hole, 1 = chunk)"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    fn read_trailer(&mut self, rec_off: u64) -> Result<()> {
        let who = "the trailer";
        let count = self.src.varint().map_err(|f| self.fail(rec_off, who, f))?;
        // Covers every byte of the stream before the hash field.
        let expected = self.src.hasher.finalize();
        let mut hash = [0u8; 32];
        self.src
            .fill(&mut hash)
            .map_err(|f| self.fail(rec_off, who, f))?;
        if self.src.pos != self.src.limit {
            return Err(damaged(
                self.src.pos,
                rec_off,
                who,
                "trailer record has unused bytes",
            ));
        }
        if hash != *expected.as_bytes() {
            return Err(damaged(
                self.src.pos,
                rec_off,
                who,
                "blake3 checksum mismatch: the stream's bytes are not the bytes that were \
                 written",
            ));
        }
        let entries = self.val.stats.entries;
        if count != entries {
            return Err(damaged(
                self.src.pos,
                rec_off,
                who,
                &format!("trailer counts {count} entries but the stream holds {entries}"),
            ));
        }
        if entries == 0 {
            return Err(damaged(self.src.pos, rec_off, who, "no root entry"));
        }
        self.src.limit = u64::MAX;
        let end = self.src.pos;
        match self.src.u8() {
            Err(Fault::Truncated) => Ok(()),
            Err(Fault::Io(e)) => Err(stream_err(e)),
            Err(f) => Err(self.fail(end, "the end of the stream", f)),
            Ok(_) => Err(Error::damaged(
                Damaged::Manifest {
                    dump: None,
                    offset: Some(end),
                },
                format!(
                    "manifest damaged: unexpected bytes after the trailer at byte {end}; the \
                 stream was concatenated or overwritten, read it from another copy"
                ),
            )),
        }
    }
}

fn damaged(pos: u64, rec_off: u64, who: &str, why: &str) -> Error {
    Error::damaged(
        Damaged::Manifest {
            dump: None,
            offset: Some(pos),
        },
        format!(
            "manifest damaged at byte {pos} ({who}, record at byte {rec_off}): {why}; do not \
         trust this copy, read the manifest from another copy (spool or tape) or run \
         `reel check`"
        ),
    )
}

impl<R: Read> Iterator for ManifestReader<R> {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        if self.done {
            return None;
        }
        match self.read_record() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(err) => {
                self.done = true;
                Some(Err(err))
            }
        }
    }
}
