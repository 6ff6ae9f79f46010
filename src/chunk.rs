//! Content-defined chunking (FastCDC 2020) of file content into chunks.
//!
//! Why it is built this way:
//! - Boundaries depend only on the bytes, never on how the bytes were read: [`cut`] refuses to
//!   return a final piece that might not end at a real boundary unless told the input is
//!   complete (`eof`). The caller keeps the unconsumed tail and puts it in front of the next
//!   buffer. That is what lets [`StreamChunker`] chunk a 10 GB file in bounded memory and still
//!   produce exactly the chunks that cutting the whole file at once produces, so dedup works
//!   across dumps whatever buffer sizes were in use.
//! - We call `fastcdc::v2020::cut` (the single-cut primitive) instead of its iterators, so we
//!   decide when a cut is final. The primitive examines only `data[..max]` of its window; a cut
//!   it returns is final when it lies strictly inside the available bytes (a hash match) or
//!   when a full `max` bytes were available (the forced cut at `max`). A cut equal to the
//!   available length with fewer than `max` bytes available only means "ran out of data".
//! - No I/O except the streaming helper: the dump pipeline decides where bytes come from.

use std::io::Read;
use std::ops::Range;

use fastcdc::v2020::{self, Normalization};

use crate::error::{Error, Result};

/// FastCDC size parameters, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkerParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl ChunkerParams {
    /// 6 KiB / 12 KiB / 48 KiB: small chunks keep scattered 8 KiB page rewrites cheap (under
    /// 5% of the file on the database test, as asked; see docs/FORMAT.md, "Chunker
    /// parameters"), and the 12 KiB average makes a third fewer chunks than 8 KiB did: fewer
    /// index rows took the benchmark tree's catalog from 8.6 to 4.5 MB. The minimum is half
    /// the average (restic's ratio too): no boundary is looked for in a chunk's first 6 KiB,
    /// so the gear hash scans less of every chunk. Chosen by measurement (docs/PERFORMANCE.md).
    pub const DEFAULT: ChunkerParams = ChunkerParams {
        min: 6 << 10,
        avg: 12 << 10,
        max: 48 << 10,
    };

    /// Check the parameters against what FastCDC 2020 supports: `min <= avg <= max`, each in
    /// fastcdc's range, each even (the scan tests byte pairs; odd sizes shift boundaries).
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| {
            Err(Error::usage(format!(
                "invalid chunker parameters min={} avg={} max={}: {why}; fix the chunk sizes in \
                 the spool settings",
                self.min, self.avg, self.max
            )))
        };
        let (min, avg, max) = (self.min as usize, self.avg as usize, self.max as usize);
        if !(v2020::MINIMUM_MIN..=v2020::MINIMUM_MAX).contains(&min) {
            return bad(format!(
                "min must be in {}..={}",
                v2020::MINIMUM_MIN,
                v2020::MINIMUM_MAX
            ));
        }
        if !(v2020::AVERAGE_MIN..=v2020::AVERAGE_MAX).contains(&avg) {
            return bad(format!(
                "avg must be in {}..={}",
                v2020::AVERAGE_MIN,
                v2020::AVERAGE_MAX
            ));
        }
        if !(v2020::MAXIMUM_MIN..=v2020::MAXIMUM_MAX).contains(&max) {
            return bad(format!(
                "max must be in {}..={}",
                v2020::MAXIMUM_MIN,
                v2020::MAXIMUM_MAX
            ));
        }
        if !(min <= avg && avg <= max) {
            return bad("need min <= avg <= max".to_string());
        }
        if min % 2 != 0 || avg % 2 != 0 || max % 2 != 0 {
            return bad("sizes must be even".to_string());
        }
        Ok(())
    }
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams::DEFAULT
    }
}

/// Cut `data` into chunk lengths.
///
/// When `eof` is false the final piece is NOT returned (it may not end at a real boundary):
/// the caller keeps `data[consumed..]` and prepends it to the next buffer. Cutting
/// "carry + next buffer" gives exactly the boundaries that cutting the whole input at once
/// gives. With `eof` true the lengths cover all of `data` and `consumed == data.len()`.
/// Empty input gives no chunks.
///
/// Panics if `params` does not pass [`ChunkerParams::validate`] (settings are validated when
/// they are loaded, so that is a programming error).
pub fn cut(data: &[u8], params: &ChunkerParams, eof: bool) -> (Vec<u32>, usize) {
    assert!(
        params.validate().is_ok(),
        "chunk::cut called with invalid {params:?}"
    );
    let (min, avg, max) = (
        params.min as usize,
        params.avg as usize,
        params.max as usize,
    );
    let (mask_s, mask_l) = v2020::select_masks(avg, Normalization::Level1);
    let mut lens = Vec::with_capacity(data.len() / avg + 1);
    let mut pos = 0usize;
    while pos < data.len() {
        let avail = data.len() - pos;
        let (_, n) = v2020::cut(
            &data[pos..],
            min,
            avg,
            max,
            mask_s,
            mask_l,
            mask_s << 1,
            mask_l << 1,
        );
        // Invariant (fastcdc): 1 <= n <= min(avail, max). n == avail with avail < max means
        // "no boundary found in what we have", which more data could change.
        debug_assert!(n >= 1 && n <= avail.min(max));
        if !eof && avail < max && n >= avail {
            break;
        }
        // n <= max <= MAXIMUM_MAX (16 MiB), so it fits a u32.
        lens.push(n as u32);
        pos += n;
    }
    (lens, pos)
}

