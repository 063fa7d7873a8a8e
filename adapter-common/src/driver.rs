//! The step-and-execute logic every adapter runs, whatever its runtime.
//!
//! A [`Driver`] owns the [`raft_proto::Node`] and the application's [`StateMachine`]. The
//! adapter's loop feeds it inputs (peer messages, proposals, durability acknowledgements, time)
//! and carries out the [`Effects`] it collects: the persists, in order, go to the storage
//! worker ([`crate::writer`]); the messages go to the transport. Everything else — applying
//! committed entries, answering proposers, taking and restoring snapshots — the driver does
//! itself, so that the adapters differ only in how they wait and how they do I/O.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::applier::{ApplierReport, ApplyThread, Report};
use raft_proto::{
    Action, Config, DurableState, EntryKind, Event, Index, Membership, MembershipChange,
    MembershipError, MembershipOutcome, Message, NodeId, Payload, Persist, ProposalOutcome,
    ProposalRefusal, ReadRefusal, Role, SnapshotChunkRequest, SnapshotMeta, Term, TransferOutcome,
    TransferRefusal,
};

/// The application's replicated state machine.
///
/// # Where it runs, and what blocking costs
///
/// By default all three methods run on the node's own loop (the thread of `adapter-thread`,
/// the task of `adapter-tokio` and `adapter-smol`), between two steps of the core, never
/// concurrently with each other. While one of them runs the node sends no heartbeat, answers
/// no vote and reads no message: a call that takes longer than the election timeout's lower
/// bound ([`Config::election_timeout_min`], 300 ms by default) lets the followers of a leader
/// start an election. Keep them short, or set [`NodeOptions::apply_on_thread`]: they then run
/// on a thread of their own (still one at a time, in the same order), the node keeps its
/// heartbeats and answers while they work, and a slow state machine only delays the answers
/// to proposals and reads that wait for it. On an async runtime, never block in them on the
/// runtime itself (`block_on`) in either mode.
///
/// # What the index means
///
/// `index` is the entry's position in the replicated log, 1-based, strictly increasing from
/// one call to the next and the same on every node. Not every index reaches `apply`: the log
/// also holds entries the library writes itself (a new leader's no-op, membership changes), so
/// the indexes an application sees have gaps. An application that persists its own state may
/// store the last index it applied and compare it after a restart; it must not count calls.
///
/// # Snapshots
///
/// [`snapshot`](Self::snapshot) is called when [`NodeOptions::snapshot_every`] entries were
/// applied since the last one, and must capture exactly what was applied so far.
/// [`restore`](Self::restore) replaces the whole state with such bytes, possibly produced by
/// another node: at start from the latest snapshot on disk, and when a leader sends one to a
/// follower that is too far behind. After `restore`, `apply` continues with the first entry
/// after the snapshot.
pub trait StateMachine: Send + 'static {
    /// Applies the committed command at `index` and returns the answer for its proposer.
    /// Must be deterministic: every node applies the same commands in the same order and must
    /// reach the same state.
    fn apply(&mut self, index: Index, command: &[u8]) -> Vec<u8>;
    /// Serializes the whole state (everything applied so far).
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces the whole state with a snapshot produced by [`snapshot`](Self::snapshot).
    fn restore(&mut self, snapshot: &[u8]);
    /// Writes the whole state to `out`, for streamed snapshots
    /// ([`Config::stream_snapshots`](raft_proto::Config)): the file it goes to is sent to
    /// followers chunk by chunk, so a state larger than memory may be written piece by piece.
    /// By default, the bytes of [`snapshot`](Self::snapshot).
    fn snapshot_to(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        out.write_all(&self.snapshot())
    }
    /// Replaces the whole state with a streamed snapshot read from `input` (written by
    /// [`snapshot_to`](Self::snapshot_to) on this node or another). An error stops the node.
    /// By default, reads all of it and calls [`restore`](Self::restore).
    fn restore_from(&mut self, input: &mut dyn std::io::Read) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        input.read_to_end(&mut bytes)?;
        self.restore(&bytes);
        Ok(())
    }
}

/// How to run a node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The core's configuration; its durations are in milliseconds.
    pub raft: Config,
    /// Where the log and snapshots live.
    pub data_dir: PathBuf,
    /// Take a snapshot after this many applied entries (None: never compact).
    pub snapshot_every: Option<u64>,
    /// A proposal accepted by the leader but not applied within this time is answered with
    /// [`ProposeError::TimedOut`] (it may still commit later): a leader that lost its quorum
    /// otherwise keeps its proposers waiting for ever.
    pub proposal_timeout: Duration,
    /// Whether a leader that is shut down first hands leadership over to its most up-to-date
    /// voter (waiting at most an election timeout), so that the cluster does not sit
    /// leaderless for an election timeout. On by default.
    pub transfer_on_shutdown: bool,
    /// Run the [`StateMachine`] on a thread of its own instead of on the node's loop, so that
    /// a slow `apply`, `snapshot` or `restore` delays neither heartbeats nor votes (see the
    /// trait's documentation). The calls, their order and their answers are the same; reads,
    /// [`Status::applied_index`] and waits for an index follow what that thread has applied.
    /// A proposal that committed is answered once the thread has applied it, however long
    /// that takes ([`proposal_timeout`](Self::proposal_timeout) covers only the wait for the
    /// commit), and so is a read whose index the thread has not reached. It costs a
    /// hand-over between threads per batch of committed entries. Off by default.
    pub apply_on_thread: bool,
    /// How many proposals may wait at once: queued for the next step, appended and waiting
    /// to commit, or committed and waiting for the state machine's thread. A proposal beyond
    /// it is answered [`ProposeError::Busy`] at once (nothing is appended), so that clients
    /// faster than the cluster meet a typed answer instead of growing the leader's memory.
    /// 65,536 by default.
    pub max_pending_proposals: usize,
    /// The size past which the log's segment file rolls over to a new one (see
    /// [`FileStorage::set_segment_limit`](crate::storage::FileStorage::set_segment_limit)):
    /// [`DEFAULT_SEGMENT_LIMIT`](crate::storage::DEFAULT_SEGMENT_LIMIT), 64 MiB, by default.
    pub segment_limit: u64,
    /// Keep the log and snapshots in memory only, and acknowledge every write as durable at
    /// once: nothing goes to `data_dir`, and **everything is lost when the node stops**. A
    /// node restarted this way starts empty, having forgotten its votes and the entries it
    /// acknowledged, which Raft's safety does not survive if it rejoins its old cluster (two
    /// leaders in a term, committed entries lost). For benchmarks and tests that measure the
    /// protocol without a disk; not for data anyone wants back. Cannot be combined with
    /// streamed snapshots (which live in files). Off by default.
    pub volatile: bool,
    /// Record the node's metrics through the [`metrics`] facade (see [`crate::metrics`] for
    /// what is recorded): the application installs the recorder (an exporter) of its choice.
    /// Off by default, which costs nothing.
    pub metrics: bool,
}

