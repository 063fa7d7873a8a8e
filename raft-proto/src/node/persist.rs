//! Persistence ordering: the storage changes of a step gathered into one persist, the
//! durability acknowledgements, and the messages held back until what they promise is
//! durable.

use alloc::vec::Vec;

use super::Node;
use crate::io::{Action, Persist};
use crate::membership::Membership;
use crate::message::{Message, MessageBody};
use crate::types::{Entry, EntryKind, Index, NodeId, Role, Snapshot};

#[derive(Debug, Default, Clone)]
pub(super) struct PendingWrite {
    pub(super) hard_state: bool,
    pub(super) truncate_from: Option<Index>,
    pub(super) snapshot: Option<Snapshot>,
    pub(super) first_index: Index,
    pub(super) entries: Vec<Entry>,
}

impl PendingWrite {
    pub(super) fn is_empty(&self) -> bool {
        !self.hard_state
            && self.truncate_from.is_none()
            && self.snapshot.is_none()
            && self.entries.is_empty()
    }
}

impl Node {
    pub(super) fn on_persisted(&mut self, seq: u64) {
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
        // A candidate whose own vote was enough (a single voter) leads once that vote is
        // durable: a term must never be led twice with different entries.
        if self.role == Role::Candidate
            && self.term_is_durable()
            && self.has_quorum(|id| self.votes.contains(&id))
        {
            self.become_leader();
        }
    }

    /// Whether the current term and vote are durable.
    pub(super) fn term_is_durable(&self) -> bool {
        !self.write.hard_state && self.durable_seq >= self.hard_state_seq
    }

    /// Makes room for `additional` entries in the log and in this step's write, so that a
    /// batch is appended without repeated reallocation.
    pub(super) fn reserve_log(&mut self, additional: usize) {
        self.log.reserve(additional);
        self.write.entries.reserve(additional);
    }

    /// Appends `entry` to the log and to this step's write. A membership entry is in force
    /// at once (its bytes decode: this leader encoded it, or `on_message` dropped an append
    /// request carrying one that does not decode).
    pub(super) fn append_to_log(&mut self, entry: Entry) {
        if self.write.entries.is_empty() {
            self.write.first_index = self.log.last_index() + 1;
        }
        let membership = (entry.kind == EntryKind::Membership)
            .then(|| Membership::decode(&entry.data))
            .flatten();
        self.write.entries.push(entry.clone());
        self.log.append(entry);
        if let Some(membership) = membership {
            self.memberships.push(self.log.last_index(), membership);
            self.on_membership_changed();
        }
    }

    pub(super) fn truncate_log(&mut self, from: Index) {
        self.log.truncate_from(from);
        if !self.bugs().keep_truncated_membership && self.memberships.truncate_from(from) {
            self.on_membership_changed();
        }
        let write = &mut self.write;
        if !write.entries.is_empty() && from >= write.first_index {
            write.entries.truncate((from - write.first_index) as usize);
        } else {
            write.entries.clear();
            write.truncate_from = Some(write.truncate_from.map_or(from, |t| t.min(from)));
        }
        self.stable_index = self.stable_index.min(from - 1);
    }

    pub(super) fn flush_write(&mut self) {
        if self.write.is_empty() {
            return;
        }
        let write = core::mem::take(&mut self.write);
        let seq = self.next_seq;
        self.next_seq += 1;
        if write.hard_state {
            self.hard_state_seq = seq;
        }
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
    pub(super) fn send_now(&mut self, to: NodeId, body: MessageBody) {
        let message = self.message(to, body);
        self.actions.push(Action::Send(message));
    }

    /// Sends a message once every storage change made so far (this step's included) is
    /// durable.
    pub(super) fn send_when_durable(&mut self, to: NodeId, body: MessageBody) {
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

    pub(super) fn message(&self, to: NodeId, body: MessageBody) -> Message {
        Message {
            from: self.config.id,
            to,
            term: self.hard_state.term,
            body,
        }
    }
}
