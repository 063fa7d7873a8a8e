//! Cluster membership: who votes, who only learns, and the bytes the application attaches to
//! each member; the changes an application asks for, and the joint configurations through
//! which the voters change (Raft thesis §4.3).
//!
//! A membership travels in the log as an entry of kind
//! [`EntryKind::Membership`](crate::EntryKind::Membership) whose data is
//! [`Membership::encode`]'s bytes, and in snapshots ([`Snapshot::membership`](crate::Snapshot)).
//! A node always uses the newest membership in its log, committed or not.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use crate::types::{Index, NodeId, Payload};

/// The members of a cluster at one point of its log.
///
/// While the voters change, the membership is **joint**: both the new voters
/// ([`voters`](Self::voters)) and the old ones ([`outgoing_voters`](Self::outgoing_voters))
/// vote, and an election or a commitment needs a majority of each. Learners receive the log
/// and never vote. Every member may carry bytes of the application's (the adapters keep the
/// member's address there).
///
/// With the `serde` feature it serializes as its [`encode`](Self::encode)d bytes, the one
/// canonical form (ids in increasing order), and deserializes only from such bytes.
///
/// A membership is shared, not copied: cloning one (as every snapshot message and persist
/// that carries it does) costs a reference count, and a change copies it once.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Membership(Arc<Members>);

/// The sets behind a [`Membership`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct Members {
    voters: BTreeSet<NodeId>,
    outgoing: BTreeSet<NodeId>,
    learners: BTreeSet<NodeId>,
    data: BTreeMap<NodeId, Payload>,
}

impl fmt::Debug for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Membership")
            .field("voters", &self.0.voters)
            .field("outgoing", &self.0.outgoing)
            .field("learners", &self.0.learners)
            .field("data", &self.0.data)
            .finish()
    }
}

/// A change of membership an application asks the leader for. Each one names the membership
/// it leads to; when that changes the voters, the cluster goes through a joint membership
/// first, and the leader leaves it on its own once it is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MembershipChange {
    /// Add a learner: it receives the log (a snapshot first if it lags) and never votes.
    AddLearner {
        /// The new member.
        id: NodeId,
        /// The application's bytes for it (its address, for the adapters).
        data: Payload,
    },
    /// Add a voter directly (a learner that catches up first is gentler on the cluster).
    AddVoter {
        /// The new member.
        id: NodeId,
        /// The application's bytes for it.
        data: Payload,
    },
    /// Make a learner a voter.
    PromoteLearner {
        /// The learner.
        id: NodeId,
    },
    /// Remove a voter or a learner.
    Remove {
        /// The member.
        id: NodeId,
    },
    /// Any new sets of voters and learners at once (the application's bytes for each member
    /// given here, replacing what the member had).
    Replace {
        /// The voters after the change.
        voters: Vec<(NodeId, Payload)>,
        /// The learners after the change.
        learners: Vec<(NodeId, Payload)>,
    },
}

/// Why a membership change was refused. Nothing was appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MembershipError {
    /// This node is not the leader.
    NotLeader {
        /// The leader this node knows of, if any.
        leader_hint: Option<NodeId>,
    },
    /// Another change is not finished: a membership entry is not committed yet, or the
    /// cluster has not left a joint membership.
    ChangeInProgress,
    /// The change would leave no voter.
    NoVoters,
    /// The member to add is already a member (or is named twice).
    AlreadyMember(NodeId),
    /// The member to remove is not a member.
    NotMember(NodeId),
    /// The member to promote is not a learner.
    NotLearner(NodeId),
    /// The leader is handing leadership over.
    TransferInProgress,
}

impl fmt::Display for MembershipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotLeader { leader_hint } => {
                write!(f, "not the leader (leader: {leader_hint:?})")
            }
            Self::ChangeInProgress => write!(f, "another membership change is in progress"),
            Self::NoVoters => write!(f, "the change would leave no voter"),
            Self::AlreadyMember(id) => write!(f, "node {id} is already a member"),
            Self::NotMember(id) => write!(f, "node {id} is not a member"),
            Self::NotLearner(id) => write!(f, "node {id} is not a learner"),
            Self::TransferInProgress => write!(f, "a leadership transfer is in progress"),
        }
    }
}

