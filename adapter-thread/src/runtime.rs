//! The node loop on OS threads: gather inputs, step the core, carry out its actions.
//!
//! Three threads per node:
//! - the **node thread** owns the [`raft_proto::Node`] and the [`StateMachine`]. It waits for
//!   the next input (a peer message, a proposal, a durability acknowledgement, a status
//!   request) or the core's next deadline, feeds everything that is ready to `step` (all
//!   waiting proposals as one batch), and carries out the actions: persists go to the storage
//!   thread, messages to the transport, committed entries to the state machine, answers to the
//!   proposers;
//! - the **storage thread** takes every batch of persists that is waiting, writes it with one
//!   write and one fsync ([`FileStorage::persist`]), and only then acknowledges it;
//! - the transport's own threads (see [`crate::transport`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, unbounded, Receiver, RecvTimeoutError, Sender};
use raft_proto::{
    Action, Config, EntryKind, Event, Index, Message, NodeId, Payload, Persist, ProposalOutcome,
    Role, Term,
};

use crate::storage::{FileStorage, StorageError};
use crate::transport::Transport;

/// The application's replicated state machine.
pub trait StateMachine: Send + 'static {
    /// Applies the committed command at `index` and returns the answer for its proposer.
    fn apply(&mut self, index: Index, command: &[u8]) -> Vec<u8>;
    /// Serializes the whole state (everything applied so far).
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces the whole state with a snapshot produced by [`snapshot`](Self::snapshot).
    fn restore(&mut self, snapshot: &[u8]);
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
}

