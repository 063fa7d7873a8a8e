//! How a node is set up: its identity, its peers, its timing and its limits.

use alloc::vec::Vec;
use core::fmt;

use crate::types::{Instant, NodeId};

/// The configuration of one node.
///
/// Durations are in the same unit as the `now` values passed to
/// [`Node::step`](crate::Node::step): the core never interprets them as wall time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This node's identity.
    pub id: NodeId,
    /// The voters of a brand-new cluster (this node included; no duplicates), in force until
    /// the log or a snapshot says otherwise: after a membership change, the log wins. Every
    /// member of a new cluster must be started with the same list. Empty for a node that
    /// joins an existing cluster: it never campaigns, and learns the membership from the
    /// leader once it is added.
    pub voters: Vec<NodeId>,
    /// The election timeout is drawn uniformly from `election_timeout_min..election_timeout_max`
    /// each time the election timer is reset.
    pub election_timeout_min: Instant,
    /// See `election_timeout_min`. Must be larger.
    pub election_timeout_max: Instant,
    /// How often a leader sends a heartbeat round. Must be below `election_timeout_min`.
    pub heartbeat_interval: Instant,
    /// At most this many append requests are in flight (sent, not yet acknowledged) to one
    /// follower that is keeping up. At least 1.
    pub max_inflight_appends: usize,
    /// At most this many entries go into one append request. At least 1.
    pub max_entries_per_append: usize,
    /// An append request carries no more payload bytes than this, except that it always
    /// carries at least one entry when one is due.
    pub max_bytes_per_append: usize,
    /// A snapshot is sent to a lagging follower in chunks of at most this many bytes, with at
    /// most `max_inflight_appends` chunks unacknowledged. At least 1.
    pub max_snapshot_chunk: usize,
    /// A follower assembles a snapshot from the leader in memory up to this many bytes: a
    /// transfer that would go past it is dropped (and counted in
    /// [`NodeStats::snapshot_too_large`](crate::NodeStats::snapshot_too_large)), so that no
    /// peer can make a node buffer more. 4 GiB by default; raise it if your state machine's
    /// snapshots are larger.
    pub max_snapshot_bytes: u64,
    /// Whether snapshot bytes stay with the embedding (streamed snapshots, off by default).
    ///
    /// Off, snapshots travel through the core as bytes: [`Event::SnapshotTaken`] carries them,
    /// a leader holds its latest snapshot in memory to send it, and a follower assembles one
    /// it receives in memory before [`Persist`] and [`Action::RestoreSnapshot`] hand it on.
    ///
    /// On, the core never holds a snapshot's bytes, only what it covers, its membership and
    /// where a transfer stands; a snapshot of any size costs a node one chunk of memory:
    /// - the application stores the bytes of a snapshot it takes *before* stepping
    ///   [`Event::SnapshotTaken`] (whose `data` is then ignored);
    /// - a leader asks for each chunk it sends with [`Action::SendSnapshotChunk`]: the
    ///   embedding reads it from the stored snapshot and sends it;
    /// - a follower hands each chunk it receives over with [`Action::StageSnapshotChunk`]:
    ///   the embedding writes it to a staging file for that snapshot;
    /// - [`Persist::snapshot`] and [`Action::RestoreSnapshot`] then carry an empty `data`,
    ///   which stands for the bytes stored (taken here) or staged (received) for the
    ///   snapshot's `meta`; every snapshot of the same index holds the same committed state,
    ///   so either serves. [`Node::restore`](crate::Node::restore) takes the snapshot without
    ///   its bytes too.
    ///
    /// [`Event::SnapshotTaken`]: crate::Event::SnapshotTaken
    /// [`Action::SendSnapshotChunk`]: crate::Action::SendSnapshotChunk
    /// [`Action::StageSnapshotChunk`]: crate::Action::StageSnapshotChunk
    /// [`Action::RestoreSnapshot`]: crate::Action::RestoreSnapshot
    /// [`Persist`]: crate::Persist
    /// [`Persist::snapshot`]: crate::Persist::snapshot
    pub stream_snapshots: bool,
    /// When the application takes a snapshot, a leader keeps up to this many entries before it
    /// in memory for followers that are only slightly behind, so that they catch up with
    /// entries rather than a whole snapshot. Storage drops them regardless.
    pub snapshot_catchup_entries: u64,
    /// Whether a new leader appends a no-op entry of its term, so that entries of earlier terms
    /// commit without waiting for the next proposal. The lab scenarios run with it off.
    ///
    /// Even when off, a new leader appends the no-op if the membership in force (the newest in
    /// its log) is not committed yet: that membership would otherwise wait for a client's
    /// proposal to commit, and until it does, membership changes are refused
    /// ([`ChangeInProgress`](crate::MembershipError::ChangeInProgress)) and a leader it
    /// removes keeps leading. A cluster that never changes its membership never sees it.
    pub leader_noop: bool,
    /// Pre-vote (Raft thesis §9.6): a node whose election timer fires first asks the voters
    /// whether they would vote for it in the next term, without changing its own term or vote;
    /// only a majority of such pre-votes starts a real election. A voter grants a pre-vote
    /// under the normal vote rules, and only when it has not heard from a leader within
    /// `election_timeout_min`. So a node that was cut off (and timed out over and over) does
    /// not raise its term, and cannot depose a healthy leader when it comes back.
    pub pre_vote: bool,
    /// Check-quorum (thesis §6.2) and the sticky leader (§4.2.3): a leader that has not heard
    /// from a majority (itself included) within `election_timeout_max` steps down, so a leader
    /// cut off from the others stops accepting proposals that cannot commit; and a node that
    /// heard from the current leader within `election_timeout_min` refuses a vote for a higher
    /// term, without adopting that term.
    pub check_quorum: bool,
    /// Lease reads (thesis §6.4.1), off by default: while the leader's lease holds, a read is
    /// served at the commit index without a round of confirmations. The lease starts when the
    /// leader sends a round of confirmations that a quorum answers, and lasts
    /// `election_timeout_min - clock_drift_bound`: no voter that answered can vote for another
    /// leader before its own `election_timeout_min` has passed (the sticky leader, so
    /// `check_quorum` must be on). **Clock assumption**: between any two nodes, the time one
    /// measures over that span differs from the other's by less than `clock_drift_bound`;
    /// beyond it, a deposed leader may serve a stale read.
    pub lease_reads: bool,
    /// See `lease_reads`: how much shorter than `election_timeout_min` the lease is.
    pub clock_drift_bound: Instant,
    /// Seeds the generator that draws election timeouts. Give each node its own seed (the core
    /// mixes in `id` as well), and the same seed to replay a run exactly.
    pub seed: u64,
    /// Test-only: deliberately wrong behaviour, to prove that the simulator catches it.
    #[cfg(feature = "bug-injection")]
    pub bugs: InjectedBugs,
}

