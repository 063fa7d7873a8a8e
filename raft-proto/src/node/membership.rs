//! Membership changes: the changes an application asks the leader for, and the membership in
//! force following the log (every node), with the leader's replication set following it.

use super::Node;
use crate::io::{Action, MembershipOutcome};
use crate::membership::{Membership, MembershipChange, MembershipError};
use crate::progress::Progress;
use crate::types::{Entry, EntryKind, Payload, Role};

impl Node {
    /// A change asked of this node: refused with a typed error, or appended as one membership
    /// entry (joint when the voters change).
    pub(super) fn on_change_membership(&mut self, change: MembershipChange) {
        let outcome = match self.membership_change(&change) {
            Ok(next) => {
                let membership = next.clone();
                self.append_membership(next);
                MembershipOutcome::Accepted {
                    index: self.log.last_index(),
                    term: self.hard_state.term,
                    membership,
                }
            }
            Err(error) => MembershipOutcome::Refused(error),
        };
        self.actions.push(Action::MembershipOutcome(outcome));
    }

    /// The membership `change` appends, or why it cannot be made now.
    fn membership_change(&self, change: &MembershipChange) -> Result<Membership, MembershipError> {
        if self.role != Role::Leader {
            return Err(MembershipError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if self.transfer.is_some() {
            return Err(MembershipError::TransferInProgress);
        }
        let current = self.memberships.current();
        if current.is_joint() || self.memberships.current_index() > self.commit_index {
            return Err(MembershipError::ChangeInProgress);
        }
        let target = current.target(change)?;
        Ok(current.transition_to(target))
    }

    /// The leader appends `membership` as an entry of its term.
    pub(super) fn append_membership(&mut self, membership: Membership) {
        let entry = Entry {
            term: self.hard_state.term,
            kind: EntryKind::Membership,
            data: Payload::from(membership.encode()),
        };
        self.append_to_log(entry);
    }

    /// The membership in force changed (an entry appended or truncated, a snapshot installed,
    /// or at start): who the other members are, and on a leader, whom it replicates to.
    pub(super) fn on_membership_changed(&mut self) {
        let me = self.config.id;
        let members = self.memberships.current().members();
        self.peers = members.iter().copied().filter(|&id| id != me).collect();
        if self.role == Role::Leader {
            self.end_lease();
            let last = self.log.last_index();
            self.progress.retain(|p| members.contains(&p.id));
            for &peer in &self.peers {
                if !self.progress.iter().any(|p| p.id == peer) {
                    self.progress.push(Progress::new(peer, last));
                }
            }
        }
    }
}
