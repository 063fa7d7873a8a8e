//! The safety judge: every property of SCENARIOS.md, checked incrementally after every event.
//!
//! Logs are followed as chains of hashes: the hash at index *i* covers every entry up to *i*,
//! so two logs with the same hash at *i* are identical up to *i*. This makes Log Matching,
//! Leader Completeness, State Machine Safety and Durability checks cost O(1) per entry or per
//! check instead of O(log length).

use std::collections::{BTreeMap, HashMap};
use std::string::String;
use std::sync::Arc;
use std::vec::Vec;

use crate::membership::Membership;
use crate::types::{Entry, EntryKind, Index, NodeId, Term};

/// The chain hash after `previous` extended by `entry`.
pub(crate) fn chain(previous: u64, entry: &Entry) -> u64 {
    // FNV-1a over the payload, then a strong 64-bit mix with the term, kind and previous link.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in entry.data.iter() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let kind = match entry.kind {
        EntryKind::Command => 1,
        EntryKind::Noop => 2,
        EntryKind::Membership => 3,
    };
    mix(previous ^ mix(h ^ mix(entry.term.wrapping_add(kind << 60))))
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A log followed by its chain hashes and terms: entry `i` (for `i > base`) at position
/// `i - base - 1`; entries up to `base` are covered by a snapshot whose last chain hash is
/// `base_hash`.
///
/// It also follows the memberships the log holds, as the judge's own account of which
/// membership a node must have in force: the one at `base` (the snapshot's, or the bootstrap
/// one) and one per membership entry after it, the newest in force. Memberships change
/// rarely, so this is a short list, and shared (`Arc`) so that keeping one costs no copy.
#[derive(Debug, Clone, Default)]
pub(crate) struct LogView {
    base: Index,
    base_term: Term,
    base_hash: u64,
    hashes: Vec<u64>,
    terms: Vec<Term>,
    base_membership: Arc<Membership>,
    memberships: Vec<(Index, Arc<Membership>)>,
}

impl LogView {
    /// An empty log, with `membership` in force until the log says otherwise (the bootstrap
    /// voters, or no one for a server that joins an existing cluster).
    pub(crate) fn new(membership: Membership) -> Self {
        Self {
            base_membership: Arc::new(membership),
            ..Self::default()
        }
    }

    /// The membership in force: the newest the log holds.
    pub(crate) fn membership(&self) -> &Arc<Membership> {
        self.memberships
            .last()
            .map_or(&self.base_membership, |(_, m)| m)
    }

    /// The membership in force at `index`.
    fn membership_at(&self, index: Index) -> &Arc<Membership> {
        self.memberships
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map_or(&self.base_membership, |(_, m)| m)
    }

    /// The entry just pushed (the last one) is a membership entry holding `membership`.
    pub(crate) fn push_membership(&mut self, membership: Membership) {
        self.memberships.push((self.len(), Arc::new(membership)));
    }

    /// The last index held.
    pub(crate) fn len(&self) -> Index {
        self.base + self.hashes.len() as Index
    }

    /// The last index covered by a snapshot.
    pub(crate) fn base(&self) -> Index {
        self.base
    }

    /// The chain hash at `index`, if the view holds it (the base included).
    pub(crate) fn hash(&self, index: Index) -> Option<u64> {
        if index == self.base {
            return Some(self.base_hash);
        }
        let i = usize::try_from(index.checked_sub(self.base + 1)?).ok()?;
        self.hashes.get(i).copied()
    }

    pub(crate) fn term(&self, index: Index) -> Option<Term> {
        if index == self.base {
            return Some(self.base_term);
        }
        let i = usize::try_from(index.checked_sub(self.base + 1)?).ok()?;
        self.terms.get(i).copied()
    }

    pub(crate) fn truncate_from(&mut self, index: Index) {
        let keep = usize::try_from(index.saturating_sub(self.base + 1)).unwrap_or(usize::MAX);
        self.hashes.truncate(keep);
        self.terms.truncate(keep);
        while self.memberships.last().is_some_and(|(i, _)| *i >= index) {
            self.memberships.pop();
        }
    }

    /// Appends `entry` and returns its chain hash.
    pub(crate) fn push(&mut self, entry: &Entry) -> u64 {
        let h = chain(self.hashes.last().copied().unwrap_or(self.base_hash), entry);
        self.hashes.push(h);
        self.terms.push(entry.term);
        h
    }

    /// A snapshot now covers everything up to `index` (of term `term`, chain hash `hash`, with
    /// `membership` in force there): the entries after it stay if the view holds that very
    /// entry, else the view is emptied.
    pub(crate) fn compact(&mut self, index: Index, term: Term, hash: u64, membership: &Membership) {
        if index <= self.base {
            return;
        }
        // Usually the snapshot's membership is the one the view already has there: share it.
        let base_membership = match self.membership_at(index) {
            known if **known == *membership => Arc::clone(known),
            _ => Arc::new(membership.clone()),
        };
        if self.term(index) == Some(term) && self.hash(index) == Some(hash) {
            let drop = (index - self.base) as usize;
            self.hashes.drain(..drop);
            self.terms.drain(..drop);
            self.memberships.retain(|(i, _)| *i > index);
        } else {
            self.hashes.clear();
            self.terms.clear();
            self.memberships.clear();
        }
        self.base = index;
        self.base_term = term;
        self.base_hash = hash;
        self.base_membership = base_membership;
    }
}