/// Deliberate protocol bugs, each of which breaks a safety property. Only for testing the
/// simulator: the default is none.
#[cfg(feature = "bug-injection")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InjectedBugs {
    /// Commit an entry of an earlier term by counting replicas (the Figure 8 problem).
    pub commit_earlier_term_by_counting: bool,
    /// Send a granted vote before the vote is durable.
    pub grant_vote_before_persist: bool,
    /// Accept appended entries before they are durable.
    pub accept_append_before_persist: bool,
    /// While the membership is joint, commit with a majority of the new voters only (the old
    /// voters' majority ignored).
    pub commit_joint_with_new_voters_only: bool,
    /// Forget the vote when stepping down to follower within the same term, as a
    /// `become_follower(term)` helper that always clears the vote does: on every append from
    /// the current leader, a follower or candidate "steps down" and may then vote again.
    pub forget_vote_on_step_down: bool,
    /// Answer every read at once at the node's own commit index, without confirming that it
    /// still leads (or asking the leader): a deposed leader serves stale reads.
    pub serve_reads_locally: bool,
    /// Answer a confirmed read before the state machine applied up to its index: a follower
    /// serves a read from a state older than the read index.
    pub serve_reads_before_applied: bool,
    /// Keep a membership in force after the log entry that holds it is truncated away (a new
    /// leader overwrote it): the node goes on with a membership its log no longer holds.
    pub keep_truncated_membership: bool,
    /// With streamed snapshots, hand a received chunk over for staging with the other actions,
    /// after the persists of the same step, instead of ahead of them: the persist that installs
    /// the snapshot then takes staged bytes that lack the last chunk.
    pub stage_snapshot_chunks_after_persists: bool,
}