impl core::error::Error for MembershipError {}

impl Membership {
    /// The sets to change: this membership's own copy of them.
    fn members_mut(&mut self) -> &mut Members {
        Arc::make_mut(&mut self.0)
    }

    /// A membership of `voters` only, without data.
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Self {
        Self(Arc::new(Members {
            voters: voters.into_iter().collect(),
            ..Members::default()
        }))
    }

    /// The voters (while joint, those of the new configuration).
    pub fn voters(&self) -> &BTreeSet<NodeId> {
        &self.0.voters
    }

    /// While joint, the voters of the old configuration; empty otherwise.
    pub fn outgoing_voters(&self) -> &BTreeSet<NodeId> {
        &self.0.outgoing
    }

    /// The learners.
    pub fn learners(&self) -> &BTreeSet<NodeId> {
        &self.0.learners
    }

    /// Whether the voters are changing (both the old and the new voters vote).
    pub fn is_joint(&self) -> bool {
        !self.0.outgoing.is_empty()
    }

    /// Whether `id` votes (in the new or, while joint, the old configuration).
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.0.voters.contains(&id) || self.0.outgoing.contains(&id)
    }

    /// Whether `id` is a member (a voter, old or new, or a learner).
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.0.learners.contains(&id)
    }

    /// Every member, each once, in increasing order.
    pub fn members(&self) -> Vec<NodeId> {
        let mut all: Vec<NodeId> = self
            .0
            .voters
            .iter()
            .chain(&self.0.outgoing)
            .chain(&self.0.learners)
            .copied()
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// The application's bytes for member `id`.
    pub fn data(&self, id: NodeId) -> Option<&Payload> {
        self.0.data.get(&id)
    }

    /// Whether nothing is known: no voter at all (a node that joins an existing cluster
    /// starts so, and learns the membership from the leader).
    pub fn is_empty(&self) -> bool {
        self.0.voters.is_empty() && self.0.outgoing.is_empty() && self.0.learners.is_empty()
    }

    /// Whether this is a membership a leader makes: no learner among the voters, and data only
    /// for members.
    pub(crate) fn is_consistent(&self) -> bool {
        self.0.voters.is_disjoint(&self.0.learners)
            && self.0.data.keys().all(|&id| self.contains(id))
    }

    /// Whether the members for which `yes` holds are a majority of the voters, and while
    /// joint also of the outgoing voters.
    pub(crate) fn has_quorum(&self, yes: impl Fn(NodeId) -> bool) -> bool {
        let majority =
            |set: &BTreeSet<NodeId>| set.iter().filter(|&&id| yes(id)).count() > set.len() / 2;
        !self.0.voters.is_empty()
            && majority(&self.0.voters)
            && (self.0.outgoing.is_empty() || majority(&self.0.outgoing))
    }

    /// The highest index that a majority of the voters (and while joint, of the outgoing
    /// voters) hold, given each member's `matched` index. `scratch` is reused.
    pub(crate) fn quorum_index(
        &self,
        matched: impl Fn(NodeId) -> Index,
        scratch: &mut Vec<Index>,
    ) -> Index {
        let mut of = |set: &BTreeSet<NodeId>| {
            scratch.clear();
            scratch.extend(set.iter().map(|&id| matched(id)));
            scratch.sort_unstable_by(|a, b| b.cmp(a));
            scratch.get(set.len() / 2).copied().unwrap_or(0)
        };
        let new = of(&self.0.voters);
        if self.0.outgoing.is_empty() {
            new
        } else {
            new.min(of(&self.0.outgoing))
        }
    }

    /// The (non-joint) membership `change` leads to from this one.
    pub(crate) fn target(&self, change: &MembershipChange) -> Result<Self, MembershipError> {
        let mut next = self.clone();
        next.members_mut().outgoing.clear();
        match change {
            MembershipChange::AddLearner { id, data } | MembershipChange::AddVoter { id, data } => {
                if self.contains(*id) {
                    return Err(MembershipError::AlreadyMember(*id));
                }
                if matches!(change, MembershipChange::AddLearner { .. }) {
                    next.members_mut().learners.insert(*id);
                } else {
                    next.members_mut().voters.insert(*id);
                }
                next.members_mut().data.insert(*id, data.clone());
            }
            MembershipChange::PromoteLearner { id } => {
                if !next.members_mut().learners.remove(id) {
                    return Err(MembershipError::NotLearner(*id));
                }
                next.members_mut().voters.insert(*id);
            }
            MembershipChange::Remove { id } => {
                if !next.members_mut().voters.remove(id) && !next.members_mut().learners.remove(id)
                {
                    return Err(MembershipError::NotMember(*id));
                }
                next.members_mut().data.remove(id);
            }
            MembershipChange::Replace { voters, learners } => {
                next = Self::default();
                for (id, data) in voters.iter().chain(learners) {
                    if next.members_mut().data.insert(*id, data.clone()).is_some() {
                        return Err(MembershipError::AlreadyMember(*id));
                    }
                }
                next.members_mut().voters = voters.iter().map(|(id, _)| *id).collect();
                next.members_mut().learners = learners.iter().map(|(id, _)| *id).collect();
            }
        }
        if next.0.voters.is_empty() {
            return Err(MembershipError::NoVoters);
        }
        Ok(next)
    }

    /// The membership to append to move from this one to `target`: joint when the voters
    /// change, `target` itself otherwise.
    pub(crate) fn transition_to(&self, mut target: Self) -> Self {
        if target.0.voters != self.0.voters {
            let members = target.members_mut();
            members.outgoing = self.0.voters.clone();
            // The outgoing voters keep their bytes until the joint membership is left.
            for id in &members.outgoing {
                if let (false, Some(data)) = (members.data.contains_key(id), self.0.data.get(id)) {
                    members.data.insert(*id, data.clone());
                }
            }
        }
        target
    }

    /// The membership that leaves this joint one: the new voters only.
    pub(crate) fn leave_joint(&self) -> Self {
        let mut next = self.clone();
        next.members_mut().outgoing.clear();
        next.members_mut()
            .data
            .retain(|id, _| self.0.voters.contains(id) || self.0.learners.contains(id));
        next
    }

    /// The bytes of a membership entry: a version byte, then the voters, the outgoing voters
    /// and the learners (a count and the ids each), then the data (a count, then id, length
    /// and bytes for each), every number a LEB128 varint.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 10 * self.0.data.len());
        out.push(ENCODING_VERSION);
        for set in [&self.0.voters, &self.0.outgoing, &self.0.learners] {
            put_varint(&mut out, set.len() as u64);
            for &id in set {
                put_varint(&mut out, id);
            }
        }
        put_varint(&mut out, self.0.data.len() as u64);
        for (&id, data) in &self.0.data {
            put_varint(&mut out, id);
            put_varint(&mut out, data.len() as u64);
            out.extend_from_slice(data);
        }
        out
    }

    /// Reads bytes made by [`encode`](Self::encode). `None` for anything else: ids out of
    /// order or repeated, bytes left over, a learner that is also a voter, data for a
    /// non-member.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut reader = Reader(bytes);
        if reader.byte()? != ENCODING_VERSION {
            return None;
        }
        let mut sets = [BTreeSet::new(), BTreeSet::new(), BTreeSet::new()];
        for set in &mut sets {
            for _ in 0..reader.count()? {
                let id = reader.varint()?;
                if set.last().is_some_and(|&last| last >= id) {
                    return None;
                }
                set.insert(id);
            }
        }
        let [voters, outgoing, learners] = sets;
        let mut data: BTreeMap<NodeId, Payload> = BTreeMap::new();
        for _ in 0..reader.count()? {
            let id = reader.varint()?;
            if data.last_key_value().is_some_and(|(&last, _)| last >= id) {
                return None;
            }
            let len = usize::try_from(reader.varint()?).ok()?;
            let bytes = reader.take(len)?;
            data.insert(id, Payload::from(bytes));
        }
        let membership = Self(Arc::new(Members {
            voters,
            outgoing,
            learners,
            data,
        }));
        (reader.0.is_empty() && membership.is_consistent()).then_some(membership)
    }
}

