//! Restore throughput: a generated 64 MiB volume (text-like and random files) dumped once,
//! then restored into a fresh directory per iteration.

use std::fs;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use reel::dump::{DumpOptions, dump_volume};
use reel::progress::NoProgress;
use reel::restore::{RestoreOptions, restore_dump};
use reel::spool::{Access, Spool};

fn generate(root: &Path) -> u64 {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut total = 0;
    for d in 0..16 {
        let dir = root.join(format!("d{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..32 {
            let size = 1024 + (next() % (256 << 10)) as usize;
            let data: Vec<u8> = if f % 2 == 0 {
                (0..size).map(|_| next() as u8).collect()
            } else {
                let words = [
                    "spool ",
                    "tape ",
                    "volume ",
                    "level ",
                    "chunk ",
                    "restore\n",
                ];
                let mut v = Vec::with_capacity(size);
                while v.len() < size {
                    v.extend_from_slice(words[(next() % 6) as usize].as_bytes());
                }
                v.truncate(size);
                v
            };
            total += data.len() as u64;
            fs::write(dir.join(format!("f{f:02}")), data).unwrap();
        }
    }
    total
}

fn bench_restore(c: &mut Criterion) {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join("vol");
    let bytes = generate(&vol);
    let spool_dir = work.path().join("spool");
    {
        let mut spool = Spool::init(&spool_dir).unwrap();
        spool.add_volume("v", &vol).unwrap();
        dump_volume(&spool, "v", &DumpOptions::default(), &NoProgress).unwrap();
    }
    let spool = Spool::open(&spool_dir, Access::Read).unwrap();
    let rec = spool.catalog.latest_dump("v").unwrap().unwrap();
    let mut group = c.benchmark_group("restore");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(bytes));
    let mut n = 0;
    group.bench_function("whole volume", |b| {
        b.iter(|| {
            n += 1;
            let target = work.path().join(format!("r{n}"));
            restore_dump(
                &spool,
                &rec,
                &target,
                &RestoreOptions::default(),
                &NoProgress,
            )
            .unwrap();
            fs::remove_dir_all(&target).unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, bench_restore);
criterion_main!(benches);
