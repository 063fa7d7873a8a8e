//! A deterministic, seeded, virtual-time cluster simulator: the judge of the core.
//!
//! [`Sim`] runs `n` [`Node`]s over a simulated network and simulated disks, all driven by one
//! seeded generator, so that a run is a pure function of its seed and its schedule. It models
//! what ../shared/SCENARIOS.md describes: connected and disconnected servers, two-group
//! partitions, a reliable and an unreliable network (delay, loss of requests and of replies,
//! reordering, duplication), long reordering of replies, crashes that lose the writes not yet
//! reported durable (all, none or a prefix of them), restarts from durable state, and an
//! applied log per server that survives restarts. Messages to a crashed instance are lost with
//! it (no reply reaches its successor); messages it sent before crashing were already on the
//! wire and still arrive where the network connects the two.
//!
//! After **every** event it checks Election Safety, Leader Append-Only, Log Matching, Leader
//! Completeness, State Machine Safety, Durability (the highest entry applied anywhere is held
//! durably by a majority) and that term, commit index and applied index never go back on a
//! live node. It follows each server's memberships itself, from the bootstrap voters and the
//! persist actions (membership entries, truncations, snapshots), and checks that a live node
//! has the newest its log holds in force, and that whatever a leader commits is held durably
//! by a quorum of its memberships in force before and after the step, by that account. The
//! first violation stops the run and is reported as a [`Failure`] with the seed and the last
//! events.
//!
//! Time is in microseconds; the nodes run with the lab's timing (elections after 300–600 ms,
//! heartbeats every 100 ms).
//!
//! ```
//! use raft_proto::sim::{Sim, SimOptions, MS};
//!
//! let mut sim = Sim::new(SimOptions::new(3, 42));
//! let leader = sim.check_one_leader().unwrap();
//! let index = sim.one(b"x".to_vec(), 3, false).unwrap();
//! assert_eq!(index, 1);
//! sim.disconnect(leader);
//! sim.sleep(2000 * MS).unwrap();
//! assert_ne!(sim.check_one_leader().unwrap(), leader);
//! ```

mod beyond;
mod checker;
pub mod explore;
pub mod kv;
pub mod random;
mod reads;
mod reconfig;
pub mod scenarios;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::fmt;
use std::format;
use std::string::{String, ToString};
use std::sync::Arc;
use std::vec::Vec;

use crate::config::Config;
use crate::io::{
    Action, Event, MembershipOutcome, Persist, ProposalOutcome, ReadRefusal, SnapshotChunkRequest,
    TransferOutcome,
};
use crate::membership::{Membership, MembershipChange};
use crate::message::{Message, MessageBody};
use crate::node::Node;
use crate::rng::Rng;
use crate::types::{
    DurableState, Entry, EntryKind, Index, NodeId, Payload, Role, Snapshot, SnapshotMeta, Term,
};
use checker::{Checker, LogView};

/// One millisecond of virtual time.
pub const MS: u64 = 1000;
/// One second of virtual time.
pub const SECOND: u64 = 1000 * MS;

/// How a simulation is set up.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Number of servers, with ids 1..=nodes.
    pub nodes: usize,
    /// The seed every random choice derives from.
    pub seed: u64,
    /// Start with the unreliable network profile.
    pub unreliable: bool,
    /// Whether a crash may lose writes not yet reported durable (all, none or a prefix).
    pub crash_loses_unsynced: bool,
    /// [`Config::leader_noop`] for every node.
    pub leader_noop: bool,
    /// How many servers the cluster is bootstrapped with (ids 1..=k, every one of them
    /// voters); the others start empty, as nodes that join an existing cluster (they wait
    /// until a membership change adds them). `None`: all of them.
    pub initial_voters: Option<usize>,
    /// [`Config::pre_vote`] for every node (on by default, as in `Config::new`).
    pub pre_vote: bool,
    /// [`Config::check_quorum`] for every node (on by default, as in `Config::new`).
    pub check_quorum: bool,
    /// Whether a disk sometimes stalls: one sync in ten takes up to 50 ms instead of up to 2.
    pub disk_stalls: bool,
    /// The nodes' election timeout range and heartbeat interval, in microseconds.
    pub timing: Timing,
    /// Whether each server's application takes a snapshot after applying every index `i` with
    /// `(i + 1) % interval == 0` (the lab's rule, with interval 10).
    pub snapshot_interval: Option<u64>,
    /// [`Config::max_snapshot_chunk`] for every node.
    pub snapshot_chunk: usize,
    /// [`Config::stream_snapshots`] for every node: the simulated storage then keeps each
    /// server's snapshot bytes (stored when its application takes one, staged chunk by chunk
    /// when it receives one), the core asks it for the chunks it sends, and every staged
    /// chunk is checked to continue the staged bytes and every installed snapshot to name
    /// bytes the server stored or staged.
    pub stream_snapshots: bool,
    /// [`Config::snapshot_catchup_entries`] for every node (5 by default: few enough that a
    /// follower out for a lab round needs a snapshot, as the 2D scenarios intend).
    pub snapshot_catchup_entries: u64,
    /// [`Config::max_entries_per_append`] for every node.
    pub max_entries_per_append: usize,
    /// The run fails (as a liveness failure) once it has processed this many events: a
    /// message storm shows up as a failure instead of a run that never ends.
    pub max_events: u64,
    /// Whether to keep a digest of the run: one hash over every event each node steps on and
    /// every action it emits ([`Sim::digest`]). Two runs of the same seed have the same digest
    /// exactly when the nodes behaved the same, which makes it the regression check of a
    /// refactoring that must not change behaviour. Costs time; off by default.
    pub digest: bool,
    /// Crash points: a node that sends messages while some of its writes are not yet durable
    /// is, one time in this many, rebooted at once (losing some of those writes). 0 = never.
    pub crash_point_odds: u64,
    /// [`Config::lease_reads`] for every node (off by default).
    pub lease_reads: bool,
    /// [`Config::clock_drift_bound`] for every node, in microseconds.
    pub clock_drift_bound: u64,
    /// Clock drift for the scenarios that set clocks apart once they know the leader (see
    /// [`Sim::set_clock_rate`]): the leader's clock runs this many parts per million slow and
    /// the others' as much fast, the worst case for a lease.
    pub clock_drift_ppm: i64,
    /// Whether every read is checked against the highest commit index any node had when it
    /// was asked (on by default; off to let the linearizability checker alone find a stale
    /// read).
    pub check_read_floor: bool,
    /// Whether the key-value model's clients write through client sessions (on by default;
    /// off, a write retried after an unknown outcome may take effect twice, which the judge
    /// must catch).
    pub client_sessions: bool,
    /// Deliberate bugs in every node (test-only).
    #[cfg(feature = "bug-injection")]
    pub bugs: crate::config::InjectedBugs,
}

impl SimOptions {
    /// `nodes` servers on a reliable network, crashes losing unsynced writes, no leader no-op.
    pub fn new(nodes: usize, seed: u64) -> Self {
        Self {
            nodes,
            seed,
            unreliable: false,
            crash_loses_unsynced: true,
            leader_noop: false,
            initial_voters: None,
            pre_vote: true,
            check_quorum: true,
            disk_stalls: false,
            timing: Timing::LAB,
            crash_point_odds: 0,
            lease_reads: false,
            clock_drift_bound: 50 * MS,
            clock_drift_ppm: 0,
            check_read_floor: true,
            client_sessions: true,
            snapshot_interval: None,
            snapshot_chunk: 1024,
            stream_snapshots: false,
            snapshot_catchup_entries: 5,
            max_entries_per_append: 256,
            max_events: 50_000_000,
            digest: false,
            #[cfg(feature = "bug-injection")]
            bugs: crate::config::InjectedBugs::default(),
        }
    }
}

/// The timing the nodes run with, in microseconds of virtual time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Lower bound of the election timeout.
    pub election_timeout_min: u64,
    /// Upper bound (exclusive) of the election timeout.
    pub election_timeout_max: u64,
    /// Heartbeat interval.
    pub heartbeat_interval: u64,
}

impl Timing {
    /// The lab's: elections after 300–600 ms, heartbeats every 100 ms.
    pub const LAB: Self = Self {
        election_timeout_min: 300 * MS,
        election_timeout_max: 600 * MS,
        heartbeat_interval: 100 * MS,
    };
    /// Tight: elections after 40–60 ms, heartbeats every 15 ms. Candidates often collide,
    /// which the random search uses to provoke split votes.
    pub const TIGHT: Self = Self {
        election_timeout_min: 40 * MS,
        election_timeout_max: 60 * MS,
        heartbeat_interval: 15 * MS,
    };
}

/// Why a simulation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// A safety property was violated.
    Safety,
    /// A scenario's expectation (a leader, an agreement, a bound) was not met in time.
    Liveness,
}

/// A failed run: what went wrong, when, and the events just before.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The seed of the run.
    pub seed: u64,
    /// Safety or liveness.
    pub kind: FailureKind,
    /// What went wrong.
    pub message: String,
    /// Virtual time of the failure, in microseconds.
    pub time: u64,
    /// The last events before the failure, oldest first.
    pub recent_events: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            FailureKind::Safety => "safety violation",
            FailureKind::Liveness => "liveness failure",
        };
        writeln!(
            f,
            "seed {}: {kind} at {:.3} s: {}",
            self.seed,
            self.time as f64 / SECOND as f64,
            self.message
        )?;
        writeln!(f, "last events:")?;
        for e in &self.recent_events {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

/// Message and byte counters, as the lab counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests (vote and append requests) sent, delivered or not.
    pub requests_sent: u64,
    /// Bytes of requests at send plus bytes of responses at delivery, in the postcard encoding.
    pub bytes: u64,
    /// Messages the network dropped (disconnection, partition, loss).
    pub dropped: u64,
    /// Events processed.
    pub events: u64,
    /// Snapshot chunks sent.
    pub snapshot_chunks: u64,
    /// Snapshots installed from a leader (state machines restored by the core's order).
    pub snapshots_installed: u64,
    /// Streamed snapshots: chunks the core asked for that storage could not read (the
    /// snapshot was replaced, or the offset is past its end), so none was sent.
    pub snapshot_chunks_unread: u64,
}