/// `cut`, with each chunk's id under the spool's `keys` (keyed blake3 on an encrypted spool):
/// (id, byte range in `data`) per chunk, and the bytes consumed.
pub fn cut_hashed(
    keys: &crate::crypto::Keys,
    data: &[u8],
    params: &ChunkerParams,
    eof: bool,
) -> (Vec<(crate::ChunkId, Range<usize>)>, usize) {
    let (lens, consumed) = cut(data, params, eof);
    let chunks = ranges(&lens)
        .map(|r| (keys.chunk_id(&data[r.clone()]), r))
        .collect();
    (chunks, consumed)
}

/// The byte ranges of consecutive chunks of lengths `lens`, from offset 0.
fn ranges(lens: &[u32]) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut start = 0usize;
    lens.iter().map(move |&len| {
        let r = start..start + len as usize;
        start = r.end;
        r
    })
}

/// One piece of a stream, with the chunks inside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub data: Vec<u8>,
    /// Ranges into `data`, in order, covering it entirely.
    pub chunks: Vec<Range<usize>>,
}

/// Chunks a stream in segments of about `segment_size` bytes, carrying the unfinished tail of
/// each segment into the next. Memory use is bounded by `segment_size + max`.
pub struct StreamChunker<R: Read> {
    reader: R,
    params: ChunkerParams,
    segment_size: usize,
    /// Bytes read but not yet returned: the carried tail, then new input.
    buf: Vec<u8>,
    eof: bool,
    bytes_read: u64,
}

impl<R: Read> StreamChunker<R> {
    /// `segment_size` is raised to `params.max` if smaller (a segment must be able to hold a
    /// whole chunk). Panics on invalid params, like [`cut`].
    pub fn new(reader: R, params: ChunkerParams, segment_size: usize) -> Self {
        assert!(
            params.validate().is_ok(),
            "StreamChunker with invalid {params:?}"
        );
        let segment_size = segment_size.max(params.max as usize);
        StreamChunker {
            reader,
            params,
            segment_size,
            buf: Vec::new(),
            eof: false,
            bytes_read: 0,
        }
    }

    /// The next segment, or `None` once the stream is exhausted. Never returns an empty segment.
    pub fn next_segment(&mut self) -> std::io::Result<Option<Segment>> {
        self.fill()?;
        if self.buf.is_empty() {
            return Ok(None);
        }
        let (lens, consumed) = cut(&self.buf, &self.params, self.eof);
        // buf.len() >= segment_size >= max unless at eof, so cut made progress.
        debug_assert!(consumed > 0);
        let tail = self.buf[consumed..].to_vec();
        let mut data = std::mem::replace(&mut self.buf, tail);
        data.truncate(consumed);
        let chunks = ranges(&lens).collect();
        Ok(Some(Segment { data, chunks }))
    }

