#![allow(missing_docs)] // criterion_group! generates an undocumented public function.
//! The linearizability checker: a 100,000-operation history of 64 clients over 100 keys (half
//! writes, half reads, linearizable by construction), checked whole; throughput is in
//! operations per second. Before measuring, the bench checks that the checker passes it and
//! finds a stale read planted at its end.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lincheck::{check, generate, Budget, Verdict};

fn lincheck(c: &mut Criterion) {
    let history = generate::linearizable(7, 64, 100_000 / 64, 100);
    assert_eq!(check(&history, Budget::default()), Verdict::Linearizable);
    // A stale read planted after the end: the first value ever written to a key that was
    // written again later.
    let mut planted = history.clone();
    planted.push(generate::stale_read(&history, 1000).expect("a key written twice"));
    assert!(
        matches!(check(&planted, Budget::default()), Verdict::Violation(_)),
        "the planted stale read was missed"
    );

    let mut group = c.benchmark_group("lincheck");
    group.sample_size(10);
    group.throughput(Throughput::Elements(history.len() as u64));
    group.bench_function("100k-ops-64-clients-100-keys", |b| {
        b.iter(|| check(&history, Budget::default()))
    });
    group.bench_function("100k-ops-planted-stale-read", |b| {
        b.iter(|| check(&planted, Budget::default()))
    });
    group.finish();
}

criterion_group!(benches, lincheck);
criterion_main!(benches);