#[derive(Debug, Clone)]
enum SimEvent {
    Deliver {
        to: usize,
        to_incarnation: u64,
        bytes: u64,
        message: Message,
    },
    Timer {
        server: usize,
        incarnation: u64,
    },
    Synced {
        server: usize,
        incarnation: u64,
        seq: u64,
    },
    Reboot {
        server: usize,
        incarnation: u64,
    },
    /// A key-value client acts (see [`kv`]).
    Client {
        client: usize,
    },
}

#[derive(Debug, Clone)]
struct Scheduled {
    at: u64,
    order: u64,
    event: SimEvent,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

/// A server's disk: what is durable, and the writes still on their way.
#[derive(Debug, Default, Clone)]
struct Storage {
    durable: DurableState,
    /// `durable`'s log and memberships, followed through the writes made durable.
    view: LogView,
    unsynced: VecDeque<Persist>,
    last_sync_at: u64,
    /// Streamed snapshots: the snapshot files, by last index (one the application stored, or
    /// one staged from a leader and installed). Files below the durable snapshot are deleted.
    snapshot_files: BTreeMap<Index, Payload>,
    /// Streamed snapshots: the staging file of a snapshot being received, lost in a crash.
    staged: Option<(SnapshotMeta, Vec<u8>)>,
    /// Streamed snapshots: the snapshot file open for the transfer to each follower (an open
    /// file stays readable after it is deleted), by follower; closed by a crash.
    reading: BTreeMap<NodeId, (Index, Payload)>,
    /// Streamed snapshots: a snapshot the node asked to read that was deleted, to report
    /// after the step.
    gone: Option<Index>,
}

impl Storage {
    /// The bytes the persisted Raft state takes in our encoding (hard state and log; the
    /// snapshot is stored apart, as in the lab).
    fn encoded_size(&self) -> usize {
        encoded_len(&self.durable.hard_state) + encoded_len(&self.durable.log)
    }
}

/// Follows `write` on a log view (truncation, snapshot, appends, and the memberships they
/// bring), checking Log Matching for every entry written, that a snapshot covers exactly the
/// applied history, and that a membership entry decodes.
fn mirror(
    view: &mut LogView,
    write: &Persist,
    checker: &mut Checker,
    id: NodeId,
) -> Result<(), String> {
    if let Some(from) = write.truncate_from {
        view.truncate_from(from);
    }
    if let Some(snapshot) = &write.snapshot {
        let meta = snapshot.meta;
        let Some(hash) = checker.applied_hash(meta.last_index) else {
            return Err(format!(
                "node {id} stored a snapshot up to index {}, which was never applied",
                meta.last_index
            ));
        };
        if checker.written(meta.last_index, meta.last_term) != Some(hash) {
            return Err(format!(
                "node {id} stored a snapshot up to index {} with term {}, which is not the term \
                 of the entry applied there",
                meta.last_index, meta.last_term
            ));
        }
        if view.term(meta.last_index) == Some(meta.last_term)
            && view.hash(meta.last_index) != Some(hash)
        {
            return Err(format!(
                "State Machine Safety: node {id}'s log up to {} differs from the applied history \
                 its snapshot covers",
                meta.last_index
            ));
        }
        view.compact(meta.last_index, meta.last_term, hash, &snapshot.membership);
    }
    if write.first_index != view.len() + 1 {
        return Err(format!(
            "node {id} persisted entries at index {} after a log ending at {}",
            write.first_index,
            view.len()
        ));
    }
    for (k, entry) in write.entries.iter().enumerate() {
        let index = write.first_index + k as Index;
        let hash = view.push(entry);
        if entry.kind == EntryKind::Membership {
            // A node that restarts from this log refuses it if the entry does not decode.
            let Some(membership) = Membership::decode(&entry.data) else {
                return Err(format!(
                    "node {id} persisted a membership entry at index {index} that does not decode"
                ));
            };
            view.push_membership(membership);
        }
        checker.entry_written(id, index, entry.term, hash)?;
    }
    Ok(())
}

/// The application model: the lab's, which keeps every command it applied, plus the chain
/// hash of the whole applied history so that a restored snapshot can be checked exactly.
#[derive(Debug, Clone, Default)]
struct App {
    last_index: Index,
    digest: u64,
    commands: Vec<Payload>,
    /// A snapshot taken while applying, to hand to the node after the step.
    due_snapshot: Option<(Index, Payload)>,
}

impl App {
    /// The state as `node` serializes it: the same state gives different bytes on different
    /// nodes (a node tag at both ends, as a real application's non-canonical serialization
    /// would: map order, timestamps, compression), so that a snapshot spliced from two
    /// nodes' transfers cannot be restored (see [`App::decode_snapshot`]).
    fn snapshot_bytes(&self, node: NodeId) -> Payload {
        let state = (self.last_index, self.digest, &self.commands);
        let mut bytes = node.to_le_bytes().to_vec();
        bytes.extend(postcard::to_allocvec(&state).unwrap_or_default());
        bytes.extend(node.to_le_bytes());
        Payload::from(bytes)
    }

    /// The state in snapshot bytes made by [`App::snapshot_bytes`] on any node: the tags at
    /// both ends must be the same node's.
    fn decode_snapshot(bytes: &[u8]) -> Result<(Index, u64, Vec<Payload>), String> {
        const TAG: usize = core::mem::size_of::<NodeId>();
        if bytes.len() < 2 * TAG || bytes[..TAG] != bytes[bytes.len() - TAG..] {
            return Err(
                "its two ends carry different node tags (spliced from two nodes' snapshots)".into(),
            );
        }
        postcard::from_bytes(&bytes[TAG..bytes.len() - TAG]).map_err(|e| e.to_string())
    }
}

#[derive(Debug, Clone)]
struct Server {
    id: NodeId,
    node: Option<Node>,
    incarnation: u64,
    storage: Storage,
    /// The in-memory log of the live node and its memberships, followed through its persist
    /// actions (restarted from `storage.view`).
    view: LogView,
    /// What the application applied, by index; survives restarts.
    applied: Vec<Entry>,
    /// The live instance's state machine.
    app: App,
    /// The live instance's key-value state (see [`kv`]), rebuilt from `app` on restore.
    kv: kv::KvState,
    /// Requests received by the current incarnation.
    requests_received: u64,
    timer_at: Option<u64>,
    /// Paused (a stop-the-world pause): its events wait in `backlog` until it resumes.
    paused: bool,
    /// Vote responses with `granted` it sent, over all incarnations.
    votes_granted: u64,
    /// How often it became candidate or pre-candidate, over all incarnations.
    campaigns: u64,
    backlog: Vec<SimEvent>,
    /// What the live node last showed: role, term, commit index, applied index.
    last_role: Role,
    last_term: Term,
    last_commit: Index,
    last_applied: Index,
    /// The live node's membership was last found equal to `view`'s newest, this one (held, so
    /// that its address is not reused), while the node had its membership from this index and
    /// its snapshot at this one. Unless one of them moved, it needs no comparing again.
    membership_checked: Option<(Arc<Membership>, Index, Index)>,
}

#[derive(Debug, Clone, Copy)]
enum Trace {
    Deliver {
        from: NodeId,
        to: NodeId,
        term: Term,
        what: &'static str,
    },
    Timer(NodeId),
    Synced(NodeId, u64),
    Became(NodeId, Role, Term),
    Crash(NodeId, usize),
    Start(NodeId),
    Connect(NodeId),
    Disconnect(NodeId),
    Partition,
    Link(NodeId, NodeId, bool),
    Pause(NodeId, bool),
    Propose(NodeId, Option<Index>),
    Membership(NodeId, bool),
}

/// The simulated cluster. See the [module documentation](self). A clone is an independent
/// copy of the whole run (what the explorer branches on).
#[derive(Debug, Clone)]
pub struct Sim {
    options: SimOptions,
    rng: Rng,
    now: u64,
    order: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    servers: Vec<Server>,
    connected: Vec<bool>,
    group: Vec<u8>,
    /// `blocked[from * n + to]`: messages from `from` to `to` are dropped (a one-way cut).
    blocked: Vec<bool>,
    reliable: bool,
    long_reordering: bool,
    checker: Checker,
    counters: Counters,
    trace: VecDeque<(u64, Trace)>,
    failure: Option<Failure>,
    actions: Vec<Action>,
    last_outcome: Option<ProposalOutcome>,
    last_membership_outcome: Option<MembershipOutcome>,
    /// The highest index a leader committed while a quorum of its memberships in force held it
    /// durably.
    durably_committed: Index,
    /// The first entry applied at each index, by anyone (State Machine Safety makes it the
    /// only one).
    history: Vec<Entry>,
    peak_persisted_size: usize,
    digest: Digest,
    /// The highest commit index any node ever had: every read asked later must be answered
    /// at an index at least this high.
    highest_commit: Index,
    /// Reads asked with [`Sim::read`] or by the key-value clients.
    reads: ReadBook,
    /// Leadership transfer outcomes, in order: the server and what it answered.
    transfers: Vec<(usize, TransferOutcome)>,
    /// The key-value workload, when one runs.
    kv: kv::Workload,
    /// Each server's clock.
    clocks: Vec<Clock>,
    /// When the leader of each term first committed an entry of its term.
    first_commits: BTreeMap<Term, u64>,
}

/// A server's clock: from true time `since_true`, when it read `since_local`, it runs
/// `ppm` parts per million fast (slow when negative).
#[derive(Debug, Clone, Copy, Default)]
struct Clock {
    since_true: u64,
    since_local: u64,
    ppm: i64,
}

impl Clock {
    fn rate(self) -> u128 {
        (1_000_000 + self.ppm).max(1) as u128
    }

