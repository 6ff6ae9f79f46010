//! The dump's hot path on 64 MiB of generated data (half text-like, half random):
//! (a) cut only, (b) cut + blake3 per chunk, (c) cut + hash + encode_blob at zstd levels 1 and
//! 3, (d) the same with rayon over the chunks. Throughput is in input bytes.
//!
//! Run: `cargo bench --bench chunk_pipeline` (about two minutes).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;
use reel::ChunkId;
use reel::chunk::{ChunkerParams, cut};
use reel::pack::encode_blob;

const SIZE: usize = 64 << 20;

/// Half text-like (compressible, varied), half random (incompressible), deterministic.
fn data() -> Vec<u8> {
    let mut random = vec![0u8; SIZE / 2];
    blake3::Hasher::new()
        .update(b"chunk_pipeline")
        .finalize_xof()
        .fill(&mut random);
    let words = [
        "backup ",
        "volume ",
        "spool ",
        "level ",
        "the ",
        "of ",
        "clone\n",
        "restore ",
        "a ",
        "tape ",
        "2024-05-01 ",
        "dump ",
        "chunk ",
        "pack ",
        "manifest\n",
        "coda ",
    ];
    let mut text = Vec::with_capacity(SIZE / 2 + 16);
    let mut i = 0;
    while text.len() < SIZE / 2 {
        let r = random[i % random.len()];
        text.extend_from_slice(words[usize::from(r) % words.len()].as_bytes());
        if r > 250 {
            text.extend_from_slice(format!("{i} ").as_bytes());
        }
        i += 1;
    }
    text.truncate(SIZE / 2);
    text.extend_from_slice(&random);
    text
}

fn ranges(data: &[u8], p: &ChunkerParams) -> Vec<(usize, usize)> {
    let (lens, _) = cut(data, p, true);
    let mut pos = 0;
    lens.iter()
        .map(|&l| {
            let r = (pos, pos + l as usize);
            pos += l as usize;
            r
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let data = data();
    let p = ChunkerParams::DEFAULT;
    let mut g = c.benchmark_group("chunk_pipeline");
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.sample_size(10);
    // Iterations take 50-300 ms: flat sampling keeps the run near two minutes.
    g.sampling_mode(SamplingMode::Flat);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(8));

    g.bench_function("a_cut", |b| {
        b.iter(|| black_box(cut(black_box(&data), &p, true)))
    });

    g.bench_function("b_cut_hash", |b| {
        b.iter(|| {
            let ids: Vec<ChunkId> = ranges(&data, &p)
                .into_iter()
                .map(|(s, e)| ChunkId::of(&data[s..e]))
                .collect();
            black_box(ids)
        })
    });

    for level in [1, 3] {
        g.bench_function(format!("c_cut_hash_zstd{level}"), |b| {
            b.iter(|| {
                let stored: usize = ranges(&data, &p)
                    .into_iter()
                    .map(|(s, e)| {
                        let id = ChunkId::of(&data[s..e]);
                        black_box(id);
                        encode_blob(&data[s..e], level).data.len()
                    })
                    .sum();
                black_box(stored)
            })
        });
        g.bench_function(format!("d_cut_hash_zstd{level}_rayon"), |b| {
            b.iter(|| {
                let stored: usize = ranges(&data, &p)
                    .into_par_iter()
                    .map(|(s, e)| {
                        let id = ChunkId::of(&data[s..e]);
                        black_box(id);
                        encode_blob(&data[s..e], level).data.len()
                    })
                    .sum();
                black_box(stored)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
