//! What goes into [`Node::step`](crate::Node::step) and what comes out, with the contract an
//! embedding must keep.
//!
//! # The contract
//!
//! Every call to `step` returns a batch of [`Action`]s. The embedding:
//!
//! 1. **MUST execute [`Action::Persist`] actions in the order they were emitted, each one
//!    atomically** (all of it durable, or none of it, for example as one checksummed record),
//!    and report each one with [`Event::Persisted`] only **after** it is durable. Reporting
//!    `seq` says that every persist up to and including `seq` is durable, so one report may
//!    cover several writes (group commit). After a crash, storage may hold any prefix of the
//!    persists that were emitted (never a later one without an earlier one).
//! 2. **MAY send [`Action::Send`] messages at once, in any order, in parallel with the
//!    persists**, and MAY lose them. The core never emits a message that promises durable
//!    state (a granted vote, an accepted append, a vote request carrying a new term) before the
//!    persist it depends on has been reported durable: it holds such messages back and emits
//!    them from the step that receives the matching [`Event::Persisted`]. Only a leader's append
//!    requests leave before its own write is durable (Raft thesis §10.2.1); the leader counts
//!    itself toward the commit quorum only for entries it has been told are durable.
//! 3. **MUST hand [`Action::Apply`] entries and [`Action::RestoreSnapshot`] snapshots to the
//!    state machine in the order emitted.** This may overlap with persisting and sending:
//!    applied entries are committed, hence already durable on a majority.
//! 4. **MAY report [`Action::ProposalOutcome`] to the proposer at any time.** An accepted
//!    proposal is committed when an entry with the same index *and term* is applied; if an entry
//!    of another term is applied at that index, the proposal was lost (a new leader overwrote
//!    it) and may be retried.
//! 5. **MAY serve a read at [`Action::ReadReady`]** from the state machine's state, once every
//!    [`Action::Apply`] and [`Action::RestoreSnapshot`] emitted before it (in this step or an
//!    earlier one) was handed over: the core emits it only after the entries up to the read
//!    index. The read is linearizable (thesis §6.4): its index covers every entry committed
//!    before the [`Event::Read`] was stepped. Lease reads take their time from `now`, like
//!    everything else; their clock assumption is stated on
//!    [`Config::lease_reads`](crate::Config).
//!
//! A restarted node is rebuilt with [`Node::restore`](crate::Node::restore) from what storage
//! holds (snapshot, then log tail), and the state machine from that snapshot. The node treats
//! all of it as durable at once (it may vote and acknowledge on it), so storage **MUST make
//! everything it recovered durable before the node is restored**: a write of a process that
//! was killed before its sync may be readable from the page cache and still lost by a power
//! failure later. Persist sequence
//! numbers start again at 1 for every new node value, so an acknowledgement meant for a node
//! that crashed must never be delivered to its successor.
//!
//! # Snapshots
//!
//! The application may at any time hand the core a snapshot of its state covering every
//! entry up to an index it has applied ([`Event::SnapshotTaken`]). The core then drops its log
//! up to there (a leader keeps up to [`Config::snapshot_catchup_entries`](crate::Config) of
//! them in memory, for followers only slightly behind) and emits a [`Persist`] carrying the
//! snapshot: storage replaces its snapshot and drops the entries it covers, so the persisted
//! Raft state stays small. A follower too far
//! behind receives the leader's snapshot in chunks and installs it (a [`Persist`] with the
//! snapshot, then an [`Action::RestoreSnapshot`] for the state machine).
//!
//! With [`Config::stream_snapshots`](crate::Config) the bytes never pass through the core:
//! the application stores a snapshot before reporting it, a leader asks for each chunk it
//! sends ([`Action::SendSnapshotChunk`]), a follower hands each chunk it receives to storage
//! ([`Action::StageSnapshotChunk`]), and the persists and restores that carry a snapshot
//! name it by its `meta`, with empty `data`.

