//! Commitment and application: the leader's commit rule (a quorum's durable match, current
//! term only) and the hand-over of committed entries to the state machine.

use super::Node;
use crate::io::Action;
use crate::types::NodeId;

impl Node {
    /// Commits the highest index a quorum holds durably (a majority of every configuration
    /// in force; this leader counts only where it votes, for what it has durably), if it is of
    /// the current term (Raft §5.4.2: earlier-term entries commit only with a current-term
    /// entry after them).
    pub(super) fn advance_commit(&mut self) {
        let me = self.config.id;
        let stable = self.stable_index.min(self.log.last_index());
        let progress = &self.progress;
        let matched = |id: NodeId| {
            if id == me {
                stable
            } else {
                progress
                    .iter()
                    .find(|p| p.id == id)
                    .map_or(0, |p| p.match_index)
            }
        };
        let current = self.memberships.current();
        let candidate = if self.bugs().commit_joint_with_new_voters_only && current.is_joint() {
            current
                .leave_joint()
                .quorum_index(matched, &mut self.match_scratch)
        } else {
            current.quorum_index(matched, &mut self.match_scratch)
        };
        if candidate > self.commit_index
            && (self.log.term(candidate) == Some(self.hard_state.term)
                || self.bugs().commit_earlier_term_by_counting)
        {
            self.commit_index = candidate;
        }
    }

    /// What a leader does once the membership in force is committed: it leaves a joint
    /// membership by appending the new voters alone, and steps down when it is not one of them.
    pub(super) fn after_commit(&mut self) {
        if self.commit_index < self.memberships.current_index() {
            return;
        }
        let current = self.memberships.current();
        if current.is_joint() {
            let next = current.leave_joint();
            self.append_membership(next);
        } else if !current.is_voter(self.config.id) {
            self.become_follower(self.hard_state.term, None);
        }
    }

    pub(super) fn apply_committed(&mut self) {
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
}
