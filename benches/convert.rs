//! Criterion benchmarks of the conversion on a seeded sample (the generator the tests and the
//! `bench` command use): raw → fixed VHD without and with the manifest, the zero scan, and the
//! manifest alone. For the comparison with qemu-img and cp on the same input, run
//! `ec2azure bench convert` (see the README).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ec2azure::sample::{SampleSpec, make_sample};
use ec2azure::{ConvertOptions, Manifest, convert, open};
use std::hint::black_box;

const SIZE: u64 = 256 << 20;

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("sample.raw");
    let spec = SampleSpec {
        size: SIZE,
        data_fraction: 0.3,
        zero_fraction: 0.2,
        seed: 11,
    };
    make_sample(&input, &spec).expect("sample");
    let output = dir.path().join("out.vhd");
    let src = open(&input, None).expect("open");

    let mut g = c.benchmark_group("convert-256MiB-30pct");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(SIZE));
    for (name, manifest) in [("vhd", false), ("vhd+manifest", true)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let opts = ConvertOptions {
                    sync: false,
                    manifest,
                    ..ConvertOptions::default()
                };
                black_box(convert(&*src, &output, &opts).expect("convert"))
            })
        });
    }
    g.bench_function("manifest-only", |b| {
        b.iter(|| black_box(Manifest::compute(&*src).expect("manifest")))
    });
    g.finish();

    // snapshot pull from the in-process EBS fake: a 1 GiB volume with 128 blocks (64 MiB) of
    // data, every block's SHA-256 checked, straight into a fixed VHD.
    {
        use ec2azure::cloud::ebs::{BLOCK_SIZE, EbsSnapshot, FakeEbs, RetryPolicy};
        let fake = std::sync::Arc::new(FakeEbs::new(100));
        let blocks = (0..128u64)
            .map(|i| {
                (
                    i * 16,
                    (0..BLOCK_SIZE as usize)
                        .map(|b| (b as u8) ^ (i as u8) | 1)
                        .collect(),
                )
            })
            .collect();
        fake.add_snapshot("snap-bench", None, 1, blocks);
        let img = EbsSnapshot::open(fake, "snap-bench", RetryPolicy::default()).expect("snapshot");
        let out = dir.path().join("ebs.vhd");
        let mut g = c.benchmark_group("snapshot-pull-fake-64MiB");
        g.sample_size(10);
        g.throughput(Throughput::Bytes(128 * BLOCK_SIZE));
        g.bench_function("to-vhd", |b| {
            b.iter(|| {
                let opts = ConvertOptions {
                    sync: false,
                    ..ConvertOptions::default()
                };
                black_box(convert(&img, &out, &opts).expect("pull"))
            })
        });
        g.finish();
    }

    let buf = vec![0u8; 1 << 20];
    let mut g = c.benchmark_group("zero-scan");
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("is_zero-1MiB", |b| {
        b.iter(|| black_box(ec2azure::export::is_zero(black_box(&buf))))
    });
    g.finish();
}

criterion_group!(convert_benches, benches);
criterion_main!(convert_benches);
