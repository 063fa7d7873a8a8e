//! The Raft node: elections, heartbeats, replication, commitment and persistence ordering, as
//! one deterministic state machine.
//!
//! This file owns the [`Node`] type, its construction and recovery, the step entry point and
//! the dispatch of each input, the accessors, and the checks applied to every peer message
//! before any handler sees it. Each protocol concern has its own file:
//!
//! - `election`: the election timer, votes, and the role changes;
//! - `replication`: proposals, append requests and answers, heartbeats, flow control;
//! - `commit`: the commit rule and the hand-over of committed entries;
//! - `snapshot`: compaction, and sending and receiving snapshots in chunks;
//! - `persist`: the step's pending write, durability acknowledgements, and the messages held
//!   until durable;
//! - `membership`: membership changes, and the replication set following the membership;
//! - `read`: linearizable reads (ReadIndex, leases, reads at followers);
//! - `transfer`: leadership transfer.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;

use crate::config::{Config, ConfigError};
use crate::io::{Action, Event};
use crate::log::Log;
use crate::membership::{Membership, MembershipLog};
use crate::message::{AppendOutcome, Message, MessageBody};
use crate::progress::Progress;
use crate::rng::Rng;
use crate::types::{
    DurableState, Entry, EntryKind, HardState, Index, Instant, NodeId, Role, Snapshot, Term,
};

mod commit;
mod election;
mod membership;
mod persist;
mod read;
mod replication;
mod snapshot;
mod transfer;

use persist::PendingWrite;
use read::Reads;
use snapshot::IncomingSnapshot;
use transfer::Transfer;

/// One member of a Raft cluster, as a pure state machine.
///
/// Feed it [`Event`]s with [`step`](Self::step) (or [`step_into`](Self::step_into) to reuse an
/// action buffer) and carry out the [`Action`]s it returns, keeping the contract of the
/// [`io`](crate::io) module. Call `step(now, Event::Tick)` no later than
/// [`next_deadline`](Self::next_deadline) so that elections and heartbeats happen on time.
#[derive(Debug, Clone)]
pub struct Node {
    config: Config,
    /// The memberships in the log; the newest is in force.
    memberships: MembershipLog,
    /// The other members of the membership in force (voters, outgoing voters, learners).
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
    /// When a leader next checks that it heard from a majority (check-quorum).
    quorum_check_deadline: Instant,
    /// When this node last heard from the leader of its term.
    heard_from_leader: Option<Instant>,
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
    /// The sequence number of the persist that carries the current term and vote.
    hard_state_seq: u64,
    /// Persists emitted and not yet reported durable: `(seq, last index after it, truncation)`.
    unacked_writes: VecDeque<(u64, Index, Option<Index>)>,
    /// The log prefix up to here is durable and equal to the in-memory log.
    stable_index: Index,
    /// The latest snapshot (taken here or installed from a leader), sent to lagging followers.
    snapshot: Option<Snapshot>,
    /// A snapshot being received from the leader, chunk by chunk.
    incoming: Option<IncomingSnapshot>,
    /// The transfer (leader, term, snapshot) dropped for exceeding
    /// [`Config::max_snapshot_bytes`]: its chunks are dropped unanswered from then on.
    too_large: Option<(NodeId, Term, crate::types::SnapshotMeta)>,
    /// Messages waiting for the persist with the given sequence number to be durable.
    held: VecDeque<(u64, Message)>,
    /// Persist actions of the current step; they lead the step's output.
    persists: Vec<Action>,
    /// The other actions of the current step.
    actions: Vec<Action>,
    /// Scratch space for the commit computation, reused to keep the step allocation-free.
    match_scratch: Vec<Index>,
    /// Linearizable reads in progress.
    reads: Reads,
    /// While leader: the last log index when it was elected. Its commit index is a read index
    /// only once it reaches this (every entry of an earlier term is then known committed).
    term_start: Index,
    /// While leader: a leadership transfer under way.
    transfer: Option<Transfer>,
    /// While leader: a voter was told to campaign at once in this term, so the lease no longer
    /// holds (its vote requests override the sticky leader).
    transfer_sent_this_term: bool,
    /// This candidacy was started by the leader's `TimeoutNow`: the vote requests say so.
    transfer_campaign: bool,
    /// With lease reads, a restarted node refuses votes for a higher term until then, as if it
    /// had just heard from a leader: it may have promised a lease before the crash.
    quiet_until: Instant,
    stats: NodeStats,
}

