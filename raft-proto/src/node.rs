//! The Raft node: elections, heartbeats, replication, commitment and persistence ordering, as
//! one deterministic state machine.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;

use crate::config::{Config, ConfigError};
use crate::io::{Action, Event, Persist, ProposalOutcome, ProposalRefusal};
use crate::log::Log;
use crate::message::{AppendOutcome, Message, MessageBody};
use crate::progress::{Mode, Progress};
use crate::rng::Rng;
use crate::types::{
    DurableState, Entry, HardState, Index, Instant, NodeId, Payload, Role, Snapshot, SnapshotMeta,
    Term,
};

/// One member of a Raft cluster, as a pure state machine.
///
/// Feed it [`Event`]s with [`step`](Self::step) (or [`step_into`](Self::step_into) to reuse an
/// action buffer) and carry out the [`Action`]s it returns, keeping the contract of the
/// [`io`](crate::io) module. Call `step(now, Event::Tick)` no later than
/// [`next_deadline`](Self::next_deadline) so that elections and heartbeats happen on time.
#[derive(Debug)]
pub struct Node {
    config: Config,
    /// The other voters.
    peers: Vec<NodeId>,
    role: Role,
    hard_state: HardState,
    leader: Option<NodeId>,
    log: Log,
    commit_index: Index,
    applied_index: Index,
    rng: Rng,
    now: Instant,
    election_deadline: Instant,
    heartbeat_deadline: Instant,
    /// Voters that granted this candidate their vote in the current term (itself included).
    votes: Vec<NodeId>,
    /// Voters that answered this candidate's vote request, granting or not.
    vote_answers: Vec<NodeId>,
    /// One per peer, meaningful while leader.
    progress: Vec<Progress>,
    /// Storage changes made during the current step, emitted as one persist at its end.
    write: PendingWrite,
    next_seq: u64,
    durable_seq: u64,
    /// Persists emitted and not yet reported durable: `(seq, last index after it, truncation)`.
    unacked_writes: VecDeque<(u64, Index, Option<Index>)>,
    /// The log prefix up to here is durable and equal to the in-memory log.
    stable_index: Index,
    /// The latest snapshot (taken here or installed from a leader), sent to lagging followers.
    snapshot: Option<Snapshot>,
    /// A snapshot being received from the leader, chunk by chunk.
    incoming: Option<IncomingSnapshot>,
    /// Messages waiting for the persist with the given sequence number to be durable.
    held: VecDeque<(u64, Message)>,
    /// Persist actions of the current step; they lead the step's output.
    persists: Vec<Action>,
    /// The other actions of the current step.
    actions: Vec<Action>,
    /// Scratch space for the commit computation, reused to keep the step allocation-free.
    match_scratch: Vec<Index>,
    stats: NodeStats,
}

/// Counters of peer input the node dropped instead of acting on. Nothing a peer sends can make
/// the node panic; what it cannot use is counted here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// Messages addressed to another node.
    pub misaddressed: u64,
    /// Messages from a node that is not a voter (or from this node itself).
    pub unknown_sender: u64,
    /// Messages of an older term (requests are still answered, so the sender learns the term).
    pub stale_term: u64,
    /// Responses that arrived when no longer relevant (role changed, reordered, duplicated).
    pub stale_response: u64,
    /// Messages that contradict the protocol (an index the leader never sent, a second leader
    /// in the same term, a rewrite of committed entries) or carry an implausible term or index
    /// (a term at or above 2^62 or more than 2^32 ahead of this node's, an index at or above
    /// 2^62).
    pub invalid: u64,
}

/// Why a node could not be started.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is unusable.
    Config(ConfigError),
    /// The durable state contradicts itself: a log term decreases, or exceeds the current term.
    InconsistentState {
        /// The first log index found wrong.
        index: Index,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => write!(f, "invalid configuration: {e}"),
            Self::InconsistentState { index } => write!(
                f,
                "durable state is inconsistent at log index {index}: terms must not decrease nor exceed the current term"
            ),
        }
    }
}

impl core::error::Error for StartError {}

impl From<ConfigError> for StartError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

#[derive(Debug, Default)]
struct PendingWrite {
    hard_state: bool,
    truncate_from: Option<Index>,
    snapshot: Option<Snapshot>,
    first_index: Index,
    entries: Vec<Entry>,
}

impl PendingWrite {
    fn is_empty(&self) -> bool {
        !self.hard_state
            && self.truncate_from.is_none()
            && self.snapshot.is_none()
            && self.entries.is_empty()
    }
}

#[derive(Debug)]
struct IncomingSnapshot {
    leader: NodeId,
    term: Term,
    meta: SnapshotMeta,
    data: Vec<u8>,
}

impl Node {
    /// A node with empty storage, as on first start.
    pub fn new(config: Config, now: Instant) -> Result<Self, StartError> {
        Self::restore(config, DurableState::default(), now)
    }