    /// What the clock reads at true time `t` (not before `since_true`).
    fn local(self, t: u64) -> u64 {
        if self.ppm == 0 {
            return self.since_local + (t - self.since_true);
        }
        let elapsed = u128::from(t.saturating_sub(self.since_true)) * self.rate() / 1_000_000;
        self.since_local
            .saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX))
    }

    /// The first true time at which the clock reads at least `local`.
    fn true_time(self, local: u64) -> u64 {
        let ahead = local.saturating_sub(self.since_local);
        if self.ppm == 0 {
            return self.since_true.saturating_add(ahead);
        }
        let elapsed = (u128::from(ahead) * 1_000_000).div_ceil(self.rate());
        self.since_true
            .saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX))
    }
}

/// The reads in flight and their outcomes.
#[derive(Debug, Default, Clone)]
struct ReadBook {
    next_context: u64,
    /// Per read in flight: its context, server, the incarnation asked, and the highest commit
    /// index when asked.
    pending: Vec<(u64, usize, u64, Index)>,
    /// How reads ended, for [`Sim::read_outcome`]: served at an index, or refused.
    outcomes: BTreeMap<u64, ReadOutcome>,
    /// Every read served: by which server, when.
    served: Vec<(usize, u64)>,
}

/// How a read asked with [`Sim::read`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadOutcome {
    /// Served by the server at this read index, at this virtual time.
    Ready {
        /// The read index.
        index: Index,
        /// When it was served.
        at: u64,
    },
    /// Refused.
    Refused(ReadRefusal),
}

/// FNV-1a over the `Debug` rendering of what it is fed, without allocating.
#[derive(Debug, Clone, Copy)]
struct Digest(u64);

impl Default for Digest {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl fmt::Write for Digest {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Ok(())
    }
}

const TRACE_LEN: usize = 4000;

impl Sim {
    /// A cluster of `options.nodes` servers, all started and connected.
    pub fn new(options: SimOptions) -> Self {
        let n = options.nodes;
        let mut sim = Self {
            rng: Rng::new(options.seed ^ 0x5EED_5EED_5EED_5EED),
            now: 0,
            order: 0,
            queue: BinaryHeap::new(),
            servers: (0..n)
                .map(|i| Server {
                    id: i as NodeId + 1,
                    node: None,
                    incarnation: 0,
                    storage: Storage::default(),
                    view: LogView::default(),
                    applied: Vec::new(),
                    app: App::default(),
                    kv: kv::KvState::default(),
                    requests_received: 0,
                    timer_at: None,
                    paused: false,
                    votes_granted: 0,
                    campaigns: 0,
                    backlog: Vec::new(),
                    last_role: Role::Follower,
                    last_term: 0,
                    last_commit: 0,
                    last_applied: 0,
                    membership_checked: None,
                })
                .collect(),
            connected: std::vec![false; n],
            group: std::vec![0; n],
            blocked: std::vec![false; n * n],
            reliable: !options.unreliable,
            long_reordering: false,
            checker: Checker::default(),
            counters: Counters::default(),
            trace: VecDeque::with_capacity(TRACE_LEN),
            failure: None,
            actions: Vec::new(),
            last_outcome: None,
            last_membership_outcome: None,
            durably_committed: 0,
            history: Vec::new(),
            peak_persisted_size: 0,
            digest: Digest::default(),
            highest_commit: 0,
            reads: ReadBook::default(),
            transfers: Vec::new(),
            kv: kv::Workload::default(),
            clocks: std::vec![Clock::default(); n],
            first_commits: BTreeMap::new(),
            options,
        };
        // The bootstrap servers start with their voters in force, the others with no one.
        let bootstrap = sim.bootstrap_voters();
        for server in &mut sim.servers {
            if bootstrap.contains(&server.id) {
                server.storage.view = LogView::new(Membership::new(bootstrap.iter().copied()));
            }
        }
        for s in 0..n {
            sim.start(s);
            sim.connect(s);
        }
        sim
    }

    // --- Inspection --------------------------------------------------------------------------

    /// Number of servers.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Whether the cluster has no servers.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// The seed of this run.
    pub fn seed(&self) -> u64 {
        self.options.seed
    }

    /// Current virtual time in microseconds.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The live node of server `s` (0-based), if it is running.
    pub fn node(&self, s: usize) -> Option<&Node> {
        self.servers[s].node.as_ref()
    }

    /// Whether server `s` is connected.
    pub fn is_connected(&self, s: usize) -> bool {
        self.connected[s]
    }

    /// The nodes' election timeout range and heartbeat interval.
    pub fn timing(&self) -> Timing {
        self.options.timing
    }

    /// Whether server `s` is running.
    pub fn is_alive(&self, s: usize) -> bool {
        self.servers[s].node.is_some()
    }

    /// Message, byte and event counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Whether server `s` has writes not yet durable (a crash now may lose them).
    pub fn has_unsynced_writes(&self, s: usize) -> bool {
        !self.servers[s].storage.unsynced.is_empty()
    }

    /// Requests received by the current incarnation of server `s`.
    pub fn requests_received(&self, s: usize) -> u64 {
        self.servers[s].requests_received
    }

    /// The largest durable Raft state (term, vote, log) any server had so far, in bytes,
    /// measured after every durable write when the application snapshots (0 otherwise).
    pub fn peak_persisted_size(&self) -> usize {
        self.peak_persisted_size
    }

    /// The bytes server `s`'s durable Raft state (term, vote, log) takes when encoded.
    pub fn persisted_size(&self, s: usize) -> usize {
        self.servers[s].storage.encoded_size()
    }

    /// The digest of the run so far (see [`SimOptions::digest`]); 0 when it is not kept.
    pub fn digest(&self) -> u64 {
        if self.options.digest {
            self.digest.0
        } else {
            0
        }
    }

    /// The safety violation that stopped the run, if any.
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// A liveness failure at the current time, with the recent events.
    pub fn fail(&self, message: impl Into<String>) -> Failure {
        self.failure_now(FailureKind::Liveness, message.into())
    }

    /// How many servers applied `index`, and the command (the check that they agree is done
    /// after every event).
    pub fn n_committed(&self, index: Index) -> (usize, Option<Payload>) {
        let mut count = 0;
        let mut command = None;
        for server in &self.servers {
            if let Some(entry) = usize::try_from(index)
                .ok()
                .and_then(|i| i.checked_sub(1))
                .and_then(|i| server.applied.get(i))
            {
                count += 1;
                command = Some(entry.data.clone());
            }
        }
        (count, command)
    }

    /// The highest index applied by server `s` (over all its incarnations).
    pub fn applied_len(&self, s: usize) -> Index {
        self.servers[s].applied.len() as Index
    }

    // --- Faults ------------------------------------------------------------------------------

    /// Connects server `s`: it can reach, and be reached by, every connected server of its
    /// group.
    pub fn connect(&mut self, s: usize) {
        self.connected[s] = true;
        self.record(Trace::Connect(self.servers[s].id));
    }

    /// Disconnects server `s` from everyone.
    pub fn disconnect(&mut self, s: usize) {
        self.connected[s] = false;
        self.record(Trace::Disconnect(self.servers[s].id));
    }

    /// Splits the connected servers in two groups: those in `side` and the others. Messages do
    /// not cross between groups.
    pub fn partition(&mut self, side: &[usize]) {
        for s in 0..self.servers.len() {
            self.group[s] = u8::from(side.contains(&s));
        }
        self.record(Trace::Partition);
    }

    /// Removes any partition.
    pub fn heal_partition(&mut self) {
        self.group.iter_mut().for_each(|g| *g = 0);
        self.record(Trace::Partition);
    }

    /// Drops every message from server `from` to server `to`, while the other direction
    /// still flows (a one-way link fault), until [`heal_links`](Self::heal_links).
    pub fn cut_link(&mut self, from: usize, to: usize) {
        let n = self.servers.len();
        self.blocked[from * n + to] = true;
        self.record(Trace::Link(
            self.servers[from].id,
            self.servers[to].id,
            false,
        ));
    }

    /// Cuts the link between servers `a` and `b` both ways: with other links up, a partial
    /// partition (one server may still reach both sides, a "bridge").
    pub fn cut_between(&mut self, a: usize, b: usize) {
        self.cut_link(a, b);
        self.cut_link(b, a);
    }

    /// Restores every link cut with [`cut_link`](Self::cut_link) or
    /// [`cut_between`](Self::cut_between).
    pub fn heal_links(&mut self) {
        self.blocked.iter_mut().for_each(|b| *b = false);
        self.record(Trace::Partition);
    }

    /// Pauses server `s` (a stop-the-world pause, as of a process stopped by a signal or a
    /// long garbage collection): it steps on nothing until [`resume`](Self::resume), while
    /// messages to it, its timers and its disk's acknowledgements wait. It keeps its state,
    /// its clock jumps forward when it resumes, and what it then sends arrives late.
    pub fn pause(&mut self, s: usize) {
        if self.servers[s].node.is_some() && !self.servers[s].paused {
            self.servers[s].paused = true;
            self.record(Trace::Pause(self.servers[s].id, true));
        }
    }

    /// Resumes a paused server: its timers fire at once (it acts on its old state first),
    /// then what waited for it is delivered in order.
    pub fn resume(&mut self, s: usize) {
        let server = &mut self.servers[s];
        if !server.paused {
            return;
        }
        server.paused = false;
        server.timer_at = None;
        let backlog = std::mem::take(&mut server.backlog);
        let id = server.id;
        self.record(Trace::Pause(id, false));
        self.schedule_timer(s);
        for event in backlog {
            if !matches!(event, SimEvent::Timer { .. }) {
                self.schedule(self.now, event);
            }
        }
    }

    /// Whether server `s` is paused.
    pub fn is_paused(&self, s: usize) -> bool {
        self.servers[s].paused
    }

    /// Switches between the reliable and the unreliable network profile.
    pub fn set_reliable(&mut self, reliable: bool) {
        self.reliable = reliable;
    }

    /// Sets the odds of crash points (see [`SimOptions::crash_point_odds`]); 0 turns them off.
    pub fn set_crash_point_odds(&mut self, odds: u64) {
        self.options.crash_point_odds = odds;
    }

