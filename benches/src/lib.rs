//! What the benchmarks drive: clusters of bare cores stepped in one thread ([`CoreCluster`],
//! batch by batch; [`RoundCluster`], the `versus` loop), three-node clusters of each adapter
//! over TCP on 127.0.0.1 with real fsync or in memory ([`AdapterCluster`], [`Setup`]), and what
//! they are measured against ([`Floor`], [`process_cpu_time`]).

use std::collections::VecDeque;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use adapter_common::floor::Floor;
use adapter_common::{NodeOptions, ProposeError, StateMachine, TcpConfig};
use raft_proto::{Action, Config, Event, Message, Node, NodeId, Payload, Role};

/// A cluster of cores in one thread: messages are handed over in memory, every write is
/// durable at once, and time does not pass (no I/O, no simulated latency).
#[derive(Debug)]
pub struct CoreCluster {
    nodes: Vec<Node>,
    queue: VecDeque<Message>,
    actions: Vec<Action>,
    /// Entries the leader applied.
    applied: u64,
    /// Compact every node's log every this many applied entries, to keep memory flat.
    compact_every: u64,
}

impl CoreCluster {
    /// `n` nodes; node 1 is elected leader.
    pub fn new(n: usize) -> Self {
        let mut cluster = Self {
            nodes: cores(n),
            queue: VecDeque::new(),
            actions: Vec::new(),
            applied: 0,
            compact_every: 4096,
        };
        cluster.step(0, 3, Event::Tick);
        cluster.run();
        assert_eq!(cluster.nodes[0].role(), Role::Leader, "node 1 leads");
        cluster
    }

    /// Proposes `commands` at the leader in one batch and runs until the leader applied them.
    pub fn commit(&mut self, commands: Vec<Payload>) {
        let target = self.nodes[0].last_log_index() + commands.len() as u64;
        self.step(0, 3, Event::Propose(commands));
        self.run();
        debug_assert!(self.nodes[0].applied_index() >= target);
    }

    fn run(&mut self) {
        while let Some(message) = self.queue.pop_front() {
            let to = (message.to - 1) as usize;
            self.step(to, 3, Event::Message(message));
        }
    }

    fn step(&mut self, s: usize, now: u64, event: Event) {
        let mut actions = std::mem::take(&mut self.actions);
        self.nodes[s].step_into(now, event, &mut actions);
        let mut durable = None;
        for action in actions.drain(..) {
            match action {
                Action::Persist(write) => durable = Some(write.seq),
                Action::Send(message) => self.queue.push_back(message),
                Action::Apply { entries, .. } if s == 0 => self.applied += entries.len() as u64,
                _ => {}
            }
        }
        self.actions = actions;
        if let Some(seq) = durable {
            self.step(s, now, Event::Persisted { seq });
        }
        if s == 0 && self.applied >= self.compact_every {
            self.applied = 0;
            self.compact();
        }
    }

    /// Every node snapshots what it applied (an empty state: the benchmark has none).
    fn compact(&mut self) {
        for s in 0..self.nodes.len() {
            let event = empty_snapshot(&self.nodes[s]);
            self.step(s, 3, event);
        }
    }
}

/// `n` cores with the default configuration, except that node 1 times out first and wins;
/// nobody else ever times out (time stands still after the election).
fn cores(n: usize) -> Vec<Node> {
    let voters: Vec<NodeId> = (1..=n as NodeId).collect();
    voters
        .iter()
        .map(|&id| {
            let mut config = Config::new(id, voters.clone());
            if id == 1 {
                config.election_timeout_min = 2;
                config.election_timeout_max = 3;
                config.heartbeat_interval = 1;
            }
            Node::new(config, 0).expect("a valid config")
        })
        .collect()
}

/// A snapshot of everything `node` applied, of an empty state (the benchmarks keep none).
fn empty_snapshot(node: &Node) -> Event {
    Event::SnapshotTaken {
        last_index: node.applied_index(),
        data: Payload::from(&[][..]),
    }
}

/// The core in the loop of the `versus` benchmark: `n` nodes in one thread, messages delivered
/// in FIFO rounds (a round delivers every message in flight at its start), every write durable
/// at the end of the round that asked for it (one acknowledgement per node and round), and the leader proposing a batch per round without
/// waiting for earlier ones.
#[derive(Debug)]
pub struct RoundCluster {
    nodes: Vec<Node>,
    in_flight: Vec<Message>,
    delivering: Vec<Message>,
    actions: Vec<Action>,
    /// Per node, the last write asked for in this round, acknowledged at its end.
    durable: Vec<Option<u64>>,
    /// Entries the leader applied, in total.
    applied: u64,
    /// Entries applied at the leader since the last compaction.
    since_compaction: u64,
}