impl NodeOptions {
    /// Options for a deployment: elections after 300–600 ms, heartbeats every 50 ms, the
    /// leader's no-op entry on (so that a cluster restarted cleanly applies what it had
    /// committed at once, instead of showing an empty state machine until the next write), a
    /// snapshot every 10,000 entries, and proposals answered within 5 s.
    pub fn new(id: NodeId, voters: Vec<NodeId>, data_dir: impl Into<PathBuf>) -> Self {
        let mut raft = Config::new(id, voters);
        raft.election_timeout_min = 300;
        raft.election_timeout_max = 600;
        raft.heartbeat_interval = 50;
        raft.leader_noop = true;
        Self {
            raft,
            data_dir: data_dir.into(),
            snapshot_every: Some(10_000),
            proposal_timeout: Duration::from_secs(5),
            transfer_on_shutdown: true,
            apply_on_thread: false,
            max_pending_proposals: 65_536,
            segment_limit: crate::storage::DEFAULT_SEGMENT_LIMIT,
            volatile: false,
            metrics: false,
        }
    }
}

/// Why a proposal did not produce an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProposeError {
    /// This node is not the leader; try the hinted one.
    #[error("not the leader (leader: {leader_hint:?})")]
    NotLeader {
        /// The leader this node knows of.
        leader_hint: Option<NodeId>,
    },
    /// The entry was appended but a new leader replaced it: it will never commit.
    #[error("the proposal was lost in a change of leader")]
    Lost,
    /// No answer within the timeout; the command may still commit.
    #[error("timed out waiting for the proposal to commit")]
    TimedOut,
    /// The outcome is unknown: the node caught up through a snapshot from the leader that
    /// covers the proposal's index, so it may have committed (without an answer here).
    #[error("the outcome is unknown: a snapshot from the leader covered the proposal")]
    Indeterminate,
    /// The node is shut down (or failed).
    #[error("the node is shut down")]
    ShutDown,
    /// The membership change was refused; nothing was appended.
    #[error("the membership change was refused: {0}")]
    Refused(MembershipError),
    /// Too many proposals are waiting at this node
    /// ([`NodeOptions::max_pending_proposals`]): this one was not appended; retry later.
    #[error("too many proposals are waiting ({pending}); this one was not proposed")]
    Busy {
        /// How many were waiting.
        pending: usize,
    },
    /// The leader is handing leadership over to `to`: nothing was appended; retry there.
    #[error("leadership is being handed over to node {to}")]
    Transferring {
        /// The node that is to lead next.
        to: NodeId,
    },
}

/// Why a linearizable read could not be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The node knows of no leader to confirm the read (an election is under way).
    #[error("no leader is known")]
    NoLeader,
    /// Leadership changed before the read was confirmed; retry.
    #[error("leadership changed before the read was confirmed")]
    LeadershipLost,
    /// No quorum confirmed the read within an election timeout; retry.
    #[error("the read was not confirmed in time")]
    TimedOut,
    /// The node is shut down (or failed).
    #[error("the node is shut down")]
    ShutDown,
}

impl From<ReadRefusal> for ReadError {
    fn from(refusal: ReadRefusal) -> Self {
        match refusal {
            ReadRefusal::NoLeader => Self::NoLeader,
            ReadRefusal::TimedOut => Self::TimedOut,
            _ => Self::LeadershipLost,
        }
    }
}

/// Why a leadership transfer did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// This node is not the leader; ask the hinted one.
    #[error("not the leader (leader: {leader_hint:?})")]
    NotLeader {
        /// The leader this node knows of.
        leader_hint: Option<NodeId>,
    },
    /// The transfer cannot be made: the target is this node or not a voter, or another
    /// transfer runs.
    #[error("the transfer was refused: {0:?}")]
    Refused(TransferRefusal),
    /// The target did not take over within an election timeout; this node leads on.
    #[error("the target did not take over in time; the leader leads on")]
    Aborted,
    /// The node is shut down (or failed).
    #[error("the node is shut down")]
    ShutDown,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data directory could not be read or is corrupt.
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    /// The core refused the configuration or the recovered state.
    #[error("the core refused to start: {0}")]
    Core(#[from] raft_proto::StartError),
    /// A thread or task could not be started.
    #[error("cannot start a thread: {0}")]
    Spawn(#[from] std::io::Error),
    /// The [`NodeOptions`] contradict each other.
    #[error("bad node options: {0}")]
    Options(String),
}

/// A node's state, as a handle's `status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// The node's id.
    pub id: NodeId,
    /// Its current term.
    pub term: Term,
    /// Its role.
    pub role: Role,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// The index of the last entry in its log (committed or not).
    pub last_log_index: Index,
    /// Its commit index.
    pub commit_index: Index,
    /// The index its state machine has applied.
    pub applied_index: Index,
    /// The last index covered by its latest snapshot.
    pub snapshot_index: Index,
    /// Its transport's counters as of the node's latest wake-up (`None` when the transport
    /// keeps none; see [`Transport::counters`](crate::Transport::counters)). A
    /// [`refused_by_peers`](crate::TransportStats::refused_by_peers) above zero means a
    /// misconfigured cluster: a peer has a different cluster id, or already uses this
    /// node's id; both ends log why.
    pub transport: Option<crate::TransportStats>,
}

/// Completes one proposal: called exactly once with its outcome. Each adapter wraps its own
/// reply channel in it (a crossbeam sender, a tokio or async oneshot).
pub type Reply = Box<dyn FnOnce(Result<Vec<u8>, ProposeError>) + Send>;

/// Completes one membership change: called exactly once, with the membership the change led
/// to once it is committed (and the cluster has left the joint membership), or the error.
pub type ChangeReply = Box<dyn FnOnce(Result<Membership, ProposeError>) + Send>;

/// Completes one linearizable read: called exactly once, with the read index once the state
/// machine has applied every entry up to it (so that the application may read its state
/// now), or the error.
pub type ReadReply = Box<dyn FnOnce(Result<Index, ReadError>) + Send>;

/// Completes one wait for the state machine to apply an index: called exactly once, with the
/// node's status once its applied index reached the index, or the error.
pub type WaitReply = Box<dyn FnOnce(Result<Status, WaitError>) + Send>;

/// Completes one leadership transfer: called exactly once, with `Ok` once this node stepped
/// down and knows of the new leader, or the error.
pub type TransferReply = Box<dyn FnOnce(Result<(), TransferError>) + Send>;

