//! Commitment and application: the leader's commit rule (a quorum's durable match, current
//! term only) and the hand-over of committed entries to the state machine.

use super::Node;
use crate::io::Action;

impl Node {
    /// Commits the highest index a quorum holds durably, if it is of the current term (Raft
    /// §5.4.2: earlier-term entries commit only with a current-term entry after them).
    pub(super) fn advance_commit(&mut self) {
        let quorum = self.quorum();
        let matched = &mut self.match_scratch;
        matched.clear();
        matched.extend(self.progress.iter().map(|p| p.match_index));
        matched.push(self.stable_index.min(self.log.last_index()));
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matched[quorum - 1];
        if candidate > self.commit_index
            && (self.log.term(candidate) == Some(self.hard_state.term)
                || self.bugs().commit_earlier_term_by_counting)
        {
            self.commit_index = candidate;
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
