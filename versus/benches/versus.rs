#![allow(missing_docs)] // criterion_group! generates an undocumented public function.
//! The core against raft-rs 0.7 (the `raft` crate) in the same loop: N nodes in one thread,
//! messages delivered in FIFO rounds (a round delivers every message in flight at its start),
//! every write durable within the round that asked for it, and the leader proposing B fresh
//! payloads of S bytes per round (allocated inside the timed part, on both sides) without
//! waiting for earlier batches. The clock stops when the leader applied every entry proposed.
//!
//! raft-rs runs with `max_size_per_msg` 1 MiB and `max_inflight_msgs` 256, once with
//! `batch_append` off and once on; the better of the two is the one compared. Every node of
//! both compacts its log every 4,096 entries so that memory stays flat. After criterion's
//! report, a table prints the median throughput of each side and the ratio per cell.
//!
//! `cargo bench --manifest-path versus/Cargo.toml` (a workspace of its own: raft-rs depends on
//! a second crate named `raft-proto`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use benches::RoundCluster;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raft::eraftpb::{ConfState, Message};
use raft::storage::MemStorage;
use raft::{RawNode, StateRole};

const SAMPLES: usize = 10;

/// raft-rs 0.7 in the same loop as [`RoundCluster`].
struct RaftRsCluster {
    nodes: Vec<RawNode<MemStorage>>,
    in_flight: Vec<Message>,
    applied: u64,
    since_compaction: u64,
}

impl RaftRsCluster {
    fn new(n: u64, batch_append: bool) -> Self {
        let voters: Vec<u64> = (1..=n).collect();
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let nodes = voters
            .iter()
            .map(|&id| {
                let storage =
                    MemStorage::new_with_conf_state(ConfState::from((voters.clone(), Vec::new())));
                let config = raft::Config {
                    id,
                    election_tick: 10,
                    heartbeat_tick: 1,
                    max_size_per_msg: 1 << 20,
                    max_inflight_msgs: 256,
                    batch_append,
                    ..Default::default()
                };
                RawNode::new(&config, storage, &logger).expect("a valid config")
            })
            .collect();
        let mut cluster = Self {
            nodes,
            in_flight: Vec::new(),
            applied: 0,
            since_compaction: 0,
        };
        cluster.nodes[0].campaign().expect("campaigns");
        cluster.handle_ready(0);
        while !cluster.in_flight.is_empty() {
            cluster.round(None);
        }
        assert_eq!(
            cluster.nodes[0].raft.state,
            StateRole::Leader,
            "node 1 leads"
        );
        cluster.applied = 0;
        cluster.since_compaction = 0;
        cluster
    }

    fn round(&mut self, batch: Option<Vec<Vec<u8>>>) {
        if let Some(batch) = batch {
            for data in batch {
                self.nodes[0]
                    .propose(Vec::new(), data)
                    .expect("the leader accepts");
            }
            self.handle_ready(0);
        }
        for message in std::mem::take(&mut self.in_flight) {
            let to = (message.to - 1) as usize;
            // A message to a node that moved on is refused, as a network would drop it.
            let _ = self.nodes[to].step(message);
        }
        for s in 0..self.nodes.len() {
            self.handle_ready(s);
        }
        if self.since_compaction >= RoundCluster::COMPACT_EVERY {
            self.since_compaction = 0;
            for node in &mut self.nodes {
                let applied = node.raft.raft_log.applied;
                node.mut_store()
                    .wl()
                    .compact(applied)
                    .expect("compacts what was applied");
            }
        }
    }

    /// raft-rs's documented loop: send, persist, send what waited for the persist, advance,
    /// apply.
    fn handle_ready(&mut self, s: usize) {
        let node = &mut self.nodes[s];
        if !node.has_ready() {
            return;
        }
        let mut ready = node.ready();
        self.in_flight.extend(ready.take_messages());
        let applied = count_commands(&ready.take_committed_entries());
        let store = node.mut_store().clone();
        if !ready.entries().is_empty() {
            store.wl().append(ready.entries()).expect("appends");
        }
        if let Some(hard_state) = ready.hs() {
            store.wl().set_hardstate(hard_state.clone());
        }
        self.in_flight.extend(ready.take_persisted_messages());
        let mut light = node.advance(ready);
        if let Some(commit) = light.commit_index() {
            store.wl().mut_hard_state().set_commit(commit);
        }
        self.in_flight.extend(light.take_messages());
        let applied = applied + count_commands(&light.take_committed_entries());
        node.advance_apply();
        if s == 0 {
            self.applied += applied;
            self.since_compaction += applied;
        }
    }
}

