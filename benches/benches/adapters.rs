#![allow(missing_docs)] // criterion_group! generates an undocumented public function.
//! Each adapter end to end, 3 nodes in this process.
//!
//! - **The floor first**: on the same data directory and loopback, the median of a 4 KiB
//!   append + fdatasync and of a TCP ping-pong; floor = fsync + round trip, no commit can be
//!   faster.
//! - **Over TCP with real fsync**: the single-proposer commit latency (p50 and p99, and p50 as a
//!   ratio to the floor), then commits per second with 1, 64 and 1024 concurrent proposers of
//!   16-byte commands; with 64, the share of 64 ÷ floor reached; with 1024, the process's CPU
//!   time per commit.
//! - **In memory** (openraft's benchmark setup: the in-process network and volatile storage):
//!   commits per second with 1, 64, 256, 1024 and 4096 proposers, and CPU time per commit.
//!
//! A summary table prints at the end, with the process's peak resident memory. With
//! `BENCH_METRICS=1` every node records its metrics into a Prometheus recorder (the cost of
//! `NodeOptions::metrics`).
//! `cargo bench -p benches --bench adapters` (`-- --test` runs each part once, briefly).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use benches::{ms, peak_rss_kib, process_cpu_time, Adapter, AdapterCluster, Floor, Setup};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const ADAPTERS: [Adapter; 3] = [Adapter::Thread, Adapter::Tokio, Adapter::Smol];
const SAMPLES: usize = 10;

fn quick() -> bool {
    std::env::args().any(|a| a == "--test")
}

/// What the runs measured, for the summary: commits and elapsed time per criterion call, and
/// CPU time over all calls, per benchmark id.
#[derive(Default)]
struct Record {
    calls: Vec<(u64, Duration)>,
    cpu: Duration,
    commits: u64,
}

thread_local! {
    static FLOOR: RefCell<Option<Floor>> = const { RefCell::new(None) };
    static RECORDS: RefCell<BTreeMap<String, Record>> = const { RefCell::new(BTreeMap::new()) };
    static LATENCY: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

fn floor() -> Floor {
    FLOOR.with(|floor| {
        *floor.borrow_mut().get_or_insert_with(|| {
            let samples = if quick() { 20 } else { 1000 };
            let floor =
                Floor::measure(&std::env::temp_dir(), samples).expect("the floor can be measured");
            println!("{floor}");
            floor
        })
    })
}

/// Commits `per_call × iters` through `proposers`, recording rate and CPU time under `id`.
fn measured(
    cluster: &AdapterCluster,
    id: &str,
    per_call: u64,
    proposers: usize,
    iters: u64,
) -> Duration {
    let commits = per_call * iters;
    let cpu_before = process_cpu_time();
    let elapsed = cluster.commit_concurrently(commits, proposers);
    let cpu = match (cpu_before, process_cpu_time()) {
        (Some(before), Some(after)) => after.saturating_sub(before),
        _ => Duration::ZERO,
    };
    RECORDS.with(|records| {
        let mut records = records.borrow_mut();
        let record = records.entry(id.to_string()).or_default();
        record.calls.push((commits, elapsed));
        record.cpu += cpu;
        record.commits += commits;
    });
    elapsed
}

/// The median commits per second of criterion's samples (the last calls, after warm-up).
fn median_rate(record: &Record) -> f64 {
    let calls = &record.calls[record.calls.len().saturating_sub(SAMPLES)..];
    let mut rates: Vec<f64> = calls
        .iter()
        .map(|(n, t)| *n as f64 / t.as_secs_f64().max(1e-9))
        .collect();
    rates.sort_by(f64::total_cmp);
    rates.get(rates.len() / 2).copied().unwrap_or(0.0)
}

fn latency(c: &mut Criterion) {
    let floor = floor();
    let samples = if quick() { 20 } else { 2000 };
    for adapter in ADAPTERS {
        let cluster = AdapterCluster::start(adapter);
        let latencies = cluster.latencies(samples);
        let at =
            |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        let line = format!(
            "latency/{adapter:?}: single proposer, {samples} commits: p50 {:.3} ms ({:.2}× the \
             floor), p99 {:.3} ms",
            ms(at(0.50)),
            at(0.50).as_secs_f64() / floor.total().as_secs_f64(),
            ms(at(0.99)),
        );
        println!("{line}");
        LATENCY.with(|l| l.borrow_mut().push(line));
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
    for (setup, proposer_counts) in [
        (Setup::Tcp, &[1usize, 64, 1024][..]),
        (Setup::InMemory, &[1, 64, 256, 1024, 4096][..]),
    ] {
        for adapter in ADAPTERS {
            let cluster = AdapterCluster::start_with(adapter, setup);
            let name = format!("commits/{setup:?}/{adapter:?}");
            let mut group = c.benchmark_group(&name);
            group.sample_size(SAMPLES);
            for &proposers in proposer_counts {
                let per_call = if proposers == 1 {
                    if setup == Setup::Tcp {
                        100
                    } else {
                        2000
                    }
                } else {
                    4 * proposers as u64
                };
                // Padded, so that the summary sorts by number of proposers.
                let id = format!("{name}/{proposers:>4}");
                group.throughput(Throughput::Elements(per_call));
                group.bench_function(BenchmarkId::new("proposers", proposers), |b| {
                    // One set of proposers per call, committing `iters` rounds of work, so
                    // that starting 1024 threads or tasks is not what gets measured.
                    b.iter_custom(|iters| measured(&cluster, &id, per_call, proposers, iters))
                });
            }
            group.finish();
            cluster.stop();
        }
    }
    summary();
}

fn summary() {
    let floor = floor();
    println!();
    println!("{floor}");
    LATENCY.with(|lines| lines.borrow().iter().for_each(|l| println!("{l}")));
    println!(
        "{:<34} {:>14} {:>16}",
        "commits (median of samples)", "commits/s", "CPU µs/commit"
    );
    RECORDS.with(|records| {
        for (id, record) in records.borrow().iter() {
            let rate = median_rate(record);
            let cpu = record.cpu.as_secs_f64() * 1e6 / record.commits.max(1) as f64;
            let mut line = format!("{id:<34} {rate:>14.0} {cpu:>16.2}");
            if id.starts_with("commits/Tcp/") && id.ends_with("/  64") {
                let ideal = 64.0 / floor.total().as_secs_f64();
                line += &format!("   {:.2} of 64 ÷ floor ({ideal:.0}/s)", rate / ideal);
            }
            println!("{line}");
        }
    });
    if let Some(kib) = peak_rss_kib() {
        println!(
            "memory: peak resident set of the end-to-end benchmark process: {:.1} MiB",
            kib as f64 / 1024.0
        );
    }
}

criterion_group!(benches, latency, throughput);
criterion_main!(benches);