    /// Switches long reordering of replies on or off.
    pub fn set_long_reordering(&mut self, on: bool) {
        self.long_reordering = on;
    }

    /// Crashes server `s`: it is disconnected, its memory is lost, and its writes not yet
    /// reported durable survive only as a random prefix (or entirely, if the options say so).
    pub fn crash(&mut self, s: usize) {
        self.disconnect(s);
        let server = &mut self.servers[s];
        if server.node.take().is_none() {
            return;
        }
        server.incarnation += 1;
        server.timer_at = None;
        server.paused = false;
        server.backlog.clear();
        let pending = server.storage.unsynced.len();
        let survivors = if self.options.crash_loses_unsynced {
            self.rng.range(0, pending as u64 + 1) as usize
        } else {
            pending
        };
        let writes: Vec<Persist> = server.storage.unsynced.drain(..).collect();
        server.storage.staged = None;
        server.storage.reading.clear();
        let id = server.id;
        for write in writes.iter().take(survivors) {
            self.make_durable(s, write);
        }
        self.record(Trace::Crash(id, pending - survivors));
    }

    /// Starts server `s` from its durable state (after a crash; a running server is crashed
    /// first). It stays disconnected until [`connect`](Self::connect).
    pub fn start(&mut self, s: usize) {
        if self.servers[s].node.is_some() {
            self.crash(s);
        }
        let config = self.node_config(s);
        let durable = self.servers[s].storage.durable.clone();
        self.servers[s].app = App::default();
        self.servers[s].kv = kv::KvState::default();
        self.servers[s].last_applied = 0;
        if let Some(snapshot) = &durable.snapshot {
            if let Err(message) = self.restore_app(s, snapshot) {
                return self.set_failure(FailureKind::Safety, message);
            }
        }
        let local_now = self.local_time(s, self.now);
        let server = &mut self.servers[s];
        let node = match Node::restore(config, durable, local_now) {
            Ok(node) => node,
            Err(e) => {
                let message = format!("server {} cannot restart: {e}", server.id);
                self.set_failure(FailureKind::Safety, message);
                return;
            }
        };
        server.view = server.storage.view.clone();
        server.membership_checked = None;
        server.last_role = Role::Follower;
        server.last_term = node.term();
        server.last_commit = node.commit_index();
        server.requests_received = 0;
        server.node = Some(node);
        let id = server.id;
        self.record(Trace::Start(id));
        self.schedule_timer(s);
    }

    /// Crashes and restarts server `s`, keeping its connectivity.
    pub fn restart(&mut self, s: usize) {
        let was_connected = self.connected[s];
        self.crash(s);
        self.start(s);
        if was_connected {
            self.connect(s);
        }
    }

    // --- Exploration (see [`explore`]) ---------------------------------------------------------

    /// The events waiting to happen that would do something if they happened now, by their
    /// order number: messages a live addressee would receive, armed timers of live servers,
    /// and syncs of live servers' writes. Messages the network would drop anyway and timers
    /// since re-armed are left out (they change nothing).
    pub(crate) fn explore_pending(&self) -> Vec<(u64, explore::Pending)> {
        self.explore_events()
            .into_iter()
            .map(|(order, pending, _)| (order, pending))
            .collect()
    }

    /// [`explore_pending`](Self::explore_pending) with each event itself.
    fn explore_events(&self) -> Vec<(u64, explore::Pending, &SimEvent)> {
        let mut pending: Vec<(u64, explore::Pending, &SimEvent)> = self
            .queue
            .iter()
            .filter_map(|Reverse(scheduled)| {
                let what = match &scheduled.event {
                    SimEvent::Deliver {
                        to,
                        to_incarnation,
                        message,
                        ..
                    } => {
                        let from = self.index_of(message.from)?;
                        let live = self.servers[*to].incarnation == *to_incarnation
                            && self.servers[*to].node.is_some();
                        if !live || !self.can_talk(from, *to) {
                            return None;
                        }
                        explore::Pending::Message {
                            from: message.from,
                            to: message.to,
                            what: message_kind(&message.body),
                            term: message.term,
                        }
                    }
                    SimEvent::Timer {
                        server,
                        incarnation,
                    } => {
                        let armed = &self.servers[*server];
                        if armed.incarnation != *incarnation
                            || armed.timer_at != Some(scheduled.at)
                            || armed.node.is_none()
                        {
                            return None;
                        }
                        explore::Pending::Timer(armed.id)
                    }
                    SimEvent::Synced {
                        server,
                        incarnation,
                        seq,
                    } => {
                        let on = &self.servers[*server];
                        if on.incarnation != *incarnation
                            || on.node.is_none()
                            || !on.storage.unsynced.iter().any(|w| w.seq <= *seq)
                        {
                            return None;
                        }
                        explore::Pending::Sync(on.id)
                    }
                    SimEvent::Reboot { .. } | SimEvent::Client { .. } => return None,
                };
                Some((scheduled.order, what, &scheduled.event))
            })
            .collect();
        pending.sort_by_key(|(order, _, _)| *order);
        pending
    }

    /// Makes the pending event `order` happen now (time moves on to its time if that is
    /// later; for a timer, to its node's next deadline): delivered (or synced, or fired),
    /// dropped (a message lost), or delivered with a copy left in flight (a duplicate).
    /// Returns false if there is no such event.
    pub(crate) fn explore_fire(&mut self, order: u64, how: explore::Fate) -> bool {
        let mut events = std::mem::take(&mut self.queue).into_vec();
        let Some(position) = events.iter().position(|Reverse(e)| e.order == order) else {
            self.queue = BinaryHeap::from(events);
            return false;
        };
        let Reverse(scheduled) = events.swap_remove(position);
        self.queue = BinaryHeap::from(events);
        self.now = self.now.max(scheduled.at);
        match (how, scheduled.event) {
            (explore::Fate::Lost, SimEvent::Deliver { .. }) => self.counters.dropped += 1,
            (explore::Fate::Duplicated, event @ SimEvent::Deliver { .. }) => {
                self.schedule(self.now, event.clone());
                self.process(event);
            }
            (
                _,
                SimEvent::Timer {
                    server,
                    incarnation,
                },
            ) => {
                // Fired at the node's own deadline, or now if that has passed: a timer "may
                // fire" from then on. (A timer armed for an earlier deadline that has moved
                // since would only wake the node for nothing.)
                if let Some(node) = &self.servers[server].node {
                    let deadline = self.true_time(server, node.next_deadline());
                    self.now = self.now.max(deadline);
                }
                self.servers[server].timer_at = Some(self.now);
                self.process(SimEvent::Timer {
                    server,
                    incarnation,
                });
            }
            (_, event) => self.process(event),
        }
        true
    }

    /// Crashes server `s`, keeping the first `keep` of its writes not yet durable (the
    /// others are lost).
    pub(crate) fn explore_crash(&mut self, s: usize, keep: usize) {
        self.servers[s].storage.unsynced.truncate(keep);
        let loses = self.options.crash_loses_unsynced;
        // Nothing random left to decide: every write still unsynced survives.
        self.options.crash_loses_unsynced = false;
        self.crash(s);
        self.options.crash_loses_unsynced = loses;
    }

    /// How many writes of server `s` are not yet durable.
    pub(crate) fn unsynced_writes(&self, s: usize) -> usize {
        self.servers[s].storage.unsynced.len()
    }

    /// Writes the state of the whole cluster to `out` as the explorer tells states apart:
    /// every server's node (see `Node::write_state`) or its absence, its durable state and
    /// writes not yet durable, and what is in flight (messages with their content, armed
    /// timers and pending syncs by server), without times or order numbers.
    pub(crate) fn explore_state(&self, out: &mut impl fmt::Write) -> fmt::Result {
        for server in &self.servers {
            match &server.node {
                Some(node) => node.write_state(out)?,
                None => out.write_str("down")?,
            }
            write!(out, "#{:?}#", server.storage.durable)?;
            for (rank, write) in server.storage.unsynced.iter().enumerate() {
                let mut write = write.clone();
                write.seq = rank as u64;
                write!(out, "{write:?}")?;
            }
            let storage = &server.storage;
            write!(
                out,
                "#{:?}{:?}{:?}#{}#",
                storage.snapshot_files,
                storage.staged,
                storage.reading,
                self.connected[(server.id - 1) as usize]
            )?;
        }
        // The reads in flight: where each was asked (and whether that server has restarted
        // since) and the commit index it must not be served below.
        for &(_, server, incarnation, floor) in &self.reads.pending {
            let current = self.servers[server].incarnation == incarnation;
            write!(out, "r{server}:{current}:{floor}")?;
        }
        // What is in flight, as a multiset: each item hashed, the hashes sorted.
        let mut in_flight: Vec<u128> = self
            .explore_events()
            .into_iter()
            .map(|(_, pending, event)| {
                use fmt::Write as _;
                let mut item = explore::KeyHasher::new();
                let _ = match (&pending, event) {
                    (_, SimEvent::Deliver { message, .. }) => write!(item, "m{message:?}"),
                    (explore::Pending::Sync(id), SimEvent::Synced { seq, server, .. }) => {
                        let rank = self.servers[*server]
                            .storage
                            .unsynced
                            .iter()
                            .take_while(|w| w.seq <= *seq)
                            .count();
                        write!(item, "s{id}:{rank}")
                    }
                    (pending, _) => write!(item, "{pending:?}"),
                };
                // A timer or a sync pending twice is pending once.
                let message = matches!(pending, explore::Pending::Message { .. });
                item.finish() | u128::from(message)
            })
            .collect();
        in_flight.sort_unstable();
        in_flight.dedup_by(|a, b| a == b && *a & 1 == 0);
        for item in in_flight {
            write!(out, "{item:x}")?;
        }
        // What the judge remembers of the path (the leader of each term, what was written,
        // committed and applied): a state reached along another history is judged apart.
        out.write_str("#judge#")?;
        self.checker.write_state(out)?;
        write!(out, "{}#{}", self.durably_committed, self.highest_commit)
    }

    // --- Time --------------------------------------------------------------------------------