/// What the judge remembers across the whole run.
#[derive(Debug, Default, Clone)]
pub(crate) struct Checker {
    /// Election Safety: the leader of each term.
    leaders: HashMap<Term, NodeId>,
    /// Log Matching: the chain hash of every (index, term) pair ever written to a log.
    entries: HashMap<(Index, Term), u64>,
    /// Leader Completeness: per term, the highest index a leader of that term committed and
    /// its chain hash.
    commits: BTreeMap<Term, (Index, u64)>,
    /// State Machine Safety: the chain hash of what was applied at each index, by anyone.
    applied: Vec<u64>,
}

impl Checker {
    /// For the explorer: what the judge remembers, in a fixed order (two runs that remember
    /// the same write the same).
    pub(crate) fn write_state(&self, out: &mut impl std::fmt::Write) -> std::fmt::Result {
        let leaders: BTreeMap<&Term, &NodeId> = self.leaders.iter().collect();
        let entries: BTreeMap<&(Index, Term), &u64> = self.entries.iter().collect();
        write!(
            out,
            "{leaders:?}{entries:?}{:?}{:?}",
            self.commits, self.applied
        )
    }

    /// A node is leader of `term`.
    pub(crate) fn leader(&mut self, term: Term, id: NodeId) -> Result<(), String> {
        match self.leaders.insert(term, id) {
            Some(other) if other != id => Err(std::format!(
                "Election Safety: nodes {other} and {id} are both leader of term {term}"
            )),
            _ => Ok(()),
        }
    }

    /// A node just became leader of `term` with log `log`.
    pub(crate) fn new_leader(&self, term: Term, id: NodeId, log: &LogView) -> Result<(), String> {
        for (&commit_term, &(index, hash)) in self.commits.range(..term) {
            // Entries under the leader's snapshot were checked when the snapshot was taken or
            // installed (it must match what was applied).
            if index >= log.base() && log.hash(index) != Some(hash) {
                return Err(std::format!(
                    "Leader Completeness: node {id}, leader of term {term}, lacks entry {index} \
                     committed in term {commit_term}"
                ));
            }
        }
        Ok(())
    }

    /// An entry was written at `index` of some log with chain hash `hash`.
    pub(crate) fn entry_written(
        &mut self,
        id: NodeId,
        index: Index,
        term: Term,
        hash: u64,
    ) -> Result<(), String> {
        match self.entries.insert((index, term), hash) {
            Some(other) if other != hash => Err(std::format!(
                "Log Matching: node {id} holds an entry at index {index} of term {term} whose \
                 log prefix differs from another log's entry of the same index and term"
            )),
            _ => Ok(()),
        }
    }

    /// The chain hash of the entry written at `index` with `term`, if any log ever held one.
    pub(crate) fn written(&self, index: Index, term: Term) -> Option<u64> {
        if index == 0 {
            return Some(0);
        }
        self.entries.get(&(index, term)).copied()
    }

    /// A leader of `term` committed up to `index`, whose chain hash is `hash`.
    pub(crate) fn committed(&mut self, term: Term, index: Index, hash: u64) {
        let slot = self.commits.entry(term).or_insert((index, hash));
        if index > slot.0 {
            *slot = (index, hash);
        }
    }

    /// A node applied the entry at `index` whose chain hash (in its log) is `hash`.
    pub(crate) fn applied(&mut self, id: NodeId, index: Index, hash: u64) -> Result<(), String> {
        let position = (index - 1) as usize;
        match self.applied.get(position) {
            Some(&h) if h == hash => Ok(()),
            Some(_) => Err(std::format!(
                "State Machine Safety: node {id} applied at index {index} an entry (or log \
                 prefix) different from what another node applied there"
            )),
            None if position == self.applied.len() => {
                self.applied.push(hash);
                Ok(())
            }
            None => Err(std::format!(
                "State Machine Safety: node {id} applied index {index} before index {}",
                self.applied.len() + 1
            )),
        }
    }

    /// The chain hash of what was applied at `index`, if anything was.
    pub(crate) fn applied_hash(&self, index: Index) -> Option<u64> {
        if index == 0 {
            return Some(0);
        }
        self.applied.get(usize::try_from(index - 1).ok()?).copied()
    }

    /// The highest index applied anywhere (hence acknowledged to a client), with its hash.
    pub(crate) fn highest_applied(&self) -> Option<(Index, u64)> {
        self.applied
            .last()
            .map(|&h| (self.applied.len() as Index, h))
    }
}