/// A request from the application's handle to the node's loop.
#[non_exhaustive]
pub enum Command {
    /// Propose a command; the reply completes the proposal.
    Propose(Vec<u8>, Reply),
    /// Change the membership (at the leader); the reply completes the change.
    ChangeMembership(MembershipChange, ChangeReply),
    /// Report the node's status.
    Status(Box<dyn FnOnce(Status) + Send>),
    /// Report the membership in force at the node.
    Membership(Box<dyn FnOnce(Membership) + Send>),
    /// A linearizable read (ReadIndex, a lease, or the leader's read index at a follower);
    /// the reply comes when the state machine may be read.
    Read(ReadReply),
    /// Hand leadership over to the given voter (at the leader).
    TransferLeadership(NodeId, TransferReply),
    /// Reply once the state machine has applied the given index (at once if it has).
    WaitApplied(Index, WaitReply),
    /// Stop the node (a leader first hands leadership over, see
    /// [`NodeOptions::transfer_on_shutdown`]).
    Shutdown,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Propose(data, _) => write!(f, "Propose({} bytes)", data.len()),
            Self::ChangeMembership(change, _) => write!(f, "ChangeMembership({change:?})"),
            Self::Status(_) => write!(f, "Status"),
            Self::Membership(_) => write!(f, "Membership"),
            Self::Read(_) => write!(f, "Read"),
            Self::TransferLeadership(to, _) => write!(f, "TransferLeadership({to})"),
            Self::WaitApplied(index, _) => write!(f, "WaitApplied({index})"),
            Self::Shutdown => write!(f, "Shutdown"),
        }
    }
}

/// The Raft address a member's data names, if it does: the data is UTF-8 and starts with
/// `host:port`, up to the first space (what follows is the application's, for example a
/// client address).
pub fn member_address(data: &[u8]) -> Option<std::net::SocketAddr> {
    let text = std::str::from_utf8(data).ok()?;
    text.split(' ').next()?.parse().ok()
}

/// A membership change waiting to complete.
struct ChangeWaiter {
    /// The index of its entry.
    index: Index,
    /// The term of its entry; `None` once that entry (joint) is applied and what remains is
    /// the entry that leaves the joint membership.
    term: Option<Term>,
    deadline: u64,
    reply: ChangeReply,
}

/// One input of a node's loop.
#[derive(Debug)]
#[non_exhaustive]
pub enum Input {
    /// A message from a peer.
    Message(Message),
    /// A command from the application's handle.
    Command(Command),
    /// The storage worker's report: every write up to this sequence number is durable, or
    /// storage failed.
    Durable(Result<u64, String>),
    /// The apply thread's report (with [`NodeOptions::apply_on_thread`]).
    Applied(ApplierReport),
}

/// How much input one wake-up takes before stepping the timers again.
pub const MAX_INPUTS_PER_WAKE: usize = 4096;

/// What the adapter must carry out after feeding the driver.
#[derive(Debug, Default)]
pub struct Effects {
    /// Storage writes, in order: hand them to the storage worker in this order.
    pub writes: Vec<Persist>,
    /// Messages for the transport, in any order.
    pub messages: Vec<Message>,
}

impl Effects {
    /// Whether there is nothing to carry out.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.messages.is_empty()
    }
}

/// Why waiting for the state machine to reach an index ended without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The caller's time limit passed first.
    #[error("the index was not applied in time")]
    TimedOut,
    /// The node is shut down (or failed).
    #[error("the node is shut down")]
    ShutDown,
}

/// How many proposals one step takes at most.
pub const MAX_BATCH: usize = 4096;

/// Where the state machine runs.
enum Applier<S> {
    /// On the loop: what it applied is always the core's applied index.
    Loop(S),
    /// On its own thread ([`NodeOptions::apply_on_thread`]), which has applied `applied`.
    Thread { thread: ApplyThread, applied: Index },
}

/// The core, the state machine and the waiting proposers, driven by an adapter's loop.
pub struct Driver<S> {
    core: raft_proto::Node,
    /// Where the state machine runs.
    applier: Applier<S>,
    epoch: Instant,
    snapshot_every: Option<u64>,
    last_snapshot: Index,
    /// Proposers waiting for the entry at an index, with the term it was appended in.
    waiting: BTreeMap<Index, (Term, Reply)>,
    /// The metric handles, with [`NodeOptions::metrics`].
    metrics: Option<crate::metrics::NodeMetrics>,
    /// When each waiting proposal times out, in the order they were accepted (so deadlines
    /// only grow): `(deadline, index, term)`. Entries already answered are skipped.
    deadlines: VecDeque<(u64, Index, Term)>,
    proposal_timeout: u64,
    /// See [`NodeOptions::max_pending_proposals`].
    max_pending: usize,
    /// Proposals gathered for the next step.
    batch: Vec<(Vec<u8>, Reply)>,
    /// Membership changes accepted and not yet complete.
    changes: Vec<ChangeWaiter>,
    /// The reply of the change being stepped.
    change_reply: Option<ChangeReply>,
    /// The membership last handed to the transport.
    routed: Option<Membership>,
    /// Reads waiting for the core, by context.
    reads: BTreeMap<u64, ReadReply>,
    next_read: u64,
    /// The reply of the transfer being stepped, then of the transfer under way.
    transfer_reply: Option<TransferReply>,
    /// A transfer under way.
    transfer: Option<TransferReply>,
    /// Callers waiting for the state machine to apply an index, by index.
    applied_waiters: BTreeMap<Index, Vec<WaitReply>>,
    /// The target of the transfer under way (also one started for a shutdown).
    transfer_target: Option<NodeId>,
    transfer_on_shutdown: bool,
    /// The transport's counters at the latest wake-up.
    transport: Option<crate::TransportStats>,
    /// The bytes of peer messages taken since the transport was last told
    /// ([`Transport::consumed`](crate::Transport::consumed)).
    consumed: u64,
    /// Shutting down: the hand-over ends by this time at the latest.
    stopping: Option<u64>,
    /// The hand-over cannot happen (refused or aborted): stop now.
    stop_now: bool,
    election_timeout: u64,
    actions: Vec<Action>,
    /// Streamed snapshots: the staging and reading of snapshot files.
    snapshot_files: Option<crate::snapfile::SnapshotFiles>,
    /// A streamed snapshot that could not be read for a follower, to report to the core.
    unavailable: Option<Index>,
    /// Why the node must stop (a snapshot could not be staged or restored).
    failure: Option<String>,
}

impl<S> std::fmt::Debug for Driver<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("id", &self.core.id())
            .field("waiting", &self.waiting.len())
            .finish()
    }
}

impl<S: StateMachine> Driver<S> {
    /// A driver for the node recovered as `durable` (from [`crate::storage::FileStorage::open`]);
    /// the state machine is restored from its snapshot. It runs on the caller's loop whatever
    /// [`NodeOptions::apply_on_thread`] says ([`open`](Self::open) honours it).
    pub fn new(
        options: &NodeOptions,
        state_machine: S,
        durable: DurableState,
    ) -> Result<Self, StartError> {
        Self::build(options, state_machine, durable, None)
    }