    /// Total bytes read from the underlying reader so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Read until `buf` holds at least `segment_size` bytes or the reader is exhausted. Reads
    /// into the spare capacity (`read_to_end`), so the segment is not zeroed first.
    fn fill(&mut self) -> std::io::Result<()> {
        if self.buf.capacity() < self.segment_size {
            self.buf.reserve(self.segment_size - self.buf.len());
        }
        while !self.eof && self.buf.len() < self.segment_size {
            let want = (self.segment_size - self.buf.len()) as u64;
            let n = (&mut self.reader).take(want).read_to_end(&mut self.buf)?;
            self.bytes_read += n as u64;
            if (n as u64) < want {
                self.eof = true;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Deterministic pseudo-random bytes (blake3 in XOF mode); the pack tests use it too.
    pub(crate) fn random(seed: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new()
            .update(&seed.to_le_bytes())
            .finalize_xof()
            .fill(&mut out);
        out
    }

    fn whole(data: &[u8], p: &ChunkerParams) -> Vec<u32> {
        let (lens, consumed) = cut(data, p, true);
        assert_eq!(consumed, data.len());
        lens
    }

    fn ids(data: &[u8], lens: &[u32]) -> Vec<crate::ChunkId> {
        ranges(lens).map(|r| crate::ChunkId::of(&data[r])).collect()
    }

    #[test]
    fn default_params_are_valid_and_bad_ones_are_refused() {
        ChunkerParams::DEFAULT.validate().unwrap();
        let bad = [
            ChunkerParams {
                min: 0,
                ..ChunkerParams::DEFAULT
            },
            ChunkerParams {
                min: 4097,
                ..ChunkerParams::DEFAULT
            },
            ChunkerParams {
                avg: 1024, // below min
                ..ChunkerParams::DEFAULT
            },
            ChunkerParams {
                max: 4096, // below avg
                ..ChunkerParams::DEFAULT
            },
            ChunkerParams {
                max: 32 << 20,
                ..ChunkerParams::DEFAULT
            },
        ];
        for p in bad {
            let e = p.validate().unwrap_err().to_string();
            assert!(e.contains("invalid chunker parameters"), "{e}");
        }
    }

    #[test]
    fn empty_and_tiny_inputs() {
        let p = ChunkerParams::DEFAULT;
        assert_eq!(cut(&[], &p, true), (vec![], 0));
        assert_eq!(cut(&[], &p, false), (vec![], 0));
        assert_eq!(cut(b"abc", &p, true), (vec![3], 3));
        assert_eq!(cut(b"abc", &p, false), (vec![], 0));
        let mut sc = StreamChunker::new(&[][..], p, 1 << 20);
        assert_eq!(sc.next_segment().unwrap(), None);
    }

    #[test]
    fn sizes_within_bounds_except_last() {
        let p = ChunkerParams::DEFAULT;
        let data = random(1, 3 << 20);
        let lens = whole(&data, &p);
        assert!(lens.len() > 50);
        for &l in &lens[..lens.len() - 1] {
            assert!(l >= p.min && l <= p.max, "chunk of {l} bytes");
        }
        assert!(*lens.last().unwrap() <= p.max);
        // All zeros: no hash match, every chunk is forced at max.
        let zeros = vec![0u8; 5 * p.max as usize + 123];
        let lens = whole(&zeros, &p);
        assert_eq!(lens, vec![p.max, p.max, p.max, p.max, p.max, 123]);
    }

    #[test]
    fn carry_gives_whole_file_boundaries_at_any_split() {
        let p = ChunkerParams::DEFAULT;
        let mut data = random(2, 1 << 20);
        // Some low-entropy stretches so forced cuts at max happen too.
        data[300_000..500_000].fill(7);
        let expect = whole(&data, &p);
        let splits = [
            1usize, 63, 4096, 10_000, 65_535, 65_536, 65_537, 200_001, 777_777,
        ];
        for &s in &splits {
            // Cut the first part without eof, carry the tail into the rest.
            let (mut lens, consumed) = cut(&data[..s], &p, false);
            let rest = whole(&data[consumed..], &p);
            lens.extend(rest);
            assert_eq!(lens, expect, "split at {s}");
        }
        // Many small buffers in a row, like a reader giving odd-sized reads.
        for step in [4095usize, 30_001, 70_000] {
            let mut lens = Vec::new();
            let mut carry: Vec<u8> = Vec::new();
            let mut pos = 0;
            while pos < data.len() {
                let end = (pos + step).min(data.len());
                carry.extend_from_slice(&data[pos..end]);
                pos = end;
                let (l, c) = cut(&carry, &p, pos == data.len());
                lens.extend(l);
                carry.drain(..c);
            }
            assert!(carry.is_empty());
            assert_eq!(lens, expect, "step {step}");
        }
    }

    /// A reader that returns at most `n` bytes per read, to exercise short reads.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.1).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn stream_boundaries_do_not_depend_on_segment_size() {
        let p = ChunkerParams::DEFAULT;
        let data = random(3, 2 << 20);
        let expect = whole(&data, &p);
        for (seg, trickle) in [
            (0usize, 1000usize),
            (65_536, 1 << 20),
            (100_000, 7777),
            (1 << 20, 1 << 20),
            (8 << 20, 1 << 20),
        ] {
            let mut sc = StreamChunker::new(Trickle(&data, trickle), p, seg);
            let mut lens = Vec::new();
            let mut rebuilt = Vec::new();
            while let Some(s) = sc.next_segment().unwrap() {
                assert!(!s.data.is_empty());
                let mut at = 0;
                for r in &s.chunks {
                    assert_eq!(r.start, at);
                    at = r.end;
                    lens.push(r.len() as u32);
                }
                assert_eq!(at, s.data.len(), "ranges cover the segment");
                rebuilt.extend_from_slice(&s.data);
            }
            assert_eq!(sc.bytes_read(), data.len() as u64);
            assert_eq!(rebuilt, data);
            assert_eq!(lens, expect, "segment size {seg}");
        }
    }

    #[test]
    fn small_insertion_changes_few_chunks() {
        let p = ChunkerParams::DEFAULT;
        let data = random(4, 4 << 20);
        let mut edited = data[..2 << 20].to_vec();
        edited.extend_from_slice(b"INSERTED");
        edited.extend_from_slice(&data[2 << 20..]);
        let before: HashSet<_> = ids(&data, &whole(&data, &p)).into_iter().collect();
        let after = ids(&edited, &whole(&edited, &p));
        let new = after.iter().filter(|id| !before.contains(id)).count();
        assert!((1..=3).contains(&new), "{new} chunks changed");
    }
}