use alloc::vec::Vec;

use crate::membership::{Membership, MembershipChange, MembershipError};
use crate::message::Message;
use crate::types::{
    DurableState, Entry, HardState, Index, NodeId, Payload, Snapshot, SnapshotMeta, Term,
};

/// An input to [`Node::step`](crate::Node::step).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Only time has passed. Step with this at (or after) [`Node::next_deadline`](crate::Node::next_deadline).
    Tick,
    /// A message from a peer, exactly as received. Anything is accepted: malformed, stale or
    /// misaddressed messages are dropped and counted in [`NodeStats`](crate::NodeStats).
    Message(Message),
    /// The application asks to append these commands. Answered by exactly one
    /// [`Action::ProposalOutcome`] (an empty list is refused with
    /// [`ProposalRefusal::Empty`]); all of them go into one log append.
    Propose(Vec<Payload>),
    /// Every [`Persist`] with a sequence number up to `seq` is durable.
    Persisted {
        /// The highest durable sequence number.
        seq: u64,
    },
    /// The leader is asked to change the cluster's membership. Answered by one
    /// [`Action::MembershipOutcome`].
    ChangeMembership(MembershipChange),
    /// The application asks for a linearizable read (thesis §6.4). Answered by one
    /// [`Action::ReadReady`] (serve the read once the state machine applied up to its index)
    /// or [`Action::ReadRefused`], carrying `context` back. On a leader: one round of
    /// confirmations from a quorum (batched with the other reads of the round), or none while
    /// its lease holds ([`Config::lease_reads`](crate::Config)); on a follower: the leader is
    /// asked for the index.
    Read {
        /// The caller's id for the read.
        context: u64,
    },
    /// The leader is asked to hand leadership over to voter `to` (thesis §3.10). Answered by
    /// [`Action::TransferOutcome`]: `Started`, then the leader steps down when `to` wins its
    /// election, or `Aborted` after an election timeout; proposals are refused meanwhile.
    TransferLeadership {
        /// The voter to lead next.
        to: NodeId,
    },
    /// Streamed snapshots: the stored snapshot ending at `last_index` can no longer be read (a
    /// newer one replaced it), so the chunks of it that [`Action::SendSnapshotChunk`] asks for
    /// cannot be sent. Transfers of it (or of an older one) start over with the current
    /// snapshot. Ignored otherwise.
    SnapshotUnavailable {
        /// The last index of the snapshot that is gone.
        last_index: Index,
    },
    /// The application took a snapshot of its state after applying every entry up to
    /// `last_index` (with [`Config::stream_snapshots`](crate::Config), it has stored the
    /// bytes already and `data` is ignored). Ignored when `last_index` is not above the
    /// current snapshot or beyond the applied index, or when the node does not know the
    /// membership at `last_index` (a node that joined and has not yet received it).
    SnapshotTaken {
        /// The last applied entry the snapshot covers.
        last_index: Index,
        /// The application's serialized state.
        data: Payload,
    },
}