impl NodeOptions {
    /// Options with the core's default timing (in milliseconds) and a snapshot every 10,000
    /// entries.
    pub fn new(id: NodeId, voters: Vec<NodeId>, data_dir: impl Into<PathBuf>) -> Self {
        let mut raft = Config::new(id, voters);
        raft.election_timeout_min = 300;
        raft.election_timeout_max = 600;
        raft.heartbeat_interval = 50;
        Self {
            raft,
            data_dir: data_dir.into(),
            snapshot_every: Some(10_000),
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
    Storage(#[from] StorageError),
    /// The core refused the configuration or the recovered state.
    #[error("the core refused to start: {0}")]
    Core(#[from] raft_proto::StartError),
    /// A thread could not be spawned.
    #[error("cannot spawn a thread: {0}")]
    Spawn(#[from] std::io::Error),
}

/// A node's state, as [`NodeHandle::status`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// The node's id.
    pub id: NodeId,
    /// Its current term.
    pub term: Term,
    /// Its role.
    pub role: Role,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Its commit index.
    pub commit_index: Index,
    /// The index its state machine has applied.
    pub applied_index: Index,
    /// The last index covered by its latest snapshot.
    pub snapshot_index: Index,
}

enum Command {
    Propose(Vec<u8>, Reply),
    Status(Sender<Status>),
    Shutdown,
}

/// The application's handle on a running node. Cloneable; every clone talks to the same node.
#[derive(Clone)]
pub struct NodeHandle {
    commands: Sender<Command>,
    id: NodeId,
    threads: std::sync::Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle").field("id", &self.id).finish()
    }
}

impl NodeHandle {
    /// Proposes `command` and blocks until it is committed and applied (returning the state
    /// machine's answer), refused, or `timeout` passes.
    pub fn propose(&self, command: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, ProposeError> {
        let (reply, answer) = bounded(1);
        self.commands
            .send(Command::Propose(command, reply))
            .map_err(|_| ProposeError::ShutDown)?;
        match answer.recv_timeout(timeout) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(ProposeError::TimedOut),
            Err(RecvTimeoutError::Disconnected) => Err(ProposeError::ShutDown),
        }
    }

    /// The node's current state, or None once it is shut down.
    pub fn status(&self) -> Option<Status> {
        let (reply, answer) = bounded(1);
        self.commands.send(Command::Status(reply)).ok()?;
        answer.recv_timeout(Duration::from_secs(5)).ok()
    }

    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Stops the node: proposals still waiting fail with [`ProposeError::ShutDown`], writes
    /// already issued are completed (nothing acknowledged is lost), and the node's threads
    /// are joined.
    pub fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
        let threads: Vec<JoinHandle<()>> = match self.threads.lock() {
            Ok(mut threads) => threads.drain(..).collect(),
            Err(_) => return,
        };
        for thread in threads {
            let _ = thread.join();
        }
    }
}

impl<T: Transport> Transport for std::sync::Arc<T> {
    fn send(&self, message: Message) {
        (**self).send(message);
    }
}

/// Starts a node: recovers its state from `options.data_dir`, restores the state machine from
/// the latest snapshot, and runs it with `transport` for outgoing messages and `inbound` for
/// incoming ones (the transport's receiving side).
pub fn start<S: StateMachine, T: Transport>(
    options: NodeOptions,
    mut state_machine: S,
    transport: T,
    inbound: Receiver<Message>,
) -> Result<NodeHandle, StartError> {
    let (storage, durable, report) = FileStorage::open(&options.data_dir)?;
    if report.repaired_bytes > 0 {
        tracing::warn!(
            repaired_bytes = report.repaired_bytes,
            "cut a torn tail off the log (an unacknowledged write)"
        );
    }
    if let Some(snapshot) = &durable.snapshot {
        state_machine.restore(&snapshot.data);
    }
    let epoch = Instant::now();
    let core = raft_proto::Node::restore(options.raft.clone(), durable, 0)?;
    let id = core.id();
    let (commands_tx, commands_rx) = unbounded();
    let (writes_tx, writes_rx) = unbounded::<Vec<Persist>>();
    let (durable_tx, durable_rx) = unbounded::<Result<u64, String>>();
    let storage_thread = std::thread::Builder::new()
        .name(format!("raft-{id}-storage"))
        .spawn(move || storage_loop(storage, writes_rx, durable_tx))?;
    let snapshot_index = core.snapshot_index();
    let node_thread = std::thread::Builder::new()
        .name(format!("raft-{id}-node"))
        .spawn(move || {
            let mut runner = Runner {
                core,
                state_machine,
                transport,
                writes: writes_tx,
                epoch,
                snapshot_every: options.snapshot_every,
                last_snapshot: snapshot_index,
                waiting: BTreeMap::new(),
                batch: Vec::new(),
                actions: Vec::new(),
            };
            runner.run(&inbound, &commands_rx, &durable_rx);
        })?;
    Ok(NodeHandle {
        commands: commands_tx,
        id,
        threads: std::sync::Arc::new(std::sync::Mutex::new(vec![node_thread, storage_thread])),
    })
}

/// Writes every waiting batch with one fsync, then acknowledges the highest sequence number.
fn storage_loop(
    mut storage: FileStorage,
    writes: Receiver<Vec<Persist>>,
    durable: Sender<Result<u64, String>>,
) {
    while let Ok(first) = writes.recv() {
        let mut batch = first;
        while let Ok(more) = writes.try_recv() {
            batch.extend(more);
        }
        let Some(last_seq) = batch.last().map(|p| p.seq) else {
            continue;
        };
        match storage.persist(&batch) {
            Ok(()) => {
                if durable.send(Ok(last_seq)).is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "storage failed; the node stops");
                let _ = durable.send(Err(e.to_string()));
                return;
            }
        }
    }
}

/// Where a proposer waits for its answer.
type Reply = Sender<Result<Vec<u8>, ProposeError>>;

/// Proposers waiting for the entry at an index, with the term it was appended in.
type Waiting = BTreeMap<Index, (Term, Reply)>;

struct Runner<S, T> {
    core: raft_proto::Node,
    state_machine: S,
    transport: T,
    writes: Sender<Vec<Persist>>,
    epoch: Instant,
    snapshot_every: Option<u64>,
    last_snapshot: Index,
    waiting: Waiting,
    /// Proposals gathered for the next step.
    batch: Vec<(Vec<u8>, Reply)>,
    actions: Vec<Action>,
}

/// How much input one wake-up takes before stepping the timers again.
const MAX_INPUTS_PER_WAKE: usize = 4096;

impl<S: StateMachine, T: Transport> Runner<S, T> {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn run(
        &mut self,
        inbound: &Receiver<Message>,
        commands: &Receiver<Command>,
        durable: &Receiver<Result<u64, String>>,
    ) {
        let never = crossbeam_channel::never();
        let mut inbound = inbound;
        loop {
            let wait = Duration::from_millis(self.core.next_deadline().saturating_sub(self.now()));
            let mut stop = false;
            select! {
                recv(inbound) -> message => match message {
                    Ok(message) => self.step(Event::Message(message)),
                    // The transport is gone: no more messages, but the node still serves
                    // its handle (and shuts down cleanly).
                    Err(_) => inbound = &never,
                },
                recv(commands) -> command => match command {
                    Ok(command) => stop = self.on_command(command),
                    Err(_) => stop = true,
                },
                recv(durable) -> seq => match seq {
                    Ok(Ok(seq)) => self.step(Event::Persisted { seq }),
                    _ => {
                        tracing::error!(id = self.core.id(), "storage is gone; stopping");
                        break;
                    }
                },
                default(wait) => {}
            }
            // Take whatever else is ready, bounded, so a busy node still keeps its timers.
            for _ in 0..MAX_INPUTS_PER_WAKE {
                if stop {
                    break;
                }
                if let Ok(Ok(seq)) = durable.try_recv() {
                    self.step(Event::Persisted { seq });
                } else if let Ok(command) = commands.try_recv() {
                    stop = self.on_command(command);
                } else if let Ok(message) = inbound.try_recv() {
                    self.step(Event::Message(message));
                } else {
                    break;
                }
            }
            self.flush_proposals();
            self.step(Event::Tick);
            if stop {
                break;
            }
        }
        for (_, (_, reply)) in std::mem::take(&mut self.waiting) {
            let _ = reply.send(Err(ProposeError::ShutDown));
        }
        // Dropping the write channel lets the storage thread finish what it was given.
    }