    /// [`new`](Self::new), with the state machine moved to a thread of its own that reports
    /// to `report` when `report` is given.
    fn build(
        options: &NodeOptions,
        mut state_machine: S,
        durable: DurableState,
        report: Option<Report>,
    ) -> Result<Self, StartError> {
        let streamed = options.raft.stream_snapshots;
        match &durable.snapshot {
            Some(snapshot) if streamed => {
                let dir = &options.data_dir;
                let index = snapshot.meta.last_index;
                let mut reader = crate::snapfile::open(dir, index)?;
                state_machine.restore_from(&mut reader).map_err(|source| {
                    crate::storage::StorageError::Io {
                        path: crate::snapfile::data_path(dir, index),
                        source,
                    }
                })?;
            }
            Some(snapshot) => state_machine.restore(&snapshot.data),
            None => {}
        }
        let core = raft_proto::Node::restore(options.raft.clone(), durable, 0)?;
        let applier = match report {
            Some(report) => Applier::Thread {
                thread: ApplyThread::spawn(
                    state_machine,
                    format!("raft-{}-apply", core.id()),
                    report,
                )?,
                applied: core.applied_index(),
            },
            None => Applier::Loop(state_machine),
        };
        Ok(Self {
            last_snapshot: core.snapshot_index(),
            metrics: options
                .metrics
                .then(|| crate::metrics::NodeMetrics::new(core.id())),
            core,
            applier,
            epoch: Instant::now(),
            snapshot_every: options.snapshot_every,
            waiting: BTreeMap::new(),
            deadlines: VecDeque::new(),
            proposal_timeout: u64::try_from(options.proposal_timeout.as_millis())
                .unwrap_or(u64::MAX),
            max_pending: options.max_pending_proposals.max(1),
            batch: Vec::new(),
            changes: Vec::new(),
            change_reply: None,
            routed: None,
            reads: BTreeMap::new(),
            next_read: 0,
            transfer_reply: None,
            transfer: None,
            applied_waiters: BTreeMap::new(),
            transfer_target: None,
            transfer_on_shutdown: options.transfer_on_shutdown,
            transport: None,
            consumed: 0,
            stopping: None,
            stop_now: false,
            election_timeout: options.raft.election_timeout_max,
            actions: Vec::new(),
            snapshot_files: streamed
                .then(|| crate::snapfile::SnapshotFiles::new(&options.data_dir)),
            unavailable: None,
            failure: None,
        })
    }

    /// What every adapter's `start` does first: recovers the node's state from
    /// `options.data_dir` (cutting a torn tail, which only an unacknowledged write can leave),
    /// builds the driver, and starts the storage worker — and with
    /// [`NodeOptions::apply_on_thread`], the state machine's thread — which report to the
    /// loop through `report` ([`Input::Durable`], [`Input::Applied`]): send them to the
    /// channel the loop waits on. With [`NodeOptions::volatile`] nothing is read or written
    /// and no storage thread starts: each write is reported durable at once, from within
    /// [`crate::writer::StorageWorker::write`] on the loop itself, so `report` must never
    /// block (an unbounded channel, as every adapter here uses).
    pub fn open(
        options: &NodeOptions,
        state_machine: S,
        report: impl Fn(Input) + Send + Sync + 'static,
    ) -> Result<(Self, crate::writer::StorageWorker), StartError> {
        let (storage, durable) = if options.volatile {
            if options.raft.stream_snapshots {
                return Err(StartError::Options(
                    "volatile storage cannot hold streamed snapshots (they live in files)".into(),
                ));
            }
            (None, DurableState::default())
        } else {
            let (mut storage, durable, recovery) = if options.raft.stream_snapshots {
                crate::storage::FileStorage::open_streamed(&options.data_dir)?
            } else {
                crate::storage::FileStorage::open(&options.data_dir)?
            };
            storage.set_segment_limit(options.segment_limit);
            if recovery.repaired_bytes > 0 {
                tracing::warn!(
                    repaired_bytes = recovery.repaired_bytes,
                    "cut a torn tail off the log (an unacknowledged write)"
                );
            }
            (Some(storage), durable)
        };
        let report: Report = std::sync::Arc::new(report);
        let for_thread = options.apply_on_thread.then(|| report.clone());
        let driver = Self::build(options, state_machine, durable, for_thread)?;
        let on_durable = move |result| report(Input::Durable(result));
        let worker = match storage {
            None => crate::writer::StorageWorker::volatile(on_durable),
            Some(storage) => {
                let name = format!("raft-{}-storage", driver.id());
                let fsync = options
                    .metrics
                    .then(|| crate::metrics::NodeMetrics::fsync(driver.id()));
                crate::writer::StorageWorker::spawn_measured(storage, name, fsync, on_durable)?
            }
        };
        Ok((driver, worker))
    }

    /// Lets the state machine's thread (with [`NodeOptions::apply_on_thread`]) finish what it
    /// was handed, answering its proposers, and joins it; blocks meanwhile. Adapters call
    /// it when their loop ends, off any async runtime's threads (with the storage worker's
    /// [`finish`](crate::writer::StorageWorker::finish)).
    pub fn finish(mut self) {
        if let Some(metrics) = &self.metrics {
            metrics.stopped();
        }
        if let Applier::Thread { thread, .. } = &mut self.applier {
            thread.finish();
        }
    }

