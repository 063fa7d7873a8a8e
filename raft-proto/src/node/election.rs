//! Elections: the election timer, vote requests and answers, and the role changes between
//! follower, candidate and leader (with what a new leader does first).

use super::Node;
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
        let granted = self.role == Role::Follower && free && up_to_date;
        if granted {
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
        if !self.vote_answers.contains(&voter) {
            self.vote_answers.push(voter);
        }
        if granted && !self.votes.contains(&voter) {
            self.votes.push(voter);
            if self.votes.len() >= self.quorum() {
                self.become_leader();
            }
        }
    }

    pub(super) fn on_time(&mut self) {
        match self.role {
            Role::Leader => {
                if self.now >= self.heartbeat_deadline {
                    self.heartbeat_deadline =
                        self.now.saturating_add(self.config.heartbeat_interval);
                    self.heartbeat();
                }
            }
            Role::Follower | Role::Candidate => {
                if self.now >= self.election_deadline {
                    self.become_candidate();
                } else if self.role == Role::Candidate && self.now >= self.heartbeat_deadline {
                    // Ask again the voters that have not answered: a lost request or answer
                    // should not cost a whole election timeout.
                    self.heartbeat_deadline =
                        self.now.saturating_add(self.config.heartbeat_interval);
                    self.request_votes();
                }
            }
        }
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
        if self.votes.len() >= self.quorum() {
            self.become_leader();
            return;
        }
        self.heartbeat_deadline = self.now.saturating_add(self.config.heartbeat_interval);
        self.request_votes();
    }

    /// Sends a vote request to every voter that has not answered in this term.
    pub(super) fn request_votes(&mut self) {
        let body = MessageBody::VoteRequest {
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
        };
        for i in 0..self.peers.len() {
            let peer = self.peers[i];
            if !self.vote_answers.contains(&peer) {
                self.send_when_durable(peer, body.clone());
            }
        }
    }

    pub(super) fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.votes.clear();
        if self.config.leader_noop {
            self.append_to_log(Entry::noop(self.hard_state.term));
        }
        let last = self.log.last_index();
        self.progress = self.peers.iter().map(|&p| Progress::new(p, last)).collect();
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