const ENCODING_VERSION: u8 = 1;

#[cfg(feature = "serde")]
impl serde::Serialize for Membership {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.encode())
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Membership {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl serde::de::Visitor<'_> for Bytes {
            type Value = Membership;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the encoded bytes of a membership")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Membership, E> {
                Membership::decode(bytes)
                    .ok_or_else(|| E::custom("not the canonical encoding of a membership"))
            }
        }
        deserializer.deserialize_bytes(Bytes)
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f).checked_shl(shift)?;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    /// A count of items that follow, each at least one byte: never more than the bytes left.
    fn count(&mut self) -> Option<usize> {
        let n = usize::try_from(self.varint()?).ok()?;
        (n <= self.0.len()).then_some(n)
    }

    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..len)?, self.0.get(len..)?);
        self.0 = rest;
        Some(head)
    }
}

/// The memberships a node's log holds: the one in force at its base (the snapshot's, or the
/// bootstrap one), and one per membership entry after it. The newest is in force.
#[derive(Debug, Clone, Default)]
pub(crate) struct MembershipLog {
    base: Membership,
    entries: Vec<(Index, Membership)>,
}

impl MembershipLog {
    pub(crate) fn new(base: Membership) -> Self {
        Self {
            base,
            entries: Vec::new(),
        }
    }