    /// A node rebuilt from what its storage holds after a crash or a shutdown. The state
    /// machine restarts from `durable.snapshot` (or empty without one); committed entries after
    /// it are applied again.
    pub fn restore(
        config: Config,
        durable: DurableState,
        now: Instant,
    ) -> Result<Self, StartError> {
        config.validate()?;
        let base = durable
            .snapshot
            .as_ref()
            .map(|s| s.meta)
            .unwrap_or_default();
        let mut previous = base.last_term;
        if previous > durable.hard_state.term {
            return Err(StartError::InconsistentState {
                index: base.last_index,
            });
        }
        for (i, entry) in durable.log.iter().enumerate() {
            if entry.term < previous || entry.term > durable.hard_state.term {
                return Err(StartError::InconsistentState {
                    index: base.last_index + i as Index + 1,
                });
            }
            previous = entry.term;
        }
        let peers: Vec<NodeId> = config
            .voters
            .iter()
            .copied()
            .filter(|&v| v != config.id)
            .collect();
        let log = Log::with_base(base.last_index, base.last_term, durable.log);
        let rng = Rng::new(config.seed ^ config.id.wrapping_mul(0xA076_1D64_78BD_642F));
        let mut node = Self {
            peers,
            role: Role::Follower,
            hard_state: durable.hard_state,
            leader: None,
            stable_index: log.last_index(),
            log,
            commit_index: base.last_index,
            applied_index: base.last_index,
            rng,
            now,
            election_deadline: now,
            heartbeat_deadline: now,
            votes: Vec::new(),
            vote_answers: Vec::new(),
            progress: Vec::new(),
            write: PendingWrite::default(),
            next_seq: 1,
            durable_seq: 0,
            unacked_writes: VecDeque::new(),
            held: VecDeque::new(),
            snapshot: durable.snapshot,
            incoming: None,
            persists: Vec::new(),
            actions: Vec::new(),
            match_scratch: Vec::new(),
            stats: NodeStats::default(),
            config,
        };
        node.reset_election_timer();
        Ok(node)
    }

    /// Feeds one event at time `now` and returns the actions to carry out.
    #[must_use = "the actions must be carried out"]
    pub fn step(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        self.step_into(now, event, &mut out);
        out
    }

    /// Like [`step`](Self::step), but appends the actions to `out`, so that a caller can reuse
    /// one buffer across steps.
    pub fn step_into(&mut self, now: Instant, event: Event, out: &mut Vec<Action>) {
        self.now = self.now.max(now);
        match event {
            Event::Tick => {}
            Event::Message(message) => self.on_message(message),
            Event::Propose(commands) => self.on_propose(commands),
            Event::Persisted { seq } => self.on_persisted(seq),
            Event::SnapshotTaken { last_index, data } => self.on_snapshot_taken(last_index, data),
        }
        self.on_time();
        if self.role == Role::Leader {
            self.advance_commit();
            self.replicate();
        }
        self.apply_committed();
        self.flush_write();
        out.append(&mut self.persists);
        out.append(&mut self.actions);
    }

