//! Elections: the election timer, pre-votes and votes, and the role changes between follower,
//! pre-candidate, candidate and leader (with what a new leader does first, and check-quorum,
//! by which a leader that lost its majority steps down).

use super::Node;
use crate::io::Action;
use crate::message::MessageBody;
use crate::progress::Progress;
use crate::types::{Entry, HardState, Index, NodeId, Role, Term};

impl Node {
    pub(super) fn on_vote_request(
        &mut self,
        candidate: NodeId,
        last_log_index: Index,
        last_log_term: Term,
    ) {
        let up_to_date =
            (last_log_term, last_log_index) >= (self.log.last_term(), self.log.last_index());
        let free = match self.hard_state.voted_for {
            None => true,
            Some(v) => v == candidate,
        };
        let granted =
            matches!(self.role, Role::Follower | Role::PreCandidate) && free && up_to_date;
        if granted {
            if self.role == Role::PreCandidate {
                self.become_follower(self.hard_state.term, None);
            }
            self.hard_state.voted_for = Some(candidate);
            self.write.hard_state = true;
            self.reset_election_timer();
        }
        let body = MessageBody::VoteResponse { granted };
        if granted && self.bugs().grant_vote_before_persist {
            self.send_now(candidate, body);
        } else {
            self.send_when_durable(candidate, body);
        }
    }

    pub(super) fn on_vote_response(&mut self, voter: NodeId, granted: bool) {
        if self.role != Role::Candidate {
            self.stats.stale_response += 1;
            return;
        }
        if !self.asked_for_vote(voter) {
            return;
        }
        if !self.vote_answers.contains(&voter) {
            self.vote_answers.push(voter);
        }
        if granted && !self.votes.contains(&voter) {
            self.votes.push(voter);
            if self.term_is_durable() && self.has_quorum(|id| self.votes.contains(&id)) {
                self.become_leader();
            }
        }
    }

    /// A pre-vote request for `term` (the sender's term + 1): granted under the normal vote
    /// rules for that term, and only when no leader was heard from within the minimum
    /// election timeout. Nothing changes here either way: no term, no vote, nothing persisted.
    pub(super) fn on_pre_vote_request(
        &mut self,
        candidate: NodeId,
        term: Term,
        last_log_index: Index,
        last_log_term: Term,
    ) {
        let up_to_date =
            (last_log_term, last_log_index) >= (self.log.last_term(), self.log.last_index());
        let could_vote =
            term > self.hard_state.term || self.hard_state.voted_for.is_none_or(|v| v == candidate);
        let granted = up_to_date && could_vote && !self.refuses_disruption();
        let body = MessageBody::PreVoteResponse { granted };
        if granted {
            // The answer carries the pre-vote's term, which the candidate expects back.
            let mut message = self.message(candidate, body);
            message.term = term;
            self.actions.push(Action::Send(message));
        } else {
            self.send_when_durable(candidate, body);
        }
    }

    /// An answer to this node's pre-vote requests; a granted one carries `term`, the term the
    /// pre-vote was for.
    pub(super) fn on_pre_vote_response(&mut self, voter: NodeId, term: Term, granted: bool) {
        let current = if granted {
            Some(term) == self.hard_state.term.checked_add(1)
        } else {
            term == self.hard_state.term
        };
        if self.role != Role::PreCandidate || !current {
            self.stats.stale_response += 1;
            return;
        }
        if !self.asked_for_vote(voter) {
            return;
        }
        if !self.vote_answers.contains(&voter) {
            self.vote_answers.push(voter);
        }
        if granted && !self.votes.contains(&voter) {
            self.votes.push(voter);
            if self.has_quorum(|id| self.votes.contains(&id)) {
                self.become_candidate();
            }
        }
    }

    /// Whether `voter` is one this (pre-)candidate asks for its vote: a voter of the membership
    /// in force, which cannot change during a candidacy. An answer from anyone else is counted
    /// and ignored, so that the answers kept (and searched on every answer) are at most one per
    /// voter, whatever a peer sends.
    fn asked_for_vote(&mut self, voter: NodeId) -> bool {
        let asked = self.memberships.current().is_voter(voter);
        if !asked {
            self.stats.unknown_sender += 1;
        }
        asked
    }

