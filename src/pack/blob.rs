//! Blob contents: zstd compression as reel tunes it (stored raw when it does not pay), and
//! decoding with the check of every blob against its name.

use std::cell::RefCell;

use super::format::{BlobEntry, BlobKind, blob_aad};
use crate::crypto::Keys;
use crate::error::Damaged;
use crate::error::{Error, Result};

/// A blob ready to be appended to a pack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedBlob {
    pub data: Vec<u8>,
    pub compressed: bool,
    pub raw_len: u32,
}

thread_local! {
    // zstd contexts are costly to create (allocations of several MiB at higher levels); with
    // 16 KiB chunks a fresh context per call would dominate. One per thread and level.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// zstd's window for the levels reel uses: 4 MiB, a whole frame (`frame::FRAME_RAW_MAX`).
/// Levels 1-16 would use 0.5-2 MiB for a frame of that size (level 2: 1 MiB), and miss every
/// repeat further back: with the whole frame in view, Rust sources stored 5% smaller and
/// compressed 4% faster (fewer, longer matches); binaries and the benchmark's text 0.1-0.3%
/// smaller, at the same speed (docs/PERFORMANCE.md). Inputs smaller than the window get a
/// window of their own size from zstd, as before; levels 17 and up keep their larger windows.
const WINDOW_LOG: u32 = 22;

/// zstd's hash table at level 2 (the default): 2^15 entries (128 KiB) rather than zstd's 2^16.
/// Level 2's match finder spends most of the dump's CPU time probing that table; half the
/// table finds slightly fewer matches, faster. Measured (docs/PERFORMANCE.md): real sources
/// and binaries 1.0% larger and 6-8% faster, the benchmark's text 3.7% larger and 15-20%
/// faster. Decoders do not depend on it.
const LEVEL2_HASH_LOG: u32 = 15;

fn zstd_compress(raw: &[u8], level: i32) -> Option<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().map(|(l, _)| *l) != Some(level) {
            let mut z = zstd::bulk::Compressor::new(level).ok()?;
            if level < 17 {
                z.set_parameter(zstd::stream::raw::CParameter::WindowLog(WINDOW_LOG))
                    .ok()?;
            }
            if level == 2 {
                z.set_parameter(zstd::stream::raw::CParameter::HashLog(LEVEL2_HASH_LOG))
                    .ok()?;
            }
            *c = Some((level, z));
        }
        let mut out = c.as_mut()?.1.compress(raw).ok()?;
        // The buffer was sized for the worst case (more than the raw length); what waits to be
        // appended should hold only what compressing gave.
        out.shrink_to_fit();
        Some(out)
    })
}

thread_local! {
    static PROBE: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
}

/// Already-compressed or random data costs zstd as much time as text and gains nothing. For a
/// large blob, compress four 8 KiB samples at level 1 first: if none of them shrinks by 1/32,
/// the blob is stored raw without spending a full compression on it.
fn looks_incompressible(raw: &[u8]) -> bool {
    const SAMPLE: usize = 8 << 10;
    if raw.len() < 16 * SAMPLE {
        return false;
    }
    let step = raw.len() / 4;
    PROBE.with(|p| {
        let mut p = p.borrow_mut();
        if p.is_none() {
            *p = zstd::bulk::Compressor::new(1).ok();
        }
        let Some(z) = p.as_mut() else {
            return false;
        };
        (0..4).all(|i| {
            let sample = &raw[i * step..i * step + SAMPLE];
            z.compress(sample)
                .is_ok_and(|c| c.len() > SAMPLE - SAMPLE / 32)
        })
    })
}

/// Blobs claiming up to this raw size are decompressed into a buffer allocated up front (every
/// blob reel writes: chunks are at most 16 MiB). A larger claim comes from a damaged or crafted
/// length field, and the zstd crate would size its buffer from the claim (or from the frame
/// header's own claim), so there the buffer grows only as output actually arrives
/// (docs/FUZZING.md, `regress-raw-len-4gib`).
const BULK_DECOMPRESS_MAX: usize = 16 << 20;

fn zstd_decompress(stored: &[u8], raw_len: usize) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    zstd_decompress_into(stored, raw_len, &mut out)?;
    Ok(out)
}