    // --- Accessors -------------------------------------------------------------------------

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.hard_state.term
    }

    /// The candidate voted for in the current term.
    pub fn voted_for(&self) -> Option<NodeId> {
        self.hard_state.voted_for
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether this node is the leader of its current term.
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    /// The leader of the current term, if known.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// The highest index known to be committed.
    pub fn commit_index(&self) -> Index {
        self.commit_index
    }

    /// The highest index handed to the state machine in an [`Action::Apply`].
    pub fn applied_index(&self) -> Index {
        self.applied_index
    }

    /// The last index covered by the latest snapshot (0 without one).
    pub fn snapshot_index(&self) -> Index {
        self.snapshot.as_ref().map_or(0, |s| s.meta.last_index)
    }

    /// The first log index held in memory (after the latest snapshot, or a few entries before
    /// it on a leader, for followers catching up).
    pub fn first_log_index(&self) -> Index {
        self.log.base_index() + 1
    }

    /// The index of the last log entry.
    pub fn last_log_index(&self) -> Index {
        self.log.last_index()
    }

    /// The term of the entry at `index`, if the log holds it or it is the snapshot's last
    /// entry (index 0 has term 0).
    pub fn log_term(&self, index: Index) -> Option<Term> {
        self.log.term(index)
    }

    /// The entry at `index`, if the log holds it.
    pub fn log_entry(&self, index: Index) -> Option<&Entry> {
        self.log.entry(index)
    }

    /// Counters of dropped peer input.
    pub fn stats(&self) -> NodeStats {
        self.stats
    }

    /// When the node next needs a [`Event::Tick`] (an election timeout, a heartbeat round, or a
    /// candidate's retransmission of its vote requests).
    pub fn next_deadline(&self) -> Instant {
        match self.role {
            Role::Leader => self.heartbeat_deadline,
            Role::Candidate => self.election_deadline.min(self.heartbeat_deadline),
            Role::Follower => self.election_deadline,
        }
    }

    // --- Inputs ----------------------------------------------------------------------------

    fn on_message(&mut self, message: Message) {
        if message.to != self.config.id {
            self.stats.misaddressed += 1;
            return;
        }
        if !self.peers.contains(&message.from) {
            self.stats.unknown_sender += 1;
            return;
        }
        if !indexes_are_plausible(&message.body)
            || !term_is_plausible(message.term, self.hard_state.term)
        {
            self.stats.invalid += 1;
            return;
        }
        if message.term > self.hard_state.term {
            let leader =
                matches!(message.body, MessageBody::AppendRequest { .. }).then_some(message.from);
            self.become_follower(message.term, leader);
        } else if message.term < self.hard_state.term {
            self.stats.stale_term += 1;
            self.answer_stale_request(&message);
            return;
        }
        let from = message.from;
        match message.body {
            MessageBody::VoteRequest {
                last_log_index,
                last_log_term,
            } => self.on_vote_request(from, last_log_index, last_log_term),
            MessageBody::VoteResponse { granted } => self.on_vote_response(from, granted),
            MessageBody::AppendRequest {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => {
                self.on_append_request(from, prev_log_index, prev_log_term, entries, leader_commit)
            }
            MessageBody::AppendResponse { outcome } => self.on_append_response(from, outcome),
            MessageBody::SnapshotChunk {
                meta,
                offset,
                data,
                done,
            } => self.on_snapshot_chunk(from, meta, offset, data, done),
            MessageBody::SnapshotAck {
                last_index,
                received,
            } => self.on_snapshot_ack(from, last_index, received),
        }
    }

    /// A request from an older term is refused with the current term, so that its sender
    /// learns it is out of date.
    fn answer_stale_request(&mut self, message: &Message) {
        let body = match message.body {
            MessageBody::VoteRequest { .. } => MessageBody::VoteResponse { granted: false },
            MessageBody::AppendRequest { prev_log_index, .. } => MessageBody::AppendResponse {
                outcome: AppendOutcome::Rejected {
                    rejected_prev: prev_log_index,
                    hint_index: 0,
                    conflict_term: None,
                },
            },
            MessageBody::SnapshotChunk { meta, .. } => MessageBody::SnapshotAck {
                last_index: meta.last_index,
                received: 0,
            },
            _ => return,
        };
        self.send_when_durable(message.from, body);
    }

    fn on_vote_request(&mut self, candidate: NodeId, last_log_index: Index, last_log_term: Term) {
        let up_to_date =
            (last_log_term, last_log_index) >= (self.log.last_term(), self.log.last_index());
        let free = match self.hard_state.voted_for {
            None => true,
            Some(v) => v == candidate,
        };
        let granted = self.role == Role::Follower && free && up_to_date;
        if granted {
            self.hard_state.voted_for = Some(candidate);
            self.write.hard_state = true;
            self.reset_election_timer();
        }
        let body = MessageBody::VoteResponse { granted };
        if granted && self.bugs().grant_vote_before_persist {
            self.send_now(candidate, body);
        } else {
            self.send_when_durable(candidate, body);
        }
    }

    fn on_vote_response(&mut self, voter: NodeId, granted: bool) {
        if self.role != Role::Candidate {
            self.stats.stale_response += 1;
            return;
        }
        if !self.vote_answers.contains(&voter) {
            self.vote_answers.push(voter);
        }
        if granted && !self.votes.contains(&voter) {
            self.votes.push(voter);
            if self.votes.len() >= self.quorum() {
                self.become_leader();
            }
        }
    }

    fn on_append_request(
        &mut self,
        leader: NodeId,
        prev_log_index: Index,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: Index,
    ) {
        if self.role == Role::Leader {
            // Two leaders in one term cannot happen in a correct cluster.
            self.stats.invalid += 1;
            return;
        }
        // A valid leader of the current term: follow it (a candidate steps down, keeping its
        // vote) and restart the election timer.
        self.become_follower(self.hard_state.term, Some(leader));
        self.reset_election_timer();

        let (prev_log_index, prev_log_term, entries) =
            match self.skip_snapshotted(prev_log_index, prev_log_term, entries) {
                Ok(rest) => rest,
                Err(match_index) => {
                    let body = MessageBody::AppendResponse {
                        outcome: AppendOutcome::Accepted { match_index },
                    };
                    return self.send_when_durable(leader, body);
                }
            };
        let reject = |node: &Self, hint_index: Index, conflict_term: Option<Term>| {
            MessageBody::AppendResponse {
                outcome: AppendOutcome::Rejected {
                    rejected_prev: prev_log_index,
                    hint_index: hint_index.max(node.commit_index + 1).max(1),
                    conflict_term,
                },
            }
        };
        match self.log.term(prev_log_index) {
            None => {
                let body = reject(self, self.log.last_index() + 1, None);
                return self.send_when_durable(leader, body);
            }
            Some(term) if term != prev_log_term => {
                let first = self.log.first_index_of_term(term, prev_log_index);
                let body = reject(self, first, Some(term));
                return self.send_when_durable(leader, body);
            }
            Some(_) => {}
        }

        // The logs match up to prev_log_index. Append what is new; truncate only on a real
        // conflict, never because a (reordered) request carries fewer entries than we hold.
        let Some(match_index) = prev_log_index.checked_add(entries.len() as Index) else {
            self.stats.invalid += 1;
            return;
        };
        let mut index = prev_log_index;
        self.reserve_log(entries.len());
        for entry in entries {
            index += 1;
            match self.log.term(index) {
                Some(term) if term == entry.term => continue,
                Some(_) => {
                    if index <= self.commit_index || entry.term > self.hard_state.term {
                        self.stats.invalid += 1;
                        return;
                    }
                    self.truncate_log(index);
                }
                None => {}
            }
            if entry.term > self.hard_state.term || entry.term < self.log.last_term() {
                self.stats.invalid += 1;
                return;
            }
            self.append_to_log(entry);
        }
        // Commit only what is known to match the leader's log.
        self.commit_index = self.commit_index.max(leader_commit.min(match_index));
        let body = MessageBody::AppendResponse {
            outcome: AppendOutcome::Accepted { match_index },
        };
        if self.bugs().accept_append_before_persist {
            self.send_now(leader, body);
        } else {
            self.send_when_durable(leader, body);
        }
    }

    fn on_append_response(&mut self, follower: NodeId, outcome: AppendOutcome) {
        if self.role != Role::Leader {
            self.stats.stale_response += 1;
            return;
        }
        let last_index = self.log.last_index();
        let Some(pos) = self.progress.iter().position(|p| p.id == follower) else {
            return;
        };
        match outcome {
            AppendOutcome::Accepted { match_index } => {
                if match_index > last_index {
                    self.stats.invalid += 1;
                    return;
                }
                self.progress[pos].on_accepted(match_index);
            }
            AppendOutcome::Rejected {
                rejected_prev,
                hint_index,
                conflict_term,
            } => {
                let base = self.log.base_index();
                let progress = &mut self.progress[pos];
                if !progress.rejection_is_current(rejected_prev) {
                    self.stats.stale_response += 1;
                    return;
                }
                if progress.mode == Mode::Replicate
                    && conflict_term.is_none()
                    && hint_index > progress.match_index
                    && hint_index > base
                {
                    // Not a conflict: the follower's log ends before this append (an earlier
                    // one was reordered or lost). Keep pipelining, resending once from where
                    // its log ends; the other rejections of the same gap are then stale.
                    if progress.rewound_to != Some(hint_index) {
                        progress.rewind_to(hint_index);
                        self.replicate_to(pos);
                    } else {
                        self.stats.stale_response += 1;
                    }
                    return;
                }
                // Skip the whole conflicting term at once (fast backtracking): past the last
                // entry of that term in our log if we have it, else to the follower's hint.
                let next = match conflict_term.and_then(|t| self.log.last_index_of_term(t)) {
                    Some(last_of_term) => last_of_term + 1,
                    None => hint_index,
                };
                let progress = &mut self.progress[pos];
                progress.probe_from(next.min(rejected_prev).min(last_index + 1));
            }
        }
        self.replicate_to(pos);
    }

    /// Drops the entries of an append request that our snapshot already covers (they are
    /// committed, so they match). `Err(match_index)` when nothing is left to look at.
    fn skip_snapshotted(
        &self,
        prev_log_index: Index,
        prev_log_term: Term,
        mut entries: Vec<Entry>,
    ) -> Result<(Index, Term, Vec<Entry>), Index> {
        let base = self.log.base_index();
        if prev_log_index >= base {
            return Ok((prev_log_index, prev_log_term, entries));
        }
        let skip = base - prev_log_index;
        if (entries.len() as Index) < skip {
            return Err(prev_log_index + entries.len() as Index);
        }
        let at_base = entries.drain(..skip as usize).next_back();
        let term = at_base.map_or(prev_log_term, |e| e.term);
        Ok((base, term, entries))
    }

    fn on_snapshot_chunk(
        &mut self,
        leader: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Payload,
        done: bool,
    ) {
        if self.role == Role::Leader || meta.last_term > self.hard_state.term {
            // A second leader in this term, or a snapshot of entries from the future.
            self.stats.invalid += 1;
            return;
        }
        self.become_follower(self.hard_state.term, Some(leader));
        self.reset_election_timer();
        if meta.last_index <= self.commit_index {
            // Everything it covers is committed here already: nothing to install.
            self.incoming = None;
            let body = MessageBody::AppendResponse {
                outcome: AppendOutcome::Accepted {
                    match_index: meta.last_index,
                },
            };
            return self.send_when_durable(leader, body);
        }
        // A transfer belongs to one leader, in one term, of one snapshot: bytes from anyone
        // else never continue it (two leaders' snapshots of the same index may differ byte for
        // byte). A chunk of another transfer restarts it, from its first chunk.
        let term = self.hard_state.term;
        let same = self
            .incoming
            .as_ref()
            .is_some_and(|i| i.leader == leader && i.term == term && i.meta == meta);
        if !same {
            self.incoming = (offset == 0).then(|| IncomingSnapshot {
                leader,
                term,
                meta,
                data: Vec::new(),
            });
        }
        let received = match self.incoming.as_mut() {
            Some(incoming) if incoming.data.len() as u64 == offset => {
                incoming.data.extend_from_slice(&data);
                if done {
                    let data = Payload::from(core::mem::take(&mut incoming.data));
                    self.incoming = None;
                    self.install_snapshot(Snapshot { meta, data });
                    let body = MessageBody::AppendResponse {
                        outcome: AppendOutcome::Accepted {
                            match_index: meta.last_index,
                        },
                    };
                    return self.send_when_durable(leader, body);
                }
                incoming.data.len() as u64
            }
            // A gap or a duplicate: say where we are.
            Some(incoming) => incoming.data.len() as u64,
            // A later chunk of a transfer we do not hold: start over.
            None => 0,
        };
        let body = MessageBody::SnapshotAck {
            last_index: meta.last_index,
            received,
        };
        self.send_when_durable(leader, body);
    }

    /// Installs a snapshot received from the leader: the log keeps the entries after it if they
    /// match, the state machine is replaced, and storage gets both in one atomic persist.
    fn install_snapshot(&mut self, snapshot: Snapshot) {
        let meta = snapshot.meta;
        if !self.write.is_empty() {
            self.flush_write();
        }
        let old_base = self.log.base_index();
        if !self.log.compact_to(meta.last_index, meta.last_term) {
            self.write.truncate_from = Some(old_base + 1);
            self.stable_index = self.stable_index.min(old_base);
        }
        self.commit_index = self.commit_index.max(meta.last_index);
        if meta.last_index > self.applied_index {
            self.applied_index = meta.last_index;
            self.actions.push(Action::RestoreSnapshot(snapshot.clone()));
        }
        self.write.snapshot = Some(snapshot.clone());
        self.snapshot = Some(snapshot);
    }

    fn on_snapshot_ack(&mut self, follower: NodeId, last_index: Index, received: u64) {
        if self.role != Role::Leader {
            self.stats.stale_response += 1;
            return;
        }
        let Some(pos) = self.progress.iter().position(|p| p.id == follower) else {
            return;
        };
        if self.progress[pos].on_snapshot_ack(last_index, received) {
            self.replicate_to(pos);
        } else {
            self.stats.stale_response += 1;
        }
    }

    fn on_snapshot_taken(&mut self, last_index: Index, data: Payload) {
        if last_index <= self.snapshot_index() || last_index > self.applied_index {
            return;
        }
        let Some(last_term) = self.log.term(last_index) else {
            return;
        };
        if !self.write.is_empty() {
            self.flush_write();
        }
        // A leader keeps a few entries before the snapshot for followers slightly behind.
        let slowest = self.progress.iter().map(|p| p.match_index).min();
        let keep_from = slowest.map_or(last_index, |m| {
            m.max(last_index.saturating_sub(self.config.snapshot_catchup_entries))
        });
        let compact_to = last_index.min(keep_from);
        if let Some(term) = self.log.term(compact_to) {
            self.log.compact_to(compact_to, term);
        }
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                last_index,
                last_term,
            },
            data,
        };
        self.write.snapshot = Some(snapshot.clone());
        self.snapshot = Some(snapshot);
    }

    fn on_propose(&mut self, commands: Vec<Payload>) {
        if commands.is_empty() {
            let refusal = ProposalOutcome::Refused {
                count: 0,
                reason: ProposalRefusal::Empty,
            };
            return self.actions.push(Action::ProposalOutcome(refusal));
        }
        if self.role != Role::Leader {
            self.actions
                .push(Action::ProposalOutcome(ProposalOutcome::NotLeader {
                    count: commands.len(),
                    leader_hint: self.leader,
                }));
            return;
        }
        let term = self.hard_state.term;
        let first_index = self.log.last_index() + 1;
        self.reserve_log(commands.len());
        for data in commands {
            self.append_to_log(Entry::command(term, data));
        }
        self.actions
            .push(Action::ProposalOutcome(ProposalOutcome::Accepted {
                first_index,
                last_index: self.log.last_index(),
                term,
            }));
    }

    fn on_persisted(&mut self, seq: u64) {
        if seq >= self.next_seq || seq <= self.durable_seq {
            // Not a persist of this node (or already reported): nothing to learn.
            return;
        }
        self.durable_seq = seq;
        let mut stable = None;
        while let Some(&(s, last, _)) = self.unacked_writes.front() {
            if s > seq {
                break;
            }
            stable = Some(last);
            self.unacked_writes.pop_front();
        }
        if let Some(mut stable) = stable {
            for &(_, _, truncation) in &self.unacked_writes {
                if let Some(from) = truncation {
                    stable = stable.min(from - 1);
                }
            }
            self.stable_index = stable;
        }
        while self.held.front().is_some_and(|(s, _)| *s <= seq) {
            if let Some((_, message)) = self.held.pop_front() {
                self.actions.push(Action::Send(message));
            }
        }
    }

    fn on_time(&mut self) {
        match self.role {
            Role::Leader => {
                if self.now >= self.heartbeat_deadline {
                    self.heartbeat_deadline =
                        self.now.saturating_add(self.config.heartbeat_interval);
                    self.heartbeat();
                }
            }
            Role::Follower | Role::Candidate => {
                if self.now >= self.election_deadline {
                    self.become_candidate();
                } else if self.role == Role::Candidate && self.now >= self.heartbeat_deadline {
                    // Ask again the voters that have not answered: a lost request or answer
                    // should not cost a whole election timeout.
                    self.heartbeat_deadline =
                        self.now.saturating_add(self.config.heartbeat_interval);
                    self.request_votes();
                }
            }
        }
    }

    // --- Roles -----------------------------------------------------------------------------

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.hard_state.term {
            self.hard_state = HardState {
                term,
                voted_for: None,
            };
            self.write.hard_state = true;
        } else if self.bugs().forget_vote_on_step_down {
            self.hard_state.voted_for = None;
            self.write.hard_state = true;
        }
        if self.role != Role::Follower {
            self.reset_election_timer();
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.vote_answers.clear();
        self.progress.clear();
    }

    fn become_candidate(&mut self) {
        let Some(term) = self.hard_state.term.checked_add(1) else {
            // Only a peer that lied about its term can bring us here; there is no term left
            // to campaign in, so stay a follower rather than overflow.
            self.stats.invalid += 1;
            self.reset_election_timer();
            return;
        };
        self.role = Role::Candidate;
        self.hard_state = HardState {
            term,
            voted_for: Some(self.config.id),
        };
        self.write.hard_state = true;
        self.leader = None;
        self.votes.clear();
        self.votes.push(self.config.id);
        self.vote_answers.clear();
        self.reset_election_timer();
        if self.votes.len() >= self.quorum() {
            self.become_leader();
            return;
        }
        self.heartbeat_deadline = self.now.saturating_add(self.config.heartbeat_interval);
        self.request_votes();
    }

    /// Sends a vote request to every voter that has not answered in this term.
    fn request_votes(&mut self) {
        let body = MessageBody::VoteRequest {
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
        };
        for i in 0..self.peers.len() {
            let peer = self.peers[i];
            if !self.vote_answers.contains(&peer) {
                self.send_when_durable(peer, body.clone());
            }
        }
    }

    fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.votes.clear();
        if self.config.leader_noop {
            self.append_to_log(Entry::noop(self.hard_state.term));
        }
        let last = self.log.last_index();
        self.progress = self.peers.iter().map(|&p| Progress::new(p, last)).collect();
        // Announce leadership at once; the probes double as the first heartbeat.
        self.heartbeat_deadline = self.now.saturating_add(self.config.heartbeat_interval);
        self.heartbeat();
    }

    // --- Leader duties ---------------------------------------------------------------------

    /// A heartbeat round: each follower gets an append (or, while it receives a snapshot, the
    /// next chunks). What was sent before the previous round and is still unanswered, with no
    /// progress since, is presumed lost and sent again: a probe is repeated, a pipelined
    /// follower restarts from its match point, a snapshot transfer from its last acknowledged
    /// byte with a single chunk per round until the follower answers again.
    fn heartbeat(&mut self) {
        for pos in 0..self.progress.len() {
            let progress = &mut self.progress[pos];
            let lost = progress.waiting && progress.awaiting_answer() && !progress.progressed;
            match progress.mode {
                Mode::Probe => progress.probe_sent = false,
                Mode::Replicate if lost => {
                    let next = progress.match_index + 1;
                    progress.probe_from(next);
                }
                Mode::Replicate => {}
                Mode::Snapshot => {
                    if let Some(t) = progress.transfer.as_mut().filter(|_| lost) {
                        t.rewind_to_probe();
                    }
                }
            }
            let progress = &mut self.progress[pos];
            progress.progressed = false;
            if progress.mode == Mode::Replicate {
                // Prove liveness and carry the commit index; prev = match point (or our
                // snapshot, which the follower needs if it lacks it), so a follower that keeps
                // up never rejects it.
                let prev = progress.match_index.max(self.log.base_index());
                self.send_append(pos, prev, Vec::new());
            } else {
                self.replicate_to(pos);
            }
            let progress = &mut self.progress[pos];
            progress.waiting = progress.awaiting_answer();
        }
    }

    /// Sends whatever each follower is due.
    fn replicate(&mut self) {
        for pos in 0..self.progress.len() {
            self.replicate_to(pos);
        }
    }

    fn replicate_to(&mut self, pos: usize) {
        let last = self.log.last_index();
        if self.progress[pos].mode != Mode::Snapshot
            && self.progress[pos].next_index <= self.log.base_index()
        {
            // The entries it needs are compacted away.
            match self.snapshot.clone() {
                Some(snapshot) => self.progress[pos].send_snapshot(snapshot),
                None => return,
            }
        }
        if self.progress[pos].mode == Mode::Snapshot {
            return self.send_snapshot_chunks(pos);
        }
        loop {
            let progress = &self.progress[pos];
            let next = progress.next_index;
            match progress.mode {
                Mode::Probe if progress.probe_sent => return,
                Mode::Snapshot => return,
                Mode::Replicate
                    if next > last
                        || progress.inflight.len() >= self.config.max_inflight_appends =>
                {
                    return
                }
                _ => {}
            }
            let entries = self.log.slice(
                next,
                self.config.max_entries_per_append,
                self.config.max_bytes_per_append,
            );
            let sent_last = next - 1 + entries.len() as Index;
            self.send_append(pos, next - 1, entries);
            let progress = &mut self.progress[pos];
            match progress.mode {
                Mode::Probe => {
                    progress.probe_sent = true;
                    return;
                }
                Mode::Replicate => {
                    progress.inflight.push_back(sent_last);
                    progress.next_index = sent_last + 1;
                }
                Mode::Snapshot => return,
            }
        }
    }

    /// Sends the next chunks of the snapshot transfer to follower `pos`, keeping at most
    /// `max_inflight_appends` chunks unacknowledged (one while the follower is silent).
    fn send_snapshot_chunks(&mut self, pos: usize) {
        let chunk = self.config.max_snapshot_chunk as u64;
        let chunks = self.config.max_inflight_appends as u64;
        let to = self.progress[pos].id;
        loop {
            let Some(t) = self.progress[pos].transfer.as_mut() else {
                return;
            };
            let len = t.snapshot.data.len() as u64;
            if t.done_sent || t.sent - t.acked >= t.window(chunk, chunks) {
                return;
            }
            let end = (t.sent + chunk).min(len);
            let done = end == len;
            let body = MessageBody::SnapshotChunk {
                meta: t.snapshot.meta,
                offset: t.sent,
                data: Payload::from(&t.snapshot.data[t.sent as usize..end as usize]),
                done,
            };
            t.sent = end;
            t.done_sent = done;
            self.send_now(to, body);
        }
    }

    fn send_append(&mut self, pos: usize, prev_log_index: Index, entries: Vec<Entry>) {
        let Some(prev_log_term) = self.log.term(prev_log_index) else {
            // Only reachable once compaction exists; the index is always in the log today.
            return;
        };
        let to = self.progress[pos].id;
        let body = MessageBody::AppendRequest {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit: self.commit_index,
        };
        self.send_now(to, body);
    }

    /// Commits the highest index a quorum holds durably, if it is of the current term (Raft
    /// §5.4.2: earlier-term entries commit only with a current-term entry after them).
    fn advance_commit(&mut self) {
        let quorum = self.quorum();
        let matched = &mut self.match_scratch;
        matched.clear();
        matched.extend(self.progress.iter().map(|p| p.match_index));
        matched.push(self.stable_index.min(self.log.last_index()));
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matched[quorum - 1];
        if candidate > self.commit_index
            && (self.log.term(candidate) == Some(self.hard_state.term)
                || self.bugs().commit_earlier_term_by_counting)
        {
            self.commit_index = candidate;
        }
    }

    // --- Helpers ---------------------------------------------------------------------------

    fn apply_committed(&mut self) {
        let commit = self.commit_index.min(self.log.last_index());
        if commit > self.applied_index {
            let entries = self.log.range(self.applied_index + 1, commit);
            self.actions.push(Action::Apply {
                first_index: self.applied_index + 1,
                entries,
            });
            self.applied_index = commit;
        }
    }

    /// Makes room for `additional` entries in the log and in this step's write, so that a
    /// batch is appended without repeated reallocation.
    fn reserve_log(&mut self, additional: usize) {
        self.log.reserve(additional);
        self.write.entries.reserve(additional);
    }

    fn append_to_log(&mut self, entry: Entry) {
        if self.write.entries.is_empty() {
            self.write.first_index = self.log.last_index() + 1;
        }
        self.write.entries.push(entry.clone());
        self.log.append(entry);
    }

    fn truncate_log(&mut self, from: Index) {
        self.log.truncate_from(from);
        let write = &mut self.write;
        if !write.entries.is_empty() && from >= write.first_index {
            write.entries.truncate((from - write.first_index) as usize);
        } else {
            write.entries.clear();
            write.truncate_from = Some(write.truncate_from.map_or(from, |t| t.min(from)));
        }
        self.stable_index = self.stable_index.min(from - 1);
    }

    fn flush_write(&mut self) {
        if self.write.is_empty() {
            return;
        }
        let write = core::mem::take(&mut self.write);
        let seq = self.next_seq;
        self.next_seq += 1;
        let first_index = if write.entries.is_empty() {
            self.log.last_index() + 1
        } else {
            write.first_index
        };
        self.unacked_writes
            .push_back((seq, self.log.last_index(), write.truncate_from));
        self.persists.push(Action::Persist(Persist {
            seq,
            truncate_from: write.truncate_from,
            snapshot: write.snapshot,
            first_index,
            entries: write.entries,
            hard_state: write.hard_state.then_some(self.hard_state),
        }));
    }

    /// Sends a message that promises nothing about durable state.
    fn send_now(&mut self, to: NodeId, body: MessageBody) {
        let message = self.message(to, body);
        self.actions.push(Action::Send(message));
    }

    /// Sends a message once every storage change made so far (this step's included) is
    /// durable.
    fn send_when_durable(&mut self, to: NodeId, body: MessageBody) {
        let message = self.message(to, body);
        let needed = if self.write.is_empty() {
            self.next_seq - 1
        } else {
            self.next_seq
        };
        if needed <= self.durable_seq {
            self.actions.push(Action::Send(message));
        } else {
            self.held.push_back((needed, message));
        }
    }

    fn message(&self, to: NodeId, body: MessageBody) -> Message {
        Message {
            from: self.config.id,
            to,
            term: self.hard_state.term,
            body,
        }
    }

    fn quorum(&self) -> usize {
        let voters = self.peers.len() + 1;
        voters / 2 + 1
    }

    fn reset_election_timer(&mut self) {
        let timeout = self.rng.range(
            self.config.election_timeout_min,
            self.config.election_timeout_max,
        );
        self.election_deadline = self.now.saturating_add(timeout);
    }

    #[cfg(feature = "bug-injection")]
    fn bugs(&self) -> crate::config::InjectedBugs {
        self.config.bugs
    }

    #[cfg(not(feature = "bug-injection"))]
    fn bugs(&self) -> NoBugs {
        NoBugs {
            commit_earlier_term_by_counting: false,
            grant_vote_before_persist: false,
            accept_append_before_persist: false,
            forget_vote_on_step_down: false,
        }
    }
}

