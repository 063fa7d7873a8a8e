//! The vocabulary shared by every part of the core: identifiers, log entries, durable state.

use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::membership::Membership;

/// The identity of a cluster member. Any value is allowed; it must be unique in the cluster.
pub type NodeId = u64;

/// A Raft term (an election epoch). Terms start at 0 and only grow.
pub type Term = u64;

/// A position in the replicated log. The first entry has index 1; index 0 means "before the
/// first entry" and always matches.
pub type Index = u64;

/// A point in time as the embedding supplies it: any monotonic unit (milliseconds,
/// microseconds, ticks), as long as the durations in [`Config`](crate::Config) use the same unit.
pub type Instant = u64;

/// The bytes of one application command.
///
/// Shared and immutable: cloning a payload (for example to send the same entry to several
/// followers) copies a pointer, never the bytes.
pub type Payload = Arc<[u8]>;

/// What an entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum EntryKind {
    /// An application command, handed to the state machine when committed.
    Command,
    /// An empty entry a new leader appends (when [`Config::leader_noop`](crate::Config) is on,
    /// or its membership in force is not committed yet) to commit the entries of earlier terms
    /// promptly. The application skips it.
    Noop,
    /// A new membership of the cluster, its data [`Membership::encode`]'s bytes. In force from
    /// the moment a node appends it, committed or not. The application skips it (or reads it
    /// with [`Membership::decode`]).
    Membership,
}

/// One entry of the replicated log. Its index is implied by its position.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Entry {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// Whether this is an application command or a leader's no-op.
    pub kind: EntryKind,
    /// The command's bytes (empty for a no-op).
    pub data: Payload,
}

impl Entry {
    /// An application command created in `term`.
    pub fn command(term: Term, data: impl Into<Payload>) -> Self {
        Self {
            term,
            kind: EntryKind::Command,
            data: data.into(),
        }
    }

    /// A leader's no-op entry created in `term`.
    pub fn noop(term: Term) -> Self {
        Self {
            term,
            kind: EntryKind::Noop,
            data: Arc::from(&[][..]),
        }
    }
}

/// The part of a node's state that must survive a crash besides the log: its current term and
/// the candidate it voted for in that term.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct HardState {
    /// The latest term the node has seen.
    pub term: Term,
    /// The candidate the node voted for in `term`, if any.
    pub voted_for: Option<NodeId>,
}

/// What a snapshot covers: every entry up to and including `last_index`, the last of which has
/// term `last_term`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SnapshotMeta {
    /// The index of the last entry the snapshot covers.
    pub last_index: Index,
    /// The term of that entry.
    pub last_term: Term,
}

/// The application's state after applying every entry up to `meta.last_index`, as bytes the
/// application produced; the core stores and ships it without looking inside.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Snapshot {
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// The membership in force at `meta.last_index`.
    pub membership: Membership,
    /// The application's serialized state.
    pub data: Payload,
}

/// Everything a node needs to restart: what its storage holds after applying, in order, every
/// [`Persist`](crate::Persist) action it acknowledged (and possibly some it did not).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DurableState {
    /// The last persisted term and vote.
    pub hard_state: HardState,
    /// The latest snapshot, if any; the state machine restarts from it.
    pub snapshot: Option<Snapshot>,
    /// The persisted log entries after the snapshot (from index 1 when there is none).
    pub log: Vec<Entry>,
}

impl DurableState {
    /// The index the log starts after: the snapshot's last index, or 0.
    pub fn log_base(&self) -> Index {
        self.snapshot.as_ref().map_or(0, |s| s.meta.last_index)
    }

    /// The index of the last entry held, in the log or (when the log is empty) the snapshot
    /// (saturating: storage may hand over any state, and the core refuses an implausible one).
    pub fn last_index(&self) -> Index {
        self.log_base().saturating_add(self.log.len() as Index)
    }
}

/// The role a node currently plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// Follows a leader (or waits for one); answers requests.
    Follower,
    /// Asks for votes to become leader of its term.
    Candidate,
    /// Asks whether it could win an election in the next term, before raising its own term
    /// ([`Config::pre_vote`](crate::Config)); it still follows its term's rules otherwise.
    PreCandidate,
    /// Accepts proposals and replicates the log.
    Leader,
}
