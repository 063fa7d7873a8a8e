#![allow(missing_docs)] // criterion_group! generates an undocumented public function.
//! Each adapter end to end: a 3-node cluster on 127.0.0.1 over TCP with real fsync in a
//! temporary directory. Commits per second with 1, 64 and 1024 concurrent proposers of
//! 16-byte commands, and the single-proposer commit latency (p50 and p99 are printed before
//! the criterion groups, with the process's peak resident memory at the end).

use std::time::Duration;

use benches::{peak_rss_kib, Adapter, AdapterCluster};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const ADAPTERS: [Adapter; 3] = [Adapter::Thread, Adapter::Tokio, Adapter::Smol];

fn quick() -> bool {
    std::env::args().any(|a| a == "--test")
}

fn latency(c: &mut Criterion) {
    let samples = if quick() { 20 } else { 2000 };
    for adapter in ADAPTERS {
        let cluster = AdapterCluster::start(adapter);
        let latencies = cluster.latencies(samples);
        let at =
            |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        println!(
            "latency/{adapter:?}: single proposer, {samples} commits: p50 {:.3} ms, p99 {:.3} ms",
            at(0.50).as_secs_f64() * 1000.0,
            at(0.99).as_secs_f64() * 1000.0
        );
        let mut group = c.benchmark_group("latency");
        group.bench_function(
            BenchmarkId::new("single-proposer", format!("{adapter:?}")),
            |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| cluster.commit_concurrently(1, 1))
                        .sum::<Duration>()
                })
            },
        );
        group.finish();
        cluster.stop();
    }
}

fn throughput(c: &mut Criterion) {
    for adapter in ADAPTERS {
        let cluster = AdapterCluster::start(adapter);
        let mut group = c.benchmark_group(format!("commits/{adapter:?}"));
        group.sample_size(10);
        for proposers in [1usize, 64, 1024] {
            let per_sample = if proposers == 1 {
                100
            } else {
                4 * proposers as u64
            };
            group.throughput(Throughput::Elements(per_sample));
            group.bench_function(BenchmarkId::new("proposers", proposers), |b| {
                // One set of proposers per sample, committing `iters` rounds of work, so that
                // starting 1024 threads or tasks is not what gets measured.
                b.iter_custom(|iters| cluster.commit_concurrently(per_sample * iters, proposers))
            });
        }
        group.finish();
        cluster.stop();
    }
    if let Some(kib) = peak_rss_kib() {
        println!(
            "memory: peak resident set of the end-to-end benchmark process: {:.1} MiB",
            kib as f64 / 1024.0
        );
    }
}

criterion_group!(benches, latency, throughput);
criterion_main!(benches);