    /// Runs every event up to `now + duration`, stopping at the first safety violation.
    pub fn sleep(&mut self, duration: u64) -> Result<(), Failure> {
        self.run_until(self.now + duration)
    }

    /// Runs every event up to time `until`, stopping at the first safety violation.
    pub fn run_until(&mut self, until: u64) -> Result<(), Failure> {
        if let Some(f) = &self.failure {
            return Err(f.clone());
        }
        while self.queue.peek().is_some_and(|Reverse(e)| e.at <= until) {
            let Some(Reverse(scheduled)) = self.queue.pop() else {
                break;
            };
            self.now = scheduled.at;
            self.counters.events += 1;
            if self.counters.events > self.options.max_events {
                let message = format!(
                    "more than {} events: a message storm or a run that cannot settle",
                    self.options.max_events
                );
                let failure = self.failure_now(FailureKind::Liveness, message);
                self.failure = Some(failure.clone());
                return Err(failure);
            }
            self.process(scheduled.event);
            if let Some(f) = &self.failure {
                return Err(f.clone());
            }
        }
        self.now = self.now.max(until);
        Ok(())
    }

    // --- Clients -----------------------------------------------------------------------------

    /// Proposes `command` at server `s`; returns `(index, term)` if it is the leader.
    pub fn propose(&mut self, s: usize, command: impl Into<Payload>) -> Option<(Index, Term)> {
        match self.propose_outcome(s, command)? {
            ProposalOutcome::Accepted {
                first_index, term, ..
            } => Some((first_index, term)),
            _ => None,
        }
    }

    /// Proposes `command` at server `s` and returns the node's answer; `None` when the server
    /// is down or paused (a client cannot reach it).
    pub fn propose_outcome(
        &mut self,
        s: usize,
        command: impl Into<Payload>,
    ) -> Option<ProposalOutcome> {
        if self.servers[s].node.is_none() || self.servers[s].paused {
            return None;
        }
        self.last_outcome = None;
        self.step(s, Event::Propose(std::vec![command.into()]));
        let outcome = self.last_outcome.take();
        let index = match outcome {
            Some(ProposalOutcome::Accepted { first_index, .. }) => Some(first_index),
            _ => None,
        };
        self.record(Trace::Propose(self.servers[s].id, index));
        outcome
    }

    /// Asks server `s` to change the membership and returns its answer; `None` when the
    /// server is down or paused.
    pub fn change_membership(
        &mut self,
        s: usize,
        change: MembershipChange,
    ) -> Option<MembershipOutcome> {
        if self.servers[s].node.is_none() || self.servers[s].paused {
            return None;
        }
        self.last_membership_outcome = None;
        self.step(s, Event::ChangeMembership(change));
        let outcome = self.last_membership_outcome.take();
        let accepted = matches!(outcome, Some(MembershipOutcome::Accepted { .. }));
        self.record(Trace::Membership(self.servers[s].id, accepted));
        outcome
    }

    /// Asks server `s` for a linearizable read; returns the read's context, with which
    /// [`read_outcome`](Self::read_outcome) tells how it ended, or `None` when the server is
    /// down or paused.
    pub fn read(&mut self, s: usize) -> Option<u64> {
        if self.servers[s].node.is_none() || self.servers[s].paused {
            return None;
        }
        let context = self.start_read(s);
        self.step(s, Event::Read { context });
        Some(context)
    }

    /// How the read `context` ended; `None` while it is in flight.
    pub fn read_outcome(&self, context: u64) -> Option<ReadOutcome> {
        self.reads.outcomes.get(&context).copied()
    }

    /// Asks server `s` to hand leadership over to server `to`; returns its first answer, or
    /// `None` when the server is down or paused.
    pub fn transfer_leadership(&mut self, s: usize, to: usize) -> Option<TransferOutcome> {
        if self.servers[s].node.is_none() || self.servers[s].paused {
            return None;
        }
        let before = self.transfers.len();
        let to = self.servers[to].id;
        self.step(s, Event::TransferLeadership { to });
        self.transfers[before..]
            .iter()
            .find(|(server, _)| *server == s)
            .map(|&(_, outcome)| outcome)
    }

    /// Every leadership transfer outcome so far, in order, with the server that gave it.
    pub fn transfer_outcomes(&self) -> &[(usize, TransferOutcome)] {
        &self.transfers
    }

    /// The highest commit index any node ever had.
    pub fn highest_commit(&self) -> Index {
        self.highest_commit
    }

    /// From now on, server `s`'s clock runs `ppm` parts per million fast (slow when negative).
    /// Its reading does not jump: only its rate changes.
    pub fn set_clock_rate(&mut self, s: usize, ppm: i64) {
        let local = self.clocks[s].local(self.now);
        self.clocks[s] = Clock {
            since_true: self.now,
            since_local: local,
            ppm,
        };
        // Its timer's true time moved.
        self.servers[s].timer_at = None;
        self.schedule_timer(s);
    }

    /// When the leader of `term` first committed an entry of its own term, if it did.
    pub fn first_commit_at(&self, term: Term) -> Option<u64> {
        self.first_commits.get(&term).copied()
    }

    /// How many reads server `s` served at or after virtual time `since`.
    pub fn reads_served_by(&self, s: usize, since: u64) -> usize {
        self.reads
            .served
            .iter()
            .filter(|&&(server, at)| server == s && at >= since)
            .count()
    }

    /// How many votes server `s` granted (vote responses it sent with `granted`), over all its
    /// incarnations.
    pub fn votes_granted(&self, s: usize) -> u64 {
        self.servers[s].votes_granted
    }

    /// How often server `s` became candidate or pre-candidate, over all its incarnations.
    pub fn campaigns(&self, s: usize) -> u64 {
        self.servers[s].campaigns
    }

    /// The leader of the highest term among the running servers, if any claims to lead.
    pub fn current_leader(&self) -> Option<usize> {
        (0..self.len())
            .filter(|&s| !self.servers[s].paused)
            .filter_map(|s| {
                self.node(s)
                    .filter(|n| n.is_leader())
                    .map(|n| (n.term(), s))
            })
            .max()
            .map(|(_, s)| s)
    }

    /// The highest term of any running server.
    pub fn max_term(&self) -> Term {
        (0..self.len())
            .filter_map(|s| self.node(s).map(Node::term))
            .max()
            .unwrap_or(0)
    }

    /// Delivers `message` to server `s` now, as if it came off the wire, although no node sent
    /// it: a corrupt or hostile frame. Nothing happens if `s` is not running.
    pub fn inject(&mut self, s: usize, message: Message) {
        self.record(Trace::Deliver {
            from: message.from,
            to: message.to,
            term: message.term,
            what: message_kind(&message.body),
        });
        self.step(s, Event::Message(message));
    }

    // --- Internals ---------------------------------------------------------------------------

    /// Registers a read about to be asked of server `s`: its context, and the commit index it
    /// must reach.
    fn start_read(&mut self, s: usize) -> u64 {
        let context = self.reads.next_context;
        self.reads.next_context += 1;
        let incarnation = self.servers[s].incarnation;
        self.reads
            .pending
            .push((context, s, incarnation, self.highest_commit));
        context
    }

    /// Server `s` serves the read `context` at `index`: it must have applied up to there, and
    /// `index` must cover every entry committed anywhere before the read was asked.
    fn on_read_ready(&mut self, s: usize, context: u64, index: Index) {
        let id = self.servers[s].id;
        let Some(&(_, asked_at, incarnation, floor)) =
            self.reads.pending.iter().find(|r| r.0 == context)
        else {
            let message = format!("node {id} served a read {context} nobody asked of it");
            return self.set_failure(FailureKind::Safety, message);
        };
        if asked_at != s || incarnation != self.servers[s].incarnation {
            let message = format!("node {id} served read {context}, asked of another instance");
            return self.set_failure(FailureKind::Safety, message);
        }
        let applied = self.servers[s].last_applied;
        if applied < index {
            let message = format!(
                "Read Safety: node {id} served read {context} at index {index} having applied only \
                 up to {applied}"
            );
            return self.set_failure(FailureKind::Safety, message);
        }
        if self.options.check_read_floor && index < floor {
            let message = format!(
                "Read Safety: node {id} served read {context} at index {index}, below {floor}, \
                 committed before the read was asked (a stale read)"
            );
            return self.set_failure(FailureKind::Safety, message);
        }
        let at = self.now;
        self.reads.served.push((s, at));
        self.on_read_end(context, ReadOutcome::Ready { index, at });
        self.kv_read_served(s, context);
    }

    fn on_read_end(&mut self, context: u64, outcome: ReadOutcome) {
        self.reads.pending.retain(|r| r.0 != context);
        self.reads.outcomes.insert(context, outcome);
        if let ReadOutcome::Refused(_) = outcome {
            self.kv_read_refused(context);
        }
    }

    /// What server `s`'s clock reads at true time `t`.
    fn local_time(&self, s: usize, t: u64) -> u64 {
        self.clocks[s].local(t)
    }

    /// The first true time at which server `s`'s clock reads at least `local`.
    fn true_time(&self, s: usize, local: u64) -> u64 {
        self.clocks[s].true_time(local)
    }

    /// The ids the cluster was bootstrapped with.
    fn bootstrap_voters(&self) -> Vec<NodeId> {
        let k = self.options.initial_voters.unwrap_or(self.servers.len());
        self.servers.iter().take(k).map(|x| x.id).collect()
    }

    fn node_config(&self, s: usize) -> Config {
        let server = &self.servers[s];
        let bootstrap = self.bootstrap_voters();
        let voters = if bootstrap.contains(&server.id) {
            bootstrap
        } else {
            Vec::new()
        };
        let mut config = Config::new(server.id, voters);
        let timing = self.options.timing;
        config.election_timeout_min = timing.election_timeout_min;
        config.election_timeout_max = timing.election_timeout_max;
        config.heartbeat_interval = timing.heartbeat_interval;
        config.leader_noop = self.options.leader_noop;
        config.pre_vote = self.options.pre_vote;
        config.check_quorum = self.options.check_quorum;
        config.lease_reads = self.options.lease_reads;
        config.clock_drift_bound = self.options.clock_drift_bound;
        config.max_snapshot_chunk = self.options.snapshot_chunk;
        config.stream_snapshots = self.options.stream_snapshots;
        config.snapshot_catchup_entries = self.options.snapshot_catchup_entries;
        config.max_entries_per_append = self.options.max_entries_per_append.max(1);
        config.seed = self.options.seed ^ (server.incarnation << 32) ^ 0x00C0_FFEE;
        #[cfg(feature = "bug-injection")]
        {
            config.bugs = self.options.bugs;
        }
        config
    }

