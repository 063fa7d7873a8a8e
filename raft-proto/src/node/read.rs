//! Linearizable reads without a log entry (thesis §6.4): ReadIndex at the leader, with rounds
//! of confirmations batched across the reads of a step; lease reads, opt-in; and reads at a
//! follower, which asks the leader for the read index.
//!
//! A read is answered by [`Action::ReadReady`] only once the node has handed every entry up to
//! the read index to the state machine (so an application that carries out the actions in
//! order serves it at once), or by [`Action::ReadRefused`].
//!
//! Why a confirmed read is linearizable: the leader takes as read index its commit index, once
//! that covers every entry it had when it was elected (so every entry committed by an earlier
//! leader, by Leader Completeness). It then sends a round of [`MessageBody::ConfirmLeader`];
//! a voter answers only while in the leader's term. When a quorum answered, no other leader
//! could have been elected before the round was sent (its quorum would share a voter that was
//! still in this term afterwards), so no write committed elsewhere completed before the read
//! arrived.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use super::Node;
use crate::io::{Action, ReadRefusal};
use crate::message::MessageBody;
use crate::types::{Index, Instant, NodeId, Role, Term};

/// At most this many followers' reads wait at a leader; more are refused (peer input must not
/// grow memory without bound).
const MAX_PEER_READS: usize = 1 << 16;

/// The reads of one node, whatever its role.
#[derive(Debug, Default, Clone)]
pub(super) struct Reads {
    /// Reads this leader must confirm (its own and its followers'), oldest first. In this
    /// order: reads waiting for a round sent, then reads with an index and no round yet, then
    /// reads without an index (only before the commit index covers the term's start); their
    /// deadlines grow. So every step only looks at either end.
    leading: VecDeque<LeaderRead>,
    /// Rounds of confirmations sent and not yet answered by a quorum, oldest first.
    rounds: VecDeque<Round>,
    /// The number of the next round (unique within a node's life, so that an answer to a
    /// round of an earlier leadership is never mistaken for one of this leadership).
    next_round: u64,
    /// The latest round a quorum answered.
    confirmed_through: Option<u64>,
    /// While leader: the lease holds until then (lease reads only).
    lease_until: Option<Instant>,
    /// Reads sent to the leader, waiting for its read index, oldest first (deadlines grow).
    forwarded: VecDeque<Forwarded>,
    /// Reads with a confirmed index, waiting until this node applied up to it, in the order
    /// they were confirmed (served from the front).
    confirmed: VecDeque<(u64, Index)>,
    /// How many of `leading` are followers' reads.
    peer_reads: usize,
}

#[derive(Debug, Clone)]
struct LeaderRead {
    origin: Origin,
    /// The read index, once the commit index covers the start of the term.
    index: Option<Index>,
    /// The round of confirmations that confirms it, once sent.
    round: Option<u64>,
    /// Refused past this time.
    deadline: Instant,
}

#[derive(Debug, Clone, Copy)]
enum Origin {
    /// A read asked of this node.
    Local(u64),
    /// A follower's read: `id` is the follower's context.
    Peer { from: NodeId, id: u64 },
}

#[derive(Debug, Clone)]
struct Round {
    number: u64,
    sent_at: Instant,
    /// The voters that answered.
    acks: Vec<NodeId>,
}

#[derive(Debug, Clone)]
struct Forwarded {
    context: u64,
    leader: NodeId,
    term: Term,
    deadline: Instant,
}

impl Node {
    /// A read asked of this node.
    pub(super) fn on_read(&mut self, context: u64) {
        if self.bugs().serve_reads_locally {
            return self.reads.confirmed.push_back((context, self.commit_index));
        }
        let deadline = self.now.saturating_add(self.config.election_timeout_max);
        match (self.role, self.leader) {
            (Role::Leader, _) => self.reads.leading.push_back(LeaderRead {
                origin: Origin::Local(context),
                index: None,
                round: None,
                deadline,
            }),
            (_, Some(leader)) => {
                self.reads.forwarded.push_back(Forwarded {
                    context,
                    leader,
                    term: self.hard_state.term,
                    deadline,
                });
                self.send_now(leader, MessageBody::ReadIndexRequest { id: context });
            }
            (_, None) => self.refuse_read(context, ReadRefusal::NoLeader),
        }
    }

    /// A follower's read, sent to this node as its leader.
    pub(super) fn on_read_index_request(&mut self, from: NodeId, id: u64) {
        if self.role != Role::Leader || self.reads.peer_reads >= MAX_PEER_READS {
            // Not the leader, or followers ask faster than quorums answer: the follower's
            // read fails and is retried by its caller.
            return self.send_now(from, MessageBody::ReadIndexResponse { id, index: None });
        }
        let deadline = self.now.saturating_add(self.config.election_timeout_max);
        self.reads.peer_reads += 1;
        self.reads.leading.push_back(LeaderRead {
            origin: Origin::Peer { from, id },
            index: None,
            round: None,
            deadline,
        });
    }