impl RoundCluster {
    /// Every node compacts its log (an empty snapshot) every this many entries the leader
    /// applies, so memory stays flat however long the benchmark runs.
    pub const COMPACT_EVERY: u64 = 4096;

    /// `n` nodes with the default configuration; node 1 is elected leader.
    pub fn new(n: usize) -> Self {
        let mut cluster = Self {
            nodes: cores(n),
            in_flight: Vec::new(),
            delivering: Vec::new(),
            actions: Vec::new(),
            durable: vec![None; n],
            applied: 0,
            since_compaction: 0,
        };
        cluster.step(0, Event::Tick);
        for _ in 0..10 {
            cluster.round(None);
        }
        assert_eq!(cluster.nodes[0].role(), Role::Leader, "node 1 leads");
        assert!(cluster.in_flight.is_empty(), "the election is over");
        cluster.applied = 0;
        cluster.since_compaction = 0;
        cluster
    }

    /// Entries the leader applied since the cluster was built.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// `count` rounds in which the leader proposes `batch` fresh copies of `payload` (made
    /// here, so that a timed caller times them), then rounds until the leader applied them all.
    pub fn commit_batches(&mut self, count: u64, batch: usize, payload: &[u8]) {
        let target = self.applied + count * batch as u64;
        for _ in 0..count {
            let commands: Vec<Payload> = (0..batch).map(|_| Payload::from(payload)).collect();
            self.round(Some(commands));
        }
        while self.applied < target {
            self.round(None);
        }
    }

    /// One round: the leader proposes `batch` (if any), then every message in flight at that
    /// point is delivered; what the deliveries send travels in the next round.
    pub fn round(&mut self, batch: Option<Vec<Payload>>) {
        if let Some(batch) = batch {
            self.step(0, Event::Propose(batch));
        }
        let mut messages =
            std::mem::replace(&mut self.in_flight, std::mem::take(&mut self.delivering));
        for message in messages.drain(..) {
            let to = (message.to - 1) as usize;
            self.step(to, Event::Message(message));
        }
        self.delivering = messages;
        // Every write of the round is durable at its end, as raft-rs's loop persists a ready.
        for s in 0..self.nodes.len() {
            if let Some(seq) = self.durable[s].take() {
                self.step(s, Event::Persisted { seq });
            }
        }
        if self.since_compaction >= Self::COMPACT_EVERY {
            self.since_compaction = 0;
            for s in 0..self.nodes.len() {
                let event = empty_snapshot(&self.nodes[s]);
                self.step(s, event);
            }
        }
    }

    fn step(&mut self, s: usize, event: Event) {
        const NOW: u64 = 3;
        let mut actions = std::mem::take(&mut self.actions);
        self.nodes[s].step_into(NOW, event, &mut actions);
        for action in actions.drain(..) {
            match action {
                Action::Persist(write) => self.durable[s] = Some(write.seq),
                Action::Send(message) => self.in_flight.push(message),
                Action::Apply { entries, .. } if s == 0 => {
                    self.applied += entries.len() as u64;
                    self.since_compaction += entries.len() as u64;
                }
                _ => {}
            }
        }
        self.actions = actions;
    }
}

/// Answers the number of commands applied so far (8 bytes); snapshots are that count.
#[derive(Debug, Default)]
pub struct Counter(u64);

impl StateMachine for Counter {
    fn apply(&mut self, _index: u64, _command: &[u8]) -> Vec<u8> {
        self.0 += 1;
        self.0.to_le_bytes().to_vec()
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.to_le_bytes().to_vec()
    }
    fn restore(&mut self, snapshot: &[u8]) {
        self.0 = snapshot.try_into().map(u64::from_le_bytes).unwrap_or(0);
    }
}

/// Which adapter a cluster runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adapter {
    /// adapter-thread.
    Thread,
    /// adapter-tokio.
    Tokio,
    /// adapter-smol on smol's executor.
    Smol,
}

enum Handle {
    Thread(
        adapter_thread::NodeHandle,
        Option<Arc<adapter_thread::transport::TcpTransport>>,
    ),
    Tokio(
        adapter_tokio::NodeHandle,
        Option<Arc<adapter_tokio::transport::TcpTransport>>,
    ),
    Smol(
        adapter_smol::NodeHandle,
        Option<Arc<adapter_smol::transport::TcpTransport>>,
    ),
}