/// Decompress into `out` (cleared first), with this thread's reused zstd context: a restore
/// decompresses thousands of frames, and a fresh context and buffer for each cost an
/// allocation of the frame's size and the context's set-up every time.
pub(crate) fn zstd_decompress_into(
    stored: &[u8],
    raw_len: usize,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    out.clear();
    if raw_len > BULK_DECOMPRESS_MAX {
        use std::io::Read;
        zstd::stream::read::Decoder::with_buffer(stored)?
            .take(raw_len as u64 + 1)
            .read_to_end(out)?;
        return Ok(());
    }
    out.reserve(raw_len);
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        match d.as_mut() {
            Some(d) => d.decompress_to_buffer(stored, out).map(drop),
            None => {
                *out = zstd::bulk::decompress(stored, raw_len)?;
                Ok(())
            }
        }
    })
}

/// Compress `raw` with zstd at `level`, keeping the raw bytes (compressed = false) when
/// compression saves less than 1/32 (~3%): incompressible data must not cost decompression
/// time on restore. Panics if `raw` is 4 GiB or more (blobs are chunks, far smaller).
pub fn encode_blob(raw: &[u8], level: i32) -> EncodedBlob {
    let raw_len = u32::try_from(raw.len()).expect("blob of 4 GiB or more");
    if !looks_incompressible(raw)
        && let Some(c) = zstd_compress(raw, level)
        && c.len() <= raw.len() - raw.len() / 32
        && !raw.is_empty()
    {
        return EncodedBlob {
            data: c,
            compressed: true,
            raw_len,
        };
    }
    EncodedBlob {
        data: raw.to_vec(),
        compressed: false,
        raw_len,
    }
}

/// Open (in a sealed pack: with an encrypted spool's `keys`), decompress (if compressed) and
/// verify length and name: `keys.chunk_id(raw) == entry.id`, or for a frame
/// `frame::id(keys, raw) == entry.id` (its chunks' bytes are verified as they are sliced).
pub fn decode_blob(keys: &Keys, entry: &BlobEntry, stored: &[u8]) -> Result<Vec<u8>> {
    if stored.len() != entry.stored_len as usize {
        return Err(damaged_blob(
            entry,
            format!(
                "{} stored bytes where the index says {}",
                stored.len(),
                entry.stored_len
            ),
        ));
    }
    let Some(sealer) = keys.sealer() else {
        return decode_opened(keys, entry, stored);
    };
    let opened = sealer.open(&blob_aad(entry), stored).map_err(|_| {
        damaged_blob(
            entry,
            format!(
                "authentication failed for the sealed blob at offset {} (its bytes or header \
                 were changed, or it was sealed under another key)",
                entry.offset
            ),
        )
    })?;
    if entry.compressed {
        return decode_opened(keys, entry, &opened);
    }
    verify_raw(keys, entry, opened)
}

/// [`decode_blob`] of bytes already opened (`PackReader::read_opened_into`), or of a plain
/// pack's stored bytes: decompress and verify.
pub fn decode_opened(keys: &Keys, entry: &BlobEntry, opened: &[u8]) -> Result<Vec<u8>> {
    let raw = if entry.compressed {
        zstd_decompress(opened, entry.raw_len as usize)
            .map_err(|e| damaged_blob(entry, format!("zstd data does not decompress ({e})")))?
    } else {
        opened.to_vec()
    };
    verify_raw(keys, entry, raw)
}

fn damaged_blob(entry: &BlobEntry, what: String) -> Error {
    Error::damaged(
        Damaged::Chunk(entry.id),
        format!(
            "chunk {}: {what}; the pack holding it is damaged",
            entry.id.short()
        ),
    )
}