/// Counters of peer input the node dropped instead of acting on. Nothing a peer sends can make
/// the node panic; what it cannot use is counted here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// Messages addressed to another node.
    pub misaddressed: u64,
    /// Messages from this node itself, answers from a node the leader does not replicate to,
    /// and vote and pre-vote answers from a node that is not a voter of the membership in
    /// force. (Requests are taken from anyone: a leader a node does not know of yet is still
    /// its leader; the transport decides who may connect.)
    pub unknown_sender: u64,
    /// Messages of an older term (requests are still answered, so the sender learns the term).
    pub stale_term: u64,
    /// Responses that arrived when no longer relevant (role changed, reordered, duplicated).
    pub stale_response: u64,
    /// Vote requests for a higher term refused, without taking that term, because this node
    /// heard from its leader within the minimum election timeout (check-quorum's sticky
    /// leader).
    pub disruptive_votes: u64,
    /// Messages that contradict the protocol (an index the leader never sent, a second leader
    /// in the same term, a rewrite of committed entries) or carry an implausible term or index
    /// (a term at or above 2^62 or more than 2^32 ahead of this node's, an index at or above
    /// 2^62), and append requests with a membership entry whose bytes are not a
    /// [`Membership`]'s encoding (dropped whole, before anything changes).
    pub invalid: u64,
    /// Snapshot chunks dropped because the snapshot being assembled would exceed
    /// [`Config::max_snapshot_bytes`] (the transfer is dropped with them).
    pub snapshot_too_large: u64,
}

