//! Frames: several data chunks compressed as one blob.
//!
//! Chunks are small (8 KiB on average) so that scattered changes cost little, but zstd on
//! 8 KiB of text finds little to work with. A frame concatenates the new chunks of a batch, up
//! to `FRAME_RAW_MAX` bytes, and is compressed as one pack blob of kind `Frame`; the chunk index
//! points each chunk at its frame and its place inside it. Dedup stays per chunk; only the
//! compression unit grows. A frame starts with a table of its chunks, so packs stay
//! self-describing (a catalog rebuild or a salvage can list the chunks of every frame).
//!
//! Raw frame layout (all integers little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `RFRM` |
//! | 4 | 4 | chunk count n (u32) |
//! | 8 | 36 × n | per chunk: id (32 bytes: blake3 of its bytes, keyed on an encrypted spool), raw length (u32) |
//! | 8 + 36n | Σ lengths | the chunks' bytes, in table order |

use std::ops::Range;

use crate::crypto::Keys;
use crate::error::Damaged;
use crate::{ChunkId, Error, Result};

pub const FRAME_MAGIC: [u8; 4] = *b"RFRM";
/// Raw bytes per frame at most (table included, so a frame may end short of it).
pub const FRAME_RAW_MAX: usize = 4 << 20;
const HEADER_LEN: usize = 8;
const TABLE_ENTRY_LEN: usize = 36;

/// Build a frame from chunks: (id, bytes). Returns the raw frame and, per chunk, the offset of
/// its bytes inside the frame.
pub fn build(chunks: &[(ChunkId, &[u8])]) -> (Vec<u8>, Vec<u32>) {
    let mut b = Builder::default();
    for (id, data) in chunks {
        b.push(*id, data);
    }
    let offsets = b.slots().into_iter().map(|s| s.2).collect();
    (b.into_raw().to_vec(), offsets)
}

/// A frame being filled chunk by chunk. The bytes go in after `ROOM` spare bytes, into which
/// `into_raw` (which a worker thread can do) writes the header and table: the frame's bytes
/// are copied once, not twice.
#[derive(Default)]
pub struct Builder {
    table: Vec<(ChunkId, u32)>,
    /// `ROOM` spare bytes, then the chunks' bytes (empty until the first push).
    buf: Vec<u8>,
}

/// Room kept in front of a frame's bytes for its header and table: 910 chunks, enough for
/// frames whose chunks average 4.6 KiB or more. A frame of smaller chunks is laid out anew.
const ROOM: usize = 32 << 10;

/// A raw frame: header, table, bytes. It may sit at the end of a larger buffer.
pub struct RawFrame {
    buf: Vec<u8>,
    start: usize,
}

impl std::ops::Deref for RawFrame {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

impl Builder {
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    fn bytes(&self) -> &[u8] {
        self.buf.get(ROOM..).unwrap_or_default()
    }

    /// Raw size of the frame so far.
    pub fn raw_len(&self) -> usize {
        head_len(self.table.len()) + self.bytes().len()
    }

    /// Would a chunk of `len` bytes still fit under `FRAME_RAW_MAX`? (An empty frame takes any
    /// chunk.)
    pub fn fits(&self, len: usize) -> bool {
        self.is_empty() || self.raw_len() + cost(len) <= FRAME_RAW_MAX
    }

    pub fn push(&mut self, id: ChunkId, bytes: &[u8]) {
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(ROOM + FRAME_RAW_MAX);
            self.buf.resize(ROOM, 0);
        }
        self.table.push((id, bytes.len() as u32));
        self.buf.extend_from_slice(bytes);
    }

    /// Per chunk: (id, length, offset of its bytes in the raw frame).
    pub fn slots(&self) -> Vec<(ChunkId, u32, u32)> {
        let mut at = head_len(self.table.len()) as u32;
        self.table
            .iter()
            .map(|&(id, len)| {
                let slot = (id, len, at);
                at += len;
                slot
            })
            .collect()
    }

    /// The raw frame: header, table, bytes.
    pub fn into_raw(self) -> RawFrame {
        let head = head_len(self.table.len());
        let mut head_bytes = Vec::with_capacity(head);
        head_bytes.extend_from_slice(&FRAME_MAGIC);
        head_bytes.extend_from_slice(&(self.table.len() as u32).to_le_bytes());
        for (id, len) in &self.table {
            head_bytes.extend_from_slice(&id.0);
            head_bytes.extend_from_slice(&len.to_le_bytes());
        }
        if self.buf.len() >= ROOM && head <= ROOM {
            let mut buf = self.buf;
            let start = ROOM - head;
            buf[start..ROOM].copy_from_slice(&head_bytes);
            return RawFrame { buf, start };
        }
        head_bytes.extend_from_slice(self.bytes());
        RawFrame {
            buf: head_bytes,
            start: 0,
        }
    }