    fn schedule(&mut self, at: u64, event: SimEvent) {
        self.order += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            order: self.order,
            event,
        }));
    }

    fn schedule_timer(&mut self, s: usize) {
        let server = &self.servers[s];
        let Some(node) = &server.node else { return };
        let deadline = self.true_time(s, node.next_deadline()).max(self.now);
        if server.timer_at.is_some_and(|t| t <= deadline) {
            return;
        }
        let incarnation = server.incarnation;
        self.servers[s].timer_at = Some(deadline);
        self.schedule(
            deadline,
            SimEvent::Timer {
                server: s,
                incarnation,
            },
        );
    }

    fn can_talk(&self, a: usize, b: usize) -> bool {
        self.connected[a]
            && self.connected[b]
            && self.group[a] == self.group[b]
            && !self.blocked[a * self.servers.len() + b]
    }

    fn process(&mut self, event: SimEvent) {
        let target = match &event {
            SimEvent::Deliver { to, .. } => Some(*to),
            SimEvent::Timer { server, .. } | SimEvent::Synced { server, .. } => Some(*server),
            SimEvent::Reboot { .. } | SimEvent::Client { .. } => None,
        };
        if let Some(server) = target.map(|t| &mut self.servers[t]).filter(|s| s.paused) {
            server.backlog.push(event);
            return;
        }
        match event {
            SimEvent::Deliver {
                to,
                to_incarnation,
                bytes,
                message,
            } => {
                let Some(from) = self.index_of(message.from) else {
                    return;
                };
                // A message to an instance that has since crashed is lost with it. A message
                // from a crashed instance was already on the wire: it still arrives if the
                // network connects the two (a rebooted sender is reconnected at once).
                let stale = self.servers[to].incarnation != to_incarnation;
                if stale || !self.can_talk(from, to) || self.servers[to].node.is_none() {
                    self.counters.dropped += 1;
                    return;
                }
                if message.body.is_request() {
                    self.servers[to].requests_received += 1;
                } else {
                    self.counters.bytes += bytes;
                }
                self.record(Trace::Deliver {
                    from: message.from,
                    to: message.to,
                    term: message.term,
                    what: message_kind(&message.body),
                });
                self.step(to, Event::Message(message));
            }
            SimEvent::Timer {
                server,
                incarnation,
            } => {
                if self.servers[server].incarnation != incarnation
                    || self.servers[server].timer_at != Some(self.now)
                {
                    return;
                }
                self.servers[server].timer_at = None;
                self.record(Trace::Timer(self.servers[server].id));
                self.step(server, Event::Tick);
            }
            SimEvent::Synced {
                server,
                incarnation,
                seq,
            } => {
                if self.servers[server].incarnation != incarnation {
                    return;
                }
                while let Some(write) = self.servers[server].storage.unsynced.pop_front() {
                    if write.seq > seq {
                        self.servers[server].storage.unsynced.push_front(write);
                        break;
                    }
                    self.make_durable(server, &write);
                }
                let id = self.servers[server].id;
                self.record(Trace::Synced(id, seq));
                self.check_durability();
                self.step(server, Event::Persisted { seq });
            }
            SimEvent::Reboot {
                server,
                incarnation,
            } => {
                if self.servers[server].incarnation == incarnation {
                    self.restart(server);
                    self.check_durability();
                }
            }
            SimEvent::Client { client } => self.client_acts(client),
        }
    }

    fn index_of(&self, id: NodeId) -> Option<usize> {
        let i = usize::try_from(id.checked_sub(1)?).ok()?;
        (i < self.servers.len()).then_some(i)
    }

    /// Steps server `s` and carries out its actions, checking every property on the way.
    fn step(&mut self, s: usize, event: Event) {
        let mut actions = std::mem::take(&mut self.actions);
        let (was_leader, term_before, membership_before) = {
            let server = &mut self.servers[s];
            let Some(node) = server.node.as_mut() else {
                self.actions = actions;
                return;
            };
            // A leader's membership may change during the step (it commits a joint membership
            // and leaves it at once): what it commits is judged against the one it started
            // with too. Only leaders commit, so only theirs is kept (a shared pointer).
            let before = (
                node.is_leader(),
                node.term(),
                node.is_leader()
                    .then(|| Arc::clone(server.view.membership())),
            );
            if self.options.digest {
                use fmt::Write;
                let _ = write!(self.digest, "{s} {} {event:?}", self.now);
            }
            let local_now = self.clocks[s].local(self.now);
            node.step_into(local_now, event, &mut actions);
            if self.options.digest {
                use fmt::Write;
                for action in &actions {
                    let _ = write!(self.digest, "{action:?}");
                }
            }
            before
        };
        let mut sent = false;
        for action in actions.drain(..) {
            match action {
                Action::Persist(write) => self.on_persist(s, write, was_leader, term_before),
                Action::Send(message) => {
                    sent = true;
                    self.send(s, message);
                }
                Action::Apply {
                    first_index,
                    entries,
                } => self.on_apply(s, first_index, entries),
                Action::ProposalOutcome(outcome) => self.last_outcome = Some(outcome),
                Action::MembershipOutcome(outcome) => self.last_membership_outcome = Some(outcome),
                Action::ReadReady { context, index } => self.on_read_ready(s, context, index),
                Action::ReadRefused { context, reason } => {
                    self.on_read_end(context, ReadOutcome::Refused(reason));
                }
                Action::TransferOutcome(outcome) => self.transfers.push((s, outcome)),
                Action::SendSnapshotChunk(request) => {
                    if let Some(message) = self.read_snapshot_chunk(s, request) {
                        sent = true;
                        self.send(s, message);
                    }
                }
                Action::StageSnapshotChunk { meta, offset, data } => {
                    self.stage_snapshot_chunk(s, meta, offset, &data);
                }
                Action::RestoreSnapshot(mut snapshot) => {
                    if self.options.stream_snapshots {
                        match self.snapshot_bytes(s, snapshot.meta) {
                            Ok(data) => snapshot.data = data,
                            Err(message) => {
                                self.set_failure(FailureKind::Safety, message);
                                break;
                            }
                        }
                    }
                    if snapshot.meta.last_index <= self.servers[s].last_applied {
                        let message = format!(
                            "node {} moved its applied index back from {} to {}",
                            self.servers[s].id,
                            self.servers[s].last_applied,
                            snapshot.meta.last_index
                        );
                        self.set_failure(FailureKind::Safety, message);
                    } else if let Err(message) = self.restore_app(s, &snapshot) {
                        self.set_failure(FailureKind::Safety, message);
                    } else {
                        self.counters.snapshots_installed += 1;
                    }
                }
            }
            if self.failure.is_some() {
                break;
            }
        }
        self.actions = actions;
        // Judge this step before the application's snapshot steps the node again.
        if self.failure.is_none() {
            self.check_node(
                s,
                was_leader.then_some(term_before),
                membership_before.as_ref(),
            );
        }
        if let Some((last_index, data)) = self.servers[s].app.due_snapshot.take() {
            if self.failure.is_none() {
                let data = if self.options.stream_snapshots {
                    // Stored first (written, synced and renamed), then reported. A file of the
                    // same index already holds the same state: it is kept, so that a transfer
                    // reading it never sees its bytes change.
                    let storage = &mut self.servers[s].storage;
                    storage.snapshot_files.entry(last_index).or_insert(data);
                    Payload::from(&[][..])
                } else {
                    data
                };
                self.step(s, Event::SnapshotTaken { last_index, data });
            }
        }
        if let Some(last_index) = self.servers[s].storage.gone.take() {
            if self.failure.is_none() {
                self.step(s, Event::SnapshotUnavailable { last_index });
            }
        }
        self.schedule_timer(s);
        let odds = self.options.crash_point_odds;
        if sent && odds > 0 && self.has_unsynced_writes(s) && self.rng.chance(1, odds) {
            let incarnation = self.servers[s].incarnation;
            let at = self.now + self.rng.range(1, 100);
            self.schedule(
                at,
                SimEvent::Reboot {
                    server: s,
                    incarnation,
                },
            );
        }
    }

    fn on_persist(&mut self, s: usize, mut write: Persist, was_leader: bool, term_before: Term) {
        if let Some(snapshot) = write
            .snapshot
            .as_mut()
            .filter(|_| self.options.stream_snapshots)
        {
            // The persist names the snapshot; storage keeps a file it stored for that index
            // (the same state), or else installs the bytes staged for it (moving the staging
            // file into place). A staging file at or below the index is garbage from then on.
            let meta = snapshot.meta;
            let storage = &mut self.servers[s].storage;
            let staged = storage
                .staged
                .take_if(|(m, _)| m.last_index <= meta.last_index);
            if let Some((m, bytes)) = staged {
                if m == meta && !storage.snapshot_files.contains_key(&meta.last_index) {
                    let bytes = Payload::from(bytes);
                    storage.snapshot_files.insert(meta.last_index, bytes);
                }
            }
            match self.servers[s].storage.snapshot_files.get(&meta.last_index) {
                Some(bytes) => snapshot.data = bytes.clone(),
                None => {
                    let message = format!(
                        "node {} installed snapshot {} whose bytes it neither stored nor staged",
                        self.servers[s].id, meta.last_index
                    );
                    return self.set_failure(FailureKind::Safety, message);
                }
            }
        }
        let server = &mut self.servers[s];
        let id = server.id;
        let still_leader_of_same_term = server
            .node
            .as_ref()
            .is_some_and(|n| n.is_leader() && n.term() == term_before);
        if was_leader && still_leader_of_same_term {
            if let Some(from) = write.truncate_from.filter(|&f| f <= server.view.len()) {
                let message = format!(
                    "Leader Append-Only: leader {id} of term {term_before} removed its entries \
                     from index {from}"
                );
                return self.set_failure(FailureKind::Safety, message);
            }
        }
        if let Err(message) = mirror(&mut server.view, &write, &mut self.checker, id) {
            return self.set_failure(FailureKind::Safety, message);
        }
        let slowest = if self.options.disk_stalls && self.rng.chance(1, 10) {
            50 * MS
        } else {
            2 * MS
        };
        let delay = self.rng.range(100, slowest);
        let at = (self.now + delay).max(server.storage.last_sync_at);
        server.storage.last_sync_at = at;
        let (incarnation, seq) = (server.incarnation, write.seq);
        server.storage.unsynced.push_back(write);
        self.schedule(
            at,
            SimEvent::Synced {
                server: s,
                incarnation,
                seq,
            },
        );
    }

    fn on_apply(&mut self, s: usize, first_index: Index, entries: Vec<Entry>) {
        let server = &mut self.servers[s];
        let id = server.id;
        if first_index != server.last_applied + 1 {
            let message = format!(
                "node {id} applied index {first_index} after index {}",
                server.last_applied
            );
            return self.set_failure(FailureKind::Safety, message);
        }
        for (k, entry) in entries.into_iter().enumerate() {
            let index = first_index + k as Index;
            let server = &mut self.servers[s];
            let Some(hash) = server.view.hash(index) else {
                let message = format!("node {id} applied index {index} beyond its log");
                return self.set_failure(FailureKind::Safety, message);
            };
            let previous = server.view.hash(index - 1).unwrap_or(0);
            if checker::chain(previous, &entry) != hash {
                let message = format!(
                    "node {id} applied at index {index} an entry that is not the one its log holds"
                );
                return self.set_failure(FailureKind::Safety, message);
            }
            if let Err(message) = self.checker.applied(id, index, hash) {
                return self.set_failure(FailureKind::Safety, message);
            }
            if self.history.len() as Index + 1 == index {
                self.history.push(entry.clone());
            }
            let app = &mut server.app;
            app.digest = checker::chain(app.digest, &entry);
            app.last_index = index;
            if entry.kind == EntryKind::Command {
                app.commands.push(entry.data.clone());
                server.kv.apply(index, &entry.data);
                if let Some(value) = server.kv.applied_twice.take() {
                    let message = format!(
                        "node {id} applied the write of value {value} twice: a retried command \
                         took effect again"
                    );
                    return self.set_failure(FailureKind::Safety, message);
                }
            }
            if app.digest != hash {
                let message = format!(
                    "node {id}'s state machine after index {index} differs from the applied history"
                );
                return self.set_failure(FailureKind::Safety, message);
            }
            if let Some(interval) = self.options.snapshot_interval {
                if (index + 1).is_multiple_of(interval) {
                    app.due_snapshot = Some((index, app.snapshot_bytes(id)));
                }
            }
            let for_clients = (entry.kind == EntryKind::Command && self.kv.is_waiting())
                .then(|| (entry.term, entry.data.clone()));
            let position = (index - 1) as usize;
            match server.applied.get(position) {
                Some(previous) if *previous != entry => {
                    let message = format!(
                        "State Machine Safety: node {id} applied a different command at index \
                         {index} after restarting"
                    );
                    return self.set_failure(FailureKind::Safety, message);
                }
                Some(_) => {}
                None => server.applied.push(entry),
            }
            server.last_applied = index;
            if let Some((term, data)) = for_clients {
                self.kv_applied(s, index, term, &data);
            }
        }
    }

    fn send(&mut self, from: usize, message: Message) {
        if message.body == (MessageBody::VoteResponse { granted: true }) {
            self.servers[from].votes_granted += 1;
        }
        let is_request = message.body.is_request();
        let bytes = encoded_len(&message) as u64;
        if is_request {
            self.counters.requests_sent += 1;
            self.counters.bytes += bytes;
        }
        if matches!(message.body, MessageBody::SnapshotChunk { .. }) {
            self.counters.snapshot_chunks += 1;
        }
        let Some(to) = self.index_of(message.to) else {
            self.counters.dropped += 1;
            return;
        };
        if !self.can_talk(from, to) {
            self.counters.dropped += 1;
            return;
        }
        let mut delay = self.rng.range(50, 550);
        if !self.reliable {
            if self.rng.chance(1, 10) {
                self.counters.dropped += 1;
                return;
            }
            if is_request {
                delay = self.rng.range(0, 27 * MS);
            }
        }
        if self.long_reordering && !is_request && self.rng.chance(2, 3) {
            let spread = self.rng.range(0, 2000 * MS + 1);
            delay = 200 * MS + self.rng.range(0, spread + 1);
        }
        let copies = if !self.reliable && self.rng.chance(1, 20) {
            2
        } else {
            1
        };
        for copy in 0..copies {
            let at = self.now + delay + copy * self.rng.range(0, 10 * MS);
            self.schedule(
                at,
                SimEvent::Deliver {
                    to,
                    to_incarnation: self.servers[to].incarnation,
                    bytes,
                    message: message.clone(),
                },
            );
        }
    }

    /// The checks on one node after it stepped.
    /// `led_in`: the term in which the node was leader at the start of the step, if it was (it
    /// may have stepped down during the step, after committing); `membership_before`: its
    /// membership in force then.
    fn check_node(
        &mut self,
        s: usize,
        led_in: Option<Term>,
        membership_before: Option<&Arc<Membership>>,
    ) {
        let server = &mut self.servers[s];
        let Some(node) = &server.node else { return };
        let id = server.id;
        let (role, term, commit, applied) = (
            node.role(),
            node.term(),
            node.commit_index(),
            node.applied_index(),
        );
        if term < server.last_term || commit < server.last_commit || applied < server.last_applied {
            let message = format!(
                "monotonicity: node {id} went from term {} commit {} applied {} to term {term} \
                 commit {commit} applied {applied}",
                server.last_term, server.last_commit, server.last_applied
            );
            return self.set_failure(FailureKind::Safety, message);
        }
        let probes = [node.last_log_index(), commit, server.view.len()];
        if node.last_log_index() != server.view.len()
            || node.snapshot_index() != server.view.base()
            || probes
                .iter()
                .any(|&i| node.log_term(i) != server.view.term(i))
        {
            let message = format!(
                "node {id}'s log (last index {}) differs from what its persist actions described \
                 ({} entries)",
                node.last_log_index(),
                server.view.len()
            );
            return self.set_failure(FailureKind::Safety, message);
        }
        // The membership in force is the newest its log holds, by the judge's own account.
        // Memberships change rarely: compared again only when the log's newest, or where the
        // node takes its own from, moved.
        let newest = server.view.membership();
        let checked = (node.membership_index(), node.snapshot_index());
        let unchanged = server
            .membership_checked
            .as_ref()
            .is_some_and(|(m, i, j)| Arc::ptr_eq(m, newest) && (*i, *j) == checked);
        if !unchanged {
            if node.membership() != &**newest {
                let message = format!(
                    "node {id} has {:?} in force, but its log holds {newest:?} as the newest \
                     membership",
                    node.membership(),
                );
                return self.set_failure(FailureKind::Safety, message);
            }
            server.membership_checked = Some((Arc::clone(newest), checked.0, checked.1));
        }
        let became = role != server.last_role || term != server.last_term;
        server.last_role = role;
        server.last_term = term;
        let commit_advanced = commit > server.last_commit;
        server.last_commit = commit;
        self.highest_commit = self.highest_commit.max(commit);
        if became {
            if matches!(role, Role::Candidate | Role::PreCandidate) {
                self.servers[s].campaigns += 1;
            }
            self.record(Trace::Became(id, role, term));
        }
        if role == Role::Leader {
            let server = &self.servers[s];
            let mut result = self.checker.leader(term, id);
            if became {
                result = result.and_then(|()| self.checker.new_leader(term, id, &server.view));
            }
            if let Err(message) = result {
                return self.set_failure(FailureKind::Safety, message);
            }
        }
        if role == Role::Leader || led_in == Some(term) {
            let server = &self.servers[s];
            if commit_advanced {
                if let Some(hash) = server.view.hash(commit) {
                    self.checker.committed(term, commit, hash);
                    // Commitment per configuration: a quorum of every configuration in force at
                    // the leader holds the entry durably, both the membership it stepped with
                    // and the one it ended the step with (committing a joint membership, a
                    // leader replaces it with the new voters alone within the same step). Both
                    // are the judge's own account of the leader's log, not the node's word.
                    let membership = Arc::clone(server.view.membership());
                    let holds = |other: &Server| {
                        let view = &other.storage.view;
                        view.base() >= commit || view.hash(commit) == Some(hash)
                    };
                    let before = membership_before.filter(|m| !Arc::ptr_eq(m, &membership));
                    let judged = [
                        (Some(&membership), "in force"),
                        (before, "in force before the step"),
                    ];
                    for (membership, when) in judged {
                        let Some(membership) = membership else {
                            continue;
                        };
                        if !self.quorum_holds(membership, holds) {
                            let message = format!(
                                "Durability: leader {id} of term {term} committed {commit} \
                                 before a quorum of {membership:?} (its membership {when}) held \
                                 it durably"
                            );
                            return self.set_failure(FailureKind::Safety, message);
                        }
                    }
                    self.durably_committed = self.durably_committed.max(commit);
                    if server.view.term(commit) == Some(term) {
                        self.first_commits.entry(term).or_insert(self.now);
                    }
                }
            }
        }
        self.check_durability();
    }

    /// Durability: the highest entry applied anywhere (acknowledged) was committed by a leader
    /// at a moment when a quorum of its memberships in force held it durably (checked then, in
    /// `check_node`, for the whole prefix: view hashes are chain hashes); durable data is never
    /// lost afterwards, so it still is.
    fn check_durability(&mut self) {
        let Some((index, _)) = self.checker.highest_applied() else {
            return;
        };
        if index > self.durably_committed {
            let message = format!(
                "Durability: entry {index} was applied, but no leader committed it while a quorum \
                 held it durably (checked up to {})",
                self.durably_committed
            );
            self.set_failure(FailureKind::Safety, message);
        }
    }

    /// Whether the servers for which `holds` is true are a majority of `membership`'s voters
    /// and, while joint, of its outgoing voters.
    fn quorum_holds(&self, membership: &Membership, holds: impl Fn(&Server) -> bool) -> bool {
        let majority = |set: &std::collections::BTreeSet<NodeId>| {
            let yes = set
                .iter()
                .filter(|&&id| self.index_of(id).is_some_and(|s| holds(&self.servers[s])))
                .count();
            yes > set.len() / 2
        };
        majority(membership.voters())
            && (!membership.is_joint() || majority(membership.outgoing_voters()))
    }

    /// Applies `write` to server `s`'s durable storage.
    fn make_durable(&mut self, s: usize, write: &Persist) {
        let server = &mut self.servers[s];
        write.apply_to(&mut server.storage.durable);
        if let Some(snapshot) = &write.snapshot {
            // Older snapshot files are garbage once a newer snapshot is durable.
            let keep = server
                .storage
                .snapshot_files
                .split_off(&snapshot.meta.last_index);
            server.storage.snapshot_files = keep;
        }
        if let Err(message) = mirror(
            &mut server.storage.view,
            write,
            &mut self.checker,
            server.id,
        ) {
            return self.set_failure(FailureKind::Safety, message);
        }
        if self.options.snapshot_interval.is_some() {
            let size = server.storage.encoded_size();
            self.peak_persisted_size = self.peak_persisted_size.max(size);
        }
    }

    /// Streamed snapshots: the bytes of snapshot `meta` for server `s` to restore from,
    /// stored or else staged (being installed), as storage installs them.
    fn snapshot_bytes(&self, s: usize, meta: SnapshotMeta) -> Result<Payload, String> {
        let storage = &self.servers[s].storage;
        if let Some(bytes) = storage.snapshot_files.get(&meta.last_index) {
            return Ok(bytes.clone());
        }
        match &storage.staged {
            Some((m, bytes)) if *m == meta => Ok(Payload::from(&bytes[..])),
            _ => Err(format!(
                "node {} restores snapshot {} whose bytes it neither stored nor staged",
                self.servers[s].id, meta.last_index
            )),
        }
    }

    /// Streamed snapshots: the chunk `request` asks server `s` to send, read from its stored
    /// snapshot (the file it has open for that follower, or else opened now), or `None` when
    /// storage cannot read it.
    fn read_snapshot_chunk(&mut self, s: usize, request: SnapshotChunkRequest) -> Option<Message> {
        let storage = &mut self.servers[s].storage;
        let index = request.meta.last_index;
        let open = storage
            .reading
            .get(&request.to)
            .filter(|(i, _)| *i == index)
            .map(|(_, bytes)| bytes.clone());
        let bytes = open.or_else(|| {
            let Some(bytes) = storage.snapshot_files.get(&index).cloned() else {
                storage.gone = Some(index);
                return None;
            };
            storage.reading.insert(request.to, (index, bytes.clone()));
            Some(bytes)
        });
        // Past the end, except that an empty snapshot is one empty last chunk.
        let past_end = |b: &Payload| {
            let offset = request.offset as usize;
            offset > b.len() || (offset == b.len() && !b.is_empty())
        };
        let Some(bytes) = bytes.filter(|b| !past_end(b)) else {
            self.counters.snapshot_chunks_unread += 1;
            return None;
        };
        let start = request.offset as usize;
        let end = start.saturating_add(request.max_len).min(bytes.len());
        let data = Payload::from(&bytes[start..end]);
        Some(request.into_message(data, end == bytes.len()))
    }

    /// Streamed snapshots: writes a received chunk to server `s`'s staging file, checking that
    /// it continues the staged bytes of the same snapshot.
    fn stage_snapshot_chunk(&mut self, s: usize, meta: SnapshotMeta, offset: u64, data: &[u8]) {
        let storage = &mut self.servers[s].storage;
        if offset == 0 {
            storage.staged = Some((meta, data.to_vec()));
            return;
        }
        match storage.staged.as_mut() {
            Some((m, bytes)) if *m == meta && bytes.len() as u64 == offset => {
                bytes.extend_from_slice(data);
            }
            other => {
                let held = other.map_or(0, |(_, b)| b.len());
                let message = format!(
                    "node {} staged a chunk of snapshot {} at offset {offset} after {held} bytes",
                    self.servers[s].id, meta.last_index
                );
                self.set_failure(FailureKind::Safety, message);
            }
        }
    }

    /// Loads server `s`'s state machine from `snapshot`, checking that it reproduces exactly
    /// the applied history up to its last index.
    fn restore_app(&mut self, s: usize, snapshot: &Snapshot) -> Result<(), String> {
        let id = self.servers[s].id;
        let last = snapshot.meta.last_index;
        let (index, digest, commands) = App::decode_snapshot(&snapshot.data)
            .map_err(|e| format!("node {id} got a snapshot it cannot decode: {e}"))?;
        let expected: Vec<&Payload> = self
            .history
            .iter()
            .take(last as usize)
            .filter(|e| e.kind == EntryKind::Command)
            .map(|e| &e.data)
            .collect();
        if index != last
            || Some(digest) != self.checker.applied_hash(last)
            || self.history.len() < last as usize
            || commands.len() != expected.len()
            || commands.iter().zip(&expected).any(|(a, b)| a != *b)
        {
            return Err(format!(
                "node {id} restored a snapshot up to {last} that does not reproduce the applied state"
            ));
        }
        let server = &mut self.servers[s];
        server.kv = kv::KvState::replay(
            self.history
                .iter()
                .take(last as usize)
                .enumerate()
                .filter(|(_, e)| e.kind == EntryKind::Command)
                .map(|(i, e)| (i as Index + 1, &e.data)),
        );
        server.app = App {
            last_index: last,
            digest,
            commands,
            due_snapshot: None,
        };
        server.last_applied = last;
        // What the snapshot brought counts as applied by this server, as in the lab.
        while (server.applied.len() as Index) < last {
            server
                .applied
                .push(self.history[server.applied.len()].clone());
        }
        Ok(())
    }

    fn record(&mut self, trace: Trace) {
        if self.trace.len() == TRACE_LEN {
            self.trace.pop_front();
        }
        self.trace.push_back((self.now, trace));
    }

    fn set_failure(&mut self, kind: FailureKind, message: String) {
        if self.failure.is_none() {
            self.failure = Some(self.failure_now(kind, message));
        }
    }

    fn failure_now(&self, kind: FailureKind, message: String) -> Failure {
        Failure {
            seed: self.options.seed,
            kind,
            message,
            time: self.now,
            recent_events: self
                .trace
                .iter()
                .map(|(at, t)| format!("{:>10.3} ms  {}", *at as f64 / MS as f64, describe(t)))
                .collect(),
        }
    }
}

