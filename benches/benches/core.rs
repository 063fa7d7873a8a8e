#![allow(missing_docs)] // criterion_group! generates an undocumented public function.
//! The core alone: a 3-node and a 5-node cluster stepped in one thread, messages handed over
//! in memory, no I/O and no simulated latency. The leader proposes batches of 1, 16 and 256
//! entries of 16 and 256 bytes; each iteration runs until the leader applied its batch.
//! Throughput is in entries per second.

use benches::CoreCluster;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use raft_proto::Payload;

fn core(c: &mut Criterion) {
    for nodes in [3, 5] {
        let mut group = c.benchmark_group(format!("core/{nodes}-nodes"));
        for batch in [1usize, 16, 256] {
            for size in [16usize, 256] {
                let commands: Vec<Payload> =
                    (0..batch).map(|_| Payload::from(vec![7u8; size])).collect();
                let mut cluster = CoreCluster::new(nodes);
                group.throughput(Throughput::Elements(batch as u64));
                group.bench_function(
                    BenchmarkId::new(format!("batch-{batch}"), format!("{size}B")),
                    |b| {
                        b.iter_batched(
                            || commands.clone(),
                            |commands| cluster.commit(commands),
                            BatchSize::SmallInput,
                        )
                    },
                );
            }
        }
        group.finish();
    }
}

criterion_group!(benches, core);
criterion_main!(benches);