impl Config {
    /// A configuration with the timing and behaviour of the MIT 6.824 labs, in milliseconds:
    /// elections after 300–600 ms of silence, heartbeats every 100 ms (at most 10 rounds a
    /// second), and no leader no-op entry, so that the first proposal gets index 1. A
    /// deployment wants `leader_noop` on (the adapters' `NodeOptions::new` turns it on).
    /// Pre-vote and check-quorum are on; the lab's behaviour holds with them on or off.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Self {
        Self {
            id,
            voters,
            election_timeout_min: 300,
            election_timeout_max: 600,
            heartbeat_interval: 100,
            max_inflight_appends: 8,
            max_entries_per_append: 256,
            max_bytes_per_append: 1 << 20,
            max_snapshot_chunk: 1 << 20,
            max_snapshot_bytes: 4 << 30,
            snapshot_catchup_entries: 64,
            stream_snapshots: false,
            leader_noop: false,
            pre_vote: true,
            check_quorum: true,
            lease_reads: false,
            clock_drift_bound: 50,
            seed: 0,
            #[cfg(feature = "bug-injection")]
            bugs: InjectedBugs::default(),
        }
    }

    /// Checks that the configuration can work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.voters.is_empty() && !self.voters.contains(&self.id) {
            return Err(ConfigError::NotAVoter);
        }
        for (i, a) in self.voters.iter().enumerate() {
            if self.voters[i + 1..].contains(a) {
                return Err(ConfigError::DuplicateVoter(*a));
            }
        }
        if self.election_timeout_max <= self.election_timeout_min
            || self.heartbeat_interval == 0
            || self.heartbeat_interval >= self.election_timeout_min
        {
            return Err(ConfigError::BadTiming);
        }
        if self.lease_reads
            && (!self.check_quorum || self.clock_drift_bound >= self.election_timeout_min)
        {
            return Err(ConfigError::BadLease);
        }
        if self.max_inflight_appends == 0
            || self.max_entries_per_append == 0
            || self.max_snapshot_chunk == 0
        {
            return Err(ConfigError::ZeroLimit);
        }
        Ok(())
    }
}

/// Why a [`Config`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `voters` is not empty and `id` is not among them.
    NotAVoter,
    /// A voter is listed twice.
    DuplicateVoter(NodeId),
    /// The timeouts must satisfy `0 < heartbeat_interval < election_timeout_min < election_timeout_max`.
    BadTiming,
    /// `max_inflight_appends`, `max_entries_per_append` and `max_snapshot_chunk` must be at
    /// least 1.
    ZeroLimit,
    /// Lease reads need check-quorum, and a drift bound below `election_timeout_min`.
    BadLease,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAVoter => write!(f, "the node's id is not among the voters"),
            Self::DuplicateVoter(id) => write!(f, "voter {id} is listed twice"),
            Self::BadTiming => write!(
                f,
                "timeouts must satisfy 0 < heartbeat_interval < election_timeout_min < election_timeout_max"
            ),
            Self::BadLease => write!(
                f,
                "lease reads need check_quorum and clock_drift_bound < election_timeout_min"
            ),
            Self::ZeroLimit => write!(
                f,
                "max_inflight_appends, max_entries_per_append and max_snapshot_chunk must be at least 1"
            ),
        }
    }
}

impl core::error::Error for ConfigError {}
