//! The messages Raft nodes exchange. Every message is one-way: a response is a message of its
//! own, matched to its request by term and index, never by connection or order.

use alloc::vec::Vec;

use crate::membership::Membership;
use crate::types::{Entry, Index, NodeId, Payload, SnapshotMeta, Term};

/// A message between two members of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The addressee.
    pub to: NodeId,
    /// The sender's current term.
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// The content of a [`Message`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum MessageBody {
    /// A candidate asks for a vote (RequestVote).
    VoteRequest {
        /// Index of the candidate's last log entry.
        last_log_index: Index,
        /// Term of the candidate's last log entry.
        last_log_term: Term,
        /// The candidate campaigns because the leader handed leadership over to it
        /// ([`MessageBody::TimeoutNow`]): voters grant it even if they heard from that leader
        /// recently (the sticky-leader rule does not apply).
        transfer: bool,
    },
    /// The answer to a [`MessageBody::VoteRequest`] of the same term.
    VoteResponse {
        /// Whether the vote was granted.
        granted: bool,
    },
    /// A leader replicates entries, or just asserts its leadership (AppendEntries).
    AppendRequest {
        /// Index of the entry just before `entries`.
        prev_log_index: Index,
        /// Term of the entry at `prev_log_index` (0 when it is 0).
        prev_log_term: Term,
        /// The entries from `prev_log_index + 1` on (empty for a heartbeat).
        entries: Vec<Entry>,
        /// The leader's commit index.
        leader_commit: Index,
    },
    /// The answer to a [`MessageBody::AppendRequest`] (or to a completed snapshot transfer).
    AppendResponse {
        /// Whether the entries were accepted, and what the leader needs to go on.
        outcome: AppendOutcome,
    },
    /// One chunk of a snapshot a leader sends to a follower whose next entries it no longer
    /// has (InstallSnapshot). Chunks are sent in order; the follower assembles them and
    /// installs the snapshot atomically once it has the last one.
    SnapshotChunk {
        /// What the snapshot covers.
        meta: SnapshotMeta,
        /// The membership in force at `meta.last_index`.
        membership: Membership,
        /// Where this chunk starts in the snapshot's bytes.
        offset: u64,
        /// The chunk's bytes.
        data: Payload,
        /// Whether this chunk ends the snapshot.
        done: bool,
    },
    /// A follower's acknowledgement of snapshot chunks: it holds the first `received` bytes of
    /// the snapshot ending at `last_index`. (The end of a transfer is acknowledged with an
    /// [`AppendOutcome::Accepted`] once the snapshot is durable.)
    SnapshotAck {
        /// The snapshot's last index.
        last_index: Index,
        /// How many leading bytes of the snapshot the follower holds.
        received: u64,
    },
    /// A pre-vote (Raft thesis §9.6): would the addressee vote for the sender in
    /// `Message::term`, the sender's term + 1? The sender has not taken that term, and the
    /// addressee does not take it either.
    PreVoteRequest {
        /// Index of the sender's last log entry.
        last_log_index: Index,
        /// Term of the sender's last log entry.
        last_log_term: Term,
    },
    /// The answer to a [`MessageBody::PreVoteRequest`]. A granted pre-vote carries the term
    /// of the request; a refused one the voter's own term.
    PreVoteResponse {
        /// Whether the pre-vote was granted.
        granted: bool,
    },
    /// A follower asks its leader for a read index (a read served at the follower, thesis
    /// §6.4).
    ReadIndexRequest {
        /// The follower's id for the read.
        id: u64,
    },
    /// The leader's answer to a [`MessageBody::ReadIndexRequest`]: the read may be served once
    /// the follower applied up to `index`; `None` when the leader could not confirm it.
    ReadIndexResponse {
        /// The follower's id for the read.
        id: u64,
        /// The read index.
        index: Option<Index>,
    },
    /// The leader asks its voters to confirm that it still leads (for reads: one round
    /// confirms every read registered before it was sent).
    ConfirmLeader {
        /// The round's number.
        round: u64,
    },
    /// The answer to a [`MessageBody::ConfirmLeader`] of the same term.
    LeaderConfirmed {
        /// The round's number.
        round: u64,
    },
    /// The leader hands leadership over: the addressee, now up to date, campaigns at once
    /// (thesis §3.10).
    TimeoutNow,
}

impl MessageBody {
    /// Whether this is a request (as opposed to a response to one).
    pub fn is_request(&self) -> bool {
        matches!(
            self,
            Self::VoteRequest { .. }
                | Self::AppendRequest { .. }
                | Self::SnapshotChunk { .. }
                | Self::PreVoteRequest { .. }
                | Self::ReadIndexRequest { .. }
                | Self::ConfirmLeader { .. }
                | Self::TimeoutNow
        )
    }
}

/// What a follower answers to an append request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum AppendOutcome {
    /// The follower's log now matches the leader's up to `match_index`, durably.
    Accepted {
        /// The last index known to match the leader's log.
        match_index: Index,
    },
    /// The follower's log has no entry matching `(prev_log_index, prev_log_term)`.
    Rejected {
        /// The `prev_log_index` of the rejected request, to recognise stale rejections.
        rejected_prev: Index,
        /// Where the leader should look next: the follower's last index + 1 when its log is too
        /// short, else the first index of `conflict_term` in the follower's log.
        hint_index: Index,
        /// The term of the follower's entry at `rejected_prev`, when it has one.
        conflict_term: Option<Term>,
    },
}