    /// The raw frame and its name (`id`) under the spool's `keys`.
    pub fn into_named(self, keys: &Keys) -> (ChunkId, RawFrame) {
        let raw = self.into_raw();
        (
            id(keys, &raw).expect("a built frame has its header and table"),
            raw,
        )
    }
}

/// Length of a frame's header and table for `n` chunks.
fn head_len(n: usize) -> usize {
    HEADER_LEN + TABLE_ENTRY_LEN * n
}

/// Room a chunk of `len` bytes takes in a frame (its bytes and its table entry).
fn cost(len: usize) -> usize {
    len + TABLE_ENTRY_LEN
}

/// A frame's name: the blake3 of its header and chunk table. The table holds every chunk's id,
/// the blake3 of its bytes, so the name covers the bytes too, and costs a hash of a few KiB
/// instead of all of them (the chunks' bytes are verified when sliced, or by
/// `check --read-data`). Keyed on an encrypted spool, as every id (`Keys::chunk_id`). None
/// if `raw` does not start with a whole header and table.
pub fn id(keys: &Keys, raw: &[u8]) -> Option<ChunkId> {
    let (_, table_end) = table_bounds(raw).ok()?;
    Some(keys.chunk_id(&raw[..table_end]))
}

/// The chunk count and the end of the table, checked against the magic and `raw`'s length.
fn table_bounds(raw: &[u8]) -> std::result::Result<(usize, usize), &'static str> {
    if raw.len() < HEADER_LEN || raw[0..4] != FRAME_MAGIC {
        return Err("no frame magic");
    }
    let n = u32::from_le_bytes(raw[4..8].try_into().expect("4 bytes")) as usize;
    let table_end = n
        .checked_mul(TABLE_ENTRY_LEN)
        .and_then(|t| t.checked_add(HEADER_LEN))
        .filter(|&t| t <= raw.len())
        .ok_or("chunk table runs past the end")?;
    Ok((n, table_end))
}

/// The chunks of a raw frame: (id, byte range in the frame). Validates the table and bounds;
/// the chunks' hashes are the caller's to check (`slice`).
pub fn parse(raw: &[u8]) -> Result<Vec<(ChunkId, Range<usize>)>> {
    let bad = |what: &str| Error::damaged(Damaged::Frame, format!("frame is damaged: {what}"));
    let (n, table_end) = table_bounds(raw).map_err(bad)?;
    let mut pos = table_end;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let e = &raw[HEADER_LEN + i * TABLE_ENTRY_LEN..HEADER_LEN + (i + 1) * TABLE_ENTRY_LEN];
        let id = ChunkId(e[0..32].try_into().expect("32 bytes"));
        let len = u32::from_le_bytes(e[32..36].try_into().expect("4 bytes")) as usize;
        let end = pos
            .checked_add(len)
            .filter(|&e| e <= raw.len())
            .ok_or_else(|| bad("chunk runs past the end"))?;
        out.push((id, pos..end));
        pos = end;
    }
    if pos != raw.len() {
        return Err(bad("bytes after the last chunk"));
    }
    Ok(out)
}

/// The bytes of a chunk `parse` found at `range`, verified against its `id` from the table
/// (the frame's name covers the table, not the bytes).
pub fn verified<'a>(
    keys: &Keys,
    raw: &'a [u8],
    id: &ChunkId,
    range: Range<usize>,
) -> Result<&'a [u8]> {
    let data = &raw[range];
    if keys.chunk_id(data) != *id {
        return Err(Error::damaged(
            Damaged::Frame,
            format!("chunk {} in a frame does not match its hash", id.short()),
        ));
    }
    Ok(data)
}

/// The bytes of chunk `id` at `inner..inner+len` of a raw frame, verified against the id.
pub fn slice(keys: &Keys, raw: &[u8], id: &ChunkId, inner: u32, len: u32) -> Result<Vec<u8>> {
    slice_ref(keys, raw, id, inner, len).map(<[u8]>::to_vec)
}