/// No real log reaches 2^62 entries; refusing larger indexes up front keeps every index
/// computation far from overflow, whatever a peer sends.
const MAX_PLAUSIBLE_INDEX: Index = 1 << 62;

/// Terms grow by one per election attempt, and a node attempts at most one election per
/// minimum election timeout: no real cluster reaches 2^62, nor moves 2^32 terms (decades of
/// back-to-back elections) ahead of one of its members. A message claiming either comes from a
/// corrupt or hostile frame; adopting it could use up the term space in one step (a node at
/// `u64::MAX` can never campaign again, and its replies spread that term to everyone).
const MAX_PLAUSIBLE_TERM: Term = 1 << 62;
/// See [`MAX_PLAUSIBLE_TERM`].
const MAX_TERM_JUMP: Term = 1 << 32;

fn term_is_plausible(term: Term, current: Term) -> bool {
    term < MAX_PLAUSIBLE_TERM && term <= current.saturating_add(MAX_TERM_JUMP)
}

fn indexes_are_plausible(body: &MessageBody) -> bool {
    let ok = |i: &Index| *i < MAX_PLAUSIBLE_INDEX;
    match body {
        MessageBody::VoteRequest { last_log_index, .. } => ok(last_log_index),
        MessageBody::AppendRequest {
            prev_log_index,
            leader_commit,
            ..
        } => ok(prev_log_index) && ok(leader_commit),
        MessageBody::AppendResponse {
            outcome: AppendOutcome::Accepted { match_index },
        } => ok(match_index),
        MessageBody::AppendResponse {
            outcome:
                AppendOutcome::Rejected {
                    rejected_prev,
                    hint_index,
                    ..
                },
        } => ok(rejected_prev) && ok(hint_index),
        MessageBody::SnapshotChunk { meta, offset, .. } => {
            ok(&meta.last_index) && *offset < MAX_PLAUSIBLE_INDEX
        }
        MessageBody::SnapshotAck { last_index, .. } => ok(last_index),
        MessageBody::VoteResponse { .. } => true,
    }
}

/// Stands in for [`InjectedBugs`](crate::config::InjectedBugs) when bug injection is compiled
/// out: every bug is off, as constants the optimiser folds away.
#[cfg(not(feature = "bug-injection"))]
#[derive(Clone, Copy)]
struct NoBugs {
    commit_earlier_term_by_counting: bool,
    grant_vote_before_persist: bool,
    accept_append_before_persist: bool,
    forget_vote_on_step_down: bool,
}