/// An output of [`Node::step`](crate::Node::step): a side effect the embedding must carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Make this change to durable storage, then report [`Event::Persisted`].
    Persist(Persist),
    /// Send this message to `message.to`. It may be lost.
    Send(Message),
    /// These committed entries, starting at `first_index`, are ready for the state machine.
    /// [`EntryKind::Noop`](crate::EntryKind::Noop) entries carry no command and are skipped.
    Apply {
        /// The index of `entries[0]`.
        first_index: Index,
        /// Consecutive committed entries.
        entries: Vec<Entry>,
    },
    /// The answer to an [`Event::Propose`].
    ProposalOutcome(ProposalOutcome),
    /// Streamed snapshots only ([`Config::stream_snapshots`](crate::Config)): read the chunk
    /// this asks for from the stored snapshot and send it
    /// ([`SnapshotChunkRequest::into_message`]). If `offset` is at or past the snapshot's end,
    /// send nothing: the core does not know the length, and asks for up to a window of chunks
    /// past the end. If the snapshot can no longer be read (a newer one replaced it), send
    /// nothing and step [`Event::SnapshotUnavailable`]. An embedding should keep the snapshot
    /// it reads for a follower open while that follower's transfer goes on (an open file stays
    /// readable once replaced; a transfer asks for a chunk at least every heartbeat), so that
    /// it completes even while newer snapshots are taken. May be lost, like a message.
    SendSnapshotChunk(SnapshotChunkRequest),
    /// Streamed snapshots only: write these bytes, received from the leader, at `offset` into
    /// the staging file of the snapshot `meta` (offset 0 starts that file anew). Chunks of
    /// one snapshot come in order, without gaps. Staging MUST happen in the order emitted and
    /// before any later [`Action::Persist`] is executed: the persist that installs the
    /// snapshot (its `snapshot` has this `meta`) takes the staged bytes, and MUST make them
    /// durable with it. A staging file may be lost in a crash (the core starts the transfer
    /// over) and is garbage once a snapshot at or above its index is installed.
    StageSnapshotChunk {
        /// The snapshot the chunk belongs to.
        meta: SnapshotMeta,
        /// Where the chunk starts in the snapshot's bytes.
        offset: u64,
        /// The chunk's bytes.
        data: Payload,
    },
    /// Replace the state machine's state with this snapshot (received from the leader); the
    /// next [`Action::Apply`] continues at `snapshot.meta.last_index + 1`. With streamed
    /// snapshots its `data` is empty: restore from the bytes staged (or stored) for its `meta`.
    RestoreSnapshot(Snapshot),
    /// The answer to an [`Event::ChangeMembership`].
    MembershipOutcome(MembershipOutcome),
    /// The read `context` may be served, linearizably, once the state machine applied every
    /// entry up to `index`.
    ReadReady {
        /// The caller's id for the read.
        context: u64,
        /// The read index.
        index: Index,
    },
    /// The read `context` cannot be served here.
    ReadRefused {
        /// The caller's id for the read.
        context: u64,
        /// Why.
        reason: ReadRefusal,
    },
    /// What became of a leadership transfer.
    TransferOutcome(TransferOutcome),
}

/// A chunk of a stored snapshot the core asks the embedding to send
/// ([`Action::SendSnapshotChunk`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotChunkRequest {
    /// The sender (this node).
    pub from: NodeId,
    /// The follower to send it to.
    pub to: NodeId,
    /// The leader's term.
    pub term: Term,
    /// The stored snapshot to read from.
    pub meta: SnapshotMeta,
    /// The membership in force at `meta.last_index`.
    pub membership: Membership,
    /// Where the chunk starts in the snapshot's bytes.
    pub offset: u64,
    /// Read at most this many bytes ([`Config::max_snapshot_chunk`](crate::Config)).
    pub max_len: usize,
}

impl SnapshotChunkRequest {
    /// The message to send: `data`, the at most `max_len` bytes read at `offset`, and whether
    /// they reach the end of the snapshot (`last`).
    pub fn into_message(self, data: Payload, last: bool) -> Message {
        Message {
            from: self.from,
            to: self.to,
            term: self.term,
            body: crate::message::MessageBody::SnapshotChunk {
                meta: self.meta,
                membership: self.membership,
                offset: self.offset,
                data,
                done: last,
            },
        }
    }
}

/// Why a read was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadRefusal {
    /// This node knows of no leader to confirm the read.
    NoLeader,
    /// Leadership changed before the read could be confirmed.
    LeadershipLost,
    /// No quorum confirmed the read within an election timeout (the leader may be cut off, or
    /// a message lost); retry.
    TimedOut,
}