/// [`slice`] without the copy: the chunk's bytes inside the frame.
pub fn slice_ref<'a>(
    keys: &Keys,
    raw: &'a [u8],
    id: &ChunkId,
    inner: u32,
    len: u32,
) -> Result<&'a [u8]> {
    let r = inner as usize..inner as usize + len as usize;
    let data = raw.get(r).ok_or_else(|| {
        Error::damaged(
            Damaged::Frame,
            format!(
                "chunk {}: lies outside its frame; the pack holding it is damaged",
                id.short()
            ),
        )
    })?;
    if keys.chunk_id(data) != *id {
        return Err(Error::damaged(
            Damaged::Frame,
            format!(
                "chunk {}: content does not match its hash; the pack holding it is damaged",
                id.short()
            ),
        ));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_parse_slice_round_trip() {
        let a = vec![1u8; 100];
        let b = b"hello frame".to_vec();
        let chunks = [
            (ChunkId::of(&a), a.as_slice()),
            (ChunkId::of(&b), b.as_slice()),
        ];
        let (raw, offs) = build(&chunks);
        let parsed = parse(&raw).unwrap();
        assert_eq!(parsed.len(), 2);
        for ((id, data), ((pid, r), off)) in chunks.iter().zip(parsed.iter().zip(&offs)) {
            assert_eq!(id, pid);
            assert_eq!(r.start, *off as usize);
            assert_eq!(
                slice(
                    &crate::crypto::Keys::plain(),
                    &raw,
                    id,
                    *off,
                    data.len() as u32
                )
                .unwrap(),
                *data
            );
        }
        assert!(
            slice(
                &crate::crypto::Keys::plain(),
                &raw,
                &chunks[0].0,
                offs[1],
                11
            )
            .is_err(),
            "wrong bytes must not verify"
        );
        assert!(parse(&raw[..raw.len() - 1]).is_err());
        let mut bad = raw.clone();
        bad[4] = 200;
        assert!(parse(&bad).is_err());
    }

    /// The table goes into the room in front of the bytes when it fits, and the frame is laid
    /// out anew when it does not (many tiny chunks); both give the documented layout.
    #[test]
    fn raw_frames_have_the_documented_layout_whatever_their_table_size() {
        for (n, len) in [(3usize, 9000usize), (2000, 3), (0, 0)] {
            let chunks: Vec<Vec<u8>> = (0..n)
                .map(|i| (0..len).map(|j| (i * 31 + j) as u8).collect())
                .collect();
            let mut b = Builder::default();
            for c in &chunks {
                b.push(ChunkId::of(c), c);
            }
            let raw_len = b.raw_len();
            let raw = b.into_raw();
            assert_eq!(raw.len(), raw_len);
            let mut expected = FRAME_MAGIC.to_vec();
            expected.extend_from_slice(&(n as u32).to_le_bytes());
            for c in &chunks {
                expected.extend_from_slice(&ChunkId::of(c).0);
                expected.extend_from_slice(&(len as u32).to_le_bytes());
            }
            for c in &chunks {
                expected.extend_from_slice(c);
            }
            assert!(raw[..] == expected[..], "{n} chunks of {len} bytes");
        }
    }

    #[test]
    fn builder_fills_to_the_limit_and_matches_build() {
        let quarter = FRAME_RAW_MAX / 4;
        let chunks: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; quarter]).collect();
        let mut b = Builder::default();
        let mut taken = 0;
        for c in &chunks {
            if !b.fits(c.len()) {
                break;
            }
            b.push(ChunkId::of(c), c);
            taken += 1;
        }
        assert_eq!(
            taken, 3,
            "three quarters of a frame and their table fit in it, four do not"
        );
        assert!(b.raw_len() <= FRAME_RAW_MAX);
        let slots = b.slots();
        let raw = b.into_raw().to_vec();
        let refs: Vec<(ChunkId, &[u8])> = chunks[..3]
            .iter()
            .map(|c| (ChunkId::of(c), c.as_slice()))
            .collect();
        let (built, offsets) = build(&refs);
        assert_eq!(raw, built);
        for (((id, len, inner), off), (pid, range)) in
            slots.iter().zip(&offsets).zip(parse(&raw).unwrap())
        {
            assert_eq!((*id, *inner as usize), (pid, range.start));
            assert_eq!((*len as usize, *off), (range.len(), *inner));
        }
        let empty = Builder::default();
        assert!(empty.fits(64 << 20), "an empty frame takes any chunk");
    }
}