    /// Handles a command; true when the node must stop.
    fn on_command(&mut self, command: Command) -> bool {
        match command {
            Command::Propose(data, reply) => {
                self.batch.push((data, reply));
                if self.batch.len() >= MAX_INPUTS_PER_WAKE {
                    self.flush_proposals();
                }
                false
            }
            Command::Status(reply) => {
                let core = &self.core;
                let _ = reply.send(Status {
                    id: core.id(),
                    term: core.term(),
                    role: core.role(),
                    leader: core.leader(),
                    commit_index: core.commit_index(),
                    applied_index: core.applied_index(),
                    snapshot_index: core.snapshot_index(),
                });
                false
            }
            Command::Shutdown => true,
        }
    }

    /// Steps all gathered proposals as one batch: one log append, one write, one message per
    /// follower.
    fn flush_proposals(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        let (commands, replies): (Vec<Payload>, Vec<_>) = batch
            .into_iter()
            .map(|(data, reply)| (Payload::from(data), reply))
            .unzip();
        let now = self.now();
        let mut actions = std::mem::take(&mut self.actions);
        self.core
            .step_into(now, Event::Propose(commands), &mut actions);
        let mut replies = Some(replies);
        self.execute(&mut actions, &mut replies);
        self.actions = actions;
    }

    fn step(&mut self, event: Event) {
        let now = self.now();
        let mut actions = std::mem::take(&mut self.actions);
        self.core.step_into(now, event, &mut actions);
        self.execute(&mut actions, &mut None);
        self.actions = actions;
    }

    /// Carries out a step's actions. `replies` are the proposers of the step's proposals.
    fn execute(&mut self, actions: &mut Vec<Action>, replies: &mut Option<Vec<Reply>>) {
        let mut writes = Vec::new();
        let mut snapshot_due = false;
        for action in actions.drain(..) {
            match action {
                Action::Persist(write) => writes.push(write),
                Action::Send(message) => self.transport.send(message),
                Action::Apply {
                    first_index,
                    entries,
                } => {
                    for (k, entry) in entries.iter().enumerate() {
                        let index = first_index + k as Index;
                        let answer = match entry.kind {
                            EntryKind::Command => self.state_machine.apply(index, &entry.data),
                            _ => Vec::new(),
                        };
                        if let Some((term, reply)) = self.waiting.remove(&index) {
                            let result = if term == entry.term {
                                Ok(answer)
                            } else {
                                Err(ProposeError::Lost)
                            };
                            let _ = reply.send(result);
                        }
                        // Proposals below an applied index can never commit any more.
                        while let Some(entry) = self.waiting.first_entry() {
                            if *entry.key() > index {
                                break;
                            }
                            let _ = entry.remove().1.send(Err(ProposeError::Lost));
                        }
                        if let Some(every) = self.snapshot_every {
                            if index >= self.last_snapshot + every {
                                snapshot_due = true;
                            }
                        }
                    }
                }
                Action::RestoreSnapshot(snapshot) => {
                    self.state_machine.restore(&snapshot.data);
                    self.last_snapshot = snapshot.meta.last_index;
                    let covered = snapshot.meta.last_index;
                    while let Some(entry) = self.waiting.first_entry() {
                        if *entry.key() > covered {
                            break;
                        }
                        let _ = entry.remove().1.send(Err(ProposeError::Lost));
                    }
                }
                Action::ProposalOutcome(outcome) => {
                    let Some(replies) = replies.take() else {
                        continue;
                    };
                    match outcome {
                        ProposalOutcome::Accepted {
                            first_index, term, ..
                        } => {
                            for (k, reply) in replies.into_iter().enumerate() {
                                self.waiting.insert(first_index + k as Index, (term, reply));
                            }
                        }
                        ProposalOutcome::NotLeader { leader_hint, .. } => {
                            for reply in replies {
                                let _ = reply.send(Err(ProposeError::NotLeader { leader_hint }));
                            }
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        if !writes.is_empty() && self.writes.send(writes).is_err() {
            tracing::error!(id = self.core.id(), "storage thread is gone");
        }
        if snapshot_due {
            let last_index = self.core.applied_index();
            let data = Payload::from(self.state_machine.snapshot());
            self.last_snapshot = last_index;
            let now = self.now();
            let mut more = Vec::new();
            self.core
                .step_into(now, Event::SnapshotTaken { last_index, data }, &mut more);
            self.execute(&mut more, &mut None);
        }
    }
}