    /// The index the state machine has applied: the core's applied index when it runs on
    /// the loop, what its thread reported otherwise.
    fn state_machine_applied(&self) -> Index {
        match &self.applier {
            Applier::Thread { applied, .. } => *applied,
            Applier::Loop(_) => self.core.applied_index(),
        }
    }

    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.core.id()
    }

    /// How long until the core needs time to pass (an election or a heartbeat) or a waiting
    /// proposal times out.
    pub fn time_to_deadline(&self) -> Duration {
        let proposal = self.deadlines.front().map_or(u64::MAX, |d| d.0);
        let change = self
            .changes
            .iter()
            .map(|c| c.deadline)
            .min()
            .unwrap_or(u64::MAX);
        let stopping = self.stopping.unwrap_or(u64::MAX);
        let deadline = self
            .core
            .next_deadline()
            .min(proposal)
            .min(change)
            .min(stopping);
        Duration::from_millis(deadline.saturating_sub(self.now()))
    }

    /// The node's current state.
    pub fn status(&self) -> Status {
        let core = &self.core;
        Status {
            id: core.id(),
            term: core.term(),
            role: core.role(),
            leader: core.leader(),
            last_log_index: core.last_log_index(),
            commit_index: core.commit_index(),
            applied_index: self.state_machine_applied(),
            snapshot_index: core.snapshot_index(),
            transport: self.transport,
        }
    }

    /// Handles one input of the node's loop; returns true when the node must stop (asked to,
    /// or storage failed).
    pub fn on_input(&mut self, input: Input, out: &mut Effects) -> bool {
        match input {
            Input::Message(message) => self.on_message(message, out),
            Input::Durable(Ok(seq)) => self.on_persisted(seq, out),
            Input::Durable(Err(error)) => {
                tracing::error!(id = self.id(), %error, "storage failed; stopping");
                return true;
            }
            Input::Applied(ApplierReport::AppliedThrough(index)) => {
                if let Applier::Thread { applied, .. } = &mut self.applier {
                    *applied = (*applied).max(index);
                }
            }
            Input::Applied(ApplierReport::SnapshotTaken { last_index, data }) => {
                if let Some(metrics) = &self.metrics {
                    metrics.snapshots_taken.increment(1);
                }
                let data = Payload::from(data);
                self.step(Event::SnapshotTaken { last_index, data }, out);
            }
            Input::Applied(ApplierReport::Failed(why)) => {
                tracing::error!(id = self.id(), %why, "the state machine failed; stopping");
                return true;
            }
            Input::Command(Command::Propose(data, reply)) => self.propose(data, reply, out),
            Input::Command(Command::ChangeMembership(change, reply)) => {
                self.change_membership(change, reply, out)
            }
            Input::Command(Command::Status(reply)) => reply(self.status()),
            Input::Command(Command::Membership(reply)) => reply(self.core.membership().clone()),
            Input::Command(Command::Read(reply)) => self.read(reply, out),
            Input::Command(Command::TransferLeadership(to, reply)) => {
                self.transfer_leadership(to, reply, out)
            }
            Input::Command(Command::WaitApplied(index, reply)) => self.wait_applied(index, reply),
            Input::Command(Command::Shutdown) => return self.begin_shutdown(out),
        }
        if let Some(why) = self.failure.take() {
            tracing::error!(id = self.id(), %why, "stopping");
            return true;
        }
        false
    }

    /// Asks the core for a linearizable read; `reply` is called once the state machine may
    /// be read, or with the reason it may not.
    pub fn read(&mut self, reply: ReadReply, out: &mut Effects) {
        // Proposals queued before the read go first (a client's write, then its read).
        self.flush_proposals(out);
        let context = self.next_read;
        self.next_read += 1;
        self.reads.insert(context, reply);
        self.step(Event::Read { context }, out);
    }

    /// Calls `reply` with the node's status once the state machine has applied `index`: at
    /// once if it has, otherwise when it does.
    pub fn wait_applied(&mut self, index: Index, reply: WaitReply) {
        if self.state_machine_applied() >= index {
            reply(Ok(self.status()));
        } else {
            self.applied_waiters.entry(index).or_default().push(reply);
        }
    }

    /// Answers the callers waiting for an index the state machine has now applied.
    fn settle_applied_waiters(&mut self) {
        let applied = self.state_machine_applied();
        if self
            .applied_waiters
            .first_key_value()
            .is_none_or(|(&index, _)| index > applied)
        {
            return;
        }
        let status = self.status();
        let later = self.applied_waiters.split_off(&(applied + 1));
        for reply in std::mem::replace(&mut self.applied_waiters, later)
            .into_values()
            .flatten()
        {
            reply(Ok(status));
        }
    }

    /// Asks the core to hand leadership over to `to`; `reply` is called once this node
    /// stepped down and knows the new leader, or with the reason it did not.
    pub fn transfer_leadership(&mut self, to: NodeId, reply: TransferReply, out: &mut Effects) {
        self.flush_proposals(out);
        self.transfer_reply = Some(reply);
        self.step(Event::TransferLeadership { to }, out);
        if let Some(reply) = self.transfer_reply.take() {
            reply(Err(TransferError::ShutDown));
        }
    }

    /// Asked to stop: a leader with another voter first hands leadership over to the most
    /// up-to-date one (see [`NodeOptions::transfer_on_shutdown`]). Returns whether to stop
    /// at once.
    fn begin_shutdown(&mut self, out: &mut Effects) -> bool {
        if self.stopping.is_some() {
            return false;
        }
        let me = self.id();
        let target = self
            .core
            .membership()
            .voters()
            .iter()
            .copied()
            .filter(|&id| id != me)
            .max_by_key(|&id| self.core.match_index(id).unwrap_or(0));
        let (true, true, Some(to)) = (self.transfer_on_shutdown, self.core.is_leader(), target)
        else {
            return true;
        };
        tracing::info!(id = me, to, "shutting down: handing leadership over first");
        self.stopping = Some(self.now().saturating_add(self.election_timeout));
        self.flush_proposals(out);
        self.step(Event::TransferLeadership { to }, out);
        false
    }

    /// Whether a shutdown's hand-over is over: another leader is known, it failed, or its
    /// time is up.
    fn handover_done(&self) -> bool {
        let Some(deadline) = self.stopping else {
            return false;
        };
        let me = self.id();
        self.stop_now
            || self.core.leader().is_some_and(|leader| leader != me)
            || self.now() >= deadline
    }

    /// Ends one wake-up of the node's loop, the same way in every runtime: takes the inputs
    /// already waiting (from `next`, at most [`MAX_INPUTS_PER_WAKE`], so that a busy node
    /// still keeps its timers), steps the batched proposals and the time, and carries out the
    /// effects — writes to `worker`, messages to `transport`. Returns false when the loop
    /// must end (`stop`, or an input or the storage worker said so); the proposals still
    /// waiting are then answered.
    pub fn finish_wake<T: crate::Transport>(
        &mut self,
        mut stop: bool,
        mut next: impl FnMut() -> Option<Input>,
        out: &mut Effects,
        worker: &crate::writer::StorageWorker,
        transport: &T,
    ) -> bool {
        for _ in 0..MAX_INPUTS_PER_WAKE {
            if stop {
                break;
            }
            match next() {
                Some(input) => stop = self.on_input(input, out),
                None => break,
            }
        }
        if stop {
            // Queued proposals are answered, not proposed; what the inputs caused is still
            // written and sent below.
            self.shut_down();
            self.flush(out);
        } else {
            self.flush(out);
            if self.handover_done() {
                stop = true;
                self.shut_down();
            }
        }
        if !worker.write(std::mem::take(&mut out.writes)) {
            tracing::error!(id = self.id(), "the storage worker is gone; stopping");
            stop = true;
            self.shut_down();
        }
        self.route_members(transport);
        if self.consumed > 0 {
            transport.consumed(std::mem::take(&mut self.consumed));
        }
        self.transport = transport.counters();
        for message in out.messages.drain(..) {
            transport.send(message);
        }
        if let Some(why) = self.failure.take() {
            tracing::error!(id = self.id(), %why, "stopping");
            stop = true;
            self.shut_down();
        }
        let (now, idle) = (self.now(), self.election_timeout.saturating_mul(10));
        if let Some(files) = self.snapshot_files.as_mut() {
            // Transfers ask for a chunk at least every heartbeat; ten election timeouts
            // without one mean the transfer is over.
            files.close_idle(now, idle);
        }
        !stop
    }

    /// Tells the transport about the membership in force when it changed: the other members
    /// and the addresses their data names.
    fn route_members<T: crate::Transport>(&mut self, transport: &T) {
        let membership = self.core.membership();
        if self.routed.as_ref() == Some(membership) {
            return;
        }
        let me = self.id();
        let members: Vec<(NodeId, Option<std::net::SocketAddr>)> = membership
            .members()
            .into_iter()
            .filter(|&id| id != me)
            .map(|id| (id, membership.data(id).and_then(|d| member_address(d))))
            .collect();
        transport.set_members(&members);
        if let Some(files) = self.snapshot_files.as_mut() {
            let ids: Vec<NodeId> = members.iter().map(|(id, _)| *id).collect();
            files.retain_readers(&ids);
        }
        self.routed = Some(membership.clone());
    }

    /// The voters `transport` cannot reach (no configured address, and none in their member
    /// data), each logged at `warn` (see [`crate::unreachable_voters`]). Every adapter's
    /// `start` calls this once.
    pub fn check_transport<T: crate::Transport>(&mut self, transport: &T) -> Vec<NodeId> {
        self.transport = transport.counters();
        let membership = self.core.membership();
        let voters: Vec<NodeId> = membership
            .voters()
            .iter()
            .copied()
            .filter(|&v| membership.data(v).and_then(|d| member_address(d)).is_none())
            .collect();
        crate::unreachable_voters(self.id(), &voters, transport)
    }

    /// The membership in force at this node.
    pub fn membership(&self) -> &Membership {
        self.core.membership()
    }

    /// Asks the core for a membership change; `reply` is called once it completes or fails.
    pub fn change_membership(
        &mut self,
        change: MembershipChange,
        reply: ChangeReply,
        out: &mut Effects,
    ) {
        // Proposals queued before the change go first.
        self.flush_proposals(out);
        self.change_reply = Some(reply);
        self.step(Event::ChangeMembership(change), out);
        if let Some(reply) = self.change_reply.take() {
            reply(Err(ProposeError::ShutDown));
        }
    }

    /// A membership entry was applied at `index`: completes the changes waiting for it.
    fn on_membership_applied(&mut self, index: Index, term: Term, membership: Option<Membership>) {
        let mut i = 0;
        while i < self.changes.len() {
            let waiter = &mut self.changes[i];
            let outcome = match (waiter.term, &membership) {
                (Some(t), _) if waiter.index == index && t != term => Some(Err(ProposeError::Lost)),
                (Some(_), Some(m)) if waiter.index == index && m.is_joint() => {
                    waiter.term = None;
                    None
                }
                (Some(_), Some(m)) if waiter.index == index => Some(Ok(m.clone())),
                (Some(_), None) if waiter.index == index => Some(Err(ProposeError::Lost)),
                (None, Some(m)) if index > waiter.index && !m.is_joint() => Some(Ok(m.clone())),
                _ => None,
            };
            match outcome {
                Some(result) => (self.changes.swap_remove(i).reply)(result),
                None => i += 1,
            }
        }
    }

    fn on_transfer_outcome(&mut self, outcome: TransferOutcome) {
        match outcome {
            TransferOutcome::Started { to } => {
                self.transfer_target = Some(to);
                if let Some(reply) = self.transfer_reply.take() {
                    self.transfer = Some(reply);
                }
            }
            TransferOutcome::Refused(refusal) => {
                if self.stopping.is_some() && refusal != TransferRefusal::InProgress {
                    self.stop_now = true;
                }
                if let Some(reply) = self.transfer_reply.take() {
                    reply(Err(match refusal {
                        TransferRefusal::NotLeader { leader_hint } => {
                            TransferError::NotLeader { leader_hint }
                        }
                        other => TransferError::Refused(other),
                    }));
                }
            }
            _ => {
                // Aborted: the target did not take over; this node leads on.
                self.transfer_target = None;
                if self.stopping.is_some() {
                    self.stop_now = true;
                }
                if let Some(reply) = self.transfer.take() {
                    reply(Err(TransferError::Aborted));
                }
            }
        }
    }

    /// A message from a peer.
    pub fn on_message(&mut self, message: Message, out: &mut Effects) {
        self.consumed = self
            .consumed
            .saturating_add(crate::net::inbound_size(&message));
        if let Some(metrics) = &self.metrics {
            metrics.received(&message.body);
        }
        self.step(Event::Message(message), out);
    }

    /// The storage worker made every write up to `seq` durable.
    pub fn on_persisted(&mut self, seq: u64, out: &mut Effects) {
        self.step(Event::Persisted { seq }, out);
    }

    /// Queues a proposal; it is stepped, with every other queued one, by the next
    /// [`flush`](Self::flush) (or at once when the batch is full). Answered
    /// [`ProposeError::Busy`] at once when [`NodeOptions::max_pending_proposals`] wait.
    pub fn propose(&mut self, command: Vec<u8>, reply: Reply, out: &mut Effects) {
        // Only a leader holds proposals: anywhere else they are refused at once, and entries
        // a follower restored or applied (not yet reported by its state machine's thread) are
        // no reason to answer Busy instead of NotLeader.
        let reply = match &self.metrics {
            Some(metrics) => metrics.timed(reply),
            None => reply,
        };
        let pending = self.pending_proposals();
        if self.core.is_leader() && pending >= self.max_pending {
            reply(Err(ProposeError::Busy { pending }));
            return;
        }
        self.batch.push((command, reply));
        if self.batch.len() >= MAX_BATCH {
            self.flush_proposals(out);
        }
    }

    /// Steps the queued proposals as one batch (one log append, one write, one message per
    /// follower) and lets time pass. Call it once per wake-up, after feeding the inputs.
    pub fn flush(&mut self, out: &mut Effects) {
        self.flush_proposals(out);
        self.step(Event::Tick, out);
        self.expire_proposals();
        self.settle_applied_waiters();
        // The gauges at most every 100 ms: a busy node wakes far more often than anyone
        // scrapes.
        if self.metrics.is_some() {
            let now = self.now();
            if self.metrics.as_mut().is_some_and(|m| m.due(now)) {
                let (status, stats) = (self.status(), self.core.stats());
                if let Some(metrics) = &self.metrics {
                    metrics.observe(&status, &stats);
                }
            }
        }
    }

    /// Proposals queued, appended and not applied, or handed to the state machine's thread
    /// and not applied there yet.
    fn pending_proposals(&self) -> usize {
        let unapplied = self
            .core
            .applied_index()
            .saturating_sub(self.state_machine_applied());
        let unapplied = usize::try_from(unapplied).unwrap_or(usize::MAX);
        self.batch
            .len()
            .saturating_add(self.waiting.len())
            .saturating_add(unapplied)
    }

    /// Answers the proposals that waited longer than the proposal timeout.
    fn expire_proposals(&mut self) {
        let now = self.now();
        let mut i = 0;
        while i < self.changes.len() {
            if self.changes[i].deadline <= now {
                (self.changes.swap_remove(i).reply)(Err(ProposeError::TimedOut));
            } else {
                i += 1;
            }
        }
        while let Some(&(deadline, index, term)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            if self.waiting.get(&index).is_some_and(|(t, _)| *t == term) {
                if let Some((_, reply)) = self.waiting.remove(&index) {
                    reply(Err(ProposeError::TimedOut));
                }
            }
        }
    }

    /// Fails every waiting proposal, and every queued one without proposing it: the node is
    /// stopping. Call it before the last [`flush`](Self::flush).
    pub fn shut_down(&mut self) {
        self.deadlines.clear();
        for (_, reply) in std::mem::take(&mut self.reads) {
            reply(Err(ReadError::ShutDown));
        }
        for reply in std::mem::take(&mut self.applied_waiters)
            .into_values()
            .flatten()
        {
            reply(Err(WaitError::ShutDown));
        }
        for reply in [self.transfer.take(), self.transfer_reply.take()]
            .into_iter()
            .flatten()
        {
            reply(Err(TransferError::ShutDown));
        }
        for waiter in std::mem::take(&mut self.changes) {
            (waiter.reply)(Err(ProposeError::ShutDown));
        }
        for (_, (_, reply)) in std::mem::take(&mut self.waiting) {
            reply(Err(ProposeError::ShutDown));
        }
        for (_, reply) in std::mem::take(&mut self.batch) {
            reply(Err(ProposeError::ShutDown));
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn flush_proposals(&mut self, out: &mut Effects) {
        if self.batch.is_empty() {
            return;
        }
        let (commands, replies): (Vec<Payload>, Vec<Reply>) = std::mem::take(&mut self.batch)
            .into_iter()
            .map(|(data, reply)| (Payload::from(data), reply))
            .unzip();
        if let Some(metrics) = &self.metrics {
            metrics.proposed(commands.len());
        }
        let now = self.now();
        let mut actions = std::mem::take(&mut self.actions);
        self.core
            .step_into(now, Event::Propose(commands), &mut actions);
        self.execute(&mut actions, Some(replies), out);
        self.actions = actions;
    }

    fn step(&mut self, event: Event, out: &mut Effects) {
        let now = self.now();
        let mut actions = std::mem::take(&mut self.actions);
        self.core.step_into(now, event, &mut actions);
        self.execute(&mut actions, None, out);
        self.actions = actions;
        self.settle_transfer();
    }

    /// Streamed snapshots: stages a chunk received from the leader.
    fn stage_snapshot_chunk(&mut self, meta: SnapshotMeta, offset: u64, data: &[u8]) {
        let Some(files) = self.snapshot_files.as_mut() else {
            return;
        };
        if let Err(error) = files.stage(meta, offset, data) {
            self.failure = Some(format!("cannot stage a snapshot chunk: {error}"));
        }
    }

    /// Streamed snapshots: reads the chunk the core asks for and hands its message over.
    fn send_snapshot_chunk(&mut self, request: SnapshotChunkRequest, out: &mut Effects) {
        let now = self.now();
        let Some(files) = self.snapshot_files.as_mut() else {
            return;
        };
        let index = request.meta.last_index;
        match files.read(request, now) {
            Ok(crate::snapfile::Chunk::Read(message)) => {
                if let Some(metrics) = &self.metrics {
                    metrics.sent(&message.body);
                }
                out.messages.push(message)
            }
            Ok(crate::snapfile::Chunk::PastEnd) => {}
            Ok(crate::snapfile::Chunk::Gone) => {
                self.unavailable = self.unavailable.max(Some(index));
            }
            Err(error) => {
                // A snapshot file that cannot be read (damaged, or the disk failing) would
                // stall every transfer while this node leads: report it and stop.
                self.failure = Some(format!("cannot read snapshot {index}: {error}"));
            }
        }
    }

    /// Streamed snapshots: restores the state machine from the snapshot file of `index`.
    fn restore_streamed(&mut self, index: Index) {
        let Some(files) = self.snapshot_files.as_ref() else {
            return;
        };
        let mut reader = match crate::snapfile::open(files.dir(), index) {
            Ok(reader) => reader,
            Err(error) => {
                self.failure = Some(format!("cannot open snapshot {index}: {error}"));
                return;
            }
        };
        match &mut self.applier {
            Applier::Loop(state_machine) => {
                if let Err(error) = state_machine.restore_from(&mut reader) {
                    self.failure = Some(format!("cannot restore snapshot {index}: {error}"));
                }
            }
            Applier::Thread { thread, .. } => {
                thread.restore_from(index, reader);
            }
        }
    }

    /// A transfer under way completes once this node stepped down and knows a new leader.
    fn settle_transfer(&mut self) {
        if !self.core.is_leader() {
            self.transfer_target = None;
        }
        let me = self.id();
        if self.transfer.is_some() && self.core.leader().is_some_and(|l| l != me) {
            if let Some(reply) = self.transfer.take() {
                reply(Ok(()));
            }
        }
    }

    /// Carries out a step's actions; `replies` are the proposers of the step's proposals.
    fn execute(
        &mut self,
        actions: &mut Vec<Action>,
        mut replies: Option<Vec<Reply>>,
        out: &mut Effects,
    ) {
        let mut snapshot_due = false;
        for action in actions.drain(..) {
            match action {
                Action::Persist(write) => {
                    if let (Some(files), Some(snapshot)) =
                        (self.snapshot_files.as_mut(), &write.snapshot)
                    {
                        // A snapshot received: its staging file is complete.
                        // (If it cannot be, the file is gone and the persist fails to install it.)
                        if let Err(error) = files.seal(snapshot.meta) {
                            self.failure = Some(format!("cannot seal a snapshot: {error}"));
                        }
                    }
                    if let Some(metrics) = &self.metrics {
                        metrics.write(write.entries.len());
                    }
                    out.writes.push(write)
                }
                Action::StageSnapshotChunk { meta, offset, data } => {
                    self.stage_snapshot_chunk(meta, offset, &data);
                }
                Action::SendSnapshotChunk(request) => self.send_snapshot_chunk(request, out),
                Action::Send(message) => {
                    if let Some(metrics) = &self.metrics {
                        metrics.sent(&message.body);
                    }
                    out.messages.push(message)
                }
                Action::Apply {
                    first_index,
                    entries,
                } => {
                    // The proposers of entries handed to the state machine's thread.
                    let mut handed = Vec::new();
                    for (k, entry) in entries.iter().enumerate() {
                        let index = first_index + k as Index;
                        if !self.changes.is_empty() {
                            let membership = (entry.kind == EntryKind::Membership)
                                .then(|| Membership::decode(&entry.data))
                                .flatten();
                            self.on_membership_applied(index, entry.term, membership);
                        }
                        // Everyone waiting at or below this index is settled now: the
                        // proposer of this very entry gets its answer, the others lost.
                        let mut proposer = None;
                        while let Some(waiting) = self.waiting.first_entry() {
                            if *waiting.key() > index {
                                break;
                            }
                            let at = *waiting.key();
                            let (term, reply) = waiting.remove();
                            if at == index && term == entry.term {
                                proposer = Some(reply);
                            } else {
                                reply(Err(ProposeError::Lost));
                            }
                        }
                        match (&mut self.applier, proposer) {
                            (Applier::Loop(state_machine), proposer) => {
                                let answer = match entry.kind {
                                    EntryKind::Command => state_machine.apply(index, &entry.data),
                                    _ => Vec::new(),
                                };
                                if let Some(reply) = proposer {
                                    reply(Ok(answer));
                                }
                            }
                            (Applier::Thread { .. }, Some(reply)) => handed.push((index, reply)),
                            (Applier::Thread { .. }, None) => {}
                        }
                        if let Some(every) = self.snapshot_every {
                            if index >= self.last_snapshot + every {
                                snapshot_due = true;
                            }
                        }
                    }
                    if let Applier::Thread { thread, .. } = &self.applier {
                        // A thread that is gone reported why; the loop stops on it.
                        thread.apply(first_index, entries, handed);
                    }
                }
                Action::RestoreSnapshot(snapshot) => {
                    if let Some(metrics) = &self.metrics {
                        metrics.snapshots_installed.increment(1);
                    }
                    match &mut self.applier {
                        _ if self.snapshot_files.is_some() => {
                            self.restore_streamed(snapshot.meta.last_index);
                        }
                        Applier::Loop(state_machine) => state_machine.restore(&snapshot.data),
                        Applier::Thread { thread, .. } => {
                            thread.restore(snapshot.meta.last_index, snapshot.data.clone());
                        }
                    }
                    self.last_snapshot = snapshot.meta.last_index;
                    // A change covered by the snapshot may have completed (or not).
                    let covered = snapshot.meta.last_index;
                    let mut i = 0;
                    while i < self.changes.len() {
                        if self.changes[i].index <= covered {
                            let waiter = self.changes.swap_remove(i);
                            let result = match waiter.term {
                                None if !snapshot.membership.is_joint() => {
                                    Ok(snapshot.membership.clone())
                                }
                                _ => Err(ProposeError::Indeterminate),
                            };
                            (waiter.reply)(result);
                        } else {
                            i += 1;
                        }
                    }
                    // Those proposals may be committed inside the snapshot: say so, and let
                    // the client find out rather than retry a command that may have run.
                    while let Some(waiting) = self.waiting.first_entry() {
                        if *waiting.key() > snapshot.meta.last_index {
                            break;
                        }
                        (waiting.remove().1)(Err(ProposeError::Indeterminate));
                    }
                }
                Action::MembershipOutcome(outcome) => {
                    let Some(reply) = self.change_reply.take() else {
                        continue;
                    };
                    match outcome {
                        MembershipOutcome::Accepted { index, term, .. } => {
                            self.changes.push(ChangeWaiter {
                                index,
                                term: Some(term),
                                deadline: self.now().saturating_add(self.proposal_timeout),
                                reply,
                            });
                        }
                        MembershipOutcome::Refused(MembershipError::NotLeader { leader_hint }) => {
                            reply(Err(ProposeError::NotLeader { leader_hint }));
                        }
                        MembershipOutcome::Refused(error) => {
                            reply(Err(ProposeError::Refused(error)))
                        }
                        _ => reply(Err(ProposeError::Lost)),
                    }
                }
                Action::ReadReady { context, index } => {
                    if let Some(reply) = self.reads.remove(&context) {
                        if self.state_machine_applied() >= index {
                            reply(Ok(index));
                        } else {
                            // The state machine's thread has not applied it yet.
                            self.wait_applied(
                                index,
                                Box::new(move |applied| {
                                    reply(applied.map(|_| index).map_err(|_| ReadError::ShutDown))
                                }),
                            );
                        }
                    }
                }
                Action::ReadRefused { context, reason } => {
                    if let Some(reply) = self.reads.remove(&context) {
                        reply(Err(reason.into()));
                    }
                }
                Action::TransferOutcome(outcome) => self.on_transfer_outcome(outcome),
                Action::ProposalOutcome(outcome) => {
                    let Some(replies) = replies.take() else {
                        continue;
                    };
                    match outcome {
                        ProposalOutcome::Accepted {
                            first_index, term, ..
                        } => {
                            let deadline = self.now().saturating_add(self.proposal_timeout);
                            for (k, reply) in replies.into_iter().enumerate() {
                                let index = first_index + k as Index;
                                self.deadlines.push_back((deadline, index, term));
                                if let Some((_, earlier)) =
                                    self.waiting.insert(index, (term, reply))
                                {
                                    // A new leader term re-used the index: the earlier one lost.
                                    earlier(Err(ProposeError::Lost));
                                }
                            }
                        }
                        ProposalOutcome::NotLeader { leader_hint, .. } => {
                            for reply in replies {
                                reply(Err(ProposeError::NotLeader { leader_hint }));
                            }
                        }
                        ProposalOutcome::Refused {
                            reason: ProposalRefusal::TransferInProgress,
                            ..
                        } => {
                            let to = self.core.leader().unwrap_or_default();
                            let error = self.transfer_target.map_or(
                                ProposeError::NotLeader {
                                    leader_hint: Some(to),
                                },
                                |to| ProposeError::Transferring { to },
                            );
                            for reply in replies {
                                reply(Err(error.clone()));
                            }
                        }
                        _ => {
                            for reply in replies {
                                reply(Err(ProposeError::Lost));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(last_index) = self.unavailable.take() {
            let now = self.now();
            let mut more = Vec::new();
            self.core
                .step_into(now, Event::SnapshotUnavailable { last_index }, &mut more);
            self.execute(&mut more, None, out);
        }
        if snapshot_due {
            let last_index = self.core.applied_index();
            self.last_snapshot = last_index;
            let dir = self.snapshot_files.as_ref().map(|f| f.dir().to_path_buf());
            let data = match (&self.applier, dir) {
                (Applier::Loop(state_machine), Some(dir)) => {
                    // Streamed: stored first, then reported without its bytes.
                    let stored = crate::snapfile::store_taken(&dir, last_index, |out| {
                        state_machine.snapshot_to(out)
                    });
                    if let Err(error) = stored {
                        // The log is not compacted this time; the next interval tries again.
                        tracing::warn!(%error, "cannot store a snapshot");
                        return;
                    }
                    Payload::from(&[][..])
                }
                (Applier::Loop(state_machine), None) => Payload::from(state_machine.snapshot()),
                (Applier::Thread { thread, .. }, dir) => {
                    // The thread takes it after applying what it was handed, and reports it.
                    thread.snapshot(last_index, dir);
                    return;
                }
            };
            if let Some(metrics) = &self.metrics {
                metrics.snapshots_taken.increment(1);
            }
            let now = self.now();
            let mut more = Vec::new();
            self.core
                .step_into(now, Event::SnapshotTaken { last_index, data }, &mut more);
            self.execute(&mut more, None, out);
        }
    }
}