    pub(super) fn on_time(&mut self) {
        match self.role {
            Role::Leader => {
                if self.config.check_quorum && self.now >= self.quorum_check_deadline {
                    if !self.heard_from_quorum() {
                        // Cut off from a majority: whatever it accepted now cannot commit.
                        self.become_follower(self.hard_state.term, None);
                        return;
                    }
                    self.quorum_check_deadline =
                        self.now.saturating_add(self.config.election_timeout_max);
                }
                self.abort_late_transfer();
                if self.now >= self.heartbeat_deadline {
                    self.heartbeat_deadline =
                        self.now.saturating_add(self.config.heartbeat_interval);
                    self.heartbeat();
                    self.renew_lease();
                    self.transfer_on_heartbeat();
                }
            }
            Role::Follower | Role::Candidate | Role::PreCandidate => {
                if self.now >= self.election_deadline && !self.may_campaign() {
                    // A learner, a removed node or one that has not learned the membership
                    // yet: it never campaigns.
                    self.become_follower(self.hard_state.term, self.leader);
                    self.reset_election_timer();
                } else if self.now >= self.election_deadline {
                    self.transfer_campaign = false;
                    if self.config.pre_vote {
                        self.become_pre_candidate();
                    } else {
                        self.become_candidate();
                    }
                } else if self.role != Role::Follower && self.now >= self.heartbeat_deadline {
                    // Ask again the voters that have not answered: a lost request or answer
                    // should not cost a whole election timeout.
                    self.heartbeat_deadline =
                        self.now.saturating_add(self.config.heartbeat_interval);
                    self.request_votes();
                }
            }
        }
    }

    /// Whether a quorum (this leader included, when it votes) sent anything since the last
    /// check; starts the next round of the check either way.
    fn heard_from_quorum(&mut self) -> bool {
        let me = self.config.id;
        let progress = &self.progress;
        let heard = self
            .has_quorum(|id| id == me || progress.iter().any(|p| p.id == id && p.recent_active));
        for progress in &mut self.progress {
            progress.recent_active = false;
        }
        heard
    }

    /// Whether this node may run for leader: it votes in the membership in force, or that
    /// membership is not committed yet and it voted in the one before (it may be the only one
    /// that can carry the change through: the new voters may not have the entry yet).
    pub(super) fn may_campaign(&self) -> bool {
        let me = self.config.id;
        let current = self.memberships.current_index();
        self.memberships.current().is_voter(me)
            || (current > self.commit_index
                && self.memberships.at(current.saturating_sub(1)).is_voter(me))
    }

    /// Whether this node refuses to help depose its leader (check-quorum's sticky leader): it
    /// leads or heard from its leader recently, or with lease reads, it restarted recently.
    pub(super) fn refuses_disruption(&self) -> bool {
        self.leader_is_recent() || self.now < self.quiet_until
    }

    /// Whether this node leads, or heard from the leader of its term within the minimum
    /// election timeout: then it grants no pre-vote, and with check-quorum no vote for a
    /// higher term.
    pub(super) fn leader_is_recent(&self) -> bool {
        self.role == Role::Leader
            || (self.leader.is_some()
                && self.heard_from_leader.is_some_and(|at| {
                    self.now < at.saturating_add(self.config.election_timeout_min)
                }))
    }

    /// A valid message from `leader`, the leader of the current term: follow it (a candidate
    /// steps down, keeping its vote) and restart the election timer.
    pub(super) fn follow(&mut self, leader: NodeId) {
        self.become_follower(self.hard_state.term, Some(leader));
        self.reset_election_timer();
        self.heard_from_leader = Some(self.now);
    }

    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.hard_state.term {
            self.hard_state = HardState {
                term,
                voted_for: None,
            };
            self.write.hard_state = true;
        } else if self.bugs().forget_vote_on_step_down {
            self.hard_state.voted_for = None;
            self.write.hard_state = true;
        }
        if self.role != Role::Follower {
            self.reset_election_timer();
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.vote_answers.clear();
        self.progress.clear();
        self.transfer = None;
        self.transfer_campaign = false;
    }