/// Where an [`AdapterCluster`] keeps its log and how its nodes talk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// TCP on 127.0.0.1, and files with real fsync in a temporary directory.
    Tcp,
    /// The setup of openraft's benchmark: the in-process network and volatile storage
    /// ([`NodeOptions::volatile`]), so that neither a socket nor a disk is measured.
    InMemory,
}

/// Three nodes of one adapter in this process: over TCP on 127.0.0.1 with data (and real
/// fsync) under a temporary directory on disk, or in memory ([`Setup`]).
pub struct AdapterCluster {
    adapter: Adapter,
    runtime: tokio::runtime::Runtime,
    dir: PathBuf,
    nodes: Vec<Handle>,
    leader: usize,
}

impl std::fmt::Debug for AdapterCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdapterCluster")
            .field("adapter", &self.adapter)
            .finish()
    }
}

impl AdapterCluster {
    /// Starts a cluster over TCP with data on disk, and waits for a leader.
    pub fn start(adapter: Adapter) -> Self {
        Self::start_with(adapter, Setup::Tcp)
    }

    /// Starts a cluster in `setup`, and waits for a leader.
    pub fn start_with(adapter: Adapter, setup: Setup) -> Self {
        let dir =
            std::env::temp_dir().join(format!("raft-bench-{adapter:?}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let listeners: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
            .collect();
        let peers: std::collections::BTreeMap<NodeId, _> = (1..=3)
            .zip(&listeners)
            .map(|(id, l)| (id, l.local_addr().expect("bound")))
            .collect();
        drop(listeners);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let network = adapter_common::MemoryNetwork::new();
        let in_memory = setup == Setup::InMemory;
        let mut nodes = Vec::new();
        for id in 1..=3 {
            let mut options = NodeOptions::new(id, vec![1, 2, 3], dir.join(format!("node-{id}")));
            options.snapshot_every = Some(10_000);
            options.volatile = in_memory;
            options.metrics = metrics_on();
            let mut others = peers.clone();
            others.remove(&id);
            let tcp = TcpConfig::new(9, id, peers[&id], others);
            nodes.push(match adapter {
                Adapter::Thread => {
                    let (tx, rx) = adapter_thread::inbound_channel();
                    if in_memory {
                        let transport =
                            network.endpoint(id, move |message| tx.try_send(message).is_ok());
                        let node =
                            adapter_thread::start(options, Counter::default(), transport, rx)
                                .expect("starts");
                        Handle::Thread(node, None)
                    } else {
                        let transport = Arc::new(
                            adapter_thread::transport::TcpTransport::start(tcp, tx)
                                .expect("listens"),
                        );
                        let node = adapter_thread::start(
                            options,
                            Counter::default(),
                            Arc::clone(&transport),
                            rx,
                        )
                        .expect("starts");
                        Handle::Thread(node, Some(transport))
                    }
                }
                Adapter::Tokio => runtime.block_on(async {
                    let (tx, rx) = adapter_tokio::inbound_channel();
                    if in_memory {
                        let transport =
                            network.endpoint(id, move |message| tx.try_send(message).is_ok());
                        let node = adapter_tokio::start(options, Counter::default(), transport, rx)
                            .expect("starts");
                        Handle::Tokio(node, None)
                    } else {
                        let transport = Arc::new(
                            adapter_tokio::transport::TcpTransport::start(tcp, tx)
                                .await
                                .expect("listens"),
                        );
                        let node = adapter_tokio::start(
                            options,
                            Counter::default(),
                            Arc::clone(&transport),
                            rx,
                        )
                        .expect("starts");
                        Handle::Tokio(node, Some(transport))
                    }
                }),
                Adapter::Smol => {
                    let (tx, rx) = adapter_smol::inbound_channel();
                    if in_memory {
                        let transport =
                            network.endpoint(id, move |message| tx.try_send(message).is_ok());
                        let node = adapter_smol::start(options, Counter::default(), transport, rx)
                            .expect("starts");
                        Handle::Smol(node, None)
                    } else {
                        let transport = Arc::new(
                            smol::block_on(adapter_smol::transport::TcpTransport::start(tcp, tx))
                                .expect("listens"),
                        );
                        let node = adapter_smol::start(
                            options,
                            Counter::default(),
                            Arc::clone(&transport),
                            rx,
                        )
                        .expect("starts");
                        Handle::Smol(node, Some(transport))
                    }
                }
            });
        }
        let mut cluster = Self {
            adapter,
            runtime,
            dir,
            nodes,
            leader: 0,
        };
        cluster.leader = cluster.find_leader();
        cluster
    }

    fn find_leader(&self) -> usize {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            for (i, node) in self.nodes.iter().enumerate() {
                let status = match node {
                    Handle::Thread(n, _) => n.status(),
                    Handle::Tokio(n, _) => self.runtime.block_on(n.status()),
                    Handle::Smol(n, _) => smol::block_on(n.status()),
                };
                if status.is_some_and(|s| s.role == Role::Leader) {
                    return i;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no leader within 10 s");
    }

    /// Commits `total` 16-byte commands through `proposers` concurrent proposers; returns
    /// how long it took.
    pub fn commit_concurrently(&self, total: u64, proposers: usize) -> Duration {
        let proposers = proposers.max(1);
        let per = total.div_ceil(proposers as u64).max(1);
        let start = Instant::now();
        match &self.nodes[self.leader] {
            Handle::Thread(node, _) => std::thread::scope(|scope| {
                for _ in 0..proposers {
                    scope.spawn(|| {
                        for _ in 0..per {
                            expect_commit(
                                node.propose_timeout(vec![7; 16], Duration::from_secs(30)),
                            );
                        }
                    });
                }
            }),
            Handle::Tokio(node, _) => self.runtime.block_on(async {
                let tasks: Vec<_> = (0..proposers)
                    .map(|_| {
                        let node = node.clone();
                        tokio::spawn(async move {
                            for _ in 0..per {
                                expect_commit(node.propose(vec![7; 16]).await);
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.expect("a proposer");
                }
            }),
            Handle::Smol(node, _) => smol::block_on(async {
                let tasks: Vec<_> = (0..proposers)
                    .map(|_| {
                        let node = node.clone();
                        smol::spawn(async move {
                            for _ in 0..per {
                                expect_commit(node.propose(vec![7; 16]).await);
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await;
                }
            }),
        }
        start.elapsed()
    }

    /// Commit latencies of `count` commands proposed one after the other, sorted.
    pub fn latencies(&self, count: usize) -> Vec<Duration> {
        let mut latencies: Vec<Duration> =
            (0..count).map(|_| self.commit_concurrently(1, 1)).collect();
        latencies.sort();
        latencies
    }

    /// Stops the nodes and their transports, and removes the data.
    pub fn stop(self) {
        for node in self.nodes {
            match node {
                Handle::Thread(node, transport) => {
                    node.shutdown();
                    if let Some(Ok(t)) = transport.map(Arc::try_unwrap) {
                        t.shutdown();
                    }
                }
                Handle::Tokio(node, transport) => self.runtime.block_on(async {
                    node.shutdown().await;
                    if let Some(Ok(t)) = transport.map(Arc::try_unwrap) {
                        t.shutdown().await;
                    }
                }),
                Handle::Smol(node, transport) => {
                    smol::block_on(node.shutdown());
                    if let Some(t) = transport {
                        t.shutdown();
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn expect_commit(result: Result<Vec<u8>, ProposeError>) {
    if let Err(e) = result {
        panic!("a benchmark proposal failed: {e}");
    }
}

/// The peak resident memory of this process so far (VmHWM), in KiB, where Linux reports it.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The CPU time this process used so far (user + system, all threads), from
/// `/proc/self/stat`; `None` where that file does not exist. Its resolution is the kernel's
/// clock tick (10 ms), so measure spans of seconds.
pub fn process_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start at the state, field 3;
    // utime and stime are fields 14 and 15, in clock ticks of 1/100 s.
    let after = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((user + system) * 10))
}

/// A duration in milliseconds.
pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Whether the benchmark clusters record metrics (`BENCH_METRICS=1`): then a Prometheus
/// recorder is installed for the process (once), so that the cost measured is that of real
/// recording.
pub fn metrics_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        let on = std::env::var("BENCH_METRICS").is_ok_and(|v| v == "1");
        if on {
            use adapter_common::metrics::{LATENCY_BUCKETS, SIZE_BUCKETS};
            use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
            // The buckets `raft-kv serve --metrics-addr` uses.
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("_size".into()), &SIZE_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("_entries".into()), &SIZE_BUCKETS)
                })
                .expect("valid buckets")
                .install_recorder()
                .expect("a recorder installs");
            // As a server would: histograms drained every second (they grow until then).
            std::thread::spawn(move || loop {
                std::thread::sleep(Duration::from_secs(1));
                handle.run_upkeep();
            });
        }
        on
    })
}