    /// The leader's answer to a read this node forwarded.
    pub(super) fn on_read_index_response(&mut self, from: NodeId, id: u64, index: Option<Index>) {
        let Some(pos) = self
            .reads
            .forwarded
            .iter()
            .position(|f| f.context == id && f.leader == from)
        else {
            self.stats.stale_response += 1;
            return;
        };
        let Some(forwarded) = self.reads.forwarded.remove(pos) else {
            return;
        };
        match index {
            Some(index) => self.reads.confirmed.push_back((forwarded.context, index)),
            None => self.refuse_read(forwarded.context, ReadRefusal::LeadershipLost),
        }
    }

    /// The leader of this term asks whether this node still follows it.
    pub(super) fn on_confirm_leader(&mut self, leader: NodeId, round: u64) {
        if self.role == Role::Leader {
            self.stats.invalid += 1;
            return;
        }
        self.follow(leader);
        // The answer promises that this node was in the leader's term: that term must be
        // durable, nothing else.
        let body = MessageBody::LeaderConfirmed { round };
        if self.term_is_durable() {
            self.send_now(leader, body);
        } else {
            self.send_when_durable(leader, body);
        }
    }

    /// A voter answers a round of confirmations.
    pub(super) fn on_leader_confirmed(&mut self, voter: NodeId, round: u64) {
        if self.role != Role::Leader {
            self.stats.stale_response += 1;
            return;
        }
        if !self.memberships.current().is_voter(voter) {
            // Only voters' answers count (and a flood from anyone else costs nothing).
            self.stats.unknown_sender += 1;
            return;
        }
        match self.reads.rounds.iter_mut().find(|r| r.number == round) {
            Some(r) if !r.acks.contains(&voter) => r.acks.push(voter),
            _ => self.stats.stale_response += 1,
        }
    }

    /// Sends a round of confirmations to every voter. Every read registered before it is
    /// confirmed when a quorum answers it (or a later round).
    pub(super) fn send_confirm_round(&mut self) {
        let number = self.reads.next_round;
        self.reads.next_round += 1;
        self.reads.rounds.push_back(Round {
            number,
            sent_at: self.now,
            acks: Vec::new(),
        });
        for i in 0..self.peers.len() {
            let peer = self.peers[i];
            if self.memberships.current().is_voter(peer) {
                self.send_now(peer, MessageBody::ConfirmLeader { round: number });
            }
        }
    }

    /// Settles the rounds of confirmations: the latest one a quorum answered confirms it and
    /// every earlier one (and with lease reads extends the lease); rounds older than an
    /// election timeout are given up (a later round confirms their reads).
    fn update_confirmed_round(&mut self) {
        let me = self.config.id;
        let membership = self.memberships.current();
        if let Some(latest) = self
            .reads
            .rounds
            .iter()
            .rposition(|r| membership.has_quorum(|id| id == me || r.acks.contains(&id)))
        {
            let round = &self.reads.rounds[latest];
            let (number, sent_at) = (round.number, round.sent_at);
            self.reads.rounds.drain(..=latest);
            self.reads.confirmed_through = Some(number);
            if self.lease_allowed() {
                let lease = sent_at
                    .saturating_add(self.config.election_timeout_min)
                    .saturating_sub(self.config.clock_drift_bound);
                self.reads.lease_until = Some(self.reads.lease_until.unwrap_or(0).max(lease));
            }
        }
        let horizon = self.now.saturating_sub(self.config.election_timeout_max);
        while self
            .reads
            .rounds
            .front()
            .is_some_and(|r| r.sent_at < horizon)
        {
            self.reads.rounds.pop_front();
        }
    }

    /// Whether this leader may rely on a lease now: lease reads are on, and it has not told a
    /// voter to campaign at once in this term (a transfer overrides the sticky leader on which
    /// the lease rests).
    fn lease_allowed(&self) -> bool {
        self.config.lease_reads && !self.transfer_sent_this_term
    }

    /// The lease ends: the membership changed (a new quorum may not have promised anything).
    pub(super) fn end_lease(&mut self) {
        self.reads.lease_until = None;
    }

    /// A new leadership starts with no round and no lease.
    pub(super) fn reset_leader_reads(&mut self) {
        self.reads.rounds.clear();
        self.reads.lease_until = None;
    }

    /// At each heartbeat: with lease reads, a round renews the lease; without, a round is sent
    /// if one is unanswered (it may have been lost), taking along the reads that wait.
    pub(super) fn renew_lease(&mut self) {
        if self.lease_allowed() || !self.reads.rounds.is_empty() {
            self.assign_next_round();
            self.send_confirm_round();
        }
    }