fn count_commands(entries: &[raft::eraftpb::Entry]) -> u64 {
    entries.iter().filter(|e| !e.data.is_empty()).count() as u64
}

/// Entries per second of each call criterion made, per benchmark id.
type Rates = BTreeMap<String, Vec<f64>>;

thread_local! {
    static RATES: RefCell<Rates> = const { RefCell::new(BTreeMap::new()) };
}

fn record(id: &str, entries: u64, elapsed: Duration) {
    RATES.with(|rates| {
        rates
            .borrow_mut()
            .entry(id.to_string())
            .or_default()
            .push(entries as f64 / elapsed.as_secs_f64().max(1e-9));
    });
}

/// The median of the last `SAMPLES` calls: criterion's measured samples, after its warm-up.
fn median_rate(id: &str) -> Option<f64> {
    RATES.with(|rates| {
        let rates = rates.borrow();
        let all = rates.get(id)?;
        let mut last: Vec<f64> = all[all.len().saturating_sub(SAMPLES)..].to_vec();
        last.sort_by(f64::total_cmp);
        last.get(last.len() / 2).copied()
    })
}

fn cell(nodes: u64, batch: usize, size: usize) -> String {
    format!("{nodes}-nodes/batch-{batch}/{size}B")
}

fn versus(c: &mut Criterion) {
    for nodes in [3u64, 5] {
        let mut group = c.benchmark_group(format!("versus/{nodes}-nodes"));
        group.sample_size(SAMPLES);
        group.warm_up_time(Duration::from_secs(1));
        group.measurement_time(Duration::from_secs(3));
        for batch in [1usize, 16, 256] {
            for size in [16usize, 256] {
                let template = vec![7u8; size];
                let name = cell(nodes, batch, size);
                group.throughput(Throughput::Elements(batch as u64));

                let mut ours = RoundCluster::new(nodes as usize);
                let id = format!("ours/{name}");
                group.bench_function(
                    BenchmarkId::new("ours", format!("batch-{batch}/{size}B")),
                    |b| {
                        b.iter_custom(|iters| {
                            let start = Instant::now();
                            ours.commit_batches(iters, batch, &template);
                            let elapsed = start.elapsed();
                            record(&id, iters * batch as u64, elapsed);
                            elapsed
                        })
                    },
                );

                for batch_append in [false, true] {
                    let mut theirs = RaftRsCluster::new(nodes, batch_append);
                    let label = if batch_append {
                        "raft-rs-batch-append"
                    } else {
                        "raft-rs"
                    };
                    let id = format!("{label}/{name}");
                    group.bench_function(
                        BenchmarkId::new(label, format!("batch-{batch}/{size}B")),
                        |b| {
                            b.iter_custom(|iters| {
                                let target = theirs.applied + iters * batch as u64;
                                let start = Instant::now();
                                for _ in 0..iters {
                                    let commands: Vec<Vec<u8>> =
                                        (0..batch).map(|_| template.to_vec()).collect();
                                    theirs.round(Some(commands));
                                }
                                while theirs.applied < target {
                                    theirs.round(None);
                                }
                                let elapsed = start.elapsed();
                                record(&id, iters * batch as u64, elapsed);
                                elapsed
                            })
                        },
                    );
                }
            }
        }
        group.finish();
    }
    print_table();
}

fn print_table() {
    println!();
    println!("versus raft-rs 0.7: median entries/s of criterion's samples, and ours ÷ the better raft-rs");
    println!(
        "{:<26} {:>12} {:>12} {:>14} {:>7}",
        "cell", "ours", "raft-rs", "batch-append", "ratio"
    );
    let mut worst = f64::INFINITY;
    for nodes in [3u64, 5] {
        for batch in [1usize, 16, 256] {
            for size in [16usize, 256] {
                let name = cell(nodes, batch, size);
                let (Some(ours), Some(off), Some(on)) = (
                    median_rate(&format!("ours/{name}")),
                    median_rate(&format!("raft-rs/{name}")),
                    median_rate(&format!("raft-rs-batch-append/{name}")),
                ) else {
                    continue; // filtered out on the command line
                };
                let ratio = ours / off.max(on);
                worst = worst.min(ratio);
                println!(
                    "{name:<26} {:>10.3} M {:>10.3} M {:>12.3} M {ratio:>6.2}×",
                    ours / 1e6,
                    off / 1e6,
                    on / 1e6
                );
            }
        }
    }
    if worst.is_finite() {
        println!("lowest ratio: {worst:.2}×");
    }
}

criterion_group!(benches, versus);
criterion_main!(benches);