fn message_kind(body: &MessageBody) -> &'static str {
    match body {
        MessageBody::ReadIndexRequest { .. } => "ReadIndexRequest",
        MessageBody::ReadIndexResponse { index: Some(_), .. } => "ReadIndexResponse",
        MessageBody::ReadIndexResponse { index: None, .. } => "ReadIndexResponse(refused)",
        MessageBody::ConfirmLeader { .. } => "ConfirmLeader",
        MessageBody::LeaderConfirmed { .. } => "LeaderConfirmed",
        MessageBody::TimeoutNow => "TimeoutNow",
        MessageBody::VoteRequest { .. } => "VoteRequest",
        MessageBody::VoteResponse { granted: true } => "VoteResponse(granted)",
        MessageBody::VoteResponse { granted: false } => "VoteResponse(refused)",
        MessageBody::AppendRequest { entries, .. } if entries.is_empty() => "AppendRequest(empty)",
        MessageBody::AppendRequest { .. } => "AppendRequest",
        MessageBody::AppendResponse { .. } => "AppendResponse",
        MessageBody::SnapshotChunk { .. } => "SnapshotChunk",
        MessageBody::SnapshotAck { .. } => "SnapshotAck",
        MessageBody::PreVoteRequest { .. } => "PreVoteRequest",
        MessageBody::PreVoteResponse { granted: true } => "PreVoteResponse(granted)",
        MessageBody::PreVoteResponse { granted: false } => "PreVoteResponse(refused)",
    }
}