    /// Moves every read as far as it can go; called at the end of every step, once the
    /// committed entries were handed over.
    pub(super) fn settle_reads(&mut self) {
        let (term, now, leader) = (self.hard_state.term, self.now, self.leader);
        // Forwarded reads: lost with their leader (all of them look at the newest: a change
        // of leader is rare), or unanswered for too long (the oldest expire first).
        if self
            .reads
            .forwarded
            .back()
            .is_some_and(|f| f.term != term || leader != Some(f.leader))
            || self
                .reads
                .forwarded
                .front()
                .is_some_and(|f| f.term != term || leader != Some(f.leader))
        {
            let lost: VecDeque<Forwarded> = core::mem::take(&mut self.reads.forwarded);
            for f in lost {
                if f.term != term || leader != Some(f.leader) {
                    self.refuse_read(f.context, ReadRefusal::LeadershipLost);
                } else {
                    self.reads.forwarded.push_back(f);
                }
            }
        }
        while self
            .reads
            .forwarded
            .front()
            .is_some_and(|f| now >= f.deadline)
        {
            if let Some(f) = self.reads.forwarded.pop_front() {
                self.refuse_read(f.context, ReadRefusal::TimedOut);
            }
        }
        if self.role == Role::Leader {
            self.settle_leader_reads();
        } else if !self.reads.leading.is_empty() || !self.reads.rounds.is_empty() {
            self.reset_leader_reads();
            for read in core::mem::take(&mut self.reads.leading) {
                self.refuse_leader_read(read.origin, ReadRefusal::LeadershipLost);
            }
        }
        // Confirmed reads are served once applied up to their index, whatever the role now.
        let applied = if self.bugs().serve_reads_before_applied {
            Index::MAX
        } else {
            self.applied_index
        };
        while let Some(&(context, index)) = self.reads.confirmed.front() {
            if index > applied {
                break;
            }
            self.reads.confirmed.pop_front();
            self.actions.push(Action::ReadReady { context, index });
        }
    }

    fn settle_leader_reads(&mut self) {
        self.update_confirmed_round();
        if self.reads.leading.is_empty() {
            return;
        }
        // The commit index is a read index only once it covers every entry of earlier terms
        // (the reads without one are at the back).
        if self.commit_index >= self.term_start {
            let commit = self.commit_index;
            for read in self.reads.leading.iter_mut().rev() {
                if read.index.is_some() {
                    break;
                }
                read.index = Some(commit);
            }
        }
        self.release_leader_reads();
        // Reads with an index and no round yet wait for the round in flight to be answered,
        // then one round confirms them all (a lost round is sent again at the next heartbeat).
        let unsent = self
            .reads
            .leading
            .back()
            .is_some_and(|r| r.index.is_some() && r.round.is_none());
        if unsent && self.reads.rounds.is_empty() {
            self.assign_next_round();
            self.send_confirm_round();
            // A single voter confirms its own round at once.
            self.update_confirmed_round();
            self.release_leader_reads();
        }
    }

    /// The reads with an index and no round yet go with the next round sent.
    fn assign_next_round(&mut self) {
        let round = self.reads.next_round;
        for read in self.reads.leading.iter_mut().rev() {
            if read.index.is_some() && read.round.is_none() {
                read.round = Some(round);
            } else if read.round.is_some() {
                break;
            }
        }
    }

    /// Answers the reads that are confirmed (or all that have an index while the lease
    /// holds), oldest first, and refuses those past their deadline.
    fn release_leader_reads(&mut self) {
        let now = self.now;
        let lease_holds =
            self.lease_allowed() && self.reads.lease_until.is_some_and(|until| now < until);
        let confirmed = self.reads.confirmed_through;
        while let Some(read) = self.reads.leading.front() {
            let ready = match (read.index, read.round) {
                (Some(_), _) if lease_holds => true,
                (Some(_), Some(round)) => confirmed.is_some_and(|c| round <= c),
                _ => false,
            };
            let expired = now >= read.deadline;
            if !ready && !expired {
                break;
            }
            let Some(read) = self.reads.leading.pop_front() else {
                break;
            };
            match read.index {
                Some(index) if ready => self.answer_leader_read(read.origin, index),
                _ => self.refuse_leader_read(read.origin, ReadRefusal::TimedOut),
            }
        }
    }

    fn answer_leader_read(&mut self, origin: Origin, index: Index) {
        match origin {
            Origin::Local(context) => self.reads.confirmed.push_back((context, index)),
            Origin::Peer { from, id } => {
                self.reads.peer_reads = self.reads.peer_reads.saturating_sub(1);
                let body = MessageBody::ReadIndexResponse {
                    id,
                    index: Some(index),
                };
                self.send_now(from, body);
            }
        }
    }

    fn refuse_leader_read(&mut self, origin: Origin, reason: ReadRefusal) {
        match origin {
            Origin::Local(context) => self.refuse_read(context, reason),
            Origin::Peer { from, id } => {
                self.reads.peer_reads = self.reads.peer_reads.saturating_sub(1);
                self.send_now(from, MessageBody::ReadIndexResponse { id, index: None })
            }
        }
    }

    fn refuse_read(&mut self, context: u64, reason: ReadRefusal) {
        self.actions.push(Action::ReadRefused { context, reason });
    }

    /// The earliest deadline of a pending read, if any.
    pub(super) fn read_deadline(&self) -> Option<Instant> {
        let leading = self.reads.leading.front().map(|r| r.deadline);
        let forwarded = self.reads.forwarded.front().map(|f| f.deadline);
        leading.into_iter().chain(forwarded).min()
    }
}