    /// The membership in force: the newest.
    pub(crate) fn current(&self) -> &Membership {
        self.entries.last().map_or(&self.base, |(_, m)| m)
    }

    /// The index of the entry that holds the membership in force (0 for the base).
    pub(crate) fn current_index(&self) -> Index {
        self.entries.last().map_or(0, |(i, _)| *i)
    }

    /// The membership in force at `index`.
    pub(crate) fn at(&self, index: Index) -> &Membership {
        self.entries
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map_or(&self.base, |(_, m)| m)
    }

    /// A membership entry was appended at `index`.
    pub(crate) fn push(&mut self, index: Index, membership: Membership) {
        self.entries.push((index, membership));
    }

    /// The log lost its entries from `index` on; returns whether the membership in force
    /// changed.
    pub(crate) fn truncate_from(&mut self, index: Index) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(i, _)| *i < index);
        self.entries.len() != before
    }

    /// The log's base moved up to `index`: what it covers folds into the base.
    pub(crate) fn compact_to(&mut self, index: Index) {
        let covered = self.entries.iter().take_while(|(i, _)| *i <= index).count();
        if covered > 0 {
            self.base = self.entries[covered - 1].1.clone();
            self.entries.drain(..covered);
        }
    }

    /// A snapshot with `membership` replaced the log up to `index`; the entries after it stay
    /// only if the log kept its suffix.
    pub(crate) fn install(&mut self, index: Index, membership: Membership, kept_suffix: bool) {
        if kept_suffix {
            self.entries.retain(|(i, _)| *i > index);
        } else {
            self.entries.clear();
        }
        self.base = membership;
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use super::*;

    fn ids(set: &BTreeSet<NodeId>) -> Vec<NodeId> {
        set.iter().copied().collect()
    }

    #[test]
    fn encoding_round_trips_and_refuses_anything_else() {
        let mut m = Membership::new([1, 2, 3]);
        m = m.transition_to(
            m.target(&MembershipChange::AddVoter {
                id: 4,
                data: Payload::from(&b"addr-4"[..]),
            })
            .unwrap(),
        );
        m.members_mut().learners.insert(9);
        m.members_mut().data.insert(9, Payload::from(&b""[..]));
        let bytes = m.encode();
        assert_eq!(Membership::decode(&bytes), Some(m.clone()));
        for cut in 0..bytes.len() {
            assert_eq!(Membership::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Membership::decode(&longer), None);
        // A learner that is also a voter.
        let mut bad = Membership::new([1]);
        bad.members_mut().learners.insert(1);
        assert_eq!(Membership::decode(&bad.encode()), None);
        // Huge counts do not allocate or panic.
        assert_eq!(Membership::decode(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f]), None);
        // Only the canonical encoding: ids in increasing order, each once.
        assert!(Membership::decode(&[1, 2, 1, 4, 0, 0, 0]).is_some());
        assert_eq!(Membership::decode(&[1, 2, 4, 1, 0, 0, 0]), None);
        assert_eq!(Membership::decode(&[1, 2, 4, 4, 0, 0, 0]), None);
    }

    #[test]
    fn quorums_need_a_majority_of_each_configuration() {
        let joint = Membership::new([1, 2, 3]).transition_to(Membership::new([3, 4, 5]));
        assert!(joint.is_joint());
        assert_eq!(ids(joint.outgoing_voters()), vec![1, 2, 3]);
        assert!(!joint.has_quorum(|id| [3, 4, 5].contains(&id)));
        assert!(!joint.has_quorum(|id| [1, 2, 3].contains(&id)));
        assert!(joint.has_quorum(|id| [2, 3, 4].contains(&id)));
        let mut scratch = Vec::new();
        let matched = |id: NodeId| [0, 10, 9, 8, 3, 2][id as usize];
        // Old {1,2,3}: 10, 9, 8 -> 9; new {3,4,5}: 8, 3, 2 -> 3.
        assert_eq!(joint.quorum_index(matched, &mut scratch), 3);
        assert_eq!(joint.leave_joint().quorum_index(matched, &mut scratch), 3);
        assert!(!Membership::default().has_quorum(|_| true));
    }

    #[test]
    fn changes_are_checked() {
        let m = Membership::new([1, 2]);
        let add = |id| MembershipChange::AddLearner {
            id,
            data: Payload::from(&b"x"[..]),
        };
        assert_eq!(m.target(&add(1)), Err(MembershipError::AlreadyMember(1)));
        assert_eq!(
            m.target(&MembershipChange::Remove { id: 7 }),
            Err(MembershipError::NotMember(7))
        );
        assert_eq!(
            m.target(&MembershipChange::PromoteLearner { id: 2 }),
            Err(MembershipError::NotLearner(2))
        );
        let learner = m.target(&add(3)).unwrap();
        assert_eq!(
            m.transition_to(learner.clone()),
            learner,
            "no joint for a learner"
        );
        let promoted = learner
            .target(&MembershipChange::PromoteLearner { id: 3 })
            .unwrap();
        assert!(learner.transition_to(promoted).is_joint());
        let one = Membership::new([1]);
        assert_eq!(
            one.target(&MembershipChange::Remove { id: 1 }),
            Err(MembershipError::NoVoters)
        );
        let replace = MembershipChange::Replace {
            voters: vec![(4, Payload::from(&b"a"[..]))],
            learners: vec![(4, Payload::from(&b"a"[..]))],
        };
        assert_eq!(one.target(&replace), Err(MembershipError::AlreadyMember(4)));
    }

    #[test]
    fn the_log_of_memberships_follows_truncation_and_compaction() {
        let mut log = MembershipLog::new(Membership::new([1]));
        log.push(5, Membership::new([1, 2]));
        log.push(9, Membership::new([1, 2, 3]));
        assert_eq!(log.current_index(), 9);
        assert_eq!(log.at(7), &Membership::new([1, 2]));
        assert!(log.truncate_from(9));
        assert_eq!(log.current(), &Membership::new([1, 2]));
        log.compact_to(6);
        assert_eq!(log.current_index(), 0);
        assert_eq!(log.current(), &Membership::new([1, 2]));
        log.push(8, Membership::new([2]));
        log.install(10, Membership::new([3]), false);
        assert_eq!(log.current(), &Membership::new([3]));
    }
}