fn describe(trace: &Trace) -> String {
    match *trace {
        Trace::Deliver {
            from,
            to,
            term,
            what,
        } => format!("{from} -> {to}  {what} (term {term})"),
        Trace::Timer(id) => format!("timer fires on {id}"),
        Trace::Synced(id, seq) => format!("{id} persisted up to write {seq}"),
        Trace::Became(id, role, term) => format!("{id} is {role:?} of term {term}"),
        Trace::Crash(id, lost) => format!("{id} crashes, losing {lost} unsynced writes"),
        Trace::Start(id) => format!("{id} starts from durable state"),
        Trace::Connect(id) => format!("{id} connected"),
        Trace::Disconnect(id) => format!("{id} disconnected"),
        Trace::Partition => "partition changed".to_string(),
        Trace::Link(from, to, up) => {
            format!(
                "link {from} -> {to} {}",
                if up { "restored" } else { "cut" }
            )
        }
        Trace::Pause(id, true) => format!("{id} paused"),
        Trace::Membership(id, accepted) => {
            format!(
                "membership change at {id}: {}",
                if accepted { "accepted" } else { "refused" }
            )
        }
        Trace::Pause(id, false) => format!("{id} resumes"),
        Trace::Propose(id, index) => format!("client proposes at {id}: {index:?}"),
    }
}

/// The size of `value` in the postcard encoding, the one the transports use.
fn encoded_len<T: serde::Serialize>(value: &T) -> usize {
    postcard::experimental::serialized_size(value).unwrap_or(0)
}