    /// Asks for pre-votes for the next term, changing nothing durable.
    pub(super) fn become_pre_candidate(&mut self) {
        if self.hard_state.term.checked_add(1).is_none() {
            self.stats.invalid += 1;
            self.reset_election_timer();
            return;
        }
        self.role = Role::PreCandidate;
        self.transfer_campaign = false;
        self.leader = None;
        self.votes.clear();
        self.votes.push(self.config.id);
        self.vote_answers.clear();
        self.reset_election_timer();
        if self.has_quorum(|id| self.votes.contains(&id)) {
            self.become_candidate();
            return;
        }
        self.heartbeat_deadline = self.now.saturating_add(self.config.heartbeat_interval);
        self.request_votes();
    }

    pub(super) fn become_candidate(&mut self) {
        let Some(term) = self.hard_state.term.checked_add(1) else {
            // Only a peer that lied about its term can bring us here; there is no term left
            // to campaign in, so stay a follower rather than overflow.
            self.stats.invalid += 1;
            self.reset_election_timer();
            return;
        };
        self.role = Role::Candidate;
        self.hard_state = HardState {
            term,
            voted_for: Some(self.config.id),
        };
        self.write.hard_state = true;
        self.leader = None;
        self.votes.clear();
        self.votes.push(self.config.id);
        self.vote_answers.clear();
        self.reset_election_timer();
        // A single voter wins with its own vote, but leads only once that vote is durable
        // (see `on_persisted`).
        self.heartbeat_deadline = self.now.saturating_add(self.config.heartbeat_interval);
        self.request_votes();
    }

    /// Sends a vote request (a pre-vote request, for the next term, when pre-candidate) to
    /// every voter that has not answered in this round.
    pub(super) fn request_votes(&mut self) {
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        for i in 0..self.peers.len() {
            let peer = self.peers[i];
            if self.vote_answers.contains(&peer) || !self.memberships.current().is_voter(peer) {
                continue;
            }
            if self.role == Role::PreCandidate {
                // Promises nothing: the term is not taken, nothing is persisted.
                let body = MessageBody::PreVoteRequest {
                    last_log_index,
                    last_log_term,
                };
                let mut message = self.message(peer, body);
                message.term = self.hard_state.term.saturating_add(1);
                self.actions.push(Action::Send(message));
            } else {
                let body = MessageBody::VoteRequest {
                    last_log_index,
                    last_log_term,
                    transfer: self.transfer_campaign,
                };
                self.send_when_durable(peer, body);
            }
        }
    }

    pub(super) fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.votes.clear();
        self.transfer_campaign = false;
        self.term_start = self.log.last_index();
        self.transfer = None;
        self.transfer_sent_this_term = false;
        self.reset_leader_reads();
        // Entries of earlier terms commit only with one of this term after them (§5.4.2). A
        // membership in force and not committed must not wait for a client's proposal: until
        // it commits, membership changes are refused, and a leader it removes never steps
        // down. So the no-op goes in then too, whatever `leader_noop` says.
        if self.config.leader_noop || self.memberships.current_index() > self.commit_index {
            self.append_to_log(Entry::noop(self.hard_state.term));
        }
        let last = self.log.last_index();
        self.progress = self.peers.iter().map(|&p| Progress::new(p, last)).collect();
        self.quorum_check_deadline = self.now.saturating_add(self.config.election_timeout_max);
        // Announce leadership at once; the probes double as the first heartbeat.
        self.heartbeat_deadline = self.now.saturating_add(self.config.heartbeat_interval);
        self.heartbeat();
    }

    pub(super) fn reset_election_timer(&mut self) {
        let timeout = self.rng.range(
            self.config.election_timeout_min,
            self.config.election_timeout_max,
        );
        self.election_deadline = self.now.saturating_add(timeout);
    }
}