/// Why a node could not be started.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is unusable.
    Config(ConfigError),
    /// The durable state contradicts itself: a log term decreases, or exceeds the current term,
    /// or the log reaches an implausible index (2^62 or more).
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
                "durable state is inconsistent at log index {index}: terms must not decrease nor exceed the current term, and indexes must stay below 2^62"
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
        let streamed = config.stream_snapshots;
        let base = durable
            .snapshot
            .as_ref()
            .map(|s| s.meta)
            .unwrap_or_default();
        let mut previous = base.last_term;
        if durable.last_index() >= MAX_PLAUSIBLE_INDEX {
            return Err(StartError::InconsistentState {
                index: durable.last_index(),
            });
        }
        if previous > durable.hard_state.term {
            return Err(StartError::InconsistentState {
                index: base.last_index,
            });
        }
        // The bootstrap membership holds until a snapshot or the log says otherwise.
        let mut memberships = MembershipLog::new(durable.snapshot.as_ref().map_or_else(
            || Membership::new(config.voters.iter().copied()),
            |s| s.membership.clone(),
        ));
        if !memberships.current().is_consistent() {
            return Err(StartError::InconsistentState {
                index: base.last_index,
            });
        }
        for (i, entry) in durable.log.iter().enumerate() {
            let index = base.last_index + i as Index + 1;
            if entry.term < previous || entry.term > durable.hard_state.term {
                return Err(StartError::InconsistentState { index });
            }
            if entry.kind == EntryKind::Membership {
                let Some(membership) = Membership::decode(&entry.data) else {
                    return Err(StartError::InconsistentState { index });
                };
                memberships.push(index, membership);
            }
            previous = entry.term;
        }
        let log = Log::with_base(base.last_index, base.last_term, durable.log);
        let rng = Rng::new(config.seed ^ config.id.wrapping_mul(0xA076_1D64_78BD_642F));
        let mut node = Self {
            memberships,
            peers: Vec::new(),
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
            quorum_check_deadline: now,
            heard_from_leader: None,
            votes: Vec::new(),
            vote_answers: Vec::new(),
            progress: Vec::new(),
            write: PendingWrite::default(),
            next_seq: 1,
            durable_seq: 0,
            hard_state_seq: 0,
            unacked_writes: VecDeque::new(),
            held: VecDeque::new(),
            snapshot: durable.snapshot.map(|mut snapshot| {
                if streamed {
                    // The bytes stay in storage.
                    snapshot.data = crate::types::Payload::from(&[][..]);
                }
                snapshot
            }),
            incoming: None,
            too_large: None,
            persists: Vec::new(),
            actions: Vec::new(),
            match_scratch: Vec::new(),
            reads: Reads::default(),
            term_start: 0,
            transfer: None,
            transfer_sent_this_term: false,
            transfer_campaign: false,
            quiet_until: if config.lease_reads {
                now.saturating_add(config.election_timeout_min)
            } else {
                now
            },
            stats: NodeStats::default(),
            config,
        };
        node.on_membership_changed();
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
            Event::ChangeMembership(change) => self.on_change_membership(change),
            Event::Read { context } => self.on_read(context),
            Event::TransferLeadership { to } => self.on_transfer_leadership(to),
            Event::Persisted { seq } => self.on_persisted(seq),
            Event::SnapshotTaken { last_index, data } => self.on_snapshot_taken(last_index, data),
            Event::SnapshotUnavailable { last_index } => self.on_snapshot_unavailable(last_index),
        }
        self.on_time();
        if self.role == Role::Leader {
            self.advance_commit();
            self.after_commit();
        }
        if self.role == Role::Leader {
            self.replicate();
            self.hand_over_if_caught_up();
        }
        self.apply_committed();
        self.settle_reads();
        self.flush_write();
        out.append(&mut self.persists);
        out.append(&mut self.actions);
    }

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

    /// The membership in force: the newest in the log, committed or not.
    pub fn membership(&self) -> &Membership {
        self.memberships.current()
    }

    /// The index of the entry that holds the membership in force (0 when it comes from the
    /// snapshot or the bootstrap configuration).
    pub fn membership_index(&self) -> Index {
        self.memberships.current_index()
    }

    /// Whether this node votes in the membership in force (a learner, a removed node and a
    /// node that has not yet learned the membership do not, and never campaign).
    pub fn is_voter(&self) -> bool {
        self.memberships.current().is_voter(self.config.id)
    }

    /// While leader: the highest log index known to be durable on member `id` (its match
    /// index); `None` when not leader or `id` is not a member this leader replicates to.
    pub fn match_index(&self, id: NodeId) -> Option<Index> {
        self.progress
            .iter()
            .find(|p| p.id == id)
            .map(|p| p.match_index)
    }

    /// Counters of dropped peer input.
    pub fn stats(&self) -> NodeStats {
        self.stats
    }

    /// When the node next needs a [`Event::Tick`] (an election timeout, a heartbeat round, a
    /// leader's check-quorum, a candidate's retransmission of its vote requests, the end of a
    /// leadership transfer, or a read that would time out).
    pub fn next_deadline(&self) -> Instant {
        let deadline = match self.role {
            Role::Leader => {
                let mut d = self.heartbeat_deadline;
                if self.config.check_quorum {
                    d = d.min(self.quorum_check_deadline);
                }
                if let Some(t) = self.transfer {
                    d = d.min(t.deadline);
                }
                d
            }
            Role::Candidate | Role::PreCandidate => {
                self.election_deadline.min(self.heartbeat_deadline)
            }
            Role::Follower => self.election_deadline,
        };
        self.read_deadline().map_or(deadline, |r| deadline.min(r))
    }

    fn on_message(&mut self, message: Message) {
        if message.to != self.config.id {
            self.stats.misaddressed += 1;
            return;
        }
        if message.from == self.config.id {
            self.stats.unknown_sender += 1;
            return;
        }
        if !indexes_are_plausible(&message.body)
            || !term_is_plausible(message.term, self.hard_state.term)
            || !memberships_decode(&message.body)
        {
            self.stats.invalid += 1;
            return;
        }
        if message.term > self.hard_state.term {
            match message.body {
                // A pre-vote is for a term its sender has not taken; a granted one comes back
                // with that term. Neither is a reason to take it here.
                MessageBody::PreVoteRequest { .. }
                | MessageBody::PreVoteResponse { granted: true } => {}
                // The sticky leader: a node that hears from its leader keeps following it, and
                // a disruptive candidate does not even raise its term. A candidate the leader
                // handed leadership to is not disruptive.
                MessageBody::VoteRequest {
                    transfer: false, ..
                } if self.config.check_quorum && self.refuses_disruption() => {
                    self.stats.disruptive_votes += 1;
                    return;
                }
                _ => {
                    let leader = matches!(
                        message.body,
                        MessageBody::AppendRequest { .. }
                            | MessageBody::ConfirmLeader { .. }
                            | MessageBody::TimeoutNow
                    )
                    .then_some(message.from);
                    self.become_follower(message.term, leader);
                }
            }
        } else if message.term < self.hard_state.term {
            self.stats.stale_term += 1;
            self.answer_stale_request(&message);
            return;
        }
        let from = message.from;
        if self.role == Role::Leader {
            if let Some(progress) = self.progress.iter_mut().find(|p| p.id == from) {
                progress.recent_active = true;
            }
        }
        match message.body {
            MessageBody::VoteRequest {
                last_log_index,
                last_log_term,
                transfer: _,
            } => self.on_vote_request(from, last_log_index, last_log_term),
            MessageBody::VoteResponse { granted } => self.on_vote_response(from, granted),
            MessageBody::PreVoteRequest {
                last_log_index,
                last_log_term,
            } => self.on_pre_vote_request(from, message.term, last_log_index, last_log_term),
            MessageBody::PreVoteResponse { granted } => {
                self.on_pre_vote_response(from, message.term, granted)
            }
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
                membership,
                offset,
                data,
                done,
            } => self.on_snapshot_chunk(from, meta, membership, offset, data, done),
            MessageBody::SnapshotAck {
                last_index,
                received,
            } => self.on_snapshot_ack(from, last_index, received),
            MessageBody::ReadIndexRequest { id } => self.on_read_index_request(from, id),
            MessageBody::ReadIndexResponse { id, index } => {
                self.on_read_index_response(from, id, index)
            }
            MessageBody::ConfirmLeader { round } => self.on_confirm_leader(from, round),
            MessageBody::LeaderConfirmed { round } => self.on_leader_confirmed(from, round),
            MessageBody::TimeoutNow => self.on_timeout_now(from),
        }
    }

    /// A request from an older term is refused with the current term, so that its sender
    /// learns it is out of date.
    fn answer_stale_request(&mut self, message: &Message) {
        let body = match message.body {
            MessageBody::VoteRequest { .. } => MessageBody::VoteResponse { granted: false },
            MessageBody::PreVoteRequest { .. } => MessageBody::PreVoteResponse { granted: false },
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
            MessageBody::ReadIndexRequest { id } => {
                MessageBody::ReadIndexResponse { id, index: None }
            }
            _ => return,
        };
        self.send_when_durable(message.from, body);
    }

    /// Whether the members for which `yes` holds (this node counted when `yes` says so) are a
    /// quorum of the membership in force: a majority of its voters, and while joint also of
    /// the outgoing voters.
    fn has_quorum(&self, yes: impl Fn(NodeId) -> bool) -> bool {
        self.memberships.current().has_quorum(yes)
    }

    #[cfg(feature = "bug-injection")]
    fn bugs(&self) -> crate::config::InjectedBugs {
        self.config.bugs
    }

    #[cfg(not(feature = "bug-injection"))]
    fn bugs(&self) -> NoBugs {
        NoBugs {
            commit_earlier_term_by_counting: false,
            commit_joint_with_new_voters_only: false,
            grant_vote_before_persist: false,
            accept_append_before_persist: false,
            forget_vote_on_step_down: false,
            serve_reads_locally: false,
            serve_reads_before_applied: false,
            keep_truncated_membership: false,
            stage_snapshot_chunks_after_persists: false,
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
        MessageBody::PreVoteRequest { last_log_index, .. } => ok(last_log_index),
        MessageBody::ReadIndexResponse { index, .. } => index.as_ref().is_none_or(ok),
        MessageBody::VoteResponse { .. }
        | MessageBody::PreVoteResponse { .. }
        | MessageBody::ReadIndexRequest { .. }
        | MessageBody::ConfirmLeader { .. }
        | MessageBody::LeaderConfirmed { .. }
        | MessageBody::TimeoutNow => true,
    }
}