/// The length and name of a blob's raw bytes checked against its entry.
fn verify_raw(keys: &Keys, entry: &BlobEntry, raw: Vec<u8>) -> Result<Vec<u8>> {
    if raw.len() != entry.raw_len as usize {
        return Err(damaged_blob(
            entry,
            format!(
                "{} raw bytes where the index says {}",
                raw.len(),
                entry.raw_len
            ),
        ));
    }
    let named = match entry.kind {
        // Frames written by version 1 are named by all their bytes, and keep that name when
        // gc or an export copies them into a newer pack as they are.
        BlobKind::Frame => {
            crate::frame::id(keys, &raw) == Some(entry.id) || keys.chunk_id(&raw) == entry.id
        }
        _ => keys.chunk_id(&raw) == entry.id,
    };
    if !named {
        return Err(damaged_blob(
            entry,
            "content does not match its hash".to_string(),
        ));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::tests::random;
    use crate::pack::tests::text;
    use crate::types::ChunkId;

    #[test]
    fn encode_keeps_random_raw_and_compresses_text() {
        let r = random(1, 16 << 10);
        let e = encode_blob(&r, 3);
        assert!(!e.compressed);
        assert_eq!(e.data, r);
        let t = text(2, 16 << 10);
        let e = encode_blob(&t, 3);
        assert!(e.compressed);
        assert!(e.data.len() < t.len() / 2);
        assert_eq!(e.raw_len as usize, t.len());
        let empty = encode_blob(&[], 3);
        assert!(!empty.compressed && empty.data.is_empty());
        // Level changes reuse the thread's context correctly.
        assert!(encode_blob(&t, 1).compressed);
        assert!(encode_blob(&t, 19).compressed);
    }

    /// Level 2 compresses with the 4 MiB window and the 2^15 hash table, byte for byte what a
    /// zstd context set up that way writes, and unlike zstd's own level 2 (2^16): the tuning
    /// is applied, and the frames stay plain zstd.
    #[test]
    fn level_2_uses_the_smaller_hash_table_and_writes_plain_zstd() {
        use zstd::stream::raw::CParameter;
        // Varied text (a vocabulary of many words), where the table's size changes matches.
        let vocabulary: Vec<Vec<u8>> = random(3, 64 << 10)
            .chunks(6)
            .map(|w| w.iter().map(|b| b'a' + b % 26).chain([b' ']).collect())
            .collect();
        let picks = random(4, 1 << 20);
        let t: Vec<u8> = picks
            .chunks(2)
            .flat_map(|p| vocabulary[(p[0] as usize * 256 + p[1] as usize) % 4000].clone())
            .collect();
        let with_hash_log = |hash_log: u32| {
            let mut z = zstd::bulk::Compressor::new(2).unwrap();
            z.set_parameter(CParameter::WindowLog(WINDOW_LOG)).unwrap();
            z.set_parameter(CParameter::HashLog(hash_log)).unwrap();
            z.compress(&t).unwrap()
        };
        let e = encode_blob(&t, 2);
        assert!(e.compressed);
        assert!(e.data == with_hash_log(LEVEL2_HASH_LOG));
        assert!(
            e.data != with_hash_log(16),
            "zstd's own level 2 table was used"
        );
        assert!(zstd::bulk::decompress(&e.data, t.len()).unwrap() == t);
    }

    #[test]
    fn frames_are_named_by_their_table_and_version_1_names_still_read() {
        let (a, b) = (text(1, 5000), text(2, 7000));
        let ids = [ChunkId::of(&a), ChunkId::of(&b)];
        let (raw, offsets) = crate::frame::build(&[(ids[0], &a), (ids[1], &b)]);
        let name = crate::frame::id(&crate::crypto::Keys::plain(), &raw).unwrap();
        let v1_name = ChunkId::of(&raw);
        assert_ne!(name, v1_name);
        let blob = encode_blob(&raw, 3);
        let entry = |id, stored: &[u8]| BlobEntry {
            id,
            kind: BlobKind::Frame,
            compressed: false,
            offset: 0,
            stored_len: stored.len() as u32,
            raw_len: raw.len() as u32,
        };
        for id in [name, v1_name] {
            let e = BlobEntry {
                compressed: blob.compressed,
                ..entry(id, &blob.data)
            };
            assert_eq!(
                decode_blob(&crate::crypto::Keys::plain(), &e, &blob.data).unwrap(),
                raw
            );
        }
        // A byte of the table changes the name: the frame is refused.
        let mut bad = raw.clone();
        bad[12] ^= 1;
        let err = decode_blob(&crate::crypto::Keys::plain(), &entry(name, &bad), &bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not match its hash"), "{err}");
        // A byte of a chunk does not: that chunk is refused when sliced, the other reads.
        let mut bad = raw.clone();
        bad[offsets[1] as usize + 100] ^= 1;
        let got = decode_blob(&crate::crypto::Keys::plain(), &entry(name, &bad), &bad).unwrap();
        assert_eq!(
            crate::frame::slice(
                &crate::crypto::Keys::plain(),
                &got,
                &ids[0],
                offsets[0],
                5000
            )
            .unwrap(),
            a
        );
        let err = crate::frame::slice(
            &crate::crypto::Keys::plain(),
            &got,
            &ids[1],
            offsets[1],
            7000,
        )
        .unwrap_err();
        assert!(err.to_string().contains("does not match its hash"), "{err}");
    }
}