/// What became of a leadership transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransferOutcome {
    /// The leader brings `to` up to date, then tells it to campaign; proposals are refused
    /// until the transfer completes (the leader steps down) or aborts.
    Started {
        /// The target.
        to: NodeId,
    },
    /// The transfer was refused.
    Refused(TransferRefusal),
    /// The target did not take over within an election timeout: the leader leads on.
    Aborted {
        /// The target.
        to: NodeId,
    },
}

/// Why a leadership transfer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransferRefusal {
    /// This node is not the leader.
    NotLeader {
        /// The leader this node knows of, if any.
        leader_hint: Option<NodeId>,
    },
    /// The target is this node.
    AlreadyLeader,
    /// The target is not a voter of the membership in force.
    NotAVoter(NodeId),
    /// Another transfer is in progress.
    InProgress,
}

/// The answer to a membership change.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MembershipOutcome {
    /// `membership` was appended at `index` in `term` and is in force at once. It is
    /// committed when an entry with this index and term is applied. When it is joint, the
    /// leader appends the membership that leaves it once it is committed; the change is
    /// complete when that one is.
    Accepted {
        /// The entry's index.
        index: Index,
        /// The leader's term.
        term: Term,
        /// The membership appended (joint when the voters change).
        membership: Membership,
    },
    /// Refused; nothing was appended.
    Refused(MembershipError),
}

/// One atomic change to durable storage, applied in this order: truncate the log, install
/// the snapshot, append the entries, then record the hard state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persist {
    /// Increases by one with every persist a node emits, from 1.
    pub seq: u64,
    /// Remove every log entry at this index and after, first.
    pub truncate_from: Option<Index>,
    /// Replace the stored snapshot with this one, and drop the log entries it covers. With
    /// streamed snapshots its `data` is empty: the bytes are those the application stored, or
    /// those staged from the leader, for its `meta`.
    pub snapshot: Option<Snapshot>,
    /// The index of `entries[0]`: always the last index held + 1 after the truncation and the
    /// snapshot.
    pub first_index: Index,
    /// Entries to append (possibly none).
    pub entries: Vec<Entry>,
    /// The new term and vote, when they changed.
    pub hard_state: Option<HardState>,
}

impl Persist {
    /// Applies this change to a [`DurableState`]: the reference semantics for storage
    /// implementations.
    pub fn apply_to(&self, state: &mut DurableState) {
        if let Some(from) = self.truncate_from {
            let keep = from.saturating_sub(state.log_base().saturating_add(1));
            state
                .log
                .truncate(usize::try_from(keep).unwrap_or(usize::MAX));
        }
        if let Some(snapshot) = &self.snapshot {
            let covered = snapshot.meta.last_index.saturating_sub(state.log_base());
            let covered = usize::try_from(covered).unwrap_or(usize::MAX);
            state.log.drain(..covered.min(state.log.len()));
            state.snapshot = Some(snapshot.clone());
        }
        state.log.extend(self.entries.iter().cloned());
        if let Some(hs) = self.hard_state {
            state.hard_state = hs;
        }
    }
}

/// The answer to a proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProposalOutcome {
    /// The commands were appended at `first_index..=last_index` in `term`. They are committed
    /// when entries with these indexes and this term are applied.
    Accepted {
        /// Index of the first command.
        first_index: Index,
        /// Index of the last command.
        last_index: Index,
        /// The leader's term they were appended in.
        term: Term,
    },
    /// This node is not the leader; nothing was appended.
    NotLeader {
        /// How many commands were refused.
        count: usize,
        /// The leader this node knows of, if any.
        leader_hint: Option<NodeId>,
    },
    /// The node refused the proposal for `reason`; nothing was appended.
    Refused {
        /// How many commands were refused.
        count: usize,
        /// Why.
        reason: ProposalRefusal,
    },
}

/// Why a node refused a proposal although it may be the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProposalRefusal {
    /// The proposal held no command.
    Empty,
    /// The leader is handing leadership over; retry at the next leader.
    TransferInProgress,
}
