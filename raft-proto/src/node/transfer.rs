//! Leadership transfer (thesis §3.10): the leader stops taking proposals, brings the target's
//! log up to its own, and tells it to campaign at once; the target's vote requests say so and
//! are granted even by voters that heard from the leader recently. The leader gives up after
//! an election timeout.

use super::Node;
use crate::io::{Action, TransferOutcome, TransferRefusal};
use crate::message::MessageBody;
use crate::types::{Instant, NodeId, Role};

/// A transfer under way at the leader.
#[derive(Debug, Clone, Copy)]
pub(super) struct Transfer {
    pub(super) to: NodeId,
    /// Aborted at this time if this node still leads.
    pub(super) deadline: Instant,
    /// The target was told to campaign since the last heartbeat round.
    timeout_now_sent: bool,
}

impl Node {
    pub(super) fn on_transfer_leadership(&mut self, to: NodeId) {
        let outcome = match self.transfer_refusal(to) {
            Some(refusal) => TransferOutcome::Refused(refusal),
            None => {
                self.transfer = Some(Transfer {
                    to,
                    deadline: self.now.saturating_add(self.config.election_timeout_max),
                    timeout_now_sent: false,
                });
                TransferOutcome::Started { to }
            }
        };
        self.actions.push(Action::TransferOutcome(outcome));
    }

    fn transfer_refusal(&self, to: NodeId) -> Option<TransferRefusal> {
        if self.role != Role::Leader {
            return Some(TransferRefusal::NotLeader {
                leader_hint: self.leader,
            });
        }
        if to == self.config.id {
            return Some(TransferRefusal::AlreadyLeader);
        }
        if self.transfer.is_some() {
            return Some(TransferRefusal::InProgress);
        }
        // A voter of the membership being entered: an outgoing voter would not lead for long.
        if !self.memberships.current().voters().contains(&to) {
            return Some(TransferRefusal::NotAVoter(to));
        }
        None
    }

    /// Tells the target to campaign once its log holds everything this leader's does (and
    /// again each heartbeat round while the transfer lasts, in case the message was lost).
    pub(super) fn hand_over_if_caught_up(&mut self) {
        let Some(transfer) = self.transfer.filter(|t| !t.timeout_now_sent) else {
            return;
        };
        let last = self.log.last_index();
        let caught_up = self
            .progress
            .iter()
            .any(|p| p.id == transfer.to && p.match_index >= last);
        if caught_up {
            if let Some(t) = self.transfer.as_mut() {
                t.timeout_now_sent = true;
            }
            self.transfer_sent_this_term = true;
            self.send_now(transfer.to, MessageBody::TimeoutNow);
        }
    }

    /// The transfer is aborted once its deadline passed: this node leads on.
    pub(super) fn abort_late_transfer(&mut self) {
        if let Some(transfer) = self.transfer.filter(|t| self.now >= t.deadline) {
            self.transfer = None;
            let outcome = TransferOutcome::Aborted { to: transfer.to };
            self.actions.push(Action::TransferOutcome(outcome));
        }
    }

    /// At each heartbeat round the target may be told again to campaign.
    pub(super) fn transfer_on_heartbeat(&mut self) {
        if let Some(transfer) = self.transfer.as_mut() {
            transfer.timeout_now_sent = false;
        }
    }

    /// The leader of this term tells this node to campaign at once.
    pub(super) fn on_timeout_now(&mut self, leader: NodeId) {
        if self.role == Role::Leader {
            self.stats.invalid += 1;
            return;
        }
        self.follow(leader);
        if self.may_campaign() {
            self.transfer_campaign = true;
            self.become_candidate();
        }
    }
}