/// Whether every membership entry of an append request decodes. A follower persists what it
/// appends, and [`Node::restore`] refuses a log with a membership entry that does not decode:
/// taking one from a peer would keep the node from ever restarting.
fn memberships_decode(body: &MessageBody) -> bool {
    match body {
        MessageBody::AppendRequest { entries, .. } => entries
            .iter()
            .filter(|e| e.kind == EntryKind::Membership)
            .all(|e| Membership::decode(&e.data).is_some()),
        _ => true,
    }
}

/// Stands in for [`InjectedBugs`](crate::config::InjectedBugs) when bug injection is compiled
/// out: every bug is off, as constants the optimiser folds away.
#[cfg(not(feature = "bug-injection"))]
#[derive(Clone, Copy)]
struct NoBugs {
    commit_earlier_term_by_counting: bool,
    commit_joint_with_new_voters_only: bool,
    grant_vote_before_persist: bool,
    accept_append_before_persist: bool,
    forget_vote_on_step_down: bool,
    serve_reads_locally: bool,
    serve_reads_before_applied: bool,
    keep_truncated_membership: bool,
    stage_snapshot_chunks_after_persists: bool,
}

#[cfg(feature = "sim")]
impl Node {
    /// For the explorer ([`crate::sim::explore`]): writes the node's state to `out` without
    /// what only measures time or chance (its clock and deadlines, its random generator, its
    /// counters) and with sequence numbers relative to the last durable one, but with which
    /// of its deadlines have passed and whether it heard from its leader recently, so that
    /// two nodes that behave alike from here on, up to when their next deadlines fall, write
    /// the same.
    pub(crate) fn write_state(&self, out: &mut impl core::fmt::Write) -> core::fmt::Result {
        let base = self.durable_seq;
        let held: Vec<(u64, &Message)> = self
            .held
            .iter()
            .map(|(seq, m)| (seq.saturating_sub(base), m))
            .collect();
        let unacked: Vec<(u64, Index, Option<Index>)> = self
            .unacked_writes
            .iter()
            .map(|&(seq, index, truncation)| (seq.saturating_sub(base), index, truncation))
            .collect();
        write!(
            out,
            "{:?}|{:?}|{:?}|{:?}|{}|{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{}|{}|{:?}|{:?}|{:?}|{:?}|{}|{:?}|{}|{}",
            self.role,
            self.hard_state,
            self.leader,
            self.log,
            self.commit_index,
            self.applied_index,
            self.memberships,
            self.votes,
            self.vote_answers,
            self.progress,
            held,
            unacked,
            self.snapshot.as_ref().map(|s| &s.meta),
            self.next_seq.saturating_sub(base),
            self.hard_state_seq.saturating_sub(base),
            self.incoming,
            self.too_large,
            self.reads,
            self.transfer,
            self.term_start,
            self.write,
            self.stable_index,
            self.transfer_sent_this_term,
        )?;
        // Not the clock itself, but how the deadlines fall against it: what a timer or a vote
        // request does next depends on these.
        write!(
            out,
            "|{}{}{}{}{}",
            u8::from(self.leader_is_recent()),
            u8::from(self.now < self.quiet_until),
            u8::from(self.now >= self.election_deadline),
            u8::from(self.now >= self.heartbeat_deadline),
            u8::from(self.now >= self.quorum_check_deadline),
        )
    }
}
